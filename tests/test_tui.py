"""The live view renders from a snapshot alone (rich, captured console)."""

from __future__ import annotations

from rich.console import Console

from synesthete.clients.tui import LiveSnapshot, apply_event, render
from synesthete.events import (
    Candidates,
    CandidateScore,
    NowPlaying,
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


def text_of(snapshot: LiveSnapshot) -> str:
    console = Console(width=100, color_system=None, record=True, force_terminal=False)
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
