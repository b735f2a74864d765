"""render/kernels/compiler.py and backend.py: which backend a run gets, and that a kernel which cannot be compiled
runs eagerly instead.

(Compiled results are checked against the reference numbers where the kernels are used: tests/test_lpips.py,
tests/test_stylegan2.py and tests/test_project.py.)"""

from __future__ import annotations

import logging

import pytest
import torch

from render.kernels import backend, compiler
from render.kernels.backend import Backend

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_resolve_follows_the_setting_the_resolution_and_the_compiler(monkeypatch, caplog):
    compiled = Backend.COMPILED if compiler.available(CPU) else Backend.EAGER
    assert backend.resolve("reference", CPU, 1024) == Backend.REFERENCE
    assert backend.resolve("eager", CPU, 1024) == Backend.EAGER
    assert backend.resolve("auto", CPU, 64) == Backend.EAGER  # a short run of the 64 px generator: would not pay back
    assert backend.resolve("auto", CPU, 64, whole_steps=600) == Backend.EAGER  # the demo: home 360 + edge 240 steps
    assert backend.resolve("auto", CPU, 64, whole_steps=2500) == compiled  # the default: home 1500 + edge 1000
    assert backend.resolve("auto", CPU, 256) == compiled
    monkeypatch.setattr(compiler, "available", lambda device: True)
    assert backend.resolve("auto", CUDA, 1024) == Backend.REFERENCE  # on a GPU at batch 1 the reference paths won
    assert backend.resolve("compiled", CUDA, 64) == Backend.COMPILED
    assert backend.resolve("eager", CUDA, 64) == Backend.EAGER
    assert backend.resolve("auto", CUDA, 64, whole_steps=8000) == Backend.REFERENCE
    monkeypatch.undo()
    monkeypatch.setattr(compiler.shutil, "which", lambda name: None)  # a machine without a C++ compiler
    assert compiler.available(CPU) is False
    assert backend.resolve("auto", CPU, 1024) == Backend.EAGER
    with caplog.at_level(logging.WARNING, logger="render.kernels.backend"):
        assert backend.resolve("compiled", CPU, 64) == Backend.EAGER
    assert "no compiler" in caplog.text
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.resolve("on", CPU, 64)


def test_a_backend_is_one_frozen_switch_with_one_sense():
    assert [b.name for b in (Backend.REFERENCE, Backend.EAGER, Backend.COMPILED)] == ["reference", "eager", "compiled"]
    assert Backend(packed=False).name == "eager-plain"
    with pytest.raises(ValueError):
        Backend(fast=False, compiled=True)  # compiled kernels are the fast path's
    with pytest.raises(AttributeError):
        Backend.EAGER.compiled = True  # frozen: passed on, never flipped
    x, w = torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3)
    assert not Backend.REFERENCE.packs(x, w) and not Backend(packed=False).packs(x, w)


def test_a_kernel_that_fails_to_compile_runs_eagerly_once_warned(monkeypatch, caplog):
    attempts = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            attempts.append(1)
            raise RuntimeError("InductorError: C++ compile error\nmore lines")
        return run

    monkeypatch.setattr(compiler.torch, "compile", broken_compile)

    @compiler.kernel
    def scale(x, k):
        return x * k

    x = torch.arange(4.0)
    assert torch.equal(scale(x, 2.0), x * 2)  # eager unless asked: compile not even tried
    assert attempts == []
    with caplog.at_level(logging.WARNING, logger="render.kernels.compiler"):
        assert torch.equal(scale(x, 3.0, compiled=True), x * 3)
        assert torch.equal(scale(x, 4.0, compiled=True), x * 4)
    assert attempts == [1] and scale.failed  # tried once, then eager for good
    assert caplog.text.count("failed to compile") == 1 and "C++ compile error" in caplog.text
