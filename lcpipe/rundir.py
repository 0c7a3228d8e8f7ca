"""Which folders lcpipe may write into and delete from.

A run directory is lcpipe's only if its manifest.json says so (``"lcpipe_run": true``; manifests of
older lcpipe are recognised by their keys). An existing folder that holds anything else is refused
before a byte in it is touched. Inside its own run directory lcpipe removes a stage's folder or a
published output (deploy/, report.md, ...) only when every file in it is one a stage.json there lists:
a file the user added makes the run stop and name it instead.

Sweep and sensitivity folders follow the same rule with a marker file of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lcpipe.errors import InputError
from lcpipe.fileio import remove_own_temps, write_json
from lcpipe.locks import RUN_LOCK, run_dir_lock
from lcpipe.logs import LOG_NAME

MANIFEST = "manifest.json"
OWNER_KEY = "lcpipe_run"
_OLD_MANIFEST_KEYS = frozenset({"pipeline", "config", "lcpipe", "stages"})  # every manifest lcpipe ever wrote
OUTPUT_MARKER = ".lcpipe-output.json"  # sweep / sensitivity folders
# What lcpipe writes into a run dir before its manifest: the lock and log of a run killed early, and a
# sweep point's log and row (lcpipe.sweep.point), written around its run.
_IGNORED = frozenset({RUN_LOCK, LOG_NAME, "point.log", "point.json"})


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(run_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def is_lcpipe_run(run_dir: Path) -> bool:
    doc = read_manifest(run_dir)
    if doc is None:
        return False
    return doc.get(OWNER_KEY) is True or (_OLD_MANIFEST_KEYS <= doc.keys() and isinstance(doc.get("stages"), list))


def _foreign_folder(folder: Path, flag: str, owned: Callable[[Path], bool], what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{flag} {folder}: is a file, not a folder")
    if not folder.is_dir() or owned(folder):
        return
    try:
        content = [p.name for p in folder.iterdir() if p.name not in _IGNORED]
    except OSError as exc:
        raise InputError(f"{flag} {folder}: cannot read the folder: {exc.strerror or exc}") from None
    if content:
        shown = ", ".join(sorted(content)[:3]) + (", ..." if len(content) > 3 else "")
        raise InputError(f"{flag} {folder}: an existing folder that is not {what} (it holds {shown}); "
                         f"lcpipe writes only into a new or empty folder or one it made: choose another {flag}")


def check_run_dir(run_dir: Path, flag: str = "--out") -> None:
    """Refuse an existing non-empty folder whose manifest does not say lcpipe made it."""
    _foreign_folder(Path(run_dir), flag, is_lcpipe_run, "an lcpipe run directory (no manifest.json of lcpipe's)")


@contextmanager
def claim_run_dir(run_dir: Path, flag: str = "--out") -> Iterator[Path]:
    """Check the folder is lcpipe's (or new/empty), create it and hold its lock for the block."""
    run_dir = Path(run_dir).resolve()
    if not (run_dir / RUN_LOCK).is_file():  # else lcpipe was here: its lock tells a run in progress first
        check_run_dir(run_dir, flag)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, /proc, /sys, read-only: the user's --out, not a bug
        raise InputError(f"{flag} {run_dir}: cannot create the run directory: {exc.strerror or exc}") from None
    with run_dir_lock(run_dir):
        check_run_dir(run_dir, flag)  # another process may have filled it while we waited
        try:
            yield run_dir
        except BaseException:
            remove_own_temps(run_dir)  # stopped: also a temp whose writer did not know its name yet
            raise


# ---------------------------------------------------------------- sweep / sensitivity folders

def claim_output_dir(folder: Path, kind: str, flag: str = "--out",
                     made_by_older: Callable[[Path], bool] = lambda p: False) -> Path:
    """A sweep or sensitivity folder: new, empty, marked as lcpipe's ``kind`` or ``made_by_older``
    lcpipe; created and marked. Other folders are refused (InputError) untouched."""
    folder = Path(folder).resolve()

    def owned(p: Path) -> bool:
        try:
            return json.loads((p / OUTPUT_MARKER).read_text()).get("lcpipe") == kind
        except (OSError, ValueError, AttributeError):
            return made_by_older(p)

    _foreign_folder(folder, flag, owned, f"an lcpipe {kind} folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / OUTPUT_MARKER, {"lcpipe": kind})
    except OSError as exc:
        raise InputError(f"{flag} {folder}: cannot write there: {exc.strerror or exc}") from None
    return folder


# ---------------------------------------------------------------- what may be removed in a run dir

def recorded_files(stage_dir: Path) -> dict[str, str] | None:
    """The files (relative name -> sha256) a stage.json lists, or None without a usable record."""
    try:
        meta = json.loads((Path(stage_dir) / "stage.json").read_text())
    except (OSError, ValueError):
        return None
    files = meta.get("files") if isinstance(meta, dict) else None
    return files if isinstance(files, dict) else None


def foreign_files(folder: Path, recorded: dict[str, str], prefix: str = "") -> list[str]:
    """Files under ``folder`` that the record does not list (``prefix``: the folder's name in it)."""
    names = set(recorded)
    return [f.relative_to(folder).as_posix() for f in sorted(folder.rglob("*"))
            if not f.is_dir() and prefix + f.relative_to(folder).as_posix() not in names]
