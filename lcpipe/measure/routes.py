"""Route check for Paddle inference sources: Paddle Inference itself and the raw paddle2onnx ->
OpenVINO route against lcpipe's FP32 IR on the same images (validate ``paddle_reference``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.ir import compile_ir, write_model
from lcpipe.measure.accuracy import softmax
from lcpipe.measure.engines import compile_engine, paddle_engine, predict_all
from lcpipe.measure.runtime import infer_ov
from lcpipe.records import read_json


def compare_routes(inputs: dict[str, Path], x: np.ndarray, fp32: np.ndarray, threads: int, workdir: Path,
                   log: logging.Logger) -> dict[str, Any]:
    """``inputs``: the validate stage's (model_info, source_onnx); ``fp32``: lcpipe's FP32 IR logits on ``x``.
    The converted paddle2onnx IR is a scratch file in ``workdir``, removed afterwards."""
    info = read_json(inputs.get("model_info"))
    if info.get("format") != "paddle_inference":
        return {"skipped": "paddle_reference needs a paddle_inference source"}
    # exported Paddle inference models usually end in softmax; compare like with like
    ours = softmax(fp32) if info.get("softmax") else fp32
    routes: dict[str, Any] = {"compared_on": "softmax" if info.get("softmax") else "logits"}
    engine = paddle_engine(Path(info["model_file"]), Path(info["params_file"]), threads)
    fn = compile_engine(engine, 1)
    routes["paddle_inference"] = (route_diff(ours, predict_all(fn, x, 1)) if fn is not None
                                  else {"skipped": engine.reason})
    if "source_onnx" in inputs:
        p2o = workdir / "paddle2onnx_fp32.xml"
        _convert_onnx(Path(inputs["source_onnx"]), p2o)
        got = infer_ov(compile_ir(p2o, "LATENCY", threads, "f32"), x, show=False)
        routes["paddle2onnx_openvino"] = route_diff(ours, got)
        p2o.unlink()
        p2o.with_suffix(".bin").unlink()
    for name, r in routes.items():
        if isinstance(r, dict) and "max_abs_diff" in r:
            log.info("validate: %s vs lcpipe FP32 IR: max abs diff %.2e, argmax agreement %.4f",
                     name, r["max_abs_diff"], r["argmax_agreement"])
    return routes


def _convert_onnx(onnx_path: Path, xml: Path) -> None:
    write_model(require("openvino").convert_model(str(onnx_path)), xml)


def route_diff(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    theirs = theirs.reshape(ours.shape)
    diff = np.abs(ours.astype(np.float64) - theirs)
    return {"max_abs_diff": float(diff.max()), "max_abs_value": float(np.abs(theirs).max()),
            "argmax_agreement": float(np.mean(ours.argmax(1) == theirs.argmax(1))), "images": len(ours)}
