"""Image -> network input (float32 CHW), matching the reference pipelines bit for bit where we can.

paddleclas: PaddleClas eval ops DecodeImage(to_rgb) -> ResizeImage(resize_short) -> CropImage(crop)
            -> NormalizeImage(order='') -> ToCHWImage.
timm:       timm's eval transform (resize short side to floor(crop / crop_pct), center crop).
resize:     PaddleClas/PaddleX ResizeImage(size=[w, h]) -> NormalizeImage -> ToCHWImage (PULC models).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from lcpipe.deps import require
from lcpipe.errors import ConfigError, InputError

if TYPE_CHECKING:
    from lcpipe.config import PreprocessConfig

# PaddleClas NormalizeImage keeps the scale as float32 and computes (x * scale - mean) / std.
_SCALE = np.float32(1.0 / 255.0)
ROTATIONS = (0, 90, 180, 270)
# Largest image lcpipe decodes or resizes to: 8192 x 8192 (a 48 MP photo fits; decoded, 192 MiB of
# RGB). Checked on the file's header before decoding, so a PNG declaring 60000 x 60000 costs nothing.
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_IMAGE_FILE_BYTES = 256 << 20


def _cv2() -> ModuleType:
    return require("cv2", "image decoding and resizing")


def _interp(name: str) -> int:
    cv2 = _cv2()
    return {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[name]


def load_image(path: str | Path, cfg: PreprocessConfig, rotate: int = 0) -> np.ndarray:
    """Decode ``path`` and preprocess it per ``cfg``; ``rotate`` degrees counter-clockwise first."""
    img = decode_image(path)
    img = rotate_image(img, rotate)
    check_resizable(img, cfg, str(path))
    return preprocess_array(img, cfg)


def decode_image(path: str | Path) -> np.ndarray:
    """RGB uint8 HWC. cv2 first (same call as PaddleClas DecodeImage), PIL as a fallback."""
    img, bgr = _decode(Path(path))
    return np.ascontiguousarray(img[:, :, ::-1]) if bgr else img


def decode_image_bgr(path: str | Path) -> np.ndarray:
    """BGR uint8 HWC, what cv2.imread gives a server and what the image-input IR takes (no RGB round
    trip: e2e times this call as the server's decode)."""
    img, bgr = _decode(Path(path))
    return img if bgr else np.ascontiguousarray(img[:, :, ::-1])


def _decode(path: Path) -> tuple[np.ndarray, bool]:
    """(uint8 HWC image, True if BGR from cv2 / False if RGB from PIL); InputError on a bad file."""
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_FILE_BYTES:
            raise InputError(f"{path}: image file of {size:,} bytes is larger than the {MAX_IMAGE_FILE_BYTES:,} "
                             "lcpipe reads")
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read image file: {exc.strerror or exc}") from None
    if data.size == 0:
        raise InputError(f"{path}: image file is empty")
    check_header_pixels(path)
    # imdecode on the bytes (not imread) = PaddleClas DecodeImage, and works for non-ASCII paths.
    cv2 = _cv2()
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:  # an image cv2 refuses outright (e.g. over its own size limit): let PIL say why
        bgr = None
    if bgr is not None and bgr.ndim == 3 and bgr.shape[2] == 3:
        return bgr, True
    return _decode_with_pil(path), False


def check_header_pixels(path: Path) -> None:
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS, before anything decodes it
    (PIL reads only the header here). A header PIL cannot read is left to the decoders."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:  # PIL's own, larger limit: certainly over ours
        m = re.search(r"\((\d+) pixels\)", str(exc))
        w, h = (int(m[1]), 1) if m else (MAX_IMAGE_PIXELS + 1, 1)
        size = f"{w:,} pixels"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return
    else:
        size = f"{w}x{h} = {w * h:,} pixels"
    if w * h > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: image header declares {size}, more than the {MAX_IMAGE_PIXELS:,} "
                         "(8192 x 8192) lcpipe decodes")


def _decode_with_pil(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # cv2 applies EXIF orientation too
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable image (corrupt or unsupported format: {exc})") from None


def rotate_image(img: np.ndarray, rotate: int) -> np.ndarray:
    """Rotate counter-clockwise by a multiple of 90 degrees (np.rot90 turns CCW on HWC arrays)."""
    if rotate not in ROTATIONS:
        raise ValueError(f"rotate must be one of {ROTATIONS}, got {rotate!r}")
    if rotate == 0:
        return img
    return np.ascontiguousarray(np.rot90(img, k=rotate // 90))


def preprocess_array(img: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """RGB uint8 HWC -> float32 CHW per ``cfg``."""
    return _normalize_chw(resize_crop(img, cfg), cfg.mean, cfg.std)


def resize_crop(img: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """uint8 HWC -> uint8 HWC of the network's input size (resize + crop per ``cfg``, no normalization).

    Channel order is kept, so it serves both the float path (RGB in) and the image-input IR (BGR in,
    as cv2 decodes): cv2 resizes each channel independently, the result is the same per channel."""
    interp = _interp(cfg.resolved_interpolation)
    if cfg.mode == "paddleclas":
        _check_crop(cfg.resize_short, cfg.crop, "resize_short")
        img = _resize_short(img, cfg.resize_short, interp, _paddleclas_size)
        return _center_crop(img, cfg.crop, _floor_offset)
    if cfg.mode == "timm":
        # timm resizes with PIL bicubic (antialiased); cv2 INTER_CUBIC is close but not identical.
        img = _resize_short(img, timm_scale_size(cfg), interp, _torchvision_size)
        return _center_crop(img, cfg.crop, _round_offset)
    h, w = cfg.input_hw
    return _cv2().resize(img, (w, h), interpolation=interp)


def timm_scale_size(cfg: PreprocessConfig) -> int:
    return math.floor(cfg.crop / cfg.crop_pct)


def _check_crop(short: int, crop: int, key: str) -> None:
    if short < crop:
        raise ConfigError(f"preprocess.{key} ({short}) must be >= preprocess.crop ({crop})")


def _paddleclas_size(w: int, h: int, short: int) -> tuple[int, int]:
    # PaddleClas ResizeImage(resize_short): both sides scaled and rounded (Python round).
    percent = float(short) / min(w, h)
    return round(w * percent), round(h * percent)


def _torchvision_size(w: int, h: int, short: int) -> tuple[int, int]:
    # torchvision Resize(int): short side = short, long side truncated.
    if w <= h:
        return short, int(short * h / w)
    return int(short * w / h), short


def check_resizable(img: np.ndarray, cfg: PreprocessConfig, where: str = "image") -> None:
    """A very long, thin image (1 x 60000) resized to a 256 px short side would become billions of
    pixels: InputError naming ``where`` instead."""
    if cfg.mode == "paddleclas":
        _resized(img, cfg.resize_short, _paddleclas_size, where)
    elif cfg.mode == "timm":
        _resized(img, timm_scale_size(cfg), _torchvision_size, where)


def _resized(img: np.ndarray, short: int, size_fn: Any, where: str) -> tuple[int, int]:
    h, w = img.shape[:2]
    new_w, new_h = size_fn(w, h, short)
    if new_w * new_h > MAX_IMAGE_PIXELS or min(new_w, new_h) < 1:
        raise InputError(f"{where}: a {w}x{h} image with its short side resized to {short} px would be "
                         f"{new_w}x{new_h}; lcpipe resizes to at most {MAX_IMAGE_PIXELS:,} pixels")
    return new_w, new_h


def _resize_short(img: np.ndarray, short: int, interp: int, size_fn: Any) -> np.ndarray:
    new_w, new_h = _resized(img, short, size_fn, "image")
    return _cv2().resize(img, (new_w, new_h), interpolation=interp)


def _floor_offset(extra: int) -> int:
    return extra // 2  # PaddleClas CropImage


def _round_offset(extra: int) -> int:
    return round(extra / 2.0)  # torchvision center_crop


def _center_crop(img: np.ndarray, size: int, offset_fn: Any) -> np.ndarray:
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ConfigError(f"preprocess: image resized to {w}x{h} is smaller than crop {size}")
    top, left = offset_fn(h - size), offset_fn(w - size)
    return img[top : top + size, left : left + size, :]


def _normalize_chw(img: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    # Same op order and dtypes as PaddleClas NormalizeImage(order='') so results match exactly.
    m = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    s = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
    out = (img.astype(np.float32) * _SCALE - m) / s
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess_dict(cfg: PreprocessConfig) -> dict[str, Any]:
    """JSON-able description for ONNX metadata, OpenVINO rt_info and the deploy bundle."""
    h, w = cfg.input_hw
    d: dict[str, Any] = {
        "mode": cfg.mode,
        "color": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
        "input_hw": [h, w],
        "interpolation": cfg.resolved_interpolation,
        "scale": 1.0 / 255.0,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
    }
    if cfg.mode == "paddleclas":
        d.update(resize_short=cfg.resize_short, resize_rounding="round", crop=cfg.crop,
                 crop_offset="floor((W-crop)/2)")
    elif cfg.mode == "timm":
        d.update(resize_short=timm_scale_size(cfg), resize_rounding="truncate", crop=cfg.crop,
                 crop_pct=cfg.crop_pct, crop_offset="round((W-crop)/2)")
    else:
        d.update(size=[h, w])
    return d
