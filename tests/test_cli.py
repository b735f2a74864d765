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
    assert proc.stderr.strip().endswith("bad\\xffname.pkl: not a valid UTF-8 name; rename it"), proc.stderr
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
