"""Tune / verdict split: by content, stratified, rotations and copies kept together, the same on every
machine; overlap found by content, not by file name."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from lcpipe.config import DatasetConfig
from lcpipe.data import Sample, list_samples
from lcpipe.data.split import (
    DEFAULT_TUNE_FRACTION,
    content_hashes,
    overlap,
    split_tune_verdict,
)
from lcpipe.errors import InputError

TEXT_LINES = Path(__file__).resolve().parents[1] / "lcpipe" / "examples" / "textline_ori_int8" / "text_lines"


def _images(folder: Path, count: int, prefix: str = "img") -> list[Path]:
    """Files with distinct bytes (the split only reads bytes, so they need not decode)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"{prefix}_{i:03d}.jpg"
        p.write_bytes(f"{prefix} content {i}".encode())
        paths.append(p)
    return paths


def _labeled(paths: list[Path], classes: int) -> list[Sample]:
    return [Sample(p, i % classes) for i, p in enumerate(paths)]


def _key(samples, hashes) -> list[tuple[str, int | None, int]]:
    """A machine-independent description of a side: (content hash, label, rotation)."""
    return sorted((hashes[s.path], s.label, s.rotate) for s in samples)


def test_split_is_stratified_by_label_and_takes_the_tune_fraction(tmp_path: Path) -> None:
    samples = _labeled(_images(tmp_path, 40), classes=4)  # 10 images per class
    split = split_tune_verdict(samples, tune_fraction=0.3)
    assert Counter(s.label for s in split.tune) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert Counter(s.label for s in split.verdict) == {0: 7, 1: 7, 2: 7, 3: 7}
    assert split.stratified and (split.tune_sources, split.verdict_sources) == (12, 28)
    assert set(split.tune).isdisjoint(split.verdict) and len(split.tune) + len(split.verdict) == 40
    assert [s for s in samples if s in split.tune] == list(split.tune)  # input order kept


def test_uneven_classes_share_the_tune_images_by_largest_remainder(tmp_path: Path) -> None:
    paths = _images(tmp_path, 20)
    samples = [Sample(p, 0 if i < 13 else 1) for i, p in enumerate(paths)]  # 13 + 7 images
    split = split_tune_verdict(samples, tune_fraction=0.3)
    assert len(split.tune) == 6  # round(0.3 * 20)
    assert Counter(s.label for s in split.tune) == {0: 4, 1: 2}  # quotas 3.9 and 2.1


def test_rotations_of_one_file_stay_on_one_side(tmp_path: Path) -> None:
    """As list_samples lists data with rotations: each file once per rotation, label = rotation index."""
    paths = _images(tmp_path, 41)
    samples = [Sample(p, i, rot) for p in paths for i, rot in enumerate((0, 90, 180, 270))]  # 164, like the docs set
    split = split_tune_verdict(samples)
    tune_files, verdict_files = {s.path for s in split.tune}, {s.path for s in split.verdict}
    assert tune_files.isdisjoint(verdict_files)
    assert len(split.tune) == 4 * len(tune_files) and len(split.verdict) == 4 * len(verdict_files)
    assert (split.tune_sources, split.verdict_sources) == (12, 29)  # round(0.3 * 41) source images tune


def test_byte_identical_copies_under_other_names_stay_on_one_side(tmp_path: Path) -> None:
    paths = _images(tmp_path / "a", 10)
    copies = [shutil.copyfile(paths[i], tmp_path / "a" / f"copy_of_{i}.png") for i in range(10)]
    samples = [Sample(Path(p), 0) for p in paths + copies]
    split = split_tune_verdict(samples, tune_fraction=0.5)
    tune_names = {s.path.name for s in split.tune}
    for i in range(10):
        assert (paths[i].name in tune_names) == (f"copy_of_{i}.png" in tune_names)
    assert split.tune_sources == 5 and len(split.tune) == 10


def test_split_depends_on_contents_not_on_names_folders_or_order(tmp_path: Path) -> None:
    """Another checkout (other root, other file names, other listing order) gets the same split."""
    samples = _labeled(_images(tmp_path / "here", 30), classes=3)
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    moved = [Sample(Path(shutil.copyfile(s.path, tmp_path / "elsewhere" / "deeper" / f"renamed_{29 - i}.png")),
                    s.label) for i, s in enumerate(samples)]
    random.Random(1).shuffle(moved)
    a, b = split_tune_verdict(samples, seed=3), split_tune_verdict(moved, seed=3)
    ha, hb = content_hashes(s.path for s in samples), content_hashes(s.path for s in moved)
    assert _key(a.tune, ha) == _key(b.tune, hb) and _key(a.verdict, ha) == _key(b.verdict, hb)


def test_split_of_fixed_contents_never_changes(tmp_path: Path) -> None:
    """Pinned membership: this changes only if the split rule does (then every pipeline's verdict set
    changes too, so it must be deliberate and said in the release notes)."""
    samples = _labeled(_images(tmp_path, 12), classes=2)
    split = split_tune_verdict(samples, tune_fraction=0.3, seed=0)
    assert sorted(s.path.name for s in split.tune) == ["img_000.jpg", "img_001.jpg", "img_005.jpg", "img_008.jpg"]


def test_the_seed_chooses_another_tune_set(tmp_path: Path) -> None:
    samples = _labeled(_images(tmp_path, 30), classes=3)
    sets = {frozenset(s.path for s in split_tune_verdict(samples, seed=seed).tune) for seed in range(3)}
    assert len(sets) == 3


def test_unlabeled_samples_get_a_plain_seeded_split(tmp_path: Path) -> None:
    samples = [Sample(p, None) for p in _images(tmp_path, 10)]
    split = split_tune_verdict(samples)
    assert not split.stratified and (len(split.tune), len(split.verdict)) == (3, 7)
    assert "unlabeled" in split.describe()


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_two_images_always_give_both_sets_one(tmp_path: Path, fraction: float) -> None:
    split = split_tune_verdict(_labeled(_images(tmp_path, 2), classes=2), tune_fraction=fraction)
    assert (len(split.tune), len(split.verdict)) == (1, 1)


def test_too_few_or_bad_settings_are_refused(tmp_path: Path) -> None:
    one = _images(tmp_path, 1)
    with pytest.raises(InputError, match=r"data\.eval: 2 image\(s\) from 1 distinct file"):
        split_tune_verdict([Sample(one[0], 0, 0), Sample(one[0], 1, 180)])
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match="tune_fraction"):
            split_tune_verdict(_labeled(_images(tmp_path, 4), 2), tune_fraction=fraction)


def test_embedded_default_eval_set_splits_by_line_crop() -> None:
    """The shipped 39 text-line crops x {0, 180} = 78 evaluation images."""
    ds = DatasetConfig(images=str(TEXT_LINES / "lines"), labels=str(TEXT_LINES / "eval.txt"), rotations=[0, 180])
    samples = list_samples(ds)
    split = split_tune_verdict(samples)
    assert (len(split.tune), len(split.verdict), split.tune_sources, split.verdict_sources) == (24, 54, 12, 27)
    assert {s.path for s in split.tune}.isdisjoint({s.path for s in split.verdict})
    assert Counter(s.rotate for s in split.verdict) == {0: 27, 180: 27}
    assert split.tune_fraction == DEFAULT_TUNE_FRACTION
    assert split.describe() == ("data.eval split by content into 24 tune / 54 verdict images (12 / 27 distinct "
                                "source images; tune_fraction 0.3, seed 0, stratified by label)")


# ---------------------------------------------------------------- overlap by content

def test_overlap_finds_the_same_image_under_another_name(tmp_path: Path) -> None:
    calib = _images(tmp_path / "calib", 5, prefix="cal")
    verdict = _images(tmp_path / "eval", 3, prefix="val")
    (tmp_path / "eval" / "renamed.png").write_bytes(calib[2].read_bytes())
    verdict.append(tmp_path / "eval" / "renamed.png")
    found = overlap(calib, verdict + verdict)  # duplicates (rotations) count once
    assert [(o.first.name, o.second.name) for o in found] == [("cal_002.jpg", "renamed.png")]
    assert found[0].sha256 == content_hashes([calib[2]])[calib[2]]
    # byte-identical content under the same names in both lists: found too, not just same-name files
    assert len(overlap(calib[:3], calib[2:])) == 1


def test_overlap_of_distinct_images_is_empty_even_with_the_same_names(tmp_path: Path) -> None:
    a = _images(tmp_path / "a", 4)
    b = tmp_path / "b"
    b.mkdir()
    for p in a:  # same file names, other bytes
        (b / p.name).write_bytes(p.read_bytes() + b" (another picture)")
    assert overlap(a, sorted(b.iterdir())) == []


def test_shipped_calibration_and_evaluation_lines_share_no_image() -> None:
    def paths(labels: str) -> list[Path]:
        ds = DatasetConfig(images=str(TEXT_LINES / "lines"), labels=str(TEXT_LINES / labels), rotations=[0, 180])
        return [s.path for s in list_samples(ds)]

    calib, ev = paths("calib.txt"), paths("eval.txt")
    hashes = content_hashes(calib + ev)
    assert len(set(hashes.values())) == 59  # 20 + 39 distinct pictures
    assert overlap(calib, ev, hashes=hashes) == []
