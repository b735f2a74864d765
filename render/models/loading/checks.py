"""What a generator file may ask for, and how a refusal is worded: the limits on sizes and settings, the check of
an architecture against them before a network is built, the strict fit of weights to a network, and the one-line
`LoadError` whose text from the file is cut short and made safe for a terminal.

Every other loading module raises through here, so the limits live in one place and a test can lower one of them
(`checks.MAX_TOTAL_ELEMENTS`) for every reader at once.
"""

from __future__ import annotations

import re
import reprlib

import torch

class LoadError(ValueError):
    """A generator file cannot be used; the message is one line naming the file."""


# What a file may ask of memory before anything is checked against its tensors. The largest published generators
# (StyleGAN3-R 1024) have ~30 M parameters, 1024 channels and w of 512; these bounds leave room for custom models.
MAX_TENSOR_ELEMENTS = 2**28  # one tensor (1 GiB in float32)
MAX_TOTAL_ELEMENTS = 2**28  # all tensors of a network together, and the network an architecture builds
MAX_TUPLE_SIZE = 1024  # elements of one tuple, counting those of nested tuples (see _prescan)
ARCH_LIMITS = {"resolution": (4, 2048), "z_dim": (1, 2048), "w_dim": (1, 2048),
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
    channels = getattr(arch, "img_channels", 3)
    # grayscale or RGBA: every loss and frame here is an RGB picture
    if isinstance(channels, bool) or not isinstance(channels, int) or channels != 3:
        raise LoadError(f"{path}: img_channels = {shown(channels)}; only generators of RGB (3-channel) images can be "
                        "compared with photos")
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




def torch_refusal(e: Exception) -> str:
    """torch.load(weights_only=True)'s refusal in a few words: the global it refused, or the one paragraph of its
    message that says what it met. The rest of that message is boilerplate, and part of it (re-run with
    weights_only=False) is advice a loader of untrusted files must never give."""
    text = str(e)
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if found:
        return f"it names {found.group(1)}, which is not allowed"
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    said = [p.strip() for p in text.split("\n\n") if p.strip() and not p.strip().startswith(boilerplate)]
    said = said[0] if said else text.strip() or type(e).__name__
    said = said.replace("WeightsUnpickler error:", "").strip()
    return (said.splitlines() or [type(e).__name__])[0][:200]


def load_state(G: torch.nn.Module, state: dict, path) -> None:
    """load_state_dict(strict) whose mismatch is one line naming the file and the first offending keys."""
    missing, unexpected = G.state_dict().keys() - state.keys(), state.keys() - G.state_dict().keys()
    if missing or unexpected:
        raise LoadError(f"{path}: weights do not fit the architecture (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    for k, v in G.state_dict().items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise LoadError(f"{path}: {k} has shape {tuple(state[k].shape)}, the architecture wants {tuple(v.shape)}")
    state = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()}
    for k, v in state.items():  # a diverged training snapshot: it would draw black frames and report a loss
        if not torch.isfinite(v).all():
            raise LoadError(f"{path}: {k} holds NaN or infinite values (a diverged snapshot?)")
    G.load_state_dict(state)

