"""Running the points: in-process one after another, or as Ray tasks (local Ray or a cluster)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcpipe.errors import LcpipeError, MissingDependencyError
from lcpipe.fileio import write_json
from lcpipe.sweep.point import POINT_FILE, PointTask, run_point
from lcpipe.sweep.results import COLUMNS, write_results
from lcpipe.sweep.schema import Sweep, load_sweep

log = logging.getLogger("lcpipe")

RAY_OBJECT_STORE_BYTES = 200 * 1024 * 1024  # tasks pass paths and small dicts, never arrays


class SweepFailedError(LcpipeError):
    """At least one point of a sweep failed (the others finished; see sweep.json)."""

    exit_code = 1


@dataclass
class SweepResult:
    sweep: Sweep
    rows: list[dict[str, Any]]
    files: dict[str, Path]
    seconds: float

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def gate_failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "gate_failed"]


def run_sweep(sweep: Sweep | str | Path, *, out: str | Path | None = None, local: bool = False,
              address: str | None = None, cache_dir: str | Path | None = None, force: bool = False,
              no_cache: bool = False, overrides: tuple[str, ...] | list[str] = (),
              num_cpus: int | None = None) -> SweepResult:
    """Run every point (Ray tasks, or in-process with ``local``) and write the result tables."""
    from lcpipe.cache import default_cache_dir
    from lcpipe.sysinfo import cpu_info

    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep, overrides)
    if out:
        sweep.out = Path(out).resolve()
    cache = str(Path(cache_dir or default_cache_dir()).expanduser().resolve())
    tasks = [PointTask(p.index, p.id, str(sweep.base), p.args, p.overrides, str(sweep.out / "points" / p.id),
                       cache, force, no_cache, sweep.spec.eval_shards) for p in sweep.points]
    log.info("sweep %s: %d point(s) -> %s", sweep.name, len(tasks), sweep.out)
    t0 = time.perf_counter()
    if local:
        rows = [_logged(run_point(t), i, len(tasks)) for i, t in enumerate(tasks)]
        executor = {"kind": "local"}
    else:
        rows, executor = _run_on_ray(sweep, tasks, address, num_cpus)
    rows = sorted(({**dict.fromkeys(COLUMNS), **r} for r in rows), key=lambda r: r["index"])  # every column
    seconds = time.perf_counter() - t0
    files = write_results(sweep, rows, {**cpu_info(), "executor": executor, "seconds": round(seconds, 1)})
    return SweepResult(sweep, rows, files, seconds)


def _logged(row: dict[str, Any], done: int, total: int) -> dict[str, Any]:
    what = row.get("error") if row["status"] != "ok" else f"{row.get('seconds', 0):.1f} s"
    log.info("[%d/%d] %s: %s (%s)", done + 1, total, row["point"], row["status"], what)
    return row


def _run_on_ray(sweep: Sweep, tasks: list[PointTask], address: str | None,
                num_cpus: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ray = _import_ray()
    started, tmp = _start_ray(ray, address, num_cpus)
    try:
        node_cpus = _largest_node_cpus(ray)
        # max_retries=0: a point whose worker dies is reported, not silently run again
        remote = ray.remote(max_retries=0)(run_point)
        refs = {}
        for point, task in zip(sweep.points, tasks, strict=True):
            cpus = node_cpus if point.measures_latency else min(sweep.spec.cpus_per_point, node_cpus)
            task.cpus = cpus
            refs[remote.options(num_cpus=cpus, name=f"lcpipe-sweep-{task.id}").remote(task)] = task
        rows = []
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            task = refs[ready[0]]
            try:
                row = ray.get(ready[0])
            except Exception as exc:  # the worker died (OOM kill, segfault): record it, go on
                row = _crashed_row(task, exc)
            rows.append(_logged(row, len(rows), len(tasks)))
        executor = {"kind": "ray", "address": address or "local", "node_cpus": node_cpus,
                    "ray": getattr(ray, "__version__", "")}
        return rows, executor
    finally:
        if started:
            ray.shutdown()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _crashed_row(task: PointTask, exc: BaseException) -> dict[str, Any]:
    row = {"point": task.id, "index": task.index, "overrides": task.overrides, "run_dir": task.run_dir,
           "status": "failed", "error": f"worker crashed: {type(exc).__name__}: {str(exc).splitlines()[0]}",
           "error_class": "crashed", "exit_code": 1}
    Path(task.run_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(task.run_dir) / POINT_FILE, row)
    return row


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("package 'ray' is not installed (needed for sweeps on Ray): "
                                     "pip install 'lcpipe[sweep]', or run with --local") from exc
    return ray


def _start_ray(ray: Any, address: str | None, num_cpus: int | None) -> tuple[bool, str | None]:
    """Connect to ``address`` / $RAY_ADDRESS, or start a lean, quiet local Ray; returns
    (started here, temp dir to remove)."""
    if ray.is_initialized():
        return False, None
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
              "configure_logging": True}
    if address:
        ray.init(address=address, **common)
        return True, None
    from lcpipe.sysinfo import default_threads

    # A short temp path: Ray's unix sockets live under it and must stay below ~107 characters.
    tmp = tempfile.mkdtemp(prefix="lcpipe-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    ray.init(num_cpus=num_cpus or default_threads(), object_store_memory=RAY_OBJECT_STORE_BYTES,
             _temp_dir=tmp, **common)
    return True, tmp


def _largest_node_cpus(ray: Any) -> int:
    """CPUs of the biggest alive node: a latency point asks for all of them, so it only fits on
    such a node, alone."""
    cpus = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(max(cpus, default=1)))
