"""`run.py`'s subcommands, one module each (`register(subparsers)` adds them). They parse arguments, read the
config, and call the pipeline or the latent operations; the algorithms live below them.

Imports: anything in `render` and `sequences`, and torch, numpy and tqdm. At import time only the standard library
(and `common`), so that `run.py --help` and `run.py play` start without torch: heavy imports go inside the handlers.
"""
