"""metrics.json's layout (the keys CI scripts read) cannot drift silently.

tests/golden/textline_ori_int8/ holds what a real run of the embedded default (`lcpipe run
textline_ori_int8`, Intel Xeon with AMX) gave the report stage (validation.json, quantize.json,
model_info.json, plan.json), the metrics.json it wrote, and that file's key paths in document order
(metrics_keys.txt; lists as ``[]``). A change to the layout must change those files in the same
commit, where a reviewer sees it. Adding an optional key is one line in lcpipe.records.MetricsRecord
plus its line(s) in metrics_keys.txt.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).parent / "golden" / "textline_ori_int8"


def key_paths(obj: Any, prefix: str = "") -> list[str]:
    """Every key path of a JSON document in document order, once (``gates[].name`` for lists)."""
    out: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                sub = f"{path}.{key}" if path else key
                out.append(sub)
                walk(value, sub)
        elif isinstance(node, list):
            for value in node:
                walk(value, f"{path}[]")

    walk(obj, prefix)
    return list(dict.fromkeys(out))


def golden_keys() -> list[str]:
    return (GOLDEN / "metrics_keys.txt").read_text().splitlines()


def test_the_golden_keys_are_the_golden_files_keys() -> None:
    assert key_paths(json.loads((GOLDEN / "metrics.json").read_text())) == golden_keys()


def test_report_writes_the_golden_metrics_json_from_the_same_inputs(tmp_path: Path) -> None:
    """The report stage on the recorded inputs, with the embedded default's gates: the same bytes."""
    from lcpipe.examples import EXAMPLES_DIR
    from lcpipe.runner import load_config
    from lcpipe.stages.base import StageContext
    from lcpipe.stages.report import ReportOptions, ReportStage

    config = load_config(EXAMPLES_DIR / "textline_ori_int8" / "pipeline.yaml")
    inputs = {"validation": GOLDEN / "validation.json", "quantize_report": GOLDEN / "quantize.json",
              "model_info": GOLDEN / "model_info.json", "plan_report": GOLDEN / "plan.json",
              "ir_fp32": tmp_path / "unread.xml",
              "ir_int8": tmp_path / "unread.xml"}
    ctx = StageContext(config=config, workdir=tmp_path, run_dir=tmp_path, cache_dir=None,
                       log=logging.getLogger("lcpipe"))
    out = ReportStage().run(ctx, ReportOptions(html=False), inputs)
    assert out["metrics"].read_text() == (GOLDEN / "metrics.json").read_text()


def test_metrics_record_keeps_unknown_keys_and_refuses_misspelled_ones() -> None:
    from lcpipe.records import MetricsRecord

    doc = json.loads((GOLDEN / "metrics.json").read_text())
    newer = {**doc, "from_a_newer_lcpipe": {"x": 1}}
    assert MetricsRecord.model_validate(newer).to_dict() == newer  # read, kept, written back last
    assert list(MetricsRecord.model_validate(newer).to_dict())[-1] == "from_a_newer_lcpipe"
    older = {k: v for k, v in doc.items() if k not in ("plan", "shipped")}  # before the plan / shipped sections
    assert MetricsRecord.model_validate(older).to_dict() == older  # an optional key not set is not written as null
    with pytest.raises(TypeError, match="unknown key.*pased"):
        MetricsRecord.build(**{k: v for k, v in doc.items() if k != "passed"}, pased=True)


@pytest.mark.slow
def test_a_real_run_of_the_embedded_default_has_the_golden_layout(tmp_path: Path) -> None:
    """The figures differ per run and machine; the keys must not. Left out on both sides: what the
    machine decides, ``fp32_default`` and ``fp32_py_default`` (the FP32 IR at the plugin's own precision,
    model only and end to end, only where that is not f32: bf16 on AMX), and the entries of ``versions``
    (the packages installed) and ``cpu`` (an ISA cap adds keys)."""
    import lcpipe
    from lcpipe.examples import EXAMPLES_DIR

    result = lcpipe.run_pipeline(EXAMPLES_DIR / "textline_ori_int8" / "pipeline.yaml", out=tmp_path / "run",
                                 cache_dir=tmp_path / "cache")
    produced = key_paths(json.loads((result.run_dir / "metrics.json").read_text()))

    def machine_free(paths: list[str]) -> list[str]:
        return [p for p in paths if not {"fp32_default", "fp32_py_default"} & set(p.split("."))
                and not p.startswith(("versions.", "cpu."))]

    assert machine_free(produced) == machine_free(golden_keys())
