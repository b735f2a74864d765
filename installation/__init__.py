"""The gallery player and its OSC control: full-screen pygame playback of rendered loops, unattended.

Imports: the standard library, numpy, pygame, python-osc, imageio-ffmpeg and `sequences` only. It never imports
torch or `render` (tests/test_architecture.py), so a gallery machine needs none of the renderer to play.
"""
