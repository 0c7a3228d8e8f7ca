"""report: metrics.json (stable keys, lcpipe.metrics), gates (lcpipe.gates), report.md and a
self-contained report.html (lcpipe.render.report). The deploy bundle is the deploy stage's.

A failed gate never raises here: the verdict goes into metrics.json["gates"] and the CLI exits 3.
Cached: the report is a pure function of its inputs (validation.json, quantize.json, the IRs)
and ``gates`` (in the key), so a changed threshold re-renders it and a cache hit can never
carry a stale verdict; rendering costs about a second anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcpipe.gates import evaluate_gates
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
    uses_config = ("gates",)
    publish = ("metrics.json", "report.md", "report.html")
    summary = "metrics.json + gates (per-ISA thresholds), report.md/html with chart"

    def cache_salt(self, config: Any) -> str:
        return config.name

    def run(self, ctx: StageContext, options: ReportOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        validation = ValidationRecord.load(inputs["validation"]).to_dict()
        quant = QuantizeRecord.load(inputs["quantize_report"]).to_dict() if "quantize_report" in inputs else {}
        metrics = build_metrics(ctx.config.name, validation, quant, read_json(inputs.get("model_info")))
        if "plan_report" in inputs:
            metrics["plan"] = plan_metrics(PlanRecord.load(inputs["plan_report"]).to_dict())
        metrics["shipped"] = shipped_metrics(metrics)
        metrics["gates"] = evaluate_gates(ctx.config.gates.model_dump(exclude_none=True), metrics)
        metrics["passed"] = all(g["passed"] for g in metrics["gates"])
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
    failed = [g for g in gates if not g["passed"]]
    for g in failed:
        ctx.log.warning("report: gate %s FAILED: value %s, limit %s (%s)%s", g["name"], g["value"], g["threshold"],
                        g["isa_key"], f" - {g['note']}" if g["note"] else "")
    ctx.log.info("report: %d gate(s), %d failed", len(gates), len(failed))
