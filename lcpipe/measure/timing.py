"""Latency and throughput: interleaved rounds, batch-1 synchronous calls, an async request pool.

Timings on small shared VMs drift by tens of percent between rounds, so every figure comes from
interleaved rounds: each round times every model once, in alternating order, and the statistics
pool all rounds. openvino is imported inside the functions (``lcpipe --help`` stays instant).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.ir import compile_ir
from lcpipe.measure.runtime import ort_session
from lcpipe.render.progress import progress

Runner = Callable[[], Any]  # one synchronous batch-1 inference on a fixed input


# ---------------------------------------------------------------- latency

@dataclass
class LatencyStats:
    p50: float
    p90: float
    mean: float
    min: float
    samples: int
    round_p50: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"p50": self.p50, "p90": self.p90, "mean": self.mean, "min": self.min,
                "samples": self.samples, "round_p50": self.round_p50}


def ov_runner(compiled: Any, x: np.ndarray) -> Runner:
    request = compiled.create_infer_request()
    inputs = {0: np.ascontiguousarray(x[:1])}
    return lambda: request.infer(inputs)


def ort_runner(session: Any, x: np.ndarray) -> Runner:
    name = session.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(x[:1])}
    return lambda: session.run(None, feed)


def measure_latency(runners: dict[str, Runner], *, warmup: int = 20, rounds: int = 5, iterations: int = 100,
                    show: bool = True) -> dict[str, LatencyStats]:
    """Batch-1 synchronous latency in ms; rounds interleave the models (order flips every round)."""
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    per_round: dict[str, list[float]] = {n: [] for n in names}
    with progress("latency", rounds * len(names) * iterations, show) as advance:
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                t = _time_calls(runners[name], iterations)
                times[name].extend(t)
                per_round[name].append(round(float(np.median(t)), 4))
                advance(iterations)
    return {n: _stats(times[n], per_round[n]) for n in names}


def time_irs(irs: dict[str, Path], x: np.ndarray, *, threads: int, precision: str | None | dict[str, str | None],
             default_precision_of: Path | None = None, onnx: Path | None = None, warmup: int = 20, rounds: int = 5,
             iterations: int = 100, show: bool = True) -> dict[str, dict[str, Any]]:
    """Batch-1 latency of IRs compiled with the LATENCY hint, interleaved; optionally also
    ``fp32_default`` (``default_precision_of`` at the plugin's default precision) and ``onnxruntime``
    (``onnx`` in ONNX Runtime). Returns LatencyStats.as_dict() per name."""
    prec = precision if isinstance(precision, dict) else dict.fromkeys(irs, precision)  # or one per IR
    runners = {n: ov_runner(compile_ir(p, "LATENCY", threads, prec[n]), x) for n, p in irs.items()}
    if default_precision_of is not None:
        runners["fp32_default"] = ov_runner(compile_ir(default_precision_of, "LATENCY", threads, None), x)
    if onnx is not None:
        runners["onnxruntime"] = ort_runner(ort_session(onnx, threads), x)
    stats = measure_latency(runners, warmup=warmup, rounds=rounds, iterations=iterations, show=show)
    return {n: s.as_dict() for n, s in stats.items()}


def throughput_from(batch_stats: dict[str, Any], batch: int) -> dict[str, Any]:
    """images/s from the p50 time of a synchronous batch call (and per round, to show the spread)."""
    return {"images_per_s": round(batch * 1e3 / batch_stats["p50"], 2), "batch": batch,
            "batch_ms_p50": batch_stats["p50"],
            "round_images_per_s": [round(batch * 1e3 / t, 2) for t in batch_stats["round_p50"]]}


def _time_calls(fn: Runner, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _stats(ms: list[float], round_p50: list[float]) -> LatencyStats:
    a = np.asarray(ms)
    return LatencyStats(p50=round(float(np.percentile(a, 50)), 4), p90=round(float(np.percentile(a, 90)), 4),
                        mean=round(float(a.mean()), 4), min=round(float(a.min()), 4), samples=len(a),
                        round_p50=round_p50)


# ---------------------------------------------------------------- throughput

def measure_throughput(compiled: dict[str, Any], x: np.ndarray, *, seconds: float = 1.0, rounds: int = 3,
                       show: bool = True) -> dict[str, dict[str, Any]]:
    """Images/s with the plugin's optimal number of async requests kept busy, interleaved rounds
    of ``seconds`` each; reports the median round."""
    names = list(compiled)
    pools = {n: request_pool(compiled[n]) for n in names}
    sample = np.ascontiguousarray(x[:1])
    for n in names:  # warm-up: one pass through every request
        run_pool(pools[n], lambda: sample, min(0.2, seconds))
    per_round: dict[str, list[float]] = {n: [] for n in names}
    with progress("throughput", rounds * len(names), show) as advance:
        for r in range(rounds):
            for n in names if r % 2 == 0 else reversed(names):
                count, elapsed = run_pool(pools[n], lambda: sample, seconds)
                per_round[n].append(round(count / elapsed, 2))
                advance(1)
    return {n: {"images_per_s": float(np.median(per_round[n])), "round_images_per_s": per_round[n],
                "requests": len(pools[n])} for n in names}


def request_pool(compiled: Any) -> list[Any]:
    try:
        n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    except RuntimeError:  # property missing on some devices
        n = 2
    return [compiled.create_infer_request() for _ in range(max(1, n))]


def run_pool(requests: list[Any], next_input: Callable[[], np.ndarray], seconds: float,
             finish: Callable[[Any], Any] | None = None, share_inputs: bool = False) -> tuple[int, float]:
    """Keep every request busy for ``seconds``, round robin with start_async/wait; returns (finished
    requests, elapsed s). ``next_input`` is called before waiting on the next request, so preparing an
    input (e2e: preprocessing the next image) overlaps the requests still running; ``finish`` takes the
    result of a finished request (e2e: its top-k). No Python completion callbacks (they can deadlock
    against the GIL, see runtime.infer_ov)."""
    from lcpipe import signals

    busy = [False] * len(requests)
    held: list[Any] = [None] * len(requests)  # shared inputs stay alive until their request finishes
    done, i = 0, 0
    t0 = time.perf_counter()
    # a stop signal must not unwind past requests still reading ``held`` (a crash in OpenVINO): the loop
    # ends early instead, every request is waited for, then the stop is raised
    with signals.critical():
        while time.perf_counter() - t0 < seconds and not signals.requested():
            x = next_input()
            if busy[i]:
                requests[i].wait()
                if finish is not None:
                    finish(requests[i])
                done += 1
            held[i] = x
            requests[i].start_async({0: x}, share_inputs=share_inputs)
            busy[i] = True
            i = (i + 1) % len(requests)
        for k, req in enumerate(requests):
            if busy[k]:
                req.wait()
                if finish is not None:
                    finish(req)
                done += 1
    return done, time.perf_counter() - t0
