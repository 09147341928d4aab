"""Cutting a 16 kHz mono stream into overlapping fixed-length windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from synesthete.constants import (
    MAX_LIVE_HOP_S,
    MIN_INDEX_HOP_S,
    SAMPLE_RATE_HZ,
    WINDOW_S,
    seconds_to_samples,
)
from synesthete.errors import AudioFormatError, ConfigError


@dataclass(frozen=True, slots=True)
class Window:
    """One analysis window.

    ``start_sample`` counts samples at ``sample_rate_hz`` from the stream start;
    ``samples`` is ``[window_samples]`` float32.
    """

    index: int
    start_sample: int
    samples: npt.NDArray[np.float32]
    sample_rate_hz: int = SAMPLE_RATE_HZ

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate_hz

    @property
    def end_s(self) -> float:
        return (self.start_sample + int(self.samples.shape[0])) / self.sample_rate_hz


def window_audio(
    audio: npt.NDArray[np.float32], *, window_samples: int, hop_samples: int
) -> npt.NDArray[np.float32]:
    """Offline oracle: all full windows of ``audio`` ``[n]`` as a read-only strided view.

    Returns ``[n_windows, window_samples]``; windows start at ``k * hop_samples``.
    """
    if audio.ndim != 1:
        raise AudioFormatError(f"window_audio expects mono [n], got shape {audio.shape}")
    if window_samples <= 0 or hop_samples <= 0:
        raise ConfigError("window and hop must be positive")
    if audio.shape[0] < window_samples:
        return np.zeros((0, window_samples), dtype=audio.dtype)
    n_windows = 1 + (audio.shape[0] - window_samples) // hop_samples
    view = np.lib.stride_tricks.sliding_window_view(audio, window_samples)[::hop_samples]
    return view[:n_windows]


class Windower:
    """Streaming windower: ``push`` 16 kHz samples, get every window that completed.

    Only full windows are emitted; ``flush`` drops the incomplete tail. Output
    is independent of how the input is split into blocks.
    """

    def __init__(
        self,
        *,
        hop_s: float,
        window_s: float = WINDOW_S,
        sample_rate_hz: int = SAMPLE_RATE_HZ,
        min_hop_s: float = MIN_INDEX_HOP_S,
        max_hop_s: float = MAX_LIVE_HOP_S,
    ) -> None:
        if not (min_hop_s - 1e-9 <= hop_s <= max_hop_s + 1e-9):
            raise ConfigError(f"hop must be within {min_hop_s}..{max_hop_s} s, got {hop_s}")
        self.hop_s = hop_s
        self.window_s = window_s
        self.sample_rate_hz = sample_rate_hz
        self.window_samples = seconds_to_samples(window_s, sample_rate_hz=sample_rate_hz)
        self.hop_samples = seconds_to_samples(hop_s, sample_rate_hz=sample_rate_hz)
        # The buffer never needs more than one window plus one incoming block.
        self._buffer = np.zeros(self.window_samples, dtype=np.float32)
        self._buffered = 0
        self._buffer_start = 0  # stream sample index of _buffer[0]
        self._next_index = 0

    @property
    def latency_samples(self) -> int:
        """Samples a window waits before it is complete (the window length)."""
        return self.window_samples

    def push(self, samples: npt.NDArray[np.float32]) -> list[Window]:
        """Append ``[n]`` float32 samples and return the windows that completed, in order."""
        if samples.ndim != 1:
            raise AudioFormatError(f"Windower expects mono [n], got shape {samples.shape}")
        if samples.size == 0:
            return []
        needed = self._buffered + samples.shape[0]
        if needed > self._buffer.shape[0]:
            grown = np.zeros(max(needed, 2 * self._buffer.shape[0]), dtype=np.float32)
            grown[: self._buffered] = self._buffer[: self._buffered]
            self._buffer = grown
        self._buffer[self._buffered : needed] = samples
        self._buffered = needed

        windows: list[Window] = []
        cursor = self._next_index * self.hop_samples - self._buffer_start
        while cursor + self.window_samples <= self._buffered:
            windows.append(
                Window(
                    index=self._next_index,
                    start_sample=self._buffer_start + cursor,
                    samples=self._buffer[cursor : cursor + self.window_samples].copy(),
                    sample_rate_hz=self.sample_rate_hz,
                )
            )
            self._next_index += 1
            cursor += self.hop_samples
        # Drop samples no future window needs; keep the buffer small.
        drop = min(cursor, self._buffered)
        if drop > 0:
            remaining = self._buffered - drop
            self._buffer[:remaining] = self._buffer[drop : self._buffered]
            self._buffered = remaining
            self._buffer_start += drop
        return windows

    @property
    def samples_missing(self) -> int:
        """Samples still to come before the next window is complete."""
        end = self._next_index * self.hop_samples + self.window_samples
        return max(0, end - (self._buffer_start + self._buffered))

    def complete_early(self, provisional: npt.NDArray[np.float32]) -> Window | None:
        """Emit the next window now, its last samples taken from ``provisional``.

        ``provisional`` continues the stream past what was pushed (e.g. the
        resampler's estimate of what it still holds back). It is not kept:
        the real samples arrive through ``push`` later and feed the windows
        after this one, which is never emitted twice. Returns None when
        ``provisional`` is too short to complete the window.
        """
        missing = self.samples_missing
        if missing == 0 or provisional.shape[0] < missing:
            return None
        cursor = self._next_index * self.hop_samples - self._buffer_start
        samples = np.concatenate([self._buffer[cursor : self._buffered], provisional[:missing]])
        window = Window(
            index=self._next_index,
            start_sample=self._buffer_start + cursor,
            samples=samples.astype(np.float32, copy=False),
            sample_rate_hz=self.sample_rate_hz,
        )
        self._next_index += 1
        return window

    def flush(self) -> list[Window]:
        """End of stream: incomplete windows are dropped; state is reset."""
        self.reset()
        return []

    def reset(self) -> None:
        self._buffered = 0
        self._buffer_start = 0
        self._next_index = 0


class RecentAudio:
    """The stream's last ``seconds`` of audio, put together from its overlapping windows:
    ``push(window)`` returns the audio up to the window's end (at most ``seconds``; only
    the window itself after a gap in the stream or a reset)."""

    def __init__(self, *, seconds: float, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        if not seconds > 0.0:
            raise ConfigError(f"seconds must be > 0, got {seconds}")
        self._keep = seconds_to_samples(seconds, sample_rate_hz=sample_rate_hz)
        self._audio = np.zeros(0, dtype=np.float32)
        self._end = 0
        """The stream sample at which ``_audio`` ends."""

    def push(self, window: Window) -> npt.NDArray[np.float32]:
        start = window.start_sample
        end = start + int(window.samples.shape[0])
        if self._audio.size == 0 or not start <= self._end <= end:
            self._audio = np.asarray(window.samples, dtype=np.float32)
        else:
            fresh = window.samples[self._end - start :]
            self._audio = np.concatenate([self._audio, fresh])
        self._audio = self._audio[-self._keep :]
        self._end = end
        return self._audio

    def reset(self) -> None:
        self._audio = np.zeros(0, dtype=np.float32)
        self._end = 0
