"""`lcpipe stages`: every option of every stage with its type, default and one line of help; an option
that is itself a set of options (``quantize.accuracy_control``) is expanded below it.

The help is the option's ``Field(description=...)`` when it has one, else the comment written beside
its declaration in the options class, else the comment lines right above it: the declaration is the
docs, so they cannot drift apart.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class OptionDoc:
    key: str  # the option's name; nested ones indented by depth
    type: str
    default: str
    help: str
    depth: int = 0


def option_docs(model: type[BaseModel], depth: int = 0) -> list[OptionDoc]:
    """Every field of ``model`` in declaration order, nested option models expanded after their field."""
    out = []
    comments = field_comments(model)
    for name, info in model.model_fields.items():
        help_text = info.description or comments.get(name, "")
        default = "required" if info.is_required() else _value(info.get_default(call_default_factory=True))
        out.append(OptionDoc(name, type_name(info.annotation) + _bounds(info.metadata), default, help_text, depth))
        nested = _nested_model(info.annotation)
        if nested is not None:
            out += option_docs(nested, depth + 1)
    return out


def format_stages(stages: dict[str, Any]) -> str:
    """The text of `lcpipe stages`: per stage its summary line, then one line per option."""
    blocks = []
    for name, cls in stages.items():
        lines = [f"{name}: {cls.summary}"]
        docs = option_docs(cls.Options)
        width = max((len(d.key) + 2 * d.depth for d in docs), default=0)
        for d in docs:
            key = "  " * d.depth + d.key
            lines.append(f"    {key:<{width}}  {d.type} = {d.default}" + (f"  # {d.help}" if d.help else ""))
        if not docs:
            lines.append("    (no options)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def type_name(ann: Any) -> str:
    """A YAML reader's name for a type: ``performance | mixed | null``, ``list[int]``, ``mapping``."""
    if ann is type(None):
        return "null"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return " | ".join(str(a) if isinstance(a, str) else _value(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (list, tuple, set, frozenset):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "[" + ", ".join(type_name(a) for a in args) + "]"
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[0])} -> {type_name(args[1])}" if args else "mapping"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "mapping"
    return getattr(ann, "__name__", None) or str(ann)


def _nested_model(ann: Any) -> type[BaseModel] | None:
    for cand in (ann, *typing.get_args(ann)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _bounds(metadata: list[Any]) -> str:
    parts = [f"{sign} {_value(getattr(m, attr))}" for m in metadata for attr, sign in _BOUNDS
             if getattr(m, attr, None) is not None]
    return f" ({', '.join(parts)})" if parts else ""


def _value(v: Any) -> str:
    """A default as YAML writes it: null, true, [], 0.875, mixed."""
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="json")
    if isinstance(v, str):
        return v
    return json.dumps(v)


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment beside its declaration, else the comment lines right above it (joined),
    for the fields declared in ``model``'s own class body (and its bases')."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if cls is BaseModel or not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            continue
        out.update(_class_comments(cls))
    return out


_FIELD = re.compile(r"(\s+)([A-Za-z_]\w*)\s*:")


def _class_comments(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (frozen app, built at runtime)
        return {}
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):
        return {}
    lines = source.splitlines()
    body_indent = next((m[1] for ln in lines[1:] if (m := re.match(r"(\s+)\S", ln))), None)
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        m = _FIELD.match(line)
        if not m or m[1] != body_indent or m[2] not in cls.__dict__.get("__annotations__", {}):
            continue
        if number in comments and not line.lstrip().startswith("#"):
            out[m[2]] = comments[number]
            continue
        above = []
        n = number - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, comments.get(n, ""))
            n -= 1
        if above:
            out[m[2]] = " ".join(a for a in above if a)
    return out
