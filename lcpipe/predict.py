"""Classify images with an lcpipe IR: preprocessing and labels come from the IR's rt_info, or from
preprocess.json / labels.txt beside it (the deploy bundle). A bundle folder serves its shipped model
(model_image.xml; bundles before the honest names: model_int8_image.xml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.errors import InputError
from lcpipe.measure.accuracy import softmax, top_indices
from lcpipe.records import read_json


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
    from lcpipe.ir import read_lcpipe_rt_info

    rt = read_lcpipe_rt_info(model)
    pre, labels = rt.get("preprocess"), rt.get("labels")
    side = Path(xml).parent
    if not pre and (side / "preprocess.json").is_file():
        pre = read_json(side / "preprocess.json")
    if not labels and (side / "labels.txt").is_file():
        from lcpipe.data import load_label_names

        labels = load_label_names(side / "labels.txt")
    if not pre:
        raise InputError(f"{xml}: no preprocessing in the IR's rt_info and no preprocess.json beside it")
    return pre, labels


def to_probabilities(out: np.ndarray) -> np.ndarray:
    """Logits -> softmax; an output that already is a distribution (exported with softmax) stays."""
    if out.min() >= 0 and abs(float(out.sum()) - 1.0) < 1e-3:
        return out.astype(np.float64)
    return softmax(out.astype(np.float64))


def compile_properties(model: Any, threads: int | None) -> dict[str, Any]:
    """An IR the plan stage chose runs at the float precision it was chosen (and judged) with. Without
    a plan: the plugin's default precision, as before (bf16 on AMX / avx512_bf16 CPUs). validate
    measured those IRs at f32, but predict is the quick check of what a server gets without setting
    anything; the deploy README's serving snippet pins the measured precision instead."""
    from lcpipe.ir import ov_config, planned_precision

    return ov_config("LATENCY", threads, planned_precision(model))


def predict(xml: str | Path, images: list[str | Path], top_k: int = 5, threads: int | None = None) -> list[Prediction]:
    from lcpipe.deps import require

    xml = Path(xml)
    if xml.is_dir():  # a deploy bundle: its served model, in either file layout
        from lcpipe.deploy.bundle import bundle_model

        xml = bundle_model(xml)
    if not xml.is_file():
        raise InputError(f"{xml}: no such model file")
    ov = require("openvino")
    core = ov.Core()
    model = core.read_model(str(xml))
    pre_dict, labels = model_metadata(xml, model)
    pre = preprocess_from_dict(pre_dict)
    compiled = core.compile_model(model, "CPU", compile_properties(model, threads))
    load = image_loader(pre_dict, pre)
    out = []
    for image in images:
        x = load(Path(image))
        probs = to_probabilities(compiled(x)[0][0])
        idx = top_indices(probs, top_k)
        out.append(Prediction(Path(image), [(int(i), labels[i] if labels else None, float(probs[i])) for i in idx]))
    return out


def image_loader(pre_dict: dict[str, Any], pre: Any) -> Any:
    """Path -> the IR's batch-1 input: uint8 BGR crop for an image-input IR, float32 RGB CHW otherwise."""
    from lcpipe.data.preprocess import decode_image_bgr, load_image
    from lcpipe.deploy.image_input import is_image_input
    from lcpipe.measure.e2e import image_prep, whole_image_prep

    if is_image_input(pre_dict):
        prep = whole_image_prep() if pre_dict.get("resize_in_graph") else image_prep(pre)
        return lambda p: prep(decode_image_bgr(p))
    return lambda p: load_image(p, pre)[None]


def format_predictions(preds: list[Prediction]) -> str:
    lines = []
    for p in preds:
        lines.append(f"{p.image}:")
        for rank, (i, label, prob) in enumerate(p.top, 1):
            lines.append(f"  {rank}. {100 * prob:6.2f}%  {i:>5}  {label or ''}".rstrip())
    return "\n".join(lines)
