"""Weights file -> canonical model, with `arch: auto` detection and a full tensor check.

Every tensor must be consumed: missing, unexpected and mis-shaped tensors are listed by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.errors import InputError
from lcpipe.importers.finite import check_bn_variance, check_finite
from lcpipe.importers.safe_pickle import load_pdparams
from lcpipe.importers.torch_weights import (
    is_timm_lcnet,
    load_safetensors,
    load_torch_state_dict,
    timm_to_paddle_names,
)
from lcpipe.models.layers import expected_shapes
from lcpipe.models.spec import ARCHS, CanonicalModel, Family, ModelSpec, family_defaults, normalize_strides

_MAX_LISTED = 12


def load_raw(path: Path, fmt: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{path}: no such weights file")
    if fmt == "pdparams":
        return load_pdparams(path)
    if fmt == "torch":
        return load_torch_state_dict(path)
    if fmt == "safetensors":
        return load_safetensors(path)
    raise InputError(f"{path}: format {fmt!r} is not a weights checkpoint")


def import_checkpoint(path: Path, fmt: str, arch: str = "auto",
                      options: dict[str, Any] | None = None) -> CanonicalModel:
    raw = load_raw(path, fmt)
    check_finite(raw, str(path))
    tensors, flavor = to_paddle_names(raw, path)
    check_bn_variance(tensors, str(path))
    spec = detect_spec(tensors, arch, options or {}, flavor=flavor, where=str(path))
    spec = spec.replace(source_format=fmt)
    return CanonicalModel(spec, {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()})


def to_paddle_names(raw: dict[str, np.ndarray], path: Path | str) -> tuple[dict[str, np.ndarray], str]:
    """Return tensors in canonical names and the flavor ('paddle' or 'timm')."""
    if is_timm_lcnet(set(raw)):
        mapped, unknown = timm_to_paddle_names(raw)
        if unknown:
            raise InputError(f"{path}: unexpected tensors for a timm lcnet: {_names(unknown)}")
        return mapped, "timm"
    tensors = drop_unused_deploy_convs(dict(raw))
    fc = tensors.get("fc.weight")
    if fc is not None and fc.ndim == 2:
        tensors["fc.weight"] = np.ascontiguousarray(fc.T)  # Paddle Linear is [in, out]
    return tensors, "paddle"


def drop_unused_deploy_convs(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PaddleClas V2 creates the fused ``dw_conv`` (with random init) beside the rep branches,
    so training checkpoints carry it unused; it is rebuilt from the branches by fusion."""
    with_branches = {n.split(".dw_conv_list.")[0] for n in tensors if ".dw_conv_list." in n}
    return {n: v for n, v in tensors.items()
            if not (n.rsplit(".", 2)[0] in with_branches and n.rsplit(".", 2)[1] == "dw_conv")}


def detect_family(names: set[str], where: str) -> Family:
    if any(n.startswith("stages.") for n in names):
        return "v2"
    if any(n.startswith("blocks2.") for n in names):
        return "v1"
    sample = ", ".join(sorted(names)[:5])
    raise InputError(f"{where}: not a PP-LCNet or PP-LCNetV2 checkpoint (no 'blocks2.*' or 'stages.*' "
                     f"tensors; first names: {sample})")


def detect_spec(tensors: dict[str, np.ndarray], arch: str, options: dict[str, Any], *,
                flavor: str, where: str) -> ModelSpec:
    names = set(tensors)
    if arch == "auto":
        family = detect_family(names, where)
        candidates = [a for a, info in ARCHS.items() if info.family == family]
    else:
        candidates = [arch]
    attempts = []
    for cand in candidates:
        spec = _candidate_spec(cand, tensors, options, flavor)
        problems = tensor_problems(spec, tensors)
        if not any(problems.values()):
            return spec
        attempts.append((sum(len(v) for v in problems.values()), cand, problems))
    _, best, problems = min(attempts, key=lambda a: a[0])
    lead = f"{where}: weights do not match {best}" if arch != "auto" else \
        f"{where}: could not match any {'/'.join(candidates)} (closest: {best})"
    raise InputError(f"{lead}: {format_problems(problems)}")


def _candidate_spec(arch: str, tensors: dict[str, np.ndarray], options: dict[str, Any], flavor: str) -> ModelSpec:
    info = ARCHS[arch]
    opts = {k: v for k, v in options.items() if v is not None}
    defaults = family_defaults(info.family)
    fc = tensors.get("fc.weight")
    last = tensors.get("last_conv.weight")
    use_last_conv = opts.get("use_last_conv", last is not None)
    kw: dict[str, Any] = {
        "arch": arch,
        "class_num": opts.get("class_num", fc.shape[0] if fc is not None and fc.ndim == 2 else 1000),
        "class_expand": opts.get("class_expand", last.shape[0] if last is not None and last.ndim == 4 else 1280),
        "use_last_conv": use_last_conv,
        "act": opts.get("act", defaults["act"]),
        "dropout_prob": opts.get("dropout_prob", defaults["dropout_prob"]),
        "rep_fused": info.family == "v2" and any(n.endswith(".dw_conv.weight") and n.startswith("stages.")
                                                 for n in tensors),
        "bn_folded": not any(".bn." in n for n in tensors) and any(n.endswith(".conv.bias") for n in tensors),
    }
    if "stride_list" in opts:
        kw["stride_list"] = normalize_strides(opts["stride_list"])
    if flavor == "timm":
        kw.update(dropout_downscale_in_infer=False, last_conv_bias="last_conv.bias" in tensors)
    return ModelSpec(**kw)


def tensor_problems(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> dict[str, list[str]]:
    want = expected_shapes(spec)  # in network order: the first listed is where the graphs part
    missing = [n for n in want if n not in tensors]
    unexpected = sorted(set(tensors) - set(want))
    shape = [f"{n} {tuple(tensors[n].shape)} != expected {want[n]}"
             for n in want if n in tensors and tuple(tensors[n].shape) != want[n]]
    return {"missing": missing, "unexpected": unexpected, "shape mismatch": shape}


def check_tensors(model: CanonicalModel, where: str) -> None:
    problems = tensor_problems(model.spec, model.tensors)
    if any(problems.values()):
        raise InputError(f"{where}: tensors do not match {model.spec.arch}: {format_problems(problems)}")


def format_problems(problems: dict[str, list[str]]) -> str:
    return "; ".join(f"{kind} ({len(items)}): {_names(items)}" for kind, items in problems.items() if items)


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")
