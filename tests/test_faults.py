"""Fault injection: a table of bad inputs, each run through the real CLI in a subprocess.

Every row expects its exit code, a message naming the file or key, no traceback, and nothing in
the run dir that looks complete (no finished manifest, no metrics, no stage dir without its
stage.json, no temp left behind). Most rows stop at config or import; the data rows reach
quantize on a shared cache, so import..convert are computed once for the whole table.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import helpers
import numpy as np
import pytest

BOMB_WORDS = ("limit", "ratio", "too large", "exceeds", "too many")


@dataclass
class Ctx:
    tmp: Path
    weights: Path  # a valid PPLCNet_x0_25 .pdparams shared by every row
    out: Path
    images: Path  # a folder of real images (copies) the row may spoil

    def yaml(self, source: str, arch: str = "auto", stages: str = "", data: str = "", extra: str = "") -> Path:
        stages = stages or "  - import: {}\n  - fuse: {}\n  - export: {opset: 17}\n"
        text = f"name: fault\nmodel:\n  source: {source}\n  arch: {arch}\n{extra}"
        text += f"data:\n{data}" if data else ""
        return helpers.write_yaml(self.tmp / "p.yaml", text + "stages:\n" + stages)

    def pdparams_yaml(self, path: Path) -> Path:
        return self.yaml(f"{{format: pdparams, path: {path}}}")

    def run(self, yaml: Path, *extra: str) -> list[str]:
        return ["run", str(yaml), "--out", str(self.out), *extra]


@dataclass
class Expect:
    args: list[str]
    needles: list[str | tuple[str, ...]]  # all must appear in the output; a tuple: any one of them
    exit_code: int = 2
    check: Callable[[], None] | None = None  # extra assertion after the run
    complete_ok: tuple[str, ...] = field(default_factory=tuple)


ROWS: list[tuple[str, Callable[[Ctx], Expect]]] = []


def row(name: str) -> Callable[[Callable[[Ctx], Expect]], Callable[[Ctx], Expect]]:
    def deco(fn: Callable[[Ctx], Expect]) -> Callable[[Ctx], Expect]:
        ROWS.append((name, fn))
        return fn
    return deco


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------- checkpoints: .pdparams

@row("pdparams-truncated")
def _(c: Ctx) -> Expect:
    data = c.weights.read_bytes()
    bad = _write(c.tmp / "cut.pdparams", data[: len(data) // 3])
    return Expect(c.run(c.pdparams_yaml(bad)), [str(bad)])


@row("pdparams-zero-byte")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "empty.pdparams", b"")
    return Expect(c.run(c.pdparams_yaml(bad)), [str(bad)])


@row("pdparams-is-text")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "text.pdparams", "not a checkpoint\n" * 10)
    return Expect(c.run(c.pdparams_yaml(bad)), [str(bad)])


@row("pdparams-is-png")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "image.pdparams", next(c.images.iterdir()).read_bytes())
    return Expect(c.run(c.pdparams_yaml(bad)), [str(bad)])


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@row("pdparams-code-execution")
def _(c: Ctx) -> Expect:
    marker = c.tmp / "pwned"
    tensors = helpers.synthetic_tensors("PPLCNet_x0_25")
    tensors["conv1.conv.weight"] = _RunsShell(marker)
    bad = _write(c.tmp / "evil.pdparams", pickle.dumps(tensors, protocol=2))

    def not_run() -> None:
        assert not marker.exists(), "the pickle's payload ran"
    return Expect(c.run(c.pdparams_yaml(bad)), [str(bad), "system"], check=not_run)


@row("pdparams-non-array-entry")
def _(c: Ctx) -> Expect:
    tensors = helpers.synthetic_tensors("PPLCNet_x0_25")
    tensors["fc.weight"] = "a string"
    bad = helpers.write_pdparams(c.tmp / "str.pdparams", tensors)
    return Expect(c.run(c.pdparams_yaml(bad)), [str(bad), "fc.weight"])


@row("pdparams-missing-tensor")
def _(c: Ctx) -> Expect:
    tensors = helpers.synthetic_tensors("PPLCNet_x0_25")
    del tensors["fc.bias"]
    bad = helpers.write_pdparams(c.tmp / "missing.pdparams", tensors)
    return Expect(c.run(c.yaml(f"{{format: pdparams, path: {bad}}}", arch="PPLCNet_x0_25")), ["fc.bias"])


@row("pdparams-wrong-shape")
def _(c: Ctx) -> Expect:
    tensors = helpers.synthetic_tensors("PPLCNet_x0_25")
    tensors["conv1.conv.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    bad = helpers.write_pdparams(c.tmp / "shape.pdparams", tensors)
    return Expect(c.run(c.yaml(f"{{format: pdparams, path: {bad}}}", arch="PPLCNet_x0_25")),
                  ["conv1.conv.weight"])


class _HugeArray:
    """Pickles as numpy's own array reconstructor asked for a 4-petabyte float32 array."""

    def __reduce__(self) -> tuple:
        recon, _, state = np.zeros(2, np.float32).__reduce__()
        return (recon, (np.ndarray, (1 << 25, 1 << 25), b"f"), state)


@row("pdparams-absurd-array-size")
def _(c: Ctx) -> Expect:
    tensors = helpers.synthetic_tensors("PPLCNet_x0_25")
    tensors["fc.weight"] = _HugeArray()
    bad = _write(c.tmp / "huge.pdparams", pickle.dumps(tensors, protocol=4))
    return Expect(c.run(c.pdparams_yaml(bad)), [str(bad), "fc.weight"])


@row("pdparams-object-dtype")
def _(c: Ctx) -> Expect:
    tensors = helpers.synthetic_tensors("PPLCNet_x0_25")
    tensors["fc.bias"] = np.array([0.5] * 999 + ["x"], dtype=object)  # the right shape: only the dtype is wrong
    bad = _write(c.tmp / "object.pdparams", pickle.dumps(tensors, protocol=4))
    return Expect(c.run(c.pdparams_yaml(bad)), [str(bad), "fc.bias"])


@row("weights-file-missing")
def _(c: Ctx) -> Expect:
    gone = c.tmp / "nowhere.pdparams"
    return Expect(c.run(c.pdparams_yaml(gone)), [str(gone)])


# ---------------------------------------------------------------- checkpoints: torch, safetensors

def _torch_file(path: Path, obj: object) -> Path:
    torch = pytest.importorskip("torch")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


@row("pth-truncated")
def _(c: Ctx) -> Expect:
    torch = pytest.importorskip("torch")
    good = _torch_file(c.tmp / "good.pth", {"w": torch.zeros(64, 64)})
    data = good.read_bytes()
    bad = _write(c.tmp / "cut.pth", data[: len(data) // 2])
    return Expect(c.run(c.yaml(f"{{format: torch, path: {bad}}}")), [str(bad)])


@row("pth-zero-byte")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "empty.pth", b"")
    return Expect(c.run(c.yaml(f"{{format: torch, path: {bad}}}")), [str(bad)])


@row("pth-code-execution")
def _(c: Ctx) -> Expect:
    marker = c.tmp / "pwned"
    bad = _torch_file(c.tmp / "evil.pth", {"w": _RunsShell(marker)})

    def not_run() -> None:
        assert not marker.exists(), "the checkpoint's payload ran"
    return Expect(c.run(c.yaml(f"{{format: torch, path: {bad}}}")), [str(bad)], check=not_run)


@row("pth-legacy-raw-pickle")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "legacy.pth", pickle.dumps({"w": _RunsShell(c.tmp / "pwned")}))
    return Expect(c.run(c.yaml(f"{{format: torch, path: {bad}}}")), [str(bad)],
                  check=lambda: _assert_absent(c.tmp / "pwned"))


def _assert_absent(p: Path) -> None:
    assert not p.exists(), f"{p} exists: a payload ran"


def _safetensors(header: dict | bytes, payload: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


@row("safetensors-zero-byte")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "empty.safetensors", b"")
    return Expect(c.run(c.yaml(f"{{format: safetensors, path: {bad}}}")), [str(bad)])


@row("safetensors-header-longer-than-file")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "long.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    return Expect(c.run(c.yaml(f"{{format: safetensors, path: {bad}}}")), [str(bad)])


@row("safetensors-offsets-past-end")
def _(c: Ctx) -> Expect:
    head = {"w": {"dtype": "F32", "shape": [1024, 1024], "data_offsets": [0, 4 << 20]}}
    bad = _write(c.tmp / "short.safetensors", _safetensors(head, b"\0" * 64))
    return Expect(c.run(c.yaml(f"{{format: safetensors, path: {bad}}}")), [str(bad)])


@row("safetensors-header-not-json")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "garbage.safetensors", _safetensors(b"\xff\xfe not json at all", b"\0" * 16))
    return Expect(c.run(c.yaml(f"{{format: safetensors, path: {bad}}}")), [str(bad)])


# ---------------------------------------------------------------- ONNX files

def _good_onnx(c: Ctx) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = c.tmp / "relu.onnx"
    onnx.save(model, path)
    return path


@row("onnx-truncated")
def _(c: Ctx) -> Expect:
    data = _good_onnx(c).read_bytes()
    bad = _write(c.tmp / "cut.onnx", data[: len(data) // 2])
    return Expect(c.run(c.yaml(f"{{format: onnx, path: {bad}}}")), [str(bad)])


@row("onnx-zero-byte")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "empty.onnx", b"")
    return Expect(c.run(c.yaml(f"{{format: onnx, path: {bad}}}")), [str(bad)])


@row("onnx-is-a-pdparams")
def _(c: Ctx) -> Expect:
    bad = _write(c.tmp / "weights.onnx", c.weights.read_bytes())
    return Expect(c.run(c.yaml(f"{{format: onnx, path: {bad}}}")), [str(bad)])


@row("onnx-dangling-node-input")
def _(c: Ctx) -> Expect:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(_good_onnx(c))
    model.graph.node[0].input[0] = "no_such_tensor"
    bad = c.tmp / "dangling.onnx"
    onnx.save(model, bad)
    return Expect(c.run(c.yaml(f"{{format: onnx, path: {bad}}}")), [str(bad)])


# ---------------------------------------------------------------- archives and checksums

def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _url_yaml(c: Ctx, archive: Path, fmt: str = "paddle_inference") -> Path:
    return c.yaml(f"{{format: {fmt}, url: '{archive.as_uri()}'}}")


def _local_yaml(c: Ctx, archive: Path, fmt: str = "paddle_inference") -> Path:
    return c.yaml(f"{{format: {fmt}, path: {archive}}}")


def _traversal_tar(c: Ctx) -> Path:
    return _tar(c.tmp / "evil.tar", [_file_member("model/inference.json", b"{}"),
                                     _file_member("../../escaped.txt", b"gotcha")])


def _symlink_tar(c: Ctx) -> Path:
    return _tar(c.tmp / "link.tar", [_file_member("model/inference.json", b"{}"),
                                     _link_member("model/inference.pdiparams", "/etc/passwd")])


def _bomb_tar(c: Ctx) -> Path:
    """64 MiB of zeros in a ~60 KiB .tar.gz: a 1000:1 expansion no model archive has."""
    path = c.tmp / "bomb.tar.gz"
    info = tarfile.TarInfo("model/inference.pdiparams")
    info.size = 64 << 20
    with tarfile.open(path, "w:gz") as tf:
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    return path


def _no_escape(c: Ctx) -> Callable[[], None]:
    return lambda: _assert_absent(c.tmp.parent / "escaped.txt")


@row("url-tar-path-traversal")
def _(c: Ctx) -> Expect:
    tar = _traversal_tar(c)
    return Expect(c.run(_url_yaml(c, tar)), ["evil.tar", "../../escaped.txt"], check=_no_escape(c))


@row("url-tar-symlink-outside")
def _(c: Ctx) -> Expect:
    return Expect(c.run(_url_yaml(c, _symlink_tar(c))), ["link.tar", "/etc/passwd"])


@row("url-tar-hardlink-outside")
def _(c: Ctx) -> Expect:
    tar = _tar(c.tmp / "hard.tar", [_link_member("model/inference.json", "../../../etc/shadow", tarfile.LNKTYPE)])
    return Expect(c.run(_url_yaml(c, tar)), ["hard.tar", "etc/shadow"])


@row("url-zip-path-traversal")
def _(c: Ctx) -> Expect:
    path = c.tmp / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/inference.json", "{}")
        zf.writestr("../escaped.txt", "gotcha")
    return Expect(c.run(_url_yaml(c, path)), ["evil.zip", "../escaped.txt"], check=_no_escape(c))


@row("url-tar-inside-symlink")
def _(c: Ctx) -> Expect:
    """A link that stays inside is still a link: release-pkg refuses links outright."""
    tar = _tar(c.tmp / "inner.tar", [_file_member("model/a.json", b"{}"),
                                      _link_member("model/inference.json", "a.json")])
    return Expect(c.run(_url_yaml(c, tar)), ["inner.tar", ("link", "Link")])


@row("url-tar-bomb")
def _(c: Ctx) -> Expect:
    return Expect(c.run(_url_yaml(c, _bomb_tar(c))), ["bomb.tar.gz", BOMB_WORDS])


@row("url-sha256-mismatch")
def _(c: Ctx) -> Expect:
    url_yaml = c.yaml(f"{{format: pdparams, url: '{c.weights.as_uri()}', sha256: '{'0' * 64}'}}")
    return Expect(c.run(url_yaml), [c.weights.name, "0" * 64])


@row("local-sha256-mismatch")
def _(c: Ctx) -> Expect:
    mine = shutil.copy(c.weights, c.tmp / "mine.pdparams")
    y = c.yaml(f"{{format: pdparams, path: {mine}, sha256: '{'0' * 64}'}}")
    return Expect(c.run(y), [str(mine), "0" * 64], check=lambda: Path(mine).is_file() or pytest.fail("deleted"))


@row("local-tar-path-traversal")
def _(c: Ctx) -> Expect:
    return Expect(c.run(_local_yaml(c, _traversal_tar(c))), ["evil.tar", "../../escaped.txt"],
                  check=_no_escape(c))


@row("local-tar-symlink")
def _(c: Ctx) -> Expect:
    return Expect(c.run(_local_yaml(c, _symlink_tar(c))), ["link.tar", "/etc/passwd"])


@row("local-tar-bomb")
def _(c: Ctx) -> Expect:
    return Expect(c.run(_local_yaml(c, _bomb_tar(c))), ["bomb.tar.gz", BOMB_WORDS])


# ---------------------------------------------------------------- YAML

@row("yaml-invalid-syntax")
def _(c: Ctx) -> Expect:
    y = _write(c.tmp / "broken.yaml", "name: x\nmodel: {source: [unclosed\n")
    return Expect(c.run(y), [str(y)])


@row("yaml-not-a-mapping")
def _(c: Ctx) -> Expect:
    y = _write(c.tmp / "list.yaml", "- import: {}\n")
    return Expect(c.run(y), [str(y)])


@row("yaml-file-missing")
def _(c: Ctx) -> Expect:
    return Expect(c.run(c.tmp / "absent.yaml"), ["absent.yaml"])


@row("yaml-bad-value-type")
def _(c: Ctx) -> Expect:
    y = c.yaml(f"{{format: pdparams, path: {c.weights}}}", stages="  - import: {}\n  - export: {opset: many}\n")
    return Expect(c.run(y), ["opset"])


@row("yaml-unknown-stage-key")
def _(c: Ctx) -> Expect:
    y = c.yaml(f"{{format: pdparams, path: {c.weights}}}", stages="  - import: {}\n  - export: {opsett: 17}\n")
    return Expect(c.run(y), ["opsett"])


@row("yaml-unknown-top-level-key")
def _(c: Ctx) -> Expect:
    y = c.yaml(f"{{format: pdparams, path: {c.weights}}}", extra="modle: {}\n")
    return Expect(c.run(y), ["modle"])


@row("yaml-unknown-stage")
def _(c: Ctx) -> Expect:
    y = c.yaml(f"{{format: pdparams, path: {c.weights}}}", stages="  - import: {}\n  - exprot: {}\n")
    return Expect(c.run(y), ["exprot"])


@row("yaml-bad-enum")
def _(c: Ctx) -> Expect:
    y = c.yaml(f"{{format: pickle, path: {c.weights}}}")
    return Expect(c.run(y), ["format", "pickle"])


@row("yaml-missing-source")
def _(c: Ctx) -> Expect:
    y = c.yaml("{format: pdparams}")
    return Expect(c.run(y), ["model.source"])


@row("set-unknown-key")
def _(c: Ctx) -> Expect:
    return Expect(c.run(c.pdparams_yaml(c.weights), "--set", "preprocess.szie=[80, 160]"), ["szie"])


@row("set-bad-stage-option")
def _(c: Ctx) -> Expect:
    return Expect(c.run(c.pdparams_yaml(c.weights), "--set", "stages.export.opset=9"), ["opset"])


# ---------------------------------------------------------------- data (these reach quantize)

_QUANT_STAGES = "  - import: {}\n  - fuse: {}\n  - export: {opset: 17}\n  - convert: {batch: 1}\n" \
                "  - quantize: {subset_size: 4}\n"


def _data_yaml(c: Ctx, calib: str) -> Path:
    return c.yaml(f"{{format: pdparams, path: {c.weights}}}", stages=_QUANT_STAGES,
                  data=f"  calib: {calib}\n")


@row("data-folder-missing")
def _(c: Ctx) -> Expect:
    return Expect(c.run(_data_yaml(c, f"{{images: {c.tmp / 'no_images'}}}")), ["no_images"])


@row("data-listed-image-missing")
def _(c: Ctx) -> Expect:
    labels = _write(c.tmp / "labels.txt", "".join(f"{p.name} 0\n" for p in sorted(c.images.iterdir())) + "gone.jpg 1\n")
    return Expect(c.run(_data_yaml(c, f"{{images: {c.images}, labels: {labels}}}")), ["labels.txt", "gone.jpg"])


@row("data-labels-bad-line")
def _(c: Ctx) -> Expect:
    first = sorted(c.images.iterdir())[0].name
    labels = _write(c.tmp / "labels.txt", f"{first} zero\n")
    return Expect(c.run(_data_yaml(c, f"{{images: {c.images}, labels: {labels}}}")), ["labels.txt", "line 1"])


@row("data-unreadable-image")
def _(c: Ctx) -> Expect:
    bad = _write(c.images / "zz_corrupt.jpg", b"\xff\xd8\xff\xe0 this is not really a jpeg" * 4)
    return Expect(c.run(_data_yaml(c, f"{{images: {c.images}}}")), [str(bad)])


@row("data-zero-byte-image")
def _(c: Ctx) -> Expect:
    bad = _write(c.images / "zz_empty.png", b"")
    return Expect(c.run(_data_yaml(c, f"{{images: {c.images}}}")), [str(bad)])


@row("data-count-too-large")
def _(c: Ctx) -> Expect:
    return Expect(c.run(_data_yaml(c, f"{{images: {c.images}, count: 100000}}")), ["count 100000"])


@row("data-calib-missing-for-quantize")
def _(c: Ctx) -> Expect:
    y = c.yaml(f"{{format: pdparams, path: {c.weights}}}", stages=_QUANT_STAGES)
    return Expect(c.run(y), ["data.calib"])


# ---------------------------------------------------------------- output locations

@row("out-is-a-file")
def _(c: Ctx) -> Expect:
    out = _write(c.tmp / "out.txt", "a file")
    return Expect(["run", str(c.pdparams_yaml(c.weights)), "--out", str(out)], [str(out)],
                  check=lambda: out.read_text() == "a file" or pytest.fail("file changed"))


@row("out-below-a-file")
def _(c: Ctx) -> Expect:
    blocker = _write(c.tmp / "blocker", "a file")
    out = blocker / "run"
    return Expect(["run", str(c.pdparams_yaml(c.weights)), "--out", str(out)], [str(out)])


@row("out-under-sys")
def _(c: Ctx) -> Expect:
    """Root ignores file modes, so a read-only folder is one the kernel refuses: /sys."""
    out = Path("/sys/lcpipe-fault-test")
    return Expect(["run", str(c.pdparams_yaml(c.weights)), "--out", str(out)], [str(out)])


@row("cache-dir-below-a-file")
def _(c: Ctx) -> Expect:
    blocker = _write(c.tmp / "blocker", "a file")
    return Expect(c.run(c.pdparams_yaml(c.weights), "--cache-dir", str(blocker / "cache")), [str(blocker)])


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs (a full / read-only filesystem)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")


@row("out-on-full-disk")
def _(c: Ctx) -> Expect:
    disk = c.tmp / "full"
    _mount_tmpfs(disk, "size=64k")  # room for the manifest, not for the model
    return Expect(c.run(c.pdparams_yaml(c.weights), "--out", str(disk / "run"), "--no-cache"),
                  ["No space left on device", str(disk / "run")])


@row("out-on-read-only-fs")
def _(c: Ctx) -> Expect:
    disk = c.tmp / "ro"
    _mount_tmpfs(disk, "ro,size=64k")
    return Expect(c.run(c.pdparams_yaml(c.weights), "--out", str(disk / "run")), [str(disk / "run")])


# ---------------------------------------------------------------- the runner

def _incomplete(out: Path) -> list[str]:
    """What in ``out`` looks complete although the run failed."""
    problems = []
    if not out.is_dir():
        return problems
    manifest = out / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("finished") is not False:
        problems.append("manifest.json says finished")
    if (out / "metrics.json").exists():
        problems.append("metrics.json exists")
    for p in out.rglob("*"):
        if p.name.startswith(".") and (p.name.endswith((".tmp", ".old")) or ".old." in p.name):
            problems.append(f"temp left: {p}")
    for d in (p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta = d / "stage.json"
        if not meta.is_file():
            problems.append(f"{d.name}/ has no stage.json")
            continue
        for name, digest in json.loads(meta.read_text()).get("files", {}).items():
            f = d / name
            if not f.is_file() or helpers_sha(f) != digest:
                problems.append(f"{d.name}/{name} does not match stage.json")
    return problems


def helpers_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faults")
    imgs = helpers.real_image_paths(6)
    if len(imgs) < 6:
        pytest.skip("no real images in calib_data/imagenet/images")
    return {"weights": helpers.synthetic_pdparams(root / "model.pdparams"), "cache": root / "cache",
            "images": Path(imgs[0]).parent, "image_list": imgs}  # type: ignore[dict-item]


def _params() -> list:
    return [pytest.param(fn, id=name) for name, fn in ROWS]


@pytest.mark.parametrize("build", _params())
def test_bad_input(build: Callable[[Ctx], Expect], shared: dict, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for p in shared["image_list"]:
        shutil.copy(p, images / p.name)
    ctx = Ctx(tmp=tmp_path, weights=shared["weights"], out=tmp_path / "run", images=images)
    mounts: list[Path] = []
    try:
        exp = build(ctx)
        mounts = [p for p in (tmp_path / "full", tmp_path / "ro") if os.path.ismount(p)]
        env = {**os.environ, "LCPIPE_CACHE_DIR": str(shared["cache"]), "PYTHONPATH": str(helpers.REPO)}
        res = subprocess.run([sys.executable, "-m", "lcpipe", *exp.args], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
        output = res.stdout + res.stderr
        assert "Traceback" not in output, output
        assert res.returncode == exp.exit_code, output
        missing = [n for n in exp.needles if not any(alt in output for alt in ((n,) if isinstance(n, str) else n))]
        assert not missing, f"message does not name {missing}:\n{output}"
        out = Path(exp.args[exp.args.index("--out") + 1]) if "--out" in exp.args else ctx.out
        assert not _incomplete(out), _incomplete(out)
        if exp.check:
            exp.check()
    finally:
        for m in mounts:
            subprocess.run(["umount", str(m)], check=False)


def test_table_is_large_enough() -> None:
    assert len(ROWS) >= 30 and len({name for name, _ in ROWS}) == len(ROWS)


# ---------------------------------------------------------------- cache internals (fast, in-process)

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    from lcpipe.fileio import LEGACY_TEMP_AGE_S, remove_stale_temps

    dead, live = _dead_pid(), os.getpid()
    names = {f".0123456789ab.{dead}.k2j_x9aa.tmp": True, f".model.onnx.{dead}.abcd1234.tmp": True,
             f".import.old.{dead}": True, f".0123456789ab.{dead}.zzzzzzzz.old": True,
             f".0123456789ab.{live}.k2j_x9aa.tmp": False, f".import.old.{live}": False,
             ".legacy.abcdefgh.tmp": True, ".young.abcdefgh.tmp": False, ".hidden": False, "entry": False}
    for name in names:
        (tmp_path / name).mkdir()
    old = time.time() - LEGACY_TEMP_AGE_S - 60
    os.utime(tmp_path / ".legacy.abcdefgh.tmp", (old, old))
    removed = {p.name for p in remove_stale_temps(tmp_path)}
    assert removed == {n for n, stale in names.items() if stale}
    assert {p.name for p in tmp_path.iterdir()} == {n for n, stale in names.items() if not stale}


def test_cache_put_raises_real_errors_and_only_tolerates_a_lost_race(tmp_path: Path, monkeypatch) -> None:
    import errno

    import lcpipe.cache as cache_mod
    from lcpipe.cache import StageCache

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("new")
    cache = StageCache(tmp_path / "cache")
    cache.put("k" * 64, src)
    (src / "a.txt").write_text("newer")

    real_rmtree = shutil.rmtree

    def failing_rmtree(path, *a, **kw):  # the old entry cannot be removed (e.g. permissions)
        if kw.get("ignore_errors"):
            return real_rmtree(path, *a, **kw)
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(cache_mod.shutil, "rmtree", failing_rmtree)
    with pytest.raises(PermissionError):
        cache.put("k" * 64, src, replace=True)
    monkeypatch.undo()

    real_rename = os.rename

    def rename(err: int) -> Callable[..., None]:
        def f(a, b):
            if Path(b).name == "k" * 64:
                raise OSError(err, os.strerror(err), str(b))
            return real_rename(a, b)
        return f

    monkeypatch.setattr(cache_mod.os, "rename", rename(errno.ENOTEMPTY))
    cache.put("k" * 64, src, replace=True)  # another run stored the key first: quiet
    monkeypatch.setattr(cache_mod.os, "rename", rename(errno.EIO))
    with pytest.raises(OSError, match="Input/output"):
        cache.put("k" * 64, src, replace=True)
    monkeypatch.undo()
    # the build temps are gone; the old entry that could not be deleted stays aside under this pid,
    # for a later run to remove
    left = [p.name for p in (tmp_path / "cache" / "stages").iterdir() if p.name.startswith(".")]
    assert len(left) == 1 and left[0].endswith(".old") and f".{os.getpid()}." in left[0], left


def test_ir_cache_key_covers_the_bin(tmp_path: Path) -> None:
    from lcpipe.runner import artifact_sha256

    xml, weights = tmp_path / "model.xml", tmp_path / "model.bin"
    xml.write_text("<net/>")
    weights.write_bytes(b"\x00" * 16)
    before = artifact_sha256(xml)
    weights.write_bytes(b"\x00" * 15 + b"\x01")
    assert artifact_sha256(xml) != before


def test_corrupt_cached_onnx_is_reported_and_recomputed(tmp_path: Path, synthetic_weights, caplog) -> None:
    cache = tmp_path / "cache"
    first = helpers.run_export(helpers.V1_YAML, [f"model.source.path={synthetic_weights()}"], tmp_path / "a", cache)
    good = first.artifacts["onnx"].read_bytes()
    entry = cache / "stages" / first.records[-1].key / "model.onnx"
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01
    entry.write_bytes(bytes(data))
    with caplog.at_level("INFO", logger="lcpipe"):
        again = helpers.run_export(helpers.V1_YAML, [f"model.source.path={synthetic_weights()}"], tmp_path / "b", cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("model.onnx" in w and "does not match the sha256" in w for w in warnings), warnings
    assert [r.cached for r in again.records] == [True, True, False]
    assert again.artifacts["onnx"].read_bytes() == good and entry.read_bytes() == good


def test_corrupt_preprocessed_npy_is_reported_and_rebuilt(tmp_path: Path, caplog) -> None:
    from lcpipe.config import DataConfig, DatasetConfig, PreprocessConfig
    from lcpipe.data import load_split

    imgs = helpers.real_image_paths(3)
    if len(imgs) < 3:
        pytest.skip("no real images")
    data = DataConfig(eval=DatasetConfig(images=str(imgs[0].parent), count=3))
    pre, cache = PreprocessConfig(mode="resize", size=(80, 160)), tmp_path / "cache"
    first = load_split(data, "eval", pre, cache, progress=False).x
    (npy,) = (cache / "data").glob("*.npy")
    raw = bytearray(npy.read_bytes())
    raw[-5] ^= 0x40  # inside the float data: np.load alone would not notice
    npy.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="lcpipe"):
        second = load_split(data, "eval", pre, cache, progress=False).x
    assert any(str(npy) in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert np.array_equal(first, second)
    assert np.array_equal(np.load(npy), first)  # the cache holds a good copy again


def test_unreadable_stage_json_is_discarded_so_the_key_heals(tmp_path: Path, synthetic_weights, caplog) -> None:
    cache = tmp_path / "cache"
    args = [f"model.source.path={synthetic_weights()}"]
    first = helpers.run_export(helpers.V1_YAML, args, tmp_path / "a", cache)
    meta = cache / "stages" / first.records[-1].key / "stage.json"
    meta.write_text(meta.read_text()[:40])  # cut short
    with caplog.at_level("WARNING", logger="lcpipe"):
        second = helpers.run_export(helpers.V1_YAML, args, tmp_path / "b", cache)
    assert any(str(meta) in r.getMessage() for r in caplog.records)
    assert [r.cached for r in second.records] == [True, True, False]
    third = helpers.run_export(helpers.V1_YAML, args, tmp_path / "c", cache)
    assert [r.cached for r in third.records] == [True, True, True]
