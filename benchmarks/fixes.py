"""INT8 fixes tried on the matrix models: NNCF / OpenVINO options, FP32 vs INT8 IR with profiles.

    python -m benchmarks.matrix --fixes [--models v1_x1_0,v2_base]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from benchmarks.matrix import DOCS, bench, prepare
from benchmarks.models import MATRIX_DEFAULTS, MatrixModel, model_of
from benchmarks.tables import FIXES_BEGIN, engine_row, isa_cap_of, measured, p50_of, ratio, write_docs
from lcpipe.render.tables import md_table

log = logging.getLogger("lcpipe")


# (label, quantize-stage overrides, bench option updates); preset "flip" = the other preset than the YAML's.
FIX_VARIANTS: tuple[tuple[str, tuple[str, ...], dict[str, Any]], ...] = (
    ("baseline (YAML preset, full bias correction)", (), {}),
    ("preset flipped", ("stages.quantize.preset={flip}",), {}),
    ("ignored_scope types [GroupConvolution] (depthwise stays FP32)",
     ("stages.quantize.ignored_scope.types=[GroupConvolution]",), {}),
    ("target_device CPU", ("stages.quantize.target_device=CPU",), {}),
    ("model_type transformer", ("stages.quantize.model_type=transformer",), {}),
    ("INT8 IR, float ops in bf16", (), {"int8_precision": "bf16"}),
    ("preset performance + stem conv kept FP32",
     ("stages.quantize.preset=performance",
      'stages.quantize.ignored_scope.patterns=["^(conv1|stem\\\\.0)\\\\.conv/WithoutBiases$"]'), {}),
)
FIX_MODELS = ("v1_x1_0", "v2_base")


def run_fixes(*, out: Path | None = None, keys: tuple[str, ...] | list[str] = FIX_MODELS, docs: Path | None = None,
              updates: dict[str, Any] | None = None, paddle: bool = True) -> Path:
    """Each FIX_VARIANT on each model: FP32 vs INT8 IR (interleaved, with per-layer profiles)."""
    from lcpipe.runner import load_config

    root = (out or Path("runs") / "bench-matrix").resolve()
    path = root / "fixes.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for key in keys:
        model = model_of(key)
        config, _ = prepare(model, root, paddle)
        preset = (config.stage_options("quantize").preset or
                  ("mixed" if config.model.options.act == "hardswish" else "performance"))
        flip = "performance" if preset == "mixed" else "mixed"
        for i, (label, sets, bench_updates) in enumerate(FIX_VARIANTS):
            overrides = [o.format(flip=flip) for o in sets]
            cfg = load_config(config.source_file, _overrides_of(model, root) + overrides)
            log.info("fixes: %s / %s", key, label)
            try:
                result, folder = bench(cfg, root / "fixes" / key / f"v{i}", {
                    **MATRIX_DEFAULTS, "engines": ["ov_fp32", "ov_int8"], "profile": True, **bench_updates,
                    **(updates or {})})
            except Exception as exc:  # e.g. an NNCF option that does not apply to this model: record it
                log.warning("fixes: %s / %s failed: %s", key, label, exc)
                results.setdefault(key, {})[str(i)] = {"fix": {"label": label, "error": f"{type(exc).__name__}: "
                                                                                          f"{exc}"[:300]}}
                continue
            quant = json.loads((folder.parent / "quantize" / "quantize.json").read_text())
            result["fix"] = {"label": label.replace("flipped", f"{flip}"), "overrides": overrides,
                             "bench": bench_updates, "quantize": {k: quant.get(k) for k in ("preset", "int8")},
                             "profile": _profile_summary(folder / "profile.json")}
            results.setdefault(key, {})[str(i)] = result
            from lcpipe.fileio import write_json

            write_json(path, results)
    docs = docs or DOCS
    cap = isa_cap_of([v for variants in results.values() for v in variants.values()])
    begin = FIXES_BEGIN if not cap else FIXES_BEGIN.replace(" -->", f" (ONEDNN_MAX_CPU_ISA={cap}) -->")
    write_docs(docs, render_fixes(results), begin, "INT8 fixes tried (generated)" + (
        f", oneDNN capped to {cap}" if cap else ""))
    return docs


def _overrides_of(model: MatrixModel, root: Path) -> list[str]:
    weights = root / "weights" / f"{model.arch}.pdparams"
    return [f"model.arch={model.arch}", f"model.source.path={weights}", f"name=bench_{model.key}"]


def _profile_summary(path: Path) -> dict[str, Any]:
    """ms per layer type for the FP32 and INT8 IRs (from the bench stage's profile.json)."""
    if not path.is_file():
        return {}
    prof = json.loads(path.read_text())
    return {name: {"total_ms": p["total_ms"], "by_type": {r["type"]: r["ms"] for r in p["by_type"]},
                   "by_kernel": p["by_kernel"][:10]} for name, p in prof.items()}


def render_fixes(results: dict[str, Any]) -> str:
    parts = []
    for key, variants in results.items():
        rows = [["variant", "FP32 IR p50 ms", "INT8 IR p50 ms", "INT8 speed-up", "INT8 convs+matmuls",
                 "INT8 agreement", "profile INT8: conv / groupconv / other ms"]]
        for _, r in sorted(variants.items(), key=lambda kv: int(kv[0])):
            if "error" in r["fix"]:
                rows.append([r["fix"]["label"], *["-"] * 5, f"failed: {r['fix']['error']}"])
                continue
            fp32, int8 = p50_of(r, "ov_fp32"), p50_of(r, "ov_int8")
            q = (r["fix"]["quantize"].get("int8") or {})
            e = engine_row(r, "ov_int8")
            if e is None:
                why = next((x["reason"] for x in r["engines"] if x["name"] == "ov_int8"), "") or ""
                rows.append([r["fix"]["label"], measured(fp32), "-", "-",
                             f"{q.get('quantized')}/{q.get('quantizable')}", "-",
                             f"INT8 IR did not compile: {' '.join(why.split())[:90]}"])
                continue
            types = ((r["fix"]["profile"].get("ov_int8") or {}).get("by_type") or {})
            conv, group = types.get("Convolution", 0.0), types.get("GroupConvolution", 0.0)
            other = sum(types.values()) - conv - group
            rows.append([r["fix"]["label"], measured(fp32), measured(int8), ratio(fp32, int8),
                         f"{q.get('quantized')}/{q.get('quantizable')}",
                         "n/a" if not e else f"{100 * e['accuracy']['agreement']:.1f}%",
                         f"{conv:.2f} / {group:.2f} / {other:.2f}"])
        r0 = next((v for v in variants.values() if "cpu" in v), None)
        if r0 is None:
            continue
        isa = r0["cpu"].get("effective_isa", r0["cpu"]["isa"])
        cap = f", ONEDNN_MAX_CPU_ISA={r0['cpu']['isa_cap']}" if r0["cpu"].get("isa_cap") else ""
        parts += [f"### {key} ({r0['cpu']['model']}, kernels {isa}{cap}, {r0['threads']} threads)", "",
                  md_table(rows), ""]
    return "\n".join(parts)
