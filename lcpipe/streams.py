"""stdout belongs to lcpipe's results (a summary, a table, the one JSON document of ``--json``);
everything else (logs, progress, what libraries print) goes to stderr.

Python-level redirection is not enough: paddle2onnx's C++ code writes to file descriptor 1 itself,
and handlers some libraries attach at import (NNCF's) hold the stdout object they saw then. So
both the descriptor and ``sys.stdout`` are pointed at stderr while such code runs. (``fd_redirected``
also holds Ray's C++ warnings in a file while a sweep connects.)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def fd_redirected(fd: int, target: int) -> Iterator[bool]:
    """File descriptor ``fd`` pointed at ``target`` (another descriptor) while the body runs, for what
    native code writes; the Python stream in front of ``fd`` is flushed before and after. Yields False
    (and redirects nothing) when ``fd`` is not usable, e.g. closed."""
    try:
        _flush(fd)
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):
        yield False
        return
    try:
        os.dup2(target, fd)
        yield True
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            _flush(fd)
        os.dup2(saved, fd)
        os.close(saved)


def _flush(fd: int) -> None:
    """Python's buffer in front of stdout or stderr, so what it holds lands before the switch."""
    stream = {1: sys.stdout, 2: sys.stderr}.get(fd)
    if stream is not None:
        stream.flush()


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 pointed at stderr while the body runs (what C/C++ code prints)."""
    with fd_redirected(1, 2):
        yield


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """``sys.stdout`` and file descriptor 1 both on stderr while the body runs: a ``--json`` command
    does its work inside and writes its one document to stdout afterwards."""
    with native_stdout_to_stderr(), contextlib.redirect_stdout(sys.stderr):
        yield
