"""rosinality/stylegan2-pytorch checkpoints -> StyleGAN2.

Their train.py saves {"g", "d", "g_ema", "g_optim", "d_optim", "args"} and convert_weight.py {"g_ema", "latent_avg"};
only "g_ema" (a plain state dict, read with torch.load(weights_only=True)) and "latent_avg" are used. The sizes are
read off the tensors, as their checkpoints keep no settings; their modulated convolutions, noise and to-RGB layers
map one to one onto ours (their blur-kernel buffers are not read). rosinality never clamps activations, so conv_clamp
is None.
"""

from __future__ import annotations

import logging

import torch

from render.models.loading.checks import LoadError, check_arch, load_state
from render.models.stylegan2 import StyleGAN2, StyleGAN2Arch

log = logging.getLogger(__name__)


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
