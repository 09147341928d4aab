"""Style features of audio windows (index/sonic_audio.py) and heads that read them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fakes import make_tone_track

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.errors import ConfigError
from synesthete.index.sonic import SonicHead
from synesthete.index.sonic_audio import FEATURE_DIM, FEATURE_VERSION, N_MELS, window_features
from synesthete.index.sonic_file import load_head, save_head
from synesthete.stream.synth import pink_noise


def windows_of(audio: np.ndarray, *, count: int) -> np.ndarray:
    hop = (audio.shape[0] - WINDOW_SAMPLES) // max(1, count - 1)
    return np.stack([audio[i * hop : i * hop + WINDOW_SAMPLES] for i in range(count)])


def tone(seed: int) -> np.ndarray:
    return np.asarray(make_tone_track(seed=seed, duration_s=12.0), dtype=np.float32)


def test_features_are_gain_invariant_row_by_row_and_finite() -> None:
    windows = windows_of(tone(3), count=5)
    features = window_features(windows)
    assert features.shape == (5, FEATURE_DIM) and features.dtype == np.float32
    np.testing.assert_allclose(window_features(0.1 * windows), features, atol=1e-3)
    np.testing.assert_allclose(window_features(windows[2:4]), features[2:4], atol=1e-5)
    silent = window_features(np.zeros((2, WINDOW_SAMPLES), dtype=np.float32))
    assert np.isfinite(silent).all()
    with pytest.raises(ConfigError):
        window_features(windows[:, :1000])


def test_features_tell_timbre_and_rhythm_apart() -> None:
    """Two stretches of one tone track are nearer each other than either is to noise, and
    a steady pulse shows its period in the onset autocorrelation."""
    a = window_features(windows_of(tone(1), count=4))
    noise = pink_noise(seconds=12.0, sample_rate_hz=SAMPLE_RATE_HZ, seed=0)
    b = window_features(windows_of(noise, count=4))
    timbre = slice(0, N_MELS)
    within = np.linalg.norm(a[0, timbre] - a[3, timbre])
    across = np.linalg.norm(a[0, timbre] - b[0, timbre])
    assert within < across
    # Clicks every 0.5 s: the onset envelope repeats, and its autocorrelation is high at
    # the 2 s lag (four periods) and low off the beat; pink noise has no such peak.
    from synesthete.index.sonic_audio import _filterbanks

    lags = _filterbanks()[2]
    rhythm = slice(3 * N_MELS, 3 * N_MELS + lags.shape[0])
    clicks = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    clicks[:: SAMPLE_RATE_HZ // 2] = 1.0
    clicks += 0.001 * np.random.default_rng(1).standard_normal(WINDOW_SAMPLES).astype(np.float32)
    beat = window_features(clicks[None])[0, rhythm]
    on_beat = int(np.flatnonzero(lags == 100)[0])
    assert beat[on_beat] > 0.3
    assert np.max(beat[lags < 90]) < 0.1
    assert b[0, rhythm][on_beat] < 0.2


def audio_head(seed: int = 0) -> SonicHead:
    rng = np.random.default_rng(seed)
    return SonicHead(
        encoder_name="fake-v1",
        w1=(0.1 * rng.standard_normal((FEATURE_DIM, 16))).astype(np.float32),
        b1=np.zeros(16, dtype=np.float32),
        w2=rng.standard_normal((16, 4)).astype(np.float32),
        b2=np.zeros(4, dtype=np.float32),
        inputs="audio",
        feature_version=FEATURE_VERSION,
    )


def test_an_audio_head_reads_audio_and_round_trips(tmp_path: Path) -> None:
    head = audio_head()
    windows = windows_of(tone(2), count=3)
    out = head.apply_audio(windows)
    np.testing.assert_allclose(out, head.apply(window_features(windows)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert head.reads_audio
    # It serves any index of its encoder whatever the window dim; not another version.
    assert head.applies_to(encoder_name="fake-v1", dim=32)
    assert not head.applies_to(encoder_name="other", dim=32)
    path = tmp_path / "fake-v1.sonic.npz"
    save_head(head, path)
    again = load_head(path)
    assert again.inputs == "audio" and again.feature_version == FEATURE_VERSION
    np.testing.assert_array_equal(again.w1, head.w1)
    stale = SonicHead(
        encoder_name="fake-v1",
        w1=head.w1,
        b1=head.b1,
        w2=head.w2,
        b2=head.b2,
        inputs="audio",
        feature_version=FEATURE_VERSION + 1,
    )
    assert not stale.applies_to(encoder_name="fake-v1", dim=32)
    window_head = SonicHead(encoder_name="fake-v1", w1=head.w1, b1=head.b1, w2=head.w2, b2=head.b2)
    with pytest.raises(ConfigError, match="not audio"):
        window_head.apply_audio(windows)
    with pytest.raises(ConfigError, match="inputs"):
        SonicHead(encoder_name="x", w1=head.w1, b1=head.b1, w2=head.w2, b2=head.b2, inputs="video")


def test_version_2_features_show_the_rate_of_level_changes_and_bands_moving_together() -> None:
    """Noise whose loudness swells 3 or 10 times a second puts the largest share of its
    level changes in the 2-4 or 8-16 Hz modulation band, and its bands rise and fall
    together (correlations near 1); the 10th percentile of each band lies below the 90th."""
    from synesthete.index.sonic_audio import (
        COARSE_BANDS,
        MODULATION_BANDS_HZ,
        ONSET_LAGS,
        QUANTILES_PCT,
    )

    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE_HZ
    noise = np.random.default_rng(2).standard_normal(WINDOW_SAMPLES)
    quantiles = 3 * N_MELS + ONSET_LAGS + 1 + 12 + 1 + 1
    modulation = quantiles + len(QUANTILES_PCT) * N_MELS
    rates = len(MODULATION_BANDS_HZ)
    correlations = modulation + COARSE_BANDS * rates
    assert FEATURE_VERSION == 2 and correlations + COARSE_BANDS * (COARSE_BANDS - 1) // 2 == (
        FEATURE_DIM
    )
    for swell_hz, band in ((3.0, 1), (10.0, 3)):
        envelope = 1.0 + 0.9 * np.sin(2 * np.pi * swell_hz * t)
        row = window_features((noise * envelope).astype(np.float32)[None])[0]
        shares = row[modulation:correlations].reshape(COARSE_BANDS, rates).mean(axis=0)
        assert int(shares.argmax()) == band
        assert row[correlations:].min() > 0.8
        low, high = row[quantiles : quantiles + N_MELS], row[quantiles + N_MELS : modulation]
        assert (low < high).all()
