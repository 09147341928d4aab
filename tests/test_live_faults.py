"""Input faults in the live loop: a device that goes away, NaN bursts and clipping.

The loop runs for real (``run_live``, the real encoder and index of the demo
library); the inputs are fakes that misbehave on cue: a device that ends
mid-stream and refuses to reopen a few times, and a FileSource whose blocks
get a burst of NaN and a clipped stretch on their way to the capture callback.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import DemoLibrary

from synesthete.clients.app import Engine, open_engine
from synesthete.clients.live import LiveConfig, run_live
from synesthete.errors import DeviceError
from synesthete.events import Event, NowPlaying, Status, Unknown
from synesthete.stream.config import CaptureConfig
from synesthete.stream.sources import AudioCallback, FileSource, ReopenableSource
from synesthete.stream.watchdog import ReconnectPolicy

FAST_POLICY = ReconnectPolicy(
    timeout_s=5.0, first_delay_s=0.05, max_delay_s=0.1, stall_timeout_s=1.0, start_timeout_s=2.0
)


@pytest.fixture(scope="module")
def engine(demo_library: DemoLibrary) -> Engine:
    return open_engine(index_dir=demo_library.index)


class FlakyDevice:
    """A mono "device" playing ``audio`` at ``speed`` × real time from its own thread.

    At ``lose_at_s`` of audio the stream ends on its own, as PortAudio's does
    when a device is unplugged; then ``reopen`` fails ``reopen_failures`` times
    (or for ever) before delivery resumes where it stopped.
    """

    name = "flaky-mic"
    channels = 1

    def __init__(
        self,
        audio: npt.NDArray[np.float32],
        *,
        rate_hz: int,
        lose_at_s: float,
        reopen_failures: int | None,
        speed: float = 8.0,
        block_frames: int = 1024,
    ) -> None:
        self._audio = audio
        self.sample_rate_hz = rate_hz
        self._lose_at_frame = int(lose_at_s * rate_hz)
        self._failures_left = reopen_failures
        self._speed = speed
        self._block_frames = block_frames
        self._position = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()
        self.error: str | None = None
        self.reopen_calls = 0

    def start(self, callback: AudioCallback) -> None:
        self._stop.clear()
        self.finished.clear()
        self.error = None
        self._thread = threading.Thread(target=self._run, args=(callback,), daemon=True)
        self._thread.start()

    def _run(self, callback: AudioCallback) -> None:
        period_s = self._block_frames / self.sample_rate_hz / self._speed
        next_s = time.monotonic()
        while not self._stop.is_set() and self._position < self._audio.shape[0]:
            if self._lose_at_frame is not None and self._position >= self._lose_at_frame:
                self._lose_at_frame = None  # once
                self.error = "flaky-mic was unplugged"
                self.finished.set()
                return
            block = self._audio[self._position : self._position + self._block_frames]
            callback(block[:, None], block.shape[0], None, 0)
            self._position += block.shape[0]
            next_s += period_s
            self._stop.wait(max(0.0, next_s - time.monotonic()))

    def reopen(self, callback: AudioCallback) -> None:
        self.reopen_calls += 1
        self.stop()
        if self._failures_left is None or self._failures_left > 0:
            if self._failures_left is not None:
                self._failures_left -= 1
            raise DeviceError("flaky-mic is not present")
        self.start(callback)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> FlakyDevice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _run(
    engine: Engine, source: Any, config: LiveConfig
) -> tuple[list[Event], BaseException | None]:
    events: list[Event] = []

    async def main() -> None:
        await run_live(engine=engine, source=source, sinks=[events.append], config=config)

    try:
        asyncio.run(asyncio.wait_for(main(), timeout=120))
    except DeviceError as err:
        return events, err
    return events, None


def test_the_fake_device_is_reopenable() -> None:
    device = FlakyDevice(np.zeros(10, np.float32), rate_hz=8000, lose_at_s=1, reopen_failures=0)
    assert isinstance(device, ReopenableSource)


def test_a_lost_device_is_reported_reopened_and_recognised_again(
    engine: Engine, demo_library: DemoLibrary
) -> None:
    n, rate = 1, demo_library.rate_hz
    audio = demo_library.audio(n)
    device = FlakyDevice(audio, rate_hz=rate, lose_at_s=12.0, reopen_failures=2)
    events, error = _run(engine, device, LiveConfig(max_seconds=30.0, reconnect=FAST_POLICY))
    assert error is None
    statuses = [e for e in events if isinstance(e, Status)]
    lost = [s for s in statuses if s.input_state == "lost"]
    assert lost, statuses
    assert lost[0].input_error == "flaky-mic was unplugged"
    assert lost[0].give_up_in_s is not None and 4.0 < lost[0].give_up_in_s <= 5.0
    assert lost[0].message is not None and lost[0].message.startswith("input lost:")
    failures = [s.message for s in lost if s.message and "reconnect attempt" in s.message]
    assert len(failures) == 2, failures
    for attempt, message in enumerate(failures, start=1):
        assert message.startswith(
            f"reconnect attempt {attempt} failed: flaky-mic is not present; giving up in "
        ), message
    assert device.reopen_calls == 3
    back = next(s for s in statuses if s.message and s.message.startswith("input back after"))
    assert back.input_state == "ok"
    assert statuses[-1].message == "input ended" and statuses[-1].input_state == "ok"

    # The identification stops with the input and resumes after it, in session time.
    title = demo_library.titles[n]
    lost_at = events.index(lost[0])
    before = [e for e in events[:lost_at] if isinstance(e, NowPlaying)]
    assert before and before[-1].track.title == title
    unknown = events[lost_at - 1]
    assert isinstance(unknown, Unknown) and unknown.reason == "input_lost"
    after = [e for e in events[events.index(back) :] if isinstance(e, NowPlaying)]
    assert after and all(e.track.title == title for e in after)
    assert after[0].t >= 12.0 + 4.0  # a fresh window after the gap
    # The device resumed where it stopped, so the track position still fits the clock.
    assert after[-1].offset_s == pytest.approx(after[-1].t, abs=1.5)
    times = [e.t for e in events]
    assert times == sorted(times)


def test_a_device_that_stays_gone_ends_the_session_with_one_line(
    engine: Engine, demo_library: DemoLibrary
) -> None:
    audio = demo_library.audio(2)
    device = FlakyDevice(audio, rate_hz=demo_library.rate_hz, lose_at_s=6.0, reopen_failures=None)
    policy = ReconnectPolicy(timeout_s=1.0, first_delay_s=0.05, max_delay_s=0.2)
    started = time.monotonic()
    events, error = _run(engine, device, LiveConfig(reconnect=policy))
    assert time.monotonic() - started < 30
    assert isinstance(error, DeviceError)
    message = str(error)
    assert "\n" not in message
    assert message.startswith("audio input flaky-mic: input lost (flaky-mic was unplugged)")
    assert "reconnect attempts (last: flaky-mic is not present); giving up" in message
    final = events[-1]
    assert isinstance(final, Status) and final.input_state == "failed"
    assert final.to_payload()["input"] == "failed"
    assert device.reopen_calls >= 3


def test_timeout_zero_ends_the_session_at_the_loss(
    engine: Engine, demo_library: DemoLibrary
) -> None:
    audio = demo_library.audio(2)
    device = FlakyDevice(audio, rate_hz=demo_library.rate_hz, lose_at_s=3.0, reopen_failures=0)
    events, error = _run(engine, device, LiveConfig(reconnect=ReconnectPolicy(timeout_s=0.0)))
    assert isinstance(error, DeviceError)
    assert "not reopening" in str(error)
    assert device.reopen_calls == 0
    assert isinstance(events[-1], Status) and events[-1].input_state == "failed"


class NanBurstFile:
    """A FileSource whose blocks get NaN/inf over one span and hard clipping over another.

    The damage is done on the way to the capture callback, as a broken driver
    would hand it over (FileSource itself refuses files with non-finite samples).
    """

    def __init__(
        self, source: FileSource, *, nan_s: tuple[float, float], clip_s: tuple[float, float]
    ) -> None:
        self._source = source
        rate = source.sample_rate_hz
        self._nan = (int(nan_s[0] * rate), int(nan_s[1] * rate))
        self._clip = (int(clip_s[0] * rate), int(clip_s[1] * rate))
        self.nonfinite_samples = 0
        self.name = source.name
        self.sample_rate_hz = rate
        self.channels = source.channels
        self.finished = source.finished

    def start(self, callback: AudioCallback) -> None:
        position = 0

        def damaged(
            indata: npt.NDArray[np.float32], frames: int, time_info: Any, status: Any
        ) -> None:
            nonlocal position
            block = indata.copy()
            index = np.arange(position, position + frames)
            nan = (index >= self._nan[0]) & (index < self._nan[1])
            block[nan] = np.nan
            block[nan & (index % 7 == 0)] = np.inf
            self.nonfinite_samples += int(nan.sum()) * self.channels
            clip = (index >= self._clip[0]) & (index < self._clip[1])
            block[clip] = np.clip(block[clip] * 16.0, -1.0, 1.0)
            position += frames
            callback(block, frames, time_info, status)

        self._source.start(damaged)

    def stop(self) -> None:
        self._source.stop()

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> NanBurstFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_a_nan_burst_is_zeroed_and_flagged_and_recognition_goes_on(
    engine: Engine, demo_library: DemoLibrary
) -> None:
    n = 4
    path: Path = demo_library.excerpt(n, start_s=0.0, seconds=30.0)
    source = NanBurstFile(FileSource(path=path), nan_s=(10.0, 10.5), clip_s=(20.0, 21.0))
    # A virtual FileSource delivers the whole file at start: the ring must hold it all.
    events, error = _run(engine, source, LiveConfig(capture=CaptureConfig(ring_seconds=40.0)))
    assert error is None
    status = next(e for e in events if isinstance(e, Status) and e.t > 25.0)
    assert status.nonfinite_samples == source.nonfinite_samples == int(0.5 * source.sample_rate_hz)
    assert status.clipped_samples >= 0.5 * source.sample_rate_hz
    assert {"nonfinite", "clipping"} <= set(status.flags)
    payload = status.to_payload()
    assert payload["nonfinite_samples"] == status.nonfinite_samples
    assert "clipping" in payload["flags"]

    title = demo_library.titles[n]
    playing = [e for e in events if isinstance(e, NowPlaying)]
    assert any(e.t < 10.0 for e in playing)
    # Windows that end after the burst (and after the clipping) still name the track.
    later = [e for e in playing if e.t >= 10.5 + 4.0]
    assert later and {e.track.title for e in later} == {title}
    assert max(e.t for e in later) >= 28.0


def test_overflows_are_counted_and_flagged(engine: Engine, demo_library: DemoLibrary) -> None:
    """Device overflows (a flagged callback status) and ring overruns (a consumer too slow)."""
    path = demo_library.excerpt(5, start_s=0.0, seconds=12.0)
    file_source = FileSource(path=path, block_frames=1024)

    class Overflowing(NanBurstFile):
        def start(self, callback: AudioCallback) -> None:
            blocks = 0

            def flagged(indata: npt.NDArray[np.float32], frames: int, ti: Any, status: Any) -> None:
                nonlocal blocks
                blocks += 1
                callback(indata, frames, ti, 1 if blocks in (3, 4, 5) else 0)

            self._source.start(flagged)

    source = Overflowing(file_source, nan_s=(0.0, 0.0), clip_s=(0.0, 0.0))
    # The virtual file arrives all at once; a 5 s ring keeps only its last 5 s.
    events, error = _run(engine, source, LiveConfig(capture=CaptureConfig(ring_seconds=5.0)))
    assert error is None
    status = next(e for e in events if isinstance(e, Status))
    assert status.xruns == 3
    rate = source.sample_rate_hz
    assert status.overrun_frames == file_source.frames - int(5.0 * rate)
    assert {"xrun", "overrun"} <= set(status.flags)
    assert status.to_payload()["overrun_frames"] == status.overrun_frames
    final = events[-1]
    assert isinstance(final, Status) and final.message == "input ended" and final.flags == ()
