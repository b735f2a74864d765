"""Text-steered faces with a tiny, randomly initialised open_clip model loaded through the real loading path.

The model is built from a small model config (ViT width 64, 2 layers, 32 px; text context 77 with the real BPE
tokenizer), saved as a state-dict checkpoint and loaded by `load_clip` exactly as a user's ViT-B-32 would be.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import run
from render.commands import text as text_cli
from render.latent.clip_text import (HOW_TO, ClipUnavailable, best_of, load_clip, match_vocabulary, similarity, slug,
                                     steer, views)
from render.models import load_generator
from render.models.stylegan2 import StyleGAN2, StyleGAN2Arch

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PROMPT = "a smiling old man with round glasses"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(model-config .json, checkpoint .pt, the saved state dict) of a random tiny CLIP."""
    folder = tmp_path_factory.mktemp("clip")
    config = folder / "Tiny-Clip.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    state = open_clip.create_model("Tiny-Clip").state_dict()
    torch.save(state, folder / "tiny.pt")
    return config, folder / "tiny.pt", state


@pytest.fixture(scope="module")
def clip(tiny):
    return load_clip(str(tiny[0]), str(tiny[1]), "cpu")


@pytest.fixture(scope="module")
def G():
    return load_generator("embedded")


def test_load_clip_takes_the_checkpoint_and_the_real_plumbing(tiny, clip):
    _, _, saved = tiny
    loaded = clip.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert not any(p.requires_grad for p in clip.model.parameters()) and not clip.model.training
    assert clip.image_size == (32, 32)
    assert torch.equal(clip.tokenizer([PROMPT]), open_clip.tokenize([PROMPT]))  # the real BPE tokenizer
    assert torch.allclose(clip.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    assert torch.allclose(clip.std.flatten(), torch.tensor(open_clip.OPENAI_DATASET_STD))


def test_image_path_matches_open_clips_own_preprocessing(tiny, clip):
    """Our differentiable tensor path gives the embedding that open_clip's PIL pipeline gives."""
    _, _, preprocess = open_clip.create_model_and_transforms("Tiny-Clip")
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = clip.model.encode_image(preprocess(Image.fromarray(img))[None])  # [1, E]
    ref = torch.nn.functional.normalize(ref, dim=-1)
    ours = clip.encode_image(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_low_precision_clip_agrees_with_float32(tiny, clip, monkeypatch, caplog):
    from render.kernels import device

    monkeypatch.setattr(device, "_warned_emulated", [])
    monkeypatch.setattr(device, "fast_bf16", lambda d: False)  # a CPU that emulates bf16: said once, not silently
    with caplog.at_level("WARNING", logger="render.kernels.device"):
        half = load_clip(str(tiny[0]), str(tiny[1]), "cpu", precision="bfloat16")  # float16 on CPU also becomes this
    assert "[clip] precision = bfloat16: this CPU has no native bfloat16" in caplog.text
    img = torch.rand(2, 3, 48, 48) * 2 - 1
    assert half.dtype == torch.bfloat16
    assert (half.encode_image(img) * clip.encode_image(img)).sum(-1).min() > 0.98


def test_gradients_reach_the_image(clip):
    img = torch.rand(1, 3, 64, 64, requires_grad=True)
    text = clip.encode_text([PROMPT])
    sim = (clip.encode_image(views(img * 2 - 1, 3, gen=torch.Generator().manual_seed(1))) @ text.T).mean()
    sim.backward()
    assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_views_without_augmentation_at_full_scale_are_the_image():
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.allclose(views(img, 2, scale=1.0, augment=False), img.expand(2, -1, -1, -1), atol=1e-5)
    aug = views(img, 4, scale=0.6, augment=True, gen=torch.Generator().manual_seed(0))
    assert aug.shape == (4, 3, 16, 16) and not torch.allclose(aug[0], aug[1])


def test_steering_raises_clip_similarity(G, clip):
    text = clip.encode_text([PROMPT])
    start, sims = best_of(G, clip, text, candidates=4, seed=3)
    assert similarity(G, clip, text, start)[0] == pytest.approx(sims.max(), abs=1e-5)
    run = steer(G, clip, text, start=start, steps=16, every=4, lr=0.1, crops=2, seed=0)
    assert run.latents.shape == (5, G.layout.dim) and list(run.steps) == [0, 4, 8, 12, 16]
    assert torch.equal(run.latents[0], start[0])
    before, after = similarity(G, clip, text, run.latents[[0, -1]])
    assert after > before + 0.02, (before, after)


def test_single_space_moves_only_z_of_the_embedded_generator(G, clip):
    start = G.sample(1, 0, 0.7)
    run = steer(G, clip, clip.encode_text([PROMPT]), start=start, steps=2, every=1, crops=1, space="single")
    moved = (run.final - start)[0]
    assert moved[: G.z_dim].abs().max() > 0 and torch.equal(moved[G.z_dim :], torch.zeros(G.layout.dim - G.z_dim))


@pytest.fixture(scope="module")
def tiny_sg2():
    torch.manual_seed(5)
    G = StyleGAN2(StyleGAN2Arch(resolution=32, z_dim=16, w_dim=16, channel_base=256, channel_max=16,
                                mapping_layers=2, name="tiny-sg2"))
    return G.freeze()


@pytest.mark.parametrize("space", ["plus", "single"])
def test_steering_a_stylegan2(tiny_sg2, clip, space):
    G, text = tiny_sg2, clip.encode_text([PROMPT])
    start, _ = best_of(G, clip, text, candidates=4, seed=1)
    run = steer(G, clip, text, start=start, steps=20, every=10, lr=0.1, crops=2, space=space)
    before, after = similarity(G, clip, text, run.latents[[0, -1]])
    assert after > before + 0.02, (before, after)
    moves = (run.final - start).reshape(G.num_ws, G.w_dim)  # [num_ws, w_dim]
    assert torch.allclose(moves, moves[:1].expand_as(moves)) == (space == "single")


def test_missing_clip_says_how_to_provide_one(tmp_path):
    with pytest.raises(ClipUnavailable, match=re.escape(HOW_TO)):
        load_clip("", "")
    assert "[clip] model" in HOW_TO and "--clip-checkpoint" in HOW_TO and "\n" not in HOW_TO
    with pytest.raises(ClipUnavailable, match=r"\[clip\] checkpoint is not set \(model 'ViT-B-32'\)"):
        load_clip("ViT-B-32", "")  # not "no CLIP model configured": one is
    with pytest.raises(ClipUnavailable, match=r"\[clip\] model is not set"):
        load_clip("", __file__)
    with pytest.raises(ClipUnavailable, match="not found"):  # a tag such as "openai" is never downloaded
        load_clip("ViT-B-32", "openai")
    with pytest.raises(ClipUnavailable, match="not an open_clip architecture"):
        load_clip("No-Such-Net", __file__)
    with pytest.raises(ClipUnavailable, match="hub"):
        load_clip("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", __file__)


class Payload:
    def __reduce__(self):  # unpickling this with code execution would call print
        return (print, ("pwned",))


def test_code_in_a_checkpoint_is_refused(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": Payload()}, bad)
    with pytest.raises(ClipUnavailable, match="bad.pt: cannot load"):
        load_clip(str(tiny[0]), str(bad))
    assert "pwned" not in capsys.readouterr().out


def test_vocabulary_matching():
    vocab = {"smiling": ("smile", 1.5), "open mouth": ("mouth_open", 1.0), "mouth": ("mouth_width", 9.0),
             "looking left": ("yaw", -1.5)}
    assert match_vocabulary("A Smiling man, open-mouth, looking left!", vocab) == \
        {"smile": 1.5, "mouth_open": 1.0, "yaw": -1.5}  # "mouth" inside "open mouth" does not count again
    assert match_vocabulary("not smiling", vocab) == {"smile": -1.5}
    assert match_vocabulary("an astronaut", vocab) == {}
    assert slug("A smiling old man, with round glasses!") == "a-smiling-old-man-with-round-glasses"
    # an edit and its opposite, two prompts in other scripts: each its own folder
    assert slug("smile+1.5 yaw-0.5") == "smile+1.5-yaw-0.5" != slug("smile-1.5 yaw+0.5")
    chinese, russian = "\u5fae\u7b11\u7684\u8001\u4eba", "\u0436\u0435\u043d\u0449\u0438\u043d\u0430"
    assert slug(chinese) == chinese and slug(russian) == russian
    assert slug("../../etc/passwd") == "etc-passwd" and slug("!!!") == "face"
    assert slug(chinese * 30) == chinese * 4  # 60 bytes at most: three for each of these characters


# ------------------------------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working folder shared by the command tests, so the edits share one projection cache (.cache/ in it)."""
    return tmp_path_factory.mktemp("work")


@pytest.fixture
def fake_directions(G, monkeypatch, workdir):
    """Stand-in for fitted directions: random unit-spread directions for the names the vocabulary uses."""
    gen = torch.Generator().manual_seed(5)
    dirs = {name: torch.randn(G.layout.dim, generator=gen) * 0.5 for name in ("smile", "yaw", "mouth_open")}
    monkeypatch.setattr(text_cli, "_directions", lambda G, cfg, args: dirs)
    monkeypatch.chdir(workdir)
    return dirs


def test_text_without_clip_maps_the_prompt_onto_the_vocabulary(tmp_path, fake_directions, capsys):
    out = tmp_path / "text"
    assert run.main(["text", "a smiling face", "--steps", "6", "--every", "2", "--size", "64", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no CLIP model configured" in err and "mapped onto the edit-direction vocabulary: smile +1.5" in err
    info = json.loads((out / "settings.json").read_text())
    assert info["mode"] == "vocabulary" and info["directions"] == {"smile": 1.5} and info["frames"] == 4
    face, start = np.asarray(Image.open(out / "face.png")), np.asarray(Image.open(out / "start.png"))
    assert face.shape == (64, 64, 3) and np.abs(face.astype(int) - start).mean() > 1
    assert run.main(["text", "an astronaut", "--out", str(tmp_path / "none")]) == 2  # nothing to map it onto
    assert "contains none of it" in capsys.readouterr().err


def test_missing_directions_name_the_command_that_fits_them_with_the_same_settings(tmp_path, workdir, monkeypatch,
                                                                                  capsys):
    """The hint names --config: `run.py directions` alone would fit them into the default cache_dir, not this one."""
    monkeypatch.chdir(workdir)
    settings = tmp_path / "my settings.toml"
    settings.write_text(f'[directions]\ncache_dir = "{tmp_path / "dirs"}"\n')
    code = run.main(["--config", str(settings), "text", "a smiling face", "--steps", "2", "--every", "1", "--size",
                     "64", "--out", str(tmp_path / "t")])
    assert code == 2
    assert f"run `python run.py directions --config '{settings}'` first" in capsys.readouterr().err


def test_text_with_clip_writes_face_video_and_settings(tmp_path, tiny):
    out = tmp_path / "text"
    code = run.main(["--quiet", "text", PROMPT, "--clip-model", str(tiny[0]), "--clip-checkpoint", str(tiny[1]),
                     "--steps", "4", "--every", "2", "--candidates", "2", "--crops", "2", "--size", "96",
                     "--out", str(out)])
    assert code == 0
    info = json.loads((out / "settings.json").read_text())
    assert info["mode"] == "clip" and info["frames"] == 3 and len(info["similarity_per_step"]) == 4
    assert info["clip"]["steps"] == 4 and info["args"]["prompt"] == PROMPT
    assert np.asarray(Image.open(out / "face.png")).shape == (96, 96, 3)
    assert np.load(out / "latent.npy").shape == (1, 2020)
    assert (out / "optimisation.mp4").stat().st_size > 0 and (out / "config.toml").exists()


def test_edit_by_text_and_direction(tmp_path, tiny, fake_directions, subject_photo):
    out = tmp_path / "edit"
    code = run.main(["--quiet", "edit", str(subject_photo("astronaut.png")), "with round glasses", "--smile", "1",
                     "--clip-model", str(tiny[0]), "--clip-checkpoint", str(tiny[1]), "--steps", "3", "--every",
                     "1", "--crops", "2", "--project-steps", "8", "--size", "64", "--fps", "4", "--out", str(out)])
    assert code == 0
    info = json.loads((out / "settings.json").read_text())
    assert info["mode"] == "clip" and info["directions"] == {"smile": 1.0}
    assert set(info["identity_distance"]) == {"photo_before", "photo_after", "before_after"}
    assert info["frames"] == 2 * (1 + 3 + 3) - 2  # before, 3 eased direction frames, 3 steps; and back
    z = np.load(out / "latents.npz")
    assert not np.allclose(z["before"], z["after"])
    assert np.asarray(Image.open(out / "compare.png")).shape == (64, 3 * 64 + 2 * 2, 3)


def test_edit_without_clip_uses_vocabulary_and_user_direction(tmp_path, G, fake_directions, subject_photo, capsys):
    user = tmp_path / "mine.npy"
    np.save(user, np.ones(G.layout.dim, np.float32) * 0.1)
    out = tmp_path / "edit"
    code = run.main(["edit", str(subject_photo("astronaut.png")), "looking left", "--strength", "2",
                     "--directions-file", str(user), "--project-steps", "8", "--size", "64", "--fps", "4",
                     "--out", str(out)])
    assert code == 0
    assert "mapped onto the edit-direction vocabulary: yaw -3" in capsys.readouterr().err
    info = json.loads((out / "settings.json").read_text())
    assert info["mode"] == "directions" and info["directions"] == {"yaw": -3.0, "mine": 2.0}
    z = np.load(out / "latents.npz")
    expected = z["before"] - 3.0 * fake_directions["yaw"].numpy() + 2.0 * 0.1
    assert np.allclose(z["after"], expected, atol=1e-5)


def test_an_unknown_direction_is_refused_before_the_photo_is_projected(tmp_path, fake_directions, subject_photo,
                                                                        capsys, monkeypatch):
    from render.pipeline import cache

    monkeypatch.setattr(cache, "project_photo", lambda *a, **k: pytest.fail("projected before the names were checked"))
    code = run.main(["edit", str(subject_photo("astronaut.png")), "--direction", "smile=1", "--direction", "bogus=2",
                     "--out", str(tmp_path / "edit")])
    assert code == 2 and "unknown direction 'bogus' (known: " in capsys.readouterr().err


def test_steering_a_stylegan2_in_bfloat16(tiny_sg2, clip):
    """dtype = "auto" is bf16 on AMX CPUs: the generator runs on its bf16 copy, the latents stay float32."""
    G, text = tiny_sg2, clip.encode_text([PROMPT])
    run = steer(G, clip, text, steps=4, every=2, lr=0.1, crops=2, dtype=torch.bfloat16)
    assert run.latents.dtype == torch.float32 and run.latents.shape == (3, G.layout.dim)
    assert np.isfinite(run.similarity).all() and not torch.equal(run.latents[0], run.latents[-1])


def test_a_clip_asked_for_that_cannot_load_stops_the_command(tmp_path, capsys):
    """Named by --clip-model/--clip-checkpoint (or set in config.toml) and unloadable: before, a warning with
    torch's "101", then a face made without CLIP whose settings.json named the CLIP; now one line, exit status 2."""
    text_file = tmp_path / "weights.bin"
    text_file.write_text("hello\n")
    out = tmp_path / "text"
    code = run.main(["text", "smiling", "--clip-model", "ViT-B-32", "--clip-checkpoint", str(text_file),
                     "--steps", "2", "--size", "64", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "weights.bin: cannot load as an open_clip ViT-B-32 checkpoint: not a weights file torch " \
                          "can read (KeyError" in err, err
    assert "Traceback" not in err and not (out / "face.png").exists() and not (out / "settings.json").exists()


@pytest.mark.parametrize("flags, words", [
    (["--smile", "nan"], "smile nan: an amount is a number from -100 to 100"),
    (["--direction", "yaw=1e30"], "yaw 1e+30: an amount is a number from -100 to 100"),
    (["--smile", "1", "--direction", "smile=-1"], "--direction 'smile=-1': smile is given twice"),
])
def test_edit_amounts_are_numbers_given_once(flags, words, tmp_path, subject_photo, capsys, monkeypatch):
    """`--smile nan` drew a black face and exited 0; two amounts for one direction silently kept one."""
    from render.pipeline import cache

    monkeypatch.setattr(cache, "project_photo", lambda *a, **k: pytest.fail("projected before the refusal"))
    assert run.main(["edit", str(subject_photo("astronaut.png")), *flags, "--out", str(tmp_path / "e")]) == 2
    assert words in capsys.readouterr().err
