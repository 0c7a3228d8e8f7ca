"""metrics.json: the stable layout CI scripts read (keys documented in the README), built from
validation.json, quantize.json and plan.json; its record (keys, types, order) is
lcpipe.records.MetricsRecord, and tests/golden/ pins the layout."""

from __future__ import annotations

from typing import Any

from lcpipe.measure.goals import ratio
from lcpipe.records import MetricsRecord, PlanSection

SCHEMA = 1


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
    if v.get("image_input"):
        accuracy["image_input"] = v["image_input"]
    lat, thr = v.get("latency_ms"), v.get("throughput")
    sizes = v.get("sizes_bytes", {})
    spec = info.get("spec") or {}
    e2e = v.get("e2e") or {}
    from lcpipe.measure.e2e import e2e_speedups  # the one definition, shared with bench
    from lcpipe.measure.intervals import accuracy_ci95
    from lcpipe.measure.speedups import speedups_with_intervals

    for key, interval in accuracy_ci95(v.get("evidence")).items():
        _set_path(accuracy, key.removeprefix("accuracy."), interval)
    # from the rounds when there are any (the centre of the interval), else the pooled p50 ratio
    speedup = {**_speedups(lat, thr, sizes), **e2e_speedups(e2e), **speedups_with_intervals(v)}
    for key in [k for k, value in speedup.items() if value is not None and k != "size" and not k.endswith("_ci95")]:
        speedup.setdefault(f"{key}_ci95", None)  # measured without per-round figures: no interval
    latency_ms = {**(lat or {}), "e2e": e2e["latency_ms"]} if e2e.get("latency_ms") else lat
    throughput_ips = {n: t["images_per_s"] for n, t in thr.items()} if thr else None
    if e2e.get("throughput"):
        throughput_ips = {**(throughput_ips or {}), "e2e": {n: t["images_per_s"] for n, t in e2e["throughput"].items()}}
    return MetricsRecord.build(**{
        "schema": SCHEMA,
        "pipeline": name,
        "model": {"arch": spec.get("arch"), "classes": v["classes"], "source_sha256": info.get("sha256")},
        **({"data": v["data"]} if v.get("data") else {}),
        "accuracy": accuracy,
        "latency_ms": latency_ms,
        "throughput_ips": throughput_ips,
        "speedup": speedup,
        **({"timing": v["timing"]} if v.get("timing") else {}),
        "decode_ms": e2e.get("decode_ms"),
        "size_mb": {n: round(b / 1e6, 3) for n, b in sizes.items()},
        "quantize": _quantize_summary(quant),
        "inference_precision": v.get("inference_precision"),
        "default_precision": v.get("default_precision"),
        "cpu": v["cpu"],
        "threads": v["threads"],
        "versions": v["versions"],
    }).to_dict()


def _speedups(lat: dict[str, Any] | None, thr: dict[str, Any] | None, sizes: dict[str, int]) -> dict[str, Any]:
    p50 = {n: s["p50"] for n, s in (lat or {}).items()}
    ips = {n: t["images_per_s"] for n, t in (thr or {}).items()}
    return {
        "latency_p50": ratio(p50.get("fp32"), p50.get("int8")),
        "throughput": ratio(ips.get("int8"), ips.get("fp32")),
        "latency_p50_vs_default": ratio(p50.get("fp32_default"), p50.get("int8")),
        "latency_p50_ptq": ratio(p50.get("fp32"), p50.get("int8_ptq")),
        "size": ratio(sizes.get("fp32"), sizes.get("int8")),
    }


def model_latency(m: dict[str, Any]) -> dict[str, Any]:
    """latency_ms without the end-to-end routes (model-only rows: one stats dict per model)."""
    return {n: s for n, s in (m.get("latency_ms") or {}).items() if n != "e2e"}


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


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        d[part] = dict(d.get(part) or {})
        d = d[part]
    d[last] = value


def get_path(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d


def plan_metrics(plan: dict[str, Any]) -> dict[str, Any] | None:
    """plan.json -> the ``plan`` section of metrics.json (keys documented in the README)."""
    if not plan:
        return None
    chosen = plan["chosen"]
    rows = []
    for r in plan["candidates"]:
        fid = r.get("fidelity") or {}
        rows.append({"name": r["name"], "int8": r["int8"], "precision": r["precision"], "p50": r["p50"],
                     "p90": r["p90"], "passed": r["p50"] is not None and r["failed_gates"] == [],
                     "failed_gates": r["failed_gates"], "chosen": r["chosen"], "why": r["why"],
                     **{k: fid.get(k) for k in ("top1", "top1_drop", "agreement", "cosine", "rel_logit_error")},
                     "flips_lost": (fid.get("flips") or {}).get("lost"), "fidelity_images": r.get("fidelity_images")})
    return PlanSection.build(
        chosen=chosen["name"], int8=chosen["int8"], description=chosen["description"],
        inference_precision=chosen["inference_precision"], runtime_config=chosen["runtime_config"],
        why=chosen["why"], speedup_vs_fp32_f32=plan.get("speedup_vs_fp32_f32"),
        speedup_vs_fp32_f32_ci95=plan.get("speedup_vs_fp32_f32_ci95"),
        tune_images=(plan.get("tune") or {}).get("tune_images"),
        search_seconds=plan["seconds"]["total"], eval_images=plan["eval_images"],
        gates_checked=plan["gates_checked"], candidates=rows).to_dict()
