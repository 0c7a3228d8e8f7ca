"""Benchmark (developer tooling, not a test): do the embedded default's gates tell noise from a regression?

    python -m benchmarks.gate_stability [--runs 10] [--conditions quiet hog regression]
                                        [--out runs/gate-stability] [--docs docs/benchmarks.md]

Runs validate + report of the embedded default (``textline_ori_int8``; the stages before validate,
its plan included, are built once and reused) ``--runs`` times under each condition:

* ``quiet``: nothing else started by this script (run it on an otherwise idle machine);
* ``hog``: a busy-loop process pinned to CPU 0 for the whole run (``os.sched_setaffinity``);
* ``regression``: a real change of the ratio the speed gate judges, the shipped image-input route end
  to end against the baseline (the FP32 IR at the plugin's default precision + Python preprocessing):
  the shipped route's uint8 resize/crop busy-waits ``--delay-ms`` per image, a regression in the
  serving path that no noise explains (with a delay at least the baseline's own p50, the speed-up is
  below 1.0 whatever the load).

and tabulates each gate's verdicts three ways, from the same runs:

* before: point estimates with the gates the pipeline had before verdicts had intervals
  (``min_e2e_latency_speedup`` 0.85, ``min_agreement`` 0.95, ``max_top1_flips`` 2);
* point: point estimates with today's gates (``gates.mode: point``);
* after: today's gates with intervals (pass / fail / inconclusive).

Goal: no FAIL on the unchanged model under load, and the injected regression never PASSes. Every
timed run re-measures (validate is not taken from the cache). All runs go to ``--out``; the table is
printed and, with ``--docs``, written between markers in docs/benchmarks.md with the CPU, ISA and threads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONDITIONS = ("quiet", "hog", "regression")
OLD_GATES = {"max_top1_flips": 2, "min_agreement": 0.95, "min_e2e_latency_speedup": 0.85}  # before issue 16
GATED = "e2e_latency_p50_vs_default"  # the figure min_e2e_latency_speedup judges
BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks.gate_stability -->"


@contextlib.contextmanager
def cpu_hog(core: int = 0) -> Iterator[int]:
    """A busy-loop child process pinned to ``core``; stopped (by its own pid) afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(proc.pid, {core})
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def injected_regression(delay_ms: float) -> Iterator[None]:
    """Validate's end-to-end tracks (lcpipe.measure.e2e.e2e_tracks) give the image-input routes a uint8
    preprocessing that busy-waits ``delay_ms`` per image first (CPU work, like a slower resize)."""
    import lcpipe.measure.e2e as e2e

    original = e2e.image_prep

    def slow_prep(pre: Any) -> Any:
        prep = original(pre)

        def run(bgr: Any) -> Any:
            end = time.perf_counter() + delay_ms / 1000
            while time.perf_counter() < end:
                pass
            return prep(bgr)

        return run

    e2e.image_prep = slow_prep
    try:
        yield
    finally:
        e2e.image_prep = original


def verdicts(metrics: dict[str, Any]) -> dict[str, dict[str, str]]:
    """gate -> verdict, for the three ways of judging the same run."""
    from lcpipe.gates import evaluate_gates

    def table(rows: list[dict[str, Any]]) -> dict[str, str]:
        return {r["name"]: r["verdict"] for r in rows}

    gates = {r["name"]: r["threshold"] for r in metrics["gates"]}
    return {"before": table(evaluate_gates(OLD_GATES, metrics, mode="point")),
            "point": table(evaluate_gates(gates, metrics, mode="point")),
            "after": table(metrics["gates"])}


def one_run(config: Any, out: Path, condition: str, delay_ms: float) -> dict[str, Any]:
    import lcpipe

    guard = (cpu_hog() if condition == "hog" else injected_regression(delay_ms)
             if condition == "regression" else contextlib.nullcontext())
    t0 = time.perf_counter()
    with guard:  # validate re-measures: --from validate with no cache
        result = lcpipe.run_pipeline(config, out=out, from_stage="validate", no_cache=True)
    seconds = time.perf_counter() - t0
    metrics = result.metrics or {}
    validation = json.loads((out / "validate" / "validation.json").read_text())
    timing = metrics.get("timing") or {}
    speedup = metrics["speedup"]
    return {"condition": condition, "seconds": round(seconds, 1), "validate_seconds": validation.get("seconds"),
            "rounds": timing.get("rounds"), "stop_reason": timing.get("stop_reason"),
            "speedup": speedup.get(GATED), "speedup_ci95": speedup.get(f"{GATED}_ci95"),
            "load_avg": (metrics["latency_ms"]["fp32"].get("load_avg") or {}), "verdicts": verdicts(metrics)}


def render(runs: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    lines = [f"CPU {facts['cpu']['model']} (ISA {facts['cpu']['isa']}), {facts['threads']} inference threads, "
             f"lcpipe {facts['lcpipe']}, {facts['when']}; {facts['runs']} run(s) per condition; injected "
             f"regression: {facts['regression']}; shipped: {facts['shipped']}. Verdicts per gate as pass / fail / "
             "inconclusive counts.", "",
             "| condition | gate | before (point, old limits) | point (today's limits) | after (intervals) |",
             "|---|---|---|---|---|"]
    for cond in dict.fromkeys(r["condition"] for r in runs):
        mine = [r for r in runs if r["condition"] == cond]
        gates = list(dict.fromkeys(g for r in mine for way in r["verdicts"].values() for g in way))
        for g in gates:
            cells = []
            for way in ("before", "point", "after"):
                c = Counter(r["verdicts"][way].get(g, "-") for r in mine)
                cells.append(" / ".join(str(c.get(v, 0)) for v in ("pass", "fail", "inconclusive")))
            lines.append(f"| {cond} | {g} | {' | '.join(cells)} |")
    lines += ["", "| condition | end-to-end speed-up vs the baseline (median, range) | rounds (median) | "
              "validate s (median) | load average (1 min, median before) |", "|---|---|---|---|---|"]
    for cond in dict.fromkeys(r["condition"] for r in runs):
        mine = [r for r in runs if r["condition"] == cond]
        sp = [r["speedup"] for r in mine if r["speedup"] is not None]
        load = [(r["load_avg"].get("before") or [None])[0] for r in mine]
        load = [v for v in load if v is not None]
        lines.append(f"| {cond} | {_med(sp, 3)}x ({min(sp, default=0):.3f}-{max(sp, default=0):.3f}) | "
                     f"{_med([r['rounds'] for r in mine if r['rounds']], 0)} | "
                     f"{_med([r['validate_seconds'] for r in mine if r['validate_seconds']], 1)} | {_med(load, 2)} |")
    return "\n".join(lines) + "\n"


def _med(values: list[float], digits: int) -> str:
    return "n/a" if not values else f"{statistics.median(values):.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per condition [10]")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "gate-stability")
    ap.add_argument("--set", action="append", default=[], help="pipeline override, e.g. runtime.threads=2")
    ap.add_argument("--delay-ms", type=float, default=5.0,
                    help="regression: busy wait added to the shipped route's preprocessing per image [5]")
    ap.add_argument("--docs", type=Path, help="markdown file to write the table into (e.g. docs/benchmarks.md)")
    args = ap.parse_args(argv)

    import lcpipe
    from lcpipe.examples import EXAMPLES_DIR
    from lcpipe.records import read_json
    from lcpipe.sysinfo import cpu_info, default_threads
    from lcpipe.version import __version__

    config = lcpipe.load_config(EXAMPLES_DIR / "textline_ori_int8" / "pipeline.yaml",
                                ["stages.validate.progress=false", *args.set])
    run_dir = args.out / "run"
    first = lcpipe.run_pipeline(config, out=run_dir, until="plan")  # built once (and cached), the plan included
    shipped = read_json(first.artifacts["plan_report"])["chosen"]["name"]
    threads = config.runtime.threads or default_threads()
    regression = f"shipped route's preprocessing +{args.delay_ms:g} ms per image (busy wait)"
    runs = []
    for cond in args.conditions:
        for i in range(args.runs):
            r = one_run(config, run_dir, cond, args.delay_ms)
            runs.append(r)
            print(f"{cond} {i + 1}/{args.runs}: speed-up {r['speedup']} {r['speedup_ci95']}, {r['rounds']} rounds, "
                  f"after {r['verdicts']['after']}", file=sys.stderr, flush=True)
    facts = {"cpu": cpu_info(), "threads": threads, "lcpipe": __version__, "runs": args.runs,
             "when": time.strftime("%Y-%m-%d"), "regression": regression, "shipped": shipped}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate_stability.json").write_text(json.dumps({"facts": facts, "runs": runs}, indent=1, default=str))
    table = render(runs, facts)
    sys.stdout.write(table)
    if args.docs:
        sys.path.insert(0, str(REPO))
        from benchmarks.tables import write_docs

        write_docs(args.docs, table, BEGIN, "Gate stability (generated by `python -m benchmarks.gate_stability`)")


if __name__ == "__main__":
    main()
