"""Classify images with an lcpipe IR: preprocessing and labels come from the IR's rt_info, or from
preprocess.json / labels.txt beside it (the deploy bundle). A bundle folder serves its shipped model
(model_image.xml; bundles before the honest names: model_int8_image.xml)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.errors import InputError, clip
from lcpipe.measure.accuracy import softmax, top_indices


@dataclass
class Prediction:
    image: Path
    top: list[tuple[int, str | None, float]]  # (class index, label or None, probability)


def preprocess_from_dict(d: dict[str, Any], where: str = "preprocess") -> Any:
    """A PreprocessConfig rebuilt from lcpipe.data.preprocess_dict's description; InputError naming
    ``where`` when the description is not one (a hand-edited preprocess.json, a foreign rt_info)."""
    from pydantic import ValidationError

    from lcpipe.config import PreprocessConfig

    try:
        mode = d.get("mode", "paddleclas")
        kw: dict[str, Any] = {"mode": mode, "mean": tuple(d["mean"]), "std": tuple(d["std"]),
                              "interpolation": d.get("interpolation")}
        if mode == "resize":
            kw["size"] = tuple(d.get("size") or d["input_hw"])
        else:
            kw["crop"] = d["crop"]
            if mode == "timm":
                kw["crop_pct"] = d["crop_pct"]
            else:
                kw["resize_short"] = d["resize_short"]
        return PreprocessConfig(**kw)
    except (KeyError, TypeError, AttributeError, ValueError, ValidationError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise InputError(f"{where}: not an lcpipe preprocessing description ({clip(detail, 200)})") from None


def model_metadata(xml: Path, model: Any) -> tuple[dict[str, Any], list[str] | None, str]:
    """(preprocess dict, labels, where the preprocessing came from) from rt_info, falling back to
    files beside the model."""
    from lcpipe.ir import read_lcpipe_rt_info

    try:
        rt = read_lcpipe_rt_info(model)
    except (ValueError, TypeError) as exc:  # rt_info values that are not lcpipe's JSON
        raise InputError(f"{xml}: unreadable lcpipe rt_info ({clip(str(exc), 200)})") from None
    pre, labels, where = rt.get("preprocess"), rt.get("labels"), f"{xml} (rt_info)"
    side = Path(xml).parent
    if not pre and (side / "preprocess.json").is_file():
        pre, where = _read_preprocess_json(side / "preprocess.json"), str(side / "preprocess.json")
    if not labels and (side / "labels.txt").is_file():
        from lcpipe.data import load_label_names

        labels = load_label_names(side / "labels.txt")
    if not pre:
        raise InputError(f"{xml}: no preprocessing in the IR's rt_info and no preprocess.json beside it")
    if not isinstance(pre, dict):
        raise InputError(f"{where}: preprocessing is {type(pre).__name__}, not a mapping")
    if labels is not None and not isinstance(labels, list):
        raise InputError(f"{xml}: rt_info labels are {type(labels).__name__}, not a list of names")
    return pre, labels, where


def _read_preprocess_json(path: Path) -> Any:
    from lcpipe.data.dataset import MAX_LIST_BYTES
    from lcpipe.fileio import read_text

    try:
        return json.loads(read_text(path, "preprocess.json", MAX_LIST_BYTES, InputError))
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({clip(str(exc), 200)})") from None


def to_probabilities(out: np.ndarray) -> np.ndarray:
    """Logits -> softmax; an output that already is a distribution (exported with softmax) stays."""
    if out.min() >= 0 and abs(float(out.sum()) - 1.0) < 1e-3:
        return out.astype(np.float64)
    return softmax(out.astype(np.float64))


def compile_properties(model: Any, threads: int | None, cache_dir: Path | None = None) -> dict[str, Any]:
    """An IR the plan stage chose runs at the float precision it was chosen (and judged) with. Without
    a plan: the plugin's default precision, as before (bf16 on AMX / avx512_bf16 CPUs). validate
    measured those IRs at f32, but predict is the quick check of what a server gets without setting
    anything; the deploy bundle's serve.py pins the measured precision instead. ``cache_dir``: OpenVINO's
    model cache (off unless given)."""
    from lcpipe.ir import ov_config, planned_precision

    return ov_config("LATENCY", threads, planned_precision(model), cache_dir=cache_dir)


@dataclass
class Timing:
    """Where the time to a first answer goes (ms): reading the IR, compiling it (or importing it from
    OpenVINO's model cache) and the first inference (first image, decode and resize excluded)."""

    read_ms: float
    compile_ms: float
    first_inference_ms: float
    cache_dir: str | None  # OpenVINO's model cache given (--cache-dir), None: none
    loaded_from_cache: bool  # the compiled model came from that cache (OpenVINO's LOADED_FROM_CACHE)

    def as_dict(self) -> dict[str, Any]:
        return {"read_ms": self.read_ms, "compile_ms": self.compile_ms, "first_inference_ms": self.first_inference_ms,
                "model_cache": {"dir": self.cache_dir, "loaded_from_cache": self.loaded_from_cache}}


def predict(xml: str | Path, images: list[str | Path], top_k: int = 5, threads: int | None = None,
            cache_dir: str | Path | None = None) -> list[Prediction]:
    return predict_timed(xml, images, top_k, threads, cache_dir)[0]


def predict_timed(xml: str | Path, images: list[str | Path], top_k: int = 5, threads: int | None = None,
                  cache_dir: str | Path | None = None) -> tuple[list[Prediction], Timing]:
    """Top-k of each image, and how long reading, compiling and the first inference took."""
    from lcpipe.deps import require
    from lcpipe.ir import ov_error_line, read_user_ir

    xml = Path(xml)
    if xml.is_dir():  # a deploy bundle: its served model, in either file layout
        from lcpipe.deploy.bundle import bundle_model

        xml = bundle_model(xml)
    if not xml.is_file():
        raise InputError(f"{xml}: no such model file")
    cache = _cache_folder(Path(cache_dir)) if cache_dir is not None else None
    ov = require("openvino")
    core = ov.Core()
    t0 = time.perf_counter()
    model = read_user_ir(xml, core)
    t1 = time.perf_counter()
    pre_dict, labels, where = model_metadata(xml, model)
    pre = preprocess_from_dict(pre_dict, where)
    t2 = time.perf_counter()
    try:
        compiled = core.compile_model(model, "CPU", compile_properties(model, threads, cache))
    except RuntimeError as exc:
        raise InputError(f"{xml}: OpenVINO cannot compile this IR ({ov_error_line(exc)})") from None
    t3 = time.perf_counter()
    classes = _classes(compiled, xml)
    if labels is not None and len(labels) != classes:
        raise InputError(f"{xml}: {len(labels)} label names (rt_info or labels.txt beside it) for a model with "
                         f"{classes} classes")
    load = image_loader(pre_dict, pre)
    out, first_ms = [], 0.0
    for image in images:
        x = load(Path(image))
        t4 = time.perf_counter()
        logits = compiled(x)[0][0]
        if not out:
            first_ms = (time.perf_counter() - t4) * 1e3
        if not np.isfinite(logits).all():
            raise InputError(f"{xml}: the model's outputs for {image} are not finite (NaN or infinity)")
        probs = to_probabilities(logits)
        idx = top_indices(probs, top_k)
        out.append(Prediction(Path(image), [(int(i), labels[i] if labels else None, float(probs[i])) for i in idx]))
    timing = Timing(read_ms=round((t1 - t0) * 1e3, 3), compile_ms=round((t3 - t2) * 1e3, 3),
                    first_inference_ms=round(first_ms, 3), cache_dir=str(cache) if cache else None,
                    loaded_from_cache=_loaded_from_cache(compiled))
    return out, timing


def _cache_folder(path: Path) -> Path:
    """--cache-dir: a folder (made when missing) OpenVINO may write its compiled models into."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--cache-dir {path}: not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--cache-dir {path}: cannot create the folder: {exc.strerror or exc}") from None
    return path


def _loaded_from_cache(compiled: Any) -> bool:
    try:
        return bool(compiled.get_property("LOADED_FROM_CACHE"))
    except RuntimeError:  # a plugin without the property
        return False


def _classes(compiled: Any, xml: Path) -> int:
    from lcpipe.measure.runtime import output_classes

    shape = compiled.outputs[0].get_partial_shape()
    classes = output_classes(compiled)
    if classes is None or len(shape) != 2 or classes < 2:
        raise InputError(f"{xml}: output {shape} is not a classifier's [batch, classes]")
    return classes


def image_loader(pre_dict: dict[str, Any], pre: Any) -> Any:
    """Path -> the IR's batch-1 input: uint8 BGR crop for an image-input IR, float32 RGB CHW otherwise."""
    from lcpipe.data.preprocess import check_resizable, decode_image_bgr, load_image
    from lcpipe.deploy.image_input import is_image_input
    from lcpipe.measure.e2e import image_prep, whole_image_prep

    if is_image_input(pre_dict):
        # resize in the graph does the same resize_short as cv2: the same bound on where it would lead
        prep = whole_image_prep() if pre_dict.get("resize_in_graph") else image_prep(pre)

        def load_bgr(p: Path) -> np.ndarray:
            img = decode_image_bgr(p)
            check_resizable(img, pre, str(p))
            return prep(img)
        return load_bgr
    return lambda p: load_image(p, pre)[None]


def format_predictions(preds: list[Prediction]) -> str:
    lines = []
    for p in preds:
        lines.append(f"{p.image}:")
        for rank, (i, label, prob) in enumerate(p.top, 1):
            lines.append(f"  {rank}. {100 * prob:6.2f}%  {i:>5}  {label or ''}".rstrip())
    return "\n".join(lines)
