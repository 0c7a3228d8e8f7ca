"""PP-LCNet V1/V2 as data tables, and one builder that turns a ModelSpec into a layer list.

The layer list is what the ONNX exporter walks and what the importers check tensors
against; it is the single description of the topology (no framework needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lcpipe.models.spec import ModelSpec, Stride, make_divisible

# PaddleClas pp_lcnet.py NET_CONFIG: kernel, in, out, stride, use_se (widths before scaling).
# The stride of each stage's first block is replaced by stride_list[1..4].
V1_NET_CONFIG: dict[str, tuple[tuple[int, int, int, int, bool], ...]] = {
    "blocks2": ((3, 16, 32, 1, False),),
    "blocks3": ((3, 32, 64, 2, False), (3, 64, 64, 1, False)),
    "blocks4": ((3, 64, 128, 2, False), (3, 128, 128, 1, False)),
    "blocks5": ((3, 128, 256, 2, False),) + ((5, 256, 256, 1, False),) * 5,
    "blocks6": ((5, 256, 512, 2, True), (5, 512, 512, 1, True)),
}


@dataclass(frozen=True)
class V2StageRow:
    in_channels: int
    kernel: int
    split_pw: bool
    use_rep: bool
    use_se: bool
    use_shortcut: bool


# PaddleClas pp_lcnet_v2.py NET_CONFIG.
V2_NET_CONFIG: tuple[V2StageRow, ...] = (
    V2StageRow(64, 3, split_pw=False, use_rep=False, use_se=False, use_shortcut=False),
    V2StageRow(128, 3, split_pw=False, use_rep=False, use_se=False, use_shortcut=False),
    V2StageRow(256, 5, split_pw=True, use_rep=True, use_se=True, use_shortcut=False),
    V2StageRow(512, 5, split_pw=False, use_rep=True, use_se=False, use_shortcut=True),
)


@dataclass(frozen=True)
class ConvBN:
    """Conv (no bias) + BatchNorm (+ activation). Tensors under ``{name}.conv`` / ``{name}.bn``."""

    name: str
    cin: int
    cout: int
    k: int
    stride: Stride = (1, 1)
    groups: int = 1
    act: str | None = None


@dataclass(frozen=True)
class RepDW:
    """V2 re-parameterizable depthwise conv: branches ``{name}.dw_conv_list.i`` summed, then act.
    Fused form: one depthwise conv with bias, ``{name}.dw_conv``."""

    name: str
    channels: int
    kernels: tuple[int, ...]
    stride: Stride
    act: str


@dataclass(frozen=True)
class SE:
    """avg pool -> conv1 (bias) -> relu -> conv2 (bias) -> gate -> multiply."""

    name: str
    channels: int
    mid: int
    gate: str  # "hardsigmoid" (V1, slope 1/6) or "sigmoid" (V2)
    act: str = "relu"  # between conv1 and conv2: ReLU in V1, the model's activation in V2


@dataclass(frozen=True)
class Block:
    """A sequence of layers with an optional residual around all of them (V2 stage4)."""

    name: str
    layers: tuple[ConvBN | RepDW | SE, ...]
    shortcut: bool = False


@dataclass(frozen=True)
class Head:
    cin: int
    class_num: int
    use_last_conv: bool
    class_expand: int
    last_conv_bias: bool
    act: str
    dropout_scale: float  # multiply fc input by this (Paddle downscale_in_infer); 1.0 when folded


@dataclass(frozen=True)
class Network:
    blocks: tuple[Block, ...]
    head: Head
    out_channels: int = field(default=0)


def _stride(s: Stride | int) -> Stride:
    return (s, s) if isinstance(s, int) else s


def build_network(spec: ModelSpec) -> Network:
    return _build_v1(spec) if spec.family == "v1" else _build_v2(spec)


def _build_v1(spec: ModelSpec) -> Network:
    s, act = spec.scale, spec.act
    blocks = [Block("conv1", (ConvBN("conv1", 3, make_divisible(16 * s), 3, spec.stride_list[0], 1, act),))]
    for stage_idx, (stage, rows) in enumerate(V1_NET_CONFIG.items()):
        for i, (k, cin, cout, stride, use_se) in enumerate(rows):
            if i == 0 and stage_idx > 0:  # blocks3..6 take their first stride from stride_list
                stride_hw = spec.stride_list[stage_idx]
            else:
                stride_hw = _stride(stride)
            ci, co = make_divisible(cin * s), make_divisible(cout * s)
            name = f"{stage}.{i}"
            layers: list[ConvBN | RepDW | SE] = [ConvBN(f"{name}.dw_conv", ci, ci, k, stride_hw, ci, act)]
            if use_se:
                layers.append(SE(f"{name}.se", ci, ci // 4, "hardsigmoid"))
            layers.append(ConvBN(f"{name}.pw_conv", ci, co, 1, (1, 1), 1, act))
            blocks.append(Block(name, tuple(layers)))
    last = make_divisible(V1_NET_CONFIG["blocks6"][-1][2] * s)
    return Network(tuple(blocks), _head(spec, last), last)


def _build_v2(spec: ModelSpec) -> Network:
    s, act = spec.scale, spec.act
    # PaddleClas builds the non-rep depthwise ConvBNLayer without passing `act`, so it is
    # always ReLU (its default), whatever the model's activation.
    dw_act = "relu"
    c32, c64 = make_divisible(32 * s), make_divisible(64 * s)
    blocks = [
        Block("stem.0", (ConvBN("stem.0", 3, c32, 3, (2, 2), 1, act),)),
        Block("stem.1", (ConvBN("stem.1.dw_conv", c32, c32, 3, (1, 1), c32, dw_act),
                         ConvBN("stem.1.pw_conv", c32, c64, 1, (1, 1), 1, act))),
    ]
    for si, (row, depth) in enumerate(zip(V2_NET_CONFIG, spec.info.depths, strict=True)):
        for i in range(depth):
            cin = make_divisible((row.in_channels if i == 0 else row.in_channels * 2) * s)
            cout = make_divisible(row.in_channels * 2 * s)
            stride = 2 if i == 0 else 1
            name = f"stages.{si}.{i}"
            layers: list[ConvBN | RepDW | SE] = []
            if row.use_rep:
                kernels = tuple(k for k in range(row.kernel, 0, -2) if not (k == 1 and stride != 1))
                layers.append(RepDW(name, cin, kernels, (stride, stride), act))
            else:
                layers.append(ConvBN(f"{name}.dw_conv", cin, cin, row.kernel, (stride, stride), cin, dw_act))
            if row.use_se:
                layers.append(SE(f"{name}.se", cin, cin // 4, "sigmoid", act))
            if row.split_pw:
                half = int(cout * 0.5)
                layers.append(ConvBN(f"{name}.pw_conv_1", cin, half, 1, (1, 1), 1, act))
                layers.append(ConvBN(f"{name}.pw_conv_2", half, cout, 1, (1, 1), 1, act))
            else:
                layers.append(ConvBN(f"{name}.pw_conv", cin, cout, 1, (1, 1), 1, act))
            shortcut = row.use_shortcut and stride == 1 and cin == cout
            blocks.append(Block(name, tuple(layers), shortcut))
    last = make_divisible(V2_NET_CONFIG[-1].in_channels * 2 * s)
    return Network(tuple(blocks), _head(spec, last), last)


def _head(spec: ModelSpec, cin: int) -> Head:
    return Head(cin, spec.class_num, spec.use_last_conv, spec.class_expand, spec.last_conv_bias,
                spec.act, spec.head_scale)


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor the spec needs, name -> shape, in the spec's current fusion state."""
    net = build_network(spec)
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, cout: int, cin_g: int, k: int) -> None:
        shapes[f"{prefix}.conv.weight"] = (cout, cin_g, k, k)
        if spec.bn_folded:
            shapes[f"{prefix}.conv.bias"] = (cout,)
        else:
            for p in ("weight", "bias", "_mean", "_variance"):
                shapes[f"{prefix}.bn.{p}"] = (cout,)

    for block in net.blocks:
        for layer in block.layers:
            if isinstance(layer, ConvBN):
                conv_bn(layer.name, layer.cout, layer.cin // layer.groups, layer.k)
            elif isinstance(layer, RepDW):
                if spec.rep_fused:
                    shapes[f"{layer.name}.dw_conv.weight"] = (layer.channels, 1, layer.kernels[0], layer.kernels[0])
                    shapes[f"{layer.name}.dw_conv.bias"] = (layer.channels,)
                else:
                    for j, k in enumerate(layer.kernels):
                        conv_bn(f"{layer.name}.dw_conv_list.{j}", layer.channels, 1, k)
            else:
                shapes[f"{layer.name}.conv1.weight"] = (layer.mid, layer.channels, 1, 1)
                shapes[f"{layer.name}.conv1.bias"] = (layer.mid,)
                shapes[f"{layer.name}.conv2.weight"] = (layer.channels, layer.mid, 1, 1)
                shapes[f"{layer.name}.conv2.bias"] = (layer.channels,)
    head = net.head
    fc_in = head.cin
    if head.use_last_conv:
        shapes["last_conv.weight"] = (head.class_expand, head.cin, 1, 1)
        if head.last_conv_bias:
            shapes["last_conv.bias"] = (head.class_expand,)
        fc_in = head.class_expand
    shapes["fc.weight"] = (head.class_num, fc_in)
    shapes["fc.bias"] = (head.class_num,)
    return shapes


def count_params_flops(spec: ModelSpec, input_hw: tuple[int, int]) -> tuple[int, int]:
    """Parameters (in the spec's fusion state) and multiply-accumulates for one image."""
    net = build_network(spec)
    params = sum(int(_prod(s)) for s in expected_shapes(spec).values())
    h, w = input_hw
    macs = 0
    for block in net.blocks:
        for layer in block.layers:
            if isinstance(layer, ConvBN):
                h, w = _out_hw(h, w, layer.k, layer.stride)
                macs += h * w * layer.cout * (layer.cin // layer.groups) * layer.k * layer.k
            elif isinstance(layer, RepDW):
                h, w = _out_hw(h, w, layer.kernels[0], layer.stride)
                macs += h * w * layer.channels * sum(k * k for k in layer.kernels[: 1 if spec.rep_fused else None])
            else:
                macs += 2 * layer.channels * layer.mid
    head = net.head
    if head.use_last_conv:
        macs += head.cin * head.class_expand
        macs += head.class_expand * head.class_num
    else:
        macs += head.cin * head.class_num
    return params, macs


def _out_hw(h: int, w: int, k: int, stride: Stride) -> tuple[int, int]:
    pad = (k - 1) // 2
    return (h + 2 * pad - k) // stride[0] + 1, (w + 2 * pad - k) // stride[1] + 1


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
