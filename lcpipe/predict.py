"""Classify images with an lcpipe IR: preprocessing and labels come from the IR's rt_info, or from
preprocess.json / labels.txt beside it (the deploy bundle)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.errors import InputError


@dataclass
class Prediction:
    image: Path
    top: list[tuple[int, str | None, float]]  # (class index, label or None, probability)


def preprocess_from_dict(d: dict[str, Any]) -> Any:
    """A PreprocessConfig rebuilt from lcpipe.data.preprocess_dict's description."""
    from lcpipe.config import PreprocessConfig

    mode = d.get("mode", "paddleclas")
    kw: dict[str, Any] = {"mode": mode, "mean": tuple(d["mean"]), "std": tuple(d["std"]),
                          "interpolation": d.get("interpolation")}
    if mode == "resize":
        kw["size"] = tuple(d.get("size") or d["input_hw"])
    else:
        kw["crop"] = int(d["crop"])
        if mode == "timm":
            kw["crop_pct"] = float(d["crop_pct"])
        else:
            kw["resize_short"] = int(d["resize_short"])
    return PreprocessConfig(**kw)


def model_metadata(xml: Path, model: Any) -> tuple[dict[str, Any], list[str] | None]:
    """(preprocess dict, labels) from rt_info, falling back to files beside the model."""
    from lcpipe.stages.convert import read_lcpipe_rt_info

    rt = read_lcpipe_rt_info(model)
    pre, labels = rt.get("preprocess"), rt.get("labels")
    side = Path(xml).parent
    if not pre and (side / "preprocess.json").is_file():
        pre = json.loads((side / "preprocess.json").read_text())
    if not labels and (side / "labels.txt").is_file():
        from lcpipe.data import load_label_names

        labels = load_label_names(side / "labels.txt")
    if not pre:
        raise InputError(f"{xml}: no preprocessing in the IR's rt_info and no preprocess.json beside it")
    return pre, labels


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()


def to_probabilities(out: np.ndarray) -> np.ndarray:
    """Logits -> softmax; an output that already is a distribution (exported with softmax) stays."""
    if out.min() >= 0 and abs(float(out.sum()) - 1.0) < 1e-3:
        return out.astype(np.float64)
    return softmax(out)


def predict(xml: str | Path, images: list[str | Path], top_k: int = 5, threads: int | None = None) -> list[Prediction]:
    from lcpipe.deps import require

    xml = Path(xml)
    if not xml.is_file():
        raise InputError(f"{xml}: no such model file")
    ov = require("openvino")
    core = ov.Core()
    model = core.read_model(str(xml))
    pre_dict, labels = model_metadata(xml, model)
    pre = preprocess_from_dict(pre_dict)
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", cfg)
    load = _image_loader(pre_dict, pre)
    out = []
    for image in images:
        x = load(Path(image))
        probs = to_probabilities(compiled(x)[0][0])
        idx = np.argsort(-probs)[: min(top_k, len(probs))]
        out.append(Prediction(Path(image), [(int(i), labels[i] if labels else None, float(probs[i])) for i in idx]))
    return out


def _image_loader(pre_dict: dict[str, Any], pre: Any) -> Any:
    """Path -> the IR's batch-1 input: uint8 BGR crop for an image-input IR, float32 RGB CHW otherwise."""
    from lcpipe.data.preprocess import decode_image_bgr, load_image, resize_crop
    from lcpipe.deploy.image_input import is_image_input

    if is_image_input(pre_dict):
        return lambda p: np.ascontiguousarray(resize_crop(decode_image_bgr(p), pre)[None])
    return lambda p: load_image(p, pre)[None]


def format_predictions(preds: list[Prediction]) -> str:
    lines = []
    for p in preds:
        lines.append(f"{p.image}:")
        for rank, (i, label, prob) in enumerate(p.top, 1):
            lines.append(f"  {rank}. {100 * prob:6.2f}%  {i:>5}  {label or ''}".rstrip())
    return "\n".join(lines)
