"""serve.py: the bundle's serving snippet, a script a serving host runs as it is or copies from.

It finds its files beside itself (any working directory), compiles the shipped image-input IR with the
compile properties the bundle's figures were measured with plus OpenVINO's model cache (``CACHE_DIR``:
a folder next to the bundle unless told otherwise; the second start imports the compiled model instead
of compiling it), decodes and resizes as lcpipe does (cv2 on uint8: lcpipe.data.preprocess.resize_crop)
and prints softmax probabilities with labels, the lines ``lcpipe predict`` prints. It needs openvino,
opencv-python-headless and numpy, not lcpipe.
"""

from __future__ import annotations

from typing import Any

SCRIPT = "serve.py"
CACHE_FOLDER = "openvino_cache"  # beside the bundle folder: lcpipe replaces the bundle, never this


def measured_compile_config(m: dict[str, Any]) -> dict[str, Any] | None:
    """The compile properties the shipped model's figures were measured with: the plan's runtime_config,
    else the LATENCY hint with the float precision validate ran the INT8 IR at (the plugin's default
    differs by CPU: bf16 on AMX / avx512_bf16). None when that precision was not recorded."""
    from lcpipe.render.shipped import shipped_of

    return shipped_of(m).get("runtime_config")


def serving_compile_config(m: dict[str, Any]) -> dict[str, Any]:
    """What serve.py and OVMS compile the shipped model with: the measured properties, else the LATENCY
    hint at the plugin's default precision."""
    from lcpipe.ir import ov_config

    return measured_compile_config(m) or ov_config("LATENCY", None, None)


def resize_code(pre: dict[str, Any], resize_in_graph: bool) -> str:
    """Python lines turning ``img`` (uint8 BGR HWC) into the network's input size, as
    lcpipe.data.preprocess.resize_crop does (same rounding, offsets and interpolation)."""
    if resize_in_graph:
        return "# resize + crop run in the graph: any image size"
    interp = "cv2.INTER_CUBIC" if pre.get("interpolation") == "bicubic" else "cv2.INTER_LINEAR"
    mode, short, c = pre.get("mode"), pre.get("resize_short", 256), pre.get("crop", 224)
    if mode == "resize":
        h, w = pre.get("size") or pre.get("input_hw") or [224, 224]
        return f"img = cv2.resize(img, ({w}, {h}), interpolation={interp})"
    if mode == "timm":  # torchvision Resize(int): short side exact, long side truncated; round() crop offset
        return (f"h, w = img.shape[:2]\ns = {short}\nsize = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)\n"
                f"img = cv2.resize(img, size, interpolation={interp})\n"
                f"c = {c}\nh, w = img.shape[:2]\nt, l = round((h - c) / 2), round((w - c) / 2)\n"
                "img = img[t:t + c, l:l + c]")
    # PaddleClas ResizeImage(resize_short) + CropImage
    return (f"s = {short} / min(img.shape[:2])\n"
            f"img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation={interp})\n"
            f"c = {c}\nh, w = img.shape[:2]\nt, l = (h - c) // 2, (w - c) // 2\nimg = img[t:t + c, l:l + c]")


def serve_script(pre: dict[str, Any], compile_config: dict[str, Any], *, pipeline: str, served: str,
                 resize_in_graph: bool = False, do_not_serve: str | None = None) -> str:
    """The text of serve.py for a bundle whose image-input IR is ``served``."""
    from lcpipe.version import __version__

    resize = "\n".join("    " + line for line in resize_code(pre, resize_in_graph).splitlines())
    return f'''"""Classify images with the lcpipe deploy bundle this file sits in ({pipeline}).

    python serve.py IMAGE [IMAGE ...] [--top-k 5] [--cache-dir DIR | --no-cache]

Runs from any directory: the model and labels are found beside this file. Compiles {served} with the
compile properties the bundle's figures were measured with, and OpenVINO's model cache (CACHE_DIR) in
{CACHE_FOLDER}/ next to the bundle folder unless --cache-dir says otherwise: the first start compiles
and stores the compiled model, later starts import it. Prints softmax probabilities with labels, as
`lcpipe predict` does. Needs: pip install openvino opencv-python-headless numpy (not lcpipe).
Written by lcpipe {__version__}.
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import openvino as ov

HERE = Path(__file__).resolve().parent
MODEL = HERE / {served!r}
LABELS = HERE / "labels.txt"
COMPILE = {compile_config!r}
DO_NOT_SERVE = {do_not_serve!r}


def preprocess(img):
    """uint8 BGR HWC, as cv2 decodes -> the model's input (a batch of one); colour conversion, float
    conversion and mean/std run in the graph."""
{resize}
    return np.ascontiguousarray(img[None])


def probabilities(out):
    """Logits -> softmax (an output that already is a distribution stays)."""
    out = out.astype(np.float64)
    if out.min() >= 0 and abs(out.sum() - 1.0) < 1e-3:
        return out
    e = np.exp(out - out.max())
    return e / e.sum()


def compile_model(cache_dir):
    config = dict(COMPILE)
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    try:
        return ov.Core().compile_model(MODEL, "CPU", config)
    except RuntimeError as exc:
        if cache_dir is None:
            raise
        print(f"serve.py: model cache {{cache_dir}} not usable ({{str(exc).strip().splitlines()[-1]}}); "
              "compiling without it", file=sys.stderr)
        return ov.Core().compile_model(MODEL, "CPU", COMPILE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--cache-dir", type=Path, default=HERE.parent / {CACHE_FOLDER!r},
                    help="OpenVINO model cache [{CACHE_FOLDER}/ next to the bundle folder]")
    ap.add_argument("--no-cache", action="store_true", help="compile without OpenVINO's model cache")
    args = ap.parse_args()
    if DO_NOT_SERVE:
        print(f"serve.py: {{DO_NOT_SERVE}}", file=sys.stderr)
    model = compile_model(None if args.no_cache else args.cache_dir)
    labels = LABELS.read_text(encoding="utf-8").splitlines() if LABELS.is_file() else None
    for path in args.images:
        img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR) if path.is_file() else None
        if img is None:
            sys.exit(f"serve.py: {{path}}: not an image file cv2 can decode")
        probs = probabilities(model(preprocess(img))[0][0])
        print(f"{{path}}:")
        for rank, i in enumerate(np.argsort(-probs, kind="stable")[: args.top_k], 1):
            print(f"  {{rank}}. {{100 * probs[i]:6.2f}}%  {{i:>5}}  {{labels[i] if labels else ''}}".rstrip())


if __name__ == "__main__":
    main()
'''
