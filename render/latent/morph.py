"""Latent math for morphing, style mixing, variations and children. Pure functions on flat latents.

Every function works on the flat layer-wise latent `[N, D]` through the generator's `LatentLayout` (layers coarse to
fine), so the same code drives the embedded DCGAN (z + 4 BatchNorm style blocks: 5 layers) and StyleGAN (num_ws
copies of w). `amount` is always the share of face A: amount 1 gives A exactly, amount 0 gives B exactly.

    ws = morph(a, b, 0.7, "lerp", layout)                # [1, D]: 70 % A, 30 % B
    ws = morph(a, b, 1.0, "style", layout, crossover=2)  # layers 0-1 exactly A's, layers 2.. exactly B's
    keys = loop_keys(a, b, "style", layout)              # A, mix, B, other mix: the keyframes of a morph loop
    path = loop_path(keys, 48, "style", layout)          # [48, D] eased A -> B -> A, closes on itself

Modes:
- `lerp`   a * amount + b * (1 - amount) on every entry ("Celebrity and You").
- `slerp`  spherical interpolation *per layer*, about a centre (the generator's mean latent): each layer of A and B
           is an offset from the average face, and the in-between offset turns from one to the other on the great
           circle. Per layer, because layers are separate vectors with different spreads (the DCGAN's z has norm ~10
           while its style offsets are ~1; each StyleGAN w is its own vector): on the whole vector the widest layer
           would set the angle for all. Lerp's midpoint pulls toward the average face (blander); slerp keeps the
           distance from it, so the in-between face stays as distinctive as the endpoints.
- `style`  layers below `crossover` take `amount` of A, layers from `crossover` on take `amount` of B: amount 1 is
           the pure style mix (coarse from A, fine from B), amount 0 the reverse mix, 0.5 the plain midpoint.
- `channel` the same two sides split across channels instead of layers: in every layer, channels below the crossover
           index on one side, the rest on the other (the paper's "attribute mixing"; artists like its breakage).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from render.models.base import LatentLayout

MODES = ("lerp", "slerp", "style", "channel")
GROUPS = ("coarse", "middle", "fine")


# ---------------------------------------------------------------------------------------------------------- easing


def smoothstep(t):
    """3t^2 - 2t^3 on a tensor or an array in 0..1: zero slope at both ends."""
    return t * t * (3 - 2 * t)


def ease_in_out(n: int) -> np.ndarray:
    """n amounts from 0 to 1 with a smoothstep profile (for morph videos: linger on the faces, move between)."""
    t = np.linspace(0.0, 1.0, n)
    return t * t * (3 - 2 * t)


# ------------------------------------------------------------------------------------------------- layers and masks


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """"coarse" | "middle" | "fine" (thirds of the layers, coarse first) | "A-B" (inclusive) | "A" -> layer indices.

    Thirds: coarse = [0, round(L/3)), middle = [round(L/3), round(2L/3)), fine = the rest. The embedded DCGAN (5
    layers): coarse = z, block1; middle = block2; fine = block3, block4. StyleGAN 1024 (18 ws): 6 / 6 / 6.
    """
    spec = spec.strip().lower()
    if spec in GROUPS:
        cuts = [0, round(num_layers / 3), round(2 * num_layers / 3), num_layers]
        k = GROUPS.index(spec)
        out = list(range(cuts[k], cuts[k + 1]))
        if not out:
            raise ValueError(f"layers {spec!r} is empty for a latent of {num_layers} layers; give indices A-B")
        return out
    try:
        lo, _, hi = spec.partition("-")
        a, b = int(lo), int(hi) if hi else int(lo)
    except ValueError:
        raise ValueError(f"layers must be coarse, middle, fine, an index or A-B (inclusive), not {spec!r}") from None
    if a > b and 0 <= b < num_layers and a < num_layers:
        raise ValueError(f"layers {spec!r} runs backwards: give the lower layer first ({b}-{a})")
    if not 0 <= a <= b < num_layers:
        raise ValueError(f"layers {spec!r} out of range: this generator's latent has layers 0-{num_layers - 1}")
    return list(range(a, b + 1))


def check_crossover(crossover: int | None, mode: str, layout: LatentLayout) -> None:
    """A clear error for a crossover that does not split anything (None = the default split, always valid)."""
    if crossover is None:
        return
    if mode == "style" and not 1 <= crossover <= layout.num_layers - 1:
        raise ValueError(f"style crossover must be a layer index in 1..{layout.num_layers - 1} "
                         f"(this latent has {layout.num_layers} layers: {', '.join(layout.names)}), not {crossover}")
    if mode == "channel" and not 1 <= crossover <= min(layout.sizes) - 1:
        raise ValueError(f"channel crossover must be a channel index in 1..{min(layout.sizes) - 1} "
                         f"(the narrowest layer has {min(layout.sizes)} channels), not {crossover}")


def side_mask(layout: LatentLayout, mode: str, crossover: int | None = None) -> torch.Tensor:
    """Boolean [D]: True on the "first side" of a style or channel split.

    style: layers 0..crossover-1 (default: the first half, num_layers // 2). channel: in every layer, channels
    0..crossover-1 (default: the first half of each layer, size // 2).
    """
    check_crossover(crossover, mode, layout)
    if mode == "style":
        k = layout.num_layers // 2 if crossover is None else crossover
        return layout.layer_mask(range(k))
    if mode == "channel":
        mask = torch.zeros(layout.dim, dtype=torch.bool)
        for i, size in enumerate(layout.sizes):
            start = layout.offsets[i]
            mask[start : start + (size // 2 if crossover is None else crossover)] = True
        return mask
    raise ValueError(f"mode {mode!r} has no sides (only style and channel)")


# ------------------------------------------------------------------------------------------------- interpolation


def mix(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    """a * w + b * (1 - w), w the share of A (scalar, [D], [K, 1] or [K, D]). Exact at w = 0 and w = 1."""
    return a * w + b * (1 - w)  # x*1 + y*0 == x and x*0 + y*1 == y in IEEE arithmetic


def slerp(a: torch.Tensor, b: torch.Tensor, amount: torch.Tensor | float, layout: LatentLayout,
          center: torch.Tensor | None = None) -> torch.Tensor:
    """Spherical interpolation per layer about `center` ([1, D], None = origin); amount = share of A.

    a, b [1, D] (or [D]); amount a scalar or [K, 1]. Returns [K, D] (K = 1 for a scalar). Layers where A and B
    point the same way (or either sits on the centre) fall back to lerp. Amount 0 and 1 give B and A exactly.
    """
    a, b = a.reshape(1, -1), b.reshape(1, -1)
    t = torch.as_tensor(amount, dtype=a.dtype, device=a.device).reshape(-1, 1)  # [K, 1] share of A
    c = torch.zeros_like(a) if center is None else center.reshape(1, -1).to(a)
    out = []
    for sl in (layout.slice(i) for i in range(layout.num_layers)):
        u, v = a[:, sl] - c[:, sl], b[:, sl] - c[:, sl]  # [1, n] offsets from the centre
        nu, nv = u.norm(), v.norm()
        cos = (u * v).sum() / (nu * nv).clamp_min(1e-12)
        omega = torch.arccos(cos.clamp(-1.0, 1.0))
        if nu < 1e-8 or nv < 1e-8 or omega < 1e-4:
            layer = mix(u, v, t)
        else:
            s = torch.sin(omega)
            layer = (torch.sin(t * omega) * u + torch.sin((1 - t) * omega) * v) / s  # [K, n]
        out.append(layer + c[:, sl])
    res = torch.cat(out, dim=1)  # [K, D]
    res = torch.where(t == 1, a, res)
    return torch.where(t == 0, b, res)


def morph(a: torch.Tensor, b: torch.Tensor, amount: torch.Tensor | float, mode: str, layout: LatentLayout, *,
          crossover: int | None = None, center: torch.Tensor | None = None) -> torch.Tensor:
    """One latent (or [K, D] for amount [K, 1]) between faces a and b ([1, D] each); see the module docstring."""
    if mode not in MODES:
        raise ValueError(f"morph mode must be one of {', '.join(MODES)}, not {mode!r}")
    a, b = a.reshape(1, -1), b.reshape(1, -1)
    t = torch.as_tensor(amount, dtype=a.dtype, device=a.device).reshape(-1, 1)  # [K, 1]
    if mode == "lerp":
        return mix(a, b, t)
    if mode == "slerp":
        return slerp(a, b, t, layout, center)
    first = side_mask(layout, mode, crossover).to(a.device)  # [D]
    w = torch.where(first, t, 1 - t)  # [K, D]: the first side takes `amount` of A, the other `amount` of B
    return mix(a, b, w)


# ------------------------------------------------------------------------------------------------- loops


def loop_keys(a: torch.Tensor, b: torch.Tensor, mode: str, layout: LatentLayout, *,
              crossover: int | None = None) -> list[torch.Tensor]:
    """Keyframes [1, D] of an A -> B -> A loop. lerp/slerp: [A, B]. style/channel: [A, mix0, B, mix1], where
    mix0 = morph(amount 0) (first side from B, other from A) and mix1 = morph(amount 1): going there the first
    side moves, coming back the other side leads, so the loop passes through both pure mixes."""
    a, b = a.reshape(1, -1), b.reshape(1, -1)
    if mode in ("lerp", "slerp"):
        return [a, b]
    return [a, morph(a, b, 0.0, mode, layout, crossover=crossover), b,
            morph(a, b, 1.0, mode, layout, crossover=crossover)]


def path_latents(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, mode: str, layout: LatentLayout, *,
                 crossover: int | None = None, center: torch.Tensor | None = None) -> torch.Tensor:
    """The un-eased A -> B path of a mode at positions t [K, 1] (0 = A, 1 = B) -> [K, D]: the first half of
    a loop (see loop_keys). style/channel: the first side moves for t in 0..0.5, the other side for 0.5..1.
    Used for perceptual path length; computed in the dtype of `a` (pass float64 for tiny steps)."""
    a, b = a.reshape(1, -1), b.reshape(1, -1)
    t = t.to(a).reshape(-1, 1)
    if mode in ("lerp", "slerp"):
        return morph(a, b, 1 - t, mode, layout, center=center)
    mid = morph(a, b, 0.0, mode, layout, crossover=crossover)  # first side from B, other side from A
    first = mix(a, mid, 1 - (2 * t).clamp(0, 1))
    second = mix(mid, b, 1 - (2 * t - 1).clamp(0, 1))
    return torch.where(t <= 0.5, first, second)


def loop_path(keys: list[torch.Tensor], count: int, mode: str, layout: LatentLayout, *,
              center: torch.Tensor | None = None, ease: bool = True) -> torch.Tensor:
    """`count` latents [count, D] going round the keyframes and back to the first, smoothstep-eased per leg.

    The last frame is one step before keys[0] (the loop restarts there), so the loop closes with a typical step.
    Legs between lerp/slerp keyframes interpolate in `mode`; legs of a style/channel loop change one side only
    and are plain lerps (mix of two keyframes).
    """
    legs = len(keys)
    if count < 2 * legs:
        raise ValueError(f"a loop through {legs} keyframes needs at least {2 * legs} frames, not {count}")
    per = [count // legs + (1 if i < count % legs else 0) for i in range(legs)]  # frames per leg, summing to count
    out = []
    for i, n in enumerate(per):
        src, dst = keys[i], keys[(i + 1) % legs]
        u = np.arange(n) / n  # [0, 1): the leg's end is the next leg's start
        u = smoothstep(u) if ease else u
        t = torch.from_numpy(1 - u).to(src)[:, None]  # share of the leg's source
        out.append(slerp(src, dst, t, layout, center) if mode == "slerp" else mix(src, dst, t))
    return torch.cat(out)  # [count, D]


# ------------------------------------------------------------------------------------------------- variations, children


def resample_layers(latent: torch.Tensor, randoms: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variations: latent [1, D] with the entries under `mask` ([D] bool) taken from each random latent [n, D]."""
    return torch.where(mask.to(latent.device), randoms.to(latent), latent.reshape(1, -1))  # [n, D]


def child_masks(layout: LatentLayout, n: int, seed: int, *, unit: str = "layer", groups: int = 8) -> torch.Tensor:
    """n masks [n, D] of 0/1 (1 = from parent A), one coin per layer (unit "layer") or per channel group (unit
    "channel": each layer cut into `groups` contiguous groups). A draw that takes everything from one parent is
    redrawn, so a child is never a copy. Same seed, same masks, on every device."""
    if unit not in ("layer", "channel"):
        raise ValueError(f"child unit must be 'layer' or 'channel', not {unit!r}")
    pieces = []  # (start, stop) of each unit of inheritance
    for i, size in enumerate(layout.sizes):
        if unit == "layer":
            pieces.append((layout.offsets[i], layout.offsets[i] + size))
        else:
            bounds = np.linspace(0, size, min(groups, size) + 1).round().astype(int)
            pieces += [(layout.offsets[i] + s, layout.offsets[i] + e) for s, e in zip(bounds[:-1], bounds[1:])]
    if len(pieces) < 2:
        raise ValueError("a child needs at least two layers or channel groups to inherit")
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, layout.dim)
    for k in range(n):
        coins = torch.randint(0, 2, (len(pieces),), generator=gen)
        while coins.min() == coins.max():
            coins = torch.randint(0, 2, (len(pieces),), generator=gen)
        for (s, e), c in zip(pieces, coins.tolist()):
            masks[k, s:e] = float(c)
    return masks


def child_latents(a: torch.Tensor, b: torch.Tensor, masks: torch.Tensor, blend: float = 0.0) -> torch.Tensor:
    """Children [n, D] of parents a, b [1, D]: each entry from the parent its mask picks, with `blend` (0..0.5) of
    the other parent mixed in (0 = pure inheritance, 0.5 = the plain average everywhere)."""
    if not 0.0 <= blend <= 0.5:
        raise ValueError(f"child blend must be in 0..0.5, not {blend}")
    w = masks.to(a) * (1 - blend) + (1 - masks.to(a)) * blend  # share of A per entry
    return mix(a.reshape(1, -1), b.reshape(1, -1), w)


def random_latents(G, n: int, seed: int, truncation_psi: float = 0.7) -> torch.Tensor:
    """n random latents [n, D] for variations: G.sample for every entry the mapping varies; entries the mapping
    never changes (the embedded DCGAN's BatchNorm styles) are drawn around the mean latent with the generator's
    latent spread, scaled by truncation_psi, so resampling them gives variety too."""
    lat = G.sample(n, seed, truncation_psi).float()  # [n, D]
    probe = G.sample(8, seed + 7919).float()  # which entries does the mapping move at all?
    fixed = (probe.std(dim=0) < 1e-8).to(lat.device)  # [D]
    if bool(fixed.any()):
        gen = torch.Generator().manual_seed(seed + 104729)
        noise = torch.randn(n, lat.shape[1], generator=gen).to(lat.device)
        spread = G.mean_latent().float() + truncation_psi * G.latent_std().float() * noise
        lat = torch.where(fixed, spread, lat)
    return lat


def amount_grid(amounts: tuple[float, ...] | list[float]) -> list[float]:
    """Validated grid amounts (each in 0..1)."""
    out = [float(x) for x in amounts]
    if not out or any(not (0.0 <= x <= 1.0) or math.isnan(x) for x in out):
        raise ValueError(f"grid amounts must be numbers in 0..1, not {list(amounts)!r}")
    return out
