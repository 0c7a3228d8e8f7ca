"""convert: ONNX -> OpenVINO IR (FP32 weights), preprocessing and label names in the IR's rt_info (lcpipe.ir).

The runner hashes only the ``.xml`` of an IR artifact, so the xml must change whenever the
weights do: rt_info carries the source ONNX's sha256 (which covers the weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from lcpipe.errors import ConfigError
from lcpipe.fileio import sha256_file, sha256_path
from lcpipe.ir import ov_version, save_ir, set_lcpipe_rt_info, set_model_api_info
from lcpipe.records import read_json
from lcpipe.stages.base import Stage, StageContext, StageOptions


class ConvertOptions(StageOptions):
    fp16: bool = False  # compress weights to FP16 in the IR (ov.save_model's default; off = true FP32)
    batch: int | None = Field(None, ge=1, le=1)  # 1: static [1,3,H,W] (lowest batch-1 latency); null: dynamic


class ConvertStage(Stage):
    name = "convert"
    Options = ConvertOptions
    consumes = ("onnx",)
    optional_consumes = ("model_info",)
    produces = ("ir_fp32",)
    uses_config = ("preprocess",)
    summary = "ONNX -> OpenVINO IR (FP32, optional static batch 1); preprocessing + labels in rt_info"

    def cache_salt(self, config: Any) -> str:
        return _label_names_salt(config) + ov_version()

    def run(self, ctx: StageContext, options: ConvertOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.data import preprocess_dict
        from lcpipe.deps import require

        ov = require("openvino", "OpenVINO conversion")
        model = ov.convert_model(str(inputs["onnx"]))
        if options.batch is not None:
            h, w = ctx.config.preprocess.input_hw
            model.reshape({model.inputs[0]: [options.batch, 3, h, w]})
        classes = int(model.outputs[0].get_partial_shape()[-1].get_length())
        info = read_json(inputs.get("model_info"))
        labels = resolve_label_names(ctx.config, info, classes)
        set_lcpipe_rt_info(model, {
            "preprocess": preprocess_dict(ctx.config.preprocess),
            "labels": labels,
            "precision": "fp16" if options.fp16 else "fp32",
            "source_onnx_sha256": sha256_file(inputs["onnx"]),
            "pipeline": ctx.config.name,
        })
        set_model_api_info(model, ctx.config.preprocess, labels)
        out = save_ir(model, ctx.workdir / "model.xml", compress_to_fp16=options.fp16)
        shape = model.inputs[0].get_partial_shape()
        ctx.log.info("convert: wrote %s (%s weights, input %s, %d classes%s)", out.name,
                     "FP16" if options.fp16 else "FP32", shape, classes, ", labelled" if labels else "")
        return {"ir_fp32": out}


def _label_names_salt(config: Any) -> str:
    path = config.data.label_names
    return sha256_path(path) if path and Path(path).is_file() else str(path or "")



def resolve_label_names(config: Any, model_info: dict[str, Any], classes: int) -> list[str] | None:
    """data.label_names (explicit) wins over names the source model carried; the count must match."""
    if config.data.label_names:
        from lcpipe.data import load_label_names

        names, where = load_label_names(config.data.label_names), f"data.label_names ({config.data.label_names})"
    elif model_info.get("label_names"):
        names, where = [str(n) for n in model_info["label_names"]], "the source model's label list"
    else:
        return None
    if len(names) != classes:
        raise ConfigError(f"{where}: {len(names)} names, but the model has {classes} classes")
    return names
