"""Schema of a pipeline YAML: typed, validated, with ``--set a.b=c`` overrides.

Errors name the file and the key path, e.g.
``pipelines/v2.yaml: stages[3].quantize.presett: unknown key (did you mean 'preset'?)``.
Paths written in the YAML are relative to the YAML file; paths given with ``--set`` are
relative to the current directory. A model names its path-typed keys in ``path_fields``; stage
options do the same.

Stage options are declared by the stages (lcpipe/stages/), which import this module; so this
module does not import them: whoever parses a pipeline passes ``options_of`` (stage name -> its
options model), which lcpipe.runner does with the stage registry (``lcpipe.runner.load_config``).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lcpipe.errors import ConfigError, clip, shown


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageOptions(Strict):
    """Base of every stage's options: typed, defaults, unknown keys are errors. Options that name
    files list them in ``path_fields`` (resolved against the YAML's folder, shipped by sweeps)."""

    path_fields: ClassVar[frozenset[str]] = frozenset()

    def selects(self) -> bool:
        """Does the stage choose something by looking at evaluation images (plan, accuracy control)?
        Then it looks at tune images, and the verdict only at images no choice saw (data.tune)."""
        return False


# stage name -> its options model (lcpipe.stages.options_model); ConfigError for an unknown name
OptionsOf = Callable[[str], type[StageOptions]]


# Filesystem paths: each model lists them in ``path_fields`` so they are resolved against
# the YAML's folder (and against the current directory when given with --set).
PathStr = str

SourceFormat = Literal["pdparams", "torch", "safetensors", "paddle_inference", "onnx"]
StrideEntry = int | tuple[int, int]


class SourceConfig(Strict):
    path_fields: ClassVar[frozenset[str]] = frozenset({"path"})
    format: SourceFormat
    path: PathStr | None = None
    url: str | None = None
    sha256: str | None = None

    @model_validator(mode="after")
    def _path_or_url(self) -> SourceConfig:
        if not self.path and not self.url:
            raise ValueError("give 'path' (local file) or 'url' (+ 'sha256')")
        return self


class ModelOptionsConfig(Strict):
    """PaddleClas constructor options; None means the architecture's default or auto-detected."""

    class_num: int | None = Field(None, gt=0)
    class_expand: int | None = Field(None, gt=0)
    use_last_conv: bool | None = None
    stride_list: list[StrideEntry] | None = None
    act: Literal["hardswish", "relu", "relu6"] | None = None
    dropout_prob: float | None = Field(None, ge=0.0, lt=1.0)

    @field_validator("stride_list")
    @classmethod
    def _five(cls, v: list[StrideEntry] | None) -> list[StrideEntry] | None:
        if v is not None and len(v) != 5:
            raise ValueError(f"needs 5 entries (stem, blocks3..blocks6), got {len(v)}")
        for i, entry in enumerate(v or ()):
            if not all(1 <= s <= 4 for s in (entry if isinstance(entry, tuple) else (entry,))):
                # PP-LCNet strides are 1 or 2; a stride of 0 kills ONNX Runtime with SIGFPE
                raise ValueError(f"entry {i} ({list(entry) if isinstance(entry, tuple) else entry}): strides are 1..4")
        return v


class ModelConfig(Strict):
    source: SourceConfig
    arch: str = "auto"
    options: ModelOptionsConfig = ModelOptionsConfig()

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from lcpipe.models.spec import ARCHS

        if v != "auto" and v not in ARCHS:
            close = difflib.get_close_matches(v, list(ARCHS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown arch {v!r}{hint}; one of auto, {', '.join(ARCHS)}")
        return v


# Image sides lcpipe resizes to: 8 px is below any classifier's input, 4096 px above any PP-LCNet's;
# the bound keeps a typo (0, 100000) from reaching ONNX Runtime or a 447 GiB allocation.
MIN_SIDE, MAX_SIDE = 8, 4096
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)]


class PreprocessConfig(Strict):
    """How an image becomes the network input (declared once; used by data, export metadata, deploy).

    paddleclas: RGB, resize short side to ``resize_short`` (cv2 INTER_LINEAR), center crop ``crop``.
    timm: resize short side to crop/crop_pct (bicubic), center crop ``crop``.
    resize: plain resize to ``size`` [h, w] (PULC models, e.g. 80x160).
    Then /255, (x - mean) / std, HWC -> CHW.
    """

    mode: Literal["paddleclas", "timm", "resize"] = "paddleclas"
    resize_short: Side = 256
    crop: Side = 224
    crop_pct: float = Field(0.875, gt=0, le=1)
    size: tuple[Side, Side] | None = None
    interpolation: Literal["bilinear", "bicubic"] | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @model_validator(mode="after")
    def _size_for_resize(self) -> PreprocessConfig:
        if self.mode == "resize" and self.size is None:
            raise ValueError("mode 'resize' needs size: [height, width]")
        if self.mode == "timm" and self.crop / self.crop_pct > MAX_SIDE:
            raise ValueError(f"crop / crop_pct = {self.crop / self.crop_pct:.0f}: timm would resize the short side "
                             f"past {MAX_SIDE} px")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or not all(self.std):
            raise ValueError("mean and std must be finite numbers, std non-zero")
        return self

    @property
    def input_hw(self) -> tuple[int, int]:
        return tuple(self.size) if self.mode == "resize" else (self.crop, self.crop)  # type: ignore[return-value]

    @property
    def resolved_interpolation(self) -> str:
        return self.interpolation or ("bicubic" if self.mode == "timm" else "bilinear")


class DatasetConfig(Strict):
    """Images + labels. ``labels``: lines ``<file> <class_index>`` (files relative to ``images``).
    ``paddleclas_root``: a PaddleClas ImageNet layout (``val/`` + ``val_list.txt``).
    Neither: an unlabeled folder (calibration only)."""

    path_fields: ClassVar[frozenset[str]] = frozenset({"images", "labels", "paddleclas_root"})

    images: PathStr | None = None
    labels: PathStr | None = None
    paddleclas_root: PathStr | None = None
    count: int | None = Field(None, gt=0)  # None: all
    seed: int = 0
    # Make one sample per listed rotation (degrees, counter-clockwise); its label is the
    # rotation's index. For orientation models on upright images.
    rotations: list[int] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if not self.images and not self.paddleclas_root:
            raise ValueError("give 'images' (folder) or 'paddleclas_root'")
        return self


class SplitConfig(Strict):
    """How data.eval is split into tune and verdict images when no data.tune is given
    (lcpipe.data.split: by content, stratified by label, the same on every machine)."""

    tune_fraction: float = Field(0.3, gt=0.0, lt=1.0)  # share of the evaluation images that tune
    seed: int = 0


class DataConfig(Strict):
    path_fields: ClassVar[frozenset[str]] = frozenset({"label_names"})
    calib: DatasetConfig | None = None
    eval: DatasetConfig | None = None
    # Images the selecting steps look at (plan fidelity, accuracy control, sensitivity); may be
    # unlabeled (then only label-free gates are checked on it). None: a split of data.eval.
    tune: DatasetConfig | None = None
    # Split data.eval into tune / verdict images. Applied when the pipeline has a selecting step and
    # no data.tune (with these defaults when not given); given explicitly, also without one (e.g. to
    # keep the images `lcpipe sensitivity` ranked on out of the verdict).
    split: SplitConfig | None = None
    # Calibration images that are also verdict images (same bytes, any name) stop the run (exit 2)
    # unless this is true; the report then says so prominently.
    allow_calibration_overlap: bool = False
    label_names: PathStr | None = None  # lines "<index> <name>" or "<name>"
    cache_preprocessed: bool = True


IsaThresholds = dict[Literal["amx", "avx512_vnni", "avx512", "avx2", "default"], float]
Threshold = float | IsaThresholds


GateMode = Literal["interval", "point"]
GATE_SETTINGS = ("confidence", "mode")  # GatesConfig fields that are not a gate


class GatesConfig(Strict):
    """Limits; accuracies and drops are fractions in [0, 1]. Each gate checks its figure's interval
    at ``confidence`` (pass / fail / inconclusive, docs/verdicts.md); ``mode: point`` is the old
    pass/fail on the figure alone, for pipelines that relied on it."""

    confidence: float = Field(0.95, ge=0.5, lt=1.0)
    mode: GateMode = "interval"

    max_top1_drop: Threshold | None = None
    max_top1_flips: Threshold | None = None  # images whose top-1 correctness changed for the worse
    min_agreement: Threshold | None = None
    min_cosine: Threshold | None = None
    max_rel_logit_error: Threshold | None = None
    min_fp32_top1: Threshold | None = None
    min_int8_top1: Threshold | None = None
    min_latency_speedup: Threshold | None = None
    min_throughput_speedup: Threshold | None = None
    min_e2e_latency_speedup: Threshold | None = None  # INT8 image-input route vs FP32 IR + Python preprocessing
    min_e2e_throughput_speedup: Threshold | None = None

    def thresholds(self) -> dict[str, Threshold]:
        """The configured gates (name -> limit), without the settings."""
        return {k: v for k, v in self.model_dump(exclude_none=True).items() if k not in GATE_SETTINGS}


class RuntimeConfig(Strict):
    threads: int | None = Field(None, gt=0)  # None: all cores of this machine
    seed: int = 0


class StageEntry(Strict):
    name: str
    options: StageOptions


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class PipelineConfig(Strict):
    name: str
    model: ModelConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    data: DataConfig = DataConfig()
    gates: GatesConfig = GatesConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    stages: list[StageEntry]
    source_file: str | None = None  # the YAML this came from (informational)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # it names the folder runs/<name>/: no '/', no '..', no leading '.' or '-' (hidden, or an option)
        if not _PLAIN_NAME.fullmatch(v) or ".." in v:
            raise ValueError("not a plain name (it names the run folder): letters, digits, '_', '-' and '.', "
                             "starting with a letter, digit or '_', at most 128 characters, no '..'")
        return v

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage_options(self, name: str) -> Any:
        for s in self.stages:
            if s.name == name:
                return s.options
        return None

    def selecting_steps(self) -> list[str]:
        """Stages that choose by looking at evaluation images (StageOptions.selects)."""
        return [s.name for s in self.stages if s.options.selects()]

    def to_yaml_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude={"stages", "source_file"})
        d["stages"] = [{s.name: s.options.model_dump(mode="json")} for s in self.stages]
        return d


# ---------------------------------------------------------------- loading

def read_yaml_mapping(path: Path, kind: str, keys_hint: str = "") -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ConfigError naming the file otherwise."""
    from lcpipe.safe_yaml import load_yaml_file

    raw = load_yaml_file(path, kind)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping{f' ({keys_hint})' if keys_hint else ''}")
    return raw


def parse_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                 options_of: OptionsOf, stage_order: Sequence[str] = ()) -> PipelineConfig:
    """The pipeline YAML at ``path`` with ``--set`` overrides, validated (stage options by ``options_of``;
    a stage an override adds goes to its place in ``stage_order``)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "pipeline")
    try:
        raw = resolve_config_paths(raw, path.parent.resolve(), options_of)
    except ConfigError as exc:  # an empty path: name the file too
        raise ConfigError(f"{path}: {exc}") from None
    for ov in overrides:
        raw = apply_override(raw, ov, str(path), options_of=options_of, stage_order=stage_order)
    return validate_config(raw, str(path), options_of=options_of)


def resolve_config_paths(raw: dict[str, Any], base: Path, options_of: OptionsOf) -> dict[str, Any]:
    """Every path-typed value of a raw pipeline (config sections and stage options) made absolute
    against ``base``; stage entries that are not a one-key mapping of a known stage stay as they are
    (validate_config reports them)."""
    out = resolve_paths(raw, PipelineConfig, base)
    stages = out.get("stages")
    if isinstance(stages, list):
        out["stages"] = [_resolve_stage_paths(item, base, options_of) for item in stages]
    return out


def _resolve_stage_paths(item: Any, base: Path, options_of: OptionsOf) -> Any:
    if not isinstance(item, dict) or len(item) != 1:
        return item
    ((name, opts),) = item.items()
    try:
        model = options_of(str(name))
    except ConfigError:
        return item
    return {name: resolve_paths(opts, model, base, f"stages.{name}.")}


def validate_config(raw: dict[str, Any], where: str = "<config>", *, options_of: OptionsOf) -> PipelineConfig:
    raw = dict(raw)
    stages_raw = raw.pop("stages", None)
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{where}: stages: required, a non-empty list of {{stage name: options}}")
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(stages_raw):
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}: stages[{i}]: expected a one-key mapping {{stage name: options}}")
        ((name, opts),) = item.items()
        try:
            model = options_of(str(name))
        except ConfigError as exc:
            raise ConfigError(f"{where}: stages[{i}]: {exc}") from None
        if name in seen:
            raise ConfigError(f"{where}: stages[{i}]: stage {shown(name)} listed twice")
        seen.add(name)
        try:
            options = model.model_validate(opts or {})
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, where, f"stages[{i}].{name}", model)) from None
        entries.append({"name": name, "options": options})
    raw["stages"] = entries
    raw.setdefault("source_file", where)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where, "", PipelineConfig)) from None


def format_errors(exc: ValidationError, where: str, prefix: str, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = _loc_str(err["loc"], prefix)
        if err["type"] == "extra_forbidden":
            known = _known_keys(model, [p for p in err["loc"][:-1] if isinstance(p, str)])
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})" if known else ""
            msg = f"unknown key{hint}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict):
                msg += f", got {shown(err['input'])}"
        lines.append(f"{where}: {loc}: {msg}")
    return "\n".join(dict.fromkeys(lines))


def _loc_str(loc: tuple[Any, ...], prefix: str) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("tuple[int, int]", "int") or "[" in str(part) or "function-" in str(part):
            continue  # pydantic union branch labels, not user keys
        else:
            out += f".{part}" if out else str(part)
    return out or "<top>"


def _known_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for key in path:
        sub = sub_model(current, key)
        if sub is None:
            return []
        current = sub
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def sub_model(model: Any, key: str) -> type[BaseModel] | None:
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or key not in model.model_fields:
        return None
    ann = model.model_fields[key].annotation
    for cand in (ann, *getattr(ann, "__args__", ())):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def is_path_field(model: type[BaseModel], key: str) -> bool:
    return key in getattr(model, "path_fields", ())


def resolve_paths(raw: Any, model: type[BaseModel] | None, base: Path, prefix: str = "") -> Any:
    """Make every path-typed value of ``model`` (and its sub-models) absolute against ``base``; an empty
    one is a ConfigError naming its key (``prefix``: the key path of ``raw``)."""
    if not isinstance(raw, dict) or model is None:
        return raw
    out = {}
    for key, value in raw.items():
        if isinstance(value, str) and is_path_field(model, key):
            value = str((base / _non_empty(value, prefix + key)).resolve())
        elif isinstance(value, dict):
            value = resolve_paths(value, sub_model(model, key), base, f"{prefix}{key}.")
        out[key] = value
    return out


def _non_empty(value: str, key: str, where: str = "") -> Path:
    """A path value as a Path; an empty one is an error (it would resolve to the folder itself)."""
    if not value.strip():
        raise ConfigError(f"{where}{key} is empty: give a file or folder path")
    return Path(value).expanduser()


MAX_KEY_DEPTH = 16  # stages.<stage>.<option>.<sub-option> is the deepest real key path


def apply_override(raw: dict[str, Any], override: str, where: str = "--set", *,
                   options_of: OptionsOf, stage_order: Sequence[str] = ()) -> dict[str, Any]:
    """``a.b.c=value``; value parsed as YAML; ``stages.<name>.key`` addresses a stage's options and
    ``stages.<name>=...`` the whole stage (set_stage: add, replace, or remove with null). A path (a key
    some model or stage options list in ``path_fields``) is made absolute against the current directory."""
    from lcpipe.safe_yaml import load_yaml_text

    if "=" not in override:
        raise ConfigError(f"--set {shown(override)}: expected key.path=value")
    key, _, text = override.partition("=")
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set {shown(override)}: empty key path")
    if len(keys) > MAX_KEY_DEPTH:
        raise ConfigError(f"--set {clip(key, 80)}: a key path of {len(keys)} parts (lcpipe's keys are at most "
                          f"{MAX_KEY_DEPTH} deep)")
    value = load_yaml_text(text, f"--set {clip(key.strip(), 80)}") if text.strip() else ""
    override = clip(override, 120)  # for the messages below
    if isinstance(value, str) and is_path_key(keys, options_of):
        value = str(_non_empty(value, ".".join(keys), f"--set {override!r}: ").resolve())
    raw = _deep_copy(raw)
    if keys[0] == "stages" and len(keys) == 2:
        return set_stage(raw, keys[1], value, f"--set {override!r}", options_of=options_of, stage_order=stage_order)
    if keys[0] == "stages":
        if len(keys) < 3:
            raise ConfigError(f"--set {override!r}: use stages.<stage name>.<option>=value, or "
                              "stages.<stage name>={options} / null to add or remove a stage")
        stages = raw.get("stages") or []
        for i, item in enumerate(stages):
            name = item if isinstance(item, str) else next(iter(item), None)
            if name == keys[1]:
                opts = {} if isinstance(item, str) else dict(item[name] or {})
                _set_in(opts, keys[2:], value)
                stages[i] = {name: opts}
                return raw
        raise ConfigError(f"--set {override!r}: no stage named {shown(keys[1])} in {where} "
                          f"(stages: {', '.join(str(s if isinstance(s, str) else next(iter(s))) for s in stages)})")
    _set_in(raw, keys, value)
    return raw


def set_stage(raw: dict[str, Any], name: str, options: Any, where: str, *, options_of: OptionsOf,
              stage_order: Sequence[str] = ()) -> dict[str, Any]:
    """``raw`` (changed in place, returned) with stage ``name`` removed (``options`` None) or given
    ``options`` (a mapping, paths in it relative to the current directory): a stage the pipeline
    lacks is inserted before the first of its stages that comes later in ``stage_order`` (the
    registry's order), so ``stages.plan={}`` lands after quantize whatever else the list holds."""
    stages = raw.get("stages") if isinstance(raw.get("stages"), list) else []
    names = [item if isinstance(item, str) else next(iter(item), None) if isinstance(item, dict) else None
             for item in stages]
    if options is None:
        if name not in names:
            raise ConfigError(f"{where}: no stage {shown(name)} to remove (stages: {', '.join(map(str, names))})")
        del stages[names.index(name)]
    else:
        if not isinstance(options, dict):
            raise ConfigError(f"{where}: a whole stage takes a mapping of options ({{}} for its defaults) or null "
                              f"to remove it, got {shown(options)}; one option: stages.<stage name>.<option>=value")
        try:
            model = options_of(name)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        entry = {name: resolve_paths(options, model, Path.cwd())}
        if name in names:
            stages[names.index(name)] = entry
        else:
            rank = {n: i for i, n in enumerate(stage_order)}
            later = [i for i, n in enumerate(names) if name in rank and n in rank and rank[n] > rank[name]]
            stages.insert(later[0] if later else len(stages), entry)
    raw["stages"] = stages
    return raw


def is_path_key(keys: list[str], options_of: OptionsOf) -> bool:
    """Does the key path (``data.eval.images``, ``stages.bench.paddle_model``) name a path-typed value?"""
    if keys[0] == "stages":
        if len(keys) < 3:
            return False
        try:
            model: type[BaseModel] | None = options_of(keys[1])
        except ConfigError:
            return False
        keys = keys[2:]
    else:
        model = PipelineConfig
    for k in keys[:-1]:
        model = sub_model(model, k) if model else None
    return model is not None and is_path_field(model, keys[-1])


def _set_in(d: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            d[k] = nxt
        d = nxt
    d[keys[-1]] = value


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj
