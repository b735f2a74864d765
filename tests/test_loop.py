"""Loop closure math and the seam metric."""

import numpy as np
import pytest
import torch

from render.pipeline.loop import close_loop, closure_count, closure_latents, frame_diff, seam_ratio


def ramp_frames(n, step=4):
    return [np.full((8, 8, 3), 10 + step * i, np.uint8) for i in range(n)]


def test_seam_ratio_of_an_open_and_a_closed_ramp():
    frames = ramp_frames(20)
    assert seam_ratio(frames) == pytest.approx(19.0)  # jumping back down the whole ramp: 19 typical steps
    back = [np.full((8, 8, 3), 10 + 4 * 19 - 4 * i, np.uint8) for i in range(1, 19)]
    assert seam_ratio(frames + back) == pytest.approx(1.0)


def test_closure_latents_are_strictly_between_and_eased():
    a, b = torch.zeros(3), torch.ones(3)
    mid = closure_latents(a, b, 5)
    assert mid.shape == (5, 3)
    t = mid[:, 0]
    assert torch.all(t > 0) and torch.all(t < 1) and torch.all(t[1:] > t[:-1])
    assert (t[2] - t[1]) > (t[1] - t[0])  # smoothstep: slow start
    assert closure_latents(a, b, 0).shape == (0, 3)


def test_closure_count_scales_with_the_seam():
    assert closure_count(10.0, 1.0) == 14
    assert closure_count(0.5, 1.0) == 1  # even a tiny seam is eased
    assert closure_count(1e6, 1.0, limit=50) == 50


def test_close_loop_checks_its_steps_on_the_frames():
    """A generator whose picture changes mostly near one end of the line between two latents (here x^8): the count
    from the seam alone leaves a last step far above the median; close_loop adds frames until every step fits."""
    def synth(latents):  # [n, 1] in 0..1 -> flat 8x8 frames of brightness 255 x^8
        return [np.full((8, 8, 3), round(255 * float(v) ** 8), np.uint8) for v in latents[:, 0]]

    last, first = torch.tensor([0.0]), torch.tensor([1.0])
    last_frame, first_frame = synth(last[None])[0], synth(first[None])[0]
    median = 8.0
    naive = synth(closure_latents(last, first, closure_count(255.0, median)))
    walk = [last_frame, *naive, first_frame]
    assert max(frame_diff(a, b) for a, b in zip(walk, walk[1:])) > 1.5 * median  # the first guess is not enough
    extra, frames = close_loop(last, first, last_frame, first_frame, median, synth)
    walk = [last_frame, *frames, first_frame]
    assert len(frames) == len(extra) > len(naive)
    assert max(frame_diff(a, b) for a, b in zip(walk, walk[1:])) <= median
