"""lcpipe: PP-LCNet / PP-LCNetV2 to validated INT8 OpenVINO IR.

The Python API (the CLI is a thin layer over it):

    import lcpipe
    result = lcpipe.run_pipeline("textline_ori_int8", out="runs/t")   # a YAML path or an example name
    result.artifacts["deploy"]        # <run dir>/deploy/, the serving bundle
    result.metrics["gates"]           # metrics.json as a dict; result.failed_gates: the gates that did not pass
    result = lcpipe.quantize_model("model.pdparams", "calib/", eval_images="val/", out="runs/m")  # no YAML
"""

from __future__ import annotations

import os
from typing import Any

from lcpipe.version import __version__

__all__ = ["__version__", "load_config", "quantize_model", "run_pipeline"]


def run_pipeline(config: Any, **kwargs: Any) -> Any:
    """Run a pipeline: a PipelineConfig, a path to its YAML, or a packaged example's name (lcpipe
    examples lists them). Keyword arguments as lcpipe.runner.run_pipeline (out, overrides, from_stage,
    until, force, cache_dir, no_cache); returns its RunResult."""
    from lcpipe.runner import run_pipeline as _run

    if isinstance(config, str | os.PathLike):  # a path or an example name, not a PipelineConfig
        from lcpipe.examples import example_or_path

        config = example_or_path(config)
    return _run(config, **kwargs)


def load_config(path: Any, overrides: Any = ()) -> Any:
    """A pipeline YAML (or a packaged example's name) with ``--set`` overrides, validated."""
    from lcpipe.examples import example_or_path
    from lcpipe.runner import load_config as _load

    return _load(example_or_path(path), overrides)


def quantize_model(model: Any, calib: Any, **kwargs: Any) -> Any:
    """`lcpipe quantize` from Python: MODEL and a calibration folder to an INT8 IR, no YAML. Keyword
    arguments as lcpipe.oneliner.quantize_model (out, eval_images, labels, fmt, overrides, cache_dir,
    no_cache, force); the pipeline it ran is left in ``<out>/pipeline.yaml``."""
    from lcpipe.oneliner import quantize_model as _quantize

    return _quantize(model, calib, **kwargs)
