"""OpenVINO per-layer profile (PERF_COUNT): where an IR spends its time, by layer type and kernel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.ir import ov_config


def profile_ov(model: Path, threads: int, input_hw: tuple[int, int], precision: str | None, x: np.ndarray,
               iterations: int = 50) -> dict[str, Any]:
    """Per-layer counters (PERF_COUNT) summed over ``iterations`` batch-1 runs, aggregated by layer
    type and by exec kernel; times are per inference in ms."""

    ov = require("openvino")
    core = ov.Core()
    m = core.read_model(str(model))
    m.reshape({m.inputs[0]: [1, 3, *input_hw]})
    compiled = core.compile_model(m, "CPU", {**ov_config("LATENCY", threads, precision), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    sample = {0: np.ascontiguousarray(x[:1])}
    for _ in range(10):
        request.infer(sample)
    by_node: dict[str, list[Any]] = {}
    wall = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        request.infer(sample)
        wall.append((time.perf_counter() - t0) * 1e3)
        for p in request.get_profiling_info():
            if p.status != p.Status.EXECUTED:
                continue
            entry = by_node.setdefault(p.node_name, [p.node_type, p.exec_type, 0.0])
            entry[2] += p.real_time.total_seconds() * 1e3 / iterations
    # wall time per call next to the sum of layer times: the gap is scheduling / per-call overhead
    return {**aggregate_profile(by_node), "wall_ms_p50": round(float(np.median(wall)), 4)}


def aggregate_profile(by_node: dict[str, list[Any]]) -> dict[str, Any]:
    """{node: [type, exec_type, ms]} -> totals by type, by (type, exec kernel), slowest nodes."""
    total = sum(v[2] for v in by_node.values())
    by_type: dict[str, list[float]] = {}
    by_kernel: dict[tuple[str, str], list[float]] = {}
    for node_type, exec_type, ms in by_node.values():
        by_type.setdefault(node_type, [0.0, 0])
        by_type[node_type][0] += ms
        by_type[node_type][1] += 1
        by_kernel.setdefault((node_type, exec_type), [0.0, 0])
        by_kernel[(node_type, exec_type)][0] += ms
        by_kernel[(node_type, exec_type)][1] += 1

    def rows(d: dict[Any, list[float]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
        out = []
        for k, (ms, n) in sorted(d.items(), key=lambda kv: -kv[1][0]):
            parts = k if isinstance(k, tuple) else (k,)
            out.append({**dict(zip(keys, parts, strict=True)), "ms": round(ms, 4), "layers": int(n),
                        "share": round(ms / total, 4) if total else 0.0})
        return out

    slowest = sorted(by_node.items(), key=lambda kv: -kv[1][2])[:15]
    return {"total_ms": round(total, 4), "layers": len(by_node),
            "by_type": rows(by_type, ("type",)),
            "by_kernel": rows(by_kernel, ("type", "exec")),
            "slowest": [{"node": n, "type": t, "exec": e, "ms": round(ms, 4)} for n, (t, e, ms) in slowest]}


def profile_engines(engines: list[Any], threads: int, hw: tuple[int, ...], x: np.ndarray,
                    iterations: int = 50) -> dict[str, Any]:
    """profile_ov of the available OpenVINO IR engines (measure.engines.Engine), at the precision each ran."""
    out = {}
    for e in engines:
        if e.name in ("ov_fp32", "ov_int8", "ov_fp32_default") and e.available:
            hint = e.info.get("precision_hint")
            out[e.name] = profile_ov(Path(e.model), threads, hw, None if hint == "plugin default" else hint, x,
                                     iterations)
    return out
