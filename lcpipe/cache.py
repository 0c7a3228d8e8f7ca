"""Content-addressed stage cache.

An entry is a directory ``<root>/stages/<key>/`` holding a stage's outputs and
``stage.json``. It is built under a temp name and renamed into place, so a reader never
sees a half-written entry and two concurrent runs cannot corrupt one (the loser of the
rename race discards its copy). ``stage.json`` records the sha256 of every file of the entry;
the runner re-checks them on a hit and discards an entry that does not match. Temps left by a
killed run carry its pid and are removed by a later run. ``NullCache`` is "off" (--no-cache).

A cache root is lcpipe's when it holds ``lcpipe-cache.json`` (written when a run first uses the
folder; caches of older lcpipe, without it, are recognised by their layout). A run refuses a
non-empty folder that is neither; ``clean`` and ``prune`` refuse it too, and even in a cache they
remove only names lcpipe gives its entries, never an entry a running pipeline holds (lcpipe.locks).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcpipe.errors import InputError
from lcpipe.fileio import copy_tree, open_up, remove_own_temps, remove_stale_temps, temp_prefix, write_json
from lcpipe.locks import entry_lock_path, removing_entry, use_entry

log = logging.getLogger("lcpipe")

# 2: stage.json lists every file's sha256 ("files"); IR inputs are keyed on .xml and .bin
# 3: import refuses non-finite weights and validate leaves figures of non-finite outputs null (strict
#    JSON, non_finite_outputs): an older entry may hold a NaN model's results or NaN in its JSON.
#    Also in 3: stage.json records "key_parts" (lcpipe.resume names what differs), read only when
#    present, and the root holds lcpipe-cache.json, CACHEDIR.TAG and locks/: entries of any format-3
#    lcpipe stay valid, so none of these bumps it (data fingerprints by content changed the keys anyway).
CACHE_FORMAT = 3
MARKER = "lcpipe-cache.json"
_TAG = "CACHEDIR.TAG"  # https://bford.info/cachedir/: backup tools skip the folder
_TAG_TEXT = "Signature: 8a477f597d28d172789f06886806bc55\n# This file marks an lcpipe cache (lcpipe cache --help).\n"
# What lcpipe keeps under a cache root, and how it names each entry there.
ENTRY_NAMES = {
    "stages": re.compile(r"^[0-9a-f]{64}$"),  # folder: a stage's outputs + stage.json
    "data": re.compile(r"^[0-9a-f]{64}\.(?:npy|json)$"),  # preprocessed split + its sha256 record
    "downloads": re.compile(r"^(?:[0-9a-f]{64}|url-[0-9a-f]{24})$"),  # folder: one downloaded file
    "extracted": re.compile(r"^[0-9a-f]{32}$"),  # folder: one unpacked archive
}
CACHE_SUBDIRS = tuple(ENTRY_NAMES)
_OWN_TOP = frozenset({*CACHE_SUBDIRS, MARKER, _TAG, "locks"})
_LCPIPE_TEMP = re.compile(r"^\..+\.(?:tmp|old)$|^\..+\.old\.\d+$")


def default_cache_dir() -> Path:
    env = os.environ.get("LCPIPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return platform_cache_dir()


def platform_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("lcpipe"))


def is_lcpipe_cache(root: Path) -> bool:
    """Marked by lcpipe, or laid out as older lcpipe left its caches (only lcpipe's names in it)."""
    root = Path(root)
    try:
        if json.loads((root / MARKER).read_text()).get("lcpipe_cache") is True:
            return True
    except (OSError, ValueError, AttributeError):
        pass
    if not root.is_dir():
        return False
    top = [p for p in root.iterdir() if not _LCPIPE_TEMP.match(p.name)]  # temps: e.g. a concurrent run's marker
    if not top or any(p.name not in _OWN_TOP for p in top):
        return False
    for p in top:
        if p.name in ENTRY_NAMES and p.is_dir():
            names = [q.name for q in p.iterdir()]
            if any(not ENTRY_NAMES[p.name].match(n) and not _LCPIPE_TEMP.match(n) for n in names):
                return False
    return True


def _entry_key(kind: str, name: str) -> str:
    return name.rsplit(".", 1)[0] if kind == "data" else name


@dataclass
class CacheEntry:
    key: str
    path: Path
    meta: dict[str, Any]


@dataclass
class StoredEntry:
    """One removable thing in a cache: a stage result, a preprocessed split, a download, an unpacked archive."""

    kind: str
    key: str
    paths: list[Path]
    bytes: int
    last_used: float  # epoch seconds (the entry lock's mtime, else the entry's own)
    stage: str | None = None


class StageCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.stages = self.root / "stages"

    # -------------------------------------------------------- ownership

    def claim(self, *, trusted: bool = False) -> None:
        """Make sure the root is lcpipe's cache (marking a new or older one) before a run writes into it.
        ``trusted``: the platform's default cache folder, lcpipe's by definition."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--cache-dir {self.root}: is a file, not a folder")
        if (self.root / MARKER).is_file() and is_lcpipe_cache(self.root):
            return
        empty = not self.root.is_dir() or all(_LCPIPE_TEMP.match(p.name) for p in self.root.iterdir())
        if not (empty or trusted or is_lcpipe_cache(self.root)):
            raise InputError(f"--cache-dir {self.root}: an existing folder that is not an lcpipe cache (no {MARKER}, "
                             "and it holds files lcpipe did not write); give a new or empty folder")
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / MARKER, {"lcpipe_cache": True, "format": CACHE_FORMAT})
        if not (self.root / _TAG).exists():
            (self.root / _TAG).write_text(_TAG_TEXT)

    def _check_owned(self, what: str) -> None:
        if not self.root.exists():
            return  # nothing there to remove
        if not is_lcpipe_cache(self.root):
            raise InputError(f"--cache-dir {self.root}: not an lcpipe cache (no {MARKER}, and it holds files "
                             f"lcpipe did not write); {what} nothing there")

    # -------------------------------------------------------- stage results

    def get(self, key: str) -> CacheEntry | None:
        path = self.stages / key
        meta_file = path / "stage.json"
        use_entry(self.root, "stages", key)
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
        except FileNotFoundError:
            return None  # discarded by a concurrent run just now
        except (OSError, ValueError) as exc:
            # A damaged record would otherwise block this key for good (put() keeps an existing entry).
            log.warning("cache: %s is unreadable (%s); entry discarded, recomputing", meta_file, exc)
            self.discard(key)
            return None
        return CacheEntry(key, path, meta)

    def put(self, key: str, src_dir: Path, *, replace: bool = False) -> None:
        """Copy a finished stage directory into the cache (atomic, first writer wins).

        ``replace`` (--force) swaps a fresh result in over an existing entry, so a forced
        recomputation also refreshes what later runs reuse. Only losing a race to another run is
        quiet; any other error (disk full, permissions) is raised."""
        use_entry(self.root, "stages", key)
        self.stages.mkdir(parents=True, exist_ok=True)
        final = self.stages / key
        if final.exists() and not replace:
            return
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(key[:12]), suffix=".tmp", dir=self.stages))
        try:
            copy_tree(src_dir, tmp)
            open_up(tmp)
            if replace and final.exists():
                self._remove(final)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # another run stored the same key first; its copy is equivalent
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def discard(self, key: str) -> None:
        """Drop an entry (e.g. one whose files no longer match their recorded sha256)."""
        final = self.stages / key
        if final.exists():
            self._remove(final)

    def _remove(self, final: Path) -> None:
        # Move it aside first: readers see the old entry or none, never half of one.
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(final.name[:12]), suffix=".old", dir=final.parent))
        try:
            os.rename(final, old / "entry")
        except FileNotFoundError:
            pass  # a concurrent run moved it already
        shutil.rmtree(old)

    def remove_stale_temps(self) -> None:
        """Remove temps a killed run left (a concurrent live run's temps stay)."""
        for folder in self._temp_folders():
            for p in remove_stale_temps(folder):
                log.info("cache: removed %s left by an interrupted run", p)

    def remove_own_temps(self) -> None:
        """Remove this process's temps (a stopped run, see fileio.remove_own_temps)."""
        for folder in self._temp_folders():
            remove_own_temps(folder)

    def _temp_folders(self) -> tuple[Path, ...]:
        return (self.stages, self.root / "data", self.root / "extracted")

    def entries(self) -> list[CacheEntry]:
        if not self.stages.is_dir():
            return []
        out = []
        for p in sorted(self.stages.iterdir()):
            if not ENTRY_NAMES["stages"].match(p.name):
                continue
            entry = self._peek(p.name)
            if entry:
                out.append(entry)
        return out

    def _peek(self, key: str) -> CacheEntry | None:
        """An entry's record, read without using it (no lock, no last-use stamp)."""
        try:
            meta = json.loads((self.stages / key / "stage.json").read_text())
        except (OSError, ValueError):
            return None
        return CacheEntry(key, self.stages / key, meta) if isinstance(meta, dict) else None

    # -------------------------------------------------------- everything stored: list, prune, clean

    def stored(self) -> list[StoredEntry]:
        """Every entry lcpipe can name as its own under the root, least recently used first."""
        out: list[StoredEntry] = []
        for kind, pattern in ENTRY_NAMES.items():
            folder = self.root / kind
            if not folder.is_dir():
                continue
            groups: dict[str, list[Path]] = {}
            for p in sorted(folder.iterdir()):
                if pattern.match(p.name):
                    groups.setdefault(_entry_key(kind, p.name), []).append(p)
            for key, paths in groups.items():
                meta = self._peek(key) if kind == "stages" else None
                out.append(StoredEntry(kind, key, paths, sum(_bytes(p) for p in paths),
                                       self._last_used(kind, key, paths), (meta.meta.get("stage") if meta else None)))
        return sorted(out, key=lambda e: e.last_used)

    def _last_used(self, kind: str, key: str, paths: list[Path]) -> float:
        for p in (entry_lock_path(self.root, kind, key), *paths):
            try:
                return p.stat().st_mtime
            except OSError:
                continue
        return 0.0

    def size_bytes(self) -> int:
        return _bytes(self.root) if self.root.exists() else 0

    def remove_entries(self, entries: list[StoredEntry]) -> tuple[list[StoredEntry], list[StoredEntry]]:
        """Remove these entries, each under its exclusive lock: (removed, kept because a run uses them)."""
        removed, busy = [], []
        for e in entries:
            with removing_entry(self.root, e.kind, e.key) as free:
                if not free:
                    busy.append(e)
                    continue
                for p in e.paths:
                    if p.is_dir() and not p.is_symlink():
                        self._remove(p)
                    else:
                        p.unlink(missing_ok=True)
                removed.append(e)
        return removed, busy

    def clean(self) -> tuple[list[StoredEntry], list[StoredEntry]]:
        """Remove every entry not in use; foreign files stay. Refuses a folder that is not a cache."""
        self._check_owned("removed")
        removed, busy = self.remove_entries(self.stored())
        self.remove_stale_temps()
        self._drop_orphan_locks()
        for sub in (*CACHE_SUBDIRS, "locks"):  # folders left empty
            _remove_empty_dirs(self.root / sub)
        return removed, busy

    def prune(self, *, max_bytes: int | None = None, older_than_s: float | None = None,
              now: float | None = None) -> tuple[list[StoredEntry], list[StoredEntry]]:
        """Remove entries last used more than ``older_than_s`` ago, then least recently used ones until
        the entries total at most ``max_bytes``; entries a running pipeline holds are kept."""
        self._check_owned("pruned")
        now = time.time() if now is None else now
        entries = self.stored()
        chosen = [e for e in entries if older_than_s is not None and now - e.last_used > older_than_s]
        removed, busy = self.remove_entries(chosen)
        total = sum(e.bytes for e in entries) - sum(e.bytes for e in removed)
        for e in entries if max_bytes is not None else ():
            if total <= max_bytes:
                break
            if e in chosen:
                continue
            done, held = self.remove_entries([e])
            removed += done
            busy += held
            total -= sum(x.bytes for x in done)
        self._drop_orphan_locks()
        return removed, busy

    def _drop_orphan_locks(self) -> None:
        """Lock files whose entry is gone (a run looked a key up that was never stored)."""
        present = {(e.kind, e.key) for e in self.stored()}
        folder = self.root / "locks"
        for lock in folder.glob("*.lock") if folder.is_dir() else ():
            kind, _, key = lock.name[: -len(".lock")].partition("-")
            if kind in ENTRY_NAMES and (kind, key) not in present:
                with removing_entry(self.root, kind, key):
                    pass


def _bytes(path: Path) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return 0


def _remove_empty_dirs(folder: Path) -> None:
    if not folder.is_dir():
        return
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass


class NullCache(StageCache):
    def __init__(self) -> None:
        super().__init__(Path(os.devnull))

    def claim(self, *, trusted: bool = False) -> None:
        return None

    def get(self, key: str) -> CacheEntry | None:
        return None

    def put(self, key: str, src_dir: Path, *, replace: bool = False) -> None:
        return None

    def discard(self, key: str) -> None:
        return None

    def remove_stale_temps(self) -> None:
        return None

    def remove_own_temps(self) -> None:
        return None
