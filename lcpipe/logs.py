"""Where lcpipe's messages go: one short line each on stderr, the full text in a log file.

Each command logs into ``lcpipe.log`` under the user log folder (platformdirs; $LCPIPE_LOG_DIR
overrides it), and each run also into ``<run dir>/lcpipe.log``. A message longer than
MESSAGE_LIMIT characters is cut on the terminal with a pointer to the log; tracebacks of
unexpected errors go only to the log files, never to the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MESSAGE_LIMIT = 1000  # characters of one message shown on the terminal
LOG_NAME = "lcpipe.log"
_ROTATE_BYTES = 5 << 20  # the user log is moved to lcpipe.log.1 past this size
_FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

_logger = logging.getLogger("lcpipe")
_user_log: Path | None = None
_run_logs: list[Path] = []  # logs of the runs in progress, innermost last


def cap(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying where the rest is."""
    if len(text) <= limit:
        return text
    where = current_log()
    tail = f"full text in {where}" if where else "full text not kept"
    return f"{text[:limit]} ... [{len(text) - limit} more characters; {tail}]"


class _CappedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return cap(super().format(record))


def setup(level: int, fmt: str) -> None:
    """Terminal handler (capped) on the root logger, and the user log file for lcpipe's logger."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_lcpipe", False):
            root.removeHandler(h)
    term = logging.StreamHandler(sys.stderr)
    term.setFormatter(_CappedFormatter(fmt))
    term._lcpipe = True  # type: ignore[attr-defined]
    root.addHandler(term)
    root.setLevel(level)
    _logger.setLevel(level)
    _open_user_log()


def _open_user_log() -> None:
    global _user_log
    if _user_log is not None:
        return
    try:
        folder = _user_log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOG_NAME
        if path.is_file() and path.stat().st_size > _ROTATE_BYTES:
            os.replace(path, path.with_name(LOG_NAME + ".1"))
        handler = _file_handler(path)
    except OSError:
        return  # no writable log folder: the terminal line is all there is
    _logger.addHandler(handler)
    _user_log = path
    _write([handler], logging.INFO, f"lcpipe {_argv()} (pid {os.getpid()})")


def _user_log_dir() -> Path:
    env = os.environ.get("LCPIPE_LOG_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_log_dir("lcpipe"))


def _file_handler(path: Path) -> logging.FileHandler:
    handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(_FILE_FORMAT))
    handler.setLevel(logging.DEBUG)
    return handler


def _argv() -> str:
    return " ".join(sys.argv[1:])[:2000]


def current_log() -> Path | None:
    """Where messages go now: the log of the run in progress, else the user log."""
    return _run_logs[-1] if _run_logs else _user_log


def log_of(exc: BaseException) -> Path | None:
    """The log holding ``exc``'s traceback: the run's it left, else the user log."""
    return getattr(exc, "_lcpipe_run_log", None) or _user_log


@contextmanager
def run_log(run_dir: Path) -> Iterator[Path]:
    """Also log into ``<run dir>/lcpipe.log`` for the block; an exception leaving it is written there
    with its traceback (the terminal gets one line from the CLI)."""
    path = Path(run_dir) / LOG_NAME
    handler = _file_handler(path)
    _logger.addHandler(handler)
    _run_logs.append(path)
    _write([handler], logging.INFO, f"run started (pid {os.getpid()}, lcpipe {_argv()})")
    try:
        yield path
    except BaseException as exc:
        _write([handler], logging.ERROR, f"{type(exc).__name__}: {exc}", exc)
        if getattr(exc, "_lcpipe_run_log", None) is None:
            try:
                exc._lcpipe_run_log = path  # type: ignore[attr-defined]
            except AttributeError:
                pass
        raise
    finally:
        _run_logs.pop()
        _logger.removeHandler(handler)
        handler.close()


def log_exception(exc: BaseException) -> None:
    """The full message and traceback into the user log (the run log got them from run_log)."""
    handlers = [h for h in _logger.handlers if isinstance(h, logging.FileHandler)
                and _user_log is not None and Path(h.baseFilename) == _user_log.resolve()]
    _write(handlers, logging.ERROR, f"{type(exc).__name__}: {exc}", exc)


def _write(handlers: list[logging.Handler], level: int, msg: str, exc: BaseException | None = None) -> None:
    """A record straight into these file handlers: never shown on the terminal, whatever the levels."""
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = _logger.makeRecord(_logger.name, level, __file__, 0, msg, (), info)
    for h in handlers:
        h.handle(record)
