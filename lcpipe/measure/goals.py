"""What a bench run's rows mean: speed-ups against references, the goals (issue 6) for the ISA the
kernels really use, and how noisy the rounds were. Pure functions of bench.json's engine rows."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b to 4 places, None when either is missing or zero: every speed-up lcpipe reports."""
    return round(float(a) / float(b), 4) if a and b else None


# INT8 IR vs FP32 IR batch-1 latency goals by architecture and ISA (issue 6).
INT8_GOALS: dict[str, dict[str, float]] = {
    "PPLCNetV2_base": {"avx2": 1.9, "avx512_vnni": 2.5},
    "PPLCNet_x1_0": {"avx2": 1.6, "avx512_vnni": 2.0},
}
NOISE_TOLERANCE = 0.03  # "no slower" goals: within 3% is a tie (medians of interleaved rounds move that much)
PEER_GOALS = (  # (name, slower engine, faster engine, min ratio of p50s, description)
    ("fp32_ir_vs_paddle2onnx_route", "ov_p2o_fp32", "ov_fp32", 1.0,
     "lcpipe FP32 IR no slower than the paddle2onnx route"),
    ("fp32_ir_vs_ort_fp32", "ort_fp32", "ov_fp32", 1.0, "lcpipe FP32 IR no slower than ONNX Runtime FP32"),
    ("int8_vs_ort_int8", "ort_int8", "ov_int8", 2.0, "lcpipe INT8 >= 2x faster than ONNX Runtime INT8"),
    ("int8_vs_paddle_onednn", "paddle_onednn", "ov_int8", 2.0, "lcpipe INT8 >= 2x faster than Paddle Inference oneDNN"),
)


# oneDNN's ISA cap (honoured by OpenVINO's CPU plugin and Paddle, not by ONNX Runtime's MLAS) -> lcpipe level
_ONEDNN_ISA = {"SSE41": "default", "AVX": "default", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2",
               "AVX512_CORE": "avx512", "AVX512_CORE_VNNI": "avx512_vnni", "AVX512_CORE_BF16": "avx512_vnni",
               "AVX10_1_512": "avx512_vnni", "AVX512_CORE_FP16": "avx512_vnni", "AVX512_CORE_AMX": "amx",
               "AVX10_1_512_AMX": "amx", "AVX512_CORE_AMX_FP16": "amx", "AVX10_1_512_AMX_FP16": "amx"}


def isa_cap(env: dict[str, str] | None = None, isa: str | None = None) -> dict[str, Any]:
    """The ISA the oneDNN-based engines really use: ONEDNN_MAX_CPU_ISA=AVX2 on an AMX Xeon makes
    OpenVINO pick AVX2 kernels (a stand-in for AVX2-only CPUs); goals follow this effective level."""
    from lcpipe.sysinfo import ISA_ORDER, isa_level

    env = dict(os.environ) if env is None else env
    isa = isa or isa_level()
    cap = env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA")
    level = _ONEDNN_ISA.get((cap or "").upper())
    if not cap or level is None or ISA_ORDER.index(level) < ISA_ORDER.index(isa):
        return {"isa_cap": cap, "effective_isa": isa}
    return {"isa_cap": cap, "effective_isa": level}


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Latency speed-up = reference p50 / engine p50; throughput speed-up = engine img/s / reference img/s.
    References: the slowest FP32 engine, and lcpipe's FP32 IR (ov_fp32)."""
    fp32 = [r for r in rows if r["available"] and r["precision"] == "fp32"]
    slow_lat = max(fp32, key=lambda r: r["latency_ms"]["p50"], default=None)
    slow_thr = min(fp32, key=lambda r: r["throughput"]["images_per_s"], default=None)
    lcpipe = next((r for r in rows if r["name"] == "ov_fp32" and r["available"]), None)
    for r in rows:
        if not r["available"]:
            continue
        p50, ips = r["latency_ms"]["p50"], r["throughput"]["images_per_s"]
        r["speedup"] = {
            "latency_vs_slowest_fp32": ratio(slow_lat and slow_lat["latency_ms"]["p50"], p50),
            "throughput_vs_slowest_fp32": ratio(ips, slow_thr and slow_thr["throughput"]["images_per_s"]),
            "latency_vs_lcpipe_fp32": ratio(lcpipe and lcpipe["latency_ms"]["p50"], p50),
            "throughput_vs_lcpipe_fp32": ratio(ips, lcpipe and lcpipe["throughput"]["images_per_s"]),
            "slowest_fp32": {"latency": slow_lat and slow_lat["name"], "throughput": slow_thr and slow_thr["name"]},
        }


def evaluate_goals(rows: list[dict[str, Any]], arch: str | None, isa: str) -> list[dict[str, Any]]:
    """Issue-6 goals on batch-1 p50 latency; a goal whose engines did not run, or that has no target for
    this ISA (e.g. ``default``: no AVX2), has passed None and a note saying why."""
    from lcpipe.sysinfo import pick_threshold

    p50 = {r["name"]: r["latency_ms"]["p50"] for r in rows if r["available"]}
    goals = []
    if arch in INT8_GOALS:
        name, desc = "int8_ir_vs_fp32_ir", f"{arch}: INT8 IR vs FP32 IR (f32) batch-1 latency"
        value = ratio(p50.get("ov_fp32"), p50.get("ov_int8"))
        try:
            threshold, key = pick_threshold(INT8_GOALS[arch], isa)
        except KeyError:
            goals.append(_goal(name, desc, value, None, isa,
                               f"no goal for ISA {isa} (goals exist for {', '.join(INT8_GOALS[arch])})"))
        else:
            goals.append(_goal(name, desc, value, threshold, key))
    for name, slower, faster, threshold, desc in PEER_GOALS:
        missing = [n for n in (slower, faster) if n not in p50]
        goal = _goal(name, desc, ratio(p50.get(slower), p50.get(faster)), threshold, "any",
                     f"not measured: {', '.join(missing)} unavailable" if missing else "")
        if threshold == 1.0 and goal["value"] is not None and 1 - NOISE_TOLERANCE <= goal["value"] < 1.0:
            goal.update(passed=True, note=f"tie: within {NOISE_TOLERANCE:.0%} (measurement noise)")
        goals.append(goal)
    return goals


def _goal(name: str, desc: str, value: float | None, threshold: float | None, isa_key: str, note: str = "") -> dict:
    return {"name": name, "description": desc, "value": value, "threshold": threshold, "isa_key": isa_key,
            "passed": None if value is None or threshold is None else value >= threshold, "note": note}


def noise_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spread of the per-round medians, (max - min) / median, per engine and the worst."""
    spread = {}
    for r in rows:
        if r["available"]:
            rp = np.asarray(r["latency_ms"]["round_p50"], dtype=float)
            spread[r["name"]] = round(float((rp.max() - rp.min()) / np.median(rp)), 4) if len(rp) else None
    vals = [v for v in spread.values() if v is not None]
    return {"round_spread": spread, "max_round_spread": max(vals) if vals else None}


def analyse(rows: list[dict[str, Any]], arch: str | None) -> dict[str, Any]:
    """Speed-ups (added to ``rows``), this machine's CPU facts with the oneDNN ISA cap, goals for the
    effective ISA, and the round-to-round noise: the parts of bench.json derived from the rows."""
    from lcpipe.sysinfo import cpu_info

    add_speedups(rows)
    cpu = {**cpu_info(), **isa_cap()}
    return {"cpu": cpu, "goals": evaluate_goals(rows, arch, cpu["effective_isa"]), "noise": noise_summary(rows)}
