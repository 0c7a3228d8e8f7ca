"""The precision plan in report.md/html and the deploy README: the candidate table and one plain sentence."""

from __future__ import annotations

from typing import Any


def plan_headline(p: dict[str, Any]) -> str:
    """One plain sentence; says so when the shipped model is not INT8 (and then says INT8 only of the
    candidates it beat)."""
    head = f"shipped plan {p['chosen']}: {p['description']}"
    if not p["int8"]:
        tried = any(c.get("int8") for c in p.get("candidates") or [])
        head += ("; no INT8 candidate was faster within the gates" if tried or "candidates" not in p
                 else "; only float candidates were measured")
    return f"{head} (compile with INFERENCE_PRECISION_HINT={p['inference_precision']})."


def plan_rows(p: dict[str, Any]) -> list[list[str]]:
    """The candidate table (first row: header), fastest first, as report.md/html show it."""
    def num(v: Any, fmt: str) -> str:
        return "n/a" if v is None else fmt.format(v)

    head = ["candidate", "p50 ms", "p90 ms", "agreement", "cosine", "top-1 drop", "gates", "result"]
    return [head] + [[r["name"], num(r["p50"], "{:.3f}"), num(r["p90"], "{:.3f}"), num(r["agreement"], "{:.2%}"),
                      num(r["cosine"], "{:.5f}"), num(r["top1_drop"], "{:.2%}"),
                      _gate_cell(r, p["eval_images"]),
                      ("CHOSEN: " if r["chosen"] else "") + r["why"]] for r in p["candidates"]]


def _gate_cell(r: dict[str, Any], images: int) -> str:
    if r["failed_gates"] is None:
        return "not checked" if r["p50"] is not None else "n/a"
    where = f" (first {r['fidelity_images']} images)" if (r.get("fidelity_images") or images) < images else ""
    return ("pass" if r["passed"] else "fail") + where
