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


@pytest.mark.parametrize("layout", ["new", "old"])
def test_predict_serves_a_bundle_folder_in_either_file_layout(textline_irs: dict[str, Path], tmp_path: Path,
                                                              layout: str) -> None:
    """A bundle folder: its shipped image-input model, model_image.xml, or model_int8_image.xml in bundles
    written before the files were named for what they are; an .xml path works in both layouts."""
    import shutil

    from click.testing import CliRunner

    from lcpipe.cli import cli
    from lcpipe.deploy.image_input import write_image_input_ir
    from lcpipe.errors import InputError
    from lcpipe.predict import predict

    stem = {"new": "model", "old": "model_int8"}[layout]
    bundle = tmp_path / "deploy"
    bundle.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copyfile(textline_irs["fp32"].with_suffix(suffix), bundle / f"{stem}{suffix}")
    write_image_input_ir(bundle / f"{stem}.xml", bundle / f"{stem}_image.xml")
    lines = sorted((helpers.TEXT_LINES / "lines").glob("*"))[:3]
    via_folder, via_float = predict(bundle, lines, top_k=2), predict(bundle / f"{stem}.xml", lines, top_k=2)
    assert [p.top[0][0] for p in via_folder] == [p.top[0][0] for p in via_float]
    res = CliRunner().invoke(cli, ["predict", str(bundle), str(lines[0]), "--top-k", "2"])
    assert res.exit_code == 0 and res.output.count("%") == 2, res.output
    (bundle / f"{stem}_image.xml").unlink()  # the float-input model is served when the image one is gone
    assert [p.top[0][0] for p in predict(bundle, lines, top_k=2)] == [p.top[0][0] for p in via_float]
    with pytest.raises(InputError, match="not a deploy bundle"):
        predict(tmp_path, lines)


def test_predict_json_times_the_first_answer_and_uses_the_model_cache(textline_irs: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    """`predict --json`: one document with the predictions and read/compile/first-inference ms; with
    --cache-dir the first call stores the compiled model there and the second imports it (OpenVINO's
    LOADED_FROM_CACHE), with the same probabilities."""
    from click.testing import CliRunner

    from lcpipe.cli import cli

    line = str(sorted((helpers.TEXT_LINES / "lines").glob("*"))[0])
    cache = tmp_path / "ov cache"

    def run(*extra: str) -> dict:
        res = CliRunner().invoke(cli, ["predict", str(textline_irs["fp32"]), line, "--top-k", "2", "--json", *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    plain, first, second = run(), run("--cache-dir", str(cache)), run("--cache-dir", str(cache))
    want = plain["predictions"][0]["top"]
    for doc in (plain, first, second):
        assert doc["read_ms"] > 0 and doc["compile_ms"] > 0 and doc["first_inference_ms"] > 0
        top = doc["predictions"][0]["top"]
        assert [t["index"] for t in top] == [t["index"] for t in want]
        np.testing.assert_allclose([t["probability"] for t in top], [t["probability"] for t in want], atol=1e-6)
    assert plain["model_cache"] == {"dir": None, "loaded_from_cache": False}
    assert first["model_cache"] == {"dir": str(cache), "loaded_from_cache": False} and any(cache.iterdir())
    assert second["model_cache"] == {"dir": str(cache), "loaded_from_cache": True}
    (tmp_path / "a file").write_text("")
    res = CliRunner().invoke(cli, ["predict", str(textline_irs["fp32"]), line, "--cache-dir", str(tmp_path / "a file")])
    assert res.exit_code == 2 and "is a file" in res.output  # click's check; the library says it too:
    from lcpipe.errors import InputError
    from lcpipe.predict import predict

    with pytest.raises(InputError, match="--cache-dir .*a file: not a folder"):
        predict(textline_irs["fp32"], [line], cache_dir=tmp_path / "a file")


@pytest.mark.parametrize("mode", ["paddleclas", "resize"])
def test_resize_in_the_graph_is_cv2s_resize_within_one_pixel_level(mode: str) -> None:
    """An identity network: the image-input IR with resize + crop in the graph outputs the pixels it would
    feed the model. Against cv2's uint8 resize/crop on real images at many sizes: at most one level apart."""
    import cv2
    import openvino as ov
    import openvino.opset13 as ops

    from lcpipe.data.preprocess import preprocess_dict
    from lcpipe.deploy.image_input import build_image_input_model

    cfg = MODES[mode]
    rng = np.random.default_rng(0)
    images = [decode_image_bgr(p) for p in _real_images(8)]
    images += [cv2.resize(img, (int(rng.integers(230, 700)), int(rng.integers(230, 700)))) for img in images]
    h, w = cfg.input_hw
    x = ops.parameter([1, 3, h, w], np.float32)
    pre = {**preprocess_dict(cfg), "mean": [0.0] * 3, "std": [1 / 255] * 3}  # the graph's float = the pixel
    model = build_image_input_model(ov.Model([ops.multiply(x, np.float32(1))], [x]), pre, resize_in_graph=True)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for img in images:
        want = resize_crop(img, cfg)[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)
        got = compiled(np.ascontiguousarray(img[None]))[0][0]
        assert got.shape == want.shape and np.abs(got - want).max() <= 1.0
    assert len({img.shape for img in images}) > 8


def test_resize_in_the_graph_keeps_every_top1_of_the_real_textline_model(textline_irs: dict[str, Path]) -> None:
    import openvino as ov

    import lcpipe
    from lcpipe.data import load_split
    from lcpipe.deploy.image_input import write_image_input_ir
    from lcpipe.errors import ConfigError
    from lcpipe.ir import read_lcpipe_rt_info
    from lcpipe.measure.e2e import resize_in_graph_fidelity
    from lcpipe.predict import predict

    config = lcpipe.load_config(helpers.textline_yaml(textline_irs["root"] / "fid.yaml"))
    samples = load_split(config.data, "eval", config.preprocess, None, progress=False).samples[:24]
    fid = resize_in_graph_fidelity(textline_irs["fp32"], samples, config.preprocess, 2, "f32")
    assert fid["same_top1"] and fid["distinct_input_sizes"] > 5
    assert 0 < fid["max_abs_logit_diff"] < 0.5  # close (pixels one level apart), not bit-exact
    xml = write_image_input_ir(textline_irs["fp32"], textline_irs["root"] / "rig" / "model_image.xml",
                               resize_in_graph=True)
    pre = read_lcpipe_rt_info(ov.Core().read_model(str(xml)))["preprocess"]
    assert pre["resize_in_graph"] and pre["outside_graph"] == "decode (cv2); any image size"
    lines = sorted((helpers.TEXT_LINES / "lines").glob("*"))[:4]
    assert [p.top[0][0] for p in predict(xml, lines)] == [p.top[0][0] for p in predict(textline_irs["fp32"], lines)]
    with pytest.raises(ConfigError, match="resize_in_graph: preprocess mode 'timm'"):
        from lcpipe.deploy.resize_in_graph import resize_crop_step

        resize_crop_step({"mode": "timm", "interpolation": "bicubic", "resize_short": 256, "crop": 224})


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
    # the baseline (FP32 IR at the plugin default + Python preprocessing) ran in the same rounds
    base = "fp32_py_default" if m["default_precision"] != m["inference_precision"]["fp32"] else "fp32_py"
    routes = m["latency_ms"]["e2e"]
    assert m["shipped"]["baseline_e2e_p50_ms"] == routes[base]["p50"]
    assert len(routes[base]["round_p50"]) == len(routes["int8_image"]["round_p50"]) == 2
    assert m["speedup"]["e2e_latency_p50_vs_default"] == m["shipped"]["speedup_vs_default_e2e_p50"] > 0
    gates = {g["name"]: g for g in m["gates"]}
    assert gates["min_e2e_latency_speedup"]["value"] == m["speedup"]["e2e_latency_p50_vs_default"]
    assert gates["min_e2e_throughput_speedup"]["value"] == m["speedup"]["e2e_throughput_vs_default"]
    assert gates["min_e2e_latency_speedup"]["baseline"].startswith(f"FP32 IR at {m['default_precision']}")
    assert "End to end" in (run.run_dir / "report.md").read_text()
    deploy = run.run_dir / "deploy"
    assert "model_image.xml" in (deploy / "README.txt").read_text()
    pre = json.loads((deploy / "preprocess.json").read_text())
    assert pre["dtype"] == "float32" and pre["image_input_ir"]["dtype"] == "uint8"
    lines = sorted((helpers.TEXT_LINES / "lines").glob("*"))[:4]
    via_image, via_float = predict(deploy / "model_image.xml", lines), predict(deploy / "model.xml", lines)
    assert [p.top[0][0] for p in via_image] == [p.top[0][0] for p in via_float]
