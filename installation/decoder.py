"""Background decoding: one thread per video stream reads an ffmpeg process into a bounded queue.

    dec = Decoder(path, fps=24, start=120, loop=True, src_size=(512, 512), scale=(1080, 1080), buffer_frames=24)
    item = dec.get()        # Frame(pos, index, data) | End() | Failed(reason) | None when nothing is ready yet
    dec.close()             # returns at once: kills ffmpeg; the thread frees its buffer and exits on its own

ffmpeg (the binary imageio-ffmpeg ships, with the same raw-video pipe as imageio_ffmpeg.read_frames) scales (and
for "fill" crops) each frame to its size on screen in its own process and hands over 32-bit pixels that pygame wraps
without copying, so the main loop only blits. We start ffmpeg ourselves rather than through read_frames because a
player must stop a decoder at once: read_frames waits up to 10 s for ffmpeg's header and up to 1.5 s for it to exit
after closing, and forks with a preexec_fn (unsafe with threads); with a jump every few seconds on a busy machine,
ffmpeg processes piled up, each holding its own memory (bench/RESULTS.md). Here close() kills ffmpeg, and every
process is reaped.

The queue holds at most `buffer_frames` frames, so memory is bounded by buffer_frames * out_w * out_h * 4 bytes per
stream and the decoder blocks when the screen is ahead. A loop stream restarts ffmpeg at the end of the file and goes
on from frame 0 while the queue still holds the frames before the loop point, so the wrap has no gap. Every frame is
labelled with its index in the video, so the wrap point is exact whatever the manifest claims.

An ffmpeg that dies before the frame count the manifest gives (killed, out of memory, a read error) is not the end
of the file: it is started again at the next frame (at most MAX_RESTARTS times in RESTART_WINDOW seconds), and the
frames queued meanwhile hide the restart. Only a file that really is shorter (ffmpeg ends cleanly, or a restart past
the last frame finds nothing) loops early, and the log says which it was.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def release_big_blocks(threshold: int = 1 << 20) -> bool:
    """Ask glibc to serve every allocation above `threshold` bytes (decoded frames) from mmap, so freed frames go
    back to the OS at once. Without this glibc raises its threshold after the first freed frame and keeps frames in
    per-thread heaps, where a weeks-long run slowly fragments. False (and nothing changed) off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


MAX_RESTARTS, RESTART_WINDOW = 3, 60.0  # a decoder that dies mid-file is restarted at most 3 times a minute

PIX_FMT = "rgb0"  # ffmpeg pixel format: bytes R, G, B, pad; pygame.image.frombuffer(data, size, "RGBX")
BYTES_PER_PIXEL = 4


@dataclass(frozen=True)
class Frame:
    pos: int  # frames since this stream started (0, 1, 2, ... never wraps)
    index: int  # frame index in the video file (wraps to 0 at the loop point)
    data: bytes  # out_h * out_w * 4 bytes, PIX_FMT


@dataclass(frozen=True)
class End:
    """A non-looping stream has delivered its last frame."""

    frames: int


@dataclass(frozen=True)
class Failed:
    reason: str  # one line


def seek_params(start: int, fps: float) -> list[str]:
    """ffmpeg input options that make the first decoded frame frame `start` (accurate seek, half a frame early)."""
    return [] if start <= 0 else ["-ss", f"{(start - 0.5) / fps:.6f}"]


def filter_params(scale: tuple[int, int], crop: tuple[int, int, int, int]) -> list[str]:
    """ffmpeg output options scaling every frame to `scale` (w, h) and cropping (x, y, w, h). The scale is always
    explicit, so a video whose size differs from its manifest still yields frames of the expected byte size."""
    filters = [f"scale={scale[0]}:{scale[1]}:flags=bicubic"]
    x, y, w, h = crop
    if (w, h) != tuple(scale):
        filters.append(f"crop={w}:{h}:{x}:{y}")
    return ["-vf", ",".join(filters)]


# Only a plain local MP4/MOV is ever opened: the mov demuxer and the file protocol, so no file can make ffmpeg read
# other files or URLs (an HLS playlist, a concat list) whatever its name or content. `run.py play --check` too.
SAFE_INPUT = ["-protocol_whitelist", "file", "-f", "mov"]


def count_frames(path: Path, timeout: float = 600.0) -> int:
    """How many frames of `path` decode, reading it as the player does (SAFE_INPUT): what `play --check` compares
    with the manifest (a file cut short opens, and its first frames decode, but it ends early)."""
    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
                          *SAFE_INPUT, "-i", str(path), "-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-"],
                         capture_output=True, text=True, timeout=timeout)
    frames = [line.split("=", 1)[1] for line in out.stdout.splitlines() if line.startswith("frame=")]
    return int(frames[-1]) if frames else 0


def ffmpeg_command(path: Path, start: int, fps: float, filters: list[str]) -> list[str]:
    import imageio_ffmpeg  # only for the path of its ffmpeg binary

    return [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
            *SAFE_INPUT, *seek_params(start, fps), "-i", str(path), "-map", "0:v:0", "-an", "-sn",
            *filters, "-pix_fmt", PIX_FMT, "-vcodec", "rawvideo", "-f", "image2pipe", "-"]


class Decoder:
    """Decodes `path` from frame `start` in a daemon thread; `loop` restarts at frame 0 after the last frame."""

    def __init__(self, path: str | Path, *, fps: float, start: int = 0, loop: bool = True,
                 src_size: tuple[int, int], scale: tuple[int, int] | None = None,
                 crop: tuple[int, int, int, int] | None = None, buffer_frames: int = 24,
                 expected_frames: int = 0, start_now: bool = True):
        self.path = Path(path)
        self.fps = fps
        self.start = start
        self.loop = loop
        scale = tuple(scale or src_size)
        self.crop = tuple(crop or (0, 0, *scale))
        self.out_size = self.crop[2], self.crop[3]  # (w, h) of every delivered frame
        self._filters = filter_params(scale, self.crop)
        self.expected_frames = expected_frames  # frames the manifest gives the file; 0 = unknown
        self.known_end: int | None = None  # frames the file really has, once a decode found it shorter
        self.restarts = 0  # times ffmpeg died before the end of the file and was started again at the next frame
        self._restart_times: collections.deque = collections.deque()
        self.frame_bytes = self.out_size[0] * self.out_size[1] * BYTES_PER_PIXEL
        self.queue: queue.Queue = queue.Queue(maxsize=buffer_frames)
        self._stop = threading.Event()
        self._process = None  # the running ffmpeg, once known
        self._thread = threading.Thread(target=self._run, name=f"decode {self.path.name}", daemon=True)
        if start_now:
            self.begin()

    def begin(self) -> None:
        """Start the thread (once). The player defers this until after a flip: starting a thread waits for it."""
        if self._thread.ident is None:
            self._thread.start()

    def get(self) -> Frame | End | Failed | None:
        """The next item, or None if the decoder has nothing ready (the caller never waits)."""
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop: kill ffmpeg (which unblocks the thread) and let the thread free its buffer. Does not wait."""
        self._stop.set()
        proc = self._process
        if proc is not None and proc.returncode is None:
            try:
                proc.kill()
            except OSError:
                pass
        if self._thread.ident is None:
            self._drain()

    def join(self, timeout: float = 5.0) -> bool:
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def begun(self) -> bool:
        return self._thread.ident is not None

    def _drain(self) -> None:
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass

    def _put(self, item: object) -> bool:
        """Block until the queue has room (or we are told to stop); False when stopping."""
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            self._decode()
        finally:
            if self._stop.is_set():
                self._drain()

    def _decode(self) -> None:
        start, pos, passes = self.start, 0, 0
        resumed = False  # this ffmpeg was started at the frame after one that died: frames 0 means the real end
        while not self._stop.is_set():
            count, data = 0, b""
            if os.path.realpath(self.path) != os.path.abspath(self.path):  # the manifest named it resolved
                self._put(Failed(f"{self.path}: became a link since the media scan; not opened"))
                return
            errors = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on its own messages
            try:
                proc = subprocess.Popen(ffmpeg_command(self.path, start, self.fps, self._filters),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                        process_group=0)  # a Ctrl-C at the terminal is the player's, not ffmpeg's
            except OSError as e:
                errors.close()
                self._put(Failed(f"{self.path}: cannot start ffmpeg ({e})"))
                return
            self._process = proc
            try:
                if self._stop.is_set():  # closed while we were starting it
                    proc.kill()
                while True:
                    data = proc.stdout.read(self.frame_bytes)
                    if len(data) < self.frame_bytes:  # end of the video (or ffmpeg failed or was killed)
                        break
                    if not self._put(Frame(pos, start + count, data)):
                        break
                    pos, count = pos + 1, count + 1
            finally:
                if self._stop.is_set():
                    proc.kill()
                proc.stdout.close()
                proc.wait()  # always reaped: no zombies, however long the show runs
                self._process = None
                errors.seek(max(0, errors.seek(0, 2) - 4000))
                error = errors.read().decode("utf-8", "replace").strip()
                errors.close()
            if self._stop.is_set():
                return
            end = start + count  # the frame after the last one delivered
            died = proc.returncode != 0 or len(data) not in (0, self.frame_bytes)
            reason = _why(proc.returncode, error, data, self.frame_bytes)
            short = self._short(end)
            if resumed and count == 0 and proc.returncode == 0:  # nothing after where it died: the file ends there
                self.known_end = start
                log.warning("%s: has %d frames, the manifest says %d: the file is shorter (nothing to decode past "
                            "frame %d); looping at its real end", self.path, start, self.expected_frames, start - 1)
            elif short and (died or error) and (count or resumed) and self._may_restart():
                self.restarts += 1
                log.warning("%s: the decoder stopped at frame %d of %d (%s), not the end of the file; restarting "
                            "it at frame %d (restart %d)", self.path, end, self.expected_frames, reason, end,
                            self.restarts)
                start, resumed = end, True
                continue
            elif count == 0 and not resumed:
                self._put(Failed(f"{self.path}: cannot decode ({reason or 'no frames'})"))
                return
            elif died or (short and error):
                log.warning("%s: decoding stopped after frame %d (%s); treating it as the end%s", self.path, end - 1,
                            reason, " (restarted too often in the last minute)" if short else "")
            elif short:
                self.known_end = end
                log.warning("%s: has %d frames, the manifest says %d: the file is shorter (ffmpeg ended without "
                            "error); looping at its real end", self.path, end, self.expected_frames)
            elif passes == 0 and start == 0 and self.expected_frames and end > self.expected_frames:
                log.warning("%s: has %d frames, the manifest says %d; looping at the real end", self.path, end,
                            self.expected_frames)
            if not self.loop:
                self._put(End(pos))
                return
            start, passes, resumed = 0, passes + 1, False

    def _short(self, end: int) -> bool:
        """Whether a decode that stopped after `end` frames stopped before the end the manifest (or an earlier
        check) gives the file."""
        real_end = self.known_end if self.known_end is not None else self.expected_frames
        return 0 < end < real_end

    def _may_restart(self) -> bool:
        """At most MAX_RESTARTS restarts in any RESTART_WINDOW seconds: a decoder that keeps dying is not hidden."""
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > RESTART_WINDOW:
            self._restart_times.popleft()
        if len(self._restart_times) >= MAX_RESTARTS:
            return False
        self._restart_times.append(now)
        return True


def _why(returncode: int, error: str, data: bytes, frame_bytes: int) -> str:
    """One line on how an ffmpeg run ended."""
    if error:
        return error.splitlines()[-1]
    if returncode < 0:
        return f"ffmpeg killed by signal {-returncode}"
    if returncode:
        return f"ffmpeg exit status {returncode}"
    return "partial frame" if len(data) not in (0, frame_bytes) else ""
