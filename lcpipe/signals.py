"""Ctrl-C and SIGTERM: stop with one line, temps removed, exit 130 / 143; a rerun resumes.

The handler raises ``Interrupted`` in the main thread. On the way out, the with-blocks that build
temps (lcpipe.fileio.atomic_*, the cache's put) delete them and the run's locks are released; the
CLI then prints one line and leaves with os._exit, so no library's teardown (OpenVINO/TBB worker
threads, NNCF, Ray) runs in a half-stopped process. A second signal, or a cleanup that takes longer
than GRACE_S, ends the process at once: a later run removes what is left (temps carry the pid).

An exception raised by a signal handler lands between any two bytecodes, and some code does not
survive that: importlib and threading take locks before their ``try`` (an import lock left held
hung the next import), and an exception in a weakref callback or ``__del__`` is printed and dropped.
So the handler does not raise inside those modules, nor lets a dropped one go: it retries RETRY_S
later (SIGALRM) until the main thread is in ordinary code.

Python installs its handlers with SA_ONSTACK, and OpenVINO's CPU plugin gives the thread that first
compiles a model a 20,144-byte alternate signal stack: too small for a signal frame once that thread
has run AMX kernels (the tile state alone is 8 KiB), so the kernel turns SIGINT/SIGTERM into a SIGSEGV
(seen in validate on an AMX Xeon). lcpipe's handlers drop SA_ONSTACK and run on the thread's stack.

Paddle installs C++ handlers for SIGTERM, SIGSEGV, SIGABRT, SIGBUS, SIGILL and SIGFPE while its core
package (paddle.base) is imported, by paddle2onnx too; on SIGTERM they print a C++ "crash" report
instead of letting Python stop, and they are not async-signal-safe. While the CLI's handlers are
installed, an import hook holds SIGINT/SIGTERM back during that import, then calls Paddle's
documented switch (``paddle.disable_signal_handler()``, i.e. ``core.disable_signal_handler``) and
puts lcpipe's handlers back.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import importlib.abc
import importlib.machinery
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType, ModuleType
from typing import Any, NoReturn

GRACE_S = 30.0  # longest cleanup after a signal before the process ends regardless
RETRY_S = 0.02  # next try to raise when the signal came at a point where raising is unsafe
HANDLED = (signal.SIGINT, signal.SIGTERM)
# modules that hold locks across statements without a try around them (see above)
_NO_RAISE_IN = ("importlib", "threading", "logging", "weakref", "queue", "concurrent.futures", "_weakrefset")

_installed = False
_received: int | None = None  # the signal being acted on
_critical = 0  # depth of critical() blocks in progress


class Interrupted(BaseException):
    """A signal asked lcpipe to stop (a BaseException, so ``except Exception`` never swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:
        _exit_now(signum, "stopped at once (second signal)")
    _received = signum
    threading.Thread(target=_deadline, args=(signum,), daemon=True, name="lcpipe-stop-deadline").start()
    _raise_when_safe(signum, frame)


def _retry(alarm: int, frame: FrameType | None) -> None:
    if _received is not None:
        _raise_when_safe(_received, frame)


def _raise_when_safe(signum: int, frame: FrameType | None) -> None:
    if _critical or (frame is not None and _unsafe(frame)):
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)  # -> _retry
        return
    raise Interrupted(signum)


def requested() -> bool:
    """A stop signal arrived (a critical() block should wind down)."""
    return _received is not None


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """No stop is raised inside the block (it should end early on requested()); it comes at its end."""
    global _critical
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
    check()


def _unsafe(frame: FrameType) -> bool:
    if frame.f_code.co_filename.startswith("<frozen importlib"):
        return True
    module = str(frame.f_globals.get("__name__", ""))
    return any(module == m or module.startswith(m + ".") for m in _NO_RAISE_IN)


def _unraisable(info: Any) -> None:
    """Our exception raised in a weakref callback or __del__ is dropped there: raise it again later."""
    if isinstance(info.exc_value, Interrupted):
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    sys.__unraisablehook__(info)


def check() -> None:
    """Raise Interrupted again if a signal arrived: a library may have turned the first one into its own
    error (a C extension whose import was interrupted reports ImportError) or swallowed it."""
    if _received is not None:
        raise Interrupted(_received)


def _deadline(signum: int) -> None:
    time.sleep(GRACE_S)
    _exit_now(signum, f"cleanup took over {GRACE_S:.0f} s; stopped at once")


def _exit_now(signum: int, why: str) -> NoReturn:
    os.write(2, f"lcpipe: {signal.Signals(signum).name}: {why}\n".encode())
    os._exit(128 + signum)


def install() -> None:
    """lcpipe's SIGINT/SIGTERM handlers (main thread; the CLI calls this, the Python API does not)."""
    global _installed
    _set_handlers()
    sys.unraisablehook = _unraisable
    if not _installed:
        os.register_at_fork(after_in_child=_defaults_in_child)
    _installed = True
    if not any(isinstance(f, _PaddleImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _PaddleImportHook())
    _calm_paddle()  # in case Paddle is loaded already


def _defaults_in_child() -> None:
    """A forked child (a library's helper process) gets the system's default dispositions: lcpipe's
    handler runs only when Python code does, and a child blocked in C (NNCF's telemetry sender stuck
    in getaddrinfo after a fork) then ignored SIGTERM: terminate() and the exit-time join hung. SIGINT
    too ends it at once and quietly (Python's KeyboardInterrupt would print the child's traceback when
    Ctrl-C reaches the whole process group)."""
    global _installed
    _installed = False
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _set_handlers() -> None:
    for sig in HANDLED:
        signal.signal(sig, _handler)
    signal.signal(signal.SIGALRM, _retry)
    _off_alternate_stack((*HANDLED, signal.SIGALRM))


_SA_ONSTACK = 0x08000000
_SA_FLAGS_OFFSET = 8 + 128  # glibc's struct sigaction (x86_64, aarch64): handler, sa_mask[1024 bits], sa_flags


def _off_alternate_stack(signums: Sequence[int]) -> None:
    """Clear SA_ONSTACK from these signals' handlers (see the module doc: AMX frames on OpenVINO's stack)."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for sig in signums:
        current = ctypes.create_string_buffer(256)
        if libc.sigaction(sig, None, current) != 0:
            continue
        raw = bytearray(current.raw)
        flags = int.from_bytes(raw[_SA_FLAGS_OFFSET:_SA_FLAGS_OFFSET + 4], "little")
        if not flags & _SA_ONSTACK or not any(raw[:8]):
            continue
        raw[_SA_FLAGS_OFFSET:_SA_FLAGS_OFFSET + 4] = (flags & ~_SA_ONSTACK).to_bytes(4, "little")
        libc.sigaction(sig, ctypes.create_string_buffer(bytes(raw), 256), None)


def finish(exc: Interrupted, message: str) -> NoReturn:
    """Print ``message`` (one line), flush the logs and end the process with the signal's exit code."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.write(2, (message.rstrip("\n") + "\n").encode())
    logging.shutdown()
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        try:  # a local Ray this process started would outlive os._exit (its atexit hook does not run)
            ray.shutdown()
        except Exception:  # the stop goes on whatever Ray says; GRACE_S bounds a hang
            pass
    os._exit(exc.exit_code)


# ---------------------------------------------------------------- Paddle's C++ handlers

_PADDLE_CORE = ("paddle.base", "paddle.fluid")  # the package whose import installs them (fluid: Paddle < 2.6)


def _calm_paddle() -> None:
    for name in _PADDLE_CORE:
        core = sys.modules.get(f"{name}.core")
        disable = getattr(core, "disable_signal_handler", None)
        if disable is not None:
            disable()  # Paddle's documented switch: back to SIG_DFL for the signals it took
            if faulthandler.is_enabled():  # python -X faulthandler: its SIGSEGV/SIGABRT reports again
                faulthandler.enable()
    if _installed and threading.current_thread() is threading.main_thread():
        _set_handlers()


class _PaddleImportHook(importlib.abc.MetaPathFinder):
    """Wraps the import of Paddle's core package, by whatever import: SIGINT/SIGTERM are held back in
    this thread while it runs (its handlers are installed partway through) and _calm_paddle runs
    right after it; a signal held back is then handled by lcpipe's handler."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname not in _PADDLE_CORE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            held = signal.pthread_sigmask(signal.SIG_BLOCK, (*HANDLED, signal.SIGALRM))
            try:
                run_module(module)
                _calm_paddle()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)

        loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader instance
        return spec
