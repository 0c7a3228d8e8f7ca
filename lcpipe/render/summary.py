"""Plain-text run summary printed by `lcpipe run` (the report stage writes md/html/json).

Reads the metrics.json layout (lcpipe.metrics; keys documented in the README).
"""

from __future__ import annotations

from typing import Any

from lcpipe.render.format import fixed, num, pct


def render_summary(metrics: dict[str, Any]) -> str:
    lines = [*_accuracy_lines(metrics), *_speed_lines(metrics), *_e2e_lines(metrics), *_quantize_lines(metrics),
             *_plan_lines(metrics)]
    cpu = metrics.get("cpu") or {}
    if cpu:
        lines.append(f"cpu: {cpu.get('model')} ({cpu.get('isa')}), threads {metrics.get('threads')}")
    gates = metrics.get("gates") or []
    if gates:
        lines.append(f"{'gate':<24} {'value':>10} {'limit':>10} {'isa key':>12}  result")
        for g in gates:
            note = f"  ({g['note']})" if g.get("note") else ""
            lines.append(f"{g['name']:<24} {num(g['value']):>10} {num(g['threshold']):>10} "
                         f"{str(g.get('isa_key')):>12}  {'PASS' if g['passed'] else 'FAIL'}{note}")
    return "\n".join(lines)


def _accuracy_lines(metrics: dict[str, Any]) -> list[str]:
    acc = metrics.get("accuracy") or {}
    if not acc:
        return []
    f, i = acc.get("fp32", {}), acc.get("int8", {})
    n = acc.get("images")
    cos = acc.get("cosine")
    return [f"accuracy ({n} images): FP32 top-1 {pct(f.get('top1'))}, INT8 top-1 {pct(i.get('top1'))}, "
            f"agreement {pct(acc.get('agreement'))}, cosine {fixed(cos, 5)}"]


def _speed_lines(metrics: dict[str, Any]) -> list[str]:
    lat = metrics.get("latency_ms") or {}
    sp = metrics.get("speedup") or {}
    if not lat:
        return []
    line = (f"latency p50 (batch 1): FP32 {_ms(lat, 'fp32')} ms, INT8 {_ms(lat, 'int8')} ms, "
            f"speedup {fixed(sp.get('latency_p50'), 2, 'x')}; throughput speedup {fixed(sp.get('throughput'), 2, 'x')}")
    out = [line]
    if "fp32_default" in lat:
        speedup = fixed(sp.get("latency_p50_vs_default"), 2, "x")
        out.append(f"  FP32 at the plugin default precision ({metrics.get('default_precision')}): "
                   f"{_ms(lat, 'fp32_default')} ms, INT8 speedup over it {speedup}")
    return out


def _e2e_lines(metrics: dict[str, Any]) -> list[str]:
    lat = (metrics.get("latency_ms") or {}).get("e2e") or {}
    ips = (metrics.get("throughput_ips") or {}).get("e2e") or {}
    sp = metrics.get("speedup") or {}
    if not lat and not ips:
        return []
    out = ["end to end (decoded image -> top-k, batch 1): "
           + ", ".join(f"{r} {_ms(lat, r)} ms" + (f" / {ips[r]:.0f} img/s" if r in ips else "") for r in lat or ips)]
    dec = (metrics.get("decode_ms") or {}).get("p50")
    lat_x, ips_x = fixed(sp.get("e2e_latency_p50"), 2, "x"), fixed(sp.get("e2e_throughput"), 2, "x")
    out.append(f"  INT8 image-input vs FP32 + Python preprocessing: latency {lat_x}, throughput {ips_x}"
               + ("" if dec is None else f"; decode {dec:.2f} ms apart"))
    for tag, c in ((metrics.get("accuracy") or {}).get("image_input") or {}).items():
        out.append(f"  {tag.upper()} image-input IR vs float IR: top-1 agreement {pct(c.get('top1_agreement'))}, "
                   f"max abs logit diff {num(c.get('max_abs_logit_diff'))}")
    return out


def _quantize_lines(metrics: dict[str, Any]) -> list[str]:
    q = metrics.get("quantize") or {}
    if not q:
        return []
    out = [f"quantize: preset {q.get('preset')}, {q.get('subset_size')} calibration images, "
           f"{q.get('quantized_ops')}/{q.get('quantizable_ops')} convs+matmuls INT8, {q.get('seconds')} s"]
    ac = q.get("accuracy_control")
    if ac:
        out.append(f"  accuracy control reverted {ac.get('reverted_ops')} of {ac.get('ptq_quantized_ops')} quantized "
                   f"ops to floating point{' - MOST OF THE MODEL' if ac.get('mostly_reverted') else ''}")
    return out


def _plan_lines(metrics: dict[str, Any]) -> list[str]:
    """Which plan won (plainly when it is not INT8): the "INT8" figures above are that plan's."""
    p = metrics.get("plan")
    if not p:
        return []
    from lcpipe.render.plan import plan_headline

    n = len(p.get("candidates") or [])
    out = [f"plan: {plan_headline(p)}",
           f"  {n} candidates measured in {p.get('search_seconds')} s; the INT8 figures above are this plan's"]
    return out


def _ms(lat: dict[str, Any], name: str) -> str:
    v = (lat.get(name) or {}).get("p50")
    return "n/a" if v is None else f"{v:.2f}"
