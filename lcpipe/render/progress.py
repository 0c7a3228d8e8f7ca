"""The one rich progress bar of lcpipe (preprocessing, inference, timing loops)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(title: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A transient bar on stderr (stdout stays for results); silent when disabled or stderr is not a
    terminal, so CI logs stay clean. Yields ``advance(n=1)``."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not (enabled and console.is_terminal)) as bar:
        task = bar.add_task(title, total=total)
        yield lambda n=1: bar.advance(task, n)
