"""ONNX sources: adopt as is (checks, softmax strip, dynamic batch) and the PP-LCNet graph reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import ort_logits
from onnx import TensorProto, helper, numpy_helper

from lcpipe.errors import InputError
from lcpipe.importers.onnx_adopt import adopt_onnx
from lcpipe.importers.onnx_rebuild import canonical_from_onnx
from lcpipe.models.layers import expected_shapes
from lcpipe.models.spec import CanonicalModel, ModelSpec


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def tiny_classifier(batch: int | str = "N", softmax: bool = True, reshape_batch: int | None = None,
                    channels: int = 3) -> onnx.ModelProto:
    """conv -> relu -> GAP -> flatten -> Gemm [-> Softmax]: a classifier that is no PP-LCNet."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, channels, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.5, (5, 4)).astype(np.float32), "fc")
    fcb = numpy_helper.from_array(rng.normal(0, 0.5, (5,)).astype(np.float32), "fcb")
    inits = [w, fc, fcb]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"])]
    if reshape_batch is None:
        nodes.append(helper.make_node("Flatten", ["p"], ["f"], axis=1))
    else:  # batch baked into a constant shape, as some exporters do
        inits.append(numpy_helper.from_array(np.array([reshape_batch, -1], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["p", "shape"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits" if not softmax else "z"], transB=1))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["prob"], axis=-1))
    out_name = "prob" if softmax else "logits"
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, 8, 8])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# ---------------------------------------------------------------- adopt_onnx

def test_adopt_strips_softmax_and_keeps_output_name(tmp_path) -> None:
    src = _save(tiny_classifier(), tmp_path / "in.onnx")
    meta = adopt_onnx(src, out_path=tmp_path / "out.onnx")
    assert meta["softmax_stripped"] and meta["output_names"] == ["prob"] and meta["input_shape"][1:] == [3, 8, 8]
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    logits = ort_logits(tmp_path / "out.onnx", x)
    probs = ort_logits(src, x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), probs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits.sum(1), 1.0)  # really logits now


def test_adopt_keeps_softmax_when_asked(tmp_path) -> None:
    meta = adopt_onnx(_save(tiny_classifier(), tmp_path / "in.onnx"), strip_softmax=False, out_path=tmp_path / "o.onnx")
    assert not meta["softmax_stripped"]
    assert [n.op_type for n in onnx.load(str(tmp_path / "o.onnx")).graph.node][-1] == "Softmax"


def test_adopt_makes_fixed_batch_dynamic(tmp_path) -> None:
    meta = adopt_onnx(_save(tiny_classifier(batch=1), tmp_path / "in.onnx"), out_path=tmp_path / "o.onnx")
    assert meta["dynamic_batch"] and not isinstance(meta["input_shape"][0], int)
    x = np.zeros((3, 3, 8, 8), np.float32)
    assert ort_logits(tmp_path / "o.onnx", x).shape == (3, 5)


def test_adopt_refuses_dynamic_batch_when_reshape_bakes_it(tmp_path) -> None:
    meta = adopt_onnx(_save(tiny_classifier(batch=1, reshape_batch=1), tmp_path / "in.onnx"),
                      out_path=tmp_path / "o.onnx")
    assert meta["dynamic_batch"] is False and "Reshape" in meta["dynamic_batch_refused"]
    assert meta["input_shape"][0] == 1


def test_adopt_two_inputs_lists_them(tmp_path) -> None:
    model = tiny_classifier()
    model.graph.input.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]))
    path = _save(model, tmp_path / "two.onnx")
    with pytest.raises(InputError) as err:
        adopt_onnx(path, out_path=tmp_path / "o.onnx")
    msg = str(err.value)
    assert str(path) in msg and "found 2" in msg and "x float32" in msg and "scale float32" in msg
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("kind", ["one_channel", "rank2"])
def test_adopt_rejects_non_image_input(tmp_path, kind) -> None:
    if kind == "one_channel":
        model = tiny_classifier(channels=1)
    else:
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InputError, match="4-D float32 NCHW tensor with 3 channels"):
        adopt_onnx(_save(model, tmp_path / "m.onnx"), out_path=tmp_path / "o.onnx")


def test_adopt_truncated_file(tmp_path) -> None:
    data = tiny_classifier().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.onnx"):
        adopt_onnx(path, out_path=tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_adopt_garbage_and_missing_file(tmp_path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(InputError, match="junk.onnx"):
        adopt_onnx(tmp_path / "junk.onnx", out_path=tmp_path / "o.onnx")
    with pytest.raises(InputError, match="no such ONNX file"):
        adopt_onnx(tmp_path / "nope.onnx", out_path=tmp_path / "o.onnx")


# ---------------------------------------------------------------- canonical_from_onnx

def random_canonical(spec: ModelSpec, seed: int = 0) -> CanonicalModel:
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(spec).items():
        if name.endswith("_variance"):
            v = rng.uniform(0.5, 2.0, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            v = rng.normal(0, np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.2, shape)
        tensors[name] = v.astype(np.float32)
    return CanonicalModel(spec, tensors)


SPECS = {
    "v1_pulc": ModelSpec("PPLCNet_x0_25", class_num=2, use_last_conv=False,
                         stride_list=((1, 2), (2, 1), (2, 1), (2, 1), (2, 1))),
    "v1_relu6": ModelSpec("PPLCNet_x0_5", class_num=3, act="relu6", class_expand=256),
    "v2_unfused": ModelSpec("PPLCNetV2_small", class_num=4, act="relu", class_expand=320),
    "v2_fused_bn_folded": ModelSpec("PPLCNetV2_small", class_num=4, act="relu", rep_fused=True, bn_folded=True),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_reader_round_trips_lcpipe_export(tmp_path, name) -> None:
    export = pytest.importorskip("lcpipe.export.onnx_export")
    cm = random_canonical(SPECS[name])
    path = export.export_onnx(cm, tmp_path / "m.onnx", opset=17, input_hw=(32, 64), softmax=True)
    back, info = canonical_from_onnx(onnx.load(str(path)))
    assert back is not None, info["adopted_reason"]
    assert info["softmax"] is True
    assert back.spec == cm.spec.replace(source_format="onnx")
    assert set(back.tensors) == set(cm.tensors)
    for k, v in cm.tensors.items():
        np.testing.assert_array_equal(back.tensors[k], v, err_msg=k)


def test_reader_adopts_foreign_graph() -> None:
    cm, info = canonical_from_onnx(tiny_classifier())
    assert cm is None and "not a PP-LCNet" in info["adopted_reason"]


def test_reader_explicit_arch_mismatch_is_an_error(tmp_path) -> None:
    export = pytest.importorskip("lcpipe.export.onnx_export")
    path = export.export_onnx(random_canonical(SPECS["v1_relu6"]), tmp_path / "m.onnx", input_hw=(32, 32))
    with pytest.raises(InputError, match="PPLCNet_x0_5"):
        canonical_from_onnx(onnx.load(str(path)), arch="PPLCNet_x1_0")


def test_reader_warns_when_options_disagree_with_graph(tmp_path) -> None:
    export = pytest.importorskip("lcpipe.export.onnx_export")
    spec = SPECS["v1_pulc"]
    path = export.export_onnx(random_canonical(spec), tmp_path / "m.onnx", input_hw=(80, 160))
    cm, info = canonical_from_onnx(onnx.load(str(path)),
                                   options={"stride_list": [2, [2, 1], [2, 1], [2, 1], [2, 1]], "class_num": 2})
    assert cm is not None and cm.spec.stride_list == spec.stride_list
    assert len(info["warnings"]) == 1 and "stride_list" in info["warnings"][0]
