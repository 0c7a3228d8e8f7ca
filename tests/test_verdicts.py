"""Verdicts you can trust: which images tune and which give the verdict (by content), calibration
overlap refused unless opted in, the counts in metrics.json, gate verdicts and their exit codes
through the CLI (0 pass, 3 fail, 4 inconclusive), and validate's adaptive rounds on real runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import lcpipe
from lcpipe.cli import cli
from lcpipe.data.roles import hashes_of, resolve_roles
from lcpipe.errors import InputError
from lcpipe.examples import EXAMPLES_DIR

EMBEDDED = EXAMPLES_DIR / "textline_ori_int8" / "pipeline.yaml"
GOLDEN = Path(__file__).parent / "golden" / "textline_ori_int8"


def _digests(samples) -> set[str]:
    return set(hashes_of(list(samples)).values())


# ------------------------------------------------------------------ tune / verdict / calibration images

def _without_plan(tmp_path: Path) -> Path:
    """The embedded default without its plan stage (its one selecting step), paths made absolute."""
    yaml = tmp_path / "no_plan.yaml"
    text = _absolute(EMBEDDED.read_text())
    yaml.write_text("".join(line for line in text.splitlines(keepends=True) if not line.startswith("  - plan:")))
    return yaml


def test_the_embedded_default_plans_on_tune_images_and_gives_its_verdict_on_the_other_54() -> None:
    roles = resolve_roles(lcpipe.load_config(EMBEDDED))
    rec = roles.record()
    assert (rec["calib_images"], rec["tune_images"], rec["verdict_images"], rec["overlap"]) == (40, 24, 54, 0)
    assert rec["tune_from"] == "data.eval split" and rec["selecting"] == ["plan"]
    assert rec["description"].startswith("verdict on 54 images (24 tune, 40 calibration, disjoint, split from")


def test_without_a_selecting_step_every_eval_image_gives_the_verdict(tmp_path: Path) -> None:
    roles = resolve_roles(lcpipe.load_config(_without_plan(tmp_path)))
    rec = roles.record()
    assert (rec["calib_images"], rec["tune_images"], rec["verdict_images"], rec["overlap"]) == (40, 0, 78, 0)
    assert rec["tune_from"] is None and rec["selecting"] == []
    assert rec["description"] == "verdict on 78 images (0 tune, 40 calibration, disjoint)"


def test_a_selecting_step_splits_eval_by_content_and_the_verdict_sees_no_tune_or_calibration_image(
        tmp_path: Path) -> None:
    no_plan = _without_plan(tmp_path)
    config = lcpipe.load_config(no_plan, ["stages.quantize.accuracy_control.max_drop=0.01"])
    roles = resolve_roles(config)
    assert roles.selecting == ("quantize",) and roles.tune_from == "data.eval split"
    assert (len(roles.tune), len(roles.verdict)) == (24, 54)  # 12 / 27 crops x 2 rotations
    assert _digests(roles.tune).isdisjoint(_digests(roles.verdict))
    assert _digests(roles.calib).isdisjoint(_digests(roles.verdict))
    assert "verdict on 54 images (24 tune, 40 calibration, disjoint" in roles.describe()
    # with the plan too, both choose on the same tune images
    both = resolve_roles(lcpipe.load_config(EMBEDDED, ["stages.quantize.accuracy_control.max_drop=0.01"]))
    assert set(both.selecting) == {"quantize", "plan"} and _digests(both.tune) == _digests(roles.tune)
    # the fraction and seed are the pipeline's to choose; both sides stay whole files
    other = resolve_roles(lcpipe.load_config(EMBEDDED, ["data.split.tune_fraction=0.5", "data.split.seed=3"]))
    assert len(other.tune) == 40 and len(other.verdict) == 38 and other.record()["split"]["seed"] == 3
    # an explicit data.split applies without a selecting step (e.g. after lcpipe sensitivity)
    assert len(resolve_roles(lcpipe.load_config(no_plan, ["data.split={}"])).verdict) == 54


def test_tune_and_verdict_images_change_the_stage_cache_keys(tmp_path: Path) -> None:
    from lcpipe.stages.validate import ValidateStage

    configs = [lcpipe.load_config(_without_plan(tmp_path)), lcpipe.load_config(EMBEDDED),
               lcpipe.load_config(EMBEDDED, ["data.split.seed=1"])]
    salts = {ValidateStage().cache_salt(c) for c in configs}
    assert len(salts) == 3


def _copied_lines(tmp_path: Path) -> Path:
    """The embedded default's text lines in a folder this test may change."""
    lines = tmp_path / "lines"
    shutil.copytree(EXAMPLES_DIR / "textline_ori_int8" / "text_lines" / "lines", lines)
    return lines


def _overlapping_pipeline(tmp_path: Path, *extra: str) -> Path:
    """The embedded default, without its plan stage so every eval image gives the verdict, whose eval list
    also names a renamed byte copy of a calibration image."""
    lines = _copied_lines(tmp_path)
    text_lines = EXAMPLES_DIR / "textline_ori_int8" / "text_lines"
    first_calib = (text_lines / "calib.txt").read_text().split()[0]
    shutil.copyfile(lines / first_calib, lines / f"renamed_{first_calib}")
    eval_list = tmp_path / "eval.txt"
    eval_list.write_text((text_lines / "eval.txt").read_text() + f"renamed_{first_calib}\n")
    raw = (EMBEDDED.read_text().replace("images: text_lines/lines", f"images: {lines}")
           .replace("labels: text_lines/eval.txt", f"labels: {eval_list}")
           .replace("text_lines/", f"{text_lines}/").replace("path: models/", f"path: {EMBEDDED.parent}/models/"))
    raw = "".join(line for line in raw.splitlines(keepends=True) if not line.startswith("  - plan:"))
    yaml = tmp_path / "pipeline.yaml"
    yaml.write_text(raw + "".join(f"{line}\n" for line in extra))
    return yaml


def test_a_calibration_image_among_the_verdict_images_is_refused_by_content(tmp_path: Path) -> None:
    yaml = _overlapping_pipeline(tmp_path)
    with pytest.raises(InputError, match=r"share 1 image\(s\) by content: .*renamed_.*allow_calibration_overlap"):
        resolve_roles(lcpipe.load_config(yaml))
    # through the CLI: exit 2 naming the file, before any stage ran
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["run", str(yaml), "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 2, res.output
    assert "renamed_" in res.output and "allow_calibration_overlap" in res.output
    assert not (out / "import").exists()


def test_an_opted_in_overlap_is_counted_and_said_prominently(tmp_path: Path) -> None:
    from lcpipe.render.report import overlap_warning

    yaml = _overlapping_pipeline(tmp_path)
    roles = resolve_roles(lcpipe.load_config(yaml, ["data.allow_calibration_overlap=true"]))
    rec = roles.record()
    assert rec["overlap"] == 1 and rec["verdict_images"] == 80 and "renamed_" in rec["overlap_files"][0]
    assert "ALSO CALIBRATION IMAGES" in rec["description"]
    assert "also calibration images" in overlap_warning({"data": rec})
    from lcpipe.render.report import render_html, render_markdown

    golden = {**json.loads((GOLDEN / "metrics.json").read_text()), "data": rec}
    md = render_markdown(golden)
    # after the two head lines: what ships, and what the verdict rests on
    assert md.splitlines()[6].startswith("> **Warning:** 1 verdict image(s) are also calibration images")
    assert '<p class="warn"><strong>Warning:</strong> 1 verdict image(s) are also calibration' in render_html(golden)


def test_an_explicit_tune_set_sharing_files_with_eval_is_refused_and_may_be_unlabeled(tmp_path: Path) -> None:
    text_lines = EXAMPLES_DIR / "textline_ori_int8" / "text_lines"
    shared = tmp_path / "tune_shared"
    shared.mkdir()
    shutil.copyfile(text_lines / "lines" / (text_lines / "eval.txt").read_text().split()[0], shared / "x.png")
    with pytest.raises(InputError, match="data.tune and data.eval share 1 image"):
        resolve_roles(lcpipe.load_config(EMBEDDED, [f"data.tune.images={shared}"]))
    own = tmp_path / "tune_own"
    own.mkdir()
    shutil.copyfile(text_lines / "lines" / (text_lines / "calib.txt").read_text().split()[0], own / "y.png")
    roles = resolve_roles(lcpipe.load_config(EMBEDDED, [f"data.tune.images={own}"]))
    assert roles.tune_from == "data.tune" and len(roles.verdict) == 78  # all of data.eval gives the verdict
    assert roles.tune[0].label is None  # an unlabeled folder: only label-free gates can be checked on it


# ------------------------------------------------------------------ gate verdicts and exit codes through the CLI

def _run_dir_from_golden(run: Path, *sets: str) -> Path:
    """A run dir whose stages up to validate hold the golden inputs (a real run of the embedded
    default), recorded as this config (with ``sets``) would make them, so `lcpipe run --from report`
    judges them: the CLI's verdict path without re-measuring. (The keys come from the runner itself:
    the IR files are placeholders the report does not read.)"""
    from lcpipe.fileio import files_sha256, write_json
    from lcpipe.runner import _manifest_head, _prepare
    from lcpipe.stages import get_stage

    shutil.rmtree(run, ignore_errors=True)
    config = lcpipe.load_config(EMBEDDED, list(sets))
    outputs = {"import": {"model_info": "model_info.json"}, "fuse": {}, "export": {},
               "convert": {"ir_fp32": "model.xml"},
               "quantize": {"ir_int8": "model.xml", "quantize_report": "quantize.json"},
               "plan": {"ir_int8": "model.xml", "plan_report": "plan.json"},
               "validate": {"validation": "validation.json"}}
    sources = {"model_info.json", "quantize.json", "plan.json", "validation.json"}
    artifacts: dict[str, Path] = {}
    for entry in config.stages[:len(outputs)]:
        stage, kinds = get_stage(entry.name)(), outputs[entry.name]
        prep = _prepare(stage, entry.options, config, artifacts)
        folder = run / entry.name
        folder.mkdir(parents=True)
        for path in kinds.values():
            if path in sources:
                shutil.copyfile(GOLDEN / path, folder / path)
            else:
                (folder / path).write_text(f"<net stage='{entry.name}'/>")  # not read by the report
        write_json(folder / "stage.json", {"stage": entry.name, "key": prep.key, "key_parts": prep.parts,
                                           "outputs": {k: {"path": p} for k, p in kinds.items()},
                                           "files": files_sha256(folder, skip=("stage.json",))})
        artifacts.update({k: folder / p for k, p in kinds.items()})
    write_json(run / "manifest.json", {**_manifest_head(config, run, run / "cache", True), "finished": True})
    return run


def _judge(run: Path, *sets: str) -> tuple[int, str, dict]:
    _run_dir_from_golden(run, *sets)
    args = ["run", str(EMBEDDED), "--out", str(run), "--from", "report", "--until", "report", "--no-cache"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(cli, args)
    return res.exit_code, res.output, json.loads((run / "metrics.json").read_text())


def test_gate_verdicts_exit_0_3_or_4_through_the_cli_and_name_the_gate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    golden = json.loads((GOLDEN / "validation.json").read_text())
    agree = golden["evidence"]["agree"] / golden["evidence"]["images"]

    # every gate passes: 0
    code, out, m = _judge(run, "gates.min_e2e_latency_speedup=null", "gates.min_agreement=0.5")
    assert code == 0, out
    assert m["verdict"] == "pass" and m["passed"] and {g["verdict"] for g in m["gates"]} == {"pass"}
    assert "verdict: PASS" in out

    # a count that cannot be met: fail, 3, even with another gate inconclusive
    code, out, m = _judge(run, "gates.min_e2e_latency_speedup=null", "gates.max_top1_flips=-1",
                          f"gates.min_agreement={agree}")
    assert code == 3, out
    assert m["verdict"] == "fail" and "max_top1_flips fail" in out

    # the observed agreement as the limit: its interval straddles it, nothing fails: 4, naming gate and why
    code, out, m = _judge(run, "gates.min_e2e_latency_speedup=null", f"gates.min_agreement={agree}")
    assert code == 4, out
    assert m["verdict"] == "inconclusive" and not m["passed"]
    row = next(g for g in m["gates"] if g["name"] == "min_agreement")
    assert row["verdict"] == "inconclusive" and row["interval"][0] < agree <= row["interval"][1]
    assert "min_agreement inconclusive" in out and "straddles the limit" in out and "Wilson" in out

    # the opt-in point mode: the same figures pass or fail, never inconclusive
    code, out, m = _judge(run, "gates.min_e2e_latency_speedup=null", f"gates.min_agreement={agree}", "gates.mode=point")
    assert code == 0 and {g["verdict"] for g in m["gates"]} == {"pass"}, out


def test_run_help_documents_the_three_verdicts_and_their_exit_codes() -> None:
    res = CliRunner().invoke(cli, ["run", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "3 a gate failed" in text and "4 no gate failed but some were inconclusive" in text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`4`" in readme and "inconclusive" in readme


# ------------------------------------------------------------------ real runs (slow)

@pytest.mark.slow
def test_a_real_run_with_a_split_records_the_counts_and_intervals_matching_scipy(tmp_path: Path) -> None:
    """The embedded default with data.split: metrics.json's data counts, every interval, gate rows."""
    from scipy.stats import binomtest

    from lcpipe.measure.stats import ratio_ci

    fast = ["stages.validate.e2e=false", "stages.validate.paddle_reference=false", "stages.validate.iterations=30",
            "stages.validate.throughput_seconds=0.1", "stages.validate.progress=false", "data.split={}"]
    result = lcpipe.run_pipeline(EMBEDDED, out=tmp_path / "run", cache_dir=tmp_path / "cache", overrides=fast)
    m = result.metrics
    assert {k: m["data"][k] for k in ("calib_images", "tune_images", "verdict_images", "overlap")} == \
        {"calib_images": 40, "tune_images": 24, "verdict_images": 54, "overlap": 0}
    assert m["accuracy"]["images"] == 54
    v = json.loads((tmp_path / "run" / "validate" / "validation.json").read_text())
    ev = v["evidence"]
    ci = binomtest(ev["fp32_correct"], ev["images"]).proportion_ci(0.95, method="wilson")
    assert m["accuracy"]["fp32"]["top1_ci95"] == pytest.approx([ci.low, ci.high], abs=1e-6)
    assert ev["fp32_correct"] == round(m["accuracy"]["fp32"]["top1"] * 54)
    for key in ("top1_drop_ci95", "agreement_ci95", "cosine_ci95"):
        assert len(m["accuracy"][key]) == 2 and m["accuracy"][key][0] <= m["accuracy"][key][1]
    assert 0 <= m["accuracy"]["flips"]["mcnemar_p"] <= 1
    lat = m["latency_ms"]
    est = ratio_ci(lat["fp32"]["round_p50"], lat["int8"]["round_p50"])
    assert m["speedup"]["latency_p50_ci95"] == pytest.approx(est.interval, abs=1e-4)
    assert m["speedup"]["throughput_ci95"] is not None
    assert lat["fp32"]["measured_at"] and len(lat["fp32"]["load_avg"]["before"]) == 3
    assert m["timing"]["rounds"] >= 4 and m["timing"]["stop_reason"] in ("decided", "budget", "max_rounds")
    assert all(g["verdict"] in ("pass", "fail", "inconclusive") for g in m["gates"])
    md = (tmp_path / "run" / "report.md").read_text()
    assert "verdict on 54 images (24 tune, 40 calibration, disjoint" in md and "McNemar p =" in md


@pytest.mark.slow
def test_adaptive_rounds_stop_when_every_speed_gate_is_decided_or_the_budget_is_spent(tmp_path: Path) -> None:
    """Real validate timings through the CLI (model-only latency). A limit far below the speed-up, and one
    far above it (the shipped model judged against an impossible requirement), are decided at the first
    look (exit 0, exit 3). Then the shipped model is the FP32 IR at f32 itself (the plan stage allowed
    only that candidate): its speed-up is 1.0, the limit 1.0, and two rounds (99 % per look) cannot tell
    them apart before the budget is spent: inconclusive, exit 4."""
    cache = tmp_path / "cache"
    quick = ["stages.validate.e2e=false", "stages.validate.throughput=false", "stages.validate.paddle_reference=false",
             "stages.validate.image_input=false", "stages.validate.iterations=30", "stages.validate.progress=false",
             "stages.plan.progress=false", "gates.min_e2e_latency_speedup=null"]  # model-only timing here

    def run(yaml: Path, out: Path, *sets: str) -> tuple[int, dict, str]:
        args = ["run", str(yaml), "--out", str(out), "--cache-dir", str(cache), "--until", "report"]
        for s in (*quick, *sets):
            args += ["--set", s]
        res = CliRunner().invoke(cli, args)
        return res.exit_code, json.loads((out / "metrics.json").read_text()), res.output

    code, m, output = run(EMBEDDED, tmp_path / "run", "gates.min_latency_speedup=0.01")
    assert code == 0, output
    assert (m["timing"]["rounds"], m["timing"]["stop_reason"]) == (4, "decided")
    assert m["timing"]["rounds_by_track"] == {"latency": 4}
    code, m, output = run(EMBEDDED, tmp_path / "run", "gates.min_latency_speedup=1000")
    assert code == 3, output
    assert (m["timing"]["rounds"], m["timing"]["stop_reason"]) == (4, "decided")
    assert "min_latency_speedup fail" in output

    itself = tmp_path / "fp32_vs_itself.yaml"
    itself.write_text("".join("  - plan: {presets: [], precisions: [f32], progress: false}\n"
                              if line.startswith("  - plan:") else line
                              for line in _absolute(EMBEDDED.read_text()).splitlines(keepends=True)))
    code, m, output = run(itself, tmp_path / "itself", "gates.min_latency_speedup=1.0", "stages.validate.min_rounds=2",
                          "stages.validate.max_seconds=0.001")
    assert code == 4, output
    assert (m["timing"]["rounds"], m["timing"]["stop_reason"]) == (2, "budget")
    assert m["timing"]["undecided"] == ["min_latency_speedup"] and "min_latency_speedup inconclusive" in output
    assert m["plan"]["chosen"] == "fp32@f32" and m["data"]["verdict_images"] == 54  # the plan tuned on 24


def _absolute(yaml_text: str) -> str:
    """The embedded default's YAML with its relative paths made absolute (to be written elsewhere)."""
    root = EMBEDDED.parent
    return yaml_text.replace("text_lines/", f"{root}/text_lines/").replace("path: models/", f"path: {root}/models/")


# ------------------------------------------------------------------ the rounds loop (no models)

class _Track:
    """A timing track with set per-round figures (ms): round i of each model is figures[i % len]."""

    def __init__(self, figures: dict[str, list[float]], seconds: float = 0.0) -> None:
        self.figures, self.seconds, self.rounds = figures, seconds, 0
        self.per_round: dict[str, list[float]] = {n: [] for n in figures}

    def warm_up(self) -> None:
        pass

    def run_round(self, advance=lambda n=1: None) -> None:
        import time

        time.sleep(self.seconds)
        for n, f in self.figures.items():
            self.per_round[n].append(f[self.rounds % len(f)])
        self.rounds += 1

    def results(self) -> dict:
        return {}


def _rounds(tracks: dict, limit: float, budget) -> dict:
    from lcpipe.measure.rounds import GatedSpeedup, run_adaptive

    return run_adaptive(tracks, [GatedSpeedup("min_latency_speedup", "latency_p50", limit)], budget, show=False)


def test_rounds_go_on_only_for_the_gated_track_until_decided_or_out_of_rounds_or_time() -> None:
    from lcpipe.measure.stopping import RoundsBudget

    def tracks(seconds: float = 0.0) -> dict:
        return {"latency": _Track({"fp32": [2.0, 2.1, 1.9], "int8": [1.0, 1.0, 1.0]}, seconds),
                "throughput": _Track({"fp32": [100.0], "int8": [150.0]})}

    clear = tracks()
    rec = _rounds(clear, 1.0, RoundsBudget(4, 32, 60))  # ~2x vs 1.0: decided at the first look
    assert (rec["rounds"], rec["stop_reason"], rec["undecided"]) == (4, "decided", [])
    assert rec["rounds_by_track"] == {"latency": 4, "throughput": 4}
    close = tracks()
    rec = _rounds(close, 2.0, RoundsBudget(4, 16, 60))  # ~2.0x vs 2.0: never decided
    assert (rec["rounds"], rec["stop_reason"], rec["undecided"]) == (16, "max_rounds", ["min_latency_speedup"])
    assert rec["rounds_by_track"] == {"latency": 16, "throughput": 4}  # only the gated track went on
    slow = tracks(seconds=0.05)
    rec = _rounds(slow, 2.0, RoundsBudget(4, 32, 0.3))  # 0.05 s a round: the 0.3 s budget ends it
    assert rec["stop_reason"] == "budget" and 4 <= rec["rounds"] < 8 and rec["seconds"] <= 0.3 + 0.05


# ------------------------------------------------------------------ comparable timings in sweeps

def test_a_sweep_compares_only_latencies_timed_in_this_run() -> None:
    """A point whose validate came from the cache (or that was resumed) was timed under another load:
    it is marked and left out of the Pareto fronts, not compared as if it were not."""
    from lcpipe.render.sweep import format_fleet, format_table, fronts, render_html
    from lcpipe.sweep.fleet import fleet_row
    from lcpipe.sweep.point import timed_earlier

    fresh = {"point": "p00", "status": "ok", "agreement": 0.99, "latency_p50_int8_ms": 2.0,
             "cached_stages": ["import", "fuse"], "computed_stages": ["validate", "report"]}
    cached = {"point": "p01", "status": "ok", "agreement": 0.99, "latency_p50_int8_ms": 1.5,  # faster, but old
              "cached_stages": ["import", "validate"], "computed_stages": ["report"]}
    resumed = {"point": "p02", "status": "ok", "agreement": 0.999, "latency_p50_int8_ms": 1.0, "resumed": True}
    assert [timed_earlier(r) for r in (fresh, cached, resumed)] == [False, True, True]
    rows = [{**r, "timed_earlier": timed_earlier(r)} for r in (fresh, cached, resumed)]
    node = {"cpu_kind": "k"}
    fleet = [fleet_row(r, node, source="point", timed_earlier=r["timed_earlier"]) for r in rows]
    assert fronts(fleet, rows) == {"k": ["p00"]}  # the two faster ones were timed earlier
    assert "earlier run, not compared" in format_fleet(fleet)
    assert "p01, p02: latency timed in an earlier run" in format_table(rows, [])
    machine = {"model": "m", "isa": "avx2", "flags": [], "cores": 2, "executor": {"kind": "local"}, "seconds": 1}
    html = render_html({"sweep": "s", "source": "x", "base": "b", "swept": [], "machine": machine,
                        "finished": "now", "points": [{**r, "index": i, "overrides": {}} for i, r in enumerate(rows)],
                        "fleet": []})
    assert "p01, p02 were timed in an earlier run" in html
