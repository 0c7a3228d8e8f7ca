"""Content-addressed stage cache.

An entry is a directory ``<root>/stages/<key>/`` holding a stage's outputs and
``stage.json``. It is built under a temp name and renamed into place, so a reader never
sees a half-written entry and two concurrent runs cannot corrupt one (the loser of the
rename race discards its copy). ``stage.json`` records the sha256 of every file of the entry;
the runner re-checks them on a hit and discards an entry that does not match. Temps left by a
killed run carry its pid and are removed by a later run. ``NullCache`` is "off" (--no-cache).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcpipe.fileio import remove_stale_temps, temp_prefix

log = logging.getLogger("lcpipe")

# 2: stage.json lists every file's sha256 ("files"); IR inputs are keyed on .xml and .bin
# 3: import refuses non-finite weights and validate leaves figures of non-finite outputs null (strict
#    JSON, non_finite_outputs): an older entry may hold a NaN model's results or NaN in its JSON
CACHE_FORMAT = 3
# What lcpipe keeps under a cache root: stage results, downloads, unpacked archives, preprocessed
# data. `clean` removes exactly these, never the root itself (it may be a user-chosen directory).
CACHE_SUBDIRS = ("stages", "downloads", "extracted", "data")


def default_cache_dir() -> Path:
    env = os.environ.get("LCPIPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lcpipe"))


@dataclass
class CacheEntry:
    key: str
    path: Path
    meta: dict[str, Any]


class StageCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.stages = self.root / "stages"

    def get(self, key: str) -> CacheEntry | None:
        path = self.stages / key
        meta_file = path / "stage.json"
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
        self.stages.mkdir(parents=True, exist_ok=True)
        final = self.stages / key
        if final.exists() and not replace:
            return
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(key[:12]), suffix=".tmp", dir=self.stages))
        try:
            shutil.copytree(src_dir, tmp, dirs_exist_ok=True)
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
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(final.name[:12]), suffix=".old", dir=self.stages))
        try:
            os.rename(final, old / "entry")
        except FileNotFoundError:
            pass  # a concurrent run moved it already
        shutil.rmtree(old)

    def remove_stale_temps(self) -> None:
        """Remove temps a killed run left (a concurrent live run's temps stay)."""
        for folder in (self.stages, self.root / "data", self.root / "extracted"):
            for p in remove_stale_temps(folder):
                log.info("cache: removed %s left by an interrupted run", p)

    def entries(self) -> list[CacheEntry]:
        if not self.stages.is_dir():
            return []
        out = []
        for p in sorted(self.stages.iterdir()):
            if p.name.startswith("."):
                continue
            entry = self.get(p.name)
            if entry:
                out.append(entry)
        return out

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file()) if self.root.exists() else 0

    def clean(self) -> int:
        n = len(self.entries())
        for sub in CACHE_SUBDIRS:
            if (self.root / sub).is_dir():
                shutil.rmtree(self.root / sub)
        return n


class NullCache(StageCache):
    def __init__(self) -> None:
        super().__init__(Path(os.devnull))

    def get(self, key: str) -> CacheEntry | None:
        return None

    def put(self, key: str, src_dir: Path, *, replace: bool = False) -> None:
        return None

    def discard(self, key: str) -> None:
        return None

    def remove_stale_temps(self) -> None:
        return None
