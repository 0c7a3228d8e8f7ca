"""Command line: a thin click layer over the Python API (heavy imports happen inside commands)."""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from lcpipe.errors import LcpipeError
from lcpipe.fileio import strict_json
from lcpipe.version import __version__


def _setup_logging(verbose: int, quiet: bool) -> None:
    from lcpipe import logs

    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logs.setup(level, "%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s")
    if verbose < 2:  # nncf / openvino are chatty at INFO
        for name in ("nncf", "openvino"):
            logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _cache_root(cache_dir: Path | None, no_cache: bool) -> Iterator[Path | None]:
    """--no-cache: a temp root for everything a run would otherwise keep in the cache (downloads,
    unpacked archives, preprocessed data), removed afterwards, so the user's cache is neither read
    nor written. Otherwise --cache-dir as given (None: $LCPIPE_CACHE_DIR or the user cache)."""
    if not no_cache:
        yield cache_dir
        return
    with tempfile.TemporaryDirectory(prefix="lcpipe-nocache-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def _stdout_reserved(as_json: bool) -> Iterator[None]:
    """--json: stdout holds exactly one JSON document, written after the work; while the work runs,
    whatever anything prints (Python or native code) goes to stderr (lcpipe.streams)."""
    if not as_json:
        yield
        return
    from lcpipe.streams import stdout_to_stderr

    with stdout_to_stderr():
        yield


_JSON_HELP = "Print one JSON document on stdout (everything else goes to stderr)."


class _Group(click.Group):
    """One error path: lcpipe's errors (bad input: exit 2, failed gate: 3) and anything unexpected
    (a bug: exit 1) become one capped line on stderr; the full text and traceback go to the log file."""

    def invoke(self, ctx: click.Context) -> Any:
        from lcpipe import logs, signals

        try:
            return super().invoke(ctx)
        except LcpipeError as exc:
            signals.check()  # an error that a stop signal caused is the stop
            logs.log_exception(exc)
            click.echo(f"error: {logs.cap(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # the last resort: one line instead of a traceback
            signals.check()
            logs.log_exception(exc)
            where = logs.log_of(exc)
            detail = logs.cap(f"{type(exc).__name__}: {exc}", 300)
            click.echo(f"error: unexpected {detail} (an lcpipe bug; "
                       + (f"full traceback in {where})" if where else "no log file could be written)"), err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lcpipe")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug, also nncf/openvino).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """PP-LCNet / PP-LCNetV2 weights -> validated INT8 OpenVINO IR."""
    _setup_logging(verbose, quiet)


@cli.command()
@click.argument("pipeline", metavar="PIPELINE.yaml|EXAMPLE")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory [runs/<name>/].")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a config key (YAML-typed value); stage options: stages.<stage>.<key>=...")
@click.option("--from", "from_stage", metavar="STAGE", help="Start at this stage (earlier outputs from --out).")
@click.option("--until", metavar="STAGE", help="Stop after this stage.")
@click.option("--force", is_flag=True, help="Recompute every stage, ignoring the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Stage cache [$LCPIPE_CACHE_DIR or the user cache dir].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the stage cache.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def run(pipeline: str, out: Path | None, overrides: tuple[str, ...], from_stage: str | None, until: str | None,
        force: bool, cache_dir: Path | None, no_cache: bool, as_json: bool) -> None:
    """Run PIPELINE.yaml, or a packaged example by name (lcpipe examples lists them).

    The run directory is runs/<name>/ under the current directory unless --out says otherwise.
    Each gate says pass, fail or inconclusive (its interval straddles the limit: more images, more
    rounds or a quieter machine can decide it).

    \b
    Exit codes: 0 every gate passed, 2 bad config/input, 3 a gate failed,
    4 no gate failed but some were inconclusive, 1 unexpected error."""
    from lcpipe.examples import resolve_pipeline
    from lcpipe.runner import run_pipeline

    with _cache_root(cache_dir, no_cache) as root, _stdout_reserved(as_json):
        result = run_pipeline(resolve_pipeline(pipeline), out=out, overrides=overrides, from_stage=from_stage,
                              until=until, force=force, cache_dir=root, no_cache=no_cache)
    _report_run(result, as_json)


def _report_run(result: Any, as_json: bool) -> None:
    """The summary and run directory (--json: the run document, the summary on stderr); then the
    verdict's exit code."""
    from lcpipe.errors import GateFailedError, GateInconclusiveError
    from lcpipe.gates import explain

    if result.metrics:
        from lcpipe.render.summary import render_summary

        click.echo(render_summary(result.metrics), err=as_json)
    click.echo(f"run directory: {result.run_dir}", err=as_json)
    code = GateFailedError.exit_code if result.failed_gates else \
        GateInconclusiveError.exit_code if result.inconclusive_gates else 0
    if as_json:
        from lcpipe.render.documents import run_document

        click.echo(strict_json(run_document(result, code)))
    if result.failed_gates:
        raise GateFailedError(f"{len(result.failed_gates)} gate(s) failed: "
                              + "; ".join(explain(g) for g in result.failed_gates))
    if result.inconclusive_gates:
        raise GateInconclusiveError(f"{len(result.inconclusive_gates)} gate(s) inconclusive: "
                                    + "; ".join(explain(g) for g in result.inconclusive_gates))


@cli.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--calib", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of calibration images (no labels needed).")
@click.option("--eval", "eval_images", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of evaluation images: adds plan, validate, report and the deploy bundle.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
              help="Labels of the evaluation images: lines '<file> <class_index>', files relative to --eval.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--format", "fmt", type=click.Choice(["auto", "pdparams", "torch", "safetensors", "paddle_inference",
                                                     "onnx"]), default="auto", show_default=True,
              help="MODEL's format [auto: from its name, as lcpipe inspect tells it].")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a key of the built pipeline, as with lcpipe run (e.g. gates.max_top1_drop=0.02).")
@click.option("--force", is_flag=True, help="Recompute every stage, ignoring the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Stage cache [$LCPIPE_CACHE_DIR or the user cache dir].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the stage cache.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP + " The YAML goes to stderr.")
def quantize(model: Path, calib: Path, eval_images: Path | None, labels: Path | None, out: Path, fmt: str,
             overrides: tuple[str, ...], force: bool, cache_dir: Path | None, no_cache: bool, as_json: bool) -> None:
    """One line, no YAML: MODEL (weights file, Paddle inference folder or ONNX) -> INT8 OpenVINO IR.

    Builds the pipeline the shipped ones are (format and architecture detected, preprocessing from
    the model where it says), prints it, runs it into --out and writes it there as pipeline.yaml:
    `lcpipe run OUT/pipeline.yaml --out OUT` repeats the run, or edit it first. With --eval the run
    ends in a verdict (gate min_agreement 0.9) and a deploy bundle in OUT/deploy/; without, the INT8
    IR is OUT/quantize/model.xml. Exit codes as lcpipe run."""
    import shlex

    from lcpipe.oneliner import pipeline_yaml, quantize_config, run_quantize

    flags = [("--calib", calib), ("--eval", eval_images), ("--labels", labels), ("--out", out),
             ("--format", None if fmt == "auto" else fmt), *(("--set", o) for o in overrides)]
    command = shlex.join(["lcpipe", "quantize", str(model), *(x for f, v in flags if v for x in (f, str(v)))])
    with _stdout_reserved(as_json):
        raw, config = quantize_config(model, calib, out=out, eval_images=eval_images, labels=labels, fmt=fmt,
                                      overrides=overrides)
        click.echo(pipeline_yaml(raw, out.resolve(), command), err=as_json)
        with _cache_root(cache_dir, no_cache) as root:
            result = run_quantize(raw, config, out, command=command, cache_dir=root, no_cache=no_cache, force=force)
    _report_run(result, as_json)


@cli.command()
@click.argument("pipeline", metavar="PIPELINE.yaml|EXAMPLE")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def check(pipeline: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Is PIPELINE runnable? Validate it, then look at everything it will read: the model source, data
    folders and label files, every path a stage option names, the datasets its stages need. Prints the
    resolved config; all problems at once and exit 2 otherwise."""
    import yaml

    from lcpipe.errors import ConfigError
    from lcpipe.examples import resolve_pipeline
    from lcpipe.preflight import relative_paths_hint
    from lcpipe.runner import load_config, preflight

    config, problems = None, []
    with _stdout_reserved(as_json):
        try:
            config = load_config(resolve_pipeline(pipeline), overrides)
        except LcpipeError as exc:  # the file, the YAML or the schema: the only problem that can be told
            if not as_json:
                raise
            problems = [str(exc)]
        if config is not None:
            problems = preflight(config)
    if as_json:
        click.echo(strict_json({"pipeline": str(pipeline), "ok": not problems, "problems": problems,
                                "config": config.to_yaml_dict() if config is not None else None}))
    if problems:
        hint = f"; {relative_paths_hint(config)}" if config is not None and " does not exist" in "".join(problems) \
            else ""
        from lcpipe.logs import cap

        # check's result is the whole list: one capped line per problem, not one capped message
        click.echo(f"{pipeline}: {len(problems)} problem(s):", err=True)
        for problem in problems:
            click.echo(f"  {cap(problem)}", err=True)
        raise ConfigError(f"{pipeline}: not runnable, {len(problems)} problem(s) (listed above){hint}")
    if not as_json:
        click.echo(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    click.echo(f"{pipeline}: ok", err=True)


@cli.command()
@click.option("--copy", nargs=2, metavar="NAME DIR", type=(str, click.Path(file_okay=False, path_type=Path)),
              help="Copy example NAME with its model and data into the new folder DIR (its YAML's paths stay valid).")
def examples(copy: tuple[str, Path] | None) -> None:
    """List the packaged example pipelines (run one with: lcpipe run NAME) and where they are."""
    from lcpipe.examples import copy_example, list_examples

    if copy:
        yaml_path = copy_example(*copy)
        click.echo(f"copied {copy[0]} into {copy[1]}; run it with: lcpipe run {yaml_path}")
        return
    for name, path in list_examples().items():
        click.echo(f"{name}: {path}")


@cli.command()
@click.argument("name", required=False)
def stages(name: str | None) -> None:
    """List the stages (or stage NAME) and every option: type, default, help; nested options expanded."""
    from lcpipe.render.options import format_stages
    from lcpipe.stages import STAGES, get_stage

    click.echo(format_stages({name: get_stage(name)} if name else dict(STAGES)))


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "pdparams", "torch", "safetensors", "paddle_inference",
                                                     "onnx", "openvino"]), default="auto", show_default=True,
              help="How to read PATH [auto: from its name; .xml is an OpenVINO IR].")
@click.option("--arch", default="auto", show_default=True)
@click.option("--input-size", metavar="H,W", help="Input size for FLOPs [a Paddle inference model's inference.yml, "
              "else 224,224].")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def inspect(path: Path, fmt: str, arch: str, input_size: str | None, as_json: bool) -> None:
    """Detected architecture, scale, classes, params, FLOPs, fusion state of a weights file or model;
    for an OpenVINO IR (.xml) its inputs, outputs, precision, INT8 ops and lcpipe rt_info."""
    from lcpipe.inspect import inspect_path

    hw = None
    if input_size:
        try:
            h, w = (int(v) for v in input_size.split(","))
        except ValueError:
            raise click.BadParameter(f"{input_size!r}: give H,W, e.g. 224,224", param_hint="--input-size") from None
        hw = (h, w)
    with _stdout_reserved(as_json):
        info = inspect_path(path, fmt, arch, hw)
    if as_json:
        click.echo(strict_json(info))
    else:
        from lcpipe.render.inspect import format_inspect

        click.echo(format_inspect(info))


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads [all cores].")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="OpenVINO's model cache: the first compile stores the compiled model there, later ones import "
                   "it [none].")
@click.option("--json", "as_json", is_flag=True,
              help=_JSON_HELP + " Predictions plus read_ms, compile_ms, first_inference_ms, model_cache.")
def predict(model: Path, images: tuple[Path, ...], top_k: int, threads: int | None, cache_dir: Path | None,
            as_json: bool) -> None:
    """Classify IMAGES with MODEL.xml or a deploy bundle folder (preprocessing + labels from its rt_info
    or files beside it)."""
    from lcpipe.predict import format_predictions, predict_timed

    with _stdout_reserved(as_json):
        preds, timing = predict_timed(model, list(images), top_k=top_k, threads=threads, cache_dir=cache_dir)
    if as_json:
        click.echo(strict_json({"model": str(model), **timing.as_dict(), "predictions": [
            {"image": str(p.image), "top": [{"index": i, "label": lab, "probability": pr} for i, lab, pr in p.top]}
            for p in preds]}))
    else:
        click.echo(format_predictions(preds))


@cli.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Sweep directory [the sweep file's out, or runs/sweeps/<name>/].")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override for every point.")
@click.option("--local", is_flag=True, help="Run the points one after another in this process (no Ray).")
@click.option("--address", metavar="ADDR", help="Ray cluster to use [$RAY_ADDRESS; else a local Ray].")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the local Ray [all cores].")
@click.option("--force", is_flag=True, help="Recompute every stage of every point, ignoring the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Stage cache shared by the points; on a Ray cluster a path each node uses for itself "
                   "[$LCPIPE_CACHE_DIR or the user cache dir, of each node].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the stage cache.")
@click.option("--per-cpu-kind", is_flag=True,
              help="Also time every latency point on each CPU kind among the Ray cluster's nodes (fleet table).")
@click.option("--storage", metavar="URI",
              help="Location every node can read (file:///shared/..., s3://...) for big inputs/run dirs "
                   "[the sweep file's storage].")
@click.option("--max-points", type=click.IntRange(min=1),
              help="Refuse a sweep with more points than this, counted before the grid is expanded [1000].")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP + " The document is sweep.json.")
def sweep(sweep_file: Path, out: Path | None, overrides: tuple[str, ...], local: bool, address: str | None,
          num_cpus: int | None, force: bool, cache_dir: Path | None, no_cache: bool, per_cpu_kind: bool,
          storage: str | None, max_points: int | None, as_json: bool) -> None:
    """Run SWEEP.yaml: a base pipeline over a grid/list of overrides, one run per point (on Ray).

    Writes sweep.json, sweep.csv and sweep.html. Exit 0 all points ok, 3 only gates failed,
    4 only gates inconclusive, 1 a point failed (the others still ran), 2 bad sweep file."""
    from lcpipe.errors import GateFailedError
    from lcpipe.render.sweep import format_fleet, format_table
    from lcpipe.sweep import SweepFailedError, load_sweep, run_sweep

    with _stdout_reserved(as_json):
        spec = load_sweep(sweep_file, overrides, *([max_points] if max_points else []))
        result = run_sweep(spec, out=out, local=local, address=address, cache_dir=cache_dir, force=force,
                           no_cache=no_cache, num_cpus=num_cpus, per_cpu_kind=per_cpu_kind, storage=storage)
    click.echo(format_table(result.rows, list(dict.fromkeys(k for p in spec.points for k in p.overrides))),
               err=as_json)
    if result.fleet:
        click.echo(format_fleet(result.fleet), err=as_json)
    click.echo(f"results: {result.files['html']} (+ sweep.json, sweep.csv) in {result.seconds:.0f} s", err=as_json)
    if as_json:
        from lcpipe.render.documents import sweep_document

        click.echo(strict_json(sweep_document(result.files, result.seconds)))
    if result.failed:
        raise SweepFailedError(f"{len(result.failed)} of {len(result.rows)} point(s) failed: "
                               + ", ".join(r["point"] for r in result.failed))
    if result.gate_failed:
        raise GateFailedError(f"{len(result.gate_failed)} point(s) failed a gate: "
                              + ", ".join(r["point"] for r in result.gate_failed))
    if result.gate_inconclusive:
        from lcpipe.errors import GateInconclusiveError

        raise GateInconclusiveError(f"{len(result.gate_inconclusive)} point(s) with inconclusive gates: "
                                    + ", ".join(r["point"] for r in result.gate_inconclusive))


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="[runs/sensitivity/<name>/]")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=0),
              help="Groups to put into the suggested ignored_scope.")
@click.option("--group-by", "by", type=click.Choice(["layer", "block"]), default="layer", show_default=True)
@click.option("--mode", type=click.Choice(["ignore", "only"]), default="ignore", show_default=True,
              help="ignore: all INT8 but one group; only: one group INT8.")
@click.option("--metric", type=click.Choice(["mse", "cosine", "agreement"]), default="mse", show_default=True)
@click.option("--include", multiple=True, metavar="GLOB", help="Only these groups, e.g. 'blocks6.*' (repeatable).")
@click.option("--images", default=32, show_default=True, type=click.IntRange(min=1), help="Eval images compared.")
@click.option("--calib-images", type=click.IntRange(min=1), help="Calibration images [the quantize stage's].")
@click.option("--accuracy-control", is_flag=True, help="Also run NNCF accuracy control and compare what it reverts.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
def sensitivity(pipeline: Path, out: Path | None, overrides: tuple[str, ...], top: int, by: str, mode: str,
                metric: str, include: tuple[str, ...], images: int, calib_images: int | None, accuracy_control: bool,
                cache_dir: Path | None) -> None:
    """Rank layers of PIPELINE's model by INT8 sensitivity; print the top as an ignored_scope."""
    from lcpipe.examples import resolve_pipeline
    from lcpipe.sensitivity import analyze, format_suggestion, format_table

    result = analyze(resolve_pipeline(pipeline), overrides=overrides, out=out, cache_dir=cache_dir, by=by, mode=mode,
                     metric=metric, include=include, images=images, calib_images=calib_images, top=top,
                     accuracy_control=accuracy_control)
    click.echo(format_table(result, limit=max(top, 10)))
    click.echo(format_suggestion(result))
    click.echo(f"written: {result.files['json']}, {result.files['md']}")


@cli.command()
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory [runs/<name>/]; with --matrix: the matrix folder [runs/bench-matrix].")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every engine [runtime.threads or all cores].")
@click.option("--batch", type=click.IntRange(min=1), help="Batch size of the throughput figure [8].")
@click.option("--rounds", type=click.IntRange(min=1), help="Interleaved rounds [5].")
@click.option("--iterations", type=click.IntRange(min=1), help="Timed batch-1 calls per engine per round [50].")
@click.option("--engines", metavar="A,B", help="Subset of engines: ov_fp32, ov_int8, ov_fp32_default, "
              "ov_p2o_fp32, ort_fp32, ort_int8, paddle_onednn.")
@click.option("--paddle-model", type=click.Path(path_type=Path), help="Paddle inference model for the Paddle "
              "Inference and paddle2onnx-route rows (pdparams sources have none).")
@click.option("--int8-precision", type=click.Choice(["f32", "bf16", "f16", "default"]),
              help="Precision of the INT8 IR's float ops [the plan's, else f32].")
@click.option("--profile", is_flag=True, help="Also OpenVINO per-layer counters (profile.json, bench.md).")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP + " The document is bench.json.")
@click.option("--force", is_flag=True, help="Recompute the pipeline stages, ignoring the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Stage cache.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the stage cache.")
@click.option("--matrix", is_flag=True, help="Benchmark the scale matrix (V1 x0.25-x2.5, V2 small-large, the "
              "textline model) and write the scale table; tens of minutes.")
@click.option("--models", metavar="A,B", help="--matrix: subset of matrix keys (e.g. v1_x1_0,v2_base).")
@click.option("--docs", type=click.Path(dir_okay=False, path_type=Path),
              help="--matrix: markdown file to write the generated tables into [docs/benchmarks.md].")
def bench(pipeline: Path | None, out: Path | None, overrides: tuple[str, ...], threads: int | None,
          batch: int | None, rounds: int | None, iterations: int | None, engines: str | None,
          paddle_model: Path | None, int8_precision: str | None, profile: bool, as_json: bool, force: bool,
          cache_dir: Path | None, no_cache: bool, matrix: bool, models: str | None, docs: Path | None) -> None:
    """Benchmark PIPELINE's FP32/INT8 IRs against ONNX Runtime, Paddle Inference and the paddle2onnx route.

    Runs the pipeline up to quantize (cached stages reused), then times every engine interleaved, same
    input and threads. Writes bench.json/.md/.png into <run dir>/bench/."""
    from lcpipe.errors import ConfigError

    updates: dict[str, Any] = {k: v for k, v in (("threads", threads), ("batch", batch), ("rounds", rounds),
                                                 ("iterations", iterations), ("int8_precision", int8_precision))
                               if v is not None}
    if engines:
        updates["engines"] = [e.strip() for e in engines.split(",") if e.strip()]
    if paddle_model:
        updates["paddle_model"] = str(paddle_model.resolve())
    if profile:
        updates["profile"] = True
    if matrix and as_json:
        raise ConfigError("lcpipe bench --matrix writes the scale tables (docs/benchmarks.md); --json is for one "
                          "pipeline's bench.json")
    if matrix:
        code = _run_matrix(models, out, docs, updates, cache_dir, force)
        if code:
            sys.exit(code)
        return
    if pipeline is None:
        raise ConfigError("lcpipe bench: give a PIPELINE.yaml (or --matrix)")
    from lcpipe.examples import resolve_pipeline
    from lcpipe.render.bench import render_rich
    from lcpipe.runner import load_config, run_stage_after

    config = load_config(resolve_pipeline(pipeline), overrides)
    with _cache_root(cache_dir, no_cache) as root, _stdout_reserved(as_json):
        folder, outputs = run_stage_after(config, "bench", purpose="lcpipe bench", updates=updates, out=out,
                                          cache_dir=root, no_cache=no_cache, force=force)
    from lcpipe.records import BenchRecord

    result = BenchRecord.load(outputs["bench"]).to_dict()
    if as_json:
        click.echo(strict_json(result))
    else:
        from rich.console import Console

        Console(width=max(160, Console().width)).print(render_rich(result))
    click.echo(f"bench results: {folder}", err=as_json)


def _run_matrix(models: str | None, out: Path | None, docs: Path | None, updates: dict[str, Any],
                cache_dir: Path | None, force: bool) -> int:
    """``python -m benchmarks.matrix`` of the source checkout (developer tooling, not in the wheel: next
    to this lcpipe package, else in the current directory), run in that checkout; its output is
    passed through. Returns its exit code."""
    import json
    import subprocess

    from lcpipe.errors import ConfigError

    root = next((r for r in (Path(__file__).resolve().parents[1], Path.cwd())
                 if (r / "benchmarks" / "matrix.py").is_file()), None)
    if root is None:
        raise ConfigError("lcpipe bench --matrix: needs a source checkout of lcpipe (benchmarks/, pipelines/, "
                          "calib_data/); run it inside the checkout, or `python -m benchmarks.matrix` there")
    args = [sys.executable, "-m", "benchmarks.matrix", "--out", str((out or Path("runs", "bench-matrix")).resolve()),
            "--bench-options", json.dumps(updates)]
    for flag, value in (("--models", models), ("--docs", docs and docs.resolve()),
                        ("--cache-dir", cache_dir and cache_dir.resolve())):
        if value:
            args += [flag, str(value)]
    if force:
        args.append("--force")
    with subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout or ():  # through click, so the caller (and tests) see it as lcpipe's output
            click.echo(line, nl=False)
    return proc.returncode


@cli.group(invoke_without_command=True)
@click.pass_context
def cache(ctx: click.Context) -> None:
    """Show (the default: `list`), prune or clean the stage cache (stage results, preprocessed data, downloads).

    Only folders lcpipe marked as its cache are pruned or cleaned, only entries lcpipe names as its
    own are removed, and never one a running pipeline uses."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(cache_list, cache_dir=None)


_CACHE_DIR_OPTION = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                                 help="The cache [$LCPIPE_CACHE_DIR or the user cache dir].")


def _open_cache(cache_dir: Path | None) -> Any:
    from lcpipe.cache import StageCache, default_cache_dir

    return StageCache(cache_dir or default_cache_dir())


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


@cache.command("list")
@_CACHE_DIR_OPTION
def cache_list(cache_dir: Path | None) -> None:
    """Every entry (kind, stage, size, last use), least recently used first, and the total size."""
    import time

    c = _open_cache(cache_dir)
    entries = c.stored()
    now = time.time()
    for e in entries:
        click.echo(f"{e.key[:16]:<16}  {e.stage or e.kind:<9} {_mb(e.bytes):>10}  used {_ago(now - e.last_used)} ago")
    kinds = ", ".join(f"{sum(e.kind == k for e in entries)} {k}" for k in dict.fromkeys(e.kind for e in entries))
    click.echo(f"{len(entries)} entries{f' ({kinds})' if kinds else ''}, {_mb(c.size_bytes())} in {c.root}")


class _Size(click.ParamType):
    name = "SIZE"
    _UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
              "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        import re

        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m[2].lower() not in self._UNITS:
            self.fail(f"{str(value)[:40]!r}: give a size such as 200MB, 1.5GB or 500MiB", param, ctx)
        return int(float(m[1]) * self._UNITS[m[2].lower()])


class _Age(click.ParamType):
    name = "AGE"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import re

        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(value))
        if not m:
            self.fail(f"{str(value)[:40]!r}: give an age such as 7d, 12h, 30m or 2w", param, ctx)
        return float(m[1]) * self._UNITS[m[2]]


def _report_removal(verb: str, c: Any, removed: list[Any], busy: list[Any]) -> None:
    freed = sum(e.bytes for e in removed)
    line = f"{verb} {len(removed)} entries ({_mb(freed)}) from {c.root}"
    if busy:
        line += f"; kept {len(busy)} in use by a running pipeline"
    click.echo(line + f"; {len(c.stored())} entries, {_mb(c.size_bytes())} left")


@cache.command("prune")
@click.option("--max-size", type=_Size(), help="Remove least recently used entries until the cache is at most "
              "this big (200MB, 1.5GB, 500MiB).")
@click.option("--older-than", type=_Age(), help="Remove entries not used for this long (7d, 12h, 30m, 2w).")
@_CACHE_DIR_OPTION
def cache_prune(max_size: int | None, older_than: float | None, cache_dir: Path | None) -> None:
    """Remove entries by age and/or total size, least recently used first."""
    from lcpipe.errors import ConfigError

    if max_size is None and older_than is None:
        raise ConfigError("lcpipe cache prune: give --max-size and/or --older-than")
    c = _open_cache(cache_dir)
    removed, busy = c.prune(max_bytes=max_size, older_than_s=older_than)
    _report_removal("pruned", c, removed, busy)


@cache.command("clean")
@_CACHE_DIR_OPTION
def cache_clean(cache_dir: Path | None) -> None:
    """Remove every entry (files lcpipe did not write stay)."""
    c = _open_cache(cache_dir)
    removed, busy = c.clean()
    _report_removal("removed", c, removed, busy)


def _late_global_flag(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """-v / -q given after the subcommand: as if given before it (added to every command below)."""
    if value:
        late = ctx.meta.setdefault("lcpipe.late_flags", {})
        late[param.name] = value
        given = ctx.find_root().params
        verbose = given.get("verbose", 0) + late.get("verbose", 0)
        quiet = bool(given.get("quiet") or late.get("quiet"))
        _setup_logging(verbose, quiet)
        logging.getLogger().setLevel(logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO)
    return value


def _accept_global_flags(group: click.Group) -> None:
    """Every command also takes lcpipe's -v / -q, so `lcpipe run X -q` works like `lcpipe -q run X`."""
    for command in group.commands.values():
        command.params += [
            click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_late_global_flag,
                         help="More log output (as lcpipe -v; -vv: debug, also nncf/openvino)."),
            click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_late_global_flag,
                         help="Only warnings and errors (as lcpipe -q).")]
        if isinstance(command, click.Group):
            _accept_global_flags(command)


_accept_global_flags(cli)


def main() -> None:
    from lcpipe import logs, signals

    signals.install()
    try:
        try:
            code = cli.main(prog_name="lcpipe", standalone_mode=False)
        except click.ClickException as exc:  # usage errors: click's own line, capped like every message
            exc.message = logs.cap(exc.message)
            exc.show()
            code = exc.exit_code
        except click.Abort:
            click.echo("Aborted!", err=True)
            code = 1
        except SystemExit:
            signals.check()  # a stop signal some library swallowed still ends the command as a stop
            raise
        signals.check()
        sys.exit(code if isinstance(code, int) else 0)
    except signals.Interrupted as exc:
        logs.log_exception(exc)
        signals.finish(exc, f"lcpipe: stopped by {exc} (exit {exc.exit_code}); temporary files removed, "
                            "the same command resumes from the cache")


if __name__ == "__main__":
    main()
