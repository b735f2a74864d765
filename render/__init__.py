"""The renderer: everything that needs torch. Its rooms are tiers; a module imports its own room and the rooms below
it, never one above (tests/test_architecture.py holds this over the import graph):

    commands/   run.py's subcommands: argument parsing and output folders, nothing else
    farm/       the render farm: the face graph's tasks on a Ray cluster, the render folders written here
    pipeline/   a sequence end to end: the chain renderer, loop closure, reports, the projection cache
    latent/     operations on latents: projection, morphing, path length, edit directions, CLIP text, montage
    faces/      photo analysis: FFHQ alignment, landmark attributes, identity embedding (dlib, no torch models)
    models/     networks and their weights: the generators, LPIPS, safe loading of checkpoint files
    kernels/    how the networks run: device, dtype and the backend switch, oneDNN packing, compiled kernels,
                and each model's fast halves

Any room may import `sequences` (torch-free: config, sequence files, manifest, atomic writes, video files);
none imports `installation` (the player), which in turn never imports torch or `render`.
"""
