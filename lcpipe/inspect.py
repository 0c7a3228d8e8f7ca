"""`lcpipe inspect`: what a weights file, model or OpenVINO IR is, without running a pipeline.

The architecture is detected by the code the import stage runs (checkpoint key maps, the
paddle2onnx graph of a Paddle inference model, the ONNX graph rebuild); an IR names the spec
lcpipe's export left in its rt_info.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcpipe.errors import InputError


def guess_format(path: Path) -> str:
    """The source format a file's name says (an OpenVINO IR is ``openvino``, and so is a deploy bundle
    folder: its served model); "" when it does not tell."""
    if path.is_dir() and not any(path.glob("*.pdiparams")) and any(path.glob("*.xml")):
        return "openvino"
    if path.is_dir() or path.name.endswith((".json", ".pdmodel", ".pdiparams")):
        return "paddle_inference"
    suffix = path.suffix.lower()
    return {".pdparams": "pdparams", ".pth": "torch", ".pt": "torch", ".bin": "torch",
            ".safetensors": "safetensors", ".onnx": "onnx", ".xml": "openvino"}.get(suffix, "")


DEFAULT_HW = (224, 224)


def inspect_path(path: Path, fmt: str = "auto", arch: str = "auto",
                 input_hw: tuple[int, int] | None = None) -> dict[str, Any]:
    """FLOPs are counted at ``input_hw`` when given, else at the input size a Paddle inference
    model's ``inference.yml`` declares (its resize or crop), else at 224x224."""
    fmt = guess_format(path) if fmt == "auto" else fmt
    if not fmt:
        raise InputError(f"{path}: cannot tell the format from the name; pass --format")
    if fmt == "openvino":
        return inspect_ir(path)
    if fmt == "onnx":
        return _inspect_onnx(path, arch, input_hw)
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
    return {"path": str(path), "format": fmt, **_model_facts(model, *_input_hw(input_hw, declared))}


def _input_hw(given: tuple[int, int] | None,
              declared: tuple[tuple[int, int], str] | None) -> tuple[tuple[int, int], str]:
    if given is not None:
        return given, "--input-size"
    return declared if declared is not None else (DEFAULT_HW, "default")


def _model_facts(model: Any, hw: tuple[int, int], hw_from: str) -> dict[str, Any]:
    """What the canonical model's spec says, with params and FLOPs at ``hw``."""
    from lcpipe.models.layers import count_params_flops

    spec = model.spec
    params, macs = count_params_flops(spec, hw)
    return {
        "arch": spec.arch, "family": spec.family, "scale": spec.scale,
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


def _inspect_onnx(path: Path, arch: str, input_hw: tuple[int, int] | None) -> dict[str, Any]:
    """The graph's inputs, outputs, ops and opset; its architecture as the import stage detects it
    (lcpipe.importers.onnx_rebuild: a timm or paddle2onnx export of a PP-LCNet is rebuilt, anything
    else would be adopted as is)."""
    import numpy as np

    from lcpipe.importers.onnx_read import load_onnx, opset
    from lcpipe.importers.onnx_rebuild import canonical_from_onnx

    m = load_onnx(path)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    model, info = canonical_from_onnx(m, arch=arch)
    out: dict[str, Any] = {"path": str(path), "format": "onnx"}
    if model is None:
        out.update(arch="unknown", pp_lcnet=False, note=info.get("adopted_reason", ""))
    else:
        declared = _onnx_input_hw(m)
        out.update(_model_facts(model, *_input_hw(input_hw, declared)))
    out.update(inputs=[i.name for i in m.graph.input], outputs=[o.name for o in m.graph.output],
               params=sum(int(np.prod(t.dims)) for t in m.graph.initializer), ops=ops, opset=opset(m))
    return out


def _onnx_input_hw(m: Any) -> tuple[tuple[int, int], str] | None:
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] if m.graph.input else []
    if len(dims) == 4 and all(d > 0 for d in dims[2:]):
        return (dims[2], dims[3]), "model input shape"
    return None


def inspect_ir(xml: Path) -> dict[str, Any]:
    """An OpenVINO IR (or a deploy bundle's served model): inputs and outputs (name, shape, element
    type, layout), its precision and how many convs/matmuls run INT8 (lcpipe.quantization.graph),
    lcpipe's rt_info (labels, preprocessing, plan, quantization provenance) and the architecture its
    export recorded."""
    from lcpipe.ir import framework_spec, read_lcpipe_rt_info, read_user_ir
    from lcpipe.quantization.graph import count_quantization

    if xml.is_dir():  # a deploy bundle: the model it serves
        from lcpipe.deploy.bundle import bundle_model

        xml = bundle_model(xml)
    if not xml.is_file():
        raise InputError(f"{xml}: no such IR file")
    model = read_user_ir(xml)
    rt = read_lcpipe_rt_info(model)
    pre = rt.get("preprocess") if isinstance(rt.get("preprocess"), dict) else {}
    counts = count_quantization(model)
    spec = framework_spec(model) or {}
    plan = rt.get("plan") if isinstance(rt.get("plan"), dict) else None
    return {
        "path": str(xml), "format": "openvino",
        "arch": spec.get("arch", "unknown"), "arch_from": "rt_info (lcpipe export)" if spec else
        "not recorded (not an lcpipe IR)",
        "inputs": [_port(p, pre.get("layout") if len(model.inputs) == 1 else None) for p in model.inputs],
        "outputs": [_port(p) for p in model.outputs],
        "precision": rt.get("precision") or ("int8" if counts["fake_quantize"] else "float"),
        "weight_types": _weight_types(model),
        "int8_ops": counts,
        "labels": rt.get("labels"), "preprocess": pre or None,
        "plan": {k: plan.get(k) for k in ("name", "description", "inference_precision") if k in plan} if plan else None,
        "quantization": rt.get("quantization"), "pipeline": rt.get("pipeline"),
        "spec": spec or None,
    }


def _weight_types(model: Any) -> list[str]:
    """Element types of the IR's weight tensors (constants of rank 2 or more: f32, f16, i8, ...)."""
    return sorted({op.get_element_type().get_type_name() for op in model.get_ordered_ops()
                   if op.get_type_name() == "Constant" and len(op.get_output_partial_shape(0)) >= 2})


def _port(port: Any, declared_layout: str | None = None) -> dict[str, Any]:
    """Name, shape, element type and layout of an input or output (the layout the IR sets, else the one
    lcpipe's preprocessing declares for the model's only input)."""
    layout = None
    node = port.get_node()
    if hasattr(node, "get_layout") and not node.get_layout().empty:
        layout = node.get_layout().to_string().replace("[", "").replace("]", "").replace(",", "")
    return {"name": port.get_any_name(), "shape": str(port.get_partial_shape()),
            "element_type": port.get_element_type().get_type_name(), "layout": layout or declared_layout}
