"""Several nncf.quantize configurations of one model from ONE calibration statistics pass.

Why NNCF internals: the public ``nncf.quantize`` collects statistics per call, running the FP32
model over every calibration image, which is most of the PTQ time; the plan stage builds up to
seven INT8 candidates of the same model. NNCF's own hyperparameter tuner shares one collection
among PTQ pipelines with ``collect_statistics([containers...])`` and ``run_from_step``; this does
the same, then applies what ``nncf.quantize`` does after the pipeline for OpenVINO (weights stored
as int8 constants).

The functions used here are not NNCF's public API: setup.cfg pins ``nncf==3.4.0`` and
``openvino==2026.4.1``, and tests/test_plan.py runs this against them (a candidate built here
must equal what nncf.quantize builds with the same settings, op for op). Change the pins only with
that test green. Nothing else in lcpipe imports an NNCF or OpenVINO internal.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lcpipe.errors import ConfigError
from lcpipe.quantization.ptq import dataset, quiet_progress


def quantize_shared(model: Any, x: np.ndarray, params: dict[str, dict[str, Any]]
                    ) -> tuple[dict[str, tuple[Any, float]], float]:
    """``params``: {name: nncf.quantize keyword arguments}. Returns {name: (model, seconds to apply)}
    and the seconds of the one statistics pass."""
    import nncf
    from nncf.common.factory import build_graph
    from nncf.openvino.graph.model_utils import remove_friendly_name_duplicates
    from nncf.quantization.algorithms.pipeline import collect_statistics
    from nncf.quantization.algorithms.post_training.pipeline import create_ptq_pipeline
    from openvino._offline_transformations import compress_quantize_weights_transformation

    model = remove_friendly_name_duplicates(model.clone())
    graph = build_graph(model)
    data = dataset(x)
    try:
        pipelines = {name: create_ptq_pipeline(**p) for name, p in params.items()}
        with quiet_progress():
            t = time.perf_counter()
            containers = [p.get_statistic_points_for_step(0, model, graph) for p in pipelines.values()]
            stats = collect_statistics(containers, model, graph, data)
            stats_seconds = round(time.perf_counter() - t, 2)
            out: dict[str, tuple[Any, float]] = {}
            for name, pipeline in pipelines.items():
                t = time.perf_counter()
                q = pipeline.run_from_step(model, data, graph, 0, {0: stats})
                compress_quantize_weights_transformation(q)
                out[name] = (q, round(time.perf_counter() - t, 2))
    except nncf.ValidationError as exc:  # e.g. an ignored_scope entry matches nothing
        raise ConfigError(f"stages.quantize.ignored_scope (as used by stages.plan): {exc}") from None
    return out, stats_seconds
