"""The shipped plan against what a user gets without lcpipe (issue 17's goals): a benchmark, not a test.

    python -m benchmarks.shipped_goals [--models textline v1_x1_0 v2_base] [--out runs/shipped-goals]
                                       [--extras] [--profile] [--set KEY=VALUE ...]

Per model: the pipeline up to its ``plan`` stage (stage cache reused), then, side by side in the same
interleaved rounds (batch 1, --threads threads, decoded image -> top-k):

  baseline        the FP32 IR at the plugin's default precision + Python float preprocessing
  shipped_image   the shipped plan's image-input IR (model_image.xml) at the plan's precision + uint8
                  resize/crop in cv2: what the deploy bundle serves

and with --extras what might move a missed goal: the shipped image-input IR with resize + crop in the
graph (lcpipe.deploy.resize_in_graph; its top-1 agreement and max logit diff against the cv2 route on
the same images), with CPU pinning on, and the shipped IR fed by Python preprocessing (how much the
image-input IR itself gives). --profile adds OpenVINO's per-layer counters (lcpipe.measure.profile) of
the shipped IR and of the FP32 IR at the plugin default: where the time goes.

Models: the real textline model (pipelines/textline_ori_int8.yaml, real lines) and PP-LCNet x1.0 / V2 base
with random weights (benchmarks.models: latency does not depend on them; with paddleclas installed their BN
statistics come from real images). Random weights give INT8 cosines of 0.94-0.98, so those pipelines run
with ``gates.min_cosine=0.95`` unless --set says otherwise (their fidelity says little about real
checkpoints); the textline model keeps its own gates. Goals (shipped_image vs baseline, p50):
V2 base >= 1.5x on AMX and >= 2.0x on AVX-512 VNNI without bf16; V1 x1.0 >= 1.3x on AMX; textline
>= 1.2x on AMX. Writes shipped_goals.json and shipped_goals.md into --out, with the CPU, ISA, plugin
default precision, threads and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOALS: dict[str, dict[str, float]] = {  # model -> {ISA class: min speed-up of shipped_image over baseline}
    "v2_base": {"amx": 1.5, "avx512_vnni_no_bf16": 2.0},
    "v1_x1_0": {"amx": 1.3},
    "textline": {"amx": 1.2},
}
RANDOM_WEIGHT_SETS = ("gates.min_cosine=0.95",)


def pipeline(key: str, root: Path, sets: list[str], paddle: bool) -> Any:
    """The model's pipeline config (plan stage included); random weights written once for V1/V2."""
    import lcpipe
    from benchmarks.matrix import PIPELINES, prepare
    from benchmarks.models import model_of

    model = model_of(key)
    if not model.synthetic:
        return lcpipe.load_config(PIPELINES / model.yaml, [f"name=goals_{key}", *sets])
    weights = prepare(model, root, paddle)[0].model.source.path  # the matrix's weights (its config drops plan)
    return lcpipe.load_config(PIPELINES / model.yaml, [f"model.arch={model.arch}", f"model.source.path={weights}",
                                                       f"name=goals_{key}", *RANDOM_WEIGHT_SETS, *sets])


def goal_class(isa: str, default_precision: str) -> str:
    if isa == "amx":
        return "amx"
    return "avx512_vnni_no_bf16" if isa == "avx512_vnni" and default_precision == "f32" else isa


def routes(fp32: Path, shipped: Path, pre: Any, precision: str | None, extras: bool) -> dict[str, tuple]:
    """route -> (ov.Model, prep, compile properties besides the LATENCY hint and threads)."""
    from lcpipe.deploy.image_input import build_image_input_model
    from lcpipe.ir import read_ir, read_lcpipe_rt_info
    from lcpipe.measure.e2e import float_prep, image_prep, whole_image_prep

    base, ship = read_ir(fp32), read_ir(shipped)
    pre_dict = read_lcpipe_rt_info(ship)["preprocess"]
    out = {"baseline": (base, float_prep(pre), {}),
           "shipped_image": (build_image_input_model(ship, pre_dict), image_prep(pre), {"precision": precision})}
    if extras:
        out["shipped_py"] = (ship, float_prep(pre), {"precision": precision})
        out["shipped_image_pinned"] = (out["shipped_image"][0], image_prep(pre),
                                       {"precision": precision, "ENABLE_CPU_PINNING": True})
        if pre_dict.get("mode") in ("resize", "paddleclas") and pre_dict.get("interpolation") != "bicubic":
            out["shipped_image_resize_in_graph"] = (build_image_input_model(ship, pre_dict, resize_in_graph=True),
                                                    whole_image_prep(), {"precision": precision})
    return out


def measure(key: str, config: Any, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    import lcpipe
    from lcpipe.data import load_split
    from lcpipe.ir import ov_config, planned_plan
    from lcpipe.measure.e2e import decoded_samples, latency_runner, measure_decode, resize_in_graph_fidelity
    from lcpipe.measure.engines import plugin_default_precision
    from lcpipe.measure.timing import measure_latency

    run = lcpipe.run_pipeline(config, out=out, until="plan", cache_dir=args.cache_dir)
    fp32, shipped = Path(run.artifacts["ir_fp32"]), Path(run.artifacts["ir_int8"])
    plan = planned_plan(shipped) or {}
    precision = plan.get("inference_precision")
    ev = load_split(config.data, "eval", config.preprocess, None, progress=False)
    samples = ev.samples[: args.images]
    images = decoded_samples(samples)
    import openvino as ov

    core = ov.Core()
    runners = {}
    for name, (model, prep, props) in routes(fp32, shipped, config.preprocess, precision, args.extras).items():
        props = dict(props)
        cfg = {**ov_config("LATENCY", args.threads, props.pop("precision", None)), **props}
        runners[name] = latency_runner(core.compile_model(model, "CPU", cfg), prep, images, 5)
    stats = measure_latency(runners, warmup=args.warmup, rounds=args.rounds, iterations=args.iterations, show=False)
    lat = {n: s.as_dict() for n, s in stats.items()}
    base = lat["baseline"]["p50"]
    result: dict[str, Any] = {
        "plan": plan.get("name"), "plan_int8": plan.get("int8"), "plan_precision": precision,
        "default_precision": plugin_default_precision(fp32, args.threads), "images": len(images),
        "latency_ms": lat, "speedup_vs_baseline": {n: round(base / s["p50"], 4) for n, s in lat.items()},
        "decode_ms": measure_decode(sorted({s.path for s in samples})),
        "plan_seconds": next((r.seconds for r in run.records if r.name == "plan"), None),
    }
    if "shipped_image_resize_in_graph" in lat:
        result["resize_in_graph_fidelity"] = resize_in_graph_fidelity(shipped, samples, config.preprocess,
                                                                      args.threads, precision)
    if args.profile:
        from lcpipe.measure.profile import profile_ov

        hw = tuple(config.preprocess.input_hw)
        result["profile"] = {"shipped": profile_ov(shipped, args.threads, hw, precision, ev.x[:1]),
                             "baseline": profile_ov(fp32, args.threads, hw, None, ev.x[:1])}
    return result


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    cpu = meta["cpu"]
    lines = [f"CPU: {cpu['model']} (ISA {cpu['isa']}; plugin default float precision {meta['default_precision']}), "
             f"{meta['threads']} threads, batch 1, {meta['rounds']} interleaved rounds x {meta['iterations']} "
             f"images per route; load average before/after {meta['load_before']} / {meta['load_after']}.", "",
             "| model | shipped plan | baseline p50 ms | shipped image-input p50 ms | speed-up | goal | verdict |",
             "|---|---|---|---|---|---|---|"]
    extra_rows = []
    for key, r in results.items():
        lat, sp = r["latency_ms"], r["speedup_vs_baseline"]
        goal = r.get("goal")
        verdict = "no goal for this CPU" if goal is None else "met" if sp["shipped_image"] >= goal else "missed"
        lines.append(f"| {key} | {r['plan']} | {lat['baseline']['p50']:.3f} | {lat['shipped_image']['p50']:.3f} | "
                     f"{sp['shipped_image']:.2f}x | {'-' if goal is None else f'>= {goal}x'} | {verdict} |")
        for name in lat:
            if name not in ("baseline", "shipped_image"):
                extra_rows.append(f"| {key} | {name} | {lat[name]['p50']:.3f} | {sp[name]:.2f}x |")
    if extra_rows:
        lines += ["", "What might move it (same rounds):", "", "| model | route | p50 ms | vs baseline |",
                  "|---|---|---|---|", *extra_rows]
    for key, r in results.items():
        fid = r.get("resize_in_graph_fidelity")
        if fid:
            lines.append(f"\n{key}: resize in the graph vs cv2 on {fid['images']} eval images "
                         f"({fid['distinct_input_sizes']} sizes): top-1 agreement {fid['top1_agreement']:.2%}, "
                         f"max abs logit diff {fid['max_abs_logit_diff']:.3g}")
        prof = r.get("profile")
        if prof:
            for which, p in prof.items():
                top = ", ".join(f"{t['type']} {t['ms']:.3f} ms ({t['share']:.0%})" for t in p["by_type"][:5])
                lines.append(f"\n{key} {which}: layers {p['total_ms']:.3f} ms of {p['wall_ms_p50']:.3f} ms wall; {top}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "shipped-goals")
    ap.add_argument("--models", nargs="+", default=list(GOALS), choices=list(GOALS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--images", type=int, default=64, help="eval images cycled through")
    ap.add_argument("--extras", action="store_true", help="resize in the graph, CPU pinning, Python preprocessing")
    ap.add_argument("--profile", action="store_true", help="per-layer counters of the shipped and baseline IRs")
    ap.add_argument("--no-paddle", dest="paddle", action="store_false", help="plain random weights for V1/V2")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], help="pipeline override for every model")
    args = ap.parse_args(argv)
    from benchmarks.e2e_routes import write_results
    from lcpipe.sysinfo import isa_level

    args.out.mkdir(parents=True, exist_ok=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    results = {}
    for key in args.models:
        results[key] = measure(key, pipeline(key, args.out, args.set, args.paddle), args.out / "runs" / key, args)
        results[key]["goal"] = GOALS[key].get(goal_class(isa_level(), results[key]["default_precision"]))
    write_results(args, "shipped_goals", results, load_before, markdown)


if __name__ == "__main__":
    main()
