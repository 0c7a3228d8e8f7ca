"""Inference engines benchmarked side by side with lcpipe's IRs (``lcpipe bench``).

Every engine is built for a fixed batch size and exposes one callable: a batch of exactly that
size in, the first output (logits or probabilities) out. Timing then reuses measure.timing's
interleaved rounds, so every engine sees the same machine noise. An engine that cannot run here
(package missing, no Paddle model, build error) is kept with the reason instead of raising.

Engines (``ENGINE_NAMES`` order):
  ov_fp32         lcpipe FP32 IR, INFERENCE_PRECISION_HINT f32
  ov_int8         lcpipe INT8 IR (non-quantized ops at ``int8_precision``: the plan's, else f32)
  ov_fp32_default lcpipe FP32 IR at the plugin's default precision (bf16 on AMX CPUs)
  ov_p2o_fp32     the paddle2onnx route: raw paddle2onnx ONNX read by OpenVINO, f32
  ort_fp32        ONNX Runtime on lcpipe's exported ONNX
  ort_int8        ONNX Runtime, static QDQ INT8 (quantize_static, per-channel, same calibration images)
  paddle_onednn   Paddle Inference with oneDNN (enable_mkldnn) on a Paddle inference model

Heavy packages are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.ir import compile_ir, ov_config
from lcpipe.measure.accuracy import agreement
from lcpipe.measure.runtime import compiled_precision, ort_session
from lcpipe.measure.timing import measure_latency, throughput_from

BatchFn = Callable[[np.ndarray], np.ndarray]  # a batch of the engine's fixed size -> first output
Builder = Callable[[int], BatchFn]  # batch size -> BatchFn

ENGINE_NAMES = ("ov_fp32", "ov_int8", "ov_fp32_default", "ov_p2o_fp32", "ort_fp32", "ort_int8", "paddle_onednn")
LABELS = {
    "ov_fp32": "OpenVINO FP32 IR (lcpipe)",
    "ov_int8": "OpenVINO INT8 IR (lcpipe)",
    "ov_fp32_default": "OpenVINO FP32 IR, plugin default precision",
    "ov_p2o_fp32": "OpenVINO on paddle2onnx ONNX",
    "ort_fp32": "ONNX Runtime FP32",
    "ort_int8": "ONNX Runtime INT8 (QDQ)",
    "paddle_onednn": "Paddle Inference + oneDNN",
}


@dataclass
class Engine:
    name: str
    runtime: str  # openvino | onnxruntime | paddle
    precision: str  # what the arithmetic runs in: fp32, int8, bf16, ...
    model: str = ""  # file the engine runs (informational)
    build: Builder | None = None
    reason: str | None = None  # why the engine is unavailable
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.build is not None and self.reason is None

    @property
    def label(self) -> str:
        return self.info.get("label") or LABELS.get(self.name, self.name)


def unavailable(name: str, runtime: str, precision: str, reason: str) -> Engine:
    return Engine(name, runtime, precision, reason=reason)


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------- OpenVINO

def openvino_engine(name: str, model: Path, threads: int, input_hw: tuple[int, int], precision: str | None,
                    label_precision: str) -> Engine:
    """An IR or ONNX file compiled on CPU with the LATENCY hint (one stream, ``threads`` threads) and
    its input reshaped to a static [batch, 3, H, W]; ``precision`` None keeps the plugin default.
    Inputs are passed zero-copy (``share_inputs``)."""
    from lcpipe.deps import require

    ov = require("openvino")
    core = ov.Core()
    info: dict[str, Any] = {"hint": "LATENCY", "precision_hint": precision or "plugin default"}

    def build(batch: int) -> BatchFn:
        m = core.read_model(str(model))
        m.reshape({m.inputs[0]: [batch, 3, *input_hw]})
        compiled = core.compile_model(m, "CPU", ov_config("LATENCY", threads, precision))
        info["runs_in"] = compiled_precision(compiled)
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            # zero-copy input, as ONNX Runtime and Paddle get it; the default copy of a 224x224 image
            # cost ~0.1 ms per call (V1 x1.0 1.74 -> 1.64 ms), which is what separated OV from ORT FP32
            request.infer({0: x}, share_inputs=True)
            return request.get_output_tensor(0).data.copy()

        return run

    return Engine(name, "openvino", label_precision, str(model), build, info=info)


def plugin_default_precision(xml: Path, threads: int) -> str:
    """What the CPU plugin runs float ops in without a hint (bf16 on AMX, f32 elsewhere)."""

    return compiled_precision(compile_ir(xml, "LATENCY", threads, None))


# ---------------------------------------------------------------- ONNX Runtime

def ort_engine(name: str, onnx_path: Path, threads: int, precision: str) -> Engine:
    """One InferenceSession (intra-op ``threads``, inter-op 1, all graph optimizations); the model's
    batch dimension must be dynamic or equal to the requested batch."""

    session = ort_session(onnx_path, threads)
    inp = session.get_inputs()[0]

    def build(batch: int) -> BatchFn:
        dim = inp.shape[0]
        if isinstance(dim, int) and dim != batch:
            raise ValueError(f"{onnx_path.name}: static batch {dim}, cannot run batch {batch}")
        return lambda x: session.run(None, {inp.name: x})[0]

    return Engine(name, "onnxruntime", precision, str(onnx_path), build,
                  info={"intra_op_threads": threads, "inter_op_threads": 1})


class _CalibReader:
    """onnxruntime CalibrationDataReader over preprocessed images, one image per batch."""

    def __init__(self, input_name: str, x: np.ndarray) -> None:
        self._items = iter([{input_name: x[i : i + 1]} for i in range(len(x))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def ort_quantize(onnx_path: Path, out: Path, calib_x: np.ndarray) -> dict[str, Any]:
    """Static INT8 with ONNX Runtime's own tooling: QDQ format, per-channel weights, MinMax
    calibration, S8S8 (ORT's recommended default for QDQ). Returns the settings used.

    No ``quant_pre_process``: on lcpipe's ONNX (BN already folded) its optimizer only decomposes
    HardSwish into HardSigmoid + Mul, which made the QDQ model 4x slower (textline: 1.9 -> 8.2 ms)."""
    import onnx

    from lcpipe.deps import require

    # onnxruntime.quantization imports ml_dtypes without declaring it (onnxruntime 1.32): ask for it by
    # name so a missing one is a clear "pip install" message, and lcpipe declares it
    require("ml_dtypes", "ONNX Runtime static INT8 quantization (the ort_int8 bench engine)")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
    with contextlib.redirect_stdout(io.StringIO()), _no_root_warnings():  # "consider pre-processing" noise
        quantize_static(str(onnx_path), str(out), _CalibReader(name, calib_x), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return {"format": "QDQ", "per_channel": True, "activation": "int8", "weight": "int8", "calibration": "MinMax",
            "calib_images": int(len(calib_x)), "pre_process": False}


@contextlib.contextmanager
def _no_root_warnings() -> Any:
    import logging

    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# ---------------------------------------------------------------- Paddle Inference

def paddle_engine(model_file: Path, params_file: Path, threads: int) -> Engine:
    """Paddle Inference predictor: oneDNN on, IR optimizations on, ``threads`` math-library threads."""
    info = {"onednn": True, "ir_optim": True, "math_threads": threads}

    def build(batch: int) -> BatchFn:
        import paddle.inference as pi

        config = pi.Config(str(model_file), str(params_file))
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.switch_ir_optim(True)
        config.disable_glog_info()
        predictor = pi.create_predictor(config)
        inp = predictor.get_input_handle(predictor.get_input_names()[0])
        out = predictor.get_output_handle(predictor.get_output_names()[0])

        def run(x: np.ndarray) -> np.ndarray:
            inp.reshape(list(x.shape))
            inp.copy_from_cpu(x)
            predictor.run()
            return out.copy_to_cpu()

        return run

    return Engine("paddle_onednn", "paddle", "fp32", str(model_file), build, info=info)


def paddle_files(folder_or_file: Path) -> tuple[Path, Path]:
    """(program file, params file) of a Paddle inference model; raises lcpipe InputError."""
    from lcpipe.importers.paddle_inference import locate_inference_files

    files = locate_inference_files(Path(folder_or_file))
    return files.model, files.params


# ---------------------------------------------------------------- running

def compile_engine(engine: Engine, batch: int) -> BatchFn | None:
    """Build for ``batch``; a failure marks the engine unavailable (reason recorded) instead of raising."""
    if not engine.available:
        return None
    try:
        return engine.build(batch)  # type: ignore[misc]
    except Exception as exc:  # any runtime's build error: record it, keep benchmarking the others
        engine.reason = f"failed to build for batch {batch}: {type(exc).__name__}: {exc}"[:400]
        return None


def fixed_batch(x: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` images (repeated when there are fewer), contiguous."""
    reps = -(-batch // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch])


def predict_all(fn: BatchFn, x: np.ndarray, batch: int) -> np.ndarray:
    """Outputs for every image, ``batch`` at a time (the last chunk padded by repetition)."""
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        outs.append(np.asarray(fn(fixed_batch(chunk, batch)))[:n])
    return np.concatenate(outs)


# ---------------------------------------------------------------- side by side

def measure_engines(engines: list[Engine], x: np.ndarray, labels: np.ndarray | None, *, batch: int, warmup: int,
                    rounds: int, iterations: int, batch_iterations: int | None = None,
                    show: bool = True) -> list[dict[str, Any]]:
    """Build every engine at batch 1 and ``batch``, run the eval images, then the interleaved timings:
    batch-1 latency and batch-``batch`` throughput. One row per engine (unavailable ones with the reason);
    agreement is against ``ov_fp32``."""

    fns = {e.name: (compile_engine(e, 1), compile_engine(e, batch)) for e in engines}
    ready = [e for e in engines if e.available and all(fns[e.name])]
    outputs = {e.name: predict_all(fns[e.name][1], x, batch) for e in ready}  # type: ignore[arg-type]
    x1, xb = fixed_batch(x, 1), fixed_batch(x, batch)
    lat = measure_latency({e.name: partial(fns[e.name][0], x1) for e in ready}, warmup=warmup,
                          rounds=rounds, iterations=iterations, show=show)
    n_batch = batch_iterations or iterations // batch + 2
    thr = measure_latency({e.name: partial(fns[e.name][1], xb) for e in ready}, warmup=warmup // batch + 1,
                          rounds=rounds, iterations=n_batch, show=show)
    ref = outputs.get("ov_fp32")
    return [_row(e, lat.get(e.name), thr.get(e.name), outputs.get(e.name), ref, labels, batch) for e in engines]


def _row(engine: Engine, lat: Any, thr: Any, out: np.ndarray | None, ref: np.ndarray | None,
         labels: np.ndarray | None, batch: int) -> dict[str, Any]:

    row: dict[str, Any] = {"name": engine.name, "label": engine.label, "runtime": engine.runtime,
                           "precision": engine.precision, "available": lat is not None, "reason": engine.reason,
                           "model": engine.model, "info": engine.info}
    if lat is None:
        row["reason"] = " ".join((row["reason"] or "not measured").split())  # one line (markdown lists)
        return row
    row["latency_ms"] = lat.as_dict()
    row["throughput"] = throughput_from(thr.as_dict(), batch)
    row["accuracy"] = agreement(out, ref, labels)
    return row
