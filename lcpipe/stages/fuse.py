"""fuse: fold BatchNorm, merge V2 rep branches, fold Paddle's inference dropout scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lcpipe.errors import InputError, LcpipeError
from lcpipe.fileio import write_json
from lcpipe.stages.base import Stage, StageContext, StageOptions


class FuseOptions(StageOptions):
    check: bool = True  # run unfused and fused graphs in ONNX Runtime on random input and compare
    check_tolerance: float = 1e-4  # max abs diff allowed, relative to max(1, max |logit|)


class FuseStage(Stage):
    name = "fuse"
    Options = FuseOptions
    consumes = ("canonical",)
    produces = ("canonical", "fusion_report")
    uses_config = ("preprocess",)
    summary = "fold BN into convs, merge rep branches 5/3/1 into one depthwise conv, fold dropout scale"

    def run(self, ctx: StageContext, options: FuseOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.fusion import fuse
        from lcpipe.models.spec import CanonicalModel

        if "canonical" not in inputs:
            raise InputError(f"fuse: {_adopted_reason(ctx.run_dir)}; it is adopted as is and there is nothing to fuse: "
                             "remove the fuse stage (export, convert, quantize and validate take the adopted ONNX)")
        model = CanonicalModel.load(inputs["canonical"])
        fused = fuse(model)
        fused.save(ctx.workdir / "canonical")
        report = {"arch": model.spec.arch, "tensors_before": len(model.tensors), "tensors_after": len(fused.tensors)}
        if options.check:
            diff, scale = _compare(model, fused, ctx.config.preprocess.input_hw)
            report.update(max_abs_diff=diff, max_abs_logit=scale, tolerance=options.check_tolerance)
            ctx.log.info("fuse: fused vs unfused max abs diff %.2e (max |logit| %.2f)", diff, scale)
            if diff > options.check_tolerance * max(1.0, scale):
                raise LcpipeError(f"fuse: fused model differs from the unfused one by {diff:.3e} "
                                  f"(> {options.check_tolerance} x max(1, {scale:.2f}))")
        write_json(ctx.workdir / "fusion.json", report)
        return {"canonical": ctx.workdir / "canonical", "fusion_report": ctx.workdir / "fusion.json"}


def _adopted_reason(run_dir: Path) -> str:
    """Why import adopted the model, from its model_info.json (read for the message only: not an input,
    so fuse's cache key stays what it was)."""
    from lcpipe.records import read_json

    try:
        info = read_json(Path(run_dir) / "import" / "model_info.json")
        return f"{info['source']}: {info['adopted_reason']}"
    except (KeyError, OSError, ValueError, TypeError):
        return "the model is not a PP-LCNet lcpipe can rebuild"


def _compare(before, after, input_hw: tuple[int, int]) -> tuple[float, float]:
    from lcpipe.deps import require
    from lcpipe.export.onnx_export import build_onnx

    ort = require("onnxruntime")
    x = np.random.default_rng(0).normal(size=(2, 3, *input_hw)).astype(np.float32)
    outs = []
    for m in (before, after):
        proto = build_onnx(m, input_hw=input_hw)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {"x": x})[0])
    return float(np.abs(outs[0] - outs[1]).max()), float(np.abs(outs[0]).max())
