"""Sources: FileSource through the real callback path, device resolution, DeviceSource.

Device tests run against a fake ``sounddevice`` module (a fake, not a mock: it
implements the few calls DeviceSource makes); one ``hardware`` test opens the
real default input and is skipped where there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.abc
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import soundfile as sf

from synesthete.errors import AudioFormatError, ConfigError, DeviceError
from synesthete.stream.capture import Capture
from synesthete.stream.config import CaptureConfig
from synesthete.stream.ringbuffer import RingBuffer
from synesthete.stream.sources import (
    PORTAUDIO_MISSING,
    DeviceInfo,
    DeviceSource,
    FileSource,
    Source,
    devices_from_query,
    list_devices,
    match_device,
    resolve_device,
)

# ---------------------------------------------------------------------------
# FileSource


def _write_wav(
    path: Path, *, seconds: float, rate_hz: int = 22050, channels: int = 2, seed: int = 0
) -> np.ndarray:
    """Write seeded noise as 16-bit PCM; return what soundfile decodes, ``[n, ch]`` float32."""
    rng = np.random.default_rng(seed)
    audio = 0.5 * rng.uniform(-1, 1, size=(round(seconds * rate_hz), channels))
    sf.write(path, audio, rate_hz, subtype="PCM_16")
    decoded: np.ndarray = sf.read(path, dtype="float32", always_2d=True)[0]
    return decoded


class RecordingCallback:
    """Records every call made through the sounddevice callback signature."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.frames: list[int] = []
        self.times: list[Any] = []
        self.statuses: list[Any] = []

    def __call__(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self.blocks.append(indata.copy())
        self.frames.append(frames)
        self.times.append(time_info)
        self.statuses.append(status)


@pytest.mark.parametrize("block_frames", [1, 7, 1024, 100_000])
def test_virtual_replay_through_capture_yields_exactly_the_decoded_samples(
    tmp_path: Path, block_frames: int
) -> None:
    path = tmp_path / "noise.wav"
    seconds = 0.05 if block_frames == 1 else 1.5
    decoded = _write_wav(path, seconds=seconds)
    source = FileSource(path=path, block_frames=block_frames)
    ring = RingBuffer(capacity_frames=decoded.shape[0] + 10, channels=source.channels)
    notified = []
    capture = Capture(ring=ring, notify=lambda: notified.append(1))

    delivered = source.run_virtual(capture.callback)

    assert delivered == decoded.shape[0] == source.frames
    assert source.finished.is_set()
    np.testing.assert_array_equal(capture.drain(), decoded)
    blocks = -(-decoded.shape[0] // block_frames)
    assert len(notified) == blocks + 1  # every block, plus the end-of-file wake-up
    assert capture.xruns == 0


def test_virtual_blocks_have_the_device_callback_shape(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    decoded = _write_wav(path, seconds=0.5, rate_hz=16000, channels=1)
    source = FileSource(path=str(path), block_frames=3000)
    record = RecordingCallback()
    source.run_virtual(record)

    assert [b.shape for b in record.blocks] == [(3000, 1), (3000, 1), (2000, 1), (0, 1)]
    assert record.frames == [3000, 3000, 2000, 0]
    assert all(b.dtype == np.float32 for b in record.blocks)
    assert not any(record.statuses)
    starts = [t.inputBufferAdcTime for t in record.times]
    assert starts == pytest.approx([0.0, 3000 / 16000, 6000 / 16000, 8000 / 16000])
    np.testing.assert_array_equal(np.concatenate(record.blocks), decoded)


def test_virtual_clock_consumer_can_process_inside_notify(tmp_path: Path) -> None:
    """identify's pattern: the ring is far smaller than the file, nothing is dropped."""
    path = tmp_path / "long.wav"
    decoded = _write_wav(path, seconds=3.0)
    source = FileSource(path=path, block_frames=512)
    ring = RingBuffer(capacity_frames=1024, channels=2)
    consumed: list[np.ndarray] = []
    capture = Capture(ring=ring, notify=lambda: consumed.append(capture.drain()))
    source.start(capture.callback)  # virtual: runs to the end, synchronously
    np.testing.assert_array_equal(np.concatenate(consumed), decoded)
    assert ring.dropped_frames == 0
    assert ring.overrun_frames == 0


def test_blocks_iterator(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    decoded = _write_wav(path, seconds=0.3, channels=2)
    blocks = list(FileSource(path=path, block_frames=1000).blocks())
    assert all(b.shape[1] == 2 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), decoded)


def test_properties_and_name_is_the_path_as_given(tmp_path: Path) -> None:
    path = tmp_path / "props.wav"
    _write_wav(path, seconds=0.5, rate_hz=44100, channels=2)
    relative_name = str(path)
    source = FileSource(path=relative_name)
    assert source.name == relative_name
    assert source.sample_rate_hz == 44100
    assert source.channels == 2
    assert source.frames == 22050
    assert source.duration_s == pytest.approx(0.5)
    assert FileSource(path=path).name == str(path)
    assert isinstance(source, FileSource)
    _accepts_source(source)


def _accepts_source(source: Source) -> str:
    """Type-level check that FileSource satisfies the Source protocol."""
    return source.name


def test_realtime_replay_is_paced_by_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "one_second.wav"
    decoded = _write_wav(path, seconds=1.0, rate_hz=16000, channels=1)
    source = FileSource(path=path, block_frames=1600, realtime=True)
    ring = RingBuffer(capacity_frames=32000, channels=1)
    capture = Capture(ring=ring)
    started = time.monotonic()
    source.start(capture.callback)
    assert source.active
    assert source.wait(timeout_s=10)
    elapsed_s = time.monotonic() - started
    source.close()
    assert elapsed_s >= 0.9
    assert source.error is None
    np.testing.assert_array_equal(capture.drain(), decoded)


def test_realtime_stop_ends_delivery(tmp_path: Path) -> None:
    path = tmp_path / "three_seconds.wav"
    _write_wav(path, seconds=3.0, rate_hz=16000, channels=1)
    record = RecordingCallback()
    with FileSource(path=path, block_frames=800, realtime=True) as source:
        source.start(record)
        time.sleep(0.3)
    # Leaving the block closed the source: the thread is gone and no more calls come.
    assert not source.active
    calls = len(record.frames)
    time.sleep(0.2)
    assert len(record.frames) == calls
    assert 0 < sum(record.frames) < 3 * 16000


def test_realtime_loop_replays_the_file(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    decoded = _write_wav(path, seconds=0.1, rate_hz=16000, channels=1)
    record = RecordingCallback()
    source = FileSource(path=path, block_frames=400, realtime=True, loop=True)
    source.start(record)
    time.sleep(0.35)
    source.stop()
    audio = np.concatenate(record.blocks)
    assert audio.shape[0] > 2 * decoded.shape[0]
    np.testing.assert_array_equal(audio[: 2 * decoded.shape[0]], np.concatenate([decoded] * 2))
    assert source.error is None


def test_end_of_file_recipe_with_an_asyncio_consumer(tmp_path: Path) -> None:
    """Read ``finished`` before draining; the final empty callback wakes the consumer."""
    path = tmp_path / "half_second.wav"
    decoded = _write_wav(path, seconds=0.5, rate_hz=22050, channels=2)

    async def consume() -> np.ndarray:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        source = FileSource(path=path, block_frames=512, realtime=True)
        capture = Capture(
            ring=RingBuffer(capacity_frames=decoded.shape[0], channels=2),
            notify=lambda: loop.call_soon_threadsafe(event.set),
        )
        source.start(capture.callback)
        got = []
        while True:
            await asyncio.wait_for(event.wait(), timeout=10)
            event.clear()
            done = source.finished.is_set()
            got.append(capture.drain())
            if done:
                break
        source.close()
        return np.concatenate(got)

    np.testing.assert_array_equal(asyncio.run(consume()), decoded)


def test_missing_file_is_an_audio_format_error(tmp_path: Path) -> None:
    with pytest.raises(AudioFormatError, match="no such file") as info:
        FileSource(path=tmp_path / "nope.wav")
    assert "\n" not in str(info.value)


def test_undecodable_file_is_an_audio_format_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 20)
    with pytest.raises(AudioFormatError, match=r"junk\.wav") as info:
        FileSource(path=path)
    assert "\n" not in str(info.value)


def test_empty_file_is_an_audio_format_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1)), 16000)
    with pytest.raises(AudioFormatError, match="no audio frames"):
        FileSource(path=path)


def test_non_finite_samples_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    audio = np.zeros((1000, 1), dtype=np.float32)
    audio[500] = np.nan
    sf.write(path, audio, 16000, subtype="FLOAT")
    source = FileSource(path=path, block_frames=256)
    with pytest.raises(AudioFormatError, match="non-finite"):
        source.run_virtual(RecordingCallback())
    assert source.finished.is_set()


def test_realtime_decode_error_is_kept_and_finishes(tmp_path: Path) -> None:
    path = tmp_path / "nan_rt.wav"
    audio = np.zeros((1600, 1), dtype=np.float32)
    audio[1000] = np.inf
    sf.write(path, audio, 16000, subtype="FLOAT")
    source = FileSource(path=path, block_frames=400, realtime=True)
    record = RecordingCallback()
    source.start(record)
    assert source.wait(timeout_s=10)
    source.close()
    assert isinstance(source.error, AudioFormatError)
    assert record.frames[-1] == 0  # the consumer is still woken up


@pytest.mark.parametrize(
    "kwargs",
    [
        {"block_frames": 0},
        {"block_frames": -1},
        {"block_frames": 10.5},
        {"loop": True},  # looping needs realtime
    ],
)
def test_bad_file_source_settings(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    path = tmp_path / "ok.wav"
    _write_wav(path, seconds=0.1)
    with pytest.raises(ConfigError):
        FileSource(path=path, **kwargs)


# ---------------------------------------------------------------------------
# Device resolution, against a fake device list

HOSTAPIS = [{"name": "ALSA"}, {"name": "JACK Audio Connection Kit"}]
RAW_DEVICES = [
    {"name": "HDA Intel PCH: ALC3246 Analog", "hostapi": 0, "max_input_channels": 2,
     "default_samplerate": 44100.0},
    {"name": "HDMI 0", "hostapi": 0, "max_input_channels": 0, "default_samplerate": 48000.0},
    {"name": "USB Mic", "hostapi": 0, "max_input_channels": 1, "default_samplerate": 48000.0},
    {"name": "USB Mic Pro", "hostapi": 0, "max_input_channels": 4, "default_samplerate": 96000.0},
    {"name": "system", "hostapi": 1, "max_input_channels": 8, "default_samplerate": 48000.0},
    {"name": "USB Mic", "hostapi": 1, "max_input_channels": 1, "default_samplerate": 48000.0},
]  # fmt: skip


def _devices(default_input_index: int | None = 0) -> list[DeviceInfo]:
    return devices_from_query(RAW_DEVICES, HOSTAPIS, default_input_index=default_input_index)


def test_devices_from_query() -> None:
    devices = _devices()
    assert [d.index for d in devices] == [0, 1, 2, 3, 4, 5]
    assert devices[0].is_default_input and not devices[2].is_default_input
    assert devices[4].hostapi == "JACK Audio Connection Kit"
    assert devices[3].default_sample_rate_hz == 96000.0
    assert not devices[1].is_input
    assert devices[2].label == "[2] USB Mic (ALSA)"


@pytest.mark.parametrize(
    ("spec", "expected_index"),
    [
        (None, 0),
        (4, 4),
        ("4", 4),
        (" 3 ", 3),
        ("alc3246", 0),
        ("SYSTEM", 4),
        ("pro", 3),
        ("usb jack", 5),  # words in order over "name, hostapi", like sounddevice
        ("USB Mic, ALSA", 2),  # exact "name, hostapi" wins among several matches
    ],
)
def test_match_device(spec: int | str | None, expected_index: int) -> None:
    assert match_device(spec, _devices(), default_input_index=0).index == expected_index


def test_ambiguous_name_lists_the_matches_on_one_line() -> None:
    with pytest.raises(DeviceError) as info:
        match_device("usb", _devices(), default_input_index=0)
    message = str(info.value)
    assert "ambiguous" in message
    assert "[2] USB Mic (ALSA)" in message
    assert "[3] USB Mic Pro (ALSA)" in message
    assert "[5] USB Mic (JACK Audio Connection Kit)" in message
    assert "HDA" not in message
    assert "\n" not in message


def test_exact_name_shared_by_two_host_apis_is_still_ambiguous() -> None:
    with pytest.raises(DeviceError, match="ambiguous"):
        match_device("usb mic", _devices(), default_input_index=0)


def test_unknown_name_lists_the_available_inputs() -> None:
    with pytest.raises(DeviceError) as info:
        match_device("focusrite", _devices(), default_input_index=0)
    message = str(info.value)
    assert "no input device matches 'focusrite'" in message
    assert "[0] HDA Intel PCH: ALC3246 Analog (ALSA)" in message
    assert "HDMI" not in message  # output-only devices are not offered
    assert "\n" not in message


def test_index_errors() -> None:
    with pytest.raises(DeviceError, match="no audio device with index 42"):
        match_device(42, _devices(), default_input_index=0)
    with pytest.raises(DeviceError, match=r"HDMI 0.*has no input channels"):
        match_device(1, _devices(), default_input_index=0)
    with pytest.raises(DeviceError, match="no input device matches 'hdmi'"):
        match_device("hdmi", _devices(), default_input_index=0)


def test_no_default_and_no_inputs() -> None:
    with pytest.raises(DeviceError, match="no default input device"):
        match_device(None, _devices(None), default_input_index=None)
    outputs_only = [d for d in _devices() if not d.is_input]
    with pytest.raises(DeviceError, match="no audio input devices found"):
        match_device(None, outputs_only, default_input_index=None)
    with pytest.raises(DeviceError, match="no audio input devices found"):
        match_device("usb", [], default_input_index=None)


# ---------------------------------------------------------------------------
# DeviceSource against a fake sounddevice module


class FakePortAudioError(Exception):
    pass


class FakeInputStream:
    """Delivers blocks of a ramp to the callback from its own thread, like PortAudio."""

    instances: ClassVar[list[FakeInputStream]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if kwargs["samplerate"] == 12345:
            raise FakePortAudioError("Error opening InputStream:\nInvalid sample rate", -9997)
        self.active = False
        self.closed = False
        self.latency = 0.01
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        FakeInputStream.instances.append(self)

    def start(self) -> None:
        self.active = True
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        block_frames = self.kwargs["blocksize"] or 256
        channels = self.kwargs["channels"]
        position = 0
        while not self._stop.is_set():
            ramp = np.arange(position, position + block_frames, dtype=np.float32)
            indata = np.repeat(ramp[:, None], channels, axis=1)
            self.kwargs["callback"](indata, block_frames, None, 0)
            position += block_frames
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.active = False

    def close(self, ignore_errors: bool = True) -> None:
        self.stop()
        self.closed = True


def _fake_sounddevice(*, default_input: int = 0) -> types.ModuleType:
    module = types.ModuleType("sounddevice")
    checked: list[dict[str, Any]] = []

    def check_input_settings(**kwargs: Any) -> None:
        checked.append(kwargs)
        if kwargs["samplerate"] == 11025:
            raise FakePortAudioError("Invalid sample rate", -9997)

    module.PortAudioError = FakePortAudioError  # type: ignore[attr-defined]
    module.query_devices = lambda: [dict(d) for d in RAW_DEVICES]  # type: ignore[attr-defined]
    module.query_hostapis = lambda: tuple(HOSTAPIS)  # type: ignore[attr-defined]
    module.default = types.SimpleNamespace(device=[default_input, -1])  # type: ignore[attr-defined]
    module.check_input_settings = check_input_settings  # type: ignore[attr-defined]
    module.InputStream = FakeInputStream  # type: ignore[attr-defined]
    module.checked = checked  # type: ignore[attr-defined]
    return module


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = _fake_sounddevice()
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    FakeInputStream.instances.clear()
    return module


def test_list_and_resolve_through_the_module(fake_sd: types.ModuleType) -> None:
    inputs = list_devices()
    assert [d.index for d in inputs] == [0, 2, 3, 4, 5]
    assert len(list_devices(inputs_only=False)) == 6
    assert resolve_device(None).index == 0
    assert resolve_device("pro").name == "USB Mic Pro"


def test_device_source_defaults_to_native_rate_and_at_most_two_channels(
    fake_sd: types.ModuleType,
) -> None:
    source = DeviceSource(config=CaptureConfig(device="pro"))
    assert source.name == "USB Mic Pro"
    assert source.sample_rate_hz == 96000
    assert source.channels == 2
    mono = DeviceSource(config=CaptureConfig(device=2))
    assert mono.channels == 1
    assert mono.sample_rate_hz == 48000
    assert fake_sd.checked[-1] == {
        "device": 2,
        "channels": 1,
        "dtype": "float32",
        "samplerate": 48000,
    }


def test_device_source_streams_into_capture(fake_sd: types.ModuleType) -> None:
    config = CaptureConfig(device="system", block_frames=128, channels=3, latency="high")
    ring = RingBuffer(capacity_frames=config.ring_capacity_frames(sample_rate_hz=48000), channels=3)
    capture = Capture(ring=ring)
    with DeviceSource(config=config) as source:
        source.start(capture.callback)
        assert source.active
        assert source.latency_s == pytest.approx(0.01)
        deadline = time.monotonic() + 5
        while capture.frames_captured < 1280 and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(DeviceError, match="already started"):
            source.start(capture.callback)
    assert not source.active
    (stream,) = FakeInputStream.instances
    assert stream.closed
    assert stream.kwargs["device"] == 4
    assert stream.kwargs["samplerate"] == 48000
    assert stream.kwargs["channels"] == 3
    assert stream.kwargs["dtype"] == "float32"
    assert stream.kwargs["blocksize"] == 128
    assert stream.kwargs["latency"] == "high"
    audio = capture.drain()
    assert audio.shape[0] >= 1280
    np.testing.assert_array_equal(audio[:, 0], np.arange(audio.shape[0], dtype=np.float32))
    with pytest.raises(DeviceError, match="closed"):
        source.start(capture.callback)


def test_device_source_can_restart_after_stop(fake_sd: types.ModuleType) -> None:
    source = DeviceSource(config=CaptureConfig())
    calls: list[int] = []
    source.start(lambda indata, frames, time_info, status: calls.append(frames))
    source.stop()
    source.stop()  # idempotent
    source.start(lambda indata, frames, time_info, status: calls.append(frames))
    source.close()
    assert len(FakeInputStream.instances) == 2
    assert all(s.closed for s in FakeInputStream.instances)


def test_device_errors_are_one_line_device_errors(fake_sd: types.ModuleType) -> None:
    with pytest.raises(DeviceError, match="refuses 11025 Hz") as info:
        DeviceSource(config=CaptureConfig(sample_rate_hz=11025))
    assert "\n" not in str(info.value)
    with pytest.raises(DeviceError, match="has 1 input channels, 2 requested"):
        DeviceSource(config=CaptureConfig(device=2, channels=2))
    with pytest.raises(DeviceError, match="ambiguous"):
        DeviceSource(config=CaptureConfig(device="usb"))
    source = DeviceSource(config=CaptureConfig(sample_rate_hz=12345))
    with pytest.raises(DeviceError, match="Invalid sample rate") as info:
        source.start(lambda indata, frames, time_info, status: None)
    assert "\n" not in str(info.value)
    assert not source.active


def _wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_stream_that_ends_on_its_own_is_an_error_but_our_stop_is_not(
    fake_sd: types.ModuleType,
) -> None:
    source = DeviceSource(config=CaptureConfig(device="system"))
    try:
        source.start(lambda indata, frames, time_info, status: None)
        first = FakeInputStream.instances[-1]
        first.kwargs["finished_callback"]()  # PortAudio: the device went away
        assert source.finished.is_set()
        assert (
            source.error
            == "audio device [4] system (JACK Audio Connection Kit) stopped delivering audio"
        )

        source.stop()
        source.start(lambda indata, frames, time_info, status: None)
        assert not source.finished.is_set() and source.error is None
        first.kwargs["finished_callback"]()  # the replaced stream ends late: not ours any more
        assert not source.finished.is_set() and source.error is None
        source.stop()  # our own stop ends the stream without an error
        assert source.error is None
        source.close()
    finally:
        with contextlib.suppress(DeviceError):
            source.close()


def test_reopen_rescans_and_finds_the_device_again_by_name(fake_sd: types.ModuleType) -> None:
    source = DeviceSource(config=CaptureConfig(device="usb mic pro"))
    try:
        assert source.device.index == 3
        delivered: list[int] = []
        source.start(lambda indata, frames, time_info, status: delivered.append(frames))
        rescans: list[str] = []
        fake_sd._terminate = lambda: rescans.append("terminate")  # type: ignore[attr-defined]

        def unplugged() -> None:
            rescans.append("initialize")
            fake_sd.query_devices = lambda: [dict(d) for d in RAW_DEVICES[:3]]  # type: ignore[attr-defined]

        fake_sd._initialize = unplugged  # type: ignore[attr-defined]
        with pytest.raises(DeviceError, match=r"audio device USB Mic Pro \(ALSA\) is not present"):
            source.reopen(lambda indata, frames, time_info, status: delivered.append(frames))
        assert rescans == ["terminate", "initialize"]
        assert FakeInputStream.instances[0].closed

        def plugged_back_elsewhere() -> None:
            rescans.append("initialize")
            devices = [dict(d) for d in RAW_DEVICES]
            devices.insert(0, {**devices[3]})  # back, first in the list this time
            devices.pop(4)
            fake_sd.query_devices = lambda: devices  # type: ignore[attr-defined]

        fake_sd._initialize = plugged_back_elsewhere  # type: ignore[attr-defined]
        delivered.clear()
        source.reopen(lambda indata, frames, time_info, status: delivered.append(frames))
        assert source.device.index == 0 and source.device.name == "USB Mic Pro"
        assert FakeInputStream.instances[-1].kwargs["device"] == 0
        assert FakeInputStream.instances[-1].kwargs["samplerate"] == 96000
        _wait_for(lambda: delivered)
        source.close()
        with pytest.raises(DeviceError, match="closed"):
            source.reopen(lambda indata, frames, time_info, status: None)
    finally:
        with contextlib.suppress(DeviceError):
            source.close()


class StuckInputStream(FakeInputStream):
    """``stop`` blocks until released, as with a frozen sound server."""

    release = threading.Event()

    def stop(self) -> None:
        StuckInputStream.release.wait()
        super().stop()


def test_a_stop_that_hangs_is_abandoned_after_the_timeout(
    fake_sd: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synesthete.stream import sources

    monkeypatch.setattr(sources, "STOP_TIMEOUT_S", 0.2)
    fake_sd.InputStream = StuckInputStream  # type: ignore[attr-defined]
    StuckInputStream.release.clear()
    source = DeviceSource(config=CaptureConfig())
    try:
        source.start(lambda indata, frames, time_info, status: None)
        started = time.monotonic()
        with pytest.raises(DeviceError, match=r"did not stop within 0\.2 s") as info:
            source.stop()
        assert time.monotonic() - started < 2.0
        assert "\n" not in str(info.value)
        assert sources.portaudio_calls_in_flight() == 1
        with pytest.raises(DeviceError, match="still closing"):
            source.reopen(lambda indata, frames, time_info, status: None)
        StuckInputStream.release.set()
        _wait_for(lambda: sources.portaudio_calls_in_flight() == 0)
        source.reopen(lambda indata, frames, time_info, status: None)
        assert source.active
        source.close()
    finally:
        StuckInputStream.release.set()
        with contextlib.suppress(DeviceError):
            source.close()


class _PortAudioMissingFinder(importlib.abc.MetaPathFinder):
    """Makes ``import sounddevice`` fail the way it does without libportaudio."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_missing_portaudio_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_PortAudioMissingFinder(), *sys.meta_path])
    with pytest.raises(DeviceError) as info:
        list_devices()
    assert str(info.value) == PORTAUDIO_MISSING
    with pytest.raises(DeviceError, match="PortAudio library not found"):
        DeviceSource(config=CaptureConfig())


# ---------------------------------------------------------------------------
# Real hardware


def _default_input_or_skip() -> None:
    try:
        import sounddevice as sd
    except OSError:
        pytest.skip("PortAudio is not installed")
    try:
        devices = sd.query_devices()
        default_input = sd.default.device[0]
    except sd.PortAudioError as err:
        pytest.skip(f"PortAudio cannot list devices: {err}")
    if not any(d["max_input_channels"] > 0 for d in devices):
        pytest.skip("no audio input device")
    if not isinstance(default_input, int) or default_input < 0:
        pytest.skip("no default audio input device")


@pytest.mark.hardware
def test_default_input_device_delivers_audio() -> None:
    _default_input_or_skip()
    config = CaptureConfig()
    with DeviceSource(config=config) as source:
        rate_hz = source.sample_rate_hz
        ring = RingBuffer(
            capacity_frames=config.ring_capacity_frames(sample_rate_hz=rate_hz),
            channels=source.channels,
        )
        capture = Capture(ring=ring)
        source.start(capture.callback)
        time.sleep(0.5)
        source.stop()
    audio = capture.drain()
    assert audio.shape[1] == source.channels
    assert audio.shape[0] > 0.2 * rate_hz
    assert np.isfinite(audio).all()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX byte file names")
def test_file_source_opens_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    import os

    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    audio = (0.1 * np.sin(np.arange(8000) / 5.0)).astype(np.float32)
    sf.write(name, audio, 8000)
    source = FileSource(path=os.fsdecode(name), realtime=False, block_frames=1000)
    assert source.sample_rate_hz == 8000
    decoded = np.concatenate(list(source.blocks()))
    np.testing.assert_allclose(decoded[:, 0], audio, atol=1e-4)
