"""The renderer: everything that needs torch. Its rooms are tiers; a module imports its own room and the rooms below
it, never one above (tests/test_architecture.py holds this over the import graph):

    commands/   run.py's subcommands: argument parsing and output folders, nothing else
    farm/       the render farm: the face graph's tasks on a Ray cluster, the render folders written here
    pipeline/   a sequence end to end: the chain renderer, loop closure, reports, the projection cache, and the
                live inbox that adds visitors' photos to a running show
    latent/     operations on latents: projection (restoring old photos), morphing, path length, edit directions,
                CLIP text, montage, and the learned upscaling of frames
    faces/      photo analysis: FFHQ alignment, landmark attributes, identity embedding, a photo's degradations
                (dlib, no torch models)
    models/     networks and their weights: the generators, LPIPS, Real-ESRGAN, safe loading of checkpoint files
    kernels/    how the networks run: device, dtype and the backend switch, oneDNN packing, compiled kernels,
                and each model's fast halves

Each room's docstring names the outside packages it may use (tests/test_architecture.py holds those too). Every
room but models and kernels may import `sequences` (torch-free: config, sequence files, manifest, atomic writes,
video files); none imports `installation` (the player), which in turn never imports torch or `render`.
"""
