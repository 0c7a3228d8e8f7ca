"""Time to a first answer from the embedded default's deploy bundle, with and without OpenVINO's model
cache, and the dynamic-batch IR against the static one: a benchmark, not a test.

    python -m benchmarks.first_inference [--out runs/first-inference] [--repeat 5] [--docs docs/benchmarks.md]

Runs ``lcpipe run textline_ori_int8 --set stages.deploy.batch=dynamic`` once (the stage cache makes a
rerun cheap), then, --repeat times in alternating order, one fresh process per start:

  predict, no cache       python -m lcpipe predict BUNDLE IMAGE --json
  predict, cache cold     ... --cache-dir <an empty folder>: compiles and stores the compiled model
  predict, cache warm     ... --cache-dir <a filled folder>: imports the compiled model
  serve.py, no cache      python BUNDLE/serve.py IMAGE --no-cache (no lcpipe import)
  serve.py, cache warm    python BUNDLE/serve.py IMAGE --cache-dir <a filled folder>

Each row: the wall time of the process (start to exit, so interpreter start-up and imports included) and,
for predict, its own read / compile / first-inference ms. Then the bundle's dynamic-batch IR against
model_image.xml in interleaved rounds (lcpipe.measure.batching), with more rounds than the deploy stage
runs. Writes first_inference.json into --out and its table between markers in docs/benchmarks.md, with
the CPU, ISA, threads and the load average before and after: on a shared machine these are rough figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks.first_inference -->"
CONDITIONS = ("predict, no cache", "predict, cache cold", "predict, cache warm", "serve.py, no cache",
              "serve.py, cache warm")


def bundle_of(out: Path) -> Path:
    """The embedded default's bundle with the dynamic-batch IR (the pipeline run once, stage cache reused)."""
    run = out / "run"
    res = subprocess.run([sys.executable, "-m", "lcpipe", "-q", "run", "textline_ori_int8", "--out", str(run),
                          "--set", "stages.deploy.batch=dynamic"], env=_env(), capture_output=True, text=True)
    if res.returncode not in (0, 3):  # 3: a gate failed; the bundle is still written (and says so)
        sys.exit(f"lcpipe run failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return run / "deploy"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def command(condition: str, bundle: Path, image: Path, caches: Path, rep: int) -> list[str]:
    tool, cache = condition.split(", ", 1)
    folder = {"no cache": None, "cache cold": caches / f"cold{rep}", "cache warm": caches / "warm"}[cache]
    if tool == "predict":
        return [sys.executable, "-m", "lcpipe", "predict", str(bundle), str(image), "--json",
                *(["--cache-dir", str(folder)] if folder else [])]
    return [sys.executable, str(bundle / "serve.py"), str(image),
            *(["--cache-dir", str(folder)] if folder else ["--no-cache"])]


def start_once(cmd: list[str]) -> dict[str, Any]:
    """One process: its wall time to exit and, for predict --json, its own timing."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=REPO)
    wall = (time.perf_counter() - t0) * 1e3
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    row: dict[str, Any] = {"wall_ms": round(wall, 1)}
    if "--json" in cmd:
        doc = json.loads(res.stdout)
        row.update({k: doc[k] for k in ("read_ms", "compile_ms", "first_inference_ms")},
                   loaded_from_cache=doc["model_cache"]["loaded_from_cache"])
    return row


def measure_starts(bundle: Path, image: Path, caches: Path, repeat: int) -> dict[str, list[dict[str, Any]]]:
    for warm in ("predict", "serve.py"):  # fill the warm cache once per tool (each compiles its own way)
        start_once(command(f"{warm}, cache warm", bundle, image, caches, 0))
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in CONDITIONS}
    for rep in range(repeat):
        for condition in CONDITIONS if rep % 2 == 0 else reversed(CONDITIONS):
            rows[condition].append(start_once(command(condition, bundle, image, caches, rep)))
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"starts": len(rows)}
    for key in ("wall_ms", "read_ms", "compile_ms", "first_inference_ms"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {"p50": round(float(np.median(values)), 1), "min": min(values), "max": max(values)}
    if any("loaded_from_cache" in r for r in rows):
        out["loaded_from_cache"] = sum(bool(r.get("loaded_from_cache")) for r in rows)
    return out


def batching(bundle: Path, threads: int) -> dict[str, Any]:
    from lcpipe.deploy.snippet import serving_compile_config
    from lcpipe.measure.batching import static_vs_dynamic

    metrics = json.loads((bundle / "metrics.json").read_text())
    config = {**serving_compile_config(metrics), "INFERENCE_NUM_THREADS": threads}
    return static_vs_dynamic(bundle / "model_image.xml", bundle / "model_image_dynamic.xml", config, (80, 160),
                             batch=8, warmup=20, rounds=7, iterations=100)


def _cell(s: dict[str, Any], key: str) -> str:
    v = s.get(key)
    return f"{v['p50']:.1f} ({v['min']:.1f}-{v['max']:.1f})" if v else "-"


def markdown(result: dict[str, Any]) -> str:
    m, b = result["meta"], result["batching"]
    lines = [f"CPU: {m['cpu']} (ISA {m['isa']}), {m['threads']} threads, OpenVINO {m['openvino']}, {m['date']}; "
             f"load average before / after {m['load_before']} / {m['load_after']}. A shared machine: rough figures, "
             f"{m['repeat']} starts per row in alternating order, p50 (min-max) ms. Bundle: the embedded default "
             f"(shipped plan {m['plan']}), image {m['image']}.", "",
             "| start | process wall (start to exit) | read | compile (or cache import) | first inference | "
             "compiled model from the cache |", "|---|---|---|---|---|---|"]
    for name, s in result["starts"].items():
        cached = f"{s['loaded_from_cache']} of {s['starts']}" if "loaded_from_cache" in s else "n/a (serve.py)"
        lines.append(f"| {name} | {_cell(s, 'wall_ms')} | {_cell(s, 'read_ms')} | {_cell(s, 'compile_ms')} | "
                     f"{_cell(s, 'first_inference_ms')} | {cached} |")
    lat, per_s = b["latency_ms"], b["images_per_s"]
    lines += ["", f"Dynamic batch (`deploy: {{batch: dynamic}}`): `model_image_dynamic.xml` against `model_image.xml`, "
              f"compiled with {b['compile_config']}, {b['rounds']} interleaved rounds x {b['iterations']} calls, "
              f"{b['input']}.", "",
              "| IR, batch | p50 ms per call | p90 ms | images/s |", "|---|---|---|---|"]
    for name, label in (("static_b1", "model_image.xml (static), 1"), ("dynamic_b1", "model_image_dynamic.xml, 1"),
                        ("dynamic_bN", f"model_image_dynamic.xml, {b['batch']}")):
        lines.append(f"| {label} | {lat[name]['p50']:.3f} | {lat[name]['p90']:.3f} | {per_s[name]:.0f} |")
    lines += ["", f"Batch 1 on the dynamic IR takes {b['dynamic_vs_static_b1_latency']:.2f}x the static IR's time; "
              f"batch {b['batch']} classifies {b['dynamic_bN_vs_static_b1_throughput']:.2f}x the images per second of "
              "batch-1 calls on the static IR."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "first-inference")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    import shutil

    from benchmarks.tables import write_docs
    from lcpipe.ir import ov_version
    from lcpipe.sysinfo import cpu_model, default_threads, isa_level

    args.out.mkdir(parents=True, exist_ok=True)
    bundle = bundle_of(args.out)
    image = sorted((REPO / "lcpipe" / "examples" / "textline_ori_int8" / "text_lines" / "lines").glob("*"))[0]
    caches = args.out / "caches"
    shutil.rmtree(caches, ignore_errors=True)  # the benchmark's own folder: every cold start is cold
    load_before = [round(v, 2) for v in os.getloadavg()]
    starts = {c: summary(rows) for c, rows in measure_starts(bundle, image, caches, args.repeat).items()}
    batch = batching(bundle, default_threads())
    plan = json.loads((bundle / "plan.json").read_text()).get("chosen")
    meta = {"cpu": cpu_model(), "isa": isa_level(), "threads": default_threads(), "openvino": ov_version(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "repeat": args.repeat, "plan": plan,
            "image": image.relative_to(REPO).as_posix(), "load_before": load_before,
            "load_after": [round(v, 2) for v in os.getloadavg()]}
    result = {"meta": meta, "starts": starts, "batching": batch}
    (args.out / "first_inference.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    write_docs(args.docs, text, BEGIN, "First answer from the deploy bundle: model cache on and off, dynamic batch "
                                       "(generated)")
    print(text)


if __name__ == "__main__":
    main()
