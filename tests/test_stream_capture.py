"""Capture: the callback copies, counts xruns, meters the peak and signals the consumer."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from synesthete.stream.capture import Capture, peak_to_dbfs
from synesthete.stream.ringbuffer import RingBuffer


class FakeFlags:
    """Stands in for ``sounddevice.CallbackFlags``: truthy when any flag is set."""

    def __init__(self, *, input_overflow: bool) -> None:
        self.input_overflow = input_overflow

    def __bool__(self) -> bool:
        return self.input_overflow


def _block(frames: int, *, start: int = 0, channels: int = 2) -> np.ndarray:
    values = np.arange(start, start + frames, dtype=np.float32) / 10_000
    return np.stack([values * (c + 1) for c in range(channels)], axis=1)


def test_callback_copies_indata() -> None:
    capture = Capture(ring=RingBuffer(capacity_frames=4096, channels=2))
    indata = _block(512)
    expected = indata.copy()
    capture.callback(indata, 512, None, FakeFlags(input_overflow=False))
    indata[:] = 99.0  # PortAudio reuses its buffer after the callback returns
    np.testing.assert_array_equal(capture.drain(), expected)


def test_blocks_come_out_in_order_and_are_counted() -> None:
    capture = Capture(ring=RingBuffer(capacity_frames=10_000, channels=2))
    position = 0
    for frames in (256, 1, 1024, 77):
        capture.callback(_block(frames, start=position), frames, None, 0)
        position += frames
    assert capture.frames_captured == position
    np.testing.assert_array_equal(capture.drain(), _block(position))
    assert capture.drain().shape == (0, 2)


@pytest.mark.parametrize(
    ("statuses", "expected_xruns"),
    [
        ([0, 0, 0], 0),
        ([0, 1, 0, 4], 2),
        ([False, True, True], 2),
        ([FakeFlags(input_overflow=False), FakeFlags(input_overflow=True)], 1),
    ],
)
def test_xruns_are_counted_from_status(statuses: list[Any], expected_xruns: int) -> None:
    capture = Capture(ring=RingBuffer(capacity_frames=4096, channels=2))
    for status in statuses:
        capture.callback(_block(64), 64, None, status)
    assert capture.xruns == expected_xruns
    assert capture.frames_captured == 64 * len(statuses)  # audio kept even on an xrun


def test_notify_is_called_once_per_callback_after_the_write() -> None:
    ring = RingBuffer(capacity_frames=4096, channels=2)
    seen: list[int] = []
    capture = Capture(ring=ring, notify=lambda: seen.append(ring.available_frames))
    capture.callback(_block(100), 100, None, 0)
    capture.callback(_block(50), 50, None, 0)
    assert seen == [100, 150]


def test_peak_meter_takes_the_largest_magnitude_and_resets() -> None:
    capture = Capture(ring=RingBuffer(capacity_frames=4096, channels=1))
    quiet = np.full((64, 1), 0.1, dtype=np.float32)
    loud_negative = np.full((64, 1), -0.5, dtype=np.float32)
    capture.callback(quiet, 64, None, 0)
    capture.callback(loud_negative, 64, None, 0)
    capture.callback(quiet, 64, None, 0)
    assert capture.take_peak() == pytest.approx(0.5)
    assert capture.take_peak() == 0.0
    capture.callback(np.zeros((0, 1), dtype=np.float32), 0, None, 0)  # empty blocks are fine
    assert capture.take_peak() == 0.0


def test_peak_to_dbfs() -> None:
    assert peak_to_dbfs(1.0) == pytest.approx(0.0)
    assert peak_to_dbfs(0.5) == pytest.approx(-6.0206, abs=1e-3)
    assert peak_to_dbfs(0.0) == -120.0
    assert peak_to_dbfs(1e-9, floor_dbfs=-90.0) == -90.0


def test_drain_respects_max_frames() -> None:
    capture = Capture(ring=RingBuffer(capacity_frames=4096, channels=2))
    capture.callback(_block(300), 300, None, 0)
    np.testing.assert_array_equal(capture.drain(100), _block(100))
    np.testing.assert_array_equal(capture.drain(), _block(300)[100:])


def test_asyncio_consumer_wakes_through_call_soon_threadsafe() -> None:
    """The live wiring: an audio thread calls back, asyncio drains."""
    total_frames = 64 * 200

    async def main() -> np.ndarray:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        capture = Capture(
            ring=RingBuffer(capacity_frames=total_frames, channels=2),
            notify=lambda: loop.call_soon_threadsafe(event.set),
        )

        def audio_thread() -> None:
            for k in range(200):
                capture.callback(_block(64, start=64 * k), 64, None, 0)

        thread = threading.Thread(target=audio_thread)
        thread.start()
        got = []
        received = 0
        while received < total_frames:
            await asyncio.wait_for(event.wait(), timeout=10)
            event.clear()
            block = capture.drain()
            received += block.shape[0]
            got.append(block)
        thread.join()
        return np.concatenate(got)

    np.testing.assert_array_equal(asyncio.run(main()), _block(total_frames))
