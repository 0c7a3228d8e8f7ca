"""timm ``lcnet_050/075/100`` state dicts (.pth via torch.load(weights_only=True), .safetensors)
mapped onto PaddleClas names. A pure key map, like timm's own ``checkpoint_filter_fn``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lcpipe.deps import require
from lcpipe.errors import InputError, UnsafePickleError, shown

# timm stage index -> (Paddle stage, offset of first block)
_TIMM_STAGE = {0: ("blocks2", 0), 1: ("blocks3", 0), 2: ("blocks4", 0), 3: ("blocks5", 0),
               4: ("blocks5", 2), 5: ("blocks6", 0)}
_BN = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}
_BLOCK_PART = {"conv_dw": "dw_conv.conv", "bn1": "dw_conv.bn", "se.conv_reduce": "se.conv1",
               "se.conv_expand": "se.conv2", "conv_pw": "pw_conv.conv", "bn2": "pw_conv.bn"}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|se\.conv_reduce|se\.conv_expand|conv_pw|bn2)\.(\w+)$")


def load_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    torch = require("torch", "importing .pth weights")
    _check_pickles(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types: UnpicklingError, RuntimeError, EOFError
        text = _load_error_detail(exc)
        if "GLOBAL" in text:  # the weights-only unpickler refused a class or function
            raise UnsafePickleError(f"{path}: refusing to load: {text} (torch files are loaded with "
                                    "weights_only=True; a weights file may only hold tensors)") from None
        raise InputError(f"{path}: cannot load as a torch state dict with weights_only=True ({text})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state dict, found {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not hasattr(v, "detach"):
            raise InputError(f"{path}: entry {shown(k)} is {type(v).__name__}, not a tensor")
        out[str(k).removeprefix("module.")] = v.detach().cpu().float().numpy() if v.is_floating_point() \
            else v.detach().cpu().numpy()
    return out


_MAX_PICKLE_BYTES = 64 << 20  # a state dict's data.pkl is a few hundred KB; tensors are stored apart


def _check_pickles(path: Path) -> None:
    """torch's weights-only unpickler hashes dict keys as it builds them, so a few hundred bytes can
    keep it busy for hours (a tuple key holding itself twice, many levels deep): scan the pickles
    with lcpipe's bounded one first. A zip checkpoint keeps them in */data.pkl; a legacy file is up
    to five pickles in a row."""
    import zipfile

    from lcpipe.importers.safe_pickle import check_pickle_work

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.filename.endswith("data.pkl") and info.file_size <= _MAX_PICKLE_BYTES:
                        check_pickle_work(zf.read(info), str(path))
            return
        with open(path, "rb") as f:
            check_pickle_work(f.read(_MAX_PICKLE_BYTES), str(path), count=5)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return  # unreadable: torch.load says why


def _load_error_detail(exc: Exception) -> str:
    """The informative line of a torch.load error (torch wraps it in paragraphs of advice that
    do not apply here, such as retrying with weights_only=False)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln]
    for ln in lines:
        if "GLOBAL" in ln:
            return ln.removeprefix("WeightsUnpickler error: ").split(". Please use")[0].rstrip(".")
    return lines[0] if lines else type(exc).__name__


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    st = require("safetensors.numpy", "importing .safetensors weights")
    try:
        return dict(st.load_file(str(path)))
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad headers
        raise InputError(f"{path}: not a readable .safetensors file ({exc})") from None


def is_timm_lcnet(names: set[str]) -> bool:
    return "conv_stem.weight" in names


def timm_to_paddle_names(sd: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rename timm keys to PaddleClas names; returns (mapped, unknown keys)."""
    out: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            continue  # training counter, no effect on inference
        new = _map_key(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    return out, unknown


def _map_key(key: str) -> str | None:
    if key == "conv_stem.weight":
        return "conv1.conv.weight"
    if key.startswith("bn1."):
        return _bn("conv1.bn", key.split(".", 1)[1])
    if key in ("conv_head.weight", "conv_head.bias"):
        return "last_conv." + key.split(".")[1]
    if key in ("classifier.weight", "classifier.bias"):
        return "fc." + key.split(".")[1]
    m = _BLOCK_RE.match(key)
    if not m:
        return None
    stage_idx, j, part, leaf = int(m[1]), int(m[2]), m[3], m[4]
    if stage_idx not in _TIMM_STAGE:
        return None
    stage, offset = _TIMM_STAGE[stage_idx]
    prefix = f"{stage}.{j + offset}.{_BLOCK_PART[part]}"
    return _bn(prefix, leaf) if part.startswith("bn") else f"{prefix}.{leaf}"


def _bn(prefix: str, leaf: str) -> str | None:
    return f"{prefix}.{_BN[leaf]}" if leaf in _BN else None
