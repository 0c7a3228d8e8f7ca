"""Image-input IR (uint8 BGR in, normalization in the graph) and end-to-end measurement, on real
OpenVINO with real images from the repo's calib_data."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import numpy as np
import pytest

from lcpipe.config import PreprocessConfig
from lcpipe.data.preprocess import decode_image, decode_image_bgr, preprocess_array, resize_crop

PIPELINES = helpers.REPO / "pipelines"
MODES = {
    "paddleclas": PreprocessConfig(mode="paddleclas", resize_short=256, crop=224),
    "timm": PreprocessConfig(mode="timm", crop=224, crop_pct=0.875, interpolation="bicubic"),
    "resize": PreprocessConfig(mode="resize", size=(80, 160)),
}


def _real_images(n: int) -> list[Path]:
    imagenet = helpers.real_image_paths(n // 2)
    lines = sorted((helpers.TEXT_LINES / "lines").glob("*"))[: n - len(imagenet)]
    paths = [*imagenet, *lines]
    if len(paths) < n:
        pytest.skip("real images not available in calib_data")
    return paths


@pytest.mark.parametrize("mode", list(MODES))
def test_uint8_resize_crop_is_the_float_paths_first_step_in_either_channel_order(mode: str) -> None:
    """The image-input route resizes BGR, the float path RGB: the crops must be the same pixels."""
    pre = MODES[mode]
    for path in _real_images(6):
        rgb, bgr = decode_image(path), decode_image_bgr(path)
        np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
        crop_rgb, crop_bgr = resize_crop(rgb, pre), resize_crop(bgr, pre)
        assert crop_rgb.dtype == np.uint8 and crop_rgb.shape == (*pre.input_hw, 3)
        np.testing.assert_array_equal(crop_bgr, crop_rgb[:, :, ::-1])
        # the float path = that crop, normalized (PaddleClas NormalizeImage order and dtypes)
        m, s = np.float32(pre.mean).reshape(1, 1, 3), np.float32(pre.std).reshape(1, 1, 3)
        expected = ((crop_rgb.astype(np.float32) * np.float32(1 / 255) - m) / s).transpose(2, 0, 1)
        np.testing.assert_array_equal(preprocess_array(rgb, pre), expected)


@pytest.fixture(scope="module")
def v1_irs(tmp_path_factory: pytest.TempPathFactory, image_paths: dict[str, list[Path]]) -> dict[str, Path]:
    """PaddleClas PP-LCNet x0.25 (random weights, BN statistics from real images, so logits depend on
    the input) through the real pipeline to the FP32 IR (paddleclas resize_short 256 / crop 224)."""
    pytest.importorskip("paddleclas")
    import lcpipe

    root = tmp_path_factory.mktemp("v1ir")
    pre = MODES["paddleclas"]
    model = helpers.build_paddleclas("PPLCNet_x0_25", helpers.load_batch(image_paths["calib"], pre))
    weights = helpers.save_pdparams(model, root / "PPLCNet_x0_25.pdparams")
    run = lcpipe.run_pipeline(PIPELINES / "v1_int8.yaml", out=root / "run", until="convert",
                              overrides=["model.arch=PPLCNet_x0_25", "model.options.class_expand=1280",
                                         "model.source.url=null", f"model.source.path={weights}"])
    return {"fp32": Path(run.artifacts["ir_fp32"]), "root": root}


@pytest.fixture(scope="module")
def textline_irs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped real textline model (resize 80x160) to its FP32 IR."""
    import lcpipe

    root = tmp_path_factory.mktemp("tlir")
    yaml = helpers.textline_yaml(root / "tl.yaml")
    run = lcpipe.run_pipeline(yaml, out=root / "run", until="convert")
    return {"fp32": Path(run.artifacts["ir_fp32"]), "root": root}


def _float_vs_image_logits(xml: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    import openvino as ov

    from lcpipe.deploy.image_input import read_image_input_model
    from lcpipe.ir import read_lcpipe_rt_info
    from lcpipe.predict import preprocess_from_dict

    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
    float_model = core.read_model(str(xml))
    pre = preprocess_from_dict(read_lcpipe_rt_info(float_model)["preprocess"])
    image_model, image_pre = read_image_input_model(xml)
    assert image_pre["dtype"] == "uint8" and image_pre["layout"] == "NHWC" and image_pre["color"] == "BGR"
    assert image_model.inputs[0].get_element_type() == ov.Type.u8
    assert list(image_model.inputs[0].get_partial_shape().to_shape())[1:] == [*pre.input_hw, 3]
    cf, ci = core.compile_model(float_model, "CPU", f32), core.compile_model(image_model, "CPU", f32)
    ref = np.stack([cf(preprocess_array(decode_image(p), pre)[None])[0][0] for p in paths])
    got = np.stack([ci(np.ascontiguousarray(resize_crop(decode_image_bgr(p), pre)[None]))[0][0] for p in paths])
    return ref, got


def test_fp32_image_input_ir_matches_float_ir_paddleclas_crop(v1_irs: dict[str, Path]) -> None:
    ref, got = _float_vs_image_logits(v1_irs["fp32"], helpers.real_image_paths(12, offset=16))
    # the logits depend on the image far beyond the tolerance (1e-4 here): the comparison can fail
    assert np.abs(ref - ref[0]).max() > 1e-2
    helpers.assert_logits_close(ref, got, "image-input FP32 IR vs float IR (paddleclas)")


def test_fp32_image_input_ir_matches_float_ir_real_textline_model(textline_irs: dict[str, Path]) -> None:
    lines = sorted((helpers.TEXT_LINES / "lines").glob("*"))[:16]
    ref, got = _float_vs_image_logits(textline_irs["fp32"], lines)
    helpers.assert_logits_close(ref, got, "image-input FP32 IR vs float IR (textline)")


def test_saved_image_input_ir_records_its_preprocessing_and_predict_agrees(textline_irs: dict[str, Path]) -> None:
    import openvino as ov

    from lcpipe.deploy.image_input import IN_GRAPH_STEPS, write_image_input_ir
    from lcpipe.ir import read_lcpipe_rt_info
    from lcpipe.predict import predict

    xml = write_image_input_ir(textline_irs["fp32"], textline_irs["root"] / "image" / "model_fp32_image.xml")
    model = ov.Core().read_model(str(xml))
    pre = read_lcpipe_rt_info(model)["preprocess"]
    assert pre["image_input"] is True and pre["in_graph"] == IN_GRAPH_STEPS and pre["dtype"] == "uint8"
    assert model.get_rt_info(["model_info", "embedded_processing"]).astype(str) == "True"
    lines = sorted((helpers.TEXT_LINES / "lines").glob("*"))[:6]
    via_image, via_float = predict(xml, lines, top_k=2), predict(textline_irs["fp32"], lines, top_k=2)
    for a, b in zip(via_image, via_float, strict=True):
        assert [i for i, _, _ in a.top] == [i for i, _, _ in b.top]
        np.testing.assert_allclose([p for *_, p in a.top], [p for *_, p in b.top], atol=1e-5)
        assert a.top[0][1] in ("0_degree", "180_degree")  # labels come along from rt_info


def test_image_input_ir_needs_lcpipe_preprocessing(tmp_path: Path) -> None:
    import openvino as ov
    import openvino.opset13 as ops

    from lcpipe.deploy.image_input import read_image_input_model
    from lcpipe.errors import InputError

    param = ops.parameter([1, 3, 8, 8], np.float32)
    ov.save_model(ov.Model([ops.relu(param)], [param], "bare"), str(tmp_path / "bare.xml"))
    with pytest.raises(InputError, match="no lcpipe preprocessing"):
        read_image_input_model(tmp_path / "bare.xml")


@pytest.mark.slow
def test_pipeline_reports_image_input_fidelity_and_e2e_routes(tmp_path: Path) -> None:
    """Real textline model through quantize -> validate -> report: the image-input IRs agree with the
    float IRs on the eval set, every end-to-end figure exists and is positive, the bundle serves images."""
    import lcpipe
    from lcpipe.measure.e2e import ROUTES
    from lcpipe.predict import predict

    yaml = helpers.textline_yaml(tmp_path / "tl.yaml", """
        - validate: {rounds: 2, iterations: 20, warmup: 2, throughput_seconds: 0.3, e2e_images: 8, progress: false}
        - report: {}
        - deploy: {}""")
    run = lcpipe.run_pipeline(yaml, out=tmp_path / "run", overrides=[
        "gates.min_e2e_latency_speedup=0.01", "gates.min_e2e_throughput_speedup=0.01"])
    m = json.loads((run.run_dir / "metrics.json").read_text())
    for tag in ("fp32", "int8"):
        c = m["accuracy"]["image_input"][tag]
        assert c["images"] == m["accuracy"]["images"] and c["same_top1"] and c["top1_agreement"] == 1.0
        assert c["top1"] == m["accuracy"][tag]["top1"]
    fp32 = m["accuracy"]["image_input"]["fp32"]
    assert fp32["rel_logit_diff"] <= helpers.REL_TOL  # max abs diff <= 1e-4 * max(1, max |logit|)
    for route in ROUTES:
        lat = m["latency_ms"]["e2e"][route]
        assert lat["p50"] > 0 and lat["p90"] >= lat["p50"]
        assert m["throughput_ips"]["e2e"][route] > 0
    assert m["speedup"]["e2e_latency_p50"] > 0 and m["speedup"]["e2e_throughput"] > 0
    assert m["decode_ms"]["p50"] > 0 and m["decode_ms"]["samples"] > 0
    gates = {g["name"]: g for g in m["gates"]}
    assert gates["min_e2e_latency_speedup"]["value"] == m["speedup"]["e2e_latency_p50"]
    assert gates["min_e2e_throughput_speedup"]["value"] == m["speedup"]["e2e_throughput"]
    assert "End to end" in (run.run_dir / "report.md").read_text()
    deploy = run.run_dir / "deploy"
    assert "model_int8_image.xml" in (deploy / "README.txt").read_text()
    pre = json.loads((deploy / "preprocess.json").read_text())
    assert pre["dtype"] == "float32" and pre["image_input_ir"]["dtype"] == "uint8"
    lines = sorted((helpers.TEXT_LINES / "lines").glob("*"))[:4]
    via_image, via_float = predict(deploy / "model_int8_image.xml", lines), predict(deploy / "model_int8.xml", lines)
    assert [p.top[0][0] for p in via_image] == [p.top[0][0] for p in via_float]
