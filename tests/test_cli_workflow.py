"""The CLI around a user's workflow (issue 19): adding and removing stages with --set, copying an
example, `check` finding every missing input at once, `inspect` on lcpipe's own IRs, `stages`
listing every option, -q / -v after the subcommand, and one JSON document per --json command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helpers
import pytest
from click.testing import CliRunner

import lcpipe
from lcpipe.cli import cli
from lcpipe.errors import ConfigError
from lcpipe.stages import STAGES


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _textline() -> str:
    return str(lcpipe.load_config("textline_ori_int8").source_file)


# ------------------------------------------------------------------ --set adds / removes a stage

def test_set_adds_a_stage_at_its_place_in_the_registry_order(tmp_path: Path) -> None:
    yaml = helpers.textline_yaml(tmp_path / "t.yaml", "- validate: {}\n- report: {}")  # no plan stage
    cfg = lcpipe.load_config(yaml, ["stages.plan={rounds: 3}"])
    names = cfg.stage_names()
    assert names.index("plan") == names.index("quantize") + 1 and names.index("plan") < names.index("validate")
    assert cfg.stage_options("plan").rounds == 3
    # a stage the pipeline has: its options are replaced, not merged
    cfg = lcpipe.load_config("textline_ori_int8", ["stages.quantize={subset_size: 8}"])
    assert cfg.stage_options("quantize").subset_size == 8 and cfg.stage_options("quantize").preset is None
    # bench comes last in the registry: appended
    assert lcpipe.load_config("textline_ori_int8", ["stages.bench={}"]).stage_names()[-1] == "bench"


def test_set_null_removes_a_stage_and_the_rest_is_checked_as_usual() -> None:
    cfg = lcpipe.load_config("textline_ori_int8", ["stages.deploy=null"])
    assert "deploy" not in cfg.stage_names() and cfg.stage_names()[-1] == "report"
    with pytest.raises(ConfigError, match="no stage 'bench' to remove"):
        lcpipe.load_config("textline_ori_int8", ["stages.bench=null"])
    assert "plan" not in lcpipe.load_config("textline_ori_int8", ["stages.plan=null"]).stage_names()
    with pytest.raises(ConfigError, match="unknown stage 'plann'"):
        lcpipe.load_config("textline_ori_int8", ["stages.plann={}"])
    with pytest.raises(ConfigError, match="a whole stage takes a mapping"):
        lcpipe.load_config("textline_ori_int8", ["stages.plan=[1]"])
    with pytest.raises(ConfigError, match=r"stages\[.\]\.plan\.roundz: unknown key"):
        lcpipe.load_config("textline_ori_int8", ["stages.plan={roundz: 3}"])
    res = _invoke("check", "textline_ori_int8", "--set", "stages.quantize=null")  # validate then lacks ir_int8
    assert res.exit_code == 2 and "needs ir_int8" in res.stderr


def test_a_stage_added_with_set_resolves_its_paths_against_the_current_directory(tmp_path: Path,
                                                                                monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = lcpipe.load_config("textline_ori_int8", ["stages.validate={groups: g.tsv}"])
    assert cfg.stage_options("validate").groups == str(tmp_path / "g.tsv")


# ------------------------------------------------------------------ examples --copy, check

def test_a_copied_example_runs_where_it_was_copied(tmp_path: Path) -> None:
    res = _invoke("examples", "--copy", "textline_ori_int8", str(tmp_path / "mine"))
    assert res.exit_code == 0, res.output
    copied = tmp_path / "mine" / "pipeline.yaml"
    assert copied.read_text() == Path(_textline()).read_text()  # nothing rewritten
    assert (tmp_path / "mine" / "models").is_dir() and not list((tmp_path / "mine").rglob("__pycache__"))
    res = _invoke("check", str(copied))
    assert res.exit_code == 0 and "ok" in res.stderr, res.output
    # never into a folder that holds something
    res = _invoke("examples", "--copy", "textline_ori_int8", str(tmp_path / "mine"))
    assert res.exit_code == 2 and "not an empty folder" in res.stderr
    assert _invoke("examples", "--copy", "nope", str(tmp_path / "x")).exit_code == 2


def test_check_reports_every_path_of_a_moved_example_at_once(tmp_path: Path) -> None:
    moved = tmp_path / "copy.yaml"
    shutil.copy(_textline(), moved)  # the reproduction: the YAML alone, its relative paths broken
    res = _invoke("check", str(moved))
    assert res.exit_code == 2
    for key in ("model.source.path", "data.calib.images", "data.calib.labels", "data.eval.images",
                "data.eval.labels", "validate.groups"):
        assert f"{key}: {tmp_path}" in res.stderr, (key, res.stderr)
    assert "6 problem(s)" in res.stderr and "lcpipe examples --copy" in res.stderr
    res = _invoke("check", str(moved), "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 2 and doc["ok"] is False and len(doc["problems"]) == 6


def test_check_reports_a_missing_calibration_folder(tmp_path: Path) -> None:
    res = _invoke("check", "textline_ori_int8", "--set", f"data.calib.images={tmp_path / 'calib'}")
    assert res.exit_code == 2 and f"data.calib.images: {tmp_path / 'calib'} does not exist" in res.stderr
    assert "1 problem(s)" in res.stderr  # the labels file beside it is there: one problem, not a cascade


def test_check_reports_a_dataset_a_stage_needs_and_broken_dataset_files(tmp_path: Path) -> None:
    yaml = helpers.textline_yaml(tmp_path / "t.yaml", "- validate: {}")
    text = yaml.read_text()
    no_eval = yaml.with_name("no_eval.yaml")
    no_eval.write_text("\n".join(ln for ln in text.splitlines() if "eval:" not in ln))
    res = _invoke("check", str(no_eval))
    assert res.exit_code == 2 and "stages[5].validate: needs data.eval" in res.stderr, res.output
    bad = tmp_path / "labels.txt"
    bad.write_text("not_there.png 0\n")
    res = _invoke("check", str(yaml), "--set", f"data.eval.labels={bad}", "--set", "data.calib.count=100000")
    assert res.exit_code == 2 and "2 problem(s)" in res.stderr, res.output
    assert "listed image(s) missing" in res.stderr and "count 100000 is larger" in res.stderr


# ------------------------------------------------------------------ stages

def test_stages_lists_every_option_typed_with_its_default_and_nested_options() -> None:
    res = _invoke("stages")
    assert res.exit_code == 0, res.output
    assert "Options" not in res.stdout and "typing" not in res.stdout  # no raw type names
    quantize = _invoke("stages", "quantize").stdout
    assert quantize.splitlines()[0].startswith("quantize: ")
    lines = {ln.split()[0]: ln for ln in quantize.splitlines()[1:]}
    for nested in ("max_drop", "drop_type", "max_iterations", "names", "patterns", "types"):
        assert nested in lines, nested  # accuracy_control / ignored_scope expanded
    assert "performance | mixed | null = null" in lines["preset"]
    assert "float (>= 0.0, < 1.0) = 0.01" in lines["max_drop"]
    assert lines["accuracy_control"].split("=")[0].strip().endswith("mapping | null")
    assert _invoke("stages", "nope").exit_code == 2


def test_every_stage_option_has_one_line_of_help() -> None:
    from lcpipe.render.options import option_docs

    missing = [f"{name}.{d.key}" for name, cls in STAGES.items() for d in option_docs(cls.Options) if not d.help]
    assert missing == []


# ------------------------------------------------------------------ global flags after the subcommand

def test_quiet_and_verbose_work_after_the_subcommand() -> None:
    for args in (["-q", "check", "textline_ori_int8"], ["check", "textline_ori_int8", "-q"],
                 ["check", "-v", "textline_ori_int8"]):
        res = _invoke(*args)
        assert res.exit_code == 0, (args, res.output)
    assert _invoke("stages", "quantize", "-q").exit_code == 0
    assert _invoke("cache", "list", "-q").exit_code == 0


# ------------------------------------------------------------------ inspect reads lcpipe's IRs

@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the shipped textline model up to quantize (8 calibration lines): its FP32 and INT8 IRs."""
    tmp = tmp_path_factory.mktemp("inspect")
    yaml = helpers.textline_yaml(tmp / "t.yaml")
    lcpipe.run_pipeline(yaml, out=tmp / "run", overrides=["data.calib.count=8"])
    return tmp / "run"


def test_inspect_reads_an_int8_ir(quantized: Path) -> None:
    res = _invoke("inspect", str(quantized / "quantize" / "model.xml"), "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["format"] == "openvino" and info["arch"] == "PPLCNet_x0_25"
    assert info["inputs"] == [{"name": "x", "shape": "[1,3,80,160]", "element_type": "f32", "layout": "NCHW"}]
    assert info["outputs"][0]["shape"] == "[1,2]" and info["precision"] == "int8"
    ops = info["int8_ops"]
    assert 0 < ops["quantized"] <= ops["quantizable"] and ops["fake_quantize"] > 0 and "i8" in info["weight_types"]
    assert info["labels"] == ["0_degree", "180_degree"]
    assert info["preprocess"]["mode"] == "resize" and info["preprocess"]["input_hw"] == [80, 160]
    assert info["quantization"]["calib_images"] == 16  # 8 lines x 2 rotations
    text = _invoke("inspect", str(quantized / "quantize" / "model.xml")).stdout
    assert f"{ops['quantized']}/{ops['quantizable']} convs+matmuls INT8" in text and "x [1,3,80,160] f32 NCHW" in text


def test_inspect_reads_an_fp32_ir_and_tells_the_format_from_the_name(quantized: Path) -> None:
    fp32 = quantized / "convert" / "model.xml"
    info = json.loads(_invoke("inspect", str(fp32), "--json").stdout)
    assert info["precision"] == "fp32" and info["int8_ops"]["quantized"] == 0 and info["weight_types"] == ["f32"]
    odd = quantized.parent / "model.ir"
    shutil.copy(fp32, odd)
    shutil.copy(fp32.with_suffix(".bin"), odd.with_suffix(".bin"))
    assert _invoke("inspect", str(odd)).exit_code == 2  # no name to go by
    assert json.loads(_invoke("inspect", str(odd), "--format", "openvino", "--json").stdout)["arch"] == "PPLCNet_x0_25"


def test_inspect_detects_the_onnx_arch_as_the_import_stage_does(quantized: Path) -> None:
    import json as _json

    info = json.loads(_invoke("inspect", str(quantized / "export" / "model.onnx"), "--json").stdout)
    imported = _json.loads((quantized / "import" / "model_info.json").read_text())
    assert info["arch"] == imported["spec"]["arch"] == "PPLCNet_x0_25"
    assert info["input_hw"] == [80, 160] and info["class_num"] == 2 and info["ops"]["Conv"] > 0


def test_inspect_garbage_ir_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "model.xml"
    bad.write_text("<notnet/>")
    res = _invoke("inspect", str(bad))
    assert res.exit_code == 2 and "not an OpenVINO IR" in res.stderr


# ------------------------------------------------------------------ Python API

def test_run_pipeline_takes_an_example_name(tmp_path: Path) -> None:
    result = lcpipe.run_pipeline("textline_ori_int8", out=tmp_path / "run", until="import")
    assert result.run_dir == tmp_path / "run" and [r.name for r in result.records] == ["import"]
    assert result.artifacts["canonical"] == tmp_path / "run" / "import" / "canonical"
    assert result.metrics is None and result.failed_gates == []
