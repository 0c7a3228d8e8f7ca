"""ONNX models: adopt one as is (checked, softmax stripped, dynamic batch), or read a PP-LCNet
graph back into the canonical form.

``canonical_from_onnx`` walks the graph in topological order, turns every node on the data
path into a token (conv, act, pool, mul, add, scale, flatten, fc, softmax) and compares that
token list with the one ``build_network(spec)`` implies, for each candidate spec. Weights are
taken from the matched Conv/BatchNormalization/MatMul constants; names come from the layer
table, never from the graph (exported graphs carry generated names like ``conv2d_30.w_0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.errors import InputError
from lcpipe.fileio import atomic_path
from lcpipe.models.layers import SE, ConvBN, RepDW, build_network, expected_shapes
from lcpipe.models.spec import ARCHS, CanonicalModel, ModelSpec, family_defaults, normalize_strides

BN_EPS = 1e-5
_HARDSIGMOID_ALPHA = 1.0 / 6.0


# ---------------------------------------------------------------- adopt as is

def adopt_onnx(path: Path, *, strip_softmax: bool = True, out_path: Path) -> dict[str, Any]:
    """Check an existing classifier ONNX, optionally drop its trailing Softmax, make the batch
    dimension dynamic and save it (atomically) to ``out_path``. Returns facts about it."""
    onnx = require("onnx", "reading ONNX models")
    model = load_onnx(path)
    inp = check_image_input(model, path)
    meta: dict[str, Any] = {"input_name": inp.name, "opset": _opset(model),
                            "producer": f"{model.producer_name} {model.producer_version}".strip()}
    meta["softmax_stripped"] = _strip_softmax(model) if strip_softmax else False
    meta.update(_make_batch_dynamic(model))
    try:
        onnx.checker.check_model(model, full_check=True)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # checker/shape-inference raise several unrelated types
        raise InputError(f"{path}: ONNX model does not pass onnx.checker / shape inference: {exc}") from exc
    meta["input_shape"] = _dims(model.graph.input[_data_input_index(model)])
    meta["output_names"] = [o.name for o in model.graph.output]
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(model.SerializeToString())
    meta["onnx"] = str(out_path)
    return meta


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
    inputs = _data_inputs(model)
    listing = ", ".join(f"{i.name} {_type_str(i)}" for i in inputs) or "none"
    if len(inputs) != 1:
        raise InputError(f"{path}: expected exactly one graph input (an NCHW image batch), "
                         f"found {len(inputs)}: {listing}")
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims = _dims(inp)
    if tt.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1] not in (3, "?"):
        raise InputError(f"{path}: the input must be a 4-D float32 NCHW tensor with 3 channels, "
                         f"got {listing}")
    if dims[1] == "?":
        raise InputError(f"{path}: input {inp.name} has an unknown channel count; expected 3 (NCHW)")
    return inp


def _data_inputs(model: Any) -> list[Any]:
    # Old exporters also list initializers as graph inputs; those are weights, not data.
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _data_input_index(model: Any) -> int:
    inits = {i.name for i in model.graph.initializer}
    return next(k for k, i in enumerate(model.graph.input) if i.name not in inits)


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _type_str(value_info: Any) -> str:
    onnx = require("onnx")
    tt = value_info.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    except Exception:  # unknown/undefined element type
        dtype = f"elem_type={tt.elem_type}"
    return f"{dtype}{_dims(value_info)}"


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


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
    inp = model.graph.input[_data_input_index(model)]
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
    consts = _initial_constants(model)
    out = []
    for n in model.graph.node:
        if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in consts:
            shape = consts[n.input[1]].ravel()
            if shape.size and int(shape[0]) == batch and batch > 0 and shape.size > 1:
                out.append(n.name or n.output[0])
    return out


def _initial_constants(model: Any) -> dict[str, np.ndarray]:
    onnx = require("onnx")
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    return consts


# ---------------------------------------------------------------- graph -> tokens

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
    if len(_data_inputs(model)) != 1:
        raise NotLcnet(f"{len(_data_inputs(model))} graph inputs (a PP-LCNet has one)")
    if len(model.graph.output) != 1:
        raise NotLcnet(f"{len(model.graph.output)} graph outputs (a PP-LCNet has one)")
    reader = _Reader(model)
    tokens = reader.run()
    out = reader.resolve(model.graph.output[0].name)
    if not tokens or tokens[-1].output != out:
        raise NotLcnet("the graph output is not produced by the last operation of the data path")
    return tokens


# ---------------------------------------------------------------- tokens -> spec

@dataclass(frozen=True)
class _ExpConv:
    prefix: str
    style: str  # "convbn": <p>.conv.weight + BN (or <p>.conv.bias); "plain": <p>.weight [+ <p>.bias]
    shape: tuple[int, int, int, int]
    stride: tuple[int, int]
    groups: int
    bias: bool  # plain style only


def expected_tokens(spec: ModelSpec) -> tuple[list[tuple[str, Any]], int]:
    """(tokens without adds, number of adds) that ``spec`` implies."""
    net = build_network(spec)
    toks: list[tuple[str, Any]] = []
    adds = 0

    def convbn(prefix: str, cin: int, cout: int, k: int, stride: tuple[int, int], groups: int) -> None:
        toks.append(("conv", _ExpConv(prefix, "convbn", (cout, cin // groups, k, k), stride, groups, False)))

    for block in net.blocks:
        adds += int(block.shortcut)
        for layer in block.layers:
            if isinstance(layer, ConvBN):
                convbn(layer.name, layer.cin, layer.cout, layer.k, layer.stride, layer.groups)
                if layer.act:
                    toks.append(("act", layer.act))
            elif isinstance(layer, RepDW):
                c = layer.channels
                if spec.rep_fused:
                    k = layer.kernels[0]
                    toks.append(("conv", _ExpConv(f"{layer.name}.dw_conv", "plain", (c, 1, k, k), layer.stride,
                                                  c, True)))
                else:
                    for j, k in enumerate(layer.kernels):
                        convbn(f"{layer.name}.dw_conv_list.{j}", c, c, k, layer.stride, c)
                    adds += len(layer.kernels) - 1
                toks.append(("act", layer.act))
            elif isinstance(layer, SE):
                c, m = layer.channels, layer.mid
                toks += [("pool", None),
                         ("conv", _ExpConv(f"{layer.name}.conv1", "plain", (m, c, 1, 1), (1, 1), 1, True)),
                         ("act", layer.act),
                         ("conv", _ExpConv(f"{layer.name}.conv2", "plain", (c, m, 1, 1), (1, 1), 1, True)),
                         ("act", layer.gate), ("mul", None)]
    head = net.head
    toks.append(("pool", None))
    if head.use_last_conv:
        toks.append(("conv", _ExpConv("last_conv", "plain", (head.class_expand, head.cin, 1, 1), (1, 1), 1,
                                      head.last_conv_bias)))
        toks.append(("act", head.act))
        if head.dropout_scale != 1.0:
            toks.append(("scale", head.dropout_scale))
    toks += [("flatten", None), ("fc", (head.class_num, head.class_expand if head.use_last_conv else head.cin))]
    return toks, adds


# V1 positions whose stride comes from stride_list (stem, then the first block of blocks3..6)
_V1_STRIDE_SLOTS = {"conv1.conv": 0, "blocks3.0.dw_conv": 1, "blocks4.0.dw_conv": 2,
                    "blocks5.0.dw_conv": 3, "blocks6.0.dw_conv": 4}


def _slot(prefix: str) -> int | None:
    return _V1_STRIDE_SLOTS.get(prefix) if prefix in _V1_STRIDE_SLOTS else _V1_STRIDE_SLOTS.get(f"{prefix}.conv")


Pairs = list[tuple[_ExpConv, ConvRec]]


def match_tokens(spec: ModelSpec, found: list[Token], *,
                 free_strides: bool) -> tuple[Pairs, dict[int, tuple[int, int]]]:
    """Compare graph tokens with the spec's. Returns matched convs and the strides seen at
    the V1 stride_list slots. Raises NotLcnet with the first difference."""
    want, want_adds = expected_tokens(spec)
    got = [t for t in found if t.kind not in ("add", "softmax")]
    got_adds = sum(t.kind == "add" for t in found)
    pairs: Pairs = []
    slots: dict[int, tuple[int, int]] = {}
    for i, (kind, value) in enumerate(want):
        if i >= len(got):
            raise NotLcnet(f"graph ends after {len(got)} operations; {spec.arch} expects {len(want)}")
        tok = got[i]
        where = f"operation {i} ({value.prefix if kind == 'conv' else kind})"
        if tok.kind != kind:
            raise NotLcnet(f"{where}: expected {kind}, graph has {tok.kind}")
        if kind == "conv":
            slot = _slot(value.prefix) if spec.family == "v1" else None
            _check_conv(value, tok.value, where, free_stride=free_strides and slot is not None)
            if slot is not None:
                slots[slot] = tok.value.stride
            pairs.append((value, tok.value))
        elif kind == "act" and tok.value != value:
            raise NotLcnet(f"{where}: expected activation {value}, graph has {tok.value}")
        elif kind == "scale" and abs(tok.value - value) > 1e-6:
            raise NotLcnet(f"{where}: expected dropout scale {value:g}, graph has {tok.value:g}")
        elif kind == "fc" and tuple(tok.value[0].shape) != value:
            raise NotLcnet(f"{where}: expected fc [out, in] {value}, graph has {tuple(tok.value[0].shape)}")
    if len(got) != len(want):
        raise NotLcnet(f"graph has {len(got) - len(want)} more operations after fc ({got[len(want)].kind})")
    if got_adds != want_adds:
        raise NotLcnet(f"graph has {got_adds} tensor additions (residual/branch sums), {spec.arch} expects {want_adds}")
    softmax = [i for i, t in enumerate(found) if t.kind == "softmax"]
    if softmax and softmax != [len(found) - 1]:
        raise NotLcnet("Softmax is not the last operation")
    return pairs, slots


def _check_conv(exp: _ExpConv, rec: ConvRec, where: str, *, free_stride: bool) -> None:
    pad = (exp.shape[2] - 1) // 2
    problems = []
    if tuple(rec.weight.shape) != exp.shape:
        problems.append(f"weight {tuple(rec.weight.shape)} != {exp.shape}")
    if rec.group != exp.groups:
        problems.append(f"group {rec.group} != {exp.groups}")
    if not free_stride and rec.stride != exp.stride:
        problems.append(f"stride {rec.stride} != {exp.stride}")
    if rec.pads != (pad,) * 4:
        problems.append(f"pads {rec.pads} != {(pad,) * 4}")
    if any(d != 1 for d in rec.dilations):
        problems.append(f"dilations {rec.dilations}")
    if exp.style == "plain" and not exp.bias and rec.affine:
        problems.append("has a bias/BN where the layer has none")
    if problems:
        raise NotLcnet(f"{where}: {', '.join(problems)}")


def _candidates(found: list[Token], arch: str) -> list[ModelSpec]:
    """Specs worth trying, with everything the graph says directly already filled in."""
    kinds = [t.kind for t in found]
    fc = next((t for t in found if t.kind == "fc"), None)
    pools = [i for i, k in enumerate(kinds) if k == "pool"]
    if fc is None or not pools:
        raise NotLcnet("no global average pool + fully connected head")
    head = found[pools[-1] + 1: found.index(fc)]
    head_convs = [t.value for t in head if t.kind == "conv"]
    scales = [t.value for t in head if t.kind == "scale"]
    acts = [t.value for t in found if t.kind == "act"]
    first_act = acts[0] if acts else "relu"
    use_last_conv = len(head_convs) == 1
    class_num = fc.value[0].shape[0]
    kw: dict[str, Any] = {
        "class_num": class_num,
        "use_last_conv": use_last_conv,
        "class_expand": head_convs[0].weight.shape[0] if use_last_conv else 1280,
        "last_conv_bias": bool(use_last_conv and head_convs[0].affine),
        "source_format": "onnx",
    }
    if use_last_conv:
        if len(scales) > 1 or (scales and not 0.0 < scales[0] <= 1.0):
            raise NotLcnet(f"head scale {scales} is no Paddle downscale_in_infer dropout")
        # No scale op: the export had no dropout factor (p=0), nothing to fold.
        kw["dropout_prob"] = round(1.0 - scales[0], 6) if scales else 0.0
    elif scales:
        raise NotLcnet(f"a scale {scales[0]:g} before fc without last_conv cannot be expressed by ModelSpec")
    names = [arch] if arch != "auto" else list(ARCHS)
    specs = []
    for name in names:
        family = ARCHS[name].family
        act = first_act if family == "v1" else family_defaults("v2")["act"]
        for rep_fused in ((True, False) if family == "v2" else (False,)):
            specs.append(ModelSpec(arch=name, act=act, rep_fused=rep_fused, **kw))
    return specs


def detect_spec(found: list[Token], arch: str = "auto") -> tuple[ModelSpec, Pairs]:
    """The first candidate spec whose token list equals the graph's; strides taken from the graph."""
    failures: list[tuple[int, str, str]] = []
    for spec in _candidates(found, arch):
        try:
            _, slots = match_tokens(spec, found, free_strides=True)
            if spec.family == "v1":
                spec = spec.replace(stride_list=tuple(slots[i] for i in range(5)))
            pairs, _ = match_tokens(spec, found, free_strides=False)
            return spec, pairs
        except NotLcnet as exc:
            failures.append((_progress(str(exc)), spec.arch, str(exc)))
    best = max(failures, key=lambda f: f[0])
    raise NotLcnet(f"no PP-LCNet variant matches (closest {best[1]}: {best[2]})")


def _progress(msg: str) -> int:
    """How far a candidate got before its first mismatch (for the 'closest' hint)."""
    if msg.startswith("operation "):
        return int(msg.split()[1])
    return 10**6 if msg.startswith("graph has") else -1


def _tensors(spec: ModelSpec, pairs: Pairs, fc: Token) -> tuple[dict[str, np.ndarray], bool]:
    """Named canonical tensors. BN stays separate when every conv+BN is clean (no conv bias,
    eps 1e-5); otherwise everything is folded, since ModelSpec has one bn_folded flag."""
    bn_pairs = [(e, r) for e, r in pairs if e.style == "convbn"]
    clean = all(r.bn is not None and r.pre_bias is None and r.post_bias is None and abs(r.bn[4] - BN_EPS) < 1e-8
                for _, r in bn_pairs)
    t: dict[str, np.ndarray] = {}
    for exp, rec in pairs:
        if exp.style == "convbn" and clean:
            gamma, beta, mean, var, _ = rec.bn  # type: ignore[misc]
            t[f"{exp.prefix}.conv.weight"] = rec.weight
            for name, v in zip(("weight", "bias", "_mean", "_variance"), (gamma, beta, mean, var), strict=True):
                t[f"{exp.prefix}.bn.{name}"] = v
        elif exp.style == "convbn":
            t[f"{exp.prefix}.conv.weight"], t[f"{exp.prefix}.conv.bias"] = rec.folded()
        elif exp.bias:
            t[f"{exp.prefix}.weight"], t[f"{exp.prefix}.bias"] = rec.folded()
        else:
            t[f"{exp.prefix}.weight"] = rec.weight
    t["fc.weight"], t["fc.bias"] = fc.value
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in t.items()}, not clean and bool(bn_pairs)


def canonical_from_onnx(model: Any, *, arch: str = "auto", options: dict[str, Any] | None = None,
                        source_format: str = "onnx") -> tuple[CanonicalModel | None, dict[str, Any]]:
    """Rebuild a PP-LCNet ONNX graph as a CanonicalModel.

    Returns ``(None, info)`` with ``info["adopted_reason"]`` when the graph is not a PP-LCNet
    that ModelSpec can express. Raises InputError when ``arch`` is given explicitly and the
    graph is a different PP-LCNet. ``options`` (model.options) are checked against the graph;
    the graph wins and differences are listed in ``info["warnings"]``.
    """
    info: dict[str, Any] = {"warnings": []}
    try:
        found = read_tokens(model)
        info["softmax"] = bool(found) and found[-1].kind == "softmax"
        spec, pairs = detect_spec(found, arch)
    except NotLcnet as exc:
        if arch != "auto":
            _raise_if_other_arch(model, arch, str(exc))
        info["adopted_reason"] = f"not a PP-LCNet lcpipe can rebuild: {exc}"
        return None, info
    fc = next(t for t in found if t.kind == "fc")
    tensors, folded = _tensors(spec, pairs, fc)
    spec = spec.replace(bn_folded=folded, source_format=source_format)
    want = expected_shapes(spec)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != want:  # would be a reader bug; never hand on an incomplete model
        diff = sorted(set(got) ^ set(want)) or sorted(k for k in want if got[k] != want[k])
        info["adopted_reason"] = f"internal: rebuilt tensors differ from expected_shapes for {diff[:5]}"
        return None, info
    info["warnings"] += _option_warnings(spec, options or {})
    info["detected"] = {"arch": spec.arch, "stride_list": [list(s) for s in spec.stride_list],
                        "class_num": spec.class_num, "use_last_conv": spec.use_last_conv,
                        "class_expand": spec.class_expand, "act": spec.act, "dropout_prob": spec.dropout_prob,
                        "bn_folded": spec.bn_folded, "rep_fused": spec.rep_fused}
    return CanonicalModel(spec, tensors), info


def _raise_if_other_arch(model: Any, arch: str, why: str) -> None:
    try:
        other, _ = detect_spec(read_tokens(model), "auto")
    except NotLcnet:
        return
    raise InputError(f"model.arch is {arch} but the graph is {other.arch} ({why}); "
                     f"set model.arch: auto or {other.arch}")


def _option_warnings(spec: ModelSpec, options: dict[str, Any]) -> list[str]:
    out = []
    for key, value in options.items():
        if value is None or not hasattr(spec, key):
            continue
        have = getattr(spec, key)
        if key == "stride_list":
            value = normalize_strides(value)
        if key == "dropout_prob" and not spec.use_last_conv:
            continue  # no dropout in a head without last_conv
        if value != have:
            out.append(f"model.options.{key}={value!r} but the graph says {have!r}; using the graph")
    return out
