"""Loop closure math and the seam metric."""

import numpy as np
import pytest
import torch

from render.loop import closure_count, closure_latents, seam_ratio


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
