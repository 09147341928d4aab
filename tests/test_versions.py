"""Finding versions of one piece of music: constructed curves, an exact neighbor source.

Tracks are smooth curves on the unit sphere sampled at the index hop (as in
test_matcher.py). A faster copy samples the same curve 7 % further along per
window, an edit is a slice, and a shuffle has every window of the original in
another order: near neighbors everywhere, no ordered path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from synesthete.errors import ConfigError
from synesthete.index.annoy_index import BruteForceCandidates, RowMap
from synesthete.index.store import GenerationWriter, Library, TrackRecord
from synesthete.index.versions import VersionConfig, find_versions, version_groups

DIM = 32
INDEX_HOP_S = 0.5
WINDOWS = 240  # two minutes

Curve = npt.NDArray[np.float32]


def smooth(seed: int, times_s: npt.NDArray[np.float64]) -> Curve:
    rng = np.random.default_rng(seed)
    amplitudes = rng.standard_normal((16, DIM))
    rates = rng.uniform(0.04, 0.35, 16)
    phases = rng.uniform(0.0, 2.0 * np.pi, 16)
    v = np.sin(np.outer(times_s, rates) + phases) @ amplitudes
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def noisy(curve: Curve, *, seed: int, sigma: float = 0.03) -> Curve:
    v = curve + np.random.default_rng(seed).standard_normal(curve.shape) * sigma
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def times(n: int = WINDOWS, *, tempo: float = 1.0) -> npt.NDArray[np.float64]:
    return tempo * (np.arange(n) * INDEX_HOP_S + 2.0)


def search(curves: dict[int, Curve]) -> tuple[BruteForceCandidates, dict[int, Curve]]:
    ids = sorted(curves)
    counts = np.array([curves[t].shape[0] for t in ids], dtype=np.int64)
    row_map = RowMap(
        track_ids=np.array(ids, dtype=np.int64),
        window_start=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        window_count=counts,
    )
    vectors = np.concatenate([curves[t] for t in ids])
    return BruteForceCandidates(vectors=vectors, row_map=row_map), curves


def find(curves: dict[int, Curve], **config: object) -> list[tuple[int, int]]:
    source, _ = search(curves)
    pairs = find_versions(
        track_ids=sorted(curves),
        curve=lambda track, variant: curves[track],
        n_variants=1,
        source=source,
        index_hop_s=INDEX_HOP_S,
        config=VersionConfig(**config),  # type: ignore[arg-type]
    )
    return [(p.track_a, p.track_b) for p in pairs]


def test_a_faster_copy_and_an_edit_are_versions_and_other_music_is_not() -> None:
    original = smooth(1, times())
    curves = {
        1: original,
        2: noisy(smooth(1, times(tempo=1.07)), seed=2),  # 7 % faster, as a "_fast" copy
        3: noisy(original[60:180], seed=3),  # a one-minute edit
        4: smooth(4, times()),
        5: smooth(5, times(100)),
    }
    assert find(curves) == [(1, 2), (1, 3), (2, 3)]


def test_coverage_is_measured_both_ways() -> None:
    original = smooth(1, times())
    source, curves = search({1: original, 3: noisy(original[60:180], seed=3)})
    (pair,) = find_versions(
        track_ids=[1, 3],
        curve=lambda track, variant: curves[track],
        n_variants=1,
        source=source,
        index_hop_s=INDEX_HOP_S,
    )
    assert pair.coverage_b == 1.0  # all of the edit is in the original
    assert 0.3 < pair.coverage_a < 0.7  # half of the original is in the edit


def test_the_same_windows_in_another_order_are_not_a_version() -> None:
    """Every window of the shuffle has an exact neighbor in the original (a min point
    distance of zero), but no chunk of it follows the original in order."""
    original = smooth(1, times())
    shuffled = original[np.random.default_rng(0).permutation(WINDOWS)]
    assert find({1: original, 2: shuffled, 4: smooth(4, times())}) == []


def test_version_groups_are_connected_components() -> None:
    groups = version_groups([1, 2, 3, 4, 5, 6], [(2, 5), (5, 6), (9, 1)])
    assert groups == {1: 1, 2: 2, 3: 3, 4: 4, 5: 2, 6: 2}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"chunk_windows": 0}, "chunk_windows"),
        ({"min_vote_fraction": 0.0}, "min_vote_fraction"),
        ({"min_coverage": 1.5}, "min_coverage"),
        ({"max_frechet": 0.0}, "max_frechet"),
        ({"live_hop_s": -2.0}, "live_hop_s"),
    ],
)
def test_bad_settings_are_config_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VersionConfig(**overrides)  # type: ignore[arg-type]


def test_version_distances_scale_with_the_encoders_and_the_index_records_its_scale(
    tmp_path: Path,
) -> None:
    """A projected encoder's distances run about a fifth of encoder-v3's (its calibration's
    ``distance_scale``); at encoder-v3's version distance every pair of pieces of one
    synthesizer counted as versions of each other. Here a copy at a distance that is a
    version for encoder-v3 is none for an encoder whose scale is 0.2."""
    original = smooth(1, times())
    curves = {1: original, 2: noisy(original, seed=2, sigma=0.04), 3: smooth(3, times())}
    assert find(curves) == [(1, 2)]
    scaled = VersionConfig().scaled(0.2)
    assert scaled.max_frechet == pytest.approx(0.2 * VersionConfig().max_frechet)
    assert find(curves, max_frechet=scaled.max_frechet) == []
    with pytest.raises(ConfigError, match="distance_scale"):
        VersionConfig().scaled(0.0)
    # The writer reads the scale from the index meta (the builder writes the encoder's).
    for meta, expected in (({}, frozenset({2})), ({"distance_scale": "0.2"}, frozenset())):
        index_dir = tmp_path / f"index-{len(meta)}"
        with GenerationWriter(index_dir=index_dir, dim=DIM) as writer:
            for t, curve in curves.items():
                record = TrackRecord(
                    id=t, path=f"/music/{t}.flac", title=f"Track {t}", artist=None, album=None,
                    duration_s=WINDOWS * INDEX_HOP_S + 3.5, content_hash=f"hash{t}",
                    window_start=0, window_count=0, added="2026-12-07T00:00:00+00:00",
                )  # fmt: skip
                writer.add_track(record, curve)
            writer.commit(
                meta={"encoder_name": "walk-v1", "index_hop_s": str(INDEX_HOP_S), **meta},
                n_trees=8,
                seed=5,
            )
        with Library.open(index_dir) as library:
            assert library.versions(1) == expected
