"""Resize and crop inside the image-input IR (an option, off by default): the IR then takes the decoded
image at its own size (uint8 NHWC BGR, any height and width) and the serving process does nothing but
decode.

The steps mirror lcpipe.data.preprocess.resize_crop, which runs them in cv2 on uint8: PaddleClas's
resize_short (both sides scaled by short / min(h, w), rounded half to even as Python's round) and centre
crop (offsets floored), or ``resize`` mode's fixed size; bilinear with half-pixel centres, the result
rounded to whole pixel levels as cv2's uint8 resize does. cv2 interpolates uint8 with fixed-point
weights, OpenVINO in float: pixels differ by at most one level (measured: 9-12 % of them, on the shipped
text lines and on ImageNet images at 30 random sizes), so the logits are close, not equal
(lcpipe.measure.e2e.resize_in_graph_fidelity measures how close on real images). timm mode is refused:
its default bicubic differs from cv2's INTER_CUBIC by up to 36 levels near the borders in OpenVINO, and
its truncated long side by up to 14 levels even when bilinear.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lcpipe.deps import require

Step = Callable[[Any], Any]  # a PrePostProcessor custom step: ov.Output (NHWC f32) -> ov node


def resize_crop_step(pre: dict[str, Any]) -> Step:
    """The custom step for a float IR's preprocess dict (lcpipe.data.preprocess_dict's layout)."""
    mode = pre.get("mode", "paddleclas")
    if mode not in ("resize", "paddleclas") or pre.get("interpolation") == "bicubic":
        from lcpipe.errors import ConfigError

        raise ConfigError(f"resize_in_graph: preprocess mode {mode!r} with {pre.get('interpolation')} "
                          "interpolation is not supported (resize and paddleclas modes, bilinear only: the others "
                          "differ from cv2 by many pixel levels in OpenVINO)")
    if mode == "resize":
        h, w = pre.get("size") or pre["input_hw"]
        return lambda image: _interpolate(image, _const([h, w])).output(0)
    short, crop = int(pre["resize_short"]), int(pre["crop"])
    return lambda image: _centre_crop(_resize_short(image, short), crop).output(0)


def _ops() -> Any:
    require("openvino")
    import openvino.opset13 as ops

    return ops


def _const(values: list[int]) -> Any:
    import numpy as np

    return _ops().constant(np.asarray(values, dtype=np.int64))


def _hw(image: Any) -> tuple[Any, Any]:
    """(H, W) of an NHWC image as f32 scalars-in-1D tensors."""
    ops = _ops()
    shape = ops.shape_of(image, "i64")
    hw = ops.convert(ops.gather(shape, _const([1, 2]), _const([0])), "f32")
    return ops.gather(hw, _const([0]), _const([0])), ops.gather(hw, _const([1]), _const([0]))


def _resize_short(image: Any, short: int) -> Any:
    """PaddleClas ResizeImage(resize_short): both sides x short / min side, rounded half to even."""
    import numpy as np

    ops = _ops()
    h, w = _hw(image)
    percent = ops.divide(ops.constant(np.float32(short)), ops.minimum(h, w))
    size = ops.round(ops.concat([ops.multiply(h, percent), ops.multiply(w, percent)], 0), "half_to_even")
    return _interpolate(image, ops.convert(size, "i64"))


def _interpolate(image: Any, size: Any) -> Any:
    """Bilinear resize of H, W (NHWC) to ``size``, half-pixel centres as cv2, rounded to whole pixel levels
    as cv2's uint8 output (bilinear stays within 0..255)."""
    ops = _ops()
    out = ops.interpolate(image, size, "linear", "sizes", coordinate_transformation_mode="half_pixel",
                          axes=_const([1, 2]))
    return ops.round(out, "half_away_from_zero")


def _centre_crop(image: Any, crop: int) -> Any:
    """The centre crop x crop, offsets (size - crop) // 2 (PaddleClas CropImage)."""
    ops = _ops()
    hw = ops.gather(ops.shape_of(image, "i64"), _const([1, 2]), _const([0]))
    start = ops.divide(ops.subtract(hw, _const([crop, crop])), _const([2, 2]))  # i64: floor for sizes >= crop
    return ops.slice(image, start, ops.add(start, _const([crop, crop])), _const([1, 1]), _const([1, 2]))
