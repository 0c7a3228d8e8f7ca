"""Latency and throughput: interleaved rounds, batch-1 synchronous calls, an async request pool.

Timings on small shared VMs drift by tens of percent between rounds, so every figure comes from
interleaved rounds: each round times every model once, in alternating order, and the statistics
pool all rounds. A track (LatencyTrack, ThroughputTrack) runs one round at a time, so a caller can
decide after each round whether it needs more (lcpipe.measure.rounds: validate's adaptive rounds);
every track records when it ran and the load average around it (Clock). openvino is imported
inside the functions (``lcpipe --help`` stays instant).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.ir import compile_ir
from lcpipe.measure.runtime import ort_session
from lcpipe.render.progress import progress

Runner = Callable[[], Any]  # one synchronous batch-1 inference on a fixed input


# ---------------------------------------------------------------- when and under which load

def load_avg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Clock:
    """When a track's rounds ran and the load average around them: every timing figure carries it, so
    figures timed at other times (a cached run, another sweep) are not compared as if they were not."""

    measured_at: str | None = None  # local time the first round started (ISO 8601)
    before: list[float] | None = None  # load average when the first round started
    after: list[float] | None = None  # ... and when the last one ended

    def start(self) -> None:
        if self.measured_at is None:
            self.measured_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.before = load_avg()

    def stop(self) -> None:
        self.after = load_avg()

    def as_dict(self) -> dict[str, Any]:
        return {"measured_at": self.measured_at, "load_avg": {"before": self.before, "after": self.after}}


# ---------------------------------------------------------------- latency

@dataclass
class LatencyStats:
    p50: float
    p90: float
    mean: float
    min: float
    samples: int
    round_p50: list[float]
    clock: Clock = field(default_factory=Clock)

    def as_dict(self) -> dict[str, Any]:
        return {"p50": self.p50, "p90": self.p90, "mean": self.mean, "min": self.min,
                "samples": self.samples, "round_p50": self.round_p50, **self.clock.as_dict()}


def ov_runner(compiled: Any, x: np.ndarray) -> Runner:
    request = compiled.create_infer_request()
    inputs = {0: np.ascontiguousarray(x[:1])}
    return lambda: request.infer(inputs)


def ort_runner(session: Any, x: np.ndarray) -> Runner:
    name = session.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(x[:1])}
    return lambda: session.run(None, feed)


class LatencyTrack:
    """Batch-1 synchronous latency of several models, one interleaved round at a time (each round
    times every model ``iterations`` calls; the order flips every round). Per-round p50s pair the
    models round by round (lcpipe.measure.stats.ratio_ci)."""

    unit = "ms"

    def __init__(self, runners: dict[str, Runner], *, iterations: int = 100, warmup: int = 20) -> None:
        self.runners, self.iterations, self.warmup = runners, iterations, warmup
        self.times: dict[str, list[float]] = {n: [] for n in runners}
        self.per_round: dict[str, list[float]] = {n: [] for n in runners}  # p50 ms of each round
        self.rounds = 0
        self.clock = Clock()

    def warm_up(self) -> None:
        for fn in self.runners.values():
            for _ in range(self.warmup):
                fn()

    def run_round(self, advance: Callable[..., None] = lambda n=1: None) -> None:
        self.clock.start()
        names = list(self.runners)
        for name in names if self.rounds % 2 == 0 else reversed(names):
            t = _time_calls(self.runners[name], self.iterations)
            self.times[name].extend(t)
            self.per_round[name].append(round(float(np.median(t)), 4))
            advance(self.iterations)
        self.rounds += 1
        self.clock.stop()

    def stats(self) -> dict[str, LatencyStats]:
        return {n: _stats(self.times[n], self.per_round[n], self.clock) for n in self.runners if self.times[n]}

    def results(self) -> dict[str, dict[str, Any]]:
        return {n: s.as_dict() for n, s in self.stats().items()}


def measure_latency(runners: dict[str, Runner], *, warmup: int = 20, rounds: int = 5, iterations: int = 100,
                    show: bool = True) -> dict[str, LatencyStats]:
    """Batch-1 synchronous latency in ms, ``rounds`` interleaved rounds (LatencyTrack)."""
    track = LatencyTrack(runners, iterations=iterations, warmup=warmup)
    track.warm_up()
    with progress("latency", rounds * len(runners) * iterations, show) as advance:
        for _ in range(rounds):
            track.run_round(advance)
    return track.stats()


def time_irs(irs: dict[str, Path], x: np.ndarray, *, threads: int, precision: str | None | dict[str, str | None],
             default_precision_of: Path | None = None, onnx: Path | None = None, warmup: int = 20, rounds: int = 5,
             iterations: int = 100, show: bool = True) -> dict[str, dict[str, Any]]:
    """Batch-1 latency of IRs compiled with the LATENCY hint, ``rounds`` interleaved rounds (see
    ir_latency_track). Returns LatencyStats.as_dict() per name."""
    track = ir_latency_track(irs, x, threads=threads, precision=precision, default_precision_of=default_precision_of,
                             onnx=onnx, warmup=warmup, iterations=iterations)
    track.warm_up()
    with progress("latency", rounds * len(track.runners) * iterations, show) as advance:
        for _ in range(rounds):
            track.run_round(advance)
    return track.results()


def ir_latency_track(irs: dict[str, Path], x: np.ndarray, *, threads: int,
                     precision: str | None | dict[str, str | None], default_precision_of: Path | None = None,
                     onnx: Path | None = None, warmup: int = 20, iterations: int = 100) -> LatencyTrack:
    """A LatencyTrack of IRs compiled with the LATENCY hint at ``precision`` (one, or per IR), on the
    first image of ``x``; optionally also ``fp32_default`` (``default_precision_of`` at the plugin's
    default precision) and ``onnxruntime`` (``onnx`` in ONNX Runtime)."""
    prec = precision if isinstance(precision, dict) else dict.fromkeys(irs, precision)  # or one per IR
    runners = {n: ov_runner(compile_ir(p, "LATENCY", threads, prec[n]), x) for n, p in irs.items()}
    if default_precision_of is not None:
        runners["fp32_default"] = ov_runner(compile_ir(default_precision_of, "LATENCY", threads, None), x)
    if onnx is not None:
        runners["onnxruntime"] = ort_runner(ort_session(onnx, threads), x)
    return LatencyTrack(runners, iterations=iterations, warmup=warmup)


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


def _stats(ms: list[float], round_p50: list[float], clock: Clock) -> LatencyStats:
    a = np.asarray(ms)
    return LatencyStats(p50=round(float(np.percentile(a, 50)), 4), p90=round(float(np.percentile(a, 90)), 4),
                        mean=round(float(a.mean()), 4), min=round(float(a.min()), 4), samples=len(a),
                        round_p50=list(round_p50), clock=clock)


# ---------------------------------------------------------------- throughput

PoolRun = Callable[[float], tuple[int, float]]  # keep a request pool busy for s seconds -> (done, elapsed s)


class ThroughputTrack:
    """Images/s of several models, each keeping its async request pool busy for ``seconds`` per round;
    rounds interleave the models (order flips every round) like LatencyTrack."""

    unit = "images/s"

    def __init__(self, runs: dict[str, PoolRun], *, seconds: float = 1.0,
                 info: dict[str, dict[str, Any]] | None = None) -> None:
        self.runs, self.seconds, self.info = runs, seconds, info or {}
        self.per_round: dict[str, list[float]] = {n: [] for n in runs}
        self.rounds = 0
        self.clock = Clock()

    def warm_up(self) -> None:
        for run in self.runs.values():  # one pass through every request
            run(min(0.2, self.seconds))

    def run_round(self, advance: Callable[..., None] = lambda n=1: None) -> None:
        self.clock.start()
        names = list(self.runs)
        for n in names if self.rounds % 2 == 0 else reversed(names):
            count, elapsed = self.runs[n](self.seconds)
            self.per_round[n].append(round(count / elapsed, 2))
            advance(1)
        self.rounds += 1
        self.clock.stop()

    def results(self) -> dict[str, dict[str, Any]]:
        return {n: {"images_per_s": float(np.median(r)), "round_images_per_s": list(r), **self.info.get(n, {}),
                    **self.clock.as_dict()} for n, r in self.per_round.items() if r}


def pool_tracks(compiled: dict[str, Any], x: np.ndarray, seconds: float) -> ThroughputTrack:
    """A ThroughputTrack of compiled models on one fixed batch-1 input (the plugin's optimal number of
    requests each)."""
    sample = np.ascontiguousarray(x[:1])
    pools = {n: request_pool(c) for n, c in compiled.items()}
    runs: dict[str, PoolRun] = {n: (lambda s, p=p: run_pool(p, lambda: sample, s)) for n, p in pools.items()}
    return ThroughputTrack(runs, seconds=seconds, info={n: {"requests": len(p)} for n, p in pools.items()})


def measure_throughput(compiled: dict[str, Any], x: np.ndarray, *, seconds: float = 1.0, rounds: int = 3,
                       show: bool = True) -> dict[str, dict[str, Any]]:
    """Images/s with the plugin's optimal number of async requests kept busy, interleaved rounds
    of ``seconds`` each; reports the median round."""
    track = pool_tracks(compiled, x, seconds)
    track.warm_up()
    with progress("throughput", rounds * len(compiled), show) as advance:
        for _ in range(rounds):
            track.run_round(advance)
    return track.results()


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
