"""Tracklists from hand-made event streams, and their renderings."""

from __future__ import annotations

import csv
import io
import json

from synesthete.clients.tracklist import build_tracklist, cue_index, write_tracklist
from synesthete.events import Event, NowPlaying, TrackInfo, Unknown

A = TrackInfo(id=1, path="a.flac", title="Alpha", artist="Ann")
B = TrackInfo(id=2, path="b.flac", title="Beta", artist=None)


def np_(t: float, track: TrackInfo, offset: float, conf: float = 0.9) -> NowPlaying:
    return NowPlaying(file="mix", t=t, track=track, offset_s=offset, confidence=conf)


def test_segments_and_gaps() -> None:
    events: list[Event] = [np_(t, A, 30 + t) for t in (4, 6, 8, 10, 12)]
    events += [np_(t, B, t - 10) for t in (16, 18, 20)]
    events += [Unknown(file="mix", t=22, reason="lost"), np_(30, A, 100), np_(32, A, 102)]
    tl = build_tracklist(events, source="mix", min_segment_s=3.0)
    labels = [(s.track.title if s.track else None) for s in tl.segments]
    assert labels == ["Alpha", "Beta", None, "Alpha"]
    assert tl.segments[0].start_s == 0.0
    assert tl.segments[1].start_s == 12.0
    assert tl.segments[2].start_s == 22.0 and tl.segments[2].end_s == 26.0


def test_crossfade_gaps_go_to_the_outgoing_track_and_long_gaps_stay_unknown() -> None:
    # A is lost at 22 s while a crossfade runs; B is named at 30 s (window from 26 s).
    events: list[Event] = [np_(t, A, 30 + t) for t in (10, 12, 14, 16)]
    events += [Unknown(file="mix", t=22, reason="lost")]
    events += [np_(t, B, t - 10) for t in (30, 32, 34)]
    events += [Unknown(file="mix", t=40, reason="lost"), np_(60, A, 100), np_(62, A, 102)]
    tl = build_tracklist(events, source="mix", min_segment_s=8.0)
    labels = [(s.track.title if s.track else None) for s in tl.segments]
    assert labels == ["Alpha", "Beta", None, "Alpha"]
    first, second, gap, _ = tl.segments
    # A's first window started at 6 s; the 6 s before it go to A, back-dating its offset.
    assert first.start_s == 0.0 and first.offset_s == 30.0
    assert first.end_s == second.start_s == 26.0  # the 4 s crossfade gap is A's
    assert (gap.start_s, gap.end_s) == (40.0, 56.0)  # 16 s of nothing known stays unknown


def test_a_track_held_as_mixing_then_lost_ends_where_it_was_last_sure() -> None:
    def mixing(t: float, track: TrackInfo) -> NowPlaying:
        return NowPlaying(
            file="mix", t=t, track=track, offset_s=0.0, confidence=0.1, state="mixing"
        )

    # A hard cut to music that is not in the library: A was last sure at 20 s.
    cut: list[Event] = [np_(t, A, t) for t in (4, 8, 12, 16, 20)]
    cut += [mixing(24, A), Unknown(file="mix", t=32, reason="lost")]
    tl = build_tracklist(cut, source="mix", min_segment_s=8.0)
    assert [(s.track.title if s.track else None, s.start_s, s.end_s) for s in tl.segments] == [
        ("Alpha", 0.0, 20.0),
        (None, 20.0, 32.0),
    ]
    assert tl.segments[0].confidence == 0.9  # the held, low-confidence window is left out
    # A crossfade: B is named right after the hold, so A keeps the seconds up to B.
    fade = [*cut[:-1], Unknown(file="mix", t=30, reason="lost"), np_(34, B, 5), np_(36, B, 7)]
    tl = build_tracklist(fade, source="mix", min_segment_s=8.0)
    assert [(s.track.title if s.track else None, s.end_s) for s in tl.segments] == [
        ("Alpha", 30.0),
        ("Beta", 36.0),
    ]


def test_short_blip_between_same_track_is_merged() -> None:
    events: list[Event] = [np_(t, A, t) for t in (4, 6, 8, 10)]
    events += [np_(12, B, 50)]
    events += [np_(t, A, t) for t in (14, 16, 18, 20)]
    tl = build_tracklist(events, source="mix", min_segment_s=8.0)
    assert [s.track.title if s.track else None for s in tl.segments] == ["Alpha"]


def test_formats() -> None:
    events: list[Event] = [np_(t, A, t) for t in (4, 6)] + [np_(t, B, t) for t in (70, 72)]
    tl = build_tracklist(events, source="mix.wav", min_segment_s=1.0)
    out = io.StringIO()
    write_tracklist(tl, out, fmt="cue")
    cue = out.getvalue()
    assert 'FILE "mix.wav" WAVE' in cue
    assert "TRACK 01 AUDIO" in cue and 'PERFORMER "Ann"' in cue
    assert "INDEX 01 01:06:00" in cue  # B starts at 66 s
    out = io.StringIO()
    write_tracklist(tl, out, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["title"] for r in rows] == ["Alpha", "", "Beta"]
    out = io.StringIO()
    write_tracklist(tl, out, fmt="txt")
    assert "00:00 Ann - Alpha" in out.getvalue() and "01:06 Beta" in out.getvalue()
    out = io.StringIO()
    write_tracklist(tl, out, fmt="json")
    assert json.loads(out.getvalue())["segments"][2]["track"]["title"] == "Beta"


def test_cue_frames() -> None:
    assert cue_index(0) == "00:00:00"
    assert cue_index(61.5) == "01:01:38"
    assert cue_index(3600) == "60:00:00"
