"""``listen --plays FILE``: one line per finished play, for broadcast monitoring.

A play is one stretch of the same identified track: it starts with the first
``now_playing`` of the track and ends at the next ``unknown``, at a
``now_playing`` of another track, or when the session ends. Each finished
play is appended to the file as one JSON object (``.jsonl`` and any other
suffix) or one CSV row (``.csv``), flushed and synced at once, so a reader
can tail the file while it grows and a crash loses at most the play in
progress.

Times are wall-clock UTC, ISO 8601 with milliseconds (``2026-12-07T01:23:45.120Z``).
``start`` is when the audio of the first window identified as the track
began (the event's time less one window, scaled by the input's pace);
``end`` is when the last window identified as it ended (a ``mixing`` event, the
track held while its evidence fades, neither extends nor ends a play). ``offset_start_s``
and ``offset_end_s`` are the positions in the library track that the play
covered, and ``confidence`` the highest the matcher gave it. Both ends are
good to about one window (4 s): a window that straddles a change of track is
named after the track that fills most of it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from synesthete.constants import WINDOW_S
from synesthete.errors import ConfigError
from synesthete.events import Event, NowPlaying, Unknown

CSV_COLUMNS = (
    "start",
    "end",
    "duration_s",
    "track_id",
    "title",
    "artist",
    "album",
    "path",
    "confidence",
    "offset_start_s",
    "offset_end_s",
    "source",
)


def utc_iso(wall_s: float) -> str:
    """Unix seconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    stamp = datetime.fromtimestamp(wall_s, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class Play:
    """One finished play of a library track."""

    source: str
    track: dict[str, Any]
    start_wall_s: float
    end_wall_s: float
    confidence: float
    offset_start_s: float
    offset_end_s: float

    def to_record(self) -> dict[str, Any]:
        return {
            "start": utc_iso(self.start_wall_s),
            "end": utc_iso(self.end_wall_s),
            "duration_s": round(max(0.0, self.end_wall_s - self.start_wall_s), 3),
            "track": self.track,
            "confidence": round(self.confidence, 4),
            "offset_start_s": round(self.offset_start_s, 3),
            "offset_end_s": round(self.offset_end_s, 3),
            "source": self.source,
        }

    def to_row(self) -> list[str]:
        record = self.to_record()
        track = self.track
        return [
            record["start"],
            record["end"],
            f"{record['duration_s']:.3f}",
            str(track.get("id", "")),
            str(track.get("title") or ""),
            str(track.get("artist") or ""),
            str(track.get("album") or ""),
            str(track.get("path") or ""),
            f"{record['confidence']:.4f}",
            f"{record['offset_start_s']:.3f}",
            f"{record['offset_end_s']:.3f}",
            self.source,
        ]


class _Current:
    """The play in progress."""

    def __init__(self, event: NowPlaying, start_wall_s: float) -> None:
        self.first = event
        self.last = event
        self.start_wall_s = start_wall_s
        self.end_wall_s = start_wall_s
        self.confidence = event.confidence


class PlaysLog:
    """An event sink that appends each finished play to a JSONL or CSV file.

    ``speed`` is how many stream seconds pass per wall-clock second (``--speed``),
    for the window length in wall-clock time. ``clock`` gives Unix seconds (tests
    pass their own). Call ``close`` at the end of the session: it writes the
    play still in progress.
    """

    def __init__(
        self,
        path: Path,
        *,
        speed: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not speed > 0:
            raise ConfigError(f"speed must be > 0, got {speed!r}")
        self._path = path
        self._csv = path.suffix.lower() == ".csv"
        self._speed = speed
        self._clock = clock
        self._current: _Current | None = None
        try:
            self._out: TextIO = path.open("a", encoding="utf-8", newline="")
        except OSError as err:
            raise ConfigError(f"{path}: cannot open the plays log: {err.strerror or err}") from None
        if self._csv and self._out.tell() == 0:
            self._write_line(_csv_line(list(CSV_COLUMNS)))
        self.plays = 0

    def write(self, event: Event) -> None:
        if not isinstance(event, (NowPlaying, Unknown)):
            return
        now_s = self._clock()
        current = self._current
        if isinstance(event, Unknown):
            if current is not None:
                self._finish(current)
            return
        if current is not None and current.first.track.id == event.track.id:
            if event.state == "playing":
                # A "mixing" event holds the fading track while the next one takes over:
                # it keeps the play open but is not evidence that it still plays.
                current.last = event
                current.end_wall_s = now_s
                current.confidence = max(current.confidence, event.confidence)
            return
        if current is not None:
            self._finish(current)
        # The first window identified as the track began one window before its end.
        self._current = _Current(event, now_s - WINDOW_S / self._speed)
        self._current.end_wall_s = now_s

    def close(self) -> None:
        current = self._current
        if current is not None:
            self._finish(current)
        self._out.close()

    def _finish(self, current: _Current) -> None:
        self._current = None
        first, last = current.first, current.last
        play = Play(
            source=first.file,
            track=first.track.to_payload(),
            start_wall_s=current.start_wall_s,
            end_wall_s=current.end_wall_s,
            confidence=current.confidence,
            offset_start_s=max(0.0, first.offset_s - WINDOW_S * first.tempo_ratio),
            offset_end_s=last.offset_s,
        )
        if self._csv:
            self._write_line(_csv_line(play.to_row()))
        else:
            self._write_line(json.dumps(play.to_record(), ensure_ascii=False) + "\n")
        self.plays += 1

    def _write_line(self, line: str) -> None:
        self._out.write(line)
        self._out.flush()
        # One fsync per play (minutes apart): the line survives a crash of the machine too.
        os.fsync(self._out.fileno())


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()
