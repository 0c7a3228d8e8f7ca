"""Whether a bundle may be served: every gate of the run that wrote it passed.

A bundle is written whatever the gates said (the run's exit code carries the verdict), so the bundle
itself has to say when it must not be served: at the top of README.txt, in metrics.json
(``bundle.servable``) and on stderr when serve.py starts. Gate rows are read generically: a row's
``verdict`` ("pass" | "fail" | "inconclusive") when it has one, else its ``passed`` flag; anything but
"pass" blocks serving.
"""

from __future__ import annotations

from typing import Any


def gate_verdict(row: dict[str, Any]) -> str:
    verdict = row.get("verdict")
    if isinstance(verdict, str) and verdict:
        return verdict
    return "pass" if row.get("passed") else "fail"


def servability(metrics: dict[str, Any]) -> dict[str, Any]:
    """``{servable, verdict, reasons, gates}`` for metrics.json's ``bundle`` section: reasons name each
    gate that did not pass, with its figure and limit."""
    rows = [r for r in metrics.get("gates") or [] if isinstance(r, dict)]
    blocking = [(r, gate_verdict(r)) for r in rows if gate_verdict(r) != "pass"]
    reasons = [_reason(r, v) for r, v in blocking]
    if not reasons and metrics.get("passed") is False:  # a verdict without rows to name
        reasons = ["the run did not pass its gates (metrics.json passed: false)"]
    verdicts = {v for _, v in blocking}
    verdict = "pass" if not reasons else "inconclusive" if verdicts == {"inconclusive"} else "fail"
    return {"servable": not reasons, "verdict": verdict, "reasons": reasons, "gates": len(rows)}


def do_not_serve_line(s: dict[str, Any]) -> str | None:
    """The README's first line for a bundle that must not be served (None: servable)."""
    if s["servable"]:
        return None
    return "DO NOT SERVE: " + "; ".join(s["reasons"])


def _reason(row: dict[str, Any], verdict: str) -> str:
    value, limit = row.get("value"), row.get("threshold")
    text = f"gate {row.get('name', '?')} {verdict}: " + ("not measured" if value is None else _num(value))
    if limit is not None:
        text += f" (limit {_num(limit)})"
    interval = row.get("interval")
    if isinstance(interval, list) and len(interval) == 2:
        text += f", 95% interval [{_num(interval[0])}, {_num(interval[1])}]"
    if row.get("note"):
        text += f", {row['note']}"
    return text


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
