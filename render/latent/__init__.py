"""Operations on a generator's latents: projection onto a photo, frames from latents, morphing and style mixing,
perceptual path length, edit directions, CLIP text steering, the feature montage, the degradations a restoring
projection compares through, and the learned upscaling of frames. Each is a function of a `Generator` and tensors,
with no files or folders of a render.

Imports: torch, numpy, PIL, open_clip (for CLIP text, when it is installed), `render.faces`, `render.models`,
`render.kernels`, `sequences`; never the pipeline or the commands.
"""
