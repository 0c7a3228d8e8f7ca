"""Plain-text run summary printed by `lcpipe run` (the report stage writes md/html/json).

Reads the metrics.json layout (lcpipe.metrics; keys documented in the README). The first line says
what ships and its speed-up, with its interval, against what a user gets without lcpipe
(lcpipe.render.shipped); the second what the verdict rests on (verdict_line). The shipped model is
called INT8 only when it is INT8.
"""

from __future__ import annotations

from typing import Any

from lcpipe.render.format import MISSING, ci, fixed, num, pct
from lcpipe.render.shipped import model_label, route_labels, shipped_headline, shipped_of, speedup_headline


def render_summary(metrics: dict[str, Any]) -> str:
    lines = [f"{shipped_headline(metrics)}: {speedup_headline(metrics)}", verdict_line(metrics),
             *_accuracy_lines(metrics), *_speed_lines(metrics), *_e2e_lines(metrics), *timing_lines(metrics),
             *_quantize_lines(metrics), *_plan_lines(metrics)]
    cpu = metrics.get("cpu") or {}
    if cpu:
        lines.append(f"cpu: {cpu.get('model')} ({cpu.get('isa')}), threads {metrics.get('threads')}")
    gates = metrics.get("gates") or []
    if gates:
        lines.append(f"{'gate':<26} {'value':>8} {'interval':>22} {'limit':>7} {'isa key':>8}  {'verdict':<12}  "
                     "baseline")
        for g in gates:
            note = f"  ({g['note']})" if g.get("note") else ""
            lines.append(f"{g['name']:<26} {num(g['value']):>8} {interval_cell(g):>22} {num(g['threshold']):>7} "
                         f"{str(g.get('isa_key')):>8}  {gate_verdict(g).upper():<12}  {g.get('baseline') or '-'}{note}")
        lines.append(f"verdict: {overall_verdict(metrics).upper()}")
    return "\n".join(lines)


def gate_verdict(g: dict[str, Any]) -> str:
    """pass / fail / inconclusive (a row written before verdicts existed: from ``passed``)."""
    return g.get("verdict") or ("pass" if g.get("passed") else "fail")


def overall_verdict(m: dict[str, Any]) -> str:
    """The run's verdict: metrics.json's, else from its gate rows (fail > inconclusive > pass)."""
    from lcpipe.gates import overall

    if m.get("verdict"):
        return m["verdict"]
    if not m.get("gates") and m.get("passed") is False:
        return "fail"
    return overall(m.get("gates") or [])


def interval_cell(g: dict[str, Any]) -> str:
    """A gate's interval and its confidence ("[0.93, 1] @95%"), or why the value decides alone."""
    iv = g.get("interval")
    if iv is None:
        method = g.get("method") or ""
        return "exact" if "exact" in method else "point" if "point" in method else MISSING
    return f"[{iv[0]:.4g}, {iv[1]:.4g}] @{100 * (g.get('confidence') or 0):.3g}%"


def data_line(data: dict[str, Any]) -> str:
    """What the verdict images are, from metrics.json's ``data`` record (lcpipe.data.roles)."""
    tune = data.get("tune_images") or 0
    calib = data.get("calib_images") or 0
    if data.get("overlap"):
        disjoint = (f"{data['overlap']} verdict image(s) ALSO CALIBRATION IMAGES, "
                    "allowed by data.allow_calibration_overlap")
    else:
        disjoint = "disjoint"
    how = ""
    if data.get("tune_from") == "data.eval split":
        split = data.get("split") or {}
        how = f", split from data.eval: tune_fraction {split.get('tune_fraction')}, seed {split.get('seed')}"
    elif data.get("tune_from") == "data.tune":
        how = ", tune images from data.tune"
    return f"verdict on {data.get('verdict_images')} images ({tune} tune, {calib} calibration, {disjoint}{how})"


def p_value(p: float) -> str:
    """Two significant digits, "1.0" rather than "1"."""
    text = f"{p:.2g}"
    return text if "." in text or "e" in text else f"{text}.0"


def verdict_line(m: dict[str, Any]) -> str:
    """What the verdict rests on, in one line: the images, the shipped model's flips against FP32 ("INT8
    vs FP32" only for an INT8 model), the model-only latency speed-up with its interval."""
    data = m.get("data") or {}
    acc = m.get("accuracy") or {}
    if data:
        parts = [data_line(data)]
    else:
        parts = [f"verdict on {acc.get('images')} images"]
    versus = f"{'INT8' if shipped_of(m)['int8'] else 'shipped'} vs FP32"
    flips = acc.get("flips") or {}
    if flips.get("lost") is not None:
        p = flips.get("mcnemar_p")
        parts.append(f"{versus}: {flips['lost']} lost, {flips['gained']} gained"
                     + ("" if p is None else f", McNemar p = {p_value(p)}"))
    elif acc:
        parts.append(f"{versus} (unlabeled): agreement {pct(acc.get('agreement'))}"
                     + ci(acc.get("agreement_ci95"), 100, 1, " %"))
    sp = m.get("speedup") or {}
    if sp.get("latency_p50") is not None:
        fp32 = (m.get("inference_precision") or {}).get("fp32") or "f32"
        parts.append(f"model-only latency speed-up {sp['latency_p50']:.2f}x" + ci(sp.get("latency_p50_ci95"))
                     + f" vs FP32 ({fp32})")
    return "; ".join(parts)


def timing_lines(metrics: dict[str, Any]) -> list[str]:
    t = metrics.get("timing")
    if not t:
        return []
    load = ((metrics.get("latency_ms") or {}).get("fp32") or {}).get("load_avg") or {}
    before, after = (load.get("before") or [None])[0], (load.get("after") or [None])[0]
    why = {"decided": "every speed-up gate decided", "budget": "time budget reached",
           "max_rounds": "maximum rounds"}.get(t.get("stop_reason") or "", t.get("stop_reason"))
    line = f"timing: {t['rounds']} interleaved rounds ({t['mode']}) in {t['seconds']} s, stopped: {why}"
    if before is not None and after is not None:
        line += f"; load average {before} -> {after}"
    if t.get("undecided"):
        line += f"; undecided: {', '.join(t['undecided'])}"
    return [line]


def _accuracy_lines(metrics: dict[str, Any]) -> list[str]:
    acc = metrics.get("accuracy") or {}
    if not acc:
        return []
    f, i = acc.get("fp32", {}), acc.get("int8", {})
    n = acc.get("images")
    cos = acc.get("cosine")
    fp32 = f"FP32 ({(metrics.get('inference_precision') or {}).get('fp32') or 'f32'})"
    return [f"accuracy ({n} images): {fp32} top-1 {pct(f.get('top1'))}{ci(f.get('top1_ci95'), 100, 1)}, "
            f"{model_label(metrics)} top-1 {pct(i.get('top1'))}{ci(i.get('top1_ci95'), 100, 1)}, "
            f"agreement {pct(acc.get('agreement'))}{ci(acc.get('agreement_ci95'), 100, 1)}, "
            f"cosine {fixed(cos, 5)}{ci(acc.get('cosine_ci95'), 1, 5)}"]


def _speed_lines(metrics: dict[str, Any]) -> list[str]:
    lat = metrics.get("latency_ms") or {}
    sp = metrics.get("speedup") or {}
    if not lat:
        return []
    label, fp32 = model_label(metrics), (metrics.get("inference_precision") or {}).get("fp32") or "f32"
    shipped = shipped_of(metrics)
    out = []
    if "fp32_default" in lat:
        speedup = fixed(shipped.get("speedup_vs_default_latency_p50"), 2, "x")
        out.append(f"model only, p50 (batch 1): {label} {_ms(lat, 'int8')} ms, FP32 at the plugin default "
                   f"precision ({metrics.get('default_precision')}) {_ms(lat, 'fp32_default')} ms: {speedup}"
                   f"{ci(shipped.get('speedup_vs_default_latency_p50_ci95'))}")
    out.append(f"{'  vs ' if out else 'model only, p50 (batch 1): '}FP32 ({fp32}) {_ms(lat, 'fp32')} ms"
               + ("" if out else f", {label} {_ms(lat, 'int8')} ms")
               + f": {fixed(sp.get('latency_p50'), 2, 'x')}{ci(sp.get('latency_p50_ci95'))}; "
               f"throughput {fixed(sp.get('throughput'), 2, 'x')}{ci(sp.get('throughput_ci95'))}")
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

    def x(name: str) -> str:
        return fixed(sp.get(name), 2, "x") + ci(sp.get(f"{name}_ci95"))

    out.append(f"  {names['int8_image']}: latency {x('e2e_latency_p50_vs_default')}, "
               f"throughput {x('e2e_throughput_vs_default')} vs the baseline; "
               f"{x('e2e_latency_p50')}, {x('e2e_throughput')} vs FP32 {fp32} + Python"
               + ("" if dec is None else f"; decode {dec:.2f} ms apart"))
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
    speedup = p.get("speedup_vs_fp32_f32")
    versus = "" if speedup is None else f"; {speedup:.2f}x{ci(p.get('speedup_vs_fp32_f32_ci95'))} vs FP32 at f32"
    out = [f"plan: {plan_headline(p)}",
           f"  {n} candidates measured in {p.get('search_seconds')} s, fidelity checked on {p.get('eval_images')} "
           f"tune images{versus}; the {model_label(metrics)} figures above are this plan's (judged on the verdict "
           "images)"]
    return out


def _ms(lat: dict[str, Any], name: str) -> str:
    v = (lat.get(name) or {}).get("p50")
    return "n/a" if v is None else f"{v:.2f}"
