"""lcpipe: PP-LCNet / PP-LCNetV2 to validated INT8 OpenVINO IR."""

from __future__ import annotations

from typing import Any

from lcpipe.version import __version__

__all__ = ["__version__", "load_config", "run_pipeline"]


def run_pipeline(config: Any, **kwargs: Any) -> Any:
    """Run a pipeline (a PipelineConfig or a path to its YAML). See lcpipe.runner.run_pipeline."""
    from lcpipe.runner import run_pipeline as _run

    return _run(config, **kwargs)


def load_config(path: Any, overrides: Any = ()) -> Any:
    from lcpipe.runner import load_config as _load

    return _load(path, overrides)
