"""Atomic file writes: a reader (the player, a resumed render) sees the old file or the new one, never half of one.

    write_atomic(folder / "manifest.json", text)     # temporary in the same folder, fsync, rename

Standard library only: the render, the sequences layer and the player may all use it.
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it)
os.umask(_UMASK)


# The names of write_atomic's temporaries, ".<name>.<8 random characters>.tmp" (tempfile.mkstemp's), which a write
# killed midway leaves behind: a render deletes these in its own folders, and nothing else.
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


# What reading a damaged file of ours can raise (a cache entry cut short by a full disk, a bit flipped on a card):
# np.load of a cut or garbled .npz raises zipfile's, zlib's or EOFError, none of them an OSError or a ValueError.
# A reader that can make the file again (a cache) catches these and does; one that cannot names the file.
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def write_atomic(path: Path, data: bytes | str, *, if_changed: bool = False) -> None:
    """Write to a temporary file in the same folder (named as TEMPORARY), then rename: readers never see a
    half-written file. `if_changed`: write nothing when the file holds `data` already (a re-run that changes nothing
    leaves the folder as it was, and works on a folder it may read but not write)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if if_changed:
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                return
        except OSError:
            pass  # absent or unreadable: write it
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a player running as another user must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The first line of the config.toml a render (`sequence <file>`) or a command (`run.py <command>`) writes beside its
# outputs: whose folder it is.
SETTINGS_HEADER = "# resolved settings of "
RENDER_OWNER = "sequence"


_MADE: list[Path] = []  # the folders claim_output_folder made, for release_unused_folders


class OutputFolderError(ValueError):
    """An output folder that cannot be, or must not be, written."""


def claim_output_folder(out: Path, owner: str) -> Path:
    """Make `out` ready for the outputs of `owner` (RENDER_OWNER for a render, "run.py morph" for a command), before
    any work: a path that is a file, or a folder that cannot be made, is one line now rather than a traceback after
    the projections. And a folder holding files that are not this kind of output is refused, since the outputs
    include a config.toml: `--out .` in a checkout would overwrite the project's own settings, and `--out` a render's
    folder that render's record of how it was made."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out}: exists and is not a folder; choose another output folder")
    config = out / "config.toml"
    if config.is_file():
        try:
            with open(config, encoding="utf-8", errors="replace") as f:
                first = f.readline()
        except OSError as e:
            raise OutputFolderError(f"{config}: cannot read it to see whose folder this is ({e.strerror or e})"
                                    ) from None
        if not first.startswith(SETTINGS_HEADER):
            raise OutputFolderError(f"{out}: holds a config.toml that Uncanny did not write (your settings?); "
                                    "choose another output folder")
        theirs = first[len(SETTINGS_HEADER):].strip()
        if theirs != owner and not (owner == RENDER_OWNER and theirs.startswith(f"{RENDER_OWNER} ")):
            who = f"a render of {theirs[len(RENDER_OWNER) + 1:]}" if theirs.startswith(f"{RENDER_OWNER} ") else theirs
            raise OutputFolderError(f"{out}: holds the outputs of {who}; choose another output folder")
    if owner != RENDER_OWNER and (out / "manifest.json").exists():
        raise OutputFolderError(f"{out}: is a render's folder (manifest.json); choose another output folder")
    missing = list(itertools.takewhile(lambda p: not p.exists(), (out, *out.parents)))  # the deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputFolderError(f"{out}: cannot make the output folder ({e.strerror or e})") from None
    _MADE.extend(missing)
    return out


def release_unused_folders(remove: bool = True) -> None:
    """Forget the folders claim_output_folder made in this process, removing those still empty (the deepest first)
    unless `remove` is false: a command that stopped before writing anything (a refused option, a photo without a
    face) leaves no empty folder behind. What holds anything stays."""
    while _MADE:
        path = _MADE.pop(0)
        if remove:
            try:
                path.rmdir()
            except OSError:
                pass
