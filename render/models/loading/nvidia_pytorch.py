"""NVIDIA's PyTorch network pickles (stylegan2-ada-pytorch, stylegan3) -> StyleGAN2 or StyleGAN3.

The unpickler leaves G_ema as a tree of `Persistent` records (class name, unexecuted source, the module's __dict__).
This module reads that tree as data: the init kwargs (EasyDicts made plain), the parameters and buffers named like
nn.Module.state_dict(), and the family, told from the synthesis network's submodules. StyleGAN2 weights are renamed
to our modules here; StyleGAN3 ones go to `stylegan3.from_nvidia`, which owns that architecture's layout.
"""

from __future__ import annotations

from pathlib import Path

import torch

from render.models.base import Generator
from render.models.loading import checks
from render.models.loading.checks import LoadError, check_arch, load_state, shown
from render.models.loading.unpickler import Persistent, plain
from render.models.stylegan2 import StyleGAN2, StyleGAN2Arch


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
        if total > checks.MAX_TOTAL_ELEMENTS:
            raise LoadError(f"the network's tensors hold {total} values "
                            f"(at most {checks.MAX_TOTAL_ELEMENTS} are accepted)")
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


def from_persistent(G: Persistent, path: Path) -> tuple[Generator, str]:
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
