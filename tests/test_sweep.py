"""Sweeps: the sweep file schema, points as cached pipeline runs (in-process and on local Ray),
failed points reported without stopping the others, resume from the cache, result tables, the
Pareto front, and sharded evaluation merged exactly."""

from __future__ import annotations

import json
import re
import textwrap
from fractions import Fraction
from pathlib import Path

import helpers
import numpy as np
import pytest
from click.testing import CliRunner

from lcpipe.cli import cli
from lcpipe.errors import ConfigError
from lcpipe.measure.accuracy import EvalCounts, counts_from_logits, merge
from lcpipe.measure.shards import shard_ranges
from lcpipe.render.sweep import pareto_front
from lcpipe.sweep import load_sweep, run_sweep

IMAGENET = helpers.REPO / "calib_data" / "imagenet"
# Few images and short timing loops: the 4-point sweep stays well under the 3 minutes it may take.
FAST_VALIDATE = "{warmup: 3, rounds: 2, iterations: 20, throughput_seconds: 0.2, progress: false}"


def _base_yaml(path: Path, stages: str) -> Path:
    return helpers.write_yaml(path, f"""
        name: sweep_base
        model:
          source: {{format: pdparams, path: missing.pdparams}}
          arch: auto
        data:
          calib: {{images: {IMAGENET / 'images'}, labels: {IMAGENET / 'calib.txt'}, count: 16}}
          eval: {{images: {IMAGENET / 'images'}, labels: {IMAGENET / 'val.txt'}, count: 32}}
        stages:
        {stages}
        """)


EXPORT_ONLY = """
          - import: {}
          - fuse: {}
          - export: {opset: 17}"""
INT8 = EXPORT_ONLY + f"""
          - convert: {{batch: 1}}
          - quantize: {{subset_size: 16}}
          - validate: {FAST_VALIDATE}
          - report: {{}}"""


@pytest.fixture
def scales(synthetic_weights, tmp_path: Path) -> dict[str, Path]:
    """Two V1 scales with random weights, copied beside the sweep file (paths relative to it)."""
    out = {}
    for arch in ("PPLCNet_x0_25", "PPLCNet_x0_5"):
        out[arch] = tmp_path / f"{arch}.pdparams"
        out[arch].write_bytes(synthetic_weights(arch).read_bytes())
    return out


def _sweep_yaml(tmp_path: Path, base: str, extra: str = "") -> Path:
    path = helpers.write_yaml(tmp_path / "sweep.yaml", f"""
        base: {base}
        grid:
          model.arch: [PPLCNet_x0_25, PPLCNet_x0_5]
          stages.quantize.preset: [performance, mixed]
        sources:
          PPLCNet_x0_25: {{format: pdparams, path: PPLCNet_x0_25.pdparams}}
          PPLCNet_x0_5: {{format: pdparams, path: PPLCNet_x0_5.pdparams}}
        out: out
        """)
    path.write_text(path.read_text() + textwrap.dedent(extra).lstrip("\n"))
    return path


# ------------------------------------------------------------------ the sweep file

def test_sweep_file_expands_grid_then_points_with_sources_and_set(tmp_path: Path, scales) -> None:
    _base_yaml(tmp_path / "base.yaml", INT8)
    path = _sweep_yaml(tmp_path, "base.yaml", """
        points:
          - {model.source.path: other/weights.pdparams, stages.quantize.preset: mixed}
        set: {data.eval.count: 8}
        """)
    (tmp_path / "other").mkdir()
    sweep = load_sweep(path)
    assert [p.id for p in sweep.points] == ["p00-PPLCNet_x0_25-performance", "p01-PPLCNet_x0_25-mixed",
                                            "p02-PPLCNet_x0_5-performance", "p03-PPLCNet_x0_5-mixed",
                                            "p04-weights.pdparams-mixed"]
    cfgs = [p.config for p in sweep.points]
    assert cfgs[2].model.source.path == str(scales["PPLCNet_x0_5"])  # from `sources`, relative to the sweep file
    assert cfgs[1].stage_options("quantize").preset == "mixed"
    assert all(c.data.eval.count == 8 for c in cfgs)  # `set` reaches every point
    assert cfgs[4].model.source.path == str(tmp_path / "other" / "weights.pdparams")  # a point's own path wins
    assert all(p.measures_latency for p in sweep.points)
    assert sweep.out == tmp_path / "out"


@pytest.mark.parametrize("text, needle", [
    ("base: base.yaml\ngridd: {model.arch: [PPLCNet_x0_25]}\n", "gridd: unknown key (did you mean 'grid'?)"),
    ("base: base.yaml\ngrid: {stages.quantize.presett: [mixed]}\n", "point 0 (stages.quantize.presett=mixed)"),
    ("base: base.yaml\ngrid: {model.arch: []}\n", "grid: model.arch: needs at least one value"),
    ("base: nope.yaml\ngrid: {model.arch: [PPLCNet_x0_25]}\n", "nope.yaml does not exist"),
    ("base: base.yaml\nsources: {PPLCNet_x9: {format: pdparams, path: a}}\n", "PPLCNet_x9: unknown arch"),
    ("base: base.yaml\n", "no points"),
])
def test_bad_sweep_file_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    _base_yaml(tmp_path / "base.yaml", INT8)
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_sweep(tmp_path / "s.yaml")
    assert needle in str(err.value) and "s.yaml" in str(err.value)


def test_pareto_front_keeps_points_nothing_beats() -> None:
    # (latency, accuracy): lower latency and higher accuracy are better
    pts = [(1.0, 0.50), (2.0, 0.70), (1.5, 0.40), (3.0, 0.70), (2.5, 0.80), (1.0, 0.50)]
    assert pareto_front(pts) == [0, 5, 1, 4]


# ------------------------------------------------------------------ export-only points, in-process

def test_export_only_sweep_in_process(tmp_path: Path, scales) -> None:
    _base_yaml(tmp_path / "base.yaml", EXPORT_ONLY)
    path = helpers.write_yaml(tmp_path / "sweep.yaml", """
        base: base.yaml
        grid: {model.arch: [PPLCNet_x0_25, PPLCNet_x0_5], stages.export.opset: [17]}
        sources:
          PPLCNet_x0_25: {format: pdparams, path: PPLCNet_x0_25.pdparams}
          PPLCNet_x0_5: {format: pdparams, path: PPLCNet_x0_5.pdparams}
        out: out
        """)
    result = run_sweep(path, local=True)
    rows = {r["point"]: r for r in result.rows}
    small, big = rows["p00-PPLCNet_x0_25-17"], rows["p01-PPLCNet_x0_5-17"]
    assert small["status"] == big["status"] == "ok" and small["cpus"] is None  # in-process
    assert small["arch"] == "PPLCNet_x0_25" and big["arch"] == "PPLCNet_x0_5"
    assert 0 < small["params"] < big["params"] and 0 < small["flops"] < big["flops"]
    assert small["size_onnx"] > 0 and small["fp32_top1"] is None
    assert (Path(small["run_dir"]) / "export" / "model.onnx").is_file()
    html = result.files["html"].read_text()
    assert "No scatter" in html and "PPLCNet_x0_5" in html
    header = result.files["csv"].read_text().splitlines()[0].split(",")
    assert header[:3] == ["point", "model.arch", "stages.export.opset"] and "flops" in header


# ------------------------------------------------------------------ INT8 points on local Ray

@pytest.mark.slow
def test_int8_sweep_on_ray_reports_failures_and_resumes_from_cache(tmp_path: Path, scales,
                                                                   lcpipe_cache_dir: Path) -> None:
    pytest.importorskip("ray")
    pytest.importorskip("nncf")
    _base_yaml(tmp_path / "base.yaml", INT8)
    path = _sweep_yaml(tmp_path, "base.yaml", "points:\n  - {model.source.path: no/such/weights.pdparams}\n"
                                             "eval_shards: 2\n")
    cache = tmp_path / "cache"
    result = run_sweep(path, cache_dir=cache, num_cpus=2)

    rows = {r["point"]: r for r in result.rows}
    assert len(rows) == 5
    failed = rows["p04-weights.pdparams"]
    assert failed["status"] == "failed" and failed["error_class"] == "input" and failed["exit_code"] == 2
    assert "no/such/weights.pdparams does not exist" in failed["error"]
    ok = [r for r in result.rows if r["status"] == "ok"]
    assert len(ok) == 4
    for r in ok:
        assert r["cpus"] == 2  # a point that measures latency holds the whole node
        assert r["latency_p50_fp32_ms"] > 0 and r["latency_p50_int8_ms"] > 0 and r["throughput_int8"] > 0
        assert 0.9 < r["cosine"] <= 1.0 and r["images"] == 32 and r["size_int8"] < r["size_fp32"]
        assert (Path(r["run_dir"]) / "metrics.json").is_file() and (Path(r["run_dir"]) / "point.log").is_file()
        assert not list(Path(r["run_dir"]).rglob("model_image.xml"))  # no deploy stage: no bundle anywhere
        # eval_shards: the same eval set again in 2 Ray tasks, merged: the validate stage's figures exactly
        assert r["sharded_images"] == 32 and r["sharded_agreement"] == r["agreement"]
        assert r["sharded_int8_top1"] == r["int8_top1"] and r["sharded_fp32_top1"] == r["fp32_top1"]
    assert {r["preset"] for r in ok} == {"performance", "mixed"}
    # identical upstream stages are computed once: each scale converts once for its two presets
    for arch in ("PPLCNet_x0_25", "PPLCNet_x0_5"):
        pair = [r for r in ok if r["arch"] == arch]
        assert sum("convert" in r["computed_stages"] for r in pair) == 1
        assert all("quantize" in r["computed_stages"] for r in pair)

    doc = json.loads(result.files["json"].read_text())
    assert doc["machine"]["model"] and doc["machine"]["isa"] and doc["machine"]["executor"]["kind"] == "ray"
    assert doc["swept"] == ["model.arch", "stages.quantize.preset", "model.source.path"]
    html = result.files["html"].read_text()
    assert re.search(r"data:image/png;base64,[A-Za-z0-9+/]{1000}", html)
    assert doc["machine"]["model"] in html and "Pareto front" in html and "&#9733;" in html
    assert len(result.files["csv"].read_text().splitlines()) == 6

    # resumed (through the CLI): every stage of the finished points is a cache hit; the failed point
    # is reported again and sets the exit code, the others still finish
    res = CliRunner().invoke(cli, ["sweep", str(path), "--cache-dir", str(cache), "--num-cpus", "2"])
    assert res.exit_code == 1, res.output
    assert "1 of 5 point(s) failed: p04-weights.pdparams" in res.output
    again = {r["point"]: r for r in json.loads(result.files["json"].read_text())["points"]}
    for name, r in again.items():
        if name != "p04-weights.pdparams":
            assert r["status"] == "ok" and r["computed_stages"] == [], name
            assert r["cached_stages"] == ["import", "fuse", "export", "convert", "quantize", "validate", "report"]
            assert r["int8_top1"] == rows[name]["int8_top1"]


# ------------------------------------------------------------------ shards

def test_shard_counts_merge_exactly_whatever_the_grouping() -> None:
    rng = np.random.default_rng(0)
    fp32 = rng.normal(size=(50, 7)).astype(np.float32)
    int8 = (fp32 + rng.normal(scale=0.3, size=fp32.shape)).astype(np.float32)
    labels = rng.integers(0, 7, 50)
    whole = counts_from_logits(fp32, int8, labels, top_k=3)
    for k in (1, 2, 3, 7, 50):
        parts = [counts_from_logits(fp32[a:b], int8[a:b], labels[a:b], 3) for a, b in shard_ranges(50, k)]
        assert merge(parts) == whole
        assert merge(reversed(parts)) == whole
    assert whole.images == 50 and whole.agree == int(np.sum(fp32.argmax(1) == int8.argmax(1)))
    s = whole.summary()
    assert s["int8_top1"] == np.mean(int8.argmax(1) == labels)  # rates from counts, not averaged averages
    assert isinstance(whole.cosine_sum, Fraction)
    assert EvalCounts.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole


def test_shard_ranges_cover_everything_once() -> None:
    assert shard_ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_ranges(2, 5) == [(0, 1), (1, 2)]
    assert shard_ranges(0, 3) == [(0, 0)]


def _textline_yaml(path: Path) -> Path:
    return helpers.textline_yaml(path, f"- validate: {FAST_VALIDATE}")


@pytest.mark.slow
def test_sharded_eval_equals_unsharded_on_real_eval_set(tmp_path: Path) -> None:
    """The shipped text-line model on its real eval set (39 crops x 2 rotations)."""
    pytest.importorskip("nncf")
    import lcpipe
    from lcpipe.measure.shards import eval_samples, evaluate_shard, evaluate_sharded

    cfg = lcpipe.load_config(_textline_yaml(tmp_path / "tl.yaml"))
    run = lcpipe.run_pipeline(cfg, out=tmp_path / "run")
    fp32, int8 = run.artifacts["ir_fp32"], run.artifacts["ir_int8"]
    samples = eval_samples(cfg)
    whole = evaluate_shard(fp32, int8, samples, cfg.preprocess)
    assert whole.images == len(samples) == 78 and whole.labeled == 78
    for shards in (2, 5):
        assert evaluate_sharded(fp32, int8, cfg, shards=shards) == whole
    # the merged figures are the validate stage's (same eval set, batch 1, f32 inference)
    v = json.loads(run.artifacts["validation"].read_text())
    s = whole.summary()
    assert s["fp32_top1"] == v["accuracy"]["fp32"]["top1"] and s["int8_top1"] == v["accuracy"]["int8"]["top1"]
    assert s["agreement"] == v["fidelity"]["int8_vs_fp32"]["agreement"]
    assert s["cosine"] == pytest.approx(v["fidelity"]["int8_vs_fp32"]["cosine"], abs=1e-6)
    assert s["fp32_top1"] > 0.6  # a real model on real data


# ------------------------------------------------------------------ what travels to a cluster (no Ray needed)

def _shipped_sweep(tmp_path: Path, scales, extra: str = "") -> Path:
    _base_yaml(tmp_path / "base.yaml", INT8)
    return _sweep_yaml(tmp_path, "base.yaml", extra)


def test_shipped_config_names_inputs_by_content_and_unpacks_on_a_node(tmp_path: Path, scales, monkeypatch) -> None:
    from lcpipe.sweep import shipping

    sweep = load_sweep(_shipped_sweep(tmp_path, scales))
    names = shipping.InputNames()
    shipped = [shipping.shipped_config(p.config, names) for p in sweep.points]
    text = json.dumps([raw for raw, _ in shipped])
    assert str(tmp_path) not in text and str(IMAGENET) not in text  # only shipped names travel
    raw, used = shipped[2]
    assert raw["model"]["source"]["path"].endswith("/PPLCNet_x0_5.pdparams") and raw["model"]["source"]["path"] in used
    assert len(names.names) == 5  # two weight files, the image folder, two label files: each once
    data = shipping.pack_inputs(names)
    assert data == shipping.pack_inputs(names)  # deterministic: same inputs, same digest

    monkeypatch.setenv("LCPIPE_NODE_DIR", str(tmp_path / "node"))
    import hashlib

    root = shipping.materialize(data, hashlib.sha256(data).hexdigest())
    cfg = shipping.node_config(raw, root, "point p02")
    assert Path(cfg.model.source.path).read_bytes() == scales["PPLCNet_x0_5"].read_bytes()
    assert Path(cfg.data.eval.labels).read_text() == (IMAGENET / "val.txt").read_text()
    assert str(root) in cfg.data.eval.images and shipping.materialize(data, hashlib.sha256(data).hexdigest()) == root
    with pytest.raises(Exception, match="sha256"):
        shipping.materialize(data, "0" * 64)


def test_sweep_refuses_inputs_over_rays_limit_before_starting_ray(tmp_path: Path, scales) -> None:
    from lcpipe.sweep import shipping

    big = tmp_path / "big.pdparams"
    with open(big, "wb") as f:  # sparse: no disk used
        f.truncate(shipping.SHIP_LIMIT_BYTES + 1)
    path = _shipped_sweep(tmp_path, scales, "points:\n  - {model.source.path: big.pdparams}\n")
    with pytest.raises(ConfigError) as err:
        run_sweep(path, address="127.0.0.1:1")  # no cluster there: the refusal must come first
    assert "over the 512 MiB" in str(err.value) and "storage:" in str(err.value) and "--storage" in str(err.value)


def test_sweep_on_ray_refuses_url_source_without_sha256(tmp_path: Path, scales) -> None:
    from lcpipe.sweep import shipping

    sweep = load_sweep(_shipped_sweep(tmp_path, scales, "points:\n  - {model.source: {format: pdparams, "
                                                        "url: 'http://127.0.0.1:1/w.pdparams'}}\n"))
    with pytest.raises(ConfigError, match="model.source.url without sha256"):
        shipping.shipped_config(sweep.points[-1].config, shipping.InputNames())


def test_sweep_with_unpinned_urls_is_refused_before_submitting(tmp_path: Path, scales) -> None:
    """Not one failed row per point after Ray started: exit 2 before anything runs, saying the fix."""
    path = _shipped_sweep(tmp_path, scales)  # its sources table replaced (a second `sources:` is a duplicate key)
    path.write_text(re.sub(r"sources:\n(?:  .*\n)+", "sources:\n  PPLCNet_x0_25: {format: pdparams, "
                                                     "url: 'http://127.0.0.1:1/w.pdparams'}\n", path.read_text()))
    with pytest.raises(ConfigError) as err:
        run_sweep(path, address="127.0.0.1:1")  # no cluster there: the refusal must come first
    assert "model.source.url without sha256" in str(err.value) and "point p00" in str(err.value)
    assert "model.source.sha256" in str(err.value) and "path" in str(err.value)
    res = CliRunner().invoke(cli, ["sweep", str(path), "--address", "127.0.0.1:1"])
    assert res.exit_code == 2 and "without sha256" in res.output and not (tmp_path / "out" / "points").exists()


def test_unpacked_inputs_keep_their_data_fingerprint_across_nodes(tmp_path: Path, scales, monkeypatch) -> None:
    """Two unpacks at different times into the same node dir (two nodes, same LCPIPE_NODE_DIR) give
    the same data fingerprint, so their stage cache keys match."""
    import hashlib
    import shutil
    import time

    from lcpipe.data.dataset import fingerprint
    from lcpipe.sweep import shipping

    sweep = load_sweep(_shipped_sweep(tmp_path, scales))
    names = shipping.InputNames()
    raw, _ = shipping.shipped_config(sweep.points[0].config, names)
    data = shipping.pack_inputs(names)
    monkeypatch.setenv("LCPIPE_NODE_DIR", str(tmp_path / "node"))
    prints = []
    for _ in range(2):
        root = shipping.materialize(data, hashlib.sha256(data).hexdigest())
        cfg = shipping.node_config(raw, root, "point p00")
        prints.append(fingerprint(cfg.data, cfg.preprocess))
        shutil.rmtree(tmp_path / "node")
        time.sleep(0.02)
    assert prints[0] == prints[1]


def test_file_storage_round_trip(tmp_path: Path) -> None:
    from lcpipe.sweep.storage import Storage

    s = Storage(f"file://{tmp_path}/shared")
    assert not s.exists("inputs/a.zip")
    assert s.put("inputs/a.zip", b"abc") == f"file://{tmp_path}/shared/inputs/a.zip"
    assert s.exists("inputs/a.zip") and s.get("inputs/a.zip") == b"abc"
    with pytest.raises(ConfigError, match="must be absolute"):
        Storage("file:relative/dir")


def test_storage_backed_cache_recomputes_a_damaged_entry_and_discards_it_everywhere(tmp_path: Path, caplog) -> None:
    from lcpipe.sweep.cache_backing import BackedStageCache
    from lcpipe.sweep.storage import Storage

    store = Storage(f"file://{tmp_path}/shared")
    cache = BackedStageCache(tmp_path / "node_a", store)
    store.put("cache/stages/bad.zip", b"not a zip")
    with caplog.at_level("WARNING", logger="lcpipe"):
        assert cache.get("bad") is None  # a miss (recompute), not an exception that fails the point
    assert "unusable" in caplog.text and not list((tmp_path / "node_a" / "stages").iterdir())

    src = tmp_path / "entry"
    src.mkdir()
    (src / "stage.json").write_text("{}")
    cache.put("good", src)
    assert store.exists("cache/stages/good.zip")
    assert BackedStageCache(tmp_path / "node_b", store).get("good") is not None  # another node fetches it
    cache.discard("good")  # the runner found its files damaged: gone here and in storage
    assert cache.get("good") is None and not store.exists("cache/stages/good.zip")
    store.delete("cache/stages/good.zip")  # already gone: fine
    assert not [p.name for p in (tmp_path / "shared" / "cache" / "stages").iterdir() if p.name.startswith(".")]


def test_bring_home_a_damaged_run_dir_fails_that_point_and_storage_is_emptied(tmp_path: Path) -> None:
    from lcpipe.sweep import shipping
    from lcpipe.sweep.on_ray import bring_home
    from lcpipe.sweep.storage import Storage

    node = {"node_id": "ab" * 20, "hostname": "worker-7"}
    bad = bring_home({"point": "p00", "status": "ok", "node": node, "_home": b"not a zip"}, tmp_path / "p00", None)
    assert bad["status"] == "failed" and bad["error_class"] == "input" and bad["exit_code"] == 2
    assert "worker-7" in bad["error"] and "brought home" in bad["error"]
    assert json.loads((tmp_path / "p00" / "point.json").read_text())["status"] == "failed"

    store = Storage(f"file://{tmp_path}/shared")
    run = tmp_path / "node_run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    store.put("runs/tok/p01.zip", shipping.pack_dir(run))
    store.put("runs/tok/p02.zip", b"truncated")
    ok = bring_home({"point": "p01", "status": "ok", "_home_rel": "runs/tok/p01.zip"}, tmp_path / "p01",
                    store.uri)
    assert ok["status"] == "ok" and (tmp_path / "p01" / "metrics.json").is_file()
    bad = bring_home({"point": "p02", "status": "ok", "_home_rel": "runs/tok/p02.zip"}, tmp_path / "p02", store.uri)
    assert bad["status"] == "failed" and bad["error_class"] == "input"
    assert not list((tmp_path / "shared" / "runs" / "tok").iterdir())  # nothing left once read, good or bad


class _RayThatFails:
    """Stands in for the ray module's init/shutdown only: what start_ray does when init fails."""

    def __init__(self, exc: BaseException) -> None:
        self.exc, self.shutdowns, self.temp_dirs = exc, 0, []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kw) -> None:
        self.temp_dirs.append(kw.get("_temp_dir"))
        raise self.exc

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_unreachable_ray_address_is_exit_2_naming_it_and_a_failed_start_leaves_nothing(monkeypatch) -> None:
    from lcpipe.sweep.on_ray import start_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import socket

    with socket.socket() as listening:  # something answers there, so the failure comes from ray.init
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        ray = _RayThatFails(ConnectionError(f"Failed to connect to GCS at address {address} within 5 seconds."))
        with pytest.raises(ConfigError) as err:
            start_ray(ray, address, None)
    assert err.value.exit_code == 2 and f"--address {address}" in str(err.value) and "GCS" in str(err.value)
    assert ray.shutdowns == 1 and err.value.__cause__ is None  # a clear message, no chained traceback

    with socket.socket() as s:  # nothing listens on a port just freed: refused at once, ray.init never called
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    ray = _RayThatFails(AssertionError("ray.init must not be reached"))
    with pytest.raises(ConfigError, match=f"--address 127.0.0.1:{free}: cannot connect"):
        start_ray(ray, f"127.0.0.1:{free}", None)
    assert ray.temp_dirs == []

    ray = _RayThatFails(RuntimeError("raylet died"))
    with pytest.raises(RuntimeError):
        start_ray(ray, None, 1)
    assert ray.shutdowns == 1 and ray.temp_dirs[0] and not Path(ray.temp_dirs[0]).exists()


class _RayRefusedByTokenAuth(_RayThatFails):
    """init as Ray 2.60's fails on a cluster that refuses the driver's token: its C++ client writes a
    warning to fd 2 every second, then "Failed to connect" with the AuthenticationError only as text."""

    def init(self, **kw) -> None:
        import os

        os.write(2, b"gcs_client.cc:210: Failed to get cluster ID from GCS server: Unauthenticated\n")
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback ...\n"
                               "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication "
                               "token is missing or incorrect.")
        except RuntimeError as exc:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379") from exc


@pytest.mark.parametrize(("env", "why"), [
    ({}, "the cluster there requires a token and RAY_AUTH_MODE is not 'token' here"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}, "the cluster there refused the token found here"),
])
def test_a_cluster_refusing_the_drivers_token_is_exit_2_saying_how_to_give_it(monkeypatch, capfd, tmp_path, env,
                                                                              why) -> None:
    from lcpipe.sweep.on_ray import start_ray

    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        ray = _RayRefusedByTokenAuth(AssertionError("unused"))
        with pytest.raises(ConfigError) as err:
            start_ray(ray, address, None)
    msg = str(err.value)
    assert err.value.exit_code == 2 and err.value.__cause__ is None and ray.shutdowns == 1
    assert msg.startswith(f"--address {address}: Ray token authentication failed ({why}); ")
    assert "RAY_AUTH_MODE=token" in msg and "RAY_AUTH_TOKEN_PATH" in msg and "ray get-auth-token" in msg
    assert "Unauthenticated" not in capfd.readouterr().err  # Ray's repeated warning is held, lcpipe says it once


def test_a_driver_in_token_mode_without_a_token_is_exit_2_and_other_failures_are_not_blamed_on_tokens(
        monkeypatch, tmp_path) -> None:
    ray_exceptions = pytest.importorskip("ray.exceptions")
    if not hasattr(ray_exceptions, "AuthenticationError"):
        pytest.skip("this Ray has no token authentication (Ray < 2.52)")
    from lcpipe.sweep.on_ray import start_ray

    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        # what Ray's own check raises before connecting (ensure_token_if_auth_enabled)
        refused = _RayThatFails(ray_exceptions.AuthenticationError("Token authentication is enabled but no "
                                                                   "authentication token was found"))
        with pytest.raises(ConfigError, match=r"token authentication failed \(RAY_AUTH_MODE=token but no token "
                                              r"found here\)"):
            start_ray(refused, address, None)
        other = _RayThatFails(ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379"))
        with pytest.raises(ConfigError) as err:
            start_ray(other, address, None)
    assert "cannot connect to a Ray cluster there" in str(err.value) and "token" not in str(err.value)


def test_fleet_has_a_pareto_front_per_cpu_kind() -> None:
    from lcpipe.render.sweep import fleet_doc, format_fleet, fronts

    rows = [{"point": "p00", "status": "ok", "int8_top1": 0.70}, {"point": "p01", "status": "ok", "int8_top1": 0.75}]
    # p01 is more accurate; on kind a it is also faster (p00 drops off), on kind b it is slower (both stay)
    fleet = [{"point": p, "cpu_kind": k, "status": "ok", "latency_p50_int8_ms": ms, "source": "point"}
             for p, k, ms in [("p00", "a", 2.0), ("p01", "a", 1.5), ("p00", "b", 1.0), ("p01", "b", 3.0)]]
    assert fronts(fleet, rows) == {"a": ["p01"], "b": ["p00", "p01"]}
    doc = fleet_doc(fleet, rows)
    assert doc["kinds"] == ["a", "b"] and [r["point"] for r in doc["rows"]] == ["p00", "p01"]
    assert "1.50 ms" in format_fleet(fleet) and "3.00 ms" in format_fleet(fleet)


def test_sweep_page_and_table_render_failed_points_and_local_runs() -> None:
    """The page renders with undefined names as errors: a failed row or a local executor lacks keys."""
    from lcpipe.render.sweep import format_table, render_html

    machine = {"model": "m", "isa": "avx2", "flags": [], "cores": 2, "executor": {"kind": "local"}, "seconds": 1}
    bad = {"point": "p00", "index": 0, "overrides": {"k": 1}, "status": "failed", "error": "boom <b>",
           "error_class": "config", "exit_code": 2}
    ok = {"point": "p01", "index": 1, "overrides": {"k": 2}, "status": "ok", "latency_p50_int8_ms": 1.0,
          "latency_p50_fp32_ms": 2.0, "agreement": 0.9, "params": 123456, "threads": 2, "size_int8": 300000}
    html = render_html({"sweep": "s", "source": "x", "base": "b", "swept": ["k"], "machine": machine,
                        "finished": "now", "points": [bad, ok], "fleet": []})
    assert "boom &lt;b&gt;" in html and "0.12 M" in html and "1.00 ms" in html and "90.00%" in html
    table = format_table([bad, ok], ["k"])
    assert "n/a" in table and "0.30" in table and "config error (exit 2): boom <b>" in table


def test_per_cpu_kind_needs_ray(tmp_path: Path, scales) -> None:
    res = CliRunner().invoke(cli, ["sweep", str(_shipped_sweep(tmp_path, scales)), "--local", "--per-cpu-kind"])
    assert res.exit_code == 2 and "drop --local" in res.output


@pytest.mark.slow
def test_stage_cache_backed_by_storage_spares_a_second_node_the_work(tmp_path: Path) -> None:
    """Two 'nodes' = two stage caches; with storage: the second fetches what the first computed."""
    import lcpipe
    from lcpipe.sweep.point import PointTask, run_point

    cfg = lcpipe.load_config(helpers.textline_yaml(tmp_path / "tl.yaml"))
    shared = f"file://{tmp_path / 'shared'}"
    rows = [run_point(PointTask(0, "p00", {}, cache_dir=str(tmp_path / node), storage=shared), cfg,
                      tmp_path / f"run_{node}") for node in ("a", "b")]
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    assert rows[0]["computed_stages"] == ["import", "fuse", "export", "convert", "quantize"]
    assert rows[1]["computed_stages"] == [] and rows[1]["cached_stages"] == rows[0]["computed_stages"]
    assert len(list((tmp_path / "shared" / "cache" / "stages").glob("*.zip"))) == 5
    assert len(list((tmp_path / "b" / "stages").iterdir())) == 5 and rows[1]["size_int8"] == rows[0]["size_int8"]


# ------------------------------------------------------------------ the shipped INT8 IR (plan stage)


def _tiny_ir(xml: Path, plan_precision: str | None = None) -> Path:
    """A one-op IR; with ``plan_precision`` it carries the plan stage's rt_info record."""
    import openvino as ov
    import openvino.opset13 as ops

    from lcpipe.ir import PLAN_RT_KEY, RT_SECTION

    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    model = ov.Model([ops.relu(x)], [x], "tiny")
    if plan_precision:
        model.set_rt_info(json.dumps({"name": f"int8_mixed@{plan_precision}", "inference_precision": plan_precision}),
                          [RT_SECTION, PLAN_RT_KEY])
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml))
    return xml


def _planned_run_dir(root: Path) -> Path:
    """A run dir whose manifest has quantize then plan producing ir_int8 (plan's IR planned at bf16)."""
    _tiny_ir(root / "convert" / "model.xml")
    _tiny_ir(root / "quantize" / "model.xml")
    _tiny_ir(root / "plan" / "model.xml", "bf16")
    (root / "plan" / "model.bin").write_bytes((root / "plan" / "model.bin").read_bytes() + b"\0" * 1000)
    stages = [{"name": "convert", "outputs": {"ir_fp32": {"path": "model.xml"}}},
              {"name": "quantize", "outputs": {"ir_int8": {"path": "model.xml"},
                                               "quantize_report": {"path": "quantize.json"}}},
              {"name": "plan", "outputs": {"ir_int8": {"path": "model.xml"}, "plan_report": {"path": "plan.json"}}}]
    (root / "manifest.json").write_text(json.dumps({"stages": stages, "finished": True}))
    return root


def test_retime_takes_the_shipped_int8_ir_at_its_planned_precision(tmp_path: Path) -> None:
    from lcpipe.measure.shards import ir_precisions
    from lcpipe.sweep.nodes import ir_files, shipped_irs

    run = _planned_run_dir(tmp_path / "run")
    irs = shipped_irs(run)
    assert irs == {"fp32": run / "convert" / "model.xml", "int8": run / "plan" / "model.xml"}
    files = ir_files(run)
    shipped, quantized = ((run / s / "model.bin").read_bytes() for s in ("plan", "quantize"))
    assert files["int8.bin"] == shipped != quantized
    assert ir_precisions(irs, "f32") == {"fp32": "f32", "int8": "bf16"}
    assert ir_precisions(irs, "default") == {"fp32": None, "int8": "bf16"}
    (run / "manifest.json").unlink()
    assert ir_files(run) is None  # no manifest: nothing to re-time, rather than a guess


def test_point_row_describes_the_plans_ir_not_quantizes(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lcpipe.runner import StageRecord
    from lcpipe.sweep.point import _ir_sizes, _plan_columns, metrics_columns

    run = _planned_run_dir(tmp_path / "run")
    plan = {"chosen": {"name": "int8_performance_fc_float@bf16", "int8": True, "preset": "performance",
                       "inference_precision": "bf16"},
            "candidates": [{"name": "int8_mixed@f32", "ir": "int8_mixed", "chosen": False},
                           {"name": "int8_performance_fc_float@bf16", "ir": "int8_performance_fc_float",
                            "chosen": True}],
            "irs": {"int8_mixed": {"quantized": 32}, "int8_performance_fc_float": {"quantized": 31}}}
    (run / "plan" / "plan.json").write_text(json.dumps(plan))
    manifest = json.loads((run / "manifest.json").read_text())["stages"]
    result = SimpleNamespace(run_dir=run, artifacts={"plan_report": run / "plan" / "plan.json"},
                             records=[StageRecord(s["name"], "k", False, 0.0, {}, s["outputs"]) for s in manifest])
    plan_bytes = sum(f.stat().st_size for f in (run / "plan").glob("model.*"))
    assert _ir_sizes(result)["size_int8"] == plan_bytes != sum(f.stat().st_size for f in (run / "quantize").glob("m*"))
    assert _plan_columns(result) == {"plan": "int8_performance_fc_float@bf16", "int8_precision": "bf16",
                                     "preset": "performance", "quantized_ops": 31}
    metrics = {"quantize": {"preset": "mixed", "quantized_ops": 32},
               "plan": {"chosen": "fp32@f32", "int8": False, "inference_precision": "f32"}}
    cols = metrics_columns(metrics)
    assert cols["preset"] is None and cols["quantized_ops"] == 0 and cols["plan"] == "fp32@f32"
    assert metrics_columns({"quantize": {"preset": "mixed", "quantized_ops": 32}})["preset"] == "mixed"


def test_plan_and_bench_stages_hold_the_whole_node(tmp_path: Path, scales) -> None:
    from lcpipe.runner import load_config
    from lcpipe.sweep import measures_latency

    untimed = EXPORT_ONLY + """
          - convert: {batch: 1}
          - quantize: {subset_size: 16}
          - validate: {latency: false, throughput: false}"""
    assert not measures_latency(load_config(_base_yaml(tmp_path / "a.yaml", untimed)))
    planned = untimed.replace("- validate:", "- plan: {}\n          - validate:")
    assert measures_latency(load_config(_base_yaml(tmp_path / "b.yaml", planned)))


def test_a_crashed_point_names_its_node_and_cpu_kind_from_rays_node_table(tmp_path: Path) -> None:
    """When the attempt log has nothing (the node died before its note arrived), Ray's error still
    carries the node id; the dead node's entry in ray.nodes() gives its host and CPU kind."""
    from lcpipe.sweep.on_ray import crashed_row
    from lcpipe.sweep.point import PointTask

    node_id = "f440a6b0cba34f131fc5994d4eb89cb529a91b64f8c1f11876a7d304"
    exc = RuntimeError(f"Task failed because the node it was running on is dead. node ID: {node_id}, more")
    table = [{"NodeID": "0" * 56, "NodeManagerHostname": "a", "Resources": {"cpu_kind:fake_a": 1.0}},
             {"NodeID": node_id, "Alive": False, "NodeManagerHostname": "hb", "Resources": {"cpu_kind:fake_b": 1.0}}]
    task = PointTask(id="p01", index=1, overrides={})
    row = crashed_row(task, exc, [], tmp_path, table)
    assert row["error_class"] == "crashed" and f"{node_id[:12]} (hb, fake_b)" in row["error"]
    assert f"{node_id[:12]}:" in crashed_row(task, exc, [], tmp_path, [])["error"]  # unknown: the id alone
    assert "an unknown node" in crashed_row(task, RuntimeError("worker died"), [], tmp_path)["error"]
