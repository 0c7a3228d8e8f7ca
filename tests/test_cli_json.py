"""Scripting lcpipe (issue 19): every --json command prints exactly one JSON document on stdout while
NNCF quantizes (its INFO lines, several lines long, and progress bars go to stderr); the one-liner
`lcpipe quantize` on the shipped textline model passes and leaves the YAML that reproduces it; and
commands after one another on one run folder lose nothing. Real pipelines: slow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import pytest

pytestmark = pytest.mark.slow

FAST_VALIDATE = "stages.validate={rounds: 2, iterations: 20, warmup: 5, throughput_seconds: 0.2, e2e_images: 16}"
# a plan candidate with the stem in float: NNCF's ignored scope logs INFO lines such as
# "Not adding activation input quantizer for operation: 1 conv1.conv/WithoutBiases\n2 conv1.conv"
PLAN_WITH_STEM = "stages.plan={presets: [performance], keep_float: [[], [stem]], rounds: 2, iterations: 5}"
FAST = ("--set", "data.calib.count=8", "--set", PLAN_WITH_STEM, "--set", FAST_VALIDATE)
IMAGE = helpers.TEXT_LINES / "lines" / "paddleocr_words_ch_word_1.jpg"


def _cli(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(helpers.REPO), "LCPIPE_CACHE_DIR": str(cache)}
    res = subprocess.run([sys.executable, "-m", "lcpipe", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=900)
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    return res


def _one_document(res: subprocess.CompletedProcess[str]) -> object:
    """stdout is one JSON document, nothing before or after it."""
    assert res.stdout.strip(), res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-json")


def test_nncf_logs_never_reach_stdout(folder: Path) -> None:
    res = _cli("-vv", "run", "textline_ori_int8", "--out", "text", *FAST, cwd=folder, cache=folder / "cache")
    assert res.returncode in (0, 3, 4), res.stderr[-3000:]
    assert "ignored nodes were found" in res.stderr and "conv1.conv" in res.stderr  # NNCF did log (-vv)
    for stray in ("nncf", "conv1.conv", "INFO", "━"):
        assert stray not in res.stdout, (stray, res.stdout)
    assert res.stdout.rstrip().endswith(f"run directory: {folder / 'text'}")


def test_every_json_command_prints_one_document(folder: Path) -> None:
    cache, run = folder / "cache-json", folder / "run"
    # run: NNCF quantizes and builds the plan's candidates (no cache), the flag after the subcommand
    res = _cli("run", "textline_ori_int8", "--out", "run", *FAST, "--json", "-q", cwd=folder, cache=cache)
    doc = _one_document(res)
    assert res.returncode == doc["exit_code"] in (0, 3, 4), res.stderr[-3000:]
    assert doc["run_dir"] == str(run) and [s["name"] for s in doc["stages"]][-1] == "deploy"
    assert not any(s["cached"] for s in doc["stages"]) and doc["artifacts"]["deploy"] == str(run / "deploy")
    assert doc["metrics"] == json.loads((run / "metrics.json").read_text())
    assert "run directory:" in res.stderr  # the human lines went to stderr

    res = _cli("check", "textline_ori_int8", "--json", cwd=folder, cache=cache)
    assert res.returncode == 0 and _one_document(res)["ok"] is True

    res = _cli("predict", str(run / "deploy"), str(IMAGE), "--json", cwd=folder, cache=cache)
    top = _one_document(res)["predictions"][0]["top"]
    assert res.returncode == 0 and top[0]["label"] in ("0_degree", "180_degree")

    res = _cli("inspect", str(run / "deploy" / "model_image.xml"), "--json", cwd=folder, cache=cache)
    info = _one_document(res)
    assert res.returncode == 0 and info["inputs"][0]["element_type"] == "u8" and info["plan"]["name"]

    res = _cli("bench", "textline_ori_int8", "--out", "run", *FAST, "--engines", "ov_fp32,ov_int8", "--rounds", "1",
               "--iterations", "5", "--json", cwd=folder, cache=cache)
    bench = _one_document(res)
    assert res.returncode == 0 and {e["name"] for e in bench["engines"]} >= {"ov_fp32", "ov_int8"}
    assert "bench results:" in res.stderr

    sweep = helpers.write_yaml(folder / "sweep.yaml", f"""
        base: {helpers.REPO / 'pipelines' / 'textline_ori_int8.yaml'}
        set: {{data.calib.count: 8, {PLAN_WITH_STEM.replace('=', ': ', 1)}, {FAST_VALIDATE.replace('=', ': ', 1)}}}
        points: [{{runtime.threads: 1}}]
        """)
    res = _cli("sweep", str(sweep), "--local", "--out", "sweep", "--json", cwd=folder, cache=cache)
    doc = _one_document(res)
    assert res.returncode in (0, 3, 4), res.stderr[-3000:]
    assert len(doc["points"]) == 1 and Path(doc["files"]["json"]).is_file()


def test_quantize_one_liner_passes_and_its_yaml_reproduces_the_run(tmp_path: Path) -> None:
    """The shipped textline model and its own images, the 20 calibration lines apart from the 39
    evaluation lines (calibration images are never verdict images), each at 0 and 180 degrees (the
    rotation is the label)."""
    calib, evals = tmp_path / "calib", tmp_path / "eval"
    for listing, dest in (("calib.txt", calib), ("eval.txt", evals)):
        names = (helpers.TEXT_LINES / listing).read_text().split()
        helpers.copy_into([helpers.TEXT_LINES / "lines" / n for n in names], dest)
    cache = tmp_path / "cache"
    res = _cli("quantize", str(helpers.TEXTLINE_MODEL), "--calib", "calib", "--eval", "eval", "--out", "out",
               "--set", "data.calib.rotations=[0, 180]", "--set", "data.eval.rotations=[0, 180]",
               cwd=tmp_path, cache=cache)
    assert res.returncode == 0, res.stderr[-3000:]
    written = (tmp_path / "out" / "pipeline.yaml").read_text()
    assert res.stdout.startswith(written)  # the YAML it printed is the one it left
    import yaml

    raw = yaml.safe_load(written)
    assert raw["model"]["source"]["format"] == "paddle_inference" and raw["model"]["arch"] == "auto"
    assert raw["preprocess"]["size"] == [80, 160]  # from the model's inference.yml
    assert [next(iter(s)) for s in raw["stages"]] == ["import", "fuse", "export", "convert", "quantize", "plan",
                                                       "validate", "report", "deploy"]
    first = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [g["name"] for g in first["gates"]] == ["min_agreement"] and (tmp_path / "out" / "deploy").is_dir()
    # the YAML, run from elsewhere into another folder: every stage is the one-liner's (same cache keys)
    again = _cli("run", str(tmp_path / "out" / "pipeline.yaml"), "--out", "again", "--json", cwd=tmp_path.parent,
                 cache=cache)
    doc = _one_document(again)
    assert again.returncode == 0 and all(s["cached"] for s in doc["stages"]), again.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["key"] for s in doc["stages"]] == [s["key"] for s in manifest["stages"]]
    assert doc["metrics"]["gates"] == first["gates"]


def test_quantize_without_eval_images_stops_at_the_int8_ir(tmp_path: Path) -> None:
    calib = helpers.copy_into(sorted((helpers.TEXT_LINES / "lines").glob("*.png"))[:4], tmp_path / "calib")
    res = _cli("quantize", str(helpers.TEXTLINE_MODEL), "--calib", str(calib), "--out", "out", "--json",
               cwd=tmp_path, cache=tmp_path / "cache")
    doc = _one_document(res)
    assert res.returncode == 0 and doc["metrics"] is None and [s["name"] for s in doc["stages"]][-1] == "quantize"
    assert Path(doc["artifacts"]["ir_int8"]).is_file() and "quantize:" in res.stderr  # the YAML went to stderr
    assert (tmp_path / "out" / "pipeline.yaml").is_file()


def test_inspect_names_the_arch_of_a_timm_exported_onnx(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    model = timm.create_model("lcnet_100", pretrained=False).eval()
    onnx = tmp_path / "lcnet_100.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(onnx), opset_version=17, dynamo=False)
    res = _cli("inspect", str(onnx), "--json", cwd=tmp_path, cache=tmp_path / "cache")
    info = _one_document(res)
    assert info["arch"] == "PPLCNet_x1_0" and info["class_num"] == 1000 and info["input_hw"] == [224, 224]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name not in ("lcpipe.log", ".lcpipe.lock")}


def test_run_bench_predict_inspect_on_one_out_lose_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    res = _cli("run", "textline_ori_int8", "--out", "run", *FAST, cwd=tmp_path, cache=cache)
    assert res.returncode in (0, 3, 4), res.stderr[-3000:]
    run = tmp_path / "run"
    before = _snapshot(run)
    assert {"metrics.json", "report.html", "deploy/model_image.xml", "validate/validation.json"} <= set(before)
    res = _cli("bench", "textline_ori_int8", "--out", "run", *FAST, "--engines", "ov_fp32,ov_int8", "--rounds", "1",
               "--iterations", "5", cwd=tmp_path, cache=cache)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _cli("predict", str(run / "deploy"), str(IMAGE), cwd=tmp_path, cache=cache).returncode == 0
    assert _cli("inspect", str(run / "deploy"), cwd=tmp_path, cache=cache).returncode == 0
    after = _snapshot(run)
    assert [name for name, data in before.items() if after.get(name) != data] == []
    assert (run / "bench" / "bench.json").is_file()
    shutil.rmtree(run)
