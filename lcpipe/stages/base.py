"""Stage protocol and registry.

A stage declares a typed options model (pydantic, unknown keys forbidden), the artifact
kinds it consumes and produces, and the top-level config sections its result depends on.
``run`` writes its outputs into ``ctx.workdir`` and returns ``{kind: path}``; the runner
hashes those paths, caches them and hands them to later stages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from lcpipe.errors import ConfigError, shown


class StageOptions(BaseModel):
    """Base of every stage's options: typed, defaults, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StageContext:
    """What a stage may look at besides its own options and inputs."""

    config: Any  # lcpipe.config.PipelineConfig (resolved)
    workdir: Path  # empty directory the stage writes its outputs into
    run_dir: Path
    cache_dir: Path | None
    log: logging.Logger
    extra: dict[str, Any] = field(default_factory=dict)


class Stage:
    name: ClassVar[str]
    Options: ClassVar[type[StageOptions]] = StageOptions
    consumes: ClassVar[tuple[str, ...]] = ()  # artifact kinds, all required
    optional_consumes: ClassVar[tuple[str, ...]] = ()  # used when an earlier stage produced them
    produces: ClassVar[tuple[str, ...]] = ()
    uses_config: ClassVar[tuple[str, ...]] = ()  # top-level config sections in the cache key
    cacheable: ClassVar[bool] = True  # False for stages that measure the machine (latency)
    summary: ClassVar[str] = ""

    def run(self, ctx: StageContext, options: Any, inputs: dict[str, Path]) -> dict[str, Path]:
        raise NotImplementedError


STAGES: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    if cls.name in STAGES:
        raise ValueError(f"stage {cls.name!r} registered twice")
    STAGES[cls.name] = cls
    return cls


def get_stage(name: str) -> type[Stage]:
    from lcpipe.stages import load_all

    load_all()
    try:
        return STAGES[name]
    except KeyError:
        raise ConfigError(f"unknown stage {shown(name)}; known: {', '.join(STAGES)}") from None


def stage_cache_salt(stage: Stage, config: Any) -> str:
    """Extra cache-key material a stage derives from things outside its options (e.g. data files)."""
    fn = getattr(stage, "cache_salt", None)
    return fn(config) if fn else ""
