"""The segment path: a trained encoder's front end run once over many windows gives the
same vectors as the waveform path, and an index built through it holds the same curves."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import make_tone_track, write_tone_file

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.index import builder
from synesthete.index.builder import build_index
from synesthete.index.compact import FULL_LAYOUT
from synesthete.index.config import IndexConfig
from synesthete.index.store import Library
from synesthete.inference.config import EncoderConfig, packaged_model_path
from synesthete.inference.encoder import SegmentEncoder
from synesthete.inference.torchscript import SEGMENT_ATOL, TorchScriptEncoder


class WindowsOnly:
    """The same encoder seen through the plain ``Encoder`` protocol: window by window."""

    def __init__(self, inner: TorchScriptEncoder) -> None:
        self._inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.sample_rate_hz, self.window_samples = inner.sample_rate_hz, inner.window_samples

    def embed(self, windows):
        return self._inner.embed(windows)


@pytest.fixture(scope="module")
def encoder():
    return TorchScriptEncoder(config=EncoderConfig(device="cpu"))


def music(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tones = make_tone_track(seed=seed, duration_s=seconds)
    return (tones + 0.02 * rng.standard_normal(tones.shape[0])).astype(np.float32)


@pytest.mark.parametrize("hop_s", [0.5, 1.0, 2.0])
def test_segment_vectors_equal_the_waveform_path(encoder, hop_s):
    hop = int(hop_s * SAMPLE_RATE_HZ)
    assert isinstance(encoder, SegmentEncoder) and encoder.supports_segments(hop)
    audio = music(30.0, seed=3)
    n = 1 + (audio.shape[0] - WINDOW_SAMPLES) // hop
    windows = np.stack([audio[k * hop : k * hop + WINDOW_SAMPLES] for k in range(n)])
    fast = encoder.embed_segment(audio, hop_samples=hop, n_windows=n)
    np.testing.assert_allclose(fast, encoder.embed(windows), atol=SEGMENT_ATOL, rtol=0)
    # Fewer windows than the audio holds: the first ones, the same.
    np.testing.assert_allclose(
        encoder.embed_segment(audio, hop_samples=hop, n_windows=2), fast[:2], atol=SEGMENT_ATOL
    )


def test_other_models_and_hops_embed_window_by_window(encoder):
    assert not encoder.supports_segments(8001)  # not a whole number of front-end hops
    path = packaged_model_path("baseline-v1")
    assert path is not None
    baseline = TorchScriptEncoder(config=EncoderConfig(model_path=path, device="cpu"))
    assert not baseline.supports_segments(8000)


def test_an_index_built_through_segments_holds_the_waveform_paths_curves(
    encoder, tmp_path, monkeypatch
):
    # Small segments, so a 21 s track spans several (and one partial) of them.
    monkeypatch.setattr(builder, "SEGMENT_S", 3.5)  # 7 windows at the 0.5 s hop
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    write_tone_file(music_dir / "a.flac", seed=1, duration_s=21.3)
    write_tone_file(music_dir / "b.wav", seed=2, duration_s=4.2)  # one window; variants near one
    config = IndexConfig(speed_variants=(0.94, 1.06))
    build_index(tmp_path / "fast", [music_dir], encoder=encoder, config=config, layout=FULL_LAYOUT)
    build_index(
        tmp_path / "slow",
        [music_dir],
        encoder=WindowsOnly(encoder),
        config=config,
        layout=FULL_LAYOUT,
    )
    with Library.open(tmp_path / "fast") as fast, Library.open(tmp_path / "slow") as slow:
        assert [r.slices for r in fast.records()] == [r.slices for r in slow.records()]
        np.testing.assert_allclose(fast.windows, slow.windows, atol=SEGMENT_ATOL, rtol=0)
