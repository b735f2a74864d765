"""Background decoding: one thread per video stream runs ffmpeg (imageio-ffmpeg) into a bounded queue.

    dec = Decoder(path, start=120, loop=True, out_size=(1080, 1080), buffer_frames=24)
    item = dec.get()        # Frame(pos, index, data) | End() | Failed(reason) | None when nothing is ready yet
    dec.close()             # returns at once; the thread stops ffmpeg and exits on its own

ffmpeg scales (and for "fill" crops) each frame to its size on screen in its own process, and hands over 32-bit
pixels that pygame wraps without copying, so the main loop only blits. The queue holds at most `buffer_frames`
frames: memory is bounded by buffer_frames * out_w * out_h * 4 bytes per stream, and the decoder blocks when the
screen is ahead. A loop stream restarts ffmpeg at the end of the file and carries on from frame 0 while the queue
still holds the frames before the loop point, so the wrap has no gap. Every frame is labelled with its index in the
video, so the wrap point is exact whatever the manifest claims.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

log = logging.getLogger(__name__)
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)  # it warns on every scaled read
# imageio-ffmpeg otherwise starts ffmpeg with a preexec_fn, which makes subprocess fork() and run Python in the child:
# in a process with several threads that child can deadlock before exec (imageio-ffmpeg issue #58), leaving a stuck
# process and a decoder thread waiting forever. Without it, subprocess uses vfork/posix_spawn, which is safe.
os.environ["IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"] = "1"

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


def filter_params(src: tuple[int, int], scale: tuple[int, int], crop: tuple[int, int, int, int]) -> list[str]:
    """ffmpeg output options scaling a `src` (w, h) frame to `scale` and cropping (x, y, w, h); none if unchanged."""
    filters = []
    if tuple(scale) != tuple(src):
        filters.append(f"scale={scale[0]}:{scale[1]}:flags=bicubic")
    x, y, w, h = crop
    if (w, h) != tuple(scale):
        filters.append(f"crop={w}:{h}:{x}:{y}")
    return ["-vf", ",".join(filters)] if filters else []


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
        self._filters = filter_params(tuple(src_size), scale, self.crop)
        self.expected_frames = expected_frames
        self.frame_bytes = self.out_size[0] * self.out_size[1] * BYTES_PER_PIXEL
        self.queue: queue.Queue = queue.Queue(maxsize=buffer_frames)
        self._stop = threading.Event()
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
        """Ask the thread to stop; it frees its buffer on the way out. Does not wait."""
        self._stop.set()
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
        while not self._stop.is_set():
            count, error = 0, None
            gen = imageio_ffmpeg.read_frames(str(self.path), pix_fmt=PIX_FMT, bits_per_pixel=8 * BYTES_PER_PIXEL,
                                             input_params=seek_params(start, self.fps), output_params=self._filters)
            try:
                next(gen)  # metadata
                for data in gen:
                    if len(data) != self.frame_bytes:
                        raise RuntimeError(f"frame of {len(data)} bytes, expected {self.frame_bytes}")
                    if not self._put(Frame(pos, start + count, data)):
                        break
                    pos, count = pos + 1, count + 1
            except Exception as e:  # ffmpeg could not open or decode: report one line, never raise
                error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            finally:
                gen.close()  # stops ffmpeg
            if self._stop.is_set():
                return
            if count == 0:
                self._put(Failed(f"{self.path}: cannot decode ({error or 'no frames'})"))
                return
            if error:
                log.warning("%s: decoding stopped after frame %d (%s); treating it as the end", self.path,
                            start + count - 1, error)
            if passes == 0 and start == 0 and self.expected_frames and count != self.expected_frames:
                log.warning("%s: has %d frames, the manifest says %d; looping at the real end", self.path, count,
                            self.expected_frames)
            if not self.loop:
                self._put(End(pos))
                return
            start, passes = 0, passes + 1
