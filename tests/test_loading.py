"""Generator files: the allow-list unpickler refuses code, loads NVIDIA's persistence layout without running its
source; rosinality, TensorFlow-layout and our own format round trips; files written by rosinality's and NVIDIA's
TensorFlow code give their images; clear errors; `run.py models`."""

from __future__ import annotations

import argparse
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from render.models.loading import LoadError, inspect_file, load_generator_file, safe_unpickle, save_generator
from render.models.stylegan2 import StyleGAN2

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stylegan2"
SKIP_PKL = FIXTURES / "tiny_skip.pkl"
ROSINALITY = Path(__file__).resolve().parent / "fixtures" / "rosinality"  # from their code: make_rosinality_fixtures.py
TF = Path(__file__).resolve().parent / "fixtures" / "stylegan2_tf"  # from NVIDIA's TF code: make_tf_fixtures.py
TOL = 1e-4  # as tests/test_stylegan2.py holds us to NVIDIA's numbers


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def G() -> StyleGAN2:
    return load_generator_file(SKIP_PKL)


def images(G, seed: int = 3) -> torch.Tensor:
    with torch.no_grad():
        return G.synthesis(G.sample(2, seed=seed, truncation_psi=0.7))  # [2, 3, 32, 32]


class _Marker:
    """Unpickling this would run `touch <path>` (a stand-in for any command)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Marker(marker)}))
    with pytest.raises(LoadError, match="evil.pkl.*(posix|os)\\.system is not on the allow-list"):
        load_generator_file(bad)
    assert not marker.exists()
    pickle.loads(bad.read_bytes())  # the control: the same bytes do run the command when unpickled naively
    assert marker.exists()


def test_malicious_torch_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"g_ema": _Marker(marker)}, bad)
    with pytest.raises(LoadError, match="evil.pt: refused by torch.load"):
        load_generator_file(bad)
    assert not marker.exists()


def test_persistence_layout_keeps_embedded_source_as_text():
    data = safe_unpickle(SKIP_PKL)
    G_ema = data["G_ema"]
    assert G_ema.class_name == "Generator" and "never be executed" in G_ema.module_src  # it raises if executed
    assert set(G_ema.state["_modules"]) == {"synthesis", "mapping"}


def test_own_format_round_trip(G, tmp_path):
    path = tmp_path / "tiny.uncanny.pt"
    save_generator(G, path)
    G2 = load_generator_file(path)
    assert G2.arch == G.arch
    assert torch.equal(images(G2), images(G))
    assert inspect_file(path)["format"] == "uncanny"


def to_rosinality(G: StyleGAN2) -> dict:
    """Our weights in rosinality/stylegan2-pytorch's Generator layout (with its extra blur-kernel buffers)."""
    sd, g = G.state_dict(), {}
    for i in range(G.arch.mapping_layers):
        g[f"style.{i + 1}.weight"] = sd[f"mapping_network.fc{i}.weight"]
        g[f"style.{i + 1}.bias"] = sd[f"mapping_network.fc{i}.bias"]
    syn = "synthesis_network"
    g["input.input"] = sd[f"{syn}.b4.const"][None]

    def layer(dst, src, noise):
        g[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        g[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        g[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        g[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        g[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        g[f"noises.noise_{noise}"] = sd[f"{src}.noise_const"][None, None]

    def torgb(dst, src):
        g[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        g[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        g[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        g[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        g[f"{dst}.upsample.kernel"] = torch.ones(4, 4)

    layer("conv1", f"{syn}.b4.conv1", 0)
    torgb("to_rgb1", f"{syn}.b4.torgb")
    for k, r in enumerate(G.arch.block_resolutions[1:]):
        layer(f"convs.{2 * k}", f"{syn}.b{r}.conv0", 2 * k + 1)
        g[f"convs.{2 * k}.conv.blur.kernel"] = torch.ones(4, 4)
        layer(f"convs.{2 * k + 1}", f"{syn}.b{r}.conv1", 2 * k + 2)
        torgb(f"to_rgbs.{k}", f"{syn}.b{r}.torgb")
    return {"g_ema": g, "latent_avg": sd["mapping_network.w_avg"]}


def test_rosinality_round_trip(G, tmp_path):
    path = tmp_path / "550000.pt"
    torch.save(to_rosinality(G), path)
    G2 = load_generator_file(path)
    assert inspect_file(path)["format"] == "rosinality"
    assert G2.arch.conv_clamp is None and G2.arch.channel_base == G.arch.channel_base  # rosinality never clamps
    ref = StyleGAN2(G2.arch)
    ref.load_state_dict(G.state_dict())
    assert torch.allclose(images(G2), images(ref.freeze()), atol=1e-6)


def test_rosinality_checkpoint_in_torchs_format_before_1_6(G, tmp_path):
    """Early rosinality checkpoints (and any file saved with _use_new_zipfile_serialization=False) are a run of
    pickles opening with torch's magic number, not a zip: they are PyTorch files, read by torch.load."""
    path = tmp_path / "550000.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.save(to_rosinality(G), path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02"  # starts like a pickle
    assert inspect_file(path)["format"] == "rosinality"
    G2 = load_generator_file(path)
    ref = StyleGAN2(G2.arch)
    ref.load_state_dict(G.state_dict())
    assert torch.allclose(images(G2), images(ref.freeze()), atol=1e-6)
    evil = tmp_path / "evil.pt"  # and the legacy reader refuses code as the zip reader does
    torch.save({"g_ema": _Marker(tmp_path / "pwned")}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(LoadError, match="evil.pt: refused by torch.load.*names (posix|os).system"):
        load_generator_file(evil)
    assert not (tmp_path / "pwned").exists()


def test_rosinality_checkpoint_matches_their_generator():
    """A checkpoint written by rosinality's own Generator gives their images, truncated with their latent_avg."""
    exp = torch.load(ROSINALITY / "expected.pt", weights_only=True)
    G = load_generator_file(ROSINALITY / "tiny16.pt")
    assert inspect_file(ROSINALITY / "tiny16.pt")["format"] == "rosinality"
    with torch.no_grad():
        ws = G.mapping(exp["z"], truncation_psi=0.7)  # [2, num_ws * w_dim]
        assert (ws.reshape(exp["ws_0.7"].shape) - exp["ws_0.7"]).abs().max() < TOL
        assert (G.synthesis(ws) - exp["img_0.7"]).abs().max() < TOL  # [2, 3, 16, 16]
        assert (G(exp["z"]) - exp["img_1.0"]).abs().max() < TOL


def test_rosinality_checkpoint_without_latent_avg_still_matches_untruncated(tmp_path):
    """Their train.py saves no latent_avg but its argparse options: w_avg is estimated, the options are read as the
    plain attribute bag they are, and the untruncated images are theirs."""
    import argparse

    exp = torch.load(ROSINALITY / "expected.pt", weights_only=True)
    ckpt = torch.load(ROSINALITY / "tiny16.pt", weights_only=True)
    path = tmp_path / "000100.pt"
    torch.save({"g_ema": ckpt["g_ema"], "args": argparse.Namespace(size=16, latent=16, n_mlp=2)}, path)
    G = load_generator_file(path)
    with torch.no_grad():
        assert (G(exp["z"]) - exp["img_1.0"]).abs().max() < TOL
        assert (G.mapping_network.w_avg - ckpt["latent_avg"]).abs().max() < 0.1  # 10000 samples against 4096


def test_tf_pickle_written_by_nvidias_code_matches_their_images():
    """A (G, D, Gs) pickle written by NVlabs/stylegan2's own dnnlib.tflib gives their Gs.run images."""
    exp = {k: torch.from_numpy(v) for k, v in np.load(TF / "expected.npz").items()}
    G = load_generator_file(TF / "tiny_skip.pkl")
    assert inspect_file(TF / "tiny_skip.pkl")["format"] == "nvidia-tf"
    with torch.no_grad():
        ws = G.mapping(exp["z"], truncation_psi=0.7)  # [2, num_ws * w_dim]
        assert (ws.reshape(exp["ws_0.7"].shape) - exp["ws_0.7"]).abs().max() < TOL
        assert (G.synthesis(ws) - exp["img_0.7"]).abs().max() < TOL  # [2, 3, 16, 16]
        assert (G(exp["z"]) - exp["img_1.0"]).abs().max() < TOL


def test_tf_layout_round_trip(G, tmp_path):
    """A TensorFlow-layout pickle (stub classes under NVIDIA's names, numpy variables) loads to the same network."""
    path = tmp_path / "stylegan2-tiny-config-f.pkl"
    path.write_bytes(tf_pickle(G))
    G2 = load_generator_file(path)
    assert inspect_file(path)["format"] == "nvidia-tf"
    ref = StyleGAN2(G2.arch)
    ref.load_state_dict(G.state_dict())
    assert torch.allclose(images(G2), images(ref.freeze()), atol=1e-5)


def tf_pickle(G: StyleGAN2) -> bytes:
    """(G, D, Gs) as dnnlib.tflib.network.Network states, variables named and laid out as in NVlabs/stylegan2."""
    import sys
    import types

    sd = {k: v.numpy() for k, v in G.state_dict().items()}
    conv = lambda w, flip: (w.transpose(2, 3, 1, 0)[::-1, ::-1] if flip else w.transpose(2, 3, 1, 0)).copy()  # noqa
    mapping = [(f"Dense{i}/weight", sd[f"mapping_network.fc{i}.weight"].T.copy()) for i in range(2)]
    mapping += [(f"Dense{i}/bias", sd[f"mapping_network.fc{i}.bias"]) for i in range(2)]
    syn = []
    for r in G.arch.block_resolutions:
        p, s = f"synthesis_network.b{r}", f"{r}x{r}"
        layers = [("conv1", "Conv", False, 0)] if r == 4 else [
            ("conv0", "Conv0_up", True, int(np.log2(r)) * 2 - 5), ("conv1", "Conv1", False, int(np.log2(r)) * 2 - 4)]
        for ours, tf, flip, n in layers:
            syn += [(f"{s}/{tf}/weight", conv(sd[f"{p}.{ours}.weight"], flip)),
                    (f"{s}/{tf}/bias", sd[f"{p}.{ours}.bias"]),
                    (f"{s}/{tf}/noise_strength", sd[f"{p}.{ours}.noise_strength"]),
                    (f"{s}/{tf}/mod_weight", sd[f"{p}.{ours}.affine.weight"].T.copy()),
                    (f"{s}/{tf}/mod_bias", sd[f"{p}.{ours}.affine.bias"] - 1),
                    (f"noise{n}", sd[f"{p}.{ours}.noise_const"][None, None])]
        syn += [(f"{s}/ToRGB/weight", conv(sd[f"{p}.torgb.weight"], False)), (f"{s}/ToRGB/bias", sd[f"{p}.torgb.bias"]),
                (f"{s}/ToRGB/mod_weight", sd[f"{p}.torgb.affine.weight"].T.copy()),
                (f"{s}/ToRGB/mod_bias", sd[f"{p}.torgb.affine.bias"] - 1)]
    syn.append(("4x4/Const/const", sd["synthesis_network.b4.const"][None]))

    module = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __init__(self, state):
            self.state = state

        def __getstate__(self):
            return self.state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    module.Network = Network
    names = ["dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"]
    sys.modules.update({n: module for n in names})
    try:
        kw = {"resolution": 32, "latent_size": 16, "dlatent_size": 16, "fmap_base": 128, "fmap_max": 16,
              "mapping_layers": 2, "architecture": "skip", "conv_clamp": 256.0}
        net = lambda name, variables, comps: Network(  # noqa: E731
            {"version": 4, "name": name, "static_kwargs": kw, "components": comps, "build_module_src": "raise 1",
             "build_func_name": "G_main", "variables": variables})
        Gs = net("G", [("dlatent_avg", sd["mapping_network.w_avg"])],
                 {"mapping": net("G_mapping", mapping, {}), "synthesis": net("G_synthesis", syn, {})})
        return pickle.dumps((Gs, Gs, Gs), protocol=2)
    finally:
        for n in names:
            del sys.modules[n]


@pytest.mark.parametrize("content, message", [
    (b"GIF89a not a model", "unknown format"),
    (pickle.dumps({"hello": 1}), "neither an NVIDIA"),
])
def test_unknown_formats_get_one_clear_line(tmp_path, content, message):
    path = tmp_path / "mystery.bin"
    path.write_bytes(content)
    with pytest.raises(LoadError, match=message) as err:
        load_generator_file(path)
    assert "mystery.bin" in str(err.value) and "\n" not in str(err.value)


def test_torch_file_that_is_not_a_generator(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2)}}, path)
    with pytest.raises(LoadError, match="weights.pt: a PyTorch file, but not a generator"):
        load_generator_file(path)
    with pytest.raises(LoadError, match="no such file"):
        load_generator_file(tmp_path / "absent.pkl")


def test_load_generator_dispatches_paths():
    from render.models import load_generator

    G = load_generator(str(SKIP_PKL), "cpu")
    assert isinstance(G, StyleGAN2) and not any(p.requires_grad for p in G.parameters())


def test_models_command(tmp_path, capsys):
    from render.commands.models import register

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    register(parser.add_subparsers())
    args = parser.parse_args(["models", "inspect", str(SKIP_PKL)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "nvidia-stylegan2" in out and "8 x 16 (w0..w7)" in out and "32" in out

    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04junk")
    args = parser.parse_args(["models", "inspect", str(junk)])
    assert args.func(args) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith(str(junk)) and len(out.splitlines()) == 1
