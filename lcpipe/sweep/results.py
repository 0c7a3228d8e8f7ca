"""Sweep results: sweep.json, sweep.csv (and sweep_fleet.csv), sweep.html (lcpipe.render.sweep)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from lcpipe.fileio import atomic_path, write_json
from lcpipe.render.sweep import COLUMNS
from lcpipe.sweep.schema import Sweep


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
    from lcpipe.render.sweep import render_html  # matplotlib/jinja2 only when writing

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
