"""The allow-list unpickler: pickles and torch archives -> inert data, without executing anything a file carries.

NVIDIA pickles store each network as `torch_utils.persistence._reconstruct_persistent_obj(meta)` whose meta holds the
Python source of the network module; their loader `exec`s it. `SafeUnpickler` resolves only a short allow-list of
globals, each to a function or class of this module that builds inert data (a `Persistent` record, tensors, numpy
arrays); the embedded source stays an unread string. Anything else (`os.system`, `builtins.eval`, ...) stops the load
with `LoadError` before it is called. Before any unpickling, `_prescan` reads the opcodes alone and refuses what would
make the unpickling itself hang; `_check_torch_file` does the same for what torch.load(weights_only=True) will read.
`plain` turns the containers it builds (EasyDict, OrderedDict) into plain ones for the converters.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import torch

from render.models.loading.checks import MAX_TENSOR_ELEMENTS, MAX_TUPLE_SIZE, LoadError, shown, torch_refusal

class Persistent:
    """An NVIDIA persistent object, kept as data: class name, (unexecuted) module source, and its __dict__."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict) \
                or not isinstance(meta.get("class_name"), str) or not isinstance(meta.get("module_src", ""), str):
            raise pickle.UnpicklingError("malformed persistent object")
        self.class_name = meta["class_name"]
        self.module_src = meta.get("module_src", "")
        self.state = meta["state"]

    def submodule(self, name: str) -> Persistent:
        sub = self.state.get("_modules", {}).get(name)
        if not isinstance(sub, Persistent):
            raise KeyError(name)
        return sub


class EasyDict(dict):
    """dnnlib.EasyDict, as a plain dict."""


class TFNetwork:
    """dnnlib.tflib.network.Network state (static kwargs, components, numpy variables), as data."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


class _DType:
    """numpy.dtype(spec, align, copy) + __setstate__, restricted to plain numeric types."""

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or spec[:1] not in ("f", "i", "u", "b", "c"):
            raise pickle.UnpicklingError(f"numpy dtype {shown(spec)} is not a plain number type")
        self.spec, self.order = spec, "<"

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.spec).newbyteorder(self.order) if self.order in "<>" else np.dtype(self.spec)


class _Array:
    """numpy.core.multiarray._reconstruct(ndarray, shape, typecode) + __setstate__ -> `.array`."""

    def __init__(self, cls, shape, typecode):
        self.array = None

    def __setstate__(self, state) -> None:
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType) or not isinstance(raw, bytes):
            raise pickle.UnpicklingError("numpy array with a non-numeric payload")
        a = np.frombuffer(raw, dtype=dtype.numpy()).reshape(shape, order="F" if fortran else "C")
        self.array = a.astype(dtype.numpy().newbyteorder("="))


def plain(obj, _memo: dict | None = None, _depth: int = 0):
    """EasyDict / OrderedDict -> plain Python containers, recursively. Each container is converted once, so a pickle
    that refers to one list from many places (a DAG) costs its size, not 2**depth; cycles stay cycles. Settings
    nested deeper than 64 levels are refused."""
    memo = {} if _memo is None else _memo
    if id(obj) in memo:
        return memo[id(obj)]
    if _depth > 64:
        raise LoadError("the generator's settings are nested more than 64 levels deep")
    if isinstance(obj, dict):
        out = memo[id(obj)] = {}
        out.update((k, plain(v, memo, _depth + 1)) for k, v in obj.items())
        return out
    if isinstance(obj, list):
        out = memo[id(obj)] = []
        out.extend(plain(v, memo, _depth + 1) for v in obj)
        return out
    if isinstance(obj, tuple):
        out = memo[id(obj)] = tuple(plain(v, memo, _depth + 1) for v in obj)
        return out
    return obj


def _numpy_scalar(dtype, raw: bytes):
    if not isinstance(dtype, _DType) or not isinstance(raw, bytes):
        raise pickle.UnpicklingError("numpy scalar with a non-numeric payload")
    return np.frombuffer(raw, dtype=dtype.numpy())[0].item()


def _load_storage(raw: bytes):
    """torch.storage._load_from_bytes: a storage that torch.save wrote into the pickle (a legacy file or a zip)."""
    if not isinstance(raw, bytes):
        raise pickle.UnpicklingError("a storage that is not bytes")
    _check_torch_file(io.BytesIO(raw), len(raw))
    storage = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    if not isinstance(storage, torch.storage.TypedStorage):  # anything else could be a tuple _prescan never saw
        raise pickle.UnpicklingError(f"_load_from_bytes gave a {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage, offset, size, stride, *_):
    """A view of `storage`, which it must fit inside: torch would grow a storage to fit the view, and a stride of 0
    would make a huge tensor of a few bytes once copied."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("tensor without a typed storage")
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, *size, *stride)) \
            or len(size) != len(stride) or len(size) > 8:
        raise pickle.UnpicklingError(f"tensor with a bad size {shown(size)}, stride {shown(stride)} or offset "
                                     f"{shown(offset)}")
    numel = int(np.prod(size, dtype=object))
    if numel > MAX_TENSOR_ELEMENTS:
        raise pickle.UnpicklingError(f"tensor of {numel} elements (at most {MAX_TENSOR_ELEMENTS} are accepted)")
    extent = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1 if numel else offset
    if extent > storage._size():
        raise pickle.UnpicklingError(f"tensor {size} reaches element {extent} of a storage of {storage._size()}")
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter without a tensor")
    return data


def _codecs_encode(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode of {type(text).__name__} with {shown(encoding)}")
    return text.encode("latin1")


def _torch_size(items) -> tuple[int, ...]:
    items = tuple(items)
    if len(items) > 16 or not all(isinstance(n, int) for n in items):
        raise pickle.UnpicklingError("torch.Size of anything but a few integers")
    return items


def _torch_device(kind: str, index: int | None = None) -> str:
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise pickle.UnpicklingError("torch.device of anything but a name and an index")
    return kind if index is None else f"{kind}:{index}"


_NUMPY = {"scalar": _numpy_scalar, "_reconstruct": _Array}
ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): Persistent,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    **{("torch", name): getattr(torch, name) for name in ("float16", "bfloat16", "float32", "float64", "int64")},
    ("numpy", "dtype"): _DType,
    ("numpy", "ndarray"): _Array,  # only ever the first argument of _reconstruct, which ignores it
    **{(m, n): fn for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n, fn in _NUMPY.items()},
}


BUILDABLE = (TFNetwork, _Array, _DType)  # whose state a pickle may set (BUILD): each through its own __setstate__


class SafeUnpickler(pickle._Unpickler):  # the Python implementation: its opcode table can be narrowed
    """Resolves only `ALLOWED` globals; everything else raises before anything is called. BUILD (set an object's
    state) applies only to instances of our inert data classes, through their own __setstate__: on a class or
    function from the allow-list it would change how later loads in this process behave. The attributes a pickle
    gives a mapping (torch's `_metadata` on a state dict) are dropped: only its items are read, and an attribute
    could hide a method (`items`)."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not on the allow-list") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not supported")

    def load_build(self) -> None:
        if isinstance(self.stack[-2], (EasyDict, collections.OrderedDict)):
            self.stack.pop()
            return
        if type(self.stack[-2]) not in BUILDABLE:
            raise pickle.UnpicklingError(f"BUILD on a {type(self.stack[-2]).__name__} is not allowed")
        super().load_build()

    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


def _prescan(f, pickles: int = 1) -> None:
    """Read the opcodes of the next `pickles` pickles in the file f, building nothing, and refuse what would make the
    unpickling itself hang. A tuple is hashed whenever it is a dict key or a set member; the hash visits every element
    of every nested tuple and is never cached, so t = (t, t) done forty times hashes 2**40 elements: tuples may hold
    at most MAX_TUPLE_SIZE elements, nested ones included (`stack` mirrors the unpickler's stack with that count for
    each tuple, 0 for anything else). LONG4 (an integer of more than 2040 bits) is never in a generator file, and such
    an integer hashes slowly too."""
    for _ in range(pickles):
        stack, marks, memo = [], [], {}
        for op, arg, _pos in pickletools.genops(f):
            name, before = op.name, op.stack_before
            if name == "LONG4":
                raise LoadError("an integer of more than 2040 bits in a pickle")
            if name == "MARK":
                marks.append(len(stack))
            elif name.endswith("PUT") or name == "MEMOIZE":
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1] if stack else 0
            elif name.endswith("GET"):
                stack.append(memo.get(arg, 0))
            elif name == "DUP":
                stack.append(stack[-1] if stack else 0)
            else:  # pop what the opcode takes (from its mark, and what lies below the mark), push 0 or a tuple's size
                if pickletools.markobject in before:
                    at = marks.pop() if marks else 0
                    items, cut = stack[at:], at - before.index(pickletools.markobject)
                else:
                    cut = len(stack) - len(before)
                    items = stack[cut:]
                del stack[max(cut, 0) :]
                size = len(items) + sum(items) if "TUPLE" in name else 0
                if size > MAX_TUPLE_SIZE:
                    raise LoadError(f"a tuple of {size} elements in a pickle, nested ones included "
                                    f"(at most {MAX_TUPLE_SIZE} are accepted)")
                stack.extend([size] * len(op.stack_after))


def safe_unpickle(path: Path):
    try:
        with open(path, "rb") as f:
            _prescan(f)
            f.seek(0)
            return SafeUnpickler(f).load()
    except LoadError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of an untrusted file is one clear line
        reason = torch_refusal(e) if "weights_only" in str(e) else (str(e).splitlines() or [type(e).__name__])[0]
        raise LoadError(f"{path}: refused to load this pickle ({reason}); nothing in it was executed") from None



def _check_torch_file(f, size: int) -> None:
    """What torch.load(weights_only=True) cannot refuse by itself, checked before it runs: a zip that unpacks to far
    more than it holds (torch stores its archives uncompressed, but reads deflated ones), and the pickles it will
    read (_prescan): every data.pkl of an archive, or the five pickles that open a legacy file. Like torch, an
    archive is what starts with a zip entry."""
    if f.read(4) != b"PK\x03\x04":
        f.seek(0)
        _prescan(f, pickles=5)
        return
    with zipfile.ZipFile(f) as z:
        unpacked = sum(i.file_size for i in z.infolist())
        if unpacked > 2 * size + 2**26:
            raise LoadError(f"a zip archive that unpacks to {unpacked} bytes from {size}; "
                            "PyTorch never compresses its files, so this is refused")
        for info in z.infolist():  # every entry, duplicate names included
            if info.filename.endswith("data.pkl"):
                with z.open(info) as pkl:
                    _prescan(pkl)

