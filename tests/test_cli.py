"""The one CLI: every command has --help, and building it never imports torch (the player must start fast)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def commands() -> list[str]:
    sys.path.insert(0, str(ROOT))
    import run

    parser = run.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def test_building_the_cli_does_not_import_torch():
    code = ("import sys; sys.path.insert(0, %r); import run; run.build_parser(); "
            "bad = [m for m in ('torch', 'open_clip', 'dlib') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
            % str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_core_commands_are_registered():
    assert {"render", "play", "models"} <= set(commands())


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help(command):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and command in proc.stdout


def test_watch_logs_every_line_to_its_file_even_with_quiet(tmp_path):
    """`watch --quiet` keeps the console to warnings, and its rotating log still has what each visitor went through."""
    import logging

    from render.commands.live import log_to_file

    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    console = logging.StreamHandler(open(tmp_path / "console.txt", "w"))
    try:
        logging.basicConfig(level=logging.WARNING, handlers=[console], force=True)  # what run.py --quiet sets up
        log_to_file(tmp_path / "watch.log", 1_000_000, 2)
        logging.getLogger("render.pipeline.live").info("queued anna.jpg")
        logging.getLogger("render.pipeline.live").warning("skipped wall.png")
        console.flush()
        assert "queued anna.jpg" in (tmp_path / "watch.log").read_text()
        assert (tmp_path / "console.txt").read_text().splitlines() == ["WARNING:render.pipeline.live:skipped wall.png"]
    finally:
        for h in root.handlers:
            if h not in saved[1]:
                h.close()
        console.stream.close()
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def test_a_name_that_is_not_utf8_is_refused_before_any_work(tmp_path):
    """Settings and manifests are UTF-8: such a name used to fail only when the finished render wrote them."""
    bad = os.fsencode(tmp_path) + b"/bad\xffname.pkl"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "models", "inspect", bad], capture_output=True,
                          text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().endswith("bad\\xffname.pkl: not valid UTF-8 (what run.py writes records its "
                                        "arguments as UTF-8 text); rename it"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_output_cut_short_by_its_reader_is_no_error(tmp_path):
    """`run.py models inspect ... | head -1`: the reader goes away, and the command ends quietly."""
    fixture = str(ROOT / "tests" / "fixtures" / "stylegan2" / "tiny_skip.pkl")
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "models", "inspect", *[fixture] * 8],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith(fixture)
    proc.stdout.close()  # as head does after its line; the next file's lines meet a closed pipe
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.fixture
def nothing_projected(monkeypatch, tmp_path):
    """A config of tmp_path's own, and any projection a failure: the refusals below come before the work."""
    from render.pipeline import cache

    monkeypatch.setattr(cache, "project_photo", lambda *a, **k: pytest.fail("projected before the refusal"))
    config = tmp_path / "config.toml"
    config.write_text(f'media_dir = "{tmp_path / "media"}"\ncache_dir = "{tmp_path / "cache"}"\n')
    return ["--config", str(config)]


def test_output_folders_holding_other_things_are_refused_before_any_work(tmp_path, nothing_projected, capsys,
                                                                         subject_photo):
    """`--out ""` was the current folder: in a checkout, the project's config.toml was replaced by a command's
    resolved settings. And `--out` a render's folder replaced that render's record of how it was made."""
    import run

    a, b = str(subject_photo("obama.jpg")), str(subject_photo("biden.jpg"))
    with pytest.raises(SystemExit):  # argparse's one line, exit status 2
        run.main([*nothing_projected, "morph", a, b, "--out", ""])
    assert "--out: must name a folder, not be empty" in capsys.readouterr().err
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.toml").write_text("# my gallery's settings\n[render]\nsteps = 3\n")
    (tmp_path / "a-file").write_text("")
    render = tmp_path / "render"
    render.mkdir()
    (render / "manifest.json").write_text("{}")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.toml").write_text("# resolved settings of run.py variations\n")
    for out, words in ((theirs, "holds a config.toml that Uncanny did not write"),
                       (tmp_path / "a-file", "exists and is not a folder"),
                       (render, "is a render's folder (manifest.json)"),
                       (other, "holds the outputs of run.py variations")):
        assert run.main([*nothing_projected, "morph", a, b, "--out", str(out)]) == 2
        assert f"{out}: {words}" in capsys.readouterr().err
    assert (theirs / "config.toml").read_text().startswith("# my gallery's settings")
    seq = tmp_path / "show.toml"
    seq.write_text(f'name = "show"\n[[subjects]]\nname = "obama"\nimage = "{a}"\n')
    assert run.main([*nothing_projected, "render", str(seq), "--out", str(theirs)]) == 1
    assert f"{theirs}: holds a config.toml that Uncanny did not write" in capsys.readouterr().err
    assert (theirs / "config.toml").read_text().startswith("# my gallery's settings")


def test_both_photos_are_checked_before_either_is_projected(tmp_path, nothing_projected, capsys, subject_photo):
    import run

    not_a_photo = tmp_path / "landscape.jpg"
    not_a_photo.write_text("no face in here")
    for command in ("morph", "child"):
        out = tmp_path / "made" / command
        assert run.main([*nothing_projected, command, str(subject_photo("obama.jpg")), str(not_a_photo),
                         "--out", str(out)]) == 2
        assert "landscape.jpg" in capsys.readouterr().err
        assert not (tmp_path / "made").exists()  # the folders made for it went again, empty


@pytest.mark.parametrize("command", ["morph", "child", "variations", "montage"])
def test_a_seed_below_zero_is_refused_when_parsed(command, capsys):
    """numpy takes no negative seed: `morph --ppl --seed -1` failed after both projections, naming nothing."""
    import run

    photos = {"morph": ["a.jpg", "b.jpg"], "child": ["a.jpg", "b.jpg"], "variations": ["a.jpg"], "montage": []}
    for seed in ("-1", str(2**64)):  # torch takes no seed past 64 bits ("Overflow when unpacking long long")
        with pytest.raises(SystemExit):
            run.main([command, *photos[command], "--seed", seed])
        assert f"--seed: expected a whole number from 0 to {2**63 - 1}, not {seed}" in capsys.readouterr().err


def test_a_montage_run_name_stays_a_name(tmp_path, nothing_projected, capsys):
    import run

    for name in ("../../escape", "a/b", ".."):
        with pytest.raises(SystemExit):  # argparse's one line, exit status 2
            run.main([*nothing_projected, "montage", "--candidates", "2", "--name", name])
        assert "--name: a run name must be a name of letters" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "media").exists()


def test_settings_json_holds_no_nan_whatever_the_command_measured(tmp_path):
    """JSON has no NaN: json.dumps writes it anyway, and strict readers then refuse the whole file."""
    import argparse
    import json

    import numpy as np

    from render.commands.common import write_settings
    from sequences.config import Config

    class Stub:
        def describe(self):
            return {"name": "stub"}

    info = {"lpips": float("nan"), "per_step": np.array([0.5, np.nan], np.float32), "one": np.float32(np.inf),
            "fine": [1.5, {"deep": float("-inf")}]}
    write_settings(tmp_path, "morph", argparse.Namespace(), Config(), Stub(), info, 0.0)
    text = (tmp_path / "settings.json").read_text()
    settings = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in settings.json"))
    assert settings["lpips"] is None and settings["per_step"] == [0.5, None] and settings["one"] is None
    assert settings["fine"] == [1.5, {"deep": None}]
