"""The stage protocol: what every stage declares, and what it may look at while it runs.

A stage declares a typed options model (pydantic, unknown keys forbidden, path-typed keys in
``path_fields``), the artifact kinds it consumes and produces, and the top-level config sections
its result depends on. ``run`` writes its outputs into ``ctx.workdir`` and returns ``{kind: path}``;
the runner hashes those paths, caches them and hands them to later stages. The registry of stage
classes is lcpipe.stages.STAGES.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lcpipe.config import PipelineConfig, StageOptions

__all__ = ["Stage", "StageContext", "StageOptions"]


@dataclass
class StageContext:
    """What a stage may look at besides its own options and inputs."""

    config: PipelineConfig  # resolved: paths absolute, overrides applied
    workdir: Path  # empty directory the stage writes its outputs into
    run_dir: Path
    cache_dir: Path | None
    log: logging.Logger


class Stage:
    name: ClassVar[str]
    Options: ClassVar[type[StageOptions]] = StageOptions
    consumes: ClassVar[tuple[str, ...]] = ()  # artifact kinds, all required
    optional_consumes: ClassVar[tuple[str, ...]] = ()  # used when an earlier stage produced them
    # required kind -> kinds that can stand in for it (e.g. export takes an adopted ONNX instead of a
    # canonical model); the stage gets whichever an earlier stage produced
    alternatives: ClassVar[dict[str, tuple[str, ...]]] = {}
    produces: ClassVar[tuple[str, ...]] = ()
    uses_config: ClassVar[tuple[str, ...]] = ()  # top-level config sections in the cache key
    reads_data: ClassVar[tuple[str, ...]] = ()  # datasets it needs configured (data.calib, ...): lcpipe check
    cacheable: ClassVar[bool] = True  # False for stages that measure the machine (latency)
    publish: ClassVar[tuple[str, ...]] = ()  # files of the stage dir also copied to the top of the run dir
    # files an older lcpipe wrote into the stage's folder without a stage.json (lcpipe bench did): a
    # folder holding only these is lcpipe's to replace (runner.run_stage_after)
    older_files: ClassVar[frozenset[str]] = frozenset()
    summary: ClassVar[str] = ""

    def precheck(self, config: PipelineConfig) -> None:
        """Refuse bad input before any stage of the run starts (e.g. calibration images that are verdict
        images): raise ConfigError / InputError. Default: nothing to check."""

    def cache_salt(self, config: PipelineConfig) -> str:
        """Extra cache-key material from things outside the options and inputs (data files, CPU, versions)."""
        return ""

    def run(self, ctx: StageContext, options: Any, inputs: dict[str, Path]) -> dict[str, Path]:
        raise NotImplementedError
