"""A node's stage cache backed by ``storage:``: a miss on the node looks in storage, a new entry is
copied there, so a second node does not recompute what a first one finished.

Cache keys hash the config, which holds the shipped inputs' absolute paths on the node, and the
data fingerprints (file contents and names under their folder); they are the same on every node as
long as the nodes' ``LCPIPE_NODE_DIR`` is (the default is). An entry that
cannot be read from storage is recomputed; one the runner discards (files not matching their
sha256) is deleted from storage too, so it does not come back.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from lcpipe.cache import CacheEntry, StageCache
from lcpipe.errors import InputError
from lcpipe.fileio import temp_prefix
from lcpipe.sweep.shipping import extract_zip, pack_dir
from lcpipe.sweep.storage import Storage

log = logging.getLogger("lcpipe")


class BackedStageCache(StageCache):
    def __init__(self, root: Path, storage: Storage) -> None:
        super().__init__(root)
        self.storage = storage

    def _rel(self, key: str) -> str:
        return f"cache/stages/{key}.zip"

    def get(self, key: str) -> CacheEntry | None:
        hit = super().get(key)
        if hit is not None or not self.storage.exists(self._rel(key)):
            return hit
        self.stages.mkdir(parents=True, exist_ok=True)
        # named like every cache temp, so a killed fetch is cleaned by a later run
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(key[:12]), suffix=".tmp", dir=self.stages))
        try:
            extract_zip(self.storage.get(self._rel(key)), tmp)
            super().put(key, tmp)
        except InputError as exc:  # unreadable or damaged in storage: this stage is recomputed
            log.warning("stage cache: %s in %s is unusable (%s); recomputing", key[:12], self.storage.uri, exc)
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("stage cache: %s fetched from %s", key[:12], self.storage.uri)
        return super().get(key)

    def discard(self, key: str) -> None:
        """Drop the node's entry and the stored one (a corrupt entry must not be fetched again)."""
        super().discard(key)
        try:
            self.storage.delete(self._rel(key))
        except InputError as exc:
            log.warning("stage cache: could not delete %s: %s", self._rel(key), exc)

    def put(self, key: str, src_dir: Path, *, replace: bool = False) -> None:
        super().put(key, src_dir, replace=replace)
        entry = self.stages / key
        if entry.is_dir() and (replace or not self.storage.exists(self._rel(key))):
            self.storage.put(self._rel(key), pack_dir(entry))
