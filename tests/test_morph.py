"""Morphing, style mixing, variations, children, the projection cache and PPL (issue 5), on CPU.

Latent math runs on the embedded DCGAN's layout and on a tiny random StyleGAN2; projection uses a few steps only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from render.models import load_generator
from render.models.stylegan2 import StyleGAN2, StyleGAN2Arch
from render.pipeline.loop import seam_ratio
from render.latent.frames import synthesize
from render.latent.morph import (GROUPS, check_crossover, child_latents, child_masks, loop_keys, loop_path, morph,
                          parse_layers, path_latents, random_latents, resample_layers, side_mask, slerp)
from sequences.config import Config


@pytest.fixture(scope="module")
def embedded():
    return load_generator("embedded")


@pytest.fixture(scope="module")
def tiny_sg2():
    torch.manual_seed(5)
    G = StyleGAN2(StyleGAN2Arch(resolution=32, z_dim=16, w_dim=16, channel_base=256, channel_max=16,
                                mapping_layers=2, name="tiny-sg2"))
    with torch.no_grad():
        G.mapping_network.w_avg.copy_(torch.randn(G.w_dim) * 0.3)
    return G.freeze()


@pytest.fixture(params=["embedded", "tiny_sg2"])
def G(request):
    return request.getfixturevalue(request.param)


def two_faces(G, seed=1):
    """Two distinct latents with every layer different (random styles on top of sampled faces)."""
    gen = torch.Generator().manual_seed(seed)
    lat = G.sample(2, seed) + 0.3 * torch.randn(2, G.layout.dim, generator=gen)
    return lat[0:1], lat[1:2]


# ------------------------------------------------------------------------------------------------- latent math


def test_amount_0_and_1_reproduce_the_endpoints_exactly(G):
    a, b = two_faces(G)
    center = G.mean_latent()
    for mode in ("lerp", "slerp"):
        assert torch.equal(morph(a, b, 1.0, mode, G.layout, center=center), a)
        assert torch.equal(morph(a, b, 0.0, mode, G.layout, center=center), b)
        path = morph(a, b, torch.tensor([[1.0], [0.5], [0.0]]), mode, G.layout, center=center)
        assert torch.equal(path[0], a[0]) and torch.equal(path[2], b[0])
        assert not torch.equal(path[1], a[0]) and not torch.equal(path[1], b[0])
    t = torch.tensor([[0.0], [0.3], [1.0]])
    for mode in ("lerp", "slerp", "style", "channel"):
        p = path_latents(a, b, t, mode, G.layout, center=center)  # the A -> B path of every mode
        assert torch.equal(p[0], a[0]) and torch.equal(p[2], b[0])


def test_style_crossover_takes_exactly_the_right_layers(G):
    a, b = two_faces(G)
    L = G.layout
    for k in range(1, L.num_layers):
        pure = morph(a, b, 1.0, "style", L, crossover=k)[0]
        reverse = morph(a, b, 0.0, "style", L, crossover=k)[0]
        for i in range(L.num_layers):
            sl = L.slice(i)
            assert torch.equal(pure[sl], (a if i < k else b)[0, sl]), (k, i)
            assert torch.equal(reverse[sl], (b if i < k else a)[0, sl]), (k, i)
        half = morph(a, b, 0.5, "style", L, crossover=k)
        torch.testing.assert_close(half, morph(a, b, 0.5, "lerp", L))  # 0.5: both sides meet in the middle
        w = morph(a, b, 0.8, "style", L, crossover=k)[0]  # each side blended by the amount
        torch.testing.assert_close(w[L.slice(0)], 0.8 * a[0, L.slice(0)] + 0.2 * b[0, L.slice(0)])
        torch.testing.assert_close(w[L.slice(L.num_layers - 1)], 0.2 * a[0, L.slice(L.num_layers - 1)]
                                   + 0.8 * b[0, L.slice(L.num_layers - 1)])


def test_channel_crossover_splits_every_layer(G):
    a, b = two_faces(G)
    L = G.layout
    k = min(L.sizes) // 3
    pure = morph(a, b, 1.0, "channel", L, crossover=k)[0]
    for i in range(L.num_layers):
        layer, la, lb = pure[L.slice(i)], a[0, L.slice(i)], b[0, L.slice(i)]
        assert torch.equal(layer[:k], la[:k]) and torch.equal(layer[k:], lb[k:])
    default = side_mask(L, "channel")  # no crossover: the first half of every layer
    assert [int(default[L.slice(i)].sum()) for i in range(L.num_layers)] == [s // 2 for s in L.sizes]


def test_layer_specs_and_bad_crossovers_fail_clearly(embedded, tiny_sg2):
    for n in (5, 10, 14, 18):
        groups = [parse_layers(g, n) for g in GROUPS]
        assert sum(groups, []) == list(range(n))  # coarse, middle, fine cover every layer once, in order
    assert parse_layers("fine", 5) == [3, 4] and parse_layers("coarse", 5) == [0, 1]
    assert parse_layers("2-3", 5) == [2, 3] and parse_layers("4", 5) == [4]
    for bad in ("3-9", "2-1", "wild", "-1"):
        with pytest.raises(ValueError, match="layers"):
            parse_layers(bad, 5)
    with pytest.raises(ValueError, match=r"runs backwards: give the lower layer first \(1-3\)"):
        parse_layers("3-1", 5)  # both ends exist: "out of range" would be wrong
    with pytest.raises(ValueError, match=r"1\.\.4"):
        check_crossover(5, "style", embedded.layout)
    with pytest.raises(ValueError, match=r"1\.\.99"):
        check_crossover(100, "channel", embedded.layout)  # z is the narrowest layer: 100 channels
    with pytest.raises(ValueError, match="mode"):
        morph(*two_faces(tiny_sg2), 0.5, "blend", tiny_sg2.layout)


def test_slerp_keeps_the_distance_from_the_average_face(tiny_sg2):
    G, L = tiny_sg2, tiny_sg2.layout
    c = G.mean_latent()
    gen = torch.Generator().manual_seed(3)
    u, v = torch.randn(2, L.num_layers, L.sizes[0], generator=gen)  # per layer offsets, rescaled to equal norms
    v = v * (u.norm(dim=1, keepdim=True) / v.norm(dim=1, keepdim=True))
    a, b = c + u.reshape(1, -1), c + v.reshape(1, -1)
    s = slerp(a, b, 0.5, L, c).reshape(L.num_layers, -1) - c.reshape(L.num_layers, -1)
    l = morph(a, b, 0.5, "lerp", L).reshape(L.num_layers, -1) - c.reshape(L.num_layers, -1)
    torch.testing.assert_close(s.norm(dim=1), u.norm(dim=1), rtol=1e-5, atol=1e-5)
    assert bool((l.norm(dim=1) < 0.99 * u.norm(dim=1)).all())  # lerp drifts toward the average face


def test_morph_loops_close(G):
    a, b = two_faces(G)
    for mode in ("lerp", "slerp", "style"):
        keys = loop_keys(a, b, mode, G.layout)
        path = loop_path(keys, 24, mode, G.layout, center=G.mean_latent())
        assert path.shape == (24, G.layout.dim)
        assert torch.equal(path[0], a[0])
        assert torch.equal(path[24 // len(keys) * (len(keys) // 2)], b[0])  # halfway round: exactly B
        frames = synthesize(G, path)
        assert seam_ratio(frames) <= 1.5, mode


def test_child_masks_are_reproducible_by_seed(G):
    L = G.layout
    for unit in ("layer", "channel"):
        m1 = child_masks(L, 6, seed=11, unit=unit, groups=4)
        assert torch.equal(m1, child_masks(L, 6, seed=11, unit=unit, groups=4))
        assert not torch.equal(m1, child_masks(L, 6, seed=12, unit=unit, groups=4))
        assert set(m1.unique().tolist()) <= {0.0, 1.0}
        assert bool(((m1.min(dim=1).values == 0) & (m1.max(dim=1).values == 1)).all())  # never a copy of a parent
    layer_masks = child_masks(L, 6, seed=11)
    for i in range(L.num_layers):  # unit "layer": each layer entirely from one parent
        part = layer_masks[:, L.slice(i)]
        assert torch.equal(part.min(dim=1).values, part.max(dim=1).values)
    a, b = two_faces(G)
    kids = child_latents(a, b, layer_masks)
    assert torch.equal(kids, torch.where(layer_masks.bool(), a, b))
    blended = child_latents(a, b, layer_masks, blend=0.25)
    torch.testing.assert_close(blended, torch.where(layer_masks.bool(), 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b))


def test_variations_resample_only_the_chosen_layers(G):
    a, _ = two_faces(G)
    layers = parse_layers("fine", G.layout.num_layers)
    mask = G.layout.layer_mask(layers)
    randoms = random_latents(G, 3, seed=4, truncation_psi=0.7)
    varied = resample_layers(a, randoms, mask)
    assert torch.equal(varied[:, ~mask], a[:, ~mask].expand(3, -1))
    assert torch.equal(varied[:, mask], randoms[:, mask])
    assert float(varied[:, mask].std(dim=0).mean()) > 0.01  # the variations differ from each other
    assert torch.equal(randoms, random_latents(G, 3, seed=4, truncation_psi=0.7))


# ------------------------------------------------------------------------------------------------- cache, PPL


def test_cache_hits_skip_projection(tiny_sg2, subject_photo, tmp_path, monkeypatch):
    import render.pipeline.cache as cache

    cfg = Config().override({"render": {"steps": 2, "every": 1}})
    calls = []
    real_project, real_align = cache.project, cache.align_file
    monkeypatch.setattr(cache, "project", lambda *a, **k: calls.append("project") or real_project(*a, **k))
    monkeypatch.setattr(cache, "align_file", lambda *a, **k: calls.append("align") or real_align(*a, **k))
    photo = subject_photo("obama.jpg")
    face1, first = cache.project_photo(tiny_sg2, photo, cfg, cache_dir=tmp_path, quiet=True)
    assert calls == ["align", "project"]
    face2, again = cache.project_photo(tiny_sg2, photo, cfg, cache_dir=tmp_path, quiet=True)
    assert calls == ["align", "project"]  # a hit: neither aligned nor projected again
    assert torch.equal(again.latents, first.latents) and np.array_equal(face2.image, face1.image)
    cache.project_photo(tiny_sg2, photo, cfg.override({"seed": 9}), cache_dir=tmp_path, quiet=True)
    assert calls == ["align", "project", "project"]  # another setting is another projection
    settings = {"steps": 2, "seed": 0}
    keys = {cache.projection_key(tiny_sg2, face1.image, settings, start) for start in (None, tiny_sg2.sample(1, 3))}
    keys.add(cache.projection_key(tiny_sg2, face1.image[::-1], settings, None))
    monkeypatch.setattr(cache, "ALGORITHM_VERSION", cache.ALGORITHM_VERSION + 1)
    keys.add(cache.projection_key(tiny_sg2, face1.image, settings, None))
    assert len(keys) == 4  # another start latent, image or projection algorithm is another key


def test_ppl_is_zero_on_a_still_path_and_independent_of_epsilon(embedded):
    from render.models.lpips import load_lpips
    from render.latent.ppl import path_length, stratified_t

    t = stratified_t(8, seed=0)
    assert (np.diff(t) > 0).all() and t[0] >= 0 and t[-1] < 1 - 1e-4 and ((t * 8).astype(int) == np.arange(8)).all()
    lp = load_lpips("vgg", "cpu")
    a, b = (x.double() for x in two_faces(embedded))
    still = path_length(embedded, lambda t: a.expand(len(t), -1), samples=4, lpips=lp)
    assert still.ppl == 0.0
    path = lambda t: path_latents(a, b, t, "lerp", embedded.layout)  # noqa: E731
    fine = path_length(embedded, path, samples=4, lpips=lp, epsilon=1e-4)
    coarse = path_length(embedded, path, samples=4, lpips=lp, epsilon=1e-3)
    assert fine.ppl > 0 and np.isfinite(fine.values).all()
    assert 0.7 < fine.mean / coarse.mean < 1.4  # LPIPS grows as eps^2, so /eps^2 cancels it


# ------------------------------------------------------------------------------------------------- the commands


def run_cli(argv: list[str]) -> int:
    from render.commands.morph import register

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    parser.add_argument("--quiet", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_without_a_cache_each_photo_is_aligned_once(subject_photo, tmp_path, monkeypatch):
    """morph checks both photos before projecting either; with cache_dir = "" it then aligned each again."""
    import render.pipeline.cache as cache

    aligned = []
    align = cache.align_file
    monkeypatch.setattr(cache, "align_file", lambda path, cfg: aligned.append(Path(path).name) or align(path, cfg))
    config = tmp_path / "config.toml"
    config.write_text(f'media_dir = "{tmp_path / "media"}"\ncache_dir = ""\n'
                      '[render]\nsteps = 2\nevery = 1\nsize = 64\nupscale = "none"\n')
    a, b = str(subject_photo("obama.jpg")), str(subject_photo("biden.jpg"))
    assert run_cli(["--config", str(config), "--quiet", "morph", a, b, "--amount", "0.5"]) == 0
    assert sorted(aligned) == ["biden.jpg", "obama.jpg"]


def test_commands_end_to_end(subject_photo, tmp_path):
    from PIL import Image

    from sequences.video import read_video

    config = tmp_path / "config.toml"
    config.write_text(f'media_dir = "{tmp_path / "media"}"\ncache_dir = "{tmp_path / "cache"}"\n'
                      '[render]\nsteps = 4\nevery = 2\nsize = 64\nfps = 8\npreset = "ultrafast"\nupscale = "none"\n'
                      '[morph]\nvideo_seconds = 2.0\nppl_samples = 2\n'
                      'variations = 2\nchildren = 2\n')
    a, b = str(subject_photo("obama.jpg")), str(subject_photo("biden.jpg"))
    common = ["--config", str(config), "--quiet"]
    assert run_cli(common + ["morph", a, b, "--mode", "style", "--amount", "1", "--crossover", "2", "--video",
                             "--grid", "--ppl"]) == 0
    out = tmp_path / "media" / "morph" / "obama--biden"
    info = json.loads((out / "settings.json").read_text())
    assert info["mode"] == "style" and info["crossover"] == 2 and info["args"]["grid"] is True
    assert (out / "config.toml").exists() and Image.open(out / "grid.png").size[0] > 5 * 128
    assert info["video"]["frames"] == 16 and info["video"]["seam_ratio"] <= 1.5
    assert len(list(read_video(out / "loop-style.mp4"))) == 16
    assert info["ppl"]["ppl"] > 0 and info["ppl"]["epsilon"] == 1e-4
    assert np.asarray(Image.open(out / "morph-style-1.00.png")).shape == (64, 64, 3)

    assert run_cli(common + ["variations", a, "--layers", "middle", "--seed", "3"]) == 0
    info = json.loads((tmp_path / "media" / "variations" / "obama" / "settings.json").read_text())
    assert info["layers"] == ["block2"] and info["video"]["seam_ratio"] <= 1.5

    kids = []
    for folder in ("one", "two"):
        assert run_cli(common + ["child", a, b, "--seed", "5", "--out", str(tmp_path / folder)]) == 0
        kids.append([np.asarray(Image.open(tmp_path / folder / f"child-0{k}.png")) for k in (1, 2)])
    assert all(np.array_equal(x, y) for x, y in zip(kids[0], kids[1]))  # same seed, same children
    assert not np.array_equal(kids[0][0], kids[0][1])  # (different masks make different children)

    with pytest.raises(ValueError, match="crossover"):
        run_cli(common + ["morph", a, b, "--mode", "style", "--crossover", "7"])
    with pytest.raises(ValueError, match="morph.amount"):
        run_cli(common + ["morph", a, b, "--amount", "1.5"])


def test_every_command_logs_what_alignment_noticed(embedded, subject_photo, tmp_path, caplog):
    """A photo turned on its side (no orientation tag): render said which turn found the face; morph, variations,
    child, edit and montage, which project through project_photo, said nothing."""
    from PIL import Image

    from render.pipeline.cache import project_photo

    turned = tmp_path / "turned.png"
    Image.open(subject_photo("obama.jpg")).convert("RGB").rotate(90, expand=True).save(turned)
    cfg = Config().override({"render": {"steps": 2, "every": 1}})
    with caplog.at_level("INFO"):
        face, _ = project_photo(embedded, turned, cfg, cache_dir=None, quiet=True)
    assert face.turn and f"{turned}: no face upright; turned" in caplog.text
