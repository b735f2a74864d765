"""Config and sequence files: every key validated, errors name the key and the file."""

from pathlib import Path

import pytest

from sequences.config import Config, ConfigError, load_config
from sequences.sequence import SequenceError, find_sequences, load_sequence


def test_repository_config_loads_and_round_trips(tmp_path):
    cfg = load_config()
    assert cfg == Config()  # config.toml documents exactly the defaults
    path = tmp_path / "resolved.toml"
    path.write_text(cfg.override({"render": {"steps": 7}}).to_toml())
    assert load_config(path).render.steps == 7


@pytest.mark.parametrize("table, words", [
    ({"render": {"stepz": 1}}, "render.stepz"),
    ({"render": {"steps": "many"}}, "render.steps"),
    ({"render": {"steps": 0}}, "render.steps"),
    ({"projection": {"loss": "l2"}}, "projection.loss"),
    ({"projection": {"loss_layers": 6}}, "projection.loss_layers"),  # LPIPS has five
    ({"osc": {"port": 70000}}, "osc.port"),
    ({"nonsense": {"a": 1}}, "nonsense"),
    ({"device": "tpu"}, "device"),
    ({"render": {"size": 511}}, "'render.size' must be an even"),  # yuv420p
    ({"render": {"crf": 0}}, "render.crf"),  # lossless: a profile most players cannot decode
    ({"schedule": {"monday": "18:00-10:00"}}, "'schedule.monday': '18:00-10:00' ends before it starts"),
    ({"schedule": {"friday": "10-18"}}, "schedule.friday"),
    ({"schedule": {"sunday": "10:00-14:00, 12:00-16:00"}}, "overlap"),
    ({"schedule": {"outside": "party"}}, "schedule.outside"),
    ({"player": {"move_interval": -1.0}}, "player.move_interval"),
    ({"player": {"window_size": [1280]}}, "'player.window_size' must be a list of 2 ints"),  # the window failed
    ({"player": {"window_size": [0, 720]}}, "'player.window_size' must be at least 1"),
    ({"generator": ""}, "'generator' must not be empty"),
    ({"render": {"steps": 10**11}}, "'render.steps' must be at most 100000"),  # numpy asked for 373 GiB
])
def test_bad_values_name_the_key(tmp_path, table, words):
    with pytest.raises(ConfigError, match=words):
        Config().override(table, source="x.toml")


def test_settings_are_written_back_as_valid_toml_whatever_a_path_holds(tmp_path):
    """The config.toml beside a render records the generator's path: a newline, a tab or an escape in it must not
    make that file unreadable."""
    odd = "/models/new\nline\tand \x1b[31m\x7f \\ \" ü.pkl"
    path = tmp_path / "resolved.toml"
    path.write_text(Config().override({"generator": odd}).to_toml())
    assert load_config(path).general.generator == odd


def test_bad_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[render\nsteps = 1")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "folder.toml").mkdir()  # a folder (or a file it may not read): a line, not a traceback
    with pytest.raises(ConfigError, match="folder.toml: cannot read the config file"):
        load_config(tmp_path / "folder.toml")


def test_a_byte_order_mark_is_not_a_syntax_error(tmp_path):
    """Windows editors write UTF-8 with a BOM; TOML has none, and tomllib's words for it ("Invalid statement at line
    1, column 1") would send a user looking at a line that is fine."""
    cfg, seq = tmp_path / "config.toml", tmp_path / "s.toml"
    cfg.write_text("[render]\nsteps = 7\n", encoding="utf-8-sig")
    seq.write_text('name = "s"\n[[subjects]]\nname = "x"\nimage = "x.jpg"\n', encoding="utf-8-sig")
    assert cfg.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_config(cfg).render.steps == 7
    assert load_sequence(seq).name == "s"


def test_sequence_file_overrides_and_paths(tmp_path):
    (tmp_path / "seqs").mkdir()
    path = tmp_path / "seqs" / "a.toml"
    path.write_text('name = "a"\ngenerator = "g.pkl"\n[render]\nsteps = 5\n[projection]\nloss = "alex"\n'
                    'start = "../start.npy"\n[[subjects]]\nname = "one"\nimage = "../photos/one.jpg"\n')
    (tmp_path / "seqs" / "._a.toml").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble beside it
    seq = load_sequence(path)
    assert seq.subjects[0].image == (tmp_path / "photos" / "one.jpg").resolve()
    cfg = seq.config(Config())
    assert (cfg.render.steps, cfg.projection.loss) == (5, "alex")
    # file paths in a sequence file are relative to it, like its images; keywords stay keywords
    assert cfg.general.generator == str((tmp_path / "seqs" / "g.pkl").resolve())
    assert cfg.projection.start == str((tmp_path / "start.npy").resolve())
    path.write_text('name = "a"\ngenerator = "embedded"\n[projection]\nstart = "mean"\n'
                    '[[subjects]]\nname = "one"\nimage = "one.jpg"\n')
    cfg = load_sequence(path).config(Config())
    assert (cfg.general.generator, cfg.projection.start) == ("embedded", "mean")
    assert find_sequences([tmp_path / "seqs"]) == [path]
    # "~" is the user's home, as in a shell, not a folder named "~" beside the sequence file
    path.write_text('name = "a"\ngenerator = "~/models/g.pkl"\n[[subjects]]\nname = "one"\nimage = "~/one.jpg"\n'
                    '[[subjects]]\nname = "two"\nimage = "~draft.jpg"\n')
    seq = load_sequence(path)
    assert seq.config(Config()).general.generator == str(Path.home() / "models" / "g.pkl")
    assert seq.subjects[0].image == (Path.home() / "one.jpg").resolve()
    assert seq.subjects[1].image == (tmp_path / "seqs" / "~draft.jpg").resolve()  # a file name, not a user's home
    cfg = Config().override({"generator": "~/g.pkl", "projection": {"start": "~draft.npy"}})
    assert (cfg.general.generator, cfg.projection.start) == (str(Path.home() / "g.pkl"), "~draft.npy")


@pytest.mark.parametrize("text, words", [
    ('name = "a"\n', "subjects"),
    ('name = "../evil"\n[[subjects]]\nname="x"\nimage="x.jpg"\n', "name"),
    ('name = "a"\n[[subjects]]\nname="a/b"\nimage="x.jpg"\n', "name"),
    ('name = "a"\n[[subjects]]\nname="_x"\nimage="x.jpg"\n', "name"),
    ('name = "a"\n[[subjects]]\nname="two words"\nimage="x.jpg"\n', "name"),
    # "--" joins two names into an edge's file name: a -> "b--c" and "a--b" -> c would be one file
    ('name = "a"\n[[subjects]]\nname="b--c"\nimage="x.jpg"\n', "no '--'"),
    ('name = "a"\n[[subjects]]\nname="x"\nimage="x.jpg"\n[[subjects]]\nname="x"\nimage="y.jpg"\n', "twice"),
    ('name = "a"\nfps = 3\n[[subjects]]\nname="x"\nimage="x.jpg"\n', "fps"),
    ('name = "a"\n[render]\nsteps = -1\n[[subjects]]\nname="x"\nimage="x.jpg"\n', "render.steps"),
])
def test_bad_sequence_files(tmp_path, text, words):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SequenceError, match=words) as info:
        load_sequence(path).config(Config())
    assert "s.toml" in str(info.value)


def test_config_toml_documents_every_setting():
    import dataclasses
    import tomllib
    from pathlib import Path

    from sequences.config import DEFAULT_PATH, SECTIONS, GeneralConfig

    table = tomllib.loads(Path(DEFAULT_PATH).read_text())
    for f in dataclasses.fields(GeneralConfig):
        assert f.name in table, f"config.toml lacks top-level key {f.name}"
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.name in table.get(name, {}), f"config.toml lacks [{name}] {f.name}"


def test_dtype_auto_is_bf16_only_where_the_hardware_runs_it(monkeypatch):
    import torch

    from render.kernels import device

    cpu = torch.device("cpu")
    for fast, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(device, "fast_bf16", lambda d, fast=fast: fast)
        assert device.resolve_dtype("auto", cpu) is expected
        assert device.resolve_dtype("auto", torch.device("cuda")) is torch.float32  # launch-bound: bf16 no faster
    assert device.resolve_dtype("float32", cpu) is torch.float32
    assert device.resolve_dtype("float16", cpu) is torch.bfloat16  # no fast float16 on CPU
    assert Config().general.dtype == "auto"


def test_bfloat16_asked_for_on_a_cpu_that_emulates_it_is_run_with_a_warning(monkeypatch, caplog):
    import torch

    from render.kernels import device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "_warned_emulated", [])
    for fast in (True, False):
        monkeypatch.setattr(device, "fast_bf16", lambda d, fast=fast: fast)
        caplog.clear()
        with caplog.at_level("WARNING", logger="render.kernels.device"):
            assert device.resolve_dtype("bfloat16", cpu) is torch.bfloat16
            assert device.resolve_dtype("bfloat16", cpu) is torch.bfloat16  # once a process (a montage: once a photo)
        assert caplog.text.count("runs emulated") == (0 if fast else 1)
    caplog.clear()
    with caplog.at_level("WARNING", logger="render.kernels.device"):
        device.warn_if_emulated_bf16("[clip] precision", cpu, "precision = \"float32\" is faster here")
    assert "[clip] precision = bfloat16" in caplog.text  # each setting once


def test_names_may_use_any_script_in_one_spelling(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "Zo\u0065\u0308-2026"\n[[subjects]]\nname = "Jos\u00e9"\nimage = "x.jpg"\n'
                    '[[subjects]]\nname = "\u674e\u5a1c"\nimage = "y.jpg"\n', encoding="utf-8")
    seq = load_sequence(path)
    assert seq.name == "Zo\u00eb-2026"  # typed decomposed (as macOS file names are), stored composed
    assert [s.name for s in seq.subjects] == ["Jos\u00e9", "\u674e\u5a1c"]
