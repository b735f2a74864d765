"""Gallery player control, headless: blackout, attract mode, playlist steps, new renders, keys, --check."""

from __future__ import annotations

import os

import numpy as np
import pygame

from installation.commands import Command, key_command
from installation.stream import PosterCache
from tests.test_player import SIZE, ManualClock, make_player, make_render, run_until, screen_index, ticking


def test_blackout_fades_to_black_and_back(tmp_path):
    make_render(tmp_path / "a", "a", segments=(12,))
    clock = ManualClock()  # the fade advances 0.02 s a turn: its steps do not depend on how long a turn takes
    p = make_player([tmp_path], clock=clock, blackout_fade=0.1, crossfade=0.0)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        clock.advance(0.1)  # past frame 0, which is all black and would hide the picture coming back
        assert run_until(p, lambda: p.playback.main.shown.index > 0)
        p.submit(Command("blackout", True))
        levels = []
        assert run_until(p, ticking(clock, lambda: levels.append(p.black_level) or p.black_level == 1.0))
        assert any(0 < v < 1 for v in levels)  # a fade, not a cut
        p.step()
        assert p.canvas.pixels().max() == 0 and p.status(p.clock())["blackout"] is True
        p.submit(Command("blackout", None))  # toggle
        assert run_until(p, ticking(clock, lambda: p.black_level == 0.0))
        p.step()
        assert p.canvas.pixels().max() == 255
    finally:
        p.close()


def test_attract_mode_returns_to_the_default_sequence(tmp_path):
    make_render(tmp_path / "a", "a", segments=(6,))
    make_render(tmp_path / "b", "b", segments=(6,))
    p = make_player([tmp_path], attract_after=0.4, default_sequence="a")
    try:
        assert run_until(p, lambda: p.playback.seq is not None and p.playback.seq.name == "a")
        p.submit(Command("sequence", "b"))
        p.submit(Command("pause"))
        assert run_until(p, lambda: p.playback.seq.name == "b" and not p.playback.playing)
        assert run_until(p, lambda: p.playback.seq.name == "a")
        assert p.playback.playing and p.clock() - p.last_input >= 0.4
    finally:
        p.close()


def test_attract_mode_leaves_the_default_sequence_playing_after_a_media_rescan(tmp_path):
    from installation.playlist import scan

    make_render(tmp_path / "a", "a", segments=(30,))
    p = make_player([tmp_path], attract_after=0.4, default_sequence="a")
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        stream = p.playback.main
        p.submit(Command("play"))  # input: attract mode comes again 0.4 s later
        assert run_until(p, lambda: not p.attracted)
        p._take_scan(scan([tmp_path], {}), p.clock())  # the same sequence, read again: a new playlist entry
        assert p.playlist.get("a") is not p.playback.seq
        assert run_until(p, lambda: p.attracted)
        p.step()
        assert p.playback.main is stream  # it was already on screen: no jump, no restart
    finally:
        p.close()


def test_next_and_prev_step_subjects_then_sequences(tmp_path):
    make_render(tmp_path / "a", "a", segments=(4, 4))
    make_render(tmp_path / "b", "b", segments=(4, 4, 4))
    p = make_player([tmp_path], crossfade=0.0)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        seen = []
        for name in ("next", "next", "next", "prev", "prev", "prev"):
            p.submit(Command(name))
            p.step()
            s = p.status(p.clock())
            seen.append((s["sequence"], s["subject"]))
        assert seen == [("a", 1), ("b", 0), ("b", 1), ("b", 0), ("a", 1), ("a", 0)]
        p.submit(Command("next_sequence"))
        p.step()
        assert p.playback.seq.name == "b"
        stream = p.playback.main
        p.submit(Command("subject", 9))  # out of range: logged and ignored
        p.submit(Command("sequence", "nope"))
        p.step()
        assert p.playback.seq.name == "b" and p.playback.main is stream
    finally:
        p.close()


def test_new_render_is_picked_up_without_interrupting(tmp_path):
    make_render(tmp_path / "a", "a", segments=(30,))
    p = make_player([tmp_path], rescan_every=0.5)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        stream, shown = p.playback.main, p.playback.main.shown.pos
        make_render(tmp_path / "b", "b", segments=(4,))
        assert run_until(p, lambda: len(p.playlist.sequences) == 2)
        pb = p.playback
        assert pb.main is stream and pb.seq.name == "a" and pb.main.shown.pos > shown  # played on, untouched
    finally:
        p.close()


def test_missing_transition_clip_falls_back_to_crossfade(tmp_path):
    make_render(tmp_path / "a", "a", segments=(8, 8), transitions={(0, 1): 4})
    (tmp_path / "a" / "transitions" / "s0--s1.mp4").unlink()
    p = make_player([tmp_path], crossfade=0.2)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        p.submit(Command("subject", 1))
        p.step()
        assert p.playback.clip_subject is None and p.fade_from is not None and p.playback.main.loop
        assert run_until(p, lambda: p.fade_from is None and p.playback.main.shown.index >= 9)
        assert 8 <= screen_index(p) <= 15
    finally:
        p.close()


def test_speed_and_pause_follow_the_clock(tmp_path):
    make_render(tmp_path / "a", "a", segments=(48,))
    p = make_player([tmp_path])
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        p.submit(Command("pause"))
        p.step()
        frame = p.playback.main.shown.index
        p.run(0.3)
        assert p.playback.main.shown.index == frame and not p.status(p.clock())["playing"]
        p.submit(Command("speed", 0.05))
        p.submit(Command("play"))
        p.run(0.3)  # 0.3 s at 1.2 frames a second: at most one new frame
        assert p.playback.main.shown.index - frame <= 1
    finally:
        p.close()


def test_keys_map_to_commands():
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    pygame.init()
    assert key_command(pygame.K_SPACE, quit_allowed=True) == Command("toggle")
    assert key_command(pygame.K_3, quit_allowed=True) == Command("subject", 3)
    assert key_command(pygame.K_RIGHT, quit_allowed=True) == Command("next")
    assert key_command(pygame.K_LEFT, quit_allowed=True) == Command("prev")
    assert key_command(pygame.K_b, quit_allowed=True) == Command("blackout")
    assert key_command(pygame.K_ESCAPE, quit_allowed=True) == Command("quit")
    assert key_command(pygame.K_q, quit_allowed=False) is None  # gallery mode
    assert key_command(pygame.K_x, quit_allowed=True) is None


def test_check_reports_playable_and_broken_renders(tmp_path, capsys):
    from installation.cli import check
    from sequences.config import Config

    make_render(tmp_path / "a", "a", segments=(4, 4))
    make_render(tmp_path / "b", "b", segments=(4,))
    (tmp_path / "b" / "loop.mp4").write_bytes(np.zeros(500, np.uint8).tobytes())
    assert check(Config(), [tmp_path]) == 0
    out = capsys.readouterr().out
    assert "sequence 0: 'a' 64x64 24 fps" in out and "subject 1: 's1' frames 4..7" in out
    assert "cannot decode" in out and "1 of 2 sequences playable" in out
    assert check(Config(), [tmp_path / "none"]) == 1
    assert SIZE == 64
    # a copy cut short: it opens and its first frames decode, but it ends early (the player loops at its real end)
    from sequences.video import write_video as render_video

    make_render(tmp_path / "c" / "c", "c", segments=(40,))
    loop = tmp_path / "c" / "c" / "loop.mp4"
    noise = np.random.default_rng(0).integers(0, 255, (40, SIZE, SIZE, 3), dtype=np.uint8)
    render_video(loop, noise, 24)  # as a render writes it (+faststart: the index first, so a cut file still opens)
    loop.write_bytes(loop.read_bytes()[: loop.stat().st_size // 2])
    assert check(Config(), [tmp_path / "c"]) == 1
    out = capsys.readouterr().out
    assert "frames that decode, the manifest says 40" in out and "0 of 1 sequences playable" in out


def test_play_check_says_what_play_with_the_same_options_would_do(tmp_path, capsys):
    from run import main

    make_render(tmp_path / "a", "a", segments=(4,))
    assert main(["play", "--check", "--osc-port", "9555", str(tmp_path)]) == 0
    assert ":9555 " in capsys.readouterr().out
    assert main(["play", "--check", "--osc-port", "70000", str(tmp_path)]) == 2  # as `play` refuses it
    assert "--osc-port 70000 is not a UDP port" in capsys.readouterr().err
    assert main(["play", "--check", "--leader", "10.0.0.5", str(tmp_path)]) == 2  # a follower's flag, no follower
    assert "--leader names the leader of a follower" in capsys.readouterr().err
    assert main(["play", "--check", "--sync", "follower", "--leader", "127.0.0.1", str(tmp_path)]) == 0


def test_first_frames_of_all_subjects_are_prefetched_then_a_jump_shows_its_target_at_once(tmp_path):
    make_render(tmp_path / "a", "a", segments=(30, 30, 30), fps=4)  # slow: subjects 1 and 2 are not reached
    p = make_player([tmp_path], crossfade=0.0)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        m, place = p.playback.seq.manifest, p.playback.placement(p.playback.seq)
        keys = [PosterCache.key(m.loop, e.first_frame, place, p.playback.seq.stamp) for e in m.subjects]
        assert run_until(p, lambda: all(p.prefetcher.cache.get(k) is not None for k in keys))
        assert p.prefetcher.pending is None or run_until(p, lambda: p.prefetcher.pending is None)
        p.submit(Command("subject", 2))
        p.step()  # the very next frame, before the target's decoder has delivered anything
        assert screen_index(p) == m.subject(2).first_frame
    finally:
        p.close()


def test_a_jump_fades_away_from_the_picture_on_screen_without_the_blackout(tmp_path):
    make_render(tmp_path / "a", "a", segments=(12, 12))
    clock = ManualClock()  # the blackout's level moves 0.1 s a turn, however long a turn takes
    p = make_player([tmp_path], clock=clock, crossfade=1.0, blackout_fade=3.0)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        on_screen = p.canvas.pixels()
        p.submit(Command("subject", 1))
        p.step()  # the jump copies the screen as last drawn: no new frame was drawn before it
        still = pygame.surfarray.array3d(p.fade_from.surface).swapaxes(0, 1)
        assert np.array_equal(still, on_screen)

        p.submit(Command("pause"))  # stay on subject 1's first frame (frame 0, all black, must not come round)
        assert run_until(p, lambda: p.playback.main.shown is not None)  # that frame is there to be darkened
        p.submit(Command("blackout", True))  # a slow fade to black: the screen is darkened, the picture is not
        assert run_until(p, ticking(clock, lambda: 0.2 < p.black_level < 0.9, 0.1))
        darkened = p.canvas.pixels().astype(float).mean()
        p.submit(Command("subject", 0))
        p.step()
        still = pygame.surfarray.array3d(p.fade_from.surface).swapaxes(0, 1).astype(float)
        assert still.mean() > darkened * 1.1
    finally:
        p.close()


def test_a_reload_applies_the_sync_timings_and_names_the_sync_settings_that_need_a_restart(tmp_path, caplog):
    """[sync] lead_time, send_every and lost_after changed by SIGHUP used to be neither applied nor reported."""
    from installation.player import Player
    from sequences.config import load_config
    from tests.test_player_sync import free_port

    make_render(tmp_path / "media" / "a", "a", segments=(6,))
    config = tmp_path / "config.toml"
    base = (f'[player]\nwindowed = true\nwindow_size = [{SIZE}, {SIZE}]\n[osc]\nenabled = false\n'
            f'[sync]\nrole = "leader"\nport = {free_port()}\n')
    config.write_text(base)
    p = Player(load_config(config), [tmp_path / "media"], config_path=config)
    p.open()
    try:
        config.write_text(base + 'lead_time = 1.5\nsend_every = 0.5\nlost_after = 9.0\ngroup = "other"\n')
        with caplog.at_level("WARNING", logger="installation.player"):
            p.reload("SIGHUP")
        assert (p.sync.cfg.lead_time, p.sync.cfg.send_every, p.sync.cfg.lost_after) == (1.5, 0.5, 9.0)
        assert p.sync.cfg.group == "uncanny" and "after a restart: sync.group" in caplog.text
    finally:
        p.close()


def test_a_reload_keeps_the_command_lines_settings_and_refuses_an_empty_file(tmp_path, caplog):
    """SIGHUP re-read config.toml alone: a video wall's --region (from the systemd unit's command line) was dropped,
    and an empty file (an editor mid-save) or an [osc] allow that is no address replaced or broke the settings."""
    from installation.player import Player
    from sequences.config import Config

    make_render(tmp_path / "media" / "a", "a", segments=(6,))
    config = tmp_path / "config.toml"
    config.write_text(f'[player]\nwindowed = true\nwindow_size = [{SIZE}, {SIZE}]\ncrossfade = 0.5\n'
                      '[osc]\nenabled = false\n[schedule]\nenabled = true\nmonday = ""\n')
    overrides = {"player": {"region": (0.5, 0.0, 0.5, 1.0)}}
    from sequences.config import load_config

    p = Player(load_config(config, overrides), [tmp_path / "media"], config_path=config, overrides=overrides)
    p.open()
    try:
        config.write_text(config.read_text().replace("crossfade = 0.5", "crossfade = 0.25"))
        p.reload("SIGHUP")
        assert p.cfg.player.crossfade == 0.25 and p.cfg.player.region == (0.5, 0.0, 0.5, 1.0)
        assert "take effect after a restart" not in caplog.text
        before = p.cfg
        for broken in ("", '[osc]\nallow = ["not-an-address"]\n'):
            config.write_text(broken)
            caplog.clear()
            p.reload("SIGHUP")
            assert p.cfg is before and "settings not reloaded, the old ones stay" in caplog.text
            assert "Traceback" not in caplog.text
        assert Config().override({"player": {"log_backups": 1}}).player.log_backups == 1
    finally:
        p.close()


def test_the_log_file_comes_back_when_its_folder_is_deleted(tmp_path, capsys):
    """The media folder (and the log in it) deleted and made again: the player logged into a deleted file for ever;
    a log folder that cannot be written printed forty lines of traceback for every record."""
    import logging

    from installation.cli import setup_logging
    from sequences.config import Config

    pcfg = Config().override({"player": {"log_file": "logs/player.log"}}).player
    path = setup_logging(pcfg, tmp_path / "media", console=False)
    log = logging.getLogger("installation")
    try:
        log.info("first")
        import shutil

        shutil.rmtree(tmp_path / "media")
        log.info("after the folder went")
        assert "after the folder went" in path.read_text()
        (tmp_path / "media" / "logs").rename(tmp_path / "media" / "gone")
        (tmp_path / "media" / "logs").write_text("a file where the log folder was")
        for n in range(50):
            log.info("cannot be written %d", n)
        err = capsys.readouterr().err
        assert err.count("cannot write") == 1 and "Traceback" not in err
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
