"""Data layer: preprocessing equals the reference operators; listing, subsets, checks and the cache."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from lcpipe.config import DataConfig, DatasetConfig, PreprocessConfig
from lcpipe.data import (
    Sample,
    check_disjoint,
    fingerprint,
    list_samples,
    load_image,
    load_label_names,
    load_split,
    preprocess_dict,
)
from lcpipe.data import preprocess as pre_mod
from lcpipe.data.preprocess import decode_image
from lcpipe.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = ROOT / "calib_data" / "imagenet"
TEXT_LINES = ROOT / "lcpipe" / "examples" / "textline_ori_int8" / "text_lines"  # package data of the example
LINES = TEXT_LINES / "lines"

# Square ImageNet JPEGs plus non-square line crops (exercise rounding / crop offsets / RGBA PNG).
IMAGENET_FILES = ["ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00011811.JPEG", "ILSVRC2012_val_00048552.JPEG"]
LINE_FILES = [
    "rapidocr_latin.jpg",  # 1672x122, very wide
    "paddleocr_words_en_word_545_icdar.png",  # 103x128, taller than wide
    "paddleclas_pulc_textline_orientation_test_0_0.png",  # RGBA
    "paddleocr_words_ch_word_2.jpg",  # 323x25
]
REF_IMAGES = [IMAGENET / "images" / f for f in IMAGENET_FILES] + [LINES / f for f in LINE_FILES]


def _paddleclas_ops():
    pytest.importorskip("paddleclas")
    try:  # PaddleClas source checkout
        from paddleclas.ppcls.data.preprocess.ops import operators as ops
    except ImportError:  # the pip wheel ships the same eval operators for deployment here
        from paddleclas.deploy.python import preprocess as ops
    return ops


def _run(ops: list, data: object) -> np.ndarray:
    for op in ops:
        data = op(data)
    return np.asarray(data)


# ---------------------------------------------------------------- preprocessing vs references

@pytest.mark.paddleclas
@pytest.mark.parametrize("interp", [None, "bicubic"])
@pytest.mark.parametrize("path", REF_IMAGES, ids=lambda p: p.name)
def test_paddleclas_mode_matches_paddleclas_ops(path: Path, interp: str | None) -> None:
    ops = _paddleclas_ops()
    cfg = PreprocessConfig(mode="paddleclas", interpolation=interp)
    ref = _run([
        ops.DecodeImage(to_rgb=True, channel_first=False),
        ops.ResizeImage(resize_short=256, interpolation=interp),
        ops.CropImage(size=224),
        ops.NormalizeImage(scale=1.0 / 255.0, mean=list(cfg.mean), std=list(cfg.std), order=""),
        ops.ToCHWImage(),
    ], path.read_bytes())
    got = load_image(path, cfg)
    assert got.dtype == np.float32 and got.shape == ref.shape == (3, 224, 224)
    assert np.abs(got - ref).max() <= 1e-6


@pytest.mark.paddleclas
@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
@pytest.mark.parametrize("path", REF_IMAGES[2:], ids=lambda p: p.name)
def test_resize_mode_matches_paddleclas_resize_size(path: Path, rotate: int) -> None:
    ops = _paddleclas_ops()
    cfg = PreprocessConfig(mode="resize", size=(80, 160))  # [h, w] -> PaddleX ResizeImage(size=[160, 80])
    decoded = ops.DecodeImage(to_rgb=True, channel_first=False)(path.read_bytes())
    ref = _run([
        ops.ResizeImage(size=[160, 80]),
        ops.NormalizeImage(scale=0.00392156862745098, mean=list(cfg.mean), std=list(cfg.std), order=""),
        ops.ToCHWImage(),
    ], np.ascontiguousarray(np.rot90(decoded, k=rotate // 90)))
    got = load_image(path, cfg, rotate=rotate)
    assert got.shape == ref.shape == (3, 80, 160)
    assert np.abs(got - ref).max() <= 1e-6


@pytest.mark.torch
@pytest.mark.parametrize("path", REF_IMAGES[:2] + REF_IMAGES[3:5], ids=lambda p: p.name)
def test_timm_mode_close_to_timm_eval_transform(path: Path) -> None:
    timm_data = pytest.importorskip("timm.data")
    from PIL import Image

    cfg = PreprocessConfig(mode="timm")
    tf = timm_data.create_transform(input_size=224, crop_pct=0.875, interpolation="bicubic",
                                    mean=cfg.mean, std=cfg.std)
    ref = tf(Image.open(path).convert("RGB")).numpy()
    got = load_image(path, cfg)
    assert got.shape == ref.shape == (3, 224, 224)
    # timm resizes with PIL (antialiased) bicubic, we with cv2 INTER_CUBIC: same geometry, small noise.
    assert np.abs(got - ref).mean() < 0.05


def test_timm_equals_paddleclas_bicubic_on_square_image() -> None:
    # 227x227 -> 256x256 both ways, and both crop offsets are 16: the outputs must be identical.
    path = REF_IMAGES[0]
    timm = load_image(path, PreprocessConfig(mode="timm"))
    paddle = load_image(path, PreprocessConfig(mode="paddleclas", interpolation="bicubic"))
    assert np.array_equal(timm, paddle)


def test_rotation_is_counter_clockwise_and_before_resize() -> None:
    path = LINES / "rapidocr_en_rec.jpg"  # 700x30
    cfg = PreprocessConfig(mode="resize", size=(80, 160))
    img = decode_image(path)
    turned = load_image(path, cfg, rotate=90)
    expected = pre_mod.preprocess_array(np.ascontiguousarray(np.rot90(img)), cfg)
    assert np.array_equal(turned, expected)
    # CCW: the image's right edge (last column) becomes its top row.
    assert np.array_equal(np.rot90(img)[0], img[:, -1])
    with pytest.raises(ValueError, match="rotate"):
        load_image(path, cfg, rotate=45)


def test_corrupt_and_empty_images_raise_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 4)
    with pytest.raises(InputError, match="broken.jpg"):
        load_image(bad, PreprocessConfig())
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.png"):
        load_image(empty, PreprocessConfig())


def test_pil_fallback_when_cv2_cannot_decode(monkeypatch) -> None:
    import cv2

    path = LINES / "rapidocr_cyrillic.png"  # RGBA PNG: lossless, so both decoders agree exactly
    expected = load_image(path, PreprocessConfig())
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    assert np.array_equal(load_image(path, PreprocessConfig()), expected)


def test_preprocess_dict_is_json_and_complete() -> None:
    d = preprocess_dict(PreprocessConfig(mode="resize", size=(80, 160)))
    assert json.loads(json.dumps(d)) == d
    assert d["input_hw"] == [80, 160] and d["layout"] == "NCHW" and d["color"] == "RGB"
    assert d["interpolation"] == "bilinear"
    t = preprocess_dict(PreprocessConfig(mode="timm"))
    assert t["resize_short"] == 256 and t["interpolation"] == "bicubic" and t["input_hw"] == [224, 224]


# ---------------------------------------------------------------- listing

def _tiny_folder(tmp_path: Path, n: int = 6) -> Path:
    """n real JPEGs copied under short names a0.jpg .. a5.jpg."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = sorted((IMAGENET / "images").iterdir())[:n]
    for i, f in enumerate(src):
        shutil.copy(f, folder / f"a{i}.jpg")
    return folder


def _labels(tmp_path: Path, name: str, lines: list[str]) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_labels_file_and_subset_is_deterministic() -> None:
    ds = DatasetConfig(images=str(IMAGENET / "images"), labels=str(IMAGENET / "val.txt"), count=50, seed=3)
    a, b = list_samples(ds), list_samples(ds)
    assert a == b and len(a) == 50
    assert [s.path.name for s in a] == sorted(s.path.name for s in a)
    # the documented rule: sort, permute with seed, take count, sort again
    everything = list_samples(DatasetConfig(images=str(IMAGENET / "images"), labels=str(IMAGENET / "val.txt")))
    idx = sorted(np.random.default_rng(3).permutation(len(everything))[:50].tolist())
    assert a == [everything[i] for i in idx]
    other = list_samples(ds.model_copy(update={"seed": 4}))
    assert [s.path for s in other] != [s.path for s in a]
    assert all(isinstance(s.label, int) for s in a)


def test_rotations_make_one_sample_per_angle_with_index_labels(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path, 3)
    names = _labels(tmp_path, "list.txt", ["a2.jpg", "a0.jpg"])  # file names only
    samples = list_samples(DatasetConfig(images=str(folder), labels=str(names), rotations=[0, 180]))
    assert [(s.path.name, s.label, s.rotate) for s in samples] == [
        ("a0.jpg", 0, 0), ("a0.jpg", 1, 180), ("a2.jpg", 0, 0), ("a2.jpg", 1, 180)]
    with pytest.raises(ConfigError, match=r"data\.rotations"):
        list_samples(DatasetConfig(images=str(folder), rotations=[0, 45]))


def test_unlabeled_folder_and_paddleclas_root(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path, 3)
    (folder / "notes.txt").write_text("not an image")
    samples = list_samples(DatasetConfig(images=str(folder)))
    assert [s.path.name for s in samples] == ["a0.jpg", "a1.jpg", "a2.jpg"]
    assert all(s.label is None for s in samples)

    root = tmp_path / "ILSVRC"
    shutil.copytree(folder, root / "val")
    (root / "val_list.txt").write_text("val/a1.jpg 65\nval/a0.jpg 0\n")
    samples = list_samples(DatasetConfig(paddleclas_root=str(root)))
    assert [(s.path, s.label) for s in samples] == [(root / "val/a0.jpg", 0), (root / "val/a1.jpg", 65)]


def test_listing_errors_name_the_problem(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path, 2)
    with pytest.raises(InputError, match="nowhere.*does not exist"):
        list_samples(DatasetConfig(images=str(tmp_path / "nowhere")))
    with pytest.raises(InputError, match="labels file does not exist"):
        list_samples(DatasetConfig(images=str(folder), labels=str(tmp_path / "nolabels.txt")))
    missing = _labels(tmp_path, "missing.txt", ["a0.jpg 1", "gone.jpg 2"])
    with pytest.raises(InputError, match=r"missing\.txt.*gone\.jpg"):
        list_samples(DatasetConfig(images=str(folder), labels=str(missing)))
    bad = _labels(tmp_path, "bad.txt", ["a0.jpg 1", "", "a1.jpg cat"])
    with pytest.raises(InputError, match=r"bad\.txt: line 3"):
        list_samples(DatasetConfig(images=str(folder), labels=str(bad)))
    mixed = _labels(tmp_path, "mixed.txt", ["a0.jpg 1", "a1.jpg"])
    with pytest.raises(InputError, match=r"mixed\.txt: line 2"):
        list_samples(DatasetConfig(images=str(folder), labels=str(mixed)))
    with pytest.raises(InputError, match="count 3 is larger than the 2"):
        list_samples(DatasetConfig(images=str(folder), count=3))


def test_check_disjoint_counts_other_rotations_as_overlap(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path, 2)
    a0, a1 = folder / "a0.jpg", folder / "a1.jpg"
    check_disjoint([Sample(a0, 0)], [Sample(a1, 0)])
    with pytest.raises(InputError, match="a0.jpg"):
        check_disjoint([Sample(a0, 0, 0)], [Sample(folder / "." / "a0.jpg", 1, 180), Sample(a1, 0)])


# ---------------------------------------------------------------- load_split + cache

def _data(folder: Path, tmp_path: Path) -> DataConfig:
    calib = _labels(tmp_path, "calib.txt", ["a0.jpg 1", "a1.jpg 2"])
    ev = _labels(tmp_path, "eval.txt", ["a2.jpg 3", "a3.jpg 4", "a4.jpg 5"])
    return DataConfig(calib=DatasetConfig(images=str(folder), labels=str(calib)),
                      eval=DatasetConfig(images=str(folder), labels=str(ev)))


def test_load_split_runs_disjoint_check_and_names_missing_split(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path, 5)
    data = _data(folder, tmp_path)
    split = load_split(data, "eval", PreprocessConfig(), None, progress=False)
    assert split.x.shape == (3, 3, 224, 224) and split.x.dtype == np.float32
    assert split.labels is not None and split.labels.dtype == np.int64 and split.labels.tolist() == [3, 4, 5]
    assert np.array_equal(split.x[1], load_image(folder / "a3.jpg", PreprocessConfig()))

    overlap = data.model_copy(update={"calib": DatasetConfig(images=str(folder))})  # whole folder
    with pytest.raises(InputError, match="share 3 image file"):
        load_split(overlap, "calib", PreprocessConfig(), None, progress=False)
    with pytest.raises(ConfigError, match=r"data\.eval"):
        load_split(DataConfig(calib=data.calib), "eval", PreprocessConfig(), None)


def test_cache_hit_skips_decoding_and_file_change_invalidates(tmp_path: Path, monkeypatch) -> None:
    folder = _tiny_folder(tmp_path, 5)
    data, cfg, cache = _data(folder, tmp_path), PreprocessConfig(mode="resize", size=(80, 160)), tmp_path / "cache"
    first = load_split(data, "eval", cfg, cache, progress=False)
    assert len(list((cache / "data").glob("*.npy"))) == 1 and len(list((cache / "data").glob("*.json"))) == 1
    assert not list((cache / "data").glob(".*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(pre_mod, "load_image", boom)
    second = load_split(data, "eval", cfg, cache, progress=False)
    assert np.array_equal(first.x, second.x) and first.samples == second.samples

    st = (folder / "a3.jpg").stat()
    os.utime(folder / "a3.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    load_split(data, "eval", cfg, cache, progress=False)  # a new mtime alone: same content, still cached
    _rewrite_keeping_stat(folder / "a3.jpg", folder / "a0.jpg")
    with pytest.raises(AssertionError, match="decoded again"):
        load_split(data, "eval", cfg, cache, progress=False)
    no_cache = data.model_copy(update={"cache_preprocessed": False})
    with pytest.raises(AssertionError, match="decoded again"):
        load_split(no_cache, "eval", PreprocessConfig(mode="resize", size=(80, 160)), cache, progress=False)


def _rewrite_keeping_stat(path: Path, other: Path) -> None:
    """Give ``path`` other bytes of the same size and put its mtime back (what size+mtime checks miss)."""
    st = path.stat()
    data = bytearray(other.read_bytes()[: st.st_size].ljust(st.st_size, b"\0"))
    if data == path.read_bytes():
        data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_fingerprint_is_content_not_size_and_mtime(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path, 5)
    data = _data(folder, tmp_path)
    base = fingerprint(data, PreprocessConfig(), "eval")
    st = (folder / "a2.jpg").stat()
    os.utime(folder / "a2.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched, same bytes
    assert fingerprint(data, PreprocessConfig(), "eval") == base
    _rewrite_keeping_stat(folder / "a2.jpg", folder / "a0.jpg")
    assert fingerprint(data, PreprocessConfig(), "eval") != base
    # the same files elsewhere (another machine, a sweep node) give the same fingerprint
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("elsewhere"))
    assert fingerprint(_data(moved / folder.name, moved), PreprocessConfig(), "eval") == \
        fingerprint(data, PreprocessConfig(), "eval")


def test_fingerprint_reads_each_file_once_per_run(tmp_path: Path, monkeypatch) -> None:
    import lcpipe.fileio as fileio

    folder = _tiny_folder(tmp_path, 5)
    data = _data(folder, tmp_path)
    reads: list[Path] = []
    real = fileio.sha256_file
    monkeypatch.setattr(fileio, "sha256_file", lambda p, *a: reads.append(Path(p)) or real(p, *a))
    monkeypatch.setattr(fileio, "MEMO_MIN_AGE_S", 0.0)  # the files were written a moment ago
    with fileio.content_hashes():
        first = fingerprint(data, PreprocessConfig())
        assert fingerprint(data, PreprocessConfig()) == first  # quantize, validate, plan: one read each
        time.sleep(0.05)  # past the file-time tick of the copies
        _rewrite_keeping_stat(folder / "a2.jpg", folder / "a0.jpg")  # changed mid-run: read again
        assert fingerprint(data, PreprocessConfig()) != first
    images = [p for p in reads if p.suffix == ".jpg"]
    assert len(images) == len(set(images)) + 1 and images.count(folder / "a2.jpg") == 2


def test_fingerprint_tracks_preprocessing_and_data(tmp_path: Path) -> None:
    folder = _tiny_folder(tmp_path, 5)
    data = _data(folder, tmp_path)
    base = fingerprint(data, PreprocessConfig())
    assert base == fingerprint(data, PreprocessConfig())
    assert base != fingerprint(data, PreprocessConfig(interpolation="bicubic"))
    assert fingerprint(data, PreprocessConfig(), "calib") != fingerprint(data, PreprocessConfig(), "eval")
    _labels(tmp_path, "eval.txt", ["a2.jpg 3", "a3.jpg 4", "a4.jpg 6"])  # a label changed
    assert base != fingerprint(data, PreprocessConfig())


def test_progress_bar_is_quiet_without_a_tty(tmp_path: Path, capsys) -> None:
    folder = _tiny_folder(tmp_path, 2)
    load_split(DataConfig(calib=DatasetConfig(images=str(folder))), "calib", PreprocessConfig(), None)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- label names + shipped data

def test_load_label_names_formats(tmp_path: Path) -> None:
    names = load_label_names(IMAGENET / "imagenet1k_label_list.txt")
    assert len(names) == 1000 and names[0] == "tench, Tinca tinca" and names[65] == "sea snake"
    plain = _labels(tmp_path, "plain.txt", ["0_degree", "180_degree"])
    assert load_label_names(plain) == ["0_degree", "180_degree"]
    with pytest.raises(InputError, match="does not exist"):
        load_label_names(tmp_path / "none.txt")


def test_shipped_splits_are_disjoint_and_complete() -> None:
    text = TEXT_LINES
    for images, calib, ev, n_calib, n_eval in [
        (IMAGENET / "images", IMAGENET / "calib.txt", IMAGENET / "val.txt", 300, 1000),
        (LINES, text / "calib.txt", text / "eval.txt", 20, 39),
    ]:
        rot = [0, 180] if images == LINES else None
        c = list_samples(DatasetConfig(images=str(images), labels=str(calib), rotations=rot))
        e = list_samples(DatasetConfig(images=str(images), labels=str(ev), rotations=rot))
        k = len(rot) if rot else 1
        assert (len(c), len(e)) == (n_calib * k, n_eval * k)
        check_disjoint(c, e)
    scripts = dict(line.split("\t")[:2] for line in (text / "scripts.tsv").read_text().splitlines()[1:])
    assert sorted(scripts) == sorted(p.name for p in LINES.iterdir())
    for split in ("calib.txt", "eval.txt"):
        groups = {scripts[n] for n in (text / split).read_text().split()}
        assert groups == {"latin", "cjk", "cyrillic", "arabic", "devanagari", "other"}
