"""Fusion on the canonical form, pure numpy (float64 accumulate, float32 out).

- BatchNorm folded into the preceding conv (conv gains a bias).
- V2 rep branches (k, k-2, ..., 1; no identity branch) merged into one depthwise conv with
  bias, exactly as PaddleClas ``RepDepthwiseSeparable.re_parameterize`` does.
- Paddle's ``downscale_in_infer`` dropout (x(1-p) at inference) folded into fc's weight.
"""

from __future__ import annotations

import numpy as np

from lcpipe.models.layers import ConvBN, RepDW, build_network
from lcpipe.models.spec import CanonicalModel

BN_EPS = 1e-5


def fold_bn(weight: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
            eps: float = BN_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Return (kernel, bias) in float64 such that conv(x, kernel) + bias == bn(conv(x, weight))."""
    std = np.sqrt(var.astype(np.float64) + eps)
    t = gamma.astype(np.float64) / std
    return weight.astype(np.float64) * t.reshape(-1, 1, 1, 1), beta.astype(np.float64) - mean.astype(np.float64) * t


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a kxk kernel symmetrically to size x size (a smaller centred kernel)."""
    pad = (size - kernel.shape[-1]) // 2
    return np.pad(kernel, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else kernel


def merge_rep_branches(branches: list[tuple[np.ndarray, np.ndarray]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum BN-folded branch kernels (padded to size) and biases."""
    kernel = sum(pad_kernel(k, size) for k, _ in branches)
    bias = sum(b for _, b in branches)
    return kernel, bias  # type: ignore[return-value]


def fuse(model: CanonicalModel) -> CanonicalModel:
    """Return a new, fully fused model (the input is not modified)."""
    spec = model.spec
    src = model.tensors
    out: dict[str, np.ndarray] = {}
    consumed: set[str] = set()

    def take(name: str) -> np.ndarray:
        consumed.add(name)
        return src[name]

    def fold_prefix(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        w = take(f"{prefix}.conv.weight")
        if spec.bn_folded:
            return w.astype(np.float64), take(f"{prefix}.conv.bias").astype(np.float64)
        return fold_bn(w, *(take(f"{prefix}.bn.{p}") for p in ("weight", "bias", "_mean", "_variance")))

    for block in build_network(spec).blocks:
        for layer in block.layers:
            if isinstance(layer, ConvBN):
                k, b = fold_prefix(layer.name)
                out[f"{layer.name}.conv.weight"], out[f"{layer.name}.conv.bias"] = k, b
            elif isinstance(layer, RepDW):
                if spec.rep_fused:
                    k = take(f"{layer.name}.dw_conv.weight").astype(np.float64)
                    b = take(f"{layer.name}.dw_conv.bias").astype(np.float64)
                else:
                    branches = [fold_prefix(f"{layer.name}.dw_conv_list.{j}") for j in range(len(layer.kernels))]
                    k, b = merge_rep_branches(branches, layer.kernels[0])
                out[f"{layer.name}.dw_conv.weight"], out[f"{layer.name}.dw_conv.bias"] = k, b
    # everything else (SE convs, head) is copied; the dropout scale goes into fc.weight
    for name in src:
        if name not in consumed:
            out[name] = src[name].astype(np.float64)
    out["fc.weight"] = out["fc.weight"] * spec.head_scale
    new_spec = spec.replace(bn_folded=True, rep_fused=True, dropout_folded=True)
    return CanonicalModel(new_spec, {k: v.astype(np.float32) for k, v in out.items()})
