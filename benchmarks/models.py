"""The matrix entries: every PP-LCNet scale, its pipeline and PaddleClas's published figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

V1_CPU = "Xeon Gold 6148, Paddle Inference + MKLDNN"
V2_CPU = "Xeon Gold 6271C, OpenVINO benchmark_app"


@dataclass(frozen=True)
class Published:
    """Figures from the PaddleClas docs (PP-LCNet_en.md, PP-LCNetV2_en.md); None: not published."""

    params_m: float | None
    flops_m: float | None
    top1: float | None
    latency_ms: float | None = None
    latency_cpu: str = ""


@dataclass(frozen=True)
class MatrixModel:
    key: str
    arch: str
    yaml: str
    published: Published
    synthetic: bool = True  # random weights in PaddleClas layout; False: the YAML's own (real) model


MODELS: tuple[MatrixModel, ...] = (
    MatrixModel("v1_x0_25", "PPLCNet_x0_25", "v1_int8.yaml", Published(1.5, 18, 51.86, 1.74, V1_CPU)),
    MatrixModel("v1_x0_5", "PPLCNet_x0_5", "v1_int8.yaml", Published(1.9, 47, 63.14, 2.05, V1_CPU)),
    MatrixModel("v1_x1_0", "PPLCNet_x1_0", "v1_int8.yaml", Published(3.0, 161, 71.32, 2.46, V1_CPU)),
    MatrixModel("v1_x2_5", "PPLCNet_x2_5", "v1_int8.yaml", Published(9.0, 906, 76.60, 5.39, V1_CPU)),
    MatrixModel("v2_small", "PPLCNetV2_small", "v2_int8.yaml", Published(None, None, 73.97)),
    MatrixModel("v2_base", "PPLCNetV2_base", "v2_int8.yaml", Published(6.6, 604, 77.04, 4.32, V2_CPU)),
    MatrixModel("v2_large", "PPLCNetV2_large", "v2_int8.yaml", Published(None, None, 78.51)),
    MatrixModel("textline", "PPLCNet_x0_25", "textline_ori_int8.yaml", Published(None, None, None), synthetic=False),
)
MATRIX_DEFAULTS: dict[str, Any] = {"rounds": 5, "iterations": 50, "eval_images": 200}


def model_of(key: str) -> MatrixModel:
    return next(m for m in MODELS if m.key == key)
