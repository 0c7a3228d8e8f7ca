"""`lcpipe sweep`: one base pipeline, many override points, each an ordinary cached pipeline run.

A sweep file::

    base: v1_int8.yaml                  # relative to the sweep file
    grid: {model.arch: [PPLCNet_x0_25, PPLCNet_x0_5], stages.quantize.preset: [performance, mixed]}
    points: []                          # explicit override dicts, run after the grid points
    set: {data.eval.count: 200}         # applied to every point
    out: ../runs/sweeps/scales          # relative to the sweep file [runs/sweeps/<name>]

Points run as Ray tasks (local Ray by default, a cluster with ``address``/``RAY_ADDRESS``) or
sequentially in-process (``local=True``). Every point gets its own run dir under ``<out>/points/``
and all share one stage cache, so identical upstream stages are computed once; a point that
measures latency claims every CPU of its node. A failing point is recorded and the others go on;
running the sweep again resumes from the cache. Results: ``sweep.json``, ``sweep.csv``, ``sweep.html``.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lcpipe.config import PipelineConfig, _format_errors, _is_path_field, _sub_model, load_config, read_yaml_mapping
from lcpipe.errors import ConfigError, LcpipeError, MissingDependencyError
from lcpipe.fileio import write_json

log = logging.getLogger("lcpipe")

POINT_FILE = "point.json"  # a point's row, written into its run dir
POINT_LOG = "point.log"
RAY_OBJECT_STORE_BYTES = 200 * 1024 * 1024  # tasks pass paths and small dicts, never arrays


class SweepFailedError(LcpipeError):
    """At least one point of a sweep failed (the others finished; see sweep.json)."""

    exit_code = 1


# ---------------------------------------------------------------- spec

class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the sweep file's stem
    base: str  # pipeline YAML, relative to the sweep file
    grid: dict[str, list[Any]] = {}  # key path -> values; the cartesian product, in key order
    points: list[dict[str, Any]] = []  # explicit points (override dicts), after the grid
    set: dict[str, Any] = {}  # overrides every point gets (a point's own value wins)
    # arch -> model.source for points that set model.arch (weights differ per scale); paths
    # relative to the sweep file. A point that sets model.source.* itself keeps its own.
    sources: dict[str, dict[str, Any]] = {}
    out: str | None = None  # relative to the sweep file
    cpus_per_point: int = Field(1, gt=0)  # Ray CPUs of a point that does not measure latency
    eval_shards: int | None = Field(None, gt=0)  # also evaluate each point's IRs in N merged shards

    @field_validator("sources")
    @classmethod
    def _known_archs(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from lcpipe.config import SourceConfig
        from lcpipe.models.spec import ARCHS

        for arch, src in v.items():
            if arch not in ARCHS:
                raise ValueError(f"{arch}: unknown arch; one of {', '.join(ARCHS)}")
            SourceConfig.model_validate(src)  # a typo in a source key fails here, naming it
        return v

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"{key}: needs at least one value")
        return v


@dataclass
class SweepPoint:
    index: int
    id: str  # stable, readable run-dir name
    overrides: dict[str, Any]  # key path -> value (the point's own, without `set`)
    args: list[str]  # `--set` strings, `set` first, paths already absolute
    measures_latency: bool = False
    config: PipelineConfig | None = None


@dataclass
class Sweep:
    spec: SweepSpec
    name: str
    source: Path
    base: Path
    out: Path
    points: list[SweepPoint] = field(default_factory=list)


def load_sweep(path: str | Path, extra: tuple[str, ...] | list[str] = ()) -> Sweep:
    """Read and check a sweep file; ``extra`` are `--set` strings added to every point.

    Every point's pipeline config is validated here, so a typo in a key path fails before
    anything runs (the message names the point and the key)."""
    path = Path(path)
    spec = _read_spec(path)
    folder = path.parent.resolve()
    base = (folder / spec.base).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: base: {base} does not exist")
    name = spec.name or re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    out = (folder / spec.out).resolve() if spec.out else Path("runs", "sweeps", name).resolve()
    sweep = Sweep(spec, name, path, base, out)
    common = [_override_arg(k, v, folder) for k, v in spec.set.items()] + list(extra)
    for i, overrides in enumerate(_expand(spec)):
        args = common + _source_args(spec, overrides, folder)
        args += [_override_arg(k, v, folder) for k, v in overrides.items()]
        try:
            cfg = load_config(base, args)
        except ConfigError as exc:
            raise ConfigError(f"{path}: point {i} ({_describe(overrides)}): {exc}") from None
        point = SweepPoint(i, _point_id(i, overrides), overrides, args, measures_latency(cfg), cfg)
        sweep.points.append(point)
    if not sweep.points:
        raise ConfigError(f"{path}: no points (give 'grid' and/or 'points')")
    return sweep


def _read_spec(path: Path) -> SweepSpec:
    raw = read_yaml_mapping(path, "sweep", "base, grid, points, set, out")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path), "", SweepSpec)) from None


def _expand(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = list(spec.grid)
    grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*spec.grid.values())] if keys else []
    return grid + [dict(p) for p in spec.points]


def _source_args(spec: SweepSpec, overrides: dict[str, Any], folder: Path) -> list[str]:
    """``model.source={...}`` from ``sources`` for the point's arch, unless the point sets the source."""
    arch = overrides.get("model.arch")
    if arch not in spec.sources or any(k == "model.source" or k.startswith("model.source.") for k in overrides):
        return []
    src = dict(spec.sources[arch])
    if isinstance(src.get("path"), str):
        src["path"] = str((folder / Path(src["path"]).expanduser()).resolve())
    return [f"model.source={json.dumps(src)}"]


def _override_arg(key: str, value: Any, folder: Path) -> str:
    """``key=value`` for apply_override; a relative path value is made absolute against the sweep
    file's folder (apply_override would resolve it against the current directory)."""
    if isinstance(value, str) and _is_path_key(key) and not Path(value).expanduser().is_absolute():
        value = str((folder / value).resolve())
    # JSON is YAML: the value round-trips with its type (a str stays a str, a list a list).
    return f"{key}={json.dumps(value)}"


def _is_path_key(key: str) -> bool:
    keys = key.split(".")
    if keys[0] == "stages":
        return False  # stage options hold no paths (and are not path-resolved by config.py either)
    model: Any = PipelineConfig
    for k in keys[:-1]:
        model = _sub_model(model, k) if model else None
    return model is not None and _is_path_field(model, keys[-1])


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base"


def _point_id(index: int, overrides: dict[str, Any]) -> str:
    """``p03-PPLCNet_x0_5-mixed``: index first (unique, sorted), then the values for humans."""
    parts = [f"p{index:02d}"]
    for v in overrides.values():
        text = Path(v).name if isinstance(v, str) and "/" in v else str(v)
        parts.append(re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")[:24])
    return "-".join(p for p in parts if p)


def measures_latency(config: PipelineConfig) -> bool:
    """Does the pipeline time inference (a validate stage with latency or throughput on)? Such a
    point gets the whole node so nothing runs beside it."""
    opts = config.stage_options("validate")
    return opts is not None and bool(getattr(opts, "latency", True) or getattr(opts, "throughput", False))


# ---------------------------------------------------------------- one point

@dataclass
class PointTask:
    """What a worker needs to run one point (plain data: pickled to Ray workers)."""

    index: int
    id: str
    base: str
    args: list[str]
    overrides: dict[str, Any]
    run_dir: str
    cache_dir: str
    force: bool = False
    no_cache: bool = False
    eval_shards: int | None = None
    cpus: int | None = None  # Ray CPUs the point holds (None: run in-process)


def run_point(task: PointTask) -> dict[str, Any]:
    """Run one point's pipeline; never raises for pipeline errors (they become the row's status)."""
    from lcpipe.runner import run_pipeline

    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to_file(run_dir / POINT_LOG)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"point": task.id, "index": task.index, "overrides": task.overrides,
                           "run_dir": str(run_dir), "status": "ok", "cpus": task.cpus}
    result = None
    try:
        config = load_config(task.base, task.args)
        result = run_pipeline(config, out=run_dir, cache_dir=task.cache_dir, force=task.force,
                              no_cache=task.no_cache)
        row.update(collect_metrics(config, result))
        if task.eval_shards:
            row.update(_sharded_eval(config, result, task.eval_shards, run_dir))
        if result.failed_gates:
            row.update(status="gate_failed", exit_code=3,
                       error="gates failed: " + ", ".join(g["name"] for g in result.failed_gates))
    except Exception as exc:  # a point's failure is data for the sweep, not the end of it
        row.update(_error_fields(exc))
        log.error("%s: %s", task.id, row["error"])
        if row["error_class"] == "internal":
            log.error("%s", traceback.format_exc())
    finally:
        row["seconds"] = round(time.perf_counter() - t0, 2)
        logging.getLogger("lcpipe").removeHandler(handler)
        handler.close()
    write_json(run_dir / POINT_FILE, row)
    return row


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    lg = logging.getLogger("lcpipe")
    lg.addHandler(handler)
    if lg.getEffectiveLevel() > logging.INFO:
        lg.setLevel(logging.INFO)  # a Ray worker starts at WARNING; the point log wants stage progress
    return handler


def _error_fields(exc: BaseException) -> dict[str, Any]:
    from lcpipe.errors import GateFailedError, InputError

    if isinstance(exc, ConfigError):
        cls = "config"
    elif isinstance(exc, MissingDependencyError):
        cls = "dependency"
    elif isinstance(exc, InputError):
        cls = "input"
    elif isinstance(exc, GateFailedError):
        cls = "gate"
    elif isinstance(exc, LcpipeError):
        cls = "lcpipe"
    else:
        cls = "internal"
    code = exc.exit_code if isinstance(exc, LcpipeError) else 1
    text = str(exc) if isinstance(exc, LcpipeError) else f"{type(exc).__name__}: {exc}"
    return {"status": "failed", "error": text, "error_class": cls, "exit_code": code}


def collect_metrics(config: PipelineConfig, result: Any) -> dict[str, Any]:
    """The table's columns for one finished run: model facts, accuracy, latency, sizes."""
    row: dict[str, Any] = {"cached_stages": [r.name for r in result.records if r.cached],
                           "computed_stages": [r.name for r in result.records if not r.cached]}
    row.update(_model_facts(config, result))
    row.update(_ir_sizes(result))
    if result.metrics:
        row.update(metrics_columns(result.metrics))
    return row


def _model_facts(config: PipelineConfig, result: Any) -> dict[str, Any]:
    info_path = result.artifacts.get("model_info")
    info = json.loads(Path(info_path).read_text()) if info_path and Path(info_path).is_file() else {}
    spec = info.get("spec")
    if not spec:
        return {"arch": info.get("arch") or config.model.arch, "params": None, "flops": None}
    from lcpipe.models.layers import count_params_flops
    from lcpipe.models.spec import ModelSpec

    ms = ModelSpec.from_dict(spec)
    # count the deployed (fused) graph: BN folded and rep branches merged, as the IR holds it
    fused = ms.replace(bn_folded=True, rep_fused=ms.family == "v2", dropout_folded=True)
    params, macs = count_params_flops(fused, config.preprocess.input_hw)
    return {"arch": ms.arch, "params": params, "flops": macs}


def _ir_sizes(result: Any) -> dict[str, Any]:
    """Bytes on disk of the FP32 IR (convert), the INT8 IR (quantize) and the ONNX (export)."""
    sizes: dict[str, Any] = {}
    for rec in result.records:
        col = {"export": "size_onnx", "convert": "size_fp32", "quantize": "size_int8"}.get(rec.name)
        if col is None:
            continue
        total = 0
        for info in rec.outputs.values():
            p = result.run_dir / rec.name / info["path"]
            if p.suffix == ".xml":
                total += p.stat().st_size + (p.with_suffix(".bin").stat().st_size if p.with_suffix(".bin").exists()
                                             else 0)
            elif p.suffix == ".onnx":
                total += p.stat().st_size
        if total:
            sizes[col] = total
    return sizes


def metrics_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """Flatten the report's metrics.json into table columns (missing parts stay None)."""
    acc = metrics.get("accuracy") or {}
    lat = metrics.get("latency_ms") or {}
    thr = metrics.get("throughput_ips") or {}
    sp = metrics.get("speedup") or {}
    quant = metrics.get("quantize") or {}
    return {
        "images": acc.get("images"),
        "fp32_top1": (acc.get("fp32") or {}).get("top1"),
        "int8_top1": (acc.get("int8") or {}).get("top1"),
        "top1_drop": acc.get("top1_drop"),
        "agreement": acc.get("agreement"),
        "cosine": acc.get("cosine"),
        "latency_p50_fp32_ms": (lat.get("fp32") or {}).get("p50"),
        "latency_p50_int8_ms": (lat.get("int8") or {}).get("p50"),
        "throughput_fp32": thr.get("fp32"),
        "throughput_int8": thr.get("int8"),
        "latency_speedup": sp.get("latency_p50"),
        "throughput_speedup": sp.get("throughput"),
        "preset": quant.get("preset"),
        "quantized_ops": quant.get("quantized_ops"),
        "gates_failed": [g["name"] for g in metrics.get("gates") or [] if not g.get("passed")],
        "threads": metrics.get("threads"),
    }


def _sharded_eval(config: PipelineConfig, result: Any, shards: int, run_dir: Path) -> dict[str, Any]:
    """Accuracy of this point's FP32/INT8 IRs on data.eval, as N shards merged exactly."""
    from lcpipe.measure.shards import evaluate_sharded, find_irs

    fp32, int8 = find_irs(result)
    if fp32 is None or int8 is None or config.data.eval is None:
        return {}
    counts = evaluate_sharded(fp32, int8, config, shards=shards, threads=1, use_ray=_in_ray_worker())
    summary = counts.summary()
    write_json(run_dir / "sharded_eval.json", {"shards": shards, "counts": counts.to_dict(), "summary": summary})
    return {"sharded_" + k: v for k, v in summary.items() if k in ("images", "fp32_top1", "int8_top1", "agreement")}


def _in_ray_worker() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


# ---------------------------------------------------------------- the sweep

@dataclass
class SweepResult:
    sweep: Sweep
    rows: list[dict[str, Any]]
    files: dict[str, Path]
    seconds: float

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def gate_failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "gate_failed"]


def run_sweep(sweep: Sweep | str | Path, *, out: str | Path | None = None, local: bool = False,
              address: str | None = None, cache_dir: str | Path | None = None, force: bool = False,
              no_cache: bool = False, overrides: tuple[str, ...] | list[str] = (),
              num_cpus: int | None = None) -> SweepResult:
    """Run every point (Ray tasks, or in-process with ``local``) and write the result tables."""
    from lcpipe.cache import default_cache_dir
    from lcpipe.sysinfo import cpu_info

    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep, overrides)
    if out:
        sweep.out = Path(out).resolve()
    cache = str(Path(cache_dir or default_cache_dir()).expanduser().resolve())
    tasks = [PointTask(p.index, p.id, str(sweep.base), p.args, p.overrides, str(sweep.out / "points" / p.id),
                       cache, force, no_cache, sweep.spec.eval_shards) for p in sweep.points]
    log.info("sweep %s: %d point(s) -> %s", sweep.name, len(tasks), sweep.out)
    t0 = time.perf_counter()
    if local:
        rows = [_logged(run_point(t), i, len(tasks)) for i, t in enumerate(tasks)]
        executor = {"kind": "local"}
    else:
        rows, executor = _run_on_ray(sweep, tasks, address, num_cpus)
    rows = sorted(({**dict.fromkeys(COLUMNS), **r} for r in rows), key=lambda r: r["index"])  # every column
    seconds = time.perf_counter() - t0
    files = write_results(sweep, rows, {**cpu_info(), "executor": executor, "seconds": round(seconds, 1)})
    return SweepResult(sweep, rows, files, seconds)


def _logged(row: dict[str, Any], done: int, total: int) -> dict[str, Any]:
    what = row.get("error") if row["status"] != "ok" else f"{row.get('seconds', 0):.1f} s"
    log.info("[%d/%d] %s: %s (%s)", done + 1, total, row["point"], row["status"], what)
    return row


def _run_on_ray(sweep: Sweep, tasks: list[PointTask], address: str | None,
                num_cpus: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ray = _import_ray()
    started, tmp = _start_ray(ray, address, num_cpus)
    try:
        node_cpus = _largest_node_cpus(ray)
        # max_retries=0: a point whose worker dies is reported, not silently run again
        remote = ray.remote(max_retries=0)(run_point)
        refs = {}
        for point, task in zip(sweep.points, tasks, strict=True):
            cpus = node_cpus if point.measures_latency else min(sweep.spec.cpus_per_point, node_cpus)
            task.cpus = cpus
            refs[remote.options(num_cpus=cpus, name=f"lcpipe-sweep-{task.id}").remote(task)] = task
        rows = []
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            task = refs[ready[0]]
            try:
                row = ray.get(ready[0])
            except Exception as exc:  # the worker died (OOM kill, segfault): record it, go on
                row = _crashed_row(task, exc)
            rows.append(_logged(row, len(rows), len(tasks)))
        executor = {"kind": "ray", "address": address or "local", "node_cpus": node_cpus,
                    "ray": getattr(ray, "__version__", "")}
        return rows, executor
    finally:
        if started:
            ray.shutdown()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _crashed_row(task: PointTask, exc: BaseException) -> dict[str, Any]:
    row = {"point": task.id, "index": task.index, "overrides": task.overrides, "run_dir": task.run_dir,
           "status": "failed", "error": f"worker crashed: {type(exc).__name__}: {str(exc).splitlines()[0]}",
           "error_class": "crashed", "exit_code": 1}
    Path(task.run_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(task.run_dir) / POINT_FILE, row)
    return row


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("package 'ray' is not installed (needed for sweeps on Ray): "
                                     "pip install 'lcpipe[sweep]', or run with --local") from exc
    return ray


def _start_ray(ray: Any, address: str | None, num_cpus: int | None) -> tuple[bool, str | None]:
    """Connect to ``address`` / $RAY_ADDRESS, or start a lean, quiet local Ray; returns
    (started here, temp dir to remove)."""
    if ray.is_initialized():
        return False, None
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
              "configure_logging": True}
    if address:
        ray.init(address=address, **common)
        return True, None
    from lcpipe.sysinfo import default_threads

    # A short temp path: Ray's unix sockets live under it and must stay below ~107 characters.
    tmp = tempfile.mkdtemp(prefix="lcpipe-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    ray.init(num_cpus=num_cpus or default_threads(), object_store_memory=RAY_OBJECT_STORE_BYTES,
             _temp_dir=tmp, **common)
    return True, tmp


def _largest_node_cpus(ray: Any) -> int:
    """CPUs of the biggest alive node: a latency point asks for all of them, so it only fits on
    such a node, alone."""
    cpus = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(max(cpus, default=1)))


# ---------------------------------------------------------------- results

COLUMNS = ("point", "status", "arch", "params", "flops", "preset", "fp32_top1", "int8_top1", "top1_drop",
           "agreement", "cosine", "latency_p50_fp32_ms", "latency_p50_int8_ms", "latency_speedup",
           "throughput_fp32", "throughput_int8", "size_fp32", "size_int8", "size_onnx", "images", "seconds",
           "error_class", "exit_code", "error", "run_dir")


def write_results(sweep: Sweep, rows: list[dict[str, Any]], machine: dict[str, Any]) -> dict[str, Path]:
    sweep.out.mkdir(parents=True, exist_ok=True)
    keys = _swept_keys(sweep)
    doc = {"sweep": sweep.name, "source": str(sweep.source), "base": str(sweep.base), "swept": keys,
           "machine": machine, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "points": rows}
    files = {"json": sweep.out / "sweep.json", "csv": sweep.out / "sweep.csv", "html": sweep.out / "sweep.html"}
    write_json(files["json"], doc)
    _write_csv(files["csv"], rows, keys)
    files["html"].write_text(render_html(doc))
    return files


def _swept_keys(sweep: Sweep) -> list[str]:
    return list(dict.fromkeys(k for p in sweep.points for k in p.overrides))


def _write_csv(path: Path, rows: list[dict[str, Any]], keys: list[str]) -> None:
    extra = sorted({k for r in rows for k in r if k.startswith("sharded_")})
    cols = ["point", *keys, *COLUMNS[1:], *extra]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            ov = r.get("overrides") or {}
            w.writerow([_cell(ov.get(c) if c in keys and c not in r else r.get(c)) for c in cols])
    tmp.replace(path)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return v


def format_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """Plain-text table for the terminal."""
    head = ["point", *keys, "status", "top1 fp32", "top1 int8", "agree", "p50 fp32", "p50 int8", "int8 MB"]
    lines = [head]
    for r in rows:
        ov = r.get("overrides") or {}
        lines.append([r["point"], *(str(ov.get(k, "")) for k in keys), r["status"], _pct(r.get("fp32_top1")),
                      _pct(r.get("int8_top1")), _pct(r.get("agreement")), _ms(r.get("latency_p50_fp32_ms")),
                      _ms(r.get("latency_p50_int8_ms")), _mb(r.get("size_int8"))])
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    for r in rows:
        if r["status"] == "failed":
            out.append(f"{r['point']}: {r.get('error_class')} error (exit {r.get('exit_code')}): {r.get('error')}")
    return "\n".join(out)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.2f} ms"


def _mb(v: Any) -> str:
    return "-" if v is None else f"{v / 1e6:.2f}"


# ---------------------------------------------------------------- html

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (x lower is better, y higher),
    sorted by x. A point equal to another on both axes stays on the front."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = float("-inf")
    for i in order:
        x, y = points[i]
        if y > best_y or (front and points[front[-1]] == (x, y)):
            front.append(i)
            best_y = max(best_y, y)
    return front


def _plot_axes(rows: list[dict[str, Any]]) -> tuple[str, str] | None:
    """INT8 latency against INT8 top-1 when labels exist, else against FP32 agreement."""
    timed = [r for r in rows if r["status"] != "failed" and r.get("latency_p50_int8_ms") is not None]
    if not timed:
        return None
    # all-zero top-1 (random weights, foreign labels) says nothing; agreement still does
    if all(r.get("int8_top1") is not None for r in timed) and any(r["int8_top1"] for r in timed):
        return "latency_p50_int8_ms", "int8_top1"
    if all(r.get("agreement") is not None for r in timed):
        return "latency_p50_int8_ms", "agreement"
    return None


def scatter_png(rows: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """Base64 PNG of accuracy vs latency with the Pareto front, and the front's point ids."""
    axes = _plot_axes(rows)
    if axes is None:
        return None, []
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display on build machines
    import matplotlib.pyplot as plt

    xk, yk = axes
    pts = [r for r in rows if r["status"] != "failed" and r.get(xk) is not None and r.get(yk) is not None]
    xy = [(float(r[xk]), float(r[yk])) for r in pts]
    front = pareto_front(xy)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    # FP32 for reference: its own top-1, or agreement 1 with itself
    fp32 = [(r["latency_p50_fp32_ms"], r["fp32_top1"] if yk == "int8_top1" else 1.0) for r in pts
            if r.get("latency_p50_fp32_ms") is not None and (yk != "int8_top1" or r.get("fp32_top1") is not None)]
    if fp32:
        ax.scatter(*zip(*fp32, strict=True), marker="o", facecolors="none", edgecolors="0.6", label="FP32")
    ax.scatter([x for x, _ in xy], [y for _, y in xy], color="tab:blue", label="INT8", zorder=3)
    fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", lw=1.5, zorder=2, label="Pareto front (INT8)")
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="tab:red", lw=1.5, zorder=4)
    for (x, y), r in zip(xy, pts, strict=True):
        ax.annotate(r["point"].split("-")[0], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_title("points labelled by index (p00 ...), see the table", fontsize=9)
    ax.set_xlabel("latency p50, batch 1 (ms)  - lower is better")
    ax.set_ylabel(("top-1" if yk == "int8_top1" else "agreement with FP32") + "  - higher is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii"), [pts[i]["point"] for i in front]


def render_html(doc: dict[str, Any]) -> str:
    import jinja2

    from lcpipe.render.html import TEMPLATES

    rows = [{c: None for c in COLUMNS} | r for r in doc["points"]]  # absent columns render as "-"
    doc = {**doc, "points": rows}
    png, front = scatter_png(rows)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters.update(pct=_pct, ms=_ms, mb=_mb, num=_num)
    return env.get_template("sweep.html.j2").render(doc=doc, png=png, front=set(front), front_order=front,
                                                    swept=doc["swept"])


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and v >= 10_000:
        return f"{v / 1e6:.2f} M"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
