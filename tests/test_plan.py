"""Precision plan chosen by measurement: the selection rule on given figures, and the plan stage on
the real text-line model (NNCF, OpenVINO, real images; no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import pytest

import lcpipe
from lcpipe.plan import CandidateSpec, candidate_grid, is_int8_plan, select_plan
from lcpipe.render.plan import plan_headline


def _row(name: str, p50: float | None, failed: list[str] | None = None) -> dict:
    return {"name": name, "p50": p50, "failed_gates": failed or []}


def test_selection_fastest_passing_wins() -> None:
    rows = [_row("int8_performance@f32", 0.80, ["min_cosine"]),  # fastest, but fails a gate
            _row("int8_mixed@f32", 1.00),
            _row("int8_performance_stem_float@f32", 0.90),
            _row("fp32@bf16", None),  # could not run
            _row("fp32@f32", 1.70)]
    rows[3]["error"] = "bf16 not supported"
    winner, why = select_plan(rows)
    assert winner == "int8_performance_stem_float@f32"
    assert why["int8_performance@f32"] == "failed gate(s): min_cosine"
    assert why["fp32@bf16"] == "could not run: bf16 not supported"
    assert why["int8_mixed@f32"].startswith("passes, but 11.1% slower than int8_performance_stem_float@f32")
    assert why[winner].startswith("fastest candidate that passes") and "11.1% ahead" in why[winner]


def test_selection_non_int8_and_no_winner() -> None:
    winner, why = select_plan([_row("int8_mixed@f32", 0.9, ["max_top1_drop", "min_agreement"]),
                               _row("fp32@bf16", 1.1, ["max_rel_logit_error"]), _row("fp32@f32", 1.6)])
    assert winner == "fp32@f32"
    assert why["int8_mixed@f32"] == "failed gate(s): max_top1_drop, min_agreement"
    assert select_plan([_row("a", 1.0, ["min_cosine"]), _row("b", None)])[0] is None
    # exact ties on p50 resolve by name, so the choice never depends on dict order
    unchecked = {"name": "fp32@bf16", "p50": 1.3, "failed_gates": None}  # fidelity: until_winner stopped before it
    winner, why = select_plan([_row("int8_mixed@f32", 1.0), unchecked])
    assert winner == "int8_mixed@f32" and why["fp32@bf16"] == (
        "fidelity not checked: 30.0% slower than int8_mixed@f32, so it could not win")
    assert select_plan([_row("b", 1.0), _row("a", 1.0)])[0] == "a"


def test_candidate_grid_names_and_dedup() -> None:
    grid = candidate_grid(["performance", "mixed"], [[], ["stem"], ["fc", "stem"], ["stem", "fc"]],
                          ["f32", "bf16"], with_fp32=True)
    names = [c.name for c in grid]
    assert len(names) == len(set(names)) == 2 * 3 * 2 + 2
    assert "int8_performance_stem_float_fc_float@bf16" in names and names[-2:] == ["fp32@f32", "fp32@bf16"]
    assert CandidateSpec(None, (), "bf16").describe() == "FP32 IR, float ops in bf16 (not quantized)"
    p = {"chosen": "fp32@f32", "int8": False, "description": "FP32 IR, float ops in f32 (not quantized)",
         "inference_precision": "f32", "candidates": [{"name": "int8_mixed@f32", "int8": True}]}
    assert plan_headline(p) == ("shipped plan fp32@f32: FP32 IR, float ops in f32 (not quantized); no INT8 candidate "
                                "was faster within the gates (compile with INFERENCE_PRECISION_HINT=f32).")
    assert "only float candidates were measured" in plan_headline({**p, "candidates": [{"int8": False}]})
    assert is_int8_plan("int8_mixed_stem_float@bf16") and not is_int8_plan("fp32@bf16")


def test_on_unlabeled_data_the_plan_leaves_the_label_gates_to_the_report() -> None:
    """Without labels no candidate (not even the FP32 reference) has a top-1 drop or flips: judging by
    them would reject every candidate; the report marks them failed as "not measured" instead."""
    from lcpipe.plan import plan_gates

    gates = {"min_latency_speedup": 1.0, "min_cosine": 0.98, "max_top1_drop": 0.02, "max_top1_flips": 2}
    assert list(plan_gates(gates, labeled=True)) == ["max_top1_drop", "max_top1_flips", "min_cosine"]
    assert list(plan_gates(gates, labeled=False)) == ["min_cosine"]


def _plan_yaml(tmp_path: Path, plan: str, gates: str) -> Path:
    yaml = helpers.textline_yaml(tmp_path / "tl.yaml", f"- plan: {plan}\n"
                                 "- validate: {rounds: 2, iterations: 10, throughput: false}\n- report: {}\n"
                                 "- deploy: {}")
    yaml.write_text(yaml.read_text() + gates)
    return yaml


def _bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.slow
def test_plan_auto_on_textline_ships_the_fastest_passing_candidate(tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    import openvino as ov

    from lcpipe.quantization.graph import count_quantization

    yaml = _plan_yaml(tmp_path, "{rounds: 4, iterations: 10, fidelity: all}",
                      "gates: {max_top1_drop: 0.05, min_agreement: 0.9}\n")
    result = lcpipe.run_pipeline(yaml, out=tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "plan" / "plan.json").read_text())
    precisions = 2 if _bf16() else 1
    expected = {c.name for c in candidate_grid(["performance", "mixed"], [[], ["stem"], ["fc"], ["stem", "fc"]],
                                               ["f32", "bf16"][:precisions], with_fp32=True)}
    rows = plan["candidates"]
    assert {r["name"] for r in rows} == expected and len(rows) == 9 * precisions
    assert plan["gates_checked"] == ["max_top1_drop", "min_agreement"]
    for r in rows:  # every candidate was timed and judged on the whole eval set
        assert r["p50"] is not None and r["p90"] >= r["p50"] and r["fidelity"]["agreement"] is not None
        assert [g["name"] for g in r["gates"]] == ["max_top1_drop", "min_agreement"]
        assert r["failed_gates"] == [g["name"] for g in r["gates"] if not g["passed"]]
    passing = [r for r in rows if not r["failed_gates"]]
    winner = [r for r in rows if r["chosen"]]
    assert len(winner) == 1 and not winner[0]["failed_gates"]
    assert winner[0]["p50"] == min(r["p50"] for r in passing)  # fastest passing, by the recorded figures
    assert plan["winner_vs_best_passing"] == 1.0 and plan["chosen"]["name"] == winner[0]["name"]

    # the deploy bundle serves the winner: its plan in rt_info, its graph (FakeQuantize count), its config
    deployed = tmp_path / "run" / "deploy" / "model.xml"
    model = ov.Core().read_model(str(deployed))
    record = json.loads(model.get_rt_info(["lcpipe", "plan"]).astype(str))
    assert record["name"] == winner[0]["name"]
    assert record["runtime_config"]["INFERENCE_PRECISION_HINT"] == winner[0]["precision"]
    counts = count_quantization(model)
    if winner[0]["int8"]:
        assert counts["fake_quantize"] == plan["irs"][winner[0]["ir"]]["fake_quantize"] > 0
    else:
        assert counts["fake_quantize"] == 0
    bundle_plan = json.loads((tmp_path / "run" / "deploy" / "plan.json").read_text())
    assert bundle_plan["chosen"] == winner[0]["name"] == result.metrics["plan"]["chosen"]
    assert len(result.metrics["plan"]["candidates"]) == len(rows)
    report = (tmp_path / "run" / "report.md").read_text()
    assert all(r["name"] in report for r in rows) and "Precision plan" in report
    html = (tmp_path / "run" / "report.html").read_text()
    assert all(r["name"] in html for r in rows)
    # validate timed and judged the shipped plan at its own precision
    validation = json.loads((tmp_path / "run" / "validate" / "validation.json").read_text())
    assert validation["inference_precision"]["int8"] == winner[0]["precision"]
    # (read before lcpipe bench reruns the pipeline up to plan in this run dir, which drops report + deploy)
    image_ir = ov.Core().read_model(str(deployed.with_name("model_image.xml")))  # keeps the plan's rt_info
    # lcpipe bench times the shipped plan (not the quantize IR) at its precision, model-only and end to end
    from lcpipe.predict import compile_properties
    from lcpipe.runner import run_stage_after

    _, outputs = run_stage_after(lcpipe.load_config(yaml), "bench", purpose="lcpipe bench", out=tmp_path / "run",
                                 updates={"engines": ["ov_int8"], "warmup": 1, "rounds": 1, "iterations": 5,
                                          "batch": 2, "eval_images": 20, "e2e_images": 4, "throughput_seconds": 0.2,
                                          "chart": False, "progress": False})
    bench = json.loads(outputs["bench"].read_text())
    assert bench["int8_precision"] == winner[0]["precision"]
    int8_row = next(e for e in bench["engines"] if e["name"] == "ov_int8")
    assert Path(int8_row["model"]) == tmp_path / "run" / "plan" / "model.xml"
    assert int8_row["info"]["precision_hint"] == winner[0]["precision"]
    assert bench["e2e"]["latency_ms"]["int8_image"]["p50"] > 0
    assert bench["plan"] == winner[0]["name"]
    assert (f"int8 routes = shipped plan {winner[0]['name']} {winner[0]['precision']})"
            in (tmp_path / "run" / "bench" / "bench.md").read_text())
    # lcpipe predict compiles the shipped IR with the plan's precision
    assert compile_properties(model, None)["INFERENCE_PRECISION_HINT"] == winner[0]["precision"]
    assert compile_properties(image_ir, None)["INFERENCE_PRECISION_HINT"] == winner[0]["precision"]


@pytest.mark.slow
def test_plan_ships_fp32_when_no_int8_candidate_passes_and_says_so(tmp_path: Path) -> None:
    """max_rel_logit_error 0: only the FP32 IR at f32 (the reference itself) can pass."""
    pytest.importorskip("nncf")
    yaml = _plan_yaml(tmp_path, "{presets: [performance], keep_float: [[], [stem]], rounds: 2, iterations: 10, "
                      "screen_images: 20}", "gates: {max_rel_logit_error: 0.0}\n")
    result = lcpipe.run_pipeline(yaml, out=tmp_path / "run")
    plan = result.metrics["plan"]
    assert plan["chosen"] == "fp32@f32" and plan["int8"] is False
    assert all(r["failed_gates"] in (["max_rel_logit_error"], None) for r in plan["candidates"] if not r["chosen"])
    images = plan["eval_images"]
    for r in plan["candidates"]:  # the screen (20 images) only rejects; the winner is judged on every image
        assert r["fidelity_images"] in ((images,) if r["chosen"] else (20, None))
    for r in plan["candidates"]:  # until_winner: only candidates slower than the winner go unchecked
        assert r["failed_gates"] is not None or r["p50"] >= next(c["p50"] for c in plan["candidates"] if c["chosen"])
    for out in ("report.md", "deploy/README.txt"):  # said first, and the INT8 candidates it beat only as such
        text = (tmp_path / "run" / out).read_text()
        assert "shipped: FP32 IR at f32 (no INT8 candidate was faster within the gates)" in text.splitlines()[2] + \
            text.splitlines()[1], out
        assert "no INT8 candidate was faster within the gates (compile with INFERENCE_PRECISION_HINT=f32)" in text
    assert result.metrics["accuracy"]["max_abs_logit_diff"] == 0.0  # validate compared the FP32 IR with itself


def test_a_stage_before_a_later_producer_of_its_input_is_a_config_error(tmp_path: Path) -> None:
    """validate before plan would measure the quantize IR while report ships the planned one."""
    from click.testing import CliRunner

    from lcpipe.cli import cli

    yaml = helpers.textline_yaml(tmp_path / "tl.yaml", "- validate: {}\n- plan: {}\n- report: {}")
    res = CliRunner().invoke(cli, ["run", str(yaml), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "stages[5].validate uses ir_int8, which stages[6].plan produces again after it" in res.output
    assert not (tmp_path / "run" / "import").exists()  # refused before any stage ran
    # the same stages in the right order pass the check (plan consumes ir_int8 and produces it again)
    from lcpipe.runner import check_artifact_flow

    good = helpers.textline_yaml(tmp_path / "ok.yaml", "- plan: {}\n- validate: {}\n- report: {}")
    check_artifact_flow(lcpipe.load_config(good))


def _plan_section(chosen: str, int8: bool, precision: str) -> dict:
    from lcpipe.plan import runtime_config

    desc = (f"FP32 IR, float ops in {precision} (not quantized)" if not int8
            else f"INT8 (performance preset), float ops in {precision}")
    candidates = [{"name": n, "int8": n.startswith("int8"), "precision": precision, "p50": 1.0, "p90": 1.1,
                   "passed": n == chosen, "failed_gates": [] if n == chosen else ["min_agreement"],
                   "chosen": n == chosen, "why": "", "top1": None, "top1_drop": None, "agreement": None,
                   "cosine": None, "rel_logit_error": None, "flips_lost": None, "fidelity_images": 100}
                  for n in dict.fromkeys([chosen, f"int8_performance@{precision}"])]
    return {"chosen": chosen, "int8": int8, "description": desc, "inference_precision": precision,
            "runtime_config": runtime_config(precision), "why": "fastest candidate that passes every fidelity gate",
            "search_seconds": 12.5, "eval_images": 100, "gates_checked": [], "candidates": candidates}


def _rendered(m: dict) -> dict[str, str]:
    from lcpipe.deploy.readme import deploy_readme
    from lcpipe.metrics import shipped_metrics
    from lcpipe.render.report import render_markdown
    from lcpipe.render.summary import render_summary

    m = {**m, "gates": [], "passed": True, "pipeline": "t"}
    m["shipped"] = shipped_metrics(m)
    return {"md": render_markdown(m), "summary": render_summary(m),
            "readme": deploy_readme(m, {"mode": "resize", "size": [80, 160]}, False)}


def _serve_py(m: dict) -> str:
    """The bundle's serve.py for these metrics."""
    from lcpipe.deploy.snippet import serve_script, serving_compile_config
    from lcpipe.metrics import shipped_metrics

    m = {**m, "pipeline": "t"}
    m["shipped"] = shipped_metrics(m)
    return serve_script({"mode": "resize", "size": [80, 160]}, serving_compile_config(m), pipeline="t",
                        served="model_image.xml")


def test_deploy_is_a_stage_after_report() -> None:
    """The bundle packs metrics.json, so deploy needs the report before it; a pipeline may leave it out."""
    from lcpipe.errors import ConfigError
    from lcpipe.runner import check_artifact_flow, config_from_dict

    def pipeline(*stages: str) -> dict:
        return {"name": "t", "model": {"source": {"format": "onnx", "path": "/m.onnx"}},
                "stages": ["import", "export", "convert", "quantize", "validate", *stages]}

    check_artifact_flow(config_from_dict(pipeline("report")))
    check_artifact_flow(config_from_dict(pipeline("report", "deploy")))
    with pytest.raises(ConfigError, match=r"stages\[5\]\.deploy: needs metrics"):
        check_artifact_flow(config_from_dict(pipeline("deploy", "report")))


def test_reports_name_the_shipped_plan_and_its_precision() -> None:
    from test_gates import _metrics

    m = _metrics()
    m["inference_precision"] = {"fp32": "f32", "int8": "bf16"}
    m["plan"] = _plan_section("int8_performance@bf16", True, "bf16")
    out = _rendered(m)
    assert "the FP32 IR's in f32, the shipped plan's IR (int8_performance@bf16) in bf16" in out["md"]
    assert "plan: shipped plan int8_performance@bf16" in out["summary"]
    for text in out.values():  # every output starts with what ships
        assert "shipped: int8_performance@bf16: " in text.splitlines()[0] + text.splitlines()[1] + \
            text.splitlines()[2], text[:300]
    assert "model_image.xml/.bin   the shipped model (INT8 (performance preset), float ops in bf16)" in out["readme"]
    config = "{'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'bf16'}"
    assert f"compile model_image.xml with {config}" in out["readme"]
    assert f"COMPILE = {config}\n" in _serve_py(m)  # what serve.py passes to compile_model

    m["inference_precision"] = {"fp32": "f32", "int8": "bf16"}
    m["plan"] = _plan_section("fp32@bf16", False, "bf16")
    out = _rendered(m)
    for name, text in out.items():  # INT8 is said only of the candidate it beat
        assert "shipped: FP32 IR at bf16 (no INT8 candidate was faster within the gates)" in text, name
        assert [line for line in text.splitlines() if "INT8" in line and "no INT8 candidate" not in line] == [], name
    assert "shipped FP32 (bf16) top-1" in out["summary"] and "convs+matmuls quantized" in out["summary"]


def test_without_a_plan_the_serving_snippet_compiles_at_the_measured_precision() -> None:
    from test_gates import _metrics

    m = _metrics()
    m["inference_precision"] = {"fp32": "f32", "int8": "f32"}
    out = _rendered(m)
    assert "the shipped model (INT8 (mixed preset), float ops in f32) taking images" in out["readme"]
    assert out["summary"].startswith("shipped: int8_mixed@f32 (the quantize stage's IR: no plan stage compared it")
    assert "{'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'}" in out["readme"]
    assert "COMPILE = {'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'}\n" in _serve_py(m)
    assert "plan:" not in out["summary"]
    m["inference_precision"] = None  # not recorded: the README says the snippet runs at the plugin default
    assert "plugin's default float precision" in _rendered(m)["readme"]


def _tiny_ir(path: Path, plan: dict | None) -> Path:
    """A one-op IR (real OpenVINO), with the plan stage's rt_info record when ``plan`` is given."""
    import openvino as ov

    x = ov.opset13.parameter([1, 3, 4, 4], ov.Type.f32, name="x")
    model = ov.Model([ov.opset13.relu(x)], [x], "tiny")
    if plan is not None:
        model.set_rt_info(json.dumps(plan), ["lcpipe", "plan"])
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def test_a_planned_ir_sets_the_precision_of_bench_and_predict(tmp_path: Path) -> None:
    import openvino as ov

    from lcpipe.ir import planned_precision, read_lcpipe_rt_info
    from lcpipe.measure.bench_engines import int8_float_precision
    from lcpipe.predict import compile_properties
    from lcpipe.runner import last_producer

    planned = _tiny_ir(tmp_path / "planned.xml", {"name": "int8_performance@bf16", "inference_precision": "bf16"})
    plain = _tiny_ir(tmp_path / "plain.xml", None)
    model = ov.Core().read_model(str(planned))
    assert read_lcpipe_rt_info(model)["plan"]["name"] == "int8_performance@bf16"  # the one reader knows "plan"
    assert planned_precision(model) == planned_precision(planned) == "bf16" and planned_precision(plain) is None
    # bench: the option wins, else the plan's precision, else f32 (as validate)
    assert int8_float_precision(planned, None) == "bf16"
    assert int8_float_precision(planned, "f32") == "f32" and int8_float_precision(plain, None) == "f32"
    # lcpipe bench runs the pipeline up to the last stage producing what bench consumes: the shipped IR
    assert last_producer(["import", "export", "convert", "quantize", "plan", "validate"], "bench") == "plan"
    assert last_producer(["import", "export", "convert", "quantize", "validate"], "bench") == "quantize"
    # predict: a planned IR compiles at its plan's precision; without a plan the plugin default stays
    assert compile_properties(model, 2) == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2,
                                            "INFERENCE_PRECISION_HINT": "bf16"}
    assert compile_properties(ov.Core().read_model(str(plain)), None) == {"PERFORMANCE_HINT": "LATENCY"}


@pytest.mark.slow
def test_shared_statistics_candidates_equal_plain_nncf_quantize(tmp_path: Path) -> None:
    """quantize_shared uses NNCF internals (one statistics pass for every candidate); what it builds must
    be what the public nncf.quantize builds with the same settings: the guard on the pinned versions."""
    pytest.importorskip("nncf")
    import openvino as ov

    from lcpipe.data import load_split
    from lcpipe.ir import ov_config, read_ir
    from lcpipe.measure.runtime import infer_ov
    from lcpipe.quantization.graph import count_quantization, layer_names
    from lcpipe.quantization.ptq import quantize
    from lcpipe.quantization.settings import nncf_params
    from lcpipe.quantization.shared_statistics import quantize_shared

    config = lcpipe.load_config(helpers.textline_yaml(tmp_path / "tl.yaml"))
    run = lcpipe.run_pipeline(config, out=tmp_path / "run", until="convert", cache_dir=tmp_path / "cache")
    fp32 = read_ir(run.artifacts["ir_fp32"])
    calib = load_split(config.data, "calib", config.preprocess, None, progress=False).x
    x = load_split(config.data, "eval", config.preprocess, None, progress=False).x[:24]
    options = config.stage_options("quantize").model_copy(update={"fast_bias_correction": True})
    params = {"performance": nncf_params(options, "performance", len(calib)),
              "mixed_stem_float": nncf_params(options, "mixed", len(calib), keep_float=[layer_names(fp32)["stem"]])}
    shared, _ = quantize_shared(fp32, calib, params)
    core = ov.Core()
    for name, p in params.items():
        plain = quantize(fp32, calib, p)
        assert count_quantization(shared[name][0]) == count_quantization(plain), name
        want, got = (infer_ov(core.compile_model(m, "CPU", ov_config("LATENCY", 1, "f32")), x, show=False)
                     for m in (plain, shared[name][0]))
        helpers.assert_logits_close(want, got, f"shared-statistics {name} vs nncf.quantize")
    assert count_quantization(shared["mixed_stem_float"][0])["quantized"] \
        == count_quantization(shared["performance"][0])["quantized"] - 1  # the stem conv stayed float


# ---------------------------------------------------------------- honest names, through the CLI

BUNDLE_FILES = ("model.xml", "model.bin", "model_image.xml", "model_image.bin", "reference_fp32.xml",
                "reference_fp32.bin", "reference_fp32_image.xml", "reference_fp32_image.bin", "plan.json",
                "labels.txt", "preprocess.json", "metrics.json", "README.txt", "serve.py", "ovms")
FORCED = {  # plan options that leave only float candidates, or only INT8 ones
    "float": ["stages.plan.presets=[]"],
    "int8": ["stages.plan.fp32=false", "stages.plan.presets=[performance]", "stages.plan.keep_float=[[]]"],
}


def _human_lines(run: Path, stdout: str, stderr: str) -> dict[str, list[str]]:
    """Every human-readable line a run writes: the terminal summary, lcpipe's stage log lines, report.md,
    report.html (as text, the inline chart dropped), the bundle's README."""
    import re

    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", (run / "report.html").read_text())
    stages = ("plan:", "validate:", "report:", "deploy:")
    return {"summary": stdout.splitlines(), "log": [s for s in stderr.splitlines() if s.startswith(stages)],
            "report.md": (run / "report.md").read_text().splitlines(), "report.html": html.splitlines(),
            "README.txt": (run / "deploy" / "README.txt").read_text().splitlines()}


@pytest.mark.slow
@pytest.mark.parametrize("win", list(FORCED))
def test_the_bundle_and_every_output_name_the_shipped_model_for_what_it_is(tmp_path: Path, win: str) -> None:
    """A forced float win and a forced INT8 win through `lcpipe run`: the bundle's files, metrics.json
    ``shipped``, plan.json and the first line of every output agree on what ships; a float model is never
    called INT8 (INT8 appears only as "no INT8 candidate"), and `lcpipe predict` serves the bundle."""
    import re
    import subprocess
    import sys

    import openvino as ov

    from lcpipe.quantization.graph import count_quantization

    pytest.importorskip("nncf")
    yaml = _plan_yaml(tmp_path, "{rounds: 2, iterations: 10, progress: false}",
                      "gates: {max_top1_flips: 3, min_agreement: 0.9}\n")
    run = tmp_path / "run"
    args = [sys.executable, "-m", "lcpipe", "run", str(yaml), "--out", str(run)]
    for s in FORCED[win]:
        args += ["--set", s]
    res = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

    bundle = run / "deploy"
    assert sorted(p.name for p in bundle.iterdir() if p.name != "stage.json") == sorted(BUNDLE_FILES)
    metrics = json.loads((run / "metrics.json").read_text())
    shipped, plan = metrics["shipped"], json.loads((bundle / "plan.json").read_text())
    assert shipped["int8"] is (win == "int8") and plan["chosen"] == shipped["plan"] and plan["int8"] is shipped["int8"]
    assert shipped["chosen_by"] == "plan" and shipped["precision"] == plan["inference_precision"]
    assert shipped["runtime_config"]["INFERENCE_PRECISION_HINT"] == shipped["precision"]
    assert shipped["speedup_vs_default_e2e_p50"] > 0 and shipped["baseline_precision"] == metrics["default_precision"]
    fq = count_quantization(ov.Core().read_model(str(bundle / "model.xml")))["fake_quantize"]
    assert (fq > 0) is (win == "int8")  # the file holds what the name and the records say
    assert count_quantization(ov.Core().read_model(str(bundle / "reference_fp32.xml")))["fake_quantize"] == 0

    lines = _human_lines(run, res.stdout, res.stderr)
    if win == "float":
        first = f"shipped: FP32 IR at {shipped['precision']} (no INT8 candidate was tried): "
        for name, text in lines.items():
            said = [s for s in text if re.search(r"\bint8", s.replace("no INT8 candidate", ""), re.IGNORECASE)]
            assert said == [], f"{name} calls a float model INT8: {said}"
    else:
        first = f"shipped: {shipped['plan']}: "
        assert shipped["plan"].startswith("int8_performance@")
        assert any(s.startswith("model_image.xml/.bin   the shipped model (INT8 (performance preset)")
                   for s in lines["README.txt"])
    assert lines["summary"][0].startswith(first) and "end to end vs FP32 IR at" in lines["summary"][0]
    assert lines["README.txt"][1].startswith(first) and lines["report.md"][2].startswith(f"**{first}")
    assert any(f"<b>{first.rstrip(': ')}</b>" in s for s in lines["report.html"])
    precision = f"'INFERENCE_PRECISION_HINT': '{shipped['precision']}'"
    assert any("compiles model_image.xml with" in s and precision in s for s in lines["README.txt"])
    assert precision in (bundle / "serve.py").read_text()
    assert json.loads((bundle / "metrics.json").read_text())["bundle"]["servable"] is True

    line = sorted((helpers.TEXT_LINES / "lines").glob("*"))[0]
    served = subprocess.run([sys.executable, "-m", "lcpipe", "predict", str(bundle), str(line), "--top-k", "2"],
                            capture_output=True, text=True, timeout=300)
    assert served.returncode == 0 and served.stdout.count("%") == 2, served.stderr[-2000:]
