"""Packaged example pipelines: each folder here with a ``pipeline.yaml`` is one, named after the folder.

They ship in the wheel with their model and data (package data), so ``lcpipe run <name>`` works
from any directory on an installed lcpipe. Paths inside a pipeline.yaml are relative to it;
the run directory still defaults to ``runs/<name>/`` under the current directory.
"""

from __future__ import annotations

from pathlib import Path

from lcpipe.errors import InputError

EXAMPLES_DIR = Path(__file__).resolve().parent


def list_examples() -> dict[str, Path]:
    """``{name: pipeline.yaml}`` of every packaged example, sorted by name."""
    return {p.parent.name: p for p in sorted(EXAMPLES_DIR.glob("*/pipeline.yaml"))}


def resolve_pipeline(arg: str | Path) -> Path:
    """A pipeline argument is a YAML path (used as given) or the name of a packaged example.

    An existing path wins, so a local file named like an example is never shadowed."""
    path = Path(arg).expanduser()
    if path.exists():
        return path
    examples = list_examples()
    if str(arg) in examples:
        return examples[str(arg)]
    known = ", ".join(examples) or "none"
    raise InputError(f"{arg}: no such pipeline file, and not a packaged example (lcpipe examples lists them: {known})")


def example_or_path(arg: str | Path) -> Path:
    """The packaged example named ``arg`` when no file of that name exists, else ``arg`` as a path
    (so a missing file is reported by whoever reads it, as before example names were accepted)."""
    path = Path(arg).expanduser()
    examples = list_examples()
    return examples[str(arg)] if not path.exists() and str(arg) in examples else path


def copy_example(name: str, dest: str | Path) -> Path:
    """A copy of example ``name`` with its model and data in the new folder ``dest`` (an empty folder
    will do); the copied pipeline.yaml's paths are relative to it, so they stay valid. Returns the
    copied pipeline.yaml. Built under a temp name and moved into place, so a failed copy leaves nothing."""
    import shutil

    from lcpipe.fileio import atomic_dir

    examples = list_examples()
    if name not in examples:
        known = ", ".join(examples) or "none"
        raise InputError(f"{name}: not a packaged example (lcpipe examples lists them: {known})")
    dest = Path(dest).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: exists and is not an empty folder; give a new folder to copy {name} into")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    with atomic_dir(dest) as tmp:
        shutil.copytree(examples[name].parent, tmp, ignore=ignore, dirs_exist_ok=True)
    return dest / "pipeline.yaml"
