"""Signals to a real player process in gallery mode (allow_quit_key = false): SIGTERM and SIGINT stop it cleanly with
no child left behind, SIGHUP reloads config.toml and rescans without interrupting the picture, SIGUSR1 logs the
status. And `run.py play --service`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_osc import Remote, free_port
from tests.test_player import ROOT, make_render, wait_until

CODE = ("import argparse, sys; from installation.cli import register; ap = argparse.ArgumentParser(); "
        "register(ap.add_subparsers()); a = ap.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def config_text(media: Path, port: int, crossfade: float = 1.0) -> str:
    return (f'media_dir = "{media}"\n[player]\nwindowed = true\nwindow_size = [64, 64]\nattract_after = 0.0\n'
            f'allow_quit_key = false\ncrossfade = {crossfade}\n[osc]\nport = {port}\n')


def start(media: Path, config: Path, port: int) -> tuple[subprocess.Popen, Remote]:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    proc = subprocess.Popen([sys.executable, "-c", CODE, "play", str(media / "renders"), "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    remote = Remote(port)
    up = wait_until(lambda: proc.poll() is not None or remote.ask("/ping", 0.5) is not None, timeout=60, interval=0)
    assert up and proc.poll() is None, proc.communicate()[1][-2000:]
    return proc, remote


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def media(tmp_path):
    make_render(tmp_path / "renders" / "one", "one", segments=(8, 8, 8, 8))
    port = free_port()
    config = tmp_path / "test.toml"
    config.write_text(config_text(tmp_path, port))
    return tmp_path, config, port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_it_cleanly_with_no_child_left(media, sig):
    folder, config, port = media
    proc, remote = start(folder, config, port)
    try:
        assert wait_until(lambda: (remote.status(1.0) or {}).get("frames_shown", 0) > 5, timeout=30)
        ffmpeg = children(proc.pid)
        assert ffmpeg  # a decoder is running
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        remote.sock.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert f"{sig.name}: stopping" in err and f"stopped ({sig.name})" in err and "Traceback" not in err
    assert not any(alive(pid) for pid in ffmpeg)  # no ffmpeg outlives the player
    log = (folder / "player.log").read_text()
    assert f"stopped ({sig.name})" in log


def test_sighup_reloads_settings_and_media_and_the_picture_plays_on(media):
    folder, config, port = media
    proc, remote = start(folder, config, port)
    try:
        s = remote.status_when(lambda s: s["frames_shown"] > 5)
        assert s["crossfade"] == 1.0 and s["sequences"] == ["one"]
        config.write_text(config_text(folder, port, crossfade=0.25))
        make_render(folder / "renders" / "two", "two", segments=(6,))
        shown = s["frames_shown"]
        proc.send_signal(signal.SIGHUP)
        s = remote.status_when(lambda s: s["crossfade"] == 0.25 and s["sequences"] == ["one", "two"], timeout=30)
        assert s["crossfade"] == 0.25 and s["sequences"] == ["one", "two"]
        assert s["sequence"] == "one" and s["frames_shown"] > shown  # the same picture, still moving
        assert remote.status_when(lambda t: t["frames_shown"] > s["frames_shown"])["frames_shown"] > s["frames_shown"]
        proc.send_signal(signal.SIGUSR1)
        assert wait_until(lambda: "SIGUSR1: status {" in (folder / "player.log").read_text())
        line = next(x for x in (folder / "player.log").read_text().splitlines() if "SIGUSR1: status" in x)
        assert '"sequence": "one"' in line and '"frames_shown"' in line
        config.write_text("[player]\nnonsense = 1\n")  # a broken file: the old settings stay, the show goes on
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "settings not reloaded" in (folder / "player.log").read_text())
        assert remote.status()["crossfade"] == 0.25 and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        remote.sock.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]


def test_the_next_start_says_why_the_last_run_ended(media):
    folder, config, port = media
    proc, remote = start(folder, config, port)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    remote.sock.close()
    proc, remote = start(folder, config, port)
    try:
        assert remote.status()["restart_reason"].startswith("the last run stopped cleanly (SIGTERM)")
        proc.kill()  # as the watchdog, the OOM killer or a power cut
        proc.communicate(timeout=30)
        remote.sock.close()
        proc, remote = start(folder, config, port)
        assert remote.status()["restart_reason"].startswith("the last run ended without stopping")
    finally:
        remote.sock.close()
        proc.terminate()
        proc.communicate(timeout=30)


def test_service_prints_a_systemd_unit_for_this_checkout(tmp_path):
    out = subprocess.run([sys.executable, "run.py", "play", str(tmp_path), "--display", "1", "--service"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    unit = out.stdout
    assert f"ExecStart={sys.executable} {ROOT / 'run.py'} play {tmp_path} --display 1\n" in unit
    for line in ("Type=notify", "Restart=always", "WatchdogSec=10", f"WorkingDirectory={ROOT}", "[Install]"):
        assert line in unit.splitlines(), line


def test_with_no_display_it_refuses_to_play_on_none(tmp_path):
    """SDL without a display falls back to its offscreen driver: the show "played", healthy by /status and the
    watchdog, on no screen. Only SDL_VIDEODRIVER=dummy (asked for) plays without one."""
    make_render(tmp_path / "media" / "a", "a", segments=(6,))
    config = tmp_path / "config.toml"
    config.write_text(f'media_dir = "{tmp_path / "media"}"\n[osc]\nenabled = false\n')
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    out = subprocess.run([sys.executable, "run.py", "--config", str(config), "play", "--windowed"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "cannot start: no display found (SDL chose its 'offscreen' driver)" in out.stderr, out.stderr
    unit = subprocess.run([sys.executable, "run.py", "play", str(tmp_path), "--service"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60).stdout
    assert "Environment=DISPLAY=:0" in unit.splitlines()  # printed over ssh: the screen's, not none
