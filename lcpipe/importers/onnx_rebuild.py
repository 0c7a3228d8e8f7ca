"""Rebuilding a PP-LCNet ONNX graph into the canonical form (lcpipe.models.spec.CanonicalModel).

``canonical_from_onnx`` reads the graph into tokens (onnx_tokens) and compares that token list
with the one ``build_network(spec)`` implies, for each candidate spec. Weights are taken from the
matched Conv/BatchNormalization/MatMul constants; names come from the layer table, never from the
graph (exported graphs carry generated names like ``conv2d_30.w_0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lcpipe.errors import InputError
from lcpipe.importers.onnx_tokens import ConvRec, NotLcnet, Token, read_tokens
from lcpipe.models.layers import SE, ConvBN, RepDW, build_network, expected_shapes
from lcpipe.models.spec import ARCHS, CanonicalModel, ModelSpec, family_defaults, normalize_strides

BN_EPS = 1e-5


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
