"""Where a model file comes from: a local path, or a URL downloaded once into the cache.

Downloads land in ``<cache>/downloads/<sha256 or url-hash>/<filename>``: streamed to a temp
name, checked (length, sha256), then renamed, so a half file never sits under the final name.
Archives (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``; PaddleClas ships ``*_infer.tar``) are
unpacked into ``<cache>/extracted/<archive sha256>/`` after every member has been checked
to stay inside that folder.

urllib rather than pooch: it reads file:// URLs too, and the truncation check (bytes vs
Content-Length) needs the raw response.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from lcpipe.config import SourceConfig
from lcpipe.errors import InputError
from lcpipe.fileio import atomic_dir, sha256_file, write_json

Log = Callable[[str], Any] | logging.Logger | None

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
LOCAL_HINT = "--set model.source.path=/path/to/file"
_CHUNK = 1 << 20
_TIMEOUT_S = 60

_logger = logging.getLogger("lcpipe.sources")


def fetch_source(src: SourceConfig, cache_dir: Path | None, *, log: Log = None) -> Path:
    """Return a local path for ``src``: the file itself, or the extracted folder of an archive.

    ``path`` wins over ``url`` so ``--set model.source.path=...`` overrides a YAML URL."""
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    if src.path:
        path = Path(src.path).expanduser()
        if not path.exists():
            raise InputError(f"model.source.path: {path} does not exist")
        if src.sha256 and path.is_file():
            _verify_local(path, src.sha256)
        return unpack_if_archive(path, cache_dir, log=log) if path.is_file() else path
    if not src.url:
        raise InputError("model.source: give 'path' (local file) or 'url'")
    file = download(src.url, cache_dir, sha256=src.sha256, log=log)
    return unpack_if_archive(file, cache_dir, log=log)


def _default_cache_dir() -> Path:
    from lcpipe.cache import default_cache_dir  # LCPIPE_CACHE_DIR, else platformdirs' user cache

    return default_cache_dir()


def _emit(log: Log, msg: str) -> None:
    if log is None:
        _logger.info(msg)
    elif isinstance(log, logging.Logger):
        log.info(msg)
    else:
        log(msg)


def _norm_sha(sha: str | None) -> str | None:
    if not sha:
        return None
    sha = sha.strip().lower().removeprefix("sha256:")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise InputError(f"model.source.sha256: {sha!r} is not a 64-hex-digit sha256")
    return sha


def _verify_local(path: Path, sha: str) -> None:
    want = _norm_sha(sha)
    got = sha256_file(path)
    if got != want:  # a user's own file: report, never delete
        raise InputError(f"model.source.path: {path} has sha256 {got}, but model.source.sha256 says {want}")


# ---------------------------------------------------------------- download

def cache_file_for(url: str, cache_dir: Path, sha256: str | None = None) -> Path:
    key = _norm_sha(sha256) or "url-" + hashlib.sha256(url.encode()).hexdigest()[:24]
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    return Path(cache_dir) / "downloads" / key / name


def download(url: str, cache_dir: Path, *, sha256: str | None = None, log: Log = None) -> Path:
    """Download ``url`` once; later calls return the cached file without touching the network."""
    want = _norm_sha(sha256)
    dest = cache_file_for(url, cache_dir, want)
    if dest.is_file():
        if want is None or sha256_file(dest) == want:
            _emit(log, f"using cached {dest}")
            return dest
        _emit(log, f"cached {dest} does not match sha256 {want}; downloading again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    _drop_stale_parts(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        got, size = _stream(url, tmp)
        if want is not None and got != want:
            raise InputError(f"{url}: downloaded file has sha256 {got}, expected {want} "
                             f"(model.source.sha256); the file was removed")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    write_json(dest.with_name(dest.name + ".source.json"),
               {"url": url, "sha256": got, "bytes": size, "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if want is None:
        _emit(log, f"downloaded {url} -> {dest}; sha256 {got} (pin it: model.source.sha256: {got})")
    else:
        _emit(log, f"downloaded {url} -> {dest} (sha256 verified)")
    return dest


def _drop_stale_parts(dest: Path, max_age_s: float = 24 * 3600) -> None:
    """Temp files of downloads killed mid-way; young ones may belong to a running download."""
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        with contextlib.suppress(OSError):
            if time.time() - part.stat().st_mtime > max_age_s:
                part.unlink()


def _stream(url: str, tmp: Path) -> tuple[str, int]:
    """Copy the response into ``tmp``; return (sha256, bytes). Raises InputError on any failure."""
    h = hashlib.sha256()
    size = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "lcpipe"})
        with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp, open(tmp, "wb") as f:
            expected = _content_length(resp)
            while block := resp.read(_CHUNK):
                f.write(block)
                h.update(block)
                size += len(block)
    except urllib.error.HTTPError as exc:
        raise InputError(f"{url}: download failed: HTTP {exc.code} {exc.reason}. {_offline_hint()}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # DNS, refused, timeout, bad URL, reset, malformed response
        reason = getattr(exc, "reason", exc)
        raise InputError(f"{url}: download failed: {reason}. {_offline_hint()}") from None
    # http.client does not raise when the server closes early; compare with Content-Length.
    if expected is not None and size != expected:
        raise InputError(f"{url}: download truncated: got {size} of {expected} bytes. {_offline_hint()}")
    return h.hexdigest(), size


def _content_length(resp: Any) -> int | None:
    value = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _offline_hint() -> str:
    return (f"If this machine is offline or the URL is unreachable, download the file elsewhere "
            f"and point lcpipe at it: {LOCAL_HINT}")


# ---------------------------------------------------------------- archives

def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def unpack_if_archive(path: Path, cache_dir: Path, *, log: Log = None) -> Path:
    if not is_archive(path):
        return path
    dest = Path(cache_dir) / "extracted" / sha256_file(path)[:32]
    if not dest.is_dir():  # atomic_dir: a finished folder or none at all
        with atomic_dir(dest) as tmp:
            if path.name.lower().endswith(".zip"):
                _extract_zip(path, tmp)
            else:
                _extract_tar(path, tmp)
        _emit(log, f"unpacked {path.name} -> {dest}")
    return _single_top_dir(dest)


def _single_top_dir(root: Path) -> Path:
    """PaddleClas archives hold one folder (``PPLCNet_x1_0_infer/``): return that folder."""
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def _member_target(root: Path, name: str, archive: Path) -> Path:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"{archive}: refusing to unpack: member {name!r} has an absolute path")
    if ".." in p.parts:
        raise InputError(f"{archive}: refusing to unpack: member {name!r} points outside the folder ('..')")
    target = (root / p).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InputError(f"{archive}: refusing to unpack: member {name!r} points outside the folder")
    return target


def _extract_tar(path: Path, dest: Path) -> None:
    try:
        with tarfile.open(path) as tf:
            members = tf.getmembers()
            for m in members:
                target = _member_target(dest, m.name, path)
                if m.issym() or m.islnk():
                    link = (target.parent / m.linkname) if m.issym() else (dest / m.linkname)
                    if os.path.isabs(m.linkname) or not link.resolve().is_relative_to(dest.resolve()):
                        raise InputError(f"{path}: refusing to unpack: link {m.name!r} -> {m.linkname!r} "
                                         f"points outside the folder")
                elif not (m.isfile() or m.isdir()):
                    raise InputError(f"{path}: refusing to unpack: member {m.name!r} is a device/fifo")
            # The stdlib "data" filter repeats these checks and drops setuid bits and owners.
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4: the checks above are all there is
                tf.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable tar archive: {exc}") from exc


def _extract_zip(path: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                _member_target(dest, info.filename, path)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise InputError(f"{path}: refusing to unpack: member {info.filename!r} is a symlink")
            for info in zf.infolist():
                target = _member_target(dest, info.filename, path)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable zip archive: {exc}") from exc
