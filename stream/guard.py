"""Input sanity on the consumer side: non-finite samples become 0, clipping is counted.

A broken driver, a bad plugin or a corrupt stream can hand over NaN or inf.
soxr is not poisoned for good by them: the output is non-finite for about one
filter length (tens of ms) around them, then finite again (see
tests/test_stream_guard.py). But every window overlapping that stretch would
hold NaN, which the encoder refuses (AudioFormatError), ending a live session
over a glitch. So non-finite samples are replaced by 0 before the resampler,
and counted.

This runs on the consumer (the capture callback only copies, house rule 2):
``InputGuard.push`` allocates freely.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError

CLIP_LEVEL = 0.999
"""``|x|`` at or above this counts as clipped: within 0.01 dB of full scale.

A 16-bit converter tops out at 32767/32768 = 0.99997 and a 24-bit one closer
still, so a clipped input sits at or above this level in float32."""

CLIPPING_FRACTION = 0.001
"""More than this fraction of clipped samples in a status interval flags ``clipping``.

A loud master touches full scale on isolated peaks (well under 0.1 %); an
input whose gain is too high sits there for runs of samples, every beat."""


def replace_nonfinite(
    chunk: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], int]:
    """``(chunk with NaN/inf replaced by 0, how many were)``; ``chunk`` is never changed.

    An all-finite chunk is returned as is (no copy).
    """
    finite = np.isfinite(chunk)
    if finite.all():
        return chunk, 0
    bad = int(chunk.size - np.count_nonzero(finite))
    return np.where(finite, chunk, np.float32(0.0)).astype(np.float32, copy=False), bad


class InputGuard:
    """Replaces non-finite samples by 0 and counts them and the clipped ones.

    The streaming shape of the pipeline (``push``, ``flush``, ``reset``,
    ``latency_samples``), settings fixed at construction. Counts are of
    samples, every channel counted (a stereo frame is two samples).
    """

    def __init__(self, *, clip_level: float = CLIP_LEVEL) -> None:
        if not 0.0 < clip_level <= 1.0:
            raise ConfigError(f"clip_level must be in (0, 1], got {clip_level!r}")
        self.clip_level = clip_level
        self.samples = 0
        self.nonfinite_samples = 0
        self.clipped_samples = 0

    @property
    def latency_samples(self) -> int:
        return 0

    def push(self, chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``chunk`` ``[frames]`` or ``[frames, channels]`` float32; returns it, sanitised.

        The input array is returned as is when it is all finite, else a
        sanitised copy of the same shape (the caller's array is never changed).
        """
        self.samples += int(chunk.size)
        chunk, nonfinite = replace_nonfinite(chunk)
        self.nonfinite_samples += nonfinite
        self.clipped_samples += int(np.count_nonzero(np.abs(chunk) >= self.clip_level))
        return chunk

    def flush(self) -> npt.NDArray[np.float32]:
        """Nothing is held back."""
        return np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        self.samples = 0
        self.nonfinite_samples = 0
        self.clipped_samples = 0
