"""jinja2 templates (render/templates/, package data) and inline PNGs for self-contained pages."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"


def render_template(name: str, filters: dict[str, Any] | None = None, **context: Any) -> str:
    """Render ``templates/<name>`` with autoescape on and undefined names as errors; ``filters``
    adds template filters (the sweep page formats its cells with them)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(filters or {})
    return env.get_template(name).render(**context)


def png_base64(png: bytes) -> str:
    """For <img src="data:image/png;base64,...">."""
    return base64.b64encode(png).decode("ascii")
