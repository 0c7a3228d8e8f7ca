"""Inputs travel with the job, artifacts come home: nothing assumes the nodes share the driver's disk.

Driver: every local path a point's pipeline reads (every key a config model or a stage's options
list in ``path_fields``: model source, data folders and label files, validate's groups TSV, bench's
paddle_model, ...) gets a shipped name ``<content sha256[:16]>/<file name>``; the
point's config travels with those names only, and the files travel as one zip (through Ray's object
store, or ``storage:`` when too big). Worker: the zip is checked against its sha256, each input is
unpacked once per node into ``<node dir>/inputs/<its digest>/`` and the config's names are made
absolute there. Names depend only on content (and data fingerprints only on file contents and names
under their folder), so a node's stage cache keys stay the same when a sweep gains a point or the
driver's folders move, and are the same on every node with the same ``LCPIPE_NODE_DIR``. The point's
run dir is built on the node and returned as a zip, unpacked under the driver's ``--out``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from lcpipe.config import PipelineConfig, is_path_field, sub_model
from lcpipe.errors import ConfigError, InputError
from lcpipe.fileio import atomic_dir, remove_stale_temps, sha256_path, temp_prefix

# Ray refuses runtime_env packages at its gRPC message limit (ray/_private/runtime_env/packaging.py:
# GCS_STORAGE_MAX_SIZE = RAY_max_grpc_message_size, default 512 MiB); the same bound holds for the
# one object lcpipe puts in the object store for the inputs.
SHIP_LIMIT_BYTES = 512 * 1024 * 1024
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same inputs give the same zip and digest


def node_dir() -> Path:
    """Where a node keeps shipped inputs and run dirs in progress: $LCPIPE_NODE_DIR, else the temp dir."""
    env = os.environ.get("LCPIPE_NODE_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"lcpipe-node-{os.getuid()}"


# ---------------------------------------------------------------- driver: what a point reads

class ShipmentTooBigError(ConfigError):
    """The points' inputs exceed what Ray ships with a job (the whole sweep is refused, not a point)."""


class UnpinnedSourceError(ConfigError):
    """A URL source without sha256: every node would download it unverified (the whole sweep is
    refused before anything is submitted, not one failed row per point)."""


class InputNames:
    """Driver path -> shipped name, shared by all points (a folder two points read ships once).
    ``limit``: refuse as soon as the inputs add up to more (checked before hashing them)."""

    def __init__(self, limit: int | None = SHIP_LIMIT_BYTES) -> None:
        self.names: dict[str, str] = {}
        self.limit = limit
        self.total = 0

    def name(self, key: str, path: str) -> str:
        p = Path(path)
        if not p.exists():
            raise InputError(f"{key}: {path} does not exist")
        real = str(p.resolve())
        if real not in self.names:
            self.total += _tree_bytes(p)
            if self.limit is not None and self.total > self.limit:
                raise ShipmentTooBigError(
                    f"the points' inputs total {self.total / 2**20:.0f} MiB or more (at {key}: {path}), over the "
                    f"{self.limit / 2**20:.0f} MiB Ray ships with a job; put them on storage every node can read "
                    "instead: 'storage: file:///shared/lcpipe' (a folder all nodes mount) or 's3://bucket/prefix' "
                    "in the sweep file, or --storage URI")
            self.names[real] = f"{sha256_path(real)[:16]}/{p.name}"
        return self.names[real]


def shipped_config(config: PipelineConfig, names: InputNames) -> tuple[dict[str, Any], list[str]]:
    """The point's config as plain data with every local path replaced by its shipped name, and the
    names it uses. URL sources stay URLs (fetched on the node) and must pin a sha256."""
    src = config.model.source
    if src.url and not src.path and not src.sha256:
        raise UnpinnedSourceError(
            f"model.source.url without sha256 ({src.url}): on Ray every node downloads it on its own; pin "
            "model.source.sha256 (in the sweep's sources: or the base pipeline) so each verifies the same bytes, "
            "or use a local file (model.source.path / sources: {arch: {path: ...}}), which travels with the job; "
            "--local runs unpinned URLs as is")
    raw = config.to_yaml_dict()
    used: list[str] = []
    stages = raw.pop("stages")
    raw = _rename_paths(raw, PipelineConfig, names, used, [])
    raw["stages"] = [{e.name: _rename_paths(opts, type(e.options), names, used, ["stages", e.name])}
                     for e, opts in zip(config.stages, (next(iter(d.values())) for d in stages), strict=True)]
    return raw, sorted(set(used))


def _rename_paths(raw: Any, model: Any, names: InputNames, used: list[str], keys: list[str]) -> Any:
    if not isinstance(raw, dict) or model is None:
        return raw
    out = {}
    for key, value in raw.items():
        if isinstance(value, str) and is_path_field(model, key):
            value = names.name(".".join([*keys, key]), value)
            used.append(value)
        elif isinstance(value, dict):
            value = _rename_paths(value, sub_model(model, key), names, used, [*keys, key])
        out[key] = value
    return out


def pack_inputs(names: InputNames) -> bytes:
    """One deterministic zip of every shipped input (stored: images and weights barely compress)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, name in sorted(names.names.items(), key=lambda kv: kv[1]):
            _add_tree(zf, Path(path), name, zipfile.ZIP_STORED)
    return buf.getvalue()


# ---------------------------------------------------------------- worker: unpack, resolve

def materialize(data: bytes, digest: str) -> Path:
    """Unpack each shipped input once per node (the first unpacker wins); returns the inputs root."""
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise InputError(f"shipped inputs have sha256 {got}, the driver sent {digest}")
    root = node_dir() / "inputs"
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)  # a killed unpack's leftovers (pid-named temps)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("unpack"), suffix=".tmp", dir=root))
    try:
        extract_zip(data, tmp)
        for part in sorted(p for p in tmp.iterdir() if p.is_dir()):
            dest = root / part.name
            if (dest / ".complete").is_file():
                continue
            (part / ".complete").write_text(part.name)
            try:
                os.rename(part, dest)
            except OSError:  # another point on this node unpacked it first
                if not (dest / ".complete").is_file():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def node_config(raw: dict[str, Any], root: Path, where: str) -> PipelineConfig:
    """The shipped config with its names made absolute under ``root`` (the unpacked inputs)."""
    from lcpipe.runner import config_from_dict

    return config_from_dict(dict(raw), where, base=root)


# ---------------------------------------------------------------- run dirs: node -> driver

def pack_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        _add_tree(zf, folder, "", zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def unpack_home(data: bytes, dest: Path) -> None:
    """Replace ``dest`` with the zip's content, atomically (a half copy never looks like a run)."""
    with atomic_dir(dest) as tmp:
        extract_zip(data, tmp)


def _add_tree(zf: zipfile.ZipFile, path: Path, name: str, compress: int) -> None:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        arc = name if f == path else str(PurePosixPath(name, f.relative_to(path).as_posix())).lstrip("/")
        info = zipfile.ZipInfo(arc, _ZIP_TIME)
        info.compress_type = compress
        info.external_attr = 0o644 << 16
        with open(f, "rb") as src, zf.open(info, "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def extract_zip(data: bytes, dest: Path) -> None:
    """Unpack an lcpipe zip into ``dest``. A damaged zip is an InputError."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for member in zf.namelist():
                p = PurePosixPath(member)
                if p.is_absolute() or ".." in p.parts:  # lcpipe wrote these zips; refuse anything else
                    raise InputError(f"shipped zip member {member!r} leaves its folder")
            zf.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise InputError(f"damaged zip ({len(data)} bytes): {exc}") from None


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
