"""bench.md, the terminal tables and the bench.html fragment from bench.json (one row per engine)."""

from __future__ import annotations

from functools import partial
from typing import Any

from lcpipe.render.format import fixed, pct, times
from lcpipe.render.html import png_base64, render_template
from lcpipe.render.tables import md_table, rich_table

pct1 = partial(pct, digits=1)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Header + one row per engine (unavailable ones with their reason), shared by md, rich, html."""
    b = result["batch"]
    head = ["engine", "runs in", "p50 ms", "p90 ms", f"img/s (batch {b})", "latency speed-up vs slowest FP32",
            "latency speed-up vs lcpipe FP32", "img/s speed-up vs slowest FP32", "top-1", "agreement"]
    rows = [head]
    for r in result["engines"]:
        if not r["available"]:
            rows.append([r["label"], r["precision"], *["-"] * 7, "unavailable (see below)"])
            continue
        lat, sp, acc = r["latency_ms"], r["speedup"], r["accuracy"]
        runs_in = r["info"].get("runs_in")
        prec = r["precision"] + (f" ({runs_in})" if runs_in and runs_in not in r["precision"] else "")
        rows.append([r["label"], prec, fixed(lat["p50"]), fixed(lat["p90"]), fixed(r["throughput"]["images_per_s"], 0),
                     fixed(sp["latency_vs_slowest_fp32"], 2, "x"), fixed(sp["latency_vs_lcpipe_fp32"], 2, "x"),
                     fixed(sp["throughput_vs_slowest_fp32"], 2, "x"), pct1(acc["top1"]), pct1(acc["agreement"])])
    return rows


def reason_lines(result: dict[str, Any]) -> list[str]:
    return [f"- {r['label']} ({r['name']}): {r['reason']}" for r in result["engines"] if not r["available"]]


def goal_target(goal: dict[str, Any]) -> str:
    """">= 1.9x", or n/a when there is no target for this ISA."""
    return "n/a" if goal["threshold"] is None else f">= {goal['threshold']}x"


def goal_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = [["goal", "value", "target", "ISA key", "result"]]
    for g in result["goals"]:
        verdict = "n/a" if g["passed"] is None else "met" if g["passed"] else "MISSED"
        rows.append([g["description"], fixed(g["value"], 2, "x"), goal_target(g), g["isa_key"],
                     verdict + (f" ({g['note']})" if g["note"] else "")])
    return rows


def header_lines(result: dict[str, Any]) -> list[str]:
    cpu, m, noise = result["cpu"], result["model"], result["noise"]
    vers = ", ".join(f"{k} {v}" for k, v in result["versions"].items() if k != "lcpipe")
    load = result.get("load_avg") or {}
    return [
        f"- model: {m.get('arch') or 'unknown'} ({m.get('source_format')}), "
        f"input {m['input_hw'][0]}x{m['input_hw'][1]}",
        f"- CPU: {cpu['model']}, ISA {cpu['isa']} (flags: {' '.join(cpu['flags']) or 'none'}), {cpu['cores']} cores"
        + (f"; oneDNN capped with ONEDNN_MAX_CPU_ISA={cpu['isa_cap']}: OpenVINO/Paddle run as on "
           f"{cpu['effective_isa']} (ONNX Runtime is not capped)" if cpu.get("isa_cap") else ""),
        f"- threads: {result['threads']} for every engine; latency: {result['definitions']['latency']}; "
        f"throughput: {result['definitions']['throughput']}",
        f"- {result['rounds']} rounds x {result['iterations']} batch-1 calls per engine; round-to-round spread of "
        f"the medians up to {pct1(noise['max_round_spread'])}; load average before/after "
        f"{load.get('before')} / {load.get('after')}",
        f"- accuracy on {result['eval_images']} eval images ({'labeled' if result['labeled'] else 'unlabeled'}); "
        f"{result['definitions']['agreement']}",
        f"- versions: {vers}",
    ]


def render_markdown(result: dict[str, Any]) -> str:
    parts = [f"# lcpipe bench: {result['pipeline']}", "", *header_lines(result), "", md_table(table_rows(result)), ""]
    if reason_lines(result):
        parts += ["Not measured:", "", *reason_lines(result), ""]
    parts += ["## Goals", "", md_table(goal_rows(result)), ""]
    if e2e_rows(result):
        sp = result["e2e"]["speedup"]
        int8 = result.get("int8_precision") or "f32"  # bench.json before the plan stage: always f32
        plan = result.get("plan")
        floats = ("float ops f32" if int8 == "f32" and not plan else
                  f"float ops: FP32 IR f32, {f'int8 routes = shipped plan {plan}' if plan else 'INT8 IR'} {int8}")
        label = shipped_label(result)
        parts += [f"## End to end (decoded image -> top-k, batch 1, {floats})", "", md_table(e2e_rows(result)), "",
                  f"{label} image-input IR vs the baseline (FP32 IR at the plugin default precision + Python float "
                  f"preprocessing): latency p50 {times(sp.get('e2e_latency_p50_vs_default'))}, throughput "
                  f"{times(sp.get('e2e_throughput_vs_default'))}; vs FP32 IR (f32) + Python float preprocessing: "
                  f"latency p50 {times(sp['e2e_latency_p50'])}, throughput {times(sp['e2e_throughput'])}.", ""]
    return "\n".join(parts)


def shipped_label(result: dict[str, Any]) -> str:
    """What bench's int8 routes hold: the INT8 IR, or the plan the plan stage shipped (maybe the FP32 IR)."""
    from lcpipe.plan import is_int8_plan

    plan = result.get("plan")
    return "INT8" if not plan or is_int8_plan(plan) else f"shipped FP32 ({result.get('int8_precision')})"


def e2e_rows(result: dict[str, Any]) -> list[list[str]]:
    from lcpipe.render.report import e2e_table
    from lcpipe.render.shipped import e2e_route_labels

    e2e = result.get("e2e") or {}
    if not e2e.get("latency_ms") and not e2e.get("throughput"):
        return []
    default = e2e.get("default_precision")
    return e2e_table(e2e.get("latency_ms") or {},
                     {n: t["images_per_s"] for n, t in (e2e.get("throughput") or {}).items()},
                     e2e.get("decode_ms") or {}, e2e_route_labels(shipped_label(result), "f32", default),
                     e2e.get("baseline_route"))


def render_rich(result: dict[str, Any]) -> Any:
    """A rich renderable (tables + header) for the terminal."""
    from rich.console import Group
    from rich.text import Text

    head = Text("\n".join(line.removeprefix("- ") for line in header_lines(result)))
    notes = Text("\n".join(reason_lines(result)))
    parts = [head, rich_table(table_rows(result), f"bench: {result['pipeline']}"), notes,
             rich_table(goal_rows(result), "goals")]
    if e2e_rows(result):
        parts.append(rich_table(e2e_rows(result), "end to end (decoded image -> top-k, batch 1)"))
    return Group(*parts)


def render_html_fragment(result: dict[str, Any], png: bytes) -> str:
    """A self-contained <section> (table + inline chart) another page can embed."""
    return render_template("bench_section.html.j2", header=[line.removeprefix("- ") for line in header_lines(result)],
                           engines=table_rows(result), reasons=[line[2:] for line in reason_lines(result)],
                           goals=goal_rows(result), chart=png_base64(png))


def render_profile_md(profile: dict[str, Any], top: int = 12) -> str:
    """FP32 vs INT8 per layer type, then the slowest kernels of each model."""
    parts = ["", "## OpenVINO per-layer profile (ms per inference, batch 1)", ""]
    names = list(profile)
    types: list[str] = []
    for n in names:
        types += [t["type"] for t in profile[n]["by_type"] if t["type"] not in types]
    rows = [["layer type", *names]] + [
        [t, *(fixed(next((r["ms"] for r in profile[n]["by_type"] if r["type"] == t), None), 3) for n in names)]
        for t in types[:top]]
    rows.append(["sum of layers", *(fixed(profile[n]["total_ms"], 3) for n in names)])
    rows.append(["wall time per call (p50, counters on)", *(fixed(profile[n].get("wall_ms_p50"), 3) for n in names)])
    parts += [md_table(rows), ""]
    for n in names:
        krows = [["type", "exec kernel", "layers", "ms", "share"]] + [
            [r["type"], r["exec"], str(r["layers"]), fixed(r["ms"], 3), pct1(r["share"])]
            for r in profile[n]["by_kernel"][:top]]
        parts += [f"### {n}: by kernel", "", md_table(krows), ""]
    return "\n".join(parts)
