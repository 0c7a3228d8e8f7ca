"""Paddle inference models: paddle2onnx route and canonical rebuild vs Paddle Inference.

References are Paddle Inference predictors on the very files being imported. Models are never
downloaded: the real text-line model ships as package data in
``lcpipe/examples/textline_ori_int8/models``; the PULC-style and V2 models are PaddleClas networks with random
weights saved here with ``paddle.jit.save``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    TEXT_LINES,
    TEXTLINE_MODEL,
    assert_logits_close,
    build_paddleclas,
    ort_logits,
    paddle_reparameterize,
)

from lcpipe.errors import InputError
from lcpipe.importers.onnx_adopt import adopt_onnx
from lcpipe.importers.paddle_inference import (
    convert_with_openvino_frontend,
    import_paddle_inference,
    locate_inference_files,
    read_inference_yml,
)
from lcpipe.models.layers import expected_shapes

pytest.importorskip("paddle")
pytest.importorskip("paddle2onnx")

TEXTLINE = TEXTLINE_MODEL
_LINE_DIRS = (TEXT_LINES / "lines",)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# ---------------------------------------------------------------- helpers

def line_images(hw: tuple[int, int], n: int = 24) -> np.ndarray:
    """Real text-line crops as inference.yml says: resize to HxW, /255, mean/std, CHW."""
    from PIL import Image

    folder = next((d for d in _LINE_DIRS if d.is_dir()), None)
    if folder is None:
        pytest.skip("no text-line images (lcpipe/examples/textline_ori_int8/text_lines/lines)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
    out = []
    for f in files:
        img = Image.open(f).convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR)
        x = (np.asarray(img, np.float32) / 255.0 - MEAN) / STD
        out.append(x.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def paddle_infer(model_file: Path, x: np.ndarray) -> np.ndarray:
    """Paddle Inference (the deployment runtime) on the exported files, CPU, 2 threads."""
    import paddle.inference as pi

    cfg = pi.Config(str(model_file), str(model_file.with_suffix(".pdiparams")))
    cfg.disable_gpu()
    cfg.set_cpu_math_library_num_threads(2)
    cfg.disable_glog_info()
    pred = pi.create_predictor(cfg)
    h = pred.get_input_handle(pred.get_input_names()[0])
    h.reshape(list(x.shape))
    h.copy_from_cpu(x)
    pred.run()
    return pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu()


def exporter() -> tuple[Any, Any]:
    export = pytest.importorskip("lcpipe.export.onnx_export")
    fusion = pytest.importorskip("lcpipe.fusion")
    return export.export_onnx, fusion.fuse


def export_canonical(cm: Any, out: Path, hw: tuple[int, int], *, softmax: bool, fused: bool = True) -> Path:
    export_onnx, fuse = exporter()
    return export_onnx(fuse(cm) if fused else cm, out, opset=17, input_hw=hw, softmax=softmax)


def jit_save(model: Any, folder: Path, hw: tuple[int, int]) -> Path:
    """PIR export (Paddle 3 ``paddle.jit.save``): inference.json + inference.pdiparams, logits out."""
    import paddle

    folder.mkdir(parents=True, exist_ok=True)
    spec = [paddle.static.InputSpec([None, 3, *hw], "float32", name="x")]
    paddle.jit.save(model, str(folder / "inference"), input_spec=spec)
    return folder / "inference.json"


def assert_tensors_complete(cm: Any) -> None:
    want = expected_shapes(cm.spec)
    got = {k: tuple(v.shape) for k, v in cm.tensors.items()}
    assert got == want, f"missing {set(want) - set(got)}, unexpected {set(got) - set(want)}"
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in cm.tensors.values())


# ---------------------------------------------------------------- the real text-line model

@pytest.fixture(scope="module")
def textline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, dict[str, Any]]:
    if not (TEXTLINE / "inference.json").is_file():
        pytest.skip(f"{TEXTLINE} is missing")
    return import_paddle_inference(TEXTLINE, work_dir=tmp_path_factory.mktemp("textline"))


@pytest.fixture(scope="module")
def textline_ref() -> tuple[np.ndarray, np.ndarray]:
    x = line_images((80, 160))
    return x, paddle_infer(TEXTLINE / "inference.json", x)


def test_textline_paddle2onnx_route_matches_paddle_inference(textline, textline_ref) -> None:
    _, onnx_path, meta = textline
    x, ref = textline_ref
    assert onnx_path.name == "paddle2onnx.onnx" and Path(meta["paddle2onnx_onnx"]) == onnx_path
    got = ort_logits(onnx_path, x)
    diff = assert_logits_close(ref, got, "paddle2onnx route vs Paddle Inference (softmax outputs)")
    print(f"textline paddle2onnx vs Paddle Inference: max abs diff {diff:.3e} on {len(x)} images")


def test_textline_canonical_rebuild(textline) -> None:
    cm, _, meta = textline
    assert cm is not None, meta["adopted_reason"]
    spec = cm.spec
    print(f"detected {spec.arch} stride_list={spec.stride_list} use_last_conv={spec.use_last_conv}")
    assert spec.arch == "PPLCNet_x0_25" and spec.class_num == 2 and not spec.use_last_conv
    # The graph, not the PULC config ([2, [2,1], ...]), decides: the stem is (1, 2) in (H, W).
    assert spec.stride_list == ((1, 2), (2, 1), (2, 1), (2, 1), (2, 1))
    assert spec.act == "hardswish" and not spec.bn_folded and spec.source_format == "paddle_inference"
    assert_tensors_complete(cm)
    assert meta["softmax"] is True and meta["format"] == "paddle3_pir"
    assert meta["label_names"] == ["0_degree", "180_degree"]
    assert meta["preprocess"] == {"mode": "resize", "size": [80, 160], "mean": [0.485, 0.456, 0.406],
                                  "std": [0.229, 0.224, 0.225]}
    assert meta["input_shape"][1:] == [3, 80, 160]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_textline_canonical_export_matches_paddle_inference(textline, textline_ref, tmp_path, fused) -> None:
    cm, onnx_path, _ = textline
    x, ref = textline_ref
    with_softmax = ort_logits(export_canonical(cm, tmp_path / "sm.onnx", (80, 160), softmax=True, fused=fused), x)
    diff = assert_logits_close(ref, with_softmax, "canonical export (softmax) vs Paddle Inference")
    # Logits: paddle2onnx model with its softmax stripped is the reference (same weights).
    adopt_onnx(onnx_path, out_path=tmp_path / "p2o_logits.onnx")
    ref_logits = ort_logits(tmp_path / "p2o_logits.onnx", x)
    logits = ort_logits(export_canonical(cm, tmp_path / "lg.onnx", (80, 160), softmax=False, fused=fused), x)
    diff_l = assert_logits_close(ref_logits, logits, "canonical export logits vs paddle2onnx logits")
    np.testing.assert_allclose(_softmax(logits), ref, atol=1e-4)
    print(f"textline canonical ({'fused' if fused else 'unfused'}): softmax diff {diff:.3e}, logits diff {diff_l:.3e}")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ---------------------------------------------------------------- PaddleClas models, random weights

PULC_KW = {"class_num": 4, "use_last_conv": False, "stride_list": [2, [2, 1], [2, 1], [2, 1], [2, 1]]}
CASES = {
    # name: (arch, kwargs, input hw, expected stride_list, expected dropout_prob or None)
    "v1_pulc": ("PPLCNet_x0_25", PULC_KW, (80, 160), ((2, 2), (2, 1), (2, 1), (2, 1), (2, 1)), None),
    "v1_head": ("PPLCNet_x0_25", {"class_num": 10}, (64, 64), ((2, 2),) * 5, 0.2),
    "v2_small": ("PPLCNetV2_small", {"class_num": 10}, (96, 96), ((2, 2),) * 5, 0.2),
}


@pytest.fixture(scope="module", params=list(CASES))
def pir_case(request, tmp_path_factory) -> dict[str, Any]:
    pytest.importorskip("paddleclas")
    arch, kw, hw, strides, dropout = CASES[request.param]
    images = line_images(hw, n=32)
    # BN statistics from real pixels keep the random network input-sensitive (logits of size ~1-10).
    model = build_paddleclas(arch, calib=images[:16], seed=3, **kw)
    n_rep = paddle_reparameterize(model)  # PaddleClas export does this before saving V2
    folder = tmp_path_factory.mktemp(request.param)
    model_file = jit_save(model, folder / "model", hw)
    x = images[16:]
    cm, onnx_path, meta = import_paddle_inference(folder / "model", work_dir=folder / "work")
    return {"name": request.param, "arch": arch, "hw": hw, "strides": strides, "dropout": dropout,
            "rep": n_rep, "x": x, "ref": paddle_infer(model_file, x), "cm": cm, "onnx": onnx_path, "meta": meta}


@pytest.mark.paddleclas
def test_paddleclas_pir_import_detects_spec(pir_case) -> None:
    cm, meta = pir_case["cm"], pir_case["meta"]
    assert cm is not None, meta["adopted_reason"]
    assert cm.spec.arch == pir_case["arch"] and cm.spec.class_num == CASES[pir_case["name"]][1]["class_num"]
    assert cm.spec.stride_list == pir_case["strides"]
    if pir_case["dropout"] is None:
        assert not cm.spec.use_last_conv
    else:  # downscale_in_infer dropout is in the graph as Mul(0.8)
        assert cm.spec.use_last_conv and cm.spec.head_scale == pytest.approx(1 - pir_case["dropout"])
    if cm.spec.family == "v2":
        assert pir_case["rep"] > 0 and cm.spec.rep_fused
    assert not cm.spec.bn_folded
    assert_tensors_complete(cm)


@pytest.mark.paddleclas
def test_paddleclas_pir_logits_match_paddle_inference(pir_case, tmp_path) -> None:
    x, ref = pir_case["x"], pir_case["ref"]
    assert ref.std(axis=0).max() > 1e-2, "reference logits barely depend on the input"
    d_p2o = assert_logits_close(ref, ort_logits(pir_case["onnx"], x), "paddle2onnx route")
    out = export_canonical(pir_case["cm"], tmp_path / "m.onnx", pir_case["hw"], softmax=False)
    d_can = assert_logits_close(ref, ort_logits(out, x), "canonical -> fuse -> export")
    print(f"{pir_case['name']}: paddle2onnx {d_p2o:.3e}, canonical {d_can:.3e} (max |logit| {np.abs(ref).max():.2f}, "
          f"logit std over images {ref.std(axis=0).max():.3f}, {len(set(ref.argmax(1)))} distinct argmax)")


# ---------------------------------------------------------------- legacy Paddle 2 .pdmodel

# Paddle 3.3 cannot write .pdmodel with paddle.jit.save under FLAGS_enable_pir_api=0: the
# dy2static program build dies in paddle.multiply ("multiply(): argument (position 1) must be
# Value, but got Variable"), since the generated op wrappers only accept PIR values. Building
# the program in static mode under OldIrGuard works once paddle.multiply and sigmoid (the two
# ops PP-LCNet reaches through those wrappers) are routed to legacy elementwise_mul/sigmoid ops.
_LEGACY_SCRIPT = textwrap.dedent('''
    import sys, numpy as np, paddle
    from paddle.base.layer_helper import LayerHelper

    def legacy(op, x, y=None, attrs=None):
        helper = LayerHelper(op)
        out = helper.create_variable_for_type_inference(x.dtype)
        ins = {"X": [x]} if y is None else {"X": [x], "Y": [y]}
        helper.append_op(type=op, inputs=ins, outputs={"Out": [out]}, attrs=attrs or {})
        return out

    paddle.multiply = lambda x, y, name=None: legacy("elementwise_mul", x, y, {"axis": -1})
    paddle.nn.functional.sigmoid = lambda x, name=None: legacy("sigmoid", x)
    paddle.nn.Sigmoid.forward = lambda self, x: legacy("sigmoid", x)
    from paddleclas.ppcls.arch.backbone.legendary_models import pp_lcnet, pp_lcnet_v2

    which, out = sys.argv[1], sys.argv[2]
    paddle.enable_static()
    with paddle.pir_utils.OldIrGuard():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            if which == "v1_pulc":
                m = pp_lcnet.PPLCNet_x0_25(class_num=4, use_last_conv=False,
                                           stride_list=[2, [2, 1], [2, 1], [2, 1], [2, 1]])
                hw = (80, 160)
            else:  # not re-parameterized: the rep branches stay separate in the program
                m = pp_lcnet_v2.PPLCNetV2_small(class_num=10)
                hw = (64, 64)
            m.eval()
            x = paddle.static.data("x", [None, 3, *hw], "float32")
            y = m(x)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        rng = np.random.default_rng(0)
        scope = paddle.static.global_scope()
        for var in main.list_vars():  # random weights and BN statistics
            if not var.persistable or var.name in ("feed", "fetch"):
                continue
            t = scope.find_var(var.name).get_tensor()
            shape = tuple(np.array(t).shape)
            if var.name.endswith(".w_2"):
                v = rng.uniform(0.5, 2.0, shape)
            elif len(shape) == 4:
                v = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
            elif len(shape) == 2:
                v = rng.normal(0, np.sqrt(1.0 / shape[0]), shape)
            else:
                v = rng.normal(0.5 if var.name.endswith(".w_0") else 0.0, 0.2, shape)
            t.set(v.astype("float32"), paddle.CPUPlace())
        paddle.static.save_inference_model(out + "/inference", [x], [y], exe, program=main)
''')


@pytest.fixture(scope="module", params=["v1_pulc", "v2_small"])
def legacy_case(request, tmp_path_factory) -> dict[str, Any]:
    pytest.importorskip("paddleclas")
    folder = tmp_path_factory.mktemp(f"legacy_{request.param}")
    proc = subprocess.run([sys.executable, "-c", _LEGACY_SCRIPT, request.param, str(folder)],
                          capture_output=True, text=True, timeout=120, env=_env(FLAGS_enable_pir_api="0"))
    pdmodel = folder / "inference.pdmodel"
    if proc.returncode != 0 or not pdmodel.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"legacy .pdmodel export failed in this Paddle: {last}")
    hw = (80, 160) if request.param == "v1_pulc" else (64, 64)
    x = np.random.default_rng(2).normal(0, 1, (3, 3, *hw)).astype(np.float32)
    return {"name": request.param, "pdmodel": pdmodel, "hw": hw, "x": x, "ref": paddle_infer(pdmodel, x)}


def _env(**extra: str) -> dict[str, str]:
    import os

    return {**os.environ, **extra}


@pytest.mark.paddleclas
def test_atomic_ir_publishes_both_files_or_nothing(tmp_path) -> None:
    """The IR writer's temp-then-rename (lcpipe.fileio.atomic_ir): a failed save leaves no file."""
    from lcpipe.fileio import atomic_ir

    out = tmp_path / "ir" / "model.xml"
    with pytest.raises(RuntimeError), atomic_ir(out) as tmp:
        tmp.write_text("<net/>")
        raise RuntimeError("save failed after the xml")
    assert list(out.parent.iterdir()) == []
    with atomic_ir(out) as tmp:
        tmp.write_text("<net/>")
        tmp.with_suffix(".bin").write_bytes(b"w")
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.bin", "model.xml"]


def test_legacy_pdmodel_openvino_frontend(legacy_case, tmp_path) -> None:
    import openvino as ov

    xml = convert_with_openvino_frontend(legacy_case["pdmodel"], tmp_path / "ov" / "model.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir()) == ["model.bin", "model.xml"]  # no temp left
    # f32 explicitly: on CPUs with bf16/AMX OpenVINO otherwise runs in bf16 (~2e-3 off).
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(legacy_case["x"])[0]
    diff = assert_logits_close(legacy_case["ref"], got, "OpenVINO Paddle frontend vs Paddle Inference")
    print(f"legacy {legacy_case['name']}: OpenVINO frontend max abs diff {diff:.3e}")


@pytest.mark.paddleclas
def test_legacy_pdmodel_paddle2onnx_and_canonical(legacy_case, tmp_path) -> None:
    cm, onnx_path, meta = import_paddle_inference(legacy_case["pdmodel"], work_dir=tmp_path)
    assert meta["format"] == "paddle2_pdmodel"
    assert cm is not None, meta["adopted_reason"]
    assert_tensors_complete(cm)
    if cm.spec.family == "v2":
        assert not cm.spec.rep_fused  # the branches were saved unfused
    x, ref = legacy_case["x"], legacy_case["ref"]
    assert_logits_close(ref, ort_logits(onnx_path, x), "paddle2onnx route (.pdmodel)")
    out = export_canonical(cm, tmp_path / "m.onnx", legacy_case["hw"], softmax=False)
    assert_logits_close(ref, ort_logits(out, x), "canonical (.pdmodel) -> fuse -> export")


# ---------------------------------------------------------------- inputs that must fail cleanly

def _copy_textline(dst: Path, skip: str | None = None) -> Path:
    dst.mkdir(parents=True)
    for f in ("inference.json", "inference.pdiparams", "inference.yml"):
        if f != skip:
            (dst / f).write_bytes((TEXTLINE / f).read_bytes())
    return dst


def test_missing_pdiparams_names_folder_and_file(tmp_path) -> None:
    folder = _copy_textline(tmp_path / "m", skip="inference.pdiparams")
    with pytest.raises(InputError) as err:
        import_paddle_inference(folder, work_dir=tmp_path / "w")
    assert str(folder) in str(err.value) and "inference.pdiparams" in str(err.value)


@pytest.mark.paddleclas
def test_truncated_pdmodel(legacy_case, tmp_path) -> None:
    # Without the Python-side parse, Paddle's C++ loader would end the process (exit 255).
    folder = tmp_path / "m"
    folder.mkdir()
    data = legacy_case["pdmodel"].read_bytes()
    (folder / "inference.pdmodel").write_bytes(data[: len(data) // 3])
    (folder / "inference.pdiparams").write_bytes(legacy_case["pdmodel"].with_suffix(".pdiparams").read_bytes())
    with pytest.raises(InputError, match="truncated"):
        import_paddle_inference(folder, work_dir=tmp_path / "w")
    with pytest.raises(InputError, match="truncated"):
        convert_with_openvino_frontend(folder / "inference.pdmodel", tmp_path / "ov.xml")


@pytest.mark.parametrize("victim", ["inference.json", "inference.pdiparams"])
def test_truncated_paddle3_files(tmp_path, victim) -> None:
    folder = _copy_textline(tmp_path / "m")
    data = (folder / victim).read_bytes()
    (folder / victim).write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="truncated") as err:
        import_paddle_inference(folder, work_dir=tmp_path / "w")
    assert str(folder) in str(err.value)


def test_missing_program_file(tmp_path) -> None:
    folder = _copy_textline(tmp_path / "m", skip="inference.json")
    with pytest.raises(InputError, match=r"inference\.json.*pdmodel"):
        locate_inference_files(folder)


def test_file_inside_folder_is_accepted(tmp_path) -> None:
    folder = _copy_textline(tmp_path / "m")
    files = locate_inference_files(folder / "inference.pdiparams")
    assert files.model.name == "inference.json" and files.kind == "paddle3_pir" and files.yml is not None


def test_openvino_frontend_rejects_paddle3_json(tmp_path) -> None:
    with pytest.raises(InputError, match="cannot read Paddle 3 PIR"):
        convert_with_openvino_frontend(TEXTLINE / "inference.json", tmp_path / "m.xml")


def test_low_opset_refused(tmp_path) -> None:
    with pytest.raises(InputError, match="opset 13"):
        import_paddle_inference(TEXTLINE, opset=13, work_dir=tmp_path)


def test_inference_yml_resize_short_crop(tmp_path) -> None:
    yml = tmp_path / "inference.yml"
    yml.write_text(textwrap.dedent("""
        PreProcess:
          transform_ops:
          - ResizeImage: {resize_short: 256}
          - CropImage: {size: 224}
          - NormalizeImage: {scale: 0.00392156862745098, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], order: ''}
          - ToCHWImage: null
        PostProcess:
          Topk: {topk: 5, class_id_map_file: ppcls/utils/imagenet1k_label_list.txt}
    """))
    got = read_inference_yml(yml)
    assert got["preprocess"] == {"mode": "paddleclas", "resize_short": 256, "crop": 224,
                                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert got["class_id_map_file"].endswith("imagenet1k_label_list.txt") and "label_names" not in got
