"""Windower: block-size invariance against ``window_audio``, indices, starts, flush/reset."""

from __future__ import annotations

import numpy as np
import pytest

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.errors import AudioFormatError, ConfigError
from synesthete.stream.resample import StreamResampler, resample_offline
from synesthete.stream.windowing import Window, Windower, window_audio

BLOCK_SIZES = (1, 7, 256, 4096, None)  # None: everything at once
HOPS_S = (0.5, 2.0, 4.0)


def _signal(*, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(round(seconds * SAMPLE_RATE_HZ)).astype(np.float32)


def _window_in_blocks(windower: Windower, audio: np.ndarray, block: int | None) -> list[Window]:
    step = audio.shape[0] if block is None else block
    windows = []
    for start in range(0, audio.shape[0], step):
        windows.extend(windower.push(audio[start : start + step]))
    return windows


@pytest.mark.parametrize("hop_s", HOPS_S)
@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_any_block_split_equals_the_offline_oracle(hop_s: float, block: int | None) -> None:
    audio = _signal(seconds=10.3, seed=int(hop_s * 10))  # a partial window at the end
    windower = Windower(hop_s=hop_s)
    hop_samples = round(hop_s * SAMPLE_RATE_HZ)
    expected = window_audio(audio, window_samples=WINDOW_SAMPLES, hop_samples=hop_samples)
    windows = _window_in_blocks(windower, audio, block)

    assert len(windows) == expected.shape[0] == 1 + (audio.shape[0] - WINDOW_SAMPLES) // hop_samples
    for k, window in enumerate(windows):
        assert window.index == k
        assert window.start_sample == k * hop_samples
        assert window.start_s == pytest.approx(k * hop_s)
        assert window.end_s == pytest.approx(k * hop_s + 4.0)
        assert window.sample_rate_hz == SAMPLE_RATE_HZ
        assert window.samples.dtype == np.float32
        np.testing.assert_array_equal(window.samples, expected[k])


def test_windows_do_not_alias_the_internal_buffer() -> None:
    audio = _signal(seconds=9.0, seed=1)
    windower = Windower(hop_s=0.5)
    first = windower.push(audio[:WINDOW_SAMPLES])
    kept = first[0].samples.copy()
    windower.push(audio[WINDOW_SAMPLES:])
    np.testing.assert_array_equal(first[0].samples, kept)


def test_windows_are_emitted_as_soon_as_they_complete() -> None:
    windower = Windower(hop_s=2.0)
    assert windower.latency_samples == WINDOW_SAMPLES
    audio = _signal(seconds=6.0, seed=2)
    assert windower.push(audio[: WINDOW_SAMPLES - 1]) == []
    (first,) = windower.push(audio[WINDOW_SAMPLES - 1 : WINDOW_SAMPLES])
    assert first.index == 0
    hop_samples = 2 * SAMPLE_RATE_HZ
    assert windower.push(audio[WINDOW_SAMPLES : WINDOW_SAMPLES + hop_samples - 1]) == []
    (second,) = windower.push(
        audio[WINDOW_SAMPLES + hop_samples - 1 : WINDOW_SAMPLES + hop_samples]
    )
    assert second.index == 1
    assert second.start_sample == hop_samples


def test_flush_drops_the_tail_and_restarts_the_count() -> None:
    audio = _signal(seconds=7.0, seed=3)
    windower = Windower(hop_s=2.0)
    assert len(windower.push(audio)) == 2
    assert windower.flush() == []
    again = windower.push(audio)
    assert [w.index for w in again] == [0, 1]
    assert again[0].start_sample == 0
    np.testing.assert_array_equal(again[0].samples, audio[:WINDOW_SAMPLES])


def test_reset_forgets_buffered_samples() -> None:
    audio = _signal(seconds=5.0, seed=4)
    windower = Windower(hop_s=0.5)
    windower.push(audio[:20_000])
    windower.reset()
    windows = windower.push(audio)
    assert windows[0].start_sample == 0
    np.testing.assert_array_equal(windows[0].samples, audio[:WINDOW_SAMPLES])


def test_empty_and_short_input() -> None:
    windower = Windower(hop_s=2.0)
    assert windower.push(np.zeros(0, dtype=np.float32)) == []
    short = _signal(seconds=1.0, seed=5)
    assert window_audio(short, window_samples=WINDOW_SAMPLES, hop_samples=32_000).shape == (
        0,
        WINDOW_SAMPLES,
    )


def test_validation() -> None:
    with pytest.raises(ConfigError):
        Windower(hop_s=0.1)
    with pytest.raises(ConfigError):
        Windower(hop_s=4.5)
    with pytest.raises(AudioFormatError):
        Windower(hop_s=2.0).push(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(AudioFormatError):
        window_audio(np.zeros((10, 2), dtype=np.float32), window_samples=4, hop_samples=2)
    with pytest.raises(ConfigError):
        window_audio(np.zeros(10, dtype=np.float32), window_samples=4, hop_samples=0)


@pytest.mark.parametrize("block", [7, 1000, 4096, None])
def test_resampler_then_windower_is_block_size_invariant(block: int | None) -> None:
    """The composed front end: 44.1 kHz stereo in, 4 s windows at 16 kHz out."""
    rng = np.random.default_rng(6)
    device_audio = (0.3 * rng.standard_normal((44100 * 9, 2))).astype(np.float32)
    mono_16k = resample_offline(device_audio, in_rate_hz=44100)
    expected = window_audio(mono_16k, window_samples=WINDOW_SAMPLES, hop_samples=8000)

    resampler = StreamResampler(in_rate_hz=44100)
    windower = Windower(hop_s=0.5)
    step = device_audio.shape[0] if block is None else block
    windows = []
    for start in range(0, device_audio.shape[0], step):
        windows.extend(windower.push(resampler.push(device_audio[start : start + step])))
    windows.extend(windower.push(resampler.flush()))

    assert len(windows) == expected.shape[0]
    for window, row in zip(windows, expected, strict=True):
        np.testing.assert_array_equal(window.samples, row)


def test_complete_early_emits_each_window_once_with_the_provisional_tail() -> None:
    audio = _signal(seconds=12.0, seed=4)
    oracle = window_audio(audio, window_samples=WINDOW_SAMPLES, hop_samples=SAMPLE_RATE_HZ)
    windower = Windower(hop_s=1.0)
    held = 300  # samples a resampler might still hold back
    emitted: list[Window] = []
    for start in range(0, audio.shape[0], 1000):
        end = min(start + 1000, audio.shape[0])
        emitted.extend(windower.push(audio[start:end]))
        missing = windower.samples_missing
        if 0 < missing <= held:
            provisional = audio[end : end + held] * 0.5  # a deliberately rough estimate
            if provisional.shape[0] >= missing:
                early = windower.complete_early(provisional)
                assert early is not None
                emitted.append(early)
    assert [w.index for w in emitted] == list(range(oracle.shape[0]))
    for window in emitted:
        exact = oracle[window.index]
        assert window.start_sample == window.index * SAMPLE_RATE_HZ
        assert window.samples.shape == exact.shape
        np.testing.assert_array_equal(window.samples[:-held], exact[:-held])
    assert windower.complete_early(np.zeros(0, dtype=np.float32)) is None


def test_complete_early_declines_when_the_tail_is_too_short() -> None:
    windower = Windower(hop_s=2.0)
    windower.push(np.zeros(WINDOW_SAMPLES - 100, dtype=np.float32))
    assert windower.samples_missing == 100
    assert windower.complete_early(np.zeros(99, dtype=np.float32)) is None
    assert windower.samples_missing == 100
    early = windower.complete_early(np.ones(100, dtype=np.float32))
    assert early is not None and early.index == 0
    assert windower.samples_missing == 2 * SAMPLE_RATE_HZ + 100
