"""A sequence end to end: aligned photos -> the face graph's projections (homes and edges, graph.py) -> segments
joined into a loop -> videos, manifest and reports (chain.py runs it), with the shared projection cache that every
command reuses, and the live inbox (live.py) that adds visitors' photos to a running show.

Imports: torch, numpy, PIL, matplotlib and tqdm (reports), python-osc (the inbox tells the player to rescan),
`render.latent`, `render.faces`, `render.models`, `render.kernels`, `sequences`; never `render.farm` or
`render.commands`.
graph.py holds the plan as plain data (no torch objects), for a distributed executor to ship.
"""
