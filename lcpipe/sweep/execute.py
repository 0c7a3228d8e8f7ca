"""Running the points: in-process one after another, or as Ray tasks (local Ray or a cluster, see
on_ray.py), then the result files."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lcpipe.errors import ConfigError, LcpipeError
from lcpipe.fileio import write_json
from lcpipe.render.sweep import COLUMNS
from lcpipe.rundir import claim_output_dir
from lcpipe.sweep import on_ray, shipping
from lcpipe.sweep.fleet import FLEET_FILE, failed_fleet_row, fleet_row
from lcpipe.sweep.point import GATED_OK, PointTask, run_point, timed_earlier
from lcpipe.sweep.results import write_results
from lcpipe.sweep.schema import MAX_POINTS, Sweep, load_sweep

log = logging.getLogger("lcpipe")


class SweepFailedError(LcpipeError):
    """At least one point of a sweep failed (the others finished; see sweep.json)."""

    exit_code = 1


@dataclass
class SweepResult:
    sweep: Sweep
    rows: list[dict[str, Any]]
    files: dict[str, Path]
    seconds: float
    fleet: list[dict[str, Any]] = field(default_factory=list)  # one timing row per (point, CPU kind)
    tasks: list[PointTask] = field(default_factory=list)  # the payloads sent to Ray (what left the driver)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def gate_failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "gate_failed"]

    @property
    def gate_inconclusive(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "gate_inconclusive"]


def run_sweep(sweep: Sweep | str | Path, *, out: str | Path | None = None, local: bool = False,
              address: str | None = None, cache_dir: str | Path | None = None, force: bool = False,
              no_cache: bool = False, overrides: tuple[str, ...] | list[str] = (),
              num_cpus: int | None = None, per_cpu_kind: bool = False, storage: str | None = None,
              max_points: int = MAX_POINTS) -> SweepResult:
    """Run every point (Ray tasks, or in-process with ``local``) and write the result tables."""
    from lcpipe.cache import default_cache_dir
    from lcpipe.sweep.nodes import node_facts
    from lcpipe.sysinfo import cpu_info

    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep, overrides, max_points)
    if out:
        sweep.out = Path(out).resolve()
    if local and per_cpu_kind:
        raise ConfigError("--per-cpu-kind times points on each CPU kind of a Ray cluster; drop --local")
    sweep.out = claim_output_dir(sweep.out, "sweep", made_by_older=_older_sweep)
    storage = storage or sweep.spec.storage
    log.info("sweep %s: %d point(s) -> %s", sweep.name, len(sweep.points), sweep.out)
    t0 = time.perf_counter()
    fleet: list[dict[str, Any]] = []
    if local:
        cache = str(Path(cache_dir or default_cache_dir()).expanduser().resolve())
        tasks = [PointTask(p.index, p.id, p.overrides, base=str(sweep.base), args=p.args,
                           run_dir=str(sweep.out / "points" / p.id), cache_dir=cache, force=force, no_cache=no_cache,
                           eval_shards=sweep.spec.eval_shards) for p in sweep.points]
        facts = node_facts()
        rows = [_logged({**run_point(t), "node": facts}, i, len(tasks)) for i, t in enumerate(tasks)]
        executor: dict[str, Any] = {"kind": "local"}
    else:
        # --cache-dir on Ray: a folder each node uses for itself (default: each node's own cache)
        opts = {"cache_dir": str(Path(cache_dir).expanduser().resolve()) if cache_dir else None, "force": force,
                "no_cache": no_cache, "storage": storage}
        run = _RaySweep(sweep, opts, per_cpu_kind)
        rows, executor = run.run(address, num_cpus)
        fleet, tasks = run.fleet, run.tasks
    for r in rows:  # flat node columns for the table and CSV
        node = r.get("node") or {}
        r.update(node_id=node.get("node_id"), cpu_kind=node.get("cpu_kind"), cpu_model=node.get("cpu_model"),
                 timed_earlier=timed_earlier(r))
    rows = sorted(({**dict.fromkeys(COLUMNS), **r} for r in rows), key=lambda r: r["index"])  # every column
    seconds = time.perf_counter() - t0
    files = write_results(sweep, rows, {**cpu_info(), "executor": executor, "seconds": round(seconds, 1)}, fleet)
    return SweepResult(sweep, rows, files, seconds, fleet, tasks)


def _older_sweep(folder: Path) -> bool:
    """A sweep folder an lcpipe without the marker wrote: its sweep.json, or only point run dirs so far."""
    import json

    try:
        doc = json.loads((folder / "sweep.json").read_text())
        return isinstance(doc, dict) and {"sweep", "points"} <= doc.keys()
    except (OSError, ValueError):
        points = folder / "points"
        return points.is_dir() and {p.name for p in folder.iterdir()} == {"points"}


def _nodes_quietly(ray: Any) -> list[dict[str, Any]]:
    """``ray.nodes()`` (dead ones too), or [] if the cluster cannot say: only used to name a node."""
    try:
        return ray.nodes()
    except Exception:
        log.debug("could not list the cluster's nodes", exc_info=True)
        return []


def _logged(row: dict[str, Any], done: int, total: int) -> dict[str, Any]:
    what = row.get("error") if row["status"] != "ok" else f"{row.get('seconds', 0):.1f} s"
    log.info("[%d/%d] %s: %s (%s)", done + 1, total, row["point"], row["status"], what)
    return row


class _RaySweep:
    """One sweep on Ray: submit the points, bring each home as it finishes, re-time per CPU kind."""

    def __init__(self, sweep: Sweep, opts: dict[str, Any], per_cpu_kind: bool) -> None:
        self.sweep, self.opts, self.per_cpu_kind = sweep, opts, per_cpu_kind
        self.points = {p.id: p for p in sweep.points}
        self.token = uuid.uuid4().hex[:12]
        self.fleet: list[dict[str, Any]] = []
        self.tasks: list[PointTask] = []
        self.pending: dict[Any, tuple[Any, ...]] = {}
        self.resubmitted: dict[str, int] = {}  # point id -> times submitted again after a lost result
        self.kinds: dict[str, list[dict[str, Any]]] = {}
        self.attempt_log: Any = None  # on_ray.AttemptLog actor: which node ran each attempt

    def run(self, address: str | None, num_cpus: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        out = self.sweep.out
        tasks, rows, names = on_ray.prepare(self.sweep, out, self.opts)  # refuses before Ray starts
        if not tasks and not self.per_cpu_kind:  # every point resumed or failed before running: no Ray needed
            return [_logged(r, i, len(rows)) for i, r in enumerate(rows)], {"kind": "ray", "address": address,
                                                                             "submitted": 0}
        data = shipping.pack_inputs(names) if tasks else b""
        ray = self.ray = on_ray.import_ray()
        started, tmp = False, None
        try:
            started, tmp = on_ray.start_ray(ray, address, num_cpus)  # cleans up after itself if it fails
            node_cpus = on_ray.largest_node_cpus(ray)
            if self.per_cpu_kind:
                from lcpipe.sweep.nodes import kinds_of, probe_nodes

                self.kinds = kinds_of(probe_nodes(ray))
                log.info("CPU kinds: %s", ", ".join(f"{k} ({len(v)} node(s))" for k, v in self.kinds.items()))
            digest, ref = on_ray.ship(ray, data, self.opts["storage"]) if tasks else (None, None)
            self.attempt_log = on_ray.start_attempt_log(ray) if tasks else None
            # retries: Ray reruns a point whose worker or node died (not one that raised: those are rows)
            self._remote = ray.remote(max_retries=self.sweep.spec.retries, retry_exceptions=False)(on_ray.run_shipped)
            self._inputs_ref = ref
            for task in tasks:
                point = self.points[task.id]
                task.cpus = node_cpus if point.measures_latency else min(self.sweep.spec.cpus_per_point, node_cpus)
                task.inputs_sha256 = digest
                self.tasks.append(task)
                self._submit(task)
            total = len(rows) + len(tasks)
            for row in rows:
                _logged(row, rows.index(row), total)
                self._timed_elsewhere(row)
            while self.pending:
                ready, _ = ray.wait(list(self.pending), num_returns=1)
                what = self.pending.pop(ready[0])
                if what[0] == "point":
                    row = self._point_done(ready[0], what[1])
                    if row is not None:  # None: submitted again
                        rows.append(_logged(row, len(rows), total))
                else:
                    self._retime_done(ready[0], *what[1:])
            executor = {"kind": "ray", "address": address or "local", "node_cpus": node_cpus,
                        "ray": getattr(ray, "__version__", ""), "retries": self.sweep.spec.retries,
                        "cpu_kinds": {k: [n["node_id"] for n in v] for k, v in self.kinds.items()}}
            return rows, executor
        finally:
            if self.attempt_log is not None:
                on_ray.stop_attempt_log(ray, self.attempt_log)
            if started:
                ray.shutdown()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def _submit(self, task: PointTask) -> None:
        r = self._remote.options(num_cpus=task.cpus, scheduling_strategy="SPREAD",
                                 name=f"lcpipe-sweep-{task.id}").remote(task, self._inputs_ref, self.token,
                                                                        self.attempt_log)
        self.pending[r] = ("point", task)

    def _point_done(self, ref: Any, task: PointTask) -> dict[str, Any] | None:
        home = self.sweep.out / "points" / task.id
        tried = on_ray.attempts(self.ray, self.attempt_log, task.id)
        try:
            row = self.ray.get(ref)
        except Exception as exc:  # every attempt's worker or node died: name the node(s), go on
            # Ray retries a task whose node died, but not a finished one whose returned row was lost
            # with that node (OwnerDiedError / ObjectLostError): submit it again, within the same bound.
            # (counted here: an attempt that failed before it started is not in `tried`)
            again = self.resubmitted.get(task.id, 0)
            if isinstance(exc, self.ray.exceptions.ObjectLostError) and again < self.sweep.spec.retries:
                self.resubmitted[task.id] = again + 1
                log.warning("point %s: its result was lost with its node (%s); running it again", task.id,
                            type(exc).__name__)
                self._submit(task)
                return None
            return on_ray.crashed_row(task, exc, tried, home, _nodes_quietly(self.ray))
        if len(tried) > 1:
            row["attempts"] = tried  # retried after a node or worker died
        row = on_ray.bring_home(row, home, self.opts["storage"])
        self._timed_elsewhere(row)
        return row

    def _timed_elsewhere(self, row: dict[str, Any]) -> None:
        """Collect the point's own timing and submit a re-time on each CPU kind it lacks."""
        if not self.per_cpu_kind:
            return
        home = Path(row["run_dir"])
        have = on_ray.fleet_from_row(row, home) if row.get("status") in GATED_OK else []
        self.fleet += have
        point = self.points.get(row["point"])
        if not self.kinds or not have or point is None:
            return
        from lcpipe.sweep.nodes import ir_files, retime

        irs = ir_files(home)
        if irs is None:
            return
        vopts = point.config.stage_options("validate")
        timing = {k: getattr(vopts, k) for k in ("latency", "throughput", "warmup", "iterations", "throughput_seconds")}
        timing["rounds"] = vopts.rounds or vopts.min_rounds  # adaptive validate: its minimum
        timing["threads"] = point.config.runtime.threads
        timing["inference_precision"] = getattr(vopts, "inference_precision", "f32")
        irs_ref = self.ray.put(irs)
        done = {f["cpu_kind"] for f in have if f["status"] == "ok"}
        for kind, nodes in self.kinds.items():
            if kind not in done:
                self._submit_retime(row["point"], kind, nodes, [], irs_ref, timing, retime)

    def _submit_retime(self, point: str, kind: str, nodes: list[dict[str, Any]], tried: list[dict[str, Any]],
                       irs_ref: Any, timing: dict[str, Any], fn: Any) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = next(n for n in nodes if n not in tried)
        r = self.ray.remote(fn).options(
            num_cpus=node["ray_cpus"], max_retries=0, name=f"lcpipe-retime-{point}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["node_id"], soft=False)).remote(irs_ref, timing)
        self.pending[r] = ("retime", point, kind, nodes, [*tried, node], irs_ref, timing, fn)

    def _retime_done(self, ref: Any, point: str, kind: str, nodes: list[dict[str, Any]],
                     tried: list[dict[str, Any]], irs_ref: Any, timing: dict[str, Any], fn: Any) -> None:
        node = tried[-1]
        try:
            result = self.ray.get(ref)
        except Exception as exc:  # its node died or refused it: another node of the kind, else a failed row
            if any(n not in tried for n in nodes):
                log.warning("%s: re-time on %s failed (%s); trying another %s node", point, node["node_id"][:12],
                            type(exc).__name__, kind)
                self._submit_retime(point, kind, nodes, tried, irs_ref, timing, fn)
                return
            first = str(exc).splitlines()[0] if str(exc) else ""
            row = failed_fleet_row(point, node, f"node {node['node_id'][:12]} ({node['hostname']}, {kind}) "
                                                f"failed: {type(exc).__name__}: {first}")
            log.error("%s: %s", point, row["error"])
        else:
            row = fleet_row({**result, "point": point}, result, source="retime")
            log.info("%s: re-timed on %s: INT8 p50 %s ms", point, kind, row and row.get("latency_p50_int8_ms"))
        if row:
            self.fleet.append(row)
            home = self.sweep.out / "points" / point
            kept = [f for f in self.fleet if f["point"] == point and f["source"] == "retime" and f["status"] == "ok"]
            if home.is_dir():
                write_json(home / FLEET_FILE, kept)
