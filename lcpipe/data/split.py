"""Tune / verdict split of an evaluation set, and image overlap by content (not by file name).

Selecting steps (plan fidelity checks, accuracy control, sensitivity) tune on one part of
``data.eval``; the verdict is computed on the rest, images no selection saw.

The split is a pure function of the images' *contents*, labels, ``seed`` and ``tune_fraction``:
not of file names, folders, listing order or the machine, so every run and every CI runner gets
the same two sets. Samples whose files have the same sha256 form one group that goes to one side
together: the rotations of one file (``rotations: [0, 180]`` lists each file twice), and
byte-identical copies under other names. Otherwise the verdict would score a rotated copy of a
tuning image.

Groups are stratified by label (each group's sorted set of labels, so a rotation group is one
stratum): every stratum gives about ``tune_fraction`` of its groups to tune. Unlabeled samples get a
plain seeded split. Within a stratum, groups are ranked by sha256(seed, content hash), a keyed
shuffle that needs no random generator (numpy does not promise the same stream across versions).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lcpipe.data.dataset import Sample
from lcpipe.errors import InputError
from lcpipe.fileio import content_sha256

# A third of the evaluation images tune, two thirds give the verdict: the verdict's interval width
# goes with 1/sqrt(images), and a selection that overfits a small tune set is caught by the
# verdict anyway (docs/verdicts.md has the numbers).
DEFAULT_TUNE_FRACTION = 0.3
DEFAULT_SEED = 0

Stratum = tuple[int, ...] | None


@dataclass(frozen=True)
class TuneVerdictSplit:
    tune: tuple[Sample, ...]  # in the order of the input samples
    verdict: tuple[Sample, ...]
    tune_sources: int  # distinct image contents on each side (a file and its rotations count once)
    verdict_sources: int
    tune_fraction: float
    seed: int
    stratified: bool  # False for unlabeled samples

    def describe(self, where: str = "data.eval") -> str:
        """One line for the terminal and the report."""
        how = "stratified by label" if self.stratified else "unlabeled, not stratified"
        return (f"{where} split by content into {len(self.tune)} tune / {len(self.verdict)} verdict images "
                f"({self.tune_sources} / {self.verdict_sources} distinct source images; tune_fraction "
                f"{self.tune_fraction}, seed {self.seed}, {how})")


def content_hashes(paths: Iterable[Path]) -> dict[Path, str]:
    """sha256 of each distinct file's bytes, keyed by the path as given (within a run each file is read
    once: the data fingerprints hash the same images, lcpipe.fileio.content_sha256)."""
    return {p: content_sha256(p) for p in dict.fromkeys(Path(p) for p in paths)}


def split_tune_verdict(samples: Sequence[Sample], *, tune_fraction: float = DEFAULT_TUNE_FRACTION,
                       seed: int = DEFAULT_SEED, hashes: Mapping[Path, str] | None = None,
                       where: str = "data.eval") -> TuneVerdictSplit:
    """Split ``samples`` (from ``list_samples``) into tune and verdict sets.

    Both sets are non-empty whenever there are at least two distinct source images; with one there
    is nothing to split and InputError names ``where``. ``hashes`` (from ``content_hashes``) saves
    reading the files again.
    """
    if not 0.0 < tune_fraction < 1.0:
        raise ValueError(f"tune_fraction must be between 0 and 1 (exclusive), got {tune_fraction}")
    hashes = hashes if hashes is not None else content_hashes(s.path for s in samples)
    labels_of: dict[str, set[int | None]] = defaultdict(set)
    for s in samples:
        labels_of[hashes[s.path]].add(s.label)
    if len(labels_of) < 2:
        raise InputError(f"{where}: {len(samples)} image(s) from {len(labels_of)} distinct file(s) cannot be split "
                         "into tune and verdict sets (need at least 2 distinct images)")
    stratified = all(None not in labels for labels in labels_of.values())
    strata: dict[Stratum, list[str]] = defaultdict(list)
    for digest, labels in labels_of.items():
        strata[tuple(sorted(labels)) if stratified else None].append(digest)  # type: ignore[type-var]
    tune_digests: set[str] = set()
    for stratum, count in _allocate(strata, tune_fraction, seed).items():
        ranked = sorted(strata[stratum], key=lambda digest: _keyed(seed, digest))
        tune_digests.update(ranked[:count])
    tune = tuple(s for s in samples if hashes[s.path] in tune_digests)
    verdict = tuple(s for s in samples if hashes[s.path] not in tune_digests)
    return TuneVerdictSplit(tune=tune, verdict=verdict, tune_sources=len(tune_digests),
                            verdict_sources=len(labels_of) - len(tune_digests), tune_fraction=tune_fraction,
                            seed=seed, stratified=stratified)


def _keyed(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()


def _allocate(strata: Mapping[Stratum, list[str]], fraction: float, seed: int) -> dict[Stratum, int]:
    """Tune groups per stratum: round(fraction * groups) in total (at least 1, at most all but 1),
    shared by largest remainder; ties broken by a keyed hash of the stratum, not dict order."""
    total_groups = sum(len(g) for g in strata.values())
    total = min(max(math.floor(fraction * total_groups + 0.5), 1), total_groups - 1)
    quota = {k: fraction * len(g) for k, g in strata.items()}
    counts = {k: math.floor(q) for k, q in quota.items()}
    by_remainder = sorted(strata, key=lambda k: (-(quota[k] - counts[k]), _keyed(seed, repr(k))))
    for k in by_remainder[:total - sum(counts.values())]:
        counts[k] += 1
    return counts


class Overlap(NamedTuple):
    first: Path  # a file of the first collection (e.g. calibration)
    second: Path  # a file of the second (e.g. verdict) with the same bytes
    sha256: str


def overlap(first: Iterable[Path], second: Iterable[Path],
            hashes: Mapping[Path, str] | None = None) -> list[Overlap]:
    """Files of ``second`` whose bytes also occur in ``first``, whatever their names: one entry per
    such file of ``second`` (paired with the first-sorted file of ``first`` with those bytes), sorted
    by path. ``overlap(calib_paths, verdict_paths)`` empty means no verdict image was calibrated on."""
    first, second = list(dict.fromkeys(map(Path, first))), list(dict.fromkeys(map(Path, second)))
    known = dict(hashes) if hashes is not None else {}
    known.update(content_hashes(p for p in first + second if p not in known))
    by_digest: dict[str, Path] = {}
    for p in sorted(first, key=str):
        by_digest.setdefault(known[p], p)
    return [Overlap(by_digest[known[p]], p, known[p]) for p in sorted(second, key=str) if known[p] in by_digest]
