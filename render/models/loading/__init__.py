"""Generator files -> our modules, without executing anything a file carries.

    G = load_generator_file("ffhq.pkl", device)   # NVIDIA .pkl (ADA / stylegan3 / original TF), rosinality .pt,
    info = inspect_file("ffhq.pkl")                # or our *.uncanny.pt; inspect = describe() + format, on CPU
    save_generator(G, "media/ffhq.uncanny.pt")

One module per concern, read bottom up:

    checks          LoadError, the limits on sizes and settings, check_arch, load_state (weights fit strictly)
    unpickler       the allow-list unpickler and its opcode pre-scan: pickles -> inert data, nothing executed
    nvidia_pytorch  stylegan2-ada-pytorch / stylegan3 pickles (Persistent module trees) -> StyleGAN2 / StyleGAN3
    rosinality      rosinality/stylegan2-pytorch checkpoints -> StyleGAN2
    nvidia_tf       NVlabs/stylegan2 TensorFlow pickles -> StyleGAN2
    files           format sniffing, the public entry points, our own *.uncanny.pt format

Imports: torch, numpy and `render.models` (the generators it builds); like the rest of the models room, never a room
above it. This __init__ re-exports the names callers use, so `from render.models.loading import X` keeps working.
"""

from __future__ import annotations

from render.models.loading.checks import LoadError, check_arch, load_state, printable, shown
from render.models.loading.files import FORMAT, VERSION, inspect_file, load_generator_file, save_generator
from render.models.loading.nvidia_pytorch import persistent_state_dict, stylegan2_from_nvidia
from render.models.loading.nvidia_tf import from_tf
from render.models.loading.rosinality import from_rosinality
from render.models.loading.unpickler import ALLOWED, Persistent, SafeUnpickler, TFNetwork, plain, safe_unpickle

__all__ = ["ALLOWED", "FORMAT", "VERSION", "LoadError", "Persistent", "SafeUnpickler", "TFNetwork", "check_arch",
           "from_rosinality", "from_tf", "inspect_file", "load_generator_file", "load_state",
           "persistent_state_dict", "plain", "printable", "safe_unpickle", "save_generator", "shown",
           "stylegan2_from_nvidia"]
