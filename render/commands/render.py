"""`run.py render`: render one or more sequence files (or folders of them) in turn.

Kept free of torch at import time so `run.py --help` and `run.py play` start instantly.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from render.commands import common
from render.commands.common import config_option, generator_option, out_option, seed_option

log = logging.getLogger("render")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render",
        help="project each subject of a sequence and assemble looping videos",
        description="Render sequence files into media/<name>/ (loop.mp4, segments/, clips/, latents/, "
                    "manifest.json, contact.png, loss.png). Several files or folders of *.toml render in turn; a "
                    "failure in one is reported and the others go on. Re-running an interrupted or changed render "
                    "runs only what changed.",
    )
    p.add_argument("sequences", nargs="+", type=Path, help="sequence .toml files or folders of them")
    config_option(p, "--steps", "render.steps", "optimisation steps per subject (render.steps)", type=int)
    config_option(p, "--every", "render.every", "keep a frame every N steps (render.every)", type=int)
    config_option(p, "--fps", "render.fps", "video frame rate (render.fps)", type=int)
    config_option(p, "--size", "render.size", "output frame side in pixels (render.size)", type=int)
    seed_option(p)
    generator_option(p)
    out_option(p, "output folder (only with a single sequence; default media/<name>/)")
    p.add_argument("--farm", metavar="ENGINE",
                   help='run the tasks on a Ray cluster: "ray" (farm.address in config.toml), "local:N" (a private '
                        'Ray on this machine with N workers), or "none" (here, in one process)')
    p.add_argument("--plan", action="store_true",
                   help="print each sequence's task graph (align, homes, edges, segments, assemble) with keys, "
                        "dependencies and what is done already; run nothing")
    # --quiet, --config and --verbose: added to every command by run.py
    p.set_defaults(func=run_render)


def report(result) -> None:
    skipped = f", skipped {len(result.skipped)}" if result.skipped else ""
    log.info("%s: %d subjects%s, %d loop frames, largest join %.2f, %.0f s -> %s (%s)", result.out_dir.name,
             len(result.subjects), skipped, result.loop_frames, result.seam_ratio, result.seconds, result.out_dir,
             result.summary())


def run_render(args: argparse.Namespace) -> int:
    from render.latent.project import ProjectionError
    from render.models.loading import LoadError
    from render.models.realesrgan import WeightsError
    from render.pipeline.chain import RenderError, output_dir, plan_sequence, render_sequence, sequence_config
    from sequences.atomic import RENDER_OWNER, OutputFolderError, claim_output_folder
    from sequences.config import ConfigError, load_config
    from sequences.sequence import SequenceError, find_sequences, load_sequence

    base = load_config(args.config)
    files = find_sequences(args.sequences)
    if not files:
        log.error("no sequence files found in %s", ", ".join(map(str, args.sequences)))
        return 2
    if args.out and len(files) > 1:
        log.error("--out takes a single sequence; %d were given", len(files))
        return 2
    overrides = common.overrides(args)
    if args.farm is not None:
        farm = {"engine": "none"} if args.farm == "none" else {"engine": "ray"}
        if args.farm.startswith("local:"):
            farm["address"] = args.farm
        elif args.farm not in ("ray", "none"):
            log.error("--farm takes ray, local:N or none, not %r", args.farm)
            return 2
        overrides = {**overrides, "farm": farm}
    failed, rendered, jobs = [], {}, []  # rendered: output folder -> the sequence file that wrote it in this batch
    for path in files:
        try:
            seq = load_sequence(path)
            cfg = sequence_config(seq, base, overrides)
            out = output_dir(seq, cfg, args.out).resolve()
            if out in rendered:
                raise SequenceError(f"{path}: writes to {out}, which {rendered[out]} already wrote in this batch "
                                    f"(two sequences named {seq.name!r}?); not rendered")
            rendered[out] = path
            if not args.plan:
                claim_output_folder(out, RENDER_OWNER)  # a file, or a folder of other things: one line, now
            if args.plan:
                print(plan_sequence(seq, base, out_dir=args.out, overrides=overrides).text())
            elif cfg.farm.engine == "ray":
                jobs.append((seq, cfg, out))  # rendered together, below
            else:
                report(render_sequence(seq, base, out_dir=args.out, overrides=overrides, quiet=args.quiet))
        except (SequenceError, ConfigError, RenderError, LoadError, WeightsError, ProjectionError,
                OutputFolderError) as e:
            log.error("%s", e)
            failed.append(path)
        except OSError as e:  # an output folder that is a file or read-only, a full disk, a missing input
            log.error("%s: %s", path, e)
            failed.append(path)
        except Exception as e:  # one broken sequence must not stop a night of batch renders
            log.exception("%s: render failed: %s", path, e)
            failed.append(path)
    if jobs:
        from render.farm.executor import FarmError, render_on_farm

        try:
            results = render_on_farm(jobs, jobs[0][1].farm, quiet=args.quiet)
        except FarmError as e:
            log.error("%s", e)
            return 1
        for (seq, _, _), result in zip(jobs, results):
            if isinstance(result, Exception):
                failed.append(seq.path)  # its one line was logged as it failed
            else:
                report(result)
    if failed:
        log.error("%d of %d sequences failed: %s", len(failed), len(files), ", ".join(map(str, failed)))
        return 1
    return 0
