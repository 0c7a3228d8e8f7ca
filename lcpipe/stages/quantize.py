"""quantize: FP32 OpenVINO IR -> INT8 IR with NNCF post-training quantization.

NNCF runs on the OpenVINO model, not the ONNX one: on OpenVINO it bias-corrects every conv,
on ONNX it corrected one layer and the QDQ graph ran slower than FP32 (toolchain.md).
With ``accuracy_control`` it first runs plain PTQ (to know what a full INT8 model looks like),
then ``nncf.quantize_with_accuracy_control``, and records how many quantized operations the
search reverted to floating point: a result that reverts most of the model is not INT8.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lcpipe.errors import ConfigError, InputError
from lcpipe.fileio import sha256_file, sha256_json, write_json
from lcpipe.ir import framework_spec, save_ir, set_quantization_info
from lcpipe.stages.base import Stage, StageContext, StageOptions, register

QUANTIZABLE_TYPES = frozenset({"Convolution", "GroupConvolution", "MatMul"})
MOSTLY_REVERTED = 0.5  # reverting more than this fraction of quantized ops = failed INT8


class IgnoredScopeOptions(StageOptions):
    names: list[str] = []  # exact node names in the OpenVINO graph
    patterns: list[str] = []  # regular expressions over node names
    types: list[str] = []  # OpenVINO op types, e.g. GroupConvolution


class AccuracyControlOptions(StageOptions):
    max_drop: float = Field(0.01, ge=0.0, lt=1.0)  # top-1 on data.eval, fraction (absolute) or relative
    drop_type: Literal["absolute", "relative"] = "absolute"
    max_iterations: int | None = Field(None, gt=0)  # cap on revert steps (None: NNCF's default, unlimited)


class QuantizeOptions(StageOptions):
    # None: mixed for hardswish nets (V1; asymmetric activations suit hardswish's negative tail),
    # performance for ReLU nets (V2).
    preset: Literal["performance", "mixed"] | None = None
    subset_size: int = Field(300, gt=0)  # calibration images NNCF uses (capped at data.calib's size)
    fast_bias_correction: bool = False  # fast BC hurts hardswish + SE nets; full BC is ~2x slower to run
    model_type: Literal["transformer"] | None = None
    ignored_scope: IgnoredScopeOptions | None = None
    target_device: Literal["ANY", "CPU"] = "ANY"
    accuracy_control: AccuracyControlOptions | None = None


@register
class QuantizeStage(Stage):
    name = "quantize"
    Options = QuantizeOptions
    consumes = ("ir_fp32",)
    optional_consumes = ("canonical",)
    produces = ("ir_int8", "quantize_report", "ir_int8_ptq")
    uses_config = ("preprocess",)
    summary = "NNCF PTQ on the OpenVINO model (bias correction, presets, ignored scope, accuracy control)"

    def cache_salt(self, config: Any) -> str:
        from lcpipe.data import fingerprint

        salt = {"calib": fingerprint(config.data, config.preprocess, "calib"), "versions": _versions()}
        options = config.stage_options("quantize")
        if options is not None and options.accuracy_control is not None:
            salt["eval"] = fingerprint(config.data, config.preprocess, "eval")
        return sha256_json(salt)

    def run(self, ctx: StageContext, options: QuantizeOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.data import load_split
        from lcpipe.deps import require

        ov = require("openvino")
        require("nncf", "INT8 quantization")
        t_stage = time.perf_counter()
        fp32 = ov.Core().read_model(str(inputs["ir_fp32"]))
        calib = load_split(ctx.config.data, "calib", ctx.config.preprocess, ctx.cache_dir)
        preset, preset_reason = choose_preset(options.preset, inputs.get("canonical"), fp32)
        params = _nncf_params(options, preset, len(calib.x))
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
        int8 = _ptq(fp32, calib.x, params)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        report["int8"] = count_quantization(int8)
        if options.accuracy_control is not None:
            out["ir_int8_ptq"] = _save(int8, ctx.workdir / "ptq" / "model.xml", inputs["ir_fp32"], report)
            ptq_counts = report["int8"]
            int8, ac = _accuracy_control(ctx, fp32, calib.x, params, options.accuracy_control)
            report["int8"] = count_quantization(int8)
            report["accuracy_control"] = {**ac, **reverted_summary(ptq_counts, report["int8"])}
            _log_reverts(ctx, report["accuracy_control"])
        report["stage_seconds"] = round(time.perf_counter() - t_stage, 2)
        out["ir_int8"] = _save(int8, ctx.workdir / "model.xml", inputs["ir_fp32"], report)
        write_json(ctx.workdir / "quantize.json", report)
        out["quantize_report"] = ctx.workdir / "quantize.json"
        ctx.log.info("quantize: %d FakeQuantize ops, %d/%d convs+matmuls quantized, PTQ %.1f s",
                     report["int8"]["fake_quantize"], report["int8"]["quantized"], report["int8"]["quantizable"],
                     report["seconds"])
        return out


def _versions() -> dict[str, str]:
    from lcpipe.sysinfo import versions

    v = versions()
    return {k: v.get(k, "") for k in ("openvino", "nncf")}


# ---------------------------------------------------------------- preset

def choose_preset(requested: str | None, canonical: Path | None, model: Any) -> tuple[str, str]:
    """Explicit option, else by activation: hardswish -> mixed, relu/relu6 -> performance."""
    if requested:
        return requested, "set in options"
    act = model_activation(canonical, model)
    if act is None:
        return "mixed", "activation unknown"
    return ("mixed" if act == "hardswish" else "performance"), f"act {act}"


def model_activation(canonical: Path | None, model: Any) -> str | None:
    """``act`` from the canonical spec.json, else from the spec the ONNX export left in rt_info."""
    spec_file = Path(canonical) / "spec.json" if canonical else None
    if spec_file and spec_file.is_file():
        return json.loads(spec_file.read_text()).get("act")
    spec = framework_spec(model)
    return spec.get("act") if spec else None


# ---------------------------------------------------------------- NNCF calls

def _nncf_params(options: QuantizeOptions, preset: str, n_calib: int) -> dict[str, Any]:
    import nncf

    scope = None
    if options.ignored_scope is not None:
        s = options.ignored_scope
        scope = nncf.IgnoredScope(names=list(s.names), patterns=list(s.patterns), types=list(s.types))
    return {
        "preset": nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        "subset_size": min(options.subset_size, n_calib),
        "fast_bias_correction": options.fast_bias_correction,
        "model_type": nncf.ModelType.TRANSFORMER if options.model_type == "transformer" else None,
        "ignored_scope": scope,
        "target_device": nncf.TargetDevice[options.target_device],
    }


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """NNCF draws rich progress bars on stdout even when it is not a terminal, which floods CI logs;
    hide them there (NNCF's log messages use their own handler and still appear)."""
    if sys.stdout.isatty():
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _dataset(x: np.ndarray) -> Any:
    import nncf

    return nncf.Dataset(range(len(x)), lambda i: x[i : i + 1])  # one image per item, batch 1


def _ptq(model: Any, x: np.ndarray, params: dict[str, Any]) -> Any:
    import nncf

    try:
        with quiet_progress():
            return nncf.quantize(model.clone(), _dataset(x), **params)  # clone: AC mode reuses the FP32 model
    except nncf.ValidationError as exc:  # e.g. an ignored_scope entry matches nothing
        raise ConfigError(f"stages.quantize.ignored_scope: {exc}") from None


def _accuracy_control(ctx: StageContext, fp32: Any, calib_x: np.ndarray, params: dict[str, Any],
                      ac: AccuracyControlOptions) -> tuple[Any, dict[str, Any]]:
    """nncf.quantize_with_accuracy_control with top-1 on data.eval as the metric."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from lcpipe.data import load_split

    ev = load_split(ctx.config.data, "eval", ctx.config.preprocess, ctx.cache_dir)
    if ev.labels is None:
        raise InputError("stages.quantize.accuracy_control: data.eval has no labels; top-1 needs them")
    calls = [0]  # NNCF validates some models concurrently, so only the count is meaningful

    def top1(compiled: Any, items: Any) -> tuple[float, list[float]]:
        hits = [float(np.argmax(compiled(ev.x[i : i + 1])[0]) == ev.labels[i]) for i in items]
        calls[0] += 1
        return float(np.mean(hits)), hits

    restorer = AdvancedAccuracyRestorerParameters()
    if ac.max_iterations is not None:
        restorer.max_num_iterations = ac.max_iterations
    ctx.log.info("quantize: accuracy control (max %s drop %g) on %d eval images", ac.drop_type, ac.max_drop,
                 len(ev.x))
    t0 = time.perf_counter()
    with quiet_progress():
        model = nncf.quantize_with_accuracy_control(
            fp32.clone(), _dataset(calib_x), nncf.Dataset(range(len(ev.x)), lambda i: ev.x[i : i + 1]), top1,
            max_drop=ac.max_drop, drop_type=nncf.DropType[ac.drop_type.upper()],
            advanced_accuracy_restorer_parameters=restorer, **params)
    return model, {
        "max_drop": ac.max_drop, "drop_type": ac.drop_type, "seconds": round(time.perf_counter() - t0, 2),
        "validation_images": len(ev.x), "validations": calls[0],
    }


def reverted_summary(ptq: dict[str, int], final: dict[str, int]) -> dict[str, Any]:
    """How much of the plain-PTQ INT8 model the accuracy search put back to floating point."""
    reverted = max(0, ptq["quantized"] - final["quantized"])
    fraction = reverted / ptq["quantized"] if ptq["quantized"] else 0.0
    return {"ptq_quantized_ops": ptq["quantized"], "reverted_ops": reverted, "reverted_fraction": round(fraction, 4),
            "mostly_reverted": fraction > MOSTLY_REVERTED}


def _log_reverts(ctx: StageContext, ac: dict[str, Any]) -> None:
    msg = "quantize: accuracy control reverted %d of %d quantized ops to floating point (%.0f%%)"
    args = (ac["reverted_ops"], ac["ptq_quantized_ops"], 100 * ac["reverted_fraction"])
    if ac["mostly_reverted"]:
        ctx.log.warning(msg + ": most of the model is no longer INT8; the report marks this a failure", *args)
    else:
        ctx.log.info(msg, *args)


# ---------------------------------------------------------------- graph facts + saving

def count_quantization(model: Any) -> dict[str, int]:
    """FakeQuantize ops, and convs/matmuls with a FakeQuantize feeding an input (activation or weight)."""
    fq = quantizable = quantized = 0
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            fq += 1
        elif kind in QUANTIZABLE_TYPES:
            quantizable += 1
            sources = (inp.get_source_output().get_node().get_type_name() for inp in op.inputs())
            quantized += any(s == "FakeQuantize" for s in sources)
    return {"fake_quantize": fq, "quantizable": quantizable, "quantized": quantized}


def _save(model: Any, out: Path, fp32_xml: Path, report: dict[str, Any]) -> Path:
    """Save without FP16 compression (the non-INT8 parts stay FP32), provenance in rt_info."""
    info = {k: report.get(k) for k in ("preset", "subset_size", "fast_bias_correction", "calib_images")}
    info["fp32_ir_sha256"] = sha256_file(fp32_xml)  # that xml names its own .bin's sha256
    info["nncf"] = _versions()["nncf"]
    set_quantization_info(model, info)
    return save_ir(model, out, compress_to_fp16=False)
