"""report: metrics.json (stable keys), gates, report.md, self-contained report.html, deploy/ bundle.

A failed gate never raises here: the verdict goes into metrics.json["gates"] and the CLI exits 3.
Cached: the report is a pure function of its inputs (validation.json, quantize.json, the IRs)
and ``gates`` (in the key), so a changed threshold re-renders it and a cache hit can never
carry a stale verdict; rendering costs about a second anyway.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

from lcpipe.fileio import write_json
from lcpipe.stages.base import Stage, StageContext, StageOptions, register

SCHEMA = 1
# gate name -> (dotted metrics key, "min" | "max"); every GatesConfig field must be here.
GATES: dict[str, tuple[str, str]] = {
    "max_top1_drop": ("accuracy.top1_drop", "max"),
    "max_top1_flips": ("accuracy.flips.lost", "max"),
    "min_agreement": ("accuracy.agreement", "min"),
    "min_cosine": ("accuracy.cosine", "min"),
    "max_rel_logit_error": ("accuracy.rel_logit_error", "max"),
    "min_fp32_top1": ("accuracy.fp32.top1", "min"),
    "min_int8_top1": ("accuracy.int8.top1", "min"),
    "min_latency_speedup": ("speedup.latency_p50", "min"),
    "min_throughput_speedup": ("speedup.throughput", "min"),
}
REVERTED_GATE = "max_reverted_fraction"  # built in when accuracy control ran (see quantize.MOSTLY_REVERTED)


class ReportOptions(StageOptions):
    html: bool = True  # report.html with an inline chart (needs jinja2 + matplotlib)
    deploy: bool = True  # deploy/ bundle: IRs, labels.txt, preprocess.json, metrics.json, README.txt


@register
class ReportStage(Stage):
    name = "report"
    Options = ReportOptions
    consumes = ("validation", "ir_fp32", "ir_int8")
    optional_consumes = ("quantize_report", "model_info")
    produces = ("metrics", "report_md", "report_html", "deploy")
    uses_config = ("gates",)
    publish = ("metrics.json", "report.md", "report.html", "deploy")
    summary = "metrics.json + gates (per-ISA thresholds), report.md/html with chart, deploy/ bundle"

    def cache_salt(self, config: Any) -> str:
        return config.name

    def run(self, ctx: StageContext, options: ReportOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        validation = _read(inputs["validation"])
        quant = _read(inputs.get("quantize_report"))
        info = _read(inputs.get("model_info"))
        rt = _ir_info(inputs["ir_int8"])
        metrics = build_metrics(ctx.config.name, validation, quant, info)
        metrics["gates"] = evaluate_gates(ctx.config.gates.model_dump(exclude_none=True), metrics)
        metrics["passed"] = all(g["passed"] for g in metrics["gates"])
        out = {"metrics": ctx.workdir / "metrics.json", "report_md": ctx.workdir / "report.md"}
        write_json(out["metrics"], metrics)
        out["report_md"].write_text(render_markdown(metrics))
        if options.html:
            out["report_html"] = ctx.workdir / "report.html"
            out["report_html"].write_text(render_html(metrics))
        if options.deploy:
            out["deploy"] = write_deploy(ctx.workdir / "deploy", inputs["ir_fp32"], inputs["ir_int8"], rt, metrics)
        _log_verdict(ctx, metrics["gates"])
        return out


def _read(path: Path | None) -> dict[str, Any]:
    return json.loads(Path(path).read_text()) if path else {}


def _ir_info(xml: Path) -> dict[str, Any]:
    from lcpipe.deps import require
    from lcpipe.stages.convert import read_lcpipe_rt_info

    ov = require("openvino")
    return read_lcpipe_rt_info(ov.Core().read_model(str(xml)))


# ---------------------------------------------------------------- metrics

def build_metrics(name: str, v: dict[str, Any], quant: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """validation.json + quantize.json -> the stable metrics.json layout (see the README)."""
    acc, fid = v["accuracy"], v["fidelity"]["int8_vs_fp32"]
    fp32_top1, int8_top1 = acc["fp32"]["top1"], acc["int8"]["top1"]
    accuracy = {
        "images": v["images"], "labeled": v["labeled"], "classes": v["classes"], "top_k": v["top_k"],
        **{n: a for n, a in acc.items()},
        "top1_drop": None if fp32_top1 is None else fp32_top1 - int8_top1,
        **fid,
        "groups": v.get("groups"),
    }
    if "onnxruntime_vs_fp32" in v["fidelity"]:
        accuracy["onnxruntime_vs_fp32"] = v["fidelity"]["onnxruntime_vs_fp32"]
    if v.get("routes"):
        accuracy["routes"] = v["routes"]
    lat, thr = v.get("latency_ms"), v.get("throughput")
    sizes = v.get("sizes_bytes", {})
    spec = info.get("spec") or {}
    return {
        "schema": SCHEMA,
        "pipeline": name,
        "model": {"arch": spec.get("arch"), "classes": v["classes"], "source_sha256": info.get("sha256")},
        "accuracy": accuracy,
        "latency_ms": lat,
        "throughput_ips": {n: t["images_per_s"] for n, t in thr.items()} if thr else None,
        "speedup": _speedups(lat, thr, sizes),
        "size_mb": {n: round(b / 1e6, 3) for n, b in sizes.items()},
        "quantize": _quantize_summary(quant),
        "inference_precision": v.get("inference_precision"),
        "default_precision": v.get("default_precision"),
        "cpu": v["cpu"],
        "threads": v["threads"],
        "versions": v["versions"],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def _speedups(lat: dict[str, Any] | None, thr: dict[str, Any] | None, sizes: dict[str, int]) -> dict[str, Any]:
    p50 = {n: s["p50"] for n, s in (lat or {}).items()}
    ips = {n: t["images_per_s"] for n, t in (thr or {}).items()}
    return {
        "latency_p50": _ratio(p50.get("fp32"), p50.get("int8")),
        "throughput": _ratio(ips.get("int8"), ips.get("fp32")),
        "latency_p50_vs_default": _ratio(p50.get("fp32_default"), p50.get("int8")),
        "latency_p50_ptq": _ratio(p50.get("fp32"), p50.get("int8_ptq")),
        "size": _ratio(sizes.get("fp32"), sizes.get("int8")),
    }


def _quantize_summary(q: dict[str, Any]) -> dict[str, Any] | None:
    if not q:
        return None
    counts = q.get("int8", {})
    return {
        "preset": q.get("preset"), "preset_reason": q.get("preset_reason"), "subset_size": q.get("subset_size"),
        "fast_bias_correction": q.get("fast_bias_correction"), "seconds": q.get("seconds"),
        "fake_quantize_ops": counts.get("fake_quantize"), "quantized_ops": counts.get("quantized"),
        "quantizable_ops": counts.get("quantizable"), "accuracy_control": q.get("accuracy_control"),
    }


def get_path(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d


# ---------------------------------------------------------------- gates

def evaluate_gates(gates: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configured gate; the threshold is picked for the ISA the figures were measured on.

    A gate whose figure was not measured (latency off, unlabeled data) fails: a CI gate must not
    pass by silence."""
    from lcpipe.sysinfo import pick_threshold

    isa = (metrics.get("cpu") or {}).get("isa")
    rows = []
    for name, raw in gates.items():
        if raw is None:
            continue
        metric, kind = GATES.get(name, (None, "min"))
        try:
            threshold, isa_key = pick_threshold(raw, isa)
        except KeyError as exc:
            rows.append(_gate(name, None, None, False, None, metric, f"no threshold for ISA {isa}: {exc}"))
            continue
        value = get_path(metrics, metric) if metric else None
        note = "" if metric else "unknown gate"
        if metric and value is None:
            note = "not measured"
        rows.append(_gate(name, threshold, value, _passes(value, threshold, kind), isa_key, metric, note))
    ac = (metrics.get("quantize") or {}).get("accuracy_control")
    if ac:
        from lcpipe.stages.quantize import MOSTLY_REVERTED

        value = ac.get("reverted_fraction")
        rows.append(_gate(REVERTED_GATE, MOSTLY_REVERTED, value, _passes(value, MOSTLY_REVERTED, "max"), "builtin",
                          "quantize.accuracy_control.reverted_fraction",
                          f"{ac.get('reverted_ops')} of {ac.get('ptq_quantized_ops')} quantized ops reverted"))
    return rows


def _passes(value: Any, threshold: float, kind: str) -> bool:
    if value is None:
        return False
    return value <= threshold if kind == "max" else value >= threshold


def _gate(name: str, threshold: float | None, value: Any, passed: bool, isa_key: str | None, metric: str | None,
          note: str) -> dict[str, Any]:
    return {"name": name, "threshold": threshold, "value": value, "passed": passed, "isa_key": isa_key,
            "metric": metric, "note": note}


def _log_verdict(ctx: StageContext, gates: list[dict[str, Any]]) -> None:
    failed = [g for g in gates if not g["passed"]]
    for g in failed:
        ctx.log.warning("report: gate %s FAILED: value %s, limit %s (%s)%s", g["name"], g["value"], g["threshold"],
                        g["isa_key"], f" - {g['note']}" if g["note"] else "")
    ctx.log.info("report: %d gate(s), %d failed", len(gates), len(failed))


# ---------------------------------------------------------------- markdown / html

def _fmt(v: Any, kind: str = "num") -> str:
    if v is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * v:.2f}%"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def display_name(name: str, m: dict[str, Any]) -> str:
    """Row labels: name the float precision each OpenVINO model ran in."""
    prec = m.get("inference_precision") or {}
    labels = {"fp32": f"FP32 IR ({prec.get('fp32', '?')})", "int8": "INT8 IR",
              "int8_ptq": "INT8 IR, plain PTQ (before accuracy control)",
              "fp32_default": f"FP32 IR ({m.get('default_precision')}, plugin default)",
              "onnxruntime": "ONNX Runtime FP32"}
    return labels.get(name, name)


def report_tables(m: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Rows shared by the markdown and html renderings (first row: header), gates first."""
    acc = m["accuracy"]
    models = [n for n in ("fp32", "int8", "int8_ptq", "onnxruntime") if n in acc]
    tables: dict[str, list[list[str]]] = {}
    tables["gates"] = [["gate", "value", "limit", "ISA key", "result"]] + [
        [g["name"], _fmt(g["value"]), _fmt(g["threshold"]), str(g["isa_key"]),
         ("PASS" if g["passed"] else "FAIL") + (f" ({g['note']})" if g["note"] else "")] for g in m["gates"]]
    tables["accuracy"] = [["model", "top-1", f"top-{acc['top_k']}"]] + [
        [display_name(n, m), _fmt(acc[n]["top1"], "pct"), _fmt(acc[n]["topk"], "pct")] for n in models]
    flips = acc.get("flips") or {}
    tables["fidelity"] = [["INT8 vs FP32", "value"],
                          ["top-1 agreement", _fmt(acc["agreement"], "pct")],
                          ["top-1 drop", _fmt(acc["top1_drop"], "pct")],
                          ["flips right->wrong / wrong->right",
                           f"{_fmt(flips.get('lost'))} / {_fmt(flips.get('gained'))}"],
                          ["cosine (mean / min)", f"{acc['cosine']:.5f} / {acc['cosine_min']:.5f}"],
                          ["max / mean abs logit diff",
                           f"{acc['max_abs_logit_diff']:.4g} / {acc['mean_abs_logit_diff']:.4g}"],
                          ["relative logit error", f"{acc['rel_logit_error']:.4g}"]]
    if m.get("latency_ms"):
        ips = m.get("throughput_ips") or {}
        tables["speed"] = [["model", "p50 ms", "p90 ms", "mean ms", "images/s"]] + [
            [display_name(n, m), _fmt(s["p50"]), _fmt(s["p90"]), _fmt(s["mean"]), _fmt(ips.get(n))]
            for n, s in m["latency_ms"].items()]
    if acc.get("groups"):
        cols = [k for k in next(iter(acc["groups"].values())) if k != "images"]
        tables["groups"] = [["group", "images", *cols]] + [
            [g, str(r["images"]), *(_fmt(r[c], "pct") for c in cols)] for g, r in acc["groups"].items()]
    routes = {k: r for k, r in (acc.get("routes") or {}).items() if isinstance(r, dict) and "max_abs_diff" in r}
    if routes:
        tables["routes"] = [["route vs lcpipe FP32 IR", "compared on", "max abs diff", "argmax agreement"]] + [
            [k, acc["routes"]["compared_on"], f"{r['max_abs_diff']:.3g}", _fmt(r["argmax_agreement"], "pct")]
            for k, r in routes.items()]
    return tables


def _md_table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _headline(m: dict[str, Any]) -> dict[str, str]:
    cpu, sp, q = m["cpu"], m["speedup"], m.get("quantize") or {}
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return {
        "cpu": f"{cpu.get('model')} (ISA {cpu.get('isa')}; flags {' '.join(cpu.get('flags') or []) or 'none'})",
        "threads": str(m["threads"]),
        "precision": f"float ops run in {(m.get('inference_precision') or {}).get('fp32')} "
                     f"(INFERENCE_PRECISION_HINT) for accuracy and timing; this CPU's plugin default is "
                     f"{m.get('default_precision')}",
        "versions": versions,
        "speedup": f"latency p50 {_fmt(sp['latency_p50'])}x, throughput {_fmt(sp['throughput'])}x, "
                   f"size {_fmt(sp['size'])}x" + (f", vs FP32 at plugin default precision "
                                                  f"{_fmt(sp['latency_p50_vs_default'])}x"
                                                  if sp.get("latency_p50_vs_default") else ""),
        "quantize": (f"preset {q.get('preset')} ({q.get('preset_reason')}), {q.get('subset_size')} calibration "
                     f"images, {q.get('quantized_ops')}/{q.get('quantizable_ops')} convs+matmuls INT8, "
                     f"{q.get('fake_quantize_ops')} FakeQuantize, PTQ {q.get('seconds')} s") if q else "n/a",
        "verdict": "PASS" if m["passed"] else "FAIL",
    }


def render_markdown(m: dict[str, Any]) -> str:
    h = _headline(m)
    parts = [f"# lcpipe report: {m['pipeline']} - {h['verdict']}", "",
             f"- CPU: {h['cpu']}", f"- threads: {h['threads']}; {h['precision']}", f"- versions: {h['versions']}",
             f"- speed-up: {h['speedup']}", f"- quantization: {h['quantize']}",
             f"- images: {m['accuracy']['images']}{'' if m['accuracy']['labeled'] else ' (unlabeled)'}", ""]
    titles = {"gates": "Gates", "accuracy": "Accuracy", "fidelity": "INT8 fidelity", "speed": "Speed (batch 1)",
              "groups": "Per-group top-1", "routes": "Other conversion routes"}
    for key, rows in report_tables(m).items():
        parts += [f"## {titles[key]}", "", _md_table(rows), ""]
    ac = (m.get("quantize") or {}).get("accuracy_control")
    if ac:
        verdict = " Most of the model is no longer INT8: treated as a failure." if ac["mostly_reverted"] else ""
        parts += ["## Accuracy control", "", f"{ac['reverted_ops']} of {ac['ptq_quantized_ops']} quantized ops "
                  f"reverted to floating point ({100 * ac['reverted_fraction']:.0f}%) in {ac['seconds']} s "
                  f"(max {ac['drop_type']} drop {ac['max_drop']} on {ac['validation_images']} images); the plain-PTQ "
                  f"model's figures are the 'plain PTQ' rows above.{verdict}", ""]
    return "\n".join(parts)


def chart_png(m: dict[str, Any]) -> str:
    """Accuracy (or agreement/cosine when unlabeled) and latency, FP32 vs INT8, as base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc, lat = m["accuracy"], m.get("latency_ms") or {}
    fig, axes = plt.subplots(1, 2 if lat else 1, figsize=(9 if lat else 4.5, 3.2), squeeze=False)
    ax = axes[0][0]
    if acc["labeled"]:
        names = [n for n in ("fp32", "int8", "int8_ptq", "onnxruntime") if n in acc]
        _bars(ax, [_short(n, m) for n in names], [100 * acc[n]["top1"] for n in names], "top-1 (%)")
    else:
        _bars(ax, ["agreement", "cosine"], [100 * acc["agreement"], 100 * acc["cosine"]], "INT8 vs FP32 (%)")
    if lat:
        names = list(lat)
        p50 = [lat[n]["p50"] for n in names]
        err = [[0] * len(names), [lat[n]["p90"] - lat[n]["p50"] for n in names]]
        _bars(axes[0][1], [_short(n, m) for n in names], p50, "batch-1 latency p50 ms (whisker: p90)", err)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _short(name: str, m: dict[str, Any]) -> str:
    prec = m.get("inference_precision") or {}
    return {"fp32": f"FP32 ({prec.get('fp32', '?')})", "int8": "INT8", "int8_ptq": "INT8 plain PTQ",
            "fp32_default": f"FP32 ({m.get('default_precision')})", "onnxruntime": "ORT FP32"}.get(name, name)


def _bars(ax: Any, names: list[str], values: list[float], title: str, err: Any = None) -> None:
    colors = ["#4c72b0" if n.startswith("FP32") else "#dd8452" if n.startswith("INT8") else "#8c8c8c" for n in names]
    bars = ax.bar(names, values, color=colors, yerr=err, capsize=4)
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], label_type="center", color="white", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)


def render_html(m: dict[str, Any]) -> str:
    from importlib.resources import files

    import jinja2

    text = files("lcpipe").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(text).render(m=m, h=_headline(m), tables=report_tables(m), chart=chart_png(m),
                                        ac=(m.get("quantize") or {}).get("accuracy_control"))


# ---------------------------------------------------------------- deploy bundle

def write_deploy(dest: Path, fp32_xml: Path, int8_xml: Path, rt: dict[str, Any], metrics: dict[str, Any]) -> Path:
    dest.mkdir(parents=True)
    for tag, xml in (("int8", int8_xml), ("fp32", fp32_xml)):
        shutil.copyfile(xml, dest / f"model_{tag}.xml")
        shutil.copyfile(Path(xml).with_suffix(".bin"), dest / f"model_{tag}.bin")
    labels = rt.get("labels")
    if labels:
        (dest / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    pre = rt.get("preprocess") or {}
    write_json(dest / "preprocess.json", pre)
    write_json(dest / "metrics.json", metrics)
    (dest / "README.txt").write_text(deploy_readme(metrics, pre, bool(labels)), encoding="utf-8")
    return dest


def deploy_readme(m: dict[str, Any], pre: dict[str, Any], labels: bool) -> str:
    sp = m["speedup"]
    return f"""lcpipe deploy bundle: {m['pipeline']}

model_int8.xml/.bin  INT8 OpenVINO IR (serve this)     model_fp32.xml/.bin  FP32 reference
preprocess.json      input preprocessing (RGB, NCHW float32)  labels.txt  class names, one per line
metrics.json         accuracy, fidelity, latency, gates measured on {m['cpu'].get('model')} ({m['cpu'].get('isa')})
INT8 top-1 {_fmt(m['accuracy']['int8']['top1'], 'pct')} (FP32 {_fmt(m['accuracy']['fp32']['top1'], 'pct')}), \
latency speed-up {_fmt(sp['latency_p50'])}x.

Quick check:  lcpipe predict model_int8.xml image.jpg --top-k 5
Serve it (pip install openvino opencv-python-headless numpy):

{_snippet(pre, labels)}
"""


def _snippet(pre: dict[str, Any], labels: bool) -> str:
    interp = "cv2.INTER_CUBIC" if pre.get("interpolation") == "bicubic" else "cv2.INTER_LINEAR"
    mode, short, c = pre.get("mode"), pre.get("resize_short", 256), pre.get("crop", 224)
    if mode == "resize":
        h, w = pre.get("size") or pre.get("input_hw") or [224, 224]
        resize = f"img = cv2.resize(img, ({w}, {h}), interpolation={interp})"
    elif mode == "timm":  # torchvision Resize(int): short side exact, long side truncated; round() crop offset
        resize = (f"h, w = img.shape[:2]; s = {short}; size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)\n"
                  f"img = cv2.resize(img, size, interpolation={interp})\n"
                  f"c = {c}; h, w = img.shape[:2]; t, l = round((h - c) / 2), round((w - c) / 2)\n"
                  "img = img[t:t + c, l:l + c]")
    else:  # PaddleClas ResizeImage(resize_short) + CropImage
        resize = (f"s = {short} / min(img.shape[:2]); img = cv2.resize(img, (round(img.shape[1] * s), "
                  f"round(img.shape[0] * s)), interpolation={interp})\n"
                  f"c = {c}; h, w = img.shape[:2]; t, l = (h - c) // 2, (w - c) // 2; img = img[t:t + c, l:l + c]")
    names = 'open("labels.txt", encoding="utf-8").read().splitlines()' if labels else "None"
    return f"""import json, sys, cv2, numpy as np, openvino as ov
pre = json.load(open("preprocess.json")); labels = {names}
model = ov.Core().compile_model("model_int8.xml", "CPU", {{"PERFORMANCE_HINT": "LATENCY"}})
img = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB)
{resize}
x = ((img.astype(np.float32) / 255 - pre["mean"]) / pre["std"]).astype(np.float32).transpose(2, 0, 1)[None]
logits = model(x)[0][0]
for i in np.argsort(-logits)[:5]:
    print(i, labels[i] if labels else "", float(logits[i]))"""
