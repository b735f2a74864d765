"""Players in step (issue #20): clock offset from round trips under skew and jitter, pacing without seeking, the
sync protocol's refusals, region cropping, and a leader with a follower (both in this process, on 127.0.0.1):
joining, jumps on the same frame, refused commands, leader loss and return, a pause on the same frame, transition clips
handing over on their own clock, media rescans; and the frame log bench/sync.py reads."""

from __future__ import annotations

import random
import time

import pytest

from installation.clock import MAX_TRIM, OffsetEstimator, loop_error, pacing_trim, round_trip
from installation.sync import Action, Ping, State, SyncError, SyncLink, decode, encode_ping, encode_state
from installation.timing import FrameClock, place
from sequences.config import Config, ConfigError
from tests.test_player import SIZE, make_render, run_until, wait_until

# ----- clock estimation, against a simulated clock --------------------------------------------------------------


def simulated_round_trips(n, *, offset, skew, jitter, seed=0):
    """`n` round trips between our clock and a leader clock running `skew` faster and `offset` ahead, over a link
    whose one-way delays are 0.2 ms plus exponential queueing of mean `jitter` (each direction on its own)."""
    rng = random.Random(seed)
    t, out = 100.0, []
    for _ in range(n):
        t += 0.2
        t1 = t
        there = t1 + 0.0002 + rng.expovariate(1 / jitter)
        t2 = there * (1 + skew) + offset
        t3 = t2 + 0.00005
        t4 = (t3 - offset) / (1 + skew) + 0.0002 + rng.expovariate(1 / jitter)
        out.append((t1, t2, t3, t4))
    return out


def test_round_trip_is_exact_on_a_symmetric_link():
    offset, delay = round_trip(10.0, 15.001, 15.002, 10.003)
    assert offset == pytest.approx(5.0) and delay == pytest.approx(0.002)


@pytest.mark.parametrize("jitter", [0.0005, 0.005, 0.02])
def test_offset_estimate_keeps_the_best_round_trip_under_jitter_and_skew(jitter):
    est = OffsetEstimator()
    trips = simulated_round_trips(200, offset=37.25, skew=2e-5, jitter=jitter)
    naive = []
    for t1, t2, t3, t4 in trips:
        assert est.add(t1, t2, t3, t4)
        naive.append(round_trip(t1, t2, t3, t4)[0])
    t4 = trips[-1][3]
    true = t4 * 2e-5 + 37.25  # the leader's clock minus ours at the last sample
    # the estimate is within a millisecond even where single samples are off by many (mean queueing 20 ms)
    assert abs(est.offset - true) < 0.001
    assert abs(est.offset - true) <= min(abs(o - true) for o in naive[-32:]) + 0.0005


def test_offset_estimator_refuses_impossible_round_trips():
    est = OffsetEstimator()
    assert not est.add(1.0, 5.0, 4.0, 2.0)  # replied before it was received
    assert not est.add(2.0, 5.0, 5.0, 1.0)  # came back before it left
    assert not est.add(1.0, float("nan"), 5.0, 2.0)
    assert est.refused == 3 and not est.ready and est.offset == 0.0


def test_pacing_trim_is_bounded_and_closes_an_error_without_a_seek():
    assert pacing_trim(0.0) == 1.0 and pacing_trim(0.0001) == 1.0
    assert pacing_trim(0.02) > 1.0 > pacing_trim(-0.02)
    assert pacing_trim(0.9) == 1 + MAX_TRIM and pacing_trim(-0.9) == 1 - MAX_TRIM
    assert loop_error(2.0, 238.0, 240) == pytest.approx(4.0)  # the short way round the loop point
    # a follower 80 ms behind, corrected every 1/24 s: its position never steps back or jumps ahead of a frame
    leader, ours = FrameClock(24.0), FrameClock(24.0)
    leader.start(0.0, position=1.92)
    ours.start(0.0)
    t, last = 0.0, 0.0
    for _ in range(24 * 10):
        t += 1 / 24
        err = (leader.position(t) - ours.position(t)) / 24
        ours.set_trim(t, pacing_trim(err))
        pos = ours.position(t)
        assert 0 < pos - last <= 1.0 + MAX_TRIM + 1e-9
        last = pos
    assert abs(leader.position(t) - ours.position(t)) < 0.05  # under 2 ms after 10 s


# ----- protocol -------------------------------------------------------------------------------------------------


def test_state_and_ping_round_trip_through_the_wire_format():
    a = Action(3, 1234.5, "jump", "demo", "s1", "s0", 42, 0.0)
    s = State(77, 100000.123456, "demo", "loop.mp4", 12.5, True, 1.0, False, 1.0, (a,))
    group, kind, back = decode(encode_state("g", s))
    assert (group, kind) == ("g", "state") and back == s  # times survive as doubles
    p = Ping(5, 9, 123456.000001, "demo", 3.25, True)
    assert decode(encode_ping("g", p)) == ("g", "ping", p)


@pytest.mark.parametrize("data", [b"", b"\x00" * 40, b"/uncanny/sync/state\x00,s\x00\x00g\x00\x00\x00",
                                  encode_state("g", State(1, 0.0, "x", "loop.mp4", 0.0, True, 99.0, False, 1.0))])
def test_malformed_sync_packets_are_refused(data):
    with pytest.raises(SyncError):
        decode(data)


def test_foreign_and_malformed_packets_are_counted_and_ignored():
    cfg = Config().override({"sync": {"role": "follower", "group": "wall", "port": 9}}).sync
    link = SyncLink(cfg, time.perf_counter)
    try:
        good = encode_state("wall", State(1, 0.0, "x", "loop.mp4", 0.0, True, 1.0, False, 1.0))
        link.handle(encode_state("other", State(1, 0.0, "x", "loop.mp4", 0.0, True, 1.0, False, 1.0)),
                    ("127.0.0.1", 9), 0.0)  # another installation's group
        link.handle(good, ("10.1.2.3", 9), 0.0)  # not our leader
        link.handle(b"garbage", ("127.0.0.1", 9), 0.0)
        assert (link.foreign, link.refused, len(link.inbox)) == (2, 1, 0)
        link.handle(good, ("127.0.0.1", 9), 0.0)
        assert len(link.inbox) == 1
    finally:
        link.close()


# ----- region cropping ------------------------------------------------------------------------------------------


def test_region_is_cropped_before_the_fit():
    whole = place((1024, 512), (1920, 1080), "fit")
    assert place((1024, 512), (1920, 1080), "fit", (0.0, 0.0, 1.0, 1.0)) == whole
    right = place((1024, 512), (960, 1080), "fit", (0.5, 0.0, 0.5, 1.0))  # the right half on one screen of two
    assert right.scale == (1920, 960) and right.crop == (960, 0, 960, 960) and right.dest == (0, 60)
    left = place((1024, 512), (960, 1080), "fill", (0.0, 0.0, 0.5, 1.0))
    assert left.scale[1] == 1080 and left.crop[0] + left.crop[2] <= left.scale[0] // 2 + 1


@pytest.mark.parametrize("region", [[0.5, 0, 0.6, 1], [0, 0, 0, 1], [0, 0, 1], "a,b,c,d", [-0.1, 0, 0.5, 1]])
def test_bad_region_names_the_key(region):
    with pytest.raises(ConfigError, match="player.region"):
        Config().override({"player": {"region": region}})
    assert Config().override({"player": {"region": "0.5,0,0.5,1"}}).player.region == (0.5, 0.0, 0.5, 1.0)


# ----- a leader and a follower ----------------------------------------------------------------------------------


def sync_player(sources, role, port, **player):
    from installation.player import Player

    cfg = Config().override({"player": {"windowed": True, "window_size": [SIZE, SIZE], "attract_after": 0.0,
                                        "move_interval": 0.0, "crossfade": 0.0, **player},
                             "osc": {"enabled": False},
                             "sync": {"role": role, "port": port, "lead_time": 0.3, "lost_after": 0.6}})
    p = Player(cfg, sources)
    p.open()
    return p


def free_port() -> int:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def turn(*players, cond, timeout=15.0):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        for p in players:
            p.step()
        if cond():
            return True
    return False


def test_follower_joins_jumps_with_the_leader_refuses_commands_and_survives_its_loss(tmp_path):
    from installation.commands import Command

    make_render(tmp_path / "seq", segments=(48, 48, 48))
    port = free_port()
    leader = sync_player([tmp_path], "leader", port)
    follower = None
    try:
        assert turn(leader, cond=lambda: leader.playback.main is not None and leader.playback.main.primed)
        follower = sync_player([tmp_path], "follower", port)  # started late
        st = follower.status
        assert turn(leader, follower, cond=lambda: st(time.perf_counter())["sync"]["locked"])
        assert st(time.perf_counter())["sync"]["clock_offset_ms"] is not None
        # a jump made on the leader lands on the same frame on both, with no seek on the follower afterwards
        leader.apply(Command("subject", 2), time.perf_counter())
        landed = {}

        def both_at_subject_2():
            for name, p in (("leader", leader), ("follower", follower)):
                if name not in landed and p.playback.current_subject() is not None and \
                        p.playback.current_subject().index == 2 and p.playback.main.primed:
                    landed[name] = (p.playback.main.clock._t0, p.playback.main.clock._p0)
            return len(landed) == 2

        assert turn(leader, follower, cond=both_at_subject_2)
        # both anchored the target's first frame at the same leader time (same process: same clock)
        assert landed["leader"][0] == pytest.approx(landed["follower"][0], abs=1e-3)
        # commands sent to the follower are refused while it follows
        before = follower.sync.refused
        follower.apply(Command("next"), time.perf_counter())
        follower.apply(Command("pause"), time.perf_counter())
        assert follower.sync.refused == before + 2 and follower.playback.playing
        # pause on the leader pauses both (on the same frame: test_a_pause_on_the_leader_stops_every_player...)
        leader.apply(Command("pause"), time.perf_counter())
        assert turn(leader, follower, cond=lambda: not leader.playback.playing and not follower.playback.playing)
        leader.apply(Command("play"), time.perf_counter())
        assert turn(leader, follower, cond=lambda: leader.playback.playing and follower.playback.playing)
        # the leader goes (its socket; pygame's one display is shared by both players in this process)
        gone = leader
        gone.sync.close()
        leader = None
        shown = follower.stats.frames_shown
        assert turn(follower, cond=lambda: not st(time.perf_counter())["sync"]["following"])
        assert turn(follower, cond=lambda: follower.stats.frames_shown > shown + 10)
        assert not st(time.perf_counter())["sync"]["locked"]
        # a new leader: it takes over what the follower shows, so the follower locks again without a jump (not even
        # one to where it already is: the new leader's own start is not sent)
        cuts = []
        preroll = follower.playback.preroll
        follower.playback.preroll = lambda *a, **k: (cuts.append(a), preroll(*a, **k))
        leader = sync_player([tmp_path], "leader", port)
        assert turn(leader, cond=lambda: leader.playback.incoming is not None)  # its start, before it hears anyone
        assert turn(leader, follower, cond=lambda: st(time.perf_counter())["sync"]["locked"])
        assert leader.sync.adopted
        assert "jump" not in (st(time.perf_counter())["sync"]["last_correction"] or "") and not cuts
    finally:
        for p in (leader, follower, locals().get("gone")):
            if p is not None:
                p.close()


def test_wall_shows_each_half_of_one_render(tmp_path):
    """The right half of a 64x64 frame, fitted to a 64x64 window, shows the right two columns of the index grid
    (32x64, letterboxed from x = 16): the grid's columns 2 and 3, and black at the sides."""
    make_render(tmp_path / "seq", segments=(8,))
    p = run_player_region(tmp_path, [0.5, 0.0, 0.5, 1.0])
    try:
        import numpy as np
        import pygame

        rgb = pygame.surfarray.pixels3d(p.canvas.screen).swapaxes(0, 1)
        shown = p.playback.main.shown.index
        # bit k of the index sits in grid row k // 4, column k % 4; the right half shows columns 2, 3 over 64 px
        bits = [(shown >> (15 - k)) & 1 for k in range(16)]
        for r in range(4):
            for c in (2, 3):
                y, x = int((r + 0.5) * 16), 16 + int((c - 2 + 0.5) * 16)
                assert (rgb[y, x].mean() > 127) == bool(bits[4 * r + c]), (r, c)
        assert np.asarray(rgb).shape[:2] == (SIZE, SIZE) and rgb[:, :16].max() == 0 and rgb[:, 48:].max() == 0
    finally:
        p.close()


def run_player_region(folder, region):
    from tests.test_player import make_player

    p = make_player([folder], region=region, crossfade=0.0)
    assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed and p.drawn)
    assert wait_until(lambda: (p.step(), p.playback.main.shown.index >= 3)[1])
    return p


def locked_pair(tmp_path, **render):
    """A leader and a follower (started in that order) on one render, the follower locked."""
    make_render(tmp_path / "seq", **render)
    port = free_port()
    leader = sync_player([tmp_path], "leader", port)
    follower = sync_player([tmp_path], "follower", port)
    locked = lambda: follower.status(time.perf_counter())["sync"]["locked"]  # noqa: E731
    if not turn(leader, follower, cond=locked):
        leader.close()
        follower.close()
        pytest.fail("the follower did not lock")
    return leader, follower


def test_a_media_rescan_does_not_make_a_follower_jump(tmp_path):
    leader, follower = locked_pair(tmp_path, segments=(48, 48, 48))
    try:
        resyncs = []
        resync = follower.sync._resync
        follower.sync._resync = lambda *a: (resyncs.append(a[-1]), resync(*a))
        old = follower.playlist.get("seq")
        follower.scanner._known = {}  # read again, not served from the last scan: new entries for the same renders
        follower.scanner.trigger()
        assert turn(leader, follower, cond=lambda: follower.playlist.get("seq") is not old)
        t = time.perf_counter()
        assert turn(leader, follower, cond=lambda: time.perf_counter() > t + 1.0)  # states and corrections meanwhile
        assert not resyncs and follower.playback.incoming is None
        assert follower.status(time.perf_counter())["sync"]["locked"]
    finally:
        leader.close()
        follower.close()


def test_next_from_the_last_subject_still_plays_its_clip_after_a_media_rescan(tmp_path):
    """The rescan's entry for the sequence on screen is another object; by name it is the same sequence, so the
    transition clip from the subject on screen is played (and a follower's corrections agree, see above)."""
    from installation.commands import Command
    from tests.test_player import ManualClock, make_player

    make_render(tmp_path / "seq", segments=(12, 12, 12), transitions={(2, 0): 6})
    p = make_player([tmp_path], clock=ManualClock(), crossfade=0.0, transition_fade=0.0)  # time stands still
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        p.submit(Command("subject", 2))
        assert run_until(p, lambda: p.playback.current_subject() is not None and
                         p.playback.current_subject().name == "s2" and p.playback.main.primed)
        old = p.playlist.get("seq")
        p.scanner._known = {}  # read again, not served from the last scan: a new entry for the same render
        p.scanner.trigger()
        assert run_until(p, lambda: p.playlist.get("seq") is not old)
        p.submit(Command("next"))  # past the last subject: the first of the (only) sequence, through the clip
        assert run_until(p, lambda: p.playback.clip_subject is not None)
        assert p.playback.clip_subject.name == "s0" and p.playback.main.path.name == "s2--s0.mp4"
    finally:
        p.close()


def test_a_pause_on_the_leader_stops_every_player_on_the_same_frame(tmp_path):
    from installation.commands import Command

    leader, follower = locked_pair(tmp_path, segments=(48, 48, 48))
    try:
        leader.apply(Command("pause"), time.perf_counter())
        pause = next(a for a in leader.sync.actions if a.name == "pause")
        n = leader.playback.seq.manifest.loop_frames
        # made in the middle of the frame it names, so a follower a few ms off shows that frame then too
        assert leader.playback.main.video_position(pause.at, n) == pytest.approx(pause.value + 0.5, abs=1e-6)
        frame = int(pause.value)
        players = (leader, follower)
        assert turn(*players, cond=lambda: all(not p.playback.playing and p.playback.main.shown.index == frame
                                               for p in players)), \
            [(p.playback.playing, p.playback.main.shown.index, p.sync.last_correction) for p in players]
        for _ in range(20):
            for p in players:
                p.step()
        assert [p.playback.main.shown.index for p in players] == [frame, frame]
        leader.apply(Command("play"), time.perf_counter())
        assert turn(*players, cond=lambda: all(p.playback.playing and p.playback.main.shown.index != frame
                                               for p in players))
    finally:
        leader.close()
        follower.close()


def test_a_pause_that_arrives_after_its_frame_goes_back_to_it(tmp_path):
    from installation.sync import Action

    make_render(tmp_path / "seq", segments=(48, 48, 48))
    p = sync_player([tmp_path], "follower", free_port())  # no leader: it plays on alone
    try:
        assert turn(p, cond=lambda: p.playback.main is not None and p.playback.main.primed and
                    p.playback.main.shown.index >= 6)
        frame = p.playback.main.shown.index - 4  # the leader's pause named a frame we have already passed
        p.sync._make(p, Action(1, 0.0, "pause", value=float(frame)), time.perf_counter())
        assert turn(p, cond=lambda: p.playback.incoming is None and p.playback.main.shown is not None and
                    p.playback.main.shown.index == frame)
        for _ in range(20):
            p.step()
        assert not p.playback.playing and p.playback.main.shown.index == frame
    finally:
        p.close()


def test_a_synced_transition_clip_hands_over_to_the_loop_at_the_same_moment_on_every_player(tmp_path):
    """Each player changes from the clip to the loop when the clip's last frame ends on the clip's clock, not when its
    own turn notices: here the follower does not turn at all while the leader's clip ends, and still neither jumps
    nor starts its loop later than the leader."""
    from installation.commands import Command

    leader, follower = locked_pair(tmp_path, segments=(48, 48, 48),
                                   transitions={(0, 1): 36, (1, 2): 36, (2, 0): 36})
    try:
        leader.apply(Command("next"), time.perf_counter())
        players = (leader, follower)
        in_clip = lambda p: p.playback.clip_subject is not None and p.playback.main.primed  # noqa: E731
        on_loop = lambda p: p.playback.clip_subject is None and p.playback.main.primed  # noqa: E731
        assert turn(*players, cond=lambda: all(in_clip(p) for p in players))
        assert turn(leader, cond=lambda: on_loop(leader))
        handed = time.perf_counter()
        assert turn(leader, cond=lambda: time.perf_counter() > handed + 0.3)  # the leader's states say "loop"
        before = follower.sync.last_correction
        assert turn(follower, cond=lambda: on_loop(follower))
        assert follower.sync.last_correction == before  # no jump to join the leader's loop
        starts = [p.playback.main.clock.time_at(0) for p in players]  # the loop's first frame was due then
        assert starts[0] == pytest.approx(starts[1], abs=2e-3)
        assert leader.playback.main.shown.index == follower.playback.main.shown.index or \
            turn(*players, cond=lambda: leader.playback.main.shown.index == follower.playback.main.shown.index)
    finally:
        leader.close()
        follower.close()


def test_a_transition_clip_hands_over_on_its_own_clock_however_late_the_turn(tmp_path):
    from installation.commands import Command
    from tests.test_player import ManualClock, make_player, screen_index

    make_render(tmp_path / "seq", segments=(12, 12, 12), transitions={(0, 2): 6})
    clock = ManualClock()
    p = make_player([tmp_path], clock=clock, crossfade=0.0, transition_fade=0.0)
    try:
        assert run_until(p, lambda: p.playback.main is not None and p.playback.main.primed)
        p.submit(Command("subject", "s2"))
        assert run_until(p, lambda: p.playback.clip_subject is not None and p.playback.main.primed)
        end = p.playback.main.clock.time_at(6)  # the clip's six frames are over
        clock.now = end + 0.1  # the turn that notices comes 2.4 frames late
        assert run_until(p, lambda: p.playback.clip_subject is None and p.playback.main.primed)
        assert p.playback.main.clock.time_at(0) == pytest.approx(end)
        assert run_until(p, lambda: p.playback.main.shown.index == 24 + 9 + 2)  # s2's finished face, 2 frames on
        assert screen_index(p) == 35
    finally:
        p.close()


def test_frame_log_writes_each_frame_shown_once_and_is_off_by_default(tmp_path):
    from installation.commands import Command
    from tests.test_player import make_player, screen_index

    make_render(tmp_path / "seq", segments=(8, 8, 8))
    path = tmp_path / "log" / "frames.tsv"
    p = make_player([tmp_path], frame_log=str(path), crossfade=0.2)
    try:
        shown = lambda: p.playback.main.shown.index if p.playback.main and p.playback.main.shown else -1  # noqa
        assert run_until(p, lambda: shown() >= 4)
        p.submit(Command("subject", 2))  # a crossfade redraws frames more often than they change
        assert run_until(p, lambda: p.fade_from is None and shown() >= 20)
        last = screen_index(p)
    finally:
        p.close()
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# flip")
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 5 and r[2] == "seq" and r[3] == "loop.mp4" for r in rows)
    flips, dues, frames = [float(r[0]) for r in rows], [float(r[1]) for r in rows], [int(r[4]) for r in rows]
    assert flips == sorted(flips) and all(f >= d - 1e-6 for f, d in zip(flips, dues))
    assert all(a != b for a, b in zip(frames, frames[1:]))  # a frame redrawn is not a new line
    assert 16 in frames and frames[-1] == last  # the jump's target, and what the screen showed last
    q = make_player([tmp_path])
    try:
        assert q.frame_log is None
    finally:
        q.close()


def test_a_render_rewritten_under_a_locked_pair_takes_over_on_both_in_step(tmp_path):
    """The leader moves every screen into the new loop at the frame the old one reached when the jump lands; the
    follower waits for that jump rather than making its own, and stays locked without a correction."""
    import os

    leader, follower = locked_pair(tmp_path, segments=(24, 24))
    try:
        resyncs = []
        resync = follower.sync._resync
        follower.sync._resync = lambda *a: (resyncs.append(a[-1]), resync(*a))
        new = make_render(tmp_path / "new", "seq", segments=(24, 30))
        for name in ("loop.mp4", "manifest.json"):
            os.replace(new / name, tmp_path / "seq" / name)
        for p in (leader, follower):
            p.scanner.trigger()

        def taken_over(p):
            pb = p.playback
            return pb.main is not None and pb.main.tag == pb.seq.stamp and pb.seq.manifest.loop_frames == 54

        assert turn(leader, follower, cond=lambda: taken_over(leader) and taken_over(follower))
        assert turn(leader, follower, cond=lambda: follower.status(time.perf_counter())["sync"]["locked"])
        assert not resyncs
    finally:
        leader.close()
        follower.close()
