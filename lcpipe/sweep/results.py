"""Sweep results: the row columns, sweep.json / sweep.csv, the terminal table and the Pareto front."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from lcpipe.fileio import atomic_path, write_json
from lcpipe.render.format import fixed, pct
from lcpipe.sweep.schema import Sweep

COLUMNS = ("point", "status", "arch", "params", "flops", "preset", "fp32_top1", "int8_top1", "top1_drop",
           "agreement", "cosine", "latency_p50_fp32_ms", "latency_p50_int8_ms", "latency_speedup",
           "throughput_fp32", "throughput_int8", "size_fp32", "size_int8", "size_onnx", "images", "seconds",
           "error_class", "exit_code", "error", "run_dir", "cpu_kind", "cpu_model", "node_id")


def write_results(sweep: Sweep, rows: list[dict[str, Any]], machine: dict[str, Any],
                  fleet: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    sweep.out.mkdir(parents=True, exist_ok=True)
    keys = _swept_keys(sweep)
    doc = {"sweep": sweep.name, "source": str(sweep.source), "base": str(sweep.base), "swept": keys,
           "machine": machine, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "points": rows,
           "fleet": fleet or []}
    files = {"json": sweep.out / "sweep.json", "csv": sweep.out / "sweep.csv", "html": sweep.out / "sweep.html"}
    write_json(files["json"], doc)
    _write_csv(files["csv"], rows, keys)
    if fleet:
        from lcpipe.sweep.fleet import write_fleet_csv

        files["fleet_csv"] = sweep.out / "sweep_fleet.csv"
        write_fleet_csv(files["fleet_csv"], fleet)
    from lcpipe.sweep.render import render_html  # matplotlib/jinja2 only when writing

    html = render_html(doc)
    with atomic_path(files["html"]) as tmp:
        tmp.write_text(html)
    return files


def _swept_keys(sweep: Sweep) -> list[str]:
    return list(dict.fromkeys(k for p in sweep.points for k in p.overrides))


def _write_csv(path: Path, rows: list[dict[str, Any]], keys: list[str]) -> None:
    extra = sorted({k for r in rows for k in r if k.startswith("sharded_")})
    cols = ["point", *keys, *COLUMNS[1:], *extra]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            ov = r.get("overrides") or {}
            w.writerow([_cell(ov.get(c) if c in keys and c not in r else r.get(c)) for c in cols])


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return v


def format_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """Plain-text table for the terminal."""
    head = ["point", *keys, "status", "top1 fp32", "top1 int8", "agree", "p50 fp32", "p50 int8", "int8 MB"]
    lines = [head]
    for r in rows:
        ov = r.get("overrides") or {}
        lines.append([r["point"], *(str(ov.get(k, "")) for k in keys), r["status"], _pct(r.get("fp32_top1")),
                      _pct(r.get("int8_top1")), _pct(r.get("agreement")), _ms(r.get("latency_p50_fp32_ms")),
                      _ms(r.get("latency_p50_int8_ms")), _mb(r.get("size_int8"))])
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    for r in rows:
        if r["status"] == "failed":
            out.append(f"{r['point']}: {r.get('error_class')} error (exit {r.get('exit_code')}): {r.get('error')}")
    return "\n".join(out)


def _pct(v: Any) -> str:
    return pct(v)


def _ms(v: Any) -> str:
    return fixed(v, 2, " ms")


def _mb(v: Any) -> str:
    return fixed(None if v is None else v / 1e6, 2)


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
