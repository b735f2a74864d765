"""`run.py watch` and `run.py forget`: the live inbox (render/pipeline/live.py) on the command line.

    run.py watch show.toml --inbox inbox/      # render photos dropped into inbox/ into media/<show>/ as they arrive
    run.py forget show.toml NAME               # remove one visitor's face from everything

Everything the watcher does is logged one line each to the console and to a rotating log, <render>/live/watch.log.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
from pathlib import Path

from render.commands.common import out_option

log = logging.getLogger("live")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "watch", help="add visitors' photos dropped into an inbox to a show's running loop",
        description="Render the show, then watch the inbox ([live] inbox): each complete photo is aligned (a bad "
                    "one goes to inbox/rejected/ with a .txt saying why), appended after the last subject, "
                    "rendered (its home, two edges, two segments), and announced to the player. Kill it at any "
                    "moment; started again, it finishes what was under way.")
    p.add_argument("sequence", type=Path, help="the show's sequence file")
    p.add_argument("--inbox", type=Path, help="the folder to watch (default: [live] inbox)")
    p.add_argument("--until-idle", action="store_true",
                   help="stop once the inbox and its queue are empty (cron, tests) instead of watching forever")
    out_option(p, "the show's render folder (default media/<name>/)")
    p.set_defaults(func=run_watch)

    p = subparsers.add_parser(
        "forget", help="remove one visitor's face from a live show",
        description="Remove a visitor from the show: its aligned face, kept photo, latents, segments, clips and "
                    "the loops that showed it; the one edge that closes the gap is rendered and the loop "
                    "re-assembled. Waits for a running watcher's current step.")
    p.add_argument("sequence", type=Path, help="the show's sequence file")
    p.add_argument("name", help="the visitor's subject name (as in manifest.json and live/subjects.json)")
    out_option(p, "the show's render folder (default media/<name>/)")
    p.set_defaults(func=run_forget)


def open_show(args: argparse.Namespace, inbox: Path | None = None):
    from render.pipeline.chain import output_dir
    from render.pipeline.live import LiveShow
    from sequences.config import load_config
    from sequences.sequence import load_sequence

    seq = load_sequence(args.sequence)
    cfg = seq.config(load_config(args.config))
    out = output_dir(seq, cfg, args.out)
    return LiveShow(seq, cfg, out, inbox or Path(cfg.live.inbox), quiet=True)


def log_to_file(path: Path, max_bytes: int, backups: int) -> None:
    """Everything logged, one line each with its time, also to a rotating file; with --quiet too (the console keeps
    to warnings and errors, the file has every visitor's line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    if root.level > logging.INFO:
        for console in root.handlers:
            console.setLevel(max(console.level, root.level))
        root.setLevel(logging.INFO)
    root.addHandler(handler)


def run_watch(args: argparse.Namespace) -> int:
    from render.pipeline.chain import RenderError
    from sequences.atomic import RENDER_OWNER, OutputFolderError, claim_output_folder
    from sequences.sequence import SequenceError

    try:
        show = open_show(args, args.inbox)
        claim_output_folder(show.out, RENDER_OWNER)  # the show's render folder, as `run.py render` claims it
    except (SequenceError, RenderError, OutputFolderError) as e:
        log.error("%s", e)
        return 2
    show.inbox.mkdir(parents=True, exist_ok=True)
    live = show.cfg.live
    log_to_file(show.live / live.log_file, live.log_max_bytes, live.log_backups)
    log.info("live show %s: render folder %s, inbox %s, keep_photos %s, max_subjects %d, visitor steps %d",
             show.seq.name, show.out, show.inbox, live.keep_photos, live.max_subjects,
             live.steps or show.cfg.render.steps)
    try:
        show.watch(until_idle=args.until_idle)
    except RenderError as e:
        log.error("%s", e)
        return 1
    return 0


def run_forget(args: argparse.Namespace) -> int:
    from render.pipeline.chain import RenderError
    from render.pipeline.live import LiveError
    from sequences.sequence import SequenceError

    try:
        show = open_show(args)
        live = show.cfg.live
        log_to_file(show.live / live.log_file, live.log_max_bytes, live.log_backups)
        show.forget(args.name)
    except (SequenceError, RenderError, LiveError) as e:
        log.error("%s", e)
        return 1
    return 0
