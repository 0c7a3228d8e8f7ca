"""Rendering: terminal/markdown tables, charts and the jinja2 templates, for report, bench and sweep."""
