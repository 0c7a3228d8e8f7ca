"""End-to-end timing: decoded image -> top-k, the way a serving process runs lcpipe's IRs.

Routes (same threads, same images, interleaved rounds):
  fp32_py / int8_py        float-input IR + Python float32 preprocessing (cvtColor, resize/crop,
                           normalize, transpose): what the float IR asks of users
  fp32_image / int8_image  image-input IR (lcpipe.deploy.image_input) + uint8 resize/crop in cv2
so the preprocessing gain and the INT8 gain show separately. The **baseline** is what a user gets
without lcpipe: the FP32 IR at the plugin's own float precision (bf16 on AMX / avx512_bf16 CPUs, f32
elsewhere) with Python float preprocessing. Where ``fp32_py`` runs at another precision (validate pins
f32), that route is timed too, as ``fp32_py_default``, in the same rounds; else ``fp32_py`` is the
baseline (``baseline_route`` says which). Decoding (cv2.imdecode) is the same for every route; it is
timed on its own and reported, not mixed into the routes.

Throughput keeps the plugin's optimal number of requests busy over the eval images while the
main thread preprocesses the next image; requests are polled with wait(), never given a Python
completion callback (those can deadlock against the GIL when OpenVINO frees a model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.deps import require
from lcpipe.measure.accuracy import top_indices
from lcpipe.measure.goals import ratio

ROUTES = ("fp32_py", "int8_py", "fp32_image", "int8_image")
DEFAULT_ROUTE = "fp32_py_default"  # the FP32 route at the plugin's own precision, when fp32_py runs at another
Precision = str | None | dict[str, str | None]  # one float precision for both IRs, or per "fp32" / "int8"
Prep = Callable[[np.ndarray], np.ndarray]  # decoded BGR uint8 HWC -> the IR's batch-1 input


def float_prep(pre: Any) -> Prep:
    """The float IR's input from a decoded image: BGR->RGB, then lcpipe's PaddleClas-exact path."""
    from lcpipe.data.preprocess import preprocess_array

    cv2 = require("cv2")
    return lambda bgr: preprocess_array(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pre)[None]


def image_prep(pre: Any) -> Prep:
    """The image-input IR's input: uint8 resize/crop only (colour, float, mean/std are in the graph)."""
    from lcpipe.data.preprocess import resize_crop

    return lambda bgr: np.ascontiguousarray(resize_crop(bgr, pre)[None])


def whole_image_prep() -> Prep:
    """An image-input IR with resize + crop in the graph takes the decoded image as it is."""
    return lambda bgr: np.ascontiguousarray(bgr[None])


def route_models(fp32: Path, int8: Path) -> dict[str, tuple[Any, str]]:
    """route -> (ov.Model, "float" | "image"); image-input models are built in memory from the IRs."""
    from lcpipe.deploy.image_input import build_image_input_model
    from lcpipe.ir import read_lcpipe_rt_info

    ov = require("openvino")
    core = ov.Core()
    out: dict[str, tuple[Any, str]] = {}
    for tag, xml in (("fp32", fp32), ("int8", int8)):
        model = core.read_model(str(xml))
        out[f"{tag}_py"] = (model, "float")
        out[f"{tag}_image"] = (build_image_input_model(model, read_lcpipe_rt_info(model)["preprocess"]), "image")
    return {r: out[r] for r in ROUTES}


def precision_of(precision: Precision, tag: str) -> str | None:
    """The float precision for the "fp32" or "int8" IR: one for both, or per IR (a planned INT8 IR runs
    at the precision the plan stage chose for it)."""
    return precision.get(tag) if isinstance(precision, dict) else precision


def measure_e2e(fp32: Path, int8: Path, images: Sequence[np.ndarray], pre: Any, threads: int,
                precision: Precision, *, k: int = 5, warmup: int = 10, rounds: int = 5, iterations: int = 100,
                throughput_seconds: float = 1.0, latency: bool = True, throughput: bool = True,
                default_precision: str | None = None, show: bool = True) -> dict[str, Any]:
    """Per route: batch-1 latency (ms) and async throughput (images/s) from decoded BGR ``images``,
    ``rounds`` interleaved rounds (see e2e_tracks)."""
    from lcpipe.measure.rounds import run_fixed

    if not images:
        return {"images": 0}
    head, tracks = e2e_tracks(fp32, int8, images, pre, threads, precision, k=k, warmup=warmup, iterations=iterations,
                              throughput_seconds=throughput_seconds, latency=latency, throughput=throughput,
                              default_precision=default_precision)
    run_fixed(tracks, rounds, show=show)
    return e2e_result(head, tracks)


def e2e_tracks(fp32: Path, int8: Path, images: Sequence[np.ndarray], pre: Any, threads: int, precision: Precision,
               *, k: int = 5, warmup: int = 10, iterations: int = 100, throughput_seconds: float = 1.0,
               latency: bool = True, throughput: bool = True, default_precision: str | None = None
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The routes compiled and ready to time, as tracks ("e2e_latency", "e2e_throughput") a caller runs
    round by round (validate interleaves them with the model-only tracks); and the result's head.

    ``default_precision``: the plugin's own float precision for the FP32 IR (what validate and bench
    compiled without a hint); None: unknown, so no baseline route unless ``fp32_py`` runs at the
    plugin default itself. The baseline (``DEFAULT_ROUTE`` or ``fp32_py``) is timed in the same
    interleaved rounds as every other route."""
    from lcpipe.ir import ov_config as _cfg
    from lcpipe.measure.timing import LatencyTrack, ThroughputTrack, request_pool

    ov = require("openvino")
    core = ov.Core()
    routes = route_models(fp32, int8)
    precisions = {r: precision_of(precision, r.split("_")[0]) for r in routes}
    baseline = baseline_route(precisions["fp32_py"], default_precision)
    models = {DEFAULT_ROUTE: routes["fp32_py"]} if baseline == DEFAULT_ROUTE else {}  # the baseline first
    models.update(routes)
    precisions[DEFAULT_ROUTE] = None  # no hint: the plugin's own choice
    preps = {r: (float_prep(pre) if kind == "float" else image_prep(pre)) for r, (_, kind) in models.items()}
    head: dict[str, Any] = {"images": len(images), "routes": list(models), "baseline_route": baseline,
                            "default_precision": default_precision, "cv2_threads": _cv2_threads()}
    tracks: dict[str, Any] = {}
    if latency:
        runners = {r: latency_runner(core.compile_model(m, "CPU", _cfg("LATENCY", threads, precisions[r])),
                                      preps[r], images, k) for r, (m, _) in models.items()}
        tracks["e2e_latency"] = LatencyTrack(runners, iterations=iterations, warmup=warmup)
    if throughput:
        pools = {r: request_pool(core.compile_model(m, "CPU", _cfg("THROUGHPUT", threads, precisions[r])))
                 for r, (m, _) in models.items()}
        runs = {r: (lambda s, p=p, prep=preps[r]: _run(p, prep, images, k, s)) for r, p in pools.items()}
        tracks["e2e_throughput"] = ThroughputTrack(runs, seconds=throughput_seconds,
                                                   info={r: {"requests": len(p)} for r, p in pools.items()})
    return head, tracks


def e2e_result(head: dict[str, Any], tracks: dict[str, Any]) -> dict[str, Any]:
    """validation.json's ``e2e`` figures from the timed tracks."""
    out = dict(head)
    if "e2e_latency" in tracks:
        out["latency_ms"] = tracks["e2e_latency"].results()
    if "e2e_throughput" in tracks:
        out["throughput"] = tracks["e2e_throughput"].results()
    return out


def baseline_route(fp32_precision: str | None, default_precision: str | None) -> str | None:
    """The route that is "the FP32 IR at the plugin's default precision + Python preprocessing": fp32_py
    when it runs at that precision (no hint, or the same one), else DEFAULT_ROUTE (timed for it); None
    when the plugin's default is not known."""
    if fp32_precision is None or fp32_precision == default_precision:
        return "fp32_py"
    return DEFAULT_ROUTE if default_precision else None


def _cv2_threads() -> int:
    return int(require("cv2").getNumThreads())


def latency_runner(compiled: Any, prep: Prep, images: Sequence[np.ndarray], k: int) -> Callable[[], Any]:
    """One call = the next image through prep -> infer -> top-k (cycling over ``images``)."""
    request = compiled.create_infer_request()
    state = {"i": 0}

    def run() -> np.ndarray:
        img = images[state["i"] % len(images)]
        state["i"] += 1
        request.infer({0: prep(img)}, share_inputs=True)
        return top_indices(request.get_output_tensor(0).data[0], k)

    return run


def _run(requests: list[Any], prep: Prep, images: Sequence[np.ndarray], k: int, seconds: float) -> tuple[int, float]:
    """The async pool over the images: preprocess the next image on this thread while the requests
    run; take the top-k of each finished request. Inputs are shared with OpenVINO (no copy)."""
    from lcpipe.measure.timing import run_pool

    state = {"n": 0}

    def next_input() -> np.ndarray:
        state["n"] += 1
        return prep(images[(state["n"] - 1) % len(images)])

    return run_pool(requests, next_input, seconds, lambda req: top_indices(req.get_output_tensor(0).data[0], k),
                    share_inputs=True)


def measure_e2e_samples(fp32: Path, int8: Path, samples: Sequence[Any], pre: Any, threads: int,
                        precision: Precision, **timing: Any) -> dict[str, Any]:
    """measure_e2e on dataset samples (decoded here, their rotation applied) plus the decode time of
    their files and the end-to-end speed-ups: what validate and bench both report."""
    out = measure_e2e(fp32, int8, decoded_samples(samples), pre, threads, precision, **timing)
    return with_decode_and_speedups(out, samples)


def with_decode_and_speedups(out: dict[str, Any], samples: Sequence[Any]) -> dict[str, Any]:
    """Route figures plus the decode time of the samples' files and the end-to-end speed-ups."""
    out["decode_ms"] = measure_decode(sorted({s.path for s in samples}))
    out["speedup"] = e2e_speedups(out)
    return out


def e2e_speedups(e2e: dict[str, Any]) -> dict[str, Any]:
    """What a serving process gains end to end: the shipped image-input route (``int8_image``: the IR
    the plan shipped, INT8 or not) against the baseline, the FP32 IR at the plugin's default precision
    + Python preprocessing (``*_vs_default``, the headline), and against the FP32 IR at f32 + Python
    preprocessing (secondary)."""
    p50 = {n: s["p50"] for n, s in (e2e.get("latency_ms") or {}).items()}
    ips = {n: t["images_per_s"] for n, t in (e2e.get("throughput") or {}).items()}
    base = e2e.get("baseline_route")
    return {"e2e_latency_p50": ratio(p50.get("fp32_py"), p50.get("int8_image")),
            "e2e_throughput": ratio(ips.get("int8_image"), ips.get("fp32_py")),
            "e2e_latency_p50_vs_default": ratio(p50.get(base), p50.get("int8_image")) if base else None,
            "e2e_throughput_vs_default": ratio(ips.get("int8_image"), ips.get(base)) if base else None}


def measure_decode(paths: Sequence[Path], repeats: int = 3) -> dict[str, Any]:
    """cv2 decode time per image (ms), reported next to the routes (the same for all of them)."""
    from lcpipe.data.preprocess import decode_image_bgr

    if not paths:
        return {"p50": None, "p90": None, "mean": None, "samples": 0}
    ms: list[float] = []
    for _ in range(repeats):
        for p in paths:
            t0 = time.perf_counter()
            decode_image_bgr(p)  # what a server does first; a bad file is an InputError, not None
            ms.append((time.perf_counter() - t0) * 1e3)
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4),
            "mean": round(float(a.mean()), 4), "samples": len(a)}


def decoded_samples(samples: Sequence[Any], n: int | None = None) -> list[np.ndarray]:
    """BGR uint8 images of dataset samples (their rotation applied), as a server would hold them."""
    from lcpipe.data.preprocess import decode_image_bgr, rotate_image

    return [rotate_image(decode_image_bgr(s.path), s.rotate) for s in list(samples)[:n]]


def image_input_logits(fp32: Path, int8: Path, samples: Sequence[Any], pre: Any, threads: int,
                       precision: Precision) -> dict[str, np.ndarray]:
    """Logits of the image-input IRs ("fp32", "int8") on every sample, from uint8 resize/crop."""
    from lcpipe.ir import ov_config

    ov = require("openvino")
    core = ov.Core()
    models = route_models(fp32, int8)
    prep = image_prep(pre)
    out: dict[str, np.ndarray] = {}
    for tag in ("fp32", "int8"):
        config = ov_config("THROUGHPUT", threads, precision_of(precision, tag))
        request = core.compile_model(models[f"{tag}_image"][0], "CPU", config).create_infer_request()
        rows = []
        for s in samples:  # one image at a time: the eval set need not fit in memory as uint8
            request.infer({0: prep(decoded_samples([s])[0])}, share_inputs=True)
            rows.append(request.get_output_tensor(0).data[0].copy())
        out[tag] = np.stack(rows)
    return out


def resize_in_graph_fidelity(xml: Path, samples: Sequence[Any], pre: Any, threads: int,
                             precision: str | None) -> dict[str, Any]:
    """The image-input IR with resize + crop in the graph (lcpipe.deploy.resize_in_graph) against the same
    IR fed by cv2's uint8 resize/crop, on every sample: compare_image_input of the two (top-1 agreement,
    max abs logit diff) and the input sizes seen."""
    from lcpipe.deploy.image_input import build_image_input_model
    from lcpipe.ir import ov_config, read_lcpipe_rt_info

    ov = require("openvino")
    core = ov.Core()
    model = core.read_model(str(xml))
    float_pre = read_lcpipe_rt_info(model)["preprocess"]
    config = ov_config("LATENCY", threads, precision)
    routes = {"cv2": (build_image_input_model(model, float_pre), image_prep(pre)),
              "in_graph": (build_image_input_model(model, float_pre, resize_in_graph=True), whole_image_prep())}
    requests = {k: core.compile_model(m, "CPU", config).create_infer_request() for k, (m, _) in routes.items()}
    rows: dict[str, list[np.ndarray]] = {k: [] for k in routes}
    sizes = set()
    for s in samples:
        img = decoded_samples([s])[0]
        sizes.add(img.shape[:2])
        for k, (_, prep) in routes.items():
            requests[k].infer({0: prep(img)}, share_inputs=True)
            rows[k].append(requests[k].get_output_tensor(0).data[0].copy())
    out = compare_image_input(np.stack(rows["cv2"]), np.stack(rows["in_graph"]))
    out["distinct_input_sizes"] = len(sizes)
    return out


def compare_image_input(float_logits: np.ndarray, image_logits: np.ndarray) -> dict[str, Any]:
    """Image-input IR vs the float-input IR on the same images: same top-1? how far the logits?"""
    ref, got = float_logits.astype(np.float64), image_logits.astype(np.float64)
    diff = np.abs(ref - got)
    scale = max(1.0, float(np.abs(ref).max()))
    return {"images": len(ref), "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "same_top1": bool(np.all(ref.argmax(1) == got.argmax(1))), "max_abs_logit_diff": float(diff.max()),
            "rel_logit_diff": float(diff.max() / scale)}

