"""A preallocated single-producer / single-consumer ring buffer of audio frames.

The producer is the audio thread (PortAudio's callback, or a FileSource
thread); the consumer is the asyncio task that resamples and windows. The
producer must never wait on the consumer, so there is no lock: each side owns
one monotonic integer position and publishes it only after the data it covers
is in place.

Why this is safe
----------------
Positions count frames since the start and never decrease; slot ``p %
capacity`` holds frame ``p``. Under CPython's GIL a store or load of an
attribute holding an int is atomic and the interpreter executes each thread's
statements in program order, so a thread that sees a new position value also
sees every store the other thread made before publishing it.

- ``_write_pos`` (producer): frames ``[.., _write_pos)`` are fully written.
  It is published after the copy, so the consumer never reads a half-written
  block as new data.
- ``_reserve_pos`` (producer): published *before* the copy, it bounds what the
  producer may be overwriting right now: a write that reserves up to ``e``
  touches only frames ``< e - capacity`` among the old ones. numpy may release
  the GIL while copying, so the consumer copies first and then re-reads
  ``_reserve_pos``; frames older than ``_reserve_pos - capacity`` may have been
  overwritten during its copy and are discarded and counted as dropped (a
  seqlock-style check, but lock-free for both sides).
- ``_read_pos`` (consumer): published after the consumer's copy is validated.
  The producer only reads it to count overruns.

This relies on the GIL (the project targets CPython 3.11). A free-threaded
build would need real acquire/release ordering on the three positions.

Losses are counted on both sides: ``overrun_frames`` is the producer's count of
frames it overwrote (or never stored) before the consumer had read them;
``dropped_frames`` is the consumer's exact count of frames it skipped. They
agree when the two sides do not race; in a race at the moment of overflow the
producer's count can be slightly higher (it cannot see a read that is still
being validated).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from synesthete.errors import AudioFormatError, ConfigError


class RingBuffer:
    """Fixed-capacity FIFO of ``[frames, channels]`` float32 audio.

    ``write`` (producer thread only) never allocates audio memory and never
    blocks; when the consumer is behind by more than ``capacity_frames`` the
    oldest frames are overwritten. ``read`` (consumer thread only) returns a
    copy of everything unread, in order, skipping ahead if it was lapped.
    """

    def __init__(self, *, capacity_frames: int, channels: int) -> None:
        if isinstance(capacity_frames, bool) or not isinstance(capacity_frames, int):
            raise ConfigError(f"capacity_frames must be an int, got {capacity_frames!r}")
        if capacity_frames <= 0:
            raise ConfigError(f"capacity_frames must be > 0, got {capacity_frames}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
            raise ConfigError(f"channels must be an int > 0, got {channels!r}")
        self._capacity_frames = capacity_frames
        self._channels = channels
        self._buffer: npt.NDArray[np.float32] = np.zeros(
            (capacity_frames, channels), dtype=np.float32
        )
        # Producer-owned.
        self._reserve_pos = 0
        self._write_pos = 0
        self._overrun_frames = 0
        # Consumer-owned.
        self._read_pos = 0
        self._dropped_frames = 0

    @property
    def capacity_frames(self) -> int:
        return self._capacity_frames

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def total_written_frames(self) -> int:
        """Frames ever passed to ``write`` (kept or not); monotonic."""
        return self._write_pos

    @property
    def total_read_frames(self) -> int:
        """Stream position of the consumer: frames returned plus frames dropped."""
        return self._read_pos

    @property
    def available_frames(self) -> int:
        """Frames a ``read`` would return now (at most ``capacity_frames``)."""
        return min(self._write_pos - self._read_pos, self._capacity_frames)

    @property
    def overrun_frames(self) -> int:
        """Producer's count of frames lost because the consumer fell behind."""
        return self._overrun_frames

    @property
    def dropped_frames(self) -> int:
        """Consumer's count of frames it skipped after being lapped."""
        return self._dropped_frames

    def write(self, block: npt.NDArray[np.float32]) -> None:
        """Append ``block`` ``[n, channels]`` (or ``[n]`` when mono). Producer only.

        Slice-assigns into the preallocated buffer, in two slices when the
        block wraps. A block longer than the capacity keeps only its newest
        ``capacity_frames`` frames; the rest count as overrun.
        """
        if block.ndim == 2 and block.shape[1] == self._channels:
            frames = block.shape[0]
        elif block.ndim == 1 and self._channels == 1:
            frames = block.shape[0]
            block = block.reshape(frames, 1)  # a view, no copy
        else:
            raise AudioFormatError(
                f"ring buffer holds [frames, {self._channels}] audio, got shape {block.shape}"
            )
        if frames == 0:
            return
        capacity = self._capacity_frames
        start_pos = self._write_pos
        end_pos = start_pos + frames

        # Frames this write destroys before the consumer reads them: everything
        # unread below the new oldest position end_pos - capacity (including
        # the head of an oversized block, which is never stored).
        oldest_before = max(self._read_pos, start_pos - capacity)
        lost = end_pos - capacity - oldest_before
        if lost > 0:
            self._overrun_frames += lost

        if frames > capacity:
            block = block[frames - capacity :]
            frames = capacity
        self._reserve_pos = end_pos  # publish before touching old slots
        first_pos = end_pos - frames
        offset = first_pos % capacity
        head = min(frames, capacity - offset)
        self._buffer[offset : offset + head] = block[:head]
        if head < frames:
            self._buffer[: frames - head] = block[head:]
        self._write_pos = end_pos  # publish after the copy

    def read(self, max_frames: int | None = None) -> npt.NDArray[np.float32]:
        """Return up to ``max_frames`` unread frames ``[n, channels]`` as a copy. Consumer only.

        Frames come out in stream order. If the producer lapped the consumer,
        the overwritten frames are skipped and added to ``dropped_frames``; the
        returned audio then starts later than ``total_read_frames`` was.
        """
        if max_frames is not None and (
            isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0
        ):
            raise ConfigError(f"max_frames must be an int >= 0 or None, got {max_frames!r}")
        capacity = self._capacity_frames
        read_pos = self._read_pos
        write_pos = self._write_pos  # snapshot: data below it is complete
        start = max(read_pos, write_pos - capacity)
        end = write_pos if max_frames is None else min(write_pos, start + max_frames)
        if end <= start:
            self._skip_to(start, read_pos)
            return np.zeros((0, self._channels), dtype=np.float32)

        out = self._copy_range(start, end)

        # Anything the producer has reserved since our snapshot may have
        # overwritten the oldest frames we just copied; keep only the safe tail.
        safe_start = self._reserve_pos - capacity
        if safe_start > start:
            keep_from = min(safe_start, end)
            out = out[keep_from - start :]
            start = keep_from
        self._skip_to(end, read_pos, dropped=start - read_pos)
        return out

    def _copy_range(self, start: int, end: int) -> npt.NDArray[np.float32]:
        capacity = self._capacity_frames
        frames = end - start
        out = np.empty((frames, self._channels), dtype=np.float32)
        offset = start % capacity
        head = min(frames, capacity - offset)
        out[:head] = self._buffer[offset : offset + head]
        if head < frames:
            out[head:] = self._buffer[: frames - head]
        return out

    def _skip_to(self, new_read_pos: int, old_read_pos: int, *, dropped: int | None = None) -> None:
        if dropped is None:
            dropped = new_read_pos - old_read_pos
        if dropped > 0:
            self._dropped_frames += dropped
        self._read_pos = new_read_pos
