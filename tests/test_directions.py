"""Edit directions: attribute measurement, ridge fit, response slopes, cache, apply, user .npy files, the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from render.faces.attributes import ATTRIBUTES, measure
from render.latent.directions import (DirectionSet, DirectionsError, VOCABULARY, apply_directions, load_directions,
                               load_user_direction, read_directions, response_slopes, ridge_directions,
                               save_directions)
from render.models.base import LatentLayout
from sequences.config import Config


def fake_generator(sizes=(8, 8, 8)):
    """What load_user_direction needs of a generator: the latent layout and a name (StyleGAN-like: equal layers)."""
    return SimpleNamespace(layout=LatentLayout(tuple(f"w{i}" for i in range(len(sizes))), sizes), name="fake")


@pytest.fixture(scope="module")
def G():
    from render.models import load_generator

    return load_generator("embedded")


def test_a_direction_fitted_on_synthetic_attributes_is_recovered():
    rng = np.random.default_rng(0)
    M, D = 600, 64
    X = rng.normal(size=(M, D)) * rng.uniform(0.3, 2.0, size=D)  # unequal spreads per entry
    X[:, :8] = 0.0  # entries that never vary (the embedded generator's styles in sampled latents)
    w = rng.normal(size=D)
    w[:8] = 0.0
    y = X @ w
    Y = np.stack([y + rng.normal(size=M) * 0.3 * y.std(), rng.normal(size=M), 5.0 - 2.0 * y], axis=1)
    Y[::9, 1] = np.nan  # not measured on some faces
    dirs, cv_r2, _ = ridge_directions(X, Y)
    cos = dirs[0] @ w / np.linalg.norm(dirs[0]) / np.linalg.norm(w)
    assert cos > 0.9, cos
    assert dirs[2] @ w < 0 and abs(dirs[2] @ w) / np.linalg.norm(dirs[2]) / np.linalg.norm(w) > 0.95  # exact, negated
    assert cv_r2[0] > 0.8 and cv_r2[1] < 0.05  # the noise attribute is reported as unpredictable
    assert np.all(dirs[:, :8] == 0)
    unit = dirs[0] / np.linalg.norm(dirs[0])
    assert np.isclose(np.linalg.norm(dirs[0]), np.std((X - X.mean(0)) @ unit))  # amount 1 = one sampled std


def test_fewer_faces_than_latent_entries_do_not_look_predictable():
    """With fewer samples than latent entries any target can be interpolated; leave-one-out must not be fooled."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 100))
    _, cv_r2, _ = ridge_directions(X, rng.normal(size=(30, 3)))
    assert np.all(cv_r2 < 0.1), cv_r2


def test_response_slopes_remove_each_faces_offset():
    amounts = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    offsets = np.array([10.0, -3.0, 0.5])[:, None]
    values = np.stack([0.7 * amounts + offsets, -0.2 * amounts + 0 * offsets, 0 * amounts + offsets], axis=-1)
    values[1, 4, 0] = np.nan  # no face found there
    slopes, rs = response_slopes(amounts, values)  # values [3 faces, 5 amounts, 3 attributes]
    assert np.allclose(slopes, [0.7, -0.2, 0.0]) and np.allclose(rs[:2], [1.0, -1.0])


def test_attributes_on_a_photo_and_its_mirror(subject_photo):
    from render.faces.align import align_file, landmarks_of

    face = align_file(subject_photo("obama.jpg"), Config().align)
    a = measure(face.image, face.landmarks)
    assert list(a) == list(ATTRIBUTES) and all(np.isfinite(v) for v in a.values())
    assert 0.15 < a["eye_open"] < 0.5 and 0.2 < a["skin_brightness"] < 0.9
    mirror = np.ascontiguousarray(face.image[:, ::-1])
    b = measure(mirror, landmarks_of(mirror))
    assert np.sign(b["yaw"]) == -np.sign(a["yaw"]) or abs(a["yaw"]) < 0.02
    assert abs(a["roll"] + b["roll"]) < 1.5  # a mirrored tilt is the opposite tilt
    for name in ("mouth_open", "mouth_width", "face_width", "skin_brightness"):
        assert abs(a[name] - b[name]) < 0.1 * max(abs(a[name]), 0.05), name


def test_apply_directions():
    dirs = {"smile": torch.tensor([1.0, 0.0, 0.0]), "yaw": torch.tensor([0.0, 2.0, 0.0])}
    lat = torch.zeros(2, 3)
    out = apply_directions(lat, dirs, {"smile": 1.5, "yaw": -0.5})
    assert torch.equal(out, torch.tensor([[1.5, -1.0, 0.0]] * 2)) and torch.equal(lat, torch.zeros(2, 3))
    with pytest.raises(DirectionsError, match="unknown direction 'frown'.*smile"):
        apply_directions(lat, dirs, {"frown": 1.0})
    with pytest.raises(DirectionsError, match="3 values, the latent has 4"):
        apply_directions(torch.zeros(1, 4), dirs, {"smile": 1.0})
    assert all(name in ATTRIBUTES for name, _ in VOCABULARY.values())
    assert VOCABULARY["looking left"][1] == -VOCABULARY["looking right"][1]


def test_user_direction_files(tmp_path):
    G = fake_generator()
    save = lambda name, arr: (np.save(tmp_path / name, arr), tmp_path / name)[1]  # noqa: E731
    d = np.arange(1, 25, dtype=np.float64)
    assert torch.equal(load_user_direction(save("flat.npy", d), G), torch.from_numpy(d.astype(np.float32)))
    assert load_user_direction(save("row.npy", d[None]), G).shape == (24,)
    assert load_user_direction(save("ws.npy", d.reshape(3, 8)), G).shape == (24,)
    w = load_user_direction(save("w.npy", np.ones(8)), G)  # one w, applied to every layer
    assert torch.equal(w, torch.ones(24))
    for name, arr, words in [("short.npy", np.ones(5), r"shape \[5\], expected \[24\] or \[8\]"),
                             ("nan.npy", np.full(24, np.nan), "nan or inf"), ("zero.npy", np.zeros(24), "all zeros"),
                             ("obj.npy", np.array([{"a": 1}], dtype=object), "not a readable .npy")]:
        with pytest.raises(DirectionsError, match=words) as e:
            load_user_direction(save(name, arr), G)
        assert name in str(e.value)
    (tmp_path / "text.npy").write_bytes(b"not numpy")  # numpy's own words would speak of pickles
    with pytest.raises(DirectionsError, match="text.npy: not a readable .npy array of numbers") as e:
        load_user_direction(tmp_path / "text.npy", G)
    assert "pickle" not in str(e.value)
    with pytest.raises(DirectionsError, match="not found"):
        load_user_direction(tmp_path / "missing.npy", G)
    # layers of different widths (the embedded DCGAN): only the flat latent is accepted
    with pytest.raises(DirectionsError, match=r"expected \[20\] for generator"):
        load_user_direction(save("w2.npy", np.ones(4)), fake_generator((4, 16)))


def test_cache_round_trip_and_missing_cache(G, tmp_path):
    with pytest.raises(DirectionsError, match="run `python run.py directions`"):
        load_directions(G, cache_dir=tmp_path)
    with pytest.raises(DirectionsError, match="run `python run.py directions --generator 'my g.pkl'` first"):
        load_directions(G, cache_dir=tmp_path, fit="python run.py directions --generator 'my g.pkl'")
    dirs = np.random.default_rng(1).normal(size=(2, G.layout.dim)).astype(np.float32)
    save_directions(G, tmp_path / "directions", DirectionSet(["smile", "yaw"], dirs, {"smile": {"reliable": True}}))
    for where in (tmp_path / "directions", tmp_path):  # the folder itself, or the one holding directions/
        loaded = load_directions(G, cache_dir=where)
        assert list(loaded) == ["smile", "yaw"] and torch.equal(loaded["yaw"], torch.from_numpy(dirs[1]))
    assert read_directions(G, cache_dir=tmp_path / "directions").stats["smile"]["reliable"] is True


def test_directions_command_fits_caches_and_reports(G, tmp_path):
    from run import main

    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[directions]\ncache_dir = "{tmp_path / "cache"}"\nsamples = 40\nresponse_faces = 1\n')
    out = tmp_path / "report"
    assert main(["--quiet", "--config", str(cfg), "directions", "--seed", "3", "--out", str(out)]) == 0
    dirs = load_directions(G, cache_dir=tmp_path / "cache")
    assert set(dirs) == set(ATTRIBUTES) and all(d.shape == (G.layout.dim,) for d in dirs.values())
    report = json.loads((out / "report.json").read_text())
    assert report["_fit"]["measured"] >= 20 and set(report["smile"]) >= {"response", "side_effects", "reliable"}
    assert (out / "strips" / "smile.png").is_file() and "direction" in (out / "table.txt").read_text()
    moved = apply_directions(G.sample(1, 0, 0.8), dirs, {"mouth_open": 2.0})
    assert not torch.equal(moved, G.sample(1, 0, 0.8))


def test_directions_on_a_tiny_stylegan2(tmp_path):
    """W+ latents (num_ws equal copies of w): a direction of an attribute linear in w is recovered in every layer,
    user files holding one w are broadcast, and applying a direction changes the image."""
    from render.models.stylegan2 import StyleGAN2, StyleGAN2Arch

    torch.manual_seed(0)
    G = StyleGAN2(StyleGAN2Arch(resolution=16, z_dim=16, w_dim=16, channel_base=256, channel_max=16,
                                mapping_layers=2)).freeze()
    latents = G.sample(300, seed=0)  # [300, num_ws * 16]
    v = torch.randn(16, generator=torch.Generator().manual_seed(1))
    y = latents[:, :16] @ v  # an attribute linear in w
    dirs, cv_r2, _ = ridge_directions(latents.double().numpy(), (y + 0.1 * y.std() * torch.randn(300))[:, None].numpy())
    per_layer = torch.from_numpy(dirs[0]).float().reshape(G.num_ws, 16)  # [num_ws, w_dim]
    assert cv_r2[0] > 0.8
    assert torch.allclose(per_layer, per_layer[:1].expand_as(per_layer), atol=1e-5)  # the same in every layer
    assert torch.nn.functional.cosine_similarity(per_layer[0], v, dim=0) > 0.9
    np.save(tmp_path / "w.npy", v.numpy())
    user = load_user_direction(tmp_path / "w.npy", G)
    assert torch.equal(user.reshape(G.num_ws, 16), v.expand(G.num_ws, 16))
    moved = apply_directions(latents[:1], {"attr": torch.from_numpy(dirs[0]).float()}, {"attr": 2.0})
    assert (G.synthesis(moved) - G.synthesis(latents[:1])).abs().max() > 1e-3
