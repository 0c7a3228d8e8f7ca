"""Charts (matplotlib, Agg backend: no display on build machines), returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    pyplot().close(fig)
    return buf.getvalue()


def report_chart(m: dict[str, Any]) -> bytes:
    """metrics.json: accuracy (or agreement/cosine when unlabeled) with 95 % intervals, latency, and the
    speed-ups with their 95 % intervals from the interleaved rounds."""
    plt = pyplot()
    from lcpipe.metrics import model_latency

    acc, lat = m["accuracy"], model_latency(m)
    sp = {k: v for k, v in (m.get("speedup") or {}).items()
          if k != "size" and not k.endswith("_ci95") and v is not None}
    panels = 1 + bool(lat) + bool(sp)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.4), squeeze=False)
    ax = axes[0][0]
    if acc["labeled"]:  # a figure that was not measured (null: e.g. NaN outputs) gets no bar
        names = [n for n in ("fp32", "int8", "int8_ptq", "onnxruntime") if n in acc and acc[n]["top1"] is not None]
        values = [100 * acc[n]["top1"] for n in names]
        _bars(ax, [short_name(n, m) for n in names], values, "top-1 (%), whisker: 95 % interval",
              _ci_err(values, [acc[n].get("top1_ci95") for n in names], 100))
    else:
        names = [n for n in ("agreement", "cosine") if acc[n] is not None]
        values = [100 * acc[n] for n in names]
        _bars(ax, names, values, f"{short_name('int8', m)} vs FP32 (%), whisker: 95 % interval",
              _ci_err(values, [acc.get(f"{n}_ci95") for n in names], 100))
    if lat:
        names = list(lat)
        p50 = [lat[n]["p50"] for n in names]
        err = [[0] * len(names), [lat[n]["p90"] - lat[n]["p50"] for n in names]]
        _bars(axes[0][1], [short_name(n, m) for n in names], p50, "batch-1 latency p50 ms (whisker: p90)", err)
    if sp:
        ax = axes[0][panels - 1]
        names = list(sp)
        values = [sp[n] for n in names]
        _bars(ax, [n.replace("_", " ") for n in names], values, "speed-up (whisker: 95 % interval)",
              _ci_err(values, [m["speedup"].get(f"{n}_ci95") for n in names], 1))
        ax.axhline(1.0, color="0.4", lw=0.8, ls="--")
        ax.tick_params(axis="x", labelrotation=30)
    return png_bytes(fig)


def _ci_err(values: list[float], intervals: list[Any], scale: float) -> list[list[float]]:
    """matplotlib yerr (below, above) from [low, high] intervals; 0 where there is none."""
    low = [0.0 if iv is None else max(0.0, v - scale * iv[0]) for v, iv in zip(values, intervals, strict=True)]
    high = [0.0 if iv is None else max(0.0, scale * iv[1] - v) for v, iv in zip(values, intervals, strict=True)]
    return [low, high]


def short_name(name: str, m: dict[str, Any]) -> str:
    from lcpipe.render.shipped import model_label

    prec = m.get("inference_precision") or {}
    return {"fp32": f"FP32 ({prec.get('fp32', '?')})", "int8": model_label(m), "int8_ptq": "INT8 plain PTQ",
            "fp32_default": f"FP32 ({m.get('default_precision')})", "onnxruntime": "ORT FP32"}.get(name, name)


def _bars(ax: Any, names: list[str], values: list[float], title: str, err: Any = None) -> None:
    colors = ["#4c72b0" if n.startswith("FP32") else "#dd8452" if n.startswith(("INT8", "shipped")) else "#8c8c8c"
              for n in names]
    bars = ax.bar(names, values, color=colors, yerr=err, capsize=4)
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], label_type="center", color="white", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)


def bench_chart(result: dict[str, Any]) -> bytes:
    """bench.json: two bar panels, batch-1 p50 latency (whisker to p90) and batch-N throughput per engine."""
    plt = pyplot()
    rows = [r for r in result["engines"] if r["available"]]
    names = [r["label"].replace(" (lcpipe)", "\n(lcpipe)").replace(", plugin", ",\nplugin") for r in rows]
    colors = ["#dd8452" if r["precision"] == "int8" else "#4c72b0" if r["runtime"] == "openvino" else "#8c8c8c"
              for r in rows]
    p50 = [r["latency_ms"]["p50"] for r in rows]
    err = [[0] * len(rows), [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in rows]]
    ips = [r["throughput"]["images_per_s"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(rows) + 1.6))
    for ax, vals, title, e in ((axes[0], p50, "batch-1 latency p50 ms (whisker: p90)", err),
                               (axes[1], ips, f"throughput img/s (batch {result['batch']})", None)):
        bars = ax.barh(names, vals, color=colors, xerr=e, capsize=3)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v < 100 else f"{v:.0f}" for v in vals], padding=2, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
    axes[1].set_yticklabels([])
    cpu = result["cpu"]
    fig.suptitle(f"{result['model'].get('arch') or result['pipeline']} - {cpu['model']} ({cpu['isa']}), "
                 f"{result['threads']} threads", fontsize=10)
    return png_bytes(fig)
