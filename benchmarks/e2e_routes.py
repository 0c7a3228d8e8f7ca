"""End-to-end routes side by side (decoded image -> top-k, batch 1) for the docs: a benchmark, not a test.

    python -m benchmarks.e2e_routes --out runs/e2e-routes --threads 2

Models: the shipped real textline model (pipelines/textline_ori_int8.yaml) and PP-LCNetV2 base with
random weights (pipelines/v2_int8.yaml; latency does not depend on the weights; the calibration
subset is cut to 64 images to keep the run short). Each model goes through lcpipe's pipeline up to
quantize (stage cache reused), then lcpipe.measure.e2e times every route in the same interleaved
rounds, plus FP32 at the plugin's default float precision (bf16 where the CPU has it).
Writes e2e_routes.json and e2e_routes.md (a table for docs/benchmarks.md) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROUTE_ORDER = ("fp32_py_default", "fp32_py", "int8_py", "fp32_image", "int8_image")


def _random_weights(root: Path, arch: str) -> Path:
    from benchmarks.matrix import synthetic_tensors, write_pdparams
    from lcpipe.models.spec import ModelSpec

    path = root / f"{arch}_random.pdparams"
    if not path.is_file():
        write_pdparams(path, synthetic_tensors(ModelSpec(arch=arch)))
    return path


def _imagenet(root: Path, yaml: str, arch: str) -> tuple[Path, list[str]]:
    return REPO / "pipelines" / yaml, [
        "model.source.url=null", f"model.source.path={_random_weights(root, arch)}", "data.calib.count=64",
        "data.eval.count=64", "stages.quantize.subset_size=64"]


def models(root: Path, keys: list[str]) -> dict[str, tuple[Path, list[str]]]:
    table = {
        "textline": lambda: ("textline (real, 80x160)", (REPO / "pipelines" / "textline_ori_int8.yaml", [])),
        "v1_x1_0": lambda: ("V1 x1.0 (random weights, 224)", _imagenet(root, "v1_int8.yaml", "PPLCNet_x1_0")),
        "v2_base": lambda: ("V2 base (random weights, 224)", _imagenet(root, "v2_int8.yaml", "PPLCNetV2_base")),
    }
    return dict(table[k]() for k in keys)


def measure(yaml: Path, overrides: list[str], out: Path, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    import lcpipe
    from lcpipe.data import load_split
    from lcpipe.measure.e2e import measure_e2e_samples

    capped = bool(os.environ.get("ONEDNN_MAX_CPU_ISA"))

    config = lcpipe.load_config(yaml, overrides=overrides)
    run = lcpipe.run_pipeline(config, out=out, until="quantize")
    ev = load_split(config.data, "eval", config.preprocess, None, progress=False)
    from lcpipe.measure.engines import plugin_default_precision

    # with oneDNN capped (ONEDNN_MAX_CPU_ISA=AVX2 stand-in) the plugin still picks bf16 from the CPU flags and
    # then fails to compile ("object is not initialized"): the capped run times f32 only
    default = None if capped else plugin_default_precision(run.artifacts["ir_fp32"], threads)
    r = measure_e2e_samples(run.artifacts["ir_fp32"], run.artifacts["ir_int8"], ev.samples[: args.images],
                            config.preprocess, threads, "f32", rounds=args.rounds, iterations=args.iterations,
                            warmup=20, throughput_seconds=args.seconds, default_precision=default, show=False)
    r["default_precision"] = "f32 (oneDNN capped)" if capped else default
    return r


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    cpu = meta["cpu"]
    lines = [f"CPU: {cpu['model']} (ISA {cpu['isa']}; plugin default float precision "
             f"{meta['default_precision']}), {meta['threads']} threads, batch 1, {meta['rounds']} interleaved rounds "
             f"x {meta['iterations']} images per route; load average before/after {meta['load_before']} / "
             f"{meta['load_after']}.", "",
             "| model | route | p50 ms | p90 ms | images/s | p50 vs FP32 + Python (f32) |", "|---|---|---|---|---|---|"]
    names = {"fp32_py_default": "FP32 IR (plugin default precision) + Python preprocessing",
             "fp32_py": "FP32 IR (f32) + Python preprocessing", "int8_py": "INT8 IR + Python preprocessing",
             "fp32_image": "FP32 image-input IR (f32) + uint8 resize/crop",
             "int8_image": "INT8 image-input IR + uint8 resize/crop"}
    for model, r in results.items():
        base = r["latency_ms"]["fp32_py"]["p50"]
        for route in [x for x in ROUTE_ORDER if x in r["latency_ms"]]:
            s = r["latency_ms"][route]
            lines.append(f"| {model} | {names[route]} | {s['p50']:.3f} | {s['p90']:.3f} | "
                         f"{r['throughput'][route]['images_per_s']:.0f} | {base / s['p50']:.2f}x |")
        lines.append(f"| {model} | (cv2 decode, apart) | {r['decode_ms']['p50']:.3f} | {r['decode_ms']['p90']:.3f} "
                     "| | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/e2e-routes"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=1.5, help="throughput: per route per round")
    ap.add_argument("--images", type=int, default=64, help="eval images cycled through")
    ap.add_argument("--models", nargs="+", default=["textline", "v2_base"], choices=["textline", "v1_x1_0", "v2_base"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    results: dict[str, Any] = {}
    for i, (name, (yaml, overrides)) in enumerate(models(args.out, args.models).items()):
        results[name] = measure(yaml, overrides, args.out / f"model{i}", args.threads, args)
    write_results(args, "e2e_routes", results, load_before, markdown)


def write_results(args: argparse.Namespace, stem: str, results: dict[str, Any], load_before: list[float],
                  render: Any) -> None:
    """<stem>.json (results + the machine: CPU, plugin default precision, threads, rounds, load average
    before/after, versions) and <stem>.md (``render(results, meta)``) into args.out; the table printed."""
    from lcpipe.sysinfo import cpu_info, versions

    meta = {"cpu": cpu_info(), "threads": args.threads, "rounds": args.rounds, "iterations": args.iterations,
            "default_precision": next(iter(results.values()))["default_precision"], "load_before": load_before,
            "load_after": [round(v, 2) for v in os.getloadavg()], "versions": versions()}
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    md = render(results, meta)
    (args.out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
