"""Run a pipeline: stages in order, each cached under a key hashed from its options, the
config sections it depends on, its input artifacts' hashes and the lcpipe version.

Each stage writes into ``<out>/<stage>/`` (built under a temp name, swapped in on success)
and records ``stage.json``; ``<out>/manifest.json`` records the resolved config, versions,
CPU, input/output sha256 and timings. A cache hit is checked file by file against the sha256 its
stage.json records before it is used; temps a killed run left behind are removed at the start.

What a run may touch (lcpipe.rundir): only a new, empty or lcpipe-made --out, held under a lock for
the whole run; in it, only files a stage.json lists. A partial run (--until) into a folder holding
later stages' results keeps them: it reuses the earlier stages in place when this config gives them
the same keys, and refuses otherwise (they would describe other inputs). ``--from`` checks the same
of the stages it takes from the folder. The manifest records the config that ran.

The runner is also where a pipeline YAML is loaded (``load_config``): lcpipe.config holds the
schema, and the stage registry (lcpipe.stages) gives it each stage's options model. And it runs
"the pipeline up to X, then Y" for commands that are not a pipeline of their own (``run_until``,
``run_stage_after``: lcpipe bench, sensitivity), holding the run dir's lock from the first stage to
the last file of Y.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lcpipe import signals
from lcpipe.cache import CACHE_FORMAT, CacheEntry, NullCache, StageCache, default_cache_dir, platform_cache_dir
from lcpipe.config import (
    PipelineConfig,
    StageOptions,
    is_path_key,
    parse_config,
    resolve_config_paths,
    validate_config,
)
from lcpipe.errors import ConfigError, InputError
from lcpipe.fileio import (
    atomic_dir,
    atomic_path,
    content_hashes,
    content_sha256,
    copy_tree,
    files_sha256,
    mismatched_files,
    remove_stale_temps,
    sha256_json,
    sha256_path,
    write_json,
)
from lcpipe.locks import holding_entries
from lcpipe.logs import run_log
from lcpipe.resume import check_removable, later_results, remove_stage_output, take_from_run_dir
from lcpipe.rundir import OWNER_KEY, claim_run_dir, foreign_files, recorded_files
from lcpipe.stages import STAGES, get_stage, options_model
from lcpipe.stages.base import Stage, StageContext
from lcpipe.sysinfo import cpu_info, versions
from lcpipe.version import __version__

log = logging.getLogger("lcpipe")


@dataclass
class StageRecord:
    name: str
    key: str
    cached: bool
    seconds: float
    inputs: dict[str, str] = field(default_factory=dict)  # kind -> sha256
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> {path, sha256}


@dataclass
class RunResult:
    run_dir: Path
    artifacts: dict[str, Path]
    records: list[StageRecord]
    metrics: dict[str, Any] | None = None

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        return self._gates("fail")

    @property
    def inconclusive_gates(self) -> list[dict[str, Any]]:
        return self._gates("inconclusive")

    def _gates(self, verdict: str) -> list[dict[str, Any]]:
        gates = (self.metrics or {}).get("gates") or []
        return [g for g in gates if (g.get("verdict") or ("pass" if g.get("passed") else "fail")) == verdict]


def load_config(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> PipelineConfig:
    """The pipeline YAML at ``path`` with ``--set`` overrides, stage options validated by the registry."""
    return parse_config(path, overrides, options_of=options_model, stage_order=tuple(STAGES))


def config_from_dict(raw: dict[str, Any], where: str = "<config>", base: Path | None = None) -> PipelineConfig:
    """A pipeline given as data, stage options validated by the registry; relative paths (of config
    sections and stage options) resolved against ``base`` when given, else kept as they are."""
    if base is not None:
        try:
            raw = resolve_config_paths(raw, base, options_model)
        except ConfigError as exc:  # an empty path: name where the config came from too
            raise ConfigError(f"{where}: {exc}") from None
    return validate_config(raw, where, options_of=options_model)


def apply_overrides(raw: dict[str, Any], overrides: tuple[str, ...] | list[str] = (),
                    where: str = "--set") -> dict[str, Any]:
    """``--set`` overrides applied to a pipeline given as data (stage options by the registry, a stage
    an override adds at its place in the registry's order)."""
    from lcpipe.config import apply_override

    for override in overrides:
        raw = apply_override(raw, override, where, options_of=options_model, stage_order=tuple(STAGES))
    return raw


def is_path_override(key: str) -> bool:
    """Does ``--set key=...`` set a path (a key a config model or stage options list in path_fields)?"""
    return is_path_key(key.split("."), options_model)


def stage_options(config: PipelineConfig, name: str) -> StageOptions:
    """The pipeline's options for stage ``name``, or that stage's defaults when the pipeline has none."""
    return config.stage_options(name) or options_model(name)()


def run_pipeline(config: PipelineConfig | str | Path, *, out: str | Path | None = None,
                 overrides: tuple[str, ...] | list[str] = (), from_stage: str | None = None,
                 until: str | None = None, force: bool = False, cache_dir: str | Path | None = None,
                 no_cache: bool = False, stage_cache: StageCache | None = None) -> RunResult:
    """``stage_cache``: a StageCache over ``cache_dir`` to use instead of the plain one (a sweep
    point's cache backed by shared storage)."""
    if not isinstance(config, PipelineConfig):
        config = load_config(config, overrides)
    names = config.stage_names()
    for flag, value in (("--from", from_stage), ("--until", until)):
        if value is not None and value not in names:
            raise ConfigError(f"{flag} {value}: not a stage of this pipeline ({', '.join(names)})")
    run_dir = resolve_run_dir(config, out)
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    with _clear_os_errors(run_dir, None if no_cache else cache_root), claim_run_dir(run_dir), run_log(run_dir), \
            content_hashes(), holding_entries():
        cache: StageCache = NullCache() if no_cache else stage_cache or StageCache(cache_root)
        cache.claim(trusted=cache_root.resolve() == platform_cache_dir().resolve())
        cache.remove_stale_temps()
        for p in remove_stale_temps(run_dir):
            log.info("removed %s left by an interrupted run", p)
        try:
            return _run(config, names, run_dir, cache_root, cache, from_stage, until, force, no_cache)
        except BaseException:
            cache.remove_own_temps()  # the run dir's: claim_run_dir
            raise


def resolve_run_dir(config: PipelineConfig, out: str | Path | None) -> Path:
    """--out, else runs/<name>/ under the current directory (name is a plain identifier: config.py)."""
    return (Path(out) if out else Path("runs") / config.name).resolve()


_ENV_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST}


@contextmanager
def _clear_os_errors(run_dir: Path, cache_root: Path | None) -> Iterator[None]:
    """A full disk, read-only or unwritable folder is the environment, not a bug: one line naming the path."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _ENV_ERRNOS:
            raise
        folders = f"--out {run_dir}" + (f" or --cache-dir {cache_root}" if cache_root else "")
        where = f"{exc.filename}: " if exc.filename else ""
        raise InputError(f"{where}{exc.strerror or exc} (writing to {folders})") from exc


def _run(config: PipelineConfig, names: list[str], run_dir: Path, cache_root: Path, cache: StageCache,
         from_stage: str | None, until: str | None, force: bool, no_cache: bool) -> RunResult:
    start_idx = names.index(from_stage) if from_stage else 0
    stop_idx = names.index(until) if until else len(names) - 1
    check_artifact_flow(config)
    stages = [(entry, get_stage(entry.name)()) for entry in config.stages]
    for _, stage in stages[start_idx:stop_idx + 1]:  # before anything is written
        stage.precheck(config)
    later = later_results(run_dir, [type(stage) for _, stage in stages[stop_idx + 1:]])
    if later:
        return _reuse_in_place(config, stages[:stop_idx + 1], run_dir, later, until, force)

    artifacts: dict[str, Path] = {}
    records: list[StageRecord] = []
    for entry, stage in stages[:start_idx]:
        prep = _prepare(stage, entry.options, config, artifacts)
        meta = take_from_run_dir(run_dir, type(stage), prep.key, prep.parts, config, f"--from {from_stage}")
        artifacts.update({kind: run_dir / stage.name / info["path"] for kind, info in meta["outputs"].items()})
    # What this run recomputes (and everything downstream of it) must not survive a failure
    # looking complete: drop those stages' old outputs (lcpipe's files only) and mark the manifest
    # unfinished first.
    check_removable(run_dir, [type(stage) for _, stage in stages[start_idx:]])
    manifest = _manifest_head(config, run_dir, cache_root, no_cache)
    manifest["finished"] = False
    write_json(run_dir / "manifest.json", manifest)
    for _, stage in stages[start_idx:]:
        remove_stage_output(run_dir, type(stage))
    metrics_file = run_dir / "metrics.json"
    for entry, stage in stages[start_idx:stop_idx + 1]:
        signals.check()  # a stop signal a library swallowed inside the last stage
        record = _run_stage(stage, entry.options, config, artifacts, run_dir, cache_root, cache, force)
        records.append(record)
        manifest["stages"].append(record.__dict__)
        write_json(run_dir / "manifest.json", manifest)
    manifest["finished"] = True
    write_json(run_dir / "manifest.json", manifest)
    metrics = None
    if "report" in names[start_idx:stop_idx + 1] and metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
    return RunResult(run_dir, artifacts, records, metrics)


def _reuse_in_place(config: PipelineConfig, stages: list[tuple[Any, Stage]], run_dir: Path, later: list[str],
                    until: str | None, force: bool) -> RunResult:
    """A partial run into a folder holding later stages' results: use the earlier stages as they are
    (their keys must match), leave the later results and the manifest alone."""
    why = f"a run up to {until} (--until {until}, or lcpipe bench): {run_dir} holds results of later stages " \
          f"({', '.join(later)})"
    if force:
        raise ConfigError(f"{why}, made from what --force would recompute; run the whole pipeline with --force, "
                          "or use another --out")
    artifacts: dict[str, Path] = {}
    records = []
    for entry, stage in stages:
        prep = _prepare(stage, entry.options, config, artifacts)
        meta = take_from_run_dir(run_dir, type(stage), prep.key, prep.parts, config, why)
        outputs = meta["outputs"]
        artifacts.update({kind: run_dir / stage.name / info["path"] for kind, info in outputs.items()})
        records.append(StageRecord(stage.name, prep.key, True, 0.0, prep.input_hashes, outputs))
        log.info("%s: result in the run directory reused (later stages kept)", stage.name)
    return RunResult(run_dir, artifacts, records, None)


def check_artifact_flow(config: PipelineConfig) -> None:
    """Every required input of a stage must be produced by an earlier stage, and no stage may
    consume an artifact kind that a LATER stage produces again: it would see another version than
    the stages after the later producer (e.g. validate before plan measures the quantize IR while
    report ships the planned one)."""
    available: set[str] = set()
    names = config.stage_names()
    stages = [get_stage(entry.name) for entry in config.stages]
    for i, (entry, stage) in enumerate(zip(config.stages, stages, strict=True)):
        missing = [k for k in stage.consumes if k not in available and not _alternative(stage, k, available)]
        if missing:
            raise ConfigError(f"{config.source_file}: stages[{i}].{entry.name}: needs {', '.join(missing)}, "
                              f"which no earlier stage produces (order: {', '.join(names)})")
        for kind in _consumed_kinds(stage):
            later = [j for j in range(i + 1, len(stages)) if kind in stages[j].produces]
            if later:
                last = f"stages[{later[-1]}].{names[later[-1]]}"
                raise ConfigError(f"{config.source_file}: stages[{i}].{entry.name} uses {kind}, which {last} "
                                  f"produces again after it: move {entry.name} after {names[later[-1]]} "
                                  f"(order: {', '.join(names)})")
        available.update(stage.produces)


def preflight(config: PipelineConfig) -> list[str]:
    """Every problem that would stop a run of ``config`` on its inputs (lcpipe check): the stage order, and
    what lcpipe.preflight finds (paths, datasets, the model source, datasets the stages need)."""
    from lcpipe.preflight import find_problems

    problems = []
    try:
        check_artifact_flow(config)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems + find_problems(config, [get_stage(entry.name) for entry in config.stages])


def _consumed_kinds(stage: type[Stage]) -> list[str]:
    alts = [a for kinds in stage.alternatives.values() for a in kinds]
    return list(dict.fromkeys((*stage.consumes, *stage.optional_consumes, *alts)))


def _alternative(stage: type[Stage], kind: str, available: set[str]) -> bool:
    return any(a in available for a in stage.alternatives.get(kind, ()))


@dataclass
class _Prepared:
    inputs: dict[str, Path]
    input_hashes: dict[str, str]
    key: str
    parts: dict[str, str]  # what the key hashes, part by part: stage.json keeps it to name a difference


def _prepare(stage: Stage, options: Any, config: PipelineConfig, artifacts: dict[str, Path]) -> _Prepared:
    wanted = [k for k in (*stage.consumes, *stage.optional_consumes) if k in artifacts]
    for k in stage.alternatives.values():
        wanted += [a for a in k if a in artifacts and a not in wanted]
    inputs = {k: artifacts[k] for k in wanted}
    input_hashes = {k: artifact_sha256(p) for k, p in inputs.items()}
    sections = {s: getattr(config, s).model_dump(mode="json") for s in stage.uses_config}
    opts = options.model_dump(mode="json")
    salt = stage.cache_salt(config)
    key = sha256_json({
        "stage": stage.name, "options": opts, "config": sections, "inputs": input_hashes, "salt": salt,
        "lcpipe": __version__, "cache_format": CACHE_FORMAT,
    })
    parts = {"options": sha256_json(opts), **{f"config.{s}": sha256_json(v) for s, v in sections.items()},
             "salt": sha256_json(salt), "inputs": sha256_json(input_hashes)}
    return _Prepared(inputs, input_hashes, key, parts)


def _run_stage(stage: Stage, options: Any, config: PipelineConfig, artifacts: dict[str, Path], run_dir: Path,
               cache_root: Path, cache: StageCache, force: bool) -> StageRecord:
    prep = _prepare(stage, options, config, artifacts)
    inputs, input_hashes, key = prep.inputs, prep.input_hashes, prep.key
    stage_dir = run_dir / stage.name
    t0 = time.perf_counter()
    hit = None if force or not stage.cacheable else cache.get(key)
    outputs = _reuse(hit, stage_dir, cache) if hit is not None else None
    if outputs is not None:
        log.info("%s: cached result reused (key %s), skipped", stage.name, key[:12])
        cached = True
    else:
        log.info("%s: running", stage.name)
        with atomic_dir(stage_dir) as tmp:
            ctx = StageContext(config=config, workdir=tmp, run_dir=run_dir, cache_dir=cache_root, log=log)
            produced = stage.run(ctx, options, inputs)
            outputs = {}
            for kind, path in produced.items():
                rel = Path(path).resolve().relative_to(tmp.resolve())
                outputs[kind] = {"path": rel.as_posix(), "sha256": sha256_path(path)}
            write_json(tmp / "stage.json", {"stage": stage.name, "key": key, "key_parts": prep.parts,
                                            "inputs": input_hashes, "outputs": outputs,
                                            "files": files_sha256(tmp, skip=("stage.json",)), "lcpipe": __version__})
        if stage.cacheable:
            cache.put(key, stage_dir, replace=force)
        cached = False
    seconds = time.perf_counter() - t0
    for kind, info in outputs.items():
        artifacts[kind] = stage_dir / info["path"]
    for name in stage.publish:
        _publish(stage_dir / name, run_dir / name)
    log.info("%s: done in %.1f s", stage.name, seconds)
    return StageRecord(stage.name, key, cached, round(seconds, 3), input_hashes, outputs)


def artifact_sha256(path: Path) -> str:
    """Cache-key hash of an input artifact (read once per run); an IR .xml is hashed with its .bin."""
    path = Path(path)
    weights = path.with_suffix(".bin")
    if path.suffix == ".xml" and path.is_file() and weights.is_file():
        return sha256_json({"xml": content_sha256(path), "bin": content_sha256(weights)})
    return content_sha256(path)


class _CorruptEntry(Exception):
    pass


def _reuse(hit: CacheEntry, stage_dir: Path, cache: StageCache) -> dict[str, Any] | None:
    """Copy a cache entry into the run dir and check the copy against the sha256 its stage.json
    records; on a mismatch drop the entry (and the copy) and return None so the stage recomputes."""
    recorded = hit.meta.get("files")
    try:
        if not isinstance(recorded, dict) or not isinstance(hit.meta.get("outputs"), dict):
            raise _CorruptEntry("stage.json")
        with atomic_dir(stage_dir) as tmp:
            copy_tree(hit.path, tmp)
            bad = mismatched_files(tmp, recorded)
            if bad:
                raise _CorruptEntry(", ".join(bad))
    except _CorruptEntry as exc:
        log.warning("%s: cached %s in %s does not match the sha256 recorded in stage.json; "
                    "entry discarded, recomputing", hit.meta.get("stage", "stage"), exc, hit.path)
        cache.discard(hit.key)
        return None
    except FileNotFoundError as exc:
        log.warning("%s: cached entry %s vanished while being reused (%s; a concurrent run discarded it?), "
                    "recomputing", hit.meta.get("stage", "stage"), hit.path, exc.filename)
        return None
    return hit.meta["outputs"]


def _publish(src: Path, dest: Path) -> None:
    """Copy a stage output to the top of the run dir (report, metrics.json, bench files)."""
    if not src.exists():
        return
    if src.is_dir():
        with atomic_dir(dest) as tmp:
            copy_tree(src, tmp)
    else:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)


def _manifest_head(config: PipelineConfig, run_dir: Path, cache_root: Path, no_cache: bool) -> dict[str, Any]:
    return {
        OWNER_KEY: True,  # this folder is lcpipe's: a later run may replace what its stage.json files list
        "pipeline": config.name,
        "source_file": config.source_file,
        "config": config.to_yaml_dict(),
        "lcpipe": __version__,
        "versions": versions(),
        "cpu": cpu_info(),
        "run_dir": str(run_dir),
        "cache_dir": None if no_cache else str(cache_root),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stages": [],
    }


# ---------------------------------------------------------------- the pipeline up to X, then Y

def run_until(config: PipelineConfig, until: str, *, purpose: str, out: str | Path | None = None,
              cache_dir: str | Path | None = None, no_cache: bool = False, force: bool = False) -> RunResult:
    """The pipeline up to stage ``until`` (cached stages reused) for a command that builds on its
    artifacts (``purpose``: "lcpipe bench", "sensitivity"); a ConfigError naming it when the pipeline
    has no such stage. Into a run dir holding later stages' results, the stages up to ``until`` are
    reused in place and the rest is kept (lcpipe.resume)."""
    require_stage(config, until, purpose=purpose)
    return run_pipeline(config, out=out, until=until, force=force, cache_dir=cache_dir, no_cache=no_cache)


def require_stage(config: PipelineConfig, name: str, *, purpose: str) -> None:
    """A ConfigError naming ``purpose`` when the pipeline has no stage ``name`` (checked before a
    command touches any folder)."""
    names = config.stage_names()
    if name not in names:
        raise ConfigError(f"{config.source_file}: {purpose} needs a pipeline with a {name} stage "
                          f"(stages: {', '.join(names)})")


def last_producer(names: list[str], stage: str) -> str | None:
    """The last of the pipeline's stages ``names`` that produces a kind ``stage`` consumes: running up to
    it hands ``stage`` what a full run would (lcpipe bench after a plan stage: the plan's IR)."""
    wanted = set(_consumed_kinds(get_stage(stage)))
    found = [n for n in names if wanted & set(get_stage(n).produces)]
    return found[-1] if found else None


def run_stage_after(config: PipelineConfig, name: str, *, purpose: str, updates: dict[str, Any] | None = None,
                    out: str | Path | None = None, cache_dir: str | Path | None = None, no_cache: bool = False,
                    force: bool = False) -> tuple[Path, dict[str, Path]]:
    """Stage ``name`` on a pipeline's artifacts without being one of its stages (``purpose``: "lcpipe
    bench"): the pipeline up to its last stage producing what ``name`` consumes, then ``name`` (not
    cached) into ``<run dir>/<name>/``. Its options are the pipeline's for it (else its defaults)
    updated by ``updates``; options and inputs are checked before anything runs. The run dir stays
    locked from the first stage to ``name``'s last file; ``<run dir>/<name>/`` is replaced only when
    lcpipe wrote all of it, and gets a stage.json listing its files. Returns that folder and the
    outputs."""
    stage = get_stage(name)
    try:
        options = stage.Options.model_validate({**stage_options(config, name).model_dump(), **(updates or {})})
    except ValueError as exc:
        raise ConfigError(f"{purpose}: {' '.join(str(exc).split())}") from None
    names = config.stage_names()
    available = {k for n in names for k in get_stage(n).produces}
    missing = [k for k in stage.consumes if k not in available and not _alternative(stage, k, available)]
    if missing:
        raise ConfigError(f"{config.source_file}: {purpose} needs {', '.join(missing)}, which no stage of this "
                          f"pipeline produces (stages: {', '.join(names)})")
    until = last_producer(names, name) or names[-1]
    with claim_run_dir(resolve_run_dir(config, out)) as run_dir:  # no other run between the pipeline and Y
        dest = run_dir / name
        _check_own_folder(dest, stage, purpose)  # before the (possibly long) pipeline run
        res = run_until(config, until, purpose=purpose, out=run_dir, cache_dir=cache_dir, no_cache=no_cache,
                        force=force)
        inputs = {k: res.artifacts[k] for k in _consumed_kinds(stage) if k in res.artifacts}
        with run_log(run_dir), atomic_dir(dest) as tmp:
            ctx = StageContext(config=config, workdir=tmp, run_dir=run_dir,
                               cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(), log=log)
            produced = stage().run(ctx, options, inputs)
            outputs = {kind: Path(path).resolve().relative_to(tmp.resolve()) for kind, path in produced.items()}
            write_json(tmp / "stage.json", {
                "stage": name, "key": None, "lcpipe": __version__,  # not cached: no key
                "outputs": {kind: {"path": rel.as_posix(), "sha256": sha256_path(tmp / rel)}
                            for kind, rel in outputs.items()},
                "files": files_sha256(tmp, skip=("stage.json",))})
    return dest, {kind: dest / rel for kind, rel in outputs.items()}


def _check_own_folder(dest: Path, stage: type[Stage], purpose: str) -> None:
    """``dest`` is replaced on every such command: only when it holds nothing but lcpipe's files (those
    its stage.json lists, or for a folder an older lcpipe wrote without one, the stage's ``older_files``)."""
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir() or dest.is_symlink():
        raise InputError(f"{dest}: a file or link where {purpose} writes its folder; move it out of the run "
                         "directory")
    record = recorded_files(dest)
    if record is not None:
        extra = [n for n in foreign_files(dest, record) if n != "stage.json"]
    else:
        extra = [f.relative_to(dest).as_posix() for f in sorted(dest.rglob("*"))
                 if not f.is_dir() and f.relative_to(dest).as_posix() not in stage.older_files]
    if extra:
        shown = ", ".join(extra[:3]) + (f" (+{len(extra) - 3} more)" if len(extra) > 3 else "")
        raise InputError(f"{dest}: holds {shown} that lcpipe did not write; {purpose} replaces this folder: "
                         "move them out of the run directory")
