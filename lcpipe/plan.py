"""Precision plans: the deployable variants of one model, and the rule that picks the one to ship.

A plan is an IR plus the float precision the CPU plugin runs its non-INT8 ops in
(``INFERENCE_PRECISION_HINT``). Which plan is fastest depends on the CPU: on AMX the plugin's
bf16 makes an "FP32" IR fast and INT8 gains little for small V1 models; the mixed preset runs on
slower AMX kernels than the performance preset; a 3-channel stem conv is slower in INT8 than in
f32 (docs/benchmarks.md). So lcpipe measures the plans on the deploy CPU instead of guessing.

This module holds the candidate grid, the selection rule and the plan record (pure functions);
lcpipe/quantization/ builds the INT8 candidates, lcpipe/measure/candidates.py times and judges them,
lcpipe/stages/plan.py is the stage, lcpipe/ir.py records the plan in the IR, lcpipe/render/plan.py
renders the table and lcpipe/metrics.py its metrics.json section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Gates that judge the deployed model's outputs against FP32 (or its accuracy). Speed gates
# (min_latency_speedup, ...) are not fidelity: the plan search is about speed already.
FIDELITY_GATES = ("max_top1_drop", "max_top1_flips", "min_agreement", "min_cosine", "max_rel_logit_error",
                  "min_int8_top1")
LABEL_GATES = ("max_top1_drop", "max_top1_flips", "min_int8_top1")  # their figures need labeled tune images
KEEP_FLOAT_LAYERS = ("stem", "fc")


def plan_gates(gates: dict[str, Any], labeled: bool) -> dict[str, Any]:
    """The configured fidelity gates the plan judges candidates by, in FIDELITY_GATES order. On unlabeled
    tune images the label gates cannot be measured for any candidate (the FP32 reference included), so they
    are left to the report's verdict (on labeled verdict images; "not measured", a failure, without labels)."""
    return {g: gates[g] for g in FIDELITY_GATES if g in gates and (labeled or g not in LABEL_GATES)}


@dataclass(frozen=True)
class CandidateSpec:
    """One plan. ``preset`` None: the FP32 IR itself (a non-INT8 plan)."""

    preset: str | None
    keep_float: tuple[str, ...]
    precision: str  # INFERENCE_PRECISION_HINT for the float ops: f32 | bf16

    @property
    def int8(self) -> bool:
        return self.preset is not None

    @property
    def ir_name(self) -> str:
        """Name of the IR this plan runs (plans that differ only in precision share it)."""
        if self.preset is None:
            return "fp32"
        return "_".join(["int8", self.preset, *(f"{k}_float" for k in self.keep_float)])

    @property
    def name(self) -> str:
        return f"{self.ir_name}@{self.precision}"

    def describe(self) -> str:
        if self.preset is None:
            return f"FP32 IR, float ops in {self.precision} (not quantized)"
        kept = f", {' + '.join(self.keep_float)} kept in float" if self.keep_float else ""
        return f"INT8 ({self.preset} preset{kept}), float ops in {self.precision}"


def is_int8_plan(name: str) -> bool:
    """Whether a plan name (CandidateSpec.name, e.g. "int8_mixed@bf16", "fp32@bf16") is an INT8 model."""
    return not name.split("@")[0] == "fp32"


def candidate_grid(presets: list[str], keep_float: list[list[str]], precisions: list[str],
                   with_fp32: bool) -> list[CandidateSpec]:
    """Every INT8 (preset x layers kept in float) IR at every precision, then the FP32 IR at every
    precision; duplicates (e.g. [stem, fc] and [fc, stem]) collapse."""
    out: list[CandidateSpec] = []
    seen: set[str] = set()
    combos = [(p, tuple(k for k in KEEP_FLOAT_LAYERS if k in kf)) for p in presets for kf in keep_float]
    if with_fp32:
        combos.append((None, ()))
    for preset, kept in combos:
        for prec in precisions:
            spec = CandidateSpec(preset, kept, prec)
            if spec.name not in seen:
                seen.add(spec.name)
                out.append(spec)
    return out


def select_plan(rows: list[dict[str, Any]]) -> tuple[str | None, dict[str, str]]:
    """The fastest candidate (lowest batch-1 p50) that ran and passed every fidelity gate.

    ``rows``: ``{"name", "p50" (ms, None if it could not run), "failed_gates": [names], or None when its
    fidelity was not checked}``. Returns (winner name or None, {name: why it won or lost}). Pure: the
    unit tests feed it figures."""
    passing = [r for r in rows if r.get("p50") is not None and r.get("failed_gates") == []]
    winner = min(passing, key=lambda r: (r["p50"], r["name"])) if passing else None
    why: dict[str, str] = {}
    for r in rows:
        if r.get("p50") is None:
            why[r["name"]] = f"could not run: {r.get('error') or 'not measured'}"
        elif r.get("failed_gates") is None:
            why[r["name"]] = "fidelity not checked" + (
                f": {_slower(r, winner)}, so it could not win" if winner is not None else "")
        elif r["failed_gates"]:
            why[r["name"]] = "failed gate(s): " + ", ".join(r["failed_gates"])
        elif r is winner:
            runner_up = min((p["p50"] for p in passing if p is not r), default=None)
            why[r["name"]] = "fastest candidate that passes every fidelity gate" + (
                f" ({100 * (runner_up / r['p50'] - 1):.1f}% ahead of the next passing one)" if runner_up else "")
        else:
            why[r["name"]] = f"passes, but {_slower(r, winner)}"
    return (winner["name"] if winner else None), why


def _slower(r: dict[str, Any], winner: dict[str, Any] | None) -> str:
    assert winner is not None
    return f"{100 * (r['p50'] / winner['p50'] - 1):.1f}% slower than {winner['name']}"


def runtime_config(precision: str) -> dict[str, str]:
    """Compile properties a server must pass for the plan it was measured with: the plugin's own
    default precision differs by CPU (bf16 on AMX and avx512_bf16 CPUs), so it is always explicit.
    No thread count: the serving host's cores are its own."""
    from lcpipe.ir import ov_config

    return ov_config("LATENCY", None, precision)


def plan_record(spec: CandidateSpec, why: str) -> dict[str, Any]:
    """What rt_info, plan.json and the deploy bundle record about the shipped plan."""
    return {"name": spec.name, "int8": spec.int8, "preset": spec.preset, "keep_float": list(spec.keep_float),
            "inference_precision": spec.precision, "runtime_config": runtime_config(spec.precision),
            "description": spec.describe(), "why": why}
