"""Sweeps on a real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`),
each node with its own working dir, node dir, stage cache and a custom resource standing for its CPU
kind. The driver runs from a temp folder holding the pipeline, model and data: the points must get
them shipped (no task payload holds a driver path), their run dirs must come home under --out, a
latency point is timed on both kinds, and a node killed mid-sweep costs a retry or a named failure.

Nodes get one CPU each (the machine has two, shared). Every process started here is killed by pid
in the fixture's finally; `ray stop` is never used (it would stop other users' Ray too).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import helpers
import pytest

pytest.importorskip("ray")
pytest.importorskip("nncf")
psutil = pytest.importorskip("psutil")

FAST_VALIDATE = ("{warmup: 3, rounds: 2, iterations: 20, throughput_seconds: 0.2, progress: false, "
                 "groups: data/scripts.tsv}")
# No token auth between the test's own nodes (loopback only); quick detection of a killed node.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
           "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000"}


@dataclass
class Node:
    name: str
    root: Path
    proc: subprocess.Popen | None = None
    pids: set[int] = field(default_factory=set)

    @property
    def node_dir(self) -> Path:
        return self.root / "node"

    def remember_children(self) -> None:
        """Note the pids under `ray start --block` (raylet, workers) while they are alive, to kill them later."""
        if self.proc is None:
            return
        try:
            self.pids |= {c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def kill(self) -> None:
        self.remember_children()
        for pid in sorted(self.pids) + ([self.proc.pid] if self.proc else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc is not None:
            self.proc.wait(timeout=30)


@dataclass
class Cluster:
    address: str
    nodes: dict[str, Node]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(node: Node, args: list[str], kind: str) -> None:
    for d in ("cwd", "node", "cache"):
        (node.root / d).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **RAY_ENV, "LCPIPE_NODE_DIR": str(node.node_dir), "LCPIPE_CACHE_DIR": str(node.root / "cache")}
    env.pop("RAY_ADDRESS", None)
    env.pop("LCPIPE_CPU_KIND", None)
    log = open(node.root / "ray.log", "w")  # noqa: SIM115 - the node process writes it until killed
    node.proc = subprocess.Popen(
        ["ray", "start", "--block", "--num-cpus", "1", "--resources", json.dumps({f"cpu_kind:{kind}": 1}),
         "--object-store-memory", str(150 * 2**20), "--disable-usage-stats", *args],
        cwd=node.root / "cwd", env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in (node.root / "ray.log").read_text():
        if node.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start for {node.name} failed:\n{(node.root / 'ray.log').read_text()[-3000:]}")
        time.sleep(0.5)
    node.remember_children()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Head (kind fake_a) + a second node (kind fake_b); short paths: Ray's unix sockets live there."""
    root = Path(tempfile.mkdtemp(prefix="lcr-", dir="/tmp"))
    port = _free_port()
    nodes = {"a": Node("a", root / "a"), "b": Node("b", root / "b")}
    try:
        _start(nodes["a"], ["--head", "--port", str(port), "--include-dashboard", "false",
                            "--temp-dir", str(root / "ta")], "fake_a")
        _start(nodes["b"], ["--address", f"127.0.0.1:{port}", "--temp-dir", str(root / "tb")], "fake_b")
        for k, v in RAY_ENV.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        yield Cluster(f"127.0.0.1:{port}", nodes)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes.values()):
            node.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def driver_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The driver's own folder: the real textline model and line crops copied in, the pipeline refers
    to them relative to itself. The workers are never told this path."""
    if not (helpers.TEXTLINE_MODEL / "inference.json").is_file():
        pytest.skip("shipped text-line model not available")
    d = Path(tempfile.mkdtemp(prefix="lcpipe-driver-"))
    shutil.copytree(helpers.TEXTLINE_MODEL, d / "model")
    shutil.copytree(helpers.TEXT_LINES, d / "data", ignore=shutil.ignore_patterns("*.md"))
    helpers.write_yaml(d / "tl.yaml", f"""
        name: textline_cluster
        model:
          source: {{format: paddle_inference, path: model}}
        preprocess: {{mode: resize, size: [80, 160]}}
        data:
          calib: {{images: data/lines, labels: data/calib.txt, rotations: [0, 180], count: 8}}
          eval: {{images: data/lines, labels: data/eval.txt, rotations: [0, 180], count: 16}}
        stages:
          - import: {{}}
          - fuse: {{}}
          - export: {{opset: 17}}
          - convert: {{batch: 1}}
          - quantize: {{subset_size: 8}}
          - validate: {FAST_VALIDATE}
          - report: {{}}
          - deploy: {{}}
        """)
    monkeypatch.chdir(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _sweep_file(d: Path, grid: str, extra: str = "") -> Path:
    path = d / "sweep.yaml"
    path.write_text(f"base: tl.yaml\ngrid: {grid}\nout: out\n{extra}")
    return path


def _sweep_in_child(path: str, kw: dict) -> dict:
    from lcpipe.sweep import run_sweep as lcpipe_run_sweep

    return dict(vars(lcpipe_run_sweep(path, **kw)))  # rows, fleet, tasks, files, ...: plain data


def run_sweep(path: Path, **kw: object) -> SimpleNamespace:
    """The sweep's driver in a fresh process, as `lcpipe sweep` runs it: Ray driver state left in this
    pytest process by earlier tests (local sessions, a deliberately failed ray.init) made tasks on the
    second node fail with OwnerDiedError when the driver was this process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return SimpleNamespace(**pool.submit(_sweep_in_child, str(path), kw).result(timeout=1200))


def _assert_home(row: dict, d: Path, nodes: dict[str, Node]) -> None:
    home = Path(row["run_dir"])
    assert home.parent == d / "out" / "points", row["run_dir"]
    for f in ("point.json", "metrics.json", "manifest.json", "deploy/model_int8.xml", "deploy/model_int8.bin",
              "deploy/model_fp32.xml", "deploy/model_fp32.bin", "deploy/preprocess.json"):
        assert (home / f).is_file(), f"{row['point']}: {f} did not come home"
    # the point read the shipped copies, unpacked on its node, not the driver's files
    src = json.loads((home / "manifest.json").read_text())
    text = json.dumps(src)
    assert str(d) not in text
    assert any(str(n.node_dir / "inputs") in text for n in nodes.values())


@pytest.mark.slow
def test_cluster_sweep_ships_inputs_brings_runs_home_and_times_each_cpu_kind(cluster: Cluster, driver_dir: Path
                                                                             ) -> None:
    d = driver_dir
    path = _sweep_file(d, "{stages.quantize.preset: [performance, mixed]}")
    result = run_sweep(path, address=cluster.address, per_cpu_kind=True)

    assert [r["status"] for r in result.rows] == ["ok", "ok"], [r.get("error") for r in result.rows]
    for task in result.tasks:  # what left the driver: no path of its folder, or of the repo's copies
        payload = pickle.dumps(task)
        assert str(d).encode() not in payload and str(helpers.REPO).encode() not in payload
        assert task.run_dir is None and task.base is None and task.cache_dir is None
    for row in result.rows:
        _assert_home(row, d, cluster.nodes)
        assert row["cpu_kind"] in ("fake_a", "fake_b") and row["node_id"] and row["threads"] >= 1
        assert row["node"]["cpu_model"] and row["node"]["isa"] and row["node"]["cores"] >= 1
        assert 0 < row["latency_p50_int8_ms"] and row["images"] == 32  # 16 crops x 2 rotations

    from lcpipe.render.sweep import format_fleet

    print(format_fleet(result.fleet))  # the figures, for the log (both kinds are this machine's CPU)
    # one timing row per (point, CPU kind): the point's own kind from its run, the other re-timed there
    by = {(f["point"], f["cpu_kind"]): f for f in result.fleet}
    assert set(by) == {(r["point"], k) for r in result.rows for k in ("fake_a", "fake_b")}
    for row in result.rows:
        own = by[(row["point"], row["cpu_kind"])]
        other = by[(row["point"], "fake_b" if row["cpu_kind"] == "fake_a" else "fake_a")]
        assert own["source"] == "point" and own["latency_p50_int8_ms"] == row["latency_p50_int8_ms"]
        assert other["source"] == "retime" and other["status"] == "ok" and other["node_id"] != own["node_id"]
        assert other["latency_p50_int8_ms"] > 0 and other["latency_p50_fp32_ms"] > 0 and other["throughput_int8"] > 0
    html = result.files["html"].read_text()
    assert "Fleet: one timing row per CPU kind" in html and "fake_a" in html and "fake_b" in html
    assert "Pareto front on <b>fake_a</b>" in html and "Pareto front on <b>fake_b</b>" in html
    assert len(result.files["fleet_csv"].read_text().splitlines()) == 1 + 4

    # rerun: every point resumes from what came home; no point is sent again, no kind re-timed
    again = run_sweep(path, address=cluster.address, per_cpu_kind=True)
    assert again.tasks == [] and all(r["resumed"] for r in again.rows)
    assert {(f["point"], f["cpu_kind"]) for f in again.fleet} == set(by)

    import ray
    from ray.experimental.internal_kv import _internal_kv_list

    ray.init(address=cluster.address, log_to_driver=False)
    assert not _internal_kv_list("lcpipe-sweep/")  # the sweeps' attempt records were deleted at their end


@pytest.mark.slow
@pytest.mark.parametrize("retries", [1, 0])
def test_cluster_sweep_survives_a_killed_node(cluster: Cluster, driver_dir: Path, retries: int) -> None:
    """Through storage: (a folder both nodes reach) this time: inputs go out and run dirs come home there."""
    d = driver_dir
    shared = Path(tempfile.mkdtemp(prefix="lcpipe-shared-"))
    path = _sweep_file(d, "{stages.quantize.subset_size: [8, 12, 16]}",
                       f"retries: {retries}\nstorage: file://{shared}\n")
    victim = cluster.nodes["b"]
    killed = threading.Event()

    def kill_b_once_a_point_runs_there() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = victim.node_dir / "runs"
            if runs.is_dir() and any(runs.iterdir()):
                victim.kill()
                killed.set()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_b_once_a_point_runs_there, daemon=True)
    killer.start()
    result = run_sweep(path, address=cluster.address)
    killer.join(timeout=5)
    assert killed.is_set(), "no point ever ran on the second node"

    rows = result.rows
    b_ids = {a["node_id"] for r in rows for a in r.get("attempts") or [] if a["cpu_kind"] == "fake_b"}
    hit = [r for r in rows if r.get("attempts") or r["status"] == "failed"]
    assert hit, "the killed node's point left no trace (no retry, no failure)"
    assert len(hit) == 1, hit
    r = hit[0]
    print(f"{r['point']}: {r['status']} attempts={[a['cpu_kind'] for a in r.get('attempts') or []]} "
          f"error={r.get('error')}")  # which way it went, for the log
    if retries:  # retried on the surviving node
        assert r["status"] == "ok" and r["cpu_kind"] == "fake_a"
        assert [a["cpu_kind"] for a in r["attempts"]] == ["fake_b", "fake_a"]
    else:  # reported, naming the node it died on
        assert r["status"] == "failed" and r["error_class"] == "crashed" and "fake_b" in r["error"]
        assert any(i[:12] in r["error"] for i in b_ids)
    for r in rows:
        if r["status"] == "ok":
            _assert_home(r, d, cluster.nodes)
    assert sum(r["status"] == "ok" for r in rows) == 3 - (retries == 0)  # the other points finished
    # inputs went out through storage; run dirs came home through it and were deleted there once home
    assert list((shared / "inputs").glob("*.zip")) and (shared / "runs").is_dir()
    assert not list((shared / "runs").rglob("*.zip")), list((shared / "runs").rglob("*"))
    shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.slow
def test_cluster_sweep_ships_the_paths_stage_options_declare(cluster: Cluster, driver_dir: Path) -> None:
    """bench's paddle_model is a path its options declare: the sweep ships it like model and data (no
    list of known paths), so the node runs Paddle Inference on it instead of an "unavailable" row."""
    pytest.importorskip("paddle")
    d = driver_dir
    shutil.copytree(helpers.TEXTLINE_MODEL, d / "paddle")
    base = (d / "tl.yaml").read_text().split("\n  - validate:")[0]
    (d / "tl.yaml").write_text(base + "\n  - bench: {engines: [ov_int8, paddle_onednn], warmup: 1, rounds: 1, "
                               "iterations: 5, batch: 2, eval_images: 8, e2e: false, chart: false, progress: false}\n")
    path = _sweep_file(d, "{stages.bench.paddle_model: [paddle]}")  # relative to the sweep file
    result = run_sweep(path, address=cluster.address)

    (row,) = result.rows
    assert row["status"] == "ok", row.get("error")
    payload = pickle.dumps(result.tasks[0])
    assert str(d).encode() not in payload and str(helpers.REPO).encode() not in payload
    shipped = result.tasks[0].config["stages"][-1]["bench"]["paddle_model"]
    assert shipped.endswith("/paddle") and not Path(shipped).is_absolute()  # a content name, not a driver path
    bench = json.loads((Path(row["run_dir"]) / "bench" / "bench.json").read_text())
    paddle = next(e for e in bench["engines"] if e["name"] == "paddle_onednn")
    assert paddle["available"], paddle.get("reason")
    assert paddle["latency_ms"]["p50"] > 0 and paddle["accuracy"]["agreement"] is not None
    assert any(str(n.node_dir / "inputs") in paddle["model"] for n in cluster.nodes.values()), paddle["model"]
