"""Settings: `config.toml` read once into frozen dataclasses, one per section.

Standard library only, because both the renderer and the gallery player (which must start without torch) read it.

    cfg = load_config("config.toml")            # every key validated; unknown keys are errors
    cfg = cfg.override({"render": {"steps": 50}}, source="demo.toml")
    cfg.render.steps, cfg.osc.port

Top-level keys of the file (`generator`, `device`, ...) land in `cfg.general`. A key in a section that the dataclass
does not declare, a value of the wrong type or outside its allowed range raises `ConfigError` naming `section.key`
and the file. `to_toml()` writes the resolved settings back out, so every render can be reproduced.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config.toml"


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names the key and its file."""


RESTORE_KINDS = ("grayscale", "lowres", "jpeg")  # render/faces/degradation.py measures them, render/latent/degrade.py


def parse_restore(spec: Any) -> str | tuple[str, ...]:
    """A restore choice: "auto" | "none" | "grayscale,jpeg" | ["grayscale", "jpeg"] -> "auto", "none" or the kinds
    (in RESTORE_KINDS order). ValueError saying what is allowed."""
    words = spec.split(",") if isinstance(spec, str) else spec if isinstance(spec, (list, tuple)) else [None]
    words = [w.strip() if isinstance(w, str) else repr(w) for w in words]
    words = [w for w in words if w]
    if words in (["auto"], ["none"]):
        return words[0]
    if not words or any(w not in RESTORE_KINDS for w in words):
        raise ValueError(f"must be \"auto\", \"none\" or a list of {', '.join(map(repr, RESTORE_KINDS))}, "
                         f"not {spec!r}")
    return tuple(k for k in RESTORE_KINDS if k in words)


def restore_text(spec: Any) -> str:
    """parse_restore's choice as one string: "auto", "none" or "grayscale,jpeg"."""
    choice = parse_restore(spec)
    return choice if isinstance(choice, str) else ",".join(choice)


def parse_region(spec: Any) -> tuple[float, float, float, float]:
    """A part of the video, normalised x, y, w, h: "0.5,0,0.5,1" or [0.5, 0, 0.5, 1] -> (0.5, 0.0, 0.5, 1.0).
    ValueError saying what is wrong: four numbers, w and h above 0, the part inside the frame."""
    words = spec.split(",") if isinstance(spec, str) else spec if isinstance(spec, (list, tuple)) else None
    try:
        values = tuple(float(w) for w in words if isinstance(w, (str, int, float)) and not isinstance(w, bool))
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or len(words) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"must be four numbers x, y, w, h (0..1), not {spec!r}")
    x, y, w, h = values
    if min(x, y) < 0 or min(w, h) <= 0 or x + w > 1 + 1e-9 or y + h > 1 + 1e-9:
        raise ValueError(f"must lie inside the frame (x, y >= 0, w, h > 0, x + w <= 1, y + h <= 1), not {spec!r}")
    return values


def expand_home(path: str) -> str:
    """"~" and "~/..." as the user's home, as a shell has them; anything else as it is ("~draft.jpg" is a file name,
    not the home of a user called draft.jpg)."""
    if path == "~" or path.startswith("~/"):
        return str(Path.home() / path[2:])
    return path


def _opt(default: Any, *, choices: tuple | None = None, lo: float | None = None, hi: float | None = None,
         even: bool = False, hours: bool = False, region: bool = False, length: int | None = None,
         nonempty: bool = False, path: bool = False) -> Any:
    """A dataclass field with validation metadata (allowed choices, inclusive numeric range (of each item, for a
    list), even numbers only, opening hours as `parse_hours` reads them, a normalised region as `parse_region` reads
    it, a list of exactly `length` items, a string that may not be empty, a file path whose "~/" is the home)."""
    return field(default=default, metadata={"choices": choices, "lo": lo, "hi": hi, "even": even, "hours": hours,
                                            "region": region, "length": length, "nonempty": nonempty, "path": path})


def parse_hours(text: str) -> tuple[tuple[int, int], ...]:
    """Opening hours of one day, "10:00-13:00, 14:00-18:00", as (start, end) minutes after midnight; "" = closed,
    "00:00-24:00" = all day. Each range ends after it starts, within the day. ValueError says what is wrong."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            a, b = (_minute(t) for t in part.split("-"))
        except ValueError:
            raise ValueError(f"{part!r} is not a range like 10:00-18:00") from None
        if not a < b:
            raise ValueError(f"{part!r} ends before it starts (split a range past midnight over two days)")
        ranges.append((a, b))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        if start < end:
            raise ValueError(f"ranges overlap in {text!r}")
    return tuple(ranges)


def _minute(text: str) -> int:
    h, m = text.strip().split(":")
    if not (h.isdigit() and m.isdigit() and len(m) == 2):
        raise ValueError(text)
    minute = int(h) * 60 + int(m)
    if int(m) >= 60 or minute > 24 * 60:
        raise ValueError(text)
    return minute


# Steps of one projection or optimisation: 100,000 is days on a CPU, and far past where any loss still falls; a
# mistyped 10**11 would otherwise ask numpy for hundreds of GB before the first step.
MAX_STEPS = 100_000
MAX_SEED = 2**63 - 1  # numpy takes no negative seed, torch none past 64 bits


@dataclass(frozen=True)
class GeneralConfig:
    generator: str = _opt("embedded", nonempty=True, path=True)  # "embedded" or a .pkl / .pt / .uncanny.pt file
    device: str = _opt("auto", choices=("auto", "cpu", "cuda", "mps"))
    dtype: str = _opt("auto", choices=("auto", "float32", "bfloat16", "float16"))
    backend: str = _opt("auto", choices=("auto", "reference", "eager", "compiled"))  # render.kernels.backend
    seed: int = _opt(0, lo=0, hi=MAX_SEED)
    media_dir: str = "media"
    threads: int = _opt(0, lo=0)  # torch CPU threads; 0 = torch's default (one per core)
    cache_dir: str = ".cache/projections"  # aligned faces and projections of photos, shared by every command; "" = off
    cache_max_mb: int = _opt(2000, lo=0)  # the shared cache's size cap; least recently used entries go first; 0 = none


@dataclass(frozen=True)
class AlignConfig:
    size: int = _opt(256, lo=16, hi=4096)  # aligned crop kept for contact sheets and metrics
    min_face: int = _opt(24, lo=8)  # eye-to-mouth distance in source pixels below which a face is "too small"
    max_pixels: int = _opt(64_000_000, lo=1)  # larger images are refused as decompression bombs
    upsample: int = _opt(1, lo=0, hi=3)  # dlib detector up-sampling passes (finds smaller faces, slower)


@dataclass(frozen=True)
class ProjectionConfig:
    space: str = _opt("plus", choices=("plus", "single"))  # layer-wise latent, or one vector (z / w) only
    start: str = _opt("mean", path=True)  # first subject starts from "mean" or a .npy latent file
    lr: float = _opt(0.1, lo=0.0)
    lr_rampup: float = _opt(0.05, lo=0.0, hi=1.0)
    lr_rampdown: float = _opt(0.25, lo=0.0, hi=1.0)
    initial_noise: float = _opt(0.05, lo=0.0)
    noise_ramp: float = _opt(0.75, lo=0.0, hi=1.0)
    loss: str = _opt("vgg", choices=("vgg", "alex"))
    loss_size: int = _opt(0, lo=0)  # LPIPS input size; 0 = generator resolution, clamped to 64..256
    loss_layers: int = _opt(0, lo=0, hi=5)  # LPIPS layers summed by the loss; 0 = auto (render.models.lpips.auto_layers)
    mse_weight: float = _opt(0.0, lo=0.0)
    reg_weight: float = _opt(0.01, lo=0.0)
    # "auto" | "none" | a list of grayscale, lowres, jpeg (also as "grayscale,jpeg"); kept as one string
    restore: str = field(default="auto", metadata={"restore": True})


@dataclass(frozen=True)
class RenderConfig:
    steps: int = _opt(1000, lo=1, hi=MAX_STEPS)
    home_steps: int = _opt(0, lo=0, hi=MAX_STEPS)  # a home's projection from the mean face; 0 = 1.5 x steps
    every: int = _opt(10, lo=1)
    fps: int = _opt(24, lo=1, hi=240)
    size: int = _opt(512, lo=16, hi=4096, even=True)  # yuv420p video needs even sides
    filter: str = _opt("lanczos", choices=("lanczos", "bicubic", "bilinear", "nearest"))
    crf: int = _opt(18, lo=1, hi=51)  # 0 is lossless, which x264 writes in a profile most players cannot decode
    preset: str = _opt("medium", choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"))
    on_bad_subject: str = _opt("skip", choices=("skip", "stop"))
    pacing: str = _opt("even", choices=("even", "steps"))  # frame timing within a subject (see config.toml)
    loop_clips: bool = True  # close each per-subject clip into a loop of its own
    transitions: str = _opt("none", choices=("none", "consecutive", "all"))
    transition_seconds: float = _opt(2.0, lo=0.1)
    upscale: str = _opt("auto", choices=("auto", "none", "realesrgan-x4"))  # learned 4x upscaling (see config.toml)
    upscale_strength: float = _opt(1.0, lo=0.0, hi=1.0)  # 1: the upscaler's detail in full, 0: the filter's picture


@dataclass(frozen=True)
class PlayerConfig:
    fit: str = _opt("fit", choices=("fit", "fill"))
    display: int = _opt(0, lo=0)
    windowed: bool = False
    window_size: tuple[int, ...] = _opt((1280, 720), length=2, lo=1)
    crossfade: float = _opt(1.0, lo=0.0)
    blackout_fade: float = _opt(1.0, lo=0.0)
    buffer_frames: int = _opt(24, lo=2)  # decoded frames queued per stream; memory = frames * screen w * h * 4 bytes
    poster_cache_mb: int = _opt(128, lo=0)  # first frames of subjects kept for instant jumps
    transition_fade: float = _opt(0.25, lo=0.0)  # crossfade into a transition clip (capped by crossfade)
    advance_after: int = _opt(0, lo=0)  # loop passes before moving on to the next sequence; 0 = stay
    allow_quit_key: bool = True
    attract_after: float = _opt(300.0, lo=0.0)  # seconds without input before returning to the default; 0 = never
    default_sequence: str = ""  # name of the attract sequence; "" = the first one
    rescan_every: float = _opt(5.0, lo=0.5)
    log_file: str = "player.log"  # relative to media_dir
    log_max_bytes: int = _opt(1_000_000, lo=10_000)
    log_backups: int = _opt(5, lo=1)  # 0 would never rotate (logging.handlers.RotatingFileHandler)
    move_interval: float = _opt(0.5, lo=0.0)  # least seconds between two jumps; moves arriving sooner are merged
    state_file: str = "player.state"  # relative to media_dir: why the last run ended; "" = none
    region: tuple[float, ...] = _opt((0.0, 0.0, 1.0, 1.0), region=True)  # x, y, w, h of the video shown (a wall)
    frame_log: str = ""  # relative to media_dir: a line per frame shown (bench/sync.py); "" = none


@dataclass(frozen=True)
class OscConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = _opt(9000, lo=0, hi=65535)
    allow: tuple[str, ...] = ()  # sender addresses or networks ("192.168.1.0/24"); empty = anyone who can reach us
    reply_host: str = ""  # "" = reply to the sender
    reply_port: int = _opt(0, lo=0, hi=65535)  # 0 = the sender's port
    heartbeat_host: str = ""  # where /heartbeat goes; "" = no heartbeat
    heartbeat_port: int = _opt(9001, lo=1, hi=65535)
    heartbeat_every: float = _opt(1.0, lo=0.1)  # seconds between heartbeats


@dataclass(frozen=True)
class SyncConfig:
    role: str = _opt("none", choices=("none", "leader", "follower"))  # several players in step (installation/sync.py)
    leader: str = "127.0.0.1"  # follower: the leader's address; packets from anywhere else are ignored
    host: str = "127.0.0.1"  # address the sync socket binds; "0.0.0.0" for players on other machines
    port: int = _opt(9100, lo=1, hi=65535)  # the leader's sync port (UDP); followers send from any port
    group: str = "uncanny"  # players sync only within their group: two installations on one network do not mix
    lead_time: float = _opt(0.5, lo=0.05, hi=5.0)  # seconds ahead the leader schedules a command for everyone
    send_every: float = _opt(0.1, lo=0.01, hi=1.0)  # seconds between the leader's state messages
    lost_after: float = _opt(1.5, lo=0.2, hi=60.0)  # seconds without the leader before a follower plays on alone


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool = False  # off: the player plays around the clock
    monday: str = _opt("00:00-24:00", hours=True)  # opening hours, "10:00-18:00" or "10:00-13:00, 14:00-18:00"
    tuesday: str = _opt("00:00-24:00", hours=True)  # "" = closed all day
    wednesday: str = _opt("00:00-24:00", hours=True)
    thursday: str = _opt("00:00-24:00", hours=True)
    friday: str = _opt("00:00-24:00", hours=True)
    saturday: str = _opt("00:00-24:00", hours=True)
    sunday: str = _opt("00:00-24:00", hours=True)
    outside: str = _opt("blackout", choices=("blackout", "sequence"))  # what shows while closed
    outside_sequence: str = ""  # outside = "sequence": the sequence to play while closed
    sleep: bool = True  # outside = "blackout": let the display sleep (screensaver, power saving) while closed


@dataclass(frozen=True)
class ClipConfig:
    model: str = ""  # open_clip architecture name, e.g. "ViT-B-32", or a path to an open_clip model-config .json
    checkpoint: str = ""  # path to a checkpoint file you supply
    precision: str = _opt("float32", choices=("float32", "bfloat16", "float16"))  # CLIP weights (float16: CUDA only)
    steps: int = _opt(200, lo=1, hi=MAX_STEPS)  # text-steering steps
    every: int = _opt(4, lo=1)  # keep a video frame every N steps
    lr: float = _opt(0.05, lo=0.0)  # peak Adam step, in units of the latent's spread
    candidates: int = _opt(16, lo=1, hi=10_000)  # `text` starts from the best (by CLIP) of this many random faces
    truncation: float = _opt(0.7, lo=0.0, hi=1.0)  # truncation psi of the random candidates
    crops: int = _opt(8, lo=1)  # augmented views of the face scored by CLIP per step
    crop_scale: float = _opt(0.7, lo=0.1, hi=1.0)  # smallest random crop, as a fraction of the face's side
    augment: bool = True  # flips, small rotations and shifts, colour jitter, pixel noise on every view
    space: str = _opt("plus", choices=("plus", "single"))  # move every layer, or one vector (w / z) only
    reg_weight: float = _opt(0.1, lo=0.0)  # pull toward the generator's average latent
    identity_weight: float = _opt(0.5, lo=0.0)  # `edit`: pull toward the photo's projected latent
    lpips_weight: float = _opt(0.5, lo=0.0)  # `edit`: LPIPS to the projected face (differentiable identity proxy)
    strength: float = _opt(1.0, lo=0.0)  # `edit`: weight of the text term (and amount of a bare directions file)


@dataclass(frozen=True)
class MorphConfig:
    mode: str = _opt("lerp", choices=("lerp", "slerp", "style", "channel"))
    amount: float = _opt(0.5, lo=0.0, hi=1.0)  # share of face A: 1 = A, 0 = B
    crossover: int = _opt(0, lo=0)  # style: first layer from the other side; channel: channel index; 0 = the middle
    video_seconds: float = _opt(6.0, lo=0.5)  # one A -> B -> A loop
    grid_amounts: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)  # columns of the --grid sheet
    grid_modes: tuple[str, ...] = ("lerp", "slerp", "style", "channel")  # rows of the --grid sheet
    variations: int = _opt(8, lo=1)  # `variations`: how many
    layers: str = "fine"  # `variations`: coarse | middle | fine | A-B (inclusive layer indices)
    truncation: float = _opt(0.7, lo=0.0, hi=1.0)  # `variations`: truncation psi of the random latents
    children: int = _opt(4, lo=1)  # `child`: how many
    child_unit: str = _opt("layer", choices=("layer", "channel"))  # inherit whole layers or channel groups
    child_groups: int = _opt(8, lo=1)  # channel groups per layer (child_unit = "channel")
    child_blend: float = _opt(0.0, lo=0.0, hi=0.5)  # share of the other parent mixed into every inherited part
    ppl_samples: int = _opt(64, lo=1, hi=100_000)  # `morph --ppl`: samples of t along the path


@dataclass(frozen=True)
class MontageConfig:
    candidates: int = _opt(10, lo=2, hi=100)  # random candidate faces shown per feature
    truncation: float = _opt(0.8, lo=0.0, hi=1.0)  # truncation psi of the random candidates
    feather: float = _opt(0.25, lo=0.0, hi=2.0)  # seam ramp width, as a fraction of the eye-to-mouth distance
    shading: float = _opt(0.1, lo=0.0, hi=2.0)  # harmonisation: broad light from the picked faces' mean (x eye-to-mouth)
    steps: int = _opt(300, lo=1, hi=MAX_STEPS)  # harmonisation: projection steps on the composite
    every: int = _opt(3, lo=1)  # harmonisation video: a frame every N steps
    cell: int = _opt(128, lo=32, hi=1024)  # side of one candidate in the feature grids, pixels


@dataclass(frozen=True)
class DirectionsConfig:
    cache_dir: str = ".cache/directions"  # fitted directions, one .npz per generator fingerprint
    samples: int = _opt(1000, lo=20, hi=1_000_000)  # faces sampled and measured for the fit
    truncation: float = _opt(0.8, lo=0.0, hi=1.0)  # truncation psi of the sampled faces
    response_faces: int = _opt(6, lo=1)  # held-out faces moved along each direction to measure its response
    min_response: float = _opt(0.3, lo=0.0)  # "reliable": own attribute moves at least this many std per unit ...
    min_r: float = _opt(0.5, lo=0.0, hi=1.0)  # ... with at least this correlation between amount and measurement


@dataclass(frozen=True)
class FarmConfig:
    engine: str = _opt("none", choices=("none", "ray"))  # "ray": the face graph's tasks run on a Ray cluster
    address: str = "auto"  # "auto" (a cluster started with `ray start`), "ray://host:10001", or "local:N"
    cpus: float = _opt(1.0, lo=0.01)  # CPUs per task (also its torch threads, at least 1)
    gpus: float = _opt(0.0, lo=0.0)  # GPUs per projection; fractions let several small projections share one
    max_retries: int = _opt(3, lo=0)  # a task whose worker died runs again this many times at most


@dataclass(frozen=True)
class LiveConfig:
    inbox: str = "inbox"  # folder `run.py watch` takes visitors' photos from (--inbox overrides it)
    max_subjects: int = _opt(20, lo=0)  # visitors in the loop at once; the oldest is retired first; 0 = no limit
    keep_photos: bool = False  # false: a photo is deleted once aligned; true: kept in <render>/live/photos/
    announce: bool = True  # send /reload and /subject N to the player's OSC port ([osc]) when a face joins
    steps: int = _opt(0, lo=0, hi=MAX_STEPS)  # a visitor's projection steps (its home: 1.5x); 0 = render.steps
    settle: float = _opt(2.0, lo=0.0)  # seconds a file's size and time must stand still before it is taken
    poll: float = _opt(0.5, lo=0.05)  # seconds between looks at the inbox
    log_file: str = "watch.log"  # rotating log, relative to <render>/live/
    log_max_bytes: int = _opt(1_000_000, lo=10_000)
    log_backups: int = _opt(3, lo=1)  # 0 would never rotate


SECTIONS: dict[str, type] = {
    "align": AlignConfig,
    "projection": ProjectionConfig,
    "render": RenderConfig,
    "player": PlayerConfig,
    "osc": OscConfig,
    "schedule": ScheduleConfig,
    "sync": SyncConfig,
    "clip": ClipConfig,
    "montage": MontageConfig,
    "directions": DirectionsConfig,
    "morph": MorphConfig,
    "farm": FarmConfig,
    "live": LiveConfig,
}


@dataclass(frozen=True)
class Config:
    general: GeneralConfig = GeneralConfig()
    align: AlignConfig = AlignConfig()
    projection: ProjectionConfig = ProjectionConfig()
    render: RenderConfig = RenderConfig()
    player: PlayerConfig = PlayerConfig()
    osc: OscConfig = OscConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    sync: SyncConfig = SyncConfig()
    clip: ClipConfig = ClipConfig()
    montage: MontageConfig = MontageConfig()
    directions: DirectionsConfig = DirectionsConfig()
    morph: MorphConfig = MorphConfig()
    farm: FarmConfig = FarmConfig()
    live: LiveConfig = LiveConfig()

    def override(self, table: dict[str, Any], *, source: str = "overrides") -> Config:
        """A copy with `table` (same shape as the file: top-level keys and section tables) applied on top."""
        changes: dict[str, Any] = {}
        top = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if top:
            changes["general"] = _update(self.general, top, "", source)
        for name, values in table.items():
            if not isinstance(values, dict):
                continue
            if name not in SECTIONS:
                raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(SECTIONS)})")
            changes[name] = _update(getattr(self, name), values, name, source)
        return dataclasses.replace(self, **changes)

    def to_toml(self) -> str:
        lines = [f"{f.name} = {_toml_value(getattr(self.general, f.name))}" for f in dataclasses.fields(self.general)]
        for name in SECTIONS:
            section = getattr(self, name)
            lines += ["", f"[{name}]"]
            lines += [f"{f.name} = {_toml_value(getattr(section, f.name))}" for f in dataclasses.fields(section)]
        return "\n".join(lines) + "\n"


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (default: the repository's config.toml) and apply `overrides` on top."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) is not TOML
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:  # a folder, no permission, a vanished share
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    cfg = Config().override(table, source=str(path))
    return cfg.override(overrides, source="command line") if overrides else cfg


_RENAMED = {"compile": ' (it is now backend = "auto" | "reference" | "eager" | "compiled": off is "eager", on is '
                       '"compiled")'}


def _update(section: Any, values: dict[str, Any], name: str, source: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(section)}
    hints = typing.get_type_hints(type(section))
    changes = {}
    for key, value in values.items():
        where = f"{name}.{key}" if name else key
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{where}'" + _RENAMED.get(where, ""))
        changes[key] = _check(value, hints[key], fields[key].metadata, f"{source}: '{where}'")
    return dataclasses.replace(section, **changes)


def _check(value: Any, hint: Any, meta: Any, where: str) -> Any:
    if meta.get("restore"):
        try:
            return restore_text(value)
        except ValueError as e:
            raise ConfigError(f"{where} {e}") from None
    if meta.get("region"):
        try:
            return parse_region(value)
        except ValueError as e:
            raise ConfigError(f"{where} {e}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        if meta.get("nonempty") and not value.strip():
            raise ConfigError(f"{where} must not be empty")
        if meta.get("path"):
            value = expand_home(value)
    elif typing.get_origin(hint) is tuple:
        (item_type, _) = typing.get_args(hint)
        if not isinstance(value, list) or not all(isinstance(v, item_type) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where} must be a list of {item_type.__name__}, not {value!r}")
        value = tuple(value)
        if meta.get("length") and len(value) != meta["length"]:
            raise ConfigError(f"{where} must be a list of {meta['length']} {item_type.__name__}s, not {list(value)!r}")
    choices, lo, hi = meta.get("choices"), meta.get("lo"), meta.get("hi")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    items = value if isinstance(value, tuple) else (value,)
    if lo is not None and any(v < lo for v in items):
        raise ConfigError(f"{where} must be at least {lo}, not {value!r}")
    if hi is not None and any(v > hi for v in items):
        raise ConfigError(f"{where} must be at most {hi}, not {value!r}")
    if meta.get("even") and value % 2:
        raise ConfigError(f"{where} must be an even number, not {value!r}")
    if meta.get("hours"):
        try:
            parse_hours(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # a basic string: backslash, quote and control characters escaped (a path may hold any)
        return '"' + "".join(f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else "\\" + c if c in '\\"' else c
                             for c in value) + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
