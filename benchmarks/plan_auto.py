"""Benchmark (developer tooling, not a test): `plan` on V1 x1.0 and V2 base, as in docs/benchmarks.md.

    python -m benchmarks.plan_auto [--out runs/plan-auto] [--models v1_x1_0 v2_base] [--set gates.min_cosine=0.95]

Random weights in PaddleClas's layout with BN statistics from 16 real images (the matrix's
models: latency does not depend on the values; fidelity figures only rank candidates). Runs the
full pipelines/v{1,2}_int8.yaml (quantize, plan, validate, report) and prints, per model, the
candidate table, the winner and the seconds the plan stage added (and its parts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
YAMLS = {"v1_x1_0": "v1_int8.yaml", "v2_base": "v2_int8.yaml"}


def run(key: str, root: Path, extra: list[str]) -> dict:
    import lcpipe
    from benchmarks.matrix import prepare
    from benchmarks.models import MODELS

    model = next(m for m in MODELS if m.key == key)
    config, _ = prepare(model, root, paddle=True)  # writes the BN-calibrated .pdparams once
    overrides = [f"model.arch={model.arch}", f"model.source.path={config.model.source.path}",
                 f"name=plan_{key}", *extra]
    result = lcpipe.run_pipeline(REPO / "pipelines" / YAMLS[key], out=root / "runs" / key, overrides=overrides)
    plan = json.loads((root / "runs" / key / "plan" / "plan.json").read_text())
    stages = {r.name: {"seconds": r.seconds, "cached": r.cached} for r in result.records}
    return {"plan": plan, "stages": stages, "metrics": result.metrics}


def render(key: str, r: dict) -> str:
    plan, st = r["plan"], r["stages"]
    cpu = plan["cpu"]
    lines = [f"### {key}", "",
             f"CPU {cpu['model']} (ISA {cpu['isa']}; {' '.join(cpu['flags'])}), {plan['threads']} threads, batch 1, "
             f"{plan['eval_images']} eval images; gates checked: {', '.join(plan['gates_checked'])}", "",
             "| candidate | p50 ms | p90 ms | vs FP32 f32 | agreement | cosine | top-1 drop | result |",
             "|---|---|---|---|---|---|---|---|"]
    fp32 = next(c["p50"] for c in plan["candidates"] if c["name"] == "fp32@f32")
    for c in plan["candidates"]:
        f = c.get("fidelity") or {}
        res = ("**CHOSEN**" if c["chosen"] else "not checked (slower than the winner)" if c["failed_gates"] is None
               else "pass" if not c["failed_gates"] else "fail: " + ", ".join(c["failed_gates"]))
        fid = f"{f['agreement']:.1%} | {f['cosine']:.4f} | {f['top1_drop'] or 0:.1%}" if f else "- | - | -"
        lines.append(f"| {c['name']} | {c['p50']:.3f} | {c['p90']:.3f} | {fp32 / c['p50']:.2f}x | {fid} | {res} |")
    s = plan["seconds"]
    lines += ["", f"Winner: {plan['chosen']['name']} ({plan['chosen']['description']}). Plan stage "
              f"{st['plan']['seconds']:.1f} s (IRs {s['build_irs']:.1f} s, of which one shared statistics pass "
              f"{plan['irs'].get('shared_statistics', {}).get('seconds', 0):.1f} s; fidelity {s['fidelity']:.1f} s; "
              f"latency {s['latency']:.1f} s); quantize stage {st['quantize']['seconds']:.1f} s"
              f"{' (cached)' if st['quantize']['cached'] else ''}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "plan-auto")
    ap.add_argument("--models", nargs="+", default=list(YAMLS), choices=list(YAMLS))
    ap.add_argument("--set", action="append", default=[], help="pipeline override, e.g. gates.min_cosine=0.95")
    args = ap.parse_args(argv)
    results = {k: run(k, args.out, args.set) for k in args.models}
    (args.out / "plan_auto.json").write_text(json.dumps(results, indent=1, default=str))
    sys.stdout.write("\n".join(render(k, r) for k, r in results.items()))


if __name__ == "__main__":
    main()
