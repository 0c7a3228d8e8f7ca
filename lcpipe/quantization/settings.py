"""What nncf.quantize is called with: the preset, the keyword arguments built from the quantize
stage's options, and the ignored scope (the options' own, plus op names a caller keeps in float)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lcpipe.ir import framework_spec


def choose_preset(requested: str | None, canonical: Path | None, model: Any) -> tuple[str, str]:
    """Explicit option, else by activation: hardswish -> mixed, relu/relu6 -> performance."""
    if requested:
        return requested, "set in options"
    act = model_activation(canonical, model)
    if act is None:
        return "mixed", "activation unknown"
    return ("mixed" if act == "hardswish" else "performance"), f"act {act}"


def model_activation(canonical: Path | None, model: Any) -> str | None:
    """``act`` from the canonical spec.json, else from the spec the ONNX export left in rt_info."""
    spec_file = Path(canonical) / "spec.json" if canonical else None
    if spec_file and spec_file.is_file():
        return json.loads(spec_file.read_text()).get("act")
    spec = framework_spec(model)
    return spec.get("act") if spec else None


def ignored_names(options: Any, extra: Sequence[str] = ()) -> list[str]:
    """The options' ignored_scope.names followed by ``extra`` (duplicates dropped, order kept)."""
    own = list(options.ignored_scope.names) if options.ignored_scope is not None else []
    return list(dict.fromkeys([*own, *extra]))


def nncf_params(options: Any, preset: str, n_calib: int, *, keep_float: Sequence[str] = ()) -> dict[str, Any]:
    """nncf.quantize keyword arguments from the quantize stage's options (preset chosen by the caller).

    ``keep_float``: op names left in float on top of the options' ignored_scope (a plan candidate's
    stem or fc, a sensitivity variant's layer group)."""
    import nncf

    scope = None
    if options.ignored_scope is not None or keep_float:
        s = options.ignored_scope
        scope = nncf.IgnoredScope(names=ignored_names(options, keep_float),
                                  patterns=list(s.patterns) if s is not None else [],
                                  types=list(s.types) if s is not None else [])
    return {
        "preset": nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        "subset_size": min(options.subset_size, n_calib),
        "fast_bias_correction": options.fast_bias_correction,
        "model_type": nncf.ModelType.TRANSFORMER if options.model_type == "transformer" else None,
        "ignored_scope": scope,
        "target_device": nncf.TargetDevice[options.target_device],
    }


def library_versions() -> dict[str, str]:
    """The versions a quantized IR depends on (cache keys, provenance in rt_info)."""
    from lcpipe.sysinfo import versions

    v = versions()
    return {k: v.get(k, "") for k in ("openvino", "nncf")}
