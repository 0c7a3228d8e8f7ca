"""Per-layer sensitivity: layer groups from OpenVINO op names, ranking, and an ignored_scope
suggestion the quantize stage accepts as is."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import pytest
from click.testing import CliRunner

from lcpipe.cli import cli
from lcpipe.errors import ConfigError
from lcpipe.sensitivity import block_name, layer_groups, source_name

# The last block of the shipped text-line model and its classifier: a handful of layers.
INCLUDE = ("blocks6.1.*", "fc")


def test_groups_by_layer_and_block() -> None:
    nodes = ["conv1.conv/WithoutBiases", "blocks5.3.dw_conv.conv/WithoutBiases", "blocks5.3.pw_conv.conv/WithoutBiases",
             "blocks6.0.se.conv1/WithoutBiases", "last_conv", "fc/WithoutBiases"]
    assert source_name(nodes[1]) == "blocks5.3.dw_conv.conv" and block_name("blocks6.0.se.conv1") == "blocks6.0"
    by_layer = layer_groups(nodes, "layer")
    assert [g.name for g in by_layer] == ["conv1.conv", "blocks5.3.dw_conv.conv", "blocks5.3.pw_conv.conv",
                                          "blocks6.0.se.conv1", "last_conv", "fc"]
    assert by_layer[1].nodes == ["blocks5.3.dw_conv.conv/WithoutBiases"]  # what NNCF's ignored_scope matches
    by_block = layer_groups(nodes, "block", include=["blocks*"])
    assert [(g.name, len(g.nodes)) for g in by_block] == [("blocks5.3", 2), ("blocks6.0", 1)]
    with pytest.raises(ConfigError, match="matches no layer group"):
        layer_groups(nodes, "layer", include=["stem*"])


def _textline_yaml(path: Path) -> Path:
    return helpers.textline_yaml(path)


@pytest.mark.slow
def test_sensitivity_ranks_layers_and_suggests_a_valid_ignored_scope(tmp_path: Path) -> None:
    """Real text-line model (PP-LCNet x0.25), 16 calibration and 24 tune images (the tune part of the
    data.eval split: a ranking is a choice, it does not look at verdict images), 5 layer groups."""
    pytest.importorskip("nncf")
    import openvino as ov

    import lcpipe
    from lcpipe.quantization.graph import layer_ops, quantized_ops

    yaml = _textline_yaml(tmp_path / "tl.yaml")
    out = tmp_path / "sens"
    args = ["sensitivity", str(yaml), "--out", str(out), "--top", "2", "--images", "32"]  # capped at the 24
    res = CliRunner().invoke(cli, [*args, *(a for p in INCLUDE for a in ("--include", p))])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "sensitivity.json").read_text())

    groups = doc["groups"]
    assert sorted(g["group"] for g in groups) == sorted(
        ["blocks6.1.dw_conv.conv", "blocks6.1.se.conv1", "blocks6.1.se.conv2", "blocks6.1.pw_conv.conv", "fc"])
    assert [g["rank"] for g in groups] == list(range(1, len(groups) + 1))
    scores = [g["score"] for g in groups]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0  # something matters
    base = doc["baseline_int8"]
    for g in groups:  # leave-one-out: score = full-INT8 error minus the error with the group kept FP32
        assert g["score"] == pytest.approx(base["mse"] - g["mse"])
    assert doc["info"]["eval_images"] == 24 and doc["info"]["calib_images"] == 16
    assert doc["info"]["tune_from"] == "data.eval split"
    assert doc["accuracy_control"].startswith("skipped")

    scope = doc["ignored_scope"]
    top_nodes = [n for g in groups[:2] for n in g["nodes"]]
    assert scope == {"names": top_nodes}
    assert doc["suggested_int8"]["mse"] < base["mse"]  # keeping the two worst layers FP32 helps
    assert "ignored_scope" in res.output and json.dumps(scope) in res.output
    assert (out / "sensitivity.md").read_text().count("\n| ") >= len(groups) + 1

    # the suggestion is accepted verbatim by the quantize stage, and those layers stay FP32
    run = lcpipe.run_pipeline(yaml, out=tmp_path / "run",
                              overrides=[f"stages.quantize.ignored_scope={json.dumps(scope)}"])
    int8 = ov.Core().read_model(str(run.artifacts["ir_int8"]))
    assert set(scope["names"]) <= set(layer_ops(int8))
    assert not set(scope["names"]) & set(quantized_ops(int8))  # no FakeQuantize on their inputs
    ops = {op.get_friendly_name(): op for op in int8.get_ordered_ops()}
    weight_src = {n: ops[n].input(1).get_source_output().get_node().get_type_name() for n in layer_ops(int8)}
    assert all(weight_src[n] == "Constant" for n in scope["names"])  # FP32 weights
    assert sum(t != "Constant" for t in weight_src.values()) == len(weight_src) - len(scope["names"])  # rest INT8
