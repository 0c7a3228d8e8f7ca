"""Proof against PaddleClas: the exported ONNX computes what PaddleClas's own model computes.

Each model is built with PaddleClas, its BatchNorm statistics and affine terms (and every
bias) randomized so that folding is really exercised, saved with ``paddle.save`` and run
through the YAML pipeline import -> fuse -> export. ONNX Runtime logits on real images must
match Paddle's eval-mode forward: max abs diff <= 1e-4 x max(1, max |logit|), same argmax.
"""

from __future__ import annotations

import helpers
import numpy as np
import pytest

pytestmark = pytest.mark.paddleclas
pytest.importorskip("paddle")
pytest.importorskip("paddleclas")

V2_CASES = ["v2_small", "v2_base", "v2_large", "v2_small_hardswish"]
V2_DEPTHS = {"PPLCNetV2_small": (2, 2, 4, 2), "PPLCNetV2_base": (2, 2, 6, 2), "PPLCNetV2_large": (2, 2, 8, 2)}


@pytest.mark.parametrize("case", list(helpers.PADDLE_CASES))
def test_onnx_logits_equal_paddleclas_forward(case, paddleclas_export, image_paths, record_property) -> None:
    ex = paddleclas_export(case)
    x = helpers.load_batch(image_paths["test"], ex.pre)
    ref = helpers.paddle_logits(ex.reference, x)
    got = helpers.ort_logits(ex.onnx, x)
    diff = helpers.assert_logits_close(ref, got, f"{case} ONNX vs PaddleClas")
    record_property("max_abs_diff", diff)
    record_property("max_abs_logit", float(np.abs(ref).max()))


@pytest.mark.parametrize("case", list(helpers.PADDLE_CASES))
def test_exported_graph_is_fully_fused(case, paddleclas_export) -> None:
    import onnx

    ex = paddleclas_export(case)
    m = onnx.load(str(ex.onnx))
    ops = {n.op_type for n in m.graph.node}
    assert "BatchNormalization" not in ops
    assert "Sum" not in ops  # V2 rep branches merged
    assert "dropout" not in {n.name for n in m.graph.node}  # x(1 - p) folded into fc
    dims = [d.dim_value or d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, *ex.pre.input_hw]
    out_dims = [d.dim_value or d.dim_param for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", ex.reference.fc.weight.shape[1]]


def test_randomized_bn_is_not_trivial(paddleclas_export) -> None:
    """Guard for the proof itself: BN stats far from (0, 1) and the random net input-sensitive."""
    import paddle

    ex = paddleclas_export("x1_0")
    bns = [m for m in ex.reference.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    assert all(float(np.abs(b._variance.numpy() - 1).max()) > 0.1 for b in bns)
    assert all(float(np.abs(b._mean.numpy()).max()) > 0.05 for b in bns)


@pytest.mark.parametrize("case", ["x1_0", "v2_base"])
def test_dropout_scale_folded_into_fc_weight_not_bias(case, paddleclas_export) -> None:
    ex = paddleclas_export(case)
    with np.load(ex.run_dir / "fuse" / "canonical" / "tensors.npz") as z:
        fc_w, fc_b = z["fc.weight"], z["fc.bias"]
    ref_w = ex.reference.fc.weight.numpy().T  # Paddle Linear is [in, out]
    np.testing.assert_allclose(fc_w, ref_w * np.float32(0.8), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(fc_b, ex.reference.fc.bias.numpy())


def _paddleclas_reparameterized(ex: helpers.Exported, case: helpers.PaddleCase):
    import paddle
    from paddleclas.ppcls.arch.backbone.legendary_models import pp_lcnet_v2

    model = getattr(pp_lcnet_v2, case.arch)(pretrained=False, **dict(case.kwargs))
    missing, unexpected = model.set_state_dict(paddle.load(str(ex.weights)))
    assert not missing and not unexpected
    model.eval()
    n = helpers.paddle_reparameterize(model)
    return model, n


@pytest.mark.parametrize("case", V2_CASES)
def test_v2_fused_tensors_equal_paddleclas_re_parameterize(case, paddleclas_export, image_paths,
                                                           record_property) -> None:
    ex = paddleclas_export(case)
    theirs_model, n_rep = _paddleclas_reparameterized(ex, helpers.PADDLE_CASES[case])
    depths = V2_DEPTHS[helpers.PADDLE_CASES[case].arch]
    assert n_rep == depths[2] + depths[3]  # stage3 and stage4 blocks are re-parameterizable
    theirs = {k: v.numpy() for k, v in theirs_model.state_dict().items()}
    with np.load(ex.run_dir / "fuse" / "canonical" / "tensors.npz") as z:
        ours = {k: z[k] for k in z.files}
    rep_names = sorted(k for k in ours if k.startswith(("stages.2.", "stages.3.")) and ".dw_conv." in k
                       and ".conv." not in k)
    assert len(rep_names) == 2 * n_rep  # weight + bias per block
    worst = 0.0
    for name in rep_names:
        a, b = ours[name], theirs[name]
        assert a.shape == b.shape, name
        tol = 1e-5 * max(1.0, float(np.abs(b).max()))
        d = float(np.abs(a.astype(np.float64) - b).max())
        assert d <= tol, f"{name}: ours vs re_parameterize() differ by {d:.3e}"
        worst = max(worst, d)
    record_property("max_fused_tensor_diff", worst)
    # and the re-parameterized PaddleClas model agrees with our ONNX on real images
    x = helpers.load_batch(image_paths["test"], ex.pre)
    ref = helpers.paddle_logits(theirs_model, x)
    diff = helpers.assert_logits_close(ref, helpers.ort_logits(ex.onnx, x), f"{case} ONNX vs re_parameterize()")
    record_property("max_abs_diff_vs_reparameterized", diff)


def test_paddleclas_net_config_left_pristine(paddleclas_export) -> None:
    """Building the PULC variant must not leak (2, 1) strides into later PaddleClas builds."""
    from paddleclas.ppcls.arch.backbone.legendary_models import pp_lcnet

    paddleclas_export("pulc_x0_25")
    assert [pp_lcnet.NET_CONFIG[f"blocks{i}"][0][3] for i in range(3, 7)] == [2, 2, 2, 2]
