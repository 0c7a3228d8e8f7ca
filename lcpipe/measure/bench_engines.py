"""The engines a bench run sets up from a pipeline's artifacts (lcpipe.stages.bench): lcpipe's IRs,
the paddle2onnx route, ONNX Runtime FP32 and its own static INT8, Paddle Inference. A peer that
cannot be set up here (package missing, no Paddle model, a build error) is kept with the reason."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lcpipe.measure.engines import (
    ENGINE_NAMES,
    has_module,
    openvino_engine,
    ort_engine,
    ort_quantize,
    paddle_engine,
    paddle_files,
    plugin_default_precision,
    unavailable,
)

if TYPE_CHECKING:
    import logging

    from lcpipe.config import PipelineConfig


class EngineSetup(Protocol):
    """What setting up the engines needs from the bench stage (its lcpipe.stages.base.StageContext):
    the pipeline, a folder for the files it converts or quantizes, the data cache, the log."""

    config: PipelineConfig
    workdir: Path
    cache_dir: Path | None
    log: logging.Logger


def build_engines(ctx: EngineSetup, options: Any, inputs: dict[str, Path], info: dict[str, Any],
                  threads: int, hw: tuple[int, ...]) -> list[Any]:
    """Every requested engine, available or with the reason it is not (never raises for a peer)."""
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
    runtime = "openvino" if name.startswith("ov_") else "onnxruntime" if name.startswith("ort") else "paddle"
    precision = "int8" if "int8" in name else "fp32"
    try:
        return make()
    except Exception as exc:  # a peer that cannot be set up is reported, not fatal
        return unavailable(name, runtime, precision, f"{type(exc).__name__}: {exc}"[:400])


def _ov(model: Path, name: str, threads: int, hw: tuple[int, ...], precision: str | None, label: str) -> Any:
    return openvino_engine(name, Path(model), threads, hw, precision, label)  # type: ignore[arg-type]


def int8_float_precision(xml: Path, precision: str | None) -> str:
    """The INT8 IR's float-op precision: ``precision`` when given, else the one the plan stage chose for
    this IR (its rt_info; the figures that chose it were measured so), else f32 (as validate)."""
    from lcpipe.ir import planned_precision

    return precision or planned_precision(xml) or "f32"


def _ov_int8(xml: Path, threads: int, hw: tuple[int, ...], precision: str | None) -> Any:
    """The shipped IR (ov_int8: quantize's INT8 IR, or the plan's choice, which may be the FP32 IR: then
    labelled so, never "INT8")."""
    from lcpipe.ir import planned_plan

    precision = int8_float_precision(xml, precision)
    plan = planned_plan(xml)
    float_plan = plan is not None and not plan.get("int8", True)
    engine = _ov(xml, "ov_int8", threads, hw, None if precision == "default" else precision,
                 "fp32" if float_plan else "int8")
    engine.info["float_ops_precision"] = precision
    if float_plan:
        engine.info["label"] = f"OpenVINO shipped plan {plan.get('name')}: FP32 IR (lcpipe)"
    return engine


def _ov_default(xml: Path, threads: int, hw: tuple[int, ...]) -> Any:
    default = plugin_default_precision(Path(xml), threads)
    if default == "f32":
        return unavailable("ov_fp32_default", "openvino", "f32",
                           "the plugin's default precision is f32 on this CPU: same as ov_fp32")
    return _ov(xml, "ov_fp32_default", threads, hw, None, default)


def _p2o(ctx: EngineSetup, options: Any, inputs: dict[str, Path], info: dict[str, Any], threads: int,
         hw: tuple[int, ...]) -> Any:
    """The raw paddle2onnx ONNX (from the import stage, or converted here from ``paddle_model``)."""

    if _paddle_source(ctx, info) and "source_onnx" in inputs:
        onnx_path = Path(inputs["source_onnx"])
    elif options.paddle_model:
        from lcpipe.importers.paddle_inference import locate_inference_files, paddle_to_onnx

        files = locate_inference_files(Path(options.paddle_model))
        onnx_path = paddle_to_onnx(files, ctx.workdir / "paddle2onnx.onnx", opset=17)
    else:
        return unavailable("ov_p2o_fp32", "openvino", "fp32", _no_paddle_reason(info))
    return _ov(onnx_path, "ov_p2o_fp32", threads, hw, "f32", "fp32")


def _ort(onnx_path: Path, name: str, threads: int, precision: str) -> Any:
    return ort_engine(name, Path(onnx_path), threads, precision)


def _ort_int8(ctx: EngineSetup, options: Any, onnx_path: Path, threads: int) -> Any:
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


def _paddle(ctx: EngineSetup, options: Any, info: dict[str, Any], threads: int) -> Any:
    if not has_module("paddle"):
        return unavailable("paddle_onednn", "paddle", "fp32", "paddle (paddlepaddle) is not installed")
    if options.paddle_model:
        model, params = paddle_files(Path(options.paddle_model))
    elif _paddle_source(ctx, info):
        model, params = Path(info["model_file"]), Path(info["params_file"])
    else:
        return unavailable("paddle_onednn", "paddle", "fp32", _no_paddle_reason(info))
    return paddle_engine(model, params, threads)


def _paddle_source(ctx: EngineSetup, info: dict[str, Any]) -> bool:
    """The pipeline's source is a Paddle inference model (model_info names its program + params)."""
    return ctx.config.model.source.format == "paddle_inference" and bool(info.get("model_file"))


def _no_paddle_reason(info: dict[str, Any]) -> str:
    return (f"no Paddle inference model: the source is {info.get('format') or 'unknown'} (lcpipe builds no Paddle "
            "dygraph models); give a paddle_inference source or stages.bench.paddle_model")
