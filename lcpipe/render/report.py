"""report.md and report.html from metrics.json: the same tables, gates first."""

from __future__ import annotations

from typing import Any

from lcpipe.metrics import model_latency
from lcpipe.render.charts import report_chart
from lcpipe.render.format import MISSING, num, pct, times
from lcpipe.render.html import png_base64, render_template
from lcpipe.render.plan import plan_headline, plan_rows
from lcpipe.render.summary import (
    ci,
    gate_verdict,
    interval_cell,
    overall_verdict,
    p_value,
    timing_lines,
    verdict_line,
)
from lcpipe.render.tables import md_table


def display_name(name: str, m: dict[str, Any]) -> str:
    """Row labels: name the float precision each OpenVINO model ran in."""
    prec = m.get("inference_precision") or {}
    int8 = f"planned IR: {m['plan']['chosen']}" if m.get("plan") else f"INT8 IR ({prec.get('int8', '?')})"
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
    tables["gates"] = [["gate", "value", "interval (confidence)", "limit", "ISA key", "verdict"]] + [
        [g["name"], num(g["value"]), interval_cell(g), num(g["threshold"]), str(g["isa_key"]),
         gate_verdict(g).upper() + (f" ({g['note']})" if g["note"] else "")] for g in m["gates"]]
    tables["accuracy"] = [["model", "top-1", "95 % interval", f"top-{acc['top_k']}"]] + [
        [display_name(n, m), pct(acc[n]["top1"]), ci(acc[n].get("top1_ci95"), 100, 2, " %").strip() or MISSING,
         pct(acc[n]["topk"])] for n in models]
    flips = acc.get("flips") or {}

    def band(key: str, scale: float = 100, digits: int = 2, suffix: str = " %") -> str:
        return ci(acc.get(key), scale, digits, suffix).strip() or MISSING

    p = flips.get("mcnemar_p")
    tables["fidelity"] = [["INT8 vs FP32", "value", "95 % interval"],
                          ["top-1 agreement", pct(acc["agreement"]), band("agreement_ci95")],
                          ["top-1 drop", pct(acc["top1_drop"]), band("top1_drop_ci95")],
                          ["flips right->wrong / wrong->right",
                           f"{num(flips.get('lost'))} / {num(flips.get('gained'))}",
                           MISSING if p is None else f"McNemar p = {p_value(p)}"],
                          ["cosine (mean / min)", f"{acc['cosine']:.5f} / {acc['cosine_min']:.5f}",
                           band("cosine_ci95", 1, 5, "")],
                          ["max / mean abs logit diff",
                           f"{acc['max_abs_logit_diff']:.4g} / {acc['mean_abs_logit_diff']:.4g}", ""],
                          ["relative logit error", f"{acc['rel_logit_error']:.4g}", "worst image (exact)"]]
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
        tables["image_input"] = [["image-input IR vs float IR", "images", "top-1 agreement", "max abs logit diff",
                                  "top-1"]] + [
            [tag.upper(), str(c["images"]), pct(c["top1_agreement"]), f"{c['max_abs_logit_diff']:.3g}",
             pct(c.get("top1"))] for tag, c in acc["image_input"].items()]
    if acc.get("groups"):
        cols = [k for k in next(iter(acc["groups"].values())) if k != "images"]
        tables["groups"] = [["group", "images", *cols]] + [
            [g, str(r["images"]), *(pct(r[c]) for c in cols)] for g, r in acc["groups"].items()]
    if m.get("plan"):
        tables["plan"] = plan_rows(m["plan"])
    routes = {k: r for k, r in (acc.get("routes") or {}).items() if isinstance(r, dict) and "max_abs_diff" in r}
    if routes:
        tables["routes"] = [["route vs lcpipe FP32 IR", "compared on", "max abs diff", "argmax agreement"]] + [
            [k, acc["routes"]["compared_on"], f"{r['max_abs_diff']:.3g}", pct(r["argmax_agreement"])]
            for k, r in routes.items()]
    return tables


def _when(stats: dict[str, Any]) -> str:
    load = stats.get("load_avg") or {}
    before, after = (load.get("before") or [None])[0], (load.get("after") or [None])[0]
    at = stats.get("measured_at") or MISSING
    return at if before is None or after is None else f"{at} ({before} -> {after})"


SPEEDUP_LABELS = {"latency_p50": "latency p50, INT8 vs FP32", "throughput": "throughput, INT8 vs FP32",
                  "latency_p50_vs_default": "latency p50, INT8 vs FP32 at the plugin default",
                  "latency_p50_ptq": "latency p50, plain PTQ vs FP32",
                  "e2e_latency_p50": "end-to-end latency, INT8 image-input vs FP32 + Python",
                  "e2e_throughput": "end-to-end throughput, INT8 image-input vs FP32 + Python", "size": "size"}


def speedup_rows(m: dict[str, Any]) -> list[list[str]]:
    """Every speed-up with its 95 % interval from the interleaved rounds (first row: header)."""
    sp = m.get("speedup") or {}
    names = [k for k, v in sp.items() if not k.endswith("_ci95") and v is not None]
    if not names:
        return []
    rows = [["speed-up", "value", "95 % interval"]]
    for k in names:
        band = ci(sp.get(f"{k}_ci95"), 1, 3, "").strip()
        rows.append([SPEEDUP_LABELS.get(k, k), times(sp[k]), band or ("exact" if k == "size" else MISSING)])
    return rows


E2E_LABELS = {"fp32_py": "FP32 IR + Python float preprocessing", "int8_py": "INT8 IR + Python float preprocessing",
              "fp32_image": "FP32 image-input IR + uint8 resize/crop",
              "int8_image": "INT8 image-input IR + uint8 resize/crop"}


def e2e_rows(m: dict[str, Any]) -> list[list[str]]:
    """Decoded image -> top-k per route (first row: header) from metrics.json; empty when not measured."""
    return e2e_table((m.get("latency_ms") or {}).get("e2e") or {}, (m.get("throughput_ips") or {}).get("e2e") or {},
                     m.get("decode_ms") or {})


def e2e_table(lat: dict[str, Any], ips: dict[str, float], dec: dict[str, Any]) -> list[list[str]]:
    """Route rows: p50/p90 ms, images/s, p50 ratio to fp32_py; the decode time as a last, separate row."""
    routes = list(lat or ips)
    if not routes:
        return []
    base = (lat.get("fp32_py") or {}).get("p50")
    rows = [["route (decoded image -> top-k)", "p50 ms", "p90 ms", "images/s", "p50 vs FP32 + Python"]]
    for r in routes:
        s = lat.get(r) or {}
        ratio = round(base / s["p50"], 4) if base and s.get("p50") else None
        rows.append([E2E_LABELS.get(r, r), num(s.get("p50")), num(s.get("p90")), num(ips.get(r)), times(ratio)])
    if dec.get("p50") is not None:
        rows.append(["(decode, cv2; not in the figures above)", num(dec["p50"]), num(dec["p90"]), "", ""])
    return rows


def headline(m: dict[str, Any]) -> dict[str, str]:
    cpu, sp, q = m["cpu"], m["speedup"], m.get("quantize") or {}
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return {
        "cpu": f"{cpu.get('model')} (ISA {cpu.get('isa')}; flags {' '.join(cpu.get('flags') or []) or 'none'})",
        "threads": str(m["threads"]),
        "precision": precision_sentence(m),
        "versions": versions,
        "speedup": f"latency p50 {_x(sp, 'latency_p50')}, throughput {_x(sp, 'throughput')}, "
                   f"size {times(sp['size'])}" + (f", vs FP32 at plugin default precision "
                                                  f"{_x(sp, 'latency_p50_vs_default')}"
                                                  if sp.get("latency_p50_vs_default") else "")
                   + (f"; end to end (INT8 image-input IR vs FP32 IR + Python preprocessing): latency p50 "
                      f"{_x(sp, 'e2e_latency_p50')}, throughput {_x(sp, 'e2e_throughput')}"
                      if sp.get("e2e_latency_p50") or sp.get("e2e_throughput") else ""),
        "quantize": (f"preset {q.get('preset')} ({q.get('preset_reason')}), {q.get('subset_size')} calibration "
                     f"images, {q.get('quantized_ops')}/{q.get('quantizable_ops')} convs+matmuls INT8, "
                     f"{q.get('fake_quantize_ops')} FakeQuantize, PTQ {q.get('seconds')} s") if q else "n/a",
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
             f"**{h['rests_on']}**", "", *_overlap_warning(m),
             f"- CPU: {h['cpu']}", f"- threads: {h['threads']}; {h['precision']}", f"- versions: {h['versions']}",
             f"- speed-up: {h['speedup']}", f"- quantization: {h['quantize']}",
             f"- images: {m['accuracy']['images']}{'' if m['accuracy']['labeled'] else ' (unlabeled)'}",
             *([f"- {h['timing']}"] if h["timing"] else []),
             *([f"- plan: {h['plan']}"] if h.get("plan") else []), ""]
    titles = {"gates": "Gates", "accuracy": "Accuracy", "fidelity": "INT8 fidelity", "speed": "Speed (batch 1)",
              "speedups": "Speed-ups (95 % intervals from the interleaved rounds)",
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
    return render_template("report.html.j2", m=m, h=headline(m), tables=report_tables(m),
                           chart=png_base64(report_chart(m)), ac=(m.get("quantize") or {}).get("accuracy_control"),
                           overlap=overlap_warning(m))
