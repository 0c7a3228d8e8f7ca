"""Runner and cache: reproducible bytes, cache reuse, --force/--until/--from, manifest, inspect,
`cache list|clean`, and concurrent runs sharing one cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest
from click.testing import CliRunner

from lcpipe.cli import cli
from lcpipe.errors import InputError

V2_SPEC = {"arch": "PPLCNetV2_small", "act": "relu"}


def _run(weights: Path, out: Path, cache: Path, *overrides: str, yaml: Path = helpers.V1_YAML, **kw):
    return helpers.run_export(yaml, [f"model.source.path={weights}", *overrides], out, cache, **kw)


def _v2(synthetic_weights) -> Path:
    return synthetic_weights(**V2_SPEC)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------ reproducible bytes

@pytest.mark.parametrize("family", ["v1", "v2"])
def test_same_inputs_give_byte_identical_onnx(tmp_path: Path, synthetic_weights, family: str) -> None:
    if family == "v1":
        weights, extra = synthetic_weights(), ()
    else:
        weights, extra = _v2(synthetic_weights), ("model.arch=PPLCNetV2_small",)
    yaml = helpers.V1_YAML if family == "v1" else helpers.V2_YAML
    a = _run(weights, tmp_path / "a", tmp_path / "c1", *extra, yaml=yaml, force=True)
    b = _run(weights, tmp_path / "b", tmp_path / "c2", *extra, yaml=yaml, force=True)
    c = _run(weights, tmp_path / "b", tmp_path / "c2", *extra, yaml=yaml, force=True)  # same dir, --force again
    onnx_a, onnx_b, onnx_c = (r.artifacts["onnx"] for r in (a, b, c))
    assert onnx_a.read_bytes() == onnx_b.read_bytes() == onnx_c.read_bytes()
    for stage in ("import", "fuse"):
        assert _sha(tmp_path / "a" / stage / "canonical" / "tensors.npz") == \
            _sha(tmp_path / "b" / stage / "canonical" / "tensors.npz")


# ------------------------------------------------------------------ cache, --force, --until, --from

def test_rerun_is_cached_and_force_recomputes(tmp_path: Path, synthetic_weights, caplog) -> None:
    caplog.set_level(logging.INFO, logger="lcpipe")
    w, out, cache = synthetic_weights(), tmp_path / "out", tmp_path / "cache"
    first = _run(w, out, cache)
    assert [r.cached for r in first.records] == [False, False, False]
    onnx_bytes = first.artifacts["onnx"].read_bytes()
    for stage in ("import", "fuse", "export"):
        meta = json.loads((out / stage / "stage.json").read_text())
        assert meta["stage"] == stage and meta["key"] == next(r.key for r in first.records if r.name == stage)
    caplog.clear()
    again = _run(w, tmp_path / "out2", cache)
    assert [r.cached for r in again.records] == [True, True, True]
    assert caplog.text.count("cached result reused") == 3
    assert again.artifacts["onnx"].read_bytes() == onnx_bytes
    assert (tmp_path / "out2" / "export" / "stage.json").is_file()
    caplog.clear()
    forced = _run(w, out, cache, force=True)
    assert [r.cached for r in forced.records] == [False, False, False]
    assert "cached result reused" not in caplog.text and caplog.text.count("running") == 3
    # a changed option misses only from the stage it affects on
    changed = _run(w, out, cache, "stages.export.opset=14")
    assert [r.cached for r in changed.records] == [True, True, False]
    # a changed weights file (same path) misses from import on
    w2 = tmp_path / "w2.pdparams"
    w2.write_bytes(w.read_bytes())
    _run(w2, out, cache)
    w2.write_bytes(synthetic_weights(seed=1).read_bytes())
    assert [r.cached for r in _run(w2, out, cache).records] == [False, False, False]


def test_no_cache_neither_reads_nor_writes(tmp_path: Path, synthetic_weights) -> None:
    cache = tmp_path / "cache"
    res = _run(synthetic_weights(), tmp_path / "o", cache, no_cache=True)
    assert not any(r.cached for r in res.records)
    assert not cache.exists() or not any((cache / "stages").glob("*"))


def test_until_and_from(tmp_path: Path, synthetic_weights) -> None:
    w, out, cache = synthetic_weights(), tmp_path / "out", tmp_path / "cache"
    with pytest.raises(InputError, match="--from"):
        _run(w, out, cache, from_stage="export")
    part = _run(w, out, cache, until="fuse")
    assert [r.name for r in part.records] == ["import", "fuse"]
    assert (out / "fuse" / "stage.json").is_file() and not (out / "export").exists()
    assert json.loads((out / "manifest.json").read_text())["finished"] is True
    # --from export: import/fuse outputs come from --out, only export runs
    rest = _run(w, out, tmp_path / "other-cache", from_stage="export")
    assert [r.name for r in rest.records] == ["export"] and rest.records[0].cached is False
    assert rest.records[0].inputs["canonical"] == part.records[1].outputs["canonical"]["sha256"]
    full = _run(w, tmp_path / "full", tmp_path / "cache3")
    assert rest.artifacts["onnx"].read_bytes() == full.artifacts["onnx"].read_bytes()
    # --until fuse after a full run keeps the export result: same config, so fuse is reused in place
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "lcpipe.log"}
    again = _run(w, out, cache, until="fuse")
    assert [r.cached for r in again.records] == [True, True]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "lcpipe.log"} == before


def test_manifest_records_config_versions_cpu_hashes_and_timings(tmp_path: Path, synthetic_weights) -> None:
    w, out = synthetic_weights(), tmp_path / "out"
    res = _run(w, out, tmp_path / "cache", "stages.export.opset=15")
    m = json.loads((out / "manifest.json").read_text())
    assert m["finished"] is True and m["pipeline"] == "v1_x1_0_export"
    assert m["config"]["model"]["source"]["path"] == str(w)
    assert {"import": {}} in [{k: {}} for s in m["config"]["stages"] for k in s]
    assert m["config"]["stages"][2]["export"]["opset"] == 15
    assert m["versions"]["numpy"] and m["versions"]["onnx"] and m["lcpipe"]
    assert m["cpu"]
    assert [s["name"] for s in m["stages"]] == ["import", "fuse", "export"]
    for s in m["stages"]:
        assert isinstance(s["seconds"], float) and s["seconds"] >= 0 and len(s["key"]) == 64
        for kind, info in s["outputs"].items():
            assert len(info["sha256"]) == 64, kind
    export = m["stages"][2]
    assert export["outputs"]["onnx"]["sha256"] == _sha(res.artifacts["onnx"])
    assert export["inputs"]["canonical"] == m["stages"][1]["outputs"]["canonical"]["sha256"]
    info = json.loads((out / "import" / "model_info.json").read_text())
    assert info["sha256"] == _sha(w)


# ------------------------------------------------------------------ inspect

def _inspect(*args: str) -> dict:
    res = CliRunner().invoke(cli, ["inspect", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_inspect_pdparams_text_and_json(synthetic_weights) -> None:
    w = synthetic_weights("PPLCNet_x1_0")
    res = CliRunner().invoke(cli, ["inspect", str(w)])
    assert res.exit_code == 0, res.output
    assert "PPLCNet_x1_0" in res.stdout and "params" in res.stdout and "flops" in res.stdout
    info = _inspect(str(w))
    assert info["arch"] == "PPLCNet_x1_0" and info["format"] == "pdparams" and info["class_num"] == 1000
    assert info["params"] == 2963464  # PaddleClas PPLCNet_x1_0: sum of its parameters (incl. BN stats)
    assert abs(info["flops_macs"] / 161e6 - 1) < 0.05  # published 161M
    assert info["bn_folded"] is False and info["rep_branches_fused"] is None


def test_inspect_paddle_inference_uses_the_declared_input_size() -> None:
    """The textline model is fed 80x160 (its inference.yml): FLOPs at that size, not at 224x224."""
    pytest.importorskip("paddle2onnx")
    model = str(helpers.TEXTLINE_MODEL)
    env = {**os.environ, "PYTHONPATH": str(helpers.REPO)}
    res = subprocess.run([sys.executable, "-m", "lcpipe", "inspect", model, "--json"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout)  # stdout is the JSON only (paddle2onnx's native prints go to stderr)
    assert info["arch"] == "PPLCNet_x0_25" and info["class_num"] == 2
    assert info["input_hw"] == [80, 160] and info["input_hw_from"] == "inference.yml"
    assert 40e6 < info["flops_macs"] < 48e6, info["flops_macs"]  # ~44M MACs at 80x160
    forced = _inspect(model, "--input-size", "224,224")
    assert forced["input_hw"] == [224, 224] and forced["input_hw_from"] == "--input-size"
    assert 160e6 < forced["flops_macs"] < 180e6  # the old report: ~171M at 224x224
    assert forced["params"] == info["params"]


def test_inspect_bad_input_size(synthetic_weights) -> None:
    res = CliRunner().invoke(cli, ["inspect", str(synthetic_weights()), "--input-size", "224x224"])
    assert res.exit_code == 2 and "--input-size" in res.output and "give H,W" in res.output


def test_inspect_checkpoint_defaults_to_224(synthetic_weights) -> None:
    info = _inspect(str(synthetic_weights()))
    assert info["input_hw"] == [224, 224] and info["input_hw_from"] == "default"


def test_inspect_v2_unfused_and_fused(tmp_path: Path, synthetic_weights) -> None:
    w = _v2(synthetic_weights)
    info = _inspect(str(w))
    assert info["arch"] == "PPLCNetV2_small" and info["family"] == "v2"
    assert info["bn_folded"] is False and info["rep_branches_fused"] is False
    res = _run(w, tmp_path / "o", tmp_path / "c", "model.arch=PPLCNetV2_small", yaml=helpers.V2_YAML)
    # the fused tensors written back as a .pdparams: detected as fused, and exported to the same logits
    with np.load(res.run_dir / "fuse" / "canonical" / "tensors.npz") as z:
        fused = {k: z[k] for k in z.files}
    fused["fc.weight"] = np.ascontiguousarray(fused["fc.weight"].T)
    fused_path = helpers.write_pdparams(tmp_path / "fused.pdparams", fused)
    info = _inspect(str(fused_path))
    assert info["bn_folded"] is True and info["rep_branches_fused"] is True and info["arch"] == "PPLCNetV2_small"
    assert info["params"] < _inspect(str(w))["params"]
    again = _run(fused_path, tmp_path / "o2", tmp_path / "c", "model.arch=PPLCNetV2_small",
                 "model.options.dropout_prob=0", yaml=helpers.V2_YAML)
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    a, b = helpers.ort_logits(res.artifacts["onnx"], x), helpers.ort_logits(again.artifacts["onnx"], x)
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, float(np.abs(a).max()))
    onnx_info = _inspect(str(res.artifacts["onnx"]))
    assert onnx_info["arch"] == "PPLCNetV2_small" and "BatchNormalization" not in onnx_info["ops"]


def test_inspect_real_paddleclas_v2_checkpoint(paddleclas_export) -> None:
    """A real PaddleClas V2 training checkpoint carries an unused randomly-initialized dw_conv beside
    the rep branches; inspect reports it unfused and counts only the parameters that are used."""
    ex = paddleclas_export("v2_base")
    info = _inspect(str(ex.weights))
    assert info["arch"] == "PPLCNetV2_base" and info["rep_branches_fused"] is False
    sd = pickle.loads(ex.weights.read_bytes())
    unused = sum(v.size for k, v in sd.items() if isinstance(v, np.ndarray) and k.startswith("stages.")
                 and ".dw_conv." in k and ".dw_conv_list." not in k and ".conv." not in k and ".bn." not in k)
    total = sum(v.size for v in sd.values() if isinstance(v, np.ndarray))
    assert unused > 0 and info["params"] == total - unused
    assert abs(info["flops_macs"] / 604e6 - 1) < 0.05  # published 604M


def test_inspect_errors(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin2"
    f.write_bytes(b"x")
    res = CliRunner().invoke(cli, ["inspect", str(f)])
    assert res.exit_code == 2 and "--format" in res.stderr


# ------------------------------------------------------------------ cache list / clean

def test_cache_list_and_clean(tmp_path: Path, synthetic_weights) -> None:
    cache = tmp_path / "cache"
    _run(synthetic_weights(), tmp_path / "o", cache)
    res = CliRunner().invoke(cli, ["cache", "list", "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[-1].startswith("3 entries") and str(cache) in lines[-1]
    assert {ln.split()[1] for ln in lines[:-1]} == {"import", "fuse", "export"}
    (cache / "downloads" / ("a" * 64)).mkdir(parents=True)
    (cache / "downloads" / ("a" * 64) / "w.pdparams").write_bytes(b"x")  # a download, as lcpipe names it
    (cache / "notes.txt").write_text("not lcpipe's")  # --cache-dir may point at a shared folder
    res = CliRunner().invoke(cli, ["cache", "clean", "--cache-dir", str(cache)])
    assert res.exit_code == 0 and "removed 4 entries" in res.stdout, res.output
    assert not (cache / "stages").exists() and not (cache / "downloads").exists()
    assert (cache / "notes.txt").read_text() == "not lcpipe's"
    res = CliRunner().invoke(cli, ["cache", "list", "--cache-dir", str(cache)])
    assert res.stdout.strip().startswith("0 entries")
    # the default cache dir follows $LCPIPE_CACHE_DIR
    res = CliRunner().invoke(cli, ["cache", "list"], env={"LCPIPE_CACHE_DIR": str(tmp_path / "envcache")})
    assert str(tmp_path / "envcache") in res.stdout


# ------------------------------------------------------------------ concurrency

def test_two_concurrent_runs_share_one_cache(tmp_path: Path, synthetic_weights) -> None:
    w, cache = _v2(synthetic_weights), tmp_path / "cache"
    env = {**os.environ, "LCPIPE_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-m", "lcpipe", "run", str(helpers.V2_YAML), "--until", "export",
                               "--set", f"model.source.path={w}", "--set", "model.arch=PPLCNetV2_small",
                               "--out", str(tmp_path / name)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    a, b = (tmp_path / n / "export" / "model.onnx" for n in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    entries = [d for d in (cache / "stages").iterdir()]
    assert len([d for d in entries if not d.name.startswith(".")]) == 3
    assert not [d for d in entries if d.name.startswith(".")], "temp cache entries left behind"
