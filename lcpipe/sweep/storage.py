"""`storage:`: a location every node of a cluster can read and write, for what is too big for Ray's
object store (shipped inputs, run dirs coming home).

``file:///shared/lcpipe`` (or a plain absolute path) is a folder every node mounts; any other URI
(``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``) goes through ``pyarrow.fs`` (installed on
the driver and the nodes; lcpipe imports it only for such URIs). Objects are whole files written
under a temp name and renamed (local) or uploaded in one stream (object stores), so a reader
never sees half an object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lcpipe.errors import ConfigError, InputError, MissingDependencyError
from lcpipe.fileio import atomic_path


class Storage:
    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        parsed = urlparse(uri)
        self._fs: Any = None
        if parsed.scheme in ("", "file"):
            path = parsed.path if parsed.scheme else uri
            if not Path(path).is_absolute():
                raise ConfigError(f"storage: {uri!r} must be absolute (file:///shared/... or /shared/...), "
                                  "the same path on every node")
            self._root = path.rstrip("/") or "/"
        else:
            try:
                from pyarrow import fs
            except ImportError as exc:
                raise MissingDependencyError(f"storage: {uri} needs pyarrow on the driver and every node "
                                             "(pip install pyarrow), or use file:///shared/...") from exc
            try:
                self._fs, self._root = fs.FileSystem.from_uri(uri)
            except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes, bad buckets
                raise ConfigError(f"storage: {uri}: {exc}") from None

    def _path(self, rel: str) -> str:
        return f"{self._root.rstrip('/')}/{rel}"

    def url(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    def exists(self, rel: str) -> bool:
        if self._fs is None:
            return os.path.isfile(self._path(rel))
        from pyarrow import fs

        return self._fs.get_file_info(self._path(rel)).type == fs.FileType.File

    def put(self, rel: str, data: bytes) -> str:
        path = self._path(rel)
        if self._fs is None:
            with atomic_path(path) as tmp:  # pid-named temp, removed on failure
                tmp.write_bytes(data)
        else:
            self._fs.create_dir(os.path.dirname(path), recursive=True)
            with self._fs.open_output_stream(path) as f:
                f.write(data)
        return self.url(rel)

    def delete(self, rel: str) -> None:
        """Remove an object; one that is already gone is fine."""
        path = self._path(rel)
        try:
            if self._fs is None:
                os.unlink(path)
            else:
                self._fs.delete_file(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            if self._fs is not None and not self.exists(rel):
                return  # pyarrow raises OSError for a missing object
            raise InputError(f"storage: cannot delete {self.url(rel)}: {exc}") from None

    def get(self, rel: str) -> bytes:
        path = self._path(rel)
        try:
            if self._fs is None:
                return Path(path).read_bytes()
            with self._fs.open_input_stream(path) as f:
                return f.read()
        except (OSError, FileNotFoundError) as exc:
            raise InputError(f"storage: cannot read {self.url(rel)}: {exc}") from None
