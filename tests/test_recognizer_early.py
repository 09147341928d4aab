"""Early windows: the live recognizer decides without waiting for soxr's held-back samples."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DemoLibrary

from synesthete.clients.app import Engine, open_engine
from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.events import Candidates, Event, NowPlaying

BLOCK = 512


@pytest.fixture(scope="module")
def engine(demo_library: DemoLibrary) -> Engine:
    return open_engine(index_dir=demo_library.index)


def _replay(
    engine: Engine, audio: np.ndarray, rate_hz: int, *, early: bool
) -> list[tuple[int, Event]]:
    """Push ``audio`` in blocks; each event comes with the input frames pushed so far."""
    recognizer = engine.recognizer(stream="test", input_rate_hz=rate_hz, early_windows=early)
    out: list[tuple[int, Event]] = []
    for start in range(0, audio.shape[0], BLOCK):
        block = audio[start : start + BLOCK]
        out.extend((start + block.shape[0], e) for e in recognizer.push(block))
    return out


def test_early_windows_decide_as_soon_as_the_window_is_in(
    engine: Engine, demo_library: DemoLibrary
) -> None:
    rate = demo_library.rate_hz
    audio = demo_library.audio(3)[int(5 * rate) : int(25 * rate)]
    early = _replay(engine, audio, rate, early=True)
    exact = _replay(engine, audio, rate, early=False)

    early_windows = [(pushed, e) for pushed, e in early if isinstance(e, Candidates)]
    exact_windows = [(pushed, e) for pushed, e in exact if isinstance(e, Candidates)]
    # The excerpt ends exactly on a window's end: only early windows decide it.
    assert len(early_windows) == len(exact_windows) + 1 >= 8
    block_s = BLOCK / rate
    lags_early = [pushed / rate - e.t for pushed, e in early_windows]
    lags_exact = [pushed / rate - e.t for pushed, e in exact_windows]
    # Early: the window is decided in the very block that completes it.
    assert all(0.0 <= lag < block_s + 1e-9 for lag in lags_early), lags_early
    # Exact: soxr HQ holds back ~30 ms at 22.05 kHz, so windows wait for more blocks.
    assert float(np.median(lags_exact)) > float(np.median(lags_early)) + 0.015
    assert [e.t for _, e in early_windows[:-1]] == [e.t for _, e in exact_windows]

    # Same decisions: the estimate only touches the window's last few milliseconds.
    def playing(events: list[tuple[int, Event]]) -> list[tuple[int, float]]:
        return [(e.track.id, round(e.offset_s, 1)) for _, e in events if isinstance(e, NowPlaying)]

    early_playing, exact_playing = playing(early), playing(exact)
    assert early_playing and early_playing[-1][0] == exact_playing[-1][0]
    assert len(early_playing) >= len(exact_playing)
    assert [i for i, _ in early_playing[: len(exact_playing)]] == [i for i, _ in exact_playing]
    for (_, a), (_, b) in zip(early_playing, exact_playing, strict=False):
        assert abs(a - b) <= 0.1


def test_early_window_embeddings_match_the_exact_ones(
    engine: Engine, demo_library: DemoLibrary
) -> None:
    from synesthete.stream.resample import StreamResampler
    from synesthete.stream.windowing import Windower

    rate = demo_library.rate_hz
    audio = demo_library.audio(5)[: int(20 * rate)]
    exact_resampler = StreamResampler(in_rate_hz=rate)
    exact = Windower(hop_s=2.0).push(
        np.concatenate([exact_resampler.push(audio), exact_resampler.flush()])
    )
    resampler, windower = StreamResampler(in_rate_hz=rate), Windower(hop_s=2.0)
    early = []
    for start in range(0, audio.shape[0], BLOCK):
        early.extend(windower.push(resampler.push(audio[start : start + BLOCK])))
        missing = windower.samples_missing
        if 0 < missing <= resampler.latency_samples:
            window = windower.complete_early(resampler.estimate_pending())
            assert window is not None
            early.append(window)
    assert len(early) == len(exact) >= 8
    assert all(w.samples.shape == (WINDOW_SAMPLES,) for w in early)
    a = engine.encoder.embed(np.stack([w.samples for w in early]))
    b = engine.encoder.embed(np.stack([w.samples for w in exact]))
    cosine = np.sum(a * b, axis=1)
    assert cosine.min() > 0.999, cosine
    held = int(0.05 * SAMPLE_RATE_HZ)
    for e, x in zip(early, exact, strict=True):
        np.testing.assert_array_equal(e.samples[:-held], x.samples[:-held])
