"""Tracklists from event streams: segments, then txt / csv / cue / json renderings.

A segment runs from when a track was first reported (minus the window that
revealed it) to when another answer took over. Segments shorter than
``min_segment_s`` that sit between two runs of the same track are merged
away. Gaps of at least ``min_segment_s`` become ``unknown`` segments;
shorter ones (the seconds a DJ crossfade leaves between the outgoing track
fading from the windows and the incoming one being named, or the first
window's wait) go to the neighbouring track, so a mix's tracklist has one
line per track.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any, TextIO
from urllib.parse import urlsplit

from synesthete.constants import WINDOW_S
from synesthete.errors import ConfigError
from synesthete.events import Event, NowPlaying, TrackInfo, now_playing_after

CUE_FRAMES_PER_S = 75


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    start_s: float
    end_s: float
    track: TrackInfo | None
    confidence: float = 0.0
    tempo_ratio: float = 1.0
    offset_s: float | None = None
    faded_s: float | None = None
    """The last confident moment, when the matcher then held the track as ``mixing``."""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_payload(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "track": None if self.track is None else self.track.to_payload(),
            "confidence": round(self.confidence, 4),
            "tempo_ratio": round(self.tempo_ratio, 4),
            "offset_s": None if self.offset_s is None else round(self.offset_s, 3),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracklist:
    source: str
    duration_s: float
    segments: tuple[Segment, ...]


def build_tracklist(events: list[Event], *, source: str, min_segment_s: float = 8.0) -> Tracklist:
    """Fold ``now_playing``/``unknown`` events into segments."""
    raw: list[Segment] = []
    end_t = max((e.t for e in events), default=0.0)
    current: Segment | None = None
    confidences: list[float] = []
    answer: NowPlaying | None = None
    for event in events:
        before, answer = answer, now_playing_after(answer, event)
        if answer is None:
            if before is not None and current is not None and current.track is not None:
                raw.append(_close(current, confidences, event.t))
                current = None
                confidences = []
            continue
        if answer is not event:
            continue  # not a now_playing: only its time counts (``end_t``)
        if (
            current is not None
            and current.track is not None
            and current.track.id == answer.track.id
        ):
            if answer.state == "mixing":
                # Held while its evidence fades: remember when it was last sure.
                faded = current.end_s if current.faded_s is None else current.faded_s
                current = replace(current, end_s=answer.t, faded_s=faded)
                continue
            confidences.append(answer.confidence)
            current = replace(current, end_s=answer.t, tempo_ratio=answer.tempo_ratio, faded_s=None)
            continue
        start = max(0.0, answer.t - WINDOW_S)
        if current is not None:
            raw.append(_close(current, confidences, min(start, current.end_s)))
            start = max(start, raw[-1].end_s)
        confidences = [answer.confidence]
        current = Segment(
            start_s=start,
            end_s=answer.t,
            track=answer.track,
            confidence=answer.confidence,
            tempo_ratio=answer.tempo_ratio,
            offset_s=max(0.0, answer.offset_s - (answer.t - start)),
        )
    if current is not None:
        raw.append(_close(current, confidences, end_t))
    return Tracklist(
        source=source,
        duration_s=end_t,
        segments=tuple(_fill_gaps(_merge(raw, min_segment_s), end_t, absorb_s=min_segment_s)),
    )


def _close(segment: Segment, confidences: list[float], end_s: float) -> Segment:
    mean = sum(confidences) / len(confidences) if confidences else segment.confidence
    return replace(segment, end_s=max(segment.start_s, end_s), confidence=mean)


def _merge(segments: list[Segment], min_segment_s: float) -> list[Segment]:
    merged: list[Segment] = []
    for segment in segments:
        if (
            merged
            and merged[-1].track is not None
            and segment.track is not None
            and merged[-1].track.id == segment.track.id
        ):
            merged[-1] = replace(
                merged[-1],
                end_s=segment.end_s,
                confidence=max(merged[-1].confidence, segment.confidence),
            )
            continue
        merged.append(segment)
    # Drop short blips sandwiched between runs of the same track, then re-join.
    result: list[Segment] = []
    for i, segment in enumerate(merged):
        prev = result[-1] if result else None
        nxt = merged[i + 1] if i + 1 < len(merged) else None
        if (
            segment.duration_s < min_segment_s
            and prev is not None
            and nxt is not None
            and prev.track is not None
            and nxt.track is not None
            and prev.track.id == nxt.track.id
        ):
            continue
        if (
            prev is not None
            and prev.track is not None
            and segment.track is not None
            and prev.track.id == segment.track.id
        ):
            result[-1] = replace(prev, end_s=segment.end_s)
            continue
        result.append(segment)
    return result


def _fill_gaps(segments: list[Segment], end_s: float, *, absorb_s: float) -> list[Segment]:
    """Cover ``0..end_s``: gaps of ``absorb_s`` or more become unknown segments, shorter ones
    extend the track before them (or, at the very start, the first track).

    A track held as ``mixing`` and then lost ends where it was last sure, unless another
    track follows within ``absorb_s`` (a crossfade): a hard cut to unknown music, or
    the end of the stream, is not credited to the track that stopped matching.
    """
    segments = list(segments)
    for i, segment in enumerate(segments):
        if segment.faded_s is None:
            continue
        nxt = segments[i + 1] if i + 1 < len(segments) else None
        if nxt is None or nxt.start_s - segment.end_s >= absorb_s:
            segments[i] = replace(segment, end_s=max(segment.start_s, segment.faded_s))
    filled: list[Segment] = []
    cursor = 0.0
    for segment in segments:
        gap = segment.start_s - cursor
        if gap >= absorb_s:
            filled.append(Segment(start_s=cursor, end_s=segment.start_s, track=None))
        elif gap > 0 and filled:
            filled[-1] = replace(filled[-1], end_s=segment.start_s)
        if filled:
            filled.append(replace(segment, start_s=max(cursor, segment.start_s)))
        elif gap < absorb_s:
            # The first answer waits for a full window: the track was already playing.
            back = segment.start_s * segment.tempo_ratio
            offset = None if segment.offset_s is None else max(0.0, segment.offset_s - back)
            filled.append(replace(segment, start_s=0.0, offset_s=offset))
        else:
            filled.append(segment)
        cursor = segment.end_s
    if end_s - cursor >= absorb_s:
        filled.append(Segment(start_s=cursor, end_s=end_s, track=None))
    elif filled and end_s > cursor:
        filled[-1] = replace(filled[-1], end_s=end_s)
    return filled


def _clock(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def cue_index(seconds: float) -> str:
    """``mm:ss:ff`` with 75 frames per second, as CUE sheets count."""
    frames = int(seconds * CUE_FRAMES_PER_S + 0.5)
    minutes, rest = divmod(frames, 60 * CUE_FRAMES_PER_S)
    secs, ff = divmod(rest, CUE_FRAMES_PER_S)
    return f"{minutes:02d}:{secs:02d}:{ff:02d}"


def _label(track: TrackInfo | None) -> str:
    if track is None:
        return "(unknown)"
    return f"{track.artist} - {track.title}" if track.artist else track.title


def _cue_quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


CSV_COLUMNS = (
    "source",
    "start_s",
    "end_s",
    "track_id",
    "title",
    "artist",
    "album",
    "confidence",
    "tempo_ratio",
)
FORMATS = ("txt", "tracklist", "csv", "cue", "json")


def _tracklist_payload(tracklist: Tracklist) -> dict[str, Any]:
    return {
        "source": tracklist.source,
        "duration_s": round(tracklist.duration_s, 3),
        "segments": [s.to_payload() for s in tracklist.segments],
    }


class TracklistWriter:
    """Writes the tracklists of one or more inputs as one document of ``fmt``.

    ``txt`` and ``tracklist`` give a ``# source`` block per input; ``csv`` one
    header and a row per segment (the ``source`` column tells inputs apart);
    ``cue`` one sheet, a ``FILE`` block per input, tracks numbered on across
    them (each ``INDEX`` counts from the start of its own file, as CUE does);
    ``json`` one array, an object per input, written by ``close``. Each
    tracklist is written as soon as it is given, except json's.
    """

    def __init__(self, out: TextIO, *, fmt: str, title: str) -> None:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown tracklist format {fmt!r}")
        self._out = out
        self._fmt = fmt
        self._title = title
        self._started = False
        self._cue_track = 0
        self._json: list[dict[str, Any]] = []

    def write(self, tracklist: Tracklist) -> None:
        first = not self._started
        self._started = True
        if self._fmt == "txt":
            self._write_txt(tracklist)
        elif self._fmt == "tracklist":
            self._write_tracklist(tracklist)
        elif self._fmt == "csv":
            self._write_csv(tracklist, header=first)
        elif self._fmt == "cue":
            self._write_cue(tracklist, header=first)
        else:
            self._json.append(_tracklist_payload(tracklist))
        self._out.flush()

    def close(self) -> None:
        """Finish the document (json is written here, as an array even when empty)."""
        if self._fmt == "json":
            json.dump(self._json, self._out, ensure_ascii=False, indent=2)
            self._out.write("\n")
            self._out.flush()

    def _write_txt(self, tracklist: Tracklist) -> None:
        self._out.write(f"# {tracklist.source}\n")
        for segment in tracklist.segments:
            self._out.write(f"{_clock(segment.start_s)} {_label(segment.track)}\n")

    def _write_tracklist(self, tracklist: Tracklist) -> None:
        self._out.write(f"# {tracklist.source}\n")
        for n, segment in enumerate(tracklist.segments, start=1):
            extra = ""
            if segment.track is not None:
                extra = f"  (confidence {segment.confidence:.2f}"
                if abs(segment.tempo_ratio - 1.0) > 0.005:
                    extra += f", tempo {(segment.tempo_ratio - 1) * 100:+.1f} %"
                extra += ")"
            self._out.write(
                f"{n:02d}. [{_clock(segment.start_s)}-{_clock(segment.end_s)}] "
                f"{_label(segment.track)}{extra}\n"
            )

    def _write_csv(self, tracklist: Tracklist, *, header: bool) -> None:
        writer = csv.writer(self._out)
        if header:
            writer.writerow(CSV_COLUMNS)
        for segment in tracklist.segments:
            track = segment.track
            writer.writerow(
                [
                    tracklist.source,
                    f"{segment.start_s:.3f}",
                    f"{segment.end_s:.3f}",
                    "" if track is None else track.id,
                    "" if track is None else track.title,
                    "" if track is None or track.artist is None else track.artist,
                    "" if track is None or track.album is None else track.album,
                    f"{segment.confidence:.4f}",
                    f"{segment.tempo_ratio:.4f}",
                ]
            )

    def _write_cue(self, tracklist: Tracklist, *, header: bool) -> None:
        if header:
            self._out.write(f"TITLE {_cue_quote(self._title)}\n")
        self._out.write(f"FILE {_cue_quote(tracklist.source)} {_cue_file_type(tracklist.source)}\n")
        for segment in tracklist.segments:
            self._cue_track += 1
            track = segment.track
            self._out.write(f"  TRACK {self._cue_track:02d} AUDIO\n")
            self._out.write(
                f"    TITLE {_cue_quote('(unknown)' if track is None else track.title)}\n"
            )
            if track is not None and track.artist:
                self._out.write(f"    PERFORMER {_cue_quote(track.artist)}\n")
            self._out.write(f"    INDEX 01 {cue_index(segment.start_s)}\n")


_CUE_FILE_TYPES = {
    ".mp3": "MP3",
    ".mp2": "MP3",
    ".mpga": "MP3",
    ".aif": "AIFF",
    ".aiff": "AIFF",
    ".aifc": "AIFF",
    ".bin": "BINARY",
    ".raw": "BINARY",
    ".pcm": "BINARY",
}


def _cue_file_type(source: str) -> str:
    """The CUE sheet's file type for ``source``, by its extension (case-insensitive).

    The CUE format names five types: ``WAVE``, ``MP3``, ``AIFF``, ``BINARY``
    (raw little-endian PCM) and ``MOTOROLA`` (raw big-endian PCM). MPEG audio
    is ``MP3`` and AIFF is ``AIFF``. It has no type for FLAC, Ogg or Opus:
    ``WAVE`` is what rippers and players (EAC, foobar2000, CUETools) write and
    read for those, meaning "a decodable audio file", so they, WAV, standard
    input (``-``) and unknown extensions get ``WAVE``. A URL's query is not
    part of its extension.
    """
    path = urlsplit(source).path if "://" in source else source
    return _CUE_FILE_TYPES.get(PurePath(path).suffix.lower(), "WAVE")


def write_tracklist(tracklist: Tracklist, out: TextIO, *, fmt: str) -> None:
    """Render one tracklist in ``fmt``: txt, tracklist, csv, cue, or json (one object)."""
    if fmt == "json":
        json.dump(_tracklist_payload(tracklist), out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    writer = TracklistWriter(out, fmt=fmt, title=tracklist.source)
    writer.write(tracklist)
    writer.close()
