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
    # top-1 on the tune images (data.tune, else a split of data.eval; unlabeled: agreement with the FP32
    # IR's top-1), fraction (absolute) or relative
    max_drop: float = Field(0.01, ge=0.0, lt=1.0)
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

    def selects(self) -> bool:
        return self.accuracy_control is not None  # its metric chooses which ops stay INT8


class QuantizeStage(Stage):
    name = "quantize"
    Options = QuantizeOptions
    reads_data = ("calib",)
    consumes = ("ir_fp32",)
    optional_consumes = ("canonical",)
    produces = ("ir_int8", "quantize_report", "ir_int8_ptq")
    uses_config = ("preprocess",)
    summary = "NNCF PTQ on the OpenVINO model (bias correction, presets, ignored scope, accuracy control)"

    def precheck(self, config: Any) -> None:
        options = config.stage_options("quantize")
        if options is not None and options.selects():
            from lcpipe.data.roles import resolve_roles

            resolve_roles(config)  # its tune images must not be verdict images

    def cache_salt(self, config: Any) -> str:
        from lcpipe.data import fingerprint

        salt = {"calib": fingerprint(config.data, config.preprocess, "calib"), "versions": library_versions()}
        options = config.stage_options("quantize")
        if options is not None and options.accuracy_control is not None:
            from lcpipe.data.roles import resolve_roles

            salt["tune"] = resolve_roles(config).fingerprint("tune", config.preprocess)
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
    """Accuracy control with top-1 on the tune images as the metric (lcpipe.data.roles: the verdict is
    computed on other images); unlabeled tune images: agreement with the FP32 IR's top-1."""
    from lcpipe.data import load_samples
    from lcpipe.data.roles import resolve_roles

    roles = resolve_roles(ctx.config)
    if not roles.tune:
        raise InputError("stages.quantize.accuracy_control: no tune images (give data.tune, or data.eval to split)")
    cache = ctx.cache_dir if ctx.config.data.cache_preprocessed else None
    ev = load_samples(list(roles.tune), ctx.config.preprocess, cache, what="tune images")
    ev.check_classes(output_classes(fp32))
    targets, metric = ev.labels, "top-1"
    if targets is None:
        from lcpipe.deps import require
        from lcpipe.ir import ov_config
        from lcpipe.measure.runtime import infer_ov

        compiled = require("openvino").Core().compile_model(fp32, "CPU", ov_config("THROUGHPUT", None, "f32"))
        targets = infer_ov(compiled, ev.x, show=False).argmax(1)
        metric = "agreement with the FP32 top-1 (unlabeled tune images)"
    ctx.log.info("quantize: accuracy control (max %s drop %g, %s) on %d tune images (%s); %s", ac.drop_type,
                 ac.max_drop, metric, len(ev.x), roles.tune_from, roles.describe())
    model, cost = quantize_with_accuracy_control(fp32, calib_x, ev.x, targets, params, max_drop=ac.max_drop,
                                                 drop_type=ac.drop_type, max_iterations=ac.max_iterations)
    return model, {"max_drop": ac.max_drop, "drop_type": ac.drop_type, "seconds": cost["seconds"],
                   "validation_images": len(ev.x), "validations": cost["validations"], "metric": metric,
                   "tune_from": roles.tune_from}


def _log_reverts(ctx: StageContext, ac: dict[str, Any]) -> None:
    msg = "quantize: accuracy control reverted %d of %d quantized ops to floating point (%.0f%%)"
    args = (ac["reverted_ops"], ac["ptq_quantized_ops"], 100 * ac["reverted_fraction"])
    if ac["mostly_reverted"]:
        ctx.log.warning(msg + ": most of the model is no longer INT8; the report marks this a failure", *args)
    else:
        ctx.log.info(msg, *args)
