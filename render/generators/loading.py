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
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from render.generators.base import Generator
from render.generators.stylegan2 import StyleGAN2, StyleGAN2Arch

log = logging.getLogger(__name__)

FORMAT, VERSION = "uncanny-generator", 1


class LoadError(ValueError):
    """A generator file cannot be used; the message is one line naming the file."""


# What a file may ask of memory before anything is checked against its tensors. The largest published generators
# (StyleGAN3-R 1024) have ~30 M parameters, 1024 channels and w of 512; these bounds leave room for custom models.
MAX_TENSOR_ELEMENTS = 2**28  # one tensor (1 GiB in float32)
MAX_TOTAL_ELEMENTS = 2**30  # all tensors of a network together (4 GiB in float32)
ARCH_LIMITS = {"resolution": (4, 2048), "z_dim": (1, 2048), "w_dim": (1, 2048), "img_channels": (1, 4),
               "channel_base": (1, 2**20), "channel_max": (1, 2048), "mapping_layers": (1, 32),
               "num_layers": (1, 64), "num_critical": (0, 16), "margin_size": (0, 512), "conv_kernel": (1, 7),
               "filter_size": (1, 64), "lrelu_upsampling": (1, 8)}


def check_arch(arch, path) -> None:
    """Refuse sizes no real generator has before a network of them is built (a small file must not ask for 100 GB)."""
    for key, (lo, hi) in ARCH_LIMITS.items():
        value = getattr(arch, key, None)
        if value is not None and not (isinstance(value, int) and lo <= value <= hi):
            raise LoadError(f"{path}: {key} = {value!r} is outside {lo}..{hi}, the range this loader accepts")


def printable(text: str) -> str:
    """A message with the file's own strings in it, made safe for a terminal: control characters (ANSI escapes that
    could rewrite the screen) become escapes, and it stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- the allow-list unpickler ------------------------------------------------------------------------------------


class Persistent:
    """An NVIDIA persistent object, kept as data: class name, (unexecuted) module source, and its __dict__."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
            raise pickle.UnpicklingError("malformed persistent object")
        self.class_name = str(meta.get("class_name"))
        self.module_src = str(meta.get("module_src", ""))
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
            raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not a plain number type")
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
    return torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")


def _rebuild_tensor(storage, offset, size, stride, *_):
    """A view of `storage`, which it must fit inside: torch would grow a storage to fit the view, and a stride of 0
    would make a huge tensor of a few bytes once copied."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("tensor without a typed storage")
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, *size, *stride)) \
            or len(size) != len(stride) or len(size) > 8:
        raise pickle.UnpicklingError(f"tensor with a bad size {size}, stride {stride} or offset {offset}")
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
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


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
    ("torch", "Size"): tuple,
    ("torch", "device"): str,
    **{("torch", name): getattr(torch, name) for name in ("float16", "bfloat16", "float32", "float64", "int64")},
    ("numpy", "dtype"): _DType,
    ("numpy", "ndarray"): _Array,  # only ever the first argument of _reconstruct, which ignores it
    **{(m, n): fn for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n, fn in _NUMPY.items()},
}


BUILDABLE = (TFNetwork, _Array, _DType, EasyDict, collections.OrderedDict)  # whose state a pickle may set (BUILD)


class SafeUnpickler(pickle._Unpickler):  # the Python implementation: its opcode table can be narrowed
    """Resolves only `ALLOWED` globals; everything else raises before anything is called. BUILD (set an object's
    state) applies only to instances of our inert data classes: on a class or function from the allow-list it would
    change how later loads in this process behave."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not on the allow-list") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not supported")

    def load_build(self) -> None:
        if type(self.stack[-2]) not in BUILDABLE:
            raise pickle.UnpicklingError(f"BUILD on a {type(self.stack[-2]).__name__} is not allowed")
        super().load_build()

    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


def safe_unpickle(path: Path):
    try:
        with open(path, "rb") as f:
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
        with zipfile.ZipFile(path) as z:  # torch stores its zip uncompressed: more than that is a zip bomb
            unpacked = sum(i.file_size for i in z.infolist())
        if unpacked > 2 * path.stat().st_size + 2**26:
            raise LoadError(f"{path}: a zip archive that unpacks to {unpacked} bytes from {path.stat().st_size}; "
                            "PyTorch never compresses its files, so this is refused")
        return "torch"
    if head == b"PK\x03\x04":
        raise LoadError(f"{path}: truncated or damaged PyTorch file (a zip archive without its directory)")
    raise LoadError(f"{path}: unknown format (neither a PyTorch checkpoint nor a pickle)")


def _load(path: str | Path) -> tuple[Generator, str]:
    """_read, with every failure as one printable line: a malformed file can make the code that interprets it raise
    anything (KeyError, ZeroDivisionError, MemoryError, ...), and none of that may reach the user as a traceback."""
    path = Path(path)
    try:
        return _read(path)
    except LoadError as e:
        raise LoadError(printable(str(e))) from None
    except Exception as e:  # noqa: BLE001 - the file's contents, not our code, decide what is raised here
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise LoadError(printable(f"{path}: not a usable generator file ({type(e).__name__}: {first})")) from None


def _refused_by_torch(e: Exception) -> str:
    """torch.load's refusal in one line, keeping the name of the global it refused."""
    text = str(e)
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    return f"it names {found.group(1)}, which is not allowed" if found else text.splitlines()[0][:200]


def _read(path: Path) -> tuple[Generator, str]:
    if path.is_dir():
        raise LoadError(f"{path}: is a folder, not a generator file")
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    if _sniff(path) == "torch":
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"{path}: refused by torch.load(weights_only=True): {_refused_by_torch(e)}") from None
        if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
            return _from_uncanny(ckpt, path), "uncanny"
        if isinstance(ckpt, dict) and "g_ema" in ckpt:
            return from_rosinality(ckpt, path), "rosinality"
        keys = ", ".join(map(str, list(ckpt)[:6])) if isinstance(ckpt, dict) else type(ckpt).__name__
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
        raise LoadError(f"{path}: uncanny-generator version {ckpt.get('version')!r}, this build reads {VERSION}")
    family = ckpt.get("family", "stylegan2")
    try:
        if family == "stylegan2":
            arch = StyleGAN2Arch.from_dict(ckpt["arch"])
            check_arch(arch, path)
            G = StyleGAN2(arch)
        elif family == "stylegan3":
            from render.generators import stylegan3

            arch = stylegan3.StyleGAN3Arch(**ckpt["arch"])
            check_arch(arch, path)
            G = stylegan3.StyleGAN3(arch, name=str(ckpt.get("name", "stylegan3")))
        else:
            raise LoadError(f"{path}: unknown generator family {family!r}")
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


def plain(obj, _memo: dict | None = None):
    """EasyDict / OrderedDict / numpy scalars -> plain Python containers, recursively. Each container is converted
    once, so a pickle that refers to one list from many places (a DAG) costs its size, not 2**depth; cycles stay
    cycles. Nesting deeper than Python's recursion limit raises RecursionError (one line, from `_load`)."""
    memo = {} if _memo is None else _memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        out = memo[id(obj)] = {}
        out.update((k, plain(v, memo)) for k, v in obj.items())
        return out
    if isinstance(obj, list):
        out = memo[id(obj)] = []
        out.extend(plain(v, memo) for v in obj)
        return out
    if isinstance(obj, tuple):
        out = memo[id(obj)] = tuple(plain(v, memo) for v in obj)
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
        from render.generators import stylegan3

        try:
            check_arch(stylegan3.arch_from_nvidia(kwargs), path)
            return stylegan3.from_nvidia(kwargs, state), "nvidia-stylegan3"
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
            raise LoadError(f"{path}: unsupported mapping option {key}={mapping[key]!r}")
    if syn.get("activation", "lrelu") != "lrelu" or syn.get("kernel_size", 3) != 3:
        raise LoadError(f"{path}: unsupported synthesis options {syn}")
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


def _tf_variables(net: TFNetwork, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for name, value in net.state.get("variables", []):
        out[prefix + name] = value.array if isinstance(value, _Array) else np.asarray(value)
    for name, comp in net.state.get("components", {}).items():
        if isinstance(comp, TFNetwork):
            out.update(_tf_variables(comp, f"{prefix}{name}/"))
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
