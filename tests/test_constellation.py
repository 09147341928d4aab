"""Spectral-peak constellations: extraction, storage in the index, and the matcher's peak check.

Real parts throughout: the synthesizer's tracks, the index the CLI built (sqlite, Annoy),
the packaged encoder and the real recognizer.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import DemoLibrary

from synesthete.clients.app import Engine, matcher_config_for, open_engine
from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.index import constellation as cn
from synesthete.index.builder import add_to_index, index_stats, remove_from_index
from synesthete.index.config import MatcherConfig
from synesthete.index.store import GenerationWriter, Library, TrackRecord
from synesthete.inference.config import EncoderConfig
from synesthete.inference.torchscript import TorchScriptEncoder
from synesthete.stream.synth import pink_noise, synth_track
from synesthete.stream.windowing import RecentAudio, Window


def _at_16k(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    return soxr.resample(audio, rate_hz, SAMPLE_RATE_HZ).astype(np.float32)


def test_streamed_peaks_agree_with_one_pass_and_keep_the_per_second_cap() -> None:
    audio = _at_16k(synth_track(seed=5, duration_s=75.0, sample_rate_hz=22_050), 22_050)
    whole = cn.spectral_peaks(audio)
    stream = cn.PeakStream()
    for start in range(0, audio.shape[0], 7_777):  # blocks that never line up with a chunk
        stream.push(audio[start : start + 7_777])
    streamed = stream.finish()
    assert streamed.shape[0] > 40 * 75 * 0.1  # music: plenty of peaks
    same = {tuple(p) for p in whole.tolist()} & {tuple(p) for p in streamed.tolist()}
    # Each 30 s chunk judges loudness against its own median: a few peaks near the floor
    # differ, nothing else.
    assert len(same) >= 0.97 * max(whole.shape[0], streamed.shape[0])
    per_second = np.bincount(streamed[:, 0] // cn.FRAMES_PER_S)
    assert per_second.max() <= cn.PEAKS_PER_S
    assert np.all(np.diff(streamed[:, 0]) >= 0)
    assert streamed[:, 1].min() >= cn.LOW_BIN and streamed[:, 1].max() < cn.HIGH_BIN


def test_silence_and_short_audio_have_no_peaks() -> None:
    assert cn.spectral_peaks(np.zeros(SAMPLE_RATE_HZ * 3, dtype=np.float32)).shape == (0, 2)
    assert cn.spectral_peaks(np.zeros(100, dtype=np.float32)).shape == (0, 2)
    stream = cn.PeakStream()
    assert stream.finish().shape == (0, 2)
    none = cn.empty_peaks()
    assert cn.match_peaks(none, none, offset_frames=0, search_frames=5).z == 0


def test_a_noisy_excerpt_lands_on_its_own_track_and_not_on_another_piece() -> None:
    rate = 22_050
    track = _at_16k(synth_track(seed=3, duration_s=60.0, sample_rate_hz=rate), rate)
    other = _at_16k(synth_track(seed=4, duration_s=60.0, sample_rate_hz=rate), rate)
    stored, stored_other = cn.spectral_peaks(track), cn.spectral_peaks(other)
    start_s = 23.3
    clip = track[int(start_s * SAMPLE_RATE_HZ) : int((start_s + 8.0) * SAMPLE_RATE_HZ)]
    noise = pink_noise(seconds=8.0, sample_rate_hz=SAMPLE_RATE_HZ, seed=1)[: clip.shape[0]]
    noisy = clip + noise * (np.std(clip) / np.std(noise))  # 0 dB
    live = cn.spectral_peaks(noisy)
    guess = cn.frames_of(start_s - 0.9)  # the path's position is off by most of a second
    own = cn.match_peaks(live, stored, offset_frames=guess, search_frames=cn.frames_of(1.5))
    assert abs(own.offset_frames - cn.frames_of(start_s)) <= 1
    assert own.z >= 8.5
    stranger = cn.match_peaks(
        live, stored_other, offset_frames=guess, search_frames=cn.frames_of(1.5)
    )
    assert stranger.z < own.z / 2


def test_held_notes_keep_only_the_peak_where_they_start() -> None:
    peaks = np.array(
        [[0, 50], [5, 50], [11, 51], [30, 50], [31, 200], [36, 203], [40, 200]], dtype=np.int32
    )
    kept = cn.drop_held(peaks, gap_frames=12)
    # 5 and 11 continue the note begun at 0 (11 a bin up from 5); 30 comes 19 frames
    # after the last of them, a new onset; 36 is three bins away from 31, a note of its
    # own; 40 continues 31.
    assert kept.tolist() == [[0, 50], [30, 50], [31, 200], [36, 203]]
    assert cn.drop_held(cn.empty_peaks()).shape == (0, 2)


def test_a_pitch_that_lands_at_every_alignment_neither_helps_nor_hides_a_match() -> None:
    rng = np.random.default_rng(0)
    stored = np.stack([np.sort(rng.integers(0, 3_000, 600)), rng.integers(8, 330, 600)], 1)
    start = 1_000
    own = stored[(stored[:, 0] >= start) & (stored[:, 0] < start + 400)].copy()
    own[:, 0] -= start
    live = own[rng.random(own.shape[0]) < 0.4]  # most peaks lost to noise
    drone = np.stack([np.arange(0, 3_000), np.full(3_000, 100)], 1)  # one pitch throughout
    with_drone = np.concatenate([live, drone[:400]])
    search = cn.frames_of(1.5)
    plain = cn.match_peaks(live, stored, offset_frames=start + 20, search_frames=search)
    droned = cn.match_peaks(
        with_drone,
        np.concatenate([stored, drone]),
        offset_frames=start + 20,
        search_frames=search,
    )
    assert abs(plain.offset_frames - start) <= cn.TOLERANCE
    assert abs(droned.offset_frames - start) <= cn.TOLERANCE
    assert droned.hits == plain.hits + 400
    assert droned.z == pytest.approx(plain.z, rel=0.01)
    assert plain.z > 8.0


def test_a_speed_variants_peaks_are_the_stored_ones_scaled() -> None:
    rate = 22_050
    audio = _at_16k(synth_track(seed=6, duration_s=30.0, sample_rate_hz=rate), rate)
    # Played 6 % fast: shorter and higher, as the index's speed copies are.
    fast = soxr.resample(audio, SAMPLE_RATE_HZ * 1.06, SAMPLE_RATE_HZ).astype(np.float32)
    scaled = cn.at_speed(cn.spectral_peaks(audio), 1.06)
    live = cn.spectral_peaks(fast[5 * SAMPLE_RATE_HZ : 11 * SAMPLE_RATE_HZ])
    m = cn.match_peaks(
        live, scaled, offset_frames=cn.frames_of(5.0), search_frames=cn.frames_of(0.5)
    )
    assert abs(m.offset_frames - cn.frames_of(5.0)) <= 1
    assert m.hits >= 0.5 * m.live_peaks


def test_a_calibration_sets_the_peak_check_or_turns_it_off() -> None:
    default = matcher_config_for({}, index_hop_s=0.5).verify_min_z
    assert default is not None
    assert matcher_config_for({"verify_min_z": 9.0}, index_hop_s=0.5).verify_min_z == 9.0
    assert matcher_config_for({"verify_min_z": None}, index_hop_s=0.5).verify_min_z is None


def test_peak_bytes_round_trip_and_refuse_a_torn_row() -> None:
    peaks = np.array([[0, 10], [3, 300], [90_000, 12]], dtype=np.int32)
    assert np.array_equal(cn.from_bytes(cn.to_bytes(peaks)), peaks)
    with pytest.raises(ValueError):
        cn.from_bytes(cn.to_bytes(peaks)[:-2])


def test_recent_audio_joins_overlapping_windows_and_restarts_after_a_gap() -> None:
    recent = RecentAudio(seconds=8.0)
    stream = np.arange(20 * SAMPLE_RATE_HZ, dtype=np.float32)
    window_n = 4 * SAMPLE_RATE_HZ
    for start_s in (0, 2, 4, 6):
        start = start_s * SAMPLE_RATE_HZ
        got = recent.push(
            Window(index=0, start_sample=start, samples=stream[start : start + window_n])
        )
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
            expected = cn.spectral_peaks(_at_16k(demo_library.audio(n), demo_library.rate_hz))
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
        opened,
        replace(
            matcher,
            max_frechet=1e-6,
            verify_max_distance=matcher.max_frechet,
            verify_min_z=8.5,
        ),
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


def test_add_and_remove_carry_the_constellations_and_stats_count_them(
    demo_library: DemoLibrary, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(demo_library.index, index)
    new = tmp_path / "new.flac"
    sf.write(new, synth_track(seed=77, duration_s=20.0, sample_rate_hz=22_050), 22_050)
    encoder = TorchScriptEncoder(config=EncoderConfig())
    report = add_to_index(index, [new], encoder=encoder)
    assert report.indexed
    stats = index_stats(index)
    assert stats["tracks_with_peaks"] == len(demo_library.titles) + 1
    assert "peak_check" not in stats
    with Library.open(index) as lib:
        added = next(i for i in lib.tracks() if i.path == str(new))
        stored = lib.peaks(added.id)
        assert stored is not None and stored.shape[0] > 100
        first = min(i.id for i in lib.tracks())
    remove_from_index(index, [str(first)])
    with Library.open(index) as lib:
        assert lib.tracks_with_peaks() == len(demo_library.titles)
        assert np.array_equal(lib.peaks(added.id), stored)


def test_stats_say_an_index_without_constellations_needs_a_rebuild(tmp_path: Path) -> None:
    with GenerationWriter(index_dir=tmp_path / "old", dim=8) as writer:
        for track_id in (1, 2):
            rows = np.random.default_rng(track_id).normal(size=(12, 8)).astype(np.float32)
            record = TrackRecord(
                id=track_id, path=f"/music/{track_id}.flac", title=str(track_id), artist=None,
                album=None, duration_s=9.5, content_hash=f"h{track_id}", window_start=0,
                window_count=0, added="2026-12-07T00:00:00+00:00",
            )  # fmt: skip
            writer.add_track(record, rows / np.linalg.norm(rows, axis=1, keepdims=True))
        writer.commit(meta={"encoder_name": "walk-v1", "index_hop_s": "0.5"}, n_trees=2, seed=1)
    stats = index_stats(tmp_path / "old")
    assert stats["tracks_with_peaks"] == 0
    assert "index build" in stats["peak_check"]
    with Library.open(tmp_path / "old") as lib:
        assert lib.peaks(1) is None
