"""RingBuffer: order across wraps, overrun and lapping, huge blocks, two real threads."""

from __future__ import annotations

import threading
import tracemalloc
from typing import Any

import numpy as np
import pytest

from synesthete.errors import AudioFormatError, ConfigError
from synesthete.stream.ringbuffer import RingBuffer


def _ramp(start: int, stop: int, channels: int = 2) -> np.ndarray:
    """Frames ``start..stop-1``: channel c holds ``(c + 1) * frame`` (exact in float32)."""
    frames = np.arange(start, stop, dtype=np.float32)
    return np.stack([frames * (c + 1) for c in range(channels)], axis=1)


def test_order_is_preserved_across_wraps_with_odd_block_sizes() -> None:
    ring = RingBuffer(capacity_frames=100, channels=2)
    sizes = [1, 7, 13, 50, 99, 3, 100, 29, 61]
    position = 0
    got = []
    for _ in range(5):
        for size in sizes:
            ring.write(_ramp(position, position + size))
            position += size
            got.append(ring.read())
    assert ring.total_written_frames == position
    np.testing.assert_array_equal(np.concatenate(got), _ramp(0, position))
    assert ring.overrun_frames == 0
    assert ring.dropped_frames == 0
    assert ring.available_frames == 0


def test_partial_reads_with_max_frames_keep_order() -> None:
    ring = RingBuffer(capacity_frames=101, channels=2)  # the backlog peaks at 98 frames
    got = []
    position = 0
    for size in [10, 30, 5, 40, 17, 1, 60]:
        ring.write(_ramp(position, position + size))
        position += size
        got.append(ring.read(max_frames=11))
        got.append(ring.read(max_frames=0))
    while ring.available_frames:
        got.append(ring.read(max_frames=11))
    np.testing.assert_array_equal(np.concatenate(got), _ramp(0, position))
    assert ring.dropped_frames == 0
    assert ring.total_read_frames == position


def test_overrun_when_the_reader_stalls() -> None:
    ring = RingBuffer(capacity_frames=100, channels=2)
    for start in range(0, 250, 25):
        ring.write(_ramp(start, start + 25))
    assert ring.total_written_frames == 250
    assert ring.available_frames == 100
    assert ring.overrun_frames == 150
    out = ring.read()
    np.testing.assert_array_equal(out, _ramp(150, 250))
    assert ring.dropped_frames == 150
    assert ring.total_read_frames == 250
    assert ring.available_frames == 0
    # Back in step: nothing more is lost.
    ring.write(_ramp(250, 260))
    np.testing.assert_array_equal(ring.read(), _ramp(250, 260))
    assert ring.overrun_frames == 150
    assert ring.dropped_frames == 150


def test_reader_lapped_mid_stream_skips_ahead() -> None:
    ring = RingBuffer(capacity_frames=100, channels=2)
    ring.write(_ramp(0, 80))
    np.testing.assert_array_equal(ring.read(max_frames=30), _ramp(0, 30))
    ring.write(_ramp(80, 180))  # 50 unread + 100 new > capacity: frames 30..79 are lost
    assert ring.overrun_frames == 50
    np.testing.assert_array_equal(ring.read(max_frames=10), _ramp(80, 90))
    assert ring.dropped_frames == 50
    np.testing.assert_array_equal(ring.read(), _ramp(90, 180))


def test_lapped_reader_with_max_frames_zero_still_skips() -> None:
    ring = RingBuffer(capacity_frames=10, channels=1)
    ring.write(np.arange(25, dtype=np.float32))
    assert ring.read(max_frames=0).shape == (0, 1)
    assert ring.dropped_frames == 15
    np.testing.assert_array_equal(ring.read()[:, 0], np.arange(15, 25, dtype=np.float32))


def test_block_larger_than_capacity_keeps_the_newest_frames() -> None:
    ring = RingBuffer(capacity_frames=10, channels=2)
    ring.write(_ramp(0, 3))
    ring.write(_ramp(3, 38))
    assert ring.total_written_frames == 38
    assert ring.overrun_frames == 28  # 3 unread old frames + 25 of the block never stored
    np.testing.assert_array_equal(ring.read(), _ramp(28, 38))
    assert ring.dropped_frames == 28


def test_exactly_full_is_not_an_overrun() -> None:
    ring = RingBuffer(capacity_frames=16, channels=2)
    ring.write(_ramp(0, 16))
    assert ring.overrun_frames == 0
    assert ring.available_frames == 16
    np.testing.assert_array_equal(ring.read(), _ramp(0, 16))


def test_read_returns_a_copy() -> None:
    ring = RingBuffer(capacity_frames=8, channels=2)
    ring.write(_ramp(0, 4))
    out = ring.read()
    ring.write(_ramp(100, 108))  # overwrite every slot
    np.testing.assert_array_equal(out, _ramp(0, 4))


def test_write_shapes() -> None:
    mono = RingBuffer(capacity_frames=8, channels=1)
    mono.write(np.arange(3, dtype=np.float32))  # [n] is accepted for mono
    mono.write(np.zeros((0, 1), dtype=np.float32))
    assert mono.read().shape == (3, 1)
    stereo = RingBuffer(capacity_frames=8, channels=2)
    with pytest.raises(AudioFormatError):
        stereo.write(np.zeros((4, 1), dtype=np.float32))
    with pytest.raises(AudioFormatError):
        stereo.write(np.zeros(4, dtype=np.float32))
    with pytest.raises(AudioFormatError):
        stereo.write(np.zeros((4, 2, 1), dtype=np.float32))
    assert stereo.total_written_frames == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity_frames": 0, "channels": 1},
        {"capacity_frames": -5, "channels": 1},
        {"capacity_frames": 10.0, "channels": 1},
        {"capacity_frames": 10, "channels": 0},
        {"capacity_frames": True, "channels": 1},
    ],
)
def test_bad_construction_raises_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RingBuffer(**kwargs)


def test_bad_max_frames_raises_config_error() -> None:
    with pytest.raises(ConfigError):
        RingBuffer(capacity_frames=8, channels=1).read(max_frames=-1)


def test_write_allocates_no_audio_memory() -> None:
    ring = RingBuffer(capacity_frames=4096, channels=2)
    block = _ramp(0, 1000)  # 8 kB: any per-write copy would show up
    ring.write(block)  # warm up
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(50):  # wraps several times
            ring.write(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - baseline < 2048


def test_concurrent_producer_and_consumer_see_exactly_the_ramp() -> None:
    total_frames = 300_000
    ring = RingBuffer(capacity_frames=total_frames, channels=2)
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 700, size=total_frames)  # more than enough
    ramp = _ramp(0, total_frames)
    got: list[np.ndarray] = []

    def produce() -> None:
        position = 0
        for size in sizes:
            if position >= total_frames:
                break
            ring.write(ramp[position : position + int(size)])
            position += int(size)

    def consume() -> None:
        received = 0
        while received < total_frames:
            block = ring.read(max_frames=int(rng.integers(1, 5000)))
            received += block.shape[0]
            got.append(block)

    consumer = threading.Thread(target=consume)
    producer = threading.Thread(target=produce)
    consumer.start()
    producer.start()
    producer.join(timeout=60)
    consumer.join(timeout=60)
    assert not consumer.is_alive()
    np.testing.assert_array_equal(np.concatenate(got), ramp)
    assert ring.overrun_frames == 0
    assert ring.dropped_frames == 0


def test_concurrent_overflow_never_returns_torn_or_stale_frames() -> None:
    """A tiny ring and a fast producer: losses are allowed, corruption is not."""
    total_frames = 400_000
    ring = RingBuffer(capacity_frames=512, channels=2)
    ramp = _ramp(0, total_frames)
    done = threading.Event()
    got: list[np.ndarray] = []

    def produce() -> None:
        rng = np.random.default_rng(1)
        position = 0
        while position < total_frames:
            size = int(rng.integers(1, 600))
            ring.write(ramp[position : position + size])
            position += size
        done.set()

    def consume() -> None:
        while not done.is_set() or ring.available_frames:
            block = ring.read()
            if block.shape[0]:
                got.append(block)

    consumer = threading.Thread(target=consume)
    producer = threading.Thread(target=produce)
    consumer.start()
    producer.start()
    producer.join(timeout=60)
    consumer.join(timeout=60)
    assert not consumer.is_alive()

    frames = np.concatenate(got)
    # Every frame is intact (channel 1 is twice channel 0) and frames only move forward.
    np.testing.assert_array_equal(frames[:, 1], 2 * frames[:, 0])
    assert np.all(np.diff(frames[:, 0]) >= 1)
    # Each block is a contiguous run of the ramp.
    for block in got:
        np.testing.assert_array_equal(np.diff(block[:, 0]), np.ones(block.shape[0] - 1))
    assert frames[-1, 0] == total_frames - 1
    # Everything is accounted for on the consumer side.
    assert frames.shape[0] + ring.dropped_frames == total_frames
    assert ring.total_read_frames == total_frames
    assert ring.overrun_frames >= ring.dropped_frames
