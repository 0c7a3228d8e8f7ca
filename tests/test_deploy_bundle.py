"""The serving-ready bundle: OpenVINO Model Server layout and config (checked against OVMS's own schema),
a dynamic-batch IR, serve.py (any working directory, model cache, the probabilities `lcpipe predict`
prints) and "DO NOT SERVE" when the run's gates did not pass. Real OpenVINO throughout; OVMS itself is
not started (no Docker here): its config schema is copied into tests/fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

SCHEMA = Path(__file__).parent / "fixtures" / "ovms_config_schema.json"


def _ovms_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft4Validator(json.loads(SCHEMA.read_text()))  # rapidjson, as OVMS: draft 4


def _tiny_ir(path: Path, batch: int | None = 1) -> Path:
    """A small conv classifier (real OpenVINO): [batch, 3, 8, 8] float -> [batch, 2]."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([batch or -1, 3, 8, 8], ov.Type.f32, name="x")
    w = ops.constant(np.random.default_rng(0).normal(size=(2, 3, 3, 3)).astype(np.float32))
    conv = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])
    out = ops.reduce_mean(conv, ops.constant(np.array([2, 3], dtype=np.int64)), False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([out], [x], "tiny"), str(path), compress_to_fp16=False)
    return path


# ---------------------------------------------------------------- OpenVINO Model Server

def test_ovms_config_follows_ovms_schema_and_the_schema_can_refuse() -> None:
    from lcpipe.deploy.ovms import ovms_config, plugin_config

    validator = _ovms_validator()
    plugin = plugin_config({"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16",
                            "INFERENCE_NUM_THREADS": 2, "CACHE_DIR": "/x"})
    assert plugin == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 2}
    config = ovms_config(["textline", "textline_float"], plugin)
    validator.validate(config)
    bad = json.loads(json.dumps(config))
    bad["model_config_list"][0]["config"]["cache_dir"] = "/cache"  # a server option, not a model's
    assert not validator.is_valid(bad)
    bad = json.loads(json.dumps(config))
    bad["model_config_list"][0]["config"]["plugin_config"]["X"] = ["a list"]
    assert not validator.is_valid(bad)


def test_ovms_layout_holds_each_served_ir_as_version_1(tmp_path: Path) -> None:
    import openvino as ov

    from lcpipe.deploy.ovms import write_ovms

    bundle = tmp_path / "deploy"
    for stem in ("model_image", "model", "reference_fp32"):
        _tiny_ir(bundle / f"{stem}.xml")
    out = write_ovms(bundle, "my pipeline/v1", {"PERFORMANCE_HINT": "LATENCY"})
    assert out["models"] == {"my_pipeline_v1": "model_image.xml", "my_pipeline_v1_float": "model.xml"}
    config = json.loads((bundle / "ovms" / "config.json").read_text())
    assert config == out["config"]
    _ovms_validator().validate(config)
    for entry in config["model_config_list"]:
        version = bundle / "ovms" / entry["config"]["base_path"] / "1"  # base_path: relative to config.json
        assert sorted(p.name for p in version.iterdir()) == ["model.bin", "model.xml"]
        served = bundle / out["models"][entry["config"]["name"]]
        for suffix in (".xml", ".bin"):
            assert (version / f"model{suffix}").read_bytes() == served.with_suffix(suffix).read_bytes()
        assert ov.Core().read_model(str(version / "model.xml")).outputs[0].get_partial_shape()[1] == 2


# ---------------------------------------------------------------- dynamic batch

def test_dynamic_batch_copy_takes_any_batch_and_answers_as_the_static_ir(tmp_path: Path) -> None:
    import openvino as ov

    from lcpipe.ir import input_batch, read_ir, with_dynamic_batch

    static = read_ir(_tiny_ir(tmp_path / "m.xml"))
    dynamic = with_dynamic_batch(static)
    assert input_batch(static) == 1 and input_batch(dynamic) is None
    assert input_batch(static) == 1  # the original is left as it was
    core = ov.Core()
    cs, cd = core.compile_model(static, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), \
        core.compile_model(dynamic, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32)
    with pytest.raises(RuntimeError):
        cs(x)  # what a user of the static bundle IR meets with batch 4
    batch = cd(x)[0]
    one_by_one = np.stack([cs(x[i:i + 1])[0][0] for i in range(4)])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-5, atol=1e-6)
    assert np.abs(one_by_one - one_by_one[0]).max() > 1e-3  # the images give different answers


# ---------------------------------------------------------------- serve.py

@pytest.mark.parametrize("pre", [
    {"mode": "resize", "size": [80, 160], "interpolation": "bilinear"},
    {"mode": "paddleclas", "resize_short": 256, "crop": 224, "interpolation": "bilinear"},
    {"mode": "timm", "resize_short": 256, "crop": 224, "crop_pct": 0.875, "interpolation": "bicubic"},
])
def test_serve_script_resizes_as_lcpipe_does(tmp_path: Path, pre: dict[str, Any]) -> None:
    """serve.py's preprocess() (the generated code itself, executed) gives lcpipe's resize_crop pixels."""
    from lcpipe.config import PreprocessConfig
    from lcpipe.data.preprocess import decode_image_bgr, resize_crop
    from lcpipe.deploy.snippet import serve_script

    script = tmp_path / "serve.py"
    script.write_text(serve_script(pre, {"PERFORMANCE_HINT": "LATENCY"}, pipeline="t", served="model_image.xml"))
    scope: dict[str, Any] = {"__file__": str(script), "__name__": "serve"}
    exec(compile(script.read_text(), str(script), "exec"), scope)
    kw = {"size": (80, 160)} if pre["mode"] == "resize" else \
        {"crop": 224, "crop_pct": 0.875} if pre["mode"] == "timm" else {"resize_short": 256, "crop": 224}
    cfg = PreprocessConfig(mode=pre["mode"], interpolation=pre["interpolation"], **kw)
    images = [*helpers.real_image_paths(2), *sorted((helpers.TEXT_LINES / "lines").glob("*"))[:2]]
    for path in images:
        img = decode_image_bgr(path)
        np.testing.assert_array_equal(scope["preprocess"](img)[0], resize_crop(img, cfg))
    assert scope["MODEL"] == tmp_path / "model_image.xml"  # beside the script, whatever the cwd


# ---------------------------------------------------------------- servable or not

def _gate(name: str, passed: bool, value: float, threshold: float, **kw: Any) -> dict[str, Any]:
    return {"name": name, "threshold": threshold, "value": value, "passed": passed, "isa_key": "any",
            "metric": None, "note": "", **kw}


def test_servability_reads_passed_and_three_valued_verdicts() -> None:
    from lcpipe.deploy.servable import do_not_serve_line, servability

    ok = servability({"gates": [_gate("min_agreement", True, 0.99, 0.95)], "passed": True})
    assert ok == {"servable": True, "verdict": "pass", "reasons": [], "gates": 1}
    assert do_not_serve_line(ok) is None
    failed = servability({"gates": [_gate("min_agreement", False, 0.9, 0.95), _gate("max_top1_flips", True, 0, 2)]})
    assert not failed["servable"] and failed["verdict"] == "fail"
    assert failed["reasons"] == ["gate min_agreement fail: 0.9 (limit 0.95)"]
    assert do_not_serve_line(failed) == "DO NOT SERVE: gate min_agreement fail: 0.9 (limit 0.95)"
    unsure = servability({"gates": [_gate("min_latency_speedup", False, 1.02, 1.0, verdict="inconclusive",
                                          interval=[0.97, 1.08])]})
    assert not unsure["servable"] and unsure["verdict"] == "inconclusive"
    assert unsure["reasons"] == ["gate min_latency_speedup inconclusive: 1.02 (limit 1), 95% interval [0.97, 1.08]"]
    mixed = servability({"gates": [_gate("a", False, 1.0, 2.0, verdict="inconclusive"), _gate("b", False, 1.0, 2.0)]})
    assert mixed["verdict"] == "fail"
    assert not servability({"gates": [], "passed": False})["servable"]
    assert servability({"gates": None, "passed": None})["servable"]  # no gates configured: nothing failed


def test_readme_of_a_failed_run_starts_with_do_not_serve() -> None:
    from test_gates import _metrics

    from lcpipe.deploy.readme import deploy_readme
    from lcpipe.deploy.servable import servability
    from lcpipe.metrics import shipped_metrics

    m = {**_metrics(), "pipeline": "t", "passed": False, "gates": [_gate("min_agreement", False, 0.9, 0.95)]}
    m["inference_precision"] = {"fp32": "f32", "int8": "f32"}
    m["shipped"] = shipped_metrics(m)
    bundle = {**servability(m), "static_batch": 1, "dynamic_batch_ir": None, "batching": None,
              "model_cache": "../openvino_cache",
              "ovms": {"config": "ovms/config.json", "models": {"t": "model_image.xml"}}}
    pre = {"mode": "resize", "size": [80, 160]}
    lines = deploy_readme(m, pre, False, bundle=bundle, input_hw=(80, 160)).splitlines()
    assert lines[0] == "DO NOT SERVE: gate min_agreement fail: 0.9 (limit 0.95)"
    assert any("taking images (DO NOT SERVE: see the first line)" in s for s in lines)
    assert not any("(serve this)" in s for s in lines)
    assert any("static batch 1: input [1, 80, 160, 3]" in s for s in lines)
    assert any("set the deploy option batch: dynamic" in s for s in lines)
    m["passed"], m["gates"] = True, [_gate("min_agreement", True, 0.99, 0.95)]
    ok = deploy_readme(m, pre, False, bundle={**bundle, **servability(m)})
    assert ok.startswith("lcpipe deploy bundle: t\n") and "(serve this)" in ok and "DO NOT SERVE" not in ok
    any_batch = deploy_readme(m, pre, False, bundle={**bundle, "static_batch": None}, input_hw=(80, 160))
    assert "takes any batch: input [?, 80, 160, 3]" in any_batch and "static batch" not in any_batch


# ---------------------------------------------------------------- a real bundle, through the CLI

def _top(stdout: str) -> list[tuple[int, float]]:
    """(class index, percent) of `lcpipe predict` / serve.py lines "  1.  93.57%      0  0_degree"."""
    rows = [line.split() for line in stdout.splitlines() if line.startswith("  ")]
    return [(int(r[2]), float(r[1].rstrip("%"))) for r in rows]


@pytest.mark.slow
def test_a_real_bundle_serves_from_any_directory_and_says_do_not_serve_after_a_failed_gate(tmp_path: Path) -> None:
    """The real textline model through `lcpipe run` with ``deploy: {batch: dynamic}`` and a gate it cannot
    pass (exit 3): the bundle is written and says DO NOT SERVE (README first line, metrics.json, serve.py);
    its OVMS config follows OVMS's schema; serve.py run from another directory prints the probabilities
    `lcpipe predict --json` gives, with OpenVINO's model cache next to the bundle; the dynamic-batch IR
    takes batch 4 where model_image.xml raises, and its timing is in metrics.json."""
    import openvino as ov

    pytest.importorskip("nncf")
    yaml = helpers.textline_yaml(tmp_path / "tl.yaml", "- validate: {rounds: 2, iterations: 10, throughput: false}\n"
                                 "- report: {}\n- deploy: {batch: dynamic, measure_batch: 4}")
    yaml.write_text(yaml.read_text() + "gates: {min_int8_top1: 0.999, max_top1_flips: 40}\n")  # ~85 % top-1: fails
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(helpers.REPO)}
    res = subprocess.run([sys.executable, "-m", "lcpipe", "run", str(yaml), "--out", str(run)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 3, res.stderr[-3000:]
    bundle = run / "deploy"

    readme = (bundle / "README.txt").read_text().splitlines()
    assert readme[0].startswith("DO NOT SERVE: gate min_int8_top1 fail: "), readme[:3]
    assert "max_top1_flips" not in readme[0]  # the gate that passed is not named
    meta = json.loads((bundle / "metrics.json").read_text())["bundle"]
    assert meta["servable"] is False and meta["verdict"] == "fail" and meta["reasons"][0] in readme[0]
    assert "bundle" not in json.loads((run / "metrics.json").read_text())  # the run's own record is unchanged

    _ovms_validator().validate(json.loads((bundle / "ovms" / "config.json").read_text()))
    name = "textline_small"
    for model, xml in ((name, "model_image.xml"), (f"{name}_float", "model.xml"),
                       (f"{name}_dynamic", "model_image_dynamic.xml")):
        served = (bundle / xml).with_suffix(".bin")
        assert (bundle / "ovms" / model / "1" / "model.bin").read_bytes() == served.read_bytes()

    core = ov.Core()
    four = np.random.default_rng(0).integers(0, 256, (4, 80, 160, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError):
        core.compile_model(str(bundle / "model_image.xml"), "CPU")(four)
    assert core.compile_model(str(bundle / "model_image_dynamic.xml"), "CPU")(four)[0].shape == (4, 2)
    assert any("static batch 1: input [1, 80, 160, 3]" in s for s in readme)
    b = meta["batching"]
    assert b["batch"] == 4 and all(v > 0 for v in b["images_per_s"].values()) and b["dynamic_vs_static_b1_latency"] > 0

    line = sorted((helpers.TEXT_LINES / "lines").glob("*"))[3]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    predicted = subprocess.run([sys.executable, "-m", "lcpipe", "predict", str(bundle), str(line), "--top-k", "2",
                                "--json", "--cache-dir", str(tmp_path / "predict_cache")], cwd=elsewhere, env=env,
                               capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    doc = json.loads(predicted.stdout)
    want = [(t["index"], 100 * t["probability"]) for t in doc["predictions"][0]["top"]]
    assert doc["compile_ms"] > 0 and doc["read_ms"] > 0 and doc["first_inference_ms"] > 0
    assert doc["model_cache"] == {"dir": str(tmp_path / "predict_cache"), "loaded_from_cache": False}
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # serve.py needs no lcpipe
    for start in ("first", "cached"):
        served = subprocess.run([sys.executable, str(bundle / "serve.py"), str(line), "--top-k", "2"], cwd=elsewhere,
                                env=bare, capture_output=True, text=True, timeout=300)
        assert served.returncode == 0, served.stderr[-2000:]
        assert "serve.py: DO NOT SERVE: gate min_int8_top1 fail" in served.stderr, start
        got = _top(served.stdout)
        assert [i for i, _ in got] == [i for i, _ in want], (start, served.stdout, want)
        np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=0.006)  # printed to 0.01 %
    assert list((run / "openvino_cache").iterdir()), "serve.py's model cache next to the bundle stayed empty"
    again = json.loads(subprocess.run([sys.executable, "-m", "lcpipe", "predict", str(bundle), str(line), "--json",
                                       "--cache-dir", str(tmp_path / "predict_cache")], cwd=elsewhere, env=env,
                                      capture_output=True, text=True, timeout=300).stdout)
    assert again["model_cache"]["loaded_from_cache"] is True
