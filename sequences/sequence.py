"""Sequence files: which subjects a render chains, in which order, with which settings.

    name = "demo"                      # output goes to media/<name>/ unless --out DIR is given
    generator = "embedded"             # optional: overrides config.toml's generator
    [render]                           # optional: any [render] key of config.toml (also [projection], [align])
    steps = 300
    [[subjects]]
    name = "astronaut"
    image = "subjects/astronaut.png"   # relative to the sequence file
    restore = "auto"                   # optional: "none", or e.g. ["grayscale", "lowres"] (projection.restore)

Standard library only. Errors are `SequenceError`, one line naming the file and the key.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sequences.config import Config, ConfigError, expand_home, restore_text

# Names become file names (segments/<subject>.<key>.mp4) and OSC arguments: letters and digits of any script, '.', '_',
# '-'. Never "--", which joins two names into an edge's or a transition's (latents/edges/<a>--<b>.npz): with it, the
# edge a -> "b--c" and the edge "a--b" -> c would be one file.
_NAME = re.compile(r"(?!.*--)[^\W_][\w.-]{0,63}")
_OVERRIDABLE = ("render", "projection", "align")


class SequenceError(ValueError):
    """A sequence file is missing, malformed, or names something it must not."""


@dataclass(frozen=True)
class Subject:
    name: str
    image: Path
    restore: str = ""  # "auto" | "none" | "grayscale,lowres,jpeg" (any of them); "" = projection.restore


@dataclass(frozen=True)
class Sequence:
    name: str
    path: Path
    subjects: tuple[Subject, ...]
    overrides: dict[str, Any] = field(default_factory=dict)  # config-shaped table applied over config.toml

    def config(self, base: Config) -> Config:
        """The settings this sequence renders with: `base` plus the file's own overrides."""
        try:
            return base.override(self.overrides, source=str(self.path))
        except ConfigError as e:
            raise SequenceError(str(e)) from None


def check_name(value: Any, where: str) -> str:
    """`value` if it is a valid name (of a sequence, a subject, a montage run), NFC-normalised; SequenceError else."""
    if isinstance(value, str):  # one spelling of "Zoë", whether typed on macOS (decomposed) or elsewhere
        value = unicodedata.normalize("NFC", value)
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SequenceError(f"{where} must be a name of letters, digits, '.', '_' or '-' (at most 64, starting "
                            f"with a letter or digit, no '--'), not {value!r}")
    return value


def load_sequence(path: str | Path) -> Sequence:
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) is not TOML
    except FileNotFoundError:
        raise SequenceError(f"{path}: sequence file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SequenceError(f"{path}: not a readable TOML sequence file: {e}") from None

    unknown = set(table) - {"name", "generator", "subjects", *_OVERRIDABLE}
    if unknown:
        raise SequenceError(f"{path}: unknown key '{sorted(unknown)[0]}' (allowed: name, generator, subjects, "
                            f"{', '.join(f'[{s}]' for s in _OVERRIDABLE)})")
    name = check_name(table.get("name"), f"{path}: 'name'")
    raw_subjects = table.get("subjects")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise SequenceError(f"{path}: needs at least one [[subjects]] entry with name and image")
    subjects, seen = [], set()
    for i, s in enumerate(raw_subjects):
        where = f"{path}: subjects[{i}]"
        if not isinstance(s, dict) or set(s) - {"name", "image", "restore"}:
            raise SequenceError(f"{where} takes the keys name and image, and optionally restore")
        subject_name = check_name(s.get("name"), f"{where}.name")
        if subject_name in seen:
            raise SequenceError(f"{where}.name {subject_name!r} is used twice")
        seen.add(subject_name)
        image = s.get("image")
        if not isinstance(image, str) or not image:
            raise SequenceError(f"{where}.image must be a path to a photo")
        restore = ""
        if "restore" in s:
            try:
                restore = restore_text(s["restore"])
            except ValueError as e:
                raise SequenceError(f"{where}.restore {e}") from None
        subjects.append(Subject(subject_name, (path.parent / expand_home(image)).resolve(), restore))

    overrides: dict[str, Any] = {k: table[k] for k in _OVERRIDABLE if k in table}
    if "generator" in table:
        overrides["generator"] = _beside(table["generator"], path, keep="embedded")
    for key, value in overrides.items():
        if key != "generator" and not isinstance(value, dict):
            raise SequenceError(f"{path}: '{key}' must be a table ([{key}])")
    if "start" in overrides.get("projection", {}):
        overrides["projection"] = {**overrides["projection"],
                                   "start": _beside(overrides["projection"]["start"], path, keep="mean")}
    return Sequence(name, path.resolve(), tuple(subjects), overrides)


def _beside(value: Any, sequence_file: Path, keep: str) -> Any:
    """A file path given in a sequence file is relative to that file, like its images (`keep` is a keyword)."""
    if not isinstance(value, str) or value in (keep, ""):
        return value  # a wrong type is reported by the config check, naming the key
    value = expand_home(value)
    return value if Path(value).is_absolute() else str((sequence_file.parent / value).resolve())


def find_sequences(paths: list[str | Path]) -> list[Path]:
    """Sequence files from arguments that are files or folders (a folder contributes its *.toml, sorted, leaving out
    hidden files such as the "._name.toml" that macOS writes on shared drives)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.glob("*.toml") if not q.name.startswith(".")))
        else:
            found.append(p)
    return found
