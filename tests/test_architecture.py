"""The layout rules of docs/architecture.md, checked on the source with ``ast`` (nothing is imported).

Every import counts, also those inside functions and under TYPE_CHECKING: a lazy import is still a
dependency. A module is a file under lcpipe/ (a package is its __init__.py); ``from lcpipe.a import b``
depends on lcpipe.a.b when that is a module, else on lcpipe.a. Importing a submodule does not count as
importing its parent package (Python runs the parent's __init__, but no code of it is used).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import helpers

PACKAGE = helpers.REPO / "lcpipe"
# Outside lcpipe/stages/, the modules that may import the stage registry (the package face loads and
# runs pipelines through the runner; the CLI lists the stages).
STAGE_IMPORTERS = {"lcpipe", "lcpipe.runner", "lcpipe.cli"}
IR_MODULE = "lcpipe.ir"
IR_CALLS = {"save_model", "set_rt_info", "get_rt_info", "has_rt_info"}  # OpenVINO: what only lcpipe.ir calls


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: dict[str, int] = field(default_factory=dict)  # lcpipe module -> first line importing it
    foreign: dict[str, int] = field(default_factory=dict)  # top-level package outside lcpipe -> first line
    private: list[str] = field(default_factory=list)  # "line: what" for private names of other modules


def load_modules(package: Path = PACKAGE) -> dict[str, Module]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        out[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    for mod in out.values():
        _scan(mod, out)
    return out


def _owner(name: str, modules: dict[str, Module]) -> str | None:
    """The lcpipe module a dotted name lives in (its longest module prefix)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _scan(mod: Module, modules: dict[str, Module]) -> None:
    aliases: dict[str, str] = {}  # local name -> lcpipe module it is bound to
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                _note(mod, a.name, node.lineno, modules)
                if a.name.startswith("lcpipe") and a.name in modules:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in modules:  # a submodule
                    _note(mod, full, node.lineno, modules)
                    aliases[a.asname or a.name] = full
                    continue
                _note(mod, node.module, node.lineno, modules)
                owner = _owner(node.module, modules)
                if owner and owner != mod.name and _is_private(a.name):
                    mod.private.append(f"{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            target = _dotted(node.value)
            module = aliases.get(target or "") or (target if target in modules else None)
            if module and module != mod.name:
                mod.private.append(f"{node.lineno}: {target}.{node.attr}")


def _note(mod: Module, name: str, line: int, modules: dict[str, Module]) -> None:
    if name.split(".")[0] != "lcpipe":
        mod.foreign.setdefault(name.split(".")[0], line)
        return
    owner = _owner(name, modules)
    if owner and owner != mod.name:
        mod.imports.setdefault(owner, line)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (~120)
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in modules[v].imports:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for name in modules:
        if name not in index:
            visit(name)
    return out


def violations(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Every rule of docs/architecture.md's "Rules the layout keeps" that the code under ``package`` breaks."""
    modules = load_modules(package)
    found: dict[str, list[str]] = {
        "import cycles": [" <-> ".join(c) for c in import_cycles(modules)],
        "private names of other modules": [f"{m.name}:{p}" for m in modules.values() for p in m.private],
        "lcpipe.stages imported outside the runner, the CLI and the package face": [
            f"{m.name}:{line}" for m in modules.values() if not _in(m.name, "lcpipe.stages")
            and m.name not in STAGE_IMPORTERS for dep, line in m.imports.items() if _in(dep, "lcpipe.stages")],
        "config imports the stages": [f"lcpipe.config:{line}" for dep, line in modules["lcpipe.config"].imports.items()
                                      if _in(dep, "lcpipe.stages")],
        "nncf imported outside lcpipe/quantization/": [
            f"{m.name}:{m.foreign['nncf']}" for m in modules.values()
            if "nncf" in m.foreign and not _in(m.name, "lcpipe.quantization")],
        "OpenVINO save_model / rt_info outside lcpipe.ir": [
            f"{m.name}:{node.lineno}: {node.attr if isinstance(node, ast.Attribute) else node.names[0].name}"
            for m in modules.values() if m.name != IR_MODULE for node in ast.walk(m.tree)
            if (isinstance(node, ast.Attribute) and node.attr in IR_CALLS)
            or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("openvino")
                and any(a.name in IR_CALLS for a in node.names))],
    }
    return {rule: hits for rule, hits in found.items() if hits}


def test_the_layout_rules_hold() -> None:
    assert violations() == {}


def test_the_checker_sees_what_it_checks(tmp_path: Path) -> None:
    """A small package breaking every rule once, so a checker that finds nothing cannot pass silently."""
    pkg = tmp_path / "lcpipe"
    for rel, text in {
        "__init__.py": "",
        "config.py": "from lcpipe.stages.base import Stage\n",
        "ir.py": "def f(m):\n    m.set_rt_info('x', ['lcpipe', 'k'])\n",
        "a.py": "def f():\n    from lcpipe.b import _hidden\n",
        "b.py": "import nncf\nfrom lcpipe import a\n_hidden = 1\n\ndef g(m):\n    return a._x, m.get_rt_info(['k'])\n",
        "stages/__init__.py": "",
        "stages/base.py": "Stage = object\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    found = violations(pkg)
    assert found["import cycles"] == ["lcpipe.a <-> lcpipe.b"]
    assert found["private names of other modules"] == ["lcpipe.a:2: from lcpipe.b import _hidden", "lcpipe.b:6: a._x"]
    assert found["lcpipe.stages imported outside the runner, the CLI and the package face"] == ["lcpipe.config:1"]
    assert found["config imports the stages"] == ["lcpipe.config:1"]
    assert found["nncf imported outside lcpipe/quantization/"] == ["lcpipe.b:1"]
    assert found["OpenVINO save_model / rt_info outside lcpipe.ir"] == ["lcpipe.b:6: get_rt_info"]
