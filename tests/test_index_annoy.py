"""Annoy candidates against the exact brute force: recall, distances, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from synesthete.errors import ConfigError, LibraryError
from synesthete.index.annoy_index import (
    AnnoyCandidates,
    BruteForceCandidates,
    RowMap,
    build_annoy,
)
from synesthete.index.config import IndexConfig
from synesthete.index.protocols import CandidateSource, Neighbor

DIM = 32
K = 10


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_library(seed=0, n_tracks=40, windows=100):
    """Random unit vectors, ``n_tracks`` tracks of ``windows`` rows each (ids 10, 20, ...)."""
    rng = np.random.default_rng(seed)
    vectors = unit(rng.standard_normal((n_tracks * windows, DIM)))
    counts = np.full(n_tracks, windows, dtype=np.int64)
    row_map = RowMap(
        track_ids=np.arange(1, n_tracks + 1, dtype=np.int64) * 10,
        window_start=np.arange(n_tracks, dtype=np.int64) * windows,
        window_count=counts,
    )
    return vectors, row_map


def near_queries(vectors, n, seed=1, noise=0.3):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, vectors.shape[0], size=n)
    return unit(vectors[rows] + noise * rng.standard_normal((n, DIM)) / np.sqrt(DIM))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    vectors, row_map = random_library()
    path = tmp_path_factory.mktemp("annoy") / "windows.ann"
    config = IndexConfig()
    build_annoy(vectors, n_trees=config.n_trees, seed=config.seed, path=path)
    return vectors, row_map, path


def test_row_map_lookup_is_vectorised():
    row_map = RowMap(
        track_ids=np.array([7, 3, 9]),
        window_start=np.array([0, 5, 6]),
        window_count=np.array([5, 1, 4]),
    )
    tracks, windows, variants = row_map.lookup(np.array([0, 4, 5, 6, 9]))
    assert tracks.tolist() == [7, 7, 3, 9, 9]
    assert windows.tolist() == [0, 4, 0, 0, 3]
    assert variants.tolist() == [0, 0, 0, 0, 0]
    # Speed variants of one track are curves of their own, each counting from 0.
    with_variants = RowMap(
        track_ids=np.array([7, 7, 3]),
        window_start=np.array([0, 5, 9]),
        window_count=np.array([5, 4, 2]),
        variants=np.array([0, 1, 0]),
    )
    tracks, windows, variants = with_variants.lookup(np.array([4, 5, 8, 9, 10]))
    assert tracks.tolist() == [7, 7, 7, 3, 3]
    assert windows.tolist() == [4, 0, 3, 0, 1]
    assert variants.tolist() == [0, 1, 1, 0, 0]
    with pytest.raises(LibraryError):
        row_map.lookup(np.array([10]))
    with pytest.raises(LibraryError):
        RowMap(
            track_ids=np.array([1, 2]),
            window_start=np.array([0, 3]),
            window_count=np.array([2, 2]),
        )


def test_recall_at_10_against_brute_force(built):
    vectors, row_map, path = built
    config = IndexConfig()
    annoy = AnnoyCandidates(
        ann_path=path,
        dim=DIM,
        n_trees=config.n_trees,
        row_map=row_map,
        search_k_factor=config.search_k_factor,
    )
    exact = BruteForceCandidates(vectors=vectors, row_map=row_map)
    queries = near_queries(vectors, 200)
    found = annoy.query(queries, k=K)
    truth = exact.query(queries, k=K)
    hits = sum(
        len({(n.track_id, n.window_index) for n in f} & {(n.track_id, n.window_index) for n in t})
        for f, t in zip(found, truth, strict=True)
    )
    assert hits / (K * len(queries)) >= 0.9
    annoy.close()


def test_neighbors_carry_track_window_and_euclidean_distance(built):
    vectors, row_map, path = built
    annoy = AnnoyCandidates(ann_path=path, dim=DIM, n_trees=16, row_map=row_map)
    queries = near_queries(vectors, 20, seed=5)
    for query, neighbors in zip(queries, annoy.query(queries, k=K), strict=True):
        assert len(neighbors) == K
        assert all(isinstance(n, Neighbor) for n in neighbors)
        distances = [n.distance for n in neighbors]
        assert distances == sorted(distances)
        for n in neighbors:
            row = (n.track_id // 10 - 1) * 100 + n.window_index
            assert 0 <= n.window_index < 100
            expected = float(np.linalg.norm(vectors[row] - query))
            assert n.distance == pytest.approx(expected, abs=1e-4)
    annoy.close()


def test_brute_force_is_exact_and_self_distance_is_zero(built):
    vectors, row_map, _ = built
    exact = BruteForceCandidates(vectors=vectors, row_map=row_map)
    [[first, *_]] = exact.query(vectors[123:124], k=3)
    assert (first.track_id, first.window_index) == (20, 23)
    assert first.distance == pytest.approx(0.0, abs=1e-6)
    full = exact.query(vectors[:2], k=10_000)
    assert [len(r) for r in full] == [vectors.shape[0]] * 2


def test_both_satisfy_the_candidate_source_protocol(built):
    vectors, row_map, path = built
    sources: list[CandidateSource] = [
        BruteForceCandidates(vectors=vectors, row_map=row_map),
        AnnoyCandidates(ann_path=path, dim=DIM, n_trees=16, row_map=row_map),
    ]
    for source in sources:
        assert len(source.query(vectors[:3], k=2)) == 3


def test_same_seed_gives_identical_index_and_results(tmp_path):
    vectors, row_map = random_library(seed=3)
    queries = near_queries(vectors, 50, seed=9)
    results = []
    for name in ("a.ann", "b.ann"):
        build_annoy(vectors, n_trees=16, seed=20261122, path=tmp_path / name)
        source = AnnoyCandidates(ann_path=tmp_path / name, dim=DIM, n_trees=16, row_map=row_map)
        results.append(source.query(queries, k=K))
        source.close()
    assert results[0] == results[1]
    assert (tmp_path / "a.ann").read_bytes() == (tmp_path / "b.ann").read_bytes()


def test_bad_queries_and_mismatched_index(built):
    vectors, row_map, path = built
    annoy = AnnoyCandidates(ann_path=path, dim=DIM, n_trees=16, row_map=row_map)
    with pytest.raises(ConfigError):
        annoy.query(np.zeros((2, DIM + 1), dtype=np.float32), k=3)
    with pytest.raises(ConfigError):
        annoy.query(vectors[:1], k=0)
    annoy.close()
    with pytest.raises(LibraryError, match="closed"):
        annoy.query(vectors[:1], k=1)
    short_map = RowMap(
        track_ids=np.array([1]), window_start=np.array([0]), window_count=np.array([5])
    )
    with pytest.raises(LibraryError, match="items"):
        AnnoyCandidates(ann_path=path, dim=DIM, n_trees=16, row_map=short_map)


def test_the_compact_ann_searches_more_nodes_as_the_catalog_grows(tmp_path):
    """``search_k`` grows with the square root of the items past 4096 (capped), so recall
    holds at 10k tracks (bench/scale-*.json); a fixed one is still available."""
    from synesthete.index.annoy_index import (
        MAX_SEARCH_K_SCALE,
        SEARCH_K_REFERENCE_ITEMS,
        AnnoyItems,
        items_search_k,
    )

    def search_k(n_items, scaled=True):
        return items_search_k(k=32, n_trees=4, factor=8, n_items=n_items, scaled=scaled)

    assert search_k(SEARCH_K_REFERENCE_ITEMS) == search_k(100) == 32 * 4 * 8
    assert search_k(4 * SEARCH_K_REFERENCE_ITEMS) == 2 * 32 * 4 * 8
    assert search_k(250_000) > search_k(25_000) > search_k(2_500)
    assert search_k(10**12) == round(32 * 4 * 8 * MAX_SEARCH_K_SCALE)
    assert search_k(2_500_000, scaled=False) == 32 * 4 * 8

    # More nodes find more of the true neighbours (brute force) of the same queries.
    rng = np.random.default_rng(3)
    vectors = unit(rng.standard_normal((20_000, 8)))
    path = tmp_path / "items.ann"
    build_annoy(vectors, n_trees=2, seed=1, path=path)
    queries = unit(vectors[:200] + 0.2 * rng.standard_normal((200, 8)))
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recalls = []
    for scaled in (False, True):
        items = AnnoyItems(
            ann_path=path,
            dim=8,
            n_trees=2,
            n_items=20_000,
            search_k_factor=1,
            scale_search_k=scaled,
        )
        assert items.search_k(10) == items_search_k(
            k=10, n_trees=2, factor=1, n_items=20_000, scaled=scaled
        )
        found = items.query_items(queries, k=10)
        items.close()
        recalls.append(
            np.mean(
                [
                    len(set(f.tolist()) & set(e.tolist())) / 10
                    for f, e in zip(found, exact, strict=True)
                ]
            )
        )
    assert recalls[1] > recalls[0]
