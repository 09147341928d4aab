"""StreamResampler: block-size invariance against the one-shot oracle, latency, reset."""

from __future__ import annotations

import numpy as np
import pytest

from synesthete.errors import AudioFormatError, ConfigError
from synesthete.stream.resample import Downmix, StreamResampler, resample_offline, to_mono

BLOCK_SIZES = (1, 7, 256, 4096, None)  # None: everything at once
IN_RATES_HZ = (44100, 48000, 22050, 16000)


def _test_signal(*, seconds: float, rate_hz: int, channels: int, seed: int) -> np.ndarray:
    """A chirp plus seeded noise, different per channel: ``[n, channels]`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + 1500 * t**2))
    columns = [
        chirp * (c + 1) / channels + 0.1 * rng.standard_normal(t.shape) for c in range(channels)
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def _resample_in_blocks(audio: np.ndarray, *, in_rate_hz: int, block: int | None) -> np.ndarray:
    resampler = StreamResampler(in_rate_hz=in_rate_hz)
    step = audio.shape[0] if block is None else block
    pieces = [resampler.push(audio[i : i + step]) for i in range(0, audio.shape[0], step)]
    pieces.append(resampler.flush())
    return np.concatenate(pieces)


@pytest.mark.parametrize("in_rate_hz", IN_RATES_HZ)
@pytest.mark.parametrize("block", BLOCK_SIZES)
@pytest.mark.parametrize("channels", [1, 2])
def test_any_block_split_equals_the_offline_oracle(
    in_rate_hz: int, block: int | None, channels: int
) -> None:
    # Block size 1 means one Python call per sample: keep that signal short.
    seconds = 0.5 if block == 1 else 3.0
    audio = _test_signal(seconds=seconds, rate_hz=in_rate_hz, channels=channels, seed=in_rate_hz)
    if channels == 1:
        audio = audio[:, 0]
    expected = resample_offline(audio, in_rate_hz=in_rate_hz)
    got = _resample_in_blocks(audio, in_rate_hz=in_rate_hz, block=block)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("in_rate_hz", IN_RATES_HZ)
def test_oracle_length_matches_the_rate_ratio(in_rate_hz: int) -> None:
    audio = _test_signal(seconds=1.3, rate_hz=in_rate_hz, channels=1, seed=1)[:, 0]
    out = resample_offline(audio, in_rate_hz=in_rate_hz)
    assert abs(out.shape[0] - audio.shape[0] * 16000 / in_rate_hz) <= 1


def test_stereo_is_downmixed_by_averaging_before_resampling() -> None:
    stereo = _test_signal(seconds=1.0, rate_hz=44100, channels=2, seed=3)
    mono = stereo.mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(
        resample_offline(stereo, in_rate_hz=44100), resample_offline(mono, in_rate_hz=44100)
    )
    np.testing.assert_array_equal(to_mono(stereo[:, :1]), stereo[:, 0])


def _antiphase_then_normal(rate_hz: int) -> np.ndarray:
    """2 s with right = -left (a surround-mode module), then 2 s of ordinary stereo."""
    music = _test_signal(seconds=4.0, rate_hz=rate_hz, channels=1, seed=9)[:, 0]
    half = music.shape[0] // 2
    right = np.concatenate([-music[:half], 0.8 * music[half:]])
    return np.stack([music, right], axis=1).astype(np.float32)


def test_channels_in_antiphase_are_not_averaged_to_silence() -> None:
    rate = 44100
    audio = _antiphase_then_normal(rate)
    mono = Downmix()(audio)
    block = Downmix().block_frames
    half = audio.shape[0] // 2
    # The first block is averaged (nothing is known yet): near silence.
    assert np.abs(mono[:block]).max() < 1e-6
    # From the second block on, the first channel alone carries the music.
    np.testing.assert_array_equal(mono[block:half], audio[block:half, 0])
    # Once the channels stop cancelling, the average is back one block later.
    back = (half // block + 1) * block
    np.testing.assert_array_equal(mono[back:], audio[back:].mean(axis=1, dtype=np.float32))
    # Resampled, the antiphase part is as loud as either channel.
    out = resample_offline(audio[:half], in_rate_hz=rate)
    tail = out[out.shape[0] // 4 :]
    level = np.sqrt(np.mean(tail**2)) / np.sqrt(np.mean(audio[:half, 0] ** 2))
    assert 0.9 < level < 1.1


@pytest.mark.parametrize("block", [1, 7, 4096, 8192, 10_000])
def test_the_downmix_choice_does_not_depend_on_the_block_split(block: int) -> None:
    audio = _antiphase_then_normal(22050)
    if block == 1:
        audio = audio[: 3 * 8192]  # one Python call per sample: keep it short
    expected = resample_offline(audio, in_rate_hz=22050)
    got = _resample_in_blocks(audio, in_rate_hz=22050, block=block)
    np.testing.assert_array_equal(got, expected)


def test_silence_and_mono_keep_the_downmix_unchanged() -> None:
    downmix = Downmix(block_frames=100)
    downmix(np.zeros((1000, 2), dtype=np.float32))
    assert not downmix.first_channel_only
    music = _test_signal(seconds=0.1, rate_hz=8000, channels=1, seed=2)[:, 0]
    downmix(np.stack([music, -music], axis=1))
    assert downmix.first_channel_only
    downmix(np.zeros((1000, 2), dtype=np.float32))  # a pause keeps the choice
    assert downmix.first_channel_only
    np.testing.assert_array_equal(downmix(music), music)
    downmix.reset()
    assert not downmix.first_channel_only


@pytest.mark.parametrize("in_rate_hz", [44100, 48000, 22050])
def test_output_is_time_aligned_with_the_input(in_rate_hz: int) -> None:
    """soxr compensates its delay: output sample k is input time k / 16000."""
    t_in = np.arange(2 * in_rate_hz) / in_rate_hz
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t_in)).astype(np.float32)
    out = resample_offline(tone, in_rate_hz=in_rate_hz)
    t_out = np.arange(out.shape[0]) / 16000
    reference = 0.5 * np.sin(2 * np.pi * 440.0 * t_out)
    middle = slice(1000, out.shape[0] - 1000)  # away from the edge transients
    assert np.max(np.abs(out[middle] - reference[middle])) < 1e-3


@pytest.mark.parametrize("in_rate_hz", [44100, 48000, 22050])
def test_latency_accounts_for_the_held_back_output(in_rate_hz: int) -> None:
    audio = _test_signal(seconds=1.0, rate_hz=in_rate_hz, channels=1, seed=5)[:, 0]
    resampler = StreamResampler(in_rate_hz=in_rate_hz)
    assert resampler.latency_samples == 0
    emitted = 0
    pushed = 0
    for start in range(0, audio.shape[0], 1000):
        block = audio[start : start + 1000]
        emitted += resampler.push(block).shape[0]
        pushed += block.shape[0]
        expected_total = pushed * 16000 // in_rate_hz
        assert resampler.latency_samples == expected_total - emitted
        assert 0 <= resampler.latency_samples < 1000  # a filter delay, not a backlog
    assert resampler.latency_samples > 0
    tail = resampler.flush()
    assert abs(emitted + tail.shape[0] - pushed * 16000 / in_rate_hz) <= 1
    assert resampler.latency_samples == 0


def test_passthrough_has_no_latency_and_copies() -> None:
    audio = _test_signal(seconds=0.25, rate_hz=16000, channels=1, seed=2)[:, 0]
    resampler = StreamResampler(in_rate_hz=16000)
    out = resampler.push(audio)
    np.testing.assert_array_equal(out, audio)
    assert not np.shares_memory(out, audio)
    assert resampler.latency_samples == 0
    assert resampler.flush().shape == (0,)


@pytest.mark.parametrize("in_rate_hz", [44100, 16000])
def test_reset_forgets_the_previous_stream(in_rate_hz: int) -> None:
    first = _test_signal(seconds=0.7, rate_hz=in_rate_hz, channels=1, seed=8)[:, 0]
    second = _test_signal(seconds=0.9, rate_hz=in_rate_hz, channels=1, seed=9)[:, 0]
    resampler = StreamResampler(in_rate_hz=in_rate_hz)
    resampler.push(first)
    resampler.reset()
    assert resampler.latency_samples == 0
    got = np.concatenate([resampler.push(second), resampler.flush()])
    np.testing.assert_array_equal(got, resample_offline(second, in_rate_hz=in_rate_hz))


@pytest.mark.parametrize("in_rate_hz", [44100, 16000])
def test_flush_leaves_the_resampler_ready_for_a_new_stream(in_rate_hz: int) -> None:
    first = _test_signal(seconds=0.5, rate_hz=in_rate_hz, channels=1, seed=10)[:, 0]
    second = _test_signal(seconds=0.6, rate_hz=in_rate_hz, channels=1, seed=11)[:, 0]
    resampler = StreamResampler(in_rate_hz=in_rate_hz)
    resampler.push(first)
    resampler.flush()
    assert resampler.latency_samples == 0
    got = np.concatenate([resampler.push(second), resampler.flush()])
    np.testing.assert_array_equal(got, resample_offline(second, in_rate_hz=in_rate_hz))


def test_empty_blocks_are_harmless() -> None:
    audio = _test_signal(seconds=0.5, rate_hz=44100, channels=2, seed=12)
    resampler = StreamResampler(in_rate_hz=44100)
    pieces = []
    for start in range(0, audio.shape[0], 4096):
        pieces.append(resampler.push(audio[start : start + 4096]))
        pieces.append(resampler.push(audio[:0]))
    pieces.append(resampler.flush())
    np.testing.assert_array_equal(np.concatenate(pieces), resample_offline(audio, in_rate_hz=44100))


def test_bad_settings_and_shapes_raise_our_errors() -> None:
    with pytest.raises(ConfigError):
        StreamResampler(in_rate_hz=0)
    with pytest.raises(ConfigError):
        StreamResampler(in_rate_hz=44100, out_rate_hz=-1)
    with pytest.raises(AudioFormatError):
        StreamResampler(in_rate_hz=44100).push(np.zeros((4, 2, 2), dtype=np.float32))


@pytest.mark.parametrize("in_rate_hz", [44100, 48000, 22050, 8000, 96000])
@pytest.mark.parametrize("quality", ["HQ", "LQ", "VHQ"])
def test_estimate_pending_predicts_the_held_back_output(in_rate_hz: int, quality: str) -> None:
    audio = _test_signal(seconds=1.0, rate_hz=in_rate_hz, channels=1, seed=9)[:, 0]
    exact = StreamResampler(in_rate_hz=in_rate_hz, quality=quality)
    reference = np.concatenate([exact.push(audio), exact.flush()])
    resampler = StreamResampler(in_rate_hz=in_rate_hz, quality=quality)
    emitted = 0
    checked = 0
    block = in_rate_hz // 57  # ~17.5 ms, not a divisor of any rate's period
    for start in range(0, audio.shape[0] // 2, block):
        emitted += resampler.push(audio[start : start + block]).shape[0]
        estimate = resampler.estimate_pending()
        assert estimate.dtype == np.float32
        if start < in_rate_hz // 4:
            continue  # not enough history yet: may decline to estimate
        assert estimate.shape[0] == resampler.latency_samples > 0
        truth = reference[emitted : emitted + estimate.shape[0]]
        quarter = estimate.shape[0] // 4
        # The oldest samples are near exact; only the newest miss the future input.
        np.testing.assert_allclose(estimate[:quarter], truth[:quarter], atol=1e-3)
        assert np.sqrt(np.mean((estimate - truth) ** 2)) < 0.1 * np.sqrt(np.mean(truth**2))
        checked += 1
    assert checked > 5
    # Estimating consumes nothing: the stream still equals the one-shot output.
    rest = np.concatenate([resampler.push(audio[start + block :]), resampler.flush()])
    np.testing.assert_array_equal(reference[emitted:], rest)


def test_passthrough_has_nothing_pending() -> None:
    resampler = StreamResampler(in_rate_hz=16000)
    resampler.push(np.ones(5000, dtype=np.float32))
    assert resampler.estimate_pending().shape == (0,)
