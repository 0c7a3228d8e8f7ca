"""bench: lcpipe's FP32/INT8 IRs against other engines on this machine, side by side.

Engines (see lcpipe.measure.engines): OpenVINO FP32 IR (f32) and INT8 IR, the FP32 IR at the plugin's
default precision (bf16 on AMX), the paddle2onnx -> OpenVINO route, ONNX Runtime FP32 and static
INT8 (QDQ), Paddle Inference with oneDNN. Unavailable engines are listed with the reason.

Definitions, the same for every engine, all with ``threads`` threads in one process:
- latency: one synchronous batch-1 call (input copy in, output copy out), p50/p90 over all
  interleaved rounds (lcpipe.measure.timing.measure_latency: each round times every engine, order flips);
- throughput: images/s of synchronous batch-``batch`` calls (batch / p50 of a call), interleaved
  the same way. OpenVINO engines are compiled with the LATENCY hint (one stream, all threads) and
  a static input shape for both batch sizes; ONNX Runtime and Paddle take the batch as it comes.
- agreement: argmax equal to the lcpipe FP32 IR's on the first ``eval_images`` of data.eval.

Not cached: it measures the machine. Outputs: bench.json, bench.md, bench.png, bench.html (a
fragment: table + inline chart), profile.json when ``profile`` is on.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lcpipe.fileio import write_json
from lcpipe.render.bench import render_html_fragment, render_markdown, render_profile_md
from lcpipe.render.charts import bench_chart
from lcpipe.stages.base import Stage, StageContext, StageOptions, register

SCHEMA = 1
EngineName = Literal["ov_fp32", "ov_int8", "ov_fp32_default", "ov_p2o_fp32", "ort_fp32", "ort_int8", "paddle_onednn"]
# INT8 IR vs FP32 IR batch-1 latency goals by architecture and ISA (issue 6).
INT8_GOALS: dict[str, dict[str, float]] = {
    "PPLCNetV2_base": {"avx2": 1.9, "avx512_vnni": 2.5},
    "PPLCNet_x1_0": {"avx2": 1.6, "avx512_vnni": 2.0},
}
NOISE_TOLERANCE = 0.03  # "no slower" goals: within 3% is a tie (medians of interleaved rounds move that much)
PEER_GOALS = (  # (name, slower engine, faster engine, min ratio of p50s, description)
    ("fp32_ir_vs_paddle2onnx_route", "ov_p2o_fp32", "ov_fp32", 1.0,
     "lcpipe FP32 IR no slower than the paddle2onnx route"),
    ("fp32_ir_vs_ort_fp32", "ort_fp32", "ov_fp32", 1.0, "lcpipe FP32 IR no slower than ONNX Runtime FP32"),
    ("int8_vs_ort_int8", "ort_int8", "ov_int8", 2.0, "lcpipe INT8 >= 2x faster than ONNX Runtime INT8"),
    ("int8_vs_paddle_onednn", "paddle_onednn", "ov_int8", 2.0, "lcpipe INT8 >= 2x faster than Paddle Inference oneDNN"),
)
LATENCY_DEF = "synchronous batch-1 call, p50/p90 over interleaved rounds"
THROUGHPUT_DEF = "images/s of synchronous batch-{batch} calls (batch / p50 call time), interleaved rounds"


class BenchOptions(StageOptions):
    engines: list[EngineName] | None = None  # subset to run (ov_fp32, the reference, always runs); None: all
    threads: int | None = Field(None, gt=0)  # None: runtime.threads, else all cores
    batch: int = Field(8, ge=1)  # batch size of the throughput figure
    warmup: int = Field(10, ge=0)  # untimed batch-1 calls per engine (batch-N: warmup // batch + 1)
    rounds: int = Field(5, gt=0)  # interleaved rounds
    iterations: int = Field(50, gt=0)  # timed batch-1 calls per engine per round
    batch_iterations: int | None = Field(None, gt=0)  # timed batch-N calls per round; None: iterations // batch + 2
    eval_images: int | None = Field(200, gt=0)  # first N of data.eval for top-1 / agreement; None: all
    ort_calib_images: int | None = Field(None, gt=0)  # None: quantize.subset_size (the images NNCF used)
    paddle_model: str | None = None  # Paddle inference model (folder) for Paddle Inference + the paddle2onnx route
    int8_precision: Literal["f32", "bf16", "f16", "default"] = "f32"  # float ops of the INT8 IR that stay float
    profile: bool = False  # OpenVINO per-layer counters of the FP32 and INT8 IRs -> profile.json
    profile_iterations: int = Field(50, gt=0)
    chart: bool = True  # bench.png + bench.html (matplotlib)
    progress: bool = True


@register
class BenchStage(Stage):
    name = "bench"
    Options = BenchOptions
    consumes = ("onnx", "ir_fp32", "ir_int8")
    optional_consumes = ("source_onnx", "model_info")
    produces = ("bench", "bench_md", "bench_png", "bench_html", "bench_profile")
    uses_config = ("preprocess", "runtime")
    cacheable = False
    publish = ("bench.json", "bench.md", "bench.png")
    summary = "OpenVINO FP32/INT8 vs paddle2onnx route, ONNX Runtime FP32/INT8, Paddle oneDNN: latency, throughput"

    def run(self, ctx: StageContext, options: BenchOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        result = run_bench(ctx, options, inputs)
        return write_outputs(ctx.workdir, result, options)


# ---------------------------------------------------------------- orchestration

def bench_pipeline(pipeline: Any, *, overrides: tuple[str, ...] | list[str] = (), out: Path | None = None,
                   cache_dir: Path | None = None, no_cache: bool = False, force: bool = False,
                   updates: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    """``lcpipe bench``: run the pipeline up to quantize (cached stages are reused), then benchmark
    into ``<run dir>/bench/``. Options: the YAML's bench stage (if any) updated by ``updates``."""
    import logging

    from lcpipe.cache import default_cache_dir
    from lcpipe.config import PipelineConfig, load_config
    from lcpipe.errors import ConfigError
    from lcpipe.fileio import atomic_dir
    from lcpipe.runner import run_pipeline

    config = pipeline if isinstance(pipeline, PipelineConfig) else load_config(pipeline, overrides)
    if "quantize" not in config.stage_names():
        raise ConfigError(f"{config.source_file}: lcpipe bench needs a pipeline with a quantize stage "
                          f"(stages: {', '.join(config.stage_names())})")
    base = config.stage_options("bench") or BenchOptions()
    try:  # before the (possibly long) pipeline run
        options = BenchOptions.model_validate({**base.model_dump(), **(updates or {})})
    except ValueError as exc:
        raise ConfigError(f"lcpipe bench: {' '.join(str(exc).split())}") from None
    res = run_pipeline(config, out=out, until="quantize", force=force, cache_dir=cache_dir, no_cache=no_cache)
    inputs = {k: res.artifacts[k] for k in (*BenchStage.consumes, *BenchStage.optional_consumes)
              if k in res.artifacts}
    missing = [k for k in BenchStage.consumes if k not in inputs]
    if missing:
        raise ConfigError(f"{config.source_file}: the stages up to quantize produced no {', '.join(missing)}")
    dest = res.run_dir / "bench"
    with atomic_dir(dest) as tmp:
        ctx = StageContext(config=config, workdir=tmp, run_dir=res.run_dir,
                           cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                           log=logging.getLogger("lcpipe"))
        result = run_bench(ctx, options, inputs)
        write_outputs(tmp, result, options)
    return result, dest


def run_bench(ctx: StageContext, options: BenchOptions, inputs: dict[str, Path]) -> dict[str, Any]:
    from lcpipe.measure.engines import measure_engines
    from lcpipe.sysinfo import cpu_info, default_threads, versions

    t0 = time.perf_counter()
    threads = options.threads or ctx.config.runtime.threads or default_threads()
    hw = tuple(ctx.config.preprocess.input_hw)
    info = _read_json(inputs.get("model_info"))
    x, labels, n_eval = _eval_data(ctx, options, hw)
    load_before = _loadavg()
    engines = build_engines(ctx, options, inputs, info, threads, hw)
    measured = measure_engines(engines, x, labels, batch=options.batch, warmup=options.warmup,
                               rounds=options.rounds, iterations=options.iterations,
                               batch_iterations=options.batch_iterations, show=options.progress)
    for row in measured:  # files written here: name them relative to the run dir (workdir is a temp name)
        if row["model"].startswith(str(ctx.workdir)):
            row["model"] = f"bench/{Path(row['model']).relative_to(ctx.workdir).as_posix()}"
    result: dict[str, Any] = {
        "schema": SCHEMA, "pipeline": ctx.config.name, "model": _model_desc(info, hw),
        "threads": threads, "batch": options.batch, "rounds": options.rounds, "iterations": options.iterations,
        "definitions": {"latency": LATENCY_DEF, "throughput": THROUGHPUT_DEF.format(batch=options.batch),
                        "agreement": "argmax equal to the lcpipe FP32 IR's (f32)"},
        "eval_images": n_eval, "labeled": labels is not None,
        "engines": measured,
    }
    add_speedups(result["engines"])
    cpu = {**cpu_info(), **isa_cap()}
    result["goals"] = evaluate_goals(result["engines"], result["model"].get("arch"), cpu["effective_isa"])
    result["noise"] = noise_summary(result["engines"])
    result["load_avg"] = {"before": load_before, "after": _loadavg()}
    if options.profile:
        result["profile"] = _profiles(engines, threads, hw, x, options)
    result.update(cpu=cpu, versions=versions(), seconds=round(time.perf_counter() - t0, 2))
    _log(ctx, result)
    return result


def write_outputs(workdir: Path, result: dict[str, Any], options: BenchOptions) -> dict[str, Path]:
    out = {"bench": workdir / "bench.json", "bench_md": workdir / "bench.md"}
    profile = result.pop("profile", None)
    if profile is not None:
        out["bench_profile"] = workdir / "profile.json"
        write_json(out["bench_profile"], profile)
    write_json(out["bench"], result)
    md = render_markdown(result) + (render_profile_md(profile) if profile else "")
    out["bench_md"].write_text(md, encoding="utf-8")
    if options.chart and any(e["available"] for e in result["engines"]):
        png = bench_chart(result)
        out["bench_png"] = workdir / "bench.png"
        out["bench_png"].write_bytes(png)
        out["bench_html"] = workdir / "bench.html"
        out["bench_html"].write_text(render_html_fragment(result, png), encoding="utf-8")
    return out


def _read_json(path: Path | None) -> dict[str, Any]:
    return json.loads(Path(path).read_text()) if path else {}


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _model_desc(info: dict[str, Any], hw: tuple[int, ...]) -> dict[str, Any]:
    spec = info.get("spec") or {}
    return {"arch": spec.get("arch") or (info.get("detected") or {}).get("arch"), "input_hw": list(hw),
            "classes": spec.get("class_num"), "source_format": info.get("format"), "source": info.get("source")}


def _eval_data(ctx: StageContext, options: BenchOptions, hw: tuple[int, ...]) -> tuple[np.ndarray, Any, int]:
    """First ``eval_images`` of data.eval, labels or None, count; one random image without eval data."""
    if ctx.config.data.eval is None:
        ctx.log.warning("bench: no data.eval; timing on a random input, no accuracy/agreement")
        return np.random.default_rng(0).standard_normal((1, 3, *hw), dtype=np.float32), None, 0
    from lcpipe.data import load_split

    ev = load_split(ctx.config.data, "eval", ctx.config.preprocess, ctx.cache_dir, progress=options.progress)
    n = options.eval_images or len(ev.x)
    labels = ev.labels[:n] if ev.labels is not None else None
    return np.ascontiguousarray(ev.x[:n]), labels, int(min(n, len(ev.x)))


# ---------------------------------------------------------------- engines

def build_engines(ctx: StageContext, options: BenchOptions, inputs: dict[str, Path], info: dict[str, Any],
                  threads: int, hw: tuple[int, ...]) -> list[Any]:
    """Every requested engine, available or with the reason it is not (never raises for a peer)."""
    from lcpipe.measure.engines import ENGINE_NAMES

    wanted = [n for n in ENGINE_NAMES if options.engines is None or n in options.engines or n == "ov_fp32"]
    makers = {
        "ov_fp32": lambda: _ov(inputs["ir_fp32"], "ov_fp32", threads, hw, "f32", "fp32"),
        "ov_int8": lambda: _ov_int8(inputs["ir_int8"], threads, hw, options.int8_precision),
        "ov_fp32_default": lambda: _ov_default(inputs["ir_fp32"], threads, hw),
        "ov_p2o_fp32": lambda: _p2o(ctx, options, inputs, info, threads, hw),
        "ort_fp32": lambda: _ort(inputs["onnx"], "ort_fp32", threads, "fp32"),
        "ort_int8": lambda: _ort_int8(ctx, options, inputs["onnx"], threads),
        "paddle_onednn": lambda: _paddle(ctx, options, info, threads),
    }
    engines = []
    for name in wanted:
        engine = _safe(name, makers[name])
        if not engine.available:
            ctx.log.info("bench: %s unavailable: %s", name, engine.reason)
        engines.append(engine)
    return engines


def _safe(name: str, make: Any) -> Any:
    from lcpipe.measure.engines import unavailable

    runtime = "openvino" if name.startswith("ov_") else "onnxruntime" if name.startswith("ort") else "paddle"
    precision = "int8" if "int8" in name else "fp32"
    try:
        return make()
    except Exception as exc:  # a peer that cannot be set up is reported, not fatal
        return unavailable(name, runtime, precision, f"{type(exc).__name__}: {exc}"[:400])


def _ov(model: Path, name: str, threads: int, hw: tuple[int, ...], precision: str | None, label: str) -> Any:
    from lcpipe.measure.engines import openvino_engine

    return openvino_engine(name, Path(model), threads, hw, precision, label)  # type: ignore[arg-type]


def _ov_int8(xml: Path, threads: int, hw: tuple[int, ...], precision: str) -> Any:
    engine = _ov(xml, "ov_int8", threads, hw, None if precision == "default" else precision, "int8")
    engine.info["float_ops_precision"] = precision
    return engine


def _ov_default(xml: Path, threads: int, hw: tuple[int, ...]) -> Any:
    from lcpipe.measure.engines import plugin_default_precision, unavailable

    default = plugin_default_precision(Path(xml), threads)
    if default == "f32":
        return unavailable("ov_fp32_default", "openvino", "f32",
                           "the plugin's default precision is f32 on this CPU: same as ov_fp32")
    return _ov(xml, "ov_fp32_default", threads, hw, None, default)


def _p2o(ctx: StageContext, options: BenchOptions, inputs: dict[str, Path], info: dict[str, Any], threads: int,
         hw: tuple[int, ...]) -> Any:
    """The raw paddle2onnx ONNX (from the import stage, or converted here from ``paddle_model``)."""
    from lcpipe.measure.engines import unavailable

    if _paddle_source(ctx, info) and "source_onnx" in inputs:
        onnx_path = Path(inputs["source_onnx"])
    elif options.paddle_model:
        from lcpipe.importers.paddle_inference import locate_inference_files, paddle_to_onnx

        files = locate_inference_files(_option_path(ctx, options.paddle_model))
        onnx_path = paddle_to_onnx(files, ctx.workdir / "paddle2onnx.onnx", opset=17)
    else:
        return unavailable("ov_p2o_fp32", "openvino", "fp32", _no_paddle_reason(info))
    return _ov(onnx_path, "ov_p2o_fp32", threads, hw, "f32", "fp32")


def _ort(onnx_path: Path, name: str, threads: int, precision: str) -> Any:
    from lcpipe.measure.engines import ort_engine

    return ort_engine(name, Path(onnx_path), threads, precision)


def _ort_int8(ctx: StageContext, options: BenchOptions, onnx_path: Path, threads: int) -> Any:
    from lcpipe.measure.engines import ort_quantize, unavailable

    if ctx.config.data.calib is None:
        return unavailable("ort_int8", "onnxruntime", "int8", "no data.calib to calibrate with")
    from lcpipe.data import load_split

    calib = load_split(ctx.config.data, "calib", ctx.config.preprocess, ctx.cache_dir, progress=options.progress)
    q = ctx.config.stage_options("quantize")
    n = options.ort_calib_images or (q.subset_size if q is not None else 300)
    out = ctx.workdir / "ort_int8.onnx"
    t0 = time.perf_counter()
    settings = ort_quantize(Path(onnx_path), out, calib.x[:n])
    engine = _ort(out, "ort_int8", threads, "int8")
    engine.info.update(quantization=settings, quantize_seconds=round(time.perf_counter() - t0, 2))
    return engine


def _paddle(ctx: StageContext, options: BenchOptions, info: dict[str, Any], threads: int) -> Any:
    from lcpipe.measure.engines import has_module, paddle_engine, paddle_files, unavailable

    if not has_module("paddle"):
        return unavailable("paddle_onednn", "paddle", "fp32", "paddle (paddlepaddle) is not installed")
    if options.paddle_model:
        model, params = paddle_files(_option_path(ctx, options.paddle_model))
    elif _paddle_source(ctx, info):
        model, params = Path(info["model_file"]), Path(info["params_file"])
    else:
        return unavailable("paddle_onednn", "paddle", "fp32", _no_paddle_reason(info))
    return paddle_engine(model, params, threads)


def _paddle_source(ctx: StageContext, info: dict[str, Any]) -> bool:
    """The pipeline's source is a Paddle inference model (model_info names its program + params)."""
    return ctx.config.model.source.format == "paddle_inference" and bool(info.get("model_file"))


def _no_paddle_reason(info: dict[str, Any]) -> str:
    return (f"no Paddle inference model: the source is {info.get('format') or 'unknown'} (lcpipe builds no Paddle "
            "dygraph models); give a paddle_inference source or stages.bench.paddle_model")


def _option_path(ctx: StageContext, value: str) -> Path:
    """Relative to the pipeline YAML (like other paths written in it)."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    src = Path(ctx.config.source_file or ".")
    return (src.parent if src.suffix in (".yaml", ".yml") else Path.cwd()) / p


# ---------------------------------------------------------------- speedups, goals, noise (pure)

# oneDNN's ISA cap (honoured by OpenVINO's CPU plugin and Paddle, not by ONNX Runtime's MLAS) -> lcpipe level
_ONEDNN_ISA = {"SSE41": "default", "AVX": "default", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2",
               "AVX512_CORE": "avx512", "AVX512_CORE_VNNI": "avx512_vnni", "AVX512_CORE_BF16": "avx512_vnni",
               "AVX10_1_512": "avx512_vnni", "AVX512_CORE_FP16": "avx512_vnni", "AVX512_CORE_AMX": "amx",
               "AVX10_1_512_AMX": "amx", "AVX512_CORE_AMX_FP16": "amx", "AVX10_1_512_AMX_FP16": "amx"}


def isa_cap(env: dict[str, str] | None = None, isa: str | None = None) -> dict[str, Any]:
    """The ISA the oneDNN-based engines really use: ONEDNN_MAX_CPU_ISA=AVX2 on an AMX Xeon makes
    OpenVINO pick AVX2 kernels (a stand-in for AVX2-only CPUs); goals follow this effective level."""
    from lcpipe.sysinfo import ISA_ORDER, isa_level

    env = dict(os.environ) if env is None else env
    isa = isa or isa_level()
    cap = env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA")
    level = _ONEDNN_ISA.get((cap or "").upper())
    if not cap or level is None or ISA_ORDER.index(level) < ISA_ORDER.index(isa):
        return {"isa_cap": cap, "effective_isa": isa}
    return {"isa_cap": cap, "effective_isa": level}


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Latency speed-up = reference p50 / engine p50; throughput speed-up = engine img/s / reference img/s.
    References: the slowest FP32 engine, and lcpipe's FP32 IR (ov_fp32)."""
    fp32 = [r for r in rows if r["available"] and r["precision"] == "fp32"]
    slow_lat = max(fp32, key=lambda r: r["latency_ms"]["p50"], default=None)
    slow_thr = min(fp32, key=lambda r: r["throughput"]["images_per_s"], default=None)
    lcpipe = next((r for r in rows if r["name"] == "ov_fp32" and r["available"]), None)
    for r in rows:
        if not r["available"]:
            continue
        p50, ips = r["latency_ms"]["p50"], r["throughput"]["images_per_s"]
        r["speedup"] = {
            "latency_vs_slowest_fp32": _div(slow_lat and slow_lat["latency_ms"]["p50"], p50),
            "throughput_vs_slowest_fp32": _div(ips, slow_thr and slow_thr["throughput"]["images_per_s"]),
            "latency_vs_lcpipe_fp32": _div(lcpipe and lcpipe["latency_ms"]["p50"], p50),
            "throughput_vs_lcpipe_fp32": _div(ips, lcpipe and lcpipe["throughput"]["images_per_s"]),
            "slowest_fp32": {"latency": slow_lat and slow_lat["name"], "throughput": slow_thr and slow_thr["name"]},
        }


def _div(a: Any, b: Any) -> float | None:
    return round(float(a) / float(b), 4) if a and b else None


def evaluate_goals(rows: list[dict[str, Any]], arch: str | None, isa: str) -> list[dict[str, Any]]:
    """Issue-6 goals on batch-1 p50 latency; a goal whose engines did not run has passed None."""
    from lcpipe.sysinfo import pick_threshold

    p50 = {r["name"]: r["latency_ms"]["p50"] for r in rows if r["available"]}
    goals = []
    if arch in INT8_GOALS:
        threshold, key = pick_threshold(INT8_GOALS[arch], isa)
        goals.append(_goal("int8_ir_vs_fp32_ir", f"{arch}: INT8 IR vs FP32 IR (f32) batch-1 latency",
                           _div(p50.get("ov_fp32"), p50.get("ov_int8")), threshold, key))
    for name, slower, faster, threshold, desc in PEER_GOALS:
        missing = [n for n in (slower, faster) if n not in p50]
        goal = _goal(name, desc, _div(p50.get(slower), p50.get(faster)), threshold, "any",
                     f"not measured: {', '.join(missing)} unavailable" if missing else "")
        if threshold == 1.0 and goal["value"] is not None and 1 - NOISE_TOLERANCE <= goal["value"] < 1.0:
            goal.update(passed=True, note=f"tie: within {NOISE_TOLERANCE:.0%} (measurement noise)")
        goals.append(goal)
    return goals


def _goal(name: str, desc: str, value: float | None, threshold: float, isa_key: str, note: str = "") -> dict:
    return {"name": name, "description": desc, "value": value, "threshold": threshold, "isa_key": isa_key,
            "passed": None if value is None else value >= threshold, "note": note}


def noise_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spread of the per-round medians, (max - min) / median, per engine and the worst."""
    spread = {}
    for r in rows:
        if r["available"]:
            rp = np.asarray(r["latency_ms"]["round_p50"], dtype=float)
            spread[r["name"]] = round(float((rp.max() - rp.min()) / np.median(rp)), 4) if len(rp) else None
    vals = [v for v in spread.values() if v is not None]
    return {"round_spread": spread, "max_round_spread": max(vals) if vals else None}


# ---------------------------------------------------------------- profile

def _profiles(engines: list[Any], threads: int, hw: tuple[int, ...], x: np.ndarray,
              options: BenchOptions) -> dict[str, Any]:
    from lcpipe.measure.profile import profile_ov

    out = {}
    for e in engines:
        if e.name in ("ov_fp32", "ov_int8", "ov_fp32_default") and e.available:
            hint = e.info.get("precision_hint")
            out[e.name] = profile_ov(Path(e.model), threads, hw, None if hint == "plugin default" else hint, x,
                                     options.profile_iterations)
    return out


def _log(ctx: StageContext, result: dict[str, Any]) -> None:
    for r in result["engines"]:
        if r["available"]:
            ctx.log.info("bench: %-16s p50 %.3f ms, %.0f img/s (batch %d)", r["name"], r["latency_ms"]["p50"],
                         r["throughput"]["images_per_s"], result["batch"])
