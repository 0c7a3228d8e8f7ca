"""Plain-text run summary printed by `lcpipe run` (the report stage writes md/html/json)."""

from __future__ import annotations

from typing import Any


def render_summary(metrics: dict[str, Any]) -> str:
    lines = []
    acc = metrics.get("accuracy") or {}
    if acc:
        f, i = acc.get("fp32", {}), acc.get("int8", {})
        n = acc.get("images")
        lines.append(f"accuracy ({n} images): FP32 top-1 {_pct(f.get('top1'))}, INT8 top-1 {_pct(i.get('top1'))}, "
                     f"agreement {_pct(acc.get('agreement'))}, cosine {acc.get('cosine', float('nan')):.5f}")
    lat = metrics.get("latency_ms") or {}
    sp = metrics.get("speedup") or {}
    if lat:
        lines.append(f"latency p50 (batch 1): FP32 {lat.get('fp32', {}).get('p50', float('nan')):.2f} ms, "
                     f"INT8 {lat.get('int8', {}).get('p50', float('nan')):.2f} ms, "
                     f"speedup {sp.get('latency_p50', float('nan')):.2f}x; throughput speedup "
                     f"{sp.get('throughput', float('nan')):.2f}x")
    cpu = metrics.get("cpu") or {}
    if cpu:
        lines.append(f"cpu: {cpu.get('model')} ({cpu.get('isa')}), threads {metrics.get('threads')}")
    gates = metrics.get("gates") or []
    if gates:
        lines.append(f"{'gate':<24} {'value':>10} {'limit':>10}  result")
        for g in gates:
            lines.append(f"{g['name']:<24} {_num(g['value']):>10} {_num(g['threshold']):>10}  "
                         f"{'PASS' if g['passed'] else 'FAIL'}")
    return "\n".join(lines)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
