"""Reading ONNX files: parse (a broken file is an InputError naming it), find the data input and
check it is an NCHW float image batch, and small graph facts the adopter and rebuilder share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.errors import InputError, clip, shown
from lcpipe.importers.finite import check_finite


def load_onnx(path: Path, origin: str | Path | None = None) -> Any:
    """Parse an ONNX file; a truncated or corrupt file becomes an InputError naming it. The graph is
    checked before anything walks it: no cycle, one producer per tensor, finite weights.
    ``origin``: what messages name instead of ``path`` (the Paddle model paddle2onnx converted)."""
    onnx = require("onnx", "reading ONNX models")
    path = Path(path)
    where = str(origin or path)
    if not path.is_file():
        raise InputError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError, ... depending on how it is broken
        raise InputError(f"{where}: not a readable ONNX model (truncated or corrupt?): {clip(str(exc), 300)}") from exc
    if not model.graph.node:
        raise InputError(f"{where}: ONNX model has no graph nodes (truncated or not an ONNX model?)")
    check_acyclic(model, where)
    check_finite(weight_arrays(model), where)
    return model


def check_acyclic(model: Any, where: str) -> None:
    """Each tensor produced by one node, and no cycle (Kahn's algorithm, linear): every walk lcpipe
    makes over a graph (softmax stripping, the PP-LCNet reader) follows producers and would never end
    on an Identity loop."""
    nodes = model.graph.node
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for out in n.output:
            if not out:
                continue
            if out in producer:
                raise InputError(f"{where}: tensor {shown(out)} is produced by two nodes "
                                 f"({_node_name(nodes[producer[out]])} and {_node_name(n)})")
            producer[out] = i
    waiting = [0] * len(nodes)
    users: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for src in {producer[x] for x in n.input if x in producer}:
            waiting[i] += 1
            users[src].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    while ready:
        for u in users[ready.pop()]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    stuck = {i for i, w in enumerate(waiting) if w}
    if stuck:
        cycle = _one_cycle(nodes, producer, stuck)
        names = " -> ".join(_node_name(nodes[i]) for i in cycle[:6]) + (" -> ..." if len(cycle) > 6 else "")
        raise InputError(f"{where}: the graph has a cycle of {len(cycle)} node(s): {names}")


def _one_cycle(nodes: Any, producer: dict[str, int], stuck: set[int]) -> list[int]:
    """Nodes of one cycle among ``stuck`` (each has a stuck producer): follow producers until one repeats."""
    path: list[int] = []
    seen: dict[int, int] = {}
    i = min(stuck)
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = next(producer[x] for x in nodes[i].input if producer.get(x) in stuck)
    return path[seen[i]:][::-1]


def _node_name(node: Any) -> str:
    return f"{clip(node.name, 60) or '(unnamed)'} ({node.op_type})"


def weight_arrays(model: Any) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of every initializer and Constant value, converted one at a time."""
    onnx = require("onnx")
    for init in model.graph.initializer:
        yield init.name, onnx.numpy_helper.to_array(init)
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    yield n.output[0], onnx.numpy_helper.to_array(a.t)


def check_classifier_output(model: Any, where: str) -> None:
    """The first output must be a [batch, classes] float tensor with 2 classes or more (where the graph
    says): argmax over anything else is not a class, and over one class always agrees."""
    if not model.graph.output:
        raise InputError(f"{where}: the graph has no output")
    out = model.graph.output[0]
    if not out.type.HasField("tensor_type"):
        raise InputError(f"{where}: output {shown(out.name)} is not a tensor; lcpipe converts image classifiers")
    dims = tensor_dims(out) if out.type.tensor_type.HasField("shape") else None
    if dims is not None and (len(dims) != 2 or (isinstance(dims[1], int) and 0 < dims[1] < 2)):
        raise InputError(f"{where}: output {shown(out.name)} is {type_str(out)}, not a classifier's "
                         f"[batch, classes] logits with 2 or more classes")


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
