"""report: metrics.json (stable keys, lcpipe.metrics), gates (lcpipe.gates), report.md and a
self-contained report.html (lcpipe.render.report). The deploy bundle is the deploy stage's.

A gate never raises here: the verdicts (pass / fail / inconclusive, lcpipe.gates) go into
metrics.json["gates"]; the CLI exits 3 when any fails, 4 when the rest pass but some are inconclusive.
Cached: the report is a pure function of its inputs (validation.json, quantize.json, the IRs)
and ``gates`` (in the key), so a changed threshold re-renders it and a cache hit can never
carry a stale verdict; rendering costs about a second anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcpipe.gates import evaluate_gates, explain, overall
from lcpipe.metrics import build_metrics, plan_metrics, shipped_metrics
from lcpipe.records import MetricsRecord, PlanRecord, QuantizeRecord, ValidationRecord, read_json
from lcpipe.stages.base import Stage, StageContext, StageOptions


class ReportOptions(StageOptions):
    html: bool = True  # report.html with an inline chart (needs jinja2 + matplotlib)


class ReportStage(Stage):
    name = "report"
    Options = ReportOptions
    consumes = ("validation", "ir_fp32", "ir_int8")
    optional_consumes = ("quantize_report", "model_info", "plan_report")
    produces = ("metrics", "report_md", "report_html")
    uses_config = ("gates",)  # thresholds, confidence and mode: a changed gate re-renders
    publish = ("metrics.json", "report.md", "report.html")
    summary = "metrics.json + gates (pass / fail / inconclusive, per-ISA thresholds), report.md/html with chart"

    def cache_salt(self, config: Any) -> str:
        return config.name

    def run(self, ctx: StageContext, options: ReportOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        validation = ValidationRecord.load(inputs["validation"]).to_dict()
        quant = QuantizeRecord.load(inputs["quantize_report"]).to_dict() if "quantize_report" in inputs else {}
        metrics = build_metrics(ctx.config.name, validation, quant, read_json(inputs.get("model_info")))
        if "plan_report" in inputs:
            metrics["plan"] = plan_metrics(PlanRecord.load(inputs["plan_report"]).to_dict())
        metrics["shipped"] = shipped_metrics(metrics)
        gates = ctx.config.gates
        metrics["gates"] = evaluate_gates(gates.thresholds(), metrics, validation, confidence=gates.confidence,
                                          mode=gates.mode)
        metrics["passed"] = all(g["passed"] for g in metrics["gates"])
        metrics["verdict"] = overall(metrics["gates"])
        out = {"metrics": ctx.workdir / "metrics.json", "report_md": ctx.workdir / "report.md"}
        MetricsRecord.build(**metrics).save(out["metrics"])
        from lcpipe.render.report import render_html, render_markdown

        out["report_md"].write_text(render_markdown(metrics))
        if options.html:
            out["report_html"] = ctx.workdir / "report.html"
            out["report_html"].write_text(render_html(metrics))
        _log_verdict(ctx, metrics["gates"])
        return out


def _log_verdict(ctx: StageContext, gates: list[dict[str, Any]]) -> None:
    for g in gates:
        if g["verdict"] != "pass":
            ctx.log.warning("report: gate %s", explain(g))
    counts = {v: sum(g["verdict"] == v for g in gates) for v in ("pass", "fail", "inconclusive")}
    ctx.log.info("report: %d gate(s): %d pass, %d fail, %d inconclusive", len(gates), counts["pass"], counts["fail"],
                 counts["inconclusive"])
