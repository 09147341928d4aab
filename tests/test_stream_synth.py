"""Procedural tracks and noises: deterministic, distinct, bounded, structured."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from synesthete.errors import ConfigError
from synesthete.stream.synth import (
    PEAK_AMPLITUDE,
    _plan,
    _SectionRenderer,
    pink_noise,
    speech_like_noise,
    synth_track,
    synth_track_title,
)


def _log_spectrum(audio: np.ndarray, *, frame: int = 2048) -> np.ndarray:
    """Mean log-magnitude spectrum ``[frame // 2 + 1]``: a crude timbre/key fingerprint."""
    frames = audio[: audio.shape[0] // frame * frame].reshape(-1, frame) * np.hanning(frame)
    spectrum: np.ndarray = np.log(np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0) + 1e-6)
    return spectrum


def test_same_seed_same_samples() -> None:
    a = synth_track(seed=11, duration_s=6.0)
    b = synth_track(seed=11, duration_s=6.0)
    np.testing.assert_array_equal(a, b)


def test_shape_dtype_range() -> None:
    for seed in range(6):
        audio = synth_track(seed=seed, duration_s=5.0, sample_rate_hz=16000)
        assert audio.shape == (80_000,)
        assert audio.dtype == np.float32
        assert np.isfinite(audio).all()
        assert np.max(np.abs(audio)) <= 1.0
        assert np.max(np.abs(audio)) == pytest.approx(PEAK_AMPLITUDE, rel=1e-5)
        assert np.sqrt(np.mean(audio**2)) > 0.03  # not silence


def test_different_seeds_sound_different() -> None:
    tracks = [synth_track(seed=seed, duration_s=8.0) for seed in range(8)]
    spectra = [_log_spectrum(t) for t in tracks]
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            n = min(tracks[i].shape[0], tracks[j].shape[0])
            correlation = np.corrcoef(tracks[i][:n], tracks[j][:n])[0, 1]
            assert abs(correlation) < 0.3
            assert np.mean(np.abs(spectra[i] - spectra[j])) > 0.1


def test_plans_vary_in_tempo_key_and_form() -> None:
    plans = [_plan(seed, 22050) for seed in range(40)]
    tempos_bpm = {round(60 * 22050 / (p.step_samples * 4)) for p in plans}
    assert all(80 <= t <= 160 for t in tempos_bpm)
    assert len(tempos_bpm) > 30
    assert len({p.tonic_midi for p in plans}) > 6
    assert len({p.form for p in plans}) > 2
    assert len({p.scale for p in plans}) > 2


def test_repeated_sections_are_similar_but_not_identical() -> None:
    """Repeats share the section's backing but differ by an ornament layer, like real music."""
    sample_rate_hz = 16000
    seed = next(s for s in range(100) if _plan(s, sample_rate_hz).form.count("verse") >= 2)
    plan = _plan(seed, sample_rate_hz)
    renderer = _SectionRenderer(plan)
    section = renderer.section_samples
    audio = synth_track(
        seed=seed,
        duration_s=len(plan.form) * section / sample_rate_hz,
        sample_rate_hz=sample_rate_hz,
    )
    first, second = [k for k, kind in enumerate(plan.form) if kind == "verse"][:2]
    skip = renderer.tail_samples  # the previous section's release tails
    a = audio[first * section + skip : (first + 1) * section]
    b = audio[second * section + skip : (second + 1) * section]
    other = next(k for k, kind in enumerate(plan.form) if kind not in ("verse", "intro", "outro"))
    c = audio[other * section + skip : (other + 1) * section]
    assert not np.allclose(a, b, atol=1e-3)
    # Two verses correlate far more with each other than a verse with another section.
    corr_ab = float(np.corrcoef(a, b)[0, 1])
    corr_ac = float(np.corrcoef(a, c)[0, 1])
    assert corr_ab > 0.3 and corr_ab > corr_ac + 0.1


def test_long_renders_keep_going_past_the_form() -> None:
    audio = synth_track(seed=3, duration_s=240.0, sample_rate_hz=16000)
    assert audio.shape == (240 * 16000,)
    seconds = audio.reshape(-1, 16000)
    # Music all the way through: no silent stretch after the form's end.
    assert np.min(np.sqrt(np.mean(seconds[:-1] ** 2, axis=1))) > 0.01


def test_titles() -> None:
    assert synth_track_title(5) == synth_track_title(5)
    titles = {synth_track_title(seed) for seed in range(50)}
    assert len(titles) == 50
    for title in titles:
        words = title.split(" ")
        assert len(words) == 2
        assert all(word.isalpha() and word[0].isupper() for word in words)


def test_pink_noise_has_equal_power_per_octave() -> None:
    noise = pink_noise(seconds=10.0, sample_rate_hz=16000, seed=1)
    assert noise.shape == (160_000,)
    assert noise.dtype == np.float32
    assert np.max(np.abs(noise)) == pytest.approx(0.5, rel=1e-5)
    power = np.abs(np.fft.rfft(noise.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(noise.shape[0], 1 / 16000)
    octaves = [
        power[(freqs >= lo) & (freqs < 2 * lo)].sum() for lo in (100, 200, 400, 800, 1600, 3200)
    ]
    assert max(octaves) / min(octaves) < 1.5  # white noise would be 32x apart
    np.testing.assert_array_equal(noise, pink_noise(seconds=10.0, sample_rate_hz=16000, seed=1))
    assert not np.array_equal(noise, pink_noise(seconds=10.0, sample_rate_hz=16000, seed=2))


def test_speech_like_noise_is_speech_band_and_syllabic() -> None:
    babble = speech_like_noise(seconds=6.0, sample_rate_hz=16000, seed=4, talkers=1)
    assert babble.shape == (96_000,)
    assert np.isfinite(babble).all()
    assert np.max(np.abs(babble)) == pytest.approx(0.5, rel=1e-5)
    power = np.abs(np.fft.rfft(babble.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(babble.shape[0], 1 / 16000)
    assert power[(freqs > 200) & (freqs < 4000)].sum() > 0.9 * power.sum()
    # Syllables: the 20 ms frame energy swings widely, unlike stationary noise.
    frame_rms = np.sqrt(np.mean(babble[: 96_000 // 320 * 320].reshape(-1, 320) ** 2, axis=1))
    assert np.std(frame_rms) / np.mean(frame_rms) > 0.5
    np.testing.assert_array_equal(
        babble, speech_like_noise(seconds=6.0, sample_rate_hz=16000, seed=4, talkers=1)
    )
    crowd = speech_like_noise(seconds=2.0, sample_rate_hz=22050, seed=4, talkers=8)
    assert crowd.shape == (44_100,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1, "duration_s": 1.0},
        {"seed": 1.5, "duration_s": 1.0},
        {"seed": 1, "duration_s": 0.0},
        {"seed": 1, "duration_s": float("nan")},
        {"seed": 1, "duration_s": 1.0, "sample_rate_hz": 100},
        {"seed": 1, "duration_s": 1.0, "sample_rate_hz": 22050.0},
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        synth_track(**kwargs)


def test_bad_noise_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        pink_noise(seconds=1.0, sample_rate_hz=16000, seed=1, peak=2.0)
    with pytest.raises(ConfigError):
        speech_like_noise(seconds=1.0, sample_rate_hz=16000, seed=1, talkers=0)
    with pytest.raises(ConfigError):
        synth_track_title(-3)
