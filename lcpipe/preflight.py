"""`lcpipe check`: can this pipeline run? Everything it will read, looked at before any stage runs.

Every path a config section or a stage's options declares (``path_fields``: the model source, the
data folders and label files, a validate ``groups`` table, ...), each configured dataset's file list
(labels file format, listed images present, ``count``; calibration and evaluation disjoint), the
label names, the model source's sha256, and the datasets the stages need (``Stage.reads_data``). All
problems are collected, so a copied pipeline whose relative paths broke lists every one of them at once.

The stage classes are handed in (lcpipe.runner.preflight), as this module does not import the registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lcpipe.config import DataConfig, DatasetConfig, PipelineConfig
from lcpipe.errors import LcpipeError


def find_problems(config: PipelineConfig, stage_classes: Sequence[Any]) -> list[str]:
    """One line per problem (key path first); empty when every input the pipeline reads is there.
    ``stage_classes``: the class of each of ``config.stages``, in order."""
    problems: list[str] = []
    missing: set[str] = set()
    for key, value in declared_paths(config):
        if not Path(value).exists():
            problems.append(f"{key}: {value} does not exist")
            missing.add(key)
    if not missing & {"model.source.path"}:
        problems += _source_problems(config)
    problems += _data_problems(config.data, missing)
    for i, (entry, cls) in enumerate(zip(config.stages, stage_classes, strict=True)):
        for split in getattr(cls, "reads_data", ()):
            if getattr(config.data, split, None) is None:
                problems.append(f"stages[{i}].{entry.name}: needs data.{split}, which this pipeline does not "
                                "configure")
    return problems


def declared_paths(config: PipelineConfig) -> Iterator[tuple[str, str]]:
    """(key path, value) of every path the pipeline names: config sections and stage options alike."""
    for section in type(config).model_fields:
        value = getattr(config, section)
        if isinstance(value, BaseModel):
            yield from _paths_of(value, section)
    for i, entry in enumerate(config.stages):
        yield from _paths_of(entry.options, f"stages[{i}].{entry.name}")


def _paths_of(model: BaseModel, prefix: str) -> Iterator[tuple[str, str]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, str) and value and name in getattr(model, "path_fields", ()):
            yield f"{prefix}.{name}", value
        elif isinstance(value, BaseModel):
            yield from _paths_of(value, f"{prefix}.{name}")


def _source_problems(config: PipelineConfig) -> list[str]:
    """A local source: its sha256 (when pinned), and for a Paddle inference model its program files."""
    src = config.model.source
    if not src.path:
        return []
    from lcpipe.sources import check_local

    try:
        path = check_local(src)
        if src.format == "paddle_inference":
            from lcpipe.importers.paddle_inference import locate_inference_files

            locate_inference_files(path)
    except LcpipeError as exc:
        return [_keyed("model.source.path", str(exc))]
    return []


def _data_problems(data: DataConfig, missing: set[str]) -> list[str]:
    """Each configured dataset listed as a run lists it (labels file parsed, images present, count), the
    calibration and evaluation lists disjoint, the label names readable."""
    from lcpipe.data import check_disjoint, list_samples, load_label_names

    problems, listed = [], {}
    for name in type(data).model_fields:
        ds = getattr(data, name)
        if not isinstance(ds, DatasetConfig) or any(k.startswith(f"data.{name}.") for k in missing):
            continue
        try:
            listed[name] = list_samples(ds, f"data.{name}")
        except LcpipeError as exc:
            problems.append(_keyed(f"data.{name}", str(exc)))
    if "calib" in listed and "eval" in listed:
        try:
            check_disjoint(listed["calib"], listed["eval"])
        except LcpipeError as exc:
            problems.append(str(exc))
    if data.label_names and "data.label_names" not in missing:
        try:
            load_label_names(data.label_names)
        except LcpipeError as exc:
            problems.append(_keyed("data.label_names", str(exc)))
    return problems


def _keyed(key: str, message: str) -> str:
    return message if message.startswith(key) else f"{key}: {message}"


def relative_paths_hint(config: PipelineConfig) -> str:
    """What to say when paths are missing: where relative paths were looked for, and how to move an example."""
    source = Path(config.source_file or "")
    where = f"paths in {source} are relative to its folder {source.resolve().parent}" if source.is_file() \
        else "relative paths are resolved against the pipeline file's folder"
    return f"{where}; to move a packaged example, copy it with its files: lcpipe examples --copy NAME DIR"
