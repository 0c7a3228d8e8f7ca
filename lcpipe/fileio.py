"""Small file helpers: sha256 and atomic writes (temp name, then rename).

Everything written here ends with the modes the user's umask gives (0644/0755 under umask 022):
mkstemp/mkdtemp create 0600/0700 temps, which are opened up before they are renamed into place.
``content_hashes()`` remembers the sha256 of input files for the length of a run, so a data set
every stage fingerprints is read once, not once per stage.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """Hash of a file, or of a directory tree (relative names + file hashes, sorted)."""
    return _tree_sha256(Path(path), sha256_file)


def _tree_sha256(p: Path, file_hash: Any) -> str:
    if p.is_file():
        return file_hash(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(f.relative_to(p).as_posix().encode())
        h.update(file_hash(f).encode())
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- content hashes of inputs

_memo: dict[tuple[int, ...], str] | None = None  # set while a run is in content_hashes()
# Files changed less than this long ago are not remembered: file times tick in coarse steps (a few
# ms), so a second write within the same step could leave the whole stat unchanged.
MEMO_MIN_AGE_S = 2.0


@contextmanager
def content_hashes() -> Iterator[None]:
    """Within the block, ``content_sha256`` hashes each input file once. The memo is keyed on the full
    stat (device, inode, size, mtime and ctime in ns): rewriting a file, even restoring its size and
    mtime, changes its ctime, so the file is read again."""
    global _memo
    outer = _memo
    _memo = {} if outer is None else outer
    try:
        yield
    finally:
        _memo = outer


def content_sha256(path: str | Path) -> str:
    """sha256_path of a file or folder, each file read once per run."""
    return _tree_sha256(Path(path), _memo_file_sha256)


def _memo_file_sha256(p: Path) -> str:
    if _memo is None:
        return sha256_file(p)
    st = p.stat()
    if time.time_ns() - st.st_ctime_ns < MEMO_MIN_AGE_S * 1e9:
        return sha256_file(p)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _memo:
        _memo[key] = sha256_file(p)
    return _memo[key]


# ---------------------------------------------------------------- modes: the user's umask

def user_umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads' file creation)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_up(path: str | Path) -> None:
    """Give a temp made by mkstemp (0600) / mkdtemp (0700) the mode a plain open()/mkdir() would."""
    p = Path(path)
    full = 0o777 if stat.S_ISDIR(p.lstat().st_mode) else 0o666
    os.chmod(p, full & ~user_umask())


def copy_tree(src: str | Path, dest: str | Path) -> None:
    """Copy a folder's files into ``dest`` (existing or not): content only, so the copies get the user's
    modes, not those of the source (an entry an older lcpipe stored 0600)."""
    shutil.copytree(src, dest, dirs_exist_ok=True, copy_function=shutil.copyfile)
    dest = Path(dest)
    for d in (dest, *(p for p in dest.rglob("*") if p.is_dir() and not p.is_symlink())):
        open_up(d)  # copytree copied the source folders' modes


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest.name), suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        open_up(tmp_path)
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def read_text(path: str | Path, what: str, max_bytes: int, error: type[Exception]) -> str:
    """A user's text file (YAML, labels, lists) as str: refused with ``error`` naming the file when it
    is missing, a folder, over ``max_bytes`` (checked before reading) or not UTF-8 (line named).
    A UTF-8 byte-order mark is dropped, so the first line reads like any other."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what} file")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: {what} file is larger than the {max_bytes:,} bytes lcpipe reads")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                    f"save the {what} file as UTF-8") from None


def strict_json(obj: Any, indent: int | None = 2) -> str:
    """JSON text that strict parsers accept: a NaN or infinite figure (a figure that does not exist)
    becomes null, numpy scalars become numbers; ``allow_nan=False`` guards what slips through."""
    return json.dumps(finite_or_none(obj), indent=indent, allow_nan=False, default=str)


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (dicts, lists, tuples walked)."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(dest: str | Path, obj: Any) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(strict_json(obj) + "\n")


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Build a directory under a temp name and swap it into place on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest.name), suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        open_up(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_ir(xml: str | Path) -> Iterator[Path]:
    """Yield a temp ``.xml`` path (in a temp folder beside ``xml``) for ``ov.save_model``, which writes the
    ``.bin`` next to it; on success move the ``.bin``, then the ``.xml`` into place, so a reader never
    sees an xml without its bin."""
    xml = Path(xml)
    xml.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=temp_prefix(xml.stem), suffix=".tmp", dir=xml.parent))
    try:
        tmp = folder / xml.name
        yield tmp
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- temps left by killed runs

# Temp names carry the writer's pid (".<name>.<pid>.<random>.tmp", ".<name>.old.<pid>"), so a later
# run can tell a dead run's leftovers from a concurrent run's work in progress.
_TEMP_WITH_PID = (re.compile(r"^\..*\.(\d+)\.[A-Za-z0-9_]+\.(?:tmp|old)$"), re.compile(r"^\..*\.old\.(\d+)$"))
_TEMP_LEGACY = re.compile(r"^\..*\.(?:tmp|old)$")
LEGACY_TEMP_AGE_S = 6 * 3600  # temps without a pid (older lcpipe): removed once this old


def temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files/dirs in ``folder`` whose writing process is gone (a killed run's leftovers).

    A live process's temp is never touched; pid-less temps only once older than LEGACY_TEMP_AGE_S.
    Only this host's pids are checked: keep one cache per machine (not shared over NFS)."""

    def stale(p: Path, pid: int | None) -> bool:
        if pid is not None:
            return not _pid_alive(pid)
        return bool(_TEMP_LEGACY.match(p.name)) and time.time() - p.lstat().st_mtime > LEGACY_TEMP_AGE_S

    return _remove_temps(folder, stale)


def remove_own_temps(folder: str | Path) -> list[Path]:
    """Delete this process's temps in ``folder``: after a stop signal, one may have been created a moment
    before its writer knew its name (so the writer's own cleanup could not remove it)."""
    return _remove_temps(folder, lambda p, pid: pid == os.getpid())


def _remove_temps(folder: str | Path, doomed: Any) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if not p.name.startswith("."):
            continue
        pid = next((int(m[1]) for rx in _TEMP_WITH_PID if (m := rx.match(p.name))), None)
        try:
            if not doomed(p, pid):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            continue  # another run cleaned it first
        removed.append(p)
    return removed


# ---------------------------------------------------------------- integrity of a stored folder

def files_sha256(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative posix name -> digest), except names in ``skip``."""
    root = Path(folder)
    return {f.relative_to(root).as_posix(): sha256_file(f) for f in sorted(root.rglob("*"))
            if f.is_file() and f.relative_to(root).as_posix() not in skip}


def mismatched_files(folder: str | Path, recorded: dict[str, str]) -> list[str]:
    """Names in ``recorded`` that are missing under ``folder`` or whose sha256 differs."""
    root = Path(folder)
    bad = []
    for name, digest in recorded.items():
        f = root / name
        if not f.is_file() or sha256_file(f) != digest:
            bad.append(name)
    return bad
