"""What a run may take from, and remove in, an existing run directory.

- ``--from X``: the stages before X are taken from the folder only if this config gives them the
  keys they were made with (same options, config sections, data/model content, inputs) and their
  files still match their stage.json; otherwise the run stops naming what differs.
- ``--until X`` into a folder holding later stages' results (``lcpipe bench`` after ``lcpipe run``):
  those results stay. The stages up to X are reused in place when their keys match; a config that
  would change one of them is refused, since the later results would then describe other inputs.
- Removing a stage's previous output: only when every file in its folder and in what it published
  (deploy/, report.md, ...) is one its stage.json lists; a file the user put there stops the run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from lcpipe.errors import ConfigError, InputError
from lcpipe.fileio import mismatched_files
from lcpipe.rundir import foreign_files, read_manifest, recorded_files

_MAX_SHOWN = 3


class StageFolder(Protocol):
    """What this module needs of a stage class (lcpipe.stages.base.Stage; not imported: stages are not
    a library): the name of its folder in the run dir and the files it publishes beside it."""

    name: str
    publish: tuple[str, ...]


def read_stage_meta(run_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        meta = json.loads((run_dir / name / "stage.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("outputs"), dict) else None


def later_results(run_dir: Path, stages: list[StageFolder]) -> list[str]:
    """Stages (of those given) whose results are in the run dir: a finished folder or a published output."""
    return [s.name for s in stages
            if (run_dir / s.name / "stage.json").is_file()
            or any((run_dir / p).exists() for p in s.publish)]


def take_from_run_dir(run_dir: Path, stage: StageFolder, key: str, parts: dict[str, str], config: Any,
                      why: str) -> dict[str, Any]:
    """The outputs a stage recorded in the run dir, if this config would make the same ones (else
    ConfigError naming the difference, InputError for a missing or altered folder)."""
    meta = read_stage_meta(run_dir, stage.name)
    if meta is None:
        raise InputError(f"{why}: stage {stage.name!r} has no finished output in {run_dir / stage.name}; "
                         "run the pipeline without it first")
    old = meta.get("key_parts")
    same = meta.get("key") == key or (isinstance(old, dict) and old == parts)
    if not same:
        what = _differences(stage, meta, parts, config, run_dir)
        raise ConfigError(f"{why}: {run_dir / stage.name} was made with a different {what}; run the whole "
                          "pipeline (no --from/--until) or use another --out")
    files = meta.get("files")
    bad = mismatched_files(run_dir / stage.name, files) if isinstance(files, dict) else []
    if bad:
        raise InputError(f"{why}: {run_dir / stage.name}: {_shown(bad)} changed since lcpipe wrote it (does not "
                         "match stage.json); run the whole pipeline (no --from/--until) to rebuild it")
    return meta


def _differences(stage: StageFolder, meta: dict[str, Any], parts: dict[str, str], config: Any,
                 run_dir: Path) -> str:
    old = meta.get("key_parts")
    if not isinstance(old, dict):
        return "config, data or lcpipe version (an older lcpipe recorded no detail)"
    recorded = (read_manifest(run_dir) or {}).get("config") or {}
    current = config.to_yaml_dict()
    said = []
    for part in (k for k in parts if old.get(k) != parts[k]):
        if part == "options":
            old_opts, new_opts = _stage_opts(recorded, stage.name), _stage_opts(current, stage.name)
            said.append(f"stages.{stage.name} options" + _detail(old_opts, new_opts, f"stages.{stage.name}."))
        elif part.startswith("config."):
            section = part.removeprefix("config.")
            said.append(section + _detail(recorded.get(section), current.get(section), f"{section}."))
        elif part == "salt":
            said.append("content of the files it reads (model, data, label names), CPU or library versions")
        else:
            said.append("input from an earlier stage")
    return "; ".join(said) or "config"


def _stage_opts(cfg: dict[str, Any], name: str) -> Any:
    for item in cfg.get("stages") or []:
        if isinstance(item, dict) and name in item:
            return item[name]
    return None


def _detail(old: Any, new: Any, prefix: str) -> str:
    """`` (size: [80, 160] -> [40, 80])`` for the first leaves that differ, when the old value is known."""
    if old is None:
        return ""
    diffs: list[str] = []
    _diff(old, new, prefix, diffs)
    if not diffs:
        return ""
    shown = ", ".join(diffs[:_MAX_SHOWN]) + (f" (+{len(diffs) - _MAX_SHOWN} more)" if len(diffs) > _MAX_SHOWN else "")
    return f" ({shown})"


def _diff(old: Any, new: Any, key: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in dict.fromkeys([*old, *new]):
            _diff(old.get(k), new.get(k), f"{key}{k}.", out)
    elif old != new:
        out.append(f"{key.rstrip('.')}: {_short(old)} -> {_short(new)}")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _shown(names: list[str]) -> str:
    return ", ".join(names[:_MAX_SHOWN]) + (f" (+{len(names) - _MAX_SHOWN} more)" if len(names) > _MAX_SHOWN else "")


# ---------------------------------------------------------------- removing previous outputs

def check_removable(run_dir: Path, stages: list[StageFolder]) -> None:
    """Before anything is removed: every file the stages' previous outputs hold must be lcpipe's."""
    for stage in stages:
        folder = run_dir / stage.name
        record = recorded_files(folder)
        if folder.exists() and not (folder / "stage.json").is_file():
            raise InputError(f"{folder}: a folder lcpipe did not write (no stage.json) where stage {stage.name!r} "
                             "writes its output; move it out of the run directory")
        if folder.is_dir() and record is not None:
            extra = [n for n in foreign_files(folder, record) if n != "stage.json"]
            if extra:
                raise InputError(f"{folder}: {_shown(extra)} not written by lcpipe (not in its stage.json); "
                                 "lcpipe replaces this folder on a rerun: move them out of the run directory")
        for name in stage.publish:
            published = run_dir / name
            if not published.exists() and not published.is_symlink():
                continue
            if record is None and (folder / "stage.json").is_file():
                continue  # an older lcpipe's stage.json without the file list: its outputs, as before
            if record is None:
                raise InputError(f"{published}: published by stage {stage.name!r}, whose record "
                                 f"({folder / 'stage.json'}) is gone, so lcpipe cannot tell it wrote it; "
                                 "move it out of the run directory")
            extra = (foreign_files(published, record, f"{name}/") if published.is_dir() and not published.is_symlink()
                     else ([] if name in record else [name]))
            if extra:
                raise InputError(f"{published}: {_shown(extra)} not written by lcpipe (not in "
                                 f"{stage.name}/stage.json); lcpipe replaces {name} on a rerun: move them elsewhere")


def remove_stage_output(run_dir: Path, stage: StageFolder) -> None:
    """Delete a stage's previous output (after check_removable): published copies first, then the folder,
    so an interruption never leaves a published output without the record that lists it."""
    for name in stage.publish:
        published = run_dir / name
        if published.is_dir() and not published.is_symlink():
            _remove_tree(published)
        elif published.exists() or published.is_symlink():
            published.unlink()
    stage_dir = run_dir / stage.name
    if (stage_dir / "stage.json").is_file():
        _remove_tree(stage_dir)


def _remove_tree(folder: Path) -> None:
    """Move the folder to a pid-named temp first, so an interruption leaves it whole or gone (the temp is
    removed then, or by the next run), never half deleted without its stage.json."""
    aside = folder.with_name(f".{folder.name}.old.{os.getpid()}")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(folder, aside)
    shutil.rmtree(aside)
