"""Degradations: measured back on synthetic signals (sines, bursts, seeded noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synesthete.errors import AudioFormatError, ConfigError
from synesthete.inference import augment
from synesthete.inference.augment import (
    CONDITIONS,
    LAPTOP_BAND_HZ,
    PHONE_BAND_HZ,
    Materials,
    add_noise_at_snr,
    babble_at_snr,
    band_limit,
    codec,
    codec_available,
    crossfade_mix,
    eq_and_gain,
    limit_peak,
    pink_noise_at_snr,
    pitch_shift,
    room,
    source_seconds_needed,
    speed,
    tempo,
    track_position,
)
from synesthete.stream.synth import synth_track

RATE = 16_000


def sine(freq_hz: float, seconds: float = 4.0, rate: int = RATE, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def noise(seconds: float, seed: int, rate: int = RATE, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(round(seconds * rate))).astype(
        np.float32
    )


def dominant_hz(audio: np.ndarray, rate: int = RATE) -> float:
    """Peak of the Hann-windowed spectrum, refined by a parabola through log magnitudes."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0]), 8 * audio.shape[0]))
    k = int(np.argmax(spectrum))
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-20)
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + shift) * rate / (8 * audio.shape[0])


def snr_db(signal: np.ndarray, added: np.ndarray) -> float:
    s = np.mean(signal.astype(np.float64) ** 2)
    n = np.mean(added.astype(np.float64) ** 2)
    return 10 * math.log10(s / n)


def burst_at(seconds: float, at_s: float, rate: int = RATE) -> np.ndarray:
    """Silence with a 20 ms noise burst starting at ``at_s``."""
    audio = np.zeros(round(seconds * rate), dtype=np.float32)
    start = round(at_s * rate)
    audio[start : start + rate // 50] = noise(0.02, seed=9, rate=rate, amp=0.5)
    return audio


def onset_s(audio: np.ndarray, rate: int = RATE) -> float:
    envelope = np.abs(audio)
    return float(np.argmax(envelope > 0.2 * envelope.max())) / rate


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("target_db", [-5.0, 0.0, 5.0, 10.0, 30.0])
@pytest.mark.parametrize("noise_seconds", [1.3, 3.0, 7.0])  # looped, exact, cropped
def test_add_noise_at_snr_measures_back(target_db: float, noise_seconds: float) -> None:
    audio = sine(440.0, seconds=3.0, amp=0.3)
    out = add_noise_at_snr(audio, noise(noise_seconds, seed=1), snr_db=target_db, rng=0)
    assert out.dtype == np.float32
    assert out.shape == audio.shape
    assert snr_db(audio, out - audio) == pytest.approx(target_db, abs=0.2)


def test_pink_noise_default_is_5_db() -> None:
    audio = synth_track(seed=1, duration_s=4.0, sample_rate_hz=RATE) * np.float32(0.5)
    out = pink_noise_at_snr(audio, sample_rate_hz=RATE, rng=3)
    assert snr_db(audio, out - audio) == pytest.approx(5.0, abs=0.2)


def test_babble_with_speech_and_ambience_measures_back() -> None:
    audio = synth_track(seed=2, duration_s=5.0, sample_rate_hz=RATE) * np.float32(0.3)
    speech = [sine(180.0 + 40 * k, seconds=0.7 + 0.3 * k) * np.float32(0.2) for k in range(4)]
    ambience = [noise(2.5, seed=5)]
    out = babble_at_snr(
        audio, sample_rate_hz=RATE, rng=4, speech_clips=speech, ambience=ambience, snr_db=0.0
    )
    assert snr_db(audio, out - audio) == pytest.approx(0.0, abs=0.2)
    synthetic = babble_at_snr(audio, sample_rate_hz=RATE, rng=4, snr_db=3.0)
    assert snr_db(audio, synthetic - audio) == pytest.approx(3.0, abs=0.2)


def test_silent_audio_has_no_snr() -> None:
    with pytest.raises(AudioFormatError, match="silent"):
        add_noise_at_snr(np.zeros(100, np.float32), noise(0.1, seed=0), snr_db=5.0, rng=0)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(100, dtype=np.float64),
        np.zeros((100, 2), dtype=np.float32),
        np.zeros(0, dtype=np.float32),
        np.full(100, np.nan, dtype=np.float32),
    ],
)
def test_bad_audio_is_rejected(bad: np.ndarray) -> None:
    with pytest.raises(AudioFormatError):
        speed(bad, sample_rate_hz=RATE, factor=1.04)


def test_limit_peak_only_scales_down() -> None:
    loud = sine(440.0, amp=3.0)
    quiet = sine(440.0, amp=0.2)
    assert np.max(np.abs(limit_peak(loud))) == pytest.approx(augment.PEAK_LIMIT, rel=1e-6)
    np.testing.assert_array_equal(limit_peak(quiet), quiet)


# --------------------------------------------------------------------------- time and pitch


@pytest.mark.parametrize("factor", [0.94, 0.96, 1.04, 1.06])
def test_speed_changes_length_and_pitch_together(factor: float) -> None:
    audio = sine(440.0)
    out = speed(audio, sample_rate_hz=RATE, factor=factor)
    assert out.shape[0] == pytest.approx(audio.shape[0] / factor, rel=0.01)
    assert dominant_hz(out) / 440.0 == pytest.approx(factor, rel=0.002)


@pytest.mark.parametrize("factor", [0.94, 1.06])
def test_tempo_keeps_pitch_and_changes_length(factor: float) -> None:
    audio = sine(440.0)
    out = tempo(audio, sample_rate_hz=RATE, factor=factor)
    assert out.shape[0] == pytest.approx(audio.shape[0] / factor, rel=0.01)
    assert dominant_hz(out) == pytest.approx(440.0, rel=0.01)
    # Steady level: no phasing dropouts in the middle of a stretched sine.
    middle = out[RATE // 2 : -RATE // 2]
    assert np.std(middle) == pytest.approx(np.std(audio), rel=0.05)


@pytest.mark.parametrize("semitones", [1.0, -1.0])
def test_pitch_shift_keeps_length_and_moves_frequency(semitones: float) -> None:
    audio = sine(440.0)
    out = pitch_shift(audio, sample_rate_hz=RATE, semitones=semitones)
    assert out.shape == audio.shape
    assert dominant_hz(out) / 440.0 == pytest.approx(2 ** (semitones / 12), rel=0.002)


@pytest.mark.parametrize(
    ("condition", "at_s"),
    [
        ("speed+6", 2.0),
        ("speed-4", 2.0),
        ("speed+8", 2.0),
        ("speed-8", 2.0),
        ("tempo+6", 2.0),
        ("tempo-6", 2.0),
        ("pitch+1", 2.0),
    ],
)
def test_time_mapping_matches_track_position(condition: str, at_s: float) -> None:
    """A burst at source time s is heard at query time t with track_position(t) = s."""
    audio = burst_at(4.0, at_s)
    out = CONDITIONS[condition](audio, sample_rate_hz=RATE, rng=0)
    heard_s = onset_s(out)
    assert track_position(condition, heard_s, 0.0) == pytest.approx(at_s, abs=0.02)


def test_source_seconds_and_positions() -> None:
    assert source_seconds_needed("speed+4", 12.0) == pytest.approx(12.48)
    assert source_seconds_needed("speed-8", 12.0) == pytest.approx(11.04)
    assert source_seconds_needed("tempo-6", 12.0) == pytest.approx(11.28)
    assert source_seconds_needed("pitch+1", 12.0) == pytest.approx(12.0)
    assert source_seconds_needed("clean", 12.0) == pytest.approx(12.0)
    assert track_position("speed-6", 10.0, 30.0) == pytest.approx(39.4)
    assert track_position("room", 10.0, 30.0) == pytest.approx(40.0)
    with pytest.raises(ConfigError, match="unknown condition"):
        source_seconds_needed("underwater", 12.0)


def test_condition_names() -> None:
    assert list(CONDITIONS) == [
        "clean",
        "pink5",
        "babble0",
        "room",
        "speed+4",
        "speed-4",
        "speed+6",
        "speed-6",
        "speed+8",
        "speed-8",
        "tempo+6",
        "tempo-6",
        "pitch+1",
        "pitch-1",
        "codec64",
    ]


# --------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("name", ["pink5", "babble0", "room"])
def test_random_conditions_are_reproducible(name: str) -> None:
    if name == "room":
        pytest.importorskip("pyroomacoustics")
    audio = synth_track(seed=5, duration_s=3.0, sample_rate_hz=RATE)
    materials = Materials(
        sample_rate_hz=RATE,
        speech=(sine(200.0, seconds=0.8), sine(150.0, seconds=1.1)),
        ambience=(noise(2.0, seed=8),),
    )
    condition = CONDITIONS[name]
    first = condition(audio, sample_rate_hz=RATE, rng=11, materials=materials)
    again = condition(
        audio, sample_rate_hz=RATE, rng=np.random.default_rng(11), materials=materials
    )
    other = condition(audio, sample_rate_hz=RATE, rng=12, materials=materials)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.max(np.abs(first)) <= augment.PEAK_LIMIT + 1e-6


def test_eq_and_gain_is_reproducible_and_shapes_tone() -> None:
    audio = noise(2.0, seed=3)
    first = eq_and_gain(audio, sample_rate_hz=RATE, rng=5, clip_probability=1.0)
    np.testing.assert_array_equal(
        first, eq_and_gain(audio, sample_rate_hz=RATE, rng=5, clip_probability=1.0)
    )
    assert not np.array_equal(first, eq_and_gain(audio, sample_rate_hz=RATE, rng=6))
    assert first.shape == audio.shape and np.all(np.isfinite(first))


def test_peaking_biquad_has_its_gain_at_the_centre() -> None:
    freqs = np.array([1000.0, 20.0, 7900.0])
    response = augment._biquad_response(
        "peak", freq_hz=1000.0, gain_db=6.0, q=1.0, sample_rate_hz=RATE, freqs_hz=freqs
    )
    gains_db = 20 * np.log10(np.abs(response))
    assert gains_db[0] == pytest.approx(6.0, abs=1e-6)
    assert np.all(np.abs(gains_db[1:]) < 0.5)


def test_materials_must_match_the_rate() -> None:
    materials = Materials(sample_rate_hz=22_050, speech=(sine(200.0, rate=22_050),))
    audio = sine(440.0)
    with pytest.raises(ConfigError, match="resampled"):
        CONDITIONS["babble0"](audio, sample_rate_hz=RATE, rng=0, materials=materials)
    assert materials.resampled(RATE).speech[0].shape[0] == pytest.approx(4 * RATE, abs=2)


# --------------------------------------------------------------------------- room and band


def band_energy_db(audio: np.ndarray, low_hz: float, high_hz: float, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(audio.shape[0], 1 / rate)
    return 10 * math.log10(np.mean(spectrum[(freqs >= low_hz) & (freqs < high_hz)]) + 1e-30)


def test_band_limit_attenuates_out_of_band() -> None:
    white = noise(2.0, seed=2)
    phone = band_limit(white, sample_rate_hz=RATE, band_hz=PHONE_BAND_HZ)
    in_band = band_energy_db(phone, 800, 2000) - band_energy_db(white, 800, 2000)
    assert in_band == pytest.approx(0.0, abs=0.5)
    assert band_energy_db(phone, 20, 100) - band_energy_db(white, 20, 100) < -30
    assert band_energy_db(phone, 6500, 8000) - band_energy_db(white, 6500, 8000) < -20
    laptop = band_limit(white, sample_rate_hz=RATE, band_hz=LAPTOP_BAND_HZ)  # top at Nyquist
    assert band_energy_db(laptop, 3000, 7000) - band_energy_db(white, 3000, 7000) > -0.5


def test_room_is_finite_band_limited_and_keeps_timing() -> None:
    pytest.importorskip("pyroomacoustics")
    white = noise(3.0, seed=4)
    out = room(white, sample_rate_hz=RATE, rng=1, band_hz=PHONE_BAND_HZ, snr_db=10.0)
    assert out.shape == white.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert band_energy_db(out, 20, 100) < band_energy_db(out, 800, 2000) - 30
    dry = room(burst_at(2.0, 0.5), sample_rate_hz=RATE, rng=1, band_hz=None, snr_db=None)
    assert onset_s(dry) == pytest.approx(0.5, abs=0.01)


def test_room_impulse_response_has_the_drawn_rt60() -> None:
    pytest.importorskip("pyroomacoustics")
    response = augment.room_impulse_response(sample_rate_hz=RATE, rng=2, rt60_s=(0.6, 0.6))
    # Schroeder backward integration; T20 fit from -5 to -25 dB, times 3.
    energy = np.cumsum(response[::-1] ** 2)[::-1]
    decay_db = 10 * np.log10(energy / energy[0])
    t5 = np.argmax(decay_db <= -5) / RATE
    t25 = np.argmax(decay_db <= -25) / RATE
    assert 3 * (t25 - t5) == pytest.approx(0.6, rel=0.15)
    # The direct path is at sample 0: nothing before it, and it tops its first millisecond.
    assert abs(response[0]) >= np.max(np.abs(response[1 : RATE // 1000]))


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize(
    ("codec_name", "rate"), [("mp3", 16_000), ("mp3", 44_100), ("opus", 22_050)]
)
def test_codec_round_trip_is_lossy_and_aligned(codec_name: str, rate: int) -> None:
    if not codec_available(codec_name):
        pytest.skip(f"libsndfile without {codec_name}")
    audio = synth_track(seed=7, duration_s=3.0, sample_rate_hz=rate)
    out = codec(audio, sample_rate_hz=rate, kbps=64.0, codec_name=codec_name)
    assert out.shape == audio.shape and out.dtype == np.float32
    assert not np.array_equal(out, audio)
    correlation = float(np.dot(out, audio) / (np.linalg.norm(out) * np.linalg.norm(audio)))
    assert correlation > 0.9  # lined up sample for sample, not just similar


def test_mp3_bitrate_is_the_one_asked_for() -> None:
    if not codec_available("mp3"):
        pytest.skip("libsndfile without mp3")
    audio = noise(4.0, seed=6, amp=0.3)
    data = augment._encode(audio, sample_rate_hz=RATE, kbps=64.0, codec_name="mp3")
    assert len(data) * 8 / 4.0 / 1000 == pytest.approx(64.0, rel=0.1)
    with pytest.raises(ConfigError, match="kbps"):
        augment._encode(audio, sample_rate_hz=RATE, kbps=320.0, codec_name="mp3")


# --------------------------------------------------------------------------- mixes


def test_crossfade_boundaries_and_equal_power() -> None:
    rate = 8_000
    lengths_s = (20.0, 25.0, 18.0)
    segments = [noise(s, seed=i, rate=rate, amp=1.0) for i, s in enumerate(lengths_s)]
    mix, boundaries = crossfade_mix(segments, sample_rate_hz=rate, fade_s=8.0)
    assert boundaries == [(0.0, 20.0), (12.0, 37.0), (29.0, 47.0)]
    assert mix.shape[0] == 47 * rate
    window = rate // 4
    powers = np.mean(mix.reshape(-1, window).astype(np.float64) ** 2, axis=1)
    assert np.all(np.abs(powers - 1.0) < 0.2)  # through both fades
    fade = slice(12 * rate, 20 * rate)
    assert np.mean(mix[fade].astype(np.float64) ** 2) == pytest.approx(1.0, rel=0.05)


def test_crossfade_per_transition_fades() -> None:
    rate = 8_000
    lengths_s = (40.0, 50.0, 45.0, 30.0)
    fades_s = (8.0, 30.0, 12.5)
    segments = [noise(s, seed=i, rate=rate, amp=1.0) for i, s in enumerate(lengths_s)]
    mix, boundaries = crossfade_mix(segments, sample_rate_hz=rate, fade_s=fades_s)
    # Each segment starts its transition's fade before the previous one ends.
    assert boundaries == [(0.0, 40.0), (32.0, 82.0), (52.0, 97.0), (84.5, 114.5)]
    assert mix.shape[0] == round((sum(lengths_s) - sum(fades_s)) * rate)
    window = rate // 4
    powers = np.mean(mix.reshape(-1, window).astype(np.float64) ** 2, axis=1)
    assert np.all(np.abs(powers - 1.0) < 0.2)  # equal power through every fade
    # A list of equal fades is the same mix as the single length.
    same, same_bounds = crossfade_mix(segments, sample_rate_hz=rate, fade_s=[8.0, 8.0, 8.0])
    again, again_bounds = crossfade_mix(segments, sample_rate_hz=rate, fade_s=8.0)
    np.testing.assert_array_equal(same, again)
    assert same_bounds == again_bounds


def test_crossfade_rejects_short_segments() -> None:
    with pytest.raises(ConfigError, match="shorter than its fades"):
        crossfade_mix([noise(10.0, 0), noise(3.0, 1)], sample_rate_hz=RATE, fade_s=4.0)
    # An end segment has one fade only; a middle one needs room for both.
    crossfade_mix([noise(10.0, 0), noise(3.0, 1)], sample_rate_hz=RATE, fade_s=2.0)
    with pytest.raises(ConfigError, match=r"segment 1 is 6.00 s, .*\(3 s in \+ 4 s out\)"):
        crossfade_mix(
            [noise(10.0, 0), noise(6.0, 1), noise(10.0, 2)], sample_rate_hz=RATE, fade_s=[3.0, 4.0]
        )


@pytest.mark.parametrize(
    ("fades", "message"),
    [
        ([8.0], "1 lengths for 3 segments; need 2"),
        ([8.0, 8.0, 8.0], "3 lengths for 3 segments; need 2"),
        ([8.0, -1.0], r"fade_s\[1\]"),
        ([8.0, float("nan")], r"fade_s\[1\]"),
        ([8.0, 25.0], "segment 2 is 20.00 s"),
        ("8", "fade_s must be a number"),
    ],
)
def test_crossfade_rejects_bad_fade_lists(fades: object, message: str) -> None:
    segments = [noise(s, k, rate=8_000) for k, s in enumerate((20.0, 40.0, 20.0))]
    with pytest.raises(ConfigError, match=message):
        crossfade_mix(segments, sample_rate_hz=8_000, fade_s=fades)  # type: ignore[arg-type]
