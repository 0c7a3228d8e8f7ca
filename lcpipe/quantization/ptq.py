"""Post-training quantization on the OpenVINO model: the calibration dataset, nncf.quantize, accuracy
control, and saving the INT8 IR with its provenance.

NNCF runs on the OpenVINO model, not the ONNX one: on OpenVINO it bias-corrects every conv, on ONNX
it corrected one layer and the QDQ graph ran slower than FP32 (docs/toolchain.md).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lcpipe.errors import ConfigError
from lcpipe.fileio import sha256_file
from lcpipe.ir import save_ir, set_quantization_info
from lcpipe.quantization.settings import library_versions

MOSTLY_REVERTED = 0.5  # reverting more than this fraction of quantized ops = failed INT8


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """NNCF draws rich progress bars on stdout even when it is not a terminal, which floods CI logs;
    hide them there (NNCF's log messages use their own handler and still appear)."""
    if sys.stdout.isatty():
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def dataset(x: np.ndarray) -> Any:
    """An nncf.Dataset over the rows of ``x``: the items are indices, the model sees one image (batch 1)."""
    import nncf

    return nncf.Dataset(range(len(x)), lambda i: x[i : i + 1])


def quantize(model: Any, x: np.ndarray, params: dict[str, Any], *,
             where: str = "stages.quantize.ignored_scope") -> Any:
    """nncf.quantize on a copy of ``model`` (callers quantize the same FP32 model again) with the
    calibration images ``x``; an NNCF validation error (e.g. an ignored_scope entry that matches
    nothing) is a ConfigError naming ``where``."""
    import nncf

    try:
        with quiet_progress():
            return nncf.quantize(model.clone(), dataset(x), **params)
    except nncf.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def quantize_with_accuracy_control(model: Any, calib_x: np.ndarray, val_x: np.ndarray, targets: np.ndarray,
                                   params: dict[str, Any], *, max_drop: float,
                                   drop_type: Literal["absolute", "relative"] = "absolute",
                                   max_iterations: int | None = None) -> tuple[Any, dict[str, Any]]:
    """nncf.quantize_with_accuracy_control on a copy of ``model``; the metric is how often the argmax
    on ``val_x`` equals ``targets`` (labels: top-1; the FP32 argmax: agreement). Returns the model and
    what the search cost (seconds, validation calls)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    calls = [0]  # NNCF validates some models concurrently, so only the count is meaningful

    def metric(compiled: Any, items: Any) -> tuple[float, list[float]]:
        hits = [float(np.argmax(compiled(val_x[i : i + 1])[0]) == targets[i]) for i in items]
        calls[0] += 1
        return float(np.mean(hits)), hits

    restorer = AdvancedAccuracyRestorerParameters()
    if max_iterations is not None:
        restorer.max_num_iterations = max_iterations
    t0 = time.perf_counter()
    with quiet_progress():
        out = nncf.quantize_with_accuracy_control(
            model.clone(), dataset(calib_x), dataset(val_x), metric, max_drop=max_drop,
            drop_type=nncf.DropType[drop_type.upper()], advanced_accuracy_restorer_parameters=restorer, **params)
    return out, {"seconds": round(time.perf_counter() - t0, 2), "validations": calls[0]}


def reverted_summary(ptq: dict[str, int], final: dict[str, int]) -> dict[str, Any]:
    """How much of the plain-PTQ INT8 model the accuracy search put back to floating point."""
    reverted = max(0, ptq["quantized"] - final["quantized"])
    fraction = reverted / ptq["quantized"] if ptq["quantized"] else 0.0
    return {"ptq_quantized_ops": ptq["quantized"], "reverted_ops": reverted, "reverted_fraction": round(fraction, 4),
            "mostly_reverted": fraction > MOSTLY_REVERTED}


def save_int8_ir(model: Any, out: Path, fp32_xml: Path, settings: dict[str, Any]) -> Path:
    """Save without FP16 compression (the non-INT8 parts stay FP32), provenance in rt_info: the PTQ
    settings (preset, subset_size, fast_bias_correction, calib_images), the FP32 IR, the NNCF version."""
    info = {k: settings.get(k) for k in ("preset", "subset_size", "fast_bias_correction", "calib_images")}
    info["fp32_ir_sha256"] = sha256_file(fp32_xml)  # that xml names its own .bin's sha256
    info["nncf"] = library_versions()["nncf"]
    set_quantization_info(model, info)
    return save_ir(model, out, compress_to_fp16=False)
