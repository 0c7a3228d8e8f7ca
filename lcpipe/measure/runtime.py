"""Running models on OpenVINO and ONNX Runtime: what every measurement shares (compile properties: lcpipe.ir).

openvino and onnxruntime are imported inside the functions (``lcpipe --help`` stays instant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.render.progress import progress


def compiled_precision(compiled: Any) -> str:
    """What the plugin actually runs float ops in (f32, bf16, f16)."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except (RuntimeError, AttributeError):  # property unsupported by some plugin version: informational only
        return "unknown"


def static_batch(compiled: Any) -> int | None:
    """The input's batch size when static, else None."""
    shape = compiled.inputs[0].get_partial_shape()
    return shape[0].get_length() if shape[0].is_static else None


def output_classes(model: Any) -> int | None:
    """Classes of a model's (or compiled model's) first output [batch, classes], None when dynamic."""
    shape = model.outputs[0].get_partial_shape()
    return shape[-1].get_length() if shape.rank.is_static and len(shape) and shape[-1].is_static else None


def ir_size(xml: Path) -> int:
    """Bytes of an IR: the .xml plus its .bin."""
    xml = Path(xml)
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def infer_ov(compiled: Any, x: np.ndarray, title: str = "", show: bool = True) -> np.ndarray:
    """Logits of every sample, one synchronous batch-1 request at a time (works for static batch-1
    and dynamic IRs alike). No AsyncInferQueue callback: a Python completion callback can deadlock
    against the GIL when OpenVINO frees a compiled model (seen as an intermittent hang)."""
    request = compiled.create_infer_request()
    out: list[np.ndarray] = []
    with progress(title or "inference", len(x), show) as advance:
        for i in range(len(x)):
            request.infer({0: x[i : i + 1]})
            out.append(request.get_output_tensor(0).data[0].copy())
            advance(1)
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def ort_session(onnx_path: Path, threads: int) -> Any:
    ort = require("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def infer_ort(session: Any, x: np.ndarray, batch: int = 16) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])
