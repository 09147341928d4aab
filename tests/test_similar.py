"""Sounds like: track summaries and nearest tracks, exclusions and duplicates."""

from __future__ import annotations

import numpy as np

from synesthete.index.similar import TrackSummaries


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_nearest_by_mean_excludes_identified_track_and_its_duplicates() -> None:
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((4, 16)))
    windows = np.concatenate([unit(c + 0.05 * rng.standard_normal((10, 16))) for c in centres])
    # Track 13 is a byte-identical copy of track 10 (same content key).
    summaries = TrackSummaries.from_windows(
        windows=np.concatenate([windows, windows[:10]]),
        track_ids=[10, 11, 12, 14, 13],
        starts=[0, 10, 20, 30, 40],
        counts=[10, 10, 10, 10, 10],
        content_keys=["a", "b", "c", "d", "a"],
    )
    np.testing.assert_allclose(np.linalg.norm(summaries.means, axis=1), 1.0, atol=1e-6)
    live = unit(centres[0] + 0.05 * rng.standard_normal((3, 16)))
    ranked = summaries.nearest(live, k=5)
    assert {ranked[0][0], ranked[1][0]} == {10, 13}
    assert ranked[0][1] < ranked[2][1] / 3
    others = summaries.nearest(live, k=5, exclude_track_ids=[10])
    assert [t for t, _ in others] and not {10, 13} & {t for t, _ in others}
    assert [d for _, d in others] == sorted(d for _, d in others)


def test_empty_inputs() -> None:
    summaries = TrackSummaries.from_windows(
        windows=np.zeros((0, 8), dtype=np.float32), track_ids=[], starts=[], counts=[]
    )
    assert summaries.nearest(np.ones((1, 8), dtype=np.float32), k=3) == []
