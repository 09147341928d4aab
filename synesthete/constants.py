"""Constants of the signal contract. Derived values are computed, never retyped."""

from __future__ import annotations

SAMPLE_RATE_HZ = 16_000
"""Every encoder sees mono audio at this rate."""

WINDOW_S = 4.0
WINDOW_SAMPLES = int(SAMPLE_RATE_HZ * WINDOW_S)

DEFAULT_LIVE_HOP_S = 2.0
MIN_LIVE_HOP_S = 0.5
MAX_LIVE_HOP_S = WINDOW_S

DEFAULT_INDEX_HOP_S = 0.5
MIN_INDEX_HOP_S = 0.5
MAX_INDEX_HOP_S = 2.0


def seconds_to_samples(seconds: float, *, sample_rate_hz: int = SAMPLE_RATE_HZ) -> int:
    """Round a duration to the nearest whole number of samples."""
    return round(seconds * sample_rate_hz)


SOUNDS_LIKE_DISTANCES = ("mean", "min", "frechet")
"""Track-level distances for "sounds like" (``--sounds-like``); index/similar.py defines them,
and the ``cosine`` baseline they are measured against."""
DEFAULT_SOUNDS_LIKE_DISTANCE = "mean"
"""Chosen by scripts/bench_similar.py on the train+val splits (bench/similar-*.md)."""
