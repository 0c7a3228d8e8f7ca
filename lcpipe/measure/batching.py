"""Static batch 1 against a dynamic batch dimension: what the deploy bundle's dynamic-batch IR costs at
batch 1 and gains at batch N, timed side by side in interleaved rounds (lcpipe.measure.timing).

Cheap on purpose (the deploy stage runs it on every run with ``batch: dynamic``): a few short rounds
of synchronous calls, both IRs compiled with the same properties. The input is seeded random uint8
pixels of the network's input size (the convolutions' time does not depend on pixel values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.measure.timing import measure_latency, throughput_from


def static_vs_dynamic(static_xml: Path, dynamic_xml: Path, config: dict[str, Any], input_hw: tuple[int, int], *,
                      batch: int = 8, warmup: int = 5, rounds: int = 3, iterations: int = 30) -> dict[str, Any]:
    """Latency of the static IR at batch 1 and of the dynamic IR at batch 1 and ``batch`` (one
    synchronous call each), and images/s from those p50s. ``config``: compile properties of both."""
    import openvino as ov

    core = ov.Core()
    static, dynamic = (core.compile_model(str(x), "CPU", config) for x in (static_xml, dynamic_xml))
    images = np.random.default_rng(0).integers(0, 256, (batch, *input_hw, 3), dtype=np.uint8)
    runners = {"static_b1": _runner(static, images[:1]), "dynamic_b1": _runner(dynamic, images[:1]),
               "dynamic_bN": _runner(dynamic, images)}  # N = batch
    stats = {n: s.as_dict() for n, s in measure_latency(runners, warmup=warmup, rounds=rounds,
                                                         iterations=iterations, show=False).items()}
    per_s = {n: throughput_from(s, batch if n == "dynamic_bN" else 1)["images_per_s"] for n, s in stats.items()}
    return {
        "batch": batch, "compile_config": config, "rounds": rounds, "iterations": iterations,
        "input": f"random uint8 [{batch}, {input_hw[0]}, {input_hw[1]}, 3] (seed 0)",
        "latency_ms": stats, "images_per_s": per_s,
        # > 1: the dynamic IR is slower than the static one at batch 1
        "dynamic_vs_static_b1_latency": round(stats["dynamic_b1"]["p50"] / stats["static_b1"]["p50"], 4),
        # > 1: batches of N on the dynamic IR classify more images per second than batch-1 calls on the static IR
        "dynamic_bN_vs_static_b1_throughput": round(per_s["dynamic_bN"] / per_s["static_b1"], 4),
    }


def _runner(compiled: Any, x: np.ndarray) -> Any:
    request = compiled.create_infer_request()
    inputs = {0: np.ascontiguousarray(x)}
    return lambda: request.infer(inputs)
