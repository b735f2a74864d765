"""What the commands share: options that set config keys, the config and generator they resolve to, the output
folder, and the settings.json written beside every command's outputs.

    config_option(p, "--steps", "render.steps", type=int, help="projection steps per photo (render.steps)")
    cfg, device, dtype, G = load(args)           # config.toml (or --config) with the options given on top
    out = output_folder(args, cfg, "morph", "a--b")      # --out, or <media_dir>/morph/a--b
    write_settings(out, "morph", args, cfg, G, info, t0)  # settings.json and config.toml, both atomic

The standard library only at import time, so that `run.py --help` starts without torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

log = logging.getLogger("commands")

KEYS = "config_keys"  # the parser default holding {dest: config key} of the options that set config keys


# ------------------------------------------------------------------------------------------------- options


def config_option(p: argparse.ArgumentParser, flag: str, key: str, help: str, **kw) -> None:
    """An option whose value, when given, overrides the config key `key` ("render.steps", "seed"): `load` and
    `overrides` put it into the config, so config.toml validates it like a file's key and records it."""
    action = p.add_argument(flag, help=help, **kw)
    p.set_defaults(**{KEYS: {**(p.get_default(KEYS) or {}), action.dest: key}})


def generator_option(p: argparse.ArgumentParser) -> None:
    config_option(p, "--generator", "generator", '"embedded" or a generator file (generator)')


def seed_option(p: argparse.ArgumentParser, help: str = "random seed (seed)") -> None:
    config_option(p, "--seed", "seed", help, type=seed_number)


def seed_number(text: str) -> int:
    """A --seed: a whole number from 0 to config.toml's MAX_SEED (numpy takes no negative seed, torch none past 64
    bits)."""
    from sequences.config import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0, not {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_SEED}, not {value}")
    return value


def run_name(text: str) -> str:
    """A run's name, which becomes a folder: a name as a sequence's is (no "/", no "..")."""
    from sequences.sequence import SequenceError, check_name

    try:
        return check_name(text, "a run name")
    except SequenceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def out_path(text: str) -> Path:
    """--out's type: an empty one would be the current folder, a checkout's config.toml among what it holds."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, not be empty")
    return Path(text)


def out_option(p: argparse.ArgumentParser, help: str = "output folder (default media/<command>/<name>/)") -> None:
    p.add_argument("--out", type=out_path, help=help)


def cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-cache", action="store_true", help="project again, ignoring and not filling the cache")


# ------------------------------------------------------------------------------------------------- config and generator


def overrides(args: argparse.Namespace) -> dict:
    """The config-shaped table of the config options the user actually gave: {"render": {"steps": 8}, "seed": 3}."""
    table: dict = {}
    for dest, key in (getattr(args, KEYS, None) or {}).items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        *sections, name = key.split(".")
        node = table
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return table


def load(args: argparse.Namespace):
    """(cfg, device, dtype, G): the config file with the options given on top, the resolved device and compute dtype
    (render/kernels/device.py), torch's thread count set, and the generator loaded on the device, running the
    configured backend (config `backend`; chain.configured_backend)."""
    from render.kernels.device import resolve_device, resolve_dtype, set_threads
    from render.models import load_generator
    from render.pipeline.chain import configured_backend
    from sequences.config import load_config

    cfg = load_config(getattr(args, "config", None), overrides(args) or None)
    set_threads(cfg.general.threads)
    device = resolve_device(cfg.general.device)
    dtype = resolve_dtype(cfg.general.dtype, device)
    G = load_generator(cfg.general.generator, device)
    G.backend = configured_backend(cfg, G)
    return cfg, device, dtype, G


def projection_cache(args: argparse.Namespace, cfg) -> Path | None:
    """The projection cache folder (cache_dir, shared with `run.py render`), or None when off or --no-cache."""
    cache = cfg.general.cache_dir
    return None if getattr(args, "no_cache", False) or not cache else Path(cache)


# ------------------------------------------------------------------------------------------------- outputs


def output_folder(args: argparse.Namespace, cfg, command: str, *parts: str) -> Path:
    """--out if given, else <media_dir>/<command>/<parts...>, made now, before any work; OutputFolderError (one line)
    for a path that is a file, or a folder holding what `command` did not write (sequences/atomic.py)."""
    from sequences.atomic import claim_output_folder

    return claim_output_folder(args.out or Path(cfg.general.media_dir, command, *parts), f"run.py {command}")


def arguments(args: argparse.Namespace) -> dict:
    """The command's arguments as given (options left at None, meaning "from the config", are left out)."""
    return {k: v for k, v in vars(args).items() if k not in ("func", KEYS) and v is not None}


def _plain(value):
    """json.dumps's fallback: paths as text, numpy and torch scalars and arrays as numbers and lists."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _json_safe(value):
    """`value` with NaN and infinities as null: JSON has no such numbers, and json.dumps would write them anyway
    (a settings.json that strict readers refuse). numpy and torch values are plain numbers and lists first."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_settings(out: Path, command: str, args: argparse.Namespace, cfg, G, info: dict, t0: float, *,
                   seed: int | None = None) -> None:
    """settings.json (command, arguments, generator, seed, the command's `info`, seconds since `t0`, creation time)
    and config.toml (the resolved config) into `out`, each written atomically. `seed` defaults to the config's."""
    from sequences.atomic import SETTINGS_HEADER, write_atomic

    settings = {"command": command, "args": arguments(args), "generator": G.describe(),
                "seed": cfg.general.seed if seed is None else seed, **info,
                "seconds": round(time.perf_counter() - t0, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(out / "settings.json", json.dumps(_json_safe(settings), indent=2, default=_plain) + "\n")
    write_atomic(out / "config.toml", f"{SETTINGS_HEADER}run.py {command}\n" + cfg.to_toml())
    log.info("%s: wrote %s", command, out)
