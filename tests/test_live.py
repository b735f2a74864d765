"""The live inbox (render/pipeline/live.py, run.py watch / forget): complete files only, rejection with a reason,
photos added once, nothing lost or half-done across a kill, no copy of a photo kept, forget and retirement leave no
trace, and the player is told. Renders are tiny; nothing here depends on the machine's speed."""

import dataclasses
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
from PIL import Image
from pythonosc.osc_message import OscMessage

from render.pipeline.chain import sequence_config
from render.pipeline import live
from render.pipeline.live import (InboxScanner, LiveError, LiveShow, original_name, queue, reject, send_subject,
                                   visitor_name)
from sequences.config import Config
from sequences.manifest import read_manifest
from sequences.sequence import _NAME, load_sequence
from sequences.video import read_video
from tests.test_render import SUBJECTS, run_cli, write_sequence

pytestmark = [pytest.mark.skipif(not (SUBJECTS / "obama.jpg").exists(), reason="demo photos missing: run make setup"),
              pytest.mark.usefixtures("one_thread")]

TINY = ('[render]\nsteps = 12\nevery = 3\nsize = 32\nfps = 12\npreset = "ultrafast"\nupscale = "none"\n')


def config(seq, tmp_path: Path, **live) -> Config:
    """The settings `run.py watch` would use for `seq` (the file's TINY [render] included), with a private cache and
    a quick inbox."""
    return sequence_config(seq, Config(), {"cache_dir": str(tmp_path / "cache"),
                                           "live": {"settle": 0.0, "poll": 0.05, "announce": False, **live}})


@pytest.fixture(scope="module")
def base_show(tmp_path_factory):
    """A one-subject show rendered once; each test starts from a copy (its projections are reused)."""
    folder = tmp_path_factory.mktemp("show")
    seq = load_sequence(write_sequence(folder, "show", [("obama", SUBJECTS / "obama.jpg")], TINY))
    LiveShow(seq, config(seq, folder), folder / "out", folder / "inbox").resume()
    return folder


@pytest.fixture
def show(base_show, tmp_path):
    """show(**live settings) -> a LiveShow on a copy of the rendered show, with an empty inbox in tmp_path."""
    shutil.copytree(base_show / "out", tmp_path / "out")

    def make(**live) -> LiveShow:
        seq = load_sequence(write_sequence(tmp_path, "show", [("obama", SUBJECTS / "obama.jpg")], TINY))
        (tmp_path / "inbox").mkdir(exist_ok=True)
        return LiveShow(seq, config(seq, tmp_path, **live), tmp_path / "out", tmp_path / "inbox")

    return make


def drop(inbox: Path, photo: str, name: str | None = None, mirror: bool = False) -> Path:
    """A photo moved into the inbox whole (an hour old, as `mv` keeps a file's time)."""
    dest = inbox / (name or photo)
    if mirror:
        Image.open(SUBJECTS / photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dest)
    else:
        shutil.copyfile(SUBJECTS / photo, dest)
    os.utime(dest, (time.time() - 3600,) * 2)
    return dest


def names_on_screen(out: Path) -> list[str]:
    return [s.name for s in read_manifest(out).subjects]


def assert_consistent(out: Path) -> None:
    """The manifest's loop exists and holds exactly its subjects' frames; every segment it names exists."""
    manifest = read_manifest(out)
    assert manifest.loop.is_file()
    assert sum(s.last_frame - s.first_frame + 1 for s in manifest.subjects) == manifest.loop_frames
    assert len(list(read_video(manifest.loop))) == manifest.loop_frames
    assert all((out / f).is_file() for f in manifest.raw["loop"]["segments"])


# ----------------------------------------------------------------------------------------- complete files only


def test_a_file_still_growing_is_not_taken_until_it_stands_still(tmp_path):
    scanner = InboxScanner(tmp_path, settle=2.0)
    photo = tmp_path / "visitor.jpg"
    photo.write_bytes(b"x" * 100)
    now = time.time()
    os.utime(photo, (now, now))
    assert scanner.scan(now) == []                       # just written
    with open(photo, "ab") as f:
        f.write(b"y" * 100)                              # still growing, 1.5 s later
    os.utime(photo, (now + 1.5, now + 1.5))
    assert scanner.scan(now + 1.5) == []
    assert scanner.scan(now + 3.0) == []                 # its new size was first seen at +1.5
    assert scanner.scan(now + 3.6) == [photo]            # 2 s unchanged


def test_a_file_moved_in_is_taken_at_once_and_upload_names_never(tmp_path):
    for name in ("a.jpg.part", "b.jpg.crdownload", "c.tmp", ".d.jpg", "e.JPG.PART"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "rejected").mkdir()
    moved = tmp_path / "moved.jpg"
    moved.write_bytes(b"x")
    os.utime(moved, (time.time() - 60,) * 2)
    scanner = InboxScanner(tmp_path, settle=2.0)
    assert scanner.scan() == [moved]
    for name in ("a.jpg.part", "b.jpg.crdownload", "c.tmp"):
        os.utime(tmp_path / name, (time.time() - 60,) * 2)
    assert scanner.scan() == [moved]


def test_a_visitors_name_is_a_valid_subject_name_whatever_the_file_is_called():
    when = time.mktime((2026, 12, 4, 18, 15, 2, 0, 0, -1))
    names = {"Anna Müller (1).JPG": "Anna-Müller-1-20261204-181502", "a--b.jpg": "a-b-20261204-181502",
             "__--...jpg": "visitor-20261204-181502", "x - - y.png": "x-y-20261204-181502"}
    for filename, expected in names.items():
        assert visitor_name(filename, when, set()) == expected and _NAME.fullmatch(expected)
    assert visitor_name("a.jpg", when, {"a-20261204-181502"}) == "a-20261204-181502-2"


# --------------------------------------------------------------------------------------- rejection, duplicates


def test_a_photo_named_at_length_is_queued_and_one_that_cannot_move_stops_nothing(show, tmp_path, monkeypatch,
                                                                                 caplog):
    s, inbox = show(), tmp_path / "inbox"
    drop(inbox, "obama.jpg", "\u00e9" * 120 + ".jpg")  # 244 bytes: with the arrival time before it, over 255
    drop(inbox, "biden.jpg")
    assert s.take() == 2
    queued = queue(inbox)
    assert [original_name(q)[-4:] for q in queued] == [".jpg", ".jpg"]
    assert all(len(q.name.encode()) <= 255 for q in queued)
    rejected = reject(inbox, queued[0], "a reason")  # and rejected/ has room for its reason file
    assert rejected.is_file() and rejected.with_name(rejected.name + ".txt").read_text() == "a reason\n"

    real = live.claim

    def claim(inbox, photo, arrival_ns):
        if photo.name == "locked.jpg":
            raise PermissionError(13, "Permission denied")
        return real(inbox, photo, arrival_ns)

    monkeypatch.setattr(live, "claim", claim)
    drop(inbox, "obama.jpg", "locked.jpg")
    drop(inbox, "biden.jpg", "later.jpg")
    assert s.take() == 1 and s.take() == 0
    assert caplog.text.count("locked.jpg: cannot move it into the queue (Permission denied)") == 1
    assert (inbox / "locked.jpg").is_file() and original_name(queue(inbox)[-1]) == "later.jpg"
    for queued in queue(inbox):
        queued.unlink()
    assert not s.pending()  # `watch --until-idle` ends: the photo it cannot move is not work left to do


def test_bad_photos_are_rejected_with_a_reason_and_a_photo_twice_is_added_once(show, tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(30)
    s = show(announce=True)
    s.cfg = dataclasses.replace(s.cfg, osc=dataclasses.replace(s.cfg.osc, port=listener.getsockname()[1]))
    inbox = tmp_path / "inbox"
    (inbox / "notes.jpg").write_text("not a photo")
    Image.new("RGB", (200, 200), "gray").save(inbox / "wall.png")  # an image with no face
    drop(inbox, "biden.jpg")
    drop(inbox, "biden.jpg", "biden-copy.jpg")
    for p in inbox.iterdir():
        os.utime(p, (time.time() - 3600,) * 2)
    s.watch(until_idle=True)

    rejected = inbox / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == ["notes.jpg", "notes.jpg.txt", "wall.png", "wall.png.txt"]
    assert "not an image" in (rejected / "notes.jpg.txt").read_text()
    assert "face" in (rejected / "wall.png.txt").read_text()
    assert all(len(p.read_text().splitlines()) == 1 for p in rejected.glob("*.txt"))
    visitors = [v["name"] for v in s.visitors()]
    assert len(visitors) == 1 and visitors[0].startswith(("biden-", "biden-copy-"))
    assert names_on_screen(s.out) == ["obama", visitors[0]]
    assert not queue(inbox) and not [p for p in inbox.iterdir() if p.is_file()]
    assert_consistent(s.out)
    # the player is told to rescan, then to jump to the new face
    messages = [OscMessage(listener.recv(1024)) for _ in range(2)]
    assert [(m.address, m.params) for m in messages] == [("/reload", []), ("/subject", [1])]
    assert s.visitors()[0]["announced"]


def test_a_visitor_whose_projection_fails_leaves_and_the_show_goes_on(show, tmp_path, monkeypatch):
    """A projection that diverges (ProjectionError) used to leave the visitor registered: every later step rendered
    it again, failed again, and no visitor after it was ever shown."""
    from render.latent.project import ProjectionError
    from render.pipeline import chain

    real = chain.project

    def diverging(*a, **k):  # the show's own projections are reused: every one asked for is the visitor's
        raise ProjectionError("projection diverged: the loss is nan at step 3 (generator dcgan)")

    monkeypatch.setattr(chain, "project", diverging)
    s = show()
    drop(tmp_path / "inbox", "biden.jpg")
    s.watch(until_idle=True)
    assert s.visitors() == [] and names_on_screen(s.out) == ["obama"]
    reasons = list((tmp_path / "inbox" / "rejected").glob("biden-*.txt"))
    assert len(reasons) == 1 and "the loss is nan" in reasons[0].read_text()
    assert not list((s.live / "faces").glob("biden-*"))
    assert_consistent(s.out)
    monkeypatch.setattr(chain, "project", real)  # the next visitor is shown: nothing is wedged
    drop(tmp_path / "inbox", "obama2.jpg")
    s.watch(until_idle=True)
    assert [v["name"] for v in s.visitors()][0].startswith("obama2-")
    assert names_on_screen(s.out) == ["obama", s.visitors()[0]["name"]]


def test_uploads_cannot_block_the_inbox_overwrite_a_reason_or_forge_a_log_line(show, tmp_path, monkeypatch, caplog):
    """An upload called "queue" stopped the inbox for good (its folder could not be made); a link in queue/ was
    followed to a photo outside; a photo larger than memory was read whole to hash it, failed, and blocked the
    queue; a second rejected upload overwrote the first's reason; a newline in a name forged a log line."""
    from render.pipeline import live

    inbox = tmp_path / "inbox"
    s = show()
    (inbox / "queue").write_text("junk")  # an upload named like the queue folder
    (inbox / "x.jpg.txt").write_text("not an image")
    (inbox / "eve\n2026-12-05 00:00:00,000 INFO FORGED.jpg").write_text("not a photo")
    for p in inbox.iterdir():
        os.utime(p, (time.time() - 3600,) * 2)
    with caplog.at_level("INFO"):
        s.watch(until_idle=True)
    assert not any(line.startswith("2026-12-05 00:00:00,000 INFO FORGED") for line in caplog.text.splitlines())
    (inbox / "x.jpg").write_text("not a photo either")
    (inbox / "queue" / "00000000000000000001-linked.jpg").symlink_to(SUBJECTS / "obama2.jpg")  # in the queue itself
    drop(inbox, "biden.jpg")
    monkeypatch.setattr(live, "MAX_PHOTO_BYTES", (SUBJECTS / "biden.jpg").stat().st_size - 1)
    s.watch(until_idle=True)
    rejected = inbox / "rejected"
    assert (rejected / "queue.upload.txt").is_file() and (rejected / "queue.upload").read_text() == "junk"
    assert (rejected / "x.jpg.txt").read_text() == "not an image"  # the upload of that name, kept
    assert "not an image" in (rejected / "x-2.jpg.txt").read_text()  # the later upload's reason, beside it
    assert "larger than" in (rejected / "biden.jpg.txt").read_text()
    assert s.visitors() == [] and names_on_screen(s.out) == ["obama"]  # the link was never taken as a visitor


def test_with_keep_photos_false_no_copy_of_the_photo_remains(show, tmp_path):
    s = show(keep_photos=False)
    drop(tmp_path / "inbox", "biden.jpg", mirror=True)
    original = (tmp_path / "inbox" / "biden.jpg").read_bytes()
    s.watch(until_idle=True)
    assert len(s.visitors()) == 1
    copies = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size == len(original)
              and p.read_bytes() == original]
    assert copies == []
    assert not (s.live / "photos").exists()
    # the shared cache holds the show's own photo aligned, and nothing of the visitor's
    assert [p.parent.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == ["aligned"]
    # keep_photos = true keeps it, in the render folder, under the visitor's name
    s = show(keep_photos=True)
    drop(tmp_path / "inbox", "obama2.jpg")
    s.watch(until_idle=True)
    name = s.visitors()[-1]["name"]
    assert (s.live / "photos" / f"{name}.jpg").read_bytes() == (SUBJECTS / "obama2.jpg").read_bytes()


# ------------------------------------------------------------------------------------------------ retention


def test_forget_removes_every_trace_and_closes_the_loop(show, tmp_path):
    s = show(keep_photos=True)
    drop(tmp_path / "inbox", "biden.jpg")
    drop(tmp_path / "inbox", "obama2.jpg")
    os.utime(tmp_path / "inbox" / "obama2.jpg", (time.time() - 1800,) * 2)  # arrives second
    s.watch(until_idle=True)
    first, second = (v["name"] for v in s.visitors())
    assert names_on_screen(s.out) == ["obama", first, second]
    with pytest.raises(LiveError, match="not a visitor"):
        s.forget("obama")

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(30)
    s.cfg = dataclasses.replace(s.cfg, live=dataclasses.replace(s.cfg.live, announce=True),
                                osc=dataclasses.replace(s.cfg.osc, port=listener.getsockname()[1]))
    report = s.forget(first)
    assert OscMessage(listener.recv(1024)).address == "/reload"  # the player leaves the old loop at once
    listener.close()
    assert report.projections_run == 1  # the edge obama -> second that closes the gap
    assert names_on_screen(s.out) == ["obama", second]
    traces = [p for p in s.out.rglob("*") if first in p.name]
    assert traces == [], traces
    assert all(first not in v["name"] for v in s.visitors())
    assert len([p for p in s.out.glob("loop*.mp4")]) == 1  # no older loop that showed the forgotten face
    assert first not in json.dumps(read_manifest(s.out).raw)
    assert_consistent(s.out)


def test_max_subjects_retires_the_oldest_visitor_and_never_the_shows_own(show, tmp_path):
    s = show(max_subjects=1)
    drop(tmp_path / "inbox", "biden.jpg")
    s.watch(until_idle=True)
    first = s.visitors()[0]["name"]
    drop(tmp_path / "inbox", "obama2.jpg")
    s.watch(until_idle=True)
    second = s.visitors()[0]["name"]
    assert [v["name"] for v in s.visitors()] == [second]
    assert names_on_screen(s.out) == ["obama", second]
    assert [p for p in s.out.rglob("*") if first in p.name and "loop" not in p.name] == []
    assert_consistent(s.out)


# ------------------------------------------------------------------------------------- nothing lost, nothing half


def test_killed_between_registering_and_deleting_the_photo_it_is_not_added_twice(show, tmp_path):
    s = show()
    drop(tmp_path / "inbox", "biden.jpg")
    s.watch(until_idle=True)
    # the state a kill right after the registry write leaves: the photo is still queued
    (tmp_path / "inbox" / "queue").mkdir(exist_ok=True)
    shutil.copyfile(SUBJECTS / "biden.jpg", tmp_path / "inbox" / "queue" / f"{time.time_ns():020d}-biden.jpg")
    s = show()
    s.watch(until_idle=True)
    assert len(s.visitors()) == 1 and not queue(tmp_path / "inbox")
    assert len(names_on_screen(s.out)) == 2


def test_kill_and_restart_mid_ingest_loses_nothing_and_adds_each_photo_once(base_show, tmp_path):
    shutil.copytree(base_show / "out", tmp_path / "out")
    seq = write_sequence(tmp_path, "show", [("obama", SUBJECTS / "obama.jpg")], TINY)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'cache_dir = "{tmp_path / "cache"}"\n[live]\nsettle = 0.2\npoll = 0.05\nannounce = false\n')
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop(inbox, "biden.jpg")
    drop(inbox, "obama2.jpg", mirror=True)
    (inbox / "broken.jpg").write_bytes((SUBJECTS / "obama3.jpg").read_bytes()[:5000])  # truncated
    args = ("--config", str(cfg), "watch", str(seq), "--inbox", str(inbox), "--out", str(tmp_path / "out"))
    proc = run_cli(*args)
    deadline = time.monotonic() + 300
    faces = tmp_path / "out" / "live" / "faces"
    while proc.poll() is None and time.monotonic() < deadline and not (faces.is_dir() and any(faces.iterdir())):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-ingest: a face aligned, its render under way or about to start
    proc.wait()
    drop(inbox, "obama3.jpg")  # arrives while the watcher is down

    again = run_cli(*args, "--until-idle")
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    visitors = json.loads((tmp_path / "out" / "live" / "subjects.json").read_text())["visitors"]
    assert sorted(v["name"].split("-")[0] for v in visitors) == ["biden", "obama2", "obama3"]
    assert len({v["sha256"] for v in visitors}) == 3
    assert sorted(p.name for p in (inbox / "rejected").iterdir()) == ["broken.jpg", "broken.jpg.txt"]
    assert not queue(inbox) and not [p for p in inbox.iterdir() if p.is_file()]
    assert names_on_screen(tmp_path / "out") == ["obama", *(v["name"] for v in visitors)]
    assert_consistent(tmp_path / "out")
    assert (tmp_path / "out" / "live" / "watch.log").is_file()


def test_send_subject_reaches_an_osc_listener():
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(10)
    osc = dataclasses.replace(Config().osc, host="0.0.0.0", port=listener.getsockname()[1])
    send_subject(osc, 7)
    messages = [OscMessage(listener.recv(1024)) for _ in range(2)]
    assert [(m.address, m.params) for m in messages] == [("/reload", []), ("/subject", [7])]
