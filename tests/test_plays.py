"""``listen --plays FILE``: one line per finished play, JSONL or CSV, readable while it grows."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import DemoLibrary, cli_command, cli_env

from synesthete.clients.plays import CSV_COLUMNS, PlaysLog, utc_iso
from synesthete.constants import WINDOW_S
from synesthete.events import NowPlaying, Status, StreamMetadata, TrackInfo, Unknown

A = TrackInfo(id=1, path="/m/a.flac", title="Alpha", artist="X", album="L", duration_s=60.0)
B = TrackInfo(id=2, path="/m/b.flac", title="Beta, with a comma", artist=None, duration_s=50.0)


class Clock:
    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


def playing(track: TrackInfo, t: float, offset_s: float, confidence: float) -> NowPlaying:
    return NowPlaying(file="radio", t=t, track=track, offset_s=offset_s, confidence=confidence)


def test_utc_iso_is_utc_with_milliseconds() -> None:
    assert utc_iso(0.0) == "1970-01-01T00:00:00.000Z"
    assert utc_iso(1_800_000_000.1234) == "2027-01-15T08:00:00.123Z"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_each_play_is_one_line_written_when_it_ends(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"plays{suffix}"
    clock = Clock(1_800_000_000.0)
    log = PlaysLog(path, clock=clock)

    def lines() -> list[str]:
        return path.read_text(encoding="utf-8").splitlines()

    header = 1 if suffix == ".csv" else 0
    for t, offset, conf in ((4.0, 10.0, 0.7), (6.0, 12.0, 0.9), (8.0, 14.0, 0.8)):
        clock.now_s = 1_800_000_000.0 + t
        log.write(playing(A, t, offset, conf))
        log.write(Status(file="radio", t=t))
        log.write(StreamMetadata(file="radio", t=t, title="ignored"))
    assert len(lines()) == header, "a play in progress is not written"
    clock.now_s = 1_800_000_010.0
    log.write(playing(B, 10.0, 4.0, 0.6))  # another track: A's play ends
    assert len(lines()) == header + 1  # readable at once, the file still open
    clock.now_s = 1_800_000_012.0
    log.write(playing(B, 12.0, 6.0, 0.65))
    log.write(Unknown(file="radio", t=14.0))  # B's play ends
    log.write(Unknown(file="radio", t=16.0))  # nothing playing: nothing more
    assert len(lines()) == header + 2
    clock.now_s = 1_800_000_020.0
    log.write(playing(A, 20.0, 30.0, 0.75))
    log.close()  # the session ends: the play in progress is written
    if suffix == ".csv":
        rows = list(csv.DictReader(lines()))
        assert list(rows[0]) == list(CSV_COLUMNS)
        got = [(r["title"], r["start"], r["end"], r["confidence"], r["offset_start_s"],
                r["offset_end_s"]) for r in rows]  # fmt: skip
        assert rows[1]["artist"] == "" and rows[0]["track_id"] == "1"
    else:
        records = [json.loads(line) for line in lines()]
        got = [
            (r["track"]["title"], r["start"], r["end"], f"{r['confidence']:.4f}",
             f"{r['offset_start_s']:.3f}", f"{r['offset_end_s']:.3f}")
            for r in records
        ]  # fmt: skip
        assert records[0]["source"] == "radio" and records[0]["duration_s"] == 8.0
    start = 1_800_000_000.0
    assert got == [
        ("Alpha", utc_iso(start + 4.0 - WINDOW_S), utc_iso(start + 8.0), "0.9000", "6.000",
         "14.000"),
        ("Beta, with a comma", utc_iso(start + 10.0 - WINDOW_S), utc_iso(start + 12.0), "0.6500",
         "0.000", "6.000"),
        ("Alpha", utc_iso(start + 20.0 - WINDOW_S), utc_iso(start + 20.0), "0.7500", "26.000",
         "30.000"),
    ]  # fmt: skip


def test_a_second_session_appends_under_the_same_header(tmp_path: Path) -> None:
    path = tmp_path / "plays.csv"
    for session in range(2):
        log = PlaysLog(path, clock=Clock(1_800_000_000.0 + 100 * session))
        log.write(playing(A, 4.0, 4.0, 0.8))
        log.close()
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == 3


def test_an_unwritable_plays_file_is_a_one_line_error(demo_library: DemoLibrary, tmp_path) -> None:
    excerpt = demo_library.excerpt(0, start_s=0.0, seconds=8.0)
    result = subprocess.run(
        cli_command("listen", "--index", str(demo_library.index), "--input", str(excerpt),
                    "--no-tui", "--plays", str(tmp_path / "missing" / "plays.jsonl")),
        env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open the plays log" in lines[0], lines


def test_listen_logs_each_track_of_a_two_track_input_once(
    demo_library: DemoLibrary, tmp_path: Path
) -> None:
    """Two library excerpts back to back through the real listen loop: two plays, in order,
    with the offsets they covered."""
    first = demo_library.audio(2)[int(5 * demo_library.rate_hz) : int(25 * demo_library.rate_hz)]
    second = demo_library.audio(7)[int(10 * demo_library.rate_hz) : int(30 * demo_library.rate_hz)]
    mix = tmp_path / "two.wav"
    sf.write(mix, np.concatenate([first, second]), demo_library.rate_hz, subtype="PCM_16")
    plays = tmp_path / "plays.csv"
    result = subprocess.run(
        cli_command("listen", "--index", str(demo_library.index), "--input", str(mix),
                    "--no-tui", "--plays", str(plays), "--threads", "1"),
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(plays.read_text().splitlines()))
    assert [r["title"] for r in rows] == [demo_library.titles[2], demo_library.titles[7]], rows
    for row, (start_s, end_s) in zip(rows, ((5.0, 25.0), (10.0, 30.0)), strict=True):
        assert start_s - 1.0 <= float(row["offset_start_s"]) <= start_s + 6.0, row
        # The last window named as the track may reach a window into the next one.
        assert end_s - 8.0 <= float(row["offset_end_s"]) <= end_s + WINDOW_S, row
        assert float(row["confidence"]) >= 0.5 and row["source"] == str(mix)
        assert row["start"] <= row["end"]
