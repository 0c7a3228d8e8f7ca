"""Machine facts recorded with every figure: CPU model, ISA level, threads, package versions."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from typing import Any

ISA_ORDER = ("amx", "avx512_vnni", "avx512", "avx2", "default")
_PACKAGES = ("lcpipe", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "paddlepaddle", "paddle2onnx",
             "torch", "timm")


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        import cpuinfo

        return frozenset(cpuinfo.get_cpu_info().get("flags", []))
    except Exception:  # py-cpuinfo may fail on exotic platforms; flags are informational then
        return frozenset()


@functools.cache
def cpu_model() -> str:
    """CPU model name: /proc/cpuinfo's "model name" (Linux x86, instant), else py-cpuinfo's brand
    (macOS, Windows, ARM Linux, whose /proc/cpuinfo has no model name; it takes ~1.5 s, so only
    then), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _cpuinfo_brand() or platform.processor() or "unknown"


def _cpuinfo_brand() -> str:
    try:
        import cpuinfo

        return str(cpuinfo.get_cpu_info().get("brand_raw") or "").strip()
    except Exception:  # py-cpuinfo may fail on exotic platforms; the name is informational
        return ""


def isa_level(flags: frozenset[str] | None = None) -> str:
    """Best INT8-relevant ISA: amx > avx512_vnni > avx512 > avx2 > default."""
    flags = cpu_flags() if flags is None else flags
    if "amx_int8" in flags or "amx_tile" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "default"


def isa_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
    return [f for f in wanted if f in cpu_flags()]


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_info() -> dict[str, Any]:
    return {"model": cpu_model(), "isa": isa_level(), "flags": isa_flags(), "cores": default_threads(),
            "machine": platform.machine()}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def pick_threshold(value: float | dict[str, float], isa: str | None = None) -> tuple[float, str]:
    """A gate threshold is a number or {isa: number}; the best key the machine supports applies."""
    if not isinstance(value, dict):
        return float(value), "any"
    isa = isa or isa_level()
    for key in ISA_ORDER[ISA_ORDER.index(isa):]:
        if key in value:
            return float(value[key]), key
    raise KeyError(f"no threshold for ISA {isa!r} and no 'default' (keys: {', '.join(value)})")
