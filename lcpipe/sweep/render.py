"""sweep.html: the accuracy-vs-latency scatter with its Pareto front, and the page itself."""

from __future__ import annotations

from typing import Any

from lcpipe.render.format import num
from lcpipe.sweep.results import COLUMNS, _mb, _ms, _pct, pareto_front


def _plot_axes(rows: list[dict[str, Any]]) -> tuple[str, str] | None:
    """INT8 latency against INT8 top-1 when labels exist, else against FP32 agreement."""
    timed = [r for r in rows if r["status"] != "failed" and r.get("latency_p50_int8_ms") is not None]
    if not timed:
        return None
    # all-zero top-1 (random weights, foreign labels) says nothing; agreement still does
    if all(r.get("int8_top1") is not None for r in timed) and any(r["int8_top1"] for r in timed):
        return "latency_p50_int8_ms", "int8_top1"
    if all(r.get("agreement") is not None for r in timed):
        return "latency_p50_int8_ms", "agreement"
    return None


def scatter_png(rows: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """Base64 PNG of accuracy vs latency with the Pareto front, and the front's point ids."""
    axes = _plot_axes(rows)
    if axes is None:
        return None, []
    from lcpipe.render.charts import _png, _pyplot
    from lcpipe.render.html import png_base64

    plt = _pyplot()  # Agg: no display on build machines
    xk, yk = axes
    pts = [r for r in rows if r["status"] != "failed" and r.get(xk) is not None and r.get(yk) is not None]
    xy = [(float(r[xk]), float(r[yk])) for r in pts]
    front = pareto_front(xy)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    # FP32 for reference: its own top-1, or agreement 1 with itself
    fp32 = [(r["latency_p50_fp32_ms"], r["fp32_top1"] if yk == "int8_top1" else 1.0) for r in pts
            if r.get("latency_p50_fp32_ms") is not None and (yk != "int8_top1" or r.get("fp32_top1") is not None)]
    if fp32:
        ax.scatter(*zip(*fp32, strict=True), marker="o", facecolors="none", edgecolors="0.6", label="FP32")
    ax.scatter([x for x, _ in xy], [y for _, y in xy], color="tab:blue", label="INT8", zorder=3)
    fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", lw=1.5, zorder=2, label="Pareto front (INT8)")
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="tab:red", lw=1.5, zorder=4)
    for (x, y), r in zip(xy, pts, strict=True):
        ax.annotate(r["point"].split("-")[0], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_title("points labelled by index (p00 ...), see the table", fontsize=9)
    ax.set_xlabel("latency p50, batch 1 (ms)  - lower is better")
    ax.set_ylabel(("top-1" if yk == "int8_top1" else "agreement with FP32") + "  - higher is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return png_base64(_png(fig)), [pts[i]["point"] for i in front]


def render_html(doc: dict[str, Any]) -> str:
    """The page (lcpipe.render.html.render_template: autoescape, undefined names are errors) with the
    table filters sweep.html.j2 uses."""
    from lcpipe.render.html import render_template
    from lcpipe.sweep.fleet import fleet_doc

    # what the page may show but a row or executor may lack (a failed point, a local run) is None, not undefined
    rows = [dict.fromkeys((*COLUMNS, "threads", "overrides")) | r for r in doc["points"]]
    for r in rows:
        r["overrides"] = r["overrides"] or {}
    machine = {**doc["machine"], "executor": {"node_cpus": None, **(doc["machine"].get("executor") or {})}}
    doc = {**doc, "points": rows, "machine": machine}
    png, front = scatter_png(rows)
    fleet = fleet_doc(doc.get("fleet") or [], rows)
    return render_template("sweep.html.j2", filters={"pct": _pct, "ms": _ms, "mb": _mb, "num": _num}, doc=doc,
                           png=png, front=set(front), front_order=front, swept=doc["swept"], fleet=fleet)


def _num(v: Any) -> str:
    """Params/MACs in millions, else lcpipe.render.format.num."""
    if isinstance(v, int) and v >= 10_000:
        return f"{v / 1e6:.2f} M"
    return num(v)
