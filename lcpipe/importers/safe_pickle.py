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

The work is bounded too (a few hundred bytes of pickle can otherwise keep Python busy for hours):
the unpickler is Python's own pure-Python one with a checked dispatch table, so it runs at most
MAX_PICKLE_OPS opcodes; dict keys must be strings or numbers (a key built from a tuple that holds
itself twice, 80 levels deep, takes 2**80 steps to hash); sets are refused (their items are hashed
too); integers are at most 1024 bits; a dtype is built from a short type code only.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.errors import InputError, UnsafePickleError, clip, shown

# The largest tensor of any PP-LCNet / PP-LCNetV2 checkpoint is the classifier, ~5 MB
# (1280 x 1000 float32); 1 GiB leaves room for any head while refusing a few-byte file
# that declares a terabyte.
MAX_TENSOR_BYTES = 1 << 30
# A checkpoint takes ~12 opcodes per tensor (a few thousand in all); a million runs in ~1-2 s.
MAX_PICKLE_OPS = 1_000_000
MAX_DIMS = 32
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
    if not isinstance(shape, tuple) or len(shape) > MAX_DIMS \
            or not all(isinstance(d, int) and 0 <= d < 1 << 62 for d in shape):
        return f"shape {shown(shape)} is not a tuple of at most {MAX_DIMS} sizes"
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


def _dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype('f4', False, True)`` as numpy pickles it: a short type code only."""
    if not isinstance(obj, str) or len(obj) > 8:
        raise _Malformed(f"a dtype described by {shown(obj, 40)} (only short type codes such as 'f4')")
    return np.dtype(obj)


def _ordered_dict(*args: Any) -> dict:
    """``OrderedDict()`` (filled item by item), or protocol 0/1's ``OrderedDict([[key, value], ...])``."""
    if not args:
        return {}
    pairs = args[0]
    if len(args) > 1 or not isinstance(pairs, list) \
            or not all(isinstance(p, list | tuple) and len(p) == 2 and isinstance(p[0], _KEY_TYPES) for p in pairs):
        raise _Malformed("an OrderedDict built from something other than (name, value) pairs")
    return dict(pairs)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,  # builds a descriptor only; arrays check it before use
    ("collections", "OrderedDict"): _ordered_dict,
}


class _Malformed(pickle.UnpicklingError):
    """The pickle is well formed but not shaped like a checkpoint (or asks for unbounded work)."""


_KEY_TYPES = (str, int, bytes)
_MAX_INT_BITS = 1024  # torch's legacy magic number has 77 bits; a longer one only costs time


def _counted(fn: Any) -> Any:
    def op(self: _RestrictedUnpickler) -> None:
        self.ops += 1
        if self.ops > MAX_PICKLE_OPS:
            raise _Malformed(f"more than {MAX_PICKLE_OPS:,} pickle operations (a checkpoint needs a few thousand)")
        fn(self)
    return op


def _check_keys(items: list[Any]) -> None:
    for key in items[0::2]:
        if not isinstance(key, _KEY_TYPES):
            raise _Malformed(f"a dict key of type {type(key).__name__} (checkpoint keys are names)")


def _setitem(self: _RestrictedUnpickler) -> None:
    _check_keys(self.stack[-2:-1])
    pickle._Unpickler.load_setitem(self)


def _setitems(self: _RestrictedUnpickler) -> None:
    _check_keys(self.stack)  # the items since the MARK
    pickle._Unpickler.load_setitems(self)


def _dict(self: _RestrictedUnpickler) -> None:
    _check_keys(self.stack)
    pickle._Unpickler.load_dict(self)


def _refuse_sets(self: _RestrictedUnpickler) -> None:
    raise _Malformed("a set (a checkpoint holds dicts and arrays)")


def _bounded_int(fn: Any) -> Any:
    def op(self: _RestrictedUnpickler) -> None:
        fn(self)
        value = self.stack[-1]
        if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
            raise _Malformed(f"a {value.bit_length():,}-bit integer")
    return op


def _build(self: _RestrictedUnpickler) -> None:
    inst = self.stack[-2]
    # a dtype's state names already built parts (its fields are refused later, naming the tensor)
    if not isinstance(inst, np.dtype | _CheckedArray):
        raise _Malformed(f"state set on a {type(inst).__name__} (only arrays and dtypes take state)")
    pickle._Unpickler.load_build(self)


def _dispatch() -> dict[int, Any]:
    table = {code: _counted(fn) for code, fn in pickle._Unpickler.dispatch.items()}
    checked = {pickle.SETITEM: _setitem, pickle.SETITEMS: _setitems, pickle.DICT: _dict, pickle.BUILD: _build,
               pickle.EMPTY_SET: _refuse_sets, pickle.ADDITEMS: _refuse_sets, pickle.FROZENSET: _refuse_sets}
    for code in (pickle.INT, pickle.LONG, pickle.LONG1, pickle.LONG4):
        checked[code] = _bounded_int(pickle._Unpickler.dispatch[code[0]])
    table.update({code[0]: _counted(fn) for code, fn in checked.items()})
    return table


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Python's pure-Python unpickler (its dispatch table can be checked), with allowed globals only."""

    dispatch = _dispatch()

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.ops = 0

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {clip(module, 60)}.{clip(name, 60)}: a weights file may only hold numpy "
                "arrays and dicts") from None


class _Anything:
    """What every object stands for while a foreign pickle (torch's) is only scanned: it takes items."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


def _scan_reduce(self: _StructureScan) -> None:
    self.stack.pop()  # arguments
    self.stack[-1] = _Anything()  # nothing is called


def _scan_newobj(self: _StructureScan) -> None:
    del self.stack[-2:]  # class, arguments
    self.append(_Anything())


def _scan_newobj_ex(self: _StructureScan) -> None:
    del self.stack[-3:]  # class, arguments, keyword arguments
    self.append(_Anything())


def _scan_obj(self: _StructureScan) -> None:
    self.pop_mark()
    self.append(_Anything())


def _scan_inst(self: _StructureScan) -> None:
    self.readline()  # module
    self.readline()  # name
    _scan_obj(self)


def _scan_build(self: _StructureScan) -> None:
    self.stack.pop()  # the state; nothing is set


def _scan_dispatch() -> dict[int, Any]:
    table = dict(_RestrictedUnpickler.dispatch)
    table.update({code[0]: _counted(fn) for code, fn in {
        pickle.REDUCE: _scan_reduce, pickle.NEWOBJ: _scan_newobj, pickle.NEWOBJ_EX: _scan_newobj_ex,
        pickle.OBJ: _scan_obj, pickle.INST: _scan_inst, pickle.BUILD: _scan_build}.items()})
    return table


class _StructureScan(_RestrictedUnpickler):
    """Walks a foreign pickle with the same bounds, building nothing but stand-ins: every global,
    call and persistent id becomes an _Anything, so only the pickle's shape is checked."""

    dispatch = _scan_dispatch()

    def find_class(self, module: str, name: str) -> Any:
        return _Anything()

    def persistent_load(self, pid: Any) -> Any:
        return _Anything()


def check_pickle_work(data: bytes, where: str, count: int = 1) -> None:
    """Scan up to ``count`` consecutive pickles in ``data`` (nothing is built) and raise InputError when
    one asks for unbounded work: too many operations, keys that are not names, sets, huge integers.
    Another loader (torch.load) then reads the file; its own errors stay its own."""
    stream = io.BytesIO(data)
    for _ in range(count):
        if stream.tell() >= len(data):
            return
        try:
            _StructureScan(stream).load()
        except _Malformed as exc:
            raise InputError(f"{where}: not a plain weights file: it holds {exc}") from None
        except Exception:  # malformed in another way: the real loader reports it
            return


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
    except _Malformed as exc:
        raise InputError(f"{path}: not a plain .pdparams checkpoint: it holds {exc}") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError) as exc:
        raise InputError(f"{path}: truncated or not a .pdparams pickle ({type(exc).__name__}: "
                         f"{clip(str(exc), 200)})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict of arrays, found {type(obj).__name__}")
    tensors: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if key == NAME_TABLE_KEY:
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise InputError(f"{path}: entry {shown(key)} should map parameter names to strings")
            continue  # bookkeeping of parameter names, not a tensor
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray | _Refused):
            value = value[1]  # paddle.save of a Tensor: (internal name, array)
        tensors[str(key)] = _checked(path, key, value)
    return tensors


def _checked(path: Path, key: Any, value: Any) -> np.ndarray:
    if isinstance(value, _Refused):
        raise InputError(f"{path}: tensor {shown(key)} refused: {value.reason}")
    if isinstance(value, _CheckedArray):
        if value.refused:
            raise InputError(f"{path}: tensor {shown(key)} refused: {value.refused}")
        return value.view(np.ndarray)
    raise InputError(f"{path}: entry {shown(key)} is {type(value).__name__}, not a numeric array")
