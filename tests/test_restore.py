"""Old and difficult photos (issue #22): what auto-restore detects, the degraded loss's gradient, the rotation
fallback, and the restore choice in settings, sequence files and projection keys."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from render.faces.align import align_file, load_image
from render.faces.degradation import NO_RESTORE, Condition, Restore, blocking, colour_residual, luma, resolve_restore
from sequences.config import Config, ConfigError, parse_restore
from sequences.sequence import SequenceError, load_sequence

CFG = Config().align
COLOUR = ["astronaut.png", "obama.jpg", "biden.jpg", "obama2.jpg"]


@pytest.fixture(scope="module")
def clean(subject_photo):
    """The aligned obama face [256,256,3], the photo every synthetic degradation starts from."""
    return align_file(subject_photo("obama.jpg"), CFG).image


def degraded(face: np.ndarray, kind: str) -> Image.Image:
    y = luma(face)
    if kind == "grayscale":
        return Image.fromarray(np.uint8(np.clip(np.rint(y), 0, 255)), "L")
    if kind == "sepia":  # a toned print: every channel one curve of the brightness
        return Image.fromarray(np.uint8(np.clip(np.rint(y[..., None] * [1.0, 0.85, 0.65] + [18, 8, 0]), 0, 255)))
    if kind == "lowres":  # a 24 px face, enlarged before it reached us
        small = Image.fromarray(face).resize((24, 24), Image.Resampling.LANCZOS)
        return small.resize((256, 256), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    Image.fromarray(face).save(buf, "JPEG", quality=8)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("kind, expect", [("grayscale", ("grayscale",)), ("sepia", ("grayscale",)),
                                          ("lowres", ("lowres",)), ("jpeg", ("jpeg",))])
def test_auto_detects_each_degradation_of_a_photo(clean, tmp_path, kind, expect):
    path = tmp_path / f"old-{kind}.png"
    degraded(clean, kind).save(path)  # PNG: a JPEG's blocks must be found in the pixels, not in the file type
    face = align_file(path, CFG)
    if kind == "jpeg":  # at 256 px, where its blocks are 8 px (quality 8 also leaves detail for only 96 px: lowres)
        restore = resolve_restore("auto", face.condition, 256)
        assert restore.kinds in (("jpeg",), ("lowres", "jpeg")), (restore, face.condition)
    else:
        restore = resolve_restore("auto", face.condition, 64)
        assert restore.kinds == expect, (restore, face.condition)
    if kind == "lowres":
        assert 20 <= restore.native <= 40  # the 24 px it was reduced to, as the round trip measures it


def test_the_jpeg_restore_holds_the_colour_and_softens_only_the_block_edges(clean, tmp_path):
    """Quality-8 blocks of a 256 px face are 2 px at 64 px: resizing averages them away, so the compare is next to
    unblurred there (the colour prior restores); 16 px blocks are blurred by 2 px."""
    from render.latent.degrade import JPEG_BLUR, degrader

    path = tmp_path / "old-jpeg.png"
    degraded(clean, "jpeg").save(path)
    face = align_file(path, CFG)
    small, large = resolve_restore("auto", face.condition, 64), resolve_restore("auto", face.condition, 256)
    assert small.kinds == ("jpeg",) and "px blocks" in small.describe(), small
    assert "jpeg" in large.kinds and small.block == large.block
    img = torch.rand(1, 3, 64, 64) * 2 - 1
    at64 = degrader(small, 64, 0.79)
    coarse = degrader(Restore(("jpeg",), block=16 / 64), 64, 1.0)  # 16 px blocks: sigma 2 px
    fine, wide = (at64(img) - img).abs().mean(), (coarse(img) - img).abs().mean()
    assert JPEG_BLUR * 16 == 2 and wide > 0.3 and fine < wide / 10  # 2 px blocks: next to compared as they are
    assert hasattr(at64, "penalty") and hasattr(coarse, "penalty")  # the colour held at both
    assert resolve_restore("none", face.condition, 64) == NO_RESTORE


@pytest.mark.parametrize("name", COLOUR)
def test_no_restore_on_the_colour_demo_photos(subject_photo, name):
    face = align_file(subject_photo(name), CFG)
    assert resolve_restore("auto", face.condition, 64) == NO_RESTORE, face.condition


def test_measures_on_synthetic_pictures():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert colour_residual(noise) > 30
    gray = np.repeat(noise[..., :1], 3, axis=2)
    assert colour_residual(gray) < 1e-6
    assert blocking(noise) < 1.2
    blocks = np.kron(rng.integers(0, 256, (8, 8, 1)), np.ones((8, 8, 3))).astype(np.uint8)  # 8x8 flat blocks
    blocks = np.clip(blocks.astype(int) + rng.integers(-3, 4, blocks.shape), 0, 255).astype(np.uint8)
    assert blocking(blocks) > 3
    assert blocking(np.rot90(blocks[3:, 5:])) > 3  # cropped and turned: another phase, the same blocks


def test_explicit_choices_and_none():
    c = Condition(colour_residual=20.0, blocking=1.0, scale=300.0, detail=128.0)  # a clean colour photo
    assert resolve_restore("auto", c, 64) == NO_RESTORE
    assert resolve_restore("none", Condition(0.0, 3.0, 20.0, 20.0), 64) == NO_RESTORE
    r = resolve_restore("grayscale,jpeg", c, 64)
    assert r.kinds == ("grayscale", "jpeg") and r.block == pytest.approx(8 / 300)
    assert resolve_restore(["lowres"], Condition(20.0, 1.0, 40.0, 128.0), 64).native == 40  # the landmarks' scale
    assert parse_restore(["jpeg", "grayscale"]) == ("grayscale", "jpeg")
    for bad in ("sepia", ["auto", "jpeg"], "", 3):
        with pytest.raises(ValueError):
            parse_restore(bad)


def test_restore_in_config_and_sequence_files(tmp_path):
    assert Config().projection.restore == "auto"
    assert Config().override({"projection": {"restore": ["lowres", "grayscale"]}}).projection.restore == \
        "grayscale,lowres"
    with pytest.raises(ConfigError, match="projection.restore"):
        Config().override({"projection": {"restore": "blur"}}, source="x.toml")
    seq = tmp_path / "s.toml"
    seq.write_text('name = "s"\n[[subjects]]\nname = "a"\nimage = "a.png"\nrestore = ["grayscale"]\n'
                   '[[subjects]]\nname = "b"\nimage = "b.png"\n')
    a, b = load_sequence(seq).subjects
    assert (a.restore, b.restore) == ("grayscale", "")
    seq.write_text('name = "s"\n[[subjects]]\nname = "a"\nimage = "a.png"\nrestore = "colour"\n')
    with pytest.raises(SequenceError, match=r"subjects\[0\]\.restore"):
        load_sequence(seq)


# ------------------------------------------------------------------------------------------------- the degraded loss


def test_the_loss_gradient_flows_through_each_degradation():
    """Through grayscale the image gradient is the luma weights times one map; through the JPEG blur it is smooth
    (what the photo lost does not pull), through lowres smoother than without (it pulls LOWRES_KEEP as hard); and
    it reaches the latent."""
    from render.latent.degrade import LUMA, degrader
    from render.models import load_generator
    from render.models.lpips import load_lpips

    G = load_generator("embedded")
    lp = load_lpips("vgg", G.device)
    target = torch.rand(1, 3, 64, 64) * 2 - 1

    def roughness(g):  # [3,64,64]: how much neighbouring pixels' gradients differ
        return float((g[..., 1:, :] - g[..., :-1, :]).abs().mean() / g.abs().mean())

    img = G.synthesis(G.mean_latent()).detach().requires_grad_(True)
    lp(img, target).sum().backward()
    plain = roughness(img.grad[0])
    for restore in (Restore(("grayscale",)), Restore(("lowres",), native=20.0), Restore(("jpeg",), block=16 / 64)):
        degrade = degrader(restore, 64, 1.0)
        latent = G.mean_latent().clone().requires_grad_(True)
        img = G.synthesis(latent)  # [1,3,64,64]
        img.retain_grad()
        lp(degrade(img), degrade(target)).sum().backward()
        g = img.grad[0]  # [3,64,64]
        assert latent.grad is not None and latent.grad.abs().sum() > 0 and torch.isfinite(latent.grad).all()
        if restore.kinds == ("grayscale",):
            per_channel = g / torch.tensor(LUMA)[:, None, None]
            assert torch.allclose(per_channel[0], per_channel[1], atol=1e-6) and torch.allclose(
                per_channel[0], per_channel[2], atol=1e-6)
        elif restore.kinds == ("jpeg",):  # no pull at the highest frequency: neighbouring gradients nearly agree
            assert roughness(g) < 0.5, roughness(g)
        else:
            assert roughness(g) < 0.8 * plain, (roughness(g), plain)


def test_the_grayscale_restore_holds_the_colour_it_cannot_see_to_broad_areas():
    """The loss of a grayscale restore sees no colour; its prior measures colour finer than a couple of pixels: zero
    for a gray picture, small for colour in broad areas, large for colour blotches of the same strength."""
    from render.latent.degrade import chroma_detail, degrader

    y = torch.linspace(-0.5, 0.5, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)  # one brightness ramp
    broad = y + 0.3 * torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1) * torch.linspace(-1, 1, 64).view(1, 1, 64, 1)
    blotchy = y + 0.3 * torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1) * torch.randn(
        1, 1, 64, 64, generator=torch.Generator().manual_seed(0)).sign()
    assert chroma_detail(y.contiguous(), 1.5).item() < 1e-10
    assert chroma_detail(blotchy, 1.5).item() > 50 * chroma_detail(broad, 1.5).item()
    gray = degrader(Restore(("grayscale",)), 64)
    assert not hasattr(degrader(Restore(("lowres",), native=20.0), 64), "penalty")
    img = blotchy.clone().requires_grad_(True)
    gray.penalty(img).backward()
    with torch.no_grad():  # one step down its gradient makes the colour broader and barely moves the brightness
        step = img - 0.01 * img.grad / img.grad.abs().max()
    assert gray.penalty(step).item() < gray.penalty(blotchy).item()
    assert (gray(step) - gray(blotchy)).abs().max() < 0.1 * (step - blotchy).abs().max()


def test_a_restoring_projection_takes_autograd_and_compares_through_the_degradation(monkeypatch):
    """The whole step compares G's image with the target directly, so a restoring projection never takes it; and
    a gray target pulls only the brightness: the restored face keeps colour that a plain projection loses."""
    import render.latent.project as P
    from render.faces.degradation import Restore, colourfulness
    from render.latent.frames import synthesize
    from render.models import load_generator
    from render.kernels.backend import resolve

    G = load_generator("embedded")
    G.backend = resolve("eager", G.device, G.resolution, 0)
    face = synthesize(G, G.sample(1, 3, 0.8))[0]
    gray = np.repeat(np.uint8(np.clip(np.rint(luma(face)), 0, 255))[..., None], 3, axis=2)
    calls = []
    real = P.whole_step_distance
    monkeypatch.setattr(P, "whole_step_distance", lambda *a: calls.append(1) or real(*a))
    plain = P.project(G, gray, steps=60, every=30, seed=0)
    assert calls  # the fast whole step, as before
    calls.clear()
    restored = P.project(G, gray, steps=60, every=30, seed=0, restore=Restore(("grayscale",)))
    assert not calls
    colour = [colourfulness(synthesize(G, r.final)[0]) for r in (plain, restored)]
    assert colour[1] > 1.5 * colour[0], colour


# ------------------------------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("quarter", [1, 3])
def test_a_turned_photo_without_orientation_tag_is_found_turned_back(subject_photo, tmp_path, quarter):
    img = load_image(subject_photo("astronaut.png"), max_pixels=CFG.max_pixels)
    path = tmp_path / "turned.png"  # PNG: no EXIF orientation
    Image.fromarray(np.rot90(img, quarter)).save(path)
    upright = align_file(subject_photo("astronaut.png"), CFG)
    face = align_file(path, CFG)
    assert face.turn == 90 * (4 - quarter) and f"turned {face.turn} degrees" in face.note
    assert np.abs(face.landmarks - upright.landmarks).max() < 2.0  # the same face, aligned the same way
    assert align_file(subject_photo("astronaut.png"), CFG).turn == 0


def test_a_photo_without_a_face_in_any_turn_still_says_so(tmp_path):
    from render.faces.align import ImageInputError

    path = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(path)
    with pytest.raises(ImageInputError, match="no face found"):
        align_file(path, CFG)
