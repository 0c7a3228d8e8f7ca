"""A node's stage cache backed by ``storage:``: a miss on the node looks in storage, a new entry is
copied there, so a second node does not recompute what a first one finished.

Cache keys hash the config, which holds the shipped inputs' absolute paths on the node; they are
the same on every node as long as the nodes' ``LCPIPE_NODE_DIR`` is (the default is).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from lcpipe.cache import CacheEntry, StageCache
from lcpipe.fileio import temp_prefix
from lcpipe.sweep.shipping import _extract, pack_dir
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
            _extract(self.storage.get(self._rel(key)), tmp)
            super().put(key, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("stage cache: %s fetched from %s", key[:12], self.storage.uri)
        return super().get(key)

    def put(self, key: str, src_dir: Path, *, replace: bool = False) -> None:
        super().put(key, src_dir, replace=replace)
        entry = self.stages / key
        if entry.is_dir() and (replace or not self.storage.exists(self._rel(key))):
            self.storage.put(self._rel(key), pack_dir(entry))
