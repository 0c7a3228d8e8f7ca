"""Points as Ray tasks on a local Ray or a cluster without a shared filesystem.

Before anything is submitted: every point's inputs are named and sized (shipping.py; too big ->
refused, pointing at ``storage:``), and points whose run dir already came home with the same
fingerprint are resumed, not rerun. Each point runs on some node (spread; a latency point holds
all CPUs of its node), its run dir comes home under ``--out`` (through the object store,
or through ``storage:`` when the sweep has one). A node that dies takes its attempt
with it: Ray retries the point elsewhere (``retries``, bounded), else the row is failed and names
the node. With ``per_cpu_kind`` every finished latency point is re-timed once on each other CPU
kind among the alive nodes (pinned with node affinity), giving the fleet rows.

Which node ran each attempt is kept by a small actor on the driver's node (:class:`AttemptLog`,
public Ray API only): a task notes its node there before it starts work, so an attempt killed with
its node can still be named. A cluster with token authentication (``RAY_AUTH_MODE=token``) that
refuses this driver is a ConfigError (exit 2) saying how to give the driver the token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lcpipe.errors import ConfigError, InputError, MissingDependencyError
from lcpipe.fileio import sha256_json, write_json
from lcpipe.sweep import shipping
from lcpipe.sweep.fleet import FLEET_FILE, fleet_row
from lcpipe.sweep.nodes import tagged_kinds
from lcpipe.sweep.point import GATED_OK, POINT_FILE, PointTask, error_fields, run_point, timed_earlier
from lcpipe.sweep.schema import Sweep
from lcpipe.sweep.storage import Storage

log = logging.getLogger("lcpipe")

RAY_OBJECT_STORE_BYTES = 600 * 1024 * 1024  # a local Ray: room for the shipped inputs (<= 512 MiB) and run dirs
NOTE_TIMEOUT_S = 30  # a task waits this long for its attempt to be noted, then works anyway


def prepare(sweep: Sweep, out: Path, opts: dict[str, Any]) -> tuple[list[PointTask], list[dict[str, Any]],
                                                                     shipping.InputNames]:
    """Tasks for the points to run, rows for points that fail before running (a missing input) or
    are resumed from what came home, and the inputs to ship."""
    from lcpipe.version import __version__

    names = shipping.InputNames(None if opts["storage"] else shipping.SHIP_LIMIT_BYTES)
    tasks, done = [], []
    for p in sweep.points:
        home = out / "points" / p.id
        try:
            raw, used = shipping.shipped_config(p.config, names)
        except (shipping.ShipmentTooBigError, shipping.UnpinnedSourceError) as exc:
            # the sweep's own problem, the same for many points: refused before anything is submitted
            raise type(exc)(f"{sweep.source}: point {p.id}: {exc}") from None
        except (ConfigError, InputError) as exc:
            row = {"point": p.id, "index": p.index, "overrides": p.overrides, "run_dir": str(home),
                   **error_fields(exc)}
            write_json(home / POINT_FILE, row)
            done.append(row)
            continue
        fp = sha256_json({"config": raw, "eval_shards": sweep.spec.eval_shards, "lcpipe": __version__})
        resumed = None if opts["force"] else _resumed(home, fp, p.config.stage_names())
        if resumed:
            done.append(resumed)
            continue
        tasks.append(PointTask(p.index, p.id, p.overrides, config=raw, cache_dir=opts["cache_dir"],
                               force=opts["force"], no_cache=opts["no_cache"], eval_shards=sweep.spec.eval_shards,
                               storage=opts["storage"], fingerprint=fp))
    return tasks, done, names


def _resumed(home: Path, fingerprint: str, stages: list[str]) -> dict[str, Any] | None:
    """The row of a point whose run dir came home finished, for the same inputs and config."""
    try:
        row = json.loads((home / POINT_FILE).read_text())
        finished = json.loads((home / "manifest.json").read_text()).get("finished")
    except (OSError, ValueError):
        return None
    if row.get("fingerprint") != fingerprint or row.get("status") not in GATED_OK or not finished:
        return None
    # nothing of it is computed in this run: every stage is reused
    return {**row, "run_dir": str(home), "resumed": True, "cached_stages": stages, "computed_stages": []}


def run_shipped(task: PointTask, inputs: bytes | None, sweep_token: str, attempt_log: Any) -> dict[str, Any]:
    """Ray task: note this attempt's node, unpack the shipped inputs on this node, run the point in a
    node-local run dir, and return its row with the run dir zipped (or put on storage)."""
    import ray

    from lcpipe.sweep.nodes import node_facts

    facts = node_facts(ray)
    _note_attempt(ray, attempt_log, task.id, facts)
    work = shipping.node_dir() / "runs" / uuid.uuid4().hex[:12]
    run_dir = work / task.id
    try:
        store = Storage(task.storage) if task.storage else None
        try:
            if inputs is None:
                assert store is not None and task.inputs_sha256
                inputs = store.get(f"inputs/{task.inputs_sha256}.zip")
            root = shipping.materialize(inputs, task.inputs_sha256 or "")
            config = shipping.node_config(task.config or {}, root, f"point {task.id}")
        except Exception as exc:  # bad shipment: the point's failure, not the sweep's
            run_dir.mkdir(parents=True, exist_ok=True)
            row = {"point": task.id, "index": task.index, "overrides": task.overrides, **error_fields(exc)}
        else:
            row = run_point(task, config, run_dir)
        row["node"] = facts
        write_json(run_dir / POINT_FILE, row)
        home = shipping.pack_dir(run_dir)
        if store is not None:  # storage: keeps run dirs out of the object store
            row["_home_rel"] = f"runs/{sweep_token}/{task.id}.zip"
            store.put(row["_home_rel"], home)
        else:
            row["_home"] = home
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


class AttemptLog:
    """Ray actor: point id -> the nodes its attempts ran on, in order. It lives on the head node for
    one sweep (a worker node that dies takes its tasks, not this record); it holds no CPU."""

    def __init__(self) -> None:
        self._tried: dict[str, list[dict[str, Any]]] = {}

    def note(self, point: str, node: dict[str, Any]) -> None:
        self._tried.setdefault(point, []).append(node)

    def tried(self, point: str) -> list[dict[str, Any]]:
        return list(self._tried.get(point, []))


def start_attempt_log(ray: Any) -> Any:
    """This sweep's AttemptLog actor, pinned to the head node (None if it cannot be started: a
    crashed row then names the node only if Ray's error does); removed with the driver, or by
    :func:`stop_attempt_log` at the sweep's end."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        # on the head node: the driver may be attached to a worker node, which a sweep can lose
        head = next((n["NodeID"] for n in ray.nodes()
                     if n.get("Alive") and "node:__internal_head__" in (n.get("Resources") or {})), None)
        home = head or ray.get_runtime_context().get_node_id()
        actor = ray.remote(num_cpus=0, max_restarts=0)(AttemptLog)
        return actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(home, soft=True)).remote()
    except Exception as exc:  # bookkeeping only: the sweep runs without it
        log.warning("no record of which node runs each attempt (%s: %s)", type(exc).__name__, exc)
        return None


def stop_attempt_log(ray: Any, attempt_log: Any) -> None:
    """End the sweep's AttemptLog: nothing of the sweep stays on the cluster."""
    try:
        if ray.is_initialized():
            ray.kill(attempt_log)
    except Exception:  # the sweep's result does not depend on it; the actor dies with the driver anyway
        log.debug("could not stop the attempt log", exc_info=True)


def _note_attempt(ray: Any, attempt_log: Any, point: str, facts: dict[str, Any]) -> None:
    """Before the work starts: a node killed mid-point cannot report afterwards."""
    try:
        node = {k: facts[k] for k in ("node_id", "hostname", "cpu_kind")}
        ray.get(attempt_log.note.remote(point, node), timeout=NOTE_TIMEOUT_S)
    except Exception:  # bookkeeping only: a point must not fail for it
        log.debug("could not note the attempt's node", exc_info=True)


def attempts(ray: Any, attempt_log: Any, point: str) -> list[dict[str, Any]]:
    """The nodes the point's attempts ran on ([] if the log cannot be read)."""
    try:
        return ray.get(attempt_log.tried.remote(point), timeout=NOTE_TIMEOUT_S)
    except Exception:  # bookkeeping only: a crashed row then names the node from the exception, if it can
        log.debug("could not read the attempts of %s", point, exc_info=True)
        return []


def bring_home(row: dict[str, Any], home: Path, storage: str | None) -> dict[str, Any]:
    """Unpack a finished point's run dir under the driver's --out; the row then names that path.
    A run dir that cannot be brought home (unreadable in storage, a damaged zip) makes the point's
    row failed, class ``input``; the sweep goes on. The storage copy is deleted once read."""
    data = row.pop("_home", None)
    rel = row.pop("_home_rel", None)
    try:
        if data is None and rel and storage:
            data = Storage(storage).get(rel)
        if data is not None:
            shipping.unpack_home(data, home)
    except (InputError, OSError) as exc:
        node = row.get("node") or {}
        where = f"node {str(node.get('node_id') or '?')[:12]} ({node.get('hostname')})"
        fields = error_fields(exc)
        fields["error"] = f"the run dir from {where} could not be brought home: {fields['error']}"
        fields["error_class"] = "input"
        row.update(fields)
        log.error("%s: %s", row.get("point"), fields["error"])
    finally:
        if rel and storage:
            _delete_quietly(Storage(storage), rel)
    row["run_dir"] = str(home)
    write_json(home / POINT_FILE, row)
    return row


def _delete_quietly(store: Storage, rel: str) -> None:
    try:
        store.delete(rel)
    except InputError as exc:  # a leftover in storage is not worth failing the point for
        log.warning("%s", exc)


def crashed_row(task: PointTask, exc: BaseException, tried: list[dict[str, Any]], home: Path,
                cluster_nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A point whose every attempt died with its worker or node: name the node(s), from the attempt
    log or else from the node id in Ray's error looked up in ``cluster_nodes`` (``ray.nodes()``,
    which still lists a dead node with its resources)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    nodes = (", ".join(f"{a['node_id'][:12]} ({a['hostname']}, {a['cpu_kind']})" for a in tried)
             or _node_in(exc, cluster_nodes or []))
    row = {"point": task.id, "index": task.index, "overrides": task.overrides, "run_dir": str(home),
           "status": "failed", "error": f"worker or node died on {nodes}: {type(exc).__name__}: {text}",
           "error_class": "crashed", "exit_code": 1, "attempts": tried, "fingerprint": None}
    write_json(home / POINT_FILE, row)
    return row


def _node_in(exc: BaseException, cluster_nodes: list[dict[str, Any]]) -> str:
    m = re.search(r"node[ _]?id[:= ]+([0-9a-f]{16,})", str(exc), re.I)
    if not m:
        return "an unknown node"
    node_id = m.group(1)
    known = next((n for n in cluster_nodes if str(n.get("NodeID", "")).startswith(node_id)), None)
    if known is None:
        return node_id[:12]
    kinds = tagged_kinds(known.get("Resources") or {})
    return f"{node_id[:12]} ({', '.join([known.get('NodeManagerHostname') or '?', *kinds])})"


# ---------------------------------------------------------------- Ray session

def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("package 'ray' is not installed (needed for sweeps on Ray): "
                                     "pip install 'lcpipe[sweep]', or run with --local") from exc
    return ray


def start_ray(ray: Any, address: str | None, num_cpus: int | None) -> tuple[bool, str | None]:
    """Connect to ``address`` / $RAY_ADDRESS, or start a lean, quiet local Ray; returns
    (started here, temp dir to remove). A cluster that cannot be reached is a ConfigError (exit 2)
    naming the address; whatever fails, a half-started Ray is shut down and the temp dir removed."""
    if ray.is_initialized():
        return False, None
    where = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
              "configure_logging": True}
    if address:
        _check_reachable(address, where)  # ray.init waits minutes on an address nobody answers
        try:
            with _stderr_to_log():
                ray.init(address=address, **common)
        except Exception as exc:
            _shutdown_quietly(ray)
            if _token_refused(exc):
                raise ConfigError(_token_advice(f"{where} {address}")) from None
            if not isinstance(exc, (ConnectionError, TimeoutError, RuntimeError)):
                raise
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{where} {address}: cannot connect to a Ray cluster there ({first}); start one "
                              "(ray start --head) or fix the address, or run with --local") from None
        except BaseException:
            _shutdown_quietly(ray)
            raise
        return True, None
    from lcpipe.sysinfo import default_threads

    # A short temp path: Ray's unix sockets live under it and must stay below ~107 characters.
    tmp = tempfile.mkdtemp(prefix="lcpipe-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        ray.init(num_cpus=num_cpus or default_threads(), object_store_memory=RAY_OBJECT_STORE_BYTES,
                 _temp_dir=tmp, **common)
    except BaseException:
        _shutdown_quietly(ray)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True, tmp


def _token_refused(exc: BaseException) -> bool:
    """Ray's AuthenticationError, raised itself (token mode here, but no token) or, when the cluster
    refused a missing or wrong token, only as text in the cause of "Failed to connect"."""
    seen: BaseException | None = exc
    while seen is not None:
        if any(c.__name__ == "AuthenticationError" for c in type(seen).__mro__) or \
                re.search(r"AuthenticationError|InvalidAuthToken|Unauthenticated", str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _token_advice(what: str) -> str:
    """Why this driver's token failed, and the fix (Ray reads RAY_AUTH_TOKEN, then the file
    RAY_AUTH_TOKEN_PATH names, then ~/.ray/auth_token)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        why = "the cluster there requires a token and RAY_AUTH_MODE is not 'token' here"
    elif os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").is_file():
        why = "the cluster there refused the token found here"
    else:
        why = "RAY_AUTH_MODE=token but no token found here"
    return (f"{what}: Ray token authentication failed ({why}); run lcpipe with RAY_AUTH_MODE=token and the "
            "cluster's token in RAY_AUTH_TOKEN, or in a file named by RAY_AUTH_TOKEN_PATH (default "
            "~/.ray/auth_token); `ray get-auth-token` on the head prints it")


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    """Hold file descriptor 2 while Ray connects: a refused token makes Ray's C++ client print a
    warning every second for ~20 s before it gives up; lcpipe says it once, the text goes to the log."""
    from lcpipe.streams import fd_redirected

    with tempfile.TemporaryFile() as held:
        with fd_redirected(2, held.fileno()):
            yield
        held.seek(0)
        text = held.read().decode(errors="replace").strip()
        if text:
            log.debug("Ray while connecting:\n%s", text)


def _check_reachable(address: str, where: str, timeout_s: float = 10.0) -> None:
    """A TCP connect to the head's ``host:port`` (also behind ``ray://``): refused or silent -> ConfigError."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"{where} {address}: cannot connect to a Ray cluster there ({exc}); start one "
                          "(ray start --head) or fix the address, or run with --local") from None


def _shutdown_quietly(ray: Any) -> None:
    try:
        ray.shutdown()
    except Exception:  # cleaning up after a failed start: the start's error is the one to report
        log.debug("ray.shutdown after a failed start", exc_info=True)


def largest_node_cpus(ray: Any) -> int:
    """CPUs of the biggest alive node: a latency point asks for all of them, so it only fits on
    such a node, alone."""
    cpus = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(max(cpus, default=1)))


def ship(ray: Any, data: bytes, storage: str | None) -> tuple[str, Any]:
    """sha256 of the inputs zip and what the tasks get: an object ref, or None (they read storage:)."""
    digest = hashlib.sha256(data).hexdigest()
    if storage:
        store = Storage(storage)
        if not store.exists(f"inputs/{digest}.zip"):
            store.put(f"inputs/{digest}.zip", data)
        return digest, None
    return digest, ray.put(data)


def fleet_from_row(row: dict[str, Any], home: Path) -> list[dict[str, Any]]:
    """The fleet rows a point already has: its own node's timing, plus re-times that came home before."""
    try:
        kept = json.loads((home / FLEET_FILE).read_text())
    except (OSError, ValueError):
        kept = []
    own = fleet_row(row, row.get("node") or {}, source="point", timed_earlier=timed_earlier(row))
    kept = [{**r, "timed_earlier": True} for r in kept]  # re-timed by an earlier sweep run
    return [own, *[r for r in kept if r.get("cpu_kind") != own["cpu_kind"]]] if own else kept
