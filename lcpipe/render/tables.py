"""The table writers: rows of strings (first row the header) to markdown or a rich table.
(HTML tables are a macro in templates/.)"""

from __future__ import annotations

from typing import Any

Rows = list[list[str]]


def md_table(rows: Rows) -> str:
    """A GitHub markdown table; a "|" inside a cell becomes "/" so it cannot split the row."""
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body])


def rich_table(rows: Rows, title: str) -> Any:
    """The same rows as a rich Table for the terminal (long cells fold)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in rows[0]:
        t.add_column(col, overflow="fold")
    for r in rows[1:]:
        t.add_row(*r)
    return t
