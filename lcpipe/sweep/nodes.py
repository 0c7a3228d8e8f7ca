"""Which CPU a figure was measured on: node facts, CPU kinds of a Ray cluster, and re-timing a
point's IRs on another kind.

A node's CPU kind is, in order: the env var ``LCPIPE_CPU_KIND`` set on that node, a custom Ray
resource ``cpu_kind:<name>`` the node was started with (``ray start --resources
'{"cpu_kind:spr": 1}'``), else its CPU model and ISA level. The first two are an ops/test
override (name a fleet's kinds yourself, or make one machine's nodes stand for two kinds).
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

KIND_RESOURCE = "cpu_kind:"


def node_facts(ray: Any = None) -> dict[str, Any]:
    """This process's node: id, host, CPU model, ISA, cores and CPU kind (lcpipe.sysinfo.cpu_info,
    under the row keys a sweep writes)."""
    from lcpipe.sysinfo import cpu_info

    node_id = resources = None
    if ray is not None and ray.is_initialized():
        node_id = ray.get_runtime_context().get_node_id()
        resources = next((n.get("Resources", {}) for n in ray.nodes() if n.get("NodeID") == node_id), {})
    cpu = cpu_info()
    facts = {"node_id": node_id, "hostname": platform.node(), "cpu_model": cpu["model"], "isa": cpu["isa"],
             "flags": cpu["flags"], "cores": cpu["cores"]}
    facts["cpu_kind"] = cpu_kind(facts, resources or {})
    return facts


def cpu_kind(facts: dict[str, Any], resources: dict[str, Any]) -> str:
    env = os.environ.get("LCPIPE_CPU_KIND")
    if env:
        return env
    tagged = tagged_kinds(resources)
    if tagged:
        return tagged[0]
    return f"{facts['cpu_model']} [{facts['isa']}]"


def tagged_kinds(resources: dict[str, Any]) -> list[str]:
    """The CPU kinds a node was started with as ``cpu_kind:<name>`` resources, sorted."""
    return sorted(k[len(KIND_RESOURCE):] for k in resources if k.startswith(KIND_RESOURCE))


def probe_nodes(ray: Any) -> list[dict[str, Any]]:
    """Facts of every alive node, from a zero-CPU task pinned to each (a node's CPU model and env
    are only visible from inside it)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in ray.nodes() if n.get("Alive")]
    facts = []
    for ref in refs:
        try:
            facts.append(ray.get(ref, timeout=120))
        except Exception:  # a node that died since ray.nodes(): it runs nothing of this sweep
            continue
    cpus = {n["NodeID"]: int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")}
    for f in facts:
        f["ray_cpus"] = cpus.get(f["node_id"], 0)
    return [f for f in facts if f["ray_cpus"] > 0]


def _probe() -> dict[str, Any]:
    import ray

    return node_facts(ray)


def kinds_of(nodes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """CPU kind -> its nodes (most CPUs first: a latency point wants the whole node)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for n in sorted(nodes, key=lambda n: -n["ray_cpus"]):
        out.setdefault(n["cpu_kind"], []).append(n)
    return out


def retime(irs: dict[str, bytes], timing: dict[str, Any]) -> dict[str, Any]:
    """Ray task: time a point's FP32 IR and its shipped INT8 IR on this node with the point's
    validate options (interleaved rounds, batch 1) and precisions: validate's
    ``inference_precision``, except that an IR the plan stage chose runs at the precision the plan
    recorded in it. Accuracy is not recomputed: it does not depend on the CPU. The input is a fixed
    random tensor of the IR's shape (these conv nets do the same work whatever the pixel values)."""
    import numpy as np
    import ray

    from lcpipe.ir import compile_ir
    from lcpipe.measure.shards import ir_precisions
    from lcpipe.measure.timing import measure_throughput, time_irs
    from lcpipe.sysinfo import default_threads

    facts = node_facts(ray)
    threads = timing.get("threads") or default_threads()
    with tempfile.TemporaryDirectory(prefix="lcpipe-retime-") as tmp:
        for name, data in irs.items():
            Path(tmp, name).write_bytes(data)
        xml = {"fp32": Path(tmp, "fp32.xml"), "int8": Path(tmp, "int8.xml")}
        precisions = ir_precisions(xml, timing.get("inference_precision", "f32"))
        compiled = {k: compile_ir(p, "THROUGHPUT", threads, precisions[k]) for k, p in xml.items()}
        shape = [d.get_length() if d.is_static else 1 for d in compiled["fp32"].inputs[0].get_partial_shape()]
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        row: dict[str, Any] = {**facts, "threads": threads, "inference_precision": precisions}
        if timing.get("latency", True):
            lat = time_irs(xml, x, threads=threads, precision=precisions, warmup=timing["warmup"],
                           rounds=timing["rounds"], iterations=timing["iterations"], show=False)
            row.update(latency_p50_fp32_ms=lat["fp32"]["p50"], latency_p50_int8_ms=lat["int8"]["p50"],
                       latency_speedup=round(lat["fp32"]["p50"] / lat["int8"]["p50"], 4),
                       timed_at=lat["int8"]["measured_at"])
        if timing.get("throughput", True):
            thr = measure_throughput(compiled, x, seconds=timing["throughput_seconds"], rounds=timing["rounds"],
                                     show=False)
            row.update(throughput_fp32=thr["fp32"]["images_per_s"], throughput_int8=thr["int8"]["images_per_s"],
                       throughput_speedup=round(thr["int8"]["images_per_s"] / thr["fp32"]["images_per_s"], 4))
    return row


def shipped_irs(run_dir: Path) -> dict[str, Path] | None:
    """The FP32 IR and the shipped INT8 IR of a finished run dir, from its manifest: the last stage
    that produced each (a ``plan`` stage replaces quantize's ``ir_int8`` with the IR it chose)."""
    import json

    try:
        stages = json.loads((run_dir / "manifest.json").read_text()).get("stages") or []
    except (OSError, ValueError):
        return None
    found: dict[str, Path] = {}
    for rec in stages:
        for kind, name in (("ir_fp32", "fp32"), ("ir_int8", "int8")):
            info = (rec.get("outputs") or {}).get(kind)
            if info:
                found[name] = run_dir / rec["name"] / info["path"]
    if set(found) != {"fp32", "int8"} or not all(p.is_file() and p.with_suffix(".bin").is_file()
                                                 for p in found.values()):
        return None
    return found


def ir_files(run_dir: Path) -> dict[str, bytes] | None:
    """The FP32 and shipped INT8 IR (xml + bin) of a finished run dir, as bytes for a re-time task."""
    found = shipped_irs(run_dir)
    if found is None:
        return None
    out = {}
    for name, xml in found.items():
        out[f"{name}.xml"] = xml.read_bytes()
        out[f"{name}.bin"] = xml.with_suffix(".bin").read_bytes()
    return out
