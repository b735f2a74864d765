"""NVIDIA's TensorFlow StyleGAN2 network pickles (NVlabs/stylegan2, e.g. stylegan2-ffhq-config-f.pkl) -> StyleGAN2.

Such a pickle is the tuple (G, D, Gs) of dnnlib.tflib.network.Network states: static kwargs, components and numpy
variables. The unpickler keeps each as a `TFNetwork` record; here Gs's variables, named like
"synthesis/4x4/Conv/weight", become our state dict the way NVIDIA's own conversion (legacy.py) renames them:
TF's [kh, kw, I, O] kernels transposed, up-sampling kernels flipped, modulation biases shifted by one.
"""

from __future__ import annotations

import numpy as np
import torch

from render.models.loading.checks import LoadError, check_arch, load_state, shown
from render.models.loading.unpickler import TFNetwork, _Array, plain
from render.models.stylegan2 import StyleGAN2, StyleGAN2Arch


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
