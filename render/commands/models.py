"""`run.py models`: list the available generators, or inspect one generator file.

    python run.py models                       # "embedded", the configured `generator` and any files given
    python run.py models more.pkl other.pt     # ... plus these
    python run.py models inspect ffhq.pkl b.pt # format and architecture of each file, or the one-line reason it fails

Kept free of torch at import time so `run.py --help` and `run.py play` start instantly.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("models")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the available generators, or `models inspect FILE...` to check generator files",
        description="Without arguments: list the embedded generator and the `generator` set in config.toml, each "
                    "with its resolution and latent layout. Extra FILE arguments are listed too. "
                    "`models inspect FILE...` loads each file (NVIDIA .pkl: StyleGAN2, 2-ADA, 3 T/R, or the original "
                    "TensorFlow StyleGAN2; rosinality .pt; *.uncanny.pt) without executing anything it carries, and "
                    "prints its format and architecture, or the one-line reason it cannot be used; the exit status is "
                    "1 if any file cannot be used.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="*", metavar="FILE",
                   help='generator files to list, or "inspect" followed by one or more files')
    p.set_defaults(func=run_models)


def _rows(info: dict) -> list[str]:
    keys = [k for k in info if k not in ("name", "path")]
    return [f"    {k:<13} {info[k]}" for k in keys]


def _show(text: str) -> str:
    """A line with a file's name or contents in it, safe for the terminal (no escape sequences)."""
    from render.models.loading import printable

    return printable(text, limit=10_000)


def run_models(args: argparse.Namespace) -> int:
    files = list(args.files)
    if files and files[0] == "inspect":
        if len(files) < 2:
            log.error("usage: run.py models inspect FILE [FILE ...]")
            return 2
        return max(inspect(f) for f in files[1:])  # every file, each on its own, however the others went
    from sequences.config import ConfigError, load_config

    try:
        configured = load_config(getattr(args, "config", None)).general.generator
    except ConfigError as e:
        log.error("%s", e)
        return 2
    specs = ["embedded"] + [s for s in [configured, *files] if s != "embedded"]
    failed = 0
    for spec in dict.fromkeys(specs):  # in order, without repeats
        tag = " (configured)" if spec == configured else ""
        info, error = describe(spec)
        if error:
            failed += 1
            print(_show(f"{spec}{tag}: cannot be used: {error}"))
            continue
        print(_show(f"{spec}{tag}: {info.get('name', '?')}, {info['resolution']} px, latent {info['latent']}"))
    return 1 if failed else 0


def describe(spec: str) -> tuple[dict, str]:
    """(G.describe() plus the file format, "") or ({}, the one-line reason the generator cannot be loaded, without
    the file's name in front)."""
    from render.models.loading import LoadError, inspect_file, printable

    try:
        if spec == "embedded":
            from render.models import load_generator

            return load_generator("embedded", "cpu").describe(), ""
        return inspect_file(spec), ""
    except (LoadError, ImportError, OSError, ValueError, RuntimeError) as e:  # the file's problems are LoadErrors
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        named = printable(f"{Path(spec)}: ")  # how a LoadError starts
        return {}, msg[len(named) :] if msg.startswith(named) else msg


def inspect(path: str) -> int:
    info, error = describe(path)
    if error:
        print(_show(f"{path}: {error}"))
        return 1
    print(_show(f"{path}: {info.get('name', '?')}"))
    print("\n".join(map(_show, _rows(info))))
    return 0
