"""The face graph (render/pipeline/graph.py, chain.py): a changed sequence runs exactly the projections and encodes
its change needs, every join of the loop looks like any other step, and a plan says what a render would run."""

from pathlib import Path

import numpy as np
import pytest

from render.pipeline.chain import plan_sequence, render_sequence
from render.pipeline.graph import Task, neighbours, plan_tasks
from render.pipeline.loop import frame_diff
from sequences.config import Config
from sequences.manifest import read_manifest
from sequences.sequence import load_sequence
from sequences.video import read_video
from tests.test_render import SUBJECTS, run_cli, write_sequence

pytestmark = pytest.mark.skipif(not (SUBJECTS / "obama.jpg").exists(), reason="demo photos missing: run make setup")

FAST = {"cache_dir": "", "render": {"steps": 12, "every": 3, "size": 32, "fps": 12, "preset": "ultrafast"}}
PHOTOS = {"a": "obama.jpg", "b": "astronaut.png", "c": "biden.jpg", "d": "obama2.jpg", "x": "obama3.jpg"}


def render(tmp_path: Path, names: str, **overrides):
    """Render subjects `names` (letters of PHOTOS, in loop order) into tmp_path/out."""
    seq = load_sequence(write_sequence(tmp_path, "show", [(n, SUBJECTS / PHOTOS[n]) for n in names]))
    return render_sequence(seq, Config(), out_dir=tmp_path / "out", overrides={**FAST, **overrides}, quiet=True)


def counts(report) -> tuple[int, int, int, int]:
    return report.projections_run, report.projections_reused, report.segments_encoded, report.segments_reused


def test_a_change_runs_only_what_it_touches(tmp_path):
    """Adding a subject in the middle runs its home and the edges into and out of it and encodes two segments;
    removing it runs the one edge that closes the gap; swapping two neighbours runs three edges; no change runs
    nothing. (No shared cache: every count is the render folder's own.)"""
    assert counts(render(tmp_path, "abcd")) == (8, 0, 4, 0)
    assert counts(render(tmp_path, "abxcd")) == (3, 7, 2, 3)  # home x, edges b--x and x--c; segments x and c
    assert counts(render(tmp_path, "abcd")) == (1, 7, 1, 3)  # edge b--c again (its files went with x's render)
    assert counts(render(tmp_path, "acbd")) == (3, 5, 3, 1)  # edges a--c, c--b, b--d
    assert counts(render(tmp_path, "acbd")) == (0, 8, 0, 4)
    out = tmp_path / "out"
    assert sorted(p.stem for p in (out / "latents" / "edges").glob("*.npz")) == ["a--c", "b--d", "c--b", "d--a"]
    assert len(list((out / "segments").glob("*.mp4"))) == len(list((out / "clips").glob("*.mp4"))) == 4


def test_every_join_of_the_loop_is_an_ordinary_step(tmp_path):
    """Each segment ends on its home's picture and the next starts one step from it: at every join (the loop's end
    into its start among them) the step is at most 1.5x the loop's median step, measured on the decoded video, and
    so is the report's own figure."""
    report = render(tmp_path, "abc", render={**FAST["render"], "steps": 24, "every": 2})
    out = tmp_path / "out"
    frames = [f.astype(np.float32) for f in read_video(out / "loop.mp4")]
    manifest = read_manifest(out)
    assert len(frames) == manifest.loop_frames == sum(s.last_frame - s.first_frame + 1 for s in manifest.subjects)
    steps = [frame_diff(frames[i - 1], frames[i]) for i in range(len(frames))]  # steps[i]: into frame i, cyclic
    median = float(np.median(steps))
    joins = [steps[s.first_frame] / median for s in manifest.subjects]
    assert max(joins) <= 1.5, joins
    assert report.seam_ratio <= 1.5  # the same measure on the generator's frames (the decoded ones add H.264 noise)


def test_a_plan_says_what_a_half_done_render_would_run(tmp_path):
    """Two subjects rendered, a third added to the file: the plan lists every task with its dependencies, the first
    two subjects' homes and their edge done, the new subject's work to run, edges whose start is not made yet
    pending; and printing it runs nothing."""
    cache = {"cache_dir": str(tmp_path / "cache")}
    render(tmp_path, "ab", **cache)
    seq = load_sequence(write_sequence(tmp_path, "show", [(n, SUBJECTS / PHOTOS[n]) for n in "abc"]))
    plan = plan_sequence(seq, Config(), out_dir=tmp_path / "out", overrides={**FAST, **cache})
    state = {t.id: t for t in plan.tasks}
    assert [t.kind for t in plan.tasks] == ["align"] * 3 + ["home"] * 3 + ["edge"] * 3 + ["segment"] * 3 + ["assemble"]
    assert {tid for tid, t in state.items() if t.done} == {"align:a", "align:b", "home:a", "home:b", "edge:a--b",
                                                           "segment:a--b"}
    assert state["edge:a--b"].deps == ("home:a", "align:b") and state["edge:a--b"].key
    assert state["home:c"].key is None and not state["home:c"].done  # its photo is not aligned yet
    assert state["edge:c--a"].key is None and state["edge:b--c"].key is None  # need home c, align c
    assert state["segment:a--b"].output.startswith("segments/b.")
    assert not (tmp_path / "out" / "latents" / "homes" / "c.npz").exists()

    config = tmp_path / "config.toml"
    config.write_text(f'cache_dir = "{tmp_path / "cache"}"\n[render]\nsteps = 12\nevery = 3\nsize = 32\nfps = 12\n'
                      'preset = "ultrafast"\nupscale = "none"\n')  # as the in-process half render (conftest)
    proc = run_cli("--config", str(config), "render", str(seq.path), "--out", str(tmp_path / "out"), "--plan",
                   "--quiet")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "13 tasks, 6 done, 7 to run" in output and "edge:a--b" in output and "(pending)" in output


def test_an_old_render_folder_renders_cleanly_and_keeps_what_is_not_ours(tmp_path):
    """A folder from before the face graph (latents/pass1/, latents/<subject>.npz, clips/NN-subject.mp4): those go,
    a user's files stay."""
    out = tmp_path / "out"
    old = [out / "latents" / "pass1" / "a.npz", out / "latents" / "a.npz", out / "clips" / "01-a.mp4"]
    users = [out / "notes.txt", out / "clips" / "README.txt", out / "latents" / "mine.txt"]
    for p in old + users:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    render(tmp_path, "ab")
    assert not [p for p in old if p.exists()] and not (out / "latents" / "pass1").exists()
    assert all(p.read_bytes() == b"x" for p in users)
    assert [s.name for s in read_manifest(out).subjects] == ["a", "b"]


def test_plan_tasks_are_plain_data_in_dependency_order():
    names = ["a", "b", "c"]
    tasks = plan_tasks(names, align_keys={}, home_keys={"home:a": "k"}, edge_keys={}, segment_keys={},
                       done={"home:a"}, outputs={})
    assert neighbours(names) == [("c", "a"), ("a", "b"), ("b", "c")]
    seen = set()
    for t in tasks:
        assert isinstance(t, Task) and set(t.deps) <= seen, t  # every dependency comes earlier
        seen.add(t.id)
        for value in vars(t).values():  # nothing a process boundary could not carry
            assert isinstance(value, (str, bool, tuple, type(None))), (t.id, value)
    assert tasks[-1].id == "assemble" and len(tasks[-1].deps) == 3
