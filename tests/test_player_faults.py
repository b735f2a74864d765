"""The player against a gallery's faults, in one process: dead decoders, command floods, renders leaving the
playlist, opening hours, the systemd watchdog, the heartbeat, and start-up messages for bad media paths."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import socket
import threading
import time

import pytest

from installation.cli import check
from installation.commands import Command
from installation.decoder import Decoder, Frame
from installation.playlist import scan
from installation.schedule import Schedule
from installation.service import Heartbeat, RunRecord, Watchdog
from sequences.config import Config
from tests.test_player import (SIZE, ManualClock, drain, frame_index, make_player, make_render, run_until,
                               screen_index, ticking, wait_until, write_video)

# ----- decoders that die --------------------------------------------------------------------------------------------


def test_a_decoder_killed_mid_loop_resumes_at_the_next_frame(tmp_path, caplog):
    make_render(tmp_path, segments=(100, 100))  # 200 frames of 16 KB: more than the pipe holds, ffmpeg waits on us
    dec = Decoder(tmp_path / "loop.mp4", fps=24, start=0, loop=True, src_size=(SIZE, SIZE), buffer_frames=4,
                  expected_frames=200)
    try:
        first = drain(dec, 20)
        assert wait_until(lambda: dec._process is not None)
        with caplog.at_level(logging.WARNING, logger="installation.decoder"):
            dec._process.kill()  # as `kill -9` on the ffmpeg process, mid-file
            rest = drain(dec, 200)
    finally:
        dec.close()
    items = first + rest
    assert all(isinstance(i, Frame) for i in items) and len(items) == 220
    expected = [p % 200 for p in range(220)]
    assert [f.index for f in items] == expected and [frame_index(f) for f in items] == expected  # no jump, no repeat
    assert dec.restarts == 1 and dec.known_end is None
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "not the end of the file; restarting it at frame" in said and "shorter" not in said


def test_only_a_file_that_really_is_shorter_loops_early(tmp_path, caplog):
    write_video(tmp_path / "loop.mp4", list(range(30)))  # the manifest will say 50
    dec = Decoder(tmp_path / "loop.mp4", fps=24, loop=True, src_size=(SIZE, SIZE), buffer_frames=4,
                  expected_frames=50)
    with caplog.at_level(logging.WARNING, logger="installation.decoder"):
        items = drain(dec, 70)
    dec.close()
    assert [f.index for f in items] == [p % 30 for p in range(70)]
    assert dec.known_end == 30 and dec.restarts == 0  # a clean end is the real end: nothing restarted
    lines = [r.getMessage() for r in caplog.records if "shorter" in r.getMessage()]
    assert len(lines) == 1 and "has 30 frames, the manifest says 50" in lines[0]


def test_the_player_counts_decoder_restarts_and_plays_on(tmp_path):
    make_render(tmp_path / "a", "a", segments=(100, 100))
    p = make_player([tmp_path], buffer_frames=4)
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.main is not None and pb.main.primed and pb.main.decoder._process)
        stream = pb.main
        stream.decoder._process.kill()
        assert run_until(p, lambda: p.status(p.clock())["decoder_restarts"] == 1)
        shown = p.stats.frames_shown
        assert run_until(p, lambda: p.stats.frames_shown > shown + 10)
        assert pb.main is stream and pb.seq.name == "a" and not stream.failed  # the same stream plays on
    finally:
        p.close()


# ----- floods of valid commands -------------------------------------------------------------------------------------

def test_a_flood_of_moves_keeps_the_picture_playing(tmp_path):
    make_render(tmp_path / "a", "a", segments=(8, 8, 8, 8))
    p = make_player([tmp_path], move_interval=0.5, crossfade=0.0)
    jumps = []
    real_jump = p.jump
    p.jump = lambda seq, entry, now, preroll=False: (jumps.append(now), real_jump(seq, entry, now, preroll))
    stop, sent = threading.Event(), [0]

    def flood():  # as fast as this thread can: far more than one move a frame, perhaps more than the inbox holds
        k = 0
        while not stop.is_set():
            p.submit(Command("subject", k % 4) if k % 2 else Command("next"))
            k += 1
            sent[0] = k
            if k % 200 == 0:
                time.sleep(0)  # let the main loop have the GIL now and then

    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        jumps.clear()
        t0, shown0 = p.clock(), p.stats.frames_shown
        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        assert run_until(p, lambda: sent[0] > 5000 and p.stats.frames_shown > shown0 + 30, timeout=60)
        stop.set()
        sender.join()
        elapsed = p.clock() - t0
        assert run_until(p, lambda: p.inbox.queue.empty())
        s = p.status(p.clock())
        # at most one jump per move_interval (plus the first), however many moves came
        assert 1 <= len(jumps) <= elapsed / 0.5 + 2, (len(jumps), elapsed)
        # every command is counted: taken (then merged or made), or refused while the inbox was full
        assert s["commands_received"] + s["commands_refused"] == sent[0]
        assert s["commands_coalesced"] >= s["commands_received"] - len(jumps) - 3  # all but the moves made
    finally:
        stop.set()
        p.close()


def test_a_move_that_waited_is_prerolled_and_the_picture_plays_on_meanwhile(tmp_path):
    make_render(tmp_path / "a", "a", segments=(24, 24, 24))
    clock = ManualClock()
    p = make_player([tmp_path], clock=clock, move_interval=0.5, crossfade=0.0)
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.main is not None and pb.main.primed)
        clock.advance(0.5)  # move_interval after the start's own jump to the sequence
        p.submit(Command("subject", 1))
        p.step()  # a move is made at once when none was made for move_interval
        first = pb.main
        assert pb.jump_subject.name == "s1" and pb.incoming is None
        p.submit(Command("subject", 2))
        assert run_until(p, lambda: first.primed and p.inbox.empty() is False)
        assert pb.main is first and pb.incoming is None  # waits: move_interval has not passed
        clock.advance(0.5)
        p.step()
        assert pb.incoming is not None and pb.main is first  # its decoder starts; the picture is still s1's
        assert run_until(p, ticking(clock, lambda: pb.incoming is None, 0.01))
        assert pb.main is not first and pb.current_subject().name == "s2"
        assert run_until(p, ticking(clock, lambda: pb.main.shown.index > 48, 0.01))
        assert 48 < screen_index(p) < 72
    finally:
        p.close()


def test_status_and_ping_floods_get_one_reply_per_sender_per_turn(tmp_path):
    make_render(tmp_path / "a", "a", segments=(8,))
    p = make_player([tmp_path])
    replies = []
    p._reply = lambda cmd, address, *args: replies.append((cmd.reply_to, address))
    try:
        assert run_until(p, lambda: p.playback.main is not None)
        for k in range(300):
            p.submit(Command("status", reply_to=("127.0.0.1", 1 + k % 3)))
        p.step()
        assert sorted(replies) == [(("127.0.0.1", k), "/status") for k in (1, 2, 3)]
        assert p.inbox.coalesced == 297
    finally:
        p.close()


# ----- the playlist's truth -----------------------------------------------------------------------------------------

def two_renders_player(tmp_path, default: str):
    """Renders a (two subjects) and b, and a player on a manual clock with `default` as its default sequence."""
    make_render(tmp_path / "a", "a", segments=(8, 8))
    make_render(tmp_path / "b", "b", segments=(8,))
    clock = ManualClock()
    return make_player([tmp_path], clock=clock, default_sequence=default, crossfade=0.0, rescan_every=0.5), clock


def test_a_delisted_sequence_plays_to_its_loop_point_then_leaves(tmp_path):
    p, clock = two_renders_player(tmp_path, "a")
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.seq is not None and pb.seq.name == "a" and pb.main.primed)
        (tmp_path / "a" / "manifest.json").write_text('{"format": 1, "name": "a", "fps": ')  # half-written
        p.scanner.trigger()
        assert run_until(p, lambda: pb.delisted)  # the clock stands still: no loop point can pass meanwhile
        stream, wraps = pb.main, pb.main.wraps
        s = p.status(p.clock())
        assert s["sequence"] == "a" and s["on_playlist"] is False and "a" not in s["sequences"]
        assert run_until(p, ticking(clock, lambda: pb.seq.name == "b"))
        assert stream.wraps > wraps  # it left at its loop point, not before
        s = p.status(p.clock())
        assert s["sequence"] == "b" and s["on_playlist"] is True
    finally:
        p.close()


@pytest.mark.parametrize("chosen", [False, True])
def test_a_sequence_that_left_while_rendering_again_comes_back_unless_a_command_chose_another(tmp_path, chosen):
    """A render run again in place takes its manifest off first: the sequence left the screen at its loop point for
    the default, and stayed away for good after the render had finished."""
    p, clock = two_renders_player(tmp_path, "b")
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.seq is not None and pb.seq.name == "b" and pb.main.primed)
        p.submit(Command("sequence", "a"))
        assert run_until(p, lambda: pb.seq.name == "a" and pb.main.primed)
        manifest = (tmp_path / "a" / "manifest.json").read_text()
        (tmp_path / "a" / "manifest.json").unlink()  # the render starts again
        p.scanner.trigger()
        assert run_until(p, ticking(clock, lambda: pb.seq.name == "b"))  # left at its loop point
        if chosen:
            p.submit(Command("subject", 0))  # the show controller picks what plays meanwhile
            assert run_until(p, lambda: pb.left_behind is None)
        (tmp_path / "a" / "manifest.json").write_text(manifest)  # the render is done
        number = p.scanner.trigger()
        assert run_until(p, ticking(clock, lambda: p.scanner.covered >= number))
        assert run_until(p, ticking(clock, lambda: pb.seq.name == "a"), timeout=3) is not chosen
    finally:
        p.close()


def test_a_sequence_whose_videos_are_gone_leaves_at_once(tmp_path):
    make_render(tmp_path / "a", "a", segments=(8, 8))
    make_render(tmp_path / "b", "b", segments=(8,))
    clock = ManualClock()
    p = make_player([tmp_path], clock=clock, default_sequence="a", crossfade=0.5)
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.seq is not None and pb.seq.name == "a" and pb.main.primed)
        wraps = pb.main.wraps
        stream = pb.main
        shutil.rmtree(tmp_path / "a")
        p.scanner.trigger()
        assert run_until(p, lambda: pb.seq.name == "b")  # with the clock standing still: no loop point passed
        assert stream.wraps == wraps and p.fade_from is not None  # and it crossfades
    finally:
        p.close()


def playing(media, **player):
    """A player on the renders in `media` with a clock the test moves, once its first sequence plays."""
    clock = ManualClock()
    p = make_player([media], clock=clock, crossfade=0.0, **player)
    if not run_until(p, lambda: p.playback.seq is not None and p.playback.main is not None and p.playback.main.primed):
        p.close()
        pytest.fail("the player did not start playing")
    return p, clock


def rewrite(folder, new):
    """The render in `new` moved over the one in `folder`, as `run.py render` leaves it: each file replaced whole."""
    import os

    for name in ("loop.mp4", "manifest.json"):
        os.replace(new / name, folder / name)


def test_a_render_renamed_while_it_plays_goes_on_from_its_new_folder(tmp_path, caplog):
    """A show of one sequence whose folder is renamed (a technician tidying up): the loop on screen reads the old
    path at its loop point, which is gone; it carries on from the new folder, never black, never benched."""
    make_render(tmp_path / "a", "a", segments=(8, 8))
    p, clock = playing(tmp_path)
    try:
        pb = p.playback
        (tmp_path / "a").rename(tmp_path / "renamed")
        p.scanner.trigger()
        assert run_until(p, lambda: pb.seq.manifest.loop.parent.name == "renamed")
        assert run_until(p, ticking(clock, lambda: pb.main.path.parent.name == "renamed" and pb.main.wraps >= 1),
                         timeout=20)
        assert pb.seq.name == "a" and p.playlist.playable("a")
        assert "nothing playable" not in caplog.text
    finally:
        p.close()


def test_a_render_rewritten_in_place_takes_over_at_its_loop_point(tmp_path):
    """`run.py render` again into the folder on screen: the old manifest goes first (the scan sees the sequence
    leave), the new one comes last. The new render's subjects are the ones commands reach, and its loop plays from
    the loop point on, even though it comes back as "added", not "changed"."""
    make_render(tmp_path / "media" / "a", "a", segments=(8, 8))
    p, clock = playing(tmp_path / "media")
    try:
        pb = p.playback
        old = pb.main
        (tmp_path / "media" / "a" / "manifest.json").unlink()
        p.scanner.trigger()
        assert run_until(p, lambda: pb.delisted)
        rewrite(tmp_path / "media" / "a", make_render(tmp_path / "new", "a", segments=(6, 6, 6)))
        p.scanner.trigger()
        assert run_until(p, lambda: not pb.delisted)
        assert [e.name for e in pb.seq.manifest.subjects] == ["s0", "s1", "s2"]
        assert run_until(p, ticking(clock, lambda: pb.main is not old and pb.main.primed), timeout=20)
        assert old.wraps >= 1  # at its loop point, not before
        p.submit(Command("subject", "s2"))
        assert run_until(p, ticking(clock, lambda: p.status(p.clock())["subject_name"] == "s2"))
        assert run_until(p, ticking(clock, lambda: pb.main.shown is not None and 12 <= pb.main.shown.index < 18))
    finally:
        p.close()


def test_a_render_renamed_before_the_next_scan_is_looked_for_not_benched(tmp_path, caplog):
    """The folder is renamed and the loop point comes before the next media scan: the old video is gone when the
    decoder opens it again. The picture holds, a scan is made at once, and the new folder takes over."""
    make_render(tmp_path / "a", "a", segments=(8, 8))
    p, clock = playing(tmp_path, rescan_every=3600.0)
    try:
        pb = p.playback
        (tmp_path / "a").rename(tmp_path / "renamed")
        assert run_until(p, ticking(clock, lambda: pb.vanished is not None), timeout=20)
        assert run_until(p, lambda: pb.seq.manifest.loop.parent.name == "renamed")  # the clock stands: it holds
        assert run_until(p, ticking(clock, lambda: pb.main.path.parent.name == "renamed" and pb.main.primed))
        assert p.playlist.playable("a") and "nothing playable" not in caplog.text
    finally:
        p.close()


def test_each_rewrite_takes_over_at_the_next_loop_point(tmp_path):
    """A jump within the sequence (the takeover is one) starts a loop stream that counts its passes from none."""
    make_render(tmp_path / "media" / "a", "a", segments=(8, 8))
    p, clock = playing(tmp_path / "media")
    try:
        pb = p.playback
        for k in range(2):
            old = pb.main
            rewrite(tmp_path / "media" / "a", make_render(tmp_path / f"new{k}", "a", segments=(8, 8 + k + 1)))
            p.scanner.trigger()
            assert run_until(p, lambda: pb.seq.manifest.loop_frames == 17 + k)
            assert run_until(p, ticking(clock, lambda: pb.main is not old and pb.main.primed), timeout=20)
            assert old.wraps == 1, k
    finally:
        p.close()


def test_a_subject_sent_right_after_a_reload_is_looked_up_in_what_the_scan_finds(tmp_path, caplog):
    """The live inbox announces a visitor as "/reload" then "/subject N", back to back: N is in the new render,
    which only the media scan the /reload asks for will see. The jump waits for that scan."""
    make_render(tmp_path / "media" / "a", "a", segments=(8, 8))
    p, clock = playing(tmp_path / "media")
    try:
        pb = p.playback
        rewrite(tmp_path / "media" / "a", make_render(tmp_path / "new", "a", segments=(8, 8, 8)))
        p.submit(Command("reload"))
        p.submit(Command("subject", 2))
        assert run_until(p, lambda: p.status(p.clock())["subject"] == 2)  # the clock stands: no loop point
        assert pb.seq.manifest.loop_frames == 24 and pb.main.path == pb.seq.manifest.loop
        assert run_until(p, ticking(clock, lambda: pb.main.shown is not None and pb.main.shown.index >= 16))
        assert "no such subject" not in caplog.text
    finally:
        p.close()


def test_status_names_the_subject_of_the_video_on_screen_until_its_new_render_takes_over(tmp_path):
    """Paused on a subject while the render is rewritten: the screen still shows the old video, so /status reads
    its frame through the old manifest, not through the new one, where the same frame is another subject's."""
    make_render(tmp_path / "media" / "a", "a", segments=(8, 8))
    p, clock = playing(tmp_path / "media")
    try:
        pb = p.playback
        p.submit(Command("subject", 1))
        p.submit(Command("pause"))
        assert run_until(p, ticking(clock, lambda: not pb.playing and pb.main.shown is not None
                                    and 8 <= pb.main.shown.index < 12 and pb.main.primed))
        rewrite(tmp_path / "media" / "a", make_render(tmp_path / "new", "a", segments=(12, 4)))  # frame 8: s0 now
        p.scanner.trigger()
        assert run_until(p, lambda: pb.seq.manifest.subjects[0].last_frame == 11)
        assert p.status(p.clock())["subject_name"] == "s1"
    finally:
        p.close()


def test_a_loop_deleted_for_a_new_render_is_left_at_once(tmp_path):
    """`run.py forget` deletes the loop that showed the forgotten visitor and writes one without them (a live show's
    loops have names of their own): the player, rescanning, leaves the old video now, not at its loop point."""
    import json

    make_render(tmp_path / "media" / "a", "a", segments=(8, 8))
    p, clock = playing(tmp_path / "media")
    try:
        pb = p.playback
        folder, new = tmp_path / "media" / "a", make_render(tmp_path / "new", "a", segments=(8,))
        (new / "loop.mp4").replace(folder / "loop.b.mp4")
        manifest = json.loads((new / "manifest.json").read_text())
        manifest["loop"]["file"] = "loop.b.mp4"
        (new / "manifest.json").write_text(json.dumps(manifest))
        (new / "manifest.json").replace(folder / "manifest.json")
        (folder / "loop.mp4").unlink()
        p.submit(Command("reload"))
        assert run_until(p, lambda: pb.main.path.name == "loop.b.mp4")  # the clock stands: no loop point passed
        assert run_until(p, ticking(clock, lambda: pb.main.primed and pb.main.shown.index >= 4))
    finally:
        p.close()


def test_a_default_sequence_not_found_is_named_once(tmp_path, caplog):
    make_render(tmp_path / "a", "a", segments=(8,))
    p, clock = playing(tmp_path, default_sequence="shwo2")  # a typo for "show2"
    try:
        p.scanner.trigger()
        assert run_until(p, lambda: p.scanner.covered >= 1)
        run_until(p, lambda: False, timeout=0.2)
        assert caplog.text.count("player.default_sequence 'shwo2' is not among the renders found (a)") == 1
    finally:
        p.close()


def test_status_is_strict_json_whatever_a_figure_is():
    from installation.player import status_json

    text = status_json({"fps": float("nan"), "sync": {"offset_ms": float("inf"), "peers": [1.5, -float("inf")]}})
    assert json.loads(text) == {"fps": None, "sync": {"offset_ms": None, "peers": [1.5, None]}}


# ----- opening hours ------------------------------------------------------------------------------------------------

MONDAY = dt.datetime(2026, 12, 7)  # a Monday


def hours(**days) -> Config:
    return Config().override({"schedule": {"enabled": True, **days}})


def test_opening_hours_change_at_the_exact_minute():
    s = Schedule.from_config(hours(monday="10:00-13:00, 14:00-18:00", tuesday="").schedule)
    at = lambda h, m, s_=0, day=0: MONDAY + dt.timedelta(days=day, hours=h, minutes=m, seconds=s_)  # noqa: E731
    assert [s.is_open(at(*t)) for t in ((9, 59, 59), (10, 0), (12, 59, 59), (13, 0), (14, 0), (17, 59, 59),
                                         (18, 0))] == [False, True, True, False, True, True, False]
    assert not s.is_open(at(12, 0, day=1))  # Tuesday: closed all day
    assert s.is_open(at(3, 0, day=2))  # Wednesday: the default, all day
    assert s.next_change(at(18, 0)) == at(0, 0, day=2)  # closed through Tuesday, open from Wednesday's start
    assert Schedule.from_config(Config().schedule) is None  # off by default


class Wall:
    def __init__(self, when: dt.datetime):
        self.when = when

    def __call__(self) -> dt.datetime:
        return self.when


def scheduled_player(tmp_path, wall, **schedule):
    from installation.player import Player

    cfg = Config().override({"player": {"windowed": True, "window_size": [SIZE, SIZE], "attract_after": 0.0,
                                        "move_interval": 0.0, "blackout_fade": 0.0, "crossfade": 0.0},
                             "osc": {"enabled": False}, "schedule": {"enabled": True, **schedule}})
    p = Player(cfg, [tmp_path], wall=wall)
    p.open()
    return p


def test_a_closing_crossed_while_the_player_was_off_holds_at_start_and_opening_lifts_it(tmp_path):
    make_render(tmp_path / "a", "a", segments=(12,))
    wall = Wall(MONDAY + dt.timedelta(hours=19))  # it closed at 18:00, while the player was off
    p = scheduled_player(tmp_path, wall, monday="10:00-18:00", tuesday="10:00-18:00")
    try:
        assert p.blackout and p.black_level == 1.0 and p.status(p.clock())["schedule"] == "closed"
        assert run_until(p, lambda: p.playback.main is not None and p.drawn)
        assert p.canvas.pixels().max() == 0  # black from the first frame drawn
        assert run_until(p, lambda: not p.playback.playing)  # and no decoding all night
        wall.when = MONDAY + dt.timedelta(days=1, hours=9, minutes=59, seconds=59)
        for _ in range(5):
            p.step()
        assert p.blackout  # not a second early
        wall.when = MONDAY + dt.timedelta(days=1, hours=10)
        p.step()
        assert not p.blackout and p.playback.playing and p.status(p.clock())["schedule"] == "open"
        assert run_until(p, lambda: p.black_level == 0.0 and p.playback.main.shown.index > 0)
        p.step()
        assert p.canvas.pixels().max() == 255
    finally:
        p.close()


def test_outside_the_hours_a_chosen_sequence_plays(tmp_path):
    make_render(tmp_path / "a", "a", segments=(8,))
    make_render(tmp_path / "night", "night", segments=(8,))
    wall = Wall(MONDAY + dt.timedelta(hours=17, minutes=59))
    p = scheduled_player(tmp_path, wall, monday="10:00-18:00", outside="sequence", outside_sequence="night")
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.seq is not None and pb.seq.name == "a")
        wall.when = MONDAY + dt.timedelta(hours=18)
        assert run_until(p, lambda: pb.seq.name == "night") and not p.blackout
        wall.when = MONDAY + dt.timedelta(days=1)  # Tuesday 00:00: open all day (the default)
        assert run_until(p, lambda: pb.seq.name == "a")
    finally:
        p.close()


def test_a_sequence_left_behind_stays_away_once_the_opening_hours_have_chosen_what_plays(tmp_path):
    """A re-render that finishes after closing time: the sequence it took off the screen does not push the night's
    sequence aside."""
    for name in ("a", "b", "night"):
        make_render(tmp_path / name, name, segments=(8,))
    wall = Wall(MONDAY + dt.timedelta(hours=17))
    p = scheduled_player(tmp_path, wall, monday="10:00-18:00", outside="sequence", outside_sequence="night")
    try:
        pb = p.playback
        assert run_until(p, lambda: pb.seq is not None and pb.seq.name == "a" and pb.main.primed)
        manifest = (tmp_path / "a" / "manifest.json").read_text()
        (tmp_path / "a" / "manifest.json").unlink()  # a render of "a" starts again
        p.scanner.trigger()
        assert run_until(p, lambda: pb.seq.name == "b") and pb.left_behind == "a"
        wall.when = MONDAY + dt.timedelta(hours=18)
        assert run_until(p, lambda: pb.seq.name == "night")
        (tmp_path / "a" / "manifest.json").write_text(manifest)  # it finishes
        number = p.scanner.trigger()
        assert run_until(p, lambda: p.scanner.covered >= number)
        for _ in range(10):
            p.step()
        assert pb.seq.name == "night"
    finally:
        p.close()


def test_new_opening_hours_by_sighup_take_effect_from_the_state_in_force(tmp_path):
    """Closed (black), then the hours are changed and reloaded: open now, it plays; closed again, black; closed with
    a sequence outside the hours, that sequence plays (a reload was taken as a start-up: black stayed)."""
    make_render(tmp_path / "a", "a", segments=(8,))
    make_render(tmp_path / "night", "night", segments=(8,))
    wall = Wall(MONDAY + dt.timedelta(hours=19))
    p = scheduled_player(tmp_path, wall, monday="10:00-18:00")
    try:
        pb = p.playback
        assert run_until(p, lambda: p.blackout and not pb.playing and pb.seq is not None)
        base = p.cfg.override({"schedule": {"monday": "10:00-22:00"}})
        p._reconfigure(base)  # what SIGHUP does with a changed config.toml
        assert run_until(p, lambda: not p.blackout and pb.playing and pb.seq.name == "a" and p.black_level == 0.0)
        p._reconfigure(base.override({"schedule": {"monday": "10:00-18:00"}}))
        assert run_until(p, lambda: p.blackout)
        p._reconfigure(base.override({"schedule": {"monday": "10:00-18:00", "outside": "sequence",
                                                   "outside_sequence": "night"}}))
        assert run_until(p, lambda: pb.seq.name == "night" and not p.blackout and pb.playing)
    finally:
        p.close()


# ----- the systemd watchdog, the heartbeat, the run record ----------------------------------------------------------

@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock, str(tmp_path / "notify")
    sock.close()


def received(sock) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_the_watchdog_is_pinged_only_while_frames_advance(notify_socket):
    sock, path = notify_socket
    w = Watchdog.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert w.every == 1.0 and Watchdog.from_env({}) is None
    assert w.tick(0.0, frames_shown=10, expecting=True)  # the first tick pings
    assert not w.tick(0.5, frames_shown=20, expecting=True)  # within the half interval
    assert w.tick(1.0, frames_shown=20, expecting=True)
    assert not w.tick(2.0, frames_shown=20, expecting=True)  # no new frame: systemd will restart it
    assert not w.tick(3.0, frames_shown=20, expecting=True)
    assert w.tick(3.1, frames_shown=21, expecting=True)  # moving again
    assert w.tick(4.2, frames_shown=21, expecting=False)  # paused: standing still is right
    assert received(sock) == ["WATCHDOG=1"] * 4


def test_a_notify_socket_nobody_reads_never_blocks_the_player(notify_socket, caplog):
    """The socket's queue holds net.unix.max_dgram_qlen datagrams (10 here, 512 where systemd booted the machine);
    past that a blocking sendto waited for ever, and the main loop with it."""
    sock, path = notify_socket
    w = Watchdog.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2"})
    sent = []
    with caplog.at_level("WARNING", logger="installation.service"):
        ticking = threading.Thread(target=lambda: sent.extend(w.tick(t, t, True) for t in range(5000)), daemon=True)
        ticking.start()
        ticking.join(timeout=30)
    assert not ticking.is_alive() and len(sent) == 5000
    assert sent.count(True) == len(received(sock)) >= 1 and not all(sent)
    assert caplog.text.count("systemd notification WATCHDOG failed") == 1


def test_a_slow_picture_keeps_the_watchdog_fed_and_a_stuck_one_does_not(notify_socket):
    """A 1 fps render at /speed 0.05 shows a frame every 20 s, far past the 5 s between pings (WatchdogSec=10):
    that is the picture moving as it should, not a hang. Two frame periods without a frame is a hang."""
    sock, path = notify_socket
    w = Watchdog.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})  # a ping every 5 s
    assert w.tick(0.0, frames_shown=1, expecting=True, frame_period=20.0)
    assert [w.tick(t, frames_shown=1, expecting=True, frame_period=20.0) for t in (5.0, 10.0, 15.0, 20.0)] == [True] * 4
    assert w.tick(20.5, frames_shown=2, expecting=True, frame_period=20.0) is False  # half interval not yet over
    assert w.tick(25.0, frames_shown=2, expecting=True, frame_period=20.0)
    assert not w.tick(61.0, frames_shown=2, expecting=True, frame_period=20.0)  # 40.5 s on one frame: stuck
    assert not w.tick(61.0, frames_shown=2, expecting=True)  # at full speed the 5 s alone count
    assert w.tick(62.0, frames_shown=3, expecting=True, frame_period=20.0)
    assert received(sock) == ["WATCHDOG=1"] * 7  # read: the socket's queue holds only 10 here
    assert w.tick(70.0, frames_shown=3, expecting=False, frame_period=20.0)  # paused: standing still is right
    assert w.tick(170.0, frames_shown=3, expecting=False, frame_period=20.0)
    # playing again: the next frame is up to a frame period away, and the pause does not count against it
    assert [w.tick(t, frames_shown=3, expecting=True, frame_period=20.0) for t in (175.0, 180.0, 185.0)] == [True] * 3
    assert received(sock) == ["WATCHDOG=1"] * 5


def test_the_player_gives_the_watchdog_its_frame_period_at_the_present_speed(tmp_path, notify_socket, monkeypatch):
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    make_render(tmp_path / "a", "a", segments=(20,), fps=2)
    p = make_player([tmp_path])
    periods = []
    tick = p.watchdog.tick
    monkeypatch.setattr(p.watchdog, "tick", lambda *a: periods.append(a[3]) or tick(*a))
    try:
        assert run_until(p, lambda: p.playback.main is not None and periods and periods[-1] == pytest.approx(0.5))
        p.submit(Command("speed", 0.05))
        assert run_until(p, lambda: periods[-1] == pytest.approx(10.0))  # 1 / (2 fps * 0.05)
    finally:
        p.close()


def test_the_player_stops_pinging_when_its_picture_sticks(tmp_path, notify_socket, monkeypatch):
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # a ping due every 10 ms
    make_render(tmp_path / "a", "a", segments=(100,))
    p = make_player([tmp_path])
    try:
        pb = p.playback
        assert received(sock)[:1] == ["READY=1"]
        assert run_until(p, lambda: pb.main is not None and pb.main.primed and p.watchdog.pings >= 3)
        monkeypatch.setattr(pb.main.decoder, "get", lambda: None)  # a decoder that hangs: no frame ever comes
        stuck = p.stats.frames_shown
        assert run_until(p, lambda: pb.main.clock.due(p.clock()) > pb.main.shown.pos + 1)  # a frame overdue
        t = time.monotonic()
        assert run_until(p, lambda: time.monotonic() > t + 0.2)  # past two frame periods (2/24 s): stuck
        pings = p.watchdog.pings
        t = time.monotonic()
        assert run_until(p, lambda: time.monotonic() > t + 0.3)  # 30 intervals go by
        assert p.watchdog.pings <= pings + 1 and p.stats.frames_shown == stuck
        received(sock)  # read the pings so far: the socket's queue holds only 10 here, and STOPPING=1 must fit
        p.submit(Command("pause"))  # paused, standing still is right: the pings come back
        assert run_until(p, lambda: p.watchdog.pings >= pings + 3)
    finally:
        p.close()
    assert "STOPPING=1" in received(sock)


def test_the_heartbeat_reaches_the_show_controller(tmp_path):
    from pythonosc.osc_message import OscMessage

    controller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    controller.bind(("127.0.0.1", 0))
    controller.settimeout(10)
    beat = Heartbeat("127.0.0.1", controller.getsockname()[1], every=1.0)
    try:
        assert beat.tick(100.0, lambda: (1.5, 36, 0, "a")) and not beat.tick(100.5, lambda: (2.0, 48, 0, "a"))
        msg = OscMessage(controller.recv(4096))
        assert msg.address == "/heartbeat" and list(msg.params) == [1.5, 36, 0, "a"]
    finally:
        beat.close()
        controller.close()


def test_the_run_record_says_why_the_player_started(tmp_path):
    path = tmp_path / "player.state"
    first = RunRecord(path)
    assert first.begin(0.0).startswith("first start")
    first.end("SIGTERM")
    second = RunRecord(path)
    assert second.begin(0.0).startswith("the last run stopped cleanly (SIGTERM)")
    # second never ends: killed, crashed, power lost
    third = RunRecord(path)
    assert third.begin(0.0).startswith("the last run ended without stopping")
    assert json.loads(path.read_text())["stopped"] is None


# ----- start-up messages ---------------------------------------------------------------------------------------------

def test_each_bad_media_path_gets_its_own_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_video(tmp_path / "loop.mp4", [0, 1])
    cases = {tmp_path / "missing": "no such file or folder", tmp_path / "loop.mp4": "a file, not a manifest",
             tmp_path / "empty": "no renders in this folder"}
    for path, words in cases.items():
        result = scan([path], {})
        assert result.sequences == () and len(result.problems) == 1, result.problems
        assert result.problems[0] == f"{path}: {words}" + result.problems[0].split(words, 1)[1]
        assert check(Config(), [path]) == 1
        out = capsys.readouterr().out
        assert f"problem: {result.problems[0]}" in out  # --check says the same
    assert len({scan([p], {}).problems[0].split(": ", 1)[1] for p in cases}) == 3


def test_a_stream_of_reloads_holds_a_move_no_longer_than_one_reload(tmp_path):
    """Each /reload asks for a scan later than the last; when each restarted the hold, 50 a second held every move
    for as long as they came (moves wait at most RELOAD_HOLD for a /reload's scan)."""
    from installation.player import RELOAD_HOLD

    make_render(tmp_path / "media" / "a", "a", segments=(8, 8))
    p, clock = playing(tmp_path / "media")
    try:
        p.submit(Command("pause"))  # on subject 0: only the jump can show subject 1
        assert run_until(p, lambda: not p.playback.playing)
        start = clock()
        p.submit(Command("reload"))
        p.submit(Command("subject", 1))

        def jumping() -> bool:  # the jump is made (its decoder starting), or done
            return p.playback.incoming is not None or p.status(p.clock())["subject"] == 1

        def flooded() -> bool:
            p.submit(Command("reload"))  # before every turn: the scan it asks for is never the one just finished
            clock.advance(0.02)
            return jumping() or clock() - start > 4 * RELOAD_HOLD

        assert run_until(p, flooded, timeout=60)
        assert jumping() and clock() - start <= RELOAD_HOLD + 0.1, clock() - start
        assert run_until(p, lambda: p.status(p.clock())["subject"] == 1)
    finally:
        p.close()
