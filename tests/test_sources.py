"""Model sources: local paths, downloads (local HTTP server, file:// URLs), cache, safe unpacking, limits."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import lcpipe.sources as sources
from lcpipe.config import SourceConfig
from lcpipe.errors import InputError
from lcpipe.sources import LOCAL_HINT, cache_file_for, fetch_source

PAYLOAD = b"lcpipe test payload " * 5000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None, top: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(top + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(top + name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


INFER_TAR = _tar_bytes({"inference.json": b"{}", "inference.pdiparams": b"\0" * 16, "inference.yml": b"a: 1\n"},
                       top="PPLCNet_x0_25_infer/")


class _Server:
    """Serves fixed bytes per path on 127.0.0.1 (random port) and counts requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"/model.bin": PAYLOAD, "/PPLCNet_x0_25_infer.tar": INFER_TAR,
                                        "/flaky.bin": PAYLOAD}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path == "/flaky.bin" and server.hits[self.path] == 1:  # fails once, then works
                    self.send_error(503)
                    return
                if self.path == "/slow.bin":  # 1.5 s in 6 chunks: long enough for the progress bar
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    step = len(PAYLOAD) // 6 + 1
                    for i in range(0, len(PAYLOAD), step):
                        self.wfile.write(PAYLOAD[i:i + step])
                        self.wfile.flush()
                        time.sleep(0.25)
                    return
                if self.path == "/truncated.bin":  # promises more than it sends, then hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    self.wfile.write(PAYLOAD[:1000])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    with _Server() as s:
        yield s


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failure tests need no retries (pooch waits 1 s, 2 s between them); test_retry covers them."""
    monkeypatch.setattr(sources, "RETRIES", 0)


def _src(**kw: str) -> SourceConfig:
    return SourceConfig(format="onnx", **kw)


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and (".part" in p.name or p.name.endswith(".tmp")
                                                            or p.name.startswith("tmp"))]


# ---------------------------------------------------------------- local paths

def test_local_path_missing_names_the_key(tmp_path) -> None:
    with pytest.raises(InputError, match=r"model\.source\.path: .*nope\.onnx does not exist"):
        fetch_source(_src(path=str(tmp_path / "nope.onnx")), tmp_path / "cache")


def test_local_path_returned_and_sha_checked(tmp_path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(PAYLOAD)
    assert fetch_source(_src(path=str(f), sha256=SHA), tmp_path / "cache") == f
    with pytest.raises(InputError, match="sha256"):
        fetch_source(_src(path=str(f), sha256="0" * 64), tmp_path / "cache")
    assert f.exists()  # a user's file is never deleted


def test_path_wins_over_url(tmp_path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    assert fetch_source(_src(path=str(f), url="http://127.0.0.1:9/never"), tmp_path / "c") == f


# ---------------------------------------------------------------- downloads

def test_download_then_cache_hit(server, tmp_path) -> None:
    cache = tmp_path / "cache"
    logs: list[str] = []
    url = server.url + "/model.bin"
    got = fetch_source(_src(url=url, sha256=SHA), cache, log=logs.append)
    assert got == cache / "downloads" / SHA / "model.bin" and got.read_bytes() == PAYLOAD
    again = fetch_source(_src(url=url, sha256=SHA), cache, log=logs.append)
    assert again == got and server.hits["/model.bin"] == 1  # second call never touched the server
    assert not _leftovers(cache)


def test_unpinned_download_records_sha(server, tmp_path) -> None:
    logs: list[str] = []
    got = fetch_source(_src(url=server.url + "/model.bin"), tmp_path / "cache", log=logs.append)
    assert got.parent.name.startswith("url-")
    side = json.loads(got.with_name("model.bin.source.json").read_text())
    assert side["sha256"] == SHA and side["bytes"] == len(PAYLOAD)
    assert any(SHA in m and "model.source.sha256" in m for m in logs)
    fetch_source(_src(url=server.url + "/model.bin"), tmp_path / "cache", log=logs.append)
    assert server.hits["/model.bin"] == 1


def test_sha_mismatch_removes_file(server, tmp_path, no_retries) -> None:
    cache = tmp_path / "cache"
    bad = "ab" * 32
    with pytest.raises(InputError, match="sha256") as err:
        fetch_source(_src(url=server.url + "/model.bin", sha256=bad), cache)
    assert SHA in str(err.value) and bad in str(err.value)
    assert not cache_file_for(server.url + "/model.bin", cache, bad).exists()
    assert not _leftovers(cache)


def test_truncated_download_fails_cleanly(server, tmp_path, no_retries) -> None:
    cache = tmp_path / "cache"
    url = server.url + "/truncated.bin"
    with pytest.raises(InputError, match=r"truncated: got 1000 of \d+ bytes"):
        fetch_source(_src(url=url), cache)
    assert not cache_file_for(url, cache).exists() and not _leftovers(cache)


def test_http_404(server, tmp_path, no_retries) -> None:
    with pytest.raises(InputError, match="HTTP 404"):
        fetch_source(_src(url=server.url + "/missing.onnx"), tmp_path / "cache")


def test_unreachable_url_says_how_to_use_a_local_file(tmp_path, no_retries) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError) as err:
        fetch_source(_src(url=f"http://127.0.0.1:{port}/model.onnx"), tmp_path / "cache")
    assert LOCAL_HINT in str(err.value) and f"127.0.0.1:{port}" in str(err.value)


def test_file_url(tmp_path) -> None:
    f = tmp_path / "weights file.onnx"
    f.write_bytes(PAYLOAD)
    got = fetch_source(_src(url=f.as_uri(), sha256=SHA), tmp_path / "cache")
    assert got.name == "weights file.onnx" and got.read_bytes() == PAYLOAD and got != f
    with pytest.raises(InputError, match=LOCAL_HINT.split("=")[0]):
        fetch_source(_src(url=(tmp_path / "gone.onnx").as_uri()), tmp_path / "cache")


# ---------------------------------------------------------------- archives

def test_downloaded_tar_is_unpacked(server, tmp_path) -> None:
    got = fetch_source(_src(url=server.url + "/PPLCNet_x0_25_infer.tar"), tmp_path / "cache")
    assert got.is_dir() and got.name == "PPLCNet_x0_25_infer"
    assert sorted(p.name for p in got.iterdir()) == ["inference.json", "inference.pdiparams", "inference.yml"]
    again = fetch_source(_src(url=server.url + "/PPLCNet_x0_25_infer.tar"), tmp_path / "cache")
    assert again == got and server.hits["/PPLCNet_x0_25_infer.tar"] == 1


@pytest.mark.parametrize("suffix", [".tgz", ".zip"])
def test_local_archives_unpacked(tmp_path, suffix) -> None:
    arc = tmp_path / f"model{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(arc, "w") as zf:
            zf.writestr("inference.json", "{}")
            zf.writestr("inference.pdiparams", b"\0")
    else:
        with tarfile.open(arc, "w:gz") as tf:
            for name in ("inference.json", "inference.pdiparams"):
                info = tarfile.TarInfo(name)
                info.size = 1
                tf.addfile(info, io.BytesIO(b"x"))
    got = fetch_source(_src(path=str(arc)), tmp_path / "cache")
    assert got.is_dir() and (got / "inference.json").is_file()  # no single top folder: the root


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink_out", "abs_symlink"])
def test_unsafe_tar_rejected(tmp_path, case) -> None:
    members = {"ok.txt": b"fine"}
    links: dict[str, str] = {}
    if case == "dotdot":
        members["../evil"] = b"boom"
    elif case == "absolute":
        members["/tmp/evil"] = b"boom"
    elif case == "symlink_out":
        links["sub/link"] = "../../outside"
    else:
        links["link"] = "/etc/passwd"
    arc = tmp_path / "bad.tar"
    arc.write_bytes(_tar_bytes(members, links))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="refusing to unpack"):
        fetch_source(_src(path=str(arc)), cache)
    assert not (tmp_path / "evil").exists()
    assert not (cache / "extracted").exists() or not any((cache / "extracted").iterdir())


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "zip_symlink"])
def test_links_in_archives_are_refused(tmp_path, kind) -> None:
    """Even links that stay inside the folder: no link chain can then escape it (on any 3.11.x)."""
    if kind == "zip_symlink":
        arc = tmp_path / "ln.zip"
        with zipfile.ZipFile(arc, "w") as zf:
            zf.writestr("m/a.bin", b"1")
            info = zipfile.ZipInfo("m/b.bin")
            info.external_attr = (0o120777 << 16)  # S_IFLNK
            zf.writestr(info, "a.bin")
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            a = tarfile.TarInfo("m/a.bin")
            a.size = 1
            tf.addfile(a, io.BytesIO(b"1"))
            b = tarfile.TarInfo("m/b.bin")
            b.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            b.linkname = "a.bin" if kind == "symlink" else "m/a.bin"
            tf.addfile(b)
        arc = tmp_path / "ln.tar"
        arc.write_bytes(buf.getvalue())
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=r"refusing to unpack: member 'm/b\.bin' is a (symbolic|hard) link") as err:
        fetch_source(_src(path=str(arc)), cache)
    assert str(arc) in str(err.value) and "links are not allowed in model archives" in str(err.value)
    assert not (cache / "extracted").exists() or not any((cache / "extracted").iterdir())


def test_zip_slip_rejected(tmp_path) -> None:
    arc = tmp_path / "bad.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("../evil", "boom")
    with pytest.raises(InputError, match="refusing to unpack"):
        fetch_source(_src(path=str(arc)), tmp_path / "cache")


def test_corrupt_archive(tmp_path) -> None:
    arc = tmp_path / "model.tar.gz"
    arc.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="not a readable tar archive"):
        fetch_source(_src(path=str(arc)), tmp_path / "cache")


# ---------------------------------------------------------------- local files: sha256, archives

def test_local_sha_mismatch_names_file_and_both_digests_and_keeps_it(tmp_path) -> None:
    f = tmp_path / "m.tar"
    f.write_bytes(INFER_TAR)
    bad = "cd" * 32
    with pytest.raises(InputError) as err:
        fetch_source(_src(path=str(f), sha256=bad), tmp_path / "cache")
    msg = str(err.value)
    assert str(f) in msg and hashlib.sha256(INFER_TAR).hexdigest() in msg and bad in msg
    assert f.read_bytes() == INFER_TAR and not (tmp_path / "cache").exists()  # nothing unpacked either


def test_sha_on_a_folder_is_refused(tmp_path) -> None:
    with pytest.raises(InputError, match="is a folder; a sha256 pins a single file"):
        fetch_source(_src(path=str(tmp_path), sha256=SHA), tmp_path / "cache")


def test_local_archive_unpacked_into_the_cache_not_beside_it(tmp_path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    arc = user / "PPLCNet_x0_25_infer.tar"
    arc.write_bytes(INFER_TAR)
    sha = hashlib.sha256(INFER_TAR).hexdigest()
    got = fetch_source(_src(path=str(arc), sha256=sha), tmp_path / "cache")
    assert got.is_relative_to(tmp_path / "cache" / "extracted") and got.name == "PPLCNet_x0_25_infer"
    assert (got / "inference.pdiparams").read_bytes() == b"\0" * 16
    assert [p.name for p in user.iterdir()] == [arc.name]  # the user's folder is untouched


# ---------------------------------------------------------------- archive limits

def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_archive_bomb_refused_by_ratio(tmp_path) -> None:
    """64 MiB of zeros gzip to ~64 KiB: over the 200x expansion limit, refused before it is written."""
    arc = _tgz(tmp_path / "bomb.tgz", {"inference.pdiparams": bytes(64 << 20)})
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=r"refusing to unpack: expands more than 200x") as err:
        fetch_source(_src(path=str(arc)), cache)
    assert str(arc) in str(err.value) and "MAX_RATIO" in str(err.value)
    assert not any(p.is_file() for p in (cache / "extracted").rglob("*"))


def test_archive_size_and_member_limits(tmp_path, monkeypatch) -> None:
    arc = _tgz(tmp_path / "many.tgz", {f"f{i}.bin": os.urandom(1000) for i in range(5)})
    monkeypatch.setattr(sources, "MAX_MEMBERS", 4)
    with pytest.raises(InputError, match=r"many\.tgz: refusing to unpack: more than 4 members"):
        fetch_source(_src(path=str(arc)), tmp_path / "c1")
    monkeypatch.setattr(sources, "MAX_MEMBERS", 10)
    monkeypatch.setattr(sources, "MAX_UNPACKED_BYTES", 4500)
    with pytest.raises(InputError, match=r"many\.tgz: refusing to unpack: more than .* unpacked \(at member 'f4\.bin'"):
        fetch_source(_src(path=str(arc)), tmp_path / "c2")
    monkeypatch.setattr(sources, "MAX_UNPACKED_BYTES", 5000)
    assert len(list(fetch_source(_src(path=str(arc)), tmp_path / "c3").iterdir())) == 5  # at the limit: fine


def test_zip_limits(tmp_path, monkeypatch) -> None:
    arc = tmp_path / "z.zip"
    with zipfile.ZipFile(arc, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", bytes(40 << 20))
    with pytest.raises(InputError, match=r"z\.zip: refusing to unpack: expands more than"):
        fetch_source(_src(path=str(arc)), tmp_path / "cache")


# ---------------------------------------------------------------- pooch: retries, progress, schemes

def test_retry_after_a_failed_attempt(server, tmp_path) -> None:
    got = fetch_source(_src(url=server.url + "/flaky.bin", sha256=SHA), tmp_path / "cache")
    assert got.read_bytes() == PAYLOAD and server.hits["/flaky.bin"] == 2


def test_progress_bar_only_for_slow_downloads(server, tmp_path, capsys) -> None:
    fetch_source(_src(url=server.url + "/model.bin"), tmp_path / "c1")
    assert "downloading model.bin" not in capsys.readouterr().err  # fast: no bar
    t0 = time.monotonic()
    got = fetch_source(_src(url=server.url + "/slow.bin", sha256=SHA), tmp_path / "c2")
    assert time.monotonic() - t0 > 1.0 and got.read_bytes() == PAYLOAD
    assert "downloading slow.bin" in capsys.readouterr().err


def test_unsupported_scheme(tmp_path) -> None:
    with pytest.raises(InputError, match="unsupported URL scheme 'ftp'"):
        fetch_source(_src(url="ftp://127.0.0.1/model.onnx"), tmp_path / "cache")


# ---------------------------------------------------------------- --cache-dir / --no-cache

def _textline_tar(tmp_path: Path) -> tuple[Path, str]:
    from helpers import TEXTLINE_MODEL

    arc = tmp_path / "served" / "textline_infer.tar"
    arc.parent.mkdir()
    with tarfile.open(arc, "w") as tf:
        for f in sorted(TEXTLINE_MODEL.glob("inference.*")):
            tf.add(f, arcname=f"textline_infer/{f.name}")
    return arc, hashlib.sha256(arc.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["cache_dir", "no_cache"])
def test_downloads_honour_cache_dir_and_no_cache(tmp_path, mode) -> None:
    """The import stage downloads into --cache-dir; with --no-cache into a temp dir that is removed:
    never into $LCPIPE_CACHE_DIR (the default cache)."""
    import subprocess
    import sys

    from helpers import REPO, write_yaml

    pytest.importorskip("paddle")
    arc, sha = _textline_tar(tmp_path)
    yaml = write_yaml(tmp_path / "p.yaml", f"""
        name: from_url
        model:
          source: {{format: paddle_inference, url: {arc.as_uri()}, sha256: {sha}}}
        stages:
          - import: {{}}
        """)
    default, chosen = tmp_path / "default-cache", tmp_path / "chosen-cache"
    flags = ["--cache-dir", str(chosen)] if mode == "cache_dir" else ["--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LCPIPE_CACHE_DIR": str(default), "TMPDIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "lcpipe", "run", str(yaml), "--out", str(tmp_path / "run"), *flags],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not default.exists()
    if mode == "cache_dir":
        assert (chosen / "downloads" / sha / "textline_infer.tar").read_bytes() == arc.read_bytes()
        assert (chosen / "extracted").is_dir() and (chosen / "stages").is_dir()
    else:
        assert not chosen.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("lcpipe-")]  # temp roots removed
    info = json.loads((tmp_path / "run" / "import" / "model_info.json").read_text())
    assert info["format"] == "paddle_inference" and info["spec"]["arch"] == "PPLCNet_x0_25"


def test_stale_temp_of_a_killed_download_is_dropped(server, tmp_path) -> None:
    """A download killed mid-way leaves pooch's temp file; a day later the next download removes it,
    but never a cached file whose name merely starts with 'tmp'."""
    url = server.url + "/model.bin"
    dest = cache_file_for(url, tmp_path / "cache")
    dest.parent.mkdir(parents=True)
    stale, young, lookalike = dest.parent / "tmpab_cd123", dest.parent / "tmpzz998877", dest.parent / "tmp_model.onnx"
    for f in (stale, young, lookalike):
        f.write_bytes(b"partial")
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    os.utime(lookalike, (old, old))
    fetch_source(_src(url=url), tmp_path / "cache")
    assert not stale.exists() and young.exists() and lookalike.exists()
