"""Measuring precision-plan candidates (lcpipe.plan): compile each at its float precision, time them all
in the same interleaved rounds, and judge their fidelity against the FP32 IR at f32 with the gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def compile_candidates(specs: list[Any], irs: dict[str, Path], threads: int, core: Any
                       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Compile every candidate with the LATENCY hint at its precision; one that cannot compile (e.g.
    bf16 under an ISA cap) stays in the table with the reason."""
    from lcpipe.ir import ov_config
    from lcpipe.measure.runtime import compiled_precision

    models = {name: core.read_model(str(path)) for name, path in irs.items()}
    rows: list[dict[str, Any]] = []
    compiled: dict[str, Any] = {}
    for spec in specs:
        row: dict[str, Any] = {"name": spec.name, "ir": spec.ir_name, "int8": spec.int8, "preset": spec.preset,
                               "keep_float": list(spec.keep_float), "precision": spec.precision,
                               "description": spec.describe(), "p50": None, "p90": None, "fidelity": None,
                               "gates": None, "failed_gates": None}
        try:
            compiled[spec.name] = core.compile_model(models[spec.ir_name], "CPU",
                                                     ov_config("LATENCY", threads, spec.precision))
            row["compiled_precision"] = compiled_precision(compiled[spec.name])
        except RuntimeError as exc:
            row["error"] = str(exc).strip().splitlines()[0][:200]
        rows.append(row)
    return rows, compiled


def time_candidates(rows: list[dict[str, Any]], compiled: dict[str, Any], x: np.ndarray, *, warmup: int, rounds: int,
                    iterations: int, show: bool, reference: str = "fp32@f32") -> None:
    """Every candidate in the same interleaved rounds (lcpipe.measure.timing.measure_latency), batch 1;
    each row's speed-up over ``reference`` with its 95 % interval from the paired rounds."""
    from lcpipe.measure.stats import ratio_ci
    from lcpipe.measure.timing import measure_latency, ov_runner

    if not compiled:
        return
    stats = measure_latency({n: ov_runner(c, x) for n, c in compiled.items()}, warmup=warmup, rounds=rounds,
                            iterations=iterations, show=show)
    ref = stats.get(reference)
    for r in rows:
        if r["name"] in stats:
            s = stats[r["name"]]
            r.update(p50=s.p50, p90=s.p90, latency_ms=s.as_dict())
            est = None if ref is None else ratio_ci(ref.round_p50, s.round_p50)
            r.update(speedup_vs_reference=None if est is None else round(est.estimate, 4),
                     speedup_vs_reference_ci95=None if est is None or est.interval is None
                     else [round(v, 4) for v in est.interval])


def check_fidelity(rows: list[dict[str, Any]], compiled: dict[str, Any], x: np.ndarray, labels: np.ndarray | None,
                   gates: dict[str, Any], *, threads: int, core: Any, fp32_xml: Path, until_winner: bool,
                   screen_images: int | None, show: bool) -> None:
    """The configured fidelity gates against the FP32 IR at f32, fastest candidate first.

    ``until_winner``: each candidate is first screened on the first ``screen_images`` tune images; one
    that passes the screen is judged on all of them, and the first that passes there wins (the
    slower ones are listed as not checked). The winner is always judged on every tune image; a
    screen can only reject a candidate, never pass one. Otherwise: every candidate on every image."""
    from lcpipe.ir import ov_config
    from lcpipe.measure.runtime import infer_ov

    ref_compiled = compiled.get("fp32@f32") or core.compile_model(core.read_model(str(fp32_xml)), "CPU",
                                                                  ov_config("LATENCY", threads, "f32"))
    lazy = until_winner
    n = min(screen_images or len(x), len(x)) if lazy else len(x)
    ref = infer_ov(ref_compiled, x[:n], "plan reference fp32@f32", show)

    def run(name: str, part: slice) -> np.ndarray:
        return infer_ov(compiled[name], x[part], f"plan {name}", show)

    for r in sorted((r for r in rows if r["p50"] is not None), key=lambda r: (r["p50"], r["name"])):
        is_ref = r["name"] == "fp32@f32"
        logits = ref[:n] if is_ref else run(r["name"], slice(0, n))
        judge(r, ref[:n], logits, None if labels is None else labels[:n], gates)
        if r["failed_gates"] or n == len(x):
            if lazy and not r["failed_gates"]:
                break
            continue
        if len(ref) < len(x):  # the rest of the reference, once, when the first candidate passes a screen
            ref = np.concatenate([ref, infer_ov(ref_compiled, x[n:], "plan reference fp32@f32", show)])
        logits = ref if is_ref else np.concatenate([logits, run(r["name"], slice(n, None))])
        judge(r, ref, logits, labels, gates)
        if not r["failed_gates"]:
            break


def judge(r: dict[str, Any], ref: np.ndarray, logits: np.ndarray, labels: np.ndarray | None,
           gates: dict[str, Any]) -> None:
    """Fidelity of one candidate vs the reference and the configured gates, recorded in its row."""
    from lcpipe.gates import evaluate_gates
    from lcpipe.measure.accuracy import accuracy, compare_logits
    from lcpipe.sysinfo import isa_level

    fid = compare_logits(ref, logits, labels)
    acc = accuracy(logits, labels, 1)
    ref_top1 = accuracy(ref, labels, 1)["top1"]
    drop = None if ref_top1 is None else ref_top1 - acc["top1"]
    # point estimates: the selection chooses on the tune images; the verdict (with intervals) vouches
    results = evaluate_gates(gates, {"cpu": {"isa": isa_level()}, "accuracy": {**fid, "top1_drop": drop, "int8": acc}},
                             mode="point")
    r.update(fidelity={**fid, "top1": acc["top1"], "top1_drop": drop}, gates=results, fidelity_images=len(ref),
             failed_gates=[g["name"] for g in results if not g["passed"]])
