"""The fleet rows: one timing row per (point, CPU kind), and sweep_fleet.csv (rendered, with a Pareto
front per kind, by lcpipe.render.sweep).

A point's accuracy comes from its one full run; only latency and throughput differ per kind.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lcpipe.fileio import atomic_path

FLEET_FILE = "fleet.json"  # a point's fleet rows, kept in its run dir (a rerun re-times only missing kinds)
TIMING = ("latency_p50_fp32_ms", "latency_p50_int8_ms", "latency_speedup", "throughput_fp32", "throughput_int8",
          "throughput_speedup", "timed_at")
FLEET_COLUMNS = ("point", "cpu_kind", "status", "source", "node_id", "hostname", "cpu_model", "isa", "cores",
                 "threads", *TIMING, "timed_earlier", "error")


def fleet_row(row: dict[str, Any], node: dict[str, Any], *, source: str,
              timed_earlier: bool = False) -> dict[str, Any] | None:
    """A timing row from a point's own run (``source='point'``) or a re-time; None if untimed.
    ``timed_earlier``: measured before this sweep run (not compared with this run's rows)."""
    if row.get("latency_p50_int8_ms") is None and row.get("throughput_int8") is None:
        return None
    out = {"point": row["point"], "cpu_kind": node.get("cpu_kind"), "status": "ok", "source": source,
           **{k: node.get(k) for k in ("node_id", "hostname", "cpu_model", "isa", "cores")},
           "threads": row.get("threads"), "timed_earlier": timed_earlier}
    out.update({k: row.get(k) for k in TIMING})
    if out["throughput_speedup"] is None and row.get("throughput_fp32") and row.get("throughput_int8"):
        out["throughput_speedup"] = round(row["throughput_int8"] / row["throughput_fp32"], 4)
    return out


def failed_fleet_row(point: str, node: dict[str, Any], error: str) -> dict[str, Any]:
    return {"point": point, "cpu_kind": node.get("cpu_kind"), "status": "failed", "source": "retime",
            **{k: node.get(k) for k in ("node_id", "hostname", "cpu_model", "isa", "cores")}, "error": error}


def write_fleet_csv(path: Path, fleet: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FLEET_COLUMNS)
        for r in sorted(fleet, key=lambda r: (r["point"], str(r["cpu_kind"]))):
            w.writerow(["" if r.get(c) is None else r.get(c) for c in FLEET_COLUMNS])
