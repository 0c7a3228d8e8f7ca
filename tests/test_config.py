"""Config: --set overrides, path resolution, `lcpipe check`, CLI exit codes, lazy imports."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest
import yaml
from click.testing import CliRunner

import lcpipe
from lcpipe.cli import cli
from lcpipe.errors import ConfigError


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


# ------------------------------------------------------------------ --set

def test_set_values_are_yaml_typed() -> None:
    cfg = lcpipe.load_config(helpers.V1_YAML, overrides=[
        "stages.export.opset=14", "stages.fuse.check=false", "model.options.use_last_conv=false",
        "model.options.class_num=4", "model.options.dropout_prob=0.1",
        "model.options.stride_list=[2, [2, 1], 2, 2, 2]", "preprocess.mode=resize", "preprocess.size=[80, 160]",
        "model.source.path=w.pdparams", "name=renamed", "runtime.threads=2",
    ])
    assert cfg.stage_options("export").opset == 14 and isinstance(cfg.stage_options("export").opset, int)
    assert cfg.stage_options("fuse").check is False
    opts = cfg.model.options
    assert opts.use_last_conv is False and opts.class_num == 4 and opts.dropout_prob == 0.1
    assert opts.stride_list == [2, (2, 1), 2, 2, 2]
    assert cfg.preprocess.input_hw == (80, 160)
    assert cfg.name == "renamed" and cfg.runtime.threads == 2
    # the YAML's other values are kept
    assert cfg.model.options.act == "hardswish" and cfg.model.source.url.endswith("PPLCNet_x1_0_pretrained.pdparams")


def test_set_string_that_looks_like_a_number_keeps_yaml_typing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stages\[2\]\.export\.opset: .*'seventeen'"):
        lcpipe.load_config(helpers.V1_YAML, overrides=["stages.export.opset=seventeen", "model.source.path=w"])


@pytest.mark.parametrize("override, needle", [
    ("stages.quantize.preset=mixed", "no stage named 'quantize'"),
    ("stages.export=14", "stages.<stage name>.<option>"),
    ("model.arch", "expected key.path=value"),
    ("model.options.stride_list=[2, [2, 1", "not valid YAML"),
    ("stages.export.opsett=14", "stages[2].export.opsett: unknown key (did you mean 'opset'?)"),
])
def test_bad_overrides(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        lcpipe.load_config(helpers.V1_YAML, overrides=["model.source.path=w", override])
    assert needle in str(info.value)


def test_yaml_paths_are_relative_to_the_yaml_and_set_paths_to_cwd(tmp_path: Path, monkeypatch) -> None:
    p = helpers.write_yaml(tmp_path / "pipes" / "p.yaml", helpers.MINIMAL_YAML.format(path="../w/a.pdparams") + """\
data:
  calib: {images: imgs, labels: imgs/labels.txt}
  label_names: names.txt
""")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = lcpipe.load_config(p)
    assert cfg.model.source.path == str(tmp_path / "w" / "a.pdparams")
    assert cfg.data.calib.images == str(tmp_path / "pipes" / "imgs")
    assert cfg.data.calib.labels == str(tmp_path / "pipes" / "imgs" / "labels.txt")
    assert cfg.data.label_names == str(tmp_path / "pipes" / "names.txt")
    cfg = lcpipe.load_config(p, overrides=["model.source.path=b.pdparams", "data.calib.images=my_imgs"])
    assert cfg.model.source.path == str(elsewhere / "b.pdparams")
    assert cfg.data.calib.images == str(elsewhere / "my_imgs")
    cfg = lcpipe.load_config(p, overrides=[f"model.source.path={tmp_path / 'abs.pdparams'}"])
    assert cfg.model.source.path == str(tmp_path / "abs.pdparams")
    assert cfg.model.source.url is None


def test_stage_option_paths_resolve_like_config_paths(tmp_path: Path, monkeypatch) -> None:
    """Stage options declare their path fields: YAML values relative to the YAML, --set values to the cwd."""
    from lcpipe.stages import STAGES

    p = helpers.write_yaml(tmp_path / "pipes" / "p.yaml", helpers.MINIMAL_YAML.format(path="w.pdparams") + """\
  - convert: {}
  - quantize: {}
  - validate: {groups: groups.tsv}
  - bench: {paddle_model: ../paddle/model}
""")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = lcpipe.load_config(p)
    assert cfg.stage_options("validate").groups == str(tmp_path / "pipes" / "groups.tsv")
    assert cfg.stage_options("bench").paddle_model == str(tmp_path / "paddle" / "model")
    cfg = lcpipe.load_config(p, overrides=["stages.validate.groups=g.tsv", "stages.bench.paddle_model=pm"])
    assert cfg.stage_options("validate").groups == str(elsewhere / "g.tsv")
    assert cfg.stage_options("bench").paddle_model == str(elsewhere / "pm")
    assert cfg.stage_options("validate").group_column == "script"  # not a path: left alone
    declared = {name: sorted(cls.Options.path_fields) for name, cls in STAGES.items() if cls.Options.path_fields}
    assert declared == {"validate": ["groups"], "bench": ["paddle_model"]}


def test_shipped_pipelines_validate() -> None:
    for path in (helpers.V1_YAML, helpers.V2_YAML):
        cfg = lcpipe.load_config(path)
        assert cfg.stage_names()[:3] == ["import", "fuse", "export"]
        assert cfg.model.source.format == "pdparams" and cfg.model.source.url


# ------------------------------------------------------------------ lcpipe check / exit codes

def test_check_prints_the_resolved_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = _invoke("check", str(helpers.V2_YAML), "--set", "stages.export.opset=14",
                  "--set", "model.source.path=w.pdparams", "--set", "model.arch=PPLCNetV2_small")
    assert res.exit_code == 0, res.output
    resolved = yaml.safe_load(res.stdout)
    assert resolved["model"]["source"]["path"] == str(tmp_path / "w.pdparams")
    assert resolved["model"]["arch"] == "PPLCNetV2_small"
    stages = {next(iter(s)): next(iter(s.values())) for s in resolved["stages"]}
    assert stages["export"]["opset"] == 14
    assert stages["fuse"]["check_tolerance"] == 1e-4  # defaults are shown too
    assert resolved["preprocess"]["resize_short"] == 256
    assert "ok" in res.stderr


def test_exit_code_2_for_config_and_input_errors(tmp_path: Path, synthetic_weights) -> None:
    bad_yaml = helpers.write_yaml(tmp_path / "bad.yaml",
                                  helpers.MINIMAL_YAML.format(path="w").replace("opset: 17", "opsett: 17"))
    res = _invoke("check", str(bad_yaml))
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: {bad_yaml}: stages[2].export.opsett: unknown key (did you mean 'opset'?)"
    res = _invoke("run", str(bad_yaml), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "opsett" in res.stderr
    res = _invoke("run", str(helpers.V1_YAML), "--set", f"model.source.path={tmp_path / 'none.pdparams'}",
                  "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "none.pdparams" in res.stderr and "Traceback" not in res.output
    res = _invoke("run", str(helpers.V1_YAML), "--set", f"model.source.path={synthetic_weights()}",
                  "--set", "model.arch=PPLCNet_x2_0", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "weights do not match PPLCNet_x2_0" in res.stderr
    res = _invoke("run", str(helpers.V1_YAML), "--set", f"model.source.path={synthetic_weights()}",
                  "--until", "quantize", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "--until quantize" in res.stderr


def test_exit_code_0_and_1(tmp_path: Path, synthetic_weights, monkeypatch) -> None:
    args = ["run", str(helpers.V1_YAML), "--set", f"model.source.path={synthetic_weights()}",
            "--out", str(tmp_path / "o"), "--until", "import"]
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    assert "run directory:" in res.stdout

    def boom(*a, **k):
        raise RuntimeError("unexpected failure")

    monkeypatch.setattr("lcpipe.runner.run_pipeline", boom)
    res = _invoke(*args)
    # a bug: one line naming the log that holds the traceback, exit 1
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: unexpected RuntimeError: unexpected failure") and "full traceback in" in line
    log = Path(line.rsplit("full traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "RuntimeError: unexpected failure" in log.read_text()


def test_missing_optional_dependency_exits_2_naming_the_extra(tmp_path: Path, monkeypatch) -> None:
    import lcpipe.deps

    real = lcpipe.deps.importlib.import_module

    def fake(name: str, *a, **k):
        if name.split(".")[0] in ("torch", "timm"):
            raise ImportError(f"No module named '{name}'")
        return real(name, *a, **k)

    monkeypatch.setattr(lcpipe.deps.importlib, "import_module", fake)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"PK\x03\x04 not really")
    res = _invoke("run", str(helpers.V1_YAML), "--set", f"model.source.path={weights}",
                  "--set", "model.source.format=torch", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2, res.output
    assert "lcpipe[torch]" in res.stderr and "'torch' is not installed" in res.stderr
    assert not (tmp_path / "o" / "import").exists()


def test_help_is_fast_and_imports_no_heavy_package() -> None:
    code = ("import lcpipe.cli, sys; "
            "print([m for m in ('paddle','torch','openvino','nncf','onnx','onnxruntime') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    t0 = time.perf_counter()
    for args in (["--help"], ["run", "--help"], ["--version"]):
        res = subprocess.run([sys.executable, "-m", "lcpipe", *args], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    assert (time.perf_counter() - t0) / 3 < 2.0
    assert "Usage" in subprocess.run([sys.executable, "-m", "lcpipe", "--help"], capture_output=True,
                                     text=True).stdout
    code = ("import sys; from click.testing import CliRunner; from lcpipe.cli import cli; "
            "CliRunner().invoke(cli, ['check', sys.argv[1], '--set', 'model.source.path=w']); "
            "print([m for m in ('paddle','torch','openvino','nncf') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, str(helpers.V1_YAML)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"  # `check` stays light too
