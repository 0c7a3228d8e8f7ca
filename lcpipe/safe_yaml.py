"""The one YAML loader for everything lcpipe reads (pipelines, sweep files, ``--set`` values, Paddle
``inference.yml``): PyYAML's safe loader with bounds, so a hostile file fails fast with one line
naming the file (and line) instead of hanging, recursing or flooding the terminal.

- size: at most MAX_BYTES, UTF-8 (a BOM is allowed), checked before parsing;
- nesting: at most MAX_DEPTH levels, counted while composing (before Python's recursion limit);
- aliases: the document as it expands (every alias counted as a copy of what it names) may hold
  at most MAX_NODES nodes and MAX_DEPTH levels, so a "billion laughs" is refused after composing
  a few dozen nodes, never expanded; an alias inside its own anchor is refused;
- duplicate keys in any mapping are an error naming the key and both lines (PyYAML keeps the last).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lcpipe.errors import ConfigError, LcpipeError, clip
from lcpipe.fileio import read_text

MAX_BYTES = 4 << 20  # a pipeline is a few KB; a sweep file or a 10,000-class label list well under 1 MB
MAX_DEPTH = 64
MAX_NODES = 100_000  # after alias expansion; composing this many takes PyYAML ~2 s
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YamlLimit(yaml.YAMLError):
    """A bound was hit; carries a message that already says where."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        self._composed += 1
        if self._depth > MAX_DEPTH:
            raise _YamlLimit(f"line {self.peek_event().start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        if self._composed > MAX_NODES:
            raise _YamlLimit(f"line {self.peek_event().start_mark.line + 1}: more than {MAX_NODES:,} YAML nodes")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml_file(path: str | Path, what: str, error: type[LcpipeError] = ConfigError) -> Any:
    """Parse the YAML file ``path`` (``what`` names it in messages: "pipeline", "inference.yml")."""
    text = read_text(path, what, MAX_BYTES, error)
    return load_yaml_text(text, str(path), error)


def load_yaml_text(text: str, source: str, error: type[LcpipeError] = ConfigError) -> Any:
    """Parse YAML ``text``; errors start with ``source`` (a file name, or e.g. "--set a.b")."""
    if len(text) > MAX_BYTES:
        raise error(f"{source}: {len(text):,} characters of YAML, more than the {MAX_BYTES >> 20} MiB lcpipe reads")
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader refuses control characters right here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, loader)
        return loader.construct_document(node)
    except _YamlLimit as exc:
        raise error(f"{source}: {clip(str(exc), 300)}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {_one_line(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message (with snippets of the input) as one short line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return clip(" ".join(str(exc).split()), 300)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: "
    return where + clip(f"{problem}{f' ({context})' if context else ''}", 200)


def _check_expansion(root: Node, loader: yaml.SafeLoader) -> None:
    """Size and depth of the document with every alias expanded (memoized per node, so a shared
    node is measured once), recursive aliases, and duplicate keys. Iterative: no recursion limit."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)
    active: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            kids = _children(node)
            size = 1 + sum(done[id(k)][0] for k in kids)
            depth = 1 + max((done[id(k)][1] for k in kids), default=0)
            line = node.start_mark.line + 1
            if size > MAX_NODES:
                raise _YamlLimit(f"line {line}: expands to more than {MAX_NODES:,} nodes (aliases of aliases?)")
            if depth > MAX_DEPTH:
                raise _YamlLimit(f"line {line}: expands to more than {MAX_DEPTH} levels (nested aliases?)")
            done[key] = (size, depth)
            active.discard(key)
            continue
        if key in done:
            continue
        if key in active:
            raise _YamlLimit(f"line {node.start_mark.line + 1}: an alias refers to the node that contains it")
        active.add(key)
        if isinstance(node, MappingNode):
            _check_duplicate_keys(node, loader)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in done)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_duplicate_keys(node: MappingNode, loader: yaml.SafeLoader) -> None:
    seen: dict[Any, ScalarNode] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            continue  # merge keys ("<<") may be overridden; complex keys are rare and checked on construction
        key = loader.construct_object(key_node)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:
            continue
        if first is not key_node:
            raise _YamlLimit(f"line {key_node.start_mark.line + 1}: duplicate key {clip(repr(key), 80)} (first at "
                             f"line {first.start_mark.line + 1}); YAML would silently keep only the last one")
