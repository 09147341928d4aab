"""The live view renders from a snapshot alone (rich, captured console)."""

from __future__ import annotations

from rich.console import Console

from synesthete.clients.tui import LiveSnapshot, apply_event, render
from synesthete.events import (
    Candidates,
    CandidateScore,
    NowPlaying,
    SoundsLike,
    Status,
    TrackInfo,
    Unknown,
)

TRACK = TrackInfo(
    id=3,
    path="/music/a.flac",
    title="Glass Harbor",
    artist="Demo Ensemble 2",
    album="Synesthete Demo",
    duration_s=185.0,
)
OTHER = TrackInfo(id=4, path="/music/b.flac", title="Iron Meadow", artist=None)


def text_of(snapshot: LiveSnapshot, *, width: int = 100, height: int = 60) -> str:
    console = Console(
        width=width, height=height, color_system=None, record=True, force_terminal=False
    )
    console.print(render(snapshot))
    return console.export_text()


def test_idle_view_says_listening() -> None:
    text = text_of(LiveSnapshot(source="mic"))
    assert "listening" in text
    assert "mic" in text


def test_now_playing_candidates_and_health() -> None:
    snap = LiveSnapshot(source="set.wav")
    snap = apply_event(
        snap,
        NowPlaying(
            file="set.wav", t=12.0, track=TRACK, offset_s=65.5, confidence=0.87, tempo_ratio=1.04
        ),
    )
    snap = apply_event(
        snap,
        Candidates(
            file="set.wav",
            t=12.0,
            candidates=(
                CandidateScore(
                    track=TRACK, frechet=0.081, min_p2p=0.052, offset_s=65.5, confidence=0.87
                ),
                CandidateScore(
                    track=OTHER, frechet=0.74, min_p2p=0.61, offset_s=10.0, confidence=0.02
                ),
            ),
        ),
    )
    snap = apply_event(
        snap, Status(file="set.wav", t=12.5, level_dbfs=-12.0, xruns=2, latency_ms=4.2, clients=3)
    )
    text = text_of(snap)
    for expected in (
        "Glass Harbor — Demo Ensemble 2",
        "0.87",
        "1:05 / 3:05",
        "+4.0 %",
        "Iron Meadow",
        "0.081",
        "0.052",
        "-12.0 dBFS",
        "4.2 ms/window",
        "xruns",
        "2",
        "clients",
        "3",
    ):
        assert expected in text, expected
    assert "▶ Glass Harbor" in text


def test_unknown_clears_now_playing_and_logs() -> None:
    snap = apply_event(
        LiveSnapshot(source="x"),
        NowPlaying(file="x", t=4.0, track=TRACK, offset_s=8.0, confidence=0.9),
    )
    snap = apply_event(snap, Unknown(file="x", t=10.0, reason="lost"))
    text = text_of(snap)
    assert snap.now_playing is None
    assert "unknown (lost)" in text
    assert "listening" in text


def test_input_faults_are_shown_and_cleared() -> None:
    snap = apply_event(
        LiveSnapshot(source="USB Audio"),
        Status(
            file="USB Audio",
            t=30.0,
            level_dbfs=-0.1,
            xruns=3,
            clipped_samples=1234,
            overrun_frames=512,
            nonfinite_samples=40,
            flags=("xrun", "clipping", "nonfinite"),
        ),
    )
    text = text_of(snap)
    assert "● ok" in text
    for expected in ("3 OVERFLOW", "1234 CLIPPING", "512", "40 NaN/inf → 0"):
        assert expected in text, expected
    assert "frames LOST" not in text  # counted, but not in this interval

    snap = apply_event(
        snap,
        Status(
            file="USB Audio",
            t=31.0,
            input_state="lost",
            reconnect_attempts=2,
            input_error="audio device [3] USB Audio (ALSA) stopped delivering audio",
            give_up_in_s=41.6,
            message="reconnect attempt 2 failed: not present",
        ),
    )
    text = text_of(snap)
    assert "LOST: audio device [3] USB Audio (ALSA) stopped" in text
    assert "(reconnecting, attempt 2, giving up in 42 s)" in text
    assert "reconnect attempt 2 failed: not present" in text
    assert "CLIPPING" not in text  # flags are per interval

    snap = apply_event(snap, Status(file="USB Audio", t=31.0, message="input back after 3.0 s"))
    text = text_of(snap)
    assert "● ok" in text and "LOST" not in text
    assert "input back after 3.0 s" in text


LONG = TrackInfo(
    id=7,
    path="/music/suite.flac",
    title="A Remarkably Long Title of a Progressive Rock Suite, Part Two",
    artist="The Demo Ensemble with a Long Name",
    album="Synesthete Demo",
    duration_s=192.0,
)


def busy_snapshot() -> LiveSnapshot:
    """Every panel full: a long title, five candidates and five similar tracks, a log."""
    snap = LiveSnapshot(
        source="USB Audio", server="ws://127.0.0.1:8765/  overlay: http://127.0.0.1:8765/overlay"
    )
    for k in range(8):
        snap = apply_event(
            snap, NowPlaying(file="x", t=10.0 + k, track=OTHER, offset_s=5.0, confidence=0.8)
        )
        snap = apply_event(snap, Unknown(file="x", t=10.5 + k, reason="lost"))
    snap = apply_event(
        snap,
        NowPlaying(file="x", t=20.0, track=LONG, offset_s=47.0, confidence=0.87, tempo_ratio=1.04),
    )
    scores = tuple(
        CandidateScore(track=t, frechet=0.08 + k / 10, min_p2p=0.05, offset_s=47.0, confidence=0.8)
        for k, t in enumerate((LONG, OTHER, TRACK, OTHER, TRACK))
    )
    snap = apply_event(snap, Candidates(file="x", t=20.0, candidates=scores))
    snap = apply_event(
        snap,
        SoundsLike(
            file="x",
            t=20.0,
            tracks=tuple(
                (t, 0.2 + k / 10) for k, t in enumerate((OTHER, TRACK, OTHER, TRACK, OTHER))
            ),
        ),
    )
    return apply_event(
        snap, Status(file="x", t=20.0, level_dbfs=-12.0, xruns=2, latency_ms=4.2, clients=3)
    )


def test_an_80x24_terminal_gets_every_panel_and_no_wrapped_names() -> None:
    text = text_of(busy_snapshot(), width=80, height=24)
    lines = text.splitlines()
    assert len(lines) <= 23, text  # a spare row: a full-height view scrolls on each redraw
    for panel in ("now playing", "candidates", "status", "events"):
        assert any(panel in line and line.startswith("╭") for line in lines), (panel, text)
    assert lines[-1].startswith("╰"), text
    # Each row is one line of its box: nothing wrapped onto a continuation line.
    assert all(line[:1] in "╭│╰" and len(line) == 80 for line in lines), text
    assert "A Remarkably Long Title" in text and "…" in text
    assert "Progressive Rock Suite, Part Two — The Demo Ensemble with a Long Name" not in text
    for expected in ("0.87", "position 0:47 / 3:12", "tempo +4.0 %", "sounds like", "xruns 2"):
        assert expected in text, (expected, text)
    assert "4.2 ms/window" in text and "clients 3" in text
    assert "▶ A Remarkably Long Title" in text  # the latest event, at least


def test_a_160x45_terminal_gets_the_full_layout() -> None:
    text = text_of(busy_snapshot(), width=160, height=45)
    lines = text.splitlines()
    assert len(lines) <= 44
    for panel in ("now playing", "candidates", "sounds like", "status", "events"):
        assert any(panel in line and line.startswith("╭") for line in lines), (panel, text)
    assert f"{LONG.title} — {LONG.artist}" in text  # room enough: not cut
    assert "album" in text and "Synesthete Demo" in text
    candidate_rows = [line for line in lines if line.startswith("│") and "0:47 │" in line]
    assert len(candidate_rows) == 5
    assert sum("▶" in line or "■" in line for line in lines) == 6


def test_what_a_stream_says_is_shown_apart_from_the_identification() -> None:
    from synesthete.events import StreamMetadata

    snap = LiveSnapshot(source="http://***@radio.example/live.mp3")
    said = StreamMetadata(
        file=snap.source, t=3.0, title="Some DJ - Live Mix", origin="icy", fields=()
    )
    snap = apply_event(snap, said)
    for width, height in ((160, 45), (80, 24)):
        text = text_of(snap, width=width, height=height)
        assert "♪ Some DJ - Live Mix" in text, text
        assert "listening… (no match)" in text  # the broadcaster's word is not an answer
    assert snap.now_playing is None
    assert any("stream says: Some DJ - Live Mix" in line for line in snap.log)
    snap = apply_event(
        snap, StreamMetadata(file=snap.source, t=9.0, title="Next", artist="Band", origin="id3")
    )
    assert "♪ Next — Band" in text_of(snap, width=160, height=45)
