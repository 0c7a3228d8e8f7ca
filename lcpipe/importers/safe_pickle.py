"""Load PaddleClas ``.pdparams`` without running pickle's arbitrary code or trusting its sizes.

A ``.pdparams`` is a pickle of ``{name: ndarray}`` (plus a ``StructuredToParameterName@@``
dict of strings). numpy pickles an array as ``_reconstruct(ndarray, (0,), b'b')`` followed by
``__setstate__((version, shape, dtype, fortran, raw bytes))``. The unpickler admits exactly
those globals, and each one is replaced by a checking stand-in, so nothing is allocated
from a declared size before it is checked:

- ``_reconstruct`` always builds an empty array, whatever shape the pickle declares; the
  real data arrive through ``__setstate__``, which accepts only a plain numeric dtype
  (bool, int, uint, float; no object, structured or sub-array dtype), raw bytes whose length
  equals shape x itemsize (so an array can never be larger than the bytes the file holds),
  and at most MAX_TENSOR_BYTES;
- ``numpy.ndarray`` may only be named (as ``_reconstruct``'s argument), never called;
- a numpy scalar must be numeric and exactly its itemsize.

A refused array is not raised at once: it is kept as a marker so the error can name the
tensor (its dict key), which the unpickler only learns afterwards.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.errors import InputError, UnsafePickleError

# The largest tensor of any PP-LCNet / PP-LCNetV2 checkpoint is the classifier, ~5 MB
# (1280 x 1000 float32); 1 GiB leaves room for any head while refusing a few-byte file
# that declares a terabyte.
MAX_TENSOR_BYTES = 1 << 30
_NUMERIC_KINDS = "biuf"
NAME_TABLE_KEY = "StructuredToParameterName@@"


class _Refused:
    """Stands in for an array the checks refused; the loader turns it into an error naming the tensor."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _CheckedArray(np.ndarray):
    """What ``_reconstruct`` hands to pickle's BUILD step: ``__setstate__`` checks before numpy fills it."""

    refused: str | None

    def __setstate__(self, state: Any) -> None:
        reason = _check_state(state)
        if reason:
            self.refused = reason
            return
        np.ndarray.__setstate__(self, state)
        self.refused = None


def _check_state(state: Any) -> str | None:
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        return "array state is not numpy's (version, shape, dtype, fortran, data)"
    shape, dtype, _fortran, raw = state[-4:]
    if not isinstance(dtype, np.dtype):
        return f"array dtype is {type(dtype).__name__}, not a numpy dtype"
    if dtype.hasobject or dtype.kind == "O":
        return "object dtype (arrays of Python objects are not weights)"
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _NUMERIC_KINDS:
        return f"dtype {dtype} is not a plain numeric type"
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"shape {shape!r} is not a tuple of sizes"
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_TENSOR_BYTES:
        return (f"declares shape {shape} {dtype} = {nbytes:,} bytes, over the {MAX_TENSOR_BYTES >> 30} GiB "
                f"a checkpoint tensor may have")
    if not isinstance(raw, bytes | bytearray):
        return f"array data is {type(raw).__name__}, not raw bytes"
    if len(raw) != nbytes:
        return f"declares shape {shape} {dtype} = {nbytes:,} bytes but holds {len(raw):,}"
    return None


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _CheckedArray:
    if subtype is not _NDARRAY:
        raise UnsafePickleError("refusing to load: _reconstruct of something other than numpy.ndarray")
    arr = np.ndarray.__new__(_CheckedArray, (0,), np.uint8)  # the declared shape is never allocated
    arr.refused = "array without data (no __setstate__)"
    return arr


class _NdarrayName:
    """``numpy.ndarray`` as pickle may mention it: an argument of ``_reconstruct``, never a call."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("refusing to call numpy.ndarray directly (it allocates the declared shape)")


_NDARRAY = _NdarrayName()


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in _NUMERIC_KINDS \
            or dtype.fields is not None or dtype.subdtype is not None:
        return _Refused(f"a numpy scalar of dtype {dtype} (only plain numeric scalars are allowed)")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        return _Refused(f"a numpy scalar of dtype {dtype} with malformed data")
    return np.frombuffer(data, dtype=dtype)[0]


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,  # builds a descriptor only; arrays check it before use
    ("collections", "OrderedDict"): dict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a weights file may only hold numpy arrays and dicts") from None


def load_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}``; raise InputError on truncation/corruption or a refused tensor,
    UnsafePickleError on code."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError) as exc:
        raise InputError(f"{path}: truncated or not a .pdparams pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict of arrays, found {type(obj).__name__}")
    tensors: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if key == NAME_TABLE_KEY:
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise InputError(f"{path}: entry {key!r} should map parameter names to strings")
            continue  # bookkeeping of parameter names, not a tensor
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray | _Refused):
            value = value[1]  # paddle.save of a Tensor: (internal name, array)
        tensors[str(key)] = _checked(path, key, value)
    return tensors


def _checked(path: Path, key: Any, value: Any) -> np.ndarray:
    if isinstance(value, _Refused):
        raise InputError(f"{path}: tensor {key!r} refused: {value.reason}")
    if isinstance(value, _CheckedArray):
        if value.refused:
            raise InputError(f"{path}: tensor {key!r} refused: {value.refused}")
        return value.view(np.ndarray)
    raise InputError(f"{path}: entry {key!r} is {type(value).__name__}, not a numeric array")
