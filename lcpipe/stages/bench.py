"""bench: lcpipe's FP32/INT8 IRs against other engines on this machine, side by side.

Engines (see lcpipe.measure.engines): OpenVINO FP32 IR (f32) and INT8 IR, the FP32 IR at the plugin's
default precision (bf16 on AMX), the paddle2onnx -> OpenVINO route, ONNX Runtime FP32 and static
INT8 (QDQ), Paddle Inference with oneDNN. Unavailable engines are listed with the reason. After a
``plan`` stage the "INT8 IR" is the plan it shipped (maybe not INT8), run at the plan's float precision.

Definitions, the same for every engine, all with ``threads`` threads in one process:
- latency: one synchronous batch-1 call (input copy in, output copy out), p50/p90 over all
  interleaved rounds (lcpipe.measure.timing.measure_latency: each round times every engine, order flips);
- throughput: images/s of synchronous batch-``batch`` calls (batch / p50 of a call), interleaved
  the same way. OpenVINO engines are compiled with the LATENCY hint (one stream, all threads) and
  a static input shape for both batch sizes; ONNX Runtime and Paddle take the batch as it comes.
- agreement: argmax equal to the lcpipe FP32 IR's on the first ``eval_images`` of data.eval.

Not cached: it measures the machine. Outputs: bench.json, bench.md, bench.png, bench.html (a
fragment: table + inline chart), profile.json when ``profile`` is on.

This module is the orchestration: engines are set up by measure.bench_engines, measured by
measure.engines.measure_engines, judged by measure.goals, rendered by render.bench / render.charts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from lcpipe.fileio import write_json
from lcpipe.records import BenchRecord, read_json
from lcpipe.render.bench import render_html_fragment, render_markdown, render_profile_md
from lcpipe.render.charts import bench_chart
from lcpipe.stages.base import Stage, StageContext, StageOptions

SCHEMA = 1
EngineName = Literal["ov_fp32", "ov_int8", "ov_fp32_default", "ov_p2o_fp32", "ort_fp32", "ort_int8", "paddle_onednn"]
LATENCY_DEF = "synchronous batch-1 call, p50/p90 over interleaved rounds"
THROUGHPUT_DEF = "images/s of synchronous batch-{batch} calls (batch / p50 call time), interleaved rounds"


class BenchOptions(StageOptions):
    path_fields: ClassVar[frozenset[str]] = frozenset({"paddle_model"})
    engines: list[EngineName] | None = None  # subset to run (ov_fp32, the reference, always runs); None: all
    threads: int | None = Field(None, gt=0)  # None: runtime.threads, else all cores
    batch: int = Field(8, ge=1)  # batch size of the throughput figure
    warmup: int = Field(10, ge=0)  # untimed batch-1 calls per engine (batch-N: warmup // batch + 1)
    rounds: int = Field(5, gt=0)  # interleaved rounds
    iterations: int = Field(50, gt=0)  # timed batch-1 calls per engine per round
    batch_iterations: int | None = Field(None, gt=0)  # timed batch-N calls per round; None: iterations // batch + 2
    eval_images: int | None = Field(200, gt=0)  # first N of data.eval for top-1 / agreement; None: all
    ort_calib_images: int | None = Field(None, gt=0)  # None: quantize.subset_size (the images NNCF used)
    paddle_model: str | None = None  # Paddle inference model (a path) for Paddle Inference + the paddle2onnx route
    # float ops of the INT8 IR that stay float; None: the precision the plan stage chose for it (rt_info), else f32
    int8_precision: Literal["f32", "bf16", "f16", "default"] | None = None
    profile: bool = False  # OpenVINO per-layer counters of the FP32 and INT8 IRs -> profile.json
    profile_iterations: int = Field(50, gt=0)
    chart: bool = True  # bench.png + bench.html (matplotlib)
    # end to end (decoded image -> top-k; lcpipe.measure.e2e) for the float and image-input IRs, on the
    # first e2e_images of data.eval; the FP32 IR's float ops in f32, the INT8 IR's at int8_precision
    e2e: bool = True
    e2e_images: int = Field(64, gt=0)
    throughput_seconds: float = Field(1.0, gt=0)  # e2e throughput: per route per round
    progress: bool = True


class BenchStage(Stage):
    name = "bench"
    Options = BenchOptions
    consumes = ("onnx", "ir_fp32", "ir_int8")
    optional_consumes = ("source_onnx", "model_info")
    produces = ("bench", "bench_md", "bench_png", "bench_html", "bench_profile")
    uses_config = ("preprocess", "runtime")
    cacheable = False
    publish = ("bench.json", "bench.md", "bench.png")
    older_files = frozenset({"bench.json", "bench.md", "bench.png", "bench.html", "profile.json"})
    summary = "OpenVINO FP32/INT8 vs paddle2onnx route, ONNX Runtime FP32/INT8, Paddle oneDNN: latency, throughput"

    def run(self, ctx: StageContext, options: BenchOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        result = run_bench(ctx, options, inputs)
        return write_outputs(ctx.workdir, result, options)


# ---------------------------------------------------------------- orchestration

def run_bench(ctx: StageContext, options: BenchOptions, inputs: dict[str, Path]) -> dict[str, Any]:
    from lcpipe.measure.bench_engines import build_engines, int8_float_precision
    from lcpipe.measure.engines import measure_engines
    from lcpipe.measure.goals import analyse
    from lcpipe.measure.profile import profile_engines
    from lcpipe.sysinfo import default_threads, versions

    t0 = time.perf_counter()
    # the INT8 IR's float precision, resolved once (option, else the plan's, else f32) for every figure
    options = options.model_copy(update={"int8_precision": int8_float_precision(inputs["ir_int8"],
                                                                                options.int8_precision)})
    threads = options.threads or ctx.config.runtime.threads or default_threads()
    hw = tuple(ctx.config.preprocess.input_hw)
    info = read_json(inputs.get("model_info"))
    x, labels, n_eval = _eval_data(ctx, options, hw, inputs["ir_fp32"])
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
        "eval_images": n_eval, "labeled": labels is not None, "int8_precision": options.int8_precision,
        "plan": _plan_name(inputs["ir_int8"]),  # the plan stage's choice timed as ov_int8 / int8_* routes, or None
        "engines": measured,
    }
    analysis = analyse(result["engines"], result["model"].get("arch"))
    result.update(goals=analysis["goals"], noise=analysis["noise"],
                  load_avg={"before": load_before, "after": _loadavg()})
    if options.e2e and ctx.config.data.eval is not None:
        result["e2e"] = _e2e(ctx, options, inputs, threads)
    if options.profile:
        result["profile"] = profile_engines(engines, threads, hw, x, options.profile_iterations)
    result.update(cpu=analysis["cpu"], versions=versions(), seconds=round(time.perf_counter() - t0, 2))
    _log(ctx, result)
    return result


def write_outputs(workdir: Path, result: dict[str, Any], options: BenchOptions) -> dict[str, Path]:
    out = {"bench": workdir / "bench.json", "bench_md": workdir / "bench.md"}
    profile = result.pop("profile", None)
    if profile is not None:
        out["bench_profile"] = workdir / "profile.json"
        write_json(out["bench_profile"], profile)
    BenchRecord.build(**result).save(out["bench"])
    md = render_markdown(result) + (render_profile_md(profile) if profile else "")
    out["bench_md"].write_text(md, encoding="utf-8")
    if options.chart and any(e["available"] for e in result["engines"]):
        png = bench_chart(result)
        out["bench_png"] = workdir / "bench.png"
        out["bench_png"].write_bytes(png)
        out["bench_html"] = workdir / "bench.html"
        out["bench_html"].write_text(render_html_fragment(result, png), encoding="utf-8")
    return out


def _plan_name(xml: Path) -> str | None:
    from lcpipe.ir import planned_plan

    plan = planned_plan(xml)
    return plan.get("name") if plan else None



def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _model_desc(info: dict[str, Any], hw: tuple[int, ...]) -> dict[str, Any]:
    spec = info.get("spec") or {}
    return {"arch": spec.get("arch") or (info.get("detected") or {}).get("arch"), "input_hw": list(hw),
            "classes": spec.get("class_num"), "source_format": info.get("format"), "source": info.get("source")}


def _eval_data(ctx: StageContext, options: BenchOptions, hw: tuple[int, ...],
               fp32_xml: Path) -> tuple[np.ndarray, Any, int]:
    """First ``eval_images`` of data.eval, labels or None, count; one random image without eval data."""
    if ctx.config.data.eval is None:
        ctx.log.warning("bench: no data.eval; timing on a random input, no accuracy/agreement")
        return np.random.default_rng(0).standard_normal((1, 3, *hw), dtype=np.float32), None, 0
    from lcpipe.data import load_split
    from lcpipe.ir import read_ir
    from lcpipe.measure.runtime import output_classes

    ev = load_split(ctx.config.data, "eval", ctx.config.preprocess, ctx.cache_dir, progress=options.progress)
    ev.check_classes(output_classes(read_ir(fp32_xml)))
    n = options.eval_images or len(ev.x)
    labels = ev.labels[:n] if ev.labels is not None else None
    return np.ascontiguousarray(ev.x[:n]), labels, int(min(n, len(ev.x)))


def _e2e(ctx: StageContext, options: BenchOptions, inputs: dict[str, Path], threads: int) -> dict[str, Any]:
    from lcpipe.data import load_split
    from lcpipe.measure.e2e import measure_e2e_samples
    from lcpipe.measure.engines import plugin_default_precision

    ev = load_split(ctx.config.data, "eval", ctx.config.preprocess, ctx.cache_dir, progress=False)
    int8 = options.int8_precision
    precision = {"fp32": "f32", "int8": None if int8 == "default" else int8}
    return measure_e2e_samples(inputs["ir_fp32"], inputs["ir_int8"], ev.samples[: options.e2e_images],
                               ctx.config.preprocess, threads, precision, warmup=options.warmup, rounds=options.rounds,
                               iterations=options.iterations, throughput_seconds=options.throughput_seconds,
                               default_precision=plugin_default_precision(inputs["ir_fp32"], threads),
                               show=options.progress)


def _log(ctx: StageContext, result: dict[str, Any]) -> None:
    for r in result["engines"]:
        if r["available"]:
            ctx.log.info("bench: %-16s p50 %.3f ms, %.0f img/s (batch %d)", r["name"], r["latency_ms"]["p50"],
                         r["throughput"]["images_per_s"], result["batch"])
    for n, s in ((result.get("e2e") or {}).get("latency_ms") or {}).items():
        ctx.log.info("bench: e2e %-12s p50 %.3f ms, %.0f img/s", n, s["p50"],
                     result["e2e"]["throughput"][n]["images_per_s"])
