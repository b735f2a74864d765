"""Feature montage: landmark-following bands, feathered blending, harmonisation into the generator, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from render.latent.montage import (BROWS, EYE_BOTTOMS, EYE_TOPS, FEATURES, NOSTRILS, UPPER_LIP_TOP, MontageError,
                            band_bounds, band_weights, compose, feature_fidelity, parse_pick, pick_tag,
                            sample_candidates, similarity, warp)
from sequences.config import Config


@pytest.fixture(scope="module")
def obama(subject_photo):
    from render.faces.align import align_file

    return align_file(subject_photo("obama.jpg"), Config().align)


@pytest.fixture(scope="module")
def G():
    from render.models import load_generator

    return load_generator("embedded")


def test_band_boundaries_fall_between_the_right_landmarks(obama):
    frame, (b1, b2, b3) = band_bounds(obama.landmarks)
    v = frame.to_face(obama.landmarks)[:, 1]  # [68] down the face
    assert v[BROWS].max() < b1 < v[EYE_TOPS].min()  # forehead | eyes: between the brows and the upper lids
    assert v[EYE_BOTTOMS].max() < b2 < v[NOSTRILS].min()  # eyes | nose: below the lower lids, above the nostrils
    assert v[NOSTRILS].max() < b3 < v[UPPER_LIP_TOP].min()  # nose | mouth: between nostrils and upper lip

    w = band_weights(frame, np.array([b1, b2, b3]), obama.image.shape[:2], 0.0)  # [4,S,S], hard
    assert np.allclose(w.sum(0), 1.0) and w.min() >= 0
    owner = lambda i: int(np.argmax(w[:, round(obama.landmarks[i, 1]), round(obama.landmarks[i, 0])]))  # noqa: E731
    assert [owner(19), owner(24)] == [0, 0]  # brow tops: forehead
    assert [owner(37), owner(41), owner(44), owner(46)] == [1, 1, 1, 1]  # eyelids: eyes
    assert [owner(30), owner(33)] == [2, 2]  # nose tip, below the nose: nose
    assert [owner(51), owner(57), owner(8)] == [3, 3, 3]  # lips, chin: mouth


def test_bands_follow_the_face_not_fixed_rows(obama):
    lm = np.asarray(obama.landmarks)
    frame, bounds = band_bounds(lm)
    shifted_frame, shifted = band_bounds(lm + [0.0, 12.0])  # the same face 12 px lower
    assert np.allclose(bounds, shifted)  # same boundaries in the face frame ...
    w0 = band_weights(frame, bounds, (256, 256), 8.0)
    w1 = band_weights(shifted_frame, shifted, (256, 256), 8.0)
    assert np.allclose(w0[:, 40:200], w1[:, 52:212], atol=1e-5)  # ... so 12 rows lower in the image
    # a tilted face gets tilted boundaries: rotate the landmarks 10 degrees about the centre
    t = np.radians(10)
    rot = (lm - 128) @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) + 128
    f2, b2 = band_bounds(rot)
    assert np.allclose(b2, bounds, atol=1e-6)
    assert abs(np.degrees(np.arctan2(f2.u[1], f2.u[0])) - np.degrees(np.arctan2(frame.u[1], frame.u[0])) - 10) < 1e-6


def test_feathered_weights_ramp_and_sum_to_one(obama):
    frame, bounds = band_bounds(obama.landmarks)
    w = band_weights(frame, bounds, (256, 256), 10.0)
    assert np.allclose(w.sum(0), 1.0, atol=1e-6) and w.min() >= -1e-7
    col = w[1, :, 128]  # the eyes' alpha down the middle column: rises 0 -> 1 over ~10 rows, then falls
    ramp = np.flatnonzero((col > 0.01) & (col < 0.99))
    assert 10 <= len(ramp) <= 26  # two ramps, each about feather / cos(tilt) pixels wide


def test_similarity_and_warp_move_points():
    rng = np.random.default_rng(0)
    src = rng.uniform(10, 50, size=(12, 2))
    t = np.radians(7)
    A = 1.1 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    dst = src @ A.T + [3.0, -2.0]
    M = similarity(src, dst)
    assert np.allclose(M[:, :2], A, atol=1e-9) and np.allclose(M[:, 2], [3.0, -2.0], atol=1e-9)
    img = np.zeros((64, 64, 3), np.uint8)
    img[20, 30] = 255  # one bright pixel moves by the shift
    moved = warp(img, np.array([[1.0, 0, 5], [0, 1.0, 3]]))
    assert moved[23, 35].max() == 255 and moved[20, 30].max() == 0


def test_parse_pick():
    assert parse_pick("forehead=3, eyes=7,nose=1,MOUTH=9", 10) == {"forehead": 2, "eyes": 6, "nose": 0, "mouth": 8}
    assert pick_tag({"forehead": 2, "eyes": 6, "nose": 0, "mouth": 8}) == "forehead3-eyes7-nose1-mouth9"
    for bad, words in [("forehead=3,eyes=7,nose=1", "mouth"), ("forehead=0,eyes=1,nose=1,mouth=1", "1..10"),
                       ("chin=2,forehead=3,eyes=7,nose=1,mouth=9", "FEATURE=NUMBER"),
                       ("forehead=x", "not a candidate"),
                       ("forehead=1,forehead=2,eyes=1,nose=1,mouth=1", "forehead is given twice")]:
        with pytest.raises(MontageError, match=words):
            parse_pick(bad, 10)


def test_harmonised_montage_is_on_the_manifold_and_keeps_the_picked_features(G):
    """Manifold: the final LPIPS of projecting the raw composite (the harmonisation itself) is higher than that of
    reconstructing the harmonised face with the same settings. Features: inside each band, the harmonised face is
    closer (LPIPS) to the picked source than to the other candidates, on average over the bands and in most of them."""
    from render.latent.frames import synthesize
    from render.models.lpips import load_lpips
    from render.latent.project import project

    cands = sample_candidates(G, 5, seed=0, truncation_psi=0.8)
    images, lms = [c.image for c in cands], [c.landmarks for c in cands]
    pick = {"forehead": 1, "eyes": 3, "nose": 4, "mouth": 0}
    comp = compose(images, lms, pick, feather=0.25)
    assert comp.image.shape == images[0].shape and comp.weights.shape == (4, 64, 64)
    settings = dict(steps=60, every=20, seed=0, mse_weight=0.5)
    raw = project(G, comp.image, **settings)  # the harmonisation
    face = synthesize(G, raw.final)[0]
    again = project(G, face, **settings)
    assert again.distances[-1] < 0.9 * raw.distances[-1], (again.distances[-1], raw.distances[-1])  # 0.107 vs 0.139

    fid = feature_fidelity(load_lpips("vgg", G.device), face, comp, images, lms, pick)
    closer = [fid[f]["picked"] < fid[f]["others"] for f in FEATURES]
    assert sum(closer) >= 3, fid
    assert np.mean([fid[f]["picked"] for f in FEATURES]) < np.mean([fid[f]["others"] for f in FEATURES]), fid


def test_montage_command_asks_for_a_pick_then_writes_results(tmp_path, capsys):
    import shlex

    from run import main

    out = tmp_path / "m"
    assert main(["--quiet", "montage", "--candidates", "3", "--seed", "5", "--out", str(out), "--steps", "6",
                 "--size", "64"]) == 2  # no tty here
    assert {p.name for p in out.iterdir()} >= {f"grid-{f}.png" for f in FEATURES} | {"index.html", "candidates.npz"}
    # the command it says to run again makes the same candidates in the same folder: the user adds a pick
    printed = capsys.readouterr()
    hint = (printed.out + printed.err).split("run again: ", 1)[1].split(" --pick", 1)[0]
    assert shlex.split(hint) == ["python", "run.py", "montage", "--seed", "5", "--candidates", "3", "--steps", "6",
                                 "--size", "64", "--out", str(out)]
    assert f"<code>{hint} --pick" in (out / "index.html").read_text()
    rc = main([*shlex.split(hint)[2:], "--pick", "forehead=1,eyes=2,nose=3,mouth=1"])
    assert rc == 0
    res = out / "forehead1-eyes2-nose3-mouth1"
    for name in ("composite.png", "harmonised.png", "sheet.png", "harmonise.mp4", "latent.npy", "settings.json"):
        assert (res / name).is_file(), name
    assert "forehead1-eyes2-nose3-mouth1/sheet.png" in (out / "index.html").read_text()
    assert np.load(res / "latent.npy").shape == (1, 2020)


def test_montage_harmonises_in_the_configured_dtype_and_backend(tmp_path, monkeypatch):
    """The harmonising projection ran float32 on the default backend whatever config.toml said (its dtype was
    resolved, and warned of when emulated, then dropped)."""
    import render.latent.project as projection
    from run import main

    runs, project = [], projection.project
    monkeypatch.setattr(projection, "project", lambda G, *a, **k: runs.append((k.get("dtype"), G.backend.name))
                        or project(G, *a, **k))
    config = tmp_path / "config.toml"
    config.write_text('dtype = "bfloat16"\nbackend = "reference"\ncache_dir = ""\n[render]\nupscale = "none"\n')
    pick = "forehead=1,eyes=2,nose=3,mouth=1"
    assert main(["--quiet", "--config", str(config), "montage", "--candidates", "3", "--seed", "5", "--out",
                 str(tmp_path / "m"), "--steps", "3", "--size", "64", "--pick", pick]) == 0
    assert runs == [(torch.bfloat16, "reference")] * 2  # both stages


def test_seam_measure_on_a_synthetic_step_image(obama):
    """A picture whose brightness steps by 40 levels at every band border measures far above the same picture
    without the steps; a picture equal to the samples measures exactly 1."""
    from render.latent.montage import Composite, seam_ratio, seam_rows
    from render.faces.attributes import face_frame

    lm = np.asarray(obama.landmarks)
    frame, bounds = band_bounds(lm)
    comp = Composite(obama.image, lm, np.zeros((4, 256, 256), np.float32), np.zeros((4, 256, 256, 3), np.uint8),
                     bounds)
    ys = np.mgrid[0:256, 0:256][0].astype(np.float64)
    ramp = np.repeat((60 + 0.5 * ys)[..., None], 3, axis=2)  # a gentle gradient, 0.5 levels per row
    vv = (np.mgrid[0:256, 0:256][1] - frame.origin[0]) * frame.v[0] + (ys - frame.origin[1]) * frame.v[1]
    steps = ramp + 40.0 * sum((vv > b) for b in bounds)[..., None]
    smooth, stepped = (np.clip(np.rint(x), 0, 255).astype(np.uint8) for x in (ramp, steps))
    assert seam_ratio(smooth, [smooth], comp) == pytest.approx(1.0)
    assert seam_ratio(stepped, [smooth], comp) > 5
    rows = seam_rows(face_frame(lm), bounds, (256, 256))
    assert rows.any() and not rows[: int(lm[:, 1].min()) - 40].any()  # only near the borders, none up in the hair
    # the same steps spread over ~20 rows: little gradient on the rows by the borders, the whole step across them
    import torch
    from render.latent.degrade import blur
    from render.latent.montage import step_ratio

    soft = blur(torch.from_numpy(steps).permute(2, 0, 1)[None], 5.0)[0].permute(1, 2, 0).numpy()
    soft = np.clip(np.rint(soft), 0, 255).astype(np.uint8)
    assert step_ratio(smooth, [smooth], comp) == pytest.approx(1.0)
    assert seam_ratio(soft, [smooth], comp) < 0.5 * seam_ratio(stepped, [smooth], comp)
    assert step_ratio(soft, [smooth], comp) > 3


def test_reshading_takes_the_steps_out_of_bands_cut_from_differently_lit_faces(obama):
    """Four copies of one face, lit darker and brighter, composed band by band: the composite steps in brightness at
    every border; reshaded, its broad light is the copies' mean (no steps) and what changed is smooth: the fine
    detail is the composite's."""
    import torch
    from render.latent.degrade import blur
    from render.latent.montage import reshade, step_ratio

    face = obama.image.astype(np.float64)
    lit = [np.clip(np.rint(face * k), 0, 255).astype(np.uint8) for k in (0.6, 1.0, 1.3, 0.8)]
    lm = np.asarray(obama.landmarks)
    comp = compose(lit, [lm] * 4, {"forehead": 0, "eyes": 1, "nose": 2, "mouth": 3}, feather=0.25)
    from render.faces.attributes import face_frame

    sigma = 0.1 * face_frame(lm).s
    out = reshade(comp, sigma)
    assert step_ratio(comp.image, [obama.image], comp) > 2
    assert step_ratio(out, [obama.image], comp) < 1.2

    change = torch.from_numpy(out.astype(np.float64) - comp.image).permute(2, 0, 1)[None]  # [1,3,H,W]
    fine = change - blur(change, 1.0)  # what changed at the scale of single pixels
    assert change.abs().mean() > 5 and fine.abs().mean() < 0.05 * change.abs().mean()


def test_harmonisation_lowers_the_seams_and_keeps_the_features(G):
    """On the embedded generator: the coarse-to-fine harmonisation leaves less edge on the band borders than the
    composite has, and less than projecting the composite straight into the layer-wise latent (before #22); each
    band stays closer to its picked candidate than to the others, on average."""
    from render.latent.frames import synthesize
    from render.latent.montage import harmonise, seam_ratio, step_ratio
    from render.latent.project import project
    from render.models.lpips import load_lpips

    cands = sample_candidates(G, 6, seed=0, truncation_psi=0.8)
    images, lms = [c.image for c in cands], [c.landmarks for c in cands]
    pick = {"forehead": 0, "eyes": 1, "nose": 2, "mouth": 3}
    comp = compose(images, lms, pick, feather=0.25)
    face = synthesize(G, harmonise(G, comp, steps=120, every=40, seed=0).final)[0]
    plain = synthesize(G, project(G, comp.image, steps=120, every=40, seed=0).final)[0]
    ratios = [seam_ratio(x, images, comp) for x in (comp.image, plain, face)]
    assert ratios[2] < ratios[0] and ratios[2] < ratios[1], ratios
    assert step_ratio(face, images, comp) < step_ratio(comp.image, images, comp)
    fid = feature_fidelity(load_lpips("vgg", G.device), face, comp, images, lms, pick)
    assert np.mean([fid[f]["picked"] for f in FEATURES]) < np.mean([fid[f]["others"] for f in FEATURES]), fid
