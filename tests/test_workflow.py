"""Commands after one another on one run folder, on the real textline pipeline (import .. deploy):
nothing a finished run wrote is lost, a config that would make its results stale is refused, files
are readable by others under umask 022, and the figures follow the data's content."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import helpers
import pytest

pytestmark = pytest.mark.slow

VALIDATE = "- validate: {rounds: 2, iterations: 20, warmup: 5, throughput_seconds: 0.2}\n- report: {}\n- deploy: {}"
BENCH = ("--engines", "ov_fp32,ov_int8", "--rounds", "1", "--iterations", "5")


def _cli(*args: str, cwd: Path, cache: Path, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(helpers.REPO), "LCPIPE_CACHE_DIR": str(cache)}
    res = subprocess.run([sys.executable, "-m", "lcpipe", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=900, preexec_fn=lambda: os.umask(umask))
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    return res


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder but its log and lock (each command appends to / stamps those)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name not in ("lcpipe.log", ".lcpipe.lock")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(yaml, run dir, cache) of one finished run, made under umask 022."""
    root = tmp_path_factory.mktemp("workflow")
    yaml = helpers.textline_yaml(root / "textline.yaml", VALIDATE)
    res = _cli("run", str(yaml), "--out", "run", cwd=root, cache=root / "cache")
    assert res.returncode == 0, res.stderr
    return yaml, root / "run", root / "cache"


def test_run_then_bench_then_predict_loses_nothing(finished: tuple[Path, Path, Path]) -> None:
    yaml, run, cache = finished
    before = _snapshot(run)
    published = {"metrics.json", "report.md", "report.html", "deploy/model.xml", "deploy/metrics.json"}
    assert published | {"validate/validation.json", "quantize/model.bin"} <= set(before)
    res = _cli("bench", str(yaml), "--out", str(run), *BENCH, cwd=run.parent, cache=cache)
    assert res.returncode == 0, res.stderr
    after = _snapshot(run)
    lost = [name for name, data in before.items() if after.get(name) != data]
    assert lost == [] and (run / "bench" / "bench.json").is_file()
    # --until after a finished run: the earlier stages are reused in place, the rest stays
    res = _cli("run", str(yaml), "--out", str(run), "--until", "convert", cwd=run.parent, cache=cache)
    assert res.returncode == 0 and "result in the run directory reused" in res.stderr, res.stderr
    assert [n for n, d in before.items() if _snapshot(run).get(n) != d] == []
    # the bundle still loads and classifies
    import openvino as ov

    for xml in sorted((run / "deploy").glob("*.xml")):
        ov.Core().read_model(str(xml))
    image = helpers.TEXT_LINES / "lines" / "paddleocr_words_ch_word_1.jpg"
    res = _cli("predict", str(run / "deploy" / "model.xml"), str(image), "--json", cwd=run.parent, cache=cache)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["predictions"][0]["top"][0]["probability"] > 0


def test_bench_does_not_replace_a_bench_folder_holding_a_users_file(finished: tuple[Path, Path, Path]) -> None:
    yaml, run, cache = finished
    notes = run / "bench" / "notes.txt"
    notes.parent.mkdir(exist_ok=True)
    notes.write_text("mine\n")
    before = _snapshot(run)
    try:
        res = _cli("bench", str(yaml), "--out", str(run), *BENCH, cwd=run.parent, cache=cache)
        assert res.returncode == 2 and "notes.txt" in res.stderr and "lcpipe did not write" in res.stderr, res.stderr
        assert [n for n, d in before.items() if _snapshot(run).get(n) != d] == []
    finally:
        notes.unlink()


def test_a_config_that_would_make_the_finished_results_stale_is_refused(finished: tuple[Path, Path, Path]) -> None:
    yaml, run, cache = finished
    before = _snapshot(run)
    res = _cli("bench", str(yaml), "--out", str(run), "--set", "stages.quantize.subset_size=8", *BENCH,
               cwd=run.parent, cache=cache)
    assert res.returncode == 2 and "stages.quantize options (stages.quantize.subset_size: 16 -> 8)" in res.stderr, \
        res.stderr
    res = _cli("bench", str(yaml), "--out", str(run), "--force", *BENCH, cwd=run.parent, cache=cache)
    assert res.returncode == 2 and "--force" in res.stderr, res.stderr
    # the reproduction: an OpenVINO traceback before
    res = _cli("run", str(yaml), "--out", str(run), "--from", "quantize", "--set", "preprocess.size=[40,80]",
               cwd=run.parent, cache=cache)
    assert res.returncode == 2, res.stderr
    assert "--from quantize" in res.stderr and "preprocess.size: [80, 160] -> [40, 80]" in res.stderr, res.stderr
    assert [n for n, d in before.items() if _snapshot(run).get(n) != d] == []


def test_run_files_follow_the_umask(finished: tuple[Path, Path, Path]) -> None:
    _, run, cache = finished
    wrong = [f"{p}: {oct(stat.S_IMODE(p.stat().st_mode))}" for root in (run, cache) for p in (root, *root.rglob("*"))
             if stat.S_IMODE(p.stat().st_mode) != (0o755 if p.is_dir() else 0o644)]
    assert wrong == []
    for name in ("report.html", "metrics.json", "deploy/metrics.json", "deploy/model.bin"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def _rotate_keeping_size_and_mtime(path: Path) -> None:
    """The image turned upside down, same byte size (JPEG padded after its end marker), mtime put back."""
    import cv2
    import numpy as np

    raw = path.read_bytes()
    st = path.stat()
    rotated = cv2.rotate(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR), cv2.ROTATE_180)
    for quality in range(95, 10, -5):
        ok, enc = cv2.imencode(".jpg", rotated, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(enc) <= len(raw):
            break
    path.write_bytes(enc.tobytes().ljust(len(raw), b"\0"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_changed_eval_image_content_gives_fresh_figures(tmp_path: Path) -> None:
    data = tmp_path / "text_lines"
    shutil.copytree(helpers.TEXT_LINES, data)
    yaml = helpers.textline_yaml(tmp_path / "textline.yaml", VALIDATE)
    yaml.write_text(yaml.read_text().replace(str(helpers.TEXT_LINES), str(data)))
    cache = tmp_path / "cache"

    def top1(run: str) -> float:
        return json.loads((tmp_path / run / "metrics.json").read_text())["accuracy"]["fp32"]["top1"]

    assert _cli("run", str(yaml), "--out", "a", cwd=tmp_path, cache=cache).returncode == 0
    before = top1("a")
    _rotate_keeping_size_and_mtime(data / "lines" / "paddleocr_words_ch_word_1.jpg")  # listed in eval.txt
    res = _cli("run", str(yaml), "--out", "a", cwd=tmp_path, cache=cache)
    assert res.returncode == 0 and "validate: running" in res.stderr, res.stderr  # not the cached figures
    assert "quantize: cached result reused" in res.stderr  # calibration images did not change
    fresh = _cli("run", str(yaml), "--out", "b", "--no-cache", cwd=tmp_path, cache=cache)
    assert fresh.returncode == 0, fresh.stderr
    # the upside-down line now counts as wrong at 0 and 180 degrees: the figure moves, as --no-cache says
    assert top1("a") == top1("b") != before
