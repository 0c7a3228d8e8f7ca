"""Lazy imports of heavy packages, with an error that names the pip extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from lcpipe.errors import MissingDependencyError

# module -> (pip requirement, extra that brings it)
_EXTRAS: dict[str, tuple[str, str | None]] = {
    "torch": ("torch", "torch"),
    "timm": ("timm", "torch"),
    "safetensors": ("safetensors", None),
    "paddle": ("paddlepaddle", None),
    "paddle2onnx": ("paddle2onnx", None),
    "openvino": ("openvino", None),
    "nncf": ("nncf", None),
    "onnx": ("onnx", None),
    "onnxruntime": ("onnxruntime", None),
    "cv2": ("opencv-python-headless", None),
    "paddleclas": ("paddleclas", None),
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError telling how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        req, extra = _EXTRAS.get(top, (top, None))
        how = f"pip install 'lcpipe[{extra}]'" if extra else f"pip install {req}"
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(f"package '{top}' is not installed{why}: {how} ({exc})") from exc
