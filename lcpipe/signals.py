"""Ctrl-C and SIGTERM: stop with one line, temps removed, exit 130 / 143; a rerun resumes.

The handler raises ``Interrupted`` in the main thread. On the way out, the with-blocks that build
temps (lcpipe.fileio.atomic_*, the cache's put) delete them and the run's locks are released; the
CLI then prints one line and leaves with os._exit, so no library's teardown (OpenVINO/TBB worker
threads, NNCF, Ray) runs in a half-stopped process. A second signal, or a cleanup that takes longer
than GRACE_S, ends the process at once: a later run removes what is left (temps carry the pid).

Paddle installs C++ handlers for SIGTERM, SIGSEGV, SIGABRT, SIGBUS, SIGILL and SIGFPE when it is
imported (paddle2onnx imports it too); on SIGTERM they print a C++ "crash" report instead of
letting Python stop, and they are not async-signal-safe. While the CLI's handlers are installed,
an import hook calls ``paddle.disable_signal_handler()`` (Paddle's documented switch) right after
paddle is imported and puts lcpipe's handlers back.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType, ModuleType
from typing import Any, NoReturn

GRACE_S = 30.0  # longest cleanup after a signal before the process ends regardless
HANDLED = (signal.SIGINT, signal.SIGTERM)

_installed = False
_stopping = False


class Interrupted(BaseException):
    """A signal asked lcpipe to stop (a BaseException, so ``except Exception`` never swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    global _stopping
    if _stopping:
        _exit_now(signum, "stopped at once (second signal)")
    _stopping = True
    threading.Thread(target=_deadline, args=(signum,), daemon=True, name="lcpipe-stop-deadline").start()
    raise Interrupted(signum)


def _deadline(signum: int) -> None:
    time.sleep(GRACE_S)
    _exit_now(signum, f"cleanup took over {GRACE_S:.0f} s; stopped at once")


def _exit_now(signum: int, why: str) -> NoReturn:
    os.write(2, f"lcpipe: {signal.Signals(signum).name}: {why}\n".encode())
    os._exit(128 + signum)


def install() -> None:
    """lcpipe's SIGINT/SIGTERM handlers (main thread; the CLI calls this, the Python API does not)."""
    global _installed
    for sig in HANDLED:
        signal.signal(sig, _handler)
    _installed = True
    if not any(isinstance(f, _PaddleImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _PaddleImportHook())
    if "paddle" in sys.modules:
        _calm_paddle(sys.modules["paddle"])


def finish(exc: Interrupted, message: str) -> NoReturn:
    """Print ``message`` (one line), flush the logs and end the process with the signal's exit code."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.write(2, (message.rstrip("\n") + "\n").encode())
    logging.shutdown()
    os._exit(exc.exit_code)


# ---------------------------------------------------------------- Paddle's C++ handlers

def _calm_paddle(paddle: ModuleType) -> None:
    disable = getattr(paddle, "disable_signal_handler", None)
    if disable is not None:
        disable()  # back to SIG_DFL for the signals Paddle took
    if _installed and threading.current_thread() is threading.main_thread():
        for sig in HANDLED:
            signal.signal(sig, _handler)


class _PaddleImportHook(importlib.abc.MetaPathFinder):
    """Runs _calm_paddle right after the ``paddle`` package has been imported, by whatever import."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname != "paddle":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            _calm_paddle(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader instance
        return spec
