"""Paddle inference models -> ONNX (paddle2onnx) -> canonical form when the graph is a PP-LCNet.

Accepts Paddle 3 (``inference.json``, PIR) and Paddle 2 (``*.pdmodel``) programs with their
``.pdiparams``. The raw paddle2onnx output is kept as ``work_dir/paddle2onnx.onnx`` (the
"paddle2onnx route"); the canonical rebuild is what the rest of lcpipe fuses and exports.
Inference models carry generated parameter names, so layers are matched by graph order
(see ``lcpipe.importers.onnx_rebuild.canonical_from_onnx``), not by name.

Second route for Paddle 2 programs: ``convert_with_openvino_frontend`` (OpenVINO reads
``.pdmodel`` natively; it cannot read Paddle 3 PIR ``.json``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcpipe.deps import require
from lcpipe.errors import InputError, clip, shown
from lcpipe.fileio import atomic_ir, atomic_path
from lcpipe.importers.onnx_read import check_classifier_output, load_onnx
from lcpipe.importers.onnx_rebuild import canonical_from_onnx
from lcpipe.ir import write_model
from lcpipe.models.spec import CanonicalModel

MIN_OPSET = 14  # below 14 paddle2onnx decomposes HardSwish into slow HardSigmoid+Mul
P2O_NAME = "paddle2onnx.onnx"


@dataclass(frozen=True)
class InferenceFiles:
    folder: Path
    model: Path  # inference.json (PIR) or *.pdmodel (legacy)
    params: Path
    yml: Path | None

    @property
    def kind(self) -> str:
        return "paddle3_pir" if self.model.suffix == ".json" else "paddle2_pdmodel"


def locate_inference_files(path: Path) -> InferenceFiles:
    """Find model + params (+ inference.yml) given the folder or any file inside it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such Paddle inference model folder or file")
    folder = path if path.is_dir() else path.parent
    model = _pick_model_file(path, folder)
    params = model.with_suffix(".pdiparams")
    if not params.is_file():
        raise InputError(f"{folder}: Paddle inference model is missing {params.name} "
                         f"(weights for {model.name}); expected it next to the model file")
    yml = folder / "inference.yml"
    return InferenceFiles(folder, model, params, yml if yml.is_file() else None)


def _pick_model_file(path: Path, folder: Path) -> Path:
    if path.is_file() and path.suffix in (".json", ".pdmodel"):
        return path
    if path.is_file() and path.suffix == ".pdiparams":
        for suffix in (".json", ".pdmodel"):
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    for name in ("inference.json", "inference.pdmodel", "model.json", "model.pdmodel"):
        if (folder / name).is_file():
            return folder / name
    # Any other program file that has params beside it (e.g. PaddleClas "<name>.pdmodel").
    found = sorted(p for p in folder.glob("*.pdmodel")) + sorted(
        p for p in folder.glob("*.json") if p.with_suffix(".pdiparams").is_file())
    if found:
        return found[0]
    raise InputError(f"{folder}: no Paddle inference program found (missing inference.json "
                     f"(Paddle 3) or *.pdmodel (Paddle 2) next to the .pdiparams)")


def read_inference_yml(path: Path) -> dict[str, Any]:
    """Preprocessing and labels from a PaddleClas/PaddleX ``inference.yml``.

    ``preprocess`` uses lcpipe's PreprocessConfig keys; ``ResizeImage.size`` is [w, h] in
    PaddleClas and becomes ``size: [h, w]`` here. A value of the wrong type or out of range is an
    InputError naming the key (the file comes with a downloaded model: it is input, not config)."""
    from lcpipe.safe_yaml import load_yaml_file

    y = _Yml(Path(path))
    doc = load_yaml_file(path, "inference.yml", InputError)
    doc = {} if doc is None else y.mapping(doc, "<top level>")
    out: dict[str, Any] = {}
    model_name = y.mapping(doc.get("Global"), "Global").get("model_name")
    if model_name is not None:
        out["model_name"] = y.text(model_name, "Global.model_name")
    ops = y.sequence(y.mapping(doc.get("PreProcess"), "PreProcess").get("transform_ops"), "PreProcess.transform_ops")
    out["preprocess_ops"] = ops
    pre, notes = _preprocess_from_ops(ops, y)
    if pre:
        out["preprocess"] = pre
    if notes:
        out["preprocess_notes"] = notes
    topk = y.mapping(y.mapping(doc.get("PostProcess"), "PostProcess").get("Topk"), "PostProcess.Topk")
    labels = y.sequence(topk.get("label_list"), "PostProcess.Topk.label_list")
    if labels:
        out["label_names"] = [y.text(x, f"PostProcess.Topk.label_list[{i}]") for i, x in enumerate(labels)]
    elif topk.get("class_id_map_file"):
        out["class_id_map_file"] = y.text(topk["class_id_map_file"], "PostProcess.Topk.class_id_map_file")
    return out


class _Yml:
    """Typed reads from an inference.yml; each failure names the file and the key path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, expected: str, value: Any) -> InputError:
        return InputError(f"{self.path}: {key}: expected {expected}, got {shown(value)}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "a mapping", value)
        return value

    def sequence(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, "a list", value)
        return value

    def text(self, value: Any, key: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(key, "a name", value)
        return clip(str(value), 200)

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(key, "a finite number", value)
        return float(value)

    def side(self, value: Any, key: str) -> int:
        """An image side in pixels, within the bounds lcpipe's preprocess config accepts."""
        from lcpipe.config import MAX_SIDE, MIN_SIDE

        if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIDE <= value <= MAX_SIDE:
            raise self.fail(key, f"a size in pixels ({MIN_SIDE}..{MAX_SIDE})", value)
        return value

    def sides(self, value: Any, key: str) -> tuple[int, int]:
        """``size``: one int, or [w, h]."""
        if isinstance(value, list):
            if len(value) != 2:
                raise self.fail(key, "a size or [width, height]", value)
            return self.side(value[0], f"{key}[0]"), self.side(value[1], f"{key}[1]")
        s = self.side(value, key)
        return s, s

    def triple(self, value: Any, key: str) -> list[float]:
        if not isinstance(value, list) or len(value) != 3:
            raise self.fail(key, "3 numbers (one per channel)", value)
        return [self.number(v, f"{key}[{i}]") for i, v in enumerate(value)]


def _preprocess_from_ops(ops: list[Any], y: _Yml) -> tuple[dict[str, Any], list[str]]:
    pre: dict[str, Any] = {}
    notes: list[str] = []
    for i, item in enumerate(ops):
        key = f"PreProcess.transform_ops[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise y.fail(key, "a one-key mapping {OpName: {arguments}}", item)
        ((name, args),) = item.items()
        key = f"{key}.{clip(str(name), 40)}"
        args = y.mapping(args, key)
        if name == "ResizeImage":
            if args.get("resize_short") is not None:
                pre.update(mode="paddleclas", resize_short=y.side(args["resize_short"], f"{key}.resize_short"))
            elif args.get("size") is not None:
                w, h = y.sides(args["size"], f"{key}.size")
                pre.update(mode="resize", size=[h, w])
            interp = args.get("interpolation")
            interp = "" if interp is None else y.text(interp, f"{key}.interpolation").lower()
            if interp in ("bilinear", "bicubic"):
                pre["interpolation"] = interp
            elif interp:
                notes.append(f"ResizeImage interpolation {interp!r} not representable")
        elif name == "CropImage":
            pre["crop"] = y.sides(args.get("size", 224), f"{key}.size")[0]
        elif name == "NormalizeImage":
            if "mean" in args:
                pre["mean"] = y.triple(args["mean"], f"{key}.mean")
            if "std" in args:
                pre["std"] = y.triple(args["std"], f"{key}.std")
                if any(v == 0 for v in pre["std"]):
                    raise y.fail(f"{key}.std", "non-zero numbers", args["std"])
            scale = args.get("scale", 1 / 255)
            if isinstance(scale, str):  # PaddleClas also writes "1.0/255.0"
                notes.append(f"NormalizeImage scale given as text {clip(scale, 40)!r}")
            elif abs(y.number(scale, f"{key}.scale") - 1 / 255) > 1e-9:
                notes.append(f"NormalizeImage scale {scale} is not 1/255")
            order = args.get("order", "")
            if order not in ("", "chw", "hwc"):
                notes.append(f"NormalizeImage order {shown(order, 40)}")
        elif name not in ("ToCHWImage", "DecodeImage"):
            notes.append(f"preprocessing op {clip(str(name), 40)} is not modelled by lcpipe")
    return pre, notes


def paddle_to_onnx(files: InferenceFiles, out_path: Path, *, opset: int = 17) -> Path:
    """Run paddle2onnx in-process and write its raw output atomically.

    ``save_file=None`` makes paddle2onnx return the bytes, which skips its optimizer step
    entirely (the default "polygraphy" one pip-installs packages at run time)."""
    if opset < MIN_OPSET:
        raise InputError(f"paddle2onnx opset {opset} is below {MIN_OPSET}: HardSwish would be decomposed "
                         f"into slow HardSigmoid+Mul ops; use opset >= {MIN_OPSET}")
    p2o = require("paddle2onnx", "converting Paddle inference models")
    _check_program_file(files.model)
    log = io.StringIO()
    try:
        # paddle2onnx logs exceptions and carries on; the missing result shows up as an
        # UnboundLocalError, so its own log is captured for the message.
        with contextlib.redirect_stdout(log), _native_stdout_to_stderr():
            data = p2o.export(str(files.model), str(files.params), None, opset_version=opset,
                              enable_onnx_checker=True, optimize_tool="None")
    except Exception as exc:
        tail = " | ".join(line for line in log.getvalue().splitlines()[-5:] if line.strip())
        raise InputError(f"{files.model}: paddle2onnx could not convert this model ({exc}); {tail}") from exc
    if not data:
        raise InputError(f"{files.model}: paddle2onnx produced no model")
    _check_converted(data, files)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(data)
    return out_path


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """paddle2onnx's C++ side prints progress on file descriptor 1; stdout belongs to lcpipe's own
    report (`lcpipe run` summary, `lcpipe inspect --json` must parse)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _check_program_file(model: Path) -> None:
    """Paddle's and paddle2onnx's C++ parsers end the whole process (exit 255, no message) on a
    truncated program file, so parse it in Python first."""
    if model.suffix == ".pdmodel":
        _check_pdmodel(model)
        return
    try:
        doc = json.loads(model.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"{model}: not a readable Paddle 3 program (truncated or corrupt JSON: {exc})") from exc
    magic = (doc.get("base_code") or {}).get("magic") if isinstance(doc, dict) else None
    if magic != "pir" or "program" not in doc:
        raise InputError(f"{model}: JSON file is not a Paddle 3 PIR program (base_code.magic is {magic!r})")


def _check_pdmodel(model: Path) -> None:
    from google.protobuf.message import DecodeError

    framework_pb2 = require("paddle.base.proto.framework_pb2", "reading .pdmodel programs")
    desc = framework_pb2.ProgramDesc()
    try:
        desc.ParseFromString(model.read_bytes())
    except (OSError, DecodeError) as exc:
        raise InputError(f"{model}: not a readable Paddle 2 program (truncated or corrupt: {exc})") from exc
    ops = desc.blocks[0].ops if desc.blocks else []
    # An inference program ends with its fetch ops; a file cut at a field boundary still parses.
    if not ops or ops[-1].type != "fetch":
        raise InputError(f"{model}: Paddle 2 program has no fetch op at the end (truncated or not an "
                         f"inference model)")


def _check_converted(data: bytes, files: InferenceFiles) -> None:
    """paddle2onnx logs checker failures but still returns the model (e.g. for a truncated
    .pdiparams the weights are simply missing); treat those as unusable input."""
    onnx = require("onnx")
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as exc:  # checker raises ValidationError; parsing may raise DecodeError
        raise InputError(f"{files.folder}: paddle2onnx output is not a valid ONNX model ({exc}); "
                         f"is {files.params.name} truncated or from another model?") from exc


def import_paddle_inference(model_dir: Path, *, opset: int = 17, arch: str = "auto",
                            options: dict[str, Any] | None = None,
                            work_dir: Path) -> tuple[CanonicalModel | None, Path, dict[str, Any]]:
    """Paddle inference model -> (canonical model or None, paddle2onnx ONNX path, meta).

    ``None`` means "adopt the ONNX as is" and ``meta["adopted_reason"]`` says why."""
    files = locate_inference_files(Path(model_dir))
    yml = read_inference_yml(files.yml) if files.yml is not None else {}  # a bad one fails before converting
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = paddle_to_onnx(files, work_dir / P2O_NAME, opset=opset)
    meta: dict[str, Any] = {"format": files.kind, "model_file": str(files.model), "params_file": str(files.params),
                            "paddle2onnx_onnx": str(onnx_path), "opset": opset, "adopted_reason": None, **yml}
    proto = load_onnx(onnx_path, origin=files.folder)
    meta["input_shape"] = _input_shape(proto)
    meta["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    canonical, info = canonical_from_onnx(proto, arch=arch, options=options, source_format="paddle_inference")
    meta.update(info)
    if canonical is None:  # adopted as is: it must still be a classifier
        check_classifier_output(_inferred(proto), str(files.folder))
    return canonical, onnx_path, meta


def _inferred(proto: Any) -> Any:
    onnx = require("onnx")
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:  # inference is best effort here; the checker already passed
        return proto


def _input_shape(proto: Any) -> list[int | str]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def convert_with_openvino_frontend(pdmodel_path: Path, out_xml: Path) -> Path:
    """Paddle 2 ``.pdmodel`` -> OpenVINO IR with OpenVINO's own Paddle frontend (FP32 IR)."""
    pdmodel_path = Path(pdmodel_path)
    if pdmodel_path.suffix == ".json":
        raise InputError(f"{pdmodel_path}: OpenVINO cannot read Paddle 3 PIR .json programs (its Paddle "
                         f"frontend reads legacy .pdmodel only); lcpipe converts these with paddle2onnx instead")
    if pdmodel_path.is_dir():
        pdmodel_path = locate_inference_files(pdmodel_path).model
        if pdmodel_path.suffix == ".json":
            return convert_with_openvino_frontend(pdmodel_path, out_xml)
    if not pdmodel_path.is_file():
        raise InputError(f"{pdmodel_path}: no such .pdmodel file")
    if not pdmodel_path.with_suffix(".pdiparams").is_file():
        raise InputError(f"{pdmodel_path.parent}: missing {pdmodel_path.with_suffix('.pdiparams').name} "
                         f"next to {pdmodel_path.name}")
    _check_pdmodel(pdmodel_path)
    ov = require("openvino", "the OpenVINO Paddle frontend")
    try:
        model = ov.convert_model(str(pdmodel_path))
    except Exception as exc:  # OpenVINO raises its own exception types per frontend
        raise InputError(f"{pdmodel_path}: OpenVINO's Paddle frontend failed: {exc}") from exc
    out_xml = Path(out_xml)
    with atomic_ir(out_xml) as tmp_xml:
        write_model(model, tmp_xml)  # FP32 weights (FP16 compression is OpenVINO's default)
    return out_xml


def describe(meta: dict[str, Any]) -> str:
    """One line for logs."""
    det = meta.get("detected")
    if det:
        return f"{det['arch']} strides={det['stride_list']} classes={det['class_num']} ({meta.get('format')})"
    return f"adopted as is: {meta.get('adopted_reason')}"

