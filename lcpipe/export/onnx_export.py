"""Canonical model -> ONNX, built directly with onnx.helper (no tracing).

Node names mirror the source layer names (``blocks5.3.dw_conv``), the batch dimension is
dynamic, and metadata props carry the arch, source hash and preprocessing. Output is
deterministic: the same canonical model gives byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.fileio import atomic_path
from lcpipe.models.layers import SE, ConvBN, Network, RepDW, build_network
from lcpipe.models.spec import CanonicalModel

INPUT_NAME = "x"
OUTPUT_NAME = "logits"


class _Graph:
    def __init__(self, model: CanonicalModel) -> None:
        self.onnx = require("onnx")
        self.h = self.onnx.helper
        self.tensors = model.tensors
        self.spec = model.spec
        self.nodes: list[Any] = []
        self.inits: dict[str, Any] = {}

    def init(self, name: str, array: np.ndarray | None = None) -> str:
        if name not in self.inits:
            arr = self.tensors[name] if array is None else array
            self.inits[name] = self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name)
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = name
        self.nodes.append(self.h.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, name: str, weight: str, bias: str | None, k: int, stride: tuple[int, int],
             groups: int) -> str:
        pad = (k - 1) // 2
        inputs = [x, self.init(weight)] + ([self.init(bias)] if bias else [])
        return self.node("Conv", inputs, name, kernel_shape=[k, k], strides=list(stride),
                         pads=[pad, pad, pad, pad], group=groups, dilations=[1, 1])

    def act(self, x: str, kind: str | None, name: str) -> str:
        if kind is None:
            return x
        if kind == "hardswish":
            return self.node("HardSwish", [x], f"{name}.act")
        if kind == "relu":
            return self.node("Relu", [x], f"{name}.act")
        if kind == "relu6":
            return self.node("Clip", [x, self.const(f"{name}.act.min", 0.0), self.const(f"{name}.act.max", 6.0)],
                             f"{name}.act")
        raise ValueError(f"unknown activation {kind!r}")

    def const(self, name: str, value: float) -> str:
        return self.init(name, np.array(value, dtype=np.float32))

    def bn(self, x: str, prefix: str) -> str:
        p = [self.init(f"{prefix}.bn.{s}") for s in ("weight", "bias", "_mean", "_variance")]
        return self.node("BatchNormalization", [x, *p], f"{prefix}.bn", epsilon=1e-5)

    def conv_bn(self, x: str, layer_name: str, k: int, stride: tuple[int, int], groups: int) -> str:
        if self.spec.bn_folded:
            return self.conv(x, f"{layer_name}.conv", f"{layer_name}.conv.weight", f"{layer_name}.conv.bias",
                             k, stride, groups)
        y = self.conv(x, f"{layer_name}.conv", f"{layer_name}.conv.weight", None, k, stride, groups)
        return self.bn(y, layer_name)


def _emit_layer(g: _Graph, x: str, layer: ConvBN | RepDW | SE) -> str:
    if isinstance(layer, ConvBN):
        y = g.conv_bn(x, layer.name, layer.k, layer.stride, layer.groups)
        return g.act(y, layer.act, layer.name)
    if isinstance(layer, RepDW):
        if g.spec.rep_fused:
            y = g.conv(x, f"{layer.name}.dw_conv", f"{layer.name}.dw_conv.weight", f"{layer.name}.dw_conv.bias",
                       layer.kernels[0], layer.stride, layer.channels)
        else:
            branches = [g.conv_bn(x, f"{layer.name}.dw_conv_list.{j}", k, layer.stride, layer.channels)
                        for j, k in enumerate(layer.kernels)]
            y = g.node("Sum", branches, f"{layer.name}.dw_sum") if len(branches) > 1 else branches[0]
        return g.act(y, layer.act, f"{layer.name}.dw")
    # SE
    n = layer.name
    s = g.node("GlobalAveragePool", [x], f"{n}.avg_pool")
    s = g.conv(s, f"{n}.conv1", f"{n}.conv1.weight", f"{n}.conv1.bias", 1, (1, 1), 1)
    s = g.node("Relu", [s], f"{n}.relu") if layer.act == "relu" else g.act(s, layer.act, f"{n}.conv1")
    s = g.conv(s, f"{n}.conv2", f"{n}.conv2.weight", f"{n}.conv2.bias", 1, (1, 1), 1)
    if layer.gate == "hardsigmoid":  # Paddle/torch hardsigmoid: slope 1/6 (ONNX default is 0.2)
        s = g.node("HardSigmoid", [s], f"{n}.hardsigmoid", alpha=1.0 / 6.0, beta=0.5)
    else:
        s = g.node("Sigmoid", [s], f"{n}.sigmoid")
    return g.node("Mul", [x, s], f"{n}.mul")


def _emit_head(g: _Graph, x: str, net: Network, softmax: bool) -> str:
    head = net.head
    y = g.node("GlobalAveragePool", [x], "avg_pool")
    if head.use_last_conv:
        bias = "last_conv.bias" if head.last_conv_bias else None
        y = g.conv(y, "last_conv", "last_conv.weight", bias, 1, (1, 1), 1)
        y = g.act(y, head.act, "last_conv")
        if head.dropout_scale != 1.0:  # Paddle downscale_in_infer dropout, not folded yet
            y = g.node("Mul", [y, g.const("dropout.scale", head.dropout_scale)], "dropout")
    y = g.node("Flatten", [y], "flatten", axis=1)
    y = g.node("Gemm", [y, g.init("fc.weight"), g.init("fc.bias")], "fc" if not softmax else "fc", transB=1)
    if softmax:
        y = g.node("Softmax", [y], "softmax", axis=-1)
    # rename the last node's output to the public name
    g.nodes[-1].output[0] = OUTPUT_NAME
    return OUTPUT_NAME


def build_onnx(model: CanonicalModel, *, opset: int = 17, input_hw: tuple[int, int] = (224, 224),
               softmax: bool = False, dynamic_batch: bool = True, metadata: dict[str, Any] | None = None) -> Any:
    if opset < 14:
        raise ValueError("opset must be >= 14 (native HardSwish; at 13 it decomposes into slow ops)")
    g = _Graph(model)
    onnx = g.onnx
    net = build_network(model.spec)
    x = INPUT_NAME
    for block in net.blocks:
        block_in = x
        for layer in block.layers:
            x = _emit_layer(g, x, layer)
        if block.shortcut:
            x = g.node("Add", [x, block_in], f"{block.name}.shortcut")
    _emit_head(g, x, net, softmax)
    batch: Any = "batch" if dynamic_batch else 1
    inp = g.h.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, [batch, 3, *input_hw])
    out = g.h.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, [batch, model.spec.class_num])
    graph = g.h.make_graph(g.nodes, model.spec.arch, [inp], [out], list(g.inits.values()))
    proto = g.h.make_model(graph, opset_imports=[g.h.make_opsetid("", opset)], producer_name="lcpipe",
                           producer_version=_version())
    proto.ir_version = min(proto.ir_version, 8 if opset <= 17 else proto.ir_version)
    meta = {"arch": model.spec.arch, "class_num": str(model.spec.class_num), "output": "softmax" if softmax
            else "logits", "spec": json.dumps(model.spec.to_dict(), sort_keys=True)}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    g.h.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


def export_onnx(model: CanonicalModel, out_path: Path, **kw: Any) -> Path:
    proto = build_onnx(model, **kw)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(proto.SerializeToString(deterministic=True))
    return out_path


def _version() -> str:
    from lcpipe.version import __version__

    return __version__
