"""The fleet view: one timing row per (point, CPU kind) and a Pareto front per kind.

A point's accuracy comes from its one full run; only latency and throughput differ per kind.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lcpipe.fileio import atomic_path
from lcpipe.render.format import MISSING, fixed
from lcpipe.sweep.results import _ms, pareto_front

FLEET_FILE = "fleet.json"  # a point's fleet rows, kept in its run dir (a rerun re-times only missing kinds)
TIMING = ("latency_p50_fp32_ms", "latency_p50_int8_ms", "latency_speedup", "throughput_fp32", "throughput_int8",
          "throughput_speedup")
FLEET_COLUMNS = ("point", "cpu_kind", "status", "source", "node_id", "hostname", "cpu_model", "isa", "cores",
                 "threads", *TIMING, "error")


def fleet_row(row: dict[str, Any], node: dict[str, Any], *, source: str) -> dict[str, Any] | None:
    """A timing row from a point's own run (``source='point'``) or a re-time; None if untimed."""
    if row.get("latency_p50_int8_ms") is None and row.get("throughput_int8") is None:
        return None
    out = {"point": row["point"], "cpu_kind": node.get("cpu_kind"), "status": "ok", "source": source,
           **{k: node.get(k) for k in ("node_id", "hostname", "cpu_model", "isa", "cores")},
           "threads": row.get("threads")}
    out.update({k: row.get(k) for k in TIMING})
    if out["throughput_speedup"] is None and row.get("throughput_fp32") and row.get("throughput_int8"):
        out["throughput_speedup"] = round(row["throughput_int8"] / row["throughput_fp32"], 4)
    return out


def failed_fleet_row(point: str, node: dict[str, Any], error: str) -> dict[str, Any]:
    return {"point": point, "cpu_kind": node.get("cpu_kind"), "status": "failed", "source": "retime",
            **{k: node.get(k) for k in ("node_id", "hostname", "cpu_model", "isa", "cores")}, "error": error}


def accuracy_axis(rows: list[dict[str, Any]]) -> str | None:
    """INT8 top-1 when labels give one, else agreement with FP32 (as the scatter does)."""
    ok = [r for r in rows if r.get("status") != "failed"]
    if ok and all(r.get("int8_top1") is not None for r in ok) and any(r["int8_top1"] for r in ok):
        return "int8_top1"
    if ok and all(r.get("agreement") is not None for r in ok):
        return "agreement"
    return None


def fronts(fleet: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """CPU kind -> the points on its Pareto front (INT8 latency on that kind vs the point's accuracy)."""
    axis = accuracy_axis(rows)
    if axis is None:
        return {}
    acc = {r["point"]: r.get(axis) for r in rows}
    out = {}
    for kind in kinds(fleet):
        pts = [f for f in fleet if f["cpu_kind"] == kind and f["status"] == "ok"
               and f.get("latency_p50_int8_ms") is not None and acc.get(f["point"]) is not None]
        front = pareto_front([(float(f["latency_p50_int8_ms"]), float(acc[f["point"]])) for f in pts])
        out[kind] = [pts[i]["point"] for i in front]
    return out


def kinds(fleet: list[dict[str, Any]]) -> list[str]:
    return sorted({str(f["cpu_kind"]) for f in fleet})


def fleet_doc(fleet: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What sweep.html shows: point x kind cells, each kind's nodes and front."""
    if not fleet:
        return None
    ks = kinds(fleet)
    cells = {(f["point"], str(f["cpu_kind"])): f for f in fleet}
    points = [r["point"] for r in rows if any((r["point"], k) in cells for k in ks)]
    nodes = {k: sorted({f"{f.get('cpu_model')} [{f.get('isa')}] on {str(f.get('node_id') or '?')[:12]}"
                        for f in fleet if str(f["cpu_kind"]) == k}) for k in ks}
    return {"kinds": ks, "rows": [{"point": p, "cells": [cells.get((p, k)) for k in ks]} for p in points],
            "fronts": fronts(fleet, rows), "nodes": nodes, "axis": accuracy_axis(rows)}


def write_fleet_csv(path: Path, fleet: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FLEET_COLUMNS)
        for r in sorted(fleet, key=lambda r: (r["point"], str(r["cpu_kind"]))):
            w.writerow(["" if r.get(c) is None else r.get(c) for c in FLEET_COLUMNS])


def format_fleet(fleet: list[dict[str, Any]]) -> str:
    """Terminal table: point x CPU kind."""
    lines = [["point", "CPU kind", "status", "p50 FP32", "p50 INT8", "speed-up", "img/s INT8", "from", "node"]]
    for f in sorted(fleet, key=lambda r: (r["point"], str(r["cpu_kind"]))):
        ok = f["status"] == "ok"
        lines.append([f["point"], str(f["cpu_kind"]), f["status"] if ok else f"failed: {f.get('error')}",
                      _ms(f.get("latency_p50_fp32_ms")), _ms(f.get("latency_p50_int8_ms")),
                      fixed(f.get("latency_speedup") or None, 2, "x"), fixed(f.get("throughput_int8") or None, 0),
                      str(f.get("source")), str(f.get("node_id") or MISSING)[:12]])
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines)
