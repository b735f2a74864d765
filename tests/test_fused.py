"""render/kernels/fused.py: when kernels compile, and that a kernel which cannot be compiled runs eagerly instead.

(Compiled results are checked against the reference numbers where the kernels are used: tests/test_lpips.py and
tests/test_stylegan2.py.)"""

from __future__ import annotations

import logging

import torch

from render.kernels import fused

CPU = torch.device("cpu")


def test_resolve_follows_the_setting_the_resolution_and_the_compiler(monkeypatch, caplog):
    assert fused.resolve("off", CPU, 1024) is False
    assert fused.resolve("auto", CPU, 64) is False  # a short run of the embedded 64 px generator: would not pay back
    assert fused.resolve("auto", CPU, 64, fused_steps=1920) is False  # the demo's 4 subjects x 240 steps x 2 passes
    assert fused.resolve("auto", CPU, 64, fused_steps=8000) is fused.compiler_available(CPU)  # 4 x 1000 x 2
    assert fused.resolve("auto", CPU, 256) is fused.compiler_available(CPU)
    monkeypatch.setattr(fused, "compiler_available", lambda device: True)
    assert fused.resolve("auto", torch.device("cuda"), 1024) is False  # measured slower on a GPU at batch 1
    assert fused.resolve("on", torch.device("cuda"), 64) is True
    assert fused.resolve("auto", torch.device("cuda"), 64, fused_steps=8000) is False
    monkeypatch.undo()
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)  # a machine without a C++ compiler
    assert fused.compiler_available(CPU) is False
    assert fused.resolve("auto", CPU, 1024) is False
    with caplog.at_level(logging.WARNING, logger="render.kernels.fused"):
        assert fused.resolve("on", CPU, 64) is False
    assert "no compiler" in caplog.text


def test_using_is_scoped():
    assert not fused.enabled()
    with fused.using(True):
        assert fused.enabled()
        with fused.using(False):
            assert not fused.enabled()
        assert fused.enabled()
    assert not fused.enabled()


def test_a_kernel_that_fails_to_compile_runs_eagerly_once_warned(monkeypatch, caplog):
    attempts = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            attempts.append(1)
            raise RuntimeError("InductorError: C++ compile error\nmore lines")
        return run

    monkeypatch.setattr(fused.torch, "compile", broken_compile)

    @fused.kernel
    def scale(x, k):
        return x * k

    x = torch.arange(4.0)
    assert torch.equal(scale(x, 2.0), x * 2)  # eager outside using(True): compile not even tried
    assert attempts == []
    with caplog.at_level(logging.WARNING, logger="render.kernels.fused"), fused.using(True):
        assert torch.equal(scale(x, 3.0), x * 3)
        assert torch.equal(scale(x, 4.0), x * 4)
    assert attempts == [1] and scale.failed  # tried once, then eager for good
    assert caplog.text.count("failed to compile") == 1 and "C++ compile error" in caplog.text
