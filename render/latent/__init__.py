"""Operations on a generator's latents: projection onto a photo, frames from latents, morphing and style mixing,
perceptual path length, edit directions, CLIP text steering and the feature montage. Each is a function of a
`Generator` and tensors, with no files or folders of a render.

Imports: `render.faces`, `render.models`, `render.kernels`, `sequences`; never the pipeline or the commands.
"""
