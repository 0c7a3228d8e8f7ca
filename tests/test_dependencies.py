"""Declared dependencies are the ones lcpipe imports; paddle2onnx as lcpipe calls it installs nothing."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from helpers import REPO, TEXTLINE_MODEL

# imported by lcpipe but deliberately not declared: the test-only reference used by the benchmark matrix
UNDECLARED_OK = {"paddleclas"}


def _requirements(section: str, key: str) -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [ln.strip() for ln in cfg[section][key].splitlines()]
    return {re.split(r"[<>=!~\[ ;]", ln, maxsplit=1)[0].lower().replace("_", "-")
            for ln in lines if ln and not ln.startswith("#")}


def _imported_modules() -> set[str]:
    """Top-level modules lcpipe imports (import/from statements and deps.require/has_module calls)."""
    found: set[str] = set()
    pattern = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)|(?:require|has_module)\(\"([A-Za-z_]\w*)", re.M)
    for f in (REPO / "lcpipe").rglob("*.py"):
        for a, b in pattern.findall(f.read_text()):
            found.add(a or b)
    return found


def _module_to_dists() -> dict[str, set[str]]:
    return {m: {d.lower().replace("_", "-") for d in ds} for m, ds in metadata.packages_distributions().items()}


def test_every_declared_dependency_is_imported() -> None:
    declared = _requirements("options", "install_requires")
    by_module = _module_to_dists()
    imported_dists = set().union(*(by_module.get(m, set()) for m in _imported_modules()))
    missing = {d for d in declared if d not in imported_dists and d.replace("-", "_") not in _imported_modules()}
    assert not missing, f"declared in setup.cfg but never imported by lcpipe: {sorted(missing)}"


def test_every_third_party_import_is_declared() -> None:
    declared = _requirements("options", "install_requires")
    for extra in ("torch", "sweep"):
        declared |= _requirements("options.extras_require", extra)
    by_module = _module_to_dists()
    stdlib = set(sys.stdlib_module_names) | {"lcpipe", "__future__", "google"}  # google: protobuf, via onnx
    undeclared = {m for m in _imported_modules() - stdlib - UNDECLARED_OK
                  if by_module.get(m) and not by_module[m] & declared}
    assert not undeclared, f"imported by lcpipe but not declared: {sorted(undeclared)}"


_PROBE = textwrap.dedent("""
    import importlib.abc, sys, tempfile
    from pathlib import Path
    BLOCK = {"onnx_graphsurgeon", "sympy", "polygraphy"}
    tried, spawned = [], []

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                tried.append(name)
                raise ImportError("blocked " + name)

    def hook(event, args):
        if event in ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn"):
            spawned.append(repr(args))
            if "pip" in repr(args):
                raise RuntimeError("pip blocked")

    sys.meta_path.insert(0, Block())
    sys.addaudithook(hook)
    from lcpipe.importers.paddle_inference import import_paddle_inference
    with tempfile.TemporaryDirectory() as tmp:
        model, onnx_path, _ = import_paddle_inference(Path(sys.argv[1]), work_dir=Path(tmp))
        print("ARCH", model.spec.arch, Path(onnx_path).stat().st_size > 0)
    print("TRIED", sorted(set(tried)))
    print("PIP", [s for s in spawned if "pip" in s])
""")


def test_paddle2onnx_as_lcpipe_calls_it_needs_no_graphsurgeon_sympy_or_pip() -> None:
    """Why setup.cfg does not declare onnx_graphsurgeon / sympy: lcpipe's call skips paddle2onnx's
    optimizer (polygraphy), the step that imports them and pip-installs them when missing."""
    pytest.importorskip("paddle2onnx")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", _PROBE, str(TEXTLINE_MODEL)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "ARCH PPLCNet_x0_25 True" in out
    assert "TRIED []" in out, out
    assert "PIP []" in out, out


def test_cpu_model_name() -> None:
    from lcpipe.sysinfo import cpu_model

    name = cpu_model()
    assert name and name != "unknown"
    if Path("/proc/cpuinfo").is_file():
        lines = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        if lines:
            assert name == lines[0].split(":", 1)[1].strip()


def test_cpu_model_from_py_cpuinfo_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where /proc/cpuinfo has no model name (macOS, Windows, ARM), py-cpuinfo's brand names the CPU."""
    import builtins

    import cpuinfo

    from lcpipe import sysinfo

    real_open = builtins.open

    def no_proc(file, *a, **kw):
        if str(file) == "/proc/cpuinfo":
            raise FileNotFoundError(file)
        return real_open(file, *a, **kw)

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr(cpuinfo, "get_cpu_info", lambda: {"brand_raw": "Some Vendor CPU @ 3.0GHz"})
    sysinfo.cpu_model.cache_clear()
    try:
        assert sysinfo.cpu_model() == "Some Vendor CPU @ 3.0GHz"
    finally:
        sysinfo.cpu_model.cache_clear()
