"""The benchmark matrix: every PP-LCNet scale through ``lcpipe bench``, and the scale table.

    python -m lcpipe.benchmark_matrix [--models v1_x1_0,v2_base] [--out runs/bench-matrix]
    lcpipe bench --matrix                                   # same, through the CLI

Tens of minutes on a 2-core VM; not part of CI. Latency does not depend on weight values, so the
ImageNet-size models use random weights in PaddleClas's checkpoint layout (shapes from
lcpipe.models.layers.expected_shapes, written as a .pdparams pickle without paddle); the textline
model is the real one shipped in pipelines/models. When paddle and the (test-only) paddleclas
package are importable, the same weights are also exported as a Paddle inference model with
``paddle.jit.save`` so the Paddle Inference and paddle2onnx-route rows can be measured; otherwise
those rows carry the reason. The generated tables go between markers in docs/benchmarks.md;
everything else in that file is left alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN GENERATED: lcpipe bench --matrix -->", "<!-- END GENERATED -->"
FIXES_BEGIN = "<!-- BEGIN GENERATED: python -m lcpipe.benchmark_matrix --fixes -->"
V1_CPU = "Xeon Gold 6148, Paddle Inference + MKLDNN"
V2_CPU = "Xeon Gold 6271C, OpenVINO benchmark_app"
log = logging.getLogger("lcpipe")


@dataclass(frozen=True)
class Published:
    """Figures from the PaddleClas docs (PP-LCNet_en.md, PP-LCNetV2_en.md); None: not published."""

    params_m: float | None
    flops_m: float | None
    top1: float | None
    latency_ms: float | None = None
    latency_cpu: str = ""


@dataclass(frozen=True)
class MatrixModel:
    key: str
    arch: str
    yaml: str
    published: Published
    synthetic: bool = True  # random weights in PaddleClas layout; False: the YAML's own (real) model


MODELS: tuple[MatrixModel, ...] = (
    MatrixModel("v1_x0_25", "PPLCNet_x0_25", "v1_int8.yaml", Published(1.5, 18, 51.86, 1.74, V1_CPU)),
    MatrixModel("v1_x0_5", "PPLCNet_x0_5", "v1_int8.yaml", Published(1.9, 47, 63.14, 2.05, V1_CPU)),
    MatrixModel("v1_x1_0", "PPLCNet_x1_0", "v1_int8.yaml", Published(3.0, 161, 71.32, 2.46, V1_CPU)),
    MatrixModel("v1_x2_5", "PPLCNet_x2_5", "v1_int8.yaml", Published(9.0, 906, 76.60, 5.39, V1_CPU)),
    MatrixModel("v2_small", "PPLCNetV2_small", "v2_int8.yaml", Published(None, None, 73.97)),
    MatrixModel("v2_base", "PPLCNetV2_base", "v2_int8.yaml", Published(6.6, 604, 77.04, 4.32, V2_CPU)),
    MatrixModel("v2_large", "PPLCNetV2_large", "v2_int8.yaml", Published(None, None, 78.51)),
    MatrixModel("textline", "PPLCNet_x0_25", "textline_ori_int8.yaml", Published(None, None, None), synthetic=False),
)
MATRIX_DEFAULTS: dict[str, Any] = {"rounds": 5, "iterations": 50, "eval_images": 200}


# ---------------------------------------------------------------- synthetic weights (no paddle)

def synthetic_tensors(spec: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors named and shaped like a PaddleClas checkpoint (fc.weight is [in, out]).
    He-normal convs and BN statistics near identity keep activations in a normal float range."""
    from lcpipe.models.layers import expected_shapes

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in expected_shapes(spec).items():
        if name.endswith("._variance"):
            arr = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("bn.weight"):
            arr = rng.uniform(0.6, 1.5, shape)
        elif len(shape) > 1:
            arr = rng.normal(0.0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)
        else:
            arr = rng.normal(0.0, 0.1, shape)
        out[name] = arr.astype(np.float32)
    out["fc.weight"] = np.ascontiguousarray(out["fc.weight"].T)
    return out


def write_pdparams(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    """A pickle laid out like ``paddle.save(state_dict)``: protocol 4, arrays + the name table."""
    obj: dict[str, Any] = dict(tensors)
    obj["StructuredToParameterName@@"] = {k: f"param_{i}.w_0" for i, k in enumerate(tensors)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


def model_spec(model: MatrixModel, config: Any) -> Any:
    from lcpipe.models.spec import ModelSpec, normalize_strides

    opts = config.model.options.model_dump(exclude_none=True)
    if "stride_list" in opts:
        opts["stride_list"] = normalize_strides(opts["stride_list"])
    return ModelSpec(arch=model.arch, **opts)


# ---------------------------------------------------------------- PaddleClas models (optional, dev only)

def _paddleclas() -> tuple[Any, Any, Any] | str:
    """(paddle, pp_lcnet, pp_lcnet_v2) or the reason they cannot be imported."""
    try:
        import paddle
        from paddleclas.ppcls.arch.backbone.legendary_models import pp_lcnet, pp_lcnet_v2
    except Exception as exc:  # paddleclas is a test-only package; its imports may fail in many ways
        return f"paddle/paddleclas not importable ({type(exc).__name__}: {exc})"
    return paddle, pp_lcnet, pp_lcnet_v2


def paddleclas_model(arch: str, config: Any, tensors: dict[str, np.ndarray], calib: np.ndarray) -> Any:
    """The PaddleClas network with ``tensors`` loaded, then BN statistics set from one real-image batch
    (train-mode forward, momentum 0): random weights otherwise give an input-insensitive network whose
    argmax never changes, which would make the agreement column meaningless."""
    paddle, pp_lcnet, pp_lcnet_v2 = _paddleclas()  # type: ignore[misc]
    kwargs = config.model.options.model_dump(exclude_none=True)
    module = pp_lcnet if arch.startswith("PPLCNet_") else pp_lcnet_v2
    if module is pp_lcnet_v2:
        kwargs.pop("dropout_prob", None)  # the V2 factories pass their own (0.2); inference scales by it only
    saved = copy.deepcopy(getattr(module, "NET_CONFIG", {}))
    try:
        net = getattr(module, arch)(pretrained=False, **kwargs)
    finally:
        if hasattr(module, "NET_CONFIG"):  # PPLCNet writes stride_list into this module-level dict
            module.NET_CONFIG.clear()
            module.NET_CONFIG.update(saved)
    net.set_state_dict({k: paddle.to_tensor(v) for k, v in tensors.items()})
    bns = [m for m in net.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    for bn in bns:
        bn._momentum = 0.0
    net.train()
    with paddle.no_grad():
        net(paddle.to_tensor(calib))
    for bn in bns:
        bn._momentum = 0.9
    net.eval()
    return net


def export_paddle_inference(net: Any, hw: tuple[int, int], folder: Path) -> Path:
    """Re-parameterize like PaddleClas's export_model.py, then paddle.jit.save (inference.json/.pdiparams)."""
    import paddle

    for layer in net.sublayers():
        if hasattr(layer, "re_parameterize") and getattr(layer, "use_rep", False):
            layer.re_parameterize()
    spec = [paddle.static.InputSpec([None, 3, *hw], "float32", name="x")]
    folder.mkdir(parents=True, exist_ok=True)
    paddle.jit.save(net, str(folder / "inference"), input_spec=spec)
    return folder


def _calib_batch(config: Any, n: int = 16) -> np.ndarray:
    from lcpipe.data import load_split

    return load_split(config.data, "calib", config.preprocess, None, progress=False).x[:n]


# ---------------------------------------------------------------- running the matrix

def prepare(model: MatrixModel, root: Path, paddle: bool) -> tuple[Any, dict[str, Any]]:
    """The pipeline config for a matrix entry (weights written once) and extra bench options.

    With paddleclas: BN-calibrated weights + a Paddle inference export of the same network.
    Without: plain random weights (input-insensitive), no Paddle rows."""
    from lcpipe.config import load_config

    yaml = PIPELINES / model.yaml
    if not model.synthetic:
        return load_config(yaml, [f"name=bench_{model.key}"]), {}
    weights = root / "weights" / f"{model.arch}.pdparams"
    folder = root / "paddle" / model.key
    config = load_config(yaml, [f"model.arch={model.arch}", f"model.source.path={weights}", f"name=bench_{model.key}"])
    pc = _paddleclas() if paddle else "disabled (--no-paddle)"
    if not weights.is_file() or (not isinstance(pc, str) and not (folder / "inference.json").is_file()):
        tensors = synthetic_tensors(model_spec(model, config))
        if isinstance(pc, str):
            log.warning("matrix: %s: %s; plain random weights (argmax agreement not meaningful)", model.key, pc)
            write_pdparams(weights, tensors)
        else:
            net = paddleclas_model(model.arch, config, tensors, _calib_batch(config))
            write_pdparams(weights, {k: v.numpy() for k, v in net.state_dict().items()})
            export_paddle_inference(net, config.preprocess.input_hw, folder)
    extra = {"paddle_model": str(folder)} if (folder / "inference.json").is_file() else {}
    return config, extra


def run_one(model: MatrixModel, root: Path, updates: dict[str, Any], paddle: bool, cache_dir: Path | None,
            force: bool) -> dict[str, Any]:
    from lcpipe.stages.bench import bench_pipeline

    config, extra = prepare(model, root, paddle)
    run_dir = root / "runs" / model.key
    result, _ = bench_pipeline(config, out=run_dir, cache_dir=cache_dir, force=force,
                               updates={**MATRIX_DEFAULTS, **extra, **updates})
    result["matrix"] = {"key": model.key, "arch": model.arch, "synthetic_weights": model.synthetic,
                        **_params_flops(run_dir, config.preprocess.input_hw)}
    return result


def _params_flops(run_dir: Path, input_hw: tuple[int, int]) -> dict[str, float | None]:
    """Deploy-form (BN folded, rep branches fused) params and conv/fc MACs in millions, for the spec the
    import stage recorded (the real textline model's head and strides included)."""
    import dataclasses

    from lcpipe.models.layers import count_params_flops
    from lcpipe.models.spec import ModelSpec, normalize_strides

    info_file = run_dir / "import" / "model_info.json"
    spec = json.loads(info_file.read_text()).get("spec") if info_file.is_file() else None
    if not spec:
        return {"params_m": None, "flops_m": None}
    names = {f.name for f in dataclasses.fields(ModelSpec)}
    spec = {k: v for k, v in spec.items() if k in names}
    if "stride_list" in spec:
        spec["stride_list"] = normalize_strides(spec["stride_list"])
    deploy = dataclasses.replace(ModelSpec(**spec), bn_folded=True, rep_fused=True)
    params, macs = count_params_flops(deploy, input_hw)
    return {"params_m": round(params / 1e6, 3), "flops_m": round(macs / 1e6, 1)}


def run_matrix(*, out: Path | None = None, keys: list[str] | None = None, docs: Path | None = None,
               updates: dict[str, Any] | None = None, cache_dir: Path | None = None, force: bool = False,
               paddle: bool = True) -> Path:
    """Benchmark the selected matrix entries, save matrix.json, write the tables into ``docs``."""
    from lcpipe.errors import ConfigError

    if not PIPELINES.is_dir():
        raise ConfigError(f"{PIPELINES}: the benchmark matrix needs a source checkout of lcpipe (pipelines/, "
                          "calib_data/)")
    root = (out or Path("runs") / "bench-matrix").resolve()
    known = {m.key: m for m in MODELS}
    unknown = [k for k in keys or [] if k not in known]
    if unknown:
        raise ConfigError(f"--models: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    selected = [known[k] for k in keys] if keys else list(MODELS)
    results = _load_previous(root)
    for model in selected:
        log.info("matrix: %s (%s)", model.key, model.arch)
        results[model.key] = run_one(model, root, dict(updates or {}), paddle, cache_dir, force)
        _save(root, results)
    docs = docs or DOCS
    _write_matrix_docs(docs, results)
    return docs


def _cap_of(results: list[dict[str, Any]]) -> str | None:
    return next((r["cpu"].get("isa_cap") for r in results if r.get("cpu", {}).get("isa_cap")), None)


def _write_matrix_docs(docs: Path, results: dict[str, Any]) -> None:
    """One generated block per ISA cap: the native run and e.g. an ONEDNN_MAX_CPU_ISA=AVX2 run coexist."""
    ordered = [results[m.key] for m in MODELS if m.key in results]
    cap = _cap_of(ordered)
    begin = BEGIN if not cap else BEGIN.replace(" -->", f" (ONEDNN_MAX_CPU_ISA={cap}) -->")
    title = "Scale table (generated by `lcpipe bench --matrix`)" + (
        f", oneDNN capped to {cap}" if cap else "")
    write_docs(docs, render_matrix(ordered), begin, title)


def _load_previous(root: Path) -> dict[str, Any]:
    """Results of earlier (partial) matrix runs in the same folder, so a subset re-run updates the table."""
    path = root / "matrix.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(root: Path, results: dict[str, Any]) -> None:
    from lcpipe.fileio import write_json

    write_json(root / "matrix.json", results)


# ---------------------------------------------------------------- tables

def _engine(result: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in result["engines"] if e["name"] == name and e["available"]), None)


def _p50(result: dict[str, Any], name: str) -> float | None:
    e = _engine(result, name)
    return e["latency_ms"]["p50"] if e else None


def _ips(result: dict[str, Any], name: str) -> float | None:
    e = _engine(result, name)
    return e["throughput"]["images_per_s"] if e else None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def _n(v: Any, fmt: str = "{:.2f}", missing: str = "n/p") -> str:
    """n/p: not published; measured figures pass missing="-" (engine not measured here)."""
    return missing if v is None else fmt.format(v)


def _m(v: Any, fmt: str = "{:.2f}") -> str:
    return _n(v, fmt, "-")


def _model_of(key: str) -> MatrixModel:
    return next(m for m in MODELS if m.key == key)


def scale_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """README-style scale table: ours (this machine) next to PaddleClas's published figures."""
    head = ["model", "params M (lcpipe / published)", "FLOPs M (lcpipe / published)", "published top-1",
            "published latency ms (their CPU)", "FP32 IR p50 ms", "INT8 IR p50 ms", "INT8 speed-up",
            "FP32 IR, plugin default (bf16 on AMX) p50 ms", "FP32 / INT8 img/s (batch 8)"]
    rows = [head]
    for r in results:
        m, pub = r["matrix"], _model_of(r["matrix"]["key"]).published
        fp32, int8 = _p50(r, "ov_fp32"), _p50(r, "ov_int8")
        hw = r["model"]["input_hw"]
        name = m["arch"] + ("" if hw == [224, 224] else f" {hw[0]}x{hw[1]}") + \
            ("" if m["synthetic_weights"] else " (real textline model)")
        rows.append([name, f"{m['params_m']:.2f} / {_n(pub.params_m, '{:.1f}')}",
                     f"{m['flops_m']:.0f} / {_n(pub.flops_m, '{:.0f}')}", _n(pub.top1, "{:.2f}%"),
                     _n(pub.latency_ms) + (f" ({pub.latency_cpu})" if pub.latency_cpu else ""),
                     _m(fp32), _m(int8), _ratio(fp32, int8), _m(_p50(r, "ov_fp32_default")),
                     f"{_m(_ips(r, 'ov_fp32'), '{:.0f}')} / {_m(_ips(r, 'ov_int8'), '{:.0f}')}"])
    return rows


ENGINE_COLS = (("ov_fp32", "OV FP32 IR"), ("ov_int8", "OV INT8 IR"), ("ov_fp32_default", "OV FP32 default prec."),
               ("ov_p2o_fp32", "paddle2onnx -> OV"), ("ort_fp32", "ORT FP32"), ("ort_int8", "ORT INT8 QDQ"),
               ("paddle_onednn", "Paddle oneDNN"))


def engine_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Batch-1 p50 ms of every engine per model, then the ratios the goals are about."""
    head = ["model", *(c for _, c in ENGINE_COLS), "FP32 IR vs p2o / ORT FP32", "INT8 vs ORT INT8 / Paddle"]
    rows = [head]
    for r in results:
        p = {n: _p50(r, n) for n, _ in ENGINE_COLS}
        rows.append([r["matrix"]["key"], *(_m(p[n]) for n, _ in ENGINE_COLS),
                     f"{_ratio(p['ov_p2o_fp32'], p['ov_fp32'])} / {_ratio(p['ort_fp32'], p['ov_fp32'])}",
                     f"{_ratio(p['ort_int8'], p['ov_int8'])} / {_ratio(p['paddle_onednn'], p['ov_int8'])}"])
    return rows


def goal_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Goals re-evaluated from the stored engine figures (so a re-render follows the current rules)."""
    from lcpipe.measure.goals import evaluate_goals
    from lcpipe.render.bench import goal_target

    rows = [["model", "goal", "value", "target", "result"]]
    for r in results:
        isa = r["cpu"].get("effective_isa", r["cpu"]["isa"])
        for g in evaluate_goals(r["engines"], r["model"].get("arch"), isa):
            verdict = "n/a" if g["passed"] is None else "met" if g["passed"] else "MISSED"
            verdict += " (tie)" if g.get("note", "").startswith("tie") else ""
            rows.append([r["matrix"]["key"], g["description"], _m(g["value"], "{:.2f}x"),
                         f"{goal_target(g)} ({g['isa_key']})", verdict])
    return rows


def agreement_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["model", *(c for _, c in ENGINE_COLS)]]
    for r in results:
        cells = []
        for n, _ in ENGINE_COLS:
            e = _engine(r, n)
            a = e and e["accuracy"]["agreement"]
            cells.append("n/a" if a is None else f"{100 * a:.1f}%")
        rows.append([r["matrix"]["key"], *cells])
    return rows


def unavailable_notes(results: list[dict[str, Any]]) -> list[str]:
    notes: dict[str, set[str]] = {}
    for r in results:
        for e in r["engines"]:
            if not e["available"]:
                notes.setdefault(f"{e['name']}: {' '.join(str(e['reason']).split())}", set()).add(r["matrix"]["key"])
    return [f"- {text} ({', '.join(sorted(keys))})" for text, keys in notes.items()]


def render_matrix(results: list[dict[str, Any]]) -> str:
    from lcpipe.render.tables import md_table

    if not results:
        return "(no results)"
    r0 = results[0]
    cpu = r0["cpu"]
    spreads = [r["noise"]["max_round_spread"] for r in results if r["noise"]["max_round_spread"] is not None]
    loads = [v for r in results for v in (r.get("load_avg") or {}).get("before") or []][::3]
    cap = (f"; oneDNN capped with `ONEDNN_MAX_CPU_ISA={cpu['isa_cap']}` (OpenVINO and Paddle use "
           f"{cpu['effective_isa']} kernels; ONNX Runtime is not capped)" if cpu.get("isa_cap") else "")
    parts = [
        f"Measured on **{cpu['model']}**, ISA `{cpu['isa']}` (flags: {' '.join(cpu['flags'])}){cap}, "
        f"{r0['threads']} threads for every engine, {cpu['cores']} cores. Versions: "
        + ", ".join(f"{k} {v}" for k, v in r0["versions"].items() if k != "lcpipe") + ".",
        "",
        f"Latency: {r0['definitions']['latency']}; throughput: {r0['definitions']['throughput']}. "
        f"{r0['rounds']} rounds x {r0['iterations']} calls per engine. Round-to-round spread of the medians: "
        f"{100 * min(spreads):.0f}-{100 * max(spreads):.0f}% (1-min load average at the start of each model: "
        f"{', '.join(f'{v:.2f}' for v in loads)}).",
        "",
        "FLOPs are multiply-accumulates of convs and FC (lcpipe.models.layers.count_params_flops, deploy form); "
        "PaddleClas's counts include a little more (SE, BN), hence 156 vs 161 M for x1.0. Published latencies were "
        "measured on other CPUs with other engines and threads; only the columns measured here compare with "
        "each other. ImageNet-size rows use random weights (latency does not depend on values), so their "
        "top-1 is not meaningful; agreement still shows how far each engine's argmax follows lcpipe FP32.",
        "",
        "### Scale table", "", md_table(scale_rows(results)), "",
        "### All engines, batch-1 p50 latency (ms)", "", md_table(engine_rows(results)), "",
        "### Goals", "", md_table(goal_rows(results)), "",
        "### Argmax agreement with lcpipe FP32 (first 200 eval images)", "", md_table(agreement_rows(results)), "",
    ]
    notes = unavailable_notes(results)
    if notes:
        parts += ["Engines not measured:", "", *notes, ""]
    return "\n".join(parts)


def write_docs(path: Path, generated: str, begin: str = BEGIN,
               title: str = "Scale table (generated by `lcpipe bench --matrix`)") -> None:
    """Replace the text between ``begin`` and the next END marker (append a section when absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    block = f"{begin}\n{generated.rstrip()}\n{END}"
    if begin in text and END in text.split(begin, 1)[1]:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- INT8 fixes (NNCF / OpenVINO options)

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
    from lcpipe.config import load_config
    from lcpipe.stages.bench import bench_pipeline

    root = (out or Path("runs") / "bench-matrix").resolve()
    path = root / "fixes.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for key in keys:
        model = _model_of(key)
        config, _ = prepare(model, root, paddle)
        preset = (config.stage_options("quantize").preset or
                  ("mixed" if config.model.options.act == "hardswish" else "performance"))
        flip = "performance" if preset == "mixed" else "mixed"
        for i, (label, sets, bench_updates) in enumerate(FIX_VARIANTS):
            overrides = [o.format(flip=flip) for o in sets]
            cfg = load_config(config.source_file, _overrides_of(model, root) + overrides)
            log.info("fixes: %s / %s", key, label)
            try:
                result, folder = bench_pipeline(cfg, out=root / "fixes" / key / f"v{i}", updates={
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
    cap = _cap_of([v for variants in results.values() for v in variants.values()])
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
    from lcpipe.render.tables import md_table

    parts = []
    for key, variants in results.items():
        rows = [["variant", "FP32 IR p50 ms", "INT8 IR p50 ms", "INT8 speed-up", "INT8 convs+matmuls",
                 "INT8 agreement", "profile INT8: conv / groupconv / other ms"]]
        for _, r in sorted(variants.items(), key=lambda kv: int(kv[0])):
            if "error" in r["fix"]:
                rows.append([r["fix"]["label"], *["-"] * 5, f"failed: {r['fix']['error']}"])
                continue
            fp32, int8 = _p50(r, "ov_fp32"), _p50(r, "ov_int8")
            q = (r["fix"]["quantize"].get("int8") or {})
            e = _engine(r, "ov_int8")
            if e is None:
                why = next((x["reason"] for x in r["engines"] if x["name"] == "ov_int8"), "") or ""
                rows.append([r["fix"]["label"], _m(fp32), "-", "-", f"{q.get('quantized')}/{q.get('quantizable')}",
                             "-", f"INT8 IR did not compile: {' '.join(why.split())[:90]}"])
                continue
            types = ((r["fix"]["profile"].get("ov_int8") or {}).get("by_type") or {})
            conv, group = types.get("Convolution", 0.0), types.get("GroupConvolution", 0.0)
            other = sum(types.values()) - conv - group
            rows.append([r["fix"]["label"], _m(fp32), _m(int8), _ratio(fp32, int8),
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


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lcpipe.benchmark_matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--models", help=f"comma-separated subset of: {', '.join(m.key for m in MODELS)}")
    parser.add_argument("--out", type=Path, help="matrix folder [runs/bench-matrix]")
    parser.add_argument("--docs", type=Path, help=f"markdown file for the tables [{DOCS}]")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--no-paddle", action="store_true", help="skip the Paddle inference export")
    parser.add_argument("--render-only", action="store_true", help="re-render the tables from matrix.json")
    parser.add_argument("--fixes", action="store_true", help=f"try the INT8 fixes on {', '.join(FIX_MODELS)} "
                        "(or --models) instead of the matrix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("nncf", "openvino"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.render_only:
        root = (args.out or Path("runs") / "bench-matrix").resolve()
        _write_matrix_docs(args.docs or DOCS, _load_previous(root))
        fixes = root / "fixes.json"
        if fixes.is_file():
            run_fixes(out=root, keys=(), docs=args.docs)
        return
    updates = {k: v for k, v in (("threads", args.threads), ("rounds", args.rounds),
                                 ("iterations", args.iterations)) if v is not None}
    keys = [k.strip() for k in args.models.split(",")] if args.models else None
    if args.fixes:
        docs = run_fixes(out=args.out, keys=keys or FIX_MODELS, docs=args.docs, updates=updates,
                         paddle=not args.no_paddle)
        print(f"fixes table written to {docs}")
        return
    docs = run_matrix(out=args.out, keys=keys, docs=args.docs, updates=updates, paddle=not args.no_paddle)
    print(f"scale table written to {docs}")


if __name__ == "__main__":
    main()
