"""Reading ONNX files: parse (a broken file is an InputError naming it), find the data input and
check it is an NCHW float image batch, and small graph facts the adopter and rebuilder share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.errors import InputError


def load_onnx(path: Path) -> Any:
    """Parse an ONNX file; a truncated or corrupt file becomes an InputError naming it."""
    onnx = require("onnx", "reading ONNX models")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError, ... depending on how it is broken
        raise InputError(f"{path}: not a readable ONNX model (truncated or corrupt?): {exc}") from exc
    if not model.graph.node:
        raise InputError(f"{path}: ONNX model has no graph nodes (truncated or not an ONNX model?)")
    return model


def check_image_input(model: Any, path: Path) -> Any:
    """Exactly one data input, a 4-D float tensor with 3 channels (NCHW)."""
    onnx = require("onnx")
    inputs = data_inputs(model)
    listing = ", ".join(f"{i.name} {type_str(i)}" for i in inputs) or "none"
    if len(inputs) != 1:
        raise InputError(f"{path}: expected exactly one graph input (an NCHW image batch), "
                         f"found {len(inputs)}: {listing}")
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims = tensor_dims(inp)
    if tt.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1] not in (3, "?"):
        raise InputError(f"{path}: the input must be a 4-D float32 NCHW tensor with 3 channels, "
                         f"got {listing}")
    if dims[1] == "?":
        raise InputError(f"{path}: input {inp.name} has an unknown channel count; expected 3 (NCHW)")
    return inp


def data_inputs(model: Any) -> list[Any]:
    # Old exporters also list initializers as graph inputs; those are weights, not data.
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def data_input_index(model: Any) -> int:
    inits = {i.name for i in model.graph.initializer}
    return next(k for k, i in enumerate(model.graph.input) if i.name not in inits)


def tensor_dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def type_str(value_info: Any) -> str:
    onnx = require("onnx")
    tt = value_info.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    except Exception:  # unknown/undefined element type
        dtype = f"elem_type={tt.elem_type}"
    return f"{dtype}{tensor_dims(value_info)}"


def opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def initial_constants(model: Any) -> dict[str, np.ndarray]:
    onnx = require("onnx")
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    return consts
