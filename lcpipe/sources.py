"""Where a model file comes from: a local path, or a URL downloaded once into the cache.

Downloads go through pooch (sha256 check, retries, a progress bar once a download has taken
over a second) into ``<cache>/downloads/<sha256 or url-hash>/<filename>``: pooch streams to a
temp name beside it and renames only after the hash matched, so a half file never sits under
the final name. ``file://`` URLs are copied by a small downloader of ours (pooch has none).
Archives (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``; PaddleClas ships ``*_infer.tar``), local or
downloaded, are unpacked into ``<cache>/extracted/<archive sha256>/`` after every member has
been checked: inside that folder, a regular file or folder (no links, devices), and within
the size, member-count and expansion-ratio limits below. A local file is never modified or
deleted, whatever its checks say.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from lcpipe.config import SourceConfig
from lcpipe.errors import InputError
from lcpipe.fileio import atomic_dir, sha256_file, write_json
from lcpipe.locks import use_entry

Log = Callable[[str], Any] | logging.Logger | None

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
LOCAL_HINT = "--set model.source.path=/path/to/file"
RETRIES = 2  # pooch retries a failed download (network error or hash mismatch) this often, waiting 1 s, 2 s
PROGRESS_AFTER_S = 1.0  # downloads that finish sooner show no bar
_TIMEOUT_S = 60
_CHUNK = 1 << 16
# Archive limits. The largest PP-LCNet(V2) release archive is ~0.2 GB with a handful of members;
# these leave an order of magnitude of room and stop an archive bomb before it fills the disk.
MAX_UNPACKED_BYTES = 4 << 30
MAX_MEMBERS = 10_000
MAX_RATIO = 200  # unpacked bytes per archive byte (checked once the unpacked total passes 16 MiB)
_RATIO_FLOOR = 16 << 20

_POOCH_TEMP = re.compile(r"tmp[a-z0-9_]{8}")
_logger = logging.getLogger("lcpipe.sources")


def fetch_source(src: SourceConfig, cache_dir: Path, *, log: Log = None) -> Path:
    """Return a local path for ``src``: the file itself, or the extracted folder of an archive.

    ``path`` wins over ``url`` so ``--set model.source.path=...`` overrides a YAML URL. Downloads
    and unpacked archives go under ``cache_dir`` (with --no-cache the caller passes a temp dir)."""
    cache_dir = Path(cache_dir)
    if src.path:
        path = check_local(src)
        return unpack_if_archive(path, cache_dir, log=log) if path.is_file() else path
    if not src.url:
        raise InputError("model.source: give 'path' (local file) or 'url'")
    file = download(src.url, cache_dir, sha256=src.sha256, log=log)
    return unpack_if_archive(file, cache_dir, log=log)


def check_local(src: SourceConfig) -> Path:
    """The local ``path`` of ``src``, checked against ``sha256`` when given (a file only)."""
    path = Path(str(src.path)).expanduser()
    if not path.exists():
        raise InputError(f"model.source.path: {path} does not exist")
    if src.sha256:
        if not path.is_file():
            raise InputError(f"model.source.sha256: {path} is a folder; a sha256 pins a single file "
                             "(an archive or a weights file)")
        _verify_local(path, src.sha256)
    return path


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
    use_entry(cache_dir, "downloads", dest.parent.name)  # kept from `lcpipe cache prune` while in use
    if dest.is_file() and (want is None or sha256_file(dest) == want):
        _emit(log, f"using cached {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _drop_stale_parts(dest)
    _emit(log, f"downloading {url} -> {dest}")
    _fetch_with_pooch(url, dest, want)
    got = sha256_file(dest)
    write_json(dest.with_name(dest.name + ".source.json"),
               {"url": url, "sha256": got, "bytes": dest.stat().st_size,
                "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if want is None:
        _emit(log, f"downloaded {url} -> {dest}; sha256 {got} (pin it: model.source.sha256: {got})")
    else:
        _emit(log, f"downloaded {url} -> {dest} (sha256 verified)")
    return dest


def _fetch_with_pooch(url: str, dest: Path, want: str | None) -> None:
    import pooch
    import requests

    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise InputError(f"{url}: unsupported URL scheme {scheme!r} (http, https, file). {_offline_hint()}")
    pooch.get_logger().setLevel(logging.WARNING)  # lcpipe logs its own lines
    bar = _DownloadProgress(dest.name)
    downloader: Any = _copy_file_url if scheme == "file" else pooch.HTTPDownloader(
        progressbar=bar, chunk_size=_CHUNK, timeout=_TIMEOUT_S, headers={"User-Agent": "lcpipe"})
    store = pooch.create(path=dest.parent, base_url="", registry={dest.name: f"sha256:{want}" if want else None},
                         urls={dest.name: url}, retry_if_failed=RETRIES)
    try:
        store.fetch(dest.name, downloader=downloader)
    except ValueError as exc:  # pooch: hash mismatch after the retries; its temp file is gone
        found = re.search(r"got ([0-9a-f]{64})", str(exc))
        got = found.group(1) if found else "a different digest"
        raise InputError(f"{url}: downloaded file has sha256 {got}, expected {want} "
                         f"(model.source.sha256); the file was removed") from None
    except requests.exceptions.HTTPError as exc:
        resp = exc.response
        status = f"HTTP {resp.status_code} {resp.reason}" if resp is not None else str(exc)
        raise InputError(f"{url}: download failed: {status}. {_offline_hint()}") from None
    except requests.exceptions.ChunkedEncodingError as exc:
        raise InputError(f"{url}: download truncated: {_incomplete(exc)}. {_offline_hint()}") from None
    except (requests.exceptions.RequestException, OSError) as exc:  # DNS, refused, timeout, reset, file://
        raise InputError(f"{url}: download failed: {_reason(exc)}. {_offline_hint()}") from None
    finally:
        bar.close()


def _copy_file_url(url: str, output_file: Any, _pooch: Any) -> None:
    """pooch downloader for file:// URLs (it has none): copy the file into pooch's temp name."""
    src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    with open(src, "rb") as f_in:
        if isinstance(output_file, str | os.PathLike):
            with open(output_file, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out, _CHUNK)
        else:
            shutil.copyfileobj(f_in, output_file, _CHUNK)


def _incomplete(exc: BaseException) -> str:
    """'got N of M bytes' from urllib3's IncompleteRead(N bytes read, K more expected)."""
    found = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", str(exc))
    if found:
        got, more = int(found.group(1)), int(found.group(2))
        return f"got {got} of {got + more} bytes"
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return text or type(exc).__name__


class _DownloadProgress:
    """pooch's progress-bar protocol (``total``, ``update``, ``reset``, ``close``) over lcpipe's one
    bar (lcpipe.render.progress), shown only once the download has taken longer than
    PROGRESS_AFTER_S (no flicker for small files), also in logs (a slow download is worth a line)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.total = 0
        self.shown = False
        self._done = 0
        self._t0 = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def update(self, n: int) -> None:
        self._done += n
        if self._progress is None and time.monotonic() - self._t0 >= PROGRESS_AFTER_S:
            from lcpipe.render.progress import rich_bar

            self._progress, self._task = rich_bar(f"downloading {self.label}", self.total or None,
                                                  terminal_only=False, transient=False, transfer=True)
            self._progress.start()
            self.shown = True
        if self._progress is not None:
            done = min(self._done, self.total) if self.total else self._done
            self._progress.update(self._task, completed=done)

    def reset(self) -> None:
        self._done = 0

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _drop_stale_parts(dest: Path, max_age_s: float = 24 * 3600) -> None:
    """pooch's temp files (tempfile's ``tmp`` + 8 characters, beside the target) of downloads killed
    mid-way; young ones may belong to a download running now."""
    for part in dest.parent.glob("tmp*"):
        if not _POOCH_TEMP.fullmatch(part.name):
            continue
        with contextlib.suppress(OSError):
            if time.time() - part.stat().st_mtime > max_age_s:
                part.unlink()


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
    use_entry(cache_dir, "extracted", dest.name)
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


class _Budget:
    """Running totals of an archive being checked; raises at the first limit crossed."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.packed = max(archive.stat().st_size, 1)
        self.members = 0
        self.bytes = 0

    def add(self, name: str, size: int) -> None:
        self.members += 1
        self.bytes += max(size, 0)
        if self.members > MAX_MEMBERS:
            raise InputError(f"{self.archive}: refusing to unpack: more than {MAX_MEMBERS} members "
                             f"(limit lcpipe.sources.MAX_MEMBERS)")
        if self.bytes > MAX_UNPACKED_BYTES:
            raise InputError(f"{self.archive}: refusing to unpack: more than {_size(MAX_UNPACKED_BYTES)} unpacked "
                             f"(at member {name!r}; limit lcpipe.sources.MAX_UNPACKED_BYTES)")
        if self.bytes > _RATIO_FLOOR and self.bytes > MAX_RATIO * self.packed:
            raise InputError(f"{self.archive}: refusing to unpack: expands more than {MAX_RATIO}x "
                             f"({_size(self.packed)} -> over {_size(self.bytes)} at member {name!r}; "
                             f"limit lcpipe.sources.MAX_RATIO), an archive bomb?")


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _extract_tar(path: Path, dest: Path) -> None:
    budget = _Budget(path)
    try:
        with tarfile.open(path) as tf:
            members = []
            for m in tf:  # lazily: a bomb is stopped at the limit, not decompressed in full first
                _member_target(dest, m.name, path)
                if m.issym() or m.islnk():
                    raise InputError(f"{path}: refusing to unpack: member {m.name!r} is a "
                                     f"{'symbolic' if m.issym() else 'hard'} link to {m.linkname!r} "
                                     f"(links are not allowed in model archives)")
                if not (m.isfile() or m.isdir()):
                    raise InputError(f"{path}: refusing to unpack: member {m.name!r} is a device/fifo")
                budget.add(m.name, m.size if m.isfile() else 0)
                members.append(m)
            # With links refused, the checks above are complete; the stdlib "data" filter (3.11.4+)
            # repeats them and also drops setuid bits and owners.
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, members=members, filter="data")
            else:
                tf.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable tar archive: {exc}") from exc


def _extract_zip(path: Path, dest: Path) -> None:
    budget = _Budget(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            for info in infos:
                _member_target(dest, info.filename, path)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise InputError(f"{path}: refusing to unpack: member {info.filename!r} is a symbolic link "
                                     f"(links are not allowed in model archives)")
                budget.add(info.filename, info.file_size)
            for info in infos:
                target = _member_target(dest, info.filename, path)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    _copy_at_most(src, out, info.file_size, path, info.filename)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable zip archive: {exc}") from exc


def _copy_at_most(src: Any, out: Any, declared: int, archive: Path, name: str) -> None:
    """Copy a zip member; a member that inflates past its declared size is refused (zip headers can lie)."""
    left = declared
    while block := src.read(_CHUNK):
        left -= len(block)
        if left < 0:
            raise InputError(f"{archive}: refusing to unpack: member {name!r} inflates past its declared "
                             f"size of {declared} bytes")
        out.write(block)
