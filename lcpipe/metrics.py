"""metrics.json: the stable layout CI scripts read (keys documented in the README), built from
validation.json, quantize.json and plan.json; its record (keys, types, order) is
lcpipe.records.MetricsRecord, and tests/golden/ pins the layout."""

from __future__ import annotations

from typing import Any

from lcpipe.measure.goals import ratio
from lcpipe.records import MetricsRecord, PlanSection, ShippedSection

SCHEMA = 1


def build_metrics(name: str, v: dict[str, Any], quant: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """validation.json + quantize.json -> the stable metrics.json layout (see the README)."""
    acc, fid = v["accuracy"], v["fidelity"]["int8_vs_fp32"]
    fp32_top1, int8_top1 = acc["fp32"]["top1"], acc["int8"]["top1"]
    accuracy = {
        "images": v["images"], "labeled": v["labeled"], "classes": v["classes"], "top_k": v["top_k"],
        **{n: a for n, a in acc.items()},
        "top1_drop": None if fp32_top1 is None or int8_top1 is None else fp32_top1 - int8_top1,
        **fid,
        "groups": v.get("groups"),
        "non_finite_outputs": v.get("non_finite_outputs"),  # images with a NaN/inf logit, per model
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


def shipped_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's ``shipped`` section from the rest of it (plan included): what the deploy bundle's
    model.xml / model_image.xml hold, and its speed against the baseline. In the older keys the shipped
    model is ``int8`` (``accuracy.int8``, ``latency_ms.int8``, route ``int8_image``), whatever its precision."""
    from lcpipe.plan import CandidateSpec

    plan, prec = m.get("plan"), m.get("inference_precision") or {}
    if plan:
        name, int8, precision = plan["chosen"], plan["int8"], plan["inference_precision"]
        description, runtime_config, chosen_by = plan["description"], plan["runtime_config"], "plan"
    else:  # no plan stage: the quantize stage's INT8 IR, at the precision validate ran it
        from lcpipe.plan import runtime_config as config_for

        precision = prec.get("int8")
        spec = CandidateSpec((m.get("quantize") or {}).get("preset") or "unknown", (), precision or "f32")
        name, int8, description, chosen_by = spec.name, True, spec.describe(), "quantize"
        runtime_config = config_for(precision) if precision not in (None, "unknown") else None
    lat = model_latency(m)
    e2e_lat = (m.get("latency_ms") or {}).get("e2e") or {}
    e2e_ips = (m.get("throughput_ips") or {}).get("e2e") or {}
    default = m.get("default_precision")
    # the FP32 IR at the plugin default: timed apart where validate pinned another precision
    base_model = "fp32_default" if "fp32_default" in lat else "fp32" if prec.get("fp32") == default else None
    base_route = "fp32_py_default" if "fp32_py_default" in e2e_lat else "fp32_py" if prec.get("fp32") == default \
        else None
    sp = m.get("speedup") or {}
    # every figure is a speed-up row (lcpipe.measure.speedups.SPEEDUPS), so it comes with its interval
    model_vs_default = {"fp32_default": "latency_p50_vs_default", "fp32": "latency_p50"}.get(base_model or "")
    rows = {"speedup_vs_default_e2e_p50": "e2e_latency_p50_vs_default",
            "speedup_vs_default_e2e_throughput": "e2e_throughput_vs_default",
            "speedup_vs_default_latency_p50": model_vs_default,
            "speedup_vs_f32_e2e_p50": "e2e_latency_p50", "speedup_vs_f32_latency_p50": "latency_p50"}
    speedups: dict[str, Any] = {}
    for key, row in rows.items():
        speedups[key] = sp.get(row) if row else None
        speedups[f"{key}_ci95"] = sp.get(f"{row}_ci95") if row else None

    def p50(d: dict[str, Any], key: str | None) -> Any:
        return (d.get(key) or {}).get("p50") if key else None

    return ShippedSection.build(
        plan=name, int8=int8, precision=precision, description=description, chosen_by=chosen_by,
        runtime_config=runtime_config, latency_p50_ms=p50(lat, "int8"), e2e_p50_ms=p50(e2e_lat, "int8_image"),
        e2e_images_per_s=e2e_ips.get("int8_image"),
        baseline=f"FP32 IR at {default or 'the plugin default precision'} (the plugin's default) + Python float "
                 "preprocessing",
        baseline_precision=default, baseline_e2e_p50_ms=p50(e2e_lat, base_route), **speedups,
    ).to_dict()
