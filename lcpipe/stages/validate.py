"""validate: FP32 vs INT8 IR on data.eval (accuracy + logit fidelity), batch-1 latency, throughput, sizes.

Accuracy runs every model at the same float precision (``inference_precision``, f32 by default)
so the comparison isolates quantization error; on AMX CPUs OpenVINO would otherwise run the
"FP32" IR in bf16. When the plugin's default precision is not f32, the FP32 IR is also timed at
that default (``fp32_default``) because that is what a user gets without setting anything.

Cached like any stage (a rerun reuses the measured figures; ``--force`` re-measures); the key
includes the CPU model, ISA, threads and library versions, so another machine measures anew.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lcpipe.fileio import sha256_json, sha256_path, write_json
from lcpipe.stages.base import Stage, StageContext, StageOptions, register


class ValidateOptions(StageOptions):
    onnxruntime: bool = False  # also run the ONNX model in ONNX Runtime (FP32 reference of another runtime)
    latency: bool = True  # batch-1 synchronous latency (LATENCY hint)
    throughput: bool = True  # images/s with the THROUGHPUT hint and an AsyncInferQueue
    warmup: int = Field(20, ge=0)  # untimed inferences per model before timing
    rounds: int = Field(5, gt=0)  # interleaved rounds (FP32, INT8, ... then reversed order)
    iterations: int = Field(100, gt=0)  # timed inferences per model per round
    throughput_seconds: float = Field(1.0, gt=0)  # per model per round
    inference_precision: Literal["f32", "default"] = "f32"  # default: the plugin's choice (bf16 on AMX)
    compare_default_precision: bool = True  # also time FP32 at the plugin default when that is not f32
    top_k: int = Field(5, gt=0)  # capped at the number of classes
    groups: str | None = None  # TSV (header row) mapping image file name -> group; relative to the YAML
    group_column: str = "script"
    progress: bool = True  # rich progress bars (silent anyway when stderr is not a terminal)
    # Paddle inference sources: also run Paddle Inference itself and OpenVINO on the raw paddle2onnx
    # ONNX, and compare both with lcpipe's FP32 IR (route check; needs paddle).
    paddle_reference: bool = False


@register
class ValidateStage(Stage):
    name = "validate"
    Options = ValidateOptions
    consumes = ("ir_fp32", "ir_int8")
    optional_consumes = ("onnx", "ir_int8_ptq", "model_info", "source_onnx")
    produces = ("validation",)
    uses_config = ("preprocess", "runtime")
    cacheable = True
    summary = "top-1/top-k, INT8-vs-FP32 logit fidelity, interleaved batch-1 latency, throughput, sizes"

    def cache_salt(self, config: Any) -> str:
        from lcpipe.data import fingerprint
        from lcpipe.sysinfo import cpu_info, versions

        cpu = cpu_info()
        salt: dict[str, Any] = {"eval": fingerprint(config.data, config.preprocess, "eval"),
                                "cpu": [cpu["model"], cpu["isa"], cpu["cores"]], "versions": versions()}
        options = config.stage_options("validate")
        groups = _groups_path(config, options.groups) if options is not None and options.groups else None
        if groups is not None and groups.is_file():
            salt["groups"] = sha256_path(groups)
        return sha256_json(salt)

    def run(self, ctx: StageContext, options: ValidateOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.data import load_split
        from lcpipe.sysinfo import cpu_info, default_threads, versions

        t0 = time.perf_counter()
        threads = ctx.config.runtime.threads or default_threads()
        ev = load_split(ctx.config.data, "eval", ctx.config.preprocess, ctx.cache_dir, progress=options.progress)
        models = {"fp32": inputs["ir_fp32"], "int8": inputs["ir_int8"]}
        if "ir_int8_ptq" in inputs:
            models["int8_ptq"] = inputs["ir_int8_ptq"]
        precision = None if options.inference_precision == "default" else options.inference_precision
        compiled = _compile_all(models, threads, precision)
        default, default_precision = _default_precision(models["fp32"], threads)
        with_default = options.compare_default_precision and precision is not None and default_precision != precision
        logits = {name: _infer(c, ev.x, name, options.progress) for name, c in compiled.items()}
        if options.onnxruntime and "onnx" in inputs:
            from lcpipe.bench import infer_ort, ort_session

            logits["onnxruntime"] = infer_ort(ort_session(inputs["onnx"], threads), ev.x)
        result: dict[str, Any] = {
            "images": len(ev.x), "labeled": ev.labels is not None, "classes": int(logits["fp32"].shape[1]),
            "top_k": min(options.top_k, int(logits["fp32"].shape[1])), "threads": threads,
            "inference_precision": _precisions(compiled), "default_precision": default_precision,
        }
        result["accuracy"] = {n: accuracy(v, ev.labels, result["top_k"]) for n, v in logits.items()}
        result["fidelity"] = {f"{n}_vs_fp32": compare_logits(logits["fp32"], v, ev.labels)
                              for n, v in logits.items() if n != "fp32"}
        result["groups"] = _group_accuracy(ctx, options, ev, logits)
        if options.paddle_reference:
            result["routes"] = _routes(inputs, ev.x, logits["fp32"], threads, ctx)
        result["sizes_bytes"] = {n: ir_size(p) for n, p in models.items()}
        if "onnx" in inputs:
            result["sizes_bytes"]["onnx"] = Path(inputs["onnx"]).stat().st_size
        result["static_batch"] = {n: _static(c) for n, c in compiled.items()}
        if options.latency:
            result["latency_ms"] = _latency(models, inputs, ev.x, threads, precision, options, with_default)
        if options.throughput:
            result["throughput"] = _throughput({**compiled, **({"fp32_default": default} if with_default else {})},
                                               ev.x, options)
        result.update(cpu=cpu_info(), versions=versions(), seconds=round(time.perf_counter() - t0, 2))
        _log_summary(ctx, result)
        write_json(ctx.workdir / "validation.json", result)
        return {"validation": ctx.workdir / "validation.json"}


# ---------------------------------------------------------------- metrics (pure numpy)

def accuracy(logits: np.ndarray, labels: np.ndarray | None, k: int) -> dict[str, float | None]:
    if labels is None:
        return {"top1": None, "topk": None}
    top = np.argsort(-logits, axis=1)[:, :k]
    return {"top1": float(np.mean(top[:, 0] == labels)), "topk": float(np.mean((top == labels[:, None]).any(1)))}


def compare_logits(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """How far ``got`` (INT8) is from ``ref`` (FP32): argmax agreement, flips, logit error, cosine."""
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(ref64 - got64)
    norms = np.linalg.norm(ref64, axis=1) * np.linalg.norm(got64, axis=1)
    cos = np.sum(ref64 * got64, axis=1) / np.maximum(norms, 1e-30)
    out: dict[str, Any] = {
        "agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "rel_logit_error": float(diff.max() / max(float(np.abs(ref64).max()), 1e-30)),
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "flips": {"lost": None, "gained": None},
    }
    if labels is not None:
        ref_ok, got_ok = ref.argmax(1) == labels, got.argmax(1) == labels
        out["flips"] = {"lost": int(np.sum(ref_ok & ~got_ok)), "gained": int(np.sum(~ref_ok & got_ok))}
    return out


def ir_size(xml: Path) -> int:
    xml = Path(xml)
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


# ---------------------------------------------------------------- other routes

def _routes(inputs: dict[str, Path], x: np.ndarray, fp32: np.ndarray, threads: int, ctx: StageContext
            ) -> dict[str, Any]:
    """Paddle Inference and the paddle2onnx -> OpenVINO route vs lcpipe's FP32 IR on the eval images."""
    import json

    info = json.loads(Path(inputs["model_info"]).read_text()) if "model_info" in inputs else {}
    if info.get("format") != "paddle_inference":
        return {"skipped": "paddle_reference needs a paddle_inference source"}
    # exported Paddle inference models usually end in softmax; compare like with like
    ours = _softmax(fp32) if info.get("softmax") else fp32
    routes: dict[str, Any] = {"compared_on": "softmax" if info.get("softmax") else "logits"}
    from lcpipe.peers import compile_engine, paddle_engine, predict_all

    engine = paddle_engine(Path(info["model_file"]), Path(info["params_file"]), threads)
    fn = compile_engine(engine, 1)
    routes["paddle_inference"] = (_route_diff(ours, predict_all(fn, x, 1)) if fn is not None
                                  else {"skipped": engine.reason})
    if "source_onnx" in inputs:
        from lcpipe.bench import compile_ir, infer_ov

        p2o = ctx.workdir / "paddle2onnx_fp32.xml"
        _convert_onnx(Path(inputs["source_onnx"]), p2o)
        got = infer_ov(compile_ir(p2o, "LATENCY", threads, "f32"), x, show=False)
        routes["paddle2onnx_openvino"] = _route_diff(ours, got)
        p2o.unlink()
        p2o.with_suffix(".bin").unlink()
    for name, r in routes.items():
        if isinstance(r, dict) and "max_abs_diff" in r:
            ctx.log.info("validate: %s vs lcpipe FP32 IR: max abs diff %.2e, argmax agreement %.4f",
                         name, r["max_abs_diff"], r["argmax_agreement"])
    return routes


def _convert_onnx(onnx_path: Path, xml: Path) -> None:
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _route_diff(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    theirs = theirs.reshape(ours.shape)
    diff = np.abs(ours.astype(np.float64) - theirs)
    return {"max_abs_diff": float(diff.max()), "max_abs_value": float(np.abs(theirs).max()),
            "argmax_agreement": float(np.mean(ours.argmax(1) == theirs.argmax(1))), "images": len(ours)}


# ---------------------------------------------------------------- inference

def _compile_all(models: dict[str, Path], threads: int, precision: str | None) -> dict[str, Any]:
    from lcpipe.bench import compile_ir

    return {n: compile_ir(p, "THROUGHPUT", threads, precision) for n, p in models.items()}


def _infer(compiled: Any, x: np.ndarray, name: str, show: bool) -> np.ndarray:
    from lcpipe.bench import infer_ov

    return infer_ov(compiled, x, f"eval {name}", show)


def _precisions(compiled: dict[str, Any]) -> dict[str, str]:
    from lcpipe.bench import compiled_precision

    return {n: compiled_precision(c) for n, c in compiled.items()}


def _static(compiled: Any) -> bool:
    from lcpipe.bench import static_batch

    return static_batch(compiled) is not None


def _default_precision(fp32: Path, threads: int) -> tuple[Any, str]:
    """The FP32 IR compiled without a precision hint, and the float precision the plugin picked."""
    from lcpipe.bench import compile_ir, compiled_precision

    compiled = compile_ir(fp32, "THROUGHPUT", threads, None)
    return compiled, compiled_precision(compiled)


def _latency(models: dict[str, Path], inputs: dict[str, Path], x: np.ndarray, threads: int,
             precision: str | None, options: ValidateOptions, with_default: bool) -> dict[str, Any]:
    from lcpipe.bench import compile_ir, measure_latency, ort_runner, ort_session, ov_runner

    runners = {n: ov_runner(compile_ir(p, "LATENCY", threads, precision), x) for n, p in models.items()}
    if with_default:
        runners["fp32_default"] = ov_runner(compile_ir(models["fp32"], "LATENCY", threads, None), x)
    if options.onnxruntime and "onnx" in inputs:
        runners["onnxruntime"] = ort_runner(ort_session(inputs["onnx"], threads), x)
    stats = measure_latency(runners, warmup=options.warmup, rounds=options.rounds, iterations=options.iterations,
                            show=options.progress)
    return {n: s.as_dict() for n, s in stats.items()}


def _throughput(compiled: dict[str, Any], x: np.ndarray, options: ValidateOptions) -> dict[str, Any]:
    from lcpipe.bench import measure_throughput

    return measure_throughput(compiled, x, seconds=options.throughput_seconds, rounds=options.rounds,
                              show=options.progress)


# ---------------------------------------------------------------- groups

def _groups_path(config: Any, value: str) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    src = Path(config.source_file or ".")
    return (src.parent if src.suffix in (".yaml", ".yml") else Path.cwd()) / p


def read_groups(path: Path, column: str) -> dict[str, str]:
    """file name -> group from a TSV with a header (first column: file)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or column not in rows[0]:
        from lcpipe.errors import ConfigError

        raise ConfigError(f"stages.validate.groups: {path} has no column {column!r}")
    first = next(iter(rows[0]))
    return {Path(r[first]).name: r[column] for r in rows}


def _group_accuracy(ctx: StageContext, options: ValidateOptions, ev: Any,
                    logits: dict[str, np.ndarray]) -> dict[str, Any] | None:
    if not options.groups or ev.labels is None:
        return None
    path = _groups_path(ctx.config, options.groups)
    if not path.is_file():
        ctx.log.warning("validate: groups file %s not found; no per-group accuracy", path)
        return None
    mapping = read_groups(path, options.group_column)
    names = np.asarray([mapping.get(s.path.name, "(none)") for s in ev.samples])
    out: dict[str, Any] = {}
    for g in sorted(set(names.tolist())):
        m = names == g
        out[g] = {"images": int(m.sum()), **{f"{n}_top1": float(np.mean(v[m].argmax(1) == ev.labels[m]))
                                             for n, v in logits.items()}}
    return out


def _log_summary(ctx: StageContext, r: dict[str, Any]) -> None:
    acc, fid = r["accuracy"], r["fidelity"]["int8_vs_fp32"]
    if r["labeled"]:
        ctx.log.info("validate: top-1 FP32 %.4f INT8 %.4f (%d images), agreement %.4f, cosine %.5f",
                     acc["fp32"]["top1"], acc["int8"]["top1"], r["images"], fid["agreement"], fid["cosine"])
    else:
        ctx.log.info("validate: %d unlabeled images, agreement %.4f, cosine %.5f", r["images"], fid["agreement"],
                     fid["cosine"])
    lat = r.get("latency_ms")
    if lat:
        ctx.log.info("validate: latency p50 " + ", ".join(f"{n} {s['p50']:.2f} ms" for n, s in lat.items())
                     + f" ({r['threads']} threads)")
