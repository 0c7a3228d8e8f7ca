"""Adopting an ONNX classifier as is: checked, trailing Softmax replaced by Identity (so validation
compares logits), batch made dynamic where the graph allows, saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcpipe.deps import require
from lcpipe.errors import InputError, clip
from lcpipe.fileio import atomic_path
from lcpipe.importers.onnx_read import (
    check_classifier_output,
    check_image_input,
    data_input_index,
    initial_constants,
    load_onnx,
    opset,
    tensor_dims,
)


def adopt_onnx(path: Path, *, strip_softmax: bool = True, out_path: Path) -> dict[str, Any]:
    """Check an existing classifier ONNX, optionally drop its trailing Softmax, make the batch
    dimension dynamic and save it (atomically) to ``out_path``. Returns facts about it."""
    onnx = require("onnx", "reading ONNX models")
    model = load_onnx(path)
    inp = check_image_input(model, path)
    meta: dict[str, Any] = {"input_name": inp.name, "opset": opset(model),
                            "producer": f"{model.producer_name} {model.producer_version}".strip()}
    meta["softmax_stripped"] = _strip_softmax(model) if strip_softmax else False
    meta.update(_make_batch_dynamic(model))
    try:
        onnx.checker.check_model(model, full_check=True)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # checker/shape-inference raise several unrelated types
        raise InputError(f"{path}: ONNX model does not pass onnx.checker / shape inference: "
                         f"{clip(' '.join(str(exc).split()), 300)}") from exc
    check_classifier_output(model, str(path))
    meta["input_shape"] = tensor_dims(model.graph.input[data_input_index(model)])
    meta["output_names"] = [o.name for o in model.graph.output]
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(model.SerializeToString())
    meta["onnx"] = str(out_path)
    return meta


def _strip_softmax(model: Any) -> bool:
    """Replace a Softmax that produces the (only) graph output by Identity, so validation
    compares logits. The output keeps its name; Identity costs nothing in any runtime."""
    onnx = require("onnx")
    if len(model.graph.output) != 1:
        return False
    producers = {o: n for n in model.graph.node for o in n.output}
    name = model.graph.output[0].name
    node = producers.get(name)
    while node is not None and node.op_type == "Identity":  # paddle2onnx adds Identity hops
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Softmax":
        return False
    ident = onnx.helper.make_node("Identity", [node.input[0]], list(node.output),
                                  name=f"{node.name or 'softmax'}_removed")
    nodes = list(model.graph.node)
    nodes[nodes.index(node)] = ident
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return True


def _make_batch_dynamic(model: Any) -> dict[str, Any]:
    """Make dim 0 of the input and outputs symbolic. Refuses (keeps the fixed batch) when a
    Reshape has that batch size baked into a constant shape, which would break batch > 1."""
    inp = model.graph.input[data_input_index(model)]
    d0 = inp.type.tensor_type.shape.dim[0]
    if not d0.HasField("dim_value"):
        return {"dynamic_batch": True}
    fixed = d0.dim_value
    baked = _reshapes_with_fixed_batch(model, fixed)
    if baked:
        return {"dynamic_batch": False,
                "dynamic_batch_refused": f"Reshape nodes {baked[:5]} hard-code batch {fixed}; batch stays {fixed}"}
    for vi in [inp, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"  # setting dim_param clears dim_value (protobuf oneof)
    del model.graph.value_info[:]  # stale intermediate shapes with the old batch; re-inferred later
    return {"dynamic_batch": True}


def _reshapes_with_fixed_batch(model: Any, batch: int) -> list[str]:
    consts = initial_constants(model)
    out = []
    for n in model.graph.node:
        if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in consts:
            shape = consts[n.input[1]].ravel()
            if shape.size and int(shape[0]) == batch and batch > 0 and shape.size > 1:
                out.append(n.name or n.output[0])
    return out
