"""plan: pick the precision plan to ship by measuring the candidates on this CPU.

A stage of its own (``- plan: {}`` after ``quantize``), not a ``quantize`` option, because the two
have different cache keys: quantization is a function of the data and the libraries and is
reused on any machine, while the plan is a measurement of this CPU (its key holds the CPU model,
ISA, threads and the gates), so a pipeline moved to another CPU re-plans without re-quantizing
the stage's own INT8 IR.

Candidates (lcpipe/plan.py): INT8 with each preset, with the stem conv and/or the classifier (fc)
kept in float (NNCF ignored_scope by node name), each with its float ops in f32 and in bf16 where
the CPU has bf16, and the FP32 IR at f32 and bf16. All are timed in the same interleaved rounds,
batch 1, same threads, and checked against the pipeline's fidelity gates on the tune images
(data.tune, else a split of data.eval: lcpipe.data.roles; the verdict is computed on the rest, images
this choice never saw), as point estimates: the selection chooses, the verdict vouches. Unlabeled tune
images check only the label-free gates. The fastest that passes replaces ``ir_int8`` for
validate/report (so validate measures, and the bundle ships, the winner). plan.json records every
candidate and why it won or lost.

Cost: the quantize stage's IR is reused as the candidate it matches; the other INT8 IRs come from
ONE calibration statistics pass over the FP32 model (lcpipe.quantization.shared_statistics: NNCF's own
``collect_statistics`` over every configuration's statistic points, then ``run_from_step`` per
configuration, as NNCF's hyperparameter tuner does), so each extra IR costs only its PTQ steps
(bias correction "fast" by default), not another pass over the calibration images.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lcpipe.errors import ConfigError
from lcpipe.fileio import sha256_json
from lcpipe.measure.runtime import output_classes
from lcpipe.records import PlanRecord, read_json
from lcpipe.stages.base import Stage, StageContext, StageOptions

Preset = Literal["performance", "mixed"]
Layer = Literal["stem", "fc"]


class PlanOptions(StageOptions):
    presets: list[Preset] = ["performance", "mixed"]  # NNCF presets of the INT8 candidates
    keep_float: list[list[Layer]] = [[], ["stem"], ["fc"], ["stem", "fc"]]  # layers NNCF leaves in float
    precisions: list[Literal["f32", "bf16"]] = ["f32", "bf16"]  # bf16 only where the CPU runs bf16
    fp32: bool = True  # also the non-INT8 plans (the FP32 IR)
    # Extra INT8 IRs: "fast" bias correction (a few s each) or the quantize stage's own setting
    # (full BC costs ~10x more). Latency does not depend on bias values; the gates judge the result.
    candidate_bias_correction: Literal["fast", "as_quantize"] = "fast"
    # Calibration images for the extra IRs (None: quantize's subset_size). NNCF's per-image statistics
    # work is most of their cost (V2 base, 2 cores: ~1/3 of the stage per 100 images); the quantize
    # stage's own IR (its full subset) stays a candidate, and the gates judge every one.
    candidate_subset_size: int | None = Field(100, gt=0)
    eval_images: int | None = Field(None, gt=0)  # fidelity on the first N tune images (None: all)
    # all: every candidate's fidelity (the full table); until_winner: fastest first, stop at the first
    # that passes (the slower ones cannot win; ~1 eval pass instead of one per candidate)
    fidelity: Literal["until_winner", "all"] = "until_winner"
    screen_images: int | None = Field(200, gt=0)  # until_winner: first screen on this many tune images
    # Many candidates: short rounds, many of them, so a burst of load on a shared machine hits all alike.
    warmup: int = Field(10, ge=0)
    rounds: int = Field(10, gt=0)  # interleaved timing rounds over all candidates
    iterations: int = Field(25, gt=0)  # timed calls per candidate per round
    progress: bool = True  # rich progress bars (silent anyway when stderr is not a terminal)

    def selects(self) -> bool:
        return True  # its fidelity checks choose the plan: they look at tune images


class PlanStage(Stage):
    name = "plan"
    Options = PlanOptions
    reads_data = ("calib", "eval")
    consumes = ("ir_fp32", "ir_int8")
    optional_consumes = ("quantize_report",)
    produces = ("ir_int8", "plan_report")
    uses_config = ("preprocess", "runtime", "gates")
    summary = "precision plan by measurement: INT8 presets / float layers / bf16 / FP32, fastest passing wins"

    def precheck(self, config: Any) -> None:
        from lcpipe.data.roles import resolve_roles

        resolve_roles(config)  # tune / verdict / calibration overlaps refused before anything runs

    def cache_salt(self, config: Any) -> str:
        from lcpipe.data import fingerprint
        from lcpipe.data.roles import resolve_roles
        from lcpipe.sysinfo import cpu_info, versions

        cpu = cpu_info()
        quantize = config.stage_options("quantize")
        return sha256_json({"calib": fingerprint(config.data, config.preprocess, "calib"),
                            "tune": resolve_roles(config).fingerprint("tune", config.preprocess),
                            "quantize": quantize.model_dump(mode="json") if quantize is not None else None,
                            "cpu": [cpu["model"], cpu["isa"], cpu["flags"], cpu["cores"]], "versions": versions()})

    def run(self, ctx: StageContext, options: PlanOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.data import load_samples
        from lcpipe.data.roles import resolve_roles
        from lcpipe.deps import require
        from lcpipe.ir import read_ir
        from lcpipe.measure.candidates import check_fidelity, compile_candidates, time_candidates
        from lcpipe.plan import LABEL_GATES, candidate_grid, plan_gates, select_plan
        from lcpipe.sysinfo import cpu_info, default_threads, versions

        ov = require("openvino")
        t0 = time.perf_counter()
        threads = ctx.config.runtime.threads or default_threads()
        core = ov.Core()
        bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        precisions = [p for p in options.precisions if p != "bf16" or bf16]
        if not precisions:
            raise ConfigError("stages.plan.precisions: none of them runs on this CPU (no bf16 support)")
        specs = candidate_grid(list(options.presets), [list(k) for k in options.keep_float], precisions,
                               options.fp32)
        if not specs:
            raise ConfigError("stages.plan: no candidates (presets or keep_float empty, and fp32: false)")
        quant = read_json(inputs.get("quantize_report"))
        roles = resolve_roles(ctx.config)
        if not roles.tune:
            raise ConfigError("stages.plan: no tune images (give data.tune, or data.eval to split)")
        cache = ctx.cache_dir if ctx.config.data.cache_preprocessed else None
        ev = load_samples(list(roles.tune), ctx.config.preprocess, cache, progress=options.progress, what="tune images")
        ctx.log.info("plan: fidelity checks on %d tune images (%s); %s", len(ev.x), roles.tune_from, roles.describe())
        x_eval = ev.x[: options.eval_images] if options.eval_images else ev.x
        labels = None if ev.labels is None else ev.labels[: len(x_eval)]
        ev.check_classes(output_classes(read_ir(inputs["ir_fp32"])))

        t_build = time.perf_counter()
        irs, builds = _build_irs(ctx, options, specs, inputs, quant)
        build_seconds = round(time.perf_counter() - t_build, 2)

        rows, compiled = compile_candidates(specs, irs, threads, core)
        t_time = time.perf_counter()
        time_candidates(rows, compiled, x_eval, warmup=options.warmup, rounds=options.rounds,
                        iterations=options.iterations, show=options.progress)
        time_seconds = round(time.perf_counter() - t_time, 2)
        t_check = time.perf_counter()
        configured = ctx.config.gates.thresholds()
        gates = plan_gates(configured, labels is not None)
        skipped = [g for g in configured if g in LABEL_GATES and g not in gates]
        if skipped:
            ctx.log.warning("plan: the tune images are unlabeled: %s not checked while choosing (the verdict checks "
                            "them on the labeled verdict images)", ", ".join(skipped))
        check_fidelity(rows, compiled, x_eval, labels, gates, threads=threads, core=core, fp32_xml=irs["fp32"],
                       until_winner=options.fidelity == "until_winner", screen_images=options.screen_images,
                       show=options.progress)
        check_seconds = round(time.perf_counter() - t_check, 2)
        winner, why = select_plan(rows)
        for r in rows:
            r["why"], r["chosen"] = why[r["name"]], r["name"] == winner
        if winner is None:
            from lcpipe.errors import GateFailedError

            raise GateFailedError("plan: no candidate passes the fidelity gates: "
                            + "; ".join(f"{r['name']}: {r['why']}" for r in rows))
        spec = next(s for s in specs if s.name == winner)
        out = _ship(ctx, spec, irs[spec.ir_name], why[winner])
        report = _plan_json(ctx, rows, spec, why[winner], builds, quant, threads, bf16, len(x_eval), list(gates),
                            {"build_irs": build_seconds, "fidelity": check_seconds, "latency": time_seconds,
                             "total": round(time.perf_counter() - t0, 2)}, options)
        report.update(tune=roles.record(), cpu=cpu_info(), versions=versions())
        PlanRecord.build(**report).save(ctx.workdir / "plan.json")
        _log(ctx, rows, report)
        return {"ir_int8": out, "plan_report": ctx.workdir / "plan.json"}


# ---------------------------------------------------------------- building the IRs

def _build_irs(ctx: StageContext, options: PlanOptions, specs: list[Any], inputs: dict[str, Path],
               quant: dict[str, Any]) -> tuple[dict[str, Path], dict[str, Any]]:
    """One IR per distinct ``ir_name``: the FP32 IR, the quantize stage's INT8 IR for the candidate it
    matches, fresh NNCF PTQ for the others (same calibration tensors and dataset)."""
    from lcpipe.ir import read_ir
    from lcpipe.quantization.graph import count_quantization, layer_names
    from lcpipe.quantization.ptq import save_int8_ir
    from lcpipe.quantization.settings import ignored_names, nncf_params
    from lcpipe.quantization.shared_statistics import quantize_shared
    from lcpipe.stages.quantize import QuantizeOptions

    needed = list(dict.fromkeys(s.ir_name for s in specs))
    irs: dict[str, Path] = {"fp32": inputs["ir_fp32"]}
    builds: dict[str, Any] = {"fp32": {"source": "convert stage (FP32 IR)", "seconds": 0.0}}
    qopts = ctx.config.stage_options("quantize") or QuantizeOptions()
    stage_preset = quant.get("preset")
    own = f"int8_{stage_preset}" if stage_preset else None
    if own in needed:
        irs[own] = inputs["ir_int8"]
        builds[own] = {"source": "quantize stage (as built" + (", accuracy control" if quant.get("accuracy_control")
                                                              else "") + ")", "seconds": 0.0,
                       "bias_correction": "fast" if quant.get("fast_bias_correction") else "full",
                       "subset_size": quant.get("subset_size"), **(quant.get("int8") or {})}
    todo = [n for n in needed if n not in irs]
    if not todo:
        return irs, builds
    from lcpipe.data import load_split

    fp32 = read_ir(inputs["ir_fp32"])
    names = layer_names(fp32)
    calib = load_split(ctx.config.data, "calib", ctx.config.preprocess, ctx.cache_dir, progress=options.progress)
    fast = options.candidate_bias_correction == "fast" or qopts.fast_bias_correction
    subset = min(options.candidate_subset_size or qopts.subset_size, qopts.subset_size)
    by_ir = {s.ir_name: s for s in specs}
    params: dict[str, dict[str, Any]] = {}
    cand = qopts.model_copy(update={"fast_bias_correction": fast, "subset_size": subset})
    for ir_name in todo:
        keep = [names[k] for k in by_ir[ir_name].keep_float]
        params[ir_name] = nncf_params(cand, by_ir[ir_name].preset, len(calib.x), keep_float=keep)
        builds[ir_name] = {"source": "NNCF PTQ in the plan stage (shared statistics)",
                           "bias_correction": "fast" if fast else "full", "subset_size": params[ir_name]["subset_size"],
                           "ignored_names": ignored_names(cand, keep)}
    t = time.perf_counter()
    models, stats_seconds = quantize_shared(fp32, calib.x, params)
    ctx.log.info("plan: %d INT8 IRs from one statistics pass (%.1f s) in %.1f s", len(models), stats_seconds,
                 time.perf_counter() - t)
    for ir_name, (model, seconds) in models.items():
        info = {"preset": by_ir[ir_name].preset, "subset_size": params[ir_name]["subset_size"],
                "fast_bias_correction": fast, "calib_images": len(calib.x)}
        irs[ir_name] = save_int8_ir(model, ctx.workdir / "candidates" / ir_name / "model.xml", inputs["ir_fp32"], info)
        builds[ir_name].update(apply_seconds=seconds, **count_quantization(model))
    builds["shared_statistics"] = {"seconds": stats_seconds, "irs": len(models)}
    return irs, builds


# ---------------------------------------------------------------- output

def _ship(ctx: StageContext, spec: Any, xml: Path, why: str) -> Path:
    """The winner's IR with its plan in rt_info (under lcpipe/plan), saved as this stage's model.xml."""
    from lcpipe.ir import read_ir, save_ir, set_plan
    from lcpipe.plan import plan_record

    model = read_ir(xml)
    set_plan(model, plan_record(spec, why), spec.int8)
    out = save_ir(model, ctx.workdir / "model.xml", compress_to_fp16=False)
    shutil.rmtree(ctx.workdir / "candidates", ignore_errors=True)  # only the shipped IR stays in the artifact
    return out


def _plan_json(ctx: StageContext, rows: list[dict[str, Any]], spec: Any, why: str, builds: dict[str, Any],
               quant: dict[str, Any], threads: int, bf16: bool, images: int, gates: list[str],
               seconds: dict[str, float], options: PlanOptions) -> dict[str, Any]:
    from lcpipe.plan import plan_record

    passing = [r["p50"] for r in rows if r["p50"] is not None and r["failed_gates"] == []]
    measured = [r["p50"] for r in rows if r["p50"] is not None]
    fp32 = next((r for r in rows if r["name"] == "fp32@f32"), None)
    winner = next(r for r in rows if r["chosen"])
    return {
        "chosen": plan_record(spec, why),
        "non_int8_won": not spec.int8,
        "candidates": sorted(rows, key=lambda r: (r["p50"] is None, r["p50"] or 0.0)),
        "irs": builds,
        "gates_checked": gates,
        "eval_images": images, "threads": threads, "batch": 1, "cpu_bf16": bf16,
        "quantize_stage_preset": quant.get("preset"),
        "winner_vs_best_passing": round(winner["p50"] / min(passing), 4) if passing else None,
        "winner_vs_fastest_measured": round(winner["p50"] / min(measured), 4) if measured else None,
        # the geometric mean of the per-round ratios (the centre of its interval), else the p50 ratio
        "speedup_vs_fp32_f32": winner.get("speedup_vs_reference") or (
            round(fp32["p50"] / winner["p50"], 4) if fp32 and fp32["p50"] else None),
        "speedup_vs_fp32_f32_ci95": winner.get("speedup_vs_reference_ci95"),
        "seconds": seconds,
        "options": options.model_dump(mode="json"),
    }


def _log(ctx: StageContext, rows: list[dict[str, Any]], report: dict[str, Any]) -> None:
    for r in sorted(rows, key=lambda r: (r["p50"] is None, r["p50"] or 0.0)):
        ctx.log.info("plan: %-32s p50 %s ms  %s%s", r["name"], f"{r['p50']:.3f}" if r["p50"] else "n/a",
                     "CHOSEN " if r["chosen"] else "", r["why"])
    chosen = report["chosen"]
    ctx.log.info("plan: shipping %s (%s)%s; search took %.1f s", chosen["name"], chosen["description"],
                 " - the FP32 IR won" if report["non_int8_won"] else "", report["seconds"]["total"])
