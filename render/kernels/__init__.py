"""How the networks run, below the networks themselves: device and dtype resolution, the backend switch that picks
every fast path, oneDNN weight packing on CPU, torch.compile'd kernels, and each model's fast halves (pure functions
of tensors that the model files call and the tests hold against the models' reference paths).

Imports: torch, numpy and other `render.kernels` modules only.
"""
