"""A sweep's rows rendered: the terminal tables (points, fleet), the accuracy-vs-latency scatter with
its Pareto front, and sweep.html. Rows come from lcpipe.sweep (sweep.json); nothing here runs a point."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lcpipe.render.format import MISSING, fixed, num, pct

# A point row's columns, in table/CSV order (lcpipe.sweep fills every row with all of them).
# The shipped model's columns keep their int8_* names (they hold the plan's choice, INT8 or not; "shipped"
# names it); the headline speed-up is e2e_speedup_vs_default (lcpipe.metrics.shipped_metrics).
COLUMNS = ("point", "status", "arch", "params", "flops", "preset", "shipped", "fp32_top1", "int8_top1", "top1_drop",
           "agreement", "cosine", "e2e_speedup_vs_default", "latency_p50_fp32_ms", "latency_p50_int8_ms",
           "latency_speedup", "timed_at", "timed_earlier",
           "throughput_fp32", "throughput_int8", "size_fp32", "size_int8", "size_onnx", "images", "seconds",
           "error_class", "exit_code", "error", "run_dir", "cpu_kind", "cpu_model", "node_id")


# ---------------------------------------------------------------- cells

def ms(v: Any) -> str:
    return fixed(v, 2, " ms")


def mb(v: Any) -> str:
    """Bytes as MB."""
    return fixed(None if v is None else v / 1e6, 2)


def count(v: Any) -> str:
    """Params/MACs in millions, else lcpipe.render.format.num."""
    if isinstance(v, int) and v >= 10_000:
        return f"{v / 1e6:.2f} M"
    return num(v)


def _text_table(lines: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(lines[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]


# ---------------------------------------------------------------- terminal tables

def format_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The points as plain text for the terminal, then one line per failed point."""
    head = ["point", *keys, "status", "shipped", "x vs default e2e", "top1 fp32", "top1 shipped", "agree",
            "p50 fp32", "p50 shipped", "shipped MB"]
    lines = [head]
    for r in rows:
        ov = r.get("overrides") or {}
        lines.append([r["point"], *(str(ov.get(k, "")) for k in keys), r["status"], r.get("shipped") or MISSING,
                      fixed(r.get("e2e_speedup_vs_default"), 2, "x"), pct(r.get("fp32_top1")),
                      pct(r.get("int8_top1")), pct(r.get("agreement")), ms(r.get("latency_p50_fp32_ms")),
                      ms(r.get("latency_p50_int8_ms")), mb(r.get("size_int8"))])
    out = _text_table(lines)
    for r in rows:
        if r["status"] == "failed":
            out.append(f"{r['point']}: {r.get('error_class')} error (exit {r.get('exit_code')}): {r.get('error')}")
    earlier = [r["point"] for r in rows if r.get("timed_earlier")]
    if earlier:
        out.append(f"{', '.join(earlier)}: {EARLIER}")
    return "\n".join(out)


EARLIER = ("latency timed in an earlier run (cached or resumed), under another load: not compared with this "
           "run's figures (Pareto fronts, fleet); --force re-times them")


def format_fleet(fleet: list[dict[str, Any]]) -> str:
    """The fleet rows as plain text: point x CPU kind."""
    lines = [["point", "CPU kind", "status", "p50 FP32", "p50 shipped", "speed-up", "img/s shipped", "from", "node"]]
    for f in sorted(fleet, key=lambda r: (r["point"], str(r["cpu_kind"]))):
        ok = f["status"] == "ok"
        status = ("ok (earlier run, not compared)" if f.get("timed_earlier") else "ok") if ok \
            else f"failed: {f.get('error')}"
        lines.append([f["point"], str(f["cpu_kind"]), status,
                      ms(f.get("latency_p50_fp32_ms")), ms(f.get("latency_p50_int8_ms")),
                      fixed(f.get("latency_speedup") or None, 2, "x"), fixed(f.get("throughput_int8") or None, 0),
                      str(f.get("source")), str(f.get("node_id") or MISSING)[:12]])
    return "\n".join(_text_table(lines))


# ---------------------------------------------------------------- Pareto fronts

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (x lower is better, y higher),
    sorted by x. A point equal to another on both axes stays on the front."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = float("-inf")
    for i in order:
        x, y = points[i]
        if y > best_y or (front and points[front[-1]] == (x, y)):
            front.append(i)
            best_y = max(best_y, y)
    return front


def accuracy_axis(rows: list[dict[str, Any]]) -> str | None:
    """INT8 top-1 when labels give one (and it is not all zero: random weights, foreign labels), else
    agreement with FP32."""
    ok = [r for r in rows if r.get("status") != "failed"]
    if ok and all(r.get("int8_top1") is not None for r in ok) and any(r["int8_top1"] for r in ok):
        return "int8_top1"
    if ok and all(r.get("agreement") is not None for r in ok):
        return "agreement"
    return None


def kinds(fleet: list[dict[str, Any]]) -> list[str]:
    return sorted({str(f["cpu_kind"]) for f in fleet})


def fronts(fleet: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """CPU kind -> the points on its Pareto front (INT8 latency on that kind vs the point's accuracy)."""
    axis = accuracy_axis(rows)
    if axis is None:
        return {}
    acc = {r["point"]: r.get(axis) for r in rows}
    out = {}
    for kind in kinds(fleet):
        pts = [f for f in fleet if f["cpu_kind"] == kind and f["status"] == "ok" and not f.get("timed_earlier")
               and f.get("latency_p50_int8_ms") is not None and acc.get(f["point"]) is not None]
        front = pareto_front([(float(f["latency_p50_int8_ms"]), float(acc[f["point"]])) for f in pts])
        out[kind] = [pts[i]["point"] for i in front]
    return out


def fleet_doc(fleet: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What sweep.html shows of the fleet: point x kind cells, each kind's nodes and front."""
    if not fleet:
        return None
    ks = kinds(fleet)
    cells = {(f["point"], str(f["cpu_kind"])): f for f in fleet}
    points = [r["point"] for r in rows if any((r["point"], k) in cells for k in ks)]
    nodes = {k: sorted({f"{f.get('cpu_model')} [{f.get('isa')}] on {str(f.get('node_id') or '?')[:12]}"
                        for f in fleet if str(f["cpu_kind"]) == k}) for k in ks}
    return {"kinds": ks, "rows": [{"point": p, "cells": [cells.get((p, k)) for k in ks]} for p in points],
            "fronts": fronts(fleet, rows), "nodes": nodes, "axis": accuracy_axis(rows)}


# ---------------------------------------------------------------- sweep.html

def scatter_png(rows: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """Base64 PNG of accuracy vs the shipped model's latency with the Pareto front, and the front's point ids. Points
    timed in an earlier run (``timed_earlier``) are drawn apart, grey, and are not on the front."""
    timed = [r for r in rows if r["status"] != "failed" and r.get("latency_p50_int8_ms") is not None]
    yk = accuracy_axis(timed) if timed else None
    if yk is None:
        return None, []
    from lcpipe.render.charts import png_bytes, pyplot
    from lcpipe.render.html import png_base64

    plt = pyplot()
    xk = "latency_p50_int8_ms"
    both = [r for r in rows if r["status"] != "failed" and r.get(xk) is not None and r.get(yk) is not None]
    pts = [r for r in both if not r.get("timed_earlier")]
    old = [r for r in both if r.get("timed_earlier")]
    xy = [(float(r[xk]), float(r[yk])) for r in pts]
    front = pareto_front(xy)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    # FP32 for reference: its own top-1, or agreement 1 with itself
    fp32 = [(r["latency_p50_fp32_ms"], r["fp32_top1"] if yk == "int8_top1" else 1.0) for r in pts
            if r.get("latency_p50_fp32_ms") is not None and (yk != "int8_top1" or r.get("fp32_top1") is not None)]
    if fp32:
        ax.scatter(*zip(*fp32, strict=True), marker="o", facecolors="none", edgecolors="0.6", label="FP32")
    ax.scatter([x for x, _ in xy], [y for _, y in xy], color="tab:blue", label="shipped", zorder=3)
    if old:
        ax.scatter([float(r[xk]) for r in old], [float(r[yk]) for r in old], marker="x", color="0.6",
                   label="shipped, timed in an earlier run (not compared)", zorder=3)
    fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", lw=1.5, zorder=2, label="Pareto front (shipped)")
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="tab:red", lw=1.5, zorder=4)
    for (x, y), r in zip([*xy, *((float(r[xk]), float(r[yk])) for r in old)], [*pts, *old], strict=True):
        ax.annotate(r["point"].split("-")[0], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_title("points labelled by index (p00 ...), see the table", fontsize=9)
    ax.set_xlabel("latency p50, batch 1 (ms)  - lower is better")
    ax.set_ylabel(("top-1" if yk == "int8_top1" else "agreement with FP32") + "  - higher is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return png_base64(png_bytes(fig)), [pts[i]["point"] for i in front]


def render_html(doc: dict[str, Any], columns: Sequence[str] = COLUMNS) -> str:
    """sweep.html from sweep.json's content (lcpipe.render.html.render_template: autoescape, undefined
    names are errors) with the cell filters sweep.html.j2 uses."""
    from lcpipe.render.html import render_template

    # what the page may show but a row or executor may lack (a failed point, a local run) is None, not undefined
    rows = [dict.fromkeys((*columns, "threads", "overrides")) | r for r in doc["points"]]
    for r in rows:
        r["overrides"] = r["overrides"] or {}
    machine = {**doc["machine"], "executor": {"node_cpus": None, **(doc["machine"].get("executor") or {})}}
    doc = {**doc, "points": rows, "machine": machine}
    png, front = scatter_png(rows)
    fleet = fleet_doc(doc.get("fleet") or [], rows)
    return render_template("sweep.html.j2", filters={"pct": pct, "ms": ms, "mb": mb, "num": count}, doc=doc,
                           png=png, front=set(front), front_order=front, swept=doc["swept"], fleet=fleet)
