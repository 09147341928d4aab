"""A library's separation: how close its pieces come to one another (index/separation.py).

Real Annoy and sqlite files through ``GenerationWriter`` and ``Library``; the
distances checked against brute force; the matcher's operating distance moved by it
through ``matcher_config_for``, as ``open_engine`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from synesthete.clients.app import matcher_config_for
from synesthete.index.annoy_index import BruteForceCandidates, RowMap
from synesthete.index.config import Calibration
from synesthete.index.separation import nearest_other_track, separation
from synesthete.index.store import GenerationWriter, Library, TrackRecord

DIM = 16
WINDOWS = 120  # a minute at the 0.5 s index hop
Curve = npt.NDArray[np.float32]


def unit(v: npt.NDArray[np.float64]) -> Curve:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def walk(seed: int, *, centre: npt.NDArray[np.float64], spread: float) -> Curve:
    """A track: unit vectors within ``spread`` of ``centre``, each window its own draw
    around the track's own place (so other tracks come among a window's nearest)."""
    rng = np.random.default_rng(seed)
    place = rng.normal(0.0, 1.0, DIM)
    return unit(centre + spread * unit(place + 1.5 * rng.normal(0.0, 1.0, (WINDOWS, DIM))))


def library(spread: float, *, tracks: int = 8) -> dict[int, Curve]:
    centre = unit(np.random.default_rng(99).normal(size=DIM)).astype(np.float64)
    return {t: walk(t, centre=centre, spread=spread) for t in range(1, tracks + 1)}


def exact_nearest_other(curves: dict[int, Curve], stride: int = 4) -> npt.NDArray[np.float64]:
    found = []
    for t, own in curves.items():
        others = np.concatenate([c for u, c in curves.items() if u != t])
        gram = own[::stride].astype(np.float64) @ others.T.astype(np.float64)
        found.append(np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram.max(axis=1))))
    return np.concatenate(found)


def write(index_dir: Path, curves: dict[int, Curve], *, meta: dict[str, str]) -> Library:
    with GenerationWriter(index_dir=index_dir, dim=DIM) as writer:
        for track_id, own in curves.items():
            record = TrackRecord(
                id=track_id,
                path=f"/music/{track_id:02d}.flac",
                title=f"Track {track_id}",
                artist=None,
                album=None,
                duration_s=WINDOWS * 0.5 + 3.5,
                content_hash=f"hash{track_id}",
                window_start=0,
                window_count=0,
                added="2026-12-07T00:00:00+00:00",
            )
            writer.add_track(record, own)
        writer.commit(
            meta={"encoder_name": "walk-v1", "index_hop_s": "0.5", **meta}, n_trees=8, seed=5
        )
    return Library.open(index_dir)


def test_nearest_other_track_matches_brute_force_and_skips_versions() -> None:
    curves = library(0.5)
    ids = sorted(curves)
    counts = np.array([curves[t].shape[0] for t in ids], dtype=np.int64)
    source = BruteForceCandidates(
        vectors=np.concatenate([curves[t] for t in ids]),
        row_map=RowMap(
            track_ids=np.array(ids, dtype=np.int64),
            window_start=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
            window_count=counts,
        ),
    )
    found = nearest_other_track(
        track_ids=ids, curve=lambda t, v: curves[t], source=source, index_hop_s=0.5, versions={}
    )
    seen = np.isfinite(found)  # inf: 64 windows of its own track came nearer
    assert seen.mean() > 0.5
    assert np.allclose(found[seen], exact_nearest_other(curves)[seen], atol=1e-5)
    assert np.all(found[~seen] > np.percentile(found[seen], 10))
    # A copy of track 1 as track 9: its nearest other track is at 0 unless it is a version.
    curves[9] = curves[1].copy()
    ids.append(9)
    source = BruteForceCandidates(
        vectors=np.concatenate([curves[t] for t in ids]),
        row_map=RowMap(
            track_ids=np.array(ids, dtype=np.int64),
            window_start=np.arange(len(ids), dtype=np.int64) * WINDOWS,
            window_count=np.full(len(ids), WINDOWS, dtype=np.int64),
        ),
    )

    def nearest(versions: dict[int, frozenset[int]]) -> npt.NDArray[np.float64]:
        return nearest_other_track(
            track_ids=ids, curve=lambda t, v: curves[t], source=source, index_hop_s=0.5,
            versions=versions,
        )  # fmt: skip

    assert float(nearest({}).min()) < 1e-3
    assert float(nearest({1: frozenset({9}), 9: frozenset({1})}).min()) > 0.05
    assert separation(np.arange(50.0)) is None  # too few distances to say
    assert separation(np.arange(1000.0)) == 9.0
    assert separation(np.full(1000, np.inf)) is None


def test_an_index_records_its_separation_and_a_close_library_has_a_smaller_one(
    tmp_path: Path,
) -> None:
    wide, close = library(1.0), library(0.2)
    with (
        write(tmp_path / "wide", wide, meta={}) as a,
        write(tmp_path / "close", close, meta={}) as b,
    ):
        # Annoy may miss a nearest window, never find one nearer than the truth.
        for lib, curves in ((a, wide), (b, close)):
            exact = float(np.percentile(exact_nearest_other(curves), 1))
            assert lib.separation is not None and exact - 1e-6 <= lib.separation <= 1.4 * exact
        assert b.separation < 0.5 * a.separation
    # One track says nothing.
    with write(tmp_path / "one", {1: wide[1]}, meta={}) as one:
        assert one.separation is None


def test_a_distance_scale_in_the_meta_scales_how_close_versions_must_come(tmp_path: Path) -> None:
    """Tracks of one style squeezed together, as a projected encoder's distances are
    (about a fifth of encoder-v3's): at encoder-v3's version distance every pair is a
    "version"; at the scale the index records only the real copy is."""
    curves = library(0.12)
    curves[9] = unit(curves[2] + np.random.default_rng(3).normal(0, 0.004, curves[2].shape))
    with write(tmp_path / "v3-scale", curves, meta={}) as unscaled:
        assert len(unscaled.versions(1)) >= 3
    with write(tmp_path / "scaled", curves, meta={"distance_scale": "0.2"}) as scaled:
        assert scaled.meta["distance_scale"] == "0.2"
        assert scaled.versions(2) == frozenset({9}) and scaled.versions(1) == frozenset()


def test_the_operating_distance_moves_in_as_the_library_is_closer_than_val() -> None:
    fitted = {"bias": 21.18, "w_frechet": -153.86, "w_margin": 0.0, "w_windows": 0.0}
    fitted |= {"shift": 1.18, "distance_scale": 0.2, "fitted_separation": 0.125}
    plain = matcher_config_for(fitted, index_hop_s=0.5)
    at = plain.calibration.operating_distance(horizon_windows=plain.horizon_windows)
    assert at == pytest.approx((21.18 - 1.18) / 153.86, abs=1e-6)
    # A library as varied as the one the calibration was fitted on, or more, keeps it;
    # so does a model whose calibration does not say what that library's was.
    for spread in (0.125, 0.2):
        kept = matcher_config_for(fitted, index_hop_s=0.5, separation=spread)
        assert kept.calibration == plain.calibration
    unsaid = {k: v for k, v in fitted.items() if k != "fitted_separation"}
    assert matcher_config_for(unsaid, index_hop_s=0.5, separation=0.05).calibration == (
        plain.calibration
    )
    close = matcher_config_for(fitted, index_hop_s=0.5, separation=0.1)
    moved = close.calibration.operating_distance(horizon_windows=close.horizon_windows)
    assert moved == pytest.approx(at * 0.1 / 0.125, abs=1e-6)
    # The whole curve moves: what the fitted one said at d, the moved one says nearer.
    for d in (0.05, 0.11, 0.15):
        a = plain.calibration.confidence(frechet=d, margin=0.0, n_windows=8, horizon_windows=8)
        b = close.calibration.confidence(
            frechet=d - (at - moved), margin=0.0, n_windows=8, horizon_windows=8
        )
        assert a == pytest.approx(b, abs=1e-9)
    # The gated form too: the margin gate stays as it was.
    gated = Calibration(bias=3.0, w_frechet=-12.0, w_margin=0.0, gate_bias=1.0, gate_margin=8.0)
    wider = {**gated.to_dict(), "fitted_separation": 0.4}
    config = matcher_config_for(wider, index_hop_s=0.5, separation=0.2)
    fitted_at = gated.operating_distance(horizon_windows=8)
    assert config.calibration.operating_distance(horizon_windows=8) == pytest.approx(fitted_at / 2)
    assert config.calibration.gate_margin == gated.gate_margin
