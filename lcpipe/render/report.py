"""report.md and report.html from metrics.json: the same tables, gates first."""

from __future__ import annotations

from typing import Any

from lcpipe.metrics import model_latency
from lcpipe.render.charts import report_chart
from lcpipe.render.format import MISSING, ci, fixed, num, pct, times
from lcpipe.render.html import png_base64, render_template
from lcpipe.render.plan import plan_headline, plan_rows
from lcpipe.render.shipped import (
    baseline_label,
    model_label,
    route_labels,
    shipped_headline,
    shipped_of,
    speedup_headline,
)
from lcpipe.render.summary import (
    gate_verdict,
    interval_cell,
    overall_verdict,
    p_value,
    timing_lines,
    verdict_line,
)
from lcpipe.render.tables import md_table


def display_name(name: str, m: dict[str, Any]) -> str:
    """Row labels: name the float precision each OpenVINO model ran in; the shipped model is "INT8" only
    when it is INT8."""
    prec = m.get("inference_precision") or {}
    shipped = shipped_of(m)
    int8 = f"shipped plan {shipped['plan']}" if m.get("plan") else f"INT8 IR ({prec.get('int8', '?')})"
    labels = {"fp32": f"FP32 IR ({prec.get('fp32', '?')})", "int8": int8,
              "int8_ptq": "INT8 IR, plain PTQ (before accuracy control)",
              "fp32_default": f"FP32 IR ({m.get('default_precision')}, plugin default)",
              "onnxruntime": "ONNX Runtime FP32"}
    return labels.get(name, name)


def precision_sentence(m: dict[str, Any]) -> str:
    """Which float precision (INFERENCE_PRECISION_HINT) each IR ran in for accuracy and timing."""
    prec = m.get("inference_precision") or {}
    fp32, int8 = prec.get("fp32"), prec.get("int8")
    plan = m.get("plan")
    if plan:
        int8_part = f"the shipped plan's IR ({plan['chosen']}) in {int8}, as the plan stage chose"
    else:
        int8_part = f"the INT8 IR's in {int8}"
    which = (f"float ops run in {fp32} (INFERENCE_PRECISION_HINT) for accuracy and timing"
             if int8 == fp32 and not plan else
             f"float ops (INFERENCE_PRECISION_HINT) for accuracy and timing: the FP32 IR's in {fp32}, {int8_part}")
    return f"{which}; this CPU's plugin default is {m.get('default_precision')}"


def report_tables(m: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Rows shared by the markdown and html renderings (first row: header), gates first."""
    acc = m["accuracy"]
    models = [n for n in ("fp32", "int8", "int8_ptq", "onnxruntime") if n in acc]
    tables: dict[str, list[list[str]]] = {}
    tables["gates"] = [["gate", "value", "interval (confidence)", "limit", "ISA key", "verdict", "baseline"]] + [
        [g["name"], num(g["value"]), interval_cell(g), num(g["threshold"]), str(g["isa_key"]),
         gate_verdict(g).upper() + (f" ({g['note']})" if g["note"] else ""), g.get("baseline") or ""]
        for g in m["gates"]]
    tables["accuracy"] = [["model", "top-1", "95 % interval", f"top-{acc['top_k']}"]] + [
        [display_name(n, m), pct(acc[n]["top1"]), ci(acc[n].get("top1_ci95"), 100, 2, " %").strip() or MISSING,
         pct(acc[n]["topk"])] for n in models]
    flips = acc.get("flips") or {}

    def band(key: str, scale: float = 100, digits: int = 2, suffix: str = " %") -> str:
        return ci(acc.get(key), scale, digits, suffix).strip() or MISSING

    p = flips.get("mcnemar_p")
    tables["fidelity"] = [[f"{model_label(m)} vs FP32", "value", "95 % interval"],
                          ["top-1 agreement", pct(acc["agreement"]), band("agreement_ci95")],
                          ["top-1 drop", pct(acc["top1_drop"]), band("top1_drop_ci95")],
                          ["flips right->wrong / wrong->right",
                           f"{num(flips.get('lost'))} / {num(flips.get('gained'))}",
                           MISSING if p is None else f"McNemar p = {p_value(p)}"],
                          ["cosine (mean / min)", f"{fixed(acc['cosine'], 5)} / {fixed(acc['cosine_min'], 5)}",
                           band("cosine_ci95", 1, 5, "")],
                          ["max / mean abs logit diff",
                           f"{num(acc['max_abs_logit_diff'])} / {num(acc['mean_abs_logit_diff'])}", ""],
                          ["relative logit error", num(acc["rel_logit_error"]), "worst image (exact)"]]
    if model_latency(m):
        ips = m.get("throughput_ips") or {}
        tables["speed"] = [["model", "p50 ms", "p90 ms", "mean ms", "images/s", "timed at (load average)"]] + [
            [display_name(n, m), num(s["p50"]), num(s["p90"]), num(s["mean"]), num(ips.get(n)), _when(s)]
            for n, s in model_latency(m).items()]
    speedups = speedup_rows(m)
    if speedups:
        tables["speedups"] = speedups
    e2e = e2e_rows(m)
    if e2e:
        tables["e2e"] = e2e
    if acc.get("image_input"):
        tags = {"fp32": "FP32", "int8": model_label(m)}
        tables["image_input"] = [["image-input IR vs float IR", "images", "top-1 agreement", "max abs logit diff",
                                  "top-1"]] + [
            [tags.get(tag, tag), str(c["images"]), pct(c["top1_agreement"]), num(c["max_abs_logit_diff"]),
             pct(c.get("top1"))] for tag, c in acc["image_input"].items()]
    if acc.get("groups"):
        cols = [k for k in next(iter(acc["groups"].values())) if k != "images"]
        names = {"fp32_top1": "FP32 top-1", "int8_top1": f"{model_label(m)} top-1"}
        tables["groups"] = [["group", "images", *(names.get(c, c) for c in cols)]] + [
            [g, str(r["images"]), *(pct(r[c]) for c in cols)] for g, r in acc["groups"].items()]
    if m.get("plan"):
        tables["plan"] = plan_rows(m["plan"])
    routes = {k: r for k, r in (acc.get("routes") or {}).items() if isinstance(r, dict) and "max_abs_diff" in r}
    if routes:
        tables["routes"] = [["route vs lcpipe FP32 IR", "compared on", "max abs diff", "argmax agreement"]] + [
            [k, acc["routes"]["compared_on"], num(r["max_abs_diff"]), pct(r["argmax_agreement"])]
            for k, r in routes.items()]
    return tables


def _when(stats: dict[str, Any]) -> str:
    load = stats.get("load_avg") or {}
    before, after = (load.get("before") or [None])[0], (load.get("after") or [None])[0]
    at = stats.get("measured_at") or MISSING
    return at if before is None or after is None else f"{at} ({before} -> {after})"


def speedup_labels(m: dict[str, Any]) -> dict[str, str]:
    """speedup.* key -> what it compares, the shipped model named for what it is (INT8 only when it is)."""
    label = model_label(m)
    f32 = f"FP32 ({(m.get('inference_precision') or {}).get('fp32') or 'f32'})"
    default = f"FP32 ({m.get('default_precision') or 'plugin default'}, plugin default)"
    return {"latency_p50": f"latency p50, {label} vs {f32}", "throughput": f"throughput, {label} vs {f32}",
            "latency_p50_vs_default": f"latency p50, {label} vs {default}",
            "latency_p50_ptq": f"latency p50, plain PTQ vs {f32}",
            "e2e_latency_p50": f"end-to-end latency, {label} image-input vs {f32} + Python",
            "e2e_throughput": f"end-to-end throughput, {label} image-input vs {f32} + Python",
            "e2e_latency_p50_vs_default": f"end-to-end latency, {label} image-input vs the baseline, {default} "
                                          "+ Python (headline)",
            "e2e_throughput_vs_default": f"end-to-end throughput, {label} image-input vs the baseline, {default} "
                                         "+ Python",
            "size": f"size, FP32 / {label}"}


def speedup_rows(m: dict[str, Any]) -> list[list[str]]:
    """Every speed-up with its 95 % interval from the interleaved rounds (first row: header)."""
    sp = m.get("speedup") or {}
    names = [k for k, v in sp.items() if not k.endswith("_ci95") and v is not None]
    if not names:
        return []
    labels = speedup_labels(m)
    rows = [["speed-up", "value", "95 % interval"]]
    for k in names:
        band = ci(sp.get(f"{k}_ci95"), 1, 3, "").strip()
        rows.append([labels.get(k, k), times(sp[k]), band or ("exact" if k == "size" else MISSING)])
    return rows


def e2e_rows(m: dict[str, Any]) -> list[list[str]]:
    """Decoded image -> top-k per route (first row: header) from metrics.json; empty when not measured."""
    lat = (m.get("latency_ms") or {}).get("e2e") or {}
    base = "fp32_py_default" if "fp32_py_default" in lat else "fp32_py" if shipped_of(m).get(
        "baseline_e2e_p50_ms") is not None else None
    return e2e_table(lat, (m.get("throughput_ips") or {}).get("e2e") or {}, m.get("decode_ms") or {},
                     route_labels(m), base)


def e2e_table(lat: dict[str, Any], ips: dict[str, float], dec: dict[str, Any], labels: dict[str, str],
              baseline: str | None) -> list[list[str]]:
    """Route rows: p50/p90 ms, images/s, p50 ratio to the baseline route (the FP32 IR at the plugin's
    default precision + Python preprocessing) and to fp32_py; the decode time as a last, separate row."""
    routes = list(lat or ips)
    if not routes:
        return []
    base, f32 = ((lat.get(r) or {}).get("p50") for r in (baseline, "fp32_py"))
    rows = [["route (decoded image -> top-k)", "p50 ms", "p90 ms", "images/s", "p50 vs baseline",
             "p50 vs FP32 f32 + Python"]]
    for r in routes:
        s = lat.get(r) or {}
        rows.append([labels.get(r, r), num(s.get("p50")), num(s.get("p90")), num(ips.get(r)),
                     times(_ratio(base, s.get("p50"))), times(_ratio(f32, s.get("p50")))])
    if dec.get("p50") is not None:
        rows.append(["(decode, cv2; not in the figures above)", num(dec["p50"]), num(dec["p90"]), "", "", ""])
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def headline(m: dict[str, Any]) -> dict[str, str]:
    cpu, sp, q = m["cpu"], m["speedup"], m.get("quantize") or {}
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    label, fp32 = model_label(m), (m.get("inference_precision") or {}).get("fp32") or "f32"
    shipped = shipped_of(m)
    unshipped = "" if shipped["int8"] else f"; its IR is not shipped (the plan chose the FP32 IR at " \
                                           f"{shipped['precision']})"
    return {
        "shipped": shipped_headline(m),
        "baseline": baseline_label(m),
        "headline_speedup": speedup_headline(m),
        "cpu": f"{cpu.get('model')} (ISA {cpu.get('isa')}; flags {' '.join(cpu.get('flags') or []) or 'none'})",
        "threads": str(m["threads"]),
        "precision": precision_sentence(m),
        "versions": versions,
        "speedup": f"{label} vs FP32 IR ({fp32}): latency p50 {_x(sp, 'latency_p50')}, throughput "
                   f"{_x(sp, 'throughput')}, size {times(sp['size'])}"
                   + (f"; model only vs FP32 at the plugin default precision "
                      f"{times(shipped.get('speedup_vs_default_latency_p50'))}"
                      f"{ci(shipped.get('speedup_vs_default_latency_p50_ci95'))}"
                      if shipped.get("speedup_vs_default_latency_p50") else "")
                   + (f"; end to end ({label} image-input IR vs FP32 IR ({fp32}) + Python preprocessing): latency "
                      f"p50 {_x(sp, 'e2e_latency_p50')}, throughput {_x(sp, 'e2e_throughput')}"
                      if sp.get("e2e_latency_p50") or sp.get("e2e_throughput") else ""),
        "quantize": (f"preset {q.get('preset')} ({q.get('preset_reason')}), {q.get('subset_size')} calibration "
                     f"images, {q.get('quantized_ops')}/{q.get('quantizable_ops')} convs+matmuls quantized, "
                     f"{q.get('fake_quantize_ops')} FakeQuantize, PTQ {q.get('seconds')} s{unshipped}") if q else "n/a",
        "verdict": overall_verdict(m).upper(),
        "rests_on": verdict_line(m),
        "timing": "; ".join(timing_lines(m)),
        **({"plan": plan_headline(m["plan"])} if m.get("plan") else {}),
    }


def _x(sp: dict[str, Any], name: str) -> str:
    """A speed-up and its 95 % interval: "1.1x [1.04, 1.16]"."""
    return times(sp.get(name)) + ci(sp.get(f"{name}_ci95"))


def render_markdown(m: dict[str, Any]) -> str:
    h = headline(m)
    parts = [f"# lcpipe report: {m['pipeline']} - {h['verdict']}", "",
             f"**{h['shipped']}: {h['headline_speedup']}**", "",
             f"**{h['rests_on']}**", "", *_overlap_warning(m),
             f"- CPU: {h['cpu']}", f"- threads: {h['threads']}; {h['precision']}", f"- versions: {h['versions']}",
             f"- other speed-ups: {h['speedup']}", f"- quantization: {h['quantize']}",
             f"- images: {m['accuracy']['images']}{'' if m['accuracy']['labeled'] else ' (unlabeled)'}",
             *([f"- {h['timing']}"] if h["timing"] else []),
             *([f"- plan: {h['plan']}"] if h.get("plan") else []), ""]
    titles = {"gates": "Gates", "accuracy": "Accuracy", "fidelity": f"{model_label(m)} fidelity",
              "speed": "Speed (batch 1)", "speedups": "Speed-ups (95 % intervals from the interleaved rounds)",
              "groups": "Per-group top-1", "routes": "Other conversion routes",
              "e2e": "End to end (decoded image -> top-k, batch 1)", "image_input": "Image-input IRs",
              "plan": "Precision plan (candidates measured on this CPU)"}
    for key, rows in report_tables(m).items():
        parts += [f"## {titles[key]}", "", md_table(rows), ""]
    ac = (m.get("quantize") or {}).get("accuracy_control")
    if ac:
        verdict = " Most of the model is no longer INT8: treated as a failure." if ac["mostly_reverted"] else ""
        parts += ["## Accuracy control", "", f"{ac['reverted_ops']} of {ac['ptq_quantized_ops']} quantized ops "
                  f"reverted to floating point ({100 * ac['reverted_fraction']:.0f}%) in {ac['seconds']} s "
                  f"(max {ac['drop_type']} drop {ac['max_drop']} on {ac['validation_images']} images); the plain-PTQ "
                  f"model's figures are the 'plain PTQ' rows above.{verdict}", ""]
    return "\n".join(parts)


def _overlap_warning(m: dict[str, Any]) -> list[str]:
    text = overlap_warning(m)
    return [f"> **Warning:** {text}", ""] if text else []


def overlap_warning(m: dict[str, Any]) -> str:
    """The opt-in overlap of calibration and verdict images, said plainly (empty when there is none)."""
    data = m.get("data") or {}
    if not data.get("overlap"):
        return ""
    files = ", ".join(data.get("overlap_files") or [])
    return (f"{data['overlap']} verdict image(s) are also calibration images (data.allow_calibration_overlap: true): "
            f"the INT8 model was calibrated on images it is judged on, so its accuracy figures may be optimistic. "
            f"{files}")


def render_html(m: dict[str, Any]) -> str:
    """report.html: self-contained (the chart is an inline PNG)."""
    return render_template("report.html.j2", m=m, h=headline(m), tables=report_tables(m), label=model_label(m),
                           chart=png_base64(report_chart(m)), ac=(m.get("quantize") or {}).get("accuracy_control"),
                           overlap=overlap_warning(m))
