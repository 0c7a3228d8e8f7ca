"""Packaged examples: the embedded default is package data, reachable by name from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

from lcpipe.errors import InputError
from lcpipe.examples import EXAMPLES_DIR, list_examples, resolve_pipeline
from lcpipe.runner import load_config

EXAMPLE = EXAMPLES_DIR / "textline_ori_int8"


def _lcpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lcpipe", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_examples_lists_the_embedded_default() -> None:
    assert list_examples() == {"textline_ori_int8": EXAMPLE / "pipeline.yaml"}


def test_repo_pipeline_is_the_packaged_one() -> None:
    """pipelines/textline_ori_int8.yaml points at the package's files: one copy of the data, same config."""
    repo = load_config(REPO / "pipelines" / "textline_ori_int8.yaml").model_dump(exclude={"source_file"})
    packaged = load_config(EXAMPLE / "pipeline.yaml").model_dump(exclude={"source_file"})
    assert repo == packaged
    assert packaged["model"]["source"]["path"].startswith(str(EXAMPLE))


def test_example_data_is_small_and_carries_its_licences() -> None:
    size = sum(f.stat().st_size for f in EXAMPLE.rglob("*") if f.is_file())
    assert size < 2_000_000, size
    for name in ("models/PP-LCNet_x0_25_textline_ori/PADDLEOCR_LICENSE", "models/PP-LCNet_x0_25_textline_ori/SOURCE.md",
                 "text_lines/SOURCE.md", "text_lines/manifest.tsv"):
        assert (EXAMPLE / name).is_file(), name
    assert not (REPO / "calib_data" / "text_lines").exists()  # one copy only
    assert not (REPO / "pipelines" / "models").exists()


def test_a_path_wins_over_an_example_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_pipeline("textline_ori_int8") == EXAMPLE / "pipeline.yaml"
    (tmp_path / "textline_ori_int8").write_text("name: mine\n")
    assert resolve_pipeline("textline_ori_int8") == Path("textline_ori_int8")
    with pytest.raises(InputError, match="no_such: no such pipeline file, and not a packaged example"):
        resolve_pipeline("no_such")


def test_cli_examples_and_unknown_name(tmp_path: Path) -> None:
    out = _lcpipe("examples", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"textline_ori_int8: {EXAMPLE / 'pipeline.yaml'}" in out.stdout
    bad = _lcpipe("run", "no_such_example", cwd=tmp_path)
    assert bad.returncode == 2
    assert "no_such_example: no such pipeline file" in bad.stderr and "Traceback" not in bad.stderr


def test_run_by_name_writes_under_the_cwd(tmp_path: Path) -> None:
    """The run dir is runs/<name> under the current directory, never next to the packaged files."""
    pytest.importorskip("paddle")
    before = sorted(p.relative_to(EXAMPLE) for p in EXAMPLE.rglob("*"))
    res = _lcpipe("run", "textline_ori_int8", "--until", "import", "--no-cache", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "runs" / "textline_ori_int8" / "import" / "stage.json").is_file()
    assert sorted(p.relative_to(EXAMPLE) for p in EXAMPLE.rglob("*")) == before


def test_wheel_holds_models_templates_and_example_not_imagenet(tmp_path: Path) -> None:
    """A plain (non-editable) wheel: the package folders, the templates and the example data, no ImageNet."""
    pytest.importorskip("setuptools")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("lcpipe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in sorted({p.parent for p in (REPO / "lcpipe").rglob("*.py")}):
        if pkg.name != "__pycache__" and not pkg.is_relative_to(EXAMPLE):
            assert (pkg / "__init__.py").is_file(), f"{pkg} is a folder of modules without __init__.py"
    expected = {f.relative_to(REPO).as_posix() for f in (REPO / "lcpipe").rglob("*")
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"}
    assert expected <= names, sorted(expected - names)
    assert any(n.startswith("lcpipe/models/") and n.endswith(".py") for n in names)
    assert "lcpipe/render/templates/report.html.j2" in names
    assert not any("imagenet" in n.lower() for n in names)
