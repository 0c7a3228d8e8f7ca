"""The sweep file: its schema, grid/points expansion and every point's validated pipeline config."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lcpipe.config import PipelineConfig, format_errors, read_yaml_mapping
from lcpipe.errors import ConfigError


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the sweep file's stem
    base: str  # pipeline YAML, relative to the sweep file
    grid: dict[str, list[Any]] = {}  # key path -> values; the cartesian product, in key order
    points: list[dict[str, Any]] = []  # explicit points (override dicts), after the grid
    set: dict[str, Any] = {}  # overrides every point gets (a point's own value wins)
    # arch -> model.source for points that set model.arch (weights differ per scale); paths
    # relative to the sweep file. A point that sets model.source.* itself keeps its own.
    sources: dict[str, dict[str, Any]] = {}
    out: str | None = None  # relative to the sweep file
    cpus_per_point: int = Field(1, gt=0)  # Ray CPUs of a point that does not measure latency
    eval_shards: int | None = Field(None, gt=0)  # also evaluate each point's IRs in N merged shards
    # Ray: reruns of a point whose worker or node died (a point that fails by itself is not rerun)
    retries: int = Field(1, ge=0, le=5)
    # Ray: a location every node can read and write (file:///shared/..., s3://...) for inputs over
    # Ray's shipping limit and big run dirs; relative to nothing (the same URI on every node)
    storage: str | None = None

    @field_validator("sources")
    @classmethod
    def _known_archs(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from lcpipe.config import SourceConfig
        from lcpipe.models.spec import ARCHS

        for arch, src in v.items():
            if arch not in ARCHS:
                raise ValueError(f"{arch}: unknown arch; one of {', '.join(ARCHS)}")
            SourceConfig.model_validate(src)  # a typo in a source key fails here, naming it
        return v

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"{key}: needs at least one value")
        return v


@dataclass
class SweepPoint:
    index: int
    id: str  # stable, readable run-dir name
    overrides: dict[str, Any]  # key path -> value (the point's own, without `set`)
    args: list[str]  # `--set` strings, `set` first, paths already absolute
    measures_latency: bool = False
    config: PipelineConfig | None = None


@dataclass
class Sweep:
    spec: SweepSpec
    name: str
    source: Path
    base: Path
    out: Path
    points: list[SweepPoint] = field(default_factory=list)


MAX_POINTS = 1000  # a sweep's default size limit (lcpipe sweep --max-points raises it)


def load_sweep(path: str | Path, extra: tuple[str, ...] | list[str] = (), max_points: int = MAX_POINTS) -> Sweep:
    """Read and check a sweep file; ``extra`` are `--set` strings added to every point.

    The points are counted before the grid is expanded (over ``max_points``: ConfigError). Every
    point's pipeline config is validated here, so a typo in a key path fails before anything runs
    (the message names the point and the key)."""
    from lcpipe.runner import load_config

    path = Path(path)
    spec = _read_spec(path)
    count = point_count(spec)
    if count > max_points:
        axes = " x ".join(str(len(v)) for v in spec.grid.values()) or "0"
        raise ConfigError(f"{path}: {count:,} points (grid {axes}, plus {len(spec.points)} listed) is more than "
                          f"the limit of {max_points:,}; shrink the grid, or raise the limit with --max-points")
    folder = path.parent.resolve()
    base = (folder / spec.base).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: base: {base} does not exist")
    name = spec.name or re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    out = (folder / spec.out).resolve() if spec.out else Path("runs", "sweeps", name).resolve()
    sweep = Sweep(spec, name, path, base, out)
    common = [_override_arg(k, v, folder) for k, v in spec.set.items()] + list(extra)
    for i, overrides in enumerate(_expand(spec)):
        args = common + _source_args(spec, overrides, folder)
        args += [_override_arg(k, v, folder) for k, v in overrides.items()]
        try:
            cfg = load_config(base, args)
        except ConfigError as exc:
            raise ConfigError(f"{path}: point {i} ({_describe(overrides)}): {exc}") from None
        point = SweepPoint(i, _point_id(i, overrides), overrides, args, measures_latency(cfg), cfg)
        sweep.points.append(point)
    if not sweep.points:
        raise ConfigError(f"{path}: no points (give 'grid' and/or 'points')")
    return sweep


def _read_spec(path: Path) -> SweepSpec:
    raw = read_yaml_mapping(path, "sweep", "base, grid, points, set, out")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path), "", SweepSpec)) from None


def point_count(spec: SweepSpec) -> int:
    """Points the spec describes (the grid's product of axis lengths plus the listed points), without
    expanding anything."""
    return (math.prod(len(v) for v in spec.grid.values()) if spec.grid else 0) + len(spec.points)


def _expand(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = list(spec.grid)
    grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*spec.grid.values())] if keys else []
    return grid + [dict(p) for p in spec.points]


def _source_args(spec: SweepSpec, overrides: dict[str, Any], folder: Path) -> list[str]:
    """``model.source={...}`` from ``sources`` for the point's arch, unless the point sets the source."""
    arch = overrides.get("model.arch")
    if arch not in spec.sources or any(k == "model.source" or k.startswith("model.source.") for k in overrides):
        return []
    src = dict(spec.sources[arch])
    if isinstance(src.get("path"), str):
        src["path"] = str((folder / Path(src["path"]).expanduser()).resolve())
    return [f"model.source={json.dumps(src)}"]


def _override_arg(key: str, value: Any, folder: Path) -> str:
    """``key=value`` for apply_override; a relative path value is made absolute against the sweep
    file's folder (apply_override would resolve it against the current directory)."""
    from lcpipe.runner import is_path_override

    if isinstance(value, str) and is_path_override(key) and not Path(value).expanduser().is_absolute():
        value = str((folder / value).resolve())
    # JSON is YAML: the value round-trips with its type (a str stays a str, a list a list).
    return f"{key}={json.dumps(value)}"


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base"


def _point_id(index: int, overrides: dict[str, Any]) -> str:
    """``p03-PPLCNet_x0_5-mixed``: index first (unique, sorted), then the values for humans."""
    parts = [f"p{index:02d}"]
    for v in overrides.values():
        text = Path(v).name if isinstance(v, str) and "/" in v else str(v)
        parts.append(re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")[:24])
    return "-".join(p for p in parts if p)


TIMING_STAGES = ("plan", "bench")  # stages that time inference whatever their options


def measures_latency(config: PipelineConfig) -> bool:
    """Does the pipeline time inference (a ``plan`` or ``bench`` stage, or a validate stage with
    latency or throughput on)? Such a point gets the whole node so nothing runs beside it."""
    if any(name in TIMING_STAGES for name in config.stage_names()):
        return True
    opts = config.stage_options("validate")
    return opts is not None and bool(getattr(opts, "latency", True) or getattr(opts, "throughput", False))

