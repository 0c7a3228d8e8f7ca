"""Gate evaluation (pass / fail / inconclusive on intervals; the point mode), per-ISA threshold choice and
the metrics.json layout (fast, no models)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from lcpipe.config import GATE_SETTINGS, GatesConfig
from lcpipe.gates import GATES, REVERTED_GATE, evaluate_gates, explain, overall
from lcpipe.measure.accuracy import accuracy, compare_logits
from lcpipe.metrics import build_metrics, get_path
from lcpipe.render.summary import render_summary
from lcpipe.sysinfo import isa_level, pick_threshold

# Keys the README documents; a rename here is a breaking change for CI scripts reading metrics.json.
METRIC_KEYS = [
    "schema", "pipeline", "model.arch", "model.classes",
    "accuracy.images", "accuracy.labeled", "accuracy.top_k", "accuracy.fp32.top1", "accuracy.fp32.topk",
    "accuracy.int8.top1", "accuracy.int8.topk", "accuracy.top1_drop", "accuracy.agreement", "accuracy.cosine",
    "accuracy.cosine_min", "accuracy.max_abs_logit_diff", "accuracy.mean_abs_logit_diff",
    "accuracy.rel_logit_error", "accuracy.flips.lost", "accuracy.flips.gained",
    "latency_ms.fp32.p50", "latency_ms.fp32.p90", "latency_ms.fp32.mean", "latency_ms.int8.p50",
    "throughput_ips.fp32", "throughput_ips.int8",
    "speedup.latency_p50", "speedup.throughput", "speedup.size",
    "size_mb.fp32", "size_mb.int8", "quantize.preset", "quantize.seconds", "quantize.quantized_ops",
    "cpu.model", "cpu.isa", "threads", "versions",
]


def _validation(labeled: bool = True, latency: bool = True, isa: str = "avx2") -> dict[str, Any]:
    def top1(v: float) -> float | None:
        return v if labeled else None

    v: dict[str, Any] = {
        "images": 100, "labeled": labeled, "classes": 10, "top_k": 5, "threads": 2,
        "inference_precision": {"fp32": "f32", "int8": "f32"}, "default_precision": "f32",
        "accuracy": {"fp32": {"top1": top1(0.80), "topk": top1(0.95)}, "int8": {"top1": top1(0.78),
                                                                              "topk": top1(0.95)}},
        "fidelity": {"int8_vs_fp32": {"agreement": 0.96, "max_abs_logit_diff": 0.3, "mean_abs_logit_diff": 0.05,
                                      "rel_logit_error": 0.03, "cosine": 0.995, "cosine_min": 0.98,
                                      "flips": {"lost": 3 if labeled else None, "gained": 1 if labeled else None}}},
        "groups": None, "sizes_bytes": {"fp32": 12_000_000, "int8": 3_500_000},
        "cpu": {"model": "Test CPU", "isa": isa, "flags": ["avx2"], "cores": 2, "machine": "x86_64"},
        "versions": {"openvino": "x"},
    }
    if latency:
        v["latency_ms"] = {"fp32": {"p50": 4.0, "p90": 4.4, "mean": 4.1},
                           "int8": {"p50": 2.5, "p90": 2.9, "mean": 2.6}}
        v["throughput"] = {"fp32": {"images_per_s": 250.0}, "int8": {"images_per_s": 400.0}}
    return v


def _quantize(reverted: float | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"preset": "mixed", "preset_reason": "act hardswish", "subset_size": 300, "seconds": 12.0,
                         "int8": {"fake_quantize": 38, "quantized": 32, "quantizable": 33}}
    if reverted is not None:
        q["accuracy_control"] = {"reverted_ops": int(32 * reverted), "ptq_quantized_ops": 32,
                                 "reverted_fraction": reverted, "mostly_reverted": reverted > 0.5}
    return q


def _metrics(**kw: Any) -> dict[str, Any]:
    reverted = kw.pop("reverted", None)
    return build_metrics("t", _validation(**kw), _quantize(reverted), {"spec": {"arch": "PPLCNet_x1_0"}})


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def test_every_config_gate_has_a_metric():
    assert set(GatesConfig.model_fields) - set(GATE_SETTINGS) == set(GATES)
    assert GatesConfig(min_agreement=0.9, confidence=0.9).thresholds() == {"min_agreement": 0.9}


def test_metrics_layout_has_documented_keys():
    m = _metrics()
    missing = [k for k in METRIC_KEYS if get_path(m, k) is None]
    assert not missing
    assert m["pipeline"] == "t"
    assert m["accuracy"]["top1_drop"] == pytest.approx(0.02)
    assert m["speedup"]["latency_p50"] == pytest.approx(1.6)
    assert m["speedup"]["throughput"] == pytest.approx(1.6)


def test_min_and_max_gates_compare_in_the_right_direction():
    m = _metrics()
    rows = _by_name(evaluate_gates({"min_cosine": 0.99, "max_top1_drop": 0.01, "max_top1_flips": 3,
                                    "min_latency_speedup": 1.5, "max_rel_logit_error": 0.05}, m, mode="point"))
    assert rows["min_cosine"]["passed"] and rows["min_cosine"]["value"] == pytest.approx(0.995)
    assert not rows["max_top1_drop"]["passed"]  # 0.02 > 0.01
    assert rows["max_top1_flips"]["passed"]  # 3 <= 3: the limit itself passes
    assert rows["min_latency_speedup"]["passed"]
    assert rows["max_rel_logit_error"]["passed"]
    assert all(r["isa_key"] == "any" for r in rows.values())


@pytest.mark.parametrize(("isa", "expected", "key"), [
    ("amx", 2.0, "amx"), ("avx512_vnni", 1.5, "avx512_vnni"), ("avx512", 1.2, "default"), ("avx2", 1.2, "default"),
])
def test_speed_threshold_is_picked_for_the_measuring_isa(isa: str, expected: float, key: str):
    gates = {"min_latency_speedup": {"amx": 2.0, "avx512_vnni": 1.5, "default": 1.2}}
    row = evaluate_gates(gates, _metrics(isa=isa), mode="point")[0]
    assert (row["threshold"], row["isa_key"]) == (expected, key)
    assert row["passed"] == (1.6 >= expected)


def test_pick_threshold_falls_back_to_lower_isa_keys():
    assert pick_threshold({"avx2": 1.1, "default": 1.0}, "amx") == (1.1, "avx2")
    assert pick_threshold(0.5, "amx") == (0.5, "any")
    with pytest.raises(KeyError):
        pick_threshold({"amx": 2.0}, "avx2")


def test_isa_level_ordering():
    assert isa_level(frozenset({"avx2", "avx512f", "avx512_vnni", "amx_tile"})) == "amx"
    assert isa_level(frozenset({"avx2", "avx512f", "avx512_vnni"})) == "avx512_vnni"
    assert isa_level(frozenset({"avx2", "avx512f"})) == "avx512"
    assert isa_level(frozenset({"avx2"})) == "avx2"
    assert isa_level(frozenset()) == "default"


def test_threshold_missing_for_this_isa_fails_the_gate_instead_of_raising():
    row = evaluate_gates({"min_latency_speedup": {"amx": 2.0}}, _metrics(isa="avx2"))[0]
    assert not row["passed"] and "no threshold" in row["note"]


def test_unmeasured_figures_fail_their_gates():
    m = _metrics(labeled=False, latency=False)
    rows = _by_name(evaluate_gates({"max_top1_drop": 0.02, "min_latency_speedup": 1.0, "min_cosine": 0.9}, m,
                                   mode="point"))
    assert not rows["max_top1_drop"]["passed"] and rows["max_top1_drop"]["note"] == "not measured"
    assert rows["max_top1_drop"]["verdict"] == "fail"  # not measured fails, it is never "inconclusive"
    assert not rows["min_latency_speedup"]["passed"]
    assert rows["min_cosine"]["passed"]  # fidelity needs no labels


def test_mostly_reverted_accuracy_control_is_a_failure():
    rows = _by_name(evaluate_gates({}, _metrics(reverted=0.9)))
    assert not rows[REVERTED_GATE]["passed"] and rows[REVERTED_GATE]["isa_key"] == "builtin"
    rows = _by_name(evaluate_gates({}, _metrics(reverted=0.1)))
    assert rows[REVERTED_GATE]["passed"]
    assert evaluate_gates({}, _metrics()) == []  # no accuracy control: no built-in gate


def test_summary_prints_gate_table():
    m = _metrics()
    m["gates"] = evaluate_gates({"min_cosine": 1.01}, m, mode="point")
    text = render_summary(m)
    assert "min_cosine" in text and "FAIL" in text and "Test CPU" in text and "verdict: FAIL" in text
    unlabeled = _metrics(labeled=False, latency=False)
    unlabeled["gates"] = []
    assert "n/a" in render_summary(unlabeled)


def test_compare_logits_counts_flips_and_errors():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]])
    got = copy.deepcopy(ref)
    got[1] = [0.0, 1.0, 2.0]  # image 1: was right (label 1), now wrong
    labels = np.array([0, 1, 1])
    out = compare_logits(ref, got, labels)
    assert out["agreement"] == pytest.approx(2 / 3)
    assert out["flips"] == {"lost": 1, "gained": 0}
    assert out["max_abs_logit_diff"] == pytest.approx(1.0)
    assert out["rel_logit_error"] == pytest.approx(1.0 / 3.0)
    assert compare_logits(ref, ref, None)["cosine"] == pytest.approx(1.0)
    assert compare_logits(ref, ref, None)["flips"] == {"lost": None, "gained": None}


def test_accuracy_topk():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert accuracy(logits, np.array([2, 0]), 2) == {"top1": 0.5, "topk": 1.0}
    assert accuracy(logits, None, 2) == {"top1": None, "topk": None}


@pytest.mark.parametrize("pre", [
    {"mode": "paddleclas", "resize_short": 256, "crop": 224},
    {"mode": "timm", "crop": 224, "crop_pct": 0.9, "interpolation": "bicubic"},
    {"mode": "resize", "size": (80, 160)},
])
def test_predict_rebuilds_preprocessing_from_ir_metadata(pre: dict[str, Any]):
    """`lcpipe predict` rebuilds the PreprocessConfig from preprocess_dict (rt_info / preprocess.json)."""
    from lcpipe.config import PreprocessConfig
    from lcpipe.data import preprocess_dict
    from lcpipe.predict import preprocess_from_dict

    cfg = PreprocessConfig(**pre, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    back = preprocess_from_dict(preprocess_dict(cfg))
    assert preprocess_dict(back) == preprocess_dict(cfg)
    assert back.input_hw == cfg.input_hw


_ROUTES = ("fp32_py", "int8_py", "fp32_image", "int8_image")
E2E_KEYS = [f"latency_ms.e2e.{r}.{q}" for r in _ROUTES for q in ("p50", "p90")]
E2E_KEYS += [f"throughput_ips.e2e.{r}" for r in _ROUTES]
E2E_KEYS += ["speedup.e2e_latency_p50", "speedup.e2e_throughput", "decode_ms.p50",
             "accuracy.image_input.fp32.max_abs_logit_diff", "accuracy.image_input.int8.top1_agreement"]


def _with_e2e(default: str = "bf16") -> dict[str, Any]:
    """An AMX-like machine: the plugin's default precision is bf16, so validate timed the FP32 route at it
    too (fp32_py_default, the baseline); with default f32, fp32_py is the baseline itself."""
    from lcpipe.measure.e2e import baseline_route, e2e_speedups

    v = _validation()
    v["default_precision"] = default
    p50 = {"fp32_py": 6.0, "int8_py": 4.5, "fp32_image": 4.0, "int8_image": 2.5}
    if default != "f32":
        p50 = {"fp32_py_default": 3.5, **p50}
    v["e2e"] = {"latency_ms": {r: {"p50": t, "p90": t * 1.1, "mean": t} for r, t in p50.items()},
                "throughput": {r: {"images_per_s": 1000 / t} for r, t in p50.items()},
                "decode_ms": {"p50": 0.5, "p90": 0.6, "mean": 0.5, "samples": 9},
                "baseline_route": baseline_route("f32", default)}
    v["e2e"]["speedup"] = e2e_speedups(v["e2e"])
    v["image_input"] = {t: {"images": 100, "top1_agreement": 1.0, "same_top1": True, "max_abs_logit_diff": 1e-5,
                            "rel_logit_diff": 1e-6, "top1": 0.8} for t in ("fp32", "int8")}
    from lcpipe.metrics import shipped_metrics

    m = build_metrics("t", v, _quantize(), {})
    m["shipped"] = shipped_metrics(m)
    return m


def test_e2e_speedups_against_the_baseline_and_f32_and_the_gates_say_which():
    m = _with_e2e()
    assert [k for k in E2E_KEYS if get_path(m, k) is None] == []
    assert m["speedup"]["e2e_latency_p50"] == pytest.approx(2.4)  # fp32_py / int8_image
    assert m["speedup"]["e2e_throughput"] == pytest.approx(2.4)
    assert m["speedup"]["e2e_latency_p50_vs_default"] == pytest.approx(1.4)  # fp32_py_default / int8_image
    assert m["speedup"]["e2e_throughput_vs_default"] == pytest.approx(1.4)
    assert m["speedup"]["latency_p50"] == pytest.approx(1.6)  # model-only figures unchanged by the e2e entry
    shipped = m["shipped"]
    assert (shipped["plan"], shipped["int8"], shipped["chosen_by"]) == ("int8_mixed@f32", True, "quantize")
    assert shipped["speedup_vs_default_e2e_p50"] == pytest.approx(1.4) and shipped["baseline_e2e_p50_ms"] == 3.5
    assert shipped["e2e_p50_ms"] == 2.5 and shipped["speedup_vs_f32_e2e_p50"] == pytest.approx(2.4)
    assert shipped["speedup_vs_default_e2e_p50_ci95"] is None  # no per-round figures here: no interval
    # the e2e gates use the headline baseline, the model-only ones the FP32 IR at f32; each row says so
    # (point mode: these figures have no rounds, so the interval mode would say inconclusive)
    rows = _by_name(evaluate_gates({"min_e2e_latency_speedup": 1.5, "min_e2e_throughput_speedup": 1.2,
                                    "min_latency_speedup": 1.5, "min_fp32_top1": 0.5}, m, mode="point"))
    assert rows["min_e2e_latency_speedup"]["value"] == pytest.approx(1.4)
    assert not rows["min_e2e_latency_speedup"]["passed"] and rows["min_e2e_throughput_speedup"]["passed"]
    assert rows["min_e2e_latency_speedup"]["baseline"] == "FP32 IR at bf16 (plugin default) + Python preprocessing"
    assert rows["min_latency_speedup"]["baseline"] == "FP32 IR at f32" and rows["min_fp32_top1"]["baseline"] is None
    rows = _by_name(evaluate_gates({"min_e2e_latency_speedup": 1.0}, _metrics()))
    assert not rows["min_e2e_latency_speedup"]["passed"]  # not measured fails
    # where the plugin's default is f32, fp32_py is the baseline: the two speed-ups are one figure
    f32 = _with_e2e("f32")
    assert f32["speedup"]["e2e_latency_p50_vs_default"] == f32["speedup"]["e2e_latency_p50"] == pytest.approx(2.4)
    text = render_summary(m)
    assert text.startswith("shipped: int8_mixed@f32 (the quantize stage's IR: no plan stage compared it with FP32): "
                           "1.40x end to end vs FP32 IR at bf16 (plugin default) + Python preprocessing (p50 2.50 "
                           "vs 3.50 ms, batch 1)")
    assert "INT8 image-input 2.50 ms" in text and "FP32 bf16 + Python (baseline) 3.50 ms" in text
    assert "latency 1.40x, throughput 1.40x vs the baseline; 2.40x, 2.40x vs FP32 f32 + Python" in text
    from lcpipe.render.report import render_html, render_markdown

    md = render_markdown({**m, "gates": [], "passed": True})
    assert "| INT8 image-input IR + uint8 resize/crop | 2.5 | 2.75 | 400 | 1.4x | 2.4x |" in md
    assert "| FP32 IR (bf16, plugin default) + Python float preprocessing (baseline) | 3.5 |" in md
    assert "Image-input IRs" in md and md.splitlines()[2].startswith("**shipped: int8_mixed@f32")
    html = render_html({**m, "gates": [], "passed": True})
    assert "<td>INT8 image-input IR + uint8 resize/crop</td><td>2.5</td>" in html and "Image-input IRs" in html


# ------------------------------------------------------------------ three-valued gates on intervals

FP32_ROUNDS = [4.0, 4.1, 3.9, 4.0, 4.05]  # per-round p50 ms: the speed-up is ~1.6 in every round
INT8_ROUNDS = [2.5, 2.55, 2.45, 2.5, 2.52]


def _interval_run(look_confidence: float = 0.95) -> tuple[dict[str, Any], dict[str, Any]]:
    """metrics.json and the validation.json it came from, with the evidence and rounds intervals need:
    100 images, 96 agree, FP32 80 / INT8 78 right (3 lost, 1 gained), as in _validation."""
    v = _validation()
    v["evidence"] = {"images": 100, "agree": 96, "fp32_correct": 80, "int8_correct": 78,
                     "paired": {"both": 77, "lost": 3, "gained": 1, "neither": 19},
                     "cosines": (0.995 + np.random.default_rng(0).normal(0, 0.002, 100)).tolist()}
    v["latency_ms"]["fp32"]["round_p50"], v["latency_ms"]["int8"]["round_p50"] = FP32_ROUNDS, INT8_ROUNDS
    v["timing"] = {"mode": "adaptive", "rounds": 5, "stop_reason": "decided", "rounds_by_track": {"latency": 5},
                   "seconds": 1.0, "confidence": look_confidence, "min_rounds": 4, "max_rounds": 32,
                   "max_seconds": 30.0, "gated": ["min_latency_speedup"], "undecided": []}
    return build_metrics("t", v, _quantize(), {}), v


@pytest.mark.parametrize(("gate", "limit", "expected"), [
    ("min_agreement", 0.90, "pass"), ("min_agreement", 0.95, "inconclusive"), ("min_agreement", 0.99, "fail"),
    ("max_top1_drop", 0.10, "pass"), ("max_top1_drop", 0.02, "inconclusive"), ("max_top1_drop", -0.05, "fail"),
    ("min_latency_speedup", 1.5, "pass"), ("min_latency_speedup", 1.6, "inconclusive"),
    ("min_latency_speedup", 1.7, "fail"),
    ("min_cosine", 0.99, "pass"), ("min_cosine", 0.995, "inconclusive"), ("min_cosine", 0.999, "fail"),
])
def test_a_gate_passes_fails_or_is_inconclusive_by_where_its_interval_lies(gate: str, limit: float, expected: str):
    m, v = _interval_run()
    row = evaluate_gates({gate: limit}, m, v)[0]
    assert row["verdict"] == expected and row["passed"] == (expected == "pass")
    low, high = row["interval"]
    assert low <= row["value"] <= high and row["confidence"] == 0.95
    assert ("straddles" in explain(row)) == (expected == "inconclusive") and gate in explain(row)


def test_gate_intervals_are_the_statistics_libraries_at_the_confidence_asked():
    from lcpipe.measure.stats import PairedCounts, proportion_ci, ratio_ci, top1_drop_ci

    m, v = _interval_run(look_confidence=0.9875)
    rows = _by_name(evaluate_gates({"min_agreement": 0.9, "max_top1_drop": 0.1, "min_latency_speedup": 1.0}, m, v,
                                   confidence=0.99))
    assert rows["min_agreement"]["interval"] == pytest.approx(proportion_ci(96, 100, 0.99), abs=1e-6)
    assert rows["max_top1_drop"]["interval"] == pytest.approx(top1_drop_ci(PairedCounts(77, 3, 1, 19), 0.99), abs=1e-6)
    # a speed-up gate uses the confidence of validate's last look (adaptive rounds), not gates.confidence
    assert rows["min_latency_speedup"]["confidence"] == 0.9875
    expected = ratio_ci(FP32_ROUNDS, INT8_ROUNDS, 0.9875).interval
    assert rows["min_latency_speedup"]["interval"] == pytest.approx(expected, abs=1e-6)
    wider = evaluate_gates({"min_agreement": 0.9}, m, v, confidence=0.999)[0]["interval"]
    assert wider[0] < rows["min_agreement"]["interval"][0] and wider[1] > rows["min_agreement"]["interval"][1]


def test_counts_and_worst_cases_decide_alone_and_the_point_mode_never_says_inconclusive():
    m, v = _interval_run()
    rows = _by_name(evaluate_gates({"max_top1_flips": 3, "max_rel_logit_error": 0.02}, m, v))
    assert rows["max_top1_flips"]["verdict"] == "pass" and rows["max_top1_flips"]["interval"] is None
    assert "exact" in rows["max_top1_flips"]["method"]
    assert rows["max_rel_logit_error"]["verdict"] == "fail"  # 0.03 > 0.02, a worst case over the images
    point = evaluate_gates({"min_agreement": 0.95, "min_latency_speedup": 1.6}, m, v, mode="point")
    assert {r["verdict"] for r in point} <= {"pass", "fail"} and all(r["interval"] is None for r in point)


def test_without_evidence_an_interval_gate_is_inconclusive_not_passed():
    row = evaluate_gates({"min_agreement": 0.5}, _metrics())[0]
    assert row["verdict"] == "inconclusive" and not row["passed"]


def test_the_run_verdict_is_fail_over_inconclusive_over_pass():
    rows = [{"verdict": "pass"}, {"verdict": "inconclusive"}]
    assert overall(rows) == "inconclusive" and overall([*rows, {"verdict": "fail"}]) == "fail"
    assert overall([{"verdict": "pass"}]) == "pass" and overall([]) == "pass"


def test_metrics_json_carries_every_interval_from_the_evidence():
    from lcpipe.measure.stats import mcnemar_exact_p, proportion_ci, ratio_ci

    m, _ = _interval_run()
    acc = m["accuracy"]
    assert acc["fp32"]["top1_ci95"] == pytest.approx(proportion_ci(80, 100), abs=1e-6)
    assert acc["int8"]["top1_ci95"] == pytest.approx(proportion_ci(78, 100), abs=1e-6)
    assert acc["agreement_ci95"] == pytest.approx(proportion_ci(96, 100), abs=1e-6)
    assert acc["top1_drop_ci95"][0] < 0.02 < acc["top1_drop_ci95"][1]
    assert acc["flips"]["mcnemar_p"] == pytest.approx(mcnemar_exact_p(3, 1), abs=1e-4)
    assert acc["cosine_ci95"][0] < acc["cosine"] < acc["cosine_ci95"][1]
    est = ratio_ci(FP32_ROUNDS, INT8_ROUNDS)
    assert m["speedup"]["latency_p50"] == pytest.approx(est.estimate, abs=1e-4)  # the centre of its interval
    assert m["speedup"]["latency_p50_ci95"] == pytest.approx(est.interval, abs=1e-4)
    assert m["speedup"]["throughput"] == pytest.approx(1.6) and m["speedup"]["throughput_ci95"] is None  # no rounds
    text = render_summary({**m, "gates": evaluate_gates({"min_latency_speedup": 1.0}, m, _interval_run()[1])})
    assert "McNemar p = 0.62" in text and "3 lost, 1 gained" in text and "verdict: PASS" in text
    assert "latency speed-up 1.60x [1.59, 1.61]" in text
