"""Cell formatting shared by every table: a missing figure reads "n/a", never "None" or "nan"."""

from __future__ import annotations

from typing import Any

MISSING = "n/a"


def num(v: Any) -> str:
    """Floats to 4 significant digits, anything else as is."""
    if v is None:
        return MISSING
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def fixed(v: Any, digits: int = 2, suffix: str = "") -> str:
    return MISSING if v is None else f"{v:.{digits}f}{suffix}"


def pct(v: Any, digits: int = 2) -> str:
    """A rate in [0, 1] as a percentage."""
    return MISSING if v is None else f"{100 * v:.{digits}f}%"


def times(v: Any) -> str:
    """A speed-up ratio: "1.6x", or "n/a" (not "n/ax") when it was not measured."""
    return MISSING if v is None else f"{num(v)}x"


def ci(v: Any, scale: float = 1.0, digits: int = 2, suffix: str = "") -> str:
    """" [low, high]" of an interval (scaled: 100 for percentages), or "" when there is none."""
    if not v:
        return ""
    return f" [{scale * v[0]:.{digits}f}, {scale * v[1]:.{digits}f}]{suffix}"
