"""A sequence end to end: aligned photos -> chained projections -> a closed loop -> videos, manifest and reports,
with the shared projection cache that every command reuses.

Imports: `render.latent`, `render.faces`, `render.models`, `render.kernels`, `sequences`; never `render.commands`.
"""
