"""Atomic file writes: a reader (the player, a resumed render) sees the old file or the new one, never half of one.

    write_atomic(folder / "manifest.json", text)     # temporary in the same folder, fsync, rename

Standard library only: the render, the sequences layer and the player may all use it.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it)
os.umask(_UMASK)


# The names of write_atomic's temporaries, ".<name>.<8 random characters>.tmp" (tempfile.mkstemp's), which a write
# killed midway leaves behind: a render deletes these in its own folders, and nothing else.
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


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
