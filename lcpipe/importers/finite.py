"""Weights that are not finite numbers refused at import, by name.

A NaN or infinite weight makes outputs NaN; argmax of a NaN row is always 0, so an INT8 model
"agrees" with its FP32 model on every image and every fidelity gate would pass on nonsense. So
does a negative BatchNorm variance (its square root is NaN once folded)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lcpipe.errors import InputError, clip

_LISTED = 5


def check_finite(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]], where: str) -> None:
    """InputError naming ``where`` and the tensors holding NaN or infinity (float arrays only)."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    bad = []
    for name, value in items:
        arr = np.asarray(value)
        if arr.dtype.kind not in "fc":
            continue
        finite = np.isfinite(arr)
        if not finite.all():
            bad.append(f"{clip(str(name), 80)} ({arr.size - int(np.count_nonzero(finite)):,} of {arr.size:,} values)")
    if bad:
        more = f" (+{len(bad) - _LISTED} more)" if len(bad) > _LISTED else ""
        raise InputError(f"{where}: weights are not finite numbers (NaN or infinity): "
                         f"{', '.join(bad[:_LISTED])}{more}; every output would be NaN")


def check_bn_variance(tensors: Mapping[str, np.ndarray], where: str) -> None:
    """A BatchNorm variance below zero (canonical names ``*._variance``)."""
    bad = [f"{n} (min {float(np.min(v)):.3g})" for n, v in tensors.items()
           if n.endswith("._variance") and np.size(v) and float(np.min(v)) < 0]
    if bad:
        raise InputError(f"{where}: BatchNorm variance below zero in {', '.join(bad[:_LISTED])}: folding it would "
                         f"take the square root of a negative number (NaN outputs)")
