"""``listen --speed/--loop`` (paced replay faster than real time, for soaks) and bounded state.

A session can run for days: what ``listen`` keeps per event or per window
must stay bounded.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from synesthete.clients.cli import main
from synesthete.clients.listen import TracklistEvents
from synesthete.errors import ConfigError
from synesthete.events import NowPlaying, Status, TrackInfo, Unknown
from synesthete.index.recognizer import TIMING_WINDOWS, WindowTiming
from synesthete.stream.sources import FileSource

RATE_HZ = 8000


def write_tone(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), RATE_HZ)
    return path


def test_speed_paces_a_realtime_file_faster_on_the_same_stream_clock(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "tone.wav", 2.0)
    source = FileSource(path=path, realtime=True, speed=8.0, block_frames=400)
    ends: list[float] = []
    done = threading.Event()

    def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
        if frames:
            ends.append(time_info.currentTime)
        else:
            done.set()

    started = time.monotonic()
    source.start(callback)
    assert done.wait(10)
    wall_s = time.monotonic() - started
    source.close()
    # 2 s of audio at 8x is 0.25 s; generous for a loaded machine, and far below real time.
    assert wall_s < 1.5
    assert ends[-1] == pytest.approx(2.0)  # time_info stays in stream seconds


def test_loop_with_speed_keeps_delivering_past_the_end(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "tone.wav", 0.5)
    source = FileSource(path=path, realtime=True, loop=True, speed=10.0, block_frames=400)
    frames_seen = 0
    enough = threading.Event()

    def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
        nonlocal frames_seen
        frames_seen += frames
        if frames_seen >= 3 * RATE_HZ * 0.5:
            enough.set()

    source.start(callback)
    assert enough.wait(10)
    source.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"realtime": True, "speed": 0.0},
        {"realtime": True, "speed": -2.0},
        {"realtime": True, "speed": float("inf")},
        {"realtime": True, "speed": float("nan")},
        {"realtime": False, "speed": 2.0},
    ],
)
def test_bad_speed_is_a_config_error(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    path = write_tone(tmp_path / "tone.wav", 0.2)
    with pytest.raises(ConfigError):
        FileSource(path=path, **kwargs)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--speed", "4"], "only apply with --input"),
        (["--loop"], "only apply with --input"),
        (["--input", "x.wav", "--speed", "0"], "--speed must be a finite number > 0"),
    ],
)
def test_listen_speed_and_loop_options_are_checked_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code = main(["listen", "--index", str(tmp_path / "no-index"), "--no-tui", *extra])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err and len(err.strip().splitlines()) == 1


def test_tracklist_history_keeps_only_what_the_tracklist_reads() -> None:
    track = TrackInfo(id=1, path="/a.flac", title="A")
    history = TracklistEvents()
    for n in range(1000):
        history.append(Status(file="mic", t=float(n)))
    history.append(NowPlaying(file="mic", t=1000.0, track=track, offset_s=1.0, confidence=0.9))
    history.append(Status(file="mic", t=1001.0))
    history.append(Unknown(file="mic", t=1002.0))
    history.append(Status(file="mic", t=1003.0, message="input ended"))
    events = history.events()
    assert [e.type for e in events] == ["now_playing", "unknown", "status"]
    assert events[-1].t == 1003.0  # the end time still reaches the tracklist


def test_window_timings_trim_to_the_last_windows() -> None:
    timing = WindowTiming()
    for n in range(2 * TIMING_WINDOWS + 1):
        timing.encoder_ms.append(float(n))
        timing.search_ms.append(float(n))
        timing.matcher_ms.append(float(n))
    timing.trim(TIMING_WINDOWS)
    for series in (timing.encoder_ms, timing.search_ms, timing.matcher_ms):
        assert series == [float(n) for n in range(TIMING_WINDOWS + 1, 2 * TIMING_WINDOWS + 1)]
