"""export: canonical model -> ONNX (or pass an adopted ONNX through)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lcpipe.records import read_json
from lcpipe.stages.base import Stage, StageContext, StageOptions


class ExportOptions(StageOptions):
    opset: int = 17  # >= 14: native HardSwish (opset 13 decomposes it into slow ops)
    softmax: bool = False  # append Softmax (validation always compares logits)
    dynamic_batch: bool = True


class ExportStage(Stage):
    name = "export"
    Options = ExportOptions
    consumes = ("canonical",)
    alternatives = {"canonical": ("source_onnx",)}  # an adopted ONNX needs no export
    optional_consumes = ("model_info",)
    produces = ("onnx",)
    uses_config = ("preprocess",)
    summary = "write ONNX with onnx.helper: layer-named nodes, dynamic batch, preprocessing metadata"

    def run(self, ctx: StageContext, options: ExportOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        out = ctx.workdir / "model.onnx"
        if "canonical" not in inputs:
            shutil.copyfile(inputs["source_onnx"], out)
            ctx.log.info("export: no canonical model (adopted ONNX), passing it through")
            return {"onnx": out}
        from lcpipe.export.onnx_export import export_onnx
        from lcpipe.models.spec import CanonicalModel

        if options.opset < 14:
            from lcpipe.errors import ConfigError

            raise ConfigError("stages.export.opset: must be >= 14 (HardSwish is native from 14)")
        model = CanonicalModel.load(inputs["canonical"])
        pre = ctx.config.preprocess
        meta: dict[str, object] = {"preprocess": {**pre.model_dump(mode="json"), "input_hw": list(pre.input_hw),
                                                  "layout": "NCHW", "color": "RGB"}}
        if "model_info" in inputs:
            info = read_json(inputs["model_info"])
            meta["source_sha256"] = info.get("sha256", "")
            meta["source_format"] = info.get("format", "")
        export_onnx(model, out, opset=options.opset, input_hw=pre.input_hw, softmax=options.softmax,
                    dynamic_batch=options.dynamic_batch, metadata=meta)
        ctx.log.info("export: wrote %s (opset %d)", out.name, options.opset)
        return {"onnx": out}
