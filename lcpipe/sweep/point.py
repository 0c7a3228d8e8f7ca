"""One point: an ordinary cached pipeline run whose failure becomes its row, and the row's columns."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lcpipe.config import PipelineConfig
from lcpipe.errors import ConfigError, LcpipeError, MissingDependencyError
from lcpipe.fileio import write_json
from lcpipe.records import read_json

log = logging.getLogger("lcpipe")

POINT_FILE = "point.json"  # a point's row, written into its run dir
GATED_OK = ("ok", "gate_failed", "gate_inconclusive")  # statuses of a point whose run finished
POINT_LOG = "point.log"


@dataclass
class PointTask:
    """What a worker needs to run one point (plain data: pickled to Ray workers).

    In-process points read the driver's files (``base`` + ``args``, ``run_dir``). Ray points carry
    no driver path: ``config`` names only shipped inputs (see shipping.py), the run dir is made on
    the node and comes home as a zip."""

    index: int
    id: str
    overrides: dict[str, Any]
    base: str | None = None  # in-process: the pipeline YAML and its --set strings
    args: list[str] = field(default_factory=list)
    run_dir: str | None = None  # in-process: where the run dir goes
    config: dict[str, Any] | None = None  # Ray: the pipeline with shipped input names
    inputs_sha256: str | None = None  # Ray: the shipped inputs zip
    storage: str | None = None  # Ray: storage: URI (inputs too big for the object store, big run dirs)
    cache_dir: str | None = None  # None: the node's own ($LCPIPE_CACHE_DIR or the user cache)
    force: bool = False
    no_cache: bool = False
    eval_shards: int | None = None
    cpus: int | None = None  # Ray CPUs the point holds (None: run in-process)
    fingerprint: str | None = None  # what the point's result depends on: a rerun resumes on a match


def run_point(task: PointTask, config: PipelineConfig | None = None, run_dir: str | Path | None = None
              ) -> dict[str, Any]:
    """Run one point's pipeline; never raises for pipeline errors (they become the row's status)."""
    from lcpipe.runner import load_config, run_pipeline

    run_dir = Path(run_dir or task.run_dir or ".")
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to_file(run_dir / POINT_LOG)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"point": task.id, "index": task.index, "overrides": task.overrides,
                           "run_dir": str(run_dir), "status": "ok", "cpus": task.cpus,
                           "fingerprint": task.fingerprint}
    result = None
    try:
        config = config or load_config(task.base or "", task.args)
        result = run_pipeline(config, out=run_dir, cache_dir=task.cache_dir, force=task.force,
                              no_cache=task.no_cache, stage_cache=_backed_cache(task))
        row.update(collect_metrics(config, result))
        if task.eval_shards:
            row.update(_sharded_eval(config, result, task.eval_shards, run_dir))
        if result.failed_gates:
            row.update(status="gate_failed", exit_code=3,
                       error="gates failed: " + ", ".join(g["name"] for g in result.failed_gates))
        elif result.inconclusive_gates:
            row.update(status="gate_inconclusive", exit_code=4,
                       error="gates inconclusive: " + ", ".join(g["name"] for g in result.inconclusive_gates))
    except Exception as exc:  # a point's failure is data for the sweep, not the end of it
        row.update(error_fields(exc))
        log.error("%s: %s", task.id, row["error"])
        if row["error_class"] == "internal":
            log.error("%s", traceback.format_exc())
    finally:
        row["seconds"] = round(time.perf_counter() - t0, 2)
        logging.getLogger("lcpipe").removeHandler(handler)
        handler.close()
    write_json(run_dir / POINT_FILE, row)
    return row


def _backed_cache(task: PointTask) -> Any:
    """With storage: the node's stage cache looks there on a miss and copies new entries there."""
    if not task.storage or task.no_cache:
        return None
    from lcpipe.cache import default_cache_dir
    from lcpipe.sweep.cache_backing import BackedStageCache
    from lcpipe.sweep.storage import Storage

    return BackedStageCache(Path(task.cache_dir) if task.cache_dir else default_cache_dir(), Storage(task.storage))


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    lg = logging.getLogger("lcpipe")
    lg.addHandler(handler)
    if lg.getEffectiveLevel() > logging.INFO:
        lg.setLevel(logging.INFO)  # a Ray worker starts at WARNING; the point log wants stage progress
    return handler


def error_fields(exc: BaseException) -> dict[str, Any]:
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


def timed_earlier(row: dict[str, Any]) -> bool:
    """Was the row's latency measured before this sweep run (its validate stage reused from the cache, or
    the whole point resumed from an earlier run)? Such figures were timed under another load and are
    not compared with this run's (Pareto fronts, fleet table); ``--force`` re-times them."""
    if row.get("latency_p50_int8_ms") is None:
        return False
    return bool(row.get("resumed")) or "validate" in (row.get("cached_stages") or [])


def collect_metrics(config: PipelineConfig, result: Any) -> dict[str, Any]:
    """The table's columns for one finished run: model facts, accuracy, latency, sizes."""
    row: dict[str, Any] = {"cached_stages": [r.name for r in result.records if r.cached],
                           "computed_stages": [r.name for r in result.records if not r.cached]}
    row.update(_model_facts(config, result))
    row.update(_ir_sizes(result))
    if result.metrics:
        row.update(metrics_columns(result.metrics))
    row.update(_plan_columns(result))
    return row


def _model_facts(config: PipelineConfig, result: Any) -> dict[str, Any]:
    info_path = result.artifacts.get("model_info")
    info = read_json(info_path) if info_path and Path(info_path).is_file() else {}
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


_SIZE_COLUMNS = {"onnx": "size_onnx", "ir_fp32": "size_fp32", "ir_int8": "size_int8"}


def _ir_sizes(result: Any) -> dict[str, Any]:
    """Bytes on disk of the ONNX, the FP32 IR and the shipped INT8 IR: of each, the last stage's
    that produced it (a ``plan`` stage replaces quantize's INT8 IR with the one it chose)."""
    sizes: dict[str, Any] = {}
    for rec in result.records:
        for kind, info in rec.outputs.items():
            col = _SIZE_COLUMNS.get(kind)
            if col is None:
                continue
            p = result.run_dir / rec.name / info["path"]
            total = p.stat().st_size if p.is_file() else 0
            if p.suffix == ".xml" and p.with_suffix(".bin").is_file():
                total += p.with_suffix(".bin").stat().st_size
            if total:
                sizes[col] = total
    return sizes


def _plan_columns(result: Any) -> dict[str, Any]:
    """With a ``plan`` stage the shipped INT8 IR is the plan's choice: its preset, quantized op count
    and float precision, from plan.json (not from the quantize stage's own IR)."""
    path = result.artifacts.get("plan_report")
    if not path or not Path(path).is_file():
        return {}
    plan = read_json(path)  # as it is: an older plan.json may lack keys, the columns stay None
    chosen = plan.get("chosen") or {}
    cand = next((c for c in plan.get("candidates") or [] if c.get("chosen")), {})
    counts = (plan.get("irs") or {}).get(cand.get("ir")) or {}
    return {"plan": chosen.get("name"), "int8_precision": chosen.get("inference_precision"),
            "preset": chosen.get("preset") if chosen.get("int8") else None,
            "quantized_ops": counts.get("quantized") if chosen.get("int8") else 0}


def metrics_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """Flatten the report's metrics.json into table columns (missing parts stay None)."""
    acc = metrics.get("accuracy") or {}
    lat = metrics.get("latency_ms") or {}
    thr = metrics.get("throughput_ips") or {}
    sp = metrics.get("speedup") or {}
    quant = metrics.get("quantize") or {}
    plan, shipped = metrics.get("plan"), metrics.get("shipped") or {}
    if plan:  # the shipped INT8 IR is the plan's choice, not quantize's IR (see _plan_columns)
        quant = {"preset": None, "quantized_ops": None} if plan.get("int8") else {"preset": None, "quantized_ops": 0}
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
        "shipped": shipped.get("plan"),
        "e2e_speedup_vs_default": shipped.get("speedup_vs_default_e2e_p50"),
        "latency_speedup": sp.get("latency_p50"),
        "latency_speedup_ci95": sp.get("latency_p50_ci95"),
        "timed_at": (lat.get("int8") or {}).get("measured_at"),
        "throughput_speedup": sp.get("throughput"),
        "preset": quant.get("preset"),
        "quantized_ops": quant.get("quantized_ops"),
        **({"plan": plan.get("chosen"), "int8_precision": plan.get("inference_precision")} if plan else {}),
        "gates_failed": [g["name"] for g in metrics.get("gates") or [] if g.get("verdict", "fail") == "fail"],
        "gates_inconclusive": [g["name"] for g in metrics.get("gates") or [] if g.get("verdict") == "inconclusive"],
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
