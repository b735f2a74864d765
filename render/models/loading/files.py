"""Generator files -> our modules: what kind of file it is, the public entry points, and our own format.

    G = load_generator_file("ffhq.pkl", device)   # NVIDIA .pkl (ADA / stylegan3 / original TF), rosinality .pt,
    info = inspect_file("ffhq.pkl")                # or our *.uncanny.pt; inspect = describe() + format, on CPU
    save_generator(G, "media/ffhq.uncanny.pt")

A file is sniffed from its first bytes (a pickle, or a torch zip archive), checked before anything reads it, read by
the safe unpickler or torch.load(weights_only=True), and handed to the converter of its format (nvidia_pytorch,
rosinality, nvidia_tf). Our own `*.uncanny.pt` is the architecture dataclass as a dict plus the state dict, so it
loads with weights_only and needs no converter. Every failure reaches the caller as one printable LoadError line
naming the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

import torch

from render.models.base import Generator
from render.models.loading.checks import LoadError, check_arch, load_state, printable, shown, torch_refusal
from render.models.loading.nvidia_pytorch import from_persistent
from render.models.loading.nvidia_tf import from_tf
from render.models.loading.rosinality import from_rosinality
from render.models.loading.unpickler import Persistent, TFNetwork, _check_torch_file, safe_unpickle
from render.models.stylegan2 import StyleGAN2, StyleGAN2Arch

FORMAT, VERSION = "uncanny-generator", 1


def _safe_name(value, default: str) -> str:
    """A generator name from a file, as used in file names and printed: letters, digits and . _ + - only."""
    return re.sub(r"[^\w.+-]", "_", value)[:64] if isinstance(value, str) and value else default


def _legacy_torch(head: bytes) -> bool:
    """Whether a file's first pickle is torch's magic number alone: PyTorch's format before 1.6 (and any file saved
    with `_use_new_zipfile_serialization=False`) is a run of pickles that opens with it, as early rosinality
    checkpoints are. Read opcode by opcode from the first bytes, so nothing is built."""
    try:
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(io.BytesIO(head))]
    except Exception:  # noqa: BLE001 - a pickle longer than the head, or no pickle at all
        return False
    ops = [(name, arg) for name, arg in ops if name not in ("PROTO", "FRAME")]
    return [name for name, _ in ops] == ["LONG1", "STOP"] and ops[0][1] == torch.serialization.MAGIC_NUMBER


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        # torch's legacy format is a run of pickles; any other pickle is read as one (it may end with a zip of its
        # own: a storage saved by torch inside it, so the pickle test comes before the zip test)
        return "torch" if _legacy_torch(head) else "pickle"
    if zipfile.is_zipfile(path):
        return "torch"
    if head[:4] == b"PK\x03\x04":
        raise LoadError(f"{path}: truncated or damaged PyTorch file (a zip archive without its directory)")
    raise LoadError(f"{path}: unknown format (neither a PyTorch checkpoint nor a pickle)")



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
        message = f"not a usable generator file ({type(e).__name__}{': ' + first if first else ''})"
    raise LoadError(printable(message if message.startswith(f"{path}: ") else f"{path}: {message}")) from None


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
            # rosinality's train.py saves its argparse options beside the weights: a plain attribute bag, allowed
            with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4": the refusal says it
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"{path}: refused by torch.load(weights_only=True): {torch_refusal(e)}") from None
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
        return from_persistent(data["G_ema"], path)
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

