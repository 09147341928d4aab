"""The compact index layout: int8 curves, and a coarse, low-dimensional ANN refined on them.

Where the bytes of an index go (0.5 s hop, D = 128, speed variants 0.94 and
1.06, so three curves of 7,200 windows per hour of audio; figures from
``scripts/bench_index_size.py``, bench/index-size-*.json):

- format 2 stored every window as float32 (512 B) and put every window in a
  16-tree Annoy file holding its own float32 copy plus the trees (~730 B):
  about 26.9 MB per hour, two thirds of it Annoy;
- the compact layout stores each window as int8 (128 B): a window is a unit
  vector, so only its direction counts and the integers alone give it back
  (``q / |q|``; the matcher's distances move by under 0.01 on a 0..2 scale),
  and gives Annoy only every ``ann_stride``-th window of each curve, projected
  on the ``ann_dim`` principal axes of the generation's windows. A hit is then
  *refined*: the window nearest the live one within ``ann_stride - 1`` windows
  of the hit, on the stored int8 curve, with its exact distance. So the
  matcher sees the same kind of neighbours (track, window, variant, distance
  between unit vectors) as before, and the candidate search costs a few
  hundred bytes per indexed item instead of a full copy of every window.

Everything here is numpy on arrays the store hands over; the store does the
I/O and the Annoy adapter the search (the module does no I/O).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError, LibraryError

from .protocols import Neighbor

WindowsDtype = Literal["int8", "float32"]
WINDOWS_DTYPES: tuple[WindowsDtype, ...] = ("int8", "float32")
INT8_LEVELS = 127
"""Quantised components run over -127..127 (symmetric: -128 is never used)."""
MAX_ANN_STRIDE = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreLayout:
    """How a generation stores its curves and what its ANN file indexes.

    ``windows_dtype``: ``int8`` (a per-row scale beside it) or ``float32``.
    ``ann_stride``: every how many windows of a curve go into the ANN (1: all).
    ``ann_dim``: principal axes the ANN searches in (0: the embeddings as they are).
    ``n_trees``: Annoy trees; ``None`` takes ``IndexConfig.n_trees``.
    """

    windows_dtype: WindowsDtype = "int8"
    ann_stride: int = 4
    ann_dim: int = 32
    n_trees: int | None = 4

    def __post_init__(self) -> None:
        if self.windows_dtype not in WINDOWS_DTYPES:
            raise ConfigError(
                f"windows_dtype must be one of {', '.join(WINDOWS_DTYPES)}, "
                f"got {self.windows_dtype!r}"
            )
        if isinstance(self.ann_stride, bool) or not 1 <= self.ann_stride <= MAX_ANN_STRIDE:
            raise ConfigError(
                f"ann_stride must be within 1..{MAX_ANN_STRIDE}, got {self.ann_stride}"
            )
        if isinstance(self.ann_dim, bool) or self.ann_dim < 0:
            raise ConfigError(f"ann_dim must be >= 0 (0: all dimensions), got {self.ann_dim}")
        if self.n_trees is not None and not 1 <= self.n_trees <= 1024:
            raise ConfigError(f"n_trees must be within 1..1024, got {self.n_trees}")

    @property
    def is_full(self) -> bool:
        """Format 2's layout: float32 windows, every window in the ANN as it is."""
        return self.windows_dtype == "float32" and self.ann_stride == 1 and self.ann_dim == 0

    def for_dim(self, dim: int) -> StoreLayout:
        """The layout for embeddings of ``dim``: no projection onto as many axes or more."""
        if self.ann_dim >= dim:
            return StoreLayout(
                windows_dtype=self.windows_dtype,
                ann_stride=self.ann_stride,
                ann_dim=0,
                n_trees=self.n_trees,
            )
        return self

    def to_meta(self) -> dict[str, str]:
        return {
            "windows_dtype": self.windows_dtype,
            "ann_stride": str(self.ann_stride),
            "ann_dim": str(self.ann_dim),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, str], *, n_trees: int) -> StoreLayout:
        """The layout a generation's meta declares (format 1 and 2: the full one)."""
        try:
            return cls(
                windows_dtype=meta.get("windows_dtype", "float32"),  # type: ignore[arg-type]
                ann_stride=int(meta.get("ann_stride", "1")),
                ann_dim=int(meta.get("ann_dim", "0")),
                n_trees=n_trees,
            )
        except (ValueError, ConfigError) as err:
            raise LibraryError(f"index meta declares an unreadable layout: {err}") from None

    def describe(self) -> str:
        """One phrase for ``index stats``."""
        windows = "int8 windows" if self.windows_dtype == "int8" else "float32 windows"
        every = "every window" if self.ann_stride == 1 else f"every {self.ann_stride}th window"
        axes = "all dimensions" if self.ann_dim == 0 else f"{self.ann_dim} principal axes"
        return f"{windows}; ANN over {every}, {axes}"


COMPACT_LAYOUT = StoreLayout()
FULL_LAYOUT = StoreLayout(windows_dtype="float32", ann_stride=1, ann_dim=0, n_trees=None)
LAYOUTS = {"compact": COMPACT_LAYOUT, "full": FULL_LAYOUT}


def quantize_rows(rows: npt.NDArray[np.floating]) -> npt.NDArray[np.int8]:
    """``[n, D]`` -> int8 ``[n, D]``, each row scaled so its largest component is 127.

    Requantising a dequantised row gives the same integers back, so ``add``
    and ``remove`` copy stored curves exactly.
    """
    x = np.asarray(rows, dtype=np.float32)
    peak = np.abs(x).max(axis=1) if x.shape[0] else np.zeros(0, np.float32)
    scales = np.where(peak > 0.0, peak / INT8_LEVELS, 1.0).astype(np.float32)
    q: npt.NDArray[np.int8] = (
        np.rint(x / scales[:, None]).clip(-INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    )
    return q


def dequantize_rows(q: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
    """int8 ``[n, D]`` -> unit rows ``[n, D]`` float32, ``q / |q|`` (a zero row stays zero)."""
    x = q.astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0.0)
    return out


class StoredWindows:
    """Row access to a generation's windows, int8 or float32, as unit float32."""

    def __init__(self, *, windows: npt.NDArray[np.int8] | npt.NDArray[np.float32]) -> None:
        if windows.ndim != 2:
            raise LibraryError(f"windows must be [N, D], got shape {windows.shape}")
        if windows.dtype not in (np.int8, np.float32):
            raise LibraryError(f"windows must be int8 or float32, got {windows.dtype}")
        self.raw = windows
        self.quantized = windows.dtype == np.int8
        self.n_rows = int(windows.shape[0])
        self.dim = int(windows.shape[1])

    @property
    def dtype(self) -> WindowsDtype:
        return "int8" if self.raw.dtype == np.int8 else "float32"

    def rows(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Rows ``start:stop`` as float32 ``[n, D]`` (a view for float32 storage)."""
        if not self.quantized:
            return self.raw[start:stop]  # type: ignore[return-value]
        return dequantize_rows(self.raw[start:stop])  # type: ignore[arg-type]

    def take(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The given rows (any order) as float32 ``[n, D]``."""
        if not self.quantized:
            return np.asarray(self.raw[rows], dtype=np.float32)
        return dequantize_rows(self.raw[rows])  # type: ignore[arg-type]


def ann_rows(
    window_start: npt.NDArray[np.int64], window_count: npt.NDArray[np.int64], *, stride: int
) -> npt.NDArray[np.int64]:
    """Rows the ANN indexes, in item order: windows 0, s, 2s, ... of every curve, in row
    order (``window_start``/``window_count`` as ``RowMap`` holds them)."""
    parts = [
        start + np.arange(0, count, stride, dtype=np.int64)
        for start, count in zip(window_start.tolist(), window_count.tolist(), strict=True)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def fit_projection(
    windows: StoredWindows, *, dim: int, chunk_rows: int = 65536
) -> npt.NDArray[np.float32]:
    """The ``dim`` principal axes of the windows: ``[dim + 1, D]``, axes first, the mean last.

    Signs are fixed (each axis's largest component positive), so the same
    windows give the same projection everywhere.
    """
    d = windows.dim
    if not 1 <= dim < d:
        raise ConfigError(f"a projection needs 1 <= ann_dim < D={d}, got {dim}")
    total = np.zeros(d, np.float64)
    gram = np.zeros((d, d), np.float64)
    for start in range(0, windows.n_rows, chunk_rows):
        x = windows.rows(start, start + chunk_rows).astype(np.float64)
        total += x.sum(axis=0)
        gram += x.T @ x
    n = max(windows.n_rows, 1)
    mean = total / n
    cov = gram / n - np.outer(mean, mean)
    _, vectors = np.linalg.eigh(cov)
    axes = vectors[:, ::-1][:, :dim].T  # [dim, D], largest variance first
    flip = np.sign(axes[np.arange(dim), np.abs(axes).argmax(axis=1)])
    axes = axes * flip[:, None]
    return np.vstack([axes, mean[None, :]]).astype(np.float32)


def project(
    x: npt.NDArray[np.floating], projection: npt.NDArray[np.float32] | None
) -> npt.NDArray[np.float32]:
    """Rows ``[n, D]`` in the ANN's space: centred and projected (``[n, dim]``), or as they
    are without a projection."""
    rows = np.asarray(x, dtype=np.float32)
    if projection is None:
        return rows
    return np.asarray((rows - projection[-1]) @ projection[:-1].T, dtype=np.float32)


class ItemSearch(Protocol):
    """Nearest ANN items of query vectors (Annoy, Milvus): what ``RefinedCandidates`` refines."""

    def query_items(
        self, vectors: npt.NDArray[np.float32], *, k: int
    ) -> Sequence[npt.NDArray[np.int64]]:
        """``vectors [n, d]`` in the ANN's space -> n arrays of up to ``k`` item ids."""
        ...

    def close(self) -> None: ...


class RefinedCandidates:
    """A ``CandidateSource`` over a coarse ANN: each hit becomes the stored window nearest the
    query within ``stride - 1`` windows of it, at its exact distance.

    ``items`` maps ANN item ids to rows (``ann_rows``); ``curve_start``/``curve_count``
    are the row map's curves, so a hit is never refined across into another curve.
    """

    def __init__(
        self,
        *,
        search: ItemSearch,
        items: npt.NDArray[np.int64],
        windows: StoredWindows,
        row_map: RowMapLike,
        stride: int,
        projection: npt.NDArray[np.float32] | None,
    ) -> None:
        self._search = search
        self._items = items
        self._windows = windows
        self._row_map = row_map
        self._projection = projection
        self.dim = windows.dim
        self._offsets = np.arange(-(stride - 1), stride, dtype=np.int64)

    def query(self, embeddings: npt.NDArray[np.float32], *, k: int) -> list[list[Neighbor]]:
        """``embeddings [n, D]`` -> n lists of up to ``k`` neighbours, nearest first."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ConfigError(f"embeddings must be [n, {self.dim}], got shape {embeddings.shape}")
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        queries = np.asarray(embeddings, dtype=np.float32)
        hits = self._search.query_items(project(queries, self._projection), k=k)
        return [self._refine(q, found) for q, found in zip(queries, hits, strict=True)]

    def _refine(self, q: npt.NDArray[np.float32], found: npt.NDArray[np.int64]) -> list[Neighbor]:
        if found.size == 0:
            return []
        rows = self._items[np.asarray(found, dtype=np.int64)]
        track_ids, window_indices, variants = self._row_map.lookup(rows)
        counts = self._row_map.count_of(rows)
        # Every hit's neighbourhood on its own curve, [hits, 2 * stride - 1].
        near = window_indices[:, None] + self._offsets[None, :]
        valid = (near >= 0) & (near < counts[:, None])
        near_rows = np.where(valid, rows[:, None] + self._offsets[None, :], rows[:, None])
        vectors = self._windows.take(near_rows.ravel()).reshape(*near_rows.shape, self.dim)
        distances = np.linalg.norm(vectors - q[None, None, :], axis=-1)
        distances = np.where(valid, distances, np.inf)
        best = distances.argmin(axis=1)
        picked = np.arange(rows.shape[0])
        best_rows = near_rows[picked, best]
        best_distances = np.clip(distances[picked, best], 0.0, 2.0)
        best_windows = window_indices + self._offsets[best]
        order = np.argsort(best_distances, kind="stable")
        seen: set[int] = set()
        neighbors: list[Neighbor] = []
        for i in order.tolist():
            row = int(best_rows[i])
            if row in seen:
                continue
            seen.add(row)
            neighbors.append(
                Neighbor(
                    int(track_ids[i]),
                    int(best_windows[i]),
                    float(best_distances[i]),
                    int(variants[i]),
                )
            )
        return neighbors

    def close(self) -> None:
        self._search.close()


class RowMapLike(Protocol):
    """What refinement needs of ``annoy_index.RowMap``."""

    def lookup(
        self, rows: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...

    def count_of(self, rows: npt.ArrayLike) -> npt.NDArray[np.int64]: ...


class StackedWindows(StoredWindows):
    """The windows of several generation folders (a main generation and its deltas) as one
    row space: part ``p``'s rows follow part ``p - 1``'s. ``raw`` is the first part's array
    (read rows through ``rows`` and ``take``); a curve never straddles two parts."""

    def __init__(self, parts: Sequence[StoredWindows]) -> None:
        if not parts:
            raise LibraryError("stacked windows need at least one part")
        dims = {p.dim for p in parts}
        dtypes = {p.dtype for p in parts}
        if len(dims) != 1 or len(dtypes) != 1:
            raise LibraryError(
                "a delta's windows differ from its main generation's in dim or dtype"
            )
        super().__init__(windows=parts[0].raw)
        self.parts = tuple(parts)
        self.n_rows = sum(p.n_rows for p in parts)
        self._starts = np.cumsum([0, *(p.n_rows for p in parts)]).astype(np.int64)

    def rows(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        start, stop = max(0, start), min(self.n_rows, stop)
        if stop <= start:
            return np.zeros((0, self.dim), np.float32)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        if stop <= self._starts[first + 1]:
            base = int(self._starts[first])
            return self.parts[first].rows(start - base, stop - base)
        pieces = []
        for p, part in enumerate(self.parts):
            lo, hi = max(start, int(self._starts[p])), min(stop, int(self._starts[p + 1]))
            if lo < hi:
                base = int(self._starts[p])
                pieces.append(np.asarray(part.rows(lo - base, hi - base), dtype=np.float32))
        return np.concatenate(pieces)

    def take(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        flat = np.asarray(rows, dtype=np.int64)
        out = np.zeros((flat.shape[0], self.dim), np.float32)
        slot = np.searchsorted(self._starts, flat, side="right") - 1
        for p, part in enumerate(self.parts):
            mine = np.flatnonzero(slot == p)
            if mine.size:
                out[mine] = part.take(flat[mine] - self._starts[p])
        return out


class MergedCandidates:
    """A ``CandidateSource`` over several (a main generation's and its deltas'): each query
    goes to every source, and the hits are merged by distance (top ``k`` of them all).

    Track ids are unique across the sources (a delta never holds a track of the main
    generation), so the hits need no translation. ``close`` closes every source.
    """

    def __init__(self, sources: Sequence[ClosableSource]) -> None:
        if not sources:
            raise LibraryError("merged candidates need at least one source")
        self.sources = tuple(sources)

    def query(self, embeddings: npt.NDArray[np.float32], *, k: int) -> list[list[Neighbor]]:
        """``embeddings [n, D]`` -> n lists of up to ``k`` neighbours, nearest first."""
        answers = [source.query(embeddings, k=k) for source in self.sources]
        merged: list[list[Neighbor]] = []
        for per_source in zip(*answers, strict=True):
            hits = [n for found in per_source for n in found]
            hits.sort(key=lambda n: n.distance)
            merged.append(hits[:k])
        return merged

    def close(self) -> None:
        for source in self.sources:
            source.close()


class ClosableSource(Protocol):
    """A ``protocols.CandidateSource`` that holds files or connections open."""

    def query(
        self, embeddings: npt.NDArray[np.float32], *, k: int
    ) -> Sequence[Sequence[Neighbor]]: ...

    def close(self) -> None: ...
