"""One error family: the CLI catches LcpipeError, prints one line and exits with its code."""

from __future__ import annotations


class LcpipeError(Exception):
    """Base of every error lcpipe raises on purpose."""

    exit_code = 1


class ConfigError(LcpipeError):
    """The pipeline YAML (or a --set override) is wrong; the message names file and key path."""

    exit_code = 2


class InputError(LcpipeError):
    """A weights file, model or dataset cannot be used; the message names the file."""

    exit_code = 2


class UnsafePickleError(InputError):
    """A pickle asked to build something other than plain arrays and dicts."""


class MissingDependencyError(LcpipeError):
    """An optional package is not installed; the message names the pip extra."""

    exit_code = 2


class GateFailedError(LcpipeError):
    """At least one quality/speed gate failed (distinct exit code so CI can tell)."""

    exit_code = 3


class GateInconclusiveError(LcpipeError):
    """No gate failed, but at least one could not be decided (its interval straddles the limit): more
    images, more rounds or a quieter machine can decide it. Its own exit code, so CI can retry it or
    treat it as a failure."""

    exit_code = 4


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (saying how long it was): messages quote user input,
    and user input may be a 10 MB string."""
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 40, 10)]}... ({len(text):,} characters)"


def shown(value: object, limit: int = 80) -> str:
    """repr of a user-given value for a message, clipped."""
    return clip(repr(value), limit)
