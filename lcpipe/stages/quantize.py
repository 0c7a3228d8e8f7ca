"""quantize: FP32 OpenVINO IR -> INT8 IR with NNCF post-training quantization.

NNCF runs on the OpenVINO model, not the ONNX one: on OpenVINO it bias-corrects every conv,
on ONNX it corrected one layer and the QDQ graph ran slower than FP32 (docs/toolchain.md).
With ``accuracy_control`` it first runs plain PTQ (to know what a full INT8 model looks like),
then ``nncf.quantize_with_accuracy_control``, and records how many quantized operations the
search reverted to floating point: a result that reverts most of the model is not INT8.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lcpipe.errors import InputError
from lcpipe.fileio import sha256_json
from lcpipe.measure.runtime import output_classes
from lcpipe.quantization.graph import count_quantization
from lcpipe.quantization.ptq import quantize, quantize_with_accuracy_control, reverted_summary, save_int8_ir
from lcpipe.quantization.settings import choose_preset, library_versions, nncf_params
from lcpipe.records import QuantizeRecord
from lcpipe.stages.base import Stage, StageContext, StageOptions


class IgnoredScopeOptions(StageOptions):
    names: list[str] = []  # exact node names in the OpenVINO graph
    patterns: list[str] = []  # regular expressions over node names
    types: list[str] = []  # OpenVINO op types, e.g. GroupConvolution


class AccuracyControlOptions(StageOptions):
    max_drop: float = Field(0.01, ge=0.0, lt=1.0)  # top-1 on data.eval, fraction (absolute) or relative
    drop_type: Literal["absolute", "relative"] = "absolute"  # how max_drop is read
    max_iterations: int | None = Field(None, gt=0)  # cap on revert steps (None: NNCF's default, unlimited)


class QuantizeOptions(StageOptions):
    # None: mixed for hardswish nets (V1; asymmetric activations suit hardswish's negative tail),
    # performance for ReLU nets (V2).
    preset: Literal["performance", "mixed"] | None = None
    subset_size: int = Field(300, gt=0)  # calibration images NNCF uses (capped at data.calib's size)
    fast_bias_correction: bool = False  # fast BC hurts hardswish + SE nets; full BC is ~2x slower to run
    model_type: Literal["transformer"] | None = None  # NNCF model type; "transformer" only for transformer nets
    ignored_scope: IgnoredScopeOptions | None = None  # ops NNCF leaves in float (names, patterns, types)
    target_device: Literal["ANY", "CPU"] = "ANY"  # NNCF target device (CPU: its CPU-specific rules)
    accuracy_control: AccuracyControlOptions | None = None  # NNCF accuracy control: revert ops until top-1 holds


class QuantizeStage(Stage):
    name = "quantize"
    Options = QuantizeOptions
    reads_data = ("calib",)
    consumes = ("ir_fp32",)
    optional_consumes = ("canonical",)
    produces = ("ir_int8", "quantize_report", "ir_int8_ptq")
    uses_config = ("preprocess",)
    summary = "NNCF PTQ on the OpenVINO model (bias correction, presets, ignored scope, accuracy control)"

    def cache_salt(self, config: Any) -> str:
        from lcpipe.data import fingerprint

        salt = {"calib": fingerprint(config.data, config.preprocess, "calib"), "versions": library_versions()}
        options = config.stage_options("quantize")
        if options is not None and options.accuracy_control is not None:
            salt["eval"] = fingerprint(config.data, config.preprocess, "eval")
        return sha256_json(salt)

    def run(self, ctx: StageContext, options: QuantizeOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.data import load_split
        from lcpipe.deps import require
        from lcpipe.ir import read_ir

        require("nncf", "INT8 quantization")
        t_stage = time.perf_counter()
        fp32 = read_ir(inputs["ir_fp32"])
        calib = load_split(ctx.config.data, "calib", ctx.config.preprocess, ctx.cache_dir)
        calib.check_classes(output_classes(fp32))
        preset, preset_reason = choose_preset(options.preset, inputs.get("canonical"), fp32)
        params = nncf_params(options, preset, len(calib.x))
        ctx.log.info("quantize: preset %s (%s), %d calibration images, %s bias correction", preset, preset_reason,
                     params["subset_size"], "fast" if options.fast_bias_correction else "full")
        report: dict[str, Any] = {
            "preset": preset, "preset_reason": preset_reason, "subset_size": params["subset_size"],
            "calib_images": len(calib.x), "fast_bias_correction": options.fast_bias_correction,
            "model_type": options.model_type, "target_device": options.target_device,
            "ignored_scope": options.ignored_scope.model_dump() if options.ignored_scope else None,
            "fp32": count_quantization(fp32),
        }
        out: dict[str, Path] = {}
        t0 = time.perf_counter()
        int8 = quantize(fp32, calib.x, params)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        report["int8"] = count_quantization(int8)
        if options.accuracy_control is not None:
            out["ir_int8_ptq"] = save_int8_ir(int8, ctx.workdir / "ptq" / "model.xml", inputs["ir_fp32"], report)
            ptq_counts = report["int8"]
            int8, ac = _accuracy_control(ctx, fp32, calib.x, params, options.accuracy_control)
            report["int8"] = count_quantization(int8)
            report["accuracy_control"] = {**ac, **reverted_summary(ptq_counts, report["int8"])}
            _log_reverts(ctx, report["accuracy_control"])
        report["stage_seconds"] = round(time.perf_counter() - t_stage, 2)
        out["ir_int8"] = save_int8_ir(int8, ctx.workdir / "model.xml", inputs["ir_fp32"], report)
        QuantizeRecord.build(**report).save(ctx.workdir / "quantize.json")
        out["quantize_report"] = ctx.workdir / "quantize.json"
        ctx.log.info("quantize: %d FakeQuantize ops, %d/%d convs+matmuls quantized, PTQ %.1f s",
                     report["int8"]["fake_quantize"], report["int8"]["quantized"], report["int8"]["quantizable"],
                     report["seconds"])
        return out


def _accuracy_control(ctx: StageContext, fp32: Any, calib_x: Any, params: dict[str, Any],
                      ac: AccuracyControlOptions) -> tuple[Any, dict[str, Any]]:
    """Accuracy control with top-1 on data.eval as the metric."""
    from lcpipe.data import load_split

    ev = load_split(ctx.config.data, "eval", ctx.config.preprocess, ctx.cache_dir)
    if ev.labels is None:
        raise InputError("stages.quantize.accuracy_control: data.eval has no labels; top-1 needs them")
    ev.check_classes(output_classes(fp32))
    ctx.log.info("quantize: accuracy control (max %s drop %g) on %d eval images", ac.drop_type, ac.max_drop,
                 len(ev.x))
    model, cost = quantize_with_accuracy_control(fp32, calib_x, ev.x, ev.labels, params, max_drop=ac.max_drop,
                                                 drop_type=ac.drop_type, max_iterations=ac.max_iterations)
    return model, {"max_drop": ac.max_drop, "drop_type": ac.drop_type, "seconds": cost["seconds"],
                   "validation_images": len(ev.x), "validations": cost["validations"]}


def _log_reverts(ctx: StageContext, ac: dict[str, Any]) -> None:
    msg = "quantize: accuracy control reverted %d of %d quantized ops to floating point (%.0f%%)"
    args = (ac["reverted_ops"], ac["ptq_quantized_ops"], 100 * ac["reverted_fraction"])
    if ac["mostly_reverted"]:
        ctx.log.warning(msg + ": most of the model is no longer INT8; the report marks this a failure", *args)
    else:
        ctx.log.info(msg, *args)
