"""`run.py play`: the gallery player's command line, its logging and `--check`.

    python run.py play                      # every sequence under media/, full-screen on display 0
    python run.py play media/demo --windowed --osc-port 9001
    python run.py play --check              # validate config and media, print what was found, exit
    python run.py play --service            # print a systemd unit for this checkout (restart always, watchdog)

Imports nothing heavy at module level (no pygame, and never torch), so `run.py --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import logging.handlers
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("installation")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "play", help="play renders full-screen under OSC control (the gallery player)",
        description="Loop the renders in MEDIA_DIR_OR_MANIFEST (default: every sequence under media_dir) "
                    "full-screen and seamlessly, under OSC and keyboard control. Keys: space pause, left/right "
                    "previous/next subject, up/down previous/next sequence, 0-9 subject, b blackout, Escape/q quit.")
    p.add_argument("sources", nargs="*", metavar="MEDIA_DIR_OR_MANIFEST",
                   help="a manifest.json, a render folder, or a folder of render folders (several form a playlist)")
    p.add_argument("--windowed", action="store_true", help="play in a window (player.window_size) for set-up")
    p.add_argument("--display", type=int, metavar="N", help="display to go full-screen on (default: player.display)")
    p.add_argument("--osc-port", type=int, metavar="P", help="UDP port for OSC (default: osc.port)")
    p.add_argument("--sync", choices=("none", "leader", "follower"), help="play in step with other players: lead "
                   "them, or follow a leader (default: sync.role; README: Several screens)")
    p.add_argument("--leader", metavar="HOST", help="the leader's address, for --sync follower (default: sync.leader)")
    p.add_argument("--region", metavar="X,Y,W,H", help="show only this part of the video, normalised (a video wall: "
                   "0,0,0.5,1 is the left half; default: player.region)")
    p.add_argument("--check", action="store_true", help="validate config and media, print what was found, exit")
    p.add_argument("--service", action="store_true",
                   help="print a systemd user unit that runs this player (these arguments, this checkout) for ever: "
                        "restarted always, watched by the systemd watchdog; then exit")
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                   help="settings file (default: config.toml)")  # SUPPRESS: keeps `run.py --config X play` working
    p.set_defaults(func=play)


class PlayerLogFile(logging.handlers.RotatingFileHandler):
    """The player's rotating log file, for weeks unattended: made again (its folder too) when it was deleted, as
    with the media folder around it; and when writing fails (a full disk), one line on stderr a minute, not
    logging's forty-line report per record."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is not None and not os.path.exists(self.baseFilename):  # deleted under us: a new file
            self.stream.close()
            self.stream = None
        if self.stream is None:
            try:
                Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # emit's own failure says so, below
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - getattr(self, "_complained", -math.inf) >= 60.0:
            self._complained = now
            error = sys.exc_info()[1]
            print(f"player log {self.baseFilename}: cannot write ({error}); lines are lost until it can",
                  file=sys.stderr)


def setup_logging(player_cfg: Any, media_dir: Path, *, console: bool = True) -> Path | None:
    """Log to the console and to a rotating file in `media_dir`; returns the file (None if it cannot be opened)."""
    log.setLevel(logging.INFO)
    log.propagate = False  # our own console and file handlers, whatever the root logger has
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if console:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        log.addHandler(h)
    path = media_dir / player_cfg.log_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = PlayerLogFile(path, maxBytes=player_cfg.log_max_bytes, backupCount=player_cfg.log_backups,
                           encoding="utf-8")
    except OSError as e:
        log.warning("cannot open log file %s (%s); logging to the console only", path, e)
        return None
    fh.setFormatter(fmt)
    log.addHandler(fh)
    return path


def check(cfg: Any, sources: list[Path]) -> int:
    """Validate settings and media; print a summary. 0 when at least one sequence can play, else 1."""
    import imageio_ffmpeg

    from installation.decoder import SAFE_INPUT, count_frames
    from installation.osc import parse_allow

    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")  # no fork()+preexec_fn while threads run
    from installation.playlist import scan

    ok = True
    try:
        parse_allow(cfg.osc.allow)
    except ValueError as e:
        print(f"config: {e}")
        ok = False
    p, o = cfg.player, cfg.osc
    print(f"config: fit={p.fit} display={p.display} windowed={p.windowed} crossfade={p.crossfade}s "
          f"buffer_frames={p.buffer_frames} attract_after={p.attract_after}s")
    print(f"osc: {'on' if o.enabled else 'off'} {o.host}:{o.port} allow={list(o.allow) or 'any'} "
          f"replies to {(o.reply_host or 'sender') + ':' + (str(o.reply_port) if o.reply_port else 'sender port')}")
    result = scan(sources, {})
    for line in result.problems:
        print(f"problem: {line}")
    playable = 0
    for i, seq in enumerate(result.sequences):
        m = seq.manifest
        print(f"sequence {i}: {m.name!r} {m.size[0]}x{m.size[1]} {m.fps:g} fps, loop {m.loop_frames} frames "
              f"({m.loop_frames / m.fps:.1f} s), {len(m.subjects)} subjects, {len(m.transitions)} transitions")
        try:
            gen = imageio_ffmpeg.read_frames(str(m.loop), input_params=SAFE_INPUT)  # as the player opens it
            meta = next(gen)
            next(gen)
            gen.close()
            frames = count_frames(m.loop)
            if tuple(meta["size"]) != tuple(m.size):
                print(f"  problem: {m.loop} is {meta['size']}, the manifest says {m.size}")
            elif frames < m.loop_frames:  # cut short (a copy that stopped): the player would loop at its real end
                print(f"  problem: {m.loop} has {frames} frames that decode, the manifest says {m.loop_frames}")
            else:
                playable += 1
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"  problem: {m.loop}: cannot decode ({msg})")
        for s in m.subjects:
            print(f"  subject {s.index}: {s.name!r} frames {s.first_frame}..{s.last_frame}")
        for t in m.transitions:
            if not t.file.is_file():
                print(f"  problem: transition {t.source}->{t.target}: {t.file} is missing (will crossfade)")
    if not result.sequences:
        print(f"no renders found under {', '.join(map(str, sources))}")
    print(f"{playable} of {len(result.sequences)} sequences playable")
    return 0 if ok and playable else 1


def play(args: argparse.Namespace) -> int:
    from sequences.config import ConfigError, load_config

    try:
        cfg = load_config(getattr(args, "config", None))
        sync = {k: v for k, v in (("role", getattr(args, "sync", None)), ("leader", getattr(args, "leader", None)))
                if v is not None}
        region = getattr(args, "region", None)
        overrides = {"sync": sync, "player": {"region": region} if region else {}}
        cfg = cfg.override(overrides, source="command line")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    media_dir = Path(cfg.general.media_dir)
    sources = [Path(s) for s in args.sources] or [media_dir]
    if args.osc_port is not None and not 0 <= args.osc_port <= 65535:
        print(f"error: --osc-port {args.osc_port} is not a UDP port", file=sys.stderr)
        return 2
    if getattr(args, "leader", None) is not None and cfg.sync.role != "follower":
        print(f"error: --leader names the leader of a follower, but this player's sync role is {cfg.sync.role!r} "
              "(add --sync follower, or set [sync] role)", file=sys.stderr)
        return 2
    if args.check:  # what `play` with these options would do, --osc-port included
        port = args.osc_port if args.osc_port is not None else cfg.osc.port
        return check(dataclasses.replace(cfg, osc=dataclasses.replace(cfg.osc, port=port)), sources)
    if args.service:
        print(service_unit(args), end="")
        return 0
    setup_logging(cfg.player, media_dir)
    from installation.player import Player
    from installation.service import install_signals
    from sequences.config import DEFAULT_PATH

    player = Player(cfg, sources, windowed=True if args.windowed else None, display=args.display,
                    osc_port=args.osc_port, config_path=Path(getattr(args, "config", None) or DEFAULT_PATH),
                    state_path=media_dir / cfg.player.state_file if cfg.player.state_file else None,
                    overrides=overrides)
    install_signals(player.request)  # SIGTERM and SIGINT stop it cleanly, SIGHUP reloads, SIGUSR1 logs the status
    try:
        player.open()
    except (OSError, ValueError) as e:
        log.error("cannot start: %s", e)
        player.close()
        return 2
    except Exception as e:  # pygame.error: no display, bad video driver...
        log.error("cannot start: %s: %s", type(e).__name__, e)
        player.close()
        return 2
    log.info("playing %d sequences", len(player.playlist.sequences))
    try:
        player.run()
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        player.stop_reason = "interrupted"
    finally:
        player.close()
    return 0


def service_unit(args: argparse.Namespace) -> str:
    """The systemd unit for `run.py play` with these arguments (less --service), in this checkout, with this Python."""
    from installation.service import unit_text

    root = Path(__file__).resolve().parent.parent
    words = ["play", *(str(Path(s).resolve()) for s in args.sources)]
    if getattr(args, "config", None):
        words += ["--config", str(Path(args.config).resolve())]
    if args.display is not None:
        words += ["--display", str(args.display)]
    if args.osc_port is not None:
        words += ["--osc-port", str(args.osc_port)]
    for flag in ("sync", "leader", "region"):
        if getattr(args, flag, None) is not None:
            words += [f"--{flag}", getattr(args, flag)]
    if args.windowed:
        words.append("--windowed")
    return unit_text(root, sys.executable, words)
