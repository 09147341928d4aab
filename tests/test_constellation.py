"""Spectral-peak constellations: extraction, storage in the index, and the matcher's peak check.

Real parts throughout: the synthesizer's tracks, the index the CLI built (sqlite, Annoy),
the packaged encoder and the real recognizer.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soxr

from conftest import DemoLibrary
from synesthete.clients.app import Engine, open_engine
from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.index import constellation as C
from synesthete.index.config import MatcherConfig
from synesthete.index.store import Library
from synesthete.stream.synth import pink_noise, synth_track
from synesthete.stream.windowing import RecentAudio, Window


def _at_16k(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    return soxr.resample(audio, rate_hz, SAMPLE_RATE_HZ).astype(np.float32)


def test_streamed_peaks_agree_with_one_pass_and_keep_the_per_second_cap() -> None:
    audio = _at_16k(synth_track(seed=5, duration_s=75.0, sample_rate_hz=22_050), 22_050)
    whole = C.spectral_peaks(audio)
    stream = C.PeakStream()
    for start in range(0, audio.shape[0], 7_777):  # blocks that never line up with a chunk
        stream.push(audio[start : start + 7_777])
    streamed = stream.finish()
    assert streamed.shape[0] > 40 * 75 * 0.1  # music: plenty of peaks
    same = {tuple(p) for p in whole.tolist()} & {tuple(p) for p in streamed.tolist()}
    # Each 30 s chunk judges loudness against its own median: a few peaks near the floor
    # differ, nothing else.
    assert len(same) >= 0.97 * max(whole.shape[0], streamed.shape[0])
    per_second = np.bincount(streamed[:, 0] // C.FRAMES_PER_S)
    assert per_second.max() <= C.PEAKS_PER_S
    assert np.all(np.diff(streamed[:, 0]) >= 0)
    assert streamed[:, 1].min() >= C.LOW_BIN and streamed[:, 1].max() < C.HIGH_BIN


def test_silence_and_short_audio_have_no_peaks() -> None:
    assert C.spectral_peaks(np.zeros(SAMPLE_RATE_HZ * 3, dtype=np.float32)).shape == (0, 2)
    assert C.spectral_peaks(np.zeros(100, dtype=np.float32)).shape == (0, 2)
    stream = C.PeakStream()
    assert stream.finish().shape == (0, 2)
    assert C.match_peaks(C.empty_peaks(), C.empty_peaks(), offset_frames=0, search_frames=5).z == 0


def test_a_noisy_excerpt_lands_on_its_own_track_and_not_on_another_piece() -> None:
    rate = 22_050
    track = _at_16k(synth_track(seed=3, duration_s=60.0, sample_rate_hz=rate), rate)
    other = _at_16k(synth_track(seed=4, duration_s=60.0, sample_rate_hz=rate), rate)
    stored, stored_other = C.spectral_peaks(track), C.spectral_peaks(other)
    start_s = 23.3
    clip = track[int(start_s * SAMPLE_RATE_HZ) : int((start_s + 8.0) * SAMPLE_RATE_HZ)]
    noise = pink_noise(seconds=8.0, sample_rate_hz=SAMPLE_RATE_HZ, seed=1)[: clip.shape[0]]
    noisy = clip + noise * (np.std(clip) / np.std(noise))  # 0 dB
    live = C.spectral_peaks(noisy)
    guess = C.frames_of(start_s - 0.9)  # the path's position is off by most of a second
    own = C.match_peaks(live, stored, offset_frames=guess, search_frames=C.frames_of(1.5))
    assert abs(own.offset_frames - C.frames_of(start_s)) <= 1
    assert own.z >= 8.5
    stranger = C.match_peaks(
        live, stored_other, offset_frames=guess, search_frames=C.frames_of(1.5)
    )
    assert stranger.z < own.z / 2


def test_a_speed_variants_peaks_are_the_stored_ones_scaled() -> None:
    rate = 22_050
    audio = _at_16k(synth_track(seed=6, duration_s=30.0, sample_rate_hz=rate), rate)
    # Played 6 % fast: shorter and higher, as the index's speed copies are.
    fast = soxr.resample(audio, SAMPLE_RATE_HZ * 1.06, SAMPLE_RATE_HZ).astype(np.float32)
    scaled = C.at_speed(C.spectral_peaks(audio), 1.06)
    live = C.spectral_peaks(fast[5 * SAMPLE_RATE_HZ : 11 * SAMPLE_RATE_HZ])
    m = C.match_peaks(
        live, scaled, offset_frames=C.frames_of(5.0), search_frames=C.frames_of(0.5)
    )
    assert abs(m.offset_frames - C.frames_of(5.0)) <= 1
    assert m.hits >= 0.5 * m.live_peaks


def test_peak_bytes_round_trip_and_refuse_a_torn_row() -> None:
    peaks = np.array([[0, 10], [3, 300], [90_000, 12]], dtype=np.int32)
    assert np.array_equal(C.from_bytes(C.to_bytes(peaks)), peaks)
    with pytest.raises(ValueError):
        C.from_bytes(C.to_bytes(peaks)[:-4])


def test_recent_audio_joins_overlapping_windows_and_restarts_after_a_gap() -> None:
    recent = RecentAudio(seconds=8.0)
    stream = np.arange(20 * SAMPLE_RATE_HZ, dtype=np.float32)
    window_n = 4 * SAMPLE_RATE_HZ
    for start_s in (0, 2, 4, 6):
        start = start_s * SAMPLE_RATE_HZ
        got = recent.push(Window(index=0, start_sample=start, samples=stream[start : start + window_n]))
    assert np.array_equal(got, stream[2 * SAMPLE_RATE_HZ : 10 * SAMPLE_RATE_HZ])
    start = 14 * SAMPLE_RATE_HZ  # windows 10-14 s never came
    got = recent.push(Window(index=0, start_sample=start, samples=stream[start : start + window_n]))
    assert np.array_equal(got, stream[start : start + window_n])


def test_the_index_stores_every_tracks_constellation(demo_library: DemoLibrary) -> None:
    with Library.open(demo_library.index) as lib:
        for info in lib.tracks():
            n = int(Path(info.path).stem)
            stored = lib.peaks(info.id)
            assert stored is not None
            expected = C.spectral_peaks(_at_16k(demo_library.audio(n), demo_library.rate_hz))
            same = {tuple(p) for p in stored.tolist()} & {tuple(p) for p in expected.tolist()}
            # The build decodes the FLAC (16-bit) and resamples as it streams.
            assert len(same) >= 0.8 * expected.shape[0]
        database = demo_library.index / lib.generation / "library.sqlite"
    with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as connection:
        (count,) = connection.execute("SELECT count(*) FROM peaks").fetchone()
    assert count == len(demo_library.titles)


def _play(engine: Engine, audio: np.ndarray, rate: int) -> list[tuple[int, float, float]]:
    rec = engine.recognizer(stream="peaks", input_rate_hz=rate)
    named = []
    for start in range(0, audio.shape[0], rate // 2):
        for event in rec.push(audio[start : start + rate // 2].astype(np.float32)):
            if event.type == "now_playing":
                named.append((event.track.id, event.offset_s, event.confidence))  # type: ignore[attr-defined]
    return named


def _with_matcher(engine: Engine, matcher: MatcherConfig) -> Engine:
    return replace(engine, config=replace(engine.config, matcher=matcher))


def test_the_peak_check_names_what_the_distance_alone_will_not(
    demo_library: DemoLibrary,
) -> None:
    """With naming by distance made impossible (a distance guard no track is within),
    only the peak check can name a track: it names a noisy excerpt right, at the right
    place, and a piece outside the library not at all; without it nothing is named."""
    rate = demo_library.rate_hz
    opened = open_engine(index_dir=demo_library.index)
    matcher = opened.config.matcher
    engine = _with_matcher(
        opened, replace(matcher, max_frechet=1e-6, verify_max_distance=matcher.max_frechet)
    )
    try:
        by_path = {int(Path(i.path).stem): i.id for i in engine.library.tracks()}
        start_s = 11.0
        clip = demo_library.audio(2)[int(start_s * rate) : int((start_s + 12.0) * rate)]
        noise = pink_noise(seconds=12.0, sample_rate_hz=rate, seed=7)[: clip.shape[0]]
        noisy = clip + 0.5 * noise * (np.std(clip) / np.std(noise))  # 6 dB
        named = _play(engine, noisy, rate)
        assert named, "the peak check named nothing"
        track_id, offset_s, confidence = named[0]
        assert track_id == by_path[2]
        assert confidence >= matcher.on_threshold
        assert abs(offset_s - (start_s + 4.0)) <= 1.0  # the first window ends 4 s in
        stranger = synth_track(seed=10_000, duration_s=16.0, sample_rate_hz=rate)
        assert _play(engine, stranger, rate) == []

        off = _with_matcher(engine, replace(engine.config.matcher, verify_min_z=None))
        assert _play(off, noisy, rate) == []
    finally:
        engine.close()
