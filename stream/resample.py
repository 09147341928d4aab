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


class Downmix:
    """Stateful downmix to mono that survives phase-inverted channels.

    Averaging channels is the right downmix for almost all music, but a track
    whose channels are in antiphase (a tracker module in "surround" mode, a
    miswired recording) averages to near silence: the index would reject it
    as silent, or index noise, while it plays loud in stereo. So the stream is
    cut into aligned blocks of ``block_frames`` input frames; after each block
    the downmix of the *next* block is chosen from this block's energies: the
    first channel alone once the channel average keeps under ``cancel_ratio``
    of the channels' energy, the average again once it keeps over
    ``restore_ratio`` (hysteresis), unchanged in a block under ``floor``.

    The choice depends only on absolute frame positions, so any split of the
    stream into chunks gives the same output, and it adds no latency. Mono
    input passes through.
    """

    def __init__(
        self,
        *,
        block_frames: int = 8192,
        cancel_ratio: float = 1e-3,
        restore_ratio: float = 1e-2,
        floor: float = 1e-7,
    ) -> None:
        if block_frames < 1 or not 0.0 < cancel_ratio < restore_ratio:
            raise ConfigError("Downmix needs block_frames >= 1 and 0 < cancel < restore ratio")
        self.block_frames = block_frames
        self.cancel_ratio = cancel_ratio
        self.restore_ratio = restore_ratio
        self.floor = floor
        self.reset()

    def reset(self) -> None:
        self.first_channel_only = False
        self._filled = 0
        self._mix_energy = 0.0
        self._channel_energy = 0.0

    def __call__(self, chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``[n]`` or ``[n, channels]`` float32 → ``[n]`` float32 mono."""
        if chunk.ndim != 2 or chunk.shape[1] == 1:
            return to_mono(chunk)
        pieces = []
        start = 0
        while start < chunk.shape[0]:
            stop = min(chunk.shape[0], start + self.block_frames - self._filled)
            pieces.append(self._piece(chunk[start:stop]))
            start = stop
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _piece(self, piece: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        mean: npt.NDArray[np.float32] = piece.mean(axis=1, dtype=np.float32)
        out = mean
        if self.first_channel_only:
            out = np.ascontiguousarray(piece[:, 0], dtype=np.float32)
        self._mix_energy += float(np.dot(mean, mean))
        self._channel_energy += float(np.vdot(piece, piece)) / piece.shape[1]
        self._filled += piece.shape[0]
        if self._filled == self.block_frames:
            if self._channel_energy > self.floor * self.block_frames:
                ratio = self._mix_energy / self._channel_energy
                if ratio < self.cancel_ratio:
                    self.first_channel_only = True
                elif ratio > self.restore_ratio:
                    self.first_channel_only = False
            self._filled = 0
            self._mix_energy = self._channel_energy = 0.0
        return out


class StreamResampler:
    """Mono resampler with the streaming shape ``push``/``flush``/``reset``.

    Settings are fixed at construction. Output of any block split equals the
    one-shot output of the same signal (tested with blocks of 1..1e6 samples).
    Channels are downmixed by ``Downmix`` (averaged unless they cancel).
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
        self._downmix = Downmix()
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
        mono = self._downmix(chunk)
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
        self._downmix.reset()
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
