"""deploy: the bundle a serving host needs (lcpipe.deploy.bundle), from the shipped IRs and metrics.json.

A stage of its own (``- deploy: {}`` after ``report``), not a side effect of the report: a pipeline
without it writes no bundle. The stage's folder is the bundle, ``<run dir>/deploy/`` (one copy per
run); cached like any stage, keyed on the IRs and metrics.json it packs.

``resize_in_graph: true`` (off by default) builds the image-input IRs with resize + crop in the graph
(lcpipe.deploy.resize_in_graph): the server only decodes. Close to cv2's uint8 resize, not bit-exact,
so the stage then measures the shipped model's image-input IR both ways on data.eval (top-1 agreement,
max logit diff: resize_in_graph.json) and warns when a top-1 answer changes. Off by default: not yet
measured faster on a quiet machine (benchmarks/shipped_goals.py times it).

The bundle's IRs have convert's batch: static batch 1 in the shipped pipelines (``batch: 1``, the
lowest batch-1 latency), and README.txt says so. ``batch: dynamic`` also writes model_image_dynamic.xml,
the shipped image-input IR taking any batch, and times it against the static one (batch 1, and batch
``measure_batch`` for throughput; lcpipe.measure.batching): that timing makes the stage depend on the
machine, so the cache key then holds the CPU and library versions.

A run whose gates did not all pass still gets its bundle (the exit code carries the verdict), marked
"DO NOT SERVE" at the top of README.txt, in metrics.json (``bundle.servable``) and by serve.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lcpipe.stages.base import Stage, StageContext, StageOptions


class DeployOptions(StageOptions):
    resize_in_graph: bool = False  # image-input IRs take the decoded image at any size (resize + crop inside)
    batch: Literal["static", "dynamic"] = "static"  # dynamic: also model_image_dynamic.xml, any batch size
    measure_batch: int = Field(8, ge=2, le=256)  # batch the dynamic IR's throughput is measured at


class DeployStage(Stage):
    name = "deploy"
    Options = DeployOptions
    consumes = ("ir_fp32", "ir_int8", "metrics")
    produces = ("deploy",)
    uses_config = ("preprocess", "runtime")
    summary = "deploy bundle: the shipped model (model.xml, model_image.xml; any batch with batch: dynamic), FP32 " \
              "references, plan.json, labels, preprocessing, metrics, serve.py, OpenVINO Model Server layout"

    def cache_salt(self, config: Any) -> str:
        from lcpipe.fileio import sha256_json

        options = config.stage_options("deploy")
        if options is None:
            return ""
        salt: dict[str, Any] = {}
        if options.resize_in_graph and config.data.eval is not None:
            from lcpipe.data import fingerprint

            salt["eval"] = fingerprint(config.data, config.preprocess, "eval")
        if options.batch == "dynamic":  # timed on this machine
            from lcpipe.sysinfo import cpu_info, versions

            cpu = cpu_info()
            salt["cpu"], salt["versions"] = [cpu["model"], cpu["isa"], cpu["cores"]], versions()
        return sha256_json(salt) if salt else ""

    def run(self, ctx: StageContext, options: DeployOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.deploy.bundle import write_bundle_irs, write_deploy
        from lcpipe.ir import read_ir, read_lcpipe_rt_info
        from lcpipe.records import MetricsRecord

        rt = read_lcpipe_rt_info(read_ir(inputs["ir_int8"]))
        metrics = MetricsRecord.load(inputs["metrics"]).to_dict()
        fidelity = _resize_fidelity(ctx, inputs["ir_int8"], metrics) if options.resize_in_graph else None
        irs = write_bundle_irs(ctx.workdir, inputs["ir_fp32"], inputs["ir_int8"],
                               resize_in_graph=options.resize_in_graph, dynamic_batch=options.batch == "dynamic")
        if options.batch == "dynamic" and irs["dynamic"] is None:
            ctx.log.info("deploy: model_image.xml already takes any batch (convert batch: null); "
                         "no model_image_dynamic.xml")
        batching = _time_batching(ctx, irs, metrics, options) if irs["dynamic"] is not None else None
        bundle = write_deploy(ctx.workdir, rt, metrics, irs, resize_in_graph=options.resize_in_graph,
                              resize_fidelity=fidelity, batching=batching)
        if not bundle["servable"]:
            ctx.log.warning("deploy: DO NOT SERVE this bundle (README.txt says so first): %s",
                            "; ".join(bundle["reasons"]))
        ctx.log.info("deploy: bundle in %s", ctx.run_dir / self.name)
        return {"deploy": ctx.workdir}


def _time_batching(ctx: StageContext, irs: dict[str, Any], metrics: dict[str, Any],
                   options: DeployOptions) -> dict[str, Any]:
    """The dynamic-batch IR against the static one, compiled as serve.py compiles them (threads pinned)."""
    from lcpipe.deploy.bundle import SERVED
    from lcpipe.deploy.snippet import serving_compile_config
    from lcpipe.measure.batching import static_vs_dynamic
    from lcpipe.sysinfo import default_threads

    threads = ctx.config.runtime.threads or default_threads()
    config = {**serving_compile_config(metrics), "INFERENCE_NUM_THREADS": threads}
    hw = irs["input_hw"] or tuple(ctx.config.preprocess.input_hw)
    out = static_vs_dynamic(ctx.workdir / SERVED, irs["dynamic"], config, hw, batch=options.measure_batch)
    ctx.log.info("deploy: dynamic batch: batch 1 p50 %.3f ms vs %.3f ms static (%.2fx); batch %d %.0f images/s vs "
                 "%.0f images/s static batch 1", out["latency_ms"]["dynamic_b1"]["p50"],
                 out["latency_ms"]["static_b1"]["p50"], out["dynamic_vs_static_b1_latency"], out["batch"],
                 out["images_per_s"]["dynamic_bN"], out["images_per_s"]["static_b1"])
    return out


def _resize_fidelity(ctx: StageContext, shipped: Path, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The shipped model's image-input IR, resize in the graph vs cv2's, on data.eval (None: no eval data)."""
    if ctx.config.data.eval is None:
        ctx.log.warning("deploy: resize_in_graph without data.eval: its fidelity to cv2's resize is not measured")
        return None
    from lcpipe.data import load_split
    from lcpipe.measure.e2e import resize_in_graph_fidelity
    from lcpipe.sysinfo import default_threads

    ev = load_split(ctx.config.data, "eval", ctx.config.preprocess, ctx.cache_dir, progress=False)
    precision = (metrics.get("shipped") or {}).get("precision")
    out = resize_in_graph_fidelity(shipped, ev.samples, ctx.config.preprocess,
                                   ctx.config.runtime.threads or default_threads(), precision)
    log = ctx.log.info if out["same_top1"] else ctx.log.warning
    log("deploy: resize in the graph vs cv2's: top-1 agreement %.4f, max abs logit diff %.3g (%d images)",
        out["top1_agreement"], out["max_abs_logit_diff"], out["images"])
    return out
