"""lcpipe deletes only what it wrote, writes files others can read, and one run owns its folder.

Each data-loss case puts a user's files where lcpipe might write, runs the real CLI and compares
every one of them byte for byte afterwards. The pipelines are the synthetic PP-LCNet x0.25
import -> fuse -> export (seconds); full pipelines are in test_kill.py and test_workflow.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest

MARKER = "lcpipe-cache.json"  # lcpipe.cache.MARKER (lcpipe's own modules are imported in the tests that use them)

USER_FILES = {"report.md": b"# my notes\n", "metrics.json": b'{"mine": 1}\n',
              "deploy/k8s-service.yaml": b"kind: Service\n", "data/train.csv": b"a,b\n1,2\n"}


def _user_folder(root: Path, files: dict[str, bytes] = USER_FILES) -> dict[Path, bytes]:
    out = {}
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[p] = data
    return out


def _lost(files: dict[Path, bytes]) -> list[str]:
    """User files missing or changed (byte for byte)."""
    return [str(p) for p, data in files.items() if not p.is_file() or p.read_bytes() != data]


def _run_files(folder: Path) -> dict[Path, bytes]:
    """A run dir's files, but its log and lock (every run appends to / stamps those)."""
    skip = ("lcpipe.log", ".lcpipe.lock")
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name not in skip}


def _cli(*args: str, cwd: Path, umask: int | None = None, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(helpers.REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "lcpipe", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def _yaml(tmp_path: Path, weights: Path, name: str = "t", extra: str = "") -> Path:
    text = helpers.MINIMAL_YAML.format(path=weights).replace("name: t", f"name: {json.dumps(name)}")
    return helpers.write_yaml(tmp_path / "p.yaml", text + extra)


def _no_traceback(res: subprocess.CompletedProcess[str]) -> str:
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    return out


# ---------------------------------------------------------------- data loss: folders that are not lcpipe's

FULL_STAGES = """\
  - convert: {batch: 1}
  - quantize: {}
  - validate: {}
  - report: {}
  - deploy: {}
"""


@pytest.mark.parametrize("case", ["config-error", "stage-error", "valid"])
def test_out_folder_of_the_users_is_refused_untouched(tmp_path: Path, synthetic_weights, case: str) -> None:
    files = _user_folder(tmp_path / "myproject")
    # a pipeline whose report stage publishes metrics.json and report.md at the top of --out, and whose
    # deploy stage writes deploy/ there
    yaml = _yaml(tmp_path, synthetic_weights(), extra=FULL_STAGES if case != "valid" else "")
    extra = {"config-error": ["--set", "stages.export.opsett=1"],  # refused while loading the config
             "stage-error": ["--set", "model.arch=PPLCNet_x2_0"],  # fails inside the import stage
             "valid": []}[case]
    res = _cli("run", str(yaml), "--out", "myproject", *extra, cwd=tmp_path)
    out = _no_traceback(res)
    assert res.returncode == 2, out
    named = "opsett" if case == "config-error" else "myproject: an existing folder that is not an lcpipe run directory"
    assert named in out, out
    assert _lost(files) == []
    assert sorted(p.relative_to(tmp_path / "myproject").as_posix() for p in (tmp_path / "myproject").rglob("*")
                  if p.is_file()) == sorted(USER_FILES)  # nothing added either (no lock, no log)


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../x", "-rf", "a..b", ""])
def test_pipeline_name_must_be_a_plain_name(tmp_path: Path, synthetic_weights, name: str) -> None:
    files = _user_folder(tmp_path, {"deploy/k8s.yaml": b"kind: Deployment\n", "report.md": b"mine\n"})
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights(), name)), cwd=tmp_path)  # no --out: runs/<name>/
    out = _no_traceback(res)
    assert res.returncode == 2 and "name" in out and "plain name" in out, out
    assert _lost(files) == [] and not (tmp_path / "runs").exists()


def test_cache_clean_and_prune_refuse_a_folder_that_is_not_a_cache(tmp_path: Path) -> None:
    files = _user_folder(tmp_path / "mydir")
    for args in (["clean"], ["prune", "--max-size", "0"], ["prune", "--older-than", "0s"]):
        res = _cli("cache", *args, "--cache-dir", "mydir", cwd=tmp_path)
        out = _no_traceback(res)
        assert res.returncode == 2 and "not an lcpipe cache" in out, out
    assert _lost(files) == []


def test_a_run_refuses_a_cache_dir_that_is_a_users_folder(tmp_path: Path, synthetic_weights) -> None:
    files = _user_folder(tmp_path / "mydir")
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights())), "--out", "o", "--cache-dir", "mydir", cwd=tmp_path)
    out = _no_traceback(res)
    assert res.returncode == 2 and "not an lcpipe cache" in out, out
    assert _lost(files) == [] and sorted(p.name for p in (tmp_path / "mydir").iterdir()) == ["data", "deploy",
                                                                                               "metrics.json",
                                                                                               "report.md"]


def test_cache_clean_removes_only_lcpipes_entries(tmp_path: Path, synthetic_weights) -> None:
    cache = tmp_path / "cache"
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights())), "--out", "o", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (cache / MARKER).is_file() and (cache / "CACHEDIR.TAG").is_file()
    # files of the user's inside the cache, also where lcpipe keeps entries, named unlike its entries
    files = _user_folder(cache, {"notes.txt": b"mine\n", "stages/README": b"mine\n", "data/train.csv": b"1\n",
                                 "downloads/model.pdparams": b"\x00\x01"})
    res = _cli("cache", "clean", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0 and "removed 3 entries" in res.stdout, res.stdout + res.stderr
    assert _lost(files) == []
    assert not [p for p in (cache / "stages").iterdir() if p.name != "README"]


def test_a_cache_older_lcpipe_left_is_recognised_by_its_layout(tmp_path: Path, synthetic_weights) -> None:
    cache = tmp_path / "cache"
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights())), "--out", "o", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for name in (MARKER, "CACHEDIR.TAG"):
        (cache / name).unlink()  # as an older lcpipe left it
    res = _cli("cache", "clean", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0 and "removed 3 entries" in res.stdout, res.stdout + res.stderr


def test_files_added_to_an_lcpipe_run_dir_stop_the_rerun(tmp_path: Path, synthetic_weights) -> None:
    yaml = _yaml(tmp_path, synthetic_weights())
    assert _cli("run", str(yaml), "--out", "o", cwd=tmp_path).returncode == 0
    run_files = _run_files(tmp_path / "o")
    for added in ("export/my-notes.txt", "fuse/canonical/extra.npy"):
        files = _user_folder(tmp_path / "o", {added: b"mine\n"})
        res = _cli("run", str(yaml), "--out", "o", "--force", cwd=tmp_path)
        out = _no_traceback(res)
        assert res.returncode == 2 and Path(added).name in out and "not written by lcpipe" in out, out
        assert _lost(files) == [] and _lost(run_files) == []  # refused before anything was removed
        next(iter(files)).unlink()
    # a folder where a stage writes, without lcpipe's stage.json
    files = _user_folder(tmp_path / "o2", {"export/model.onnx": b"mine", "manifest.json": b"{}"})
    res = _cli("run", str(yaml), "--out", "o2", cwd=tmp_path)
    assert res.returncode == 2 and "not an lcpipe run directory" in res.stderr and _lost(files) == []


def test_a_run_dir_of_an_older_lcpipe_is_accepted(tmp_path: Path, synthetic_weights) -> None:
    yaml = _yaml(tmp_path, synthetic_weights())
    assert _cli("run", str(yaml), "--out", "o", cwd=tmp_path).returncode == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest.pop("lcpipe_run") is True
    (tmp_path / "o" / "manifest.json").write_text(json.dumps(manifest))  # as lcpipe <= 0.x wrote it
    res = _cli("run", str(yaml), "--out", "o", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["lcpipe_run"] is True


def test_empty_model_path_is_named(tmp_path: Path, synthetic_weights) -> None:
    yaml = _yaml(tmp_path, synthetic_weights())
    res = _cli("run", str(yaml), "--out", "o", "--set", "model.source.path=", cwd=tmp_path)
    assert res.returncode == 2 and "model.source.path is empty" in res.stderr, res.stderr
    helpers.write_yaml(tmp_path / "e.yaml", yaml.read_text().replace(str(synthetic_weights()), '""'))
    res = _cli("run", str(tmp_path / "e.yaml"), "--out", "o", cwd=tmp_path)
    assert res.returncode == 2 and "model.source.path is empty" in res.stderr, res.stderr


# ---------------------------------------------------------------- one error path

def test_long_messages_are_capped_and_kept_whole_in_the_log(tmp_path: Path, synthetic_weights) -> None:
    # a user value quoted in a message is clipped where it is quoted (lcpipe.errors.clip); a message that
    # is long by itself, here one line per unknown key (~9 KB), is capped on the terminal instead
    gates = "gates:\n" + "".join(f"  no_such_gate_{i:02d}: 1\n" for i in range(40))
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights(), extra=gates)), "--out", "o", cwd=tmp_path,
               env={"LCPIPE_LOG_DIR": str(tmp_path / "logs")})
    out = _no_traceback(res)
    assert res.returncode == 2 and len(res.stderr) < 1500, len(res.stderr)
    assert "more characters; full text in" in out and str(tmp_path / "logs" / "lcpipe.log") in out
    assert "no_such_gate_39" not in out
    assert "gates.no_such_gate_39: unknown key" in (tmp_path / "logs" / "lcpipe.log").read_text()
    # and a 100 KB value is clipped where it is quoted: a short line, without a cap
    long_name = "s" + "x" * 100_000  # one argument may hold at most 128 KiB
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights())), "--out", "o", "--set", f"stages.{long_name}.a=1",
               cwd=tmp_path, env={"LCPIPE_LOG_DIR": str(tmp_path / "logs")})
    out = _no_traceback(res)
    assert res.returncode == 2 and len(res.stderr) < 500 and "100,012 characters" in out, out


def test_each_run_writes_its_log(tmp_path: Path, synthetic_weights) -> None:
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights())), "--out", "o", cwd=tmp_path,
               env={"LCPIPE_LOG_DIR": str(tmp_path / "logs")})
    assert res.returncode == 0, res.stderr
    log = (tmp_path / "o" / "lcpipe.log").read_text()
    assert "run started" in log and "export: done" in log
    assert "export: done" in (tmp_path / "logs" / "lcpipe.log").read_text()


# ---------------------------------------------------------------- --from: the upstream must match

def test_from_with_a_different_upstream_config_is_refused(tmp_path: Path, synthetic_weights) -> None:
    yaml = _yaml(tmp_path, synthetic_weights())
    assert _cli("run", str(yaml), "--out", "o", cwd=tmp_path).returncode == 0
    before = _run_files(tmp_path / "o")
    res = _cli("run", str(yaml), "--out", "o", "--from", "export", "--set", "preprocess.crop=192", cwd=tmp_path)
    out = _no_traceback(res)
    assert res.returncode == 2 and "--from export" in out and "preprocess" in out and "224 -> 192" in out, out
    other = synthetic_weights(seed=1)
    res = _cli("run", str(yaml), "--out", "o", "--from", "fuse", "--set", f"model.source.path={other}", cwd=tmp_path)
    out = _no_traceback(res)
    assert res.returncode == 2 and "model" in out and str(other) in out, out
    assert _lost(before) == []
    # the same upstream: allowed, and the manifest records the config that ran
    res = _cli("run", str(yaml), "--out", "o", "--from", "export", "--set", "stages.export.opset=14", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert {"export": {**manifest["config"]["stages"][2]["export"], "opset": 14}} == manifest["config"]["stages"][2]


# ---------------------------------------------------------------- one run per folder

def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path: Path, synthetic_weights) -> None:
    from lcpipe.locks import run_dir_lock

    yaml = _yaml(tmp_path, synthetic_weights())
    assert _cli("run", str(yaml), "--out", "o", cwd=tmp_path).returncode == 0
    before = _run_files(tmp_path / "o")
    with run_dir_lock(tmp_path / "o"):  # this process plays the running lcpipe
        res = _cli("run", str(yaml), "--out", "o", "--force", cwd=tmp_path)
    out = _no_traceback(res)
    assert res.returncode == 2 and f"in use by pid {os.getpid()}" in out, out
    assert _lost(before) == []
    assert _cli("run", str(yaml), "--out", "o", cwd=tmp_path).returncode == 0  # free again


def test_runs_started_together_into_one_new_folder_never_mix(tmp_path: Path, synthetic_weights) -> None:
    yaml = _yaml(tmp_path, synthetic_weights())
    env = {**os.environ, "PYTHONPATH": str(helpers.REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "lcpipe", "run", str(yaml), "--out", "o", "--set",
                               f"stages.export.opset={opset}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for opset in (17, 16, 15)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert all(rc == 0 or (rc == 2 and "is in use by pid" in err) for rc, err in results), results
    assert any(rc == 0 for rc, _ in results), results
    assert any(rc == 2 for rc, _ in results), results  # started within milliseconds: they overlapped
    # the folder is one run's: the manifest's stages are the folders' stages, each file as its stage.json says
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["finished"] is True
    for record in manifest["stages"]:
        meta = json.loads((tmp_path / "o" / record["name"] / "stage.json").read_text())
        assert meta["key"] == record["key"], record["name"]
        for name, digest in meta["files"].items():
            assert hashlib.sha256((tmp_path / "o" / record["name"] / name).read_bytes()).hexdigest() == digest


# ---------------------------------------------------------------- modes follow the umask

@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_everything_written_follows_the_umask(tmp_path: Path, synthetic_weights, umask: int, file_mode: int,
                                              dir_mode: int) -> None:
    yaml = _yaml(tmp_path, synthetic_weights())
    cache = tmp_path / "cache"
    for extra in ((), ("--force",), ("--from", "export")):  # fresh, forced (cache put with replace), partial
        res = _cli("run", str(yaml), "--out", "o", "--cache-dir", str(cache), *extra, cwd=tmp_path, umask=umask,
                   env={"LCPIPE_LOG_DIR": str(tmp_path / "logs")})
        assert res.returncode == 0, res.stderr
    res = _cli("run", str(yaml), "--out", "o2", "--cache-dir", str(cache), cwd=tmp_path, umask=umask)  # from cache
    assert res.returncode == 0, res.stderr
    wrong = []
    for root in (tmp_path / "o", tmp_path / "o2", cache, tmp_path / "logs"):
        for p in (root, *root.rglob("*")):
            want = dir_mode if p.is_dir() else file_mode
            if stat.S_IMODE(p.stat().st_mode) != want:
                wrong.append(f"{p}: {oct(stat.S_IMODE(p.stat().st_mode))}")
    assert wrong == []


# ---------------------------------------------------------------- cache: list, prune, entries in use

def test_cache_list_and_prune_by_age_and_size_least_recently_used_first(tmp_path: Path, synthetic_weights) -> None:
    from lcpipe.cache import StageCache

    cache = tmp_path / "cache"
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights())), "--out", "o", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    c = StageCache(cache)
    entries = {e.stage: e for e in c.stored()}
    assert set(entries) == {"import", "fuse", "export"} and all(e.bytes > 0 for e in entries.values())
    now = time.time()
    for age_days, stage in ((30, "import"), (3, "fuse"), (1, "export")):  # last use: import oldest
        lock = cache / "locks" / f"stages-{entries[stage].key}.lock"
        os.utime(lock, (now - age_days * 86400, now - age_days * 86400))
    listed = _cli("cache", "list", "--cache-dir", str(cache), cwd=tmp_path)
    lines = listed.stdout.strip().splitlines()
    assert [ln.split()[1] for ln in lines[:-1]] == ["import", "fuse", "export"]  # least recently used first
    assert lines[-1].startswith("3 entries (3 stages)") and " MB in " in lines[-1]

    res = _cli("cache", "prune", "--older-than", "7d", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0 and "pruned 1 entries" in res.stdout, res.stdout + res.stderr
    assert {e.stage for e in c.stored()} == {"fuse", "export"}
    keep = entries["export"].bytes
    res = _cli("cache", "prune", "--max-size", f"{keep}B", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0 and {e.stage for e in c.stored()} == {"export"}, res.stdout  # LRU fuse went first
    res = _cli("cache", "prune", "--max-size", "200MB", "--older-than", "2w", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0 and "pruned 0 entries" in res.stdout
    bad = _cli("cache", "prune", "--max-size", "lots", "--cache-dir", str(cache), cwd=tmp_path)
    assert bad.returncode == 2 and "200MB" in bad.stderr
    bad = _cli("cache", "prune", "--cache-dir", str(cache), cwd=tmp_path)
    assert bad.returncode == 2 and "--max-size" in bad.stderr


def test_prune_and_clean_never_remove_an_entry_a_run_uses(tmp_path: Path, synthetic_weights) -> None:
    from lcpipe.cache import StageCache
    from lcpipe.locks import holding_entries, use_entry

    cache = tmp_path / "cache"
    res = _cli("run", str(_yaml(tmp_path, synthetic_weights())), "--out", "o", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    entries = {e.stage: e for e in StageCache(cache).stored()}
    used = entries["fuse"]
    with holding_entries():  # this process plays a pipeline that is using the fuse result
        use_entry(cache, "stages", used.key)
        res = _cli("cache", "prune", "--max-size", "0", "--cache-dir", str(cache), cwd=tmp_path)
        assert res.returncode == 0 and "kept 1 in use" in res.stdout, res.stdout + res.stderr
        res = _cli("cache", "clean", "--cache-dir", str(cache), cwd=tmp_path)
        assert res.returncode == 0 and "kept 1 in use" in res.stdout, res.stdout + res.stderr
        assert [e.key for e in StageCache(cache).stored()] == [used.key]
        assert (cache / "stages" / used.key / "stage.json").is_file()
    res = _cli("cache", "clean", "--cache-dir", str(cache), cwd=tmp_path)
    assert res.returncode == 0 and StageCache(cache).stored() == []
