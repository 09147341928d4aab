"""Decoding every supported format to 16 kHz mono, in blocks, and rejecting bad audio."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from fakes import make_tone_track, write_audio, write_bad_files

from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.errors import AudioFormatError, ConfigError
from synesthete.index.decode import (
    decode_mono_16k_blocks,
    decode_mono_16k_speeds,
    load_mono,
    load_mono_16k,
    peak_dbfs,
)
from synesthete.stream.resample import resample_offline

DURATION_S = 6.0


def spectrum_db(audio):
    """Coarse log spectrum (64 bands up to 8 kHz) to compare lossy decodes with the source."""
    power = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0]))) ** 2
    bands = np.array_split(power, 64)
    return 10 * np.log10(np.array([b.sum() for b in bands]) + 1e-12)


def test_load_excerpt_at_another_rate(tmp_path):
    source = make_tone_track(seed=6, duration_s=6.0, sample_rate_hz=44_100, channels=2)
    path = write_audio(tmp_path / "x.flac", source, sample_rate_hz=44_100)
    excerpt = load_mono(path, sample_rate_hz=22_050, start_s=1.0, duration_s=2.0)
    assert excerpt.dtype == np.float32 and excerpt.shape == (44_100,)
    # The same span at 16 kHz carries the same signal (compare its RMS).
    at_16k = load_mono_16k(path, start_s=1.0, duration_s=2.0)
    assert at_16k.shape == (32_000,)
    assert np.sqrt(np.mean(excerpt**2)) == pytest.approx(np.sqrt(np.mean(at_16k**2)), rel=0.02)


@pytest.mark.parametrize(
    ("suffix", "rate_hz", "channels"),
    [
        ("wav", 44_100, 2),
        ("flac", 48_000, 1),
        ("ogg", 44_100, 2),
        ("opus", 48_000, 2),
        ("mp3", 44_100, 2),
        ("wav", 16_000, 1),
    ],
)
def test_every_format_decodes_to_16k_mono(tmp_path, suffix, rate_hz, channels):
    source = make_tone_track(
        seed=3, duration_s=DURATION_S, sample_rate_hz=rate_hz, channels=channels
    )
    path = write_audio(tmp_path / f"x.{suffix}", source, sample_rate_hz=rate_hz)
    decoded = np.concatenate(list(decode_mono_16k_blocks(path)))
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    # Lossy codecs may pad the start or end by some ms (encoder delay).
    assert abs(decoded.shape[0] / SAMPLE_RATE_HZ - DURATION_S) < 0.1
    reference = resample_offline(source, in_rate_hz=rate_hz)
    if suffix in ("wav", "flac"):
        assert decoded.shape == reference.shape
        np.testing.assert_allclose(decoded, reference, atol=2e-4)
    else:
        n = min(decoded.shape[0], reference.shape[0])
        error_db = np.abs(spectrum_db(decoded[:n]) - spectrum_db(reference[:n]))
        assert np.median(error_db[:40]) < 3.0  # up to 5 kHz: what lossy coding keeps


@pytest.mark.parametrize("block_frames", [1000, 4096, 65536, 1_000_000])
def test_block_size_does_not_change_the_output(tmp_path, block_frames):
    source = make_tone_track(seed=4, duration_s=5.0, sample_rate_hz=44_100, channels=2)
    path = write_audio(tmp_path / "x.flac", source, sample_rate_hz=44_100)
    whole = load_mono_16k(path)
    blocks = list(decode_mono_16k_blocks(path, block_frames=block_frames))
    assert all(b.ndim == 1 and b.size > 0 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


def test_load_excerpt(tmp_path):
    source = make_tone_track(seed=5, duration_s=8.0, sample_rate_hz=16_000)
    path = write_audio(tmp_path / "x.wav", source, sample_rate_hz=16_000)
    excerpt = load_mono_16k(path, start_s=2.0, duration_s=3.0)
    np.testing.assert_allclose(excerpt, source[32_000:80_000], atol=1e-4)
    assert load_mono_16k(path, start_s=7.0).shape == (16_000,)
    with pytest.raises(ConfigError):
        load_mono_16k(path, start_s=-1.0)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "empty file"),
        ("corrupt", "cannot decode"),
        ("truncated", "truncated or corrupt audio data"),
        ("text", "not a recognised audio format"),
        ("silent", "silent (digital silence"),
        ("short", "too short (2.00 s"),
    ],
)
def test_bad_files_raise_audio_format_error_naming_the_path(tmp_path, kind, reason):
    path = write_bad_files(tmp_path)[kind]
    with pytest.raises(AudioFormatError) as info:
        for _ in decode_mono_16k_blocks(path):
            pass
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert reason in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(AudioFormatError, match="no such file"):
        load_mono_16k(tmp_path / "missing.wav")


def test_non_finite_samples_are_rejected(tmp_path):
    audio = make_tone_track(seed=6, duration_s=5.0)
    audio[1000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, audio, SAMPLE_RATE_HZ, subtype="FLOAT")
    with pytest.raises(AudioFormatError, match="NaN or infinite"):
        list(decode_mono_16k_blocks(path))
    with pytest.raises(AudioFormatError, match="NaN or infinite"):
        load_mono_16k(path)


def test_non_finite_reason_says_where(tmp_path):
    audio = make_tone_track(seed=6, duration_s=5.0, channels=2)
    audio[int(2.25 * SAMPLE_RATE_HZ), 1] = -np.inf
    path = tmp_path / "inf.wav"
    sf.write(path, audio, SAMPLE_RATE_HZ, subtype="FLOAT")
    for block_frames in (1000, 65536):
        with pytest.raises(AudioFormatError, match=r"\(first at 2\.25 s\); not indexed"):
            list(decode_mono_16k_blocks(path, block_frames=block_frames))
    with pytest.raises(AudioFormatError, match=r"first at 2\.25 s"):  # time in the file
        load_mono_16k(path, start_s=1.0)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_file_names_that_are_not_utf8_decode(tmp_path):
    path = tmp_path / os.fsdecode(b"caf\xe9 \xff.flac")
    audio = make_tone_track(seed=3, duration_s=DURATION_S)
    sf.write(os.fsencode(path), audio, SAMPLE_RATE_HZ, format="FLAC")
    blocks = np.concatenate(list(decode_mono_16k_blocks(path, block_frames=4096)))
    np.testing.assert_array_equal(blocks, load_mono_16k(path))
    assert blocks.shape == (DURATION_S * SAMPLE_RATE_HZ,)


def test_quiet_but_not_silent_passes_and_threshold_is_configurable(tmp_path):
    audio = make_tone_track(seed=7, duration_s=5.0) * 10 ** (-50 / 20) / 0.5  # peak -50 dBFS
    path = write_audio(tmp_path / "quiet.flac", audio, sample_rate_hz=SAMPLE_RATE_HZ)
    assert sum(b.size for b in decode_mono_16k_blocks(path)) == 80_000
    with pytest.raises(AudioFormatError, match="peak -50"):
        list(decode_mono_16k_blocks(path, silence_dbfs=-40.0))


def test_peak_dbfs():
    assert peak_dbfs(1.0) == 0.0
    assert peak_dbfs(0.0) == float("-inf")
    assert peak_dbfs(0.001) == pytest.approx(-60.0)


def _tone_power(audio, rate_hz, freq_hz):
    """Fraction of the signal's power within 50 Hz of ``freq_hz``."""
    power = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0]))) ** 2
    freqs = np.fft.rfftfreq(audio.shape[0], 1.0 / rate_hz)
    return power[np.abs(freqs - freq_hz) < 50.0].sum() / power.sum()


def test_speed_copies_are_played_from_the_native_rate(tmp_path):
    """A tone at 7.7 kHz is at the edge of what 16 kHz audio keeps (soxr's filter takes it
    down 10 dB), but a 0.94 turntable plays it at 7.24 kHz in full, and so must the index's
    0.94 copy: made from the 16 kHz audio, it would come out 20 dB down."""
    rate = 44_100
    t = np.arange(int(6.0 * rate)) / rate
    low, high = 1000.0, 7700.0
    audio = 0.3 * np.sin(2 * np.pi * low * t) + 0.3 * np.sin(2 * np.pi * high * t)
    path = tmp_path / "tones.wav"
    sf.write(path, np.stack([audio, audio], axis=1).astype(np.float32), rate, subtype="FLOAT")
    blocks = list(decode_mono_16k_speeds(path, speeds=(0.94, 1.06), block_frames=5000))
    recorded, slow, fast = (np.concatenate(column) for column in zip(*blocks, strict=True))
    # The recording as 16 kHz equals the plain decode, block for block.
    np.testing.assert_array_equal(recorded, np.concatenate(list(decode_mono_16k_blocks(path))))
    # Each copy lasts the track's length divided by its speed.
    assert slow.shape[0] == pytest.approx(6.0 / 0.94 * SAMPLE_RATE_HZ, abs=2)
    assert fast.shape[0] == pytest.approx(6.0 / 1.06 * SAMPLE_RATE_HZ, abs=2)
    middle = slice(SAMPLE_RATE_HZ, 4 * SAMPLE_RATE_HZ)
    assert _tone_power(recorded[middle], SAMPLE_RATE_HZ, high) < 0.15
    assert _tone_power(slow[middle], SAMPLE_RATE_HZ, high * 0.94) > 0.4
    assert _tone_power(slow[middle], SAMPLE_RATE_HZ, low * 0.94) > 0.4
    assert _tone_power(fast[middle], SAMPLE_RATE_HZ, low * 1.06) > 0.9


def test_speeds_must_be_positive(tmp_path):
    path = write_audio(
        tmp_path / "x.wav",
        make_tone_track(seed=1, duration_s=5.0, sample_rate_hz=16_000, channels=1),
        sample_rate_hz=16_000,
    )
    with pytest.raises(ConfigError, match="speeds must be positive"):
        list(decode_mono_16k_speeds(path, speeds=(0.0,)))
