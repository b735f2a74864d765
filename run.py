#!/usr/bin/env python3
"""Uncanny: the one command line.

    python run.py render sequences/demo.toml       # project subjects, write looping videos to media/demo/
    python run.py play                             # gallery player for everything under media/
    python run.py watch show.toml --inbox inbox/   # visitors' photos join the show's loop as they arrive
    python run.py models                           # generators available to render with
    python run.py <command> --help

Every command reads config.toml (or --config FILE). Command modules import torch only inside their handlers, so
`play` and `--help` start without it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys
from pathlib import Path

# Modules that each add their subcommands with register(subparsers). A module that is missing (a feature not
# installed) is left out of the CLI rather than breaking it.
COMMANDS = (
    "render.commands.render",
    "installation.cli",
    "render.commands.models",
    "render.commands.morph",
    "render.commands.text",
    "render.commands.montage",
    "render.commands.live",
)


class TqdmHandler(logging.StreamHandler):
    """Log lines that do not tear through progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


COMMON = (  # options of every command, given before the command or after it
    (("--config",), dict(type=Path, help="settings file (default: config.toml)")),
    (("--quiet", "-q"), dict(action="store_true", help="no progress bars, warnings and errors only")),
    (("--verbose", "-v"), dict(action="store_true", help="debug logging")),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flags, kw in COMMON:
        parser.add_argument(*flags, **kw)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but something it imports is missing: a real error
                raise
            continue
        module.register(sub)
    for command in sub.choices.values():  # also after the command, and in its --help
        for flags, kw in COMMON:
            if flags[0] not in command._option_string_actions:
                # SUPPRESS: set only when given after the command, so `run.py --quiet render x.toml` keeps its value
                command.add_argument(*flags, **{**kw, "default": argparse.SUPPRESS})
    return parser


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (poll reports an error on its write end)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real file behind stdout
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s" if args.quiet else "%(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for arg in argv:  # settings and manifests are UTF-8 text: a name that is not could only fail at the very end
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(arg).decode("utf-8", "backslashreplace")
            logging.getLogger("run").error("%s: not valid UTF-8 (what run.py writes records its arguments as UTF-8 "
                                           "text); rename it", shown)
            return 2
    code = 1
    try:
        code = int(args.func(args) or 0)
        return code
    except KeyboardInterrupt:
        logging.getLogger("run").error("interrupted")
        return 130
    except BrokenPipeError:  # `run.py models | head`: the reader of our output has gone, with anything more to say
        if not _stdout_gone():
            raise  # another pipe (a child process, a socket): a fault like any other
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor may the exit's flush complain
        return 1
    except Exception as e:  # a clear line for expected failures; the traceback only with --verbose
        from sequences.config import ConfigError

        if isinstance(e, (ConfigError, FileNotFoundError, ValueError)) and not args.verbose:
            logging.getLogger("run").error("%s", e)
            return 2
        raise
    finally:  # failed or interrupted: output folders made for it and still empty go again
        from sequences.atomic import release_unused_folders

        release_unused_folders(remove=code != 0)


if __name__ == "__main__":
    sys.exit(main())
