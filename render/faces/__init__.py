"""Photo analysis with dlib: FFHQ alignment of a portrait, attributes measured from landmarks, and a face-identity
embedding used as a metric.

Imports: numpy, PIL, dlib and `sequences`; nothing else of `render`.
"""
