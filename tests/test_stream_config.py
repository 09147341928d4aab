"""CaptureConfig: defaults, validation, immutability, ring sizing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from synesthete.errors import ConfigError
from synesthete.stream.config import CaptureConfig


def test_defaults() -> None:
    config = CaptureConfig()
    assert config.device is None
    assert config.block_frames == 1024
    assert config.ring_seconds == 20.0
    assert config.channels is None
    assert config.sample_rate_hz is None
    assert config.latency == "low"


def test_frozen_and_keyword_only() -> None:
    config = CaptureConfig(device="usb", block_frames=0, latency=0.05)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.block_frames = 512  # type: ignore[misc]
    with pytest.raises(TypeError):
        CaptureConfig("usb")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"device": 3},
        {"device": "USB"},
        {"block_frames": 0},
        {"block_frames": 64},
        {"ring_seconds": 0.5},
        {"channels": 1},
        {"channels": 8},
        {"sample_rate_hz": 48000},
        {"latency": "high"},
        {"latency": 0.2},
        {"latency": 1},
    ],
)
def test_valid_settings(kwargs: dict[str, Any]) -> None:
    CaptureConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"device": -1},
        {"device": "  "},
        {"device": 1.5},
        {"device": True},
        {"block_frames": -1},
        {"block_frames": 1024.0},
        {"ring_seconds": 0},
        {"ring_seconds": -3.0},
        {"ring_seconds": float("inf")},
        {"ring_seconds": float("nan")},
        {"channels": 0},
        {"channels": 1000},
        {"channels": True},
        {"sample_rate_hz": 0},
        {"sample_rate_hz": 44100.0},
        {"sample_rate_hz": 10_000_000},
        {"latency": "medium"},
        {"latency": 0.0},
        {"latency": -0.1},
        {"latency": float("nan")},
    ],
)
def test_invalid_settings_raise_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        CaptureConfig(**kwargs)


def test_ring_capacity() -> None:
    assert CaptureConfig().ring_capacity_frames(sample_rate_hz=48000) == 960_000
    assert CaptureConfig(ring_seconds=0.25).ring_capacity_frames(sample_rate_hz=44100) == 11025
    # Never fewer than a few device blocks, whatever ring_seconds says.
    tiny = CaptureConfig(ring_seconds=0.001, block_frames=2048)
    assert tiny.ring_capacity_frames(sample_rate_hz=16000) == 4 * 2048
    with pytest.raises(ConfigError):
        CaptureConfig().ring_capacity_frames(sample_rate_hz=0)
