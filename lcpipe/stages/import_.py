"""import: weights file / inference model / ONNX -> canonical model (or an adopted ONNX)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from lcpipe.config import PipelineConfig
from lcpipe.fileio import content_sha256, write_json
from lcpipe.stages.base import Stage, StageContext, StageOptions


class ImportOptions(StageOptions):
    paddle2onnx_opset: int = 17  # for paddle_inference sources (>= 14 keeps HardSwish native)
    strip_softmax: bool = True  # adopted ONNX / inference models: validate on logits


def _check_model(model: Any, path: Path) -> None:
    """What no importer may hand on: fewer than 2 classes (argmax always agrees), a negative BN variance."""
    from lcpipe.errors import InputError
    from lcpipe.importers.finite import check_bn_variance

    if model.spec.class_num < 2:
        raise InputError(f"{path}: the model has {model.spec.class_num} class; lcpipe validates classifiers by "
                         f"argmax, which needs 2 classes or more")
    check_bn_variance(model.tensors, str(path))


def resolve_source(config: PipelineConfig, cache_dir: Path, log: logging.Logger | None = None) -> Path:
    """The model's local path: a checked local file or folder, a download, or an unpacked archive,
    all under ``cache_dir`` (a local path wins over url, so --set model.source.path=... works offline)."""
    from lcpipe.sources import fetch_source

    return fetch_source(config.model.source, cache_dir, log=log)


class ImportStage(Stage):
    name = "import"
    Options = ImportOptions
    produces = ("canonical", "source_onnx", "model_info")
    uses_config = ("model",)
    summary = "read weights (pdparams | torch | safetensors | paddle_inference | onnx) into lcpipe's canonical form"

    def cache_salt(self, config: PipelineConfig) -> str:
        """What the result depends on beyond the ``model`` section: a local source's content (checked
        against its sha256 here, so a mismatch stops the run before anything is computed). A URL
        source is pinned by its sha256, or by the URL itself (downloaded once per cache), both of
        which the ``model`` section already holds: nothing is downloaded to compute the key."""
        src = config.model.source
        if src.path:
            from lcpipe.sources import check_local

            return content_sha256(check_local(src))
        return src.sha256 or f"url:{src.url}"

    def run(self, ctx: StageContext, options: ImportOptions, inputs: dict[str, Path]) -> dict[str, Path]:
        if ctx.cache_dir is not None:
            return self._import(ctx, options, resolve_source(ctx.config, ctx.cache_dir, ctx.log))
        # no cache: downloads and unpacked archives live only as long as this stage
        with tempfile.TemporaryDirectory(prefix="lcpipe-source-") as tmp:
            return self._import(ctx, options, resolve_source(ctx.config, Path(tmp), ctx.log))

    def _import(self, ctx: StageContext, options: ImportOptions, path: Path) -> dict[str, Path]:
        cfg = ctx.config.model
        fmt = cfg.source.format
        opts = cfg.options.model_dump(exclude_none=True)
        info: dict[str, Any] = {"source": str(path), "format": fmt, "sha256": content_sha256(path)}
        out: dict[str, Path] = {}
        if fmt in ("pdparams", "torch", "safetensors"):
            from lcpipe.importers.checkpoint import import_checkpoint

            model = import_checkpoint(path, fmt, cfg.arch, opts)
        elif fmt == "paddle_inference":
            from lcpipe.importers.paddle_inference import import_paddle_inference

            model, onnx_path, meta = import_paddle_inference(
                path, opset=options.paddle2onnx_opset, arch=cfg.arch, options=opts, work_dir=ctx.workdir)
            info.update(meta)
            info.update(format=fmt, paddle_format=meta.get("format"), paddle2onnx_onnx=Path(onnx_path).name)
            out["source_onnx"] = Path(onnx_path)
        else:  # onnx: rebuild a PP-LCNet graph into the canonical form, else adopt it as is
            from lcpipe.importers.onnx_adopt import adopt_onnx
            from lcpipe.importers.onnx_read import load_onnx
            from lcpipe.importers.onnx_rebuild import canonical_from_onnx

            adopted = ctx.workdir / "model.onnx"
            info.update(adopt_onnx(path, strip_softmax=options.strip_softmax, out_path=adopted))
            model, rebuilt = canonical_from_onnx(load_onnx(path), arch=cfg.arch, options=opts)
            info.update(rebuilt)
            if model is None:
                out["source_onnx"] = adopted
                ctx.log.info("import: %s", rebuilt.get("adopted_reason", "adopted as is"))
            else:
                adopted.unlink()
        if model is not None:
            _check_model(model, path)
            model.save(ctx.workdir / "canonical")
            out["canonical"] = ctx.workdir / "canonical"
            info["spec"] = model.spec.to_dict()
            ctx.log.info("import: %s (%d classes, %d tensors) from %s", model.spec.arch, model.spec.class_num,
                         len(model.tensors), path.name)
        write_json(ctx.workdir / "model_info.json", info)
        out["model_info"] = ctx.workdir / "model_info.json"
        return out
