"""The torch-free layer between the renderer and the player: config.toml into frozen dataclasses, sequence files,
manifest.json, atomic file writes and H.264 video files.

Imports: the standard library, numpy and imageio-ffmpeg only; never torch, `render` or `installation`. Both the
renderer and the player import it.
"""
