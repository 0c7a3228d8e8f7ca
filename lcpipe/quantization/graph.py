"""The one walk over an OpenVINO graph that quantization needs: which ops NNCF can quantize (convs and
matmuls), which ones a FakeQuantize feeds, and the layers a plan may keep in float."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lcpipe.errors import ConfigError

QUANTIZABLE_TYPES = frozenset({"Convolution", "GroupConvolution", "MatMul"})


def _walk(model: Any) -> Iterator[tuple[str, str, bool]]:
    """(op name, op type, a FakeQuantize feeds one of its inputs) for every op, in graph order."""
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        fed = any(i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in op.inputs())
        yield op.get_friendly_name(), kind, fed


def quantized_ops(model: Any) -> list[str]:
    """Names of the ops (other than FakeQuantize) a FakeQuantize feeds, in graph order."""
    return [name for name, kind, fed in _walk(model) if fed and kind != "FakeQuantize"]


def layer_ops(model: Any) -> list[str]:
    """Names of the convs and matmuls (what NNCF quantizes weights of), in graph order."""
    return [name for name, kind, _ in _walk(model) if kind in QUANTIZABLE_TYPES]


def count_quantization(model: Any) -> dict[str, int]:
    """FakeQuantize ops, and convs/matmuls with a FakeQuantize feeding an input (activation or weight)."""
    ops = list(_walk(model))
    return {"fake_quantize": sum(kind == "FakeQuantize" for _, kind, _ in ops),
            "quantizable": sum(kind in QUANTIZABLE_TYPES for _, kind, _ in ops),
            "quantized": sum(kind in QUANTIZABLE_TYPES and fed for _, kind, fed in ops)}


def layer_names(model: Any) -> dict[str, str]:
    """Node names of the stem conv (first conv) and the classifier (last MatMul/conv) of the graph."""
    ops = layer_ops(model)
    if not ops:
        raise ConfigError("stages.plan: the FP32 IR has no conv or matmul to keep in float")
    return {"stem": ops[0], "fc": ops[-1]}
