"""The IR contract: how lcpipe writes, labels, reads back and compiles an OpenVINO IR.

Every module that saves an IR, writes or reads its rt_info, or builds compile properties calls
this one; none of them touches ``ov.save_model`` or ``rt_info`` itself.

- Saving (``save_ir``): unnamed nodes get names numbered in graph order (a resumed run writes the
  same bytes) and the ``.xml`` records the sha256 of its ``.bin`` (the runner's cache key hashes
  the xml, so it must change whenever the weights do). Weights stay FP32 unless asked otherwise
  (``ov.save_model`` compresses to FP16 by default).
- rt_info: lcpipe's section ``<rt_info><lcpipe>`` holds JSON strings (``RT_KEYS``): preprocessing,
  label names, precision, provenance (source ONNX, quantization), and the plan the plan stage
  chose; ``<model_info>`` holds the OpenVINO Model API keys of a classifier.
- Batch (``input_batch`` / ``with_dynamic_batch``): the deploy bundle's IRs are static batch 1
  unless the deploy stage also writes a copy that takes any batch.
- Compiling (``ov_config`` / ``compile_ir``): the compile properties every measurement, ``lcpipe
  predict`` and the deploy bundle use (OpenVINO's model cache, ``CACHE_DIR``, included), and the
  float precision a plan recorded for its IR.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lcpipe.deps import require
from lcpipe.errors import InputError, clip
from lcpipe.fileio import sha256_file

RT_SECTION = "lcpipe"  # our rt_info keys live under <rt_info><lcpipe>...
PLAN_RT_KEY = "plan"  # rt_info/lcpipe/plan: JSON with the plan's name and runtime config
RT_KEYS = ("preprocess", "labels", "precision", "source_onnx_sha256", "pipeline", "quantization", "weights_sha256",
           PLAN_RT_KEY)


# ---------------------------------------------------------------- reading and saving

def read_ir(xml: str | Path) -> Any:
    """The ov.Model of an IR file."""
    return require("openvino").Core().read_model(str(xml))


MAX_IR_XML_BYTES = 256 << 20  # an IR's .xml holds the graph, not the weights: a few MB


def read_user_ir(xml: Path, core: Any | None = None) -> Any:
    """The ov.Model of an IR a user names (``lcpipe predict``): a garbage .xml or a truncated .bin is an
    InputError naming it, not OpenVINO's traceback."""
    _check_ir_xml(xml)
    weights = xml.with_suffix(".bin")
    try:
        return (core or require("openvino").Core()).read_model(str(xml))
    except RuntimeError as exc:
        hint = f"; is {weights.name} complete and from the same model?" if weights.is_file() else ""
        raise InputError(f"{xml}: not a readable OpenVINO IR ({ov_error_line(exc)}){hint}") from None


def _check_ir_xml(xml: Path) -> None:
    """Parse the .xml before OpenVINO does: on anything that is not an IR, OpenVINO tries each of its
    frontends in turn (TensorFlow's logs to stderr) and fails with a long message."""
    import xml.etree.ElementTree as ET

    if xml.stat().st_size > MAX_IR_XML_BYTES:
        raise InputError(f"{xml}: {xml.stat().st_size:,} bytes, too large for an OpenVINO IR .xml")
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError, ValueError) as exc:
        raise InputError(f"{xml}: not an OpenVINO IR (not valid XML: {clip(str(exc), 120)})") from None
    if root.tag != "net":
        raise InputError(f"{xml}: not an OpenVINO IR (its root element is <{clip(root.tag, 40)}>, not <net>)")


def ov_error_line(exc: Exception) -> str:
    """The line of an OpenVINO RuntimeError that says what is wrong (its first lines name C++ sources)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    return clip(lines[0] if lines else type(exc).__name__, 200)


def save_ir(model: Any, out: Path, *, compress_to_fp16: bool = False) -> Path:
    """Save an IR whose .xml records the sha256 of its .bin (FakeQuantize ranges or weights can change
    while the graph does not; the runner's cache key hashes both files too)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _stable_names(model)
    write_model(model, out, compress_to_fp16=compress_to_fp16)
    model.set_rt_info(sha256_file(out.with_suffix(".bin")), [RT_SECTION, "weights_sha256"])
    write_model(model, out, compress_to_fp16=compress_to_fp16)  # same weights, xml now names them
    return out


def write_model(model: Any, xml: str | Path, *, compress_to_fp16: bool = False) -> None:
    """``ov.save_model`` as lcpipe calls it: FP32 weights unless asked (FP16 is OpenVINO's default).
    For graphs lcpipe only passes through (a frontend's conversion); lcpipe's own IRs use save_ir."""
    require("openvino").save_model(model, str(xml), compress_to_fp16=compress_to_fp16)


def _stable_names(model: Any) -> None:
    """OpenVINO names unnamed nodes "<Type>_<process-wide counter>", so the same model saved by a
    resumed run (which built fewer nodes before) had other bytes. Number them in graph order."""
    for i, op in enumerate(model.get_ordered_ops()):
        kind = op.get_type_name()
        if re.fullmatch(rf"{re.escape(kind)}_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{kind}_lcpipe{i}")


def ov_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return ""


# ---------------------------------------------------------------- rt_info

def set_lcpipe_rt_info(model: Any, values: dict[str, Any]) -> None:
    """Values as JSON strings under rt_info/lcpipe (OpenVINO rt_info holds strings and flat lists)."""
    for key, value in values.items():
        if value is not None:
            model.set_rt_info(value if isinstance(value, str) else json.dumps(value), [RT_SECTION, key])


def read_lcpipe_rt_info(model: Any) -> dict[str, Any]:
    """Inverse of set_lcpipe_rt_info on a read model; missing keys are absent."""
    out: dict[str, Any] = {}
    for key in RT_KEYS:
        if model.has_rt_info([RT_SECTION, key]):
            text = model.get_rt_info([RT_SECTION, key]).astype(str)
            try:
                out[key] = json.loads(text)
            except json.JSONDecodeError:
                out[key] = text
    return out


def set_model_api_info(model: Any, pre: Any, labels: list[str] | None) -> None:
    """The OpenVINO Model API keys for a classifier (mean/scale in 0..255, RGB input)."""
    model.set_rt_info("Classification", ["model_info", "model_type"])
    model.set_rt_info(" ".join(f"{255 * m:g}" for m in pre.mean), ["model_info", "mean_values"])
    model.set_rt_info(" ".join(f"{255 * s:g}" for s in pre.std), ["model_info", "scale_values"])
    model.set_rt_info("True", ["model_info", "reverse_input_channels"])  # Model API feeds BGR; we need RGB
    if labels:  # Model API splits labels on spaces
        model.set_rt_info(" ".join(n.split(",")[0].strip().replace(" ", "_") for n in labels),
                          ["model_info", "labels"])


def set_embedded_preprocessing(model: Any, pre: dict[str, Any]) -> None:
    """An image-input IR: its own preprocess description, and the Model API told that colour and
    mean/scale are in the graph (do not apply them again)."""
    set_lcpipe_rt_info(model, {"preprocess": pre})
    model.set_rt_info("True", ["model_info", "embedded_processing"])
    model.set_rt_info("False", ["model_info", "reverse_input_channels"])
    model.set_rt_info("0 0 0", ["model_info", "mean_values"])
    model.set_rt_info("1 1 1", ["model_info", "scale_values"])


def set_quantization_info(model: Any, info: dict[str, Any]) -> None:
    """An INT8 IR's provenance (preset, calibration, the FP32 IR it came from, NNCF version)."""
    set_lcpipe_rt_info(model, {"quantization": info, "precision": "int8"})


def set_plan(model: Any, record: dict[str, Any], int8: bool) -> None:
    """The plan the plan stage shipped in this IR (lcpipe.plan.plan_record)."""
    set_lcpipe_rt_info(model, {PLAN_RT_KEY: record, "precision": "int8" if int8 else "fp32"})


def framework_spec(model: Any) -> dict[str, Any] | None:
    """The model spec lcpipe's ONNX export left in the metadata (OpenVINO: rt_info/framework/spec)."""
    if not model.has_rt_info(["framework", "spec"]):
        return None
    try:
        spec = json.loads(model.get_rt_info(["framework", "spec"]).astype(str))
    except (json.JSONDecodeError, AttributeError):
        return None
    return spec if isinstance(spec, dict) else None


def planned_plan(model: Any) -> dict[str, Any] | None:
    """The plan record of an IR (an .xml path or a read ov.Model), None when no plan stage chose it."""
    if isinstance(model, str | Path):
        model = read_ir(model)
    plan = read_lcpipe_rt_info(model).get(PLAN_RT_KEY)
    return plan if isinstance(plan, dict) else None


def planned_precision(model: Any) -> str | None:
    """The float precision the plan stage chose for this IR (an .xml path or a read ov.Model), from its
    rt_info (None: no plan recorded)."""
    plan = planned_plan(model)
    return plan.get("inference_precision") if plan else None


# ---------------------------------------------------------------- batch dimension

def input_batch(model: Any) -> int | None:
    """The first input's batch dimension (its first), None when it takes any batch."""
    dim = model.inputs[0].get_partial_shape()[0]
    return None if dim.is_dynamic else dim.get_length()


def with_dynamic_batch(model: Any) -> Any:
    """A copy of a one-input model whose batch dimension (the first) takes any size; rt_info kept."""
    ov = require("openvino")
    out = model.clone()
    shape = out.inputs[0].get_partial_shape()
    out.reshape({out.inputs[0]: ov.PartialShape([ov.Dimension(), *(shape[i] for i in range(1, len(shape)))])})
    return out


# ---------------------------------------------------------------- compiling

def ov_config(hint: str, threads: int | None, precision: str | None = "f32", *,
              cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Compile properties: the one place lcpipe builds them (measurements, predict, the plan's
    runtime_config). ``threads`` None: the plugin's own choice; ``precision`` None keeps the device
    default float precision (bf16 on AMX / avx512_bf16 CPUs); ``cache_dir``: OpenVINO's model cache
    (a compiled model is stored there and imported by the next compile of the same IR and properties)."""
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": hint}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    if precision:
        cfg["INFERENCE_PRECISION_HINT"] = precision
    if cache_dir:
        cfg["CACHE_DIR"] = str(cache_dir)
    return cfg


def compile_ir(xml: Path, hint: str, threads: int, precision: str | None = "f32") -> Any:
    ov = require("openvino")
    core = ov.Core()
    return core.compile_model(core.read_model(str(xml)), "CPU", ov_config(hint, threads, precision))
