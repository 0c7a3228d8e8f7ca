"""Impossible inputs are refused (exit 2, one line naming the file or key) or fail the verdict
(exit 3), never pass; parsing is bounded, so a hostile file fails fast: no traceback, no hang, no
flood of output.

A table of bad inputs by class, each run through the real CLI (`python -m lcpipe ...`) in a
subprocess with a timeout. Every row expects its exit code, the words naming the file/key/tensor,
no "Traceback", an error line under 1,000 characters and the whole output under 8,000. Classes:

- yaml:   the one bounded loader (depth, aliases, size, encoding, duplicate keys) for pipelines,
          --set values, sweep files and Paddle inference.yml, through run/check/sweep/bench/
          sensitivity/inspect;
- finite: non-finite weights refused at import by every importer, non-finite outputs failing the
          verdict, strict JSON;
- labels: BOM, encoding, class indices outside the model's classes (labels files, label names,
          rotations, predict's labels.txt);
- images: pixel count checked on the header before decoding; resize bounded;
- models: hostile inference.yml, ONNX graphs (not a classifier, cycles, two producers), pickles
          that ask for unbounded work, broken IRs in predict, preprocess sizes out of range;
- scale:  sweep grids counted before they are expanded.

Rows that reach quantize/validate share one stage cache, so import..convert run once.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import helpers
import numpy as np
import pytest

CLASSES = ("yaml", "finite", "labels", "images", "models", "scale")
MAX_ERROR_LINE = 1000
MAX_OUTPUT = 8000
ARCH = "PPLCNet_x0_25"
EXPORT = "  - import: {}\n  - fuse: {}\n  - export: {opset: 17}\n"
CONVERT = EXPORT + "  - convert: {batch: 1}\n"
QUANTIZE = CONVERT + "  - quantize: {subset_size: 3}\n"
VALIDATE = QUANTIZE + "  - validate: {latency: false, throughput: false, e2e: false, image_input: false}\n"


@dataclass
class Ctx:
    tmp: Path
    weights: Path  # a 2-class PPLCNet_x0_25 .pdparams shared by every row
    images: Path  # a folder of 6 real images (copies) the row may spoil
    ir: Path  # an FP32 IR of ``weights`` (convert stage output) for predict rows

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def pipeline(self, *, source: str = "", stages: str = EXPORT, data: str = "", extra: str = "",
                 name: str = "p.yaml") -> Path:
        source = source or f"{{format: pdparams, path: {self.weights}}}"
        text = (f"name: hostile\nmodel:\n  source: {source}\npreprocess: {{mode: resize, size: [32, 64]}}\n"
                f"{extra}{f'data:{chr(10)}{data}' if data else ''}stages:\n{stages}")
        return self.write(name, text)

    def labels(self, name: str, label: int | str = 0, lines: list[str] | None = None) -> Path:
        names = sorted(p.name for p in self.images.iterdir())
        return self.write(name, "".join(lines if lines is not None else [f"{n} {label}\n" for n in names]))

    def data(self, calib_labels: Path | None = None, eval_labels: Path | None = None, **extra: str) -> str:
        """``data:`` lines: calib and eval from the same folder, split by the label files (disjoint)."""
        names = sorted(p.name for p in self.images.iterdir())
        calib = calib_labels or self.write("calib.txt", "".join(f"{n} {i % 2}\n" for i, n in enumerate(names[:3])))
        ev = eval_labels or self.write("eval.txt", "".join(f"{n} {i % 2}\n" for i, n in enumerate(names[3:])))
        more = "".join(f", {k}: {v}" for k, v in extra.items())
        return (f"  calib: {{images: {self.images}, labels: {calib}{more}}}\n"
                f"  eval: {{images: {self.images}, labels: {ev}}}\n")

    def run(self, yaml: Path, *extra: str) -> list[str]:
        return ["run", str(yaml), "--out", str(self.tmp / "run"), *extra]



@dataclass
class Expect:
    args: list[str]
    needles: list[str]  # all must appear in the output
    exit_code: int = 2
    timeout: float = 120.0  # a hang is a failure, not a stuck test run
    check: Callable[[], None] | None = None


ROWS: list[tuple[str, str, Callable[[Ctx], Expect]]] = []


def row(cls: str, name: str) -> Callable[[Callable[[Ctx], Expect]], Callable[[Ctx], Expect]]:
    assert cls in CLASSES

    def deco(fn: Callable[[Ctx], Expect]) -> Callable[[Ctx], Expect]:
        ROWS.append((cls, name, fn))
        return fn
    return deco


# ================================================================ yaml

def _laughs(levels: int = 9, width: int = 9) -> str:
    """A YAML "billion laughs": each anchor lists the previous one ``width`` times (9**9 leaves)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _flow_laughs(levels: int = 9, width: int = 9) -> str:
    """The same on one line (a --set value)."""
    parts = [f"&l0 [{', '.join(['lol'] * width)}]"]
    parts += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@row("yaml", "pipeline-nested-1000-deep")
def _(c: Ctx) -> Expect:
    y = c.write("deep.yaml", "name: x\nmodel: " + "[" * 1000 + "]" * 1000 + "\n")
    return Expect(c.run(y), [str(y), "nested more than 64 levels"])


@row("yaml", "pipeline-billion-laughs")
def _(c: Ctx) -> Expect:
    y = c.write("laughs.yaml", _laughs() + "name: *l8\n")
    return Expect(c.run(y), [str(y), "expands to more than"], timeout=60)


@row("yaml", "pipeline-10MB-string")
def _(c: Ctx) -> Expect:
    y = c.write("big.yaml", "name: " + "x" * (10 << 20) + "\n")
    return Expect(c.run(y), [str(y), "larger than"], timeout=60)


@row("yaml", "pipeline-3MB-name-not-echoed")
def _(c: Ctx) -> Expect:
    y = c.pipeline(extra="", name="long.yaml")
    y.write_text(y.read_text().replace("name: hostile", "name: '" + "x" * (3 << 20) + "!'"))
    return Expect(c.run(y), [str(y), "name: ", "characters"], timeout=60)


@row("yaml", "pipeline-alias-expansion-not-echoed")
def _(c: Ctx) -> Expect:
    y = c.pipeline(name="alias.yaml")  # 38,416 leaves, under the loader's bounds: pydantic sees them all
    y.write_text(y.read_text().replace("name: hostile", f"name: {_flow_laughs(levels=4, width=14)}"))
    return Expect(c.run(y), [str(y), "name: "])


@row("yaml", "pipeline-not-utf8")
def _(c: Ctx) -> Expect:
    y = c.write("latin1.yaml", b"name: x\nmodel: caf\xe9\n")
    return Expect(c.run(y), [str(y), "line 2", "UTF-8"])


@row("yaml", "pipeline-is-a-directory")
def _(c: Ctx) -> Expect:
    folder = c.tmp / "pipelines"
    folder.mkdir()
    return Expect(c.run(folder), [str(folder), "folder"])


@row("yaml", "duplicate-top-level-key")
def _(c: Ctx) -> Expect:
    y = c.pipeline(extra="gates: {min_agreement: 0.99}\ngates: {}\n", name="dup.yaml")
    return Expect(c.run(y), [str(y), "line 6: duplicate key 'gates' (first at line 5)"])


@row("yaml", "duplicate-nested-key")
def _(c: Ctx) -> Expect:
    y = c.pipeline(source=f"{{format: pdparams, path: {c.weights}, path: other.pdparams}}", name="dup2.yaml")
    return Expect(c.run(y), [str(y), "duplicate key 'path'", "line 3"])


@row("yaml", "duplicate-stage-option-via-check")
def _(c: Ctx) -> Expect:
    y = c.pipeline(stages="  - import: {}\n  - export: {opset: 17, opset: 14}\n", name="dup3.yaml")
    return Expect(["check", str(y)], [str(y), "duplicate key 'opset'"])


@row("yaml", "duplicate-key-via-bench")
def _(c: Ctx) -> Expect:
    y = c.pipeline(extra="runtime: {threads: 1}\nruntime: {threads: 2}\n", name="dup4.yaml")
    return Expect(["bench", str(y), "--out", str(c.tmp / "b")], [str(y), "duplicate key 'runtime'"])


@row("yaml", "duplicate-key-via-sensitivity")
def _(c: Ctx) -> Expect:
    y = c.pipeline(extra="runtime: {threads: 1}\nruntime: {threads: 2}\n", name="dup5.yaml")
    return Expect(["sensitivity", str(y), "--out", str(c.tmp / "s")], [str(y), "duplicate key 'runtime'"])


@row("yaml", "set-value-billion-laughs")
def _(c: Ctx) -> Expect:
    return Expect(c.run(c.pipeline(), "--set", f"name={_flow_laughs()}"), ["--set name", "expands to more than"],
                  timeout=60)


@row("yaml", "set-value-nested-1000-deep")
def _(c: Ctx) -> Expect:
    return Expect(c.run(c.pipeline(), "--set", "model.options=" + "[" * 1000), ["--set model.options", "nested"])


@row("yaml", "sweep-duplicate-key")
def _(c: Ctx) -> Expect:
    c.pipeline(name="base.yaml")
    s = c.write("sweep.yaml", "base: base.yaml\ngrid:\n  stages.export.opset: [14, 17]\ngrid: {}\n")
    return Expect(["sweep", str(s), "--local"], [str(s), "duplicate key 'grid'"])


@row("yaml", "sweep-billion-laughs")
def _(c: Ctx) -> Expect:
    c.pipeline(name="base.yaml")
    s = c.write("sweep.yaml", _laughs() + "base: base.yaml\npoints: *l8\n")
    return Expect(["sweep", str(s), "--local"], [str(s), "expands to more than"], timeout=60)


def _textline_copy(c: Ctx, yml: str | None = None) -> Path:
    folder = c.tmp / "textline"
    shutil.copytree(helpers.TEXTLINE_MODEL, folder)
    if yml is not None:
        (folder / "inference.yml").write_text(yml)
    return folder


@row("yaml", "inference-yml-billion-laughs")
def _(c: Ctx) -> Expect:
    folder = _textline_copy(c, _laughs() + "Global: {model_name: *l8}\n")
    return Expect(["inspect", str(folder)], [str(folder / "inference.yml"), "expands to more than"], timeout=60)


# ================================================================ finite

def _tensors(**changes: np.ndarray) -> dict[str, np.ndarray]:
    t = helpers.synthetic_tensors(ARCH, class_num=2)
    t.update(changes)
    return t


def _with_value(name: str, value: float) -> dict[str, np.ndarray]:
    t = helpers.synthetic_tensors(ARCH, class_num=2)
    t[name] = t[name].copy()
    t[name].flat[len(t[name].flat) // 2] = value
    return t


@row("finite", "pdparams-nan-weight")
def _(c: Ctx) -> Expect:
    bad = helpers.write_pdparams(c.tmp / "nan.pdparams", _with_value("blocks3.0.dw_conv.conv.weight", np.nan))
    y = c.pipeline(source=f"{{format: pdparams, path: {bad}}}")
    return Expect(c.run(y), [str(bad), "blocks3.0.dw_conv.conv.weight", "not finite"])


@row("finite", "pdparams-inf-weight-via-inspect")
def _(c: Ctx) -> Expect:
    bad = helpers.write_pdparams(c.tmp / "inf.pdparams", _with_value("fc.weight", -np.inf))
    return Expect(["inspect", str(bad)], [str(bad), "fc.weight", "not finite"])


@row("finite", "pdparams-negative-bn-variance")
def _(c: Ctx) -> Expect:
    bad = helpers.write_pdparams(c.tmp / "var.pdparams", _with_value("blocks2.0.dw_conv.bn._variance", -4.0))
    y = c.pipeline(source=f"{{format: pdparams, path: {bad}}}")
    return Expect(c.run(y), [str(bad), "blocks2.0.dw_conv.bn._variance", "below zero"])


@row("finite", "pdparams-one-class")
def _(c: Ctx) -> Expect:
    bad = helpers.synthetic_pdparams(c.tmp / "one.pdparams", ARCH, class_num=1)
    y = c.pipeline(source=f"{{format: pdparams, path: {bad}}}")
    return Expect(c.run(y), [str(bad), "1 class"])


def _timm_state_dict(torch) -> dict:
    timm = pytest.importorskip("timm")
    return {k: v.clone() for k, v in timm.create_model("lcnet_050", pretrained=False).state_dict().items()}


@row("finite", "pth-inf-weight")
def _(c: Ctx) -> Expect:
    torch = pytest.importorskip("torch")
    sd = _timm_state_dict(torch)
    sd["conv_stem.weight"][0, 0, 0, 0] = float("inf")
    bad = c.tmp / "inf.pth"
    torch.save(sd, bad)
    return Expect(c.run(c.pipeline(source=f"{{format: torch, path: {bad}}}")), [str(bad), "conv_stem.weight"])


@row("finite", "safetensors-nan-weight")
def _(c: Ctx) -> Expect:
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    sd = _timm_state_dict(torch)
    sd["classifier.weight"][3, 3] = float("nan")
    bad = c.tmp / "nan.safetensors"
    st.save_file(sd, str(bad))
    y = c.pipeline(source=f"{{format: safetensors, path: {bad}}}")
    return Expect(c.run(y), [str(bad), "classifier.weight", "not finite"])


def _classifier_onnx(path: Path, *, fc: np.ndarray | None = None, after: list | None = None,
                     classes: int = 5) -> Path:
    """conv -> relu -> GAP -> flatten -> Gemm (``fc``) [-> ``after`` nodes on "z"]: a small classifier."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    fc = rng.normal(0, 0.5, (classes, 4)).astype(np.float32) if fc is None else fc
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(np.zeros(classes, np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["z" if after else "logits"], transB=1)]
    for node, extra_inits in after or []:
        nodes.append(node)
        inits += extra_inits
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@row("finite", "onnx-nan-initializer")
def _(c: Ctx) -> Expect:
    fc = np.ones((5, 4), np.float32)
    fc[2, 1] = np.nan
    bad = _classifier_onnx(c.tmp / "nan.onnx", fc=fc)
    return Expect(c.run(c.pipeline(source=f"{{format: onnx, path: {bad}}}", stages=CONVERT.replace(
        "  - fuse: {}\n", ""))), [str(bad), "fc (1 of 20 values)", "not finite"])


@row("finite", "paddle-inference-nan-weight")
def _(c: Ctx) -> Expect:
    folder = _textline_copy(c)
    params = folder / "inference.pdiparams"
    data = bytearray(params.read_bytes())
    data[-4:] = struct.pack("<f", float("nan"))  # the last value of the last (float32) tensor
    params.write_bytes(bytes(data))
    y = c.pipeline(source=f"{{format: paddle_inference, path: {folder}}}")
    return Expect(c.run(y), [str(folder), "not finite"])


def _nan_output_onnx(c: Ctx) -> Path:
    """Finite weights, non-finite logits: log(-|z|) of every logit z, NaN (or -inf at 0), FP32 and INT8 alike."""
    from onnx import helper

    after = [(helper.make_node("Abs", ["z"], ["a"]), []), (helper.make_node("Neg", ["a"], ["n"]), []),
             (helper.make_node("Log", ["n"], ["logits"]), [])]
    return _classifier_onnx(c.tmp / "nan_out.onnx", after=after, classes=2)


@row("finite", "validate-nan-outputs-fail-the-verdict")
def _(c: Ctx) -> Expect:
    """On main: agreement 1.0 (argmax of NaN is always 0), every gate PASS, bare NaN in metrics.json."""
    model = _nan_output_onnx(c)
    stages = VALIDATE.replace("  - fuse: {}\n", "") + "  - report: {}\n"  # no deploy stage: no bundle
    y = c.pipeline(source=f"{{format: onnx, path: {model}}}", stages=stages, data=c.data(),
                   extra="gates: {min_agreement: 0.5}\n")

    def verdict() -> None:
        text = (c.tmp / "run" / "metrics.json").read_text()
        metrics = json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json holds bare {name}"))
        gates = {g["name"]: g for g in metrics["gates"]}
        assert gates["finite_outputs"]["passed"] is False and gates["finite_outputs"]["value"] > 0
        assert metrics["accuracy"]["agreement"] is None and metrics["passed"] is False
    return Expect(c.run(y), ["finite_outputs", "non-finite"], exit_code=3, timeout=300, check=verdict)


@row("finite", "predict-nan-outputs")
def _(c: Ctx) -> Expect:
    ov = pytest.importorskip("openvino")
    folder = c.tmp / "nan_ir"
    folder.mkdir()
    ov.save_model(ov.convert_model(str(_nan_output_onnx(c))), str(folder / "model.xml"), compress_to_fp16=False)
    (folder / "preprocess.json").write_text(json.dumps({"mode": "resize", "size": [32, 64], "mean": [0.5] * 3,
                                                        "std": [0.5] * 3}))
    return Expect(["predict", str(folder / "model.xml"), str(next(c.images.iterdir()))],
                  [str(folder / "model.xml"), "not finite"])


# ================================================================ labels

@row("labels", "labels-with-utf8-bom-keep-the-first-image")
def _(c: Ctx) -> Expect:
    names = sorted(p.name for p in c.images.iterdir())
    calib = c.write("calib_bom.txt", "\ufeff" + "".join(f"{n} {i % 2}\n" for i, n in enumerate(names[:3])))

    def all_three() -> None:
        quant = json.loads((c.tmp / "run" / "quantize" / "quantize.json").read_text())
        assert quant["calib_images"] == 3, quant["calib_images"]
    return Expect(c.run(c.pipeline(stages=QUANTIZE, data=c.data(calib))), [], exit_code=0, timeout=300,
                  check=all_three)


@row("labels", "labels-not-utf8")
def _(c: Ctx) -> Expect:
    names = sorted(p.name for p in c.images.iterdir())
    bad = c.write("calib_latin1.txt", f"{names[0]} 0\n".encode() + b"caf\xe9.jpg 1\n")
    return Expect(c.run(c.pipeline(stages=QUANTIZE, data=c.data(bad))), [str(bad), "line 2", "UTF-8"])


@row("labels", "calib-label-outside-the-classes")
def _(c: Ctx) -> Expect:
    names = sorted(p.name for p in c.images.iterdir())
    bad = c.write("calib7.txt", f"{names[0]} 0\n{names[1]} 1\n{names[2]} 7\n")
    return Expect(c.run(c.pipeline(stages=QUANTIZE, data=c.data(bad))),
                  [str(bad), "line 3", "class index 7", "2 classes"], timeout=300)


@row("labels", "eval-label-outside-the-classes")
def _(c: Ctx) -> Expect:
    names = sorted(p.name for p in c.images.iterdir())
    bad = c.write("eval7.txt", f"{names[3]} 1\n# a comment\n{names[4]} 7\n{names[5]} 0\n")
    return Expect(c.run(c.pipeline(stages=VALIDATE, data=c.data(eval_labels=bad))),
                  [str(bad), "line 3", "class index 7", "2 classes"], timeout=300)


@row("labels", "validate-groups-tsv-not-utf8")
def _(c: Ctx) -> Expect:
    rows = "".join(f"{p.name}\tlatin\n" for p in c.images.iterdir()).encode()
    groups = c.write("groups.tsv", b"file\tscript\n" + rows + b"caf\xe9.jpg\tlatin\n")
    stages = VALIDATE.replace("image_input: false}", f"image_input: false, groups: {groups}}}")
    return Expect(c.run(c.pipeline(stages=stages, data=c.data())), [str(groups), "line 8", "UTF-8"], timeout=300)


@row("labels", "rotations-more-than-the-classes")
def _(c: Ctx) -> Expect:
    data = c.data().replace("labels: ", "rotations: [0, 90, 180], labels: ", 1)
    return Expect(c.run(c.pipeline(stages=QUANTIZE, data=data)), ["data.calib.rotations", "class index 2"],
                  timeout=300)


@row("labels", "label-names-index-outside")
def _(c: Ctx) -> Expect:
    names = c.write("names.txt", "0 upright\n7 flipped\n")
    return Expect(c.run(c.pipeline(stages=CONVERT, data=f"  label_names: {names}\n")),
                  [str(names), "line 2", "class index 7"])


@row("labels", "label-names-not-utf8")
def _(c: Ctx) -> Expect:
    names = c.write("names_latin1.txt", b"upright\nflipp\xe9d\n")
    return Expect(c.run(c.pipeline(stages=CONVERT, data=f"  label_names: {names}\n")), [str(names), "UTF-8"])


@row("labels", "label-names-with-bom")
def _(c: Ctx) -> Expect:
    names = c.write("names_bom.txt", "\ufeff0 upright\n1 flipped\n")

    def no_bom() -> None:
        xml = (c.tmp / "run" / "convert" / "model.xml").read_text()
        assert "upright" in xml and "ufeff" not in xml.lower() and "0 upright" not in xml
    return Expect(c.run(c.pipeline(stages=CONVERT, data=f"  label_names: {names}\n")), [], exit_code=0,
                  check=no_bom)


@row("labels", "predict-labels-txt-shorter-than-classes")
def _(c: Ctx) -> Expect:
    folder = c.tmp / "bundle"
    folder.mkdir()
    for f in (c.ir, c.ir.with_suffix(".bin")):
        shutil.copy(f, folder / f.name)
    (folder / "labels.txt").write_text("only_one\n")
    image = next(c.images.iterdir())
    return Expect(["predict", str(folder / c.ir.name), str(image)], [str(folder / c.ir.name), "1 label names",
                                                                      "2 classes"])


# ================================================================ images

def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring width x height, and a few bytes of image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@row("images", "data-png-header-60000x60000")
def _(c: Ctx) -> Expect:
    bomb = c.images / "zz_bomb.png"
    bomb.write_bytes(_png_header(60000, 60000))
    y = c.pipeline(stages=QUANTIZE, data=f"  calib: {{images: {c.images}}}\n")
    return Expect(c.run(y), [str(bomb), "3,600,000,000 pixels"], timeout=300)


@row("images", "data-image-too-thin-to-resize")
def _(c: Ctx) -> Expect:
    cv2 = pytest.importorskip("cv2")
    thin = c.images / "zz_thin.png"  # 60,000 pixels; with its short side at 40 px: 96 million
    cv2.imwrite(str(thin), np.zeros((1, 60000, 3), np.uint8))
    y = c.pipeline(stages=QUANTIZE, data=f"  calib: {{images: {c.images}}}\n")
    return Expect(c.run(y, "--set", "preprocess={mode: paddleclas, resize_short: 40, crop: 32}"),
                  [str(thin), "60000x1"], timeout=300)


@row("images", "predict-png-header-60000x60000")
def _(c: Ctx) -> Expect:
    bomb = c.write("bomb.png", _png_header(60000, 60000))
    return Expect(["predict", str(c.ir), str(bomb)], [str(bomb), "pixels"])


@row("images", "predict-png-header-9000x9000")
def _(c: Ctx) -> Expect:
    big = c.write("big.png", _png_header(9000, 9000))
    return Expect(["predict", str(c.ir), str(big)], [str(big), "9000x9000"])


# ================================================================ models

@row("models", "inference-yml-list-where-a-mapping-belongs")
def _(c: Ctx) -> Expect:
    folder = _textline_copy(c, "PreProcess: [ResizeImage, CropImage]\n")
    return Expect(["inspect", str(folder)], [str(folder / "inference.yml"), "PreProcess", "a mapping"])


@row("models", "inference-yml-wrong-types")
def _(c: Ctx) -> Expect:
    folder = _textline_copy(c, "PreProcess:\n  transform_ops:\n  - ResizeImage: {resize_short: tall}\n")
    return Expect(["inspect", str(folder)], ["inference.yml", "transform_ops[0].ResizeImage.resize_short", "'tall'"])


@row("models", "inference-yml-size-zero-via-run")
def _(c: Ctx) -> Expect:
    folder = _textline_copy(c, "PreProcess:\n  transform_ops:\n  - ResizeImage: {size: [0, 0]}\n")
    y = c.pipeline(source=f"{{format: paddle_inference, path: {folder}}}")
    return Expect(c.run(y), ["inference.yml", "ResizeImage.size[0]"])


@row("models", "inference-yml-label-list-is-a-mapping")
def _(c: Ctx) -> Expect:
    folder = _textline_copy(c, "PostProcess:\n  Topk: {label_list: {a: 1}}\n")
    return Expect(["inspect", str(folder)], ["inference.yml", "PostProcess.Topk.label_list", "a list"])


@row("models", "onnx-not-a-classifier")
def _(c: Ctx) -> Expect:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    bad = c.tmp / "relu.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 64])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), str(bad))
    return Expect(c.run(c.pipeline(source=f"{{format: onnx, path: {bad}}}")), [str(bad), "not a classifier"])


@row("models", "onnx-one-class-output")
def _(c: Ctx) -> Expect:
    bad = _classifier_onnx(c.tmp / "one.onnx", classes=1)
    return Expect(c.run(c.pipeline(source=f"{{format: onnx, path: {bad}}}")), [str(bad), "2 or more classes"])


@row("models", "onnx-identity-cycle-on-the-output")
def _(c: Ctx) -> Expect:
    """The output is produced by an Identity whose input an Identity makes from the output: the
    softmax-stripping walk followed producers for ever."""
    from onnx import helper

    after = [(helper.make_node("Identity", ["loop"], ["logits"]), []),
             (helper.make_node("Identity", ["logits"], ["loop"]), [])]
    bad = _classifier_onnx(c.tmp / "cycle.onnx", after=after)
    return Expect(c.run(c.pipeline(source=f"{{format: onnx, path: {bad}}}")), [str(bad), "cycle"], timeout=60)


@row("models", "onnx-tensor-with-two-producers")
def _(c: Ctx) -> Expect:
    from onnx import helper

    after = [(helper.make_node("Relu", ["z"], ["logits"]), []), (helper.make_node("Neg", ["z"], ["logits"]), [])]
    bad = _classifier_onnx(c.tmp / "two.onnx", after=after)
    return Expect(c.run(c.pipeline(source=f"{{format: onnx, path: {bad}}}")), [str(bad), "two nodes"])


@row("models", "fuse-on-an-adopted-onnx")
def _(c: Ctx) -> Expect:
    model = _classifier_onnx(c.tmp / "foreign.onnx")
    return Expect(c.run(c.pipeline(source=f"{{format: onnx, path: {model}}}")),
                  ["fuse", str(model), "remove the fuse stage"])


def _dag_key_pickle(levels: int = 80) -> bytes:
    """A dict whose key is a tuple holding the previous tuple twice, ``levels`` deep: 600 bytes whose
    hash takes 2**levels steps."""
    body = b"\x8c\x01a" + pickle.TUPLE1 + pickle.MEMOIZE + pickle.POP
    for i in range(1, levels):
        body += pickle.BINGET + bytes([i - 1]) + pickle.BINGET + bytes([i - 1]) + pickle.TUPLE2
        body += pickle.MEMOIZE + pickle.POP
    tail = pickle.BINGET + bytes([levels - 1]) + b"\x8c\x01v" + pickle.SETITEM + pickle.STOP
    return pickle.PROTO + bytes([4]) + pickle.EMPTY_DICT + body + tail


@row("models", "pdparams-key-that-takes-forever-to-hash")
def _(c: Ctx) -> Expect:
    bad = c.write("hash.pdparams", _dag_key_pickle())
    return Expect(["inspect", str(bad)], [str(bad), "dict key of type tuple"], timeout=60)


@row("models", "pdparams-millions-of-pickle-operations")
def _(c: Ctx) -> Expect:
    ops = (pickle.MARK + pickle.POP_MARK) * 1_500_000
    bad = c.write("ops.pdparams", pickle.PROTO + bytes([4]) + ops + pickle.EMPTY_DICT + pickle.STOP)
    y = c.pipeline(source=f"{{format: pdparams, path: {bad}}}")
    return Expect(c.run(y), [str(bad), "pickle operations"], timeout=60)


@row("models", "pth-key-that-takes-forever-to-hash")
def _(c: Ctx) -> Expect:
    """torch.save of [key, tensor] with the same tuple key as above, its list turned into a dict in the
    pickle (EMPTY_LIST -> EMPTY_DICT, APPENDS -> SETITEMS): torch's weights-only unpickler hashes it."""
    import pickletools
    import zipfile

    torch = pytest.importorskip("torch")
    key: tuple = ("a",)
    for _ in range(80):
        key = (key, key)
    plain = c.tmp / "plain.pth"
    torch.save([key, torch.zeros(1)], plain)
    bad = c.tmp / "hash.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = bytearray(src.read(info))
            if info.filename.endswith("data.pkl"):
                ops = list(pickletools.genops(bytes(data)))
                data[next(pos for op, _, pos in ops if op.name == "EMPTY_LIST")] = ord(pickle.EMPTY_DICT)
                data[[pos for op, _, pos in ops if op.name == "APPENDS"][-1]] = ord(pickle.SETITEMS)
            dst.writestr(info.filename, bytes(data))
    return Expect(c.run(c.pipeline(source=f"{{format: torch, path: {bad}}}")), [str(bad), "dict key"],
                  timeout=60)


@row("models", "predict-truncated-bin")
def _(c: Ctx) -> Expect:
    folder = c.tmp / "cut"
    folder.mkdir()
    shutil.copy(c.ir, folder / "model.xml")
    (folder / "model.bin").write_bytes(c.ir.with_suffix(".bin").read_bytes()[:1000])
    return Expect(["predict", str(folder / "model.xml"), str(next(c.images.iterdir()))],
                  [str(folder / "model.xml"), "model.bin"])


@row("models", "predict-garbage-xml")
def _(c: Ctx) -> Expect:
    xml = c.write("garbage/model.xml", "<net><layers><layer id='0' type='Parameter'>\x01 garbage")
    return Expect(["predict", str(xml), str(next(c.images.iterdir()))], [str(xml), "not an OpenVINO IR"])


@row("models", "predict-preprocess-json-not-lcpipe")
def _(c: Ctx) -> Expect:
    """An IR without lcpipe rt_info (converted straight from ONNX) and a preprocess.json beside it that
    is not a preprocessing description."""
    ov = pytest.importorskip("openvino")
    folder = c.tmp / "foreign"
    folder.mkdir()
    model = ov.convert_model(str(_classifier_onnx(c.tmp / "foreign.onnx")))
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    (folder / "preprocess.json").write_text('{"mode": "resize", "size": [0, 100000], "mean": [0, 0, 0]}')
    return Expect(["predict", str(folder / "model.xml"), str(next(c.images.iterdir()))],
                  [str(folder / "preprocess.json"), "not an lcpipe preprocessing description"])


@row("models", "preprocess-size-zero")
def _(c: Ctx) -> Expect:
    y = c.pipeline()
    return Expect(["check", str(y), "--set", "preprocess.size=[0, 160]"], ["preprocess.size[0]", "8"])


@row("models", "preprocess-size-100000-via-run")
def _(c: Ctx) -> Expect:
    return Expect(c.run(c.pipeline(stages=CONVERT), "--set", "preprocess.size=[80, 100000]"),
                  ["preprocess.size[1]", "4096"])


@row("models", "preprocess-crop-and-resize-short-out-of-range")
def _(c: Ctx) -> Expect:
    return Expect(["check", str(c.pipeline()), "--set", "preprocess={mode: paddleclas, resize_short: 100000, crop: 0}"],
                  ["preprocess.resize_short", "preprocess.crop"])


@row("models", "preprocess-timm-crop-pct-tiny")
def _(c: Ctx) -> Expect:
    return Expect(["check", str(c.pipeline()), "--set", "preprocess={mode: timm, crop: 224, crop_pct: 0.001}"],
                  ["preprocess", "crop_pct"])


@row("models", "model-options-stride-zero")
def _(c: Ctx) -> Expect:
    """A stride of 0 reached ONNX Runtime in the fuse check, which died of SIGFPE (exit 136, no message)."""
    return Expect(c.run(c.pipeline(), "--set", "model.options.stride_list=[0, 2, 2, 2, 2]"),
                  ["model.options.stride_list", "strides are 1..4"])


# ================================================================ scale

def _sweep(c: Ctx, axes: int, values: int, extra: str = "") -> Path:
    c.pipeline(name="base.yaml")
    grid = "".join(f"  stages.fuse.x{i}: [{', '.join(str(v) for v in range(values))}]\n" for i in range(axes))
    return c.write("grid.yaml", f"base: base.yaml\ngrid:\n{grid}{extra}")


@row("scale", "sweep-grid-of-a-million-points")
def _(c: Ctx) -> Expect:
    s = _sweep(c, 6, 10)
    return Expect(["sweep", str(s), "--local"], [str(s), "1,000,000 points", "--max-points"], timeout=10)


@row("scale", "sweep-grid-just-over-the-default-limit")
def _(c: Ctx) -> Expect:
    s = _sweep(c, 1, 1000, "points:\n  - {stages.export.opset: 14}\n")
    return Expect(["sweep", str(s), "--local"], [str(s), "1,001 points", "1,000"], timeout=30)


@row("scale", "sweep-over-a-lowered-max-points")
def _(c: Ctx) -> Expect:
    s = _sweep(c, 2, 2)
    return Expect(["sweep", str(s), "--local", "--max-points", "3"], [str(s), "4 points", "limit of 3"], timeout=30)


# ================================================================ the runner of the table

@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    images = helpers.real_image_paths(6)
    if len(images) < 6:
        pytest.skip("no real images in calib_data/imagenet/images")
    root = tmp_path_factory.mktemp("impossible")
    weights = helpers.synthetic_pdparams(root / "model.pdparams", ARCH, class_num=2)
    cache = root / "cache"
    yaml = root / "ir.yaml"
    yaml.write_text(f"name: ir\nmodel: {{source: {{format: pdparams, path: {weights}}}}}\n"
                    f"preprocess: {{mode: resize, size: [32, 64]}}\nstages:\n{CONVERT}")
    import lcpipe

    result = lcpipe.run_pipeline(lcpipe.load_config(yaml), out=root / "ir", cache_dir=cache)
    return {"weights": weights, "cache": cache, "images": images, "ir": result.artifacts["ir_fp32"]}


def _params() -> list:
    return [pytest.param(fn, id=f"{cls}:{name}") for cls, name, fn in ROWS]


@pytest.mark.parametrize("build", _params())
def test_impossible_input(build: Callable[[Ctx], Expect], shared: dict, tmp_path: Path) -> None:
    images = helpers.copy_into(shared["images"], tmp_path / "images")
    exp = build(Ctx(tmp=tmp_path, weights=shared["weights"], images=images, ir=shared["ir"]))
    env = {**os.environ, "LCPIPE_CACHE_DIR": str(shared["cache"]), "PYTHONPATH": str(helpers.REPO)}
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, "-m", "lcpipe", *exp.args], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=exp.timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no answer within {exp.timeout:.0f} s (a hang)")
    output = res.stdout + res.stderr
    shown = output[-3000:]
    assert "Traceback" not in output, shown
    assert res.returncode == exp.exit_code, f"exit {res.returncode} after {time.perf_counter() - t0:.1f} s:\n{shown}"
    missing = [n for n in exp.needles if n not in output]
    assert not missing, f"message does not name {missing}:\n{shown}"
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert all(len(line) < MAX_ERROR_LINE for line in errors), f"error line of {max(map(len, errors)):,} chars"
    assert len(output) < MAX_OUTPUT, f"{len(output):,} characters of output (a flood):\n{output[:2000]}"
    if exp.exit_code == 2:
        assert len(errors) == 1, shown
    if exp.check:
        exp.check()


def test_every_class_has_rows() -> None:
    by_class = {cls: sum(1 for c, _, _ in ROWS if c == cls) for cls in CLASSES}
    assert all(n >= 3 for n in by_class.values()), by_class
    assert len({name for _, name, _ in ROWS}) == len(ROWS)


# ================================================================ in process: the bounds themselves

def _config_error(fn: Callable[[], object]) -> tuple[str, float]:
    from lcpipe.errors import ConfigError

    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        fn()
    return str(info.value), time.perf_counter() - t0


@pytest.mark.parametrize("text, words", [
    (_laughs(), "expands to more than 100,000 nodes"),
    ("a: " + "[" * 70 + "]" * 70, "nested more than 64 levels"),
    ("a: &a [1, *a]\n", "refers to the node that contains it"),
    ("a:\n  b: 1\n  c: 2\n  b: 3\n", "line 4: duplicate key 'b' (first at line 2)"),
    ("- {x: 1, x: 1}\n", "duplicate key 'x'"),
    ("a: 1\n---\nb: 2\n", "expected a single document"),
    ("a: !!python/object/apply:os.system [ls]\n", "could not determine a constructor"),
    ("a: *" + "z" * 5000 + "\n", "found undefined alias"),
])
def test_yaml_loader_refuses_fast_in_one_short_line(text: str, words: str) -> None:
    from lcpipe.safe_yaml import load_yaml_text

    msg, seconds = _config_error(lambda: load_yaml_text(text, "src.yaml"))
    assert msg.startswith("src.yaml: ") and words in msg and "\n" not in msg and len(msg) < 400, msg
    assert seconds < 1.0, f"{seconds:.2f} s"


def test_yaml_loader_keeps_what_yaml_allows() -> None:
    from lcpipe.safe_yaml import load_yaml_text

    text = "base: &b {x: 1, y: [1, 2]}\nd:\n  <<: *b\n  x: 3\ne: *b\n"
    assert load_yaml_text(text, "s") == {"base": {"x": 1, "y": [1, 2]}, "d": {"x": 3, "y": [1, 2]},
                                        "e": {"x": 1, "y": [1, 2]}}
    assert load_yaml_text("\ufeffa: 1\n", "s") == {"a": 1} and load_yaml_text("", "s") is None


def test_yaml_file_bounds(tmp_path: Path) -> None:
    from lcpipe.safe_yaml import MAX_BYTES, load_yaml_file

    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * MAX_BYTES)
    msg, seconds = _config_error(lambda: load_yaml_file(big, "pipeline"))
    assert f"{big}: pipeline file is larger than" in msg and seconds < 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: \xff\n")
    assert _config_error(lambda: load_yaml_file(bad, "pipeline"))[0] == \
        f"{bad}: line 2: not UTF-8 text (byte 0xff at offset 8); save the pipeline file as UTF-8"


def test_write_json_is_strict(tmp_path: Path) -> None:
    from lcpipe.fileio import write_json

    write_json(tmp_path / "m.json", {"nan": float("nan"), "inf": [np.float32("inf"), 1.5], "f32": np.float32(0.25),
                                     "ok": {"n": 3, "s": "NaN"}})
    text = (tmp_path / "m.json").read_text()
    got = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in {text}"))
    assert got == {"nan": None, "inf": [None, 1.5], "f32": 0.25, "ok": {"n": 3, "s": "NaN"}}


def _grid_sweep(tmp_path: Path, grid: str) -> Path:
    weights = helpers.synthetic_pdparams(tmp_path / "w.pdparams", ARCH, class_num=2)
    helpers.write_yaml(tmp_path / "base.yaml", helpers.MINIMAL_YAML.format(path=weights))
    return helpers.write_yaml(tmp_path / "s.yaml", f"base: base.yaml\ngrid:\n{grid}")


def test_million_point_grid_is_counted_not_expanded(tmp_path: Path) -> None:
    from lcpipe.sweep import load_sweep

    axes = "".join(f"  stages.export.x{i}: [{', '.join(map(str, range(10)))}]\n" for i in range(6))
    path = _grid_sweep(tmp_path, axes)
    msg, seconds = _config_error(lambda: load_sweep(path))
    assert "1,000,000 points (grid 10 x 10 x 10 x 10 x 10 x 10, plus 0 listed)" in msg and "--max-points" in msg
    assert seconds < 1.0, f"{seconds:.2f} s to refuse"


def test_max_points_sets_the_limit(tmp_path: Path) -> None:
    from lcpipe.sweep import load_sweep

    path = _grid_sweep(tmp_path, "  stages.export.opset: [14, 15, 16]\n  runtime.threads: [1, 2, 3, 4]\n")
    assert "12 points" in _config_error(lambda: load_sweep(path, max_points=11))[0]
    assert len(load_sweep(path, max_points=12).points) == 12


@pytest.mark.parametrize("protocol", [3, 4])  # what numpy + pickle write bytes natively with (paddle.save: 4)
def test_bounded_unpickler_reads_plain_checkpoints(tmp_path: Path, protocol: int) -> None:
    from collections import OrderedDict

    from lcpipe.importers.safe_pickle import load_pdparams

    tensors = helpers.synthetic_tensors(ARCH, class_num=2)
    path = tmp_path / "w.pdparams"
    path.write_bytes(pickle.dumps(OrderedDict(tensors), protocol=protocol))
    got = load_pdparams(path)
    assert got.keys() == tensors.keys() and all(np.array_equal(got[k], v) for k, v in tensors.items())


def test_torch_pickles_are_scanned_without_refusing_real_files(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from lcpipe.importers.torch_weights import load_torch_state_dict

    sd = {"a.weight": torch.ones(3, 2), "b": torch.arange(4)}
    for name, zipped in (("zip.pth", True), ("legacy.pth", False)):  # legacy: a 77-bit magic number first
        torch.save(sd, tmp_path / name, _use_new_zipfile_serialization=zipped)
        got = load_torch_state_dict(tmp_path / name)
        assert np.array_equal(got["a.weight"], np.ones((3, 2))) and got["b"].tolist() == [0, 1, 2, 3]
