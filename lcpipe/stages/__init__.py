"""One module per stage; each registers itself in lcpipe.stages.base.STAGES when imported."""

from __future__ import annotations

import importlib

# Pipeline order; also the order `lcpipe stages` lists them in.
STAGE_MODULES = {
    "import": "import_",
    "fuse": "fuse",
    "export": "export",
    "convert": "convert",
    "quantize": "quantize",
    "plan": "plan",
    "validate": "validate",
    "report": "report",
    "bench": "bench",
}


def load_all() -> None:
    for module in STAGE_MODULES.values():
        try:
            importlib.import_module(f"lcpipe.stages.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lcpipe.stages.{module}":
                raise  # a real missing dependency inside the stage module
