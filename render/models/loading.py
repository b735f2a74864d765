"""Generator files -> our modules, without executing anything a file carries.

    G = load_generator_file("ffhq.pkl", device)   # NVIDIA .pkl (ADA / stylegan3 / original TF), rosinality .pt,
    info = inspect_file("ffhq.pkl")                # or our *.uncanny.pt; inspect = describe() + format, on CPU
    save_generator(G, "media/ffhq.uncanny.pt")

NVIDIA pickles store each network as `torch_utils.persistence._reconstruct_persistent_obj(meta)` whose meta holds the
Python source of the network module; their loader `exec`s it. `SafeUnpickler` resolves only a short allow-list of
globals, each to a function or class of this file that builds inert data (a `Persistent` record, tensors, numpy
arrays); the embedded source stays an unread string. Anything else (`os.system`, `builtins.eval`, ...) stops the load
with `LoadError` before it is called. Torch files go through `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import pickle
import pickletools
import re
import reprlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from render.models.base import Generator
from render.models.stylegan2 import StyleGAN2, StyleGAN2Arch

log = logging.getLogger(__name__)

FORMAT, VERSION = "uncanny-generator", 1


class LoadError(ValueError):
    """A generator file cannot be used; the message is one line naming the file."""


# What a file may ask of memory before anything is checked against its tensors. The largest published generators
# (StyleGAN3-R 1024) have ~30 M parameters, 1024 channels and w of 512; these bounds leave room for custom models.
MAX_TENSOR_ELEMENTS = 2**28  # one tensor (1 GiB in float32)
MAX_TOTAL_ELEMENTS = 2**28  # all tensors of a network together, and the network an architecture builds
MAX_TUPLE_SIZE = 1024  # elements of one tuple, counting those of nested tuples (see _prescan)
ARCH_LIMITS = {"resolution": (4, 2048), "z_dim": (1, 2048), "w_dim": (1, 2048), "img_channels": (1, 4),
               "channel_base": (1, 2**20), "channel_max": (1, 2048), "mapping_layers": (1, 32),
               "num_layers": (1, 64), "num_critical": (0, 16), "margin_size": (0, 512), "conv_kernel": (1, 7),
               "filter_size": (1, 64), "lrelu_upsampling": (1, 8),
               # numbers, not sizes, but a NaN or an extreme value would only fail (or hang) while rendering
               "mapping_lr_multiplier": (1e-6, 1e3), "conv_clamp": (1e-3, 1e6), "first_cutoff": (1e-3, 4096),
               "first_stopband": (0.5, 8192), "last_stopband_rel": (0.25, 16), "output_scale": (-1e3, 1e3)}
MAX_RESAMPLING = 16  # StyleGAN3: a layer's up- or down-sampling factor (the published configs use 1, 2 and 4)


def check_arch(arch, path) -> None:
    """Refuse sizes and settings no real generator has before a network of them is built: a small file must not ask
    for 100 GB, and a bad setting fails here, naming its key, rather than while rendering."""
    from render.models import stylegan3

    for key, (lo, hi) in ARCH_LIMITS.items():
        if not hasattr(arch, key) or (key == "conv_clamp" and arch.conv_clamp is None):
            continue
        value = getattr(arch, key)
        kind = int if isinstance(lo, int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:  # NaN fails lo <= value
            raise LoadError(f"{path}: {key} = {shown(value)} is outside {lo}..{hi}, the range this loader accepts")
    if arch.resolution & (arch.resolution - 1):
        raise LoadError(f"{path}: resolution = {arch.resolution} is not a power of two")
    for key in ("use_noise", "use_radial_filters"):
        if not isinstance(getattr(arch, key, False), bool):
            raise LoadError(f"{path}: {key} = {shown(getattr(arch, key))} is not true or false")
    taps = getattr(arch, "resample_filter", (1,))
    if not (1 <= len(taps) <= 16 and all(isinstance(t, (int, float)) and not isinstance(t, bool) and abs(t) <= 1e6
                                         for t in taps) and sum(taps) > 0):
        raise LoadError(f"{path}: resample_filter = {shown(taps)} is not 1 to 16 numbers with a positive sum")
    if isinstance(arch, stylegan3.StyleGAN3Arch):  # the layers' sampling rates follow from the numbers above
        if arch.num_critical >= arch.num_layers:
            raise LoadError(f"{path}: num_critical = {arch.num_critical} is not below num_layers = {arch.num_layers}")
        factor = max(max(spec.up, spec.down) for spec in stylegan3.layer_specs(arch))
        if factor > MAX_RESAMPLING:
            raise LoadError(f"{path}: a layer resamples by {factor} (at most {MAX_RESAMPLING} is accepted); "
                            "check first_stopband and last_stopband_rel")
    if arch.num_values > MAX_TOTAL_ELEMENTS:
        raise LoadError(f"{path}: the architecture makes a network of about {arch.num_values} values "
                        f"(at most {MAX_TOTAL_ELEMENTS} are accepted)")


def printable(text: str, limit: int = 500) -> str:
    """A message with the file's own strings in it, made safe for a terminal: control characters (ANSI escapes that
    could rewrite the screen) become escapes, it stays one line, and at most `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Short(reprlib.Repr):
    def repr1(self, x, level):
        if isinstance(x, dict) and type(x) is not dict:  # EasyDict, OrderedDict: cut short like a dict
            x = dict(x)
        return super().repr1(x, level)


_SHORT = _Short()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 40, 40


def shown(value) -> str:
    """repr() of a value from a file, for a message: cut short, and cheap even for a list that holds one list twice,
    nested 40 deep, whose full repr() would take 2**40 steps."""
    return _SHORT.repr(value)


def _safe_name(value, default: str) -> str:
    """A generator name from a file, as used in file names and printed: letters, digits and . _ + - only."""
    return re.sub(r"[^\w.+-]", "_", value)[:64] if isinstance(value, str) and value else default


# --- the allow-list unpickler ------------------------------------------------------------------------------------


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
        raise LoadError(f"{path}: refused to load this pickle ({e}); nothing in it was executed") from None


# --- formats -----------------------------------------------------------------------------------------------------


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"  # first: a pickle may end with a zip of its own (a storage saved by torch inside it)
    if zipfile.is_zipfile(path):
        return "torch"
    if head == b"PK\x03\x04":
        raise LoadError(f"{path}: truncated or damaged PyTorch file (a zip archive without its directory)")
    raise LoadError(f"{path}: unknown format (neither a PyTorch checkpoint nor a pickle)")


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


def _load(path: str | Path) -> tuple[Generator, str]:
    """_read, with every failure as one printable line naming the file: a malformed file can make the code that
    interprets it raise anything (KeyError, ZeroDivisionError, MemoryError, ...), and none of that may reach the user
    as a traceback."""
    path = Path(path)
    try:
        return _read(path)
    except LoadError as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 - the file's contents, not our code, decide what is raised here
        first = str(e).splitlines()[0] if str(e) else ""
        message = f"not a usable generator file ({type(e).__name__}: {first})"
    raise LoadError(printable(message if message.startswith(f"{path}: ") else f"{path}: {message}")) from None


def _refused_by_torch(e: Exception) -> str:
    """torch.load's refusal in one line, keeping the name of the global it refused."""
    text = str(e)
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    return f"it names {found.group(1)}, which is not allowed" if found else text.splitlines()[0][:200]


def _read(path: Path) -> tuple[Generator, str]:
    if path.is_dir():
        raise LoadError(f"{path}: is a folder, not a generator file")
    if not path.exists():
        raise LoadError(f"{path}: no such file")
    if not path.is_file():
        raise LoadError(f"{path}: not a regular file")
    if _sniff(path) == "torch":
        with open(path, "rb") as f:
            _check_torch_file(f, path.stat().st_size)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"{path}: refused by torch.load(weights_only=True): {_refused_by_torch(e)}") from None
        if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
            return _from_uncanny(ckpt, path), "uncanny"
        if isinstance(ckpt, dict) and "g_ema" in ckpt:
            return from_rosinality(ckpt, path), "rosinality"
        keys = ", ".join(map(shown, list(ckpt)[:6])) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise LoadError(f"{path}: a PyTorch file, but not a generator we know (top-level: {keys})")
    data = safe_unpickle(path)
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data):
        return from_tf(data[2], path), "nvidia-tf"
    if isinstance(data, dict) and isinstance(data.get("G_ema"), Persistent):
        return _from_nvidia(data["G_ema"], path)
    raise LoadError(f"{path}: a pickle, but neither an NVIDIA StyleGAN network pickle nor a TF StyleGAN2 pickle")


def load_generator_file(path: str | Path, device: torch.device | str = "cpu") -> Generator:
    """Any supported generator file -> frozen Generator on `device`. Raises LoadError (one line) otherwise."""
    G, _ = _load(path)
    return G.to(device).freeze()


def inspect_file(path: str | Path) -> dict:
    """What `run.py models inspect` prints: the file's format plus `G.describe()`."""
    G, fmt = _load(path)
    return {"path": str(path), "format": fmt, **G.describe()}


def save_generator(G: Generator, path: str | Path) -> None:
    """Our own format: the architecture dataclass as a dict plus the state dict (loads with weights_only)."""
    family = type(G).__module__.rsplit(".", 1)[-1]
    if not hasattr(G, "arch"):
        raise LoadError(f"{path}: cannot save a {type(G).__name__}: it has no architecture dataclass (G.arch)")
    arch = G.arch.to_dict() if hasattr(G.arch, "to_dict") else dataclasses.asdict(G.arch)
    state = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    torch.save({"format": FORMAT, "version": VERSION, "family": family, "name": G.name, "arch": arch,
                "state_dict": state}, path)


def _from_uncanny(ckpt: dict, path: Path) -> Generator:
    if ckpt.get("version") != VERSION:
        raise LoadError(f"{path}: uncanny-generator version {shown(ckpt.get('version'))}, this build reads {VERSION}")
    family = ckpt.get("family", "stylegan2")
    try:
        if family == "stylegan2":
            name = _safe_name(ckpt["arch"].get("name"), "stylegan2")
            arch = StyleGAN2Arch.from_dict({**ckpt["arch"], "name": name})
            check_arch(arch, path)
            G = StyleGAN2(arch)
        elif family == "stylegan3":
            from render.models import stylegan3

            arch = stylegan3.StyleGAN3Arch(**ckpt["arch"])
            check_arch(arch, path)
            G = stylegan3.StyleGAN3(arch, name=_safe_name(ckpt.get("name"), "stylegan3"))
        else:
            raise LoadError(f"{path}: unknown generator family {shown(family)}")
        load_state(G, ckpt["state_dict"], path)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, LoadError):
            raise
        raise LoadError(f"{path}: broken uncanny-generator file ({type(e).__name__}: {e})") from None
    return G


def load_state(G: torch.nn.Module, state: dict, path) -> None:
    """load_state_dict(strict) whose mismatch is one line naming the file and the first offending keys."""
    missing, unexpected = G.state_dict().keys() - state.keys(), state.keys() - G.state_dict().keys()
    if missing or unexpected:
        raise LoadError(f"{path}: weights do not fit the architecture (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    for k, v in G.state_dict().items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise LoadError(f"{path}: {k} has shape {tuple(state[k].shape)}, the architecture wants {tuple(v.shape)}")
    G.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()})


# --- NVIDIA persistence pickles (stylegan2-ada-pytorch, stylegan3) -----------------------------------------------


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


def persistent_state_dict(obj: Persistent, prefix: str = "", _seen: set | None = None) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a Persistent module tree, named like nn.Module.state_dict(). A module reached
    twice (shared, or a cycle) is refused: real networks are trees. At most MAX_TOTAL_ELEMENTS values are copied."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        raise LoadError(f"module {prefix.rstrip('.') or 'G_ema'!r} appears twice in the module tree")
    seen.add(id(obj))
    out = {}
    skip = obj.state.get("_non_persistent_buffers_set", set())
    for group in ("_parameters", "_buffers"):
        for name, t in obj.state.get(group, {}).items():
            if isinstance(t, torch.Tensor) and not (group == "_buffers" and name in skip):
                out[prefix + name] = t
    for name, sub in obj.state.get("_modules", {}).items():
        if isinstance(sub, Persistent):
            out.update(persistent_state_dict(sub, f"{prefix}{name}.", seen))
    if _seen is None:  # the top: copy the views out of their storages, within the budget
        total = sum(t.numel() for t in out.values())
        if total > MAX_TOTAL_ELEMENTS:
            raise LoadError(f"the network's tensors hold {total} values (at most {MAX_TOTAL_ELEMENTS} are accepted)")
        out = {k: t.detach().clone() for k, t in out.items()}
    return out


def nvidia_family(G: Persistent) -> str:
    """'stylegan2' or 'stylegan3', from the module tree (the embedded source is not run, only searched as text)."""
    try:
        syn = G.submodule("synthesis")
    except KeyError:
        raise LoadError("G_ema has no synthesis network") from None
    names = set(syn.state.get("_modules", {}))
    if "b4" in names:
        return "stylegan2"
    if "input" in names or "class SynthesisInput" in G.module_src:
        return "stylegan3"
    raise LoadError(f"G_ema is a {G.class_name} with synthesis layers {sorted(names)[:4]}, not StyleGAN2 or 3")


def _from_nvidia(G: Persistent, path: Path) -> tuple[Generator, str]:
    kwargs = plain(G.state.get("_init_kwargs", {}))
    try:
        state = persistent_state_dict(G)
        family = nvidia_family(G)
    except LoadError as e:
        raise LoadError(f"{path}: {e}") from None
    if family == "stylegan3":
        from render.models import stylegan3

        try:
            check_arch(stylegan3.arch_from_nvidia(kwargs), path)
            return stylegan3.from_nvidia(kwargs, state), "nvidia-stylegan3"
        except LoadError:
            raise
        except (KeyError, ValueError, TypeError) as e:
            raise LoadError(f"{path}: {e}") from None
    return stylegan2_from_nvidia(kwargs, state, path), "nvidia-stylegan2"


def stylegan2_from_nvidia(kwargs: dict, state: dict[str, torch.Tensor], path="<state>") -> StyleGAN2:
    """init kwargs of training.networks(_stylegan2).Generator + its state dict -> StyleGAN2."""
    if kwargs.get("c_dim", 0):
        raise LoadError(f"{path}: a class-conditional generator (c_dim={kwargs['c_dim']}); projection cannot drive it")
    flat = "synthesis_kwargs" not in kwargs  # stylegan3-repo networks_stylegan2 takes **synthesis_kwargs
    syn = {k: v for k, v in kwargs.items() if k not in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels",
                                                        "mapping_kwargs")} if flat else kwargs["synthesis_kwargs"]
    mapping = kwargs.get("mapping_kwargs", {})
    for key, ok in (("activation", "lrelu"), ("layer_features", None), ("embed_features", None)):
        if key in mapping and mapping[key] not in (ok, None):
            raise LoadError(f"{path}: unsupported mapping option {key}={shown(mapping[key])}")
    for key, ok in (("activation", "lrelu"), ("kernel_size", 3)):
        if syn.get(key, ok) != ok:
            raise LoadError(f"{path}: unsupported synthesis option {key}={shown(syn[key])}")
    try:
        arch = StyleGAN2Arch(
            resolution=int(kwargs["img_resolution"]), z_dim=int(kwargs["z_dim"]), w_dim=int(kwargs["w_dim"]),
            img_channels=int(kwargs.get("img_channels", 3)), channel_base=int(syn.get("channel_base", 32768)),
            channel_max=int(syn.get("channel_max", 512)), mapping_layers=int(mapping.get("num_layers", 8)),
            mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
            architecture=syn.get("architecture", "skip"),
            conv_clamp=syn.get("conv_clamp", 256 if flat else None),  # the two repos' defaults differ
            resample_filter=tuple(syn.get("resample_filter", (1, 3, 3, 1))), use_noise=bool(syn.get("use_noise", True)),
            name=f"stylegan2-{int(kwargs['img_resolution'])}")
    except (KeyError, ValueError, TypeError) as e:
        raise LoadError(f"{path}: cannot read the generator's settings ({type(e).__name__}: {e})") from None
    check_arch(arch, path)
    G = StyleGAN2(arch)
    ours = {}
    for k, v in state.items():
        if k.endswith("resample_filter"):
            continue
        top, _, rest = k.partition(".")
        ours[{"mapping": "mapping_network", "synthesis": "synthesis_network"}.get(top, top) + "." + rest] = v
    load_state(G, ours, path)
    return G


# --- rosinality/stylegan2-pytorch checkpoints ---------------------------------------------------------------------


def from_rosinality(ckpt: dict, path="<ckpt>") -> StyleGAN2:
    """{"g_ema": state dict, "latent_avg": [w_dim]} (rosinality's train.py / convert_weight.py) -> StyleGAN2."""
    g = ckpt["g_ema"]
    if not isinstance(g, dict) or "input.input" not in g:
        raise LoadError(f"{path}: 'g_ema' is not a rosinality StyleGAN2 generator state dict")
    n_mlp = sum(1 for k in g if k.startswith("style.") and k.endswith(".weight"))
    w_dim, z_dim = g["style.1.weight"].shape
    n_up = sum(1 for k in g if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    res = 4 * 2**n_up
    channel_max = int(g["input.input"].shape[1])
    channel_base = channel_max * res  # channels = min(channel_base / r, channel_max), from the first narrower block
    for k in range(n_up):
        ch = int(g[f"to_rgbs.{k}.conv.weight"].shape[2])
        if ch < channel_max:
            channel_base = ch * 8 * 2**k
            break
    arch = StyleGAN2Arch(resolution=res, z_dim=int(z_dim), w_dim=int(w_dim), channel_base=channel_base,
                         channel_max=channel_max, mapping_layers=n_mlp, conv_clamp=None, name=f"stylegan2-{res}")
    check_arch(arch, path)
    sd = {}

    def layer(src: str, dst: str, noise: int) -> None:
        sd[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        sd[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        sd[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        sd[f"{dst}.bias"] = g[f"{src}.activate.bias"]
        sd[f"{dst}.noise_strength"] = g[f"{src}.noise.weight"].reshape([])
        sd[f"{dst}.noise_const"] = g[f"noises.noise_{noise}"][0, 0]

    def torgb(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        sd[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        sd[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        sd[f"{dst}.bias"] = g[f"{src}.bias"].reshape(-1)

    try:
        for i in range(n_mlp):
            sd[f"mapping_network.fc{i}.weight"] = g[f"style.{i + 1}.weight"]
            sd[f"mapping_network.fc{i}.bias"] = g[f"style.{i + 1}.bias"]
        syn = "synthesis_network"
        sd[f"{syn}.b4.const"] = g["input.input"][0]
        layer("conv1", f"{syn}.b4.conv1", 0)
        torgb("to_rgb1", f"{syn}.b4.torgb")
        for k in range(n_up):
            r = 8 * 2**k
            layer(f"convs.{2 * k}", f"{syn}.b{r}.conv0", 2 * k + 1)
            layer(f"convs.{2 * k + 1}", f"{syn}.b{r}.conv1", 2 * k + 2)
            torgb(f"to_rgbs.{k}", f"{syn}.b{r}.torgb")
    except KeyError as e:
        raise LoadError(f"{path}: rosinality checkpoint lacks {e}") from None
    G = StyleGAN2(arch)
    avg = ckpt.get("latent_avg")
    if avg is None:
        log.warning("%s: no latent_avg in the checkpoint; estimating w_avg from 10000 samples", path)
    sd["mapping_network.w_avg"] = avg.reshape(-1) if avg is not None else torch.zeros(arch.w_dim)
    load_state(G, sd, path)
    if avg is None:
        with torch.no_grad():
            z = torch.randn(10000, arch.z_dim, generator=torch.Generator().manual_seed(0))
            G.mapping_network.w_avg.copy_(G.mapping_network(z).mean(0))
    return G


# --- the original TensorFlow StyleGAN2 pickles (stylegan2-ffhq-config-f.pkl) --------------------------------------


def _tf_variables(net: TFNetwork, prefix: str = "", _seen: set | None = None) -> dict[str, np.ndarray]:
    """The variables of a TF network and its components, named like "synthesis/4x4/Conv/weight". A component reached
    twice (shared, or a cycle) is refused: real networks are trees."""
    seen = set() if _seen is None else _seen
    if id(net) in seen:
        raise LoadError(f"TensorFlow component {shown(prefix.rstrip('/'))} appears twice in the network")
    seen.add(id(net))
    out = {}
    for name, value in net.state.get("variables", []):
        if not isinstance(value, (_Array, int, float)):  # an array, or a scalar (lod); never nested lists
            raise LoadError(f"TensorFlow variable {shown(prefix + str(name))} is a {type(value).__name__}")
        out[prefix + name] = value.array if isinstance(value, _Array) else np.asarray(value)
    for name, comp in net.state.get("components", {}).items():
        if isinstance(comp, TFNetwork):
            out.update(_tf_variables(comp, f"{prefix}{name}/", seen))
    return out


def from_tf(Gs: TFNetwork, path="<pickle>") -> StyleGAN2:
    """The Gs network of NVlabs/stylegan2 (TensorFlow) -> StyleGAN2, variable names as in NVIDIA's conversion."""
    kw = plain(Gs.state.get("static_kwargs", {}))
    if kw.get("label_size", 0):
        raise LoadError(f"{path}: a class-conditional generator, which projection cannot drive")
    if Gs.state.get("version", 0) < 4:
        raise LoadError(f"{path}: TensorFlow network pickle version {Gs.state.get('version')} is too old")
    v = _tf_variables(Gs)
    res = int(kw.get("resolution", 1024))
    arch_name = "orig" if any(k.startswith("ToRGB_lod") for k in v) else kw.get("architecture", "skip")
    if arch_name == "orig":
        raise LoadError(f"{path}: the 'orig' TensorFlow layout (ToRGB_lod*) is not supported")
    fmap_base = kw.get("fmap_base")
    arch = StyleGAN2Arch(resolution=res, z_dim=int(kw.get("latent_size", 512)), w_dim=int(kw.get("dlatent_size", 512)),
                         img_channels=int(kw.get("num_channels", 3)),
                         channel_base=int(fmap_base if fmap_base is not None else 16384) * 2,
                         channel_max=int(kw.get("fmap_max", 512)), mapping_layers=int(kw.get("mapping_layers", 8)),
                         mapping_lr_multiplier=float(kw.get("mapping_lrmul", 0.01)), architecture=arch_name,
                         conv_clamp=kw.get("conv_clamp"),
                         resample_filter=tuple(kw.get("resample_kernel", (1, 3, 3, 1))),
                         name=f"stylegan2-{res}")
    check_arch(arch, path)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def conv(name: str, flip: bool) -> torch.Tensor:  # TF [kh, kw, I, O] -> [O, I, kh, kw]
        w = v[name][::-1, ::-1] if flip else v[name]
        return t(w.transpose(3, 2, 0, 1))

    sd = {"mapping_network.w_avg": t(v["dlatent_avg"])}
    try:
        for i in range(arch.mapping_layers):
            sd[f"mapping_network.fc{i}.weight"] = t(v[f"mapping/Dense{i}/weight"].T)
            sd[f"mapping_network.fc{i}.bias"] = t(v[f"mapping/Dense{i}/bias"])
        for r in arch.block_resolutions:
            s, dst = f"synthesis/{r}x{r}", f"synthesis_network.b{r}"
            names = [("conv1", f"{s}/Conv", False, 0)] if r == 4 else []
            if r > 4:
                lg = int(np.log2(r))
                names = [("conv0", f"{s}/Conv0_up", True, lg * 2 - 5), ("conv1", f"{s}/Conv1", False, lg * 2 - 4)]
            for ours, tf, flip, noise in names:
                sd[f"{dst}.{ours}.weight"] = conv(f"{tf}/weight", flip)
                sd[f"{dst}.{ours}.bias"] = t(v[f"{tf}/bias"])
                sd[f"{dst}.{ours}.noise_const"] = t(v[f"synthesis/noise{noise}"][0, 0])
                sd[f"{dst}.{ours}.noise_strength"] = t(v[f"{tf}/noise_strength"]).reshape([])
                sd[f"{dst}.{ours}.affine.weight"] = t(v[f"{tf}/mod_weight"].T)
                sd[f"{dst}.{ours}.affine.bias"] = t(v[f"{tf}/mod_bias"] + 1)
            if r == 4:
                sd[f"{dst}.const"] = t(v[f"{s}/Const/const"][0])
            if arch_name == "skip" or r == res:
                sd[f"{dst}.torgb.weight"] = conv(f"{s}/ToRGB/weight", False)
                sd[f"{dst}.torgb.bias"] = t(v[f"{s}/ToRGB/bias"])
                sd[f"{dst}.torgb.affine.weight"] = t(v[f"{s}/ToRGB/mod_weight"].T)
                sd[f"{dst}.torgb.affine.bias"] = t(v[f"{s}/ToRGB/mod_bias"] + 1)
            if arch_name == "resnet" and r > 4:
                sd[f"{dst}.skip.weight"] = conv(f"{s}/Skip/weight", True)
    except KeyError as e:
        raise LoadError(f"{path}: TensorFlow generator lacks variable {e}") from None
    G = StyleGAN2(arch)
    load_state(G, sd, path)
    return G
