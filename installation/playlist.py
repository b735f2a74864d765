"""The playlist: which renders exist, found by scanning folders in a background thread.

    scanner = Scanner([Path("media")], every=5.0)      # looks now, then every 5 s, and on scanner.trigger()
    result = scanner.poll()                              # a Scan, or None while nothing new
    playlist.update(result.sequences)

A source is a manifest.json, a render folder holding one, or a folder of render folders (media/). Only manifests the
scan found are ever played, so no command can make the player open a path. A manifest that cannot be read, or whose
loop video is missing or empty, is reported once (until its files change) and left out; the rest play on.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sequences.manifest import Manifest, ManifestError, read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlaylistEntry:
    """One playable render in the playlist: its manifest and the version of its files. (Not
    sequences.sequence.Sequence, the file that says which subjects a render chains.)"""

    manifest: Manifest
    stamp: tuple  # (manifest mtime_ns, size, loop mtime_ns, size): changes when a render is rewritten

    @property
    def name(self) -> str:
        return self.manifest.name


@dataclass(frozen=True)
class Scan:
    sequences: tuple[PlaylistEntry, ...]
    problems: tuple[str, ...] = ()  # one line per newly found bad render


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # an unreadable folder (is_file lets PermissionError through): as good as absent
        return False


def source_problem(src: Path) -> str | None:
    """Why a media source holds no render, in one line naming the path, or None: a path that does not exist, a file
    that is not a manifest, a folder with no render in it. (A .json file is read as a manifest, and any fault in it
    reported as such.)"""
    try:
        if src.is_file():
            return None if src.suffix.lower() == ".json" else (
                f"{src}: a file, not a manifest (give a manifest.json, a render folder or a folder of render folders)")
        if not src.exists():
            return f"{src}: no such file or folder"
        if src.is_dir() and not find_manifests([src]):
            return f"{src}: no renders in this folder (no manifest.json in it or in the folders inside it)"
    except OSError:
        return None  # unreadable: find_manifests says so
    return None


def find_manifests(sources: list[Path], outside: list[Path] | None = None) -> list[Path]:
    """manifest.json paths under `sources`, in source order, render folders sorted by name within a folder. Folders
    that cannot be read are left out (and, for a source itself, logged); so are files that are not .json, and render
    folders that are links leading out of their source (added to `outside`): whatever a name in the media folder
    points at, OSC can only ever choose what lies inside it."""
    found: list[Path] = []
    for src in sources:
        if _is_file(src):
            if src.suffix.lower() == ".json":
                found.append(src)
        elif _is_file(src / "manifest.json"):
            found.append(src / "manifest.json")
        else:
            try:  # is_dir too lets PermissionError through (a source in a folder we may not enter)
                entries = list(src.iterdir()) if src.is_dir() else []
            except OSError as e:
                log.warning("cannot list %s: %s", src, e.strerror or e)
                continue
            inside = src.resolve()
            for p in sorted(entries):
                if p.name.startswith(".") or not _is_file(p / "manifest.json"):
                    continue
                if p.is_symlink() and not p.resolve().is_relative_to(inside):
                    if outside is not None:
                        outside.append(p)
                    continue
                found.append(p / "manifest.json")
    return found


def _stamp(*paths: Path) -> tuple:
    out: tuple = ()
    for p in paths:
        try:
            st = os.stat(p)
            out += (st.st_mtime_ns, st.st_size)
        except OSError:
            out += (None, None)
    return out


def check_render(path: Path, known: dict[Path, PlaylistEntry] | None = None) -> PlaylistEntry:
    """Read one manifest and check its loop video is there; ManifestError (one line) otherwise. `known` (path ->
    entry, kept by the caller between scans): a manifest and loop whose files have not changed since are not read
    again, so a rescan every few seconds costs a stat per render, not a parse (a large manifest stalled the picture
    at every scan)."""
    entry = known.get(path) if known is not None else None
    if entry is not None and (str(path), *_stamp(path, entry.manifest.loop)) == entry.stamp:
        return entry
    m = read_manifest(path)
    times = _stamp(path, m.loop)
    if times[2] is None:
        raise ManifestError(f"{m.loop}: loop video is missing")
    if times[3] == 0:
        raise ManifestError(f"{m.loop}: loop video is empty")
    entry = PlaylistEntry(m, (str(path), *times))  # the path too: a renamed folder is a new render
    if known is not None:
        known[path] = entry
    return entry


def scan(sources: list[Path], reported: dict[Path, tuple], known: dict[Path, PlaylistEntry] | None = None) -> Scan:
    """Every playable render under `sources`. `reported` (path -> stamp of a bad render already logged, and
    ("source", path) -> the problem of a source) is updated so each problem is reported once until it changes;
    `known` (check_render's) keeps the renders found, so an unchanged one is not read again."""
    sequences, problems, names = [], [], set()
    for src in sources:
        why, key = source_problem(src), ("source", src)
        if why is not None and reported.get(key) != why:
            problems.append(why)
        if why is None:
            reported.pop(key, None)
        else:
            reported[key] = why
    outside: list[Path] = []
    manifests = find_manifests(sources, outside)
    for link in outside:
        target = str(link.resolve())
        if reported.get(("outside", link)) != target:
            reported[("outside", link)] = target
            problems.append(f"skipping render {link}: a link out of the media folder (to {target})")
    for path in manifests:
        stamp = _stamp(path)
        try:
            seq = check_render(path, known)
        except Exception as e:  # ManifestError, or anything odd in one folder: that render is left out, not the scan
            if reported.get(path) != stamp:
                reported[path] = stamp
                why = e if isinstance(e, ManifestError) else f"{path}: {type(e).__name__}: {str(e)[:200]}"
                problems.append(f"skipping render: {why}")
            continue
        if seq.name in names:
            if reported.get(path) != stamp:
                reported[path] = stamp
                problems.append(f"skipping render {path}: another sequence is already named {seq.name!r}")
            continue
        reported.pop(path, None)
        names.add(seq.name)
        sequences.append(seq)
    if known is not None:  # renders gone, broken or left out are forgotten
        for gone in set(known) - {Path(s.stamp[0]) for s in sequences}:
            del known[gone]
    return Scan(tuple(sequences), tuple(problems))


MIN_SCAN_GAP = 1.0  # seconds between the end of one scan and the next, however often a rescan is asked for
RETRY_AFTER = 60.0  # seconds before a sequence that failed to play is tried again, even if its files did not change


@dataclass
class Playlist:
    """Ordered sequences plus those that failed to play (skipped until their files change, or for RETRY_AFTER s:
    a failure may have been passing, such as a file being copied in)."""

    sequences: list[PlaylistEntry] = field(default_factory=list)
    failed: dict[str, tuple[tuple, float]] = field(default_factory=dict)  # name -> (stamp, monotonic time) of failure
    clock: Callable[[], float] = time.monotonic

    def update(self, sequences: tuple[PlaylistEntry, ...]) -> tuple[list[str], list[str], list[str]]:
        """Take a new scan; returns the names (added, removed, changed)."""
        old = {s.name: s for s in self.sequences}
        new = {s.name: s for s in sequences}
        added = [n for n in new if n not in old]
        removed = [n for n in old if n not in new]
        changed = [n for n in new if n in old and new[n].stamp != old[n].stamp]
        for n in changed + removed:
            self.failed.pop(n, None)
        self.sequences = list(sequences)
        return added, removed, changed

    def playable(self, name: str) -> bool:
        seq = self.get(name)
        if seq is None:
            return False
        stamp, when = self.failed.get(name, (None, 0.0))
        return stamp != seq.stamp or self.clock() - when >= RETRY_AFTER

    def mark_failed(self, name: str) -> None:
        seq = self.get(name)
        if seq is not None:
            self.failed[name] = (seq.stamp, self.clock())

    def get(self, name: str) -> PlaylistEntry | None:
        for s in self.sequences:
            if s.name == name:
                return s
        return None

    def position(self, name: str | None) -> int:
        """Index of `name` in the playlist, -1 when absent."""
        for i, s in enumerate(self.sequences):
            if s.name == name:
                return i
        return -1

    def find(self, key: int | str) -> PlaylistEntry | None:
        """By playlist index (int) or name; a string of digits that is not a name is taken as an index."""
        if isinstance(key, str):
            seq = self.get(key)
            if seq is not None or not (key.isascii() and key.isdigit()):  # not "²", which int() refuses
                return seq
            key = int(key)
        return self.sequences[key] if 0 <= key < len(self.sequences) else None

    def step(self, name: str | None, delta: int) -> PlaylistEntry | None:
        """The next playable sequence `delta` (+1/-1) away from `name`, wrapping; None if none is playable."""
        n = len(self.sequences)
        i = self.position(name)
        if i < 0:
            i = -1 if delta > 0 else 0
        for k in range(1, n + 1):
            seq = self.sequences[(i + delta * k) % n]
            if self.playable(seq.name):
                return seq
        return None


class Scanner:
    """Runs `scan` in a daemon thread every `every` seconds, and at once on `trigger()`. Each trigger has a number;
    `covered` is the highest whose scan `poll` has handed over (a scan started after it was asked for)."""

    def __init__(self, sources: list[Path], every: float):
        self.sources = list(sources)
        self.every = every
        self.covered = 0
        self._asked = 0
        self._results: queue.Queue = queue.Queue(maxsize=1)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reported: dict[Path, tuple] = {}
        self._known: dict[Path, PlaylistEntry] = {}
        self._thread = threading.Thread(target=self._run, name="media scan", daemon=True)
        self._thread.start()

    def trigger(self) -> int:
        self._asked += 1  # only the main loop triggers: no lock needed
        self._wake.set()
        return self._asked

    def poll(self) -> Scan | None:
        try:
            covers, result = self._results.get_nowait()
        except queue.Empty:
            return None
        self.covered = max(self.covered, covers)
        return result

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            covers = self._asked  # every trigger until now is answered by this scan
            try:
                result = scan(self.sources, self._reported, self._known)
            except Exception as e:  # a folder vanished mid-scan, permissions...: try again next time
                log.warning("media scan failed: %s", e)
                result = None
            if result is not None:
                for line in result.problems:
                    log.warning("%s", line)
                try:
                    self._results.get_nowait()  # keep only the newest scan
                except queue.Empty:
                    pass
                self._results.put((covers, result))
            started = time.monotonic()
            self._wake.wait(self.every)
            self._wake.clear()
            self._stop.wait(max(0.0, started + MIN_SCAN_GAP - time.monotonic()))  # a /reload flood: one scan a second
