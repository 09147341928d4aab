"""Tempo and position on real audio (issue 16, item 3).

A live set of library tracks with crossfades, at their own speed and at ±6 %
(turntable speed, tempo and pitch together, and key-locked tempo), goes through
the real recognizer: the TorchScript encoder, the Annoy index built by
``synesthete index build`` and the matcher, on a virtual clock
(``identify_file``). The demo showed ``tempo_ratio`` 0.81-1.16 at normal
speed and offsets that jumped back by half a minute; here the reported tempo
stays near the truth and the position moves forward with the music.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from conftest import DemoLibrary

from synesthete.clients.app import Engine, open_engine
from synesthete.clients.identify import identify_file
from synesthete.events import NowPlaying
from synesthete.inference import augment

PIECE_S = 24.0
FADE_S = 3.0
WINDOW_S = 4.0
SETTLE_WINDOWS = 4
"""A path's slope is a tempo from its 4th matched window on (before, the matcher reports
the speed of the library curve it follows), and the first of those may be fade-in windows,
whose best-fitting track window leans toward the end where the track is louder."""
TEMPO_TOLERANCE = 0.04
OFFSET_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class Piece:
    track: int
    start_s: float
    factor: float = 1.0
    key_lock: bool = False


@dataclass(frozen=True)
class Played:
    """One piece in the rendered set: where it sits, and its true position in the track."""

    piece: Piece
    set_start_s: float
    set_end_s: float

    def position_at(self, t: float) -> float:
        return self.piece.start_s + (t - self.set_start_s) * self.piece.factor


@pytest.fixture(scope="module")
def engine(demo_library: DemoLibrary) -> Iterator[Engine]:
    opened = open_engine(index_dir=demo_library.index)
    try:
        yield opened
    finally:
        opened.close()


def render_set(library: DemoLibrary, pieces: list[Piece], path: Path) -> tuple[Path, list[Played]]:
    """The pieces back to back with equal-power crossfades, as a DJ would play them."""
    rate = library.rate_hz
    clips: list[npt.NDArray[np.float32]] = []
    for piece in pieces:
        audio = library.audio(piece.track)
        begin = int(piece.start_s * rate)
        source = audio[begin : begin + int(PIECE_S * piece.factor * rate) + rate]
        change = augment.tempo if piece.key_lock else augment.speed
        clips.append(
            change(source, sample_rate_hz=rate, factor=piece.factor)[: int(PIECE_S * rate)]
        )
    fade = int(FADE_S * rate)
    ramp = np.sin(np.linspace(0.0, np.pi / 2.0, fade, dtype=np.float32))
    mix = clips[0]
    starts = [0.0]
    for clip in clips[1:]:
        starts.append((mix.shape[0] - fade) / rate)
        head = mix[-fade:] * ramp[::-1] + clip[:fade] * ramp
        mix = np.concatenate([mix[:-fade], head, clip[fade:]])
    sf.write(path, mix, rate, subtype="FLOAT")
    played = [
        Played(piece=p, set_start_s=s, set_end_s=s + PIECE_S)
        for p, s in zip(pieces, starts, strict=True)
    ]
    return path, played


def now_playing(engine: Engine, path: Path) -> list[NowPlaying]:
    return [e for e in identify_file(engine, str(path)) if isinstance(e, NowPlaying)]


def check_set(engine: Engine, library: DemoLibrary, pieces: list[Piece], path: Path) -> None:
    wav, played = render_set(library, pieces, path)
    events = now_playing(engine, wav)
    titles = library.titles
    for n, item in enumerate(played):
        title = titles[item.piece.track]
        # Windows that hold this piece alone (not the crossfades at either end).
        alone_from = item.set_start_s + (FADE_S if n > 0 else 0.0) + WINDOW_S
        alone_to = item.set_end_s - (FADE_S if n < len(played) - 1 else 0.0)
        alone = [e for e in events if alone_from <= e.t <= alone_to and e.state == "playing"]
        assert alone and all(e.track.title == title for e in alone), (item, alone)
        settled = [e for e in alone if e.t >= alone_from + SETTLE_WINDOWS * 2.0]
        assert settled, item
        for e in settled:
            assert abs(e.tempo_ratio - item.piece.factor) <= TEMPO_TOLERANCE, (item, e)
            assert abs(e.offset_s - item.position_at(e.t)) <= OFFSET_TOLERANCE_S, (item, e)
        for e in alone:
            # No tempo outside what the matcher covers, even before the path settles.
            assert abs(e.tempo_ratio - item.piece.factor) <= 0.12, (item, e)
    # Within one identification the position only moves forward, crossfades included.
    runs: list[list[NowPlaying]] = []
    for e in events:
        if runs and runs[-1][-1].track.id == e.track.id:
            runs[-1].append(e)
        else:
            runs.append([e])
    for run in runs:
        settled_run = run[SETTLE_WINDOWS:]
        offsets = [e.offset_s for e in settled_run]
        assert offsets == sorted(offsets), [(e.t, e.offset_s) for e in run]


def test_a_set_at_its_own_speed_reports_tempo_one_and_advancing_offsets(
    engine: Engine, demo_library: DemoLibrary, tmp_path: Path
) -> None:
    pieces = [
        Piece(track=1, start_s=1.0),
        Piece(track=3, start_s=4.0),
        Piece(track=0, start_s=6.0),
        Piece(track=6, start_s=8.0),
        Piece(track=7, start_s=6.0),
    ]
    check_set(engine, demo_library, pieces, tmp_path / "set.wav")


@pytest.mark.parametrize(
    "key_lock",
    [pytest.param(False, id="speed"), pytest.param(True, id="key-lock")],
)
def test_a_set_at_six_percent_off_reports_that_tempo(
    engine: Engine, demo_library: DemoLibrary, tmp_path: Path, key_lock: bool
) -> None:
    pieces = [
        Piece(track=2, start_s=4.0, factor=1.06, key_lock=key_lock),
        Piece(track=5, start_s=2.0, factor=0.94, key_lock=key_lock),
        Piece(track=7, start_s=8.0, factor=1.06, key_lock=key_lock),
    ]
    check_set(engine, demo_library, pieces, tmp_path / "set.wav")
