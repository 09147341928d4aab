"""Nearest library windows: an Annoy adapter and an exact numpy reference.

Both implement ``protocols.CandidateSource``. Rows are the rows of the
generation's ``windows.npy`` (Annoy item i == row i); ``RowMap`` turns rows
into (track id, window index, speed variant).

Annoy's angular distance is ``sqrt(2 - 2 cos)``, which is exactly the
Euclidean distance between the unit vectors, the scale ``Neighbor.distance``
uses; no conversion beyond clipping rounding noise is needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from synesthete.errors import ConfigError, LibraryError

from .config import DEFAULT_SEARCH_K_FACTOR
from .protocols import Neighbor

ANNOY_METRIC: Final = "angular"


class RowMap:
    """Vectorised row -> (track id, window index, speed variant) lookup over concatenated curves.

    One entry per curve: ``track_ids``, ``window_start``, ``window_count`` and
    ``variants`` are ``[C]`` with ``window_start`` strictly increasing and
    contiguous (each curve's rows follow the previous curve's). ``variants``
    (default all 0) says which speed variant of its track a curve is.
    """

    def __init__(
        self,
        *,
        track_ids: npt.NDArray[np.int64],
        window_start: npt.NDArray[np.int64],
        window_count: npt.NDArray[np.int64],
        variants: npt.NDArray[np.int64] | None = None,
    ) -> None:
        if variants is None:
            variants = np.zeros_like(track_ids)
        if not (track_ids.shape == window_start.shape == window_count.shape == variants.shape):
            raise LibraryError("row map arrays differ in length")
        if track_ids.ndim != 1:
            raise LibraryError("row map arrays must be one-dimensional")
        expected_start = np.concatenate([[0], np.cumsum(window_count)[:-1]]).astype(np.int64)
        if track_ids.size and (
            np.any(window_count < 1) or not np.array_equal(window_start, expected_start)
        ):
            raise LibraryError("track windows are not contiguous in windows.npy")
        self.track_ids = np.ascontiguousarray(track_ids, dtype=np.int64)
        self.window_start = np.ascontiguousarray(window_start, dtype=np.int64)
        self.window_count = np.ascontiguousarray(window_count, dtype=np.int64)
        self.variants = np.ascontiguousarray(variants, dtype=np.int64)
        self.n_rows = int(self.window_count.sum())

    def lookup(
        self, rows: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``rows [n]`` -> (track ids, window indices within their curve, variants), each [n]."""
        flat = np.asarray(rows, dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= self.n_rows):
            raise LibraryError(f"row out of range 0..{self.n_rows - 1}")
        slot = np.searchsorted(self.window_start, flat, side="right") - 1
        return self.track_ids[slot], flat - self.window_start[slot], self.variants[slot]

    def count_of(self, rows: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """``rows [n]`` -> the window count of each row's curve ``[n]``."""
        flat = np.asarray(rows, dtype=np.int64)
        slot = np.searchsorted(self.window_start, flat, side="right") - 1
        return self.window_count[slot]


def _to_neighbors(
    row_map: RowMap,
    rows: npt.NDArray[np.int64],
    distances: npt.NDArray[np.float32] | npt.NDArray[np.float64],
) -> list[Neighbor]:
    track_ids, window_indices, variants = row_map.lookup(rows)
    clipped = np.clip(distances, 0.0, 2.0)
    return [
        Neighbor(int(t), int(w), float(d), int(v))
        for t, w, d, v in zip(track_ids, window_indices, clipped, variants, strict=True)
    ]


def _check_queries(embeddings: npt.NDArray[np.float32], *, dim: int, k: int) -> None:
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise ConfigError(f"embeddings must be [n, {dim}], got shape {embeddings.shape}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")


class BruteForceCandidates:
    """Exact nearest windows by dot product; the reference for recall, fine for small libraries.

    ``vectors`` is ``[N, D]`` unit rows (a memory map is fine; it is read per query).
    """

    def __init__(self, *, vectors: npt.NDArray[np.float32], row_map: RowMap) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != row_map.n_rows:
            raise LibraryError(
                f"vectors {vectors.shape} do not match the row map ({row_map.n_rows} rows)"
            )
        self._vectors = vectors
        self._row_map = row_map
        self.dim = int(vectors.shape[1])

    def query_rows(
        self, embeddings: npt.NDArray[np.float32], *, k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Rows ``[n, k']`` and distances ``[n, k']`` (``k' = min(k, N)``), nearest first."""
        _check_queries(embeddings, dim=self.dim, k=k)
        k_eff = min(k, self._row_map.n_rows)
        queries = embeddings.astype(np.float32, copy=False)
        sims = queries @ np.asarray(self._vectors, dtype=np.float32).T  # [n, N]
        part = np.argpartition(-sims, k_eff - 1, axis=1)[:, :k_eff]
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        rows = np.take_along_axis(part, order, axis=1).astype(np.int64)
        # Distances from the difference, not sqrt(2 - 2 cos): that loses all
        # precision for near-identical vectors in float32.
        nearest = np.asarray(self._vectors[rows.ravel()], dtype=np.float32).reshape(
            rows.shape[0], rows.shape[1], self.dim
        )
        distances = np.linalg.norm(nearest - queries[:, None, :], axis=-1).astype(np.float32)
        return rows, distances

    def query(self, embeddings: npt.NDArray[np.float32], *, k: int) -> list[list[Neighbor]]:
        """``embeddings`` ``[n, D]`` -> n lists of ``min(k, N)`` neighbors, nearest first."""
        rows, distances = self.query_rows(embeddings, k=k)
        return [_to_neighbors(self._row_map, r, d) for r, d in zip(rows, distances, strict=True)]


class AnnoyCandidates:
    """Approximate nearest windows from a saved Annoy index (memory-mapped, not prefaulted).

    ``search_k = k * n_trees * search_k_factor`` nodes are inspected per query
    (see scripts/bench_annoy.py for the recall/latency trade-off). Blocking:
    call from the executor thread, never from the event loop.
    """

    def __init__(
        self,
        *,
        ann_path: str | os.PathLike[str],
        dim: int,
        n_trees: int,
        row_map: RowMap,
        search_k_factor: int = DEFAULT_SEARCH_K_FACTOR,
    ) -> None:
        if search_k_factor < 1:
            raise ConfigError(f"search_k_factor must be >= 1, got {search_k_factor}")
        self.dim = dim
        self.n_trees = n_trees
        self.search_k_factor = search_k_factor
        self._row_map = row_map
        self._index: AnnoyIndex | None = AnnoyIndex(dim, ANNOY_METRIC)
        try:
            self._index.load(os.fspath(ann_path), prefault=False)
        except OSError as err:
            raise LibraryError(f"{ann_path}: cannot load Annoy index: {err}") from err
        n_items = self._index.get_n_items()
        if n_items != row_map.n_rows:
            self._index.unload()
            raise LibraryError(
                f"{ann_path}: Annoy index has {n_items} items, windows.npy has {row_map.n_rows}"
            )

    def query_rows(
        self, embeddings: npt.NDArray[np.float32], *, k: int
    ) -> list[tuple[list[int], list[float]]]:
        """Per query, Annoy's (rows, distances), nearest first (up to ``k``)."""
        index = self._require_open()
        _check_queries(embeddings, dim=self.dim, k=k)
        search_k = k * self.n_trees * self.search_k_factor
        results: list[tuple[list[int], list[float]]] = []
        for vector in np.asarray(embeddings, dtype=np.float32):
            rows, distances = index.get_nns_by_vector(
                vector.tolist(), k, search_k=search_k, include_distances=True
            )
            results.append((rows, distances))
        return results

    def query(self, embeddings: npt.NDArray[np.float32], *, k: int) -> list[list[Neighbor]]:
        """``embeddings`` ``[n, D]`` -> n lists of up to ``k`` neighbors, nearest first."""
        return [
            _to_neighbors(
                self._row_map,
                np.asarray(rows, dtype=np.int64),
                np.asarray(distances, dtype=np.float64),
            )
            for rows, distances in self.query_rows(embeddings, k=k)
        ]

    def close(self) -> None:
        if self._index is not None:
            self._index.unload()
            self._index = None

    def _require_open(self) -> AnnoyIndex:
        if self._index is None:
            raise LibraryError("Annoy index is closed")
        return self._index


SEARCH_K_REFERENCE_ITEMS = 4096
"""Items up to which the compact ANN inspects ``k * n_trees * factor`` nodes a query."""
MAX_SEARCH_K_SCALE = 64.0
"""The growth stops here (about 12 ms a query at ``k`` 32 on 4 trees, some 17 M items, 70k
tracks): past that a catalog wants a Milvus server's HNSW (README, Large catalogs)."""


def items_search_k(*, k: int, n_trees: int, factor: int, n_items: int, scaled: bool) -> int:
    """Annoy nodes to inspect for ``k`` nearest items: ``k * n_trees * factor``, and with
    ``scaled`` that times ``sqrt(n_items / SEARCH_K_REFERENCE_ITEMS)`` (at most
    ``MAX_SEARCH_K_SCALE``) beyond the reference size.

    The compact ANN's 4 trees searched with a fixed ``32 * 4 * 8`` nodes found the true
    window among the top 32 for 70 % of live windows at 1k tracks (250k items) and 53 %
    at 10k (2.4M), against 85 % for an exact search; recall rose about 6 points per
    doubling of ``search_k`` at both sizes, and 8 trees were worth no more than twice the
    nodes on 4 (scripts/bench_scale.py, bench/scale-*.json). Growing the nodes with the
    square root of the items holds recall near the exact search's for a few ms a query.
    """
    base = k * n_trees * factor
    if not scaled or n_items <= SEARCH_K_REFERENCE_ITEMS:
        return base
    scale = min(math.sqrt(n_items / SEARCH_K_REFERENCE_ITEMS), MAX_SEARCH_K_SCALE)
    return round(base * scale)


class AnnoyItems:
    """Annoy as a bare ``compact.ItemSearch``: item ids of the nearest items, for an index whose
    items are a subset of the rows (the compact layout), in the ANN's own space.

    ``search_k`` grows with the number of items (``items_search_k``; ``scale_search_k=False``
    keeps ``k * n_trees * search_k_factor`` whatever the size, as before)."""

    def __init__(
        self,
        *,
        ann_path: str | os.PathLike[str],
        dim: int,
        n_trees: int,
        n_items: int,
        search_k_factor: int = DEFAULT_SEARCH_K_FACTOR,
        scale_search_k: bool = True,
    ) -> None:
        if search_k_factor < 1:
            raise ConfigError(f"search_k_factor must be >= 1, got {search_k_factor}")
        self.dim = dim
        self.n_items = n_items
        self.n_trees = n_trees
        self.search_k_factor = search_k_factor
        self.scale_search_k = scale_search_k
        self._index: AnnoyIndex | None = AnnoyIndex(dim, ANNOY_METRIC)
        try:
            self._index.load(os.fspath(ann_path), prefault=False)
        except OSError as err:
            raise LibraryError(f"{ann_path}: cannot load Annoy index: {err}") from err
        found = self._index.get_n_items()
        if found != n_items:
            self._index.unload()
            raise LibraryError(f"{ann_path}: Annoy index has {found} items, the layout {n_items}")

    def search_k(self, k: int) -> int:
        """Nodes inspected per query for ``k`` results."""
        return items_search_k(
            k=k,
            n_trees=self.n_trees,
            factor=self.search_k_factor,
            n_items=self.n_items,
            scaled=self.scale_search_k,
        )

    def query_items(
        self, vectors: npt.NDArray[np.float32], *, k: int
    ) -> list[npt.NDArray[np.int64]]:
        if self._index is None:
            raise LibraryError("Annoy index is closed")
        _check_queries(vectors, dim=self.dim, k=k)
        search_k = self.search_k(k)
        return [
            np.asarray(
                self._index.get_nns_by_vector(vector.tolist(), k, search_k=search_k),
                dtype=np.int64,
            )
            for vector in np.asarray(vectors, dtype=np.float32)
        ]

    def close(self) -> None:
        if self._index is not None:
            self._index.unload()
            self._index = None


def build_annoy(
    vectors: npt.NDArray[np.float32],
    *,
    n_trees: int,
    seed: int,
    path: str | os.PathLike[str],
) -> None:
    """Build an angular Annoy index over ``vectors`` ``[N, D]`` (item i = row i) and save it.

    Built single-threaded (``n_jobs=1``): Annoy's threaded build gives
    different trees depending on the core count, and the same seed must give
    the same index on every machine.
    """
    if vectors.ndim != 2 or vectors.shape[0] < 1:
        raise LibraryError(f"cannot build an Annoy index over vectors of shape {vectors.shape}")
    # Rows go in one chunk at a time so a memory-mapped [N, D] is never copied whole.
    chunk_rows = 8192
    build_annoy_from_chunks(
        (vectors[start : start + chunk_rows] for start in range(0, vectors.shape[0], chunk_rows)),
        dim=int(vectors.shape[1]),
        n_trees=n_trees,
        seed=seed,
        path=path,
    )


def build_annoy_from_chunks(
    chunks: Iterable[npt.NDArray[np.float32]],
    *,
    dim: int,
    n_trees: int,
    seed: int,
    path: str | os.PathLike[str],
) -> int:
    """``build_annoy`` over consecutive ``[n, dim]`` chunks (items numbered in order); returns
    the number of items."""
    index = AnnoyIndex(dim, ANNOY_METRIC)
    index.set_seed(seed)
    n_items = 0
    for chunk in chunks:
        for row in np.asarray(chunk, dtype=np.float32):
            index.add_item(n_items, row.tolist())
            n_items += 1
    if n_items < 1:
        raise LibraryError("cannot build an Annoy index over no vectors")
    index.build(n_trees, n_jobs=1)
    target = Path(path)
    if not index.save(os.fspath(target), prefault=False):
        raise LibraryError(f"{target}: cannot save Annoy index")
    index.unload()
    return n_items
