"""A sequence end to end: aligned photos -> the face graph's projections (homes and edges, graph.py) -> segments
joined into a loop -> videos, manifest and reports (chain.py runs it), with the shared projection cache that every
command reuses.

Imports: `render.latent`, `render.faces`, `render.models`, `render.kernels`, `sequences`; never `render.commands`.
graph.py holds the plan as plain data (no torch objects), for a distributed executor to ship.
"""
