"""`lcpipe quantize MODEL --calib DIR [--eval DIR --labels FILE] --out DIR`: a pipeline from flags.

The one-liner writes no pipeline of its own kind: it builds the YAML a user would have written
(the stages and defaults of the shipped pipelines), runs it like `lcpipe run`, and leaves it as
``<out>/pipeline.yaml`` so the run can be repeated or edited (``lcpipe run <out>/pipeline.yaml
--out <out>`` finds every stage in the cache).

- format: from the file name, as `lcpipe inspect` tells it (``--format`` to say it).
- arch: ``auto``, detected by the import stage; an ONNX graph that is no PP-LCNet lcpipe can rebuild
  is adopted as is, so the pipeline has no fuse stage.
- preprocessing: a Paddle inference model's ``inference.yml``; lcpipe's own ONNX metadata; timm's
  evaluation transform for torch / safetensors weights; PaddleClas's (resize 256, crop 224) otherwise.
- stages: import, fuse, export (opset 17), convert (static batch 1), quantize (300 calibration images,
  preset by activation); with evaluation images also plan, validate, report and deploy.
- gates: ``min_agreement: 0.9`` (label-free, INT8 and FP32 top-1 agree); more with ``--set gates.*``.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lcpipe.errors import InputError

log = logging.getLogger("lcpipe")

DEFAULT_GATES: dict[str, Any] = {"min_agreement": 0.9}
BUILD = [{"import": {}}, {"fuse": {}}, {"export": {"opset": 17}}, {"convert": {"batch": 1}},
         {"quantize": {"subset_size": 300}}]
VERDICT = [{"plan": {}}, {"validate": {}}, {"report": {}}, {"deploy": {}}]
TIMM_EVAL = {"mode": "timm", "crop": 224, "crop_pct": 0.875}  # timm's lcnet default_cfg


def quantize_pipeline(model: str | Path, calib: str | Path, *, eval_images: str | Path | None = None,
                      labels: str | Path | None = None, fmt: str = "auto", name: str | None = None) -> dict[str, Any]:
    """The pipeline the one-liner runs, as YAML data with absolute paths."""
    from lcpipe.inspect import guess_format

    model = Path(model).expanduser().resolve()
    if not model.exists():
        raise InputError(f"{model}: no such model file or folder")
    fmt = guess_format(model) if fmt == "auto" else fmt
    if not fmt or fmt == "openvino":
        raise InputError(f"{model}: cannot tell the model format from the name (pdparams, torch, safetensors, "
                         "paddle_inference or onnx); pass --format")
    if labels and not eval_images:
        raise InputError("--labels names the evaluation images' classes: give --eval DIR too")
    pre, pre_from = default_preprocess(model, fmt)
    log.info("quantize: %s model, preprocessing %s", fmt, pre_from)
    data: dict[str, Any] = {"calib": {"images": _abs(calib)}}
    if eval_images:
        data["eval"] = {"images": _abs(eval_images), **({"labels": _abs(labels)} if labels else {})}
    stages = [s for s in BUILD if "fuse" not in s or _rebuildable(model, fmt)]
    return {"name": name or run_name(model), "model": {"source": {"format": fmt, "path": str(model)}, "arch": "auto"},
            "preprocess": pre, "data": data, "gates": dict(DEFAULT_GATES) if eval_images else {},
            "runtime": {"threads": None}, "stages": [*stages, *(VERDICT if eval_images else [])]}


def _abs(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def run_name(model: Path) -> str:
    """A pipeline name (it names runs/<name>/) from the model's name: plain characters only."""
    stem = model.name if model.is_dir() else model.stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).lstrip(".-").replace("..", "_")[:120]
    return f"{name or 'model'}_int8"


def default_preprocess(model: Path, fmt: str) -> tuple[dict[str, Any], str]:
    """(preprocess section, where it came from) for a model in format ``fmt``."""
    if fmt == "paddle_inference":
        from lcpipe.importers.paddle_inference import locate_inference_files, read_inference_yml

        files = locate_inference_files(model)
        if files.yml is not None:
            pre = read_inference_yml(files.yml).get("preprocess")
            if pre:
                return dict(pre), f"from {files.yml}"
    if fmt == "onnx":
        pre = _onnx_preprocess(model)
        if pre is not None:
            return pre, "from the ONNX file's lcpipe metadata"
    if fmt in ("torch", "safetensors"):
        return dict(TIMM_EVAL), "timm's evaluation transform (resize 256 bicubic, crop 224)"
    return {"mode": "paddleclas", "resize_short": 256, "crop": 224}, \
        "PaddleClas's evaluation transform (resize 256, crop 224); set preprocess.* if the model was trained otherwise"


def _onnx_preprocess(model: Path) -> dict[str, Any] | None:
    import json

    from lcpipe.importers.onnx_read import load_onnx
    from lcpipe.predict import preprocess_from_dict

    meta = {p.key: p.value for p in load_onnx(model).metadata_props}
    try:
        cfg = preprocess_from_dict(json.loads(meta["preprocess"]))
    except (KeyError, ValueError, InputError):
        return None
    return cfg.model_dump(mode="json", exclude_defaults=True)


def _rebuildable(model: Path, fmt: str) -> bool:
    """Will the import stage rebuild the model (then it has a fuse stage)? Only an ONNX graph can be
    adopted as is without converting anything first; the import stage's own detection decides."""
    if fmt != "onnx":
        return True
    from lcpipe.importers.onnx_read import load_onnx
    from lcpipe.importers.onnx_rebuild import canonical_from_onnx

    canonical, info = canonical_from_onnx(load_onnx(model))
    if canonical is None:
        log.info("quantize: %s is adopted as is (%s): no fuse stage", model.name, info.get("adopted_reason"))
    return canonical is not None


def pipeline_yaml(raw: dict[str, Any], out: Path, command: str | None = None) -> str:
    """The YAML text of ``raw`` with a header saying how it was made and how to run it again."""
    import yaml

    again = f"lcpipe run {shlex.quote(str(out / 'pipeline.yaml'))} --out {shlex.quote(str(out))}"
    return (f"# written by: {command or 'lcpipe quantize'}\n"
            f"# run it again (every unchanged stage comes from the cache), or edit it first:\n#   {again}\n"
            + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=110))


def quantize_model(model: str | Path, calib: str | Path, *, out: str | Path, eval_images: str | Path | None = None,
                   labels: str | Path | None = None, fmt: str = "auto", overrides: Sequence[str] = (),
                   cache_dir: str | Path | None = None, no_cache: bool = False, force: bool = False) -> Any:
    """Python face of `lcpipe quantize`: build the pipeline, apply ``overrides`` (``--set`` strings), run
    it into ``out`` and leave ``<out>/pipeline.yaml``. Returns the runner's RunResult."""
    raw, config = quantize_config(model, calib, out=out, eval_images=eval_images, labels=labels, fmt=fmt,
                                  overrides=overrides)
    return run_quantize(raw, config, out, cache_dir=cache_dir, no_cache=no_cache, force=force)


def run_quantize(raw: dict[str, Any], config: Any, out: str | Path, *, command: str | None = None,
                 **run_kw: Any) -> Any:
    """Run a one-liner's pipeline into ``out``; ``<out>/pipeline.yaml`` is written whether the run passed,
    failed a gate or stopped on an error (once the run directory exists), so it can be fixed and rerun."""
    from lcpipe.runner import run_pipeline

    out = Path(out).resolve()
    try:
        return run_pipeline(config, out=out, **run_kw)
    finally:
        write_pipeline_yaml(raw, out, command)


def quantize_config(model: str | Path, calib: str | Path, *, out: str | Path, eval_images: str | Path | None = None,
                    labels: str | Path | None = None, fmt: str = "auto", overrides: Sequence[str] = ()
                    ) -> tuple[dict[str, Any], Any]:
    """(raw pipeline with the overrides applied, validated PipelineConfig) of a one-liner."""
    from lcpipe.runner import apply_overrides, config_from_dict

    out = Path(out).resolve()
    raw = quantize_pipeline(model, calib, eval_images=eval_images, labels=labels, fmt=fmt)
    raw = apply_overrides(raw, overrides, where="lcpipe quantize")
    return raw, config_from_dict(raw, str(out / "pipeline.yaml"))


def write_pipeline_yaml(raw: dict[str, Any], out: Path, command: str | None = None) -> Path | None:
    """``<out>/pipeline.yaml`` once the run directory is lcpipe's (it has a manifest); None otherwise."""
    from lcpipe.fileio import atomic_path

    if not (out / "manifest.json").is_file():
        return None
    dest = out / "pipeline.yaml"
    with atomic_path(dest) as tmp:
        tmp.write_text(pipeline_yaml(raw, out, command), encoding="utf-8")
    return dest
