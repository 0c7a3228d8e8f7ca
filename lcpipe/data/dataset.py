"""Datasets: list samples (labels file / PaddleClas layout / plain folder), subset, rotate, load + cache.

Labels file lines: ``<file> <class_index>`` (file relative to ``images``); blank lines and ``#``
comments are skipped. A file with only ``<file>`` lines is a plain file list (labels None) —
handy with ``rotations``, where the label is the rotation's index anyway.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lcpipe.data import preprocess as _pre
from lcpipe.errors import ConfigError, InputError, shown
from lcpipe.fileio import atomic_path, content_sha256, read_text, sha256_file, sha256_json, write_json
from lcpipe.locks import use_entry
from lcpipe.render.progress import progress as show_progress

if TYPE_CHECKING:
    from lcpipe.config import DataConfig, DatasetConfig, PreprocessConfig

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
# bump when the cached array layout or preprocessing code changes meaning
# 2: keyed on each image's content and its name under the data folder (1: absolute path, size, mtime)
CACHE_FORMAT = 2
_MAX_LISTED = 5
MAX_LIST_BYTES = 64 << 20  # a labels file for ImageNet's 50,000 validation images is ~2 MB
_log = logging.getLogger("lcpipe")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int | None
    rotate: int = 0  # degrees counter-clockwise, applied before resizing
    origin: str = field(default="", compare=False)  # where the label came from, for messages


def check_label_range(samples: list[Sample], classes: int) -> None:
    """Every label must be a class of the model: a label file naming class 7 for a 2-class model
    would otherwise count as a wrong answer on every such image and still yield a top-1 figure."""
    for s in samples:
        if s.label is not None and s.label >= classes:
            raise InputError(f"{s.origin or s.path}: class index {s.label} is outside the model's {classes} "
                             f"classes (0..{classes - 1})")


@dataclass
class Split:
    x: np.ndarray  # [N, 3, H, W] float32
    labels: np.ndarray | None  # [N] int64, or None for unlabeled data
    samples: list[Sample]

    def check_classes(self, classes: int | None) -> None:
        """InputError naming the labels file and line when a label is not one of ``classes`` classes
        (None: the model's class count is not known yet, nothing to check)."""
        if classes is not None:
            check_label_range(self.samples, classes)


# ---------------------------------------------------------------- listing

def list_samples(ds: DatasetConfig, where: str = "data") -> list[Sample]:
    """Samples of one dataset entry, subset and rotations applied. ``where`` prefixes messages."""
    rotations = _check_rotations(ds.rotations, where) if ds.rotations else None
    entries = _list_entries(ds)
    if not entries:
        raise InputError(f"{_source_name(ds)}: no images found")
    entries = _subset(entries, ds.count, ds.seed, _source_name(ds))
    if not rotations:
        return [Sample(p, label, origin=origin) for p, label, origin in entries]
    origin = f"{where}.rotations {rotations}"
    return [Sample(p, i, rot, origin) for p, _, _ in entries for i, rot in enumerate(rotations)]


def _source_name(ds: DatasetConfig) -> str:
    return str(ds.labels or ds.paddleclas_root or ds.images)


Entry = tuple[Path, int | None, str]  # image, label, origin ("<labels file>: line N")


def _list_entries(ds: DatasetConfig) -> list[Entry]:
    if ds.paddleclas_root:
        root = _existing_dir(ds.paddleclas_root, "paddleclas_root")
        list_file = Path(ds.labels) if ds.labels else root / "val_list.txt"
        return _read_labels_file(list_file, root)
    images = _existing_dir(ds.images, "images")  # type: ignore[arg-type]
    if ds.labels:
        return _read_labels_file(Path(ds.labels), images)
    return [(p, None, "") for p in _image_files(images)]


def _existing_dir(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: {what} folder does not exist" if not p.exists() else f"{p}: {what} is not a folder")
    return p


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file())


def _read_labels_file(path: Path, base: Path) -> list[Entry]:
    if not path.exists():
        raise InputError(f"{path}: labels file does not exist")
    entries: list[Entry] = []
    with_label: bool | None = None
    for lineno, line in enumerate(read_text(path, "labels", MAX_LIST_BYTES, InputError).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, label = _parse_label_line(line, path, lineno)
        if with_label is None:
            with_label = label is not None
        elif with_label != (label is not None):
            raise InputError(f"{path}: line {lineno}: {shown(line.strip())}: mixes '<file>' and "
                             "'<file> <class_index>' lines")
        entries.append((base / name, label, f"{path}: line {lineno}"))
    _check_unique(entries, path)
    _check_exist(entries, path)
    return entries


def _parse_label_line(line: str, path: Path, lineno: int) -> tuple[str, int | None]:
    parts = line.split()
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2 and re.fullmatch(r"\d{1,9}", parts[1]):
        return parts[0], int(parts[1])
    raise InputError(f"{path}: line {lineno}: {shown(line.strip())}: expected '<file> <class_index>' "
                     "(class_index a non-negative integer)")


def _check_unique(entries: list[Entry], list_file: Path) -> None:
    seen: set[Path] = set()
    dups: list[Path] = []
    for p, _, _ in entries:
        (dups.append if p in seen else seen.add)(p)
    if dups:
        raise InputError(f"{list_file}: {len(dups)} file(s) listed more than once: {_names(dups)}")


def _check_exist(entries: list[Entry], list_file: Path) -> None:
    missing = [p for p, _, _ in entries if not p.is_file()]
    if missing:
        raise InputError(f"{list_file}: {len(missing)} listed image(s) missing, e.g. {_names(missing, full=True)}")


def _names(paths: Iterable[Path], full: bool = False) -> str:
    items = list(paths)
    shown = ", ".join(str(p) if full else p.name for p in items[:_MAX_LISTED])
    return shown + (f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _subset(entries: list[Entry], count: int | None, seed: int, source: str) -> list[Entry]:
    """Deterministic subset: sort, permute with ``seed``, take ``count``, sort again."""
    entries = sorted(entries, key=lambda e: str(e[0]))
    if count is None:
        return entries
    if count > len(entries):
        raise InputError(f"{source}: count {count} is larger than the {len(entries)} images available")
    idx = np.random.default_rng(seed).permutation(len(entries))[:count]
    return [entries[i] for i in sorted(idx.tolist())]


def _check_rotations(rotations: list[int], where: str) -> list[int]:
    bad = [r for r in rotations if r not in _pre.ROTATIONS]
    if bad:
        raise ConfigError(f"{where}.rotations: {bad[0]!r} is not one of {list(_pre.ROTATIONS)}")
    if len(set(rotations)) != len(rotations):
        raise ConfigError(f"{where}.rotations: {rotations} lists a rotation twice")
    return list(rotations)


def check_disjoint(calib: list[Sample], eval: list[Sample]) -> None:
    """Calibration and evaluation must not share a file (any rotation of it counts)."""
    calib_files = {s.path.resolve() for s in calib}
    both = sorted({s.path.resolve() for s in eval} & calib_files)
    if both:
        raise InputError(f"data.calib and data.eval share {len(both)} image file(s): "
                         f"{_names(both, full=True)}; calibration images must not be evaluated")


# ---------------------------------------------------------------- loading

def load_split(data: DataConfig, split: Literal["calib", "eval"], pre: PreprocessConfig,
               cache_dir: Path | None, progress: bool = True) -> Split:
    """Preprocessed arrays of one split; cached under ``cache_dir/data/`` when enabled."""
    return load_samples(_split_samples(data, split), pre, cache_dir if data.cache_preprocessed else None,
                        progress=progress, what=f"data.{split}", split=split,
                        root=_dataset_root(getattr(data, split)))


def load_samples(samples: list[Sample], pre: PreprocessConfig, cache_dir: Path | None, *, progress: bool = True,
                 what: str = "data", split: str | None = None, root: Path | None = None) -> Split:
    """Preprocessed arrays of ``samples`` (e.g. the tune or verdict images of lcpipe.data.roles);
    cached under ``cache_dir/data/`` unless ``cache_dir`` is None (``split`` names them in the
    cache's sidecar file; ``what`` in the progress bar; names in the cache key are relative to
    ``root``, by default the folder all samples share)."""
    samples = list(samples)
    labels = _labels_array(samples)
    key = _cache_key(samples, root or _common_root(samples), pre)
    cache = Path(cache_dir) / "data" if cache_dir is not None else None
    if cache:
        use_entry(cache_dir, "data", key)  # kept from `lcpipe cache prune` while this run uses it
    x = _read_cache(cache, key, len(samples), pre) if cache else None
    if x is None:
        x = _decode_all(samples, pre, progress, f"preprocessing {what}")
        if cache:
            _write_cache(cache, key, x, samples, pre, split or what)
    return Split(x=x, labels=labels, samples=samples)


def _split_samples(data: DataConfig, split: str) -> list[Sample]:
    if split not in ("calib", "eval"):
        raise ValueError(f"split must be 'calib' or 'eval', got {split!r}")
    ds = getattr(data, split)
    if ds is None:
        raise ConfigError(f"data.{split}: not configured (this pipeline needs a {split} dataset)")
    samples = list_samples(ds, f"data.{split}")
    other = "eval" if split == "calib" else "calib"
    other_ds = getattr(data, other)
    if other_ds is not None and not data.allow_calibration_overlap:  # by content: lcpipe.data.roles
        other_samples = list_samples(other_ds, f"data.{other}")
        calib, ev = (samples, other_samples) if split == "calib" else (other_samples, samples)
        check_disjoint(calib, ev)
    return samples


def _labels_array(samples: list[Sample]) -> np.ndarray | None:
    if any(s.label is None for s in samples):
        return None
    return np.asarray([s.label for s in samples], dtype=np.int64)


def _decode_all(samples: list[Sample], pre: PreprocessConfig, progress: bool, title: str) -> np.ndarray:
    h, w = pre.input_hw
    x = np.empty((len(samples), 3, h, w), dtype=np.float32)

    def one(i: int) -> int:
        s = samples[i]
        x[i] = _pre.load_image(s.path, pre, s.rotate)  # module lookup so tests can patch it
        return i

    # cv2 releases the GIL while decoding/resizing, so threads give a real speed-up.
    workers = max(1, min(8, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(workers)
    try:
        with show_progress(title, len(samples), progress) as advance:
            for _ in pool.map(one, range(len(samples))):
                advance()
    finally:  # on Ctrl-C / an unreadable image: drop the queued images instead of decoding them all first
        pool.shutdown(wait=True, cancel_futures=True)
    return x


# ---------------------------------------------------------------- cache + fingerprint

def _dataset_root(ds: DatasetConfig) -> Path:
    return Path(ds.paddleclas_root or ds.images or ".")


def _common_root(samples: list[Sample]) -> Path:
    """The folder every sample is under (names in cache keys are relative to it: no absolute path)."""
    return Path(os.path.commonpath([str(Path(s.path).parent) for s in samples])) if samples else Path(".")


def _samples_desc(samples: list[Sample], root: Path) -> list[Any]:
    """What decides the arrays: each image's bytes (sha256, read once per run), its name under the
    dataset folder and its rotation. No absolute path, size or mtime: the same files give the same
    keys on every machine and in every folder, and any change of content gives new ones."""
    return [[os.path.relpath(s.path, root), content_sha256(s.path), s.rotate] for s in samples]


def _cache_key(samples: list[Sample], root: Path, pre: PreprocessConfig) -> str:
    return sha256_json({"format": CACHE_FORMAT, "preprocess": _pre.preprocess_dict(pre),
                        "samples": _samples_desc(samples, root)})


def _read_cache(cache: Path, key: str, n: int, pre: PreprocessConfig) -> np.ndarray | None:
    """The cached array, or None (missing, from an interrupted write, or corrupted: then it is
    deleted with a warning and rebuilt). The sidecar .json records the .npy's sha256."""
    path, meta_file = cache / f"{key}.npy", cache / f"{key}.json"
    if not path.is_file():
        return None
    try:
        recorded = json.loads(meta_file.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None  # no sidecar: a write was interrupted (or an older lcpipe wrote it)
    if recorded is None:
        return None
    if sha256_file(path) != recorded:
        _log.warning("%s: preprocessed data does not match the sha256 recorded in %s; deleted, recomputing",
                     path, meta_file.name)
        path.unlink(missing_ok=True)
        return None
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # foreign file with a matching record: rebuild it
    if x.dtype != np.float32 or x.shape != (n, 3, *pre.input_hw):
        return None
    return x


def _write_cache(cache: Path, key: str, x: np.ndarray, samples: list[Sample],
                 pre: PreprocessConfig, split: str) -> None:
    # A file object keeps np.save from appending ".npy" to the temp name.
    with atomic_path(cache / f"{key}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, x, allow_pickle=False)
        digest = sha256_file(tmp)
    write_json(cache / f"{key}.json", {
        "format": CACHE_FORMAT, "split": split, "shape": list(x.shape), "preprocess": _pre.preprocess_dict(pre),
        "count": len(samples), "first": str(samples[0].path) if samples else None, "sha256": digest,
    })


def samples_fingerprint(samples: Iterable[Sample], pre: PreprocessConfig) -> str:
    """Stable hash of what ``load_samples`` would read (file contents and names under the samples'
    common folder, labels, rotations, preprocessing): a cache-key part for a stage that reads them."""
    samples = list(samples)
    desc = [[*d, s.label] for d, s in zip(_samples_desc(samples, _common_root(samples)), samples, strict=True)]
    return sha256_json({"format": CACHE_FORMAT, "preprocess": _pre.preprocess_dict(pre), "samples": desc})


def fingerprint(data: DataConfig, pre: PreprocessConfig, split: str | None = None) -> str:
    """Stable hash of what ``load_split`` would read (file contents and names, labels, preprocessing).

    ``split`` None covers every configured split plus the label-names file.
    """
    splits = [split] if split else [s for s in ("calib", "eval") if getattr(data, s) is not None]
    desc: dict[str, Any] = {"format": CACHE_FORMAT, "preprocess": _pre.preprocess_dict(pre)}
    for name in splits:
        samples = _split_samples(data, name)
        root = _dataset_root(getattr(data, name))
        desc[name] = [[*d, s.label] for d, s in zip(_samples_desc(samples, root), samples, strict=True)]
    if split is None and data.label_names:
        p = Path(data.label_names)
        desc["label_names"] = content_sha256(p) if p.is_file() else p.name
    return sha256_json(desc)


def load_label_names(path: str | Path) -> list[str]:
    """Class names from ``<index> <name>`` lines (PaddleClas label list) or one name per line.

    When every line starts with a number those are class indices: they must be 0..N-1, each once
    (a gap, a repeat or an index past the end is an error naming the line)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: label names file does not exist")
    text = read_text(path, "label names", MAX_LIST_BYTES, InputError)
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        raise InputError(f"{path}: label names file is empty")
    indexed = [re.fullmatch(r"(\d{1,9})\s+(.+)", ln) for _, ln in lines]
    if not all(indexed):
        return [ln for _, ln in lines]
    seen: dict[int, int] = {}
    for (lineno, _), m in zip(lines, indexed, strict=True):
        index = int(m[1])  # type: ignore[index]
        if index >= len(lines):
            raise InputError(f"{path}: line {lineno}: class index {index} is outside 0..{len(lines) - 1} "
                             f"({len(lines)} names)")
        if index in seen:
            raise InputError(f"{path}: line {lineno}: class index {index} already named on line {seen[index]}")
        seen[index] = lineno
    by_index = {int(m[1]): m[2].strip() for m in indexed if m}
    return [by_index[i] for i in range(len(lines))]
