"""Posters: the first frame of every subject, held decoded so that a jump shows its target on the very next frame.

    prefetcher = PosterPrefetcher(PosterCache(max_bytes))
    prefetcher.collect(stream, seq)        # file the first frames a playing stream decoded on the way past
    prefetcher.update(seq, placement)      # once a turn: take a finished poster, or start decoding the next one
    prefetcher.begin()                     # after the flip: start the decoder just made (a thread start waits)

Without a poster a jump waits for ffmpeg to start and seek before its target appears. Posters come two ways: in
passing, from frames a loop or clip stream decodes anyway, and ahead, from a one-frame decoder of their own, which
runs one at a time and only while no other stream is starting, so it never competes with the picture on screen. It
stops once the cache holds every subject of the sequence on screen, or would have to evict other posters to do so.
"""

from __future__ import annotations

from collections.abc import Callable

from installation.decoder import BYTES_PER_PIXEL, Decoder, Frame
from installation.playlist import PlaylistEntry
from installation.stream import PosterCache, Stream
from installation.timing import Placement

MAX_TRIED = 10_000  # poster keys remembered as tried (a failed decode is not retried); forgotten all at once beyond


class PosterPrefetcher:
    def __init__(self, cache: PosterCache):
        self.cache = cache
        self.pending: tuple[tuple, Decoder] | None = None  # (poster key, its own one-frame decoder)
        self._tried: set[tuple] = set()

    def collect(self, s: Stream, seq: PlaylistEntry | None) -> None:
        """File the frames `s` decoded since the last call that are posters: subjects' first frames (and frame 0) of a
        loop of `seq`, the first frame of a clip."""
        if not s.seen:
            return
        stamp = s.tag
        if s.loop and seq is not None:
            firsts = {e.first_frame for e in seq.manifest.subjects} | {0}
            for f in s.seen:
                if f.index in firsts:
                    self.cache.put(PosterCache.key(s.path, f.index, s.placement, stamp), f.data)
        elif s.seen[0].pos == 0:
            self.cache.put(PosterCache.key(s.path, 0, s.placement, stamp), s.seen[0].data)
        s.seen.clear()

    def update(self, seq: PlaylistEntry | None, placement: Callable[[PlaylistEntry], Placement]) -> None:
        """One step: finish the poster being decoded, or start the next missing subject of `seq` (the sequence on
        screen; None while a stream is starting, when nothing new is started). `placement` places a sequence on
        screen, as its streams are placed."""
        if self.pending is not None:
            key, dec = self.pending
            item = dec.get()
            if item is None and (dec.alive or not dec.begun):
                return
            if isinstance(item, Frame):
                self.cache.put(key, item.data)
            dec.close()
            self.pending = None
            return
        if seq is None:
            return
        m, p = seq.manifest, placement(seq)
        frame_bytes = p.crop[2] * p.crop[3] * BYTES_PER_PIXEL
        for e in m.subjects:
            key = PosterCache.key(m.loop, e.first_frame, p, seq.stamp)
            if key in self._tried or self.cache.get(key) is not None:
                continue
            if self.cache.bytes + frame_bytes > self.cache.max_bytes:
                return  # no room: prefetching would only evict other posters
            if len(self._tried) > MAX_TRIED:
                self._tried.clear()
            self._tried.add(key)
            self.pending = key, Decoder(m.loop, fps=m.fps, start=e.first_frame, loop=False, src_size=m.size,
                                        scale=p.scale, crop=p.crop, buffer_frames=1, start_now=False)
            return

    def begin(self) -> None:
        """Start the pending decoder's thread, if not started yet; called after a flip."""
        if self.pending is not None:
            self.pending[1].begin()

    def close(self) -> None:
        if self.pending is not None:
            self.pending[1].close()
            self.pending = None
