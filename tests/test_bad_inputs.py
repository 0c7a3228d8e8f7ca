"""Bad inputs fail with one clear lcpipe error naming the file/key, and leave no output that
looks complete (no model.onnx, no stage.json of the failed stage, no finished manifest)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import helpers
import numpy as np
import pytest

from lcpipe.errors import ConfigError, InputError, LcpipeError, UnsafePickleError


def _run(weights: Path, out: Path, *overrides: str):
    return helpers.run_export(helpers.V1_YAML, [f"model.source.path={weights}", *overrides], out,
                              out.parent / "cache")


def _assert_nothing_complete(out: Path) -> None:
    """A failed run may leave finished earlier stages, but nothing that looks like a full result."""
    assert not list(out.rglob("*.onnx")), list(out.rglob("*.onnx"))
    assert not list(out.glob(".*.tmp")), "temp build directories left behind"
    manifest = out / "manifest.json"
    if manifest.exists():
        assert json.loads(manifest.read_text())["finished"] is False


def _expect(exc_type: type[LcpipeError], weights: Path, out: Path, *overrides: str) -> str:
    with pytest.raises(exc_type) as info:
        _run(weights, out, *overrides)
    _assert_nothing_complete(out)
    assert not (out / "import" / "stage.json").exists()
    assert exc_type is not LcpipeError and info.value.exit_code == 2
    return str(info.value)


def test_truncated_pdparams(tmp_path: Path, synthetic_weights) -> None:
    data = synthetic_weights().read_bytes()
    bad = tmp_path / "cut.pdparams"
    bad.write_bytes(data[: len(data) // 2])
    msg = _expect(InputError, bad, tmp_path / "out")
    assert str(bad) in msg and "truncated" in msg


def test_empty_and_non_pickle_pdparams(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdparams"
    empty.write_bytes(b"")
    assert str(empty) in _expect(InputError, empty, tmp_path / "o1")
    text = tmp_path / "text.pdparams"
    text.write_text("this is not a checkpoint\n")
    assert str(text) in _expect(InputError, text, tmp_path / "o2")


class _Payload:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["top", "nested"])
def test_pdparams_with_code_payload_is_refused_and_not_run(tmp_path: Path, synthetic_weights, where: str) -> None:
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    tensors = pickle.loads(synthetic_weights().read_bytes())
    if where == "top":
        obj = _Payload()
    else:  # hidden among real arrays
        tensors["conv1.conv.weight"] = _Payload()
        obj = tensors
    bad = tmp_path / "evil.pdparams"
    bad.write_bytes(pickle.dumps(obj, protocol=4))
    msg = _expect(UnsafePickleError, bad, tmp_path / "out")
    assert str(bad) in msg and "system" in msg
    assert not marker.exists(), "the pickle payload ran"


def test_wrong_arch_forced_lists_mis_shaped_tensors(tmp_path: Path, synthetic_weights) -> None:
    msg = _expect(InputError, synthetic_weights("PPLCNet_x0_25"), tmp_path / "out", "model.arch=PPLCNet_x1_0")
    assert "PPLCNet_x1_0" in msg and "shape mismatch" in msg
    assert "conv1.conv.weight (8, 3, 3, 3) != expected (16, 3, 3, 3)" in msg


def _mutated(tmp_path: Path, src: Path, fn) -> Path:
    d = pickle.loads(src.read_bytes())
    fn(d)
    return helpers.write_pdparams(tmp_path / "mutated.pdparams", d, name_table=False)


@pytest.mark.parametrize("arch", ["auto", "PPLCNet_x0_25"])
def test_missing_tensor_is_named(tmp_path: Path, synthetic_weights, arch: str) -> None:
    bad = _mutated(tmp_path, synthetic_weights(), lambda d: d.pop("blocks5.3.dw_conv.bn._mean"))
    msg = _expect(InputError, bad, tmp_path / "out", f"model.arch={arch}")
    assert "missing (1): blocks5.3.dw_conv.bn._mean" in msg and str(bad) in msg


def test_unexpected_tensor_is_named(tmp_path: Path, synthetic_weights) -> None:
    bad = _mutated(tmp_path, synthetic_weights(), lambda d: d.update({"blocks9.0.extra.weight": np.zeros(3)}))
    msg = _expect(InputError, bad, tmp_path / "out")
    assert "unexpected (1): blocks9.0.extra.weight" in msg


def test_shape_mismatch_is_named(tmp_path: Path, synthetic_weights) -> None:
    def cut(d: dict) -> None:
        d["blocks4.1.pw_conv.conv.weight"] = d["blocks4.1.pw_conv.conv.weight"][:, :5]

    bad = _mutated(tmp_path, synthetic_weights(), cut)
    msg = _expect(InputError, bad, tmp_path / "out")
    assert "shape mismatch (1): blocks4.1.pw_conv.conv.weight (32, 5, 1, 1) != expected (32, 32, 1, 1)" in msg


def test_non_array_entry_is_named(tmp_path: Path, synthetic_weights) -> None:
    bad = _mutated(tmp_path, synthetic_weights(), lambda d: d.update({"fc.bias": [1.0, 2.0]}))
    msg = _expect(InputError, bad, tmp_path / "out")
    assert "'fc.bias'" in msg and "list" in msg


def test_missing_weights_file(tmp_path: Path) -> None:
    msg = _expect(InputError, tmp_path / "nope.pdparams", tmp_path / "out")
    assert "nope.pdparams" in msg and "does not exist" in msg


def test_not_a_pplcnet_checkpoint(tmp_path: Path) -> None:
    bad = helpers.write_pdparams(tmp_path / "resnet.pdparams", {"conv.weight": np.zeros((8, 3, 3, 3), np.float32)})
    msg = _expect(InputError, bad, tmp_path / "out")
    assert "not a PP-LCNet" in msg and "conv.weight" in msg


def test_failed_rerun_does_not_leave_the_previous_result_looking_complete(tmp_path: Path, synthetic_weights) -> None:
    out = tmp_path / "out"
    _run(synthetic_weights(), out)
    assert (out / "export" / "model.onnx").exists()
    bad = tmp_path / "cut.pdparams"
    bad.write_bytes(synthetic_weights().read_bytes()[:1000])
    with pytest.raises(InputError):
        _run(bad, out)
    _assert_nothing_complete(out)


# ------------------------------------------------------------------ torch files

torch_only = pytest.mark.torch


class _Thing:
    pass


@torch_only
@pytest.mark.parametrize("kind", ["object", "payload"])
def test_torch_file_with_pickled_object_is_refused(tmp_path: Path, kind: str) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    bad = tmp_path / "bad.pth"
    torch.save({"conv_stem.weight": torch.zeros(8, 3, 3, 3), "x": _Thing() if kind == "object" else _Payload()}, bad)
    msg = _expect(UnsafePickleError, bad, tmp_path / "out", "model.source.format=torch")
    assert str(bad) in msg and "weights_only" in msg
    assert ("_Thing" in msg) if kind == "object" else ("system" in msg)
    assert "weights_only` set to `False`" not in msg  # torch's advice to disable the guard is not repeated
    assert not marker.exists()


@torch_only
def test_torch_file_with_non_tensor_value_and_truncated(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    bad = tmp_path / "int.pth"
    torch.save({"conv_stem.weight": torch.zeros(8, 3, 3, 3), "step": 3}, bad)
    msg = _expect(InputError, bad, tmp_path / "o1", "model.source.format=torch")
    assert "'step'" in msg and str(bad) in msg
    cut = tmp_path / "cut.pth"
    cut.write_bytes(bad.read_bytes()[:200])
    assert str(cut) in _expect(InputError, cut, tmp_path / "o2", "model.source.format=torch")


def test_bad_safetensors(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    msg = _expect(InputError, bad, tmp_path / "out", "model.source.format=safetensors")
    assert str(bad) in msg


# ------------------------------------------------------------------ YAML

def _yaml(tmp_path: Path, body: str) -> Path:
    return helpers.write_yaml(tmp_path / "p.yaml", body)


def _config_error(path: Path, *overrides: str) -> str:
    import lcpipe

    with pytest.raises(ConfigError) as info:
        lcpipe.load_config(path, overrides=list(overrides))
    assert info.value.exit_code == 2
    return str(info.value)


def test_unknown_stage_key_did_you_mean(tmp_path: Path) -> None:
    p = _yaml(tmp_path, helpers.MINIMAL_YAML.format(path="w.pdparams").replace("{opset: 17}", "{opsett: 17}"))
    assert _config_error(p) == f"{p}: stages[2].export.opsett: unknown key (did you mean 'opset'?)"


def test_unknown_nested_key_did_you_mean(tmp_path: Path) -> None:
    p = _yaml(tmp_path, helpers.MINIMAL_YAML.format(path="w.pdparams").replace("arch: auto", "arhc: auto"))
    assert _config_error(p) == f"{p}: model.arhc: unknown key (did you mean 'arch'?)"


def test_yaml_type_error(tmp_path: Path) -> None:
    p = _yaml(tmp_path, helpers.MINIMAL_YAML.format(path="w.pdparams").replace("opset: 17", "opset: seventeen"))
    msg = _config_error(p)
    assert msg.startswith(f"{p}: stages[2].export.opset: ") and "integer" in msg and "'seventeen'" in msg


def test_missing_required_key(tmp_path: Path) -> None:
    p = _yaml(tmp_path, helpers.MINIMAL_YAML.format(path="w.pdparams").replace("format: pdparams, ", ""))
    assert _config_error(p) == f"{p}: model.source.format: required key is missing"


def test_bad_enum_and_stride_list(tmp_path: Path) -> None:
    p = _yaml(tmp_path, helpers.MINIMAL_YAML.format(path="w.pdparams"))
    msg = _config_error(p, "model.source.format=pdparam")
    assert msg.startswith(f"{p}: model.source.format: ") and "pdparams" in msg
    msg = _config_error(p, "model.options.stride_list=[2, 2]")
    assert "model.options.stride_list" in msg and "5 entries" in msg
    msg = _config_error(p, "model.arch=PPLCNetV2_bse")
    assert msg.startswith(f"{p}: model.arch: ") and "did you mean 'PPLCNetV2_base'" in msg


def test_unknown_stage_and_invalid_yaml(tmp_path: Path) -> None:
    p = _yaml(tmp_path, helpers.MINIMAL_YAML.format(path="w.pdparams").replace("- fuse: {}", "- fusee: {}"))
    msg = _config_error(p)
    assert msg.startswith(f"{p}: stages[1]: unknown stage 'fusee'")
    q = tmp_path / "broken.yaml"
    q.write_text("name: t\nmodel: [\n")
    assert _config_error(q).startswith(f"{q}: not valid YAML")
    assert "no such pipeline file" in _config_error(tmp_path / "absent.yaml")


def test_opset_below_14_is_a_config_error(tmp_path: Path, synthetic_weights) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="opset"):
        _run(synthetic_weights(), out, "stages.export.opset=13")
    _assert_nothing_complete(out)
    assert not (out / "export").exists()


# ---------------------------------------------------------------- crafted pickles: sizes, dtypes, shapes

class _Declares:
    """Pickles exactly as numpy does (_reconstruct + __setstate__), with whatever state it is given."""

    def __init__(self, state: tuple) -> None:
        self.state = state

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (0,), b"b"), self.state)


class _CallsNdarray:
    def __reduce__(self):
        return (np.ndarray, ((10**12,), "f4"))


def _crafted(tmp_path: Path, synthetic_weights, key: str, value: object) -> Path:
    """A real checkpoint with one entry replaced by ``value``: the error must name that entry."""
    tensors = pickle.loads(synthetic_weights().read_bytes())
    tensors[key] = value
    bad = tmp_path / "crafted.pdparams"
    bad.write_bytes(pickle.dumps(tensors, protocol=4))
    return bad


@pytest.mark.parametrize("case", ["terabyte", "shape_vs_bytes", "object", "structured", "nested", "no_state"])
def test_crafted_tensor_refused_before_allocating(tmp_path: Path, synthetic_weights, case: str) -> None:
    import tracemalloc

    key = "blocks3.0.dw_conv.conv.weight"
    value: object = {
        "terabyte": _Declares((1, (10**12,), np.dtype("f4"), False, b"\0" * 8)),
        "shape_vs_bytes": _Declares((1, (16, 3, 3, 3), np.dtype("f4"), False, b"\0" * 8)),
        "object": np.array([1, "x"], dtype=object),
        "structured": np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
        "nested": {"weight": np.zeros(3, np.float32)},
        "no_state": _CallsNdarray(),
    }[case]
    if case == "no_state":
        key = "fc.weight"
    bad = _crafted(tmp_path, synthetic_weights, key, value)
    tracemalloc.start()
    try:
        exc_type = UnsafePickleError if case == "no_state" else InputError
        msg = _expect(exc_type, bad, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 << 20, f"{peak / 1e6:.0f} MB allocated while refusing"
    assert str(bad) in msg
    expected = {
        "terabyte": f"tensor '{key}' refused: declares shape (1000000000000,) float32 = 4,000,000,000,000 bytes, "
                    "over the 1 GiB a checkpoint tensor may have",
        "shape_vs_bytes": f"tensor '{key}' refused: declares shape (16, 3, 3, 3) float32 = 1,728 bytes but holds 8",
        "object": f"tensor '{key}' refused: object dtype",
        "structured": f"tensor '{key}' refused: dtype",
        "nested": f"entry '{key}' is dict, not a numeric array",
        "no_state": "refusing to call numpy.ndarray directly",
    }[case]
    assert expected in msg, msg


def test_tiny_file_declaring_a_terabyte_cli(tmp_path: Path) -> None:
    """The few-byte file alone, through the CLI: exit 2, one line naming file and tensor, no traceback."""
    import subprocess
    import sys

    bad = tmp_path / "tiny.pdparams"
    bad.write_bytes(pickle.dumps({"w": _Declares((1, (10**12,), np.dtype("f4"), False, b""))}, protocol=4))
    assert bad.stat().st_size < 300
    res = subprocess.run([sys.executable, "-m", "lcpipe", "inspect", str(bad)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(helpers.REPO)}, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert f"error: {bad}: tensor 'w' refused: declares shape (1000000000000,) float32" in res.stderr


# ---------------------------------------------------------------- model sources through the CLI

def _cli_run(tmp_path: Path, *sets: str, fails: bool = True) -> tuple[int, str]:
    import subprocess
    import sys

    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "lcpipe", "run", str(helpers.V1_YAML), "--until", "export",
                          "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *(f"--set={s}" for s in sets)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(helpers.REPO)})
    assert "Traceback" not in res.stderr, res.stderr
    if fails:
        _assert_nothing_complete(out)
    return res.returncode, res.stderr


def test_cli_local_sha_mismatch(tmp_path: Path, synthetic_weights) -> None:
    import hashlib
    import shutil

    mine = shutil.copy(synthetic_weights(), tmp_path / "mine.pdparams")
    real = hashlib.sha256(Path(mine).read_bytes()).hexdigest()
    code, err = _cli_run(tmp_path, f"model.source.path={mine}", "model.source.sha256=" + "e" * 64)
    assert code == 2
    assert f"error: model.source.path: {mine} has sha256 {real}, but model.source.sha256 says {'e' * 64}" in err
    assert Path(mine).is_file()  # the user's file stays
    code, _ = _cli_run(tmp_path, f"model.source.path={mine}", f"model.source.sha256={real}", fails=False)
    assert code == 0


@pytest.mark.parametrize("kind", ["link", "bomb"])
def test_cli_bad_archive_source(tmp_path: Path, kind: str) -> None:
    import io
    import tarfile

    arc = tmp_path / "weights.tgz"
    with tarfile.open(arc, "w:gz") as tf:
        if kind == "link":
            info = tarfile.TarInfo("model.pdparams")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            info = tarfile.TarInfo("model.pdparams")
            info.size = 64 << 20
            tf.addfile(info, io.BytesIO(bytes(info.size)))
    code, err = _cli_run(tmp_path, f"model.source.path={arc}")
    assert code == 2 and f"error: {arc}: refusing to unpack: " in err
    assert ("is a symbolic link" in err) if kind == "link" else ("expands more than 200x" in err)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("extracted/**/*"))
