"""Generator files built to hurt: memory bombs, shared references, state set on the loader's own classes, terminal
escapes, damaged archives. Each must end in one LoadError line naming the file, quickly, with nothing executed."""

from __future__ import annotations

import argparse
import collections
import io
import pickletools
import pickle
import re
import sys
import types
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from render.models import loading
from render.models.loading import checks
from render.models.loading import LoadError, load_generator_file, safe_unpickle, save_generator
from tests.test_loading import SKIP_PKL, _Marker
from tests.test_stylegan2 import tiny


@pytest.fixture
def nvidia_module(monkeypatch):
    """A stand-in `torch_utils.persistence._reconstruct_persistent_obj`, so pickle can name it when we write files."""
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called when loading")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return _reconstruct_persistent_obj


class Persisted:
    def __init__(self, fn, state: dict):
        self.fn, self.state = fn, state

    def __reduce__(self):
        return self.fn, ({"type": "class", "class_name": "Generator", "module_src": "", "state": self.state},)


class Storage:
    def __init__(self, n: int):
        buf = io.BytesIO()
        with warnings.catch_warnings():  # TypedStorage is deprecated, but it is what NVIDIA's pickles hold
            warnings.simplefilter("ignore", UserWarning)
            torch.save(torch.zeros(n).storage(), buf)
        self.raw = buf.getvalue()

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.raw,)


class Tensor:
    def __init__(self, storage: Storage, size: tuple, stride: tuple, offset: int = 0):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


def dump(tmp_path: Path, obj, name: str = "evil.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


@pytest.mark.parametrize("size, stride, offset, words", [
    ((1000,), (1,), 0, "reaches element 1000 of a storage of 4"),  # torch would grow the storage to fit
    ((2, 2), (2, 1), 1, "reaches element 5"),
    ((2**29,), (0,), 0, "elements"),  # a few bytes that become 2 GiB once copied
    ((4,), (-1,), 0, "bad size"),
])
def test_a_tensor_must_fit_its_storage(tmp_path, size, stride, offset, words):
    path = dump(tmp_path, {"G_ema": Tensor(Storage(4), size, stride, offset)})
    with pytest.raises(LoadError, match=words):
        safe_unpickle(path)


def test_the_copy_budget_covers_the_whole_network(tmp_path, nvidia_module, monkeypatch):
    monkeypatch.setattr(checks, "MAX_TOTAL_ELEMENTS", 100)
    views = {f"w{i}": Tensor(Storage(1), (60,), (0,)) for i in range(2)}  # 120 values from 2 stored
    path = dump(tmp_path, {"G_ema": Persisted(nvidia_module, {"_parameters": views, "_modules": {}})})
    with pytest.raises(LoadError, match="evil.pkl: the network's tensors hold 120 values"):
        load_generator_file(path)


def test_shared_references_cost_their_size_not_two_to_the_depth(tmp_path, nvidia_module):
    dag: list = []
    for _ in range(40):
        dag = [dag, dag]  # 2**40 paths through 40 lists
    sub = Persisted(nvidia_module, {"_modules": {}})
    state = {"_init_kwargs": {"x": dag}, "_modules": {"synthesis": sub, "mapping": sub}}
    path = dump(tmp_path, {"G_ema": Persisted(nvidia_module, state)})
    with pytest.raises(LoadError, match="evil.pkl: module 'mapping' appears twice"):
        load_generator_file(path)
    converted = loading.plain(dag)  # returns at once
    assert converted[0] is converted[1]  # one conversion per list, sharing kept


def test_build_cannot_change_the_loaders_own_classes(tmp_path):
    evil = (b"\x80\x04ctorch_utils.persistence\n_reconstruct_persistent_obj\n"  # the Persistent class itself
            b"N}X\x05\x00\x00\x00owned\x88s\x86b.")  # BUILD (None, {"owned": True}): setattr on the class
    path = tmp_path / "evil.pkl"
    path.write_bytes(evil)
    with pytest.raises(LoadError, match="BUILD on a type is not allowed"):
        safe_unpickle(path)
    assert not hasattr(loading.Persistent, "owned")


def test_names_from_the_file_cannot_reach_the_terminal_as_escapes(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x04c\x1b[2Jos\nsystem\n.")  # a module name that clears the screen
    with pytest.raises(LoadError) as e:
        load_generator_file(path)
    assert "\x1b" not in str(e.value) and "\\x1b[2Jos.system is not on the allow-list" in str(e.value)


def test_a_refused_torch_file_names_what_it_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _Marker(tmp_path / "pwned")}, path)
    with pytest.raises(LoadError, match="evil.pt: refused by torch.load.*names (posix|os).system, which is not"):
        load_generator_file(path)


def test_damaged_archives_and_folders_say_so(tmp_path):
    good = tmp_path / "g.uncanny.pt"
    save_generator(tiny(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(LoadError, match="cut.pt: truncated or damaged"):
        load_generator_file(cut)
    with pytest.raises(LoadError, match="is a folder"):
        load_generator_file(tmp_path)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * 200_000_000)  # 200 MB from about 200 KB
    with pytest.raises(LoadError, match="bomb.pt: a zip archive that unpacks to 200000000 bytes"):
        load_generator_file(bomb)


@pytest.mark.parametrize("arch, words", [({"resolution": 2**20}, "resolution = 1048576 is outside 4..2048"),
                                         ({"channel_max": 10**6}, "channel_max"), ({"w_dim": 0}, "w_dim")])
def test_sizes_no_generator_has_are_refused_before_building(tmp_path, arch, words):
    path = tmp_path / "big.uncanny.pt"
    save_generator(tiny(), path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["arch"].update(arch)
    torch.save(ckpt, path)
    with pytest.raises(LoadError, match=f"big.uncanny.pt: {words}"):
        load_generator_file(path)


def test_whatever_a_malformed_file_raises_is_one_line(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"g_ema": {"input.input": torch.zeros(1, 4, 4, 4), "style.1.weight": torch.zeros(3)}}, path)
    with pytest.raises(LoadError, match="odd.pt: not a usable generator file \\(ValueError"):
        load_generator_file(path)


def test_models_inspect_reports_every_file(tmp_path, capsys):
    from render.commands.models import register

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    register(parser.add_subparsers())
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04junk")
    args = parser.parse_args(["models", "inspect", str(junk), str(SKIP_PKL)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert out.startswith(str(junk)) and "nvidia-stylegan2" in out


# --- second audit ------------------------------------------------------------------------------------------------


def dag_key_pickle(depth: int) -> bytes:
    """{t: 1} where t = (t', t') built `depth` times over one memoised tuple: 2**depth elements to hash."""
    return b"\x80\x02}q\x00N" + b"q\x01h\x01\x86" * depth + b"K\x01s."


def with_data_pkl(src: Path, dst: Path, data_pkl: bytes) -> Path:
    """A copy of the torch archive `src` whose data.pkl is replaced."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, data_pkl if info.filename.endswith("data.pkl") else zin.read(info))
    return dst


class RawStorage:
    def __init__(self, raw: bytes):
        self.raw = raw

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.raw,)


def legacy_storage_with(sys_info: bytes) -> bytes:
    """A storage as torch.save writes it inside NVIDIA pickles (legacy format), its third pickle replaced."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.save(torch.zeros(4).storage(), buf, _use_new_zipfile_serialization=False)
    buf.seek(0)
    ends = []
    for _ in range(3):  # magic number, protocol version, sys_info
        for _ in pickletools.genops(buf):
            pass
        ends.append(buf.tell())
    raw = buf.getvalue()
    return raw[: ends[1]] + sys_info + raw[ends[2] :]


@pytest.mark.parametrize("kind", ["pkl", "pt", "storage in a pkl"])
def test_tuples_built_from_one_shared_tuple_are_refused_before_they_are_hashed(tmp_path, kind):
    dag = dag_key_pickle(20)  # hashes in a moment; 40 would take days, here and inside torch.load
    if kind == "pkl":
        path = tmp_path / "evil.pkl"
        path.write_bytes(dag)
    elif kind == "pt":
        torch.save({"g_ema": {}}, tmp_path / "ok.pt")
        path = with_data_pkl(tmp_path / "ok.pt", tmp_path / "evil.pt", dag)
    else:
        path = dump(tmp_path, {"G_ema": RawStorage(legacy_storage_with(dag))})
        assert isinstance(torch.load(io.BytesIO(legacy_storage_with(pickle.dumps({}, protocol=2))), weights_only=True),
                          torch.storage.TypedStorage)  # the control: the construction is a storage torch reads
    with pytest.raises(LoadError, match="evil.(pkl|pt): a tuple of 2046 elements in a pickle"):
        load_generator_file(path)


def test_a_huge_integer_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": 1 << 100_000}))  # LONG4; hashing it costs its length, every time
    with pytest.raises(LoadError, match="evil.pkl: an integer of more than 2040 bits"):
        load_generator_file(path)


def test_a_storage_inside_a_pickle_cannot_be_a_zip_bomb(tmp_path):
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * 100_000_000)  # 100 MB from about 100 KB
    path = dump(tmp_path, {"G_ema": RawStorage(bomb.getvalue())})
    with pytest.raises(LoadError, match="evil.pkl: a zip archive that unpacks to 100000000 bytes"):
        load_generator_file(path)


class Network:
    """dnnlib.tflib.network.Network, as far as pickling goes."""

    def __init__(self, **state):
        self.state = {"version": 4, "static_kwargs": {}, "components": {}, "variables": [], **state}

    def __getstate__(self):
        return self.state


@pytest.mark.parametrize("what", ["components", "variable"])
def test_tf_networks_are_trees_of_arrays(tmp_path, monkeypatch, what):
    module = types.ModuleType("dnnlib.tflib.network")
    module.Network = Network
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(Network, "__module__", "dnnlib.tflib.network")
    net, dag = Network(), []
    for _ in range(16):
        net, dag = Network(components={"a": net, "b": net}), [dag, dag]  # 2**16 paths through 16 networks
    Gs = net if what == "components" else Network(variables=[("dlatent_avg", dag)])
    path = dump(tmp_path, (Gs, Gs, Gs))
    words = "component '(a/)+b' appears twice" if what == "components" else "variable 'dlatent_avg' is a list"
    with pytest.raises(LoadError, match=f"evil.pkl: TensorFlow {words}"):
        load_generator_file(path)


def test_values_from_the_file_are_cut_short_in_messages(tmp_path, nvidia_module):
    dag: list = []
    for _ in range(20):
        dag = [dag, dag]  # its repr() is 2**20 times "[]"
    state = {"_init_kwargs": {"z_dim": 8, "w_dim": 8, "img_resolution": 16, "activation": dag}, "_modules": {
        "synthesis": Persisted(nvidia_module, {"_modules": {"b4": Persisted(nvidia_module, {})}})}}
    path = dump(tmp_path, {"G_ema": Persisted(nvidia_module, state)})
    with pytest.raises(LoadError, match="evil.pkl: unsupported synthesis option activation=") as e:
        load_generator_file(path)
    assert len(str(e.value)) < 500


def test_persistent_objects_and_torch_values_take_only_what_torch_writes(tmp_path, nvidia_module):
    assert safe_unpickle(dump(tmp_path, [torch.device("cuda", 1), torch.device("cpu"), torch.Size([2, 3])])) == [
        "cuda:1", "cpu", (2, 3)]
    bad = Persisted(nvidia_module, {})
    bad.__reduce__ = lambda: (nvidia_module, ({"type": "class", "class_name": [[], []], "state": {}},))
    with pytest.raises(LoadError, match="malformed persistent object"):
        safe_unpickle(dump(tmp_path, bad))


def test_attributes_a_pickle_gives_a_mapping_are_dropped(tmp_path):
    path = tmp_path / "evil.pkl"  # OrderedDict(a=1), then BUILD {"items": "shadow"}: it would hide the method
    path.write_bytes(b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00aK\x01u"
                     b"}X\x05\x00\x00\x00itemsX\x06\x00\x00\x00shadowsb.")
    data = safe_unpickle(path)
    assert data == {"a": 1} and callable(data.items)


def sg3(**arch):
    from render.models.stylegan3 import StyleGAN3, StyleGAN3Arch

    base = dict(resolution=16, z_dim=8, w_dim=8, channel_base=128, channel_max=8, num_layers=3, margin_size=4)
    return StyleGAN3(StyleGAN3Arch(**{**base, **arch}), name="tiny")


def sg3_file(tmp_path: Path, **arch) -> Path:
    path = tmp_path / "g.uncanny.pt"
    save_generator(sg3(**arch), path)
    return path


def edited(path: Path, **arch) -> Path:
    ckpt = torch.load(path, weights_only=True)
    ckpt["arch"].update(arch)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("arch, words", [
    ({"first_stopband": 0.1}, "first_stopband = 0.1 is outside 0.5..8192"),  # sampling rate 0: ZeroDivisionError
    ({"conv_clamp": float("nan")}, "conv_clamp = nan is outside"),
    ({"output_scale": "0.25"}, "output_scale = '0.25' is outside"),  # would fail at the first frame
    ({"use_radial_filters": "yes"}, "use_radial_filters = 'yes' is not true or false"),
    ({"resolution": 48}, "resolution = 48 is not a power of two"),
    ({"num_critical": 3}, "num_critical = 3 is not below num_layers = 3"),
])
def test_stylegan3_settings_are_checked_before_building(tmp_path, arch, words):
    with pytest.raises(LoadError, match=f"g.uncanny.pt: {words}"):
        load_generator_file(edited(sg3_file(tmp_path), **arch))


def test_stylegan3_layers_cannot_resample_by_absurd_factors(tmp_path):
    path = sg3_file(tmp_path, resolution=64, num_layers=2, num_critical=0, first_stopband=0.5)  # 1 -> 16 -> 64
    with pytest.raises(LoadError, match="g.uncanny.pt: a layer resamples by 32 \\(at most 16"):
        load_generator_file(path)  # the factor sets the filters' taps, squared in config R: a few bytes, 100 GB


@pytest.mark.parametrize("arch, words", [({"resample_filter": [1] * 17}, "resample_filter = \\(1, 1, 1"),
                                         ({"conv_clamp": "256"}, "conv_clamp = '256'")])
def test_stylegan2_settings_are_checked_before_building(tmp_path, arch, words):
    path = tmp_path / "g.uncanny.pt"
    save_generator(tiny(), path)
    with pytest.raises(LoadError, match=f"g.uncanny.pt: {words}"):
        load_generator_file(edited(path, **arch))


def test_the_network_an_architecture_builds_is_within_the_budget(tmp_path, monkeypatch):
    path = tmp_path / "g.uncanny.pt"
    save_generator(tiny(), path)
    monkeypatch.setattr(checks, "MAX_TOTAL_ELEMENTS", 10_000)  # the tiny network holds about 22 000 values
    with pytest.raises(LoadError, match="g.uncanny.pt: the architecture makes a network of about 2"):
        load_generator_file(path)


@pytest.mark.parametrize("make", [tiny, lambda: tiny("resnet"), sg3,
                                  lambda: sg3(conv_kernel=1, use_radial_filters=True)],
                         ids=["stylegan2", "stylegan2-resnet", "stylegan3-t", "stylegan3-r"])
def test_the_size_estimate_is_close_to_the_real_count(make):
    G = make()
    real = sum(t.numel() for t in [*G.parameters(), *G.buffers()])
    assert real * 0.9 < G.arch.num_values < real * 1.3


def test_names_from_a_file_are_safe_to_print_and_to_use_in_paths(tmp_path, capsys):
    from render.commands.models import inspect

    path = tmp_path / "g.uncanny.pt"
    save_generator(tiny(), path)
    edited(path, name="\x1b[2J../../evil")
    assert load_generator_file(path).name == "__2J.._.._evil"
    assert inspect(str(path)) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "__2J.._.._evil" in out


def test_a_path_that_is_not_a_regular_file_says_so():
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null here")
    with pytest.raises(LoadError, match="/dev/null: not a regular file"):
        load_generator_file("/dev/null")


def test_a_stylegan3_pickle_with_a_bad_setting_names_the_file_once(tmp_path, nvidia_module):
    synthesis = Persisted(nvidia_module, {"_modules": {"input": Persisted(nvidia_module, {})}})
    state = {"_init_kwargs": {"img_resolution": 4096, "z_dim": 8, "w_dim": 8}, "_modules": {"synthesis": synthesis}}
    path = dump(tmp_path, {"G_ema": Persisted(nvidia_module, state)})
    with pytest.raises(LoadError, match="evil.pkl: resolution = 4096 is outside 4..2048") as e:
        load_generator_file(path)
    assert str(e.value).count("evil.pkl") == 1


def test_models_inspect_prints_a_file_name_with_escapes_once_and_harmless(tmp_path, capsys):
    from render.commands.models import inspect

    path = tmp_path / "red\x1b[31m.pkl"
    path.write_bytes(b"\x80\x04junk")
    assert inspect(str(path)) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and out.count("red\\x1b[31m.pkl") == 1 and len(out.splitlines()) == 1


def test_an_embedded_storage_must_be_a_storage(tmp_path):
    raw = io.BytesIO()
    torch.save(((1, 2), (3, 4)), raw)  # a tuple the outer pickle could nest and hash, unseen by the pre-scan
    with pytest.raises(LoadError, match="evil.pkl: refused .*_load_from_bytes gave a tuple, not a storage"):
        safe_unpickle(dump(tmp_path, {"G_ema": RawStorage(raw.getvalue())}))


def test_a_storage_refused_inside_a_pickle_is_named_without_torchs_advice(tmp_path):
    """torch's refusal tells the reader to retry with weights_only=False: never what a loader of untrusted files
    passes on. The message keeps what was refused, in one short line."""
    raw = io.BytesIO()
    torch.save({"x": _Marker(tmp_path / "pwned")}, raw)
    with pytest.raises(LoadError) as info:
        safe_unpickle(dump(tmp_path, {"G_ema": RawStorage(raw.getvalue())}))
    message = str(info.value)
    assert re.search(r"evil.pkl: refused to load this pickle \(it names (posix|os).system, which is not allowed\)",
                     message)
    assert "weights_only" not in message and "\\n" not in message
    assert not (tmp_path / "pwned").exists()


def test_an_empty_error_still_says_what_it_was(tmp_path):
    path = tmp_path / "huge.pkl"  # a BINBYTES8 of 64 GiB: the unpickler's read raises a MemoryError with no words
    path.write_bytes(b"\x80\x04\x8e" + (1 << 36).to_bytes(8, "little") + b"abc")
    with pytest.raises(LoadError, match=r"huge.pkl: refused to load this pickle \((MemoryError|.*bytes8.*)\)"):
        load_generator_file(path)


@pytest.mark.parametrize("channels", [1, 4])
def test_generators_of_other_than_rgb_images_are_refused_when_loaded(tmp_path, channels):
    """Every loss and frame here is an RGB picture: a grayscale or RGBA generator would pass `models inspect` and fail
    in the middle of a render."""
    path = tmp_path / "g.uncanny.pt"
    save_generator(tiny(), path)
    with pytest.raises(LoadError, match=f"g.uncanny.pt: img_channels = {channels}; only generators of RGB"):
        load_generator_file(edited(path, img_channels=channels))


def test_a_diverged_snapshot_is_refused(tmp_path):
    """NaN weights draw black frames while the render reports a loss and succeeds."""
    path = tmp_path / "g.uncanny.pt"
    save_generator(tiny(), path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["mapping_network.w_avg"][0] = float("nan")
    torch.save(ckpt, path)
    with pytest.raises(LoadError, match="g.uncanny.pt: mapping_network.w_avg holds NaN or infinite values"):
        load_generator_file(path)


def test_the_same_weights_under_other_settings_are_another_generator(tmp_path):
    """Cached projections and directions are keyed on the fingerprint: a file that differs only in conv_clamp (or the
    resample filter) draws other pictures, and must not be served the first one's."""
    from render.models.base import generator_fingerprint

    path = tmp_path / "g.uncanny.pt"
    save_generator(tiny(), path)
    a = load_generator_file(path)
    b = load_generator_file(edited(path, conv_clamp=0.01))
    assert torch.equal(a.state_dict()["mapping_network.w_avg"], b.state_dict()["mapping_network.w_avg"])
    with torch.no_grad():
        assert not torch.allclose(a.synthesis(a.mean_latent()), b.synthesis(b.mean_latent()))
    assert generator_fingerprint(a) != generator_fingerprint(b)
    assert generator_fingerprint(a) == generator_fingerprint(load_generator_file(edited(path, conv_clamp=256.0)))
