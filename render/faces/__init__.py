"""Photo analysis with dlib: FFHQ alignment of a portrait, attributes measured from landmarks, a face-identity
embedding used as a metric, and what an old photo has lost (grayscale, low resolution, JPEG blocking), which the
projection then restores.

Imports: numpy, PIL, dlib and `sequences`; nothing else of `render`.
"""
