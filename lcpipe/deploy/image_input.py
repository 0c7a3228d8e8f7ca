"""Image-input IR: the float-input IR wrapped so it takes what cv2 decodes (uint8 NHWC, BGR).

Color conversion, the float conversion and mean/std move into the graph (OpenVINO
PrePostProcessor); resize and crop stay in cv2 on uint8 (lcpipe.data.preprocess.resize_crop,
PaddleClas-exact). That drops the Python float32 normalize/transpose, which costs more than the
resize itself, from every request. The float-input IR stays the reference: validate compares both.

``resize_in_graph`` (off by default) moves resize and crop into the graph too
(lcpipe.deploy.resize_in_graph): the IR takes the decoded image at any size. Close to cv2, not
bit-exact (cv2 resizes uint8 in fixed point).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcpipe.deps import require
from lcpipe.ir import read_ir, read_lcpipe_rt_info, save_ir, set_embedded_preprocessing

# What the graph does to its input, in order; recorded in rt_info and preprocess.json.
IN_GRAPH_STEPS = ["convert_element_type(f32)", "convert_color(BGR->RGB)", "mean(255*mean)", "scale(255*std)"]


RESIZE_STEP = "resize + crop (as lcpipe.data.preprocess.resize_crop, in float, rounded to pixel levels)"


def image_input_preprocess(pre: dict[str, Any], resize_in_graph: bool = False) -> dict[str, Any]:
    """The float IR's preprocess description turned into the image-input IR's."""
    if resize_in_graph:
        steps = [*IN_GRAPH_STEPS[:2], RESIZE_STEP, *IN_GRAPH_STEPS[2:]]
        return {**pre, "image_input": True, "color": "BGR", "layout": "NHWC", "dtype": "uint8", "in_graph": steps,
                "resize_in_graph": True, "outside_graph": "decode (cv2); any image size"}
    return {**pre, "image_input": True, "color": "BGR", "layout": "NHWC", "dtype": "uint8",
            "in_graph": IN_GRAPH_STEPS, "outside_graph": "decode (cv2), resize + crop on uint8"}


def is_image_input(pre: dict[str, Any] | None) -> bool:
    return bool(pre and pre.get("image_input"))


def build_image_input_model(model: Any, pre: dict[str, Any], *, resize_in_graph: bool = False) -> Any:
    """An ov.Model (float NCHW RGB input) -> a new ov.Model taking uint8 NHWC BGR: of the network's input
    size, or with ``resize_in_graph`` of any size (resize + crop in the graph).

    ``pre`` is the float IR's preprocess dict (mean/std in 0..1, as PaddleClas NormalizeImage)."""
    ov = require("openvino")
    from openvino.preprocess import ColorFormat, PrePostProcessor

    model = model.clone()
    ppp = PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    if resize_in_graph:
        inp.tensor().set_spatial_dynamic_shape()
    inp.model().set_layout(ov.Layout("NCHW"))
    steps = inp.preprocess()
    steps.convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB)
    if resize_in_graph:
        from lcpipe.deploy.resize_in_graph import resize_crop_step

        steps.custom(resize_crop_step(pre))
    steps.mean([255.0 * m for m in pre["mean"]]).scale([255.0 * s for s in pre["std"]])
    out = ppp.build()
    set_embedded_preprocessing(out, image_input_preprocess(pre, resize_in_graph))
    return out


def read_image_input_model(xml: Path, *, resize_in_graph: bool = False) -> tuple[Any, dict[str, Any]]:
    """Read a float-input lcpipe IR and wrap it; returns (model, its preprocess dict)."""
    from lcpipe.errors import InputError

    model = read_ir(xml)
    pre = read_lcpipe_rt_info(model).get("preprocess")
    if not pre:
        raise InputError(f"{xml}: no lcpipe preprocessing in rt_info; cannot build an image-input IR")
    if is_image_input(pre):
        return model, pre
    wrapped = build_image_input_model(model, pre, resize_in_graph=resize_in_graph)
    return wrapped, image_input_preprocess(pre, resize_in_graph)


def write_image_input_ir(src_xml: Path, dst_xml: Path, *, resize_in_graph: bool = False) -> Path:
    """Save the image-input variant of ``src_xml`` at ``dst_xml`` (.xml + .bin, weights as they are)."""
    model, _ = read_image_input_model(src_xml, resize_in_graph=resize_in_graph)
    return save_ir(model, Path(dst_xml))
