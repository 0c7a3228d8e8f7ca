"""Which images play which part in a run: calibration, tune (what selecting steps look at) and verdict.

Selecting steps (the plan stage's fidelity checks, accuracy control, ``lcpipe sensitivity``) choose by
looking at images; the verdict must score images none of them saw, or it reports how well the choice
fits its own images. So:

* ``data.tune`` given: selecting steps look at it, the verdict is all of ``data.eval``;
* else, when the pipeline has a selecting step (or ``data.split`` is given): ``data.eval`` is split by
  content (lcpipe.data.split) into tune and verdict images;
* else: no tune images, the verdict is all of ``data.eval``.

Calibration images are compared with the verdict images by content (sha256 of the bytes, whatever
the file names): an overlap is an InputError (exit 2) naming the files, unless
``data.allow_calibration_overlap`` opts in; then the overlap is recorded and the report says so. Tune
images that are also verdict images (an explicit ``data.tune`` sharing files with ``data.eval``) are
always refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lcpipe.data.dataset import Sample, list_samples, samples_fingerprint
from lcpipe.data.split import (
    DEFAULT_SEED,
    DEFAULT_TUNE_FRACTION,
    Overlap,
    TuneVerdictSplit,
    overlap,
    split_tune_verdict,
)
from lcpipe.errors import InputError
from lcpipe.fileio import sha256_file, sha256_json
from lcpipe.render.summary import data_line

if TYPE_CHECKING:
    from lcpipe.config import PipelineConfig, PreprocessConfig

TuneSource = Literal["data.tune", "data.eval split"]
_MAX_NAMED = 5
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: one read per file per process


@dataclass(frozen=True)
class DataRoles:
    calib: tuple[Sample, ...]
    tune: tuple[Sample, ...]  # what selecting steps look at (empty: no tune images)
    verdict: tuple[Sample, ...]  # what validate scores
    tune_from: TuneSource | None
    split: TuneVerdictSplit | None  # when data.eval was split
    selecting: tuple[str, ...]  # the pipeline's selecting stages
    overlap: tuple[Overlap, ...]  # calibration files that are verdict images (only with the opt-in)

    def record(self) -> dict[str, Any]:
        """metrics.json's ``data`` section (validate records it, report copies it)."""
        split = self.split
        out: dict[str, Any] = {
            "calib_images": len(self.calib), "tune_images": len(self.tune), "verdict_images": len(self.verdict),
            "overlap": len(self.overlap), "tune_from": self.tune_from, "selecting": list(self.selecting),
            "split": None if split is None else {"tune_fraction": split.tune_fraction, "seed": split.seed,
                                                 "stratified": split.stratified},
            "overlap_files": [f"{o.second.name} = {o.first.name} ({o.sha256[:12]})" for o in self.overlap],
        }
        return {**out, "description": data_line(out)}

    def describe(self) -> str:
        """What the verdict rests on, in one line (the terminal, report.md and report.html)."""
        return self.record()["description"]

    def fingerprint(self, part: Literal["tune", "verdict"], pre: PreprocessConfig) -> str:
        """Cache-key part of a stage reading the tune or verdict images: the files and the split."""
        samples = self.tune if part == "tune" else self.verdict
        return sha256_json({"samples": samples_fingerprint(samples, pre), "roles": self.record()})


def resolve_roles(config: PipelineConfig, *, tune_needed: bool = False) -> DataRoles:
    """The images of each role for ``config``; ``tune_needed``: a selecting command that is not a stage
    (``lcpipe sensitivity``) wants tune images even when the pipeline has no selecting step."""
    data = config.data
    selecting = tuple(config.selecting_steps())
    calib = tuple(list_samples(data.calib, "data.calib")) if data.calib is not None else ()
    evals = tuple(list_samples(data.eval, "data.eval")) if data.eval is not None else ()
    split: TuneVerdictSplit | None = None
    tune_from: TuneSource | None = None
    tune: tuple[Sample, ...] = ()
    verdict = evals
    if data.tune is not None:
        tune, tune_from = tuple(list_samples(data.tune, "data.tune")), "data.tune"
    elif evals and (selecting or tune_needed or data.split is not None):
        fraction = data.split.tune_fraction if data.split else DEFAULT_TUNE_FRACTION
        seed = data.split.seed if data.split else DEFAULT_SEED
        split = split_tune_verdict(evals, tune_fraction=fraction, seed=seed, hashes=hashes_of(evals))
        tune, verdict, tune_from = split.tune, split.verdict, "data.eval split"
    if tune_from == "data.tune" and verdict:
        shared = overlap(_paths(tune), _paths(verdict), hashes_of(tune + verdict))
        if shared:
            raise InputError(f"data.tune and data.eval share {len(shared)} image(s) by content: {_named(shared)}; "
                             "the verdict must not score images a selecting step chose on")
    found = overlap(_paths(calib), _paths(verdict), hashes_of(calib + verdict)) if calib and verdict else []
    if found and not data.allow_calibration_overlap:
        raise InputError(f"data.calib and the verdict images (data.eval) share {len(found)} image(s) by content: "
                         f"{_named(found)}; calibration images must not give the verdict (set "
                         "data.allow_calibration_overlap: true to accept it, and the report will say so)")
    return DataRoles(calib=calib, tune=tune, verdict=verdict, tune_from=tune_from, split=split,
                     selecting=selecting, overlap=tuple(found))


def hashes_of(samples: tuple[Sample, ...] | list[Sample]) -> dict[Path, str]:
    """sha256 of each sample's file, read once per process while its size and mtime stay the same."""
    out: dict[Path, str] = {}
    for p in dict.fromkeys(s.path for s in samples):
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _HASHES:
            _HASHES[key] = sha256_file(p)
        out[p] = _HASHES[key]
    return out


def _paths(samples: tuple[Sample, ...]) -> list[Path]:
    return list(dict.fromkeys(s.path for s in samples))


def _named(found: list[Overlap]) -> str:
    shown = ", ".join(f"{o.second}" + ("" if o.first.name == o.second.name else f" (= {o.first.name})")
                      for o in found[:_MAX_NAMED])
    return shown + (f" (+{len(found) - _MAX_NAMED} more)" if len(found) > _MAX_NAMED else "")
