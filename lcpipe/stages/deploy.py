"""deploy: the bundle a serving host needs (lcpipe.deploy.bundle), from the shipped IRs and metrics.json.

A stage of its own (``- deploy: {}`` after ``report``), not a side effect of the report: a pipeline
without it writes no bundle. The stage's folder is the bundle, ``<run dir>/deploy/`` (one copy per
run); cached like any stage, keyed on the IRs and metrics.json it packs.
"""

from __future__ import annotations

from pathlib import Path

from lcpipe.stages.base import Stage, StageContext, StageOptions


class DeployOptions(StageOptions):
    pass


class DeployStage(Stage):
    name = "deploy"
    Options = DeployOptions
    consumes = ("ir_fp32", "ir_int8", "metrics")
    produces = ("deploy",)
    summary = "deploy bundle: float + image-input IRs, labels, preprocessing, metrics, plan, serving snippet"

    def run(self, ctx: StageContext, options: DeployOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        from lcpipe.deploy.bundle import write_deploy
        from lcpipe.ir import read_ir, read_lcpipe_rt_info
        from lcpipe.records import MetricsRecord

        rt = read_lcpipe_rt_info(read_ir(inputs["ir_int8"]))
        metrics = MetricsRecord.load(inputs["metrics"]).to_dict()
        out = write_deploy(ctx.workdir, inputs["ir_fp32"], inputs["ir_int8"], rt, metrics)
        ctx.log.info("deploy: bundle in %s", ctx.run_dir / self.name)
        return {"deploy": out}
