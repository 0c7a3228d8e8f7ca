"""validate: FP32 vs INT8 IR on the verdict images (accuracy + logit fidelity, with the counts their
intervals come from), batch-1 latency, throughput, sizes.

The verdict images are data.eval, minus the tune images when a selecting step chose on part of it
(lcpipe.data.roles: no verdict image was seen by a selection, none is a calibration image unless
the pipeline opts in). Accuracy and timing run the FP32 IR at ``inference_precision`` (f32 by
default), so the reference is the model itself; on AMX CPUs OpenVINO would otherwise run the "FP32"
IR in bf16. The INT8 IR runs at the same precision, unless the plan stage chose it: then at the
precision the plan recorded in its rt_info (lcpipe.ir.planned_precision), i.e. the one it ships with,
so the comparison shows what the deploy bundle serves, bf16 rounding included. When the plugin's
default precision is not f32, the FP32 IR is also timed at that default (``fp32_default``) because
that is what a user gets without setting anything; end to end, that route with Python preprocessing
(``fp32_py_default``, lcpipe.measure.e2e) is the baseline of the headline speed-ups. The "int8"
model is the shipped one: the plan's choice when a plan stage ran, INT8 or not.

Timing runs in interleaved rounds over four tracks (model latency and throughput, end-to-end latency
and throughput, the baseline route among them; lcpipe.measure.rounds). Adaptive by default:
``min_rounds`` of everything, then only the tracks holding a gated speed-up, until every speed-up
gate is decided, ``max_rounds`` are done or ``max_seconds`` would be overrun; ``rounds: N`` times
exactly N rounds.

Cached like any stage (a rerun reuses the measured figures; ``--force`` re-measures); the key
includes the CPU model, ISA, threads, library versions, the verdict images and the speed-up gates
(timing stops on them), so another machine measures anew.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from lcpipe.errors import ConfigError
from lcpipe.fileio import sha256_json, sha256_path
from lcpipe.ir import compile_ir
from lcpipe.measure.accuracy import (
    accuracy,
    compare_logits,
    non_finite_rows,
    unmeasured_accuracy,
    unmeasured_fidelity,
    verdict_evidence,
)
from lcpipe.measure.runtime import (
    compiled_precision,
    infer_ort,
    infer_ov,
    ir_size,
    ort_session,
    static_batch,
)
from lcpipe.records import ValidationRecord
from lcpipe.stages.base import Stage, StageContext, StageOptions


class ValidateOptions(StageOptions):
    path_fields: ClassVar[frozenset[str]] = frozenset({"groups"})
    onnxruntime: bool = False  # also run the ONNX model in ONNX Runtime (FP32 reference of another runtime)
    latency: bool = True  # batch-1 synchronous latency (LATENCY hint)
    throughput: bool = True  # images/s with the THROUGHPUT hint and an AsyncInferQueue
    warmup: int = Field(20, ge=0)  # untimed inferences per model before timing
    # Interleaved rounds (each times every model once, order alternating). None: adaptive, between
    # min_rounds and max_rounds within max_seconds (docs/verdicts.md); a number: exactly that many.
    rounds: int | None = Field(None, gt=0)
    min_rounds: int = Field(4, ge=2)  # adaptive: always timed; then only tracks with a gated speed-up
    max_rounds: int = Field(32, ge=2)  # adaptive: no more rounds than this, decided or not
    max_seconds: float = Field(30.0, gt=0)  # adaptive: no round is started that would end past this
    iterations: int = Field(100, gt=0)  # timed inferences per model per round
    throughput_seconds: float = Field(0.25, gt=0)  # per model per round
    inference_precision: Literal["f32", "default"] = "f32"  # default: the plugin's choice (bf16 on AMX)
    compare_default_precision: bool = True  # also time FP32 at the plugin default when that is not f32
    top_k: int = Field(5, gt=0)  # capped at the number of classes
    groups: str | None = None  # TSV (header row) mapping image file name -> group; a path (relative to the YAML)
    group_column: str = "script"  # the groups file's column that names each image's group
    progress: bool = True  # rich progress bars (silent anyway when stderr is not a terminal)
    # Paddle inference sources: also run Paddle Inference itself and OpenVINO on the raw paddle2onnx
    # ONNX, and compare both with lcpipe's FP32 IR (route check; needs paddle).
    paddle_reference: bool = False
    # Image-input IRs (uint8 BGR in, normalization in the graph): same top-1 as the float IRs on the eval set?
    image_input: bool = True
    # End-to-end (decoded image -> top-k) latency/throughput of the float and image-input routes
    # (lcpipe.measure.e2e); follows ``latency`` / ``throughput``; cycles over the first e2e_images verdict images.
    e2e: bool = True
    e2e_images: int = Field(64, gt=0)  # end-to-end timing cycles over this many eval images

    @model_validator(mode="after")
    def _rounds_order(self) -> ValidateOptions:
        if self.max_rounds < self.min_rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be >= min_rounds ({self.min_rounds})")
        return self


class ValidateStage(Stage):
    name = "validate"
    Options = ValidateOptions
    reads_data = ("eval",)
    consumes = ("ir_fp32", "ir_int8")
    optional_consumes = ("onnx", "ir_int8_ptq", "model_info", "source_onnx")
    produces = ("validation",)
    uses_config = ("preprocess", "runtime")
    cacheable = True
    summary = ("on the verdict images: top-1/top-k, INT8-vs-FP32 fidelity with the counts their intervals need; "
               "latency, throughput, end to end in adaptive interleaved rounds; sizes")

    def precheck(self, config: Any) -> None:
        from lcpipe.data.roles import resolve_roles

        resolve_roles(config)  # tune / verdict / calibration overlaps refused before anything runs

    def cache_salt(self, config: Any) -> str:
        from lcpipe.data.roles import resolve_roles
        from lcpipe.gates import speed_gates
        from lcpipe.sysinfo import cpu_info, versions

        cpu = cpu_info()
        gates = config.gates
        salt: dict[str, Any] = {"verdict": resolve_roles(config).fingerprint("verdict", config.preprocess),
                                "cpu": [cpu["model"], cpu["isa"], cpu["cores"]], "versions": versions(),
                                "gates": {"confidence": gates.confidence, "mode": gates.mode,
                                          "speed": [g.__dict__ for g in speed_gates(gates.thresholds(), cpu["isa"])]}}
        options = config.stage_options("validate")
        groups = Path(options.groups) if options is not None and options.groups else None
        if groups is not None and groups.is_file():
            salt["groups"] = sha256_path(groups)
        return sha256_json(salt)

    def run(self, ctx: StageContext, options: ValidateOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.data import load_samples
        from lcpipe.data.roles import resolve_roles
        from lcpipe.ir import planned_precision
        from lcpipe.sysinfo import cpu_info, default_threads, versions

        t0 = time.perf_counter()
        data = ctx.config.data
        if data.eval is None:
            raise ConfigError("data.eval: not configured (validate needs evaluation images)")
        threads = ctx.config.runtime.threads or default_threads()
        roles = resolve_roles(ctx.config)
        _log_roles(ctx, roles)
        cache = ctx.cache_dir if data.cache_preprocessed else None
        ev = load_samples(list(roles.verdict), ctx.config.preprocess, cache, progress=options.progress,
                          what="verdict images")
        models = {"fp32": inputs["ir_fp32"], "int8": inputs["ir_int8"]}
        if "ir_int8_ptq" in inputs:
            models["int8_ptq"] = inputs["ir_int8_ptq"]
        precision = None if options.inference_precision == "default" else options.inference_precision
        # an IR the plan stage chose runs (and is judged) at the float precision it was chosen with
        precisions = {n: planned_precision(p) or precision for n, p in models.items()}
        compiled = {n: compile_ir(p, "THROUGHPUT", threads, precisions[n]) for n, p in models.items()}
        default = compile_ir(models["fp32"], "THROUGHPUT", threads, None)  # the plugin's own float precision
        default_precision = compiled_precision(default)
        with_default = options.compare_default_precision and precision is not None and default_precision != precision
        logits = {n: infer_ov(c, ev.x, f"eval {n}", options.progress) for n, c in compiled.items()}
        onnx = inputs["onnx"] if options.onnxruntime and "onnx" in inputs else None
        if onnx is not None:
            logits["onnxruntime"] = infer_ort(ort_session(onnx, threads), ev.x)
        result: dict[str, Any] = {
            "images": len(ev.x), "labeled": ev.labels is not None, "classes": int(logits["fp32"].shape[1]),
            "top_k": min(options.top_k, int(logits["fp32"].shape[1])), "threads": threads,
            "inference_precision": {n: compiled_precision(c) for n, c in compiled.items()},
            "default_precision": default_precision,
        }
        ev.check_classes(result["classes"])
        # NaN / inf logits: argmax says class 0 for every image, so every figure built on them would lie
        # (agreement 1.0); they are left out (null) and the report's built-in finite_outputs gate fails
        result["non_finite_outputs"] = {n: non_finite_rows(v) for n, v in logits.items()}
        usable = {n: v for n, v in logits.items() if not result["non_finite_outputs"][n]}
        if len(usable) < len(logits):
            ctx.log.warning("validate: non-finite (NaN/inf) outputs on %s images of %s",
                            result["non_finite_outputs"], len(ev.x))
        result["accuracy"] = {n: accuracy(v, ev.labels, result["top_k"]) if n in usable else unmeasured_accuracy()
                              for n, v in logits.items()}
        result["fidelity"] = {f"{n}_vs_fp32": compare_logits(logits["fp32"], v, ev.labels)
                              if n in usable and "fp32" in usable else unmeasured_fidelity()
                              for n, v in logits.items() if n != "fp32"}
        result["groups"] = _group_accuracy(ctx, options, ev, usable)
        if options.paddle_reference:
            from lcpipe.measure.routes import compare_routes

            result["routes"] = compare_routes(inputs, ev.x, logits["fp32"], threads, ctx.workdir, ctx.log)
        result["sizes_bytes"] = {n: ir_size(p) for n, p in models.items()}
        if "onnx" in inputs:
            result["sizes_bytes"]["onnx"] = Path(inputs["onnx"]).stat().st_size
        result["static_batch"] = {n: static_batch(c) is not None for n, c in compiled.items()}
        if options.image_input:
            result["image_input"] = _image_input(inputs, ev, logits, ctx.config.preprocess, threads, precisions)
        result.update(_timing(ctx, options, inputs, ev, models, compiled, precisions, threads,
                              default if with_default else None, default_precision, onnx, result["top_k"]))
        finite = "fp32" in usable and "int8" in usable  # else no count or cosine means anything
        result.update(data=roles.record(),
                      evidence=verdict_evidence(logits["fp32"], logits["int8"], ev.labels) if finite else None)
        result.update(cpu=cpu_info(), versions=versions(), seconds=round(time.perf_counter() - t0, 2))
        _log_summary(ctx, result, _shipped_label(inputs["ir_int8"], result["inference_precision"]["int8"]))
        ValidationRecord.build(**result).save(ctx.workdir / "validation.json")
        return {"validation": ctx.workdir / "validation.json"}


# ---------------------------------------------------------------- timing

def _timing(ctx: StageContext, options: ValidateOptions, inputs: dict[str, Path], ev: Any, models: dict[str, Path],
            compiled: dict[str, Any], precisions: dict[str, str | None], threads: int, default: Any | None,
            default_precision: str | None, onnx: Path | None, k: int) -> dict[str, Any]:
    """Latency, throughput and end-to-end tracks timed together in interleaved rounds (adaptive unless
    ``rounds`` is set); validation.json's latency_ms, throughput, e2e and timing. The end-to-end routes
    include the baseline (the FP32 IR at the plugin's ``default_precision`` + Python preprocessing:
    the headline speed-ups' reference), timed in the same rounds."""
    from lcpipe.measure.e2e import decoded_samples, e2e_result, e2e_tracks, with_decode_and_speedups
    from lcpipe.measure.timing import ir_latency_track, pool_tracks

    tracks: dict[str, Any] = {}
    if options.latency:
        tracks["latency"] = ir_latency_track(models, ev.x, threads=threads, precision=precisions,
                                             default_precision_of=models["fp32"] if default is not None else None,
                                             onnx=onnx, warmup=options.warmup, iterations=options.iterations)
    if options.throughput:
        tracks["throughput"] = pool_tracks({**compiled, **({"fp32_default": default} if default is not None else {})},
                                           ev.x, options.throughput_seconds)
    head = None
    e2e_samples = ev.samples[: options.e2e_images]
    if options.e2e and (options.latency or options.throughput):
        head, more = e2e_tracks(inputs["ir_fp32"], inputs["ir_int8"], decoded_samples(e2e_samples),
                                ctx.config.preprocess, threads, precisions, k=k, warmup=options.warmup,
                                iterations=options.iterations, throughput_seconds=options.throughput_seconds,
                                latency=options.latency, throughput=options.throughput,
                                default_precision=default_precision)
        tracks.update(more)
    if not tracks:
        return {}
    out: dict[str, Any] = {"timing": _rounds(ctx, options, tracks, head["baseline_route"] if head else None)}
    if "latency" in tracks:
        out["latency_ms"] = tracks["latency"].results()
    if "throughput" in tracks:
        out["throughput"] = tracks["throughput"].results()
    if head is not None:
        out["e2e"] = with_decode_and_speedups(e2e_result(head, tracks), e2e_samples)
    return out


def _rounds(ctx: StageContext, options: ValidateOptions, tracks: dict[str, Any],
            baseline_route: str | None) -> dict[str, Any]:
    """Run the rounds: adaptive on the speed-up gates (none in point mode), or exactly ``rounds``."""
    from lcpipe.gates import speed_gates
    from lcpipe.measure.rounds import run_adaptive, run_fixed
    from lcpipe.measure.stopping import RoundsBudget
    from lcpipe.sysinfo import cpu_info

    gates = ctx.config.gates
    gated = [] if gates.mode == "point" else speed_gates(gates.thresholds(), cpu_info()["isa"])
    if options.rounds == 1:
        return run_fixed(tracks, 1, show=options.progress)
    if options.rounds is not None:  # fixed: one look at the end, at gates.confidence
        budget = RoundsBudget(options.rounds, options.rounds, max_seconds=1e9)
    else:
        budget = RoundsBudget(options.min_rounds, options.max_rounds, options.max_seconds)

    def on_look(done: int, decision: Any) -> None:
        for name, v in decision.verdicts.items():
            iv = decision.intervals[name]
            shown = "no interval" if iv is None else f"[{iv[0]:.3f}, {iv[1]:.3f}]"
            ctx.log.info("validate: after %d rounds: %s %s at %.4g %% -> %s", done, name, shown,
                         100 * decision.confidence, v)

    record = run_adaptive(tracks, gated, budget, confidence=gates.confidence, show=options.progress,
                          baseline_route=baseline_route, on_look=on_look)
    if options.rounds is not None:
        record.update(mode="fixed", max_seconds=None)
    left = f"; still inconclusive: {', '.join(record['undecided'])}" if record["undecided"] else ""
    ctx.log.info("validate: %d timing rounds in %.1f s, stopped: %s%s", record["rounds"], record["seconds"],
                 record["stop_reason"], left)
    return record


def _log_roles(ctx: StageContext, roles: Any) -> None:
    if roles.split is not None:
        ctx.log.info("validate: %s (selecting: %s)", roles.split.describe(),
                     ", ".join(roles.selecting) or "data.split given")
    log = ctx.log.warning if roles.overlap else ctx.log.info
    log("validate: %s", roles.describe())


# ---------------------------------------------------------------- image-input IRs, end to end

def _image_input(inputs: dict[str, Path], ev: Any, logits: dict[str, np.ndarray], pre: Any, threads: int,
                 precision: dict[str, str | None]) -> dict[str, Any]:
    from lcpipe.measure.e2e import compare_image_input, image_input_logits

    got = image_input_logits(inputs["ir_fp32"], inputs["ir_int8"], ev.samples, pre, threads, precision)
    out = {tag: compare_image_input(logits[tag], got[tag]) for tag in ("fp32", "int8")}
    for tag in out:
        out[tag]["top1"] = accuracy(got[tag], ev.labels, 1)["top1"]
    return out


# ---------------------------------------------------------------- groups

def read_groups(path: Path, column: str) -> dict[str, str]:
    """file name -> group from a TSV with a header (first column: file)."""
    import io

    from lcpipe.data.dataset import MAX_LIST_BYTES
    from lcpipe.errors import ConfigError
    from lcpipe.fileio import read_text

    text = read_text(path, "groups", MAX_LIST_BYTES, ConfigError)
    rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t"))
    if not rows or column not in rows[0]:
        raise ConfigError(f"stages.validate.groups: {path} has no column {column!r}")
    first = next(iter(rows[0]))
    return {Path(r[first]).name: r[column] or "(none)" for r in rows if r.get(first)}  # short rows: no group


def _group_accuracy(ctx: StageContext, options: ValidateOptions, ev: Any,
                    logits: dict[str, np.ndarray]) -> dict[str, Any] | None:
    if not options.groups or ev.labels is None:
        return None
    path = Path(options.groups)
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


def _shipped_label(xml: Path, precision: str) -> str:
    """"INT8", or "shipped FP32 (bf16)" for an IR the plan stage chose that is not INT8 (rt_info precision)."""
    from lcpipe.ir import read_ir, read_lcpipe_rt_info

    return "INT8" if read_lcpipe_rt_info(read_ir(xml)).get("precision") != "fp32" else f"shipped FP32 ({precision})"


def _log_summary(ctx: StageContext, r: dict[str, Any], label: str) -> None:
    acc, fid = r["accuracy"], r["fidelity"]["int8_vs_fp32"]
    if fid["agreement"] is None:
        ctx.log.warning("validate: %d images; no accuracy or fidelity figures (non-finite outputs)", r["images"])
    elif r["labeled"]:
        ctx.log.info("validate: top-1 FP32 %.4f %s %.4f (%d images), agreement %.4f, cosine %.5f",
                     acc["fp32"]["top1"], label, acc["int8"]["top1"], r["images"], fid["agreement"], fid["cosine"])
    else:
        ctx.log.info("validate: %d unlabeled images, agreement %.4f, cosine %.5f", r["images"], fid["agreement"],
                     fid["cosine"])
    for tag, c in (r.get("image_input") or {}).items():
        log = ctx.log.info if c["same_top1"] else ctx.log.warning  # a flip means the in-graph steps differ
        log("validate: %s image-input IR vs float IR: top-1 agreement %.4f, max abs logit diff %.2e",
            label if tag == "int8" else tag.upper(), c["top1_agreement"], c["max_abs_logit_diff"])
    e2e = (r.get("e2e") or {}).get("latency_ms")
    if e2e:
        from lcpipe.render.shipped import e2e_route_labels

        names = e2e_route_labels(label, r["inference_precision"]["fp32"], r["default_precision"], short=True)
        ctx.log.info("validate: end-to-end p50 " + ", ".join(f"{names.get(n, n)} {s['p50']:.2f} ms"
                                                             for n, s in e2e.items())
                     + f" (decode {r['e2e']['decode_ms']['p50']:.2f} ms, not included)")
    lat = r.get("latency_ms")
    if lat:
        names = {"int8": label, "fp32": f"FP32 ({r['inference_precision']['fp32']})",
                 "fp32_default": f"FP32 ({r['default_precision']}, plugin default)"}
        ctx.log.info("validate: latency p50 " + ", ".join(f"{names.get(n, n)} {s['p50']:.2f} ms"
                                                          for n, s in lat.items()) + f" ({r['threads']} threads)")
