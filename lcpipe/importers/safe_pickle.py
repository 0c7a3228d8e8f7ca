"""Load PaddleClas ``.pdparams`` without running pickle's arbitrary code.

A ``.pdparams`` is a pickle of ``{name: ndarray}`` (plus a ``StructuredToParameterName@@``
dict of strings). Arrays are rebuilt through numpy's ``_reconstruct``, so the unpickler
admits exactly the globals needed for that and refuses everything else.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.errors import InputError, UnsafePickleError

_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}
NAME_TABLE_KEY = "StructuredToParameterName@@"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: a weights file may only hold numpy arrays and dicts")


def load_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}``; raise InputError on truncation/corruption, UnsafePickleError on code."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise InputError(f"{path}: truncated or not a .pdparams pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict of arrays, found {type(obj).__name__}")
    tensors: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if key == NAME_TABLE_KEY:
            continue  # bookkeeping of parameter names, not a tensor
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
            value = value[1]  # paddle.save of a Tensor: (internal name, array)
        if not isinstance(value, np.ndarray):
            raise InputError(f"{path}: entry {key!r} is {type(value).__name__}, not an array")
        tensors[str(key)] = value
    return tensors
