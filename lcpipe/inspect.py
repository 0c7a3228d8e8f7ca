"""`lcpipe inspect`: what a weights file or model is, without running a pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcpipe.errors import InputError


def guess_format(path: Path) -> str:
    if path.is_dir() or path.name.endswith((".json", ".pdmodel", ".pdiparams")):
        return "paddle_inference"
    suffix = path.suffix.lower()
    return {".pdparams": "pdparams", ".pth": "torch", ".pt": "torch", ".bin": "torch",
            ".safetensors": "safetensors", ".onnx": "onnx"}.get(suffix, "")


DEFAULT_HW = (224, 224)


def inspect_path(path: Path, fmt: str = "auto", arch: str = "auto",
                 input_hw: tuple[int, int] | None = None) -> dict[str, Any]:
    """FLOPs are counted at ``input_hw`` when given, else at the input size a Paddle inference
    model's ``inference.yml`` declares (its resize or crop), else at 224x224."""
    fmt = guess_format(path) if fmt == "auto" else fmt
    if not fmt:
        raise InputError(f"{path}: cannot tell the format from the name; pass --format")
    if fmt == "onnx":
        return _inspect_onnx(path)
    declared: tuple[tuple[int, int], str] | None = None
    if fmt == "paddle_inference":
        import tempfile

        from lcpipe.importers.paddle_inference import import_paddle_inference

        with tempfile.TemporaryDirectory() as tmp:
            model, _, meta = import_paddle_inference(path, arch=arch, work_dir=Path(tmp))
        if model is None:
            return {"path": str(path), "format": fmt, "pp_lcnet": False, "note": meta.get("adopted_reason", "")}
        declared = declared_input_hw(meta)
    else:
        from lcpipe.importers.checkpoint import import_checkpoint

        model = import_checkpoint(path, fmt, arch)
    from lcpipe.models.layers import count_params_flops

    if input_hw is not None:
        hw, hw_from = input_hw, "--input-size"
    elif declared is not None:
        hw, hw_from = declared
    else:
        hw, hw_from = DEFAULT_HW, "default"
    spec = model.spec
    params, macs = count_params_flops(spec, hw)
    return {
        "path": str(path), "format": fmt, "arch": spec.arch, "family": spec.family, "scale": spec.scale,
        "class_num": spec.class_num, "use_last_conv": spec.use_last_conv, "class_expand": spec.class_expand,
        "stride_list": [list(s) for s in spec.stride_list], "act": spec.act,
        "params": params, "flops_macs": macs, "input_hw": list(hw), "input_hw_from": hw_from,
        "bn_folded": spec.bn_folded, "rep_branches_fused": spec.rep_fused if spec.family == "v2" else None,
        "tensors": len(model.tensors),
    }


def declared_input_hw(meta: dict[str, Any]) -> tuple[tuple[int, int], str] | None:
    """(H, W) the model is fed, from its inference.yml preprocessing (a crop wins over the resize
    before it), else from a static input shape of the converted graph; with where it came from."""
    pre = meta.get("preprocess") or {}
    if pre.get("crop"):
        return (int(pre["crop"]), int(pre["crop"])), "inference.yml"
    if pre.get("mode") == "resize" and pre.get("size"):
        h, w = pre["size"]
        return (int(h), int(w)), "inference.yml"
    shape = meta.get("input_shape") or []
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return (int(shape[2]), int(shape[3])), "model input shape"
    return None


def _inspect_onnx(path: Path) -> dict[str, Any]:
    from lcpipe.deps import require
    from lcpipe.importers.onnx_read import opset

    onnx = require("onnx")
    try:
        m = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX model ({exc})") from None
    params = sum(int(__import__("numpy").prod(t.dims)) for t in m.graph.initializer)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    meta = {p.key: p.value for p in m.metadata_props}
    return {"path": str(path), "format": "onnx", "arch": meta.get("arch", "unknown"),
            "inputs": [i.name for i in m.graph.input], "outputs": [o.name for o in m.graph.output],
            "params": params, "ops": ops, "opset": opset(m)}
