"""The JSON artifacts lcpipe writes, as typed records, and the one place JSON files are read and written.

One pydantic model per artifact: validation.json (validate), quantize.json (quantize), plan.json (plan),
metrics.json (report; the layout CI scripts read, documented in the README) and bench.json (bench).

- Building: ``Model.build(key=value, ...)`` refuses a key the model does not declare, so a misspelled
  key fails where the record is made, not in a reader later.
- Saving: keys appear in the order the model declares them; a key the builder did not set is left
  out (not written as null), so files keep their layout. Adding an optional key is one line here,
  ``name: Type | None = None``; files that lack it still load.
- Reading: ``Model.load(path)``; keys this lcpipe does not know (a newer or older file) are kept as
  they are and written back after the known ones.

Figures are typed ``Number`` (int or float, kept as given: a threshold of 2 stays 2, not 2.0) or
left as plain dicts where their keys are data (model names, routes, groups).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from lcpipe.fileio import write_json

Number = int | float


def read_json(path: str | Path | None) -> dict[str, Any]:
    """A JSON object from ``path``; {} for no path (an optional input a stage did not get)."""
    return json.loads(Path(path).read_text()) if path else {}


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @classmethod
    def build(cls, **fields: Any) -> Self:
        """A new record; a key the model does not declare is an error (a typo, not an older file)."""
        known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}")
        return cls.model_validate(fields)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        return cls.model_validate(read_json(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the keys that were set, in declared order, then unknown keys as read."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    def save(self, path: str | Path) -> Path:
        write_json(path, self.to_dict())
        return Path(path)


# ---------------------------------------------------------------- validation.json, quantize.json

class ValidationRecord(Record):
    """validate: FP32 vs INT8 IRs on data.eval; keys by model name ("fp32", "int8", "int8_ptq", ...)."""

    images: int
    labeled: bool
    classes: int
    top_k: int
    threads: int
    inference_precision: dict[str, str] | None = None
    default_precision: str | None = None
    non_finite_outputs: dict[str, int] | None = None  # model -> eval images with a NaN/inf logit
    accuracy: dict[str, dict[str, Any]]  # model -> {top1, topk} (null figures for a non-finite model)
    fidelity: dict[str, dict[str, Any]]  # "<model>_vs_fp32" -> lcpipe.measure.accuracy.compare_logits
    groups: dict[str, Any] | None = None
    routes: dict[str, Any] | None = None
    sizes_bytes: dict[str, int] | None = None
    static_batch: dict[str, bool] | None = None
    latency_ms: dict[str, Any] | None = None
    throughput: dict[str, Any] | None = None
    image_input: dict[str, Any] | None = None
    e2e: dict[str, Any] | None = None
    data: dict[str, Any] | None = None  # which images played which part (lcpipe.data.roles.DataRoles.record)
    evidence: dict[str, Any] | None = None  # counts + per-image cosines the intervals come from
    timing: dict[str, Any] | None = None  # the interleaved rounds: how many, why they stopped, at what confidence
    cpu: dict[str, Any]
    versions: dict[str, Any]
    seconds: Number | None = None


class QuantizeRecord(Record):
    """quantize: the PTQ settings used and what NNCF quantized (lcpipe.quantization.graph counts)."""

    preset: str
    preset_reason: str | None = None
    subset_size: int
    calib_images: int | None = None
    fast_bias_correction: bool
    model_type: str | None = None
    target_device: str | None = None
    ignored_scope: dict[str, Any] | None = None
    fp32: dict[str, int] | None = None
    seconds: Number | None = None
    int8: dict[str, int]
    accuracy_control: dict[str, Any] | None = None
    stage_seconds: Number | None = None


# ---------------------------------------------------------------- plan.json

class PlanRecord(Record):
    """plan: every candidate, why it won or lost, and the shipped plan (lcpipe.plan.plan_record)."""

    chosen: dict[str, Any]
    non_int8_won: bool
    candidates: list[dict[str, Any]]
    irs: dict[str, Any]
    gates_checked: list[str]
    eval_images: int
    threads: int
    batch: int
    cpu_bf16: bool
    quantize_stage_preset: str | None
    winner_vs_best_passing: Number | None
    winner_vs_fastest_measured: Number | None
    speedup_vs_fp32_f32: Number | None
    speedup_vs_fp32_f32_ci95: list[Number] | None = None  # from the candidates' interleaved rounds
    tune: dict[str, Any] | None = None  # the images the fidelity checks looked at (lcpipe.data.roles)
    seconds: dict[str, Number]
    options: dict[str, Any]
    cpu: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None


# ---------------------------------------------------------------- metrics.json

class ModelFacts(Record):
    arch: str | None
    classes: int
    source_sha256: str | None


class TopK(Record):
    top1: Number | None
    top1_ci95: list[Number] | None = None
    topk: Number | None


class Flips(Record):
    lost: int | None  # right -> wrong
    gained: int | None
    mcnemar_p: Number | None = None  # exact McNemar test of lost vs gained


class DataSection(Record):
    """Which images played which part (lcpipe.data.roles): counts, where the tune images came from."""

    calib_images: int
    tune_images: int
    verdict_images: int
    overlap: int  # verdict images that are also calibration images (only with the opt-in)
    tune_from: str | None
    selecting: list[str]
    split: dict[str, Any] | None
    overlap_files: list[str]
    description: str


class TimingSection(Record):
    """validate's interleaved rounds (lcpipe.measure.rounds)."""

    mode: str  # adaptive | fixed
    rounds: int
    stop_reason: str | None  # decided | budget | max_rounds
    rounds_by_track: dict[str, int]
    seconds: Number
    confidence: Number | None  # per-look confidence of the speed-up gates' intervals
    min_rounds: int
    max_rounds: int
    max_seconds: Number | None
    gated: list[str]
    undecided: list[str]


class AccuracySection(Record):
    images: int
    labeled: bool
    classes: int
    top_k: int
    fp32: TopK
    int8: TopK
    int8_ptq: TopK | None = None
    onnxruntime: TopK | None = None
    top1_drop: Number | None
    top1_drop_ci95: list[Number] | None = None
    # INT8 vs FP32 fidelity; null when either model's outputs are not finite (see non_finite_outputs)
    agreement: Number | None
    agreement_ci95: list[Number] | None = None
    max_abs_logit_diff: Number | None
    mean_abs_logit_diff: Number | None
    rel_logit_error: Number | None
    cosine: Number | None
    cosine_ci95: list[Number] | None = None
    cosine_min: Number | None
    flips: Flips
    groups: dict[str, Any] | None
    non_finite_outputs: dict[str, int] | None = None  # model -> eval images with a NaN/inf logit (gate finite_outputs)
    onnxruntime_vs_fp32: dict[str, Any] | None = None
    routes: dict[str, Any] | None = None
    image_input: dict[str, Any] | None = None


class SpeedupSection(Record):
    """Speed-ups (lcpipe.measure.speedups.SPEEDUPS) with their 95 % intervals from the rounds; rows
    added there appear after these as ``<name>`` and ``<name>_ci95``."""

    latency_p50: Number | None
    latency_p50_ci95: list[Number] | None = None
    throughput: Number | None
    throughput_ci95: list[Number] | None = None
    latency_p50_vs_default: Number | None
    latency_p50_vs_default_ci95: list[Number] | None = None
    latency_p50_ptq: Number | None
    latency_p50_ptq_ci95: list[Number] | None = None
    size: Number | None
    e2e_latency_p50: Number | None
    e2e_latency_p50_ci95: list[Number] | None = None
    e2e_throughput: Number | None
    e2e_throughput_ci95: list[Number] | None = None
    # the headline: the shipped image-input route vs the baseline (see ShippedSection)
    e2e_latency_p50_vs_default: Number | None = None
    e2e_latency_p50_vs_default_ci95: list[Number] | None = None
    e2e_throughput_vs_default: Number | None = None
    e2e_throughput_vs_default_ci95: list[Number] | None = None


class QuantizeSection(Record):
    preset: str | None
    preset_reason: str | None
    subset_size: int | None
    fast_bias_correction: bool | None
    seconds: Number | None
    fake_quantize_ops: int | None
    quantized_ops: int | None
    quantizable_ops: int | None
    accuracy_control: dict[str, Any] | None


class PlanCandidate(Record):
    name: str
    int8: bool
    precision: str
    p50: Number | None
    p90: Number | None
    passed: bool
    failed_gates: list[str] | None
    chosen: bool
    why: str
    top1: Number | None
    top1_drop: Number | None
    agreement: Number | None
    cosine: Number | None
    rel_logit_error: Number | None
    flips_lost: int | None
    fidelity_images: int | None


class PlanSection(Record):
    chosen: str
    int8: bool
    description: str
    inference_precision: str
    runtime_config: dict[str, Any]
    why: str
    speedup_vs_fp32_f32: Number | None
    speedup_vs_fp32_f32_ci95: list[Number] | None = None
    tune_images: int | None = None
    search_seconds: Number
    eval_images: int
    gates_checked: list[str]
    candidates: list[PlanCandidate]


class ShippedSection(Record):
    """What the deploy bundle ships (model.xml / model_image.xml), whatever its precision, and the
    headline speed-ups: its image-input route against the baseline, what a user gets without lcpipe
    (the FP32 IR at the plugin's default float precision + Python float preprocessing)."""

    plan: str  # e.g. int8_mixed@bf16, fp32@bf16 (lcpipe.plan.CandidateSpec.name)
    int8: bool
    precision: str | None  # INFERENCE_PRECISION_HINT of its float ops
    description: str
    chosen_by: str  # "plan" (measured on this CPU) | "quantize" (no plan stage: the INT8 IR as quantized)
    runtime_config: dict[str, Any] | None  # the compile properties its figures were measured with
    latency_p50_ms: Number | None  # model only, batch 1
    e2e_p50_ms: Number | None  # image-input route: decoded image -> top-k, batch 1
    e2e_images_per_s: Number | None
    baseline: str  # in words
    baseline_precision: str | None
    baseline_e2e_p50_ms: Number | None
    # each speed-up with its 95 % interval from the interleaved rounds (speedup.*_ci95; null: no rounds)
    speedup_vs_default_e2e_p50: Number | None  # the headline
    speedup_vs_default_e2e_p50_ci95: list[Number] | None = None
    speedup_vs_default_e2e_throughput: Number | None
    speedup_vs_default_e2e_throughput_ci95: list[Number] | None = None
    speedup_vs_default_latency_p50: Number | None  # model only: vs the FP32 IR at the plugin default
    speedup_vs_default_latency_p50_ci95: list[Number] | None = None
    speedup_vs_f32_e2e_p50: Number | None  # secondary: vs the FP32 IR at f32 + Python preprocessing
    speedup_vs_f32_e2e_p50_ci95: list[Number] | None = None
    speedup_vs_f32_latency_p50: Number | None
    speedup_vs_f32_latency_p50_ci95: list[Number] | None = None


class Gate(Record):
    """One configured gate: the figure, the threshold picked for the CPU's ISA, the verdict."""

    name: str
    threshold: Any  # a number as the YAML gave it (None: no threshold for this ISA)
    value: Any  # the metrics.json figure (None: not measured)
    passed: bool  # verdict == "pass"
    verdict: str | None = None  # pass | fail | inconclusive
    interval: list[Number] | None = None  # what the verdict was decided on (None: the value itself)
    confidence: Number | None = None  # the interval's confidence
    method: str | None = None  # how the interval was computed, or why the value decides alone
    isa_key: str | None
    metric: str | None
    baseline: str | None = None  # what the figure compares the shipped model with (lcpipe.gates.gate_baseline)
    note: str


class MetricsRecord(Record):
    """metrics.json: the stable layout CI reads (README "metrics.json"); tests/golden pins its keys."""

    schema_: int = Field(alias="schema")
    pipeline: str
    model: ModelFacts
    shipped: ShippedSection | None = None  # written by every report since the `shipped` section exists
    data: DataSection | None = None  # which images the verdict rests on
    accuracy: AccuracySection
    latency_ms: dict[str, Any] | None  # model -> stats, and "e2e": route -> stats
    throughput_ips: dict[str, Any] | None  # model -> images/s, and "e2e": route -> images/s
    speedup: SpeedupSection
    timing: TimingSection | None = None
    decode_ms: dict[str, Any] | None
    size_mb: dict[str, Number]
    quantize: QuantizeSection | None
    inference_precision: dict[str, str] | None
    default_precision: str | None
    cpu: dict[str, Any]
    threads: int
    versions: dict[str, Any]
    plan: PlanSection | None = None  # with a plan stage
    gates: list[Gate] | None = None
    passed: bool | None = None
    verdict: str | None = None  # pass (every gate passes) | fail (any fails) | inconclusive (else)


# ---------------------------------------------------------------- bench.json

class BenchRecord(Record):
    """bench: one row per engine (lcpipe.measure.engines), goals, noise, end-to-end routes."""

    schema_: int = Field(alias="schema")
    pipeline: str
    model: dict[str, Any]
    threads: int
    batch: int
    rounds: int
    iterations: int
    definitions: dict[str, str]
    eval_images: int
    labeled: bool
    int8_precision: str | None = None
    plan: str | None = None
    engines: list[dict[str, Any]]
    goals: list[dict[str, Any]]
    noise: dict[str, Any]
    load_avg: dict[str, Any]
    e2e: dict[str, Any] | None = None
    cpu: dict[str, Any]
    versions: dict[str, Any]
    seconds: Number | None = None
