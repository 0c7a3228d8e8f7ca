"""Model sources: local paths, downloads (local HTTP server, file:// URLs), cache, safe unpacking."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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
        self.files: dict[str, bytes] = {"/model.bin": PAYLOAD, "/PPLCNet_x0_25_infer.tar": INFER_TAR}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
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


def _src(**kw: str) -> SourceConfig:
    return SourceConfig(format="onnx", **kw)


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and (".part" in p.name or p.name.endswith(".tmp"))]


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


def test_sha_mismatch_removes_file(server, tmp_path) -> None:
    cache = tmp_path / "cache"
    bad = "ab" * 32
    with pytest.raises(InputError, match="sha256") as err:
        fetch_source(_src(url=server.url + "/model.bin", sha256=bad), cache)
    assert SHA in str(err.value) and bad in str(err.value)
    assert not cache_file_for(server.url + "/model.bin", cache, bad).exists()
    assert not _leftovers(cache)


def test_truncated_download_fails_cleanly(server, tmp_path) -> None:
    cache = tmp_path / "cache"
    url = server.url + "/truncated.bin"
    with pytest.raises(InputError, match=r"truncated: got 1000 of \d+ bytes"):
        fetch_source(_src(url=url), cache)
    assert not cache_file_for(url, cache).exists() and not _leftovers(cache)


def test_http_404(server, tmp_path) -> None:
    with pytest.raises(InputError, match="HTTP 404"):
        fetch_source(_src(url=server.url + "/missing.onnx"), tmp_path / "cache")


def test_unreachable_url_says_how_to_use_a_local_file(tmp_path) -> None:
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


def test_symlink_inside_archive_is_fine(tmp_path) -> None:
    arc = tmp_path / "ok.tar"
    arc.write_bytes(_tar_bytes({"m/a.bin": b"1"}, {"m/b.bin": "a.bin"}))
    got = fetch_source(_src(path=str(arc)), tmp_path / "cache")
    assert (got / "b.bin").read_bytes() == b"1"


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
