"""The one JSON document a ``--json`` command prints on stdout (besides the files it writes).

run / quantize   run_document: run directory, each stage (cached?, seconds, cache key), artifacts by
                 kind, metrics.json, the verdict and the gates that failed or were inconclusive, the exit code
sweep            sweep_document: sweep.json as written, plus where its files are
bench, inspect, predict and check print their own records (bench.json, the inspect facts, the
predictions, {ok, problems, config}).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run_document(result: Any, exit_code: int) -> dict[str, Any]:
    """``result``: lcpipe.runner.RunResult."""
    return {
        "run_dir": str(result.run_dir),
        "exit_code": exit_code,
        "stages": [{"name": r.name, "cached": r.cached, "seconds": r.seconds, "key": r.key} for r in result.records],
        "artifacts": {kind: str(path) for kind, path in result.artifacts.items()},
        "verdict": (result.metrics or {}).get("verdict"),
        "failed_gates": [g.get("name") for g in result.failed_gates],
        "inconclusive_gates": [g.get("name") for g in result.inconclusive_gates],
        "metrics": result.metrics,
    }


def sweep_document(files: dict[str, Path], seconds: float) -> dict[str, Any]:
    doc = json.loads(Path(files["json"]).read_text())
    return {**doc, "files": {k: str(v) for k, v in files.items()}, "seconds": round(seconds, 1)}
