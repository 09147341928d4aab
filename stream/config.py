"""Capture settings: one frozen, validated dataclass for the audio input layer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from synesthete.errors import ConfigError

LatencySetting = Literal["low", "high"] | float
"""PortAudio's suggested input latency: a preset name or seconds."""

MAX_CHANNELS = 64
"""More input channels than any interface we expect; catches typos, not hardware."""

MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 384_000

MIN_RING_BLOCKS = 4
"""The ring holds at least this many device blocks, so a stalled consumer has slack."""

ASSUMED_BLOCK_FRAMES = 4096
"""Block size to plan for when ``block_frames == 0`` lets PortAudio choose (and vary) it."""


def _is_int(value: object) -> bool:
    # bool is an int subclass; True as a channel count is a bug, not a 1.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """How to open an input device and how much audio to buffer.

    ``device``: an index, a case-insensitive name query, or ``None`` for the
    default input. ``block_frames``: frames per PortAudio callback (0 lets
    PortAudio choose, possibly varying block to block). ``ring_seconds``: how
    much audio the ring buffer holds before the oldest is overwritten.
    ``channels``: ``None`` takes ``min(2, device max input channels)``.
    ``sample_rate_hz``: ``None`` takes the device's native default rate (we
    resample in software, so the device never has to convert). ``latency``:
    ``"low"``, ``"high"`` or seconds, passed to PortAudio as a suggestion.
    """

    device: int | str | None = None
    block_frames: int = 1024
    ring_seconds: float = 20.0
    channels: int | None = None
    sample_rate_hz: int | None = None
    latency: LatencySetting = "low"

    def __post_init__(self) -> None:
        device = self.device
        if device is not None:
            if _is_int(device):
                if int(device) < 0:
                    raise ConfigError(f"device index must be >= 0, got {device}")
            elif isinstance(device, str):
                if not device.strip():
                    raise ConfigError("device name must not be empty")
            else:
                raise ConfigError(f"device must be an index, a name or None, got {device!r}")
        if not _is_int(self.block_frames) or self.block_frames < 0:
            raise ConfigError(f"block_frames must be an int >= 0, got {self.block_frames!r}")
        if (
            isinstance(self.ring_seconds, bool)
            or not isinstance(self.ring_seconds, int | float)
            or not math.isfinite(self.ring_seconds)
            or self.ring_seconds <= 0
        ):
            raise ConfigError(
                f"ring_seconds must be a finite number > 0, got {self.ring_seconds!r}"
            )
        if self.channels is not None and (
            not _is_int(self.channels) or not 1 <= self.channels <= MAX_CHANNELS
        ):
            raise ConfigError(f"channels must be 1..{MAX_CHANNELS} or None, got {self.channels!r}")
        if self.sample_rate_hz is not None and (
            not _is_int(self.sample_rate_hz)
            or not MIN_SAMPLE_RATE_HZ <= self.sample_rate_hz <= MAX_SAMPLE_RATE_HZ
        ):
            raise ConfigError(
                f"sample_rate_hz must be {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} or None, "
                f"got {self.sample_rate_hz!r}"
            )
        latency = self.latency
        if isinstance(latency, str):
            if latency not in ("low", "high"):
                raise ConfigError(f"latency must be 'low', 'high' or seconds, got {latency!r}")
        elif (
            isinstance(latency, bool)
            or not isinstance(latency, int | float)
            or not math.isfinite(latency)
            or not 0 < latency <= 10.0
        ):
            raise ConfigError(f"latency in seconds must be in (0, 10], got {latency!r}")

    def ring_capacity_frames(self, *, sample_rate_hz: int) -> int:
        """Ring buffer capacity at the rate the device actually runs at."""
        if not _is_int(sample_rate_hz) or sample_rate_hz <= 0:
            raise ConfigError(f"sample_rate_hz must be a positive int, got {sample_rate_hz!r}")
        block_frames = self.block_frames or ASSUMED_BLOCK_FRAMES
        return max(math.ceil(self.ring_seconds * sample_rate_hz), MIN_RING_BLOCKS * block_frames)
