"""The render farm (render/farm/) on a private Ray of 2 CPUs, shared by these tests: latents equal a local render's
bit for bit, a killed worker's task is retried, a bad photo fails once with the local message while another
sequence of the same command goes on, and what a task carries holds no torch objects."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from render.farm import executor, tasks
from render.pipeline.chain import ChainRenderer, Face, render_sequence, sequence_config
from sequences.config import Config
from sequences.sequence import load_sequence
from sequences.video import read_video
from tests.test_render import SUBJECTS, run_cli, write_sequence

pytestmark = pytest.mark.skipif(not (SUBJECTS / "obama.jpg").exists(), reason="demo photos missing: run make setup")

# threads = 1 here and on the workers (farm.cpus = 1): the same arithmetic, so the same latents to the bit
SETTINGS = {"cache_dir": "", "threads": 1, "farm": {"engine": "ray", "address": "local:2", "cpus": 1.0},
            "render": {"steps": 12, "every": 3, "size": 32, "fps": 12, "preset": "ultrafast", "upscale": "none"}}
PAIR = [("obama", SUBJECTS / "obama.jpg"), ("astronaut", SUBJECTS / "astronaut.png")]


@pytest.fixture(scope="module")
def ray_local():
    """One private Ray (2 CPUs, no dashboard) for every farm test here; its workers are reused between tests."""
    executor.connect("local:2")
    yield ray
    ray.shutdown()


def farm_render(jobs: list[tuple[Path, Path]], overrides: dict):
    """(sequence file, output folder) jobs in one farm command, as run.py runs them; the results and the summary."""
    base = Config()
    made = []
    for path, out in jobs:
        seq = load_sequence(path)
        made.append((seq, sequence_config(seq, base, overrides), out))
    farm = {}
    original = executor.Farm.run

    def keep(self, jobs):  # the summary the command logs, kept for the test
        farm["farm"] = self
        return original(self, jobs)

    executor.Farm.run = keep
    try:
        results = executor.render_on_farm(made, made[0][1].farm, quiet=True)
    finally:
        executor.Farm.run = original
    return results, farm["farm"].summary


def latents(out: Path) -> dict[str, np.ndarray]:
    return {f"{p.parent.name}/{p.stem}": np.load(p)["latents"] for p in (out / "latents").rglob("*.npz")}


@pytest.fixture(scope="module")
def local_pair(tmp_path_factory):
    """The pair rendered locally, in one process, with SETTINGS' threads."""
    folder = tmp_path_factory.mktemp("local")
    seq = load_sequence(write_sequence(folder, "pair", PAIR))
    overrides = {**SETTINGS, "farm": {"engine": "none"}}
    render_sequence(seq, Config(), out_dir=folder / "out", overrides=overrides, quiet=True)
    return folder / "out"


def test_farm_latents_and_loop_equal_a_local_render(ray_local, local_pair, tmp_path):
    seq = write_sequence(tmp_path, "pair", PAIR)
    (result,), summary = farm_render([(seq, tmp_path / "out")], SETTINGS)
    assert not isinstance(result, Exception), result
    assert (result.projections_run, result.segments_encoded) == (4, 2)
    assert summary.run == 2 + 4 + 2 and summary.reused == 0  # aligns, projections, segments
    want, got = latents(local_pair), latents(tmp_path / "out")
    assert set(got) == set(want) == {"homes/obama", "homes/astronaut", "edges/obama--astronaut",
                                     "edges/astronaut--obama"}
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    a, b = list(read_video(local_pair / "loop.mp4")), list(read_video(tmp_path / "out" / "loop.mp4"))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert 0 < summary.critical_path <= summary.seconds


def projection_workers():
    """The processes of this machine that run a projection task now (Ray sets a busy worker's title to its task)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::projection_task"):
                yield int(proc.name)
        except OSError:  # the process ended while we looked
            continue


def test_a_killed_worker_costs_only_its_task(ray_local, tmp_path):
    """SIGKILL the worker process in the middle of a projection: Ray runs that task again, the render finishes, and
    its latents are an uninterrupted local render's."""
    slow = {**SETTINGS, "render": {**SETTINGS["render"], "steps": 150}}  # long enough to be caught running
    local = render_sequence(load_sequence(write_sequence(tmp_path, "local", PAIR)), Config(), out_dir=tmp_path / "local",
                            overrides={**slow, "farm": {"engine": "none"}}, quiet=True)
    seq = write_sequence(tmp_path, "pair", PAIR)
    outcome, farms = {}, []
    original = executor.Farm.run

    def watched(self, jobs):
        farms.append(self)
        return original(self, jobs)

    executor.Farm.run = watched
    try:
        thread = threading.Thread(target=lambda: outcome.update(results=executor.render_on_farm(
            [(load_sequence(seq), sequence_config(load_sequence(seq), Config(), slow), tmp_path / "out")],
            sequence_config(load_sequence(seq), Config(), slow).farm, quiet=True)))
        thread.start()
        killed, deadline = None, time.monotonic() + 300
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            killed = next(projection_workers(), None)  # a worker running a projection now (Ray titles it so)
            if killed is not None:
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.01)
        thread.join(timeout=600)
    finally:
        executor.Farm.run = original
    assert killed is not None, "no projection task was seen running"
    (result,) = outcome["results"]
    assert not isinstance(result, Exception), result
    assert farms[0].summary.retried >= 1 and result.projections_run == local.projections_run == 4
    want, got = latents(tmp_path / "local"), latents(tmp_path / "out")
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


def test_a_bad_photo_fails_once_with_the_local_message_and_the_other_sequence_goes_on(ray_local, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    skip = write_sequence(tmp_path, "skip", [("bad", broken), PAIR[0]])
    stop = write_sequence(tmp_path, "stop", [("bad", broken), PAIR[0]], '[render]\non_bad_subject = "stop"')
    good = write_sequence(tmp_path, "good", [PAIR[1]])
    results, summary = farm_render([(skip, tmp_path / "skip"), (stop, tmp_path / "stop"), (good, tmp_path / "good")],
                                   SETTINGS)
    skipped, stopped, fine = results
    assert not isinstance(skipped, Exception) and skipped.subjects == ["obama"]
    local = render_sequence(load_sequence(skip), Config(), out_dir=tmp_path / "local",
                            overrides={**SETTINGS, "farm": {"engine": "none"}}, quiet=True)
    assert skipped.skipped == local.skipped and "broken.jpg" in skipped.skipped[0][1]  # the same one line
    assert isinstance(stopped, Exception) and "broken.jpg" in str(stopped) and "\n" not in str(stopped)
    assert not (tmp_path / "stop" / "manifest.json").exists()
    assert not isinstance(fine, Exception) and (tmp_path / "good" / "loop.mp4").is_file()
    assert summary.retried == 0  # a bad photo is not a worker fault: tried once


def test_what_a_task_carries_holds_no_torch_objects(tmp_path):
    """A task's arguments are arrays, strings, numbers and frozen dataclasses of settings: nothing that needs the
    driver's torch objects (a plan's tasks are plain data too: tests/test_graph.py)."""
    seq = load_sequence(write_sequence(tmp_path, "pair", PAIR))
    cfg = sequence_config(seq, Config(), SETTINGS)
    renderer = ChainRenderer(seq, cfg, tmp_path / "out", quiet=True)
    spec = tasks.GeneratorSpec("embedded", "f" * 64, "cpu", "float32", renderer.G.backend, 1)
    face = Face(0, "obama", np.zeros((8, 8, 3), np.uint8))
    carried = [spec, renderer.projection_inputs("home", face), renderer.projection_inputs("edge", face), face.restore,
               cfg.render, cfg.align]

    def walk(value):
        assert not isinstance(value, (torch.Tensor, torch.nn.Module)), value
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))

    for value in carried:
        walk(value)


def test_the_command_line_renders_on_a_private_farm(tmp_path):
    """`run.py render SEQ --farm local:2`, as a user runs it: a render folder and the farm's summary line."""
    seq = write_sequence(tmp_path, "cli", [PAIR[0]])
    config = tmp_path / "config.toml"
    config.write_text('cache_dir = ""\n[render]\nsteps = 6\nevery = 3\nsize = 32\nfps = 12\npreset = "ultrafast"\n'
                      'upscale = "none"\n')
    proc = run_cli("--config", str(config), "render", str(seq), "--out", str(tmp_path / "out"), "--farm", "local:2")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert "farm: 4 tasks run, 0 reused, 0 retried" in output and (tmp_path / "out" / "manifest.json").is_file()


def test_tasks_the_cluster_cannot_place_are_refused_in_one_line(ray_local, tmp_path):
    """Ray waits for ever, silently, for a node with the GPUs (or CPUs) a task asks for."""
    seq = write_sequence(tmp_path, "gpu", [PAIR[0]])
    for farm, words in (({"gpus": 1.0}, "farm.gpus = 1 per task, but the cluster at 'local:2' has 0 GPUs in all"),
                        ({"cpus": 3.0}, "farm.cpus = 3 per task, but the cluster at 'local:2' has 2 CPUs in all")):
        with pytest.raises(executor.FarmError, match=re.escape(words)):
            farm_render([(seq, tmp_path / "out")], {**SETTINGS, "farm": {**SETTINGS["farm"], **farm}})


def test_an_empty_farm_option_is_refused(tmp_path):
    from run import main

    seq = write_sequence(tmp_path, "x", [PAIR[0]])
    assert main(["render", str(seq), "--out", str(tmp_path / "out"), "--farm", ""]) == 2
    assert not (tmp_path / "out").exists()
