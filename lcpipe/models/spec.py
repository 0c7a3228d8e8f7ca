"""The canonical in-memory model: a ModelSpec (what to build) plus named numpy tensors.

Every importer produces this form and every exporter consumes it. Tensor names follow
PaddleClas's structured names (``blocks2.0.dw_conv.conv.weight``) with two conventions:
``fc.weight`` is stored ``[out, in]`` (PyTorch layout; Paddle's ``[in, out]`` is transposed
on import), and folded tensors use ``<layer>.conv.bias`` / ``<block>.dw_conv.{weight,bias}``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lcpipe.errors import InputError

Family = Literal["v1", "v2"]
Stride = tuple[int, int]
ACTS = ("hardswish", "relu", "relu6")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """PaddleClas/timm channel rounding: nearest multiple of 8, never more than 10% below v."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class ArchInfo:
    family: Family
    scale: float
    depths: tuple[int, ...] = ()  # V2 only: blocks per stage


# One list of what exists (like PaddleClas MODEL_URLS).
ARCHS: dict[str, ArchInfo] = {
    **{f"PPLCNet_x{s.replace('.', '_')}": ArchInfo("v1", float(s))
       for s in ("0.25", "0.35", "0.5", "0.75", "1.0", "1.5", "2.0", "2.5")},
    "PPLCNetV2_small": ArchInfo("v2", 0.75, (2, 2, 4, 2)),
    "PPLCNetV2_base": ArchInfo("v2", 1.0, (2, 2, 6, 2)),
    "PPLCNetV2_large": ArchInfo("v2", 1.25, (2, 2, 8, 2)),
}


def normalize_strides(strides: Any) -> tuple[Stride, ...]:
    out = []
    for s in strides:
        if isinstance(s, int):
            out.append((s, s))
        else:
            h, w = s
            out.append((int(h), int(w)))
    return tuple(out)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides the graph. Weight values live in the tensor dict."""

    arch: str
    class_num: int = 1000
    class_expand: int = 1280
    use_last_conv: bool = True
    stride_list: tuple[Stride, ...] = ((2, 2),) * 5  # stem, then first block of blocks3..6 (V1)
    act: str = "hardswish"
    dropout_prob: float = 0.2
    # Paddle's Dropout(mode="downscale_in_infer") multiplies by (1 - p) at inference; torch's does not.
    dropout_downscale_in_infer: bool = True
    last_conv_bias: bool = False  # timm's conv_head has a bias, PaddleClas's last_conv not
    # State of the weights: which fusions have already been applied.
    bn_folded: bool = False
    rep_fused: bool = False
    dropout_folded: bool = False
    source_format: str = ""  # pdparams | torch | safetensors | ... (informational)

    @property
    def info(self) -> ArchInfo:
        return ARCHS[self.arch]

    @property
    def family(self) -> Family:
        return self.info.family

    @property
    def scale(self) -> float:
        return self.info.scale

    @property
    def head_scale(self) -> float:
        """Factor the head's dropout applies to fc's input at inference."""
        if self.use_last_conv and self.dropout_downscale_in_infer and not self.dropout_folded:
            return 1.0 - self.dropout_prob
        return 1.0

    @property
    def fused(self) -> bool:
        return self.bn_folded and (self.family == "v1" or self.rep_fused) and self.head_scale == 1.0

    def replace(self, **kw: Any) -> ModelSpec:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stride_list"] = [list(s) for s in self.stride_list]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        d = dict(d)
        d["stride_list"] = normalize_strides(d.get("stride_list", [2] * 5))
        return cls(**d)


def save_npz_deterministic(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """np.savez stamps the current time into the zip; a fixed date keeps bytes reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(tensors):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(tensors[name]), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def family_defaults(family: Family) -> dict[str, Any]:
    """PaddleClas factory defaults that differ per family."""
    if family == "v1":
        return {"act": "hardswish", "dropout_prob": 0.2}
    return {"act": "relu", "dropout_prob": 0.2}


@dataclass
class CanonicalModel:
    spec: ModelSpec
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        """Write ``spec.json`` + ``tensors.npz`` (deterministic: sorted names, no timestamps)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "spec.json").write_text(json.dumps(self.spec.to_dict(), indent=2, sort_keys=True) + "\n")
        save_npz_deterministic(directory / "tensors.npz", self.tensors)

    @classmethod
    def load(cls, directory: Path) -> CanonicalModel:
        try:
            spec = ModelSpec.from_dict(json.loads((directory / "spec.json").read_text()))
            with np.load(directory / "tensors.npz", allow_pickle=False) as z:
                tensors = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{directory}: not a readable lcpipe canonical model ({exc})") from exc
        return cls(spec, tensors)
