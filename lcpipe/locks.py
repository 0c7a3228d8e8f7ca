"""Advisory locks (fcntl.flock) between lcpipe processes on one machine.

- A run holds an exclusive lock on ``<run dir>/.lcpipe.lock`` (which records its pid): a second run
  into the same folder is refused with the first one's pid, so a folder never mixes two runs.
- A run holds a shared lock on every cache entry it reads or writes, until it ends; ``cache prune``
  and ``cache clean`` take an exclusive lock before removing an entry and skip the ones they cannot
  get. Entry lock files live in ``<cache>/locks/<kind>-<name>.lock``; their mtime is the entry's
  last use (least-recently-used pruning).

flock locks belong to an open file and vanish with the process, so a killed run never leaves a
folder locked. Locks are per machine: a cache shared over NFS is not protected (keep one per node).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lcpipe.errors import InputError

RUN_LOCK = ".lcpipe.lock"


def _open_locked(path: Path, mode: int) -> int | None:
    """Open ``path`` (created if missing) and flock it without waiting: the fd, or None if another
    process holds a conflicting lock. Retries when the file was unlinked (a pruned entry's lock)
    between open and lock, so the lock held is always on the file the path names now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


# ---------------------------------------------------------------- run directories

_held_runs: dict[Path, list[int]] = {}  # run dir -> [fd, depth]: re-entrant within this process


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (re-entrant: ``lcpipe bench`` holds it around its pipeline
    run and its own output). Raises InputError naming the pid of the run that holds it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held_runs:
        _held_runs[run_dir][1] += 1
        try:
            yield
        finally:
            _held_runs[run_dir][1] -= 1
        return
    lock = run_dir / RUN_LOCK
    fd = _open_locked(lock, fcntl.LOCK_EX)
    if fd is None:
        raise InputError(f"--out {run_dir} is in use by {_holder(lock)} (another lcpipe run); wait for it "
                         "to finish or choose another --out")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held_runs[run_dir] = [fd, 1]
    try:
        yield
    finally:
        del _held_runs[run_dir]
        os.close(fd)


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


# ---------------------------------------------------------------- cache entries

def entry_lock_path(root: Path, kind: str, name: str) -> Path:
    return Path(root) / "locks" / f"{kind}-{name}.lock"


class EntryLocks:
    """The shared locks one run holds on the cache entries it uses."""

    def __init__(self) -> None:
        self.fds: dict[Path, int] = {}

    def hold(self, root: Path, kind: str, name: str) -> None:
        path = entry_lock_path(root, kind, name)
        if path not in self.fds:
            fd = None
            while fd is None:  # only a prune/clean removing this very entry holds it exclusively, briefly
                fd = _open_locked(path, fcntl.LOCK_SH)
                if fd is None:
                    _wait_for(path)
            self.fds[path] = fd
        os.utime(path)  # last use, for least-recently-used pruning

    def release(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _wait_for(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # blocks until the remover is done
    finally:
        os.close(fd)


_entry_locks: list[EntryLocks] = []  # innermost run last


@contextmanager
def holding_entries() -> Iterator[EntryLocks]:
    """Entries used within the block stay locked (shared) until it ends."""
    locks = EntryLocks()
    _entry_locks.append(locks)
    try:
        yield locks
    finally:
        _entry_locks.remove(locks)
        locks.release()


def use_entry(root: Path | None, kind: str, name: str) -> None:
    """Mark a cache entry as used by the running pipeline (no-op outside a run)."""
    if root is not None and _entry_locks:
        _entry_locks[-1].hold(Path(root), kind, name)


@contextmanager
def removing_entry(root: Path, kind: str, name: str) -> Iterator[bool]:
    """Exclusive lock for removing an entry: yields False (and removes nothing) when a run uses it."""
    path = entry_lock_path(root, kind, name)
    fd = _open_locked(path, fcntl.LOCK_EX)
    if fd is None:
        yield False
        return
    try:
        yield True
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
