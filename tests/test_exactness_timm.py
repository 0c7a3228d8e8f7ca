"""Proof against timm: lcnet_050/075/100 (random init, no hub), BN randomized, saved as .pth and
.safetensors, imported, fused, exported; ONNX Runtime logits on real images equal timm's."""

from __future__ import annotations

import helpers
import numpy as np
import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
pytest.importorskip("timm")

NAMES = ["lcnet_050", "lcnet_075", "lcnet_100"]
ARCH = {"lcnet_050": "PPLCNet_x0_5", "lcnet_075": "PPLCNet_x0_75", "lcnet_100": "PPLCNet_x1_0"}


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
@pytest.mark.parametrize("name", NAMES)
def test_onnx_logits_equal_timm_forward(name, fmt, timm_export, image_paths, record_property) -> None:
    ex = timm_export(name, fmt)
    x = helpers.load_batch(image_paths["test"], ex.pre)
    ref = helpers.torch_logits(ex.reference, x)
    got = helpers.ort_logits(ex.onnx, x)
    diff = helpers.assert_logits_close(ref, got, f"{name} ({fmt}) ONNX vs timm")
    record_property("max_abs_diff", diff)
    record_property("max_abs_logit", float(np.abs(ref).max()))


@pytest.mark.parametrize("name", NAMES)
def test_timm_arch_detected_and_head_kept_unscaled(name, timm_export) -> None:
    import json

    ex = timm_export(name, "torch")
    info = json.loads((ex.run_dir / "import" / "model_info.json").read_text())
    spec = info["spec"]
    assert spec["arch"] == ARCH[name]
    assert spec["last_conv_bias"] is True
    assert spec["dropout_downscale_in_infer"] is False  # torch dropout is identity at inference
    with np.load(ex.run_dir / "fuse" / "canonical" / "tensors.npz") as z:
        np.testing.assert_array_equal(z["fc.weight"], ex.reference.classifier.weight.detach().numpy())
        np.testing.assert_array_equal(z["last_conv.bias"], ex.reference.conv_head.bias.detach().numpy())


@pytest.mark.parametrize("name", NAMES)
def test_pth_and_safetensors_give_the_same_model(name, timm_export) -> None:
    a = timm_export(name, "torch").run_dir / "fuse" / "canonical" / "tensors.npz"
    b = timm_export(name, "safetensors").run_dir / "fuse" / "canonical" / "tensors.npz"
    assert a.read_bytes() == b.read_bytes()
