"""Shared test helpers: real images, reference models with randomized BatchNorm, pipeline runs.

Reference frameworks (paddle / paddleclas / torch / timm) are imported inside the functions
so that importing this module stays cheap and tests can skip cleanly when one is missing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"
V1_YAML = PIPELINES / "v1_export.yaml"
V2_YAML = PIPELINES / "v2_export.yaml"
_IMAGE_DIRS = (REPO / "calib_data" / "imagenet" / "images",)

# Exactness criterion of the issue: max |a - b| <= REL_TOL * max(1, max |logit|), same argmax.
REL_TOL = 1e-4


def checkout_module(name: str) -> Any:
    """A module of the checkout's top-level developer folders (benchmarks/), which are not installed;
    the checkout is appended to sys.path so an installed lcpipe still wins."""
    import importlib
    import sys

    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    return importlib.import_module(name)


def image_dir() -> Path | None:
    for d in _IMAGE_DIRS:
        if d.is_dir() and any(d.glob("*.JPEG")):
            return d
    return None


def real_image_paths(n: int, offset: int = 0) -> list[Path]:
    """``n`` real ImageNet images (sorted, from ``offset``); empty when none are available."""
    d = image_dir()
    if d is None:
        return []
    return sorted(d.glob("*.JPEG"))[offset:offset + n]


def copy_into(paths: list[Path], folder: Path) -> Path:
    """Copies of ``paths`` in a new ``folder`` (a test may spoil them)."""
    import shutil

    folder.mkdir(parents=True)
    for p in paths:
        shutil.copy(p, folder / p.name)
    return folder


def load_batch(paths: list[Path], pre: Any) -> np.ndarray:
    """Images preprocessed per a PreprocessConfig, stacked NCHW float32."""
    from lcpipe.data import load_image

    return np.stack([load_image(p, pre) for p in paths]).astype(np.float32)


def assert_logits_close(ref: np.ndarray, got: np.ndarray, what: str) -> float:
    """The exactness criterion; returns the max abs diff (for the report)."""
    assert ref.shape == got.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    diff = float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max())
    scale = max(1.0, float(np.abs(ref).max()))
    assert diff <= REL_TOL * scale, f"{what}: max abs diff {diff:.3e} > {REL_TOL} x {scale:.3f}"
    np.testing.assert_array_equal(ref.argmax(1), got.argmax(1), err_msg=f"{what}: argmax differs")
    return diff


def ort_logits(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


# ------------------------------------------------------------------ PaddleClas

V1_FACTORIES = {"PPLCNet_x0_25", "PPLCNet_x0_35", "PPLCNet_x0_5", "PPLCNet_x0_75", "PPLCNet_x1_0",
                "PPLCNet_x1_5", "PPLCNet_x2_0", "PPLCNet_x2_5"}


def build_paddleclas(arch: str, calib: np.ndarray | None = None, seed: int = 0, **kwargs: Any) -> Any:
    """A PaddleClas model in eval mode with every BN statistic/affine and every bias randomized.

    With ``calib`` (a real-image batch), BN statistics start from that batch's statistics (as a
    trained network's would) so the random network stays input-sensitive, then are perturbed."""
    import paddle
    from paddleclas.ppcls.arch.backbone.legendary_models import pp_lcnet, pp_lcnet_v2

    paddle.seed(seed)
    if arch in V1_FACTORIES:
        # PPLCNet writes stride_list into the module-level NET_CONFIG; keep the module pristine.
        saved = copy.deepcopy(pp_lcnet.NET_CONFIG)
        try:
            model = getattr(pp_lcnet, arch)(pretrained=False, **kwargs)
        finally:
            pp_lcnet.NET_CONFIG.clear()
            pp_lcnet.NET_CONFIG.update(saved)
    else:
        model = getattr(pp_lcnet_v2, arch)(pretrained=False, **kwargs)
    randomize_paddle(model, seed, calib)
    model.eval()
    return model


def randomize_paddle(model: Any, seed: int, calib: np.ndarray | None = None) -> None:
    import paddle

    rng = np.random.default_rng(seed)
    bns = [m for m in model.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    for layer in model.sublayers():
        if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear)) and layer.bias is not None:
            c = layer.bias.shape[0]
            layer.bias.set_value(rng.normal(0.0, 0.1, c).astype(np.float32))
    for layer in bns:
        c = layer._mean.shape[0]
        layer.weight.set_value(rng.uniform(0.6, 1.5, c).astype(np.float32))
        layer.bias.set_value(rng.normal(0.0, 0.2, c).astype(np.float32))
    if calib is not None:  # running stats := this batch's stats, layer by layer
        from lcpipe.models.bn_stats import set_bn_statistics

        set_bn_statistics(model, calib)
    for layer in bns:
        c = layer._mean.shape[0]
        mean = layer._mean.numpy() if calib is not None else np.zeros(c, np.float32)
        var = layer._variance.numpy() if calib is not None else np.ones(c, np.float32)
        layer._mean.set_value((mean + rng.normal(0.0, 0.2, c) * np.sqrt(var)).astype(np.float32))
        layer._variance.set_value((var * rng.uniform(0.5, 2.0, c)).astype(np.float32))


def paddle_logits(model: Any, x: np.ndarray) -> np.ndarray:
    import paddle

    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def save_pdparams(model: Any, path: Path) -> Path:
    import paddle

    path.parent.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(path))
    return path


def paddle_reparameterize(model: Any) -> int:
    """PaddleClas's own fusion: call re_parameterize() on every sublayer that has it."""
    n = 0
    for layer in model.sublayers():
        if hasattr(layer, "re_parameterize") and getattr(layer, "use_rep", False):
            layer.re_parameterize()
            n += 1
    return n


# ------------------------------------------------------------------ timm

def build_timm(name: str, calib: np.ndarray | None = None, seed: int = 0) -> Any:
    """timm model (no hub download) in eval mode, BN randomized like build_paddleclas."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    rng = np.random.default_rng(seed)

    def t(a: np.ndarray) -> Any:
        return torch.from_numpy(np.asarray(a, dtype=np.float32))

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.copy_(t(rng.normal(0.0, 0.1, m.bias.shape[0])))
        for m in bns:
            c = m.num_features
            m.weight.copy_(t(rng.uniform(0.6, 1.5, c)))
            m.bias.copy_(t(rng.normal(0.0, 0.2, c)))
        if calib is not None:  # running stats := this batch's stats (momentum 1)
            for m in bns:
                m.momentum = 1.0
            model.train()
            model(torch.from_numpy(calib))
            for m in bns:
                m.momentum = 0.1
        model.eval()
        for m in bns:
            c = m.num_features
            mean = m.running_mean.numpy() if calib is not None else np.zeros(c)
            var = m.running_var.numpy() if calib is not None else np.ones(c)
            m.running_mean.copy_(t(mean + rng.normal(0.0, 0.2, c) * np.sqrt(var)))
            m.running_var.copy_(t(var * rng.uniform(0.5, 2.0, c)))
    return model


def torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# ------------------------------------------------------------------ pipeline

@dataclass
class Exported:
    weights: Path
    onnx: Path
    run_dir: Path
    pre: Any  # PreprocessConfig
    reference: Any  # the framework model (eval mode)
    result: Any  # RunResult


def run_export(yaml_path: Path, overrides: list[str], out: Path, cache_dir: Path, **kw: Any) -> Any:
    """import -> fuse -> export through the YAML pipeline (stops at export whatever follows)."""
    import lcpipe

    cfg = lcpipe.load_config(yaml_path, overrides=overrides)
    kw.setdefault("until", "export")
    return lcpipe.run_pipeline(cfg, out=out, cache_dir=cache_dir, **kw)


@dataclass(frozen=True)
class PaddleCase:
    arch: str
    yaml: Path
    overrides: tuple[str, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()  # PaddleClas constructor options


PULC_STRIDES = "[2, [2, 1], [2, 1], [2, 1], [2, 1]]"
PADDLE_CASES: dict[str, PaddleCase] = {
    "x0_25": PaddleCase("PPLCNet_x0_25", V1_YAML),
    "x1_0": PaddleCase("PPLCNet_x1_0", V1_YAML),
    "x2_5": PaddleCase("PPLCNet_x2_5", V1_YAML),
    # PULC text-line orientation layout: 4 classes here, no last conv, (2, 1) strides, 80x160 input.
    "pulc_x0_25": PaddleCase(
        "PPLCNet_x0_25", V1_YAML,
        ("model.options.class_num=4", "model.options.use_last_conv=false",
         f"model.options.stride_list={PULC_STRIDES}", "preprocess.mode=resize", "preprocess.size=[80, 160]"),
        (("class_num", 4), ("use_last_conv", False), ("stride_list", [2, [2, 1], [2, 1], [2, 1], [2, 1]]))),
    # PaddleClas options beyond the defaults: activation, head width, dropout, class count.
    "x0_35_relu6": PaddleCase(
        "PPLCNet_x0_35", V1_YAML,
        ("model.options.act=relu6", "model.options.dropout_prob=0.1", "model.options.class_num=10"),
        (("act", "relu6"), ("class_expand", 640), ("dropout_prob", 0.1), ("class_num", 10))),
    "v2_small": PaddleCase("PPLCNetV2_small", V2_YAML, ("model.arch=PPLCNetV2_small",)),
    "v2_small_hardswish": PaddleCase(
        "PPLCNetV2_small", V2_YAML, ("model.arch=PPLCNetV2_small", "model.options.act=hardswish",
                                     "model.options.use_last_conv=false", "model.options.class_num=2"),
        (("act", "hardswish"), ("use_last_conv", False), ("class_num", 2))),
    "v2_base": PaddleCase("PPLCNetV2_base", V2_YAML, ("model.arch=PPLCNetV2_base",)),
    "v2_large": PaddleCase("PPLCNetV2_large", V2_YAML, ("model.arch=PPLCNetV2_large",)),
}


def case_config(case: PaddleCase, weights: Path | str) -> Any:
    import lcpipe

    return lcpipe.load_config(case.yaml, overrides=[*case.overrides, f"model.source.path={weights}"])


def export_paddle_case(name: str, root: Path, calib_paths: list[Path], cache_dir: Path) -> Exported:
    case = PADDLE_CASES[name]
    weights = root / f"{case.arch}.pdparams"
    pre = case_config(case, weights).preprocess
    model = build_paddleclas(case.arch, load_batch(calib_paths, pre), **dict(case.kwargs))
    save_pdparams(model, weights)
    result = run_export(case.yaml, [*case.overrides, f"model.source.path={weights}"], root / "run", cache_dir)
    return Exported(weights, result.artifacts["onnx"], result.run_dir, pre, model, result)


def export_timm(name: str, fmt: str, root: Path, calib_paths: list[Path], cache_dir: Path) -> Exported:
    import torch

    overrides = ["model.arch=auto", "preprocess.mode=timm", f"model.source.format={fmt}"]
    weights = root / ("weights.pth" if fmt == "torch" else "weights.safetensors")
    import lcpipe

    pre = lcpipe.load_config(V1_YAML, overrides=[*overrides, f"model.source.path={weights}"]).preprocess
    model = build_timm(name, load_batch(calib_paths, pre))
    root.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == "torch":
        torch.save(sd, weights)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(weights))
    result = run_export(V1_YAML, [*overrides, f"model.source.path={weights}"], root / "run", cache_dir)
    return Exported(weights, result.artifacts["onnx"], result.run_dir, pre, model, result)


# ------------------------------------------------------------------ synthetic checkpoints (no paddle)

def synthetic_tensors(arch: str, seed: int = 0, **spec: Any) -> dict[str, np.ndarray]:
    """Random tensors named and shaped like a PaddleClas training checkpoint (fc.weight [in, out])."""
    from lcpipe.models.layers import expected_shapes
    from lcpipe.models.spec import ModelSpec, normalize_strides

    if "stride_list" in spec:
        spec["stride_list"] = normalize_strides(spec["stride_list"])
    shapes = expected_shapes(ModelSpec(arch=arch, **spec))
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name.endswith("._variance"):
            arr = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("bn.weight"):
            arr = rng.uniform(0.6, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            arr = rng.normal(0.0, 1.0 / np.sqrt(fan_in) if len(shape) > 1 else 0.1, shape)
        out[name] = arr.astype(np.float32)
    out["fc.weight"] = np.ascontiguousarray(out["fc.weight"].T)
    return out


def write_pdparams(path: Path, tensors: dict[str, Any], name_table: bool = True) -> Path:
    """Pickle like paddle.save(state_dict): protocol 4, arrays + the structured-name table."""
    import pickle

    obj: dict[str, Any] = dict(tensors)
    if name_table:
        obj["StructuredToParameterName@@"] = {k: f"param_{i}.w_0" for i, k in enumerate(tensors)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


def synthetic_pdparams(path: Path, arch: str = "PPLCNet_x0_25", seed: int = 0, **spec: Any) -> Path:
    return write_pdparams(path, synthetic_tensors(arch, seed, **spec))


def write_yaml(path: Path, text: str) -> Path:
    import textwrap

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


MINIMAL_YAML = """\
name: t
model:
  source: {{format: pdparams, path: {path}}}
  arch: auto
stages:
  - import: {{}}
  - fuse: {{}}
  - export: {{opset: 17}}
"""


TEXT_LINES = REPO / "lcpipe" / "examples" / "textline_ori_int8" / "text_lines"
TEXTLINE_MODEL = REPO / "lcpipe" / "examples" / "textline_ori_int8" / "models" / "PP-LCNet_x0_25_textline_ori"


def textline_yaml(path: Path, extra_stages: str = "") -> Path:
    """A small pipeline on the shipped real textline model (8 calibration lines), up to quantize
    plus ``extra_stages`` (YAML list items, one per line)."""
    import pytest

    if not (TEXTLINE_MODEL / "inference.json").is_file() or not (TEXT_LINES / "eval.txt").is_file():
        pytest.skip("shipped text-line model / data not available")
    lines = TEXT_LINES / "lines"
    extra = "".join(f"\n          {line.strip()}" for line in extra_stages.strip().splitlines())
    return write_yaml(path, f"""
        name: textline_small
        model:
          source: {{format: paddle_inference, path: {TEXTLINE_MODEL}}}
        preprocess: {{mode: resize, size: [80, 160]}}
        data:
          calib: {{images: {lines}, labels: {TEXT_LINES / 'calib.txt'}, rotations: [0, 180], count: 8}}
          eval: {{images: {lines}, labels: {TEXT_LINES / 'eval.txt'}, rotations: [0, 180]}}
        stages:
          - import: {{}}
          - fuse: {{}}
          - export: {{opset: 17}}
          - convert: {{batch: 1}}
          - quantize: {{subset_size: 16}}{extra}
        """)
