"""deploy: the bundle a serving host needs (lcpipe.deploy.bundle), from the shipped IRs and metrics.json.

A stage of its own (``- deploy: {}`` after ``report``), not a side effect of the report: a pipeline
without it writes no bundle. The stage's folder is the bundle, ``<run dir>/deploy/`` (one copy per
run); cached like any stage, keyed on the IRs and metrics.json it packs.

``resize_in_graph: true`` (off by default) builds the image-input IRs with resize + crop in the graph
(lcpipe.deploy.resize_in_graph): the server only decodes. Close to cv2's uint8 resize, not bit-exact,
so the stage then measures the shipped model's image-input IR both ways on data.eval (top-1 agreement,
max logit diff: resize_in_graph.json) and warns when a top-1 answer changes. Off by default: not yet
measured faster on a quiet machine (benchmarks/shipped_goals.py times it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lcpipe.stages.base import Stage, StageContext, StageOptions


class DeployOptions(StageOptions):
    resize_in_graph: bool = False  # image-input IRs take the decoded image at any size (resize + crop inside)


class DeployStage(Stage):
    name = "deploy"
    Options = DeployOptions
    consumes = ("ir_fp32", "ir_int8", "metrics")
    produces = ("deploy",)
    uses_config = ("preprocess", "runtime")
    summary = "deploy bundle: the shipped model (model.xml, model_image.xml), FP32 references, plan.json, labels, " \
              "preprocessing, metrics, serving snippet"

    def cache_salt(self, config: Any) -> str:
        from lcpipe.fileio import sha256_json

        options = config.stage_options("deploy")
        if options is None or not options.resize_in_graph or config.data.eval is None:
            return ""
        from lcpipe.data import fingerprint

        return sha256_json({"eval": fingerprint(config.data, config.preprocess, "eval")})

    def run(self, ctx: StageContext, options: DeployOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.deploy.bundle import write_deploy
        from lcpipe.ir import read_ir, read_lcpipe_rt_info
        from lcpipe.records import MetricsRecord

        rt = read_lcpipe_rt_info(read_ir(inputs["ir_int8"]))
        metrics = MetricsRecord.load(inputs["metrics"]).to_dict()
        fidelity = _resize_fidelity(ctx, inputs["ir_int8"], metrics) if options.resize_in_graph else None
        out = write_deploy(ctx.workdir, inputs["ir_fp32"], inputs["ir_int8"], rt, metrics,
                           resize_in_graph=options.resize_in_graph, resize_fidelity=fidelity)
        ctx.log.info("deploy: bundle in %s", ctx.run_dir / self.name)
        return {"deploy": out}


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
