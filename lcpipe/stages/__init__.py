"""The stage registry: every stage class, in pipeline order (also the order `lcpipe stages` lists them in).

One module per stage. A YAML names a stage by its ``name``; ``options_model`` is how the runner
validates the options a YAML gives it (lcpipe.config does not import the stages). Stage modules
import their heavy packages inside ``run``, so importing the registry stays cheap.
"""

from __future__ import annotations

from lcpipe.config import StageOptions
from lcpipe.errors import ConfigError, shown
from lcpipe.stages.base import Stage
from lcpipe.stages.bench import BenchStage
from lcpipe.stages.convert import ConvertStage
from lcpipe.stages.deploy import DeployStage
from lcpipe.stages.export import ExportStage
from lcpipe.stages.fuse import FuseStage
from lcpipe.stages.import_ import ImportStage
from lcpipe.stages.plan import PlanStage
from lcpipe.stages.quantize import QuantizeStage
from lcpipe.stages.report import ReportStage
from lcpipe.stages.validate import ValidateStage


def _registry(*classes: type[Stage]) -> dict[str, type[Stage]]:
    out: dict[str, type[Stage]] = {}
    for cls in classes:
        if cls.name in out:
            raise ValueError(f"stage {cls.name!r} registered twice ({out[cls.name].__name__}, {cls.__name__})")
        out[cls.name] = cls
    return out


STAGES = _registry(ImportStage, FuseStage, ExportStage, ConvertStage, QuantizeStage, PlanStage, ValidateStage,
                   ReportStage, DeployStage, BenchStage)


def get_stage(name: str) -> type[Stage]:
    try:
        return STAGES[name]
    except KeyError:
        raise ConfigError(f"unknown stage {shown(name)}; known: {', '.join(STAGES)}") from None


def options_model(name: str) -> type[StageOptions]:
    """The options model of stage ``name`` (lcpipe.config.OptionsOf)."""
    return get_stage(name).Options
