"""Plain-text run summary printed by `lcpipe run` (the report stage writes md/html/json).

Reads the metrics.json layout (lcpipe.metrics; keys documented in the README). The first line says
what ships and its speed-up against what a user gets without lcpipe (lcpipe.render.shipped); the
shipped model is called INT8 only when it is INT8.
"""

from __future__ import annotations

from typing import Any

from lcpipe.render.format import fixed, num, pct
from lcpipe.render.shipped import model_label, route_labels, shipped_headline, shipped_of, speedup_headline


def render_summary(metrics: dict[str, Any]) -> str:
    lines = [f"{shipped_headline(metrics)}: {speedup_headline(metrics)}", *_accuracy_lines(metrics),
             *_speed_lines(metrics), *_e2e_lines(metrics), *_quantize_lines(metrics), *_plan_lines(metrics)]
    cpu = metrics.get("cpu") or {}
    if cpu:
        lines.append(f"cpu: {cpu.get('model')} ({cpu.get('isa')}), threads {metrics.get('threads')}")
    gates = metrics.get("gates") or []
    if gates:
        lines.append(f"{'gate':<24} {'value':>10} {'limit':>10} {'isa key':>12}  result  baseline")
        for g in gates:
            note = f"  ({g['note']})" if g.get("note") else ""
            lines.append(f"{g['name']:<24} {num(g['value']):>10} {num(g['threshold']):>10} "
                         f"{str(g.get('isa_key')):>12}  {'PASS' if g['passed'] else 'FAIL'}    "
                         f"{g.get('baseline') or '-'}{note}")
    return "\n".join(lines)


def _accuracy_lines(metrics: dict[str, Any]) -> list[str]:
    acc = metrics.get("accuracy") or {}
    if not acc:
        return []
    f, i = acc.get("fp32", {}), acc.get("int8", {})
    n = acc.get("images")
    cos = acc.get("cosine")
    fp32 = f"FP32 ({(metrics.get('inference_precision') or {}).get('fp32') or 'f32'})"
    return [f"accuracy ({n} images): {fp32} top-1 {pct(f.get('top1'))}, {model_label(metrics)} top-1 "
            f"{pct(i.get('top1'))}, agreement {pct(acc.get('agreement'))}, cosine {fixed(cos, 5)}"]


def _speed_lines(metrics: dict[str, Any]) -> list[str]:
    lat = metrics.get("latency_ms") or {}
    sp = metrics.get("speedup") or {}
    if not lat:
        return []
    label, fp32 = model_label(metrics), (metrics.get("inference_precision") or {}).get("fp32") or "f32"
    out = []
    if "fp32_default" in lat:
        speedup = fixed(shipped_of(metrics).get("speedup_vs_default_latency_p50"), 2, "x")
        out.append(f"model only, p50 (batch 1): {label} {_ms(lat, 'int8')} ms, FP32 at the plugin default "
                   f"precision ({metrics.get('default_precision')}) {_ms(lat, 'fp32_default')} ms: {speedup}")
    out.append(f"{'  vs ' if out else 'model only, p50 (batch 1): '}FP32 ({fp32}) {_ms(lat, 'fp32')} ms"
               + ("" if out else f", {label} {_ms(lat, 'int8')} ms")
               + f": {fixed(sp.get('latency_p50'), 2, 'x')}; throughput {fixed(sp.get('throughput'), 2, 'x')}")
    return out


def _e2e_lines(metrics: dict[str, Any]) -> list[str]:
    lat = (metrics.get("latency_ms") or {}).get("e2e") or {}
    ips = (metrics.get("throughput_ips") or {}).get("e2e") or {}
    sp = metrics.get("speedup") or {}
    if not lat and not ips:
        return []
    names = route_labels(metrics, short=True)
    out = ["end to end (decoded image -> top-k, batch 1): "
           + ", ".join(f"{names.get(r, r)} {_ms(lat, r)} ms" + (f" / {ips[r]:.0f} img/s" if r in ips else "")
                       for r in lat or ips)]
    dec = (metrics.get("decode_ms") or {}).get("p50")
    fp32 = (metrics.get("inference_precision") or {}).get("fp32") or "f32"
    out.append(f"  {names['int8_image']}: latency {fixed(sp.get('e2e_latency_p50_vs_default'), 2, 'x')}, "
               f"throughput {fixed(sp.get('e2e_throughput_vs_default'), 2, 'x')} vs the baseline; "
               f"{fixed(sp.get('e2e_latency_p50'), 2, 'x')}, {fixed(sp.get('e2e_throughput'), 2, 'x')} vs FP32 {fp32} "
               "+ Python" + ("" if dec is None else f"; decode {dec:.2f} ms apart"))
    tags = {"fp32": "FP32", "int8": model_label(metrics)}
    for tag, c in ((metrics.get("accuracy") or {}).get("image_input") or {}).items():
        out.append(f"  {tags.get(tag, tag)} image-input IR vs float IR: top-1 agreement "
                   f"{pct(c.get('top1_agreement'))}, max abs logit diff {num(c.get('max_abs_logit_diff'))}")
    return out


def _quantize_lines(metrics: dict[str, Any]) -> list[str]:
    q = metrics.get("quantize") or {}
    if not q:
        return []
    shipped = shipped_of(metrics)
    note = "" if shipped["int8"] else f"; not shipped (the plan chose the FP32 IR at {shipped['precision']})"
    out = [f"quantize: preset {q.get('preset')}, {q.get('subset_size')} calibration images, "
           f"{q.get('quantized_ops')}/{q.get('quantizable_ops')} convs+matmuls quantized, {q.get('seconds')} s{note}"]
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
           f"  {n} candidates measured in {p.get('search_seconds')} s; the {model_label(metrics)} figures above are "
           "this plan's"]
    return out


def _ms(lat: dict[str, Any], name: str) -> str:
    v = (lat.get(name) or {}).get("p50")
    return "n/a" if v is None else f"{v:.2f}"
