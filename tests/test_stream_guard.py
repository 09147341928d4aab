"""InputGuard: non-finite samples become 0 and are counted; clipped samples are counted."""

from __future__ import annotations

import numpy as np
import pytest

from synesthete.errors import ConfigError
from synesthete.stream.guard import CLIP_LEVEL, InputGuard
from synesthete.stream.resample import StreamResampler

RATE_HZ = 44_100


def damaged_stereo() -> np.ndarray:
    """[frames, 2]: a sine, a NaN/inf burst on one channel, a clipped stretch on both."""
    t = np.arange(3 * RATE_HZ) / RATE_HZ
    audio = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.cos(2 * np.pi * 440 * t)], axis=1)
    audio = audio.astype(np.float32)
    audio[RATE_HZ : RATE_HZ + 1000, 0] = np.nan
    audio[RATE_HZ + 1000 : RATE_HZ + 1010, 0] = np.inf
    audio[RATE_HZ + 1010 : RATE_HZ + 1020, 0] = -np.inf
    loud = slice(2 * RATE_HZ, 2 * RATE_HZ + 4410)
    audio[loud] = np.clip(audio[loud] * 8.0, -1.0, 1.0)
    return audio


def expected_counts(audio: np.ndarray) -> tuple[int, int]:
    finite = np.isfinite(audio)
    clean = np.where(finite, audio, 0.0)
    return int((~finite).sum()), int((np.abs(clean) >= CLIP_LEVEL).sum())


@pytest.mark.parametrize("block", [1, 7, 256, 4096, None])
def test_counts_and_output_do_not_depend_on_the_block_size(block: int | None) -> None:
    audio = damaged_stereo()
    guard = InputGuard()
    step = block or audio.shape[0]
    out = np.concatenate([guard.push(audio[i : i + step]) for i in range(0, audio.shape[0], step)])
    nonfinite, clipped = expected_counts(audio)
    assert guard.nonfinite_samples == nonfinite == 1020
    assert guard.clipped_samples == clipped > 1000
    assert guard.samples == audio.size
    assert out.dtype == np.float32 and out.shape == audio.shape
    assert np.isfinite(out).all()
    bad = ~np.isfinite(audio)
    assert (out[bad] == 0).all()
    np.testing.assert_array_equal(out[~bad], audio[~bad])


def test_the_callers_array_is_left_alone() -> None:
    audio = damaged_stereo()
    before = audio.copy()
    guard = InputGuard()
    out = guard.push(audio)
    np.testing.assert_array_equal(audio, before)  # NaN compares equal here
    assert out is not audio
    clean = np.zeros((16, 2), np.float32)
    assert guard.push(clean) is clean  # nothing to fix: no copy


def test_reset_and_the_streaming_shape() -> None:
    guard = InputGuard()
    guard.push(damaged_stereo())
    assert guard.latency_samples == 0 and guard.flush().size == 0
    guard.reset()
    assert (guard.samples, guard.nonfinite_samples, guard.clipped_samples) == (0, 0, 0)
    with pytest.raises(ConfigError):
        InputGuard(clip_level=0.0)


def test_soxr_recovers_from_nan_by_itself_but_the_windows_around_it_do_not() -> None:
    """Why the guard sits before the resampler: one NaN spoils ~a filter length of output.

    soxr's state is not poisoned for good (the output is finite again soon
    after the burst), but every 4 s window overlapping the spoiled stretch
    would carry NaN to the encoder, which refuses it.
    """
    mono = damaged_stereo()[:, 0].copy()
    resampler = StreamResampler(in_rate_hz=RATE_HZ)
    raw = np.concatenate([resampler.push(mono[i : i + 1024]) for i in range(0, mono.size, 1024)])
    spoiled = np.flatnonzero(~np.isfinite(raw))
    burst_start_s, burst_end_s = 1.0, (RATE_HZ + 1020) / RATE_HZ
    assert spoiled.size > 0
    assert spoiled[0] / 16_000 > burst_start_s - 0.05
    assert spoiled[-1] / 16_000 < burst_end_s + 0.05  # finite again within 50 ms
    assert np.isfinite(raw[int((burst_end_s + 0.05) * 16_000) :]).all()

    guarded = StreamResampler(in_rate_hz=RATE_HZ)
    guard = InputGuard()
    out = np.concatenate(
        [guarded.push(guard.push(mono[i : i + 1024])) for i in range(0, mono.size, 1024)]
    )
    assert np.isfinite(out).all()
