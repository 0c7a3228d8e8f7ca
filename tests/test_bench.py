"""`lcpipe bench`: engines side by side. Pure tests of the speed-up / goal math and the table,
markdown and JSON shapes (fake engines, no runtime), then one small end-to-end smoke run
(PP-LCNet x0.25 with random weights, 16 images, few iterations)."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import numpy as np
import pytest
from click.testing import CliRunner

from lcpipe.measure import goals as mg
from lcpipe.measure.engines import Engine, compile_engine, fixed_batch, measure_engines, predict_all
from lcpipe.measure.profile import aggregate_profile
from lcpipe.measure.timing import throughput_from
from lcpipe.render import bench as rb
from lcpipe.stages import bench as sb

IMAGENET = helpers.REPO / "calib_data" / "imagenet"
# benchmarks/ is a top-level folder of the checkout, not part of the installed package
bm = helpers.checkout_module("benchmarks.matrix")
bt = helpers.checkout_module("benchmarks.tables")


# ------------------------------------------------------------------ fake results

def _row(name: str, precision: str, p50: float | None, ips: float | None = None, runtime: str = "openvino",
         reason: str | None = None) -> dict:
    if p50 is None:
        return {"name": name, "label": name, "runtime": runtime, "precision": precision, "available": False,
                "reason": reason or "not measured", "model": "", "info": {}}
    return {"name": name, "label": name, "runtime": runtime, "precision": precision, "available": True,
            "reason": None, "model": "m.xml", "info": {"runs_in": "f32"},
            "latency_ms": {"p50": p50, "p90": p50 * 1.2, "mean": p50, "min": p50, "samples": 10,
                           "round_p50": [p50 * 0.9, p50, p50 * 1.1]},
            "throughput": {"images_per_s": ips, "batch": 8, "batch_ms_p50": 8e3 / ips, "round_images_per_s": [ips]},
            "accuracy": {"top1": 0.5, "agreement": 1.0 if name == "ov_fp32" else 0.9, "images": 16}}


def _result(rows: list[dict], arch: str = "PPLCNetV2_base", isa: str = "avx2") -> dict:
    mg.add_speedups(rows)
    return {"schema": 1, "pipeline": "t", "model": {"arch": arch, "input_hw": [224, 224], "source_format": "pdparams"},
            "threads": 2, "batch": 8, "rounds": 3, "iterations": 10, "eval_images": 16, "labeled": True,
            "definitions": {"latency": sb.LATENCY_DEF, "throughput": sb.THROUGHPUT_DEF.format(batch=8),
                            "agreement": "argmax"},
            "engines": rows, "goals": mg.evaluate_goals(rows, arch, isa), "noise": mg.noise_summary(rows),
            "load_avg": {"before": [0.5, 0.4, 0.3], "after": [0.6, 0.4, 0.3]},
            "cpu": {"model": "Test CPU", "isa": isa, "flags": ["avx2"], "cores": 2, "machine": "x86_64"},
            "versions": {"python": "3.11", "openvino": "x"}}


def _rows() -> list[dict]:
    return [_row("ov_fp32", "fp32", 2.0, 500.0), _row("ov_int8", "int8", 1.0, 1000.0),
            _row("ort_fp32", "fp32", 4.0, 250.0, "onnxruntime"), _row("ort_int8", "int8", 5.0, 200.0, "onnxruntime"),
            _row("paddle_onednn", "fp32", None, runtime="paddle", reason="paddle (paddlepaddle) is not installed")]


# ------------------------------------------------------------------ speed-up and goal math

def test_speedups_against_slowest_fp32_and_lcpipe_fp32() -> None:
    rows = _rows()
    mg.add_speedups(rows)
    by = {r["name"]: r for r in rows}
    int8 = by["ov_int8"]["speedup"]
    assert int8["latency_vs_slowest_fp32"] == 4.0  # ort_fp32 4.0 ms is the slowest FP32 engine
    assert int8["latency_vs_lcpipe_fp32"] == 2.0
    assert int8["throughput_vs_slowest_fp32"] == 4.0 and int8["throughput_vs_lcpipe_fp32"] == 2.0
    assert int8["slowest_fp32"] == {"latency": "ort_fp32", "throughput": "ort_fp32"}
    assert by["ort_fp32"]["speedup"]["latency_vs_slowest_fp32"] == 1.0
    assert by["ort_int8"]["speedup"]["latency_vs_slowest_fp32"] == 0.8  # INT8 engines can be < 1
    assert "speedup" not in by["paddle_onednn"]  # unavailable: no figures, no crash


def test_throughput_from_batch_call_time() -> None:
    t = throughput_from({"p50": 16.0, "round_p50": [16.0, 20.0]}, 8)
    assert t["images_per_s"] == 500.0 and t["round_images_per_s"] == [500.0, 400.0] and t["batch"] == 8


@pytest.mark.parametrize(("arch", "isa", "threshold", "key"), [
    ("PPLCNetV2_base", "avx2", 1.9, "avx2"), ("PPLCNetV2_base", "amx", 2.5, "avx512_vnni"),
    ("PPLCNet_x1_0", "avx512", 1.6, "avx2"), ("PPLCNet_x1_0", "avx512_vnni", 2.0, "avx512_vnni")])
def test_int8_goal_threshold_follows_arch_and_isa(arch: str, isa: str, threshold: float, key: str) -> None:
    goals = _result(_rows(), arch, isa)["goals"]
    g = goals[0]
    assert g["name"] == "int8_ir_vs_fp32_ir" and g["threshold"] == threshold and g["isa_key"] == key
    assert g["value"] == 2.0 and g["passed"] is (2.0 >= threshold)


@pytest.mark.parametrize("isa", ["default", "avx512"])
def test_int8_goal_on_an_isa_without_a_target(isa: str) -> None:
    """The goal table has avx2 / avx512_vnni keys only: no AVX2 (or ARM) has no target, not a KeyError."""
    result = _result(_rows(), "PPLCNetV2_base", isa)
    g = result["goals"][0]
    if isa == "default":
        assert g["name"] == "int8_ir_vs_fp32_ir" and g["value"] == 2.0 and g["threshold"] is None
        assert g["passed"] is None and "no goal for ISA default" in g["note"]
        assert "no goal for ISA default" in rb.render_markdown(result)
    else:  # avx512 without VNNI falls back to the avx2 target
        assert g["threshold"] == 1.9 and g["isa_key"] == "avx2" and g["passed"] is True


@pytest.mark.parametrize(("isa", "threshold"), [("default", None), ("avx2", 1.9)])
def test_bench_analysis_follows_the_detected_isa(isa: str, threshold: float | None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ISA detection forced: bench.json's cpu, goals and rendering follow it (no ONEDNN cap set)."""
    monkeypatch.setattr("lcpipe.sysinfo.isa_level", lambda flags=None: isa)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    rows = _rows()
    analysis = mg.analyse(rows, "PPLCNetV2_base")
    assert analysis["cpu"]["isa"] == isa and analysis["cpu"]["effective_isa"] == isa
    g = analysis["goals"][0]
    assert g["name"] == "int8_ir_vs_fp32_ir" and g["threshold"] == threshold
    assert g["passed"] is (None if threshold is None else True)
    assert rows[0]["speedup"]["latency_vs_lcpipe_fp32"] == 1.0


def test_peer_goals_and_unmeasured_goal() -> None:
    goals = {g["name"]: g for g in _result(_rows(), "PPLCNet_x0_25")["goals"]}
    assert "int8_ir_vs_fp32_ir" not in goals  # no INT8 goal for this scale
    assert goals["fp32_ir_vs_ort_fp32"]["value"] == 2.0 and goals["fp32_ir_vs_ort_fp32"]["passed"] is True
    assert goals["int8_vs_ort_int8"]["value"] == 5.0 and goals["int8_vs_ort_int8"]["passed"] is True
    paddle = goals["int8_vs_paddle_onednn"]
    assert paddle["passed"] is None and "paddle_onednn unavailable" in paddle["note"]
    assert goals["fp32_ir_vs_paddle2onnx_route"]["passed"] is None


def test_no_slower_goal_counts_a_tie_within_noise() -> None:
    rows = _rows()
    rows[2] = _row("ort_fp32", "fp32", 1.95, 500.0, "onnxruntime")  # 2.5% faster than ov_fp32 (2.0)
    goal = next(g for g in _result(rows)["goals"] if g["name"] == "fp32_ir_vs_ort_fp32")
    assert goal["value"] == 0.975 and goal["passed"] is True and goal["note"].startswith("tie")
    rows[2] = _row("ort_fp32", "fp32", 1.8, 500.0, "onnxruntime")  # 10% faster: missed
    goal = next(g for g in _result(rows)["goals"] if g["name"] == "fp32_ir_vs_ort_fp32")
    assert goal["passed"] is False and goal["note"] == ""


def test_noise_summary() -> None:
    n = mg.noise_summary(_rows())
    assert n["round_spread"]["ov_fp32"] == pytest.approx(0.2) and n["max_round_spread"] == pytest.approx(0.2)
    assert "paddle_onednn" not in n["round_spread"]


# ------------------------------------------------------------------ table / markdown / JSON shapes

def test_table_markdown_json_and_rich_shapes(tmp_path: Path) -> None:
    result = _result(_rows())
    rows = rb.table_rows(result)
    assert len(rows) == 1 + len(result["engines"]) and {len(r) for r in rows} == {len(rows[0])}
    assert rows[0][:3] == ["engine", "runs in", "p50 ms"]
    assert rows[2][2] == "1.00" and rows[2][5] == "4.00x" and rows[2][6] == "2.00x"
    assert rows[-1][-1] == "unavailable (see below)"
    md = rb.render_markdown(result)
    assert md.count("\n| ") >= len(rows) + 1 and "## Goals" in md
    assert "paddle (paddlepaddle) is not installed" in md and "Test CPU" in md and "ISA avx2" in md
    out = sb.write_outputs(tmp_path, json.loads(json.dumps(result)), sb.BenchOptions())
    assert set(out) == {"bench", "bench_md", "bench_png", "bench_html"}
    data = json.loads(out["bench"].read_text())
    assert data["engines"][1]["speedup"]["latency_vs_lcpipe_fp32"] == 2.0 and data["threads"] == 2
    assert out["bench_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["bench_html"].read_text().startswith('<section class="lcpipe-bench">')
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(rb.render_rich(result))
    text = console.export_text()
    assert "ov_int8" in text and "MISSED" not in text and "met" in text


def test_profile_aggregation_and_markdown() -> None:
    nodes = {"a": ["Convolution", "brgconv_avx512_1x1_I8", 1.0], "b": ["Convolution", "jit_avx512_I8", 0.5],
             "c": ["GroupConvolution", "brgconv_avx512_dw_I8", 2.0]}
    prof = aggregate_profile(nodes)
    assert prof["total_ms"] == 3.5 and prof["layers"] == 3
    assert prof["by_type"][0] == {"type": "GroupConvolution", "ms": 2.0, "layers": 1, "share": round(2 / 3.5, 4)}
    assert prof["by_type"][1]["layers"] == 2 and len(prof["by_kernel"]) == 3 and prof["slowest"][0]["node"] == "c"
    md = rb.render_profile_md({"ov_fp32": prof, "ov_int8": prof})
    assert "| GroupConvolution | 2.000 | 2.000 |" in md and "### ov_int8: by kernel" in md


# ------------------------------------------------------------------ measuring with fake engines

def _fake(name: str, precision: str, scale: float, fail: bool = False) -> Engine:
    def build(batch: int):
        if fail:
            raise RuntimeError("simulated build failure")
        return lambda x: x.reshape(len(x), -1)[:, :5] * scale
    return Engine(name, "fake", precision, f"{name}.bin", build)


def test_measure_lists_failed_engine_with_reason() -> None:
    x = np.random.default_rng(0).standard_normal((10, 3, 4, 4)).astype(np.float32)
    labels = x.reshape(10, -1)[:, :5].argmax(1)
    engines = [_fake("ov_fp32", "fp32", 1.0), _fake("ort_fp32", "fp32", -1.0), _fake("ort_int8", "int8", 1, True)]
    rows = {r["name"]: r for r in measure_engines(engines, x, labels, batch=4, warmup=1, rounds=2, iterations=3,
                                                  show=False)}
    assert rows["ov_fp32"]["accuracy"] == {"top1": 1.0, "agreement": 1.0, "images": 10}
    assert rows["ort_fp32"]["accuracy"]["agreement"] < 0.5  # negated logits: argmax differs
    assert rows["ort_fp32"]["latency_ms"]["samples"] == 6 and rows["ort_fp32"]["throughput"]["batch"] == 4
    assert not rows["ort_int8"]["available"] and "simulated build failure" in rows["ort_int8"]["reason"]


def test_fixed_batch_and_predict_all_pad_the_last_chunk() -> None:
    x = np.arange(5, dtype=np.float32).reshape(5, 1)
    assert fixed_batch(x, 8).ravel().tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    calls = []
    out = predict_all(lambda b: calls.append(len(b)) or b * 2, x, 2)
    assert out.ravel().tolist() == [0, 2, 4, 6, 8] and calls == [2, 2, 2]
    assert compile_engine(Engine("x", "fake", "fp32", reason="absent"), 1) is None


# ------------------------------------------------------------------ matrix helpers

def test_matrix_tables_and_docs_markers(tmp_path: Path) -> None:
    result = _result(_rows())
    result["matrix"] = {"key": "v2_base", "arch": "PPLCNetV2_base", "synthetic_weights": True, "params_m": 6.616,
                        "flops_m": 593.9}
    text = bt.render_matrix([result])
    assert "| PPLCNetV2_base | 6.62 / 6.6 | 594 / 604 | 77.04% |" in text
    assert "| v2_base | 2.00 | 1.00 | - | - | 4.00 | 5.00 | - |" in text
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nhand-written intro\n")
    bt.write_docs(docs, "first")
    bt.write_docs(docs, "second")
    body = docs.read_text()
    assert "hand-written intro" in body and "second" in body and "first" not in body
    assert body.count(bt.BEGIN) == 1 and body.count(bt.END) == 1


def test_synthetic_pdparams_match_paddleclas_layout(tmp_path: Path) -> None:
    from lcpipe.importers.checkpoint import import_checkpoint
    from lcpipe.models.spec import ModelSpec

    tensors = bm.synthetic_tensors(ModelSpec(arch="PPLCNet_x0_25"))
    assert tensors["fc.weight"].shape == (1280, 1000)  # PaddleClas Linear: [in, out]
    path = bm.write_pdparams(tmp_path / "w.pdparams", tensors)
    model = import_checkpoint(path, "pdparams", "auto", {})
    assert model.spec.arch == "PPLCNet_x0_25" and model.spec.class_num == 1000


# ------------------------------------------------------------------ end to end (small)

SMOKE_YAML = """\
name: bench_smoke
model:
  source: {{format: pdparams, path: {weights}}}
  arch: PPLCNet_x0_25
preprocess: {{mode: paddleclas, resize_short: 256, crop: 224}}
data:
  calib: {{images: {imagenet}/images, labels: {imagenet}/calib.txt, count: 16}}
  eval: {{images: {imagenet}/images, labels: {imagenet}/val.txt, count: 16}}
runtime: {{threads: 2}}
stages:
  - import: {{}}
  - fuse: {{}}
  - export: {{opset: 17}}
  - convert: {{batch: 1}}
  - quantize: {{preset: mixed, subset_size: 16, fast_bias_correction: true}}
  - bench: {{rounds: 2, iterations: 5, warmup: 2, batch: 4, progress: false, e2e_images: 8, throughput_seconds: 0.2}}
"""


@pytest.fixture(scope="module")
def smoke_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    pytest.importorskip("onnxruntime")
    if not (IMAGENET / "val.txt").is_file():
        pytest.skip("calib_data/imagenet is not available")
    root = tmp_path_factory.mktemp("bench-smoke")
    from lcpipe.models.spec import ModelSpec

    weights = bm.write_pdparams(root / "x0_25.pdparams", bm.synthetic_tensors(ModelSpec(arch="PPLCNet_x0_25")))
    return helpers.write_yaml(root / "bench.yaml", SMOKE_YAML.format(weights=weights, imagenet=IMAGENET))


def test_lcpipe_bench_smoke(smoke_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lcpipe bench`: pipeline up to quantize, every engine; paddle simulated absent -> listed with reason."""
    from lcpipe.cli import cli

    monkeypatch.setattr("lcpipe.measure.bench_engines.has_module", lambda name: name != "paddle")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["bench", str(smoke_yaml), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "bench" / "bench.json").read_text())
    engines = {e["name"]: e for e in data["engines"]}
    assert list(engines) == ["ov_fp32", "ov_int8", "ov_fp32_default", "ov_p2o_fp32", "ort_fp32", "ort_int8",
                             "paddle_onednn"]
    for name in ("ov_fp32", "ov_int8", "ort_fp32", "ort_int8"):
        e = engines[name]
        assert e["available"], e["reason"]
        assert e["latency_ms"]["p50"] > 0 and e["throughput"]["images_per_s"] > 0 and e["throughput"]["batch"] == 4
        assert e["accuracy"]["images"] == 16 and 0 <= e["accuracy"]["agreement"] <= 1
    assert engines["ov_fp32"]["info"]["runs_in"] == "f32" and engines["ov_fp32"]["accuracy"]["agreement"] == 1.0
    assert engines["ort_int8"]["info"]["quantization"]["calib_images"] == 16
    assert engines["ort_int8"]["model"] == "bench/ort_int8.onnx"
    assert "not installed" in engines["paddle_onednn"]["reason"]
    assert "pdparams" in engines["ov_p2o_fp32"]["reason"]
    if data["cpu"]["isa"] == "amx":  # the plugin runs FP32 IRs in bf16 by default there
        assert engines["ov_fp32_default"]["available"] and engines["ov_fp32_default"]["precision"] == "bf16"
    assert data["threads"] == 2 and data["cpu"]["model"] and data["versions"]["openvino"]
    assert {g["name"] for g in data["goals"]} >= {"fp32_ir_vs_ort_fp32", "int8_vs_ort_int8"}
    for f in ("bench.md", "bench.png", "bench.html"):
        assert (out / "bench" / f).is_file()
    assert json.loads(res.output[res.output.index("{"):res.output.rindex("}") + 1])["pipeline"] == "bench_smoke"


@pytest.mark.parametrize("isa", ["default", "avx2"])
def test_lcpipe_bench_with_forced_isa(isa: str, smoke_yaml: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`lcpipe bench` end to end on a CPU whose ISA key has no entry in the goal table (issue 10:
    KeyError on `default`). The smoke model gets an INT8 goal like the real table's (avx2 and
    avx512_vnni keys, no `default`), so the INT8 goal is evaluated on the real IRs."""
    from lcpipe.cli import cli

    monkeypatch.setattr("lcpipe.sysinfo.isa_level", lambda flags=None: isa)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setitem(mg.INT8_GOALS, "PPLCNet_x0_25", {"avx2": 1.1, "avx512_vnni": 1.2})
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["bench", str(smoke_yaml), "--out", str(out), "--engines", "ov_int8"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "bench" / "bench.json").read_text())
    assert data["cpu"]["isa"] == isa and [e["name"] for e in data["engines"]] == ["ov_fp32", "ov_int8"]
    g = next(g for g in data["goals"] if g["name"] == "int8_ir_vs_fp32_ir")
    assert g["value"] > 0 and g["isa_key"] == isa
    if isa == "default":
        assert g["threshold"] is None and g["passed"] is None and "no goal for ISA default" in g["note"]
    else:
        assert g["threshold"] == 1.1 and g["passed"] is (g["value"] >= 1.1)
    assert "int8_ir_vs_fp32_ir" in res.output or "INT8 IR vs FP32 IR" in res.output


def test_bench_matrix_cli_finds_the_checkout_benchmarks(tmp_path: Path) -> None:
    """`lcpipe bench --matrix` imports benchmarks/ from the source checkout; a bad key fails before any work."""
    from lcpipe.cli import cli

    res = CliRunner().invoke(cli, ["bench", "--matrix", "--models", "v9_nope", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "unknown v9_nope" in res.output and "v2_base" in res.output
    assert not (tmp_path / "m").exists()


def test_bench_bad_engine_name_and_missing_pipeline(smoke_yaml: Path, tmp_path: Path) -> None:
    from lcpipe.cli import cli

    res = CliRunner().invoke(cli, ["bench", str(smoke_yaml), "--out", str(tmp_path), "--engines", "ov_fp32,tensorrt"])
    assert res.exit_code == 2 and "tensorrt" in res.output and not (tmp_path / "import").exists()
    res = CliRunner().invoke(cli, ["bench"])
    assert res.exit_code == 2 and "PIPELINE.yaml" in res.output


def test_bench_stage_in_a_pipeline(smoke_yaml: Path, tmp_path: Path) -> None:
    """The same as a YAML stage (`lcpipe run`), with a subset of engines."""
    import lcpipe

    out = tmp_path / "run"
    result = lcpipe.run_pipeline(smoke_yaml, out=out, overrides=[
        "stages.bench.engines=[ov_int8, ort_fp32]", "stages.bench.rounds=1", "stages.bench.chart=false"])
    data = json.loads((out / "bench.json").read_text())  # published at the top of the run dir
    assert [e["name"] for e in data["engines"]] == ["ov_fp32", "ov_int8", "ort_fp32"]
    assert "bench_png" not in result.artifacts and (out / "bench" / "stage.json").is_file()
    e2e = data["e2e"]  # decoded image -> top-k routes, timed with the same code as validate
    assert e2e["images"] == 8 and e2e["decode_ms"]["p50"] > 0
    for route in ("fp32_py", "int8_py", "fp32_image", "int8_image"):
        assert e2e["latency_ms"][route]["p50"] > 0 and e2e["throughput"][route]["images_per_s"] > 0
    assert e2e["speedup"]["e2e_latency_p50"] > 0 and "End to end" in (out / "bench" / "bench.md").read_text()
    assert data["int8_precision"] == "f32"  # no plan stage: the INT8 IR's float ops in f32, as validate
    assert "batch 1, float ops f32)" in (out / "bench" / "bench.md").read_text()


def test_isa_cap_sets_the_effective_isa_for_goals() -> None:
    assert mg.isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "amx") == {"isa_cap": "AVX2", "effective_isa": "avx2"}
    assert mg.isa_cap({}, "amx") == {"isa_cap": None, "effective_isa": "amx"}
    # a cap above what the CPU has changes nothing
    assert mg.isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "avx2")["effective_isa"] == "avx2"
    result = _result(_rows(), "PPLCNetV2_base", "avx2")
    result["cpu"].update(isa="amx", isa_cap="AVX2", effective_isa="avx2")
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in rb.render_markdown(result)


def test_shared_top_k_softmax_and_ratio() -> None:
    """The one top-k / softmax / ratio every measurement and predict use (lcpipe.measure.accuracy, lcpipe.metrics)."""
    from lcpipe.measure.accuracy import softmax, top_indices
    from lcpipe.measure.goals import ratio

    z = np.random.default_rng(0).standard_normal((6, 1000)).astype(np.float32)
    np.testing.assert_array_equal(top_indices(z, 5), np.argsort(-z, axis=1)[:, :5])
    np.testing.assert_array_equal(top_indices(z[2], 5), np.argsort(-z[2])[:5])
    assert top_indices(z[:, :3], 5).shape == (6, 3)  # k capped at the number of classes
    p = softmax(z.astype(np.float64))
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(softmax(z[1].astype(np.float64)), p[1])
    assert np.array_equal(p.argmax(1), z.argmax(1))
    assert ratio(3.0, 2.0) == 1.5 and ratio(None, 2.0) is None and ratio(1.0, 0) is None


def test_e2e_decode_of_a_bad_file_is_an_input_error(tmp_path: Path) -> None:
    """measure_decode uses lcpipe's decoder: a corrupt image names the file (cv2.imdecode alone gave None)."""
    from lcpipe.errors import InputError
    from lcpipe.measure.e2e import measure_decode

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.jpg"):
        measure_decode([bad])
