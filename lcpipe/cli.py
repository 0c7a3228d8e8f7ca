"""Command line: a thin click layer over the Python API (heavy imports happen inside commands)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from lcpipe import __version__
from lcpipe.errors import LcpipeError

STAGE_NAMES = ("import", "fuse", "export", "convert", "quantize", "validate", "report")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("lcpipe").setLevel(level)
    if verbose < 2:  # nncf / openvino are chatty at INFO
        for name in ("nncf", "openvino"):
            logging.getLogger(name).setLevel(logging.WARNING)


class _Group(click.Group):
    """Turn lcpipe errors into one line and their exit code; anything else is a bug (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LcpipeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lcpipe")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug, also nncf/openvino).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """PP-LCNet / PP-LCNetV2 weights -> validated INT8 OpenVINO IR."""
    _setup_logging(verbose, quiet)


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory [runs/<name>/].")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a config key (YAML-typed value); stage options: stages.<stage>.<key>=...")
@click.option("--from", "from_stage", metavar="STAGE", help="Start at this stage (earlier outputs from --out).")
@click.option("--until", metavar="STAGE", help="Stop after this stage.")
@click.option("--force", is_flag=True, help="Recompute every stage, ignoring the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Stage cache [$LCPIPE_CACHE_DIR or the user cache dir].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the stage cache.")
def run(pipeline: Path, out: Path | None, overrides: tuple[str, ...], from_stage: str | None, until: str | None,
        force: bool, cache_dir: Path | None, no_cache: bool) -> None:
    """Run PIPELINE.yaml. Exit 0 ok, 2 bad config/input, 3 a gate failed, 1 unexpected error."""
    from lcpipe.errors import GateFailedError
    from lcpipe.runner import run_pipeline

    result = run_pipeline(pipeline, out=out, overrides=overrides, from_stage=from_stage, until=until,
                          force=force, cache_dir=cache_dir, no_cache=no_cache)
    if result.metrics:
        from lcpipe.report_text import render_summary

        click.echo(render_summary(result.metrics))
    click.echo(f"run directory: {result.run_dir}")
    if result.failed_gates:
        names = ", ".join(g["name"] for g in result.failed_gates)
        raise GateFailedError(f"{len(result.failed_gates)} gate(s) failed: {names}")


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
def check(pipeline: Path, overrides: tuple[str, ...]) -> None:
    """Validate PIPELINE.yaml and print the resolved config."""
    import yaml

    from lcpipe.config import load_config

    cfg = load_config(pipeline, overrides)
    click.echo(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
    click.echo(f"{pipeline}: ok", err=True)


@cli.command()
def stages() -> None:
    """List the stages and their options."""
    from lcpipe.stages import STAGE_MODULES, load_all
    from lcpipe.stages.base import STAGES

    load_all()
    for name in STAGE_MODULES:
        if name not in STAGES:
            continue
        cls = STAGES[name]
        click.echo(f"{name}: {cls.summary}")
        for field, info in cls.Options.model_fields.items():
            default = info.default
            click.echo(f"    {field}: {_type_name(info.annotation)} = {default!r}")


def _type_name(ann: Any) -> str:
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "pdparams", "torch", "safetensors", "paddle_inference",
                                                     "onnx"]), default="auto", show_default=True)
@click.option("--arch", default="auto", show_default=True)
@click.option("--input-size", default="224,224", show_default=True, help="H,W used for FLOPs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(path: Path, fmt: str, arch: str, input_size: str, as_json: bool) -> None:
    """Detected architecture, scale, classes, params, FLOPs, fusion state of a weights file or model."""
    from lcpipe.inspect import inspect_path

    h, w = (int(v) for v in input_size.split(","))
    info = inspect_path(path, fmt, arch, (h, w))
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            click.echo(f"{k:>18}: {v}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads [all cores].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def predict(model: Path, images: tuple[Path, ...], top_k: int, threads: int | None, as_json: bool) -> None:
    """Classify IMAGES with MODEL.xml (preprocessing + labels from its rt_info or files beside it)."""
    from lcpipe.predict import format_predictions
    from lcpipe.predict import predict as run_predict

    preds = run_predict(model, list(images), top_k=top_k, threads=threads)
    if as_json:
        click.echo(json.dumps([{"image": str(p.image), "top": [{"index": i, "label": lab, "probability": pr}
                                                                for i, lab, pr in p.top]} for p in preds], indent=2))
    else:
        click.echo(format_predictions(preds))


@cli.group()
def cache() -> None:
    """Inspect or clean the stage cache."""


@cache.command("list")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
def cache_list(cache_dir: Path | None) -> None:
    from lcpipe.cache import StageCache, default_cache_dir

    c = StageCache(cache_dir or default_cache_dir())
    entries = c.entries()
    for e in entries:
        outs = ", ".join(e.meta.get("outputs", {}))
        click.echo(f"{e.key[:16]}  {e.meta.get('stage', '?'):<9} {outs}")
    click.echo(f"{len(entries)} entries, {c.size_bytes() / 1e6:.1f} MB in {c.root}")


@cache.command("clean")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
def cache_clean(cache_dir: Path | None) -> None:
    from lcpipe.cache import StageCache, default_cache_dir

    c = StageCache(cache_dir or default_cache_dir())
    n = c.clean()
    click.echo(f"removed {n} cached stage results from {c.root}")


def main() -> None:
    cli(prog_name="lcpipe")


if __name__ == "__main__":
    main()
