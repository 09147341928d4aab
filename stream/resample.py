"""Streaming downmix + resampling to the encoder rate with soxr."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import soxr

from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.errors import AudioFormatError, ConfigError


def to_mono(chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Average channels. ``chunk`` is ``[n]`` or ``[n, channels]``; returns ``[n]`` float32."""
    if chunk.ndim == 1:
        return np.ascontiguousarray(chunk, dtype=np.float32)
    if chunk.ndim == 2:
        if chunk.shape[1] == 1:
            return np.ascontiguousarray(chunk[:, 0], dtype=np.float32)
        mono: npt.NDArray[np.float32] = chunk.mean(axis=1, dtype=np.float32)
        return mono
    raise AudioFormatError(f"audio must be [frames] or [frames, channels], got shape {chunk.shape}")


_HISTORY_S = 0.25  # input kept for estimate_pending: more than any soxr filter holds back


class StreamResampler:
    """Mono resampler with the streaming shape ``push``/``flush``/``reset``.

    Settings are fixed at construction. Output of any block split equals the
    one-shot output of the same signal (tested with blocks of 1..1e6 samples).
    """

    def __init__(
        self,
        *,
        in_rate_hz: int,
        out_rate_hz: int = SAMPLE_RATE_HZ,
        quality: str = "HQ",
    ) -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ConfigError(f"sample rates must be positive, got {in_rate_hz} -> {out_rate_hz}")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self.quality = quality
        self._passthrough = in_rate_hz == out_rate_hz
        self._stream = self._new_stream()
        self._in_samples = 0
        self._out_samples = 0
        # Input sample k maps to an integer output sample only when k is a
        # multiple of this period (441 for 44.1 -> 16 kHz, 3 for 48 -> 16 kHz).
        self._period = in_rate_hz // math.gcd(in_rate_hz, out_rate_hz)
        periods = max(1, math.ceil(_HISTORY_S * in_rate_hz / self._period))
        self._history = np.zeros(periods * self._period + self._period, dtype=np.float32)
        self._history_len = 0

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self._passthrough:
            return None
        return soxr.ResampleStream(
            self.in_rate_hz, self.out_rate_hz, 1, dtype="float32", quality=self.quality
        )

    @property
    def latency_samples(self) -> int:
        """Output samples currently held back inside the filter (released by ``flush``).

        soxr compensates its group delay, so output sample k always lines up
        with input time k / out_rate; this is only how far output lags input.
        """
        expected = self._in_samples * self.out_rate_hz // self.in_rate_hz
        return max(0, expected - self._out_samples)

    def push(self, chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Resample one block of ``[n]`` or ``[n, channels]`` float32 audio; returns ``[m]``."""
        mono = to_mono(chunk)
        self._in_samples += mono.shape[0]
        if self._stream is None:
            self._out_samples += mono.shape[0]
            return mono.copy()
        if mono.size == 0:
            return np.zeros(0, dtype=np.float32)
        self._remember(mono)
        out: npt.NDArray[np.float32] = self._stream.resample_chunk(mono, last=False)
        self._out_samples += out.shape[0]
        return out

    def _remember(self, mono: npt.NDArray[np.float32]) -> None:
        size = self._history.shape[0]
        if mono.shape[0] >= size:
            self._history[:] = mono[-size:]
            self._history_len = size
            return
        keep = min(self._history_len, size - mono.shape[0])
        self._history[:keep] = self._history[self._history_len - keep : self._history_len]
        self._history[keep : keep + mono.shape[0]] = mono
        self._history_len = keep + mono.shape[0]

    def estimate_pending(self) -> npt.NDArray[np.float32]:
        """Estimate the ``latency_samples`` outputs the filter still holds back.

        Resamples the last ~0.25 s of input in one shot, as if the stream ended
        now, and returns the outputs the stream has not released yet. Only
        the last few milliseconds differ from what the stream will release
        (the filter sees zeros instead of the future). Nothing is consumed:
        the exact samples still come out of later ``push`` calls.
        """
        pending = self.latency_samples
        if self._stream is None or pending == 0 or self._history_len == 0:
            return np.zeros(0, dtype=np.float32)
        held_from = self._in_samples - self._history_len
        start = -(-held_from // self._period) * self._period  # first aligned input sample
        tail = self._history[start - held_from : self._history_len]
        out = soxr.resample(tail, self.in_rate_hz, self.out_rate_hz, quality=self.quality)
        first = self._out_samples - start * self.out_rate_hz // self.in_rate_hz
        if first < 0 or first + pending > out.shape[0]:
            return np.zeros(0, dtype=np.float32)  # too little history yet
        estimate: npt.NDArray[np.float32] = np.asarray(
            out[first : first + pending], dtype=np.float32
        )
        return estimate

    def flush(self) -> npt.NDArray[np.float32]:
        """Drain the filter tail at end of stream; the resampler is then reset."""
        if self._stream is None:
            self.reset()
            return np.zeros(0, dtype=np.float32)
        out: npt.NDArray[np.float32] = self._stream.resample_chunk(
            np.zeros(0, dtype=np.float32), last=True
        )
        self.reset()
        return out

    def reset(self) -> None:
        self._stream = self._new_stream()
        self._in_samples = 0
        self._out_samples = 0
        self._history_len = 0


def resample_offline(
    audio: npt.NDArray[np.float32], *, in_rate_hz: int, out_rate_hz: int = SAMPLE_RATE_HZ
) -> npt.NDArray[np.float32]:
    """One-shot oracle: downmix and resample a whole signal."""
    resampler = StreamResampler(in_rate_hz=in_rate_hz, out_rate_hz=out_rate_hz)
    head = resampler.push(audio)
    return np.concatenate([head, resampler.flush()])
