"""End to end, offline: PaddleClas checkpoints with random weights and randomized BN -> the INT8
pipelines (import .. plan .. deploy) on the shipped ImageNet images, with small counts.

Random 1000-class networks have nearly tied logits, so these tests check fidelity (cosine,
relative logit error) and the artifacts, never top-1 agreement or accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import pytest
from click.testing import CliRunner

import lcpipe
from lcpipe.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.paddleclas]

V1_INT8 = helpers.PIPELINES / "v1_int8.yaml"
V2_INT8 = helpers.PIPELINES / "v2_int8.yaml"
IMAGENET = helpers.REPO / "calib_data" / "imagenet"
# Small counts and short timing loops keep the whole file within a few minutes on 2 cores.
SMALL = ("data.calib.count=32", "data.eval.count=64", "stages.validate.rounds=2", "stages.validate.iterations=20",
         "stages.validate.warmup=5", "stages.validate.throughput_seconds=0.3", "stages.validate.progress=false",
         # the plan: the quantize stage's IR and the FP32 IR at f32 only (the full grid is test_plan.py's)
         "stages.plan.keep_float=[[]]", "stages.plan.precisions=[f32]", "stages.plan.rounds=2",
         "stages.plan.iterations=10", "stages.plan.progress=false")


def _plan_presets(preset: str) -> str:
    return f"stages.plan.presets=[{preset}]"
METRIC_KEYS = ("accuracy.fp32.top1", "accuracy.int8.top1", "accuracy.top1_drop", "accuracy.agreement",
               "accuracy.cosine", "accuracy.images", "latency_ms.fp32.p50", "latency_ms.int8.p50",
               "speedup.latency_p50", "speedup.throughput", "cpu.model", "cpu.isa", "threads", "versions", "gates",
               # the verdict's uncertainty and what it rests on (issue 16)
               "accuracy.fp32.top1_ci95", "accuracy.int8.top1_ci95", "accuracy.agreement_ci95",
               "accuracy.top1_drop_ci95", "accuracy.flips.mcnemar_p", "speedup.latency_p50_ci95",
               "speedup.throughput_ci95", "data.calib_images", "data.tune_images", "data.verdict_images",
               "data.overlap", "timing.rounds", "verdict")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, image_paths: dict[str, list[Path]]) -> dict[str, Path]:
    """PaddleClas .pdparams with random weights, BN statistics from 8 real images then perturbed."""
    pytest.importorskip("paddleclas")
    pytest.importorskip("nncf")
    if not (IMAGENET / "val.txt").is_file():
        pytest.skip("calib_data/imagenet is not available")
    from lcpipe.config import PreprocessConfig

    batch = helpers.load_batch(image_paths["calib"], PreprocessConfig())
    root = tmp_path_factory.mktemp("int8-checkpoints")
    out = {}
    for arch in ("PPLCNetV2_base", "PPLCNet_x1_0", "PPLCNet_x0_25"):
        out[arch] = helpers.save_pdparams(helpers.build_paddleclas(arch, batch), root / f"{arch}.pdparams")
    return out


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        assert isinstance(d, dict) and part in d, f"metrics.json: missing {dotted}"
        d = d[part]
    return d


def _run(yaml: Path, weights: Path, out: Path, *extra: str, **kw: str) -> lcpipe.runner.RunResult:
    return lcpipe.run_pipeline(yaml, out=out, overrides=[f"model.source.path={weights}", *SMALL, *extra], **kw)


def _assert_ir(xml: Path) -> dict:
    """Both files exist and the xml's rt_info names its .bin (the runner's cache keys hash only the xml)."""
    import openvino as ov

    from lcpipe.fileio import sha256_file
    from lcpipe.ir import read_lcpipe_rt_info

    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    rt = read_lcpipe_rt_info(ov.Core().read_model(str(xml)))
    assert rt["weights_sha256"] == sha256_file(xml.with_suffix(".bin"))
    return rt


def test_v2_base_int8_pipeline_end_to_end(checkpoints: dict[str, Path], tmp_path: Path):
    out = tmp_path / "run"
    result = _run(V2_INT8, checkpoints["PPLCNetV2_base"], out, _plan_presets("performance"))

    # artifacts: FP32 + INT8 IRs, the plan's choice, published report, deploy bundle
    rt = _assert_ir(out / "convert" / "model.xml")
    assert rt["precision"] == "fp32" and rt["preprocess"]["input_hw"] == [224, 224] and len(rt["labels"]) == 1000
    assert _assert_ir(out / "quantize" / "model.xml")["quantization"]["preset"] == "performance"
    shipped = result.metrics["shipped"]
    assert _assert_ir(out / "plan" / "model.xml")["plan"]["name"] == shipped["plan"]
    for name in ("model.xml", "model.bin", "model_image.xml", "reference_fp32.xml", "reference_fp32.bin",
                 "plan.json", "preprocess.json", "metrics.json", "README.txt"):
        assert (out / "deploy" / name).is_file(), name
    labels = (out / "deploy" / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[0].startswith("tench")
    # one bundle per run: the deploy stage's own folder, no copy under report/
    assert json.loads((out / "deploy" / "stage.json").read_text())["stage"] == "deploy"
    assert not (out / "report" / "deploy").exists()
    html = (out / "report.html").read_text()
    assert '<img class="chart"' in html and "data:image/png;base64," in html
    assert result.metrics["cpu"]["model"] in html and "openvino" in html
    assert (out / "report.md").read_text().startswith("# lcpipe report: v2_base_int8")

    # metrics: documented keys, fidelity of INT8 vs FP32, measured speed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result.metrics
    for key in METRIC_KEYS:
        _get(metrics, key)
    acc = metrics["accuracy"]
    assert acc["labeled"]  # on the verdict images: data.eval minus the plan's tune images (below)
    assert acc["cosine"] >= 0.95
    assert acc["rel_logit_error"] < 0.5
    assert metrics["latency_ms"]["fp32"]["p50"] > 0 and metrics["latency_ms"]["int8"]["p50"] > 0
    assert metrics["quantize"]["preset"] == "performance"  # V2 is a ReLU net
    assert metrics["quantize"]["quantized_ops"] >= 30
    assert {g["name"] for g in metrics["gates"]} == {"min_cosine", "max_top1_drop", "min_e2e_latency_speedup"}
    assert {g["verdict"] for g in metrics["gates"]} <= {"pass", "fail", "inconclusive"}
    data = metrics["data"]  # the plan chose on tune images split from data.eval; the verdict rests on the rest
    assert (data["calib_images"], data["overlap"], data["tune_from"]) == (32, 0, "data.eval split")
    assert data["tune_images"] > 0 and data["tune_images"] + data["verdict_images"] == 64
    assert acc["images"] == data["verdict_images"]
    for key in ("latency_p50", "e2e_latency_p50_vs_default"):
        ci = metrics["speedup"][f"{key}_ci95"]
        assert ci[0] <= metrics["speedup"][key] <= ci[1], key
    sp = metrics["speedup"]
    assert shipped["speedup_vs_default_e2e_p50_ci95"] == sp["e2e_latency_p50_vs_default_ci95"]
    # random weights may fail min_cosine in INT8: then the plan ships the FP32 IR, and says so
    assert shipped["plan"] in ("int8_performance@f32", "fp32@f32")
    if shipped["int8"]:
        assert metrics["size_mb"]["int8"] < 0.5 * metrics["size_mb"]["fp32"]
    else:
        assert metrics["size_mb"]["int8"] == pytest.approx(metrics["size_mb"]["fp32"], rel=0.01)
        assert "no INT8 candidate was faster within the gates" in (out / "deploy" / "README.txt").read_text()

    # a rerun is fully cached
    again = _run(V2_INT8, checkpoints["PPLCNetV2_base"], out, _plan_presets("performance"))
    assert [r.name for r in again.records if not r.cached] == []
    assert again.metrics["latency_ms"] == metrics["latency_ms"]

    # an impossible speed gate (the plan does not check speed gates) makes `lcpipe run` exit 3; the plan and
    # the stages before it are reused (validate re-times: its rounds stop on the speed gates)
    cli_args = ["run", str(V2_INT8), "--out", str(out), "--set", f"model.source.path={checkpoints['PPLCNetV2_base']}"]
    for s in (*SMALL, _plan_presets("performance")):
        cli_args += ["--set", s]
    # (6 rounds: with SMALL's 2, a t interval on one degree of freedom cannot decide even 100x: exit 4)
    res = CliRunner().invoke(cli, [*cli_args, "--set", "gates.min_latency_speedup=100",
                                   "--set", "stages.validate.rounds=6"])
    assert res.exit_code == 3, res.output
    assert "min_latency_speedup" in res.output and "FAIL" in res.output
    failed = [g for g in json.loads((out / "metrics.json").read_text())["gates"] if g["verdict"] == "fail"]
    assert "min_latency_speedup" in [g["name"] for g in failed]

    # lcpipe predict reads preprocessing + labels from the IR's rt_info
    image = helpers.real_image_paths(1)[0]
    res = CliRunner().invoke(cli, ["predict", str(out / "deploy" / "model.xml"), str(image), "--top-k", "3"])
    assert res.exit_code == 0, res.output
    assert res.output.count("%") == 3 and any(name in res.output for name in labels)


def test_v1_int8_pipeline_unlabeled_eval_dynamic_batch_onnxruntime(checkpoints: dict[str, Path], tmp_path: Path):
    """V1 x1.0 (hardswish: mixed preset), dynamic-batch IR, ORT reference, eval list without labels."""
    names = [line.split()[0] for line in (IMAGENET / "val.txt").read_text().splitlines() if line.strip()][:64]
    unlabeled = tmp_path / "eval_files.txt"
    unlabeled.write_text("\n".join(names) + "\n")
    out = tmp_path / "run"
    result = _run(V1_INT8, checkpoints["PPLCNet_x1_0"], out, f"data.eval.labels={unlabeled}",
                  "stages.convert.batch=null", "stages.validate.onnxruntime=true", _plan_presets("mixed"))
    m = result.metrics
    assert m["quantize"]["preset"] == "mixed"
    acc = m["accuracy"]
    assert not acc["labeled"] and acc["fp32"]["top1"] is None and acc["top1_drop"] is None
    assert acc["cosine"] >= 0.9 and acc["rel_logit_error"] < 1.0
    # ONNX Runtime and OpenVINO FP32 compute the same function
    assert acc["onnxruntime_vs_fp32"]["rel_logit_error"] < 1e-3
    assert "onnxruntime" in m["latency_ms"]
    gates = {g["name"]: g for g in m["gates"]}
    assert not gates["max_top1_drop"]["passed"] and gates["max_top1_drop"]["note"] == "not measured"
    assert gates["min_cosine"]["value"] == acc["cosine"]
    validation = json.loads((out / "validate" / "validation.json").read_text())
    assert validation["static_batch"] == {"fp32": False, "int8": False}


def test_accuracy_control_records_reverted_ops(checkpoints: dict[str, Path], tmp_path: Path):
    """Labels = the FP32 model's own predictions, so INT8 loses top-1 and the search must revert ops."""
    from lcpipe.data import load_split
    from lcpipe.ir import compile_ir
    from lcpipe.measure.runtime import infer_ov

    weights, out = checkpoints["PPLCNet_x0_25"], tmp_path / "run"
    small = ["model.arch=auto", "stages.validate.latency=false", "stages.validate.throughput=false",
             _plan_presets("mixed")]
    first = _run(V1_INT8, weights, out, *small, until="convert")
    cfg = lcpipe.load_config(V1_INT8, [f"model.source.path={weights}", *SMALL, *small])
    ev = load_split(cfg.data, "eval", cfg.preprocess, None, progress=False)
    pred = infer_ov(compile_ir(first.artifacts["ir_fp32"], "THROUGHPUT", 2), ev.x, show=False).argmax(1)
    labels = tmp_path / "fp32_labels.txt"
    labels.write_text("".join(f"{s.path.name} {p}\n" for s, p in zip(ev.samples, pred, strict=True)))

    result = _run(V1_INT8, weights, out, *small, f"data.eval.labels={labels}",
                  "stages.quantize.accuracy_control.max_drop=0.02")
    q = json.loads((out / "quantize" / "quantize.json").read_text())
    ac = q["accuracy_control"]
    assert ac["validation_images"] == result.metrics["data"]["tune_images"] > 0  # it chose on the tune images
    assert result.metrics["data"]["verdict_images"] + ac["validation_images"] == 64  # the verdict on the rest
    assert ac["ptq_quantized_ops"] >= 25 and ac["reverted_ops"] == ac["ptq_quantized_ops"] - q["int8"]["quantized"]
    assert ac["reverted_fraction"] == pytest.approx(ac["reverted_ops"] / ac["ptq_quantized_ops"], abs=1e-4)
    _assert_ir(out / "quantize" / "ptq" / "model.xml")
    m = result.metrics
    assert m["accuracy"]["fp32"]["top1"] == 1.0 and "int8_ptq" in m["accuracy"]
    gate = {g["name"]: g for g in m["gates"]}["max_reverted_fraction"]
    assert gate["passed"] == (not ac["mostly_reverted"])
    assert "reverted to floating point" in (out / "report.md").read_text()
