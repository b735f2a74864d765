"""The main job end to end on the embedded generator: projection, the face graph (homes, edges, segments), the loop,
clips, manifest, resume. tests/test_graph.py counts what a changed sequence runs again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from render.pipeline.chain import render_sequence
from render.pipeline.loop import seam_ratio
from render.kernels.device import fast_bf16
from render.latent.project import project
from sequences.config import Config
from sequences.manifest import read_manifest
from sequences.sequence import load_sequence
from sequences.video import probe, read_video

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = ROOT / "sequences" / "subjects"
pytestmark = pytest.mark.skipif(not (SUBJECTS / "obama.jpg").exists(), reason="demo photos missing: run make setup")

FAST = {"cache_dir": "", "render": {"steps": 24, "every": 3, "size": 64, "fps": 12, "preset": "ultrafast"}}
CLIPS = {**FAST, "render": {**FAST["render"], "transitions": "consecutive", "transition_seconds": 1.0}}  # `rendered`


def write_sequence(folder: Path, name: str, subjects: list[tuple[str, Path]], extra: str = "") -> Path:
    lines = [f'name = "{name}"', extra]
    for subject, image in subjects:
        lines += ["[[subjects]]", f'name = "{subject}"', f'image = "{image}"']
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One small two-subject render shared by the tests below."""
    folder = tmp_path_factory.mktemp("render")
    seq = load_sequence(write_sequence(folder, "pair", [("obama", SUBJECTS / "obama.jpg"),
                                                        ("astronaut", SUBJECTS / "astronaut.png")]))
    out = folder / "out"
    report = render_sequence(seq, Config(), out_dir=out, overrides=CLIPS, quiet=True)
    return out, report


def rendered_copy(rendered, folder: Path):
    """A copy of the `rendered` folder in `folder`, rendered again with its own settings (whatever tests before did
    to it), and its sequence."""
    import shutil

    out = folder / "again"
    shutil.copytree(rendered[0], out)
    seq = load_sequence(next(rendered[0].parent.glob("*.toml")))
    render_sequence(seq, Config(), out_dir=out, overrides=CLIPS, quiet=True)
    return out, seq


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not fast_bf16(torch.device("cpu")), reason="bfloat16 is emulated on this CPU, where dtype \"auto\" runs "
    "float32"))])
def test_projection_lowers_the_loss(dtype):
    from render.faces.align import align_file
    from render.models import load_generator

    G = load_generator("embedded")
    face = align_file(SUBJECTS / "astronaut.png", Config().align)
    result = project(G, face.image, steps=40, every=10, seed=1, dtype=dtype)
    assert result.latents.shape == (5, G.layout.dim)
    assert torch.equal(result.latents[0], G.mean_latent()[0].cpu())
    assert result.distances[-5:].mean() < 0.8 * result.distances[:3].mean()


def latents_of(out: Path) -> tuple[dict, dict]:
    """homes by subject, edges by "from--to", as stored in a render folder."""
    homes = {p.stem: np.load(p)["latents"] for p in (out / "latents" / "homes").glob("*.npz")}
    edges = {p.stem: np.load(p)["latents"] for p in (out / "latents" / "edges").glob("*.npz")}
    return homes, edges


def test_homes_start_from_the_mean_and_edges_from_the_previous_home(rendered):
    from render.models import load_generator

    out, _ = rendered
    homes, edges = latents_of(out)
    mean = load_generator("embedded").mean_latent()[0].numpy()
    assert set(homes) == {"obama", "astronaut"} and set(edges) == {"astronaut--obama", "obama--astronaut"}
    assert all(np.array_equal(h[0], mean) for h in homes.values())
    assert np.array_equal(edges["obama--astronaut"][0], homes["obama"][-1])  # cyclic: the first subject's edge
    assert np.array_equal(edges["astronaut--obama"][0], homes["astronaut"][-1])  # starts from the last one's home
    assert len(edges["astronaut--obama"]) == 24 // 3 + 1 and len(homes["obama"]) == 36 // 3 + 1  # home: 1.5x steps


def test_loop_is_seamless_and_manifest_matches_the_videos(rendered):
    out, report = rendered
    frames = list(read_video(out / "loop.mp4"))
    assert seam_ratio(frames) <= 1.5
    segments = [probe(out / f)["frames"] for f in read_manifest(out).raw["loop"]["segments"]]
    assert len(frames) == sum(segments) and len(segments) == 2  # loop.mp4 is its segments, joined
    manifest = read_manifest(out)
    assert manifest.name == "pair" and manifest.fps == 12 and manifest.size == (64, 64)
    assert manifest.loop_frames == len(frames) == report.loop_frames
    names = [s.name for s in manifest.subjects]
    assert names == ["obama", "astronaut"]
    assert manifest.subjects[0].first_frame == 0
    assert manifest.subjects[1].first_frame == manifest.subjects[0].last_frame + 1
    assert manifest.subjects[-1].last_frame == len(frames) - 1
    assert [s.last_frame - s.first_frame + 1 for s in manifest.subjects] == segments
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["generator"]["name"] == "embedded-dcgan64"
    for s in manifest.subjects:
        clip = list(read_video(s.clip))
        assert len(clip) == s.clip_frames
        assert seam_ratio(clip) <= 1.5  # clips are closed into loops of their own
    meta = probe(out / "loop.mp4")
    assert meta["codec"] == "h264" and "yuv420p" in meta["pix_fmt"] and "bt709" in meta["pix_fmt"]
    assert [(t.source, t.target) for t in manifest.transitions] == [("obama", "astronaut"), ("astronaut", "obama")]
    for t in manifest.transitions:
        assert len(list(read_video(t.file))) == t.frames == 12
    for name in ("contact.png", "loss.png", "config.toml"):
        assert (out / name).stat().st_size > 0
    assert not list(out.rglob(".*.tmp*"))


def test_a_transition_ends_on_the_loop_frame_where_the_player_carries_on(rendered):
    """The player cuts from a transition clip's last frame to the target's `final_frame` in loop.mp4: the same face.
    (Its first frame would show the previous subject's face: a visible cut.)"""
    out, _ = rendered
    loop = list(read_video(out / "loop.mp4"))
    raw = json.loads((out / "manifest.json").read_text())
    assert all(s["final_frame"] == s["last_frame"] for s in raw["subjects"])  # a segment ends on its home
    steps = np.median([np.abs(loop[i].astype(float) - loop[i + 1]).mean() for i in range(len(loop) - 1)])
    for t in raw["transitions"]:
        last = list(read_video(out / t["file"]))[-1].astype(float)
        target = next(s for s in raw["subjects"] if s["name"] == t["to"])
        at_final = np.abs(last - loop[target["final_frame"]]).mean()
        at_first = np.abs(last - loop[target["first_frame"]]).mean()
        assert at_final < steps < at_first, (t, at_final, steps, at_first)


def test_rendering_again_reuses_every_projection_and_segment(rendered, tmp_path):
    out, first = rendered
    seq = load_sequence(next(out.parent.glob("*.toml")))
    again = render_sequence(seq, Config(), out_dir=out, overrides=FAST, quiet=True)
    assert (again.projections_run, again.projections_reused) == (0, 4)
    assert (again.segments_encoded, again.segments_reused) == (0, 2)
    assert again.loop_frames == first.loop_frames


def test_an_unchanged_render_again_writes_nothing(rendered, tmp_path):
    """Not one file replaced (each keeps its inode and bytes), so a finished show's folder may be read-only."""
    out, seq = rendered_copy(rendered, tmp_path)
    before = {p: (p.stat().st_ino, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    report = render_sequence(seq, Config(), out_dir=out, overrides=CLIPS, quiet=True)
    assert (report.projections_run, report.segments_encoded) == (0, 0)
    after = {p: (p.stat().st_ino, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_deleted_transition_clips_are_made_again(rendered, tmp_path):
    from render.pipeline.chain import plan_sequence

    out, seq = rendered_copy(rendered, tmp_path)
    clips = sorted((out / "transitions").iterdir())
    assert len(clips) == 2
    for p in clips:
        p.unlink()
    plan = plan_sequence(seq, Config(), out_dir=out, overrides=CLIPS)
    assert [t.id for t in plan.tasks if not t.done] == ["assemble"]  # the plan says what the render will do
    report = render_sequence(seq, Config(), out_dir=out, overrides=CLIPS, quiet=True)
    assert (report.projections_run, report.segments_encoded) == (0, 0)
    assert sorted((out / "transitions").iterdir()) == clips
    assert all(probe(p)["frames"] == 12 for p in clips)  # 1 s at 12 fps


def test_the_plan_of_a_finished_render_without_the_shared_cache_has_nothing_to_run(rendered, tmp_path):
    """With cache_dir = "" the aligned faces come from the render folder (aligned/, made from the same photo and
    settings), not from a cache that does not exist; a changed photo still counts as to run."""
    from render.pipeline.chain import plan_sequence

    out, seq = rendered_copy(rendered, tmp_path)
    plan = plan_sequence(seq, Config(), out_dir=out, overrides=CLIPS)
    assert [t.id for t in plan.tasks if not t.done] == [], plan.text()
    other = write_sequence(tmp_path, "pair", [("obama", SUBJECTS / "obama2.jpg"),
                                              ("astronaut", SUBJECTS / "astronaut.png")])
    plan = plan_sequence(load_sequence(other), Config(), out_dir=out, overrides=CLIPS)
    assert "align:obama" in [t.id for t in plan.tasks if not t.done]
    assert "align:astronaut" not in [t.id for t in plan.tasks if not t.done]


def run_cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    subjects = [("obama", SUBJECTS / "obama.jpg"), ("astronaut", SUBJECTS / "astronaut.png")]
    seq = write_sequence(tmp_path, "resume", subjects,
                         '[render]\nsteps = 30\nevery = 5\nsize = 64\nfps = 12\npreset = "ultrafast"\n'
                         'upscale = "none"')
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    cfg = tmp_path / "config.toml"
    cfg.write_text('cache_dir = ""\n')  # no shared cache: the resumed run must reuse only its own finished work
    assert run_cli("--config", str(cfg), "render", str(seq), "--out", str(clean), "--quiet").wait(timeout=300) == 0

    proc = run_cli("--config", str(cfg), "render", str(seq), "--out", str(killed), "--quiet")
    marker = killed / "latents" / "homes" / "obama.npz"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "render finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists()

    resumed = run_cli("--config", str(cfg), "render", str(seq), "--out", str(killed))
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    for rel in ("latents/homes/obama.npz", "latents/homes/astronaut.npz", "latents/edges/astronaut--obama.npz",
                "latents/edges/obama--astronaut.npz"):
        a, b = np.load(clean / rel), np.load(killed / rel)
        assert np.array_equal(a["latents"], b["latents"]), rel
    assert [s.name for s in read_manifest(killed).subjects] == ["obama", "astronaut"]
    frames_a, frames_b = list(read_video(clean / "loop.mp4")), list(read_video(killed / "loop.mp4"))
    assert len(frames_a) == len(frames_b) and all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))


def test_bad_subject_is_skipped_or_stops_and_batch_goes_on(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    extra = '[render]\nsteps = 6\nevery = 3\nsize = 64\nfps = 12\npreset = "ultrafast"\nupscale = "none"'
    skip = write_sequence(tmp_path, "skip", [("bad", broken), ("obama", SUBJECTS / "obama.jpg")], extra)
    stop = write_sequence(tmp_path, "stop", [("bad", broken), ("obama", SUBJECTS / "obama.jpg")],
                          extra + '\non_bad_subject = "stop"')
    media = tmp_path / "media"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'media_dir = "{media}"\ncache_dir = ""\n')
    proc = run_cli("--config", str(cfg), "render", str(stop), str(skip))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output  # one sequence failed ...
    assert "broken.jpg" in output
    manifest = read_manifest(media / "skip")  # ... and the other rendered, without the bad subject
    assert [s.name for s in manifest.subjects] == ["obama"]
    assert manifest.raw["skipped"][0]["name"] == "bad"
    assert not (media / "stop" / "manifest.json").exists()
    # the plan of the finished render leaves the subject out as the render did: nothing to run (it listed the bad
    # subject's tasks as to run, and never the edge the loop uses)
    from render.pipeline.chain import plan_sequence
    from sequences.config import load_config

    plan = plan_sequence(load_sequence(skip), load_config(cfg))
    assert "0 to run" in plan.text() and "skipped bad: as in the last render" in plan.text(), plan.text()
    assert [t.id for t in plan.of("edge")] == ["edge:obama--obama"]
    os.utime(broken)  # the photo changed since: it is tried again
    assert any(t.id == "align:bad" and not t.done for t in plan_sequence(load_sequence(skip), load_config(cfg)).tasks)


def test_a_second_render_elsewhere_reuses_the_shared_projection_cache(tmp_path):
    seq = load_sequence(write_sequence(tmp_path, "cached", [("obama", SUBJECTS / "obama.jpg")]))
    fast = {**FAST, "cache_dir": str(tmp_path / "cache"), "render": {**FAST["render"], "steps": 6}}
    first = render_sequence(seq, Config(), out_dir=tmp_path / "a", overrides=fast, quiet=True)
    second = render_sequence(seq, Config(), out_dir=tmp_path / "b", overrides=fast, quiet=True)
    assert (first.projections_reused, second.projections_reused) == (0, 2)
    assert second.projections_run == 0
    assert np.array_equal(np.load(tmp_path / "a/latents/edges/obama--obama.npz")["latents"],
                          np.load(tmp_path / "b/latents/edges/obama--obama.npz")["latents"])


def test_chained_loop_render_with_a_stylegan2_file(tmp_path):
    """The whole render works through the generator interface with a (tiny, random) StyleGAN2 file."""
    from render.models.loading import save_generator
    from tests.test_stylegan2 import tiny

    path = tmp_path / "tiny.uncanny.pt"
    save_generator(tiny(), path)
    seq = load_sequence(write_sequence(tmp_path, "sg2", [("obama", SUBJECTS / "obama.jpg"),
                                                         ("biden", SUBJECTS / "biden.jpg")]))
    fast = {**FAST, "generator": str(path), "render": {**FAST["render"], "steps": 8, "every": 2}}
    report = render_sequence(seq, Config(), out_dir=tmp_path / "out", overrides=fast, quiet=True)
    out = tmp_path / "out"
    homes, edges = latents_of(out)
    assert homes["obama"].shape[1] == 16 * tiny().layout.num_layers  # W+: num_ws x w_dim
    assert np.array_equal(edges["obama--biden"][0], homes["obama"][-1])
    assert np.array_equal(edges["biden--obama"][0], homes["biden"][-1])
    frames = list(read_video(out / "loop.mp4"))
    assert len(frames) == report.loop_frames and seam_ratio(frames) <= 1.5
    assert read_manifest(out).raw["generator"]["resolution"] == 32


def test_a_render_again_cleans_up_after_itself_and_touches_nothing_else(rendered, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(rendered[0], out)
    seq = load_sequence(next(rendered[0].parent.glob("*.toml")))
    ours = [out / ".loop.4242.tmp.mp4", out / "clips" / ".01-obama.4242.tmp.mp4", out / ".manifest.json.ab12_xyz.tmp",
            out / "latents" / "homes" / ".obama.npz.0123abcd.tmp",
            out / "segments" / ".obama.0123456789abcdef.4242.tmp.mp4"]  # what a render killed mid-write leaves
    stale = [out / "clips" / "09-ghost.mp4", out / "transitions" / "ghost--obama.mp4", out / "aligned" / "09-ghost.png",
             out / "aligned" / "100-ghost.png", out / "clips" / "100-ghost.mp4",  # the 100th subject of a sequence
             out / "segments" / "ghost.0123456789abcdef.mp4", out / "latents" / "edges" / "ghost--obama.npz",
             out / "clips" / "ghost.0123456789abcdef.mp4"]
    users = [out / ".notes.tmp", out / "clips" / "README.txt", out / "extra" / ".take.tmp.mp4"]
    for p in ours + stale + users:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    # latents from a render with other settings (another key) must be replaced, not kept beside the new videos
    edges = out / "latents" / "edges"
    (edges / "astronaut--obama.npz").write_bytes((edges / "obama--astronaut.npz").read_bytes())
    report = render_sequence(seq, Config(), out_dir=out, overrides=CLIPS, quiet=True)
    assert (report.projections_run, report.projections_reused) == (1, 3)  # obama's edge held another key
    assert report.segments_encoded == 0  # ... and projected again to the same latents: the same segment
    assert not [p for p in ours + stale if p.exists()]
    assert all(p.read_bytes() == b"x" for p in users)
    for rel in ("homes/obama.npz", "homes/astronaut.npz", "edges/astronaut--obama.npz", "edges/obama--astronaut.npz"):
        assert np.array_equal(np.load(out / "latents" / rel)["latents"],
                              np.load(rendered[0] / "latents" / rel)["latents"])


def test_the_writers_name_their_temporaries_as_the_render_cleans_them_up(tmp_path, monkeypatch):
    """write_atomic's and write_video's temporaries (caught on their way to os.replace) match the patterns they
    publish, which are what a render deletes after a kill."""
    from sequences import atomic, video

    renamed, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(Path(src).name), replace(src, dst))[1])
    atomic.write_atomic(tmp_path / "manifest.json", "{}")
    video.write_video(tmp_path / "loop.mp4", [np.zeros((16, 16, 3), np.uint8)] * 2, 12)
    assert len(renamed) == 2 and atomic.TEMPORARY.fullmatch(renamed[0]) and video.TEMPORARY.fullmatch(renamed[1])
    assert not atomic.TEMPORARY.fullmatch(renamed[1]) and not video.TEMPORARY.fullmatch(renamed[0])


def test_the_old_manifest_goes_before_the_videos_change(rendered, tmp_path, monkeypatch):
    """A render killed while it rewrites the videos must not leave the old manifest describing the new videos."""
    import shutil

    from render.pipeline import chain

    out = tmp_path / "again"
    shutil.copytree(rendered[0], out)
    seq = load_sequence(next(rendered[0].parent.glob("*.toml")))

    def killed(parts, path):
        raise KeyboardInterrupt  # as if killed while assembling loop.mp4

    monkeypatch.setattr(chain, "concat_videos", killed)
    other = {**FAST, "render": {**FAST["render"], "transitions": "all"}}  # a change the fixture's folder never had
    with pytest.raises(KeyboardInterrupt):
        render_sequence(seq, Config(), out_dir=out, overrides=other, quiet=True)
    assert (out / "loop.mp4").exists() and not (out / "manifest.json").exists()
    # config.toml is written with the new manifest: until then it says how the videos there were made
    assert (out / "config.toml").read_bytes() == (rendered[0] / "config.toml").read_bytes()


def test_render_cli_errors_are_one_line_and_the_batch_goes_on(tmp_path):
    """A generator that cannot load, an output folder that is a file, too few steps, two sequences with one name:
    one line each, no traceback, exit status 1."""
    media = tmp_path / "media"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'media_dir = "{media}"\ncache_dir = ""\n')
    photo = SUBJECTS / "obama.jpg"
    batch = tmp_path / "batch"
    batch.mkdir()
    write_sequence(batch, "a", [("obama", photo)], 'generator = "not-a-model.pkl"')
    (batch / "b.toml").write_text((batch / "a.toml").read_text())  # same name "a": same output folder
    proc = run_cli("--config", str(cfg), "render", str(batch), "--quiet")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in output, output
    assert "not-a-model.pkl" in output and "already wrote in this batch" in output

    seq = write_sequence(tmp_path, "c", [("obama", photo)])
    (tmp_path / "a-file").write_text("")
    for args, words in ((["--out", str(tmp_path / "a-file")], "a-file"),
                        (["--steps", "1"], "render.steps (1) must be at least twice render.every")):
        proc = run_cli("--config", str(cfg), "render", str(seq), *args)
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 1 and words in output and "Traceback" not in output, output


def test_a_start_latent_holds_one_latent_of_finite_numbers(tmp_path):
    """A NaN start latent drew every frame black and the render "succeeded": refused, naming the file."""
    from render.models import load_generator
    from render.pipeline.chain import RenderError, start_latent

    G = load_generator("embedded")
    D = G.layout.dim
    cases = {"nan.npy": (np.full(D, np.nan, np.float32), "holds NaN or infinite values"),
             "inf.npy": (np.concatenate([np.zeros(D - 1), [np.inf]]), "holds NaN or infinite values"),
             "words.npy": (np.array(["a"] * D), "must hold numbers"),
             "short.npy": (np.zeros(D - 1), f"has {D - 1} values, the generator's latent has {D}")}
    for name, (array, words) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(RenderError, match=f"{name}: start latent {words}"):
            start_latent(G, str(tmp_path / name))
    np.save(tmp_path / "ok.npy", np.arange(D, dtype=np.float64))
    assert torch.equal(start_latent(G, str(tmp_path / "ok.npy")), torch.arange(D, dtype=torch.float32)[None])
    assert start_latent(G, "mean") is None


def test_the_config_toml_beside_a_render_is_valid_toml_whatever_the_sequence_file_is_called(tmp_path):
    """Its first line names the sequence file in a comment, which a newline in that name would end."""
    from render.pipeline.chain import ChainRenderer, sequence_config
    from sequences.config import load_config

    folder = tmp_path / "odd\nname \x1b[31m"
    folder.mkdir()
    seq = load_sequence(write_sequence(folder, "odd", [("obama", SUBJECTS / "obama.jpg")],
                                       '[render]\nupscale = "none"\nsteps = 7\nevery = 2\n'))
    cfg = sequence_config(seq, Config())
    renderer = ChainRenderer(seq, cfg, tmp_path / "out", quiet=True)
    (tmp_path / "out").mkdir()
    renderer.write_settings()
    written = tmp_path / "out" / "config.toml"
    assert load_config(written).render.steps == 7
    assert written.read_text().splitlines()[0].startswith("# resolved settings of sequence ")
