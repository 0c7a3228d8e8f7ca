"""The one rich progress bar of lcpipe (preprocessing, inference, timing loops, downloads)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def rich_bar(title: str, total: int | None, *, enabled: bool = True, terminal_only: bool = True,
             transient: bool = True, transfer: bool = False) -> tuple[Any, Any]:
    """(rich Progress, task id) on stderr (stdout stays for results), not started. ``terminal_only``:
    silent when stderr is not a terminal, so CI logs stay clean; ``transfer``: byte counts and speed
    columns (downloads); ``total`` None: unknown length."""
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    console = Console(stderr=True)
    columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()) if transfer else ()
    bar = Progress(*columns, console=console, transient=transient,
                   disable=not enabled or (terminal_only and not console.is_terminal))
    return bar, bar.add_task(title, total=total)


@contextmanager
def progress(title: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A transient bar, silent when disabled or stderr is not a terminal. Yields ``advance(n=1)``."""
    bar, task = rich_bar(title, total, enabled=enabled)
    with bar:
        yield lambda n=1: bar.advance(task, n)
