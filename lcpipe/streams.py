"""stdout belongs to lcpipe's results (a summary, a table, the one JSON document of ``--json``);
everything else (logs, progress, what libraries print) goes to stderr.

Python-level redirection is not enough: paddle2onnx's C++ code writes to file descriptor 1 itself,
and handlers some libraries attach at import (NNCF's) hold the stdout object they saw then. So
both the descriptor and ``sys.stdout`` are pointed at stderr while such code runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 pointed at stderr while the body runs (what C/C++ code prints)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no usable stdout: nothing to hold
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """``sys.stdout`` and file descriptor 1 both on stderr while the body runs: a ``--json`` command
    does its work inside and writes its one document to stdout afterwards."""
    with native_stdout_to_stderr(), contextlib.redirect_stdout(sys.stderr):
        yield
