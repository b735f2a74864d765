"""Generator files built to hurt: memory bombs, shared references, state set on the loader's own classes, terminal
escapes, damaged archives. Each must end in one LoadError line naming the file, quickly, with nothing executed."""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import sys
import types
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from render.generators import loading
from render.generators.loading import LoadError, load_generator_file, safe_unpickle, save_generator
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
    monkeypatch.setattr(loading, "MAX_TOTAL_ELEMENTS", 100)
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
    from render.generators.cli import register

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    register(parser.add_subparsers())
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04junk")
    args = parser.parse_args(["models", "inspect", str(junk), str(SKIP_PKL)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert out.startswith(str(junk)) and "nvidia-stylegan2" in out
