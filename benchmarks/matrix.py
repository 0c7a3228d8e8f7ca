"""The benchmark matrix: every PP-LCNet scale through ``lcpipe bench``, and the scale table.

    python -m benchmarks.matrix [--models v1_x1_0,v2_base] [--out runs/bench-matrix]
    lcpipe bench --matrix                                   # same, through the CLI (from a checkout)

Tens of minutes on a 2-core VM; not part of CI. Latency does not depend on weight values, so the
ImageNet-size models use random weights in PaddleClas's checkpoint layout (shapes from
lcpipe.models.layers.expected_shapes, written as a .pdparams pickle without paddle); the textline
model is the real one shipped in lcpipe/examples/textline_ori_int8/models. When paddle and the (test-only) paddleclas
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
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import MATRIX_DEFAULTS, MODELS, MatrixModel
from benchmarks.tables import BEGIN, isa_cap_of, render_matrix, write_docs
from lcpipe.models.bn_stats import set_bn_statistics

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"
DOCS = REPO / "docs" / "benchmarks.md"
log = logging.getLogger("lcpipe")


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
    set_bn_statistics(net, calib)
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
    Without: plain random weights (input-insensitive), no Paddle rows. The pipeline's ``plan`` stage is
    left out: the matrix compares the quantize stage's INT8 IR with the other engines (its ov_int8 row);
    the shipped plan against the user's baseline is benchmarks/shipped_goals.py's."""
    from lcpipe.runner import load_config

    yaml = PIPELINES / model.yaml
    if not model.synthetic:
        return _without_plan(load_config(yaml, [f"name=bench_{model.key}"])), {}
    weights = root / "weights" / f"{model.arch}.pdparams"
    folder = root / "paddle" / model.key
    config = _without_plan(load_config(yaml, [f"model.arch={model.arch}", f"model.source.path={weights}",
                                              f"name=bench_{model.key}"]))
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


def _without_plan(config: Any) -> Any:
    return config.model_copy(update={"stages": [s for s in config.stages if s.name != "plan"]})


def run_one(model: MatrixModel, root: Path, updates: dict[str, Any], paddle: bool, cache_dir: Path | None,
            force: bool) -> dict[str, Any]:
    config, extra = prepare(model, root, paddle)
    run_dir = root / "runs" / model.key
    result, _ = bench(config, run_dir, {**MATRIX_DEFAULTS, **extra, **updates}, cache_dir=cache_dir, force=force)
    result["matrix"] = {"key": model.key, "arch": model.arch, "synthetic_weights": model.synthetic,
                        **_params_flops(run_dir, config.preprocess.input_hw)}
    return result


def bench(config: Any, out: Path, updates: dict[str, Any], *, cache_dir: Path | None = None,
          force: bool = False) -> tuple[dict[str, Any], Path]:
    """`lcpipe bench` on ``config``: bench.json's content and the bench folder."""
    from lcpipe.runner import run_stage_after

    folder, outputs = run_stage_after(config, "bench", purpose="lcpipe bench --matrix", updates=updates, out=out,
                                      cache_dir=cache_dir, force=force)
    from lcpipe.records import BenchRecord

    return BenchRecord.load(outputs["bench"]).to_dict(), folder


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


def _write_matrix_docs(docs: Path, results: dict[str, Any]) -> None:
    """One generated block per ISA cap: the native run and e.g. an ONEDNN_MAX_CPU_ISA=AVX2 run coexist."""
    ordered = [results[m.key] for m in MODELS if m.key in results]
    cap = isa_cap_of(ordered)
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


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> None:
    from benchmarks.fixes import FIX_MODELS, run_fixes  # fixes builds on this module

    parser = argparse.ArgumentParser(prog="python -m benchmarks.matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--models", help=f"comma-separated subset of: {', '.join(m.key for m in MODELS)}")
    parser.add_argument("--out", type=Path, help="matrix folder [runs/bench-matrix]")
    parser.add_argument("--docs", type=Path, help=f"markdown file for the tables [{DOCS}]")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--bench-options", type=json.loads, default={},
                        help="JSON object of bench stage options for every entry (as `lcpipe bench --matrix` passes)")
    parser.add_argument("--cache-dir", type=Path, help="stage cache [$LCPIPE_CACHE_DIR or the user cache]")
    parser.add_argument("--force", action="store_true", help="recompute the pipeline stages, ignoring the cache")
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
    updates = {**args.bench_options, **{k: v for k, v in (("threads", args.threads), ("rounds", args.rounds),
                                                          ("iterations", args.iterations)) if v is not None}}
    keys = [k.strip() for k in args.models.split(",")] if args.models else None
    if args.fixes:
        docs = run_fixes(out=args.out, keys=keys or FIX_MODELS, docs=args.docs, updates=updates,
                         paddle=not args.no_paddle)
        print(f"fixes table written to {docs}")
        return
    docs = run_matrix(out=args.out, keys=keys, docs=args.docs, updates=updates, cache_dir=args.cache_dir,
                      force=args.force, paddle=not args.no_paddle)
    print(f"scale table written to {docs}")


if __name__ == "__main__":
    from lcpipe.errors import LcpipeError

    try:
        main()
    except LcpipeError as exc:  # one line and lcpipe's exit code, as the lcpipe command does
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
