"""Reading a PP-LCNet ONNX graph into tokens: every node on the data path, in topological order,
becomes conv, act, pool, mul, add, scale, flatten, fc or softmax. Constant subgraphs are folded,
shape arithmetic is skipped, per-channel affine ops (bias, BatchNormalization) attach to their
Conv, and anything foreign raises NotLcnet saying what."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.importers.onnx_read import data_inputs

_HARDSIGMOID_ALPHA = 1.0 / 6.0


class NotLcnet(Exception):
    """The graph is not a PP-LCNet this reader can express; the message says why."""


@dataclass
class ConvRec:
    """One Conv node plus whatever per-channel affine ops were attached to its output."""

    weight: np.ndarray
    stride: tuple[int, int]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int
    pre_bias: np.ndarray | None = None  # Conv's own bias input (or Add right after it)
    bn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float] | None = None  # gamma, beta, mean, var, eps
    post_bias: np.ndarray | None = None  # constant Add after the BatchNormalization

    @property
    def affine(self) -> bool:
        return self.pre_bias is not None or self.bn is not None or self.post_bias is not None

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(kernel, bias) with everything attached folded in (float64)."""
        w = self.weight.astype(np.float64)
        cout = w.shape[0]
        b = np.zeros(cout) if self.pre_bias is None else self.pre_bias.astype(np.float64).reshape(cout)
        if self.bn is not None:
            gamma, beta, mean, var, eps = (np.asarray(v, dtype=np.float64) for v in self.bn)
            t = gamma / np.sqrt(var + eps)
            w = w * t.reshape(-1, 1, 1, 1)
            b = (b - mean) * t + beta
        if self.post_bias is not None:
            b = b + self.post_bias.astype(np.float64).reshape(cout)
        return w, b

    def describe(self) -> str:
        return (f"Conv{tuple(self.weight.shape)} stride={self.stride} group={self.group}"
                f"{' +BN' if self.bn is not None else ''}{' +bias' if self.pre_bias is not None else ''}")


@dataclass
class Token:
    kind: str  # conv | act | pool | mul | add | scale | flatten | fc | softmax
    value: Any = None  # ConvRec, act name, scale factor, (W[out,in], b) for fc
    inputs: tuple[str, ...] = ()
    output: str = ""


@dataclass
class _Reader:
    model: Any
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    shape_like: set[str] = field(default_factory=set)  # tensors computed from shapes, not pixels
    alias: dict[str, str] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    producer: dict[str, Token] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def run(self) -> list[Token]:
        onnx = require("onnx")
        self.consts = {i.name: onnx.numpy_helper.to_array(i) for i in self.model.graph.initializer}
        for n in self.model.graph.node:  # Identity hops are pure renames; resolve them up front
            if n.op_type == "Identity":
                self.alias[n.output[0]] = n.input[0]
        for n in self.model.graph.node:
            if n.op_type == "Identity":
                continue  # its reader is counted instead (names resolve through the alias)
            for i in n.input:
                if i:
                    key = self.resolve(i)
                    self.consumers[key] = self.consumers.get(key, 0) + 1
        for out in self.model.graph.output:
            key = self.resolve(out.name)
            self.consumers[key] = self.consumers.get(key, 0) + 1
        for node in self.model.graph.node:
            self._node(node)
        return self.tokens

    # -- helpers
    def _is_const(self, name: str) -> bool:
        return name == "" or self.resolve(name) in self.consts

    def const(self, name: str) -> np.ndarray:
        return self.consts[self.resolve(name)]

    def _emit(self, kind: str, value: Any, inputs: list[str], output: str) -> Token:
        tok = Token(kind, value, tuple(self.resolve(i) for i in inputs), output)
        self.tokens.append(tok)
        self.producer[output] = tok
        return tok

    def _fold(self, node: Any) -> None:
        from onnx.reference import ReferenceEvaluator

        feeds = {i: self.const(i) for i in node.input if i}
        try:
            outs = ReferenceEvaluator(node).run(None, feeds)
        except Exception as exc:  # an op the reference runtime cannot evaluate
            raise NotLcnet(f"cannot fold constant node {node.op_type} {node.name}: {exc}") from exc
        for name, val in zip(node.output, outs, strict=True):
            self.consts[name] = np.asarray(val)

    # -- one node
    def _node(self, node: Any) -> None:
        onnx = require("onnx")
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise NotLcnet(f"custom-domain op {node.domain}::{op} ({node.name})")
        if op == "Identity":
            if self._is_const(node.input[0]):
                self.consts[node.output[0]] = self.const(node.input[0])
            elif self.resolve(node.input[0]) in self.shape_like:
                self.shape_like.add(node.output[0])
            return
        if op == "Constant":
            attr = node.attribute[0]
            self.consts[node.output[0]] = (onnx.numpy_helper.to_array(attr.t) if attr.name == "value"
                                           else np.asarray(onnx.helper.get_attribute_value(attr)))
            return
        ins = [i for i in node.input]
        if all(self._is_const(i) for i in ins):
            self._fold(node)
            return
        if op == "Shape" or all(self._is_const(i) or self.resolve(i) in self.shape_like for i in ins):
            self.shape_like.update(node.output)
            return
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            raise NotLcnet(f"op {op} ({node.name or node.output[0]}) is not part of a PP-LCNet graph")
        handler(node, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})

    def _op_Conv(self, node: Any, at: dict[str, Any]) -> None:
        if not self._is_const(node.input[1]):
            raise NotLcnet(f"Conv {node.name} has a non-constant weight")
        w = self.const(node.input[1]).astype(np.float32)
        if w.ndim != 4:
            raise NotLcnet(f"Conv {node.name} is not 2-D")
        if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise NotLcnet(f"Conv {node.name} uses auto_pad")
        rec = ConvRec(w, tuple(int(s) for s in at.get("strides", [1, 1])),  # type: ignore[arg-type]
                      tuple(int(p) for p in at.get("pads", [0, 0, 0, 0])),
                      tuple(int(d) for d in at.get("dilations", [1, 1])), int(at.get("group", 1)))
        if len(node.input) > 2 and node.input[2]:
            rec.pre_bias = self.const(node.input[2])
        self._emit("conv", rec, [node.input[0]], node.output[0])

    def _attachable(self, name: str) -> ConvRec | None:
        """The conv whose (single-use) output this is, if nothing else reads it."""
        tok = self.producer.get(self.resolve(name))
        if tok is not None and tok.kind == "conv" and self.consumers.get(tok.output, 0) == 1:
            return tok.value
        return None

    def _rebind(self, old: str, new: str) -> None:
        tok = self.producer.pop(self.resolve(old))
        tok.output = new
        self.producer[new] = tok

    def _op_BatchNormalization(self, node: Any, at: dict[str, Any]) -> None:
        rec = self._attachable(node.input[0])
        if rec is None or rec.bn is not None or rec.post_bias is not None:
            raise NotLcnet(f"BatchNormalization {node.name} does not directly follow a Conv")
        gamma, beta, mean, var = (self.const(i).astype(np.float64) for i in node.input[1:5])
        rec.bn = (gamma, beta, mean, var, float(at.get("epsilon", 1e-5)))
        self._rebind(node.input[0], node.output[0])

    def _op_Add(self, node: Any, at: dict[str, Any]) -> None:
        a, b = node.input[0], node.input[1]
        if self._is_const(a) or self._is_const(b):
            data, c = (b, self.const(a)) if self._is_const(a) else (a, self.const(b))
            self._add_const(node, data, c)
        else:
            self._emit("add", None, [a, b], node.output[0])

    def _add_const(self, node: Any, data: str, c: np.ndarray) -> None:
        tok = self.producer.get(self.resolve(data))
        rec = self._attachable(data)
        if rec is not None and c.size == rec.weight.shape[0] and _channel_vector(c):
            if rec.bn is None and rec.pre_bias is None:
                rec.pre_bias = c.reshape(-1)
            elif rec.post_bias is None:
                rec.post_bias = c.reshape(-1)
            else:
                raise NotLcnet(f"Add {node.name}: a second constant bias after a Conv")
            self._rebind(data, node.output[0])
        elif tok is not None and tok.kind == "fc" and self.consumers.get(tok.output, 0) == 1 \
                and c.size == tok.value[0].shape[0]:
            tok.value = (tok.value[0], tok.value[1] + c.reshape(-1).astype(np.float64))
            self._rebind(data, node.output[0])
        elif tok is not None and tok.kind == "scale" and c.size == 1 and float(c.ravel()[0]) == 0.0:
            self._rebind(data, node.output[0])  # Paddle scale op with bias 0
        else:
            raise NotLcnet(f"Add {node.name} of a constant {c.shape} that is no conv/fc bias")

    def _op_Sum(self, node: Any, at: dict[str, Any]) -> None:
        # lcpipe's own exporter sums unfused rep branches with one Sum node: n-1 adds.
        ins = list(node.input)
        if any(self._is_const(i) for i in ins):
            raise NotLcnet(f"Sum {node.name} with a constant input")
        for _ in ins[1:]:
            self._emit("add", None, ins, node.output[0])

    def _op_Mul(self, node: Any, at: dict[str, Any]) -> None:
        a, b = node.input[0], node.input[1]
        if self._is_const(a) or self._is_const(b):
            data, c = (b, self.const(a)) if self._is_const(a) else (a, self.const(b))
            if c.size != 1:
                raise NotLcnet(f"Mul {node.name} by a non-scalar constant {c.shape}")
            self._emit("scale", float(c.ravel()[0]), [data], node.output[0])
            return
        # At opset < 14 paddle2onnx writes hardswish as x * HardSigmoid(x).
        for x, y in ((a, b), (b, a)):
            tok = self.producer.get(self.resolve(y))
            if tok is not None and tok.kind == "act" and tok.value == "hardsigmoid" \
                    and tok.inputs == (self.resolve(x),):
                tok.value, tok.output = "hardswish", node.output[0]
                self.producer[node.output[0]] = tok
                return
        self._emit("mul", None, [a, b], node.output[0])

    def _act(self, node: Any, kind: str) -> None:
        self._emit("act", kind, [node.input[0]], node.output[0])

    def _op_HardSwish(self, node: Any, at: dict[str, Any]) -> None:
        self._act(node, "hardswish")

    def _op_Relu(self, node: Any, at: dict[str, Any]) -> None:
        self._act(node, "relu")

    def _op_Sigmoid(self, node: Any, at: dict[str, Any]) -> None:
        self._act(node, "sigmoid")

    def _op_HardSigmoid(self, node: Any, at: dict[str, Any]) -> None:
        alpha, beta = float(at.get("alpha", 0.2)), float(at.get("beta", 0.5))
        ok = abs(alpha - _HARDSIGMOID_ALPHA) < 1e-6 and abs(beta - 0.5) < 1e-6
        self._act(node, "hardsigmoid" if ok else f"hardsigmoid(alpha={alpha:g},beta={beta:g})")

    def _op_Clip(self, node: Any, at: dict[str, Any]) -> None:
        lo = at.get("min") if len(node.input) < 2 or not node.input[1] else float(self.const(node.input[1]).ravel()[0])
        hi = at.get("max") if len(node.input) < 3 or not node.input[2] else float(self.const(node.input[2]).ravel()[0])
        self._act(node, "relu6" if lo == 0.0 and hi == 6.0 else f"clip({lo},{hi})")

    def _op_GlobalAveragePool(self, node: Any, at: dict[str, Any]) -> None:
        self._emit("pool", None, [node.input[0]], node.output[0])

    def _op_ReduceMean(self, node: Any, at: dict[str, Any]) -> None:
        axes = at.get("axes") or (self.const(node.input[1]).tolist() if len(node.input) > 1 else None)
        if sorted(int(a) % 4 for a in axes or []) != [2, 3] or not at.get("keepdims", 1):
            raise NotLcnet(f"ReduceMean {node.name} is not a global average pool")
        self._emit("pool", None, [node.input[0]], node.output[0])

    def _flatten(self, node: Any, at: dict[str, Any]) -> None:
        self._emit("flatten", None, [node.input[0]], node.output[0])

    _op_Flatten = _op_Reshape = _op_Squeeze = _flatten

    def _op_MatMul(self, node: Any, at: dict[str, Any]) -> None:
        if not self._is_const(node.input[1]) or self.const(node.input[1]).ndim != 2:
            raise NotLcnet(f"MatMul {node.name} is not a fully connected layer")
        w = self.const(node.input[1]).astype(np.float64)  # Paddle Linear layout [in, out]
        self._emit("fc", (w.T, np.zeros(w.shape[1])), [node.input[0]], node.output[0])

    def _op_Gemm(self, node: Any, at: dict[str, Any]) -> None:
        if at.get("transA", 0) or not self._is_const(node.input[1]):
            raise NotLcnet(f"Gemm {node.name} is not a fully connected layer")
        b = self.const(node.input[1]).astype(np.float64)
        w = (b if at.get("transB", 0) else b.T) * float(at.get("alpha", 1.0))
        bias = np.zeros(w.shape[0])
        if len(node.input) > 2 and node.input[2]:
            bias = np.broadcast_to(self.const(node.input[2]).astype(np.float64).reshape(-1),
                                   (w.shape[0],)) * float(at.get("beta", 1.0))
        self._emit("fc", (w, np.array(bias)), [node.input[0]], node.output[0])

    def _op_Softmax(self, node: Any, at: dict[str, Any]) -> None:
        self._emit("softmax", int(at.get("axis", -1)), [node.input[0]], node.output[0])


def _channel_vector(c: np.ndarray) -> bool:
    """Shapes that broadcast per channel over NCHW: (C,), (C,1,1), (1,C,1,1)."""
    return c.ndim == 1 or (c.ndim >= 3 and c.shape[-1] == 1 and c.shape[-2] == 1)


def read_tokens(model: Any) -> list[Token]:
    """Tokens of the data path in topological order (raises NotLcnet on anything foreign)."""
    if len(data_inputs(model)) != 1:
        raise NotLcnet(f"{len(data_inputs(model))} graph inputs (a PP-LCNet has one)")
    if len(model.graph.output) != 1:
        raise NotLcnet(f"{len(model.graph.output)} graph outputs (a PP-LCNet has one)")
    reader = _Reader(model)
    tokens = reader.run()
    out = reader.resolve(model.graph.output[0].name)
    if not tokens or tokens[-1].output != out:
        raise NotLcnet("the graph output is not produced by the last operation of the data path")
    return tokens
