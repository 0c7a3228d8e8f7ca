"""The generated tables of docs/benchmarks.md: scale table, engines, goals, agreement; written
between markers so everything else in the file is left alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.models import model_of
from lcpipe.measure.goals import evaluate_goals
from lcpipe.render.bench import goal_target
from lcpipe.render.tables import md_table

BEGIN, END = "<!-- BEGIN GENERATED: lcpipe bench --matrix -->", "<!-- END GENERATED -->"
FIXES_BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks.matrix --fixes -->"


def engine_row(result: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in result["engines"] if e["name"] == name and e["available"]), None)


def p50_of(result: dict[str, Any], name: str) -> float | None:
    e = engine_row(result, name)
    return e["latency_ms"]["p50"] if e else None


def ips_of(result: dict[str, Any], name: str) -> float | None:
    e = engine_row(result, name)
    return e["throughput"]["images_per_s"] if e else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def published(v: Any, fmt: str = "{:.2f}", missing: str = "n/p") -> str:
    """n/p: not published; measured figures pass missing="-" (engine not measured here)."""
    return missing if v is None else fmt.format(v)


def measured(v: Any, fmt: str = "{:.2f}") -> str:
    return published(v, fmt, "-")


def isa_cap_of(results: list[dict[str, Any]]) -> str | None:
    return next((r["cpu"].get("isa_cap") for r in results if r.get("cpu", {}).get("isa_cap")), None)


def scale_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """README-style scale table: ours (this machine) next to PaddleClas's published figures."""
    head = ["model", "params M (lcpipe / published)", "FLOPs M (lcpipe / published)", "published top-1",
            "published latency ms (their CPU)", "FP32 IR p50 ms", "INT8 IR p50 ms", "INT8 speed-up",
            "FP32 IR, plugin default (bf16 on AMX) p50 ms", "FP32 / INT8 img/s (batch 8)"]
    rows = [head]
    for r in results:
        m, pub = r["matrix"], model_of(r["matrix"]["key"]).published
        fp32, int8 = p50_of(r, "ov_fp32"), p50_of(r, "ov_int8")
        hw = r["model"]["input_hw"]
        name = m["arch"] + ("" if hw == [224, 224] else f" {hw[0]}x{hw[1]}") + \
            ("" if m["synthetic_weights"] else " (real textline model)")
        rows.append([name, f"{m['params_m']:.2f} / {published(pub.params_m, '{:.1f}')}",
                     f"{m['flops_m']:.0f} / {published(pub.flops_m, '{:.0f}')}", published(pub.top1, "{:.2f}%"),
                     published(pub.latency_ms) + (f" ({pub.latency_cpu})" if pub.latency_cpu else ""),
                     measured(fp32), measured(int8), ratio(fp32, int8), measured(p50_of(r, "ov_fp32_default")),
                     f"{measured(ips_of(r, 'ov_fp32'), '{:.0f}')} / {measured(ips_of(r, 'ov_int8'), '{:.0f}')}"])
    return rows


ENGINE_COLS = (("ov_fp32", "OV FP32 IR"), ("ov_int8", "OV INT8 IR"), ("ov_fp32_default", "OV FP32 default prec."),
               ("ov_p2o_fp32", "paddle2onnx -> OV"), ("ort_fp32", "ORT FP32"), ("ort_int8", "ORT INT8 QDQ"),
               ("paddle_onednn", "Paddle oneDNN"))


def engine_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Batch-1 p50 ms of every engine per model, then the ratios the goals are about."""
    head = ["model", *(c for _, c in ENGINE_COLS), "FP32 IR vs p2o / ORT FP32", "INT8 vs ORT INT8 / Paddle"]
    rows = [head]
    for r in results:
        p = {n: p50_of(r, n) for n, _ in ENGINE_COLS}
        rows.append([r["matrix"]["key"], *(measured(p[n]) for n, _ in ENGINE_COLS),
                     f"{ratio(p['ov_p2o_fp32'], p['ov_fp32'])} / {ratio(p['ort_fp32'], p['ov_fp32'])}",
                     f"{ratio(p['ort_int8'], p['ov_int8'])} / {ratio(p['paddle_onednn'], p['ov_int8'])}"])
    return rows


def goal_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Goals re-evaluated from the stored engine figures (so a re-render follows the current rules)."""
    rows = [["model", "goal", "value", "target", "result"]]
    for r in results:
        isa = r["cpu"].get("effective_isa", r["cpu"]["isa"])
        for g in evaluate_goals(r["engines"], r["model"].get("arch"), isa):
            verdict = "n/a" if g["passed"] is None else "met" if g["passed"] else "MISSED"
            verdict += " (tie)" if g.get("note", "").startswith("tie") else ""
            rows.append([r["matrix"]["key"], g["description"], measured(g["value"], "{:.2f}x"),
                         f"{goal_target(g)} ({g['isa_key']})", verdict])
    return rows


def agreement_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["model", *(c for _, c in ENGINE_COLS)]]
    for r in results:
        cells = []
        for n, _ in ENGINE_COLS:
            e = engine_row(r, n)
            a = e and e["accuracy"]["agreement"]
            cells.append("n/a" if a is None else f"{100 * a:.1f}%")
        rows.append([r["matrix"]["key"], *cells])
    return rows


def unavailable_notes(results: list[dict[str, Any]]) -> list[str]:
    notes: dict[str, set[str]] = {}
    for r in results:
        for e in r["engines"]:
            if not e["available"]:
                notes.setdefault(f"{e['name']}: {' '.join(str(e['reason']).split())}", set()).add(r["matrix"]["key"])
    return [f"- {text} ({', '.join(sorted(keys))})" for text, keys in notes.items()]


def render_matrix(results: list[dict[str, Any]]) -> str:
    if not results:
        return "(no results)"
    r0 = results[0]
    cpu = r0["cpu"]
    spreads = [r["noise"]["max_round_spread"] for r in results if r["noise"]["max_round_spread"] is not None]
    loads = [v for r in results for v in (r.get("load_avg") or {}).get("before") or []][::3]
    cap = (f"; oneDNN capped with `ONEDNN_MAX_CPU_ISA={cpu['isa_cap']}` (OpenVINO and Paddle use "
           f"{cpu['effective_isa']} kernels; ONNX Runtime is not capped)" if cpu.get("isa_cap") else "")
    parts = [
        f"Measured on **{cpu['model']}**, ISA `{cpu['isa']}` (flags: {' '.join(cpu['flags'])}){cap}, "
        f"{r0['threads']} threads for every engine, {cpu['cores']} cores. Versions: "
        + ", ".join(f"{k} {v}" for k, v in r0["versions"].items() if k != "lcpipe") + ".",
        "",
        f"Latency: {r0['definitions']['latency']}; throughput: {r0['definitions']['throughput']}. "
        f"{r0['rounds']} rounds x {r0['iterations']} calls per engine. Round-to-round spread of the medians: "
        f"{100 * min(spreads):.0f}-{100 * max(spreads):.0f}% (1-min load average at the start of each model: "
        f"{', '.join(f'{v:.2f}' for v in loads)}).",
        "",
        "FLOPs are multiply-accumulates of convs and FC (lcpipe.models.layers.count_params_flops, deploy form); "
        "PaddleClas's counts include a little more (SE, BN), hence 156 vs 161 M for x1.0. Published latencies were "
        "measured on other CPUs with other engines and threads; only the columns measured here compare with "
        "each other. ImageNet-size rows use random weights (latency does not depend on values), so their "
        "top-1 is not meaningful; agreement still shows how far each engine's argmax follows lcpipe FP32.",
        "",
        "### Scale table", "", md_table(scale_rows(results)), "",
        "### All engines, batch-1 p50 latency (ms)", "", md_table(engine_rows(results)), "",
        "### Goals", "", md_table(goal_rows(results)), "",
        "### Argmax agreement with lcpipe FP32 (first 200 eval images)", "", md_table(agreement_rows(results)), "",
    ]
    notes = unavailable_notes(results)
    if notes:
        parts += ["Engines not measured:", "", *notes, ""]
    return "\n".join(parts)


def write_docs(path: Path, generated: str, begin: str = BEGIN,
               title: str = "Scale table (generated by `lcpipe bench --matrix`)") -> None:
    """Replace the text between ``begin`` and the next END marker (append a section when absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    block = f"{begin}\n{generated.rstrip()}\n{END}"
    if begin in text and END in text.split(begin, 1)[1]:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
