"""Latency / throughput measurement and batched inference on OpenVINO (and ONNX Runtime).

Timings on small shared VMs drift by tens of percent between rounds, so every figure comes from
interleaved rounds: each round times every model once, in alternating order, and the statistics
pool all rounds. openvino is imported inside the functions (``lcpipe --help`` stays instant).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require

Runner = Callable[[], Any]  # one synchronous batch-1 inference on a fixed input


# ---------------------------------------------------------------- progress

@contextmanager
def progress(title: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """rich progress bar that stays silent when stderr is not a terminal (CI logs stay clean)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not (enabled and console.is_terminal)) as bar:
        task = bar.add_task(title, total=total)
        yield lambda n=1: bar.advance(task, n)


# ---------------------------------------------------------------- OpenVINO compile

def ov_config(hint: str, threads: int, precision: str | None = "f32") -> dict[str, Any]:
    """Compile properties. ``precision`` None keeps the device default (bf16 on AMX CPUs)."""
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads}
    if precision:
        cfg["INFERENCE_PRECISION_HINT"] = precision
    return cfg


def compile_ir(xml: Path, hint: str, threads: int, precision: str | None = "f32") -> Any:
    ov = require("openvino")
    core = ov.Core()
    return core.compile_model(core.read_model(str(xml)), "CPU", ov_config(hint, threads, precision))


def compiled_precision(compiled: Any) -> str:
    """What the plugin actually runs float ops in (f32, bf16, f16)."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except (RuntimeError, AttributeError):  # property unsupported by some plugin version: informational only
        return "unknown"


def static_batch(compiled: Any) -> int | None:
    """The input's batch size when static, else None."""
    shape = compiled.inputs[0].get_partial_shape()
    return shape[0].get_length() if shape[0].is_static else None


# ---------------------------------------------------------------- inference over a dataset

def infer_ov(compiled: Any, x: np.ndarray, title: str = "", show: bool = True) -> np.ndarray:
    """Logits of every sample, one synchronous batch-1 request at a time (works for static batch-1
    and dynamic IRs alike). No AsyncInferQueue callback: a Python completion callback can deadlock
    against the GIL when OpenVINO frees a compiled model (seen as an intermittent hang)."""
    request = compiled.create_infer_request()
    out: list[np.ndarray] = []
    with progress(title or "inference", len(x), show) as advance:
        for i in range(len(x)):
            request.infer({0: x[i : i + 1]})
            out.append(request.get_output_tensor(0).data[0].copy())
            advance(1)
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def ort_session(onnx_path: Path, threads: int) -> Any:
    ort = require("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def infer_ort(session: Any, x: np.ndarray, batch: int = 16) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


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
    pools = {n: _request_pool(compiled[n]) for n in names}
    sample = {0: np.ascontiguousarray(x[:1])}
    for n in names:  # warm-up: one pass through every request
        _run_pool(pools[n], sample, min(0.2, seconds))
    per_round: dict[str, list[float]] = {n: [] for n in names}
    with progress("throughput", rounds * len(names), show) as advance:
        for r in range(rounds):
            for n in names if r % 2 == 0 else reversed(names):
                count, elapsed = _run_pool(pools[n], sample, seconds)
                per_round[n].append(round(count / elapsed, 2))
                advance(1)
    return {n: {"images_per_s": float(np.median(per_round[n])), "round_images_per_s": per_round[n],
                "requests": len(pools[n])} for n in names}


def _request_pool(compiled: Any) -> list[Any]:
    try:
        n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    except RuntimeError:  # property missing on some devices
        n = 2
    return [compiled.create_infer_request() for _ in range(max(1, n))]


def _run_pool(requests: list[Any], sample: dict[int, np.ndarray], seconds: float) -> tuple[int, float]:
    """Keep every request busy for ``seconds``, round robin with start_async/wait. No Python
    completion callbacks (they can deadlock against the GIL, see infer_ov)."""
    busy = [False] * len(requests)
    done, i = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if busy[i]:
            requests[i].wait()
            done += 1
        requests[i].start_async(sample)
        busy[i] = True
        i = (i + 1) % len(requests)
    for k, req in enumerate(requests):
        if busy[k]:
            req.wait()
            done += 1
    return done, time.perf_counter() - t0
