"""Shared fixtures: an isolated stage cache, real images, reference models exported once per session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import helpers
import pytest


def _temp_env_dir(factory: pytest.TempPathFactory, var: str, name: str) -> Iterator[Path]:
    """A temp folder in $var for the whole session (subprocesses inherit it), then the old value back."""
    path = factory.mktemp(name)
    old = os.environ.get(var)
    os.environ[var] = str(path)
    yield path
    if old is None:
        os.environ.pop(var, None)
    else:
        os.environ[var] = old


@pytest.fixture(scope="session", autouse=True)
def lcpipe_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The CLI's user log goes to a temp folder (never the user's), via $LCPIPE_LOG_DIR."""
    yield from _temp_env_dir(tmp_path_factory, "LCPIPE_LOG_DIR", "lcpipe-log")


@pytest.fixture(scope="session", autouse=True)
def lcpipe_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test run gets its own stage cache (never the user's), via $LCPIPE_CACHE_DIR."""
    yield from _temp_env_dir(tmp_path_factory, "LCPIPE_CACHE_DIR", "lcpipe-cache")


@pytest.fixture(scope="session")
def image_paths() -> dict[str, list[Path]]:
    """Real ImageNet images: 8 to calibrate random BN statistics, 8 others to compare logits on."""
    calib, test = helpers.real_image_paths(8), helpers.real_image_paths(8, offset=8)
    if len(test) < 8:
        pytest.skip("no real images in calib_data/imagenet/images")
    return {"calib": calib, "test": test}


@pytest.fixture(scope="session")
def paddleclas_export(tmp_path_factory: pytest.TempPathFactory, image_paths: dict[str, list[Path]],
                      lcpipe_cache_dir: Path) -> Callable[[str], helpers.Exported]:
    """``get(case)``: PaddleClas model of a case in helpers.PADDLE_CASES, built with randomized BN,
    saved as .pdparams and run through import -> fuse -> export; built once per session."""
    pytest.importorskip("paddle")
    pytest.importorskip("paddleclas")
    done: dict[str, helpers.Exported] = {}
    root = tmp_path_factory.mktemp("paddleclas")

    def get(case: str) -> helpers.Exported:
        if case not in done:
            done[case] = helpers.export_paddle_case(case, root / case, image_paths["calib"], lcpipe_cache_dir)
        return done[case]

    return get


@pytest.fixture(scope="session")
def timm_export(tmp_path_factory: pytest.TempPathFactory, image_paths: dict[str, list[Path]],
                lcpipe_cache_dir: Path) -> Callable[[str, str], helpers.Exported]:
    """``get(name, fmt)``: a timm lcnet (no hub) with randomized BN saved as ``fmt`` (torch |
    safetensors) and exported; once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    done: dict[tuple[str, str], helpers.Exported] = {}
    root = tmp_path_factory.mktemp("timm")

    def get(name: str, fmt: str) -> helpers.Exported:
        if (name, fmt) not in done:
            done[(name, fmt)] = helpers.export_timm(name, fmt, root / f"{name}-{fmt}", image_paths["calib"],
                                                    lcpipe_cache_dir)
        return done[(name, fmt)]

    return get


@pytest.fixture(scope="session")
def synthetic_weights(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``get(arch, **spec)``: a .pdparams in PaddleClas's layout with random values, no paddle needed."""
    done: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("synthetic")

    def get(arch: str = "PPLCNet_x0_25", **spec: object) -> Path:
        key = (arch, tuple(sorted(spec.items())))
        if key not in done:
            done[key] = helpers.synthetic_pdparams(root / f"{arch}-{len(done)}.pdparams", arch, **spec)
        return done[key]

    return get
