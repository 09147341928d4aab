"""Sounds like: library tracks nearest to a query curve, by track-level distance.

Each library track is a curve ``P = p_1..p_M`` of unit window embeddings at
the index hop. The query is a curve ``Q = q_1..q_n``: live, the recent
windows the matcher holds (``n <= horizon``, at the live hop); offline
(``synesthete similar``), a whole track or file at the index hop. Distances
between points are Euclidean between unit vectors (0..2), as in the matcher.

The distances (``SOUNDS_LIKE_DISTANCES``, and the ``cosine`` baseline):

``mean``
    Mean-to-mean: ``|q^ - p^|`` for the normalised means ``q^``, ``p^`` of the
    two curves, i.e. ``sqrt(2 - 2 cos(mean Q, mean P))``.
``cosine``
    "Plain mean cosine", the baseline: the mean over all pairs of the cosine
    distance, ``mean_ij (1 - q_i . p_j) = 1 - mean(Q) . mean(P)`` with the raw
    means. It differs from ``mean`` by not renormalising: a track whose
    windows vary (a short raw mean) is farther from everything.
``min``
    Min point-to-point (design.md): ``mean_i min_j |q_i - p_j|``. Each track
    is stood for by up to ``REPRESENTATIVES`` windows picked by greedy
    farthest-point (k-centre) sampling, so every window lies close to one;
    a query longer than that is reduced the same way, each representative
    weighted by the share of windows nearest to it.
``frechet``
    Track-level Fréchet: both curves are cut to a coarse "sketch" (normalised
    means of consecutive windows, ``SKETCH_HOP_S`` apart). For a query sketch
    of at most ``FRECHET_EXCERPT_POINTS`` points it is the discrete Fréchet
    distance between the query and the best contiguous stretch of the track
    (free start and end), over couplings where the track advances at most
    ``S`` sketch points per query point (``S`` allows up to twice the query's
    pace; it may also stand still). A longer query (offline) is cut into
    consecutive excerpts of that many points and the distance is the mean
    over excerpts: a pure maximum over a whole track would be decided by its
    single worst moment.

With a similarity head (``index/sonic.py``; ``Library.summaries`` passes the
one shipped for the index's encoder) every curve, the library's and each
query, first goes through it: the points are then unit style vectors, and all
four distances apply to them as they are.

All per-track data is computed once (``TrackSummaries.from_windows`` and the
lazy ``prepare``), so a live update is a few matrix products over the
library's summaries, not a pass over every window. The default distance is
``DEFAULT_SOUNDS_LIKE_DISTANCE``; scripts/bench_similar.py measured it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from synesthete.constants import (
    DEFAULT_INDEX_HOP_S,
    DEFAULT_LIVE_HOP_S,
    DEFAULT_SOUNDS_LIKE_DISTANCE,
    SOUNDS_LIKE_DISTANCES,
)
from synesthete.errors import ConfigError

from .frechet import frechet_steps, subsequence_frechet_many
from .sonic import SonicHead
from .versions import version_groups

SoundsLikeDistance = Literal["mean", "min", "frechet", "cosine"]
DISTANCES: tuple[SoundsLikeDistance, ...] = ("mean", "min", "frechet", "cosine")
"""Every distance ``TrackSummaries`` computes: ``SOUNDS_LIKE_DISTANCES`` and the baseline."""

REPRESENTATIVES = 64
"""Windows kept per track for ``min``: 32k points for 500 tracks. On the dev corpus's train+val
live queries (scripts/bench_similar.py) MAP was 0.141 with 32, 0.146 with 64, 0.152 with 128
and 0.153 with every window; the cost per update grows linearly with it."""

SKETCH_HOP_S = DEFAULT_LIVE_HOP_S
"""Spacing of the ``frechet`` sketch: the live hop, so a live window is one sketch point."""

FRECHET_EXCERPT_POINTS = 8
"""Query sketch points per Fréchet excerpt: the matcher's horizon (8 live windows, 18 s)."""

_KCENTRE_BATCH = 64
"""Tracks whose representatives are picked together (memory: batch x longest x D)."""

_MAX_STEP_CACHE = 8
"""Track-start masks kept for Fréchet steps up to this (a 4 s live hop on a 2 s sketch needs 4)."""

_EXCERPT_BATCH_POINTS = 256
"""Query sketch rows whose distance rows are held at once (memory: rows x sketch points)."""

FloatArray = npt.NDArray[np.float32]


def check_distance(name: str) -> SoundsLikeDistance:
    """``name`` as a ``SoundsLikeDistance``; ``ConfigError`` if unknown."""
    if name not in DISTANCES:
        raise ConfigError(
            f"unknown sounds-like distance {name!r}; choose from {', '.join(DISTANCES)}"
        )
    return name


def _normalise_rows(x: npt.NDArray[np.floating]) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: FloatArray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def _squared_norms(x: FloatArray) -> FloatArray:
    out: FloatArray = np.einsum("nd,nd->n", x, x)
    return out


def _squared_distances(
    a: FloatArray, b: FloatArray, *, b_norms: FloatArray | None = None
) -> FloatArray:
    """``[n, m]`` squared Euclidean distances between the rows of ``a [n, D]`` and ``b [m, D]``.

    ``b_norms [m]`` (the rows' squared norms) may be given when ``b`` is reused.
    """
    bb = _squared_norms(b) if b_norms is None else b_norms
    out: FloatArray = a @ b.T
    out *= -2.0
    out += _squared_norms(a)[:, None]
    out += bb[None, :]
    np.maximum(out, 0.0, out=out)
    return out


def farthest_points(points: FloatArray, *, k: int) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Greedy k-centre sample of ``points [M, D]``: (indices ``[k']``, weights ``[k']``).

    Starts from the point nearest the mean, then repeatedly takes the point
    farthest from those chosen, so every point ends within the covering
    radius of one (twice the optimum at worst). ``weights`` are the shares of
    points nearest to each chosen one (they sum to 1). ``k' = min(k, M)``;
    deterministic.
    """
    m = points.shape[0]
    if m <= k:
        return np.arange(m, dtype=np.int64), np.full(m, 1.0 / max(m, 1), dtype=np.float32)
    norms = np.einsum("md,md->m", points, points)
    first = int(np.argmin(_squared_distances(points.mean(axis=0, keepdims=True), points)[0]))
    chosen = [first]
    nearest = norms + norms[first] - 2.0 * (points @ points[first])
    owner = np.zeros(m, dtype=np.int64)
    for c in range(1, k):
        j = int(np.argmax(nearest))
        chosen.append(j)
        d = norms + norms[j] - 2.0 * (points @ points[j])
        closer = d < nearest
        nearest = np.where(closer, d, nearest)
        owner[closer] = c
    weights = (np.bincount(owner, minlength=k) / m).astype(np.float32)
    return np.asarray(chosen, dtype=np.int64), weights


def _farthest_points_many(curves: Sequence[FloatArray], *, k: int) -> list[FloatArray]:
    """``farthest_points`` of many curves, the chosen points of each (no weights).

    Curves longer than ``k`` go through the greedy loop together, in batches
    of similar lengths padded to the longest, so the Python loop runs ``k``
    times per batch rather than per curve.
    """
    out: list[FloatArray] = [c if c.shape[0] <= k else c[:0] for c in curves]
    long = sorted(
        (i for i, c in enumerate(curves) if c.shape[0] > k), key=lambda i: curves[i].shape[0]
    )
    for b in range(0, len(long), _KCENTRE_BATCH):
        members = long[b : b + _KCENTRE_BATCH]
        length = curves[members[-1]].shape[0]
        dim = curves[members[0]].shape[1]
        padded = np.zeros((len(members), length, dim), dtype=np.float32)
        valid = np.zeros((len(members), length), dtype=bool)
        for row, i in enumerate(members):
            padded[row, : curves[i].shape[0]] = curves[i]
            valid[row, : curves[i].shape[0]] = True
        norms = np.einsum("bld,bld->bl", padded, padded)
        means = padded.sum(axis=1) / valid.sum(axis=1, keepdims=True)
        centre_sq = norms - 2.0 * np.einsum("bld,bd->bl", padded, means)
        current = np.where(valid, centre_sq, np.inf).argmin(axis=1)
        chosen = [current]
        rows = np.arange(len(members))
        nearest = np.full((len(members), length), np.inf, dtype=np.float32)
        for _ in range(k):
            centres = padded[rows, current]
            d = (
                norms
                + norms[rows, current][:, None]
                - 2.0 * np.einsum("bld,bd->bl", padded, centres)
            )
            np.minimum(nearest, d, out=nearest)
            current = np.where(valid, nearest, -np.inf).argmax(axis=1)
            chosen.append(current)
        picks = np.stack(chosen[:k], axis=1)
        for row, i in enumerate(members):
            out[i] = curves[i][picks[row]]
    return out


def _track_block_sums(
    windows: FloatArray,
    starts: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    *,
    block: int,
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Sums of consecutive ``block`` windows within each track (the last block partial).

    Returns the sums ``[B, D]``, track after track, and each track's number of
    blocks ``[T]``. (A reshape per track: ``np.add.reduceat`` along rows was
    several times slower here.)
    """
    dim = windows.shape[1]
    parts = []
    for start, count in zip(starts, counts, strict=True):
        segment = np.asarray(windows[start : start + count], dtype=np.float32)
        full = int(count) // block
        sums = segment[: full * block].reshape(full, block, dim).sum(axis=1)
        if full * block < count:
            sums = np.concatenate([sums, segment[full * block :].sum(axis=0, keepdims=True)])
        parts.append(sums)
    per_track = np.array([p.shape[0] for p in parts], dtype=np.int64)
    out = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    return out.astype(np.float32, copy=False), per_track


def _block_means(points: FloatArray, *, block: int) -> FloatArray:
    """Normalised means of consecutive ``block`` rows of ``points [M, D]`` (last block partial)."""
    starts = np.arange(0, points.shape[0], block)
    sums = np.add.reduceat(np.asarray(points, dtype=np.float32), starts, axis=0)
    return _normalise_rows(sums)


@dataclass(frozen=True, slots=True)
class _PointSets:
    """Points of every track, track after track: ``points [R, D]`` and their squared norms
    ``norms [R]``, ``starts [T]`` (row of each track's first point; every track has one),
    ``position [R]`` (index within its track)."""

    points: FloatArray
    norms: FloatArray
    starts: npt.NDArray[np.int64]
    position: npt.NDArray[np.int64]

    def track_starts(self, *, below: int) -> list[npt.NDArray[np.int64]]:
        """For ``s = 0..below-1``: the rows less than ``s`` points into their track."""
        return [np.flatnonzero(self.position < s) for s in range(below)]


def _point_sets(parts: Sequence[FloatArray], dim: int) -> _PointSets:
    counts = np.array([p.shape[0] for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())
    position = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
    points = (
        np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        if parts
        else np.zeros((0, dim), dtype=np.float32)
    )
    return _PointSets(points=points, norms=_squared_norms(points), starts=starts, position=position)


def sketch_block(*, hop_s: float, sketch_hop_s: float = SKETCH_HOP_S) -> int:
    """Consecutive windows at ``hop_s`` averaged into one sketch point (at least 1)."""
    if not hop_s > 0.0:
        raise ConfigError(f"hop must be > 0 s, got {hop_s}")
    return max(1, round(sketch_hop_s / hop_s))


class TrackSummaries:
    """What "sounds like" needs of each library track, computed once.

    ``track_ids [T]``; ``means [T, D]`` normalised mean embeddings;
    ``mean_norms [T]`` the raw means' lengths (for ``cosine``); ``groups [T]``
    names duplicates (tracks with the same content hash, and the version pairs
    in ``same_music``, share a group), so every copy and version of an
    excluded track is left out too. The ``min``
    representatives and the ``frechet`` sketches are built on first use, or
    up front with :meth:`prepare` (the live loop does so when it opens).
    """

    def __init__(
        self,
        *,
        windows: FloatArray,
        track_ids: Sequence[int],
        starts: Sequence[int],
        counts: Sequence[int],
        content_keys: Sequence[str] | None = None,
        same_music: Sequence[tuple[int, int]] = (),
        index_hop_s: float = DEFAULT_INDEX_HOP_S,
        head: SonicHead | None = None,
        through_head: bool = False,
        audio_head: SonicHead | None = None,
    ) -> None:
        if not (len(track_ids) == len(starts) == len(counts)):
            raise ConfigError("track_ids, starts and counts must have the same length")
        if windows.ndim != 2:
            raise ConfigError(f"windows must be [N, D], got shape {windows.shape}")
        if content_keys is not None and len(content_keys) != len(track_ids):
            raise ConfigError("content_keys must have one key per track")
        n_rows = windows.shape[0]
        for start, count in zip(starts, counts, strict=True):
            if count < 1 or start < 0 or start + count > n_rows:
                raise ConfigError(
                    f"track rows {start}..{start + count} do not fit windows [{n_rows}] "
                    "(every track needs at least one window)"
                )
        self.head = head
        self.audio_head = audio_head
        """An audio head (``SonicHead.reads_audio``) whose style vectors the curves are:
        queries must be too (``SonicHead.apply_audio`` over the query's audio)."""
        self.query_dim = int(windows.shape[1])
        if head is not None and through_head:
            if head.dim != windows.shape[1]:
                raise ConfigError(
                    f"sonic head gives E={head.dim}, the stored curves have E={windows.shape[1]}"
                )
            self.query_dim = head.in_dim
        elif head is not None:
            if head.in_dim != windows.shape[1]:
                raise ConfigError(
                    f"sonic head reads D={head.in_dim}, the windows have D={windows.shape[1]}"
                )
            windows = head.apply(windows)
        self._windows = windows
        self._starts = np.asarray(starts, dtype=np.int64)
        self._counts = np.asarray(counts, dtype=np.int64)
        self.index_hop_s = float(index_hop_s)
        self.dim = int(windows.shape[1])
        self.track_ids = np.asarray(track_ids, dtype=np.int64)
        raw = np.zeros((len(track_ids), self.dim), dtype=np.float64)
        for row, (start, count) in enumerate(zip(self._starts, self._counts, strict=True)):
            raw[row] = windows[start : start + count].mean(axis=0, dtype=np.float64)
        self.mean_norms = np.linalg.norm(raw, axis=1).astype(np.float32)
        self.means = _normalise_rows(raw)
        keys = list(content_keys) if content_keys is not None else [str(t) for t in track_ids]
        first_of: dict[str, int] = {}
        same_bytes = [first_of.setdefault(k, i) for i, k in enumerate(keys)]
        self._row_of = {int(t): i for i, t in enumerate(self.track_ids)}
        row_of = self._row_of
        links = [(i, first) for i, first in enumerate(same_bytes) if first != i]
        links += [(row_of[a], row_of[b]) for a, b in same_music if a in row_of and b in row_of]
        group_of = version_groups(range(len(keys)), links)
        self.groups = np.array([group_of[i] for i in range(len(keys))], dtype=np.int64)
        self._representatives: _PointSets | None = None
        self._sketches: _PointSets | None = None
        self._sketch_track_starts: list[npt.NDArray[np.int64]] = []

    @classmethod
    def from_windows(
        cls,
        *,
        windows: FloatArray,
        track_ids: Sequence[int],
        starts: Sequence[int],
        counts: Sequence[int],
        content_keys: Sequence[str] | None = None,
        same_music: Sequence[tuple[int, int]] = (),
        index_hop_s: float = DEFAULT_INDEX_HOP_S,
        head: SonicHead | None = None,
        through_head: bool = False,
        audio_head: SonicHead | None = None,
    ) -> TrackSummaries:
        """Summaries from the window matrix ``[N, D]`` and each track's row range.

        With a ``head``, every curve (the library's and each query) first goes
        through it: the distances are then between style vectors.
        ``through_head``: the windows are already the head's output ``[N, E]``
        (the curves a generation stores, ``sonic_store.py``); only queries go
        through it.
        """
        return cls(
            windows=windows,
            track_ids=track_ids,
            starts=starts,
            counts=counts,
            content_keys=content_keys,
            same_music=same_music,
            index_hop_s=index_hop_s,
            head=head,
            through_head=through_head,
            audio_head=audio_head,
        )

    @property
    def n_tracks(self) -> int:
        return int(self.track_ids.shape[0])

    @property
    def sketch_hop_s(self) -> float:
        """Spacing of the track sketches: a whole number of index hops near ``SKETCH_HOP_S``."""
        return self.index_hop_s * sketch_block(hop_s=self.index_hop_s)

    def prepare(self, distances: Iterable[str] = SOUNDS_LIKE_DISTANCES) -> None:
        """Build now what ``distances`` need, so no query pays for it."""
        for name in distances:
            distance = check_distance(name)
            if distance == "min":
                self.representatives()
            elif distance == "frechet":
                self.sketches()

    def representatives(self) -> _PointSets:
        """Each track's ``min`` representatives: k-centre windows.

        They are picked among the windows ``sketch_hop_s`` apart: at the
        0.5 s index hop neighbouring 4 s windows are near copies, and that
        makes the pick 4x cheaper.
        """
        if self._representatives is None:
            step = sketch_block(hop_s=self.index_hop_s)
            curves = [
                np.asarray(self._windows[start : start + count : step], dtype=np.float32)
                for start, count in zip(self._starts, self._counts, strict=True)
            ]
            parts = _farthest_points_many(curves, k=REPRESENTATIVES)
            self._representatives = _point_sets(parts, self.dim)
        return self._representatives

    def sketches(self) -> _PointSets:
        """Each track's ``frechet`` sketch (block means at ``sketch_hop_s``)."""
        if self._sketches is None:
            sums, per_track = _track_block_sums(
                self._windows,
                self._starts,
                self._counts,
                block=sketch_block(hop_s=self.index_hop_s),
            )
            parts = np.split(_normalise_rows(sums), np.cumsum(per_track)[:-1])
            self._sketches = _point_sets(parts, self.dim)
            self._sketch_track_starts = self._sketches.track_starts(below=_MAX_STEP_CACHE + 1)
        return self._sketches

    def rows_of(self, track_ids: Sequence[int]) -> npt.NDArray[np.int64]:
        """Summary rows of ``track_ids`` (unknown ids are skipped)."""
        return np.array(
            [self._row_of[int(t)] for t in track_ids if int(t) in self._row_of], dtype=np.int64
        )

    # -- distances ------------------------------------------------------------

    def distances(
        self,
        query: FloatArray,
        *,
        distance: str = DEFAULT_SOUNDS_LIKE_DISTANCE,
        query_hop_s: float = DEFAULT_LIVE_HOP_S,
    ) -> npt.NDArray[np.float64]:
        """``[T]`` distances from the curve ``query [n, D]`` (hop ``query_hop_s``) to each track."""
        kind = check_distance(distance)
        q = np.asarray(query, dtype=np.float32)
        if q.ndim != 2 or q.shape[0] == 0:
            raise ConfigError(f"query must be a non-empty [n, D] curve, got shape {q.shape}")
        if q.shape[1] != self.query_dim:
            raise ConfigError(f"query has D={q.shape[1]}, the library D={self.query_dim}")
        if not np.all(np.isfinite(q)):
            raise ConfigError("query contains non-finite values")
        if self.head is not None:
            q = self.head.apply(q)
        if self.n_tracks == 0:
            return np.zeros(0, dtype=np.float64)
        if kind == "mean":
            centre = _normalise_rows(q.mean(axis=0, keepdims=True, dtype=np.float64))[0]
            cos = self.means @ centre
            mean_distances: npt.NDArray[np.float64] = np.sqrt(
                np.maximum(0.0, 2.0 - 2.0 * cos.astype(np.float64))
            )
            return mean_distances
        if kind == "cosine":
            raw = q.mean(axis=0, dtype=np.float64)
            dots = (self.means.astype(np.float64) @ raw) * self.mean_norms
            return np.asarray(1.0 - dots, dtype=np.float64)
        if kind == "min":
            return self._min_distances(q)
        return self._frechet_distances(q, query_hop_s=query_hop_s)

    def query_vector(self, query: FloatArray) -> npt.NDArray[np.float64]:
        """The unit mean ``[E]`` of the curve ``query [n, D]`` in the "sounds like" space
        (through the head when there is one): the point the sonic map places."""
        q = np.asarray(query, dtype=np.float32)
        if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] != self.query_dim:
            raise ConfigError(f"query must be a non-empty [n, {self.query_dim}] curve")
        if self.head is not None:
            q = self.head.apply(q)
        mean = q.mean(axis=0, dtype=np.float64)
        out: npt.NDArray[np.float64] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return out

    def _min_distances(self, q: FloatArray) -> npt.NDArray[np.float64]:
        reps = self.representatives()
        chosen, weights = farthest_points(q, k=REPRESENTATIVES)
        sq = _squared_distances(q[chosen], reps.points, b_norms=reps.norms)
        per_track = np.sqrt(np.minimum.reduceat(sq, reps.starts, axis=1).astype(np.float64))
        return np.asarray(weights.astype(np.float64) @ per_track, dtype=np.float64)

    def _frechet_distances(self, q: FloatArray, *, query_hop_s: float) -> npt.NDArray[np.float64]:
        sketches = self.sketches()
        block = sketch_block(hop_s=query_hop_s, sketch_hop_s=self.sketch_hop_s)
        q_sketch = _block_means(q, block=block)
        max_step = frechet_steps(query_hop_s=query_hop_s * block, track_hop_s=self.sketch_hop_s)
        n_total = q_sketch.shape[0]
        n = min(FRECHET_EXCERPT_POINTS, n_total)
        first = list(range(0, n_total - n + 1, n))
        if first[-1] != n_total - n:
            first.append(n_total - n)  # the tail, overlapping its neighbour
        starts = np.asarray(first, dtype=np.int64)
        total = np.zeros(self.n_tracks, dtype=np.float64)
        per_batch = max(1, _EXCERPT_BATCH_POINTS // n)
        for b in range(0, starts.shape[0], per_batch):
            batch = starts[b : b + per_batch]
            wanted = (batch[:, None] + np.arange(n)[None, :]).reshape(-1)
            d = np.sqrt(
                _squared_distances(q_sketch[wanted], sketches.points, b_norms=sketches.norms)
            )
            rows = d.reshape(batch.shape[0], n, -1)
            cost = subsequence_frechet_many(
                rows,
                position=sketches.position,
                max_step=max_step,
                near_start=self._sketch_track_starts,
            )
            total += np.minimum.reduceat(cost, sketches.starts, axis=1).sum(axis=0)
        mean_over_excerpts: npt.NDArray[np.float64] = total / starts.shape[0]
        return mean_over_excerpts

    def nearest(
        self,
        recent: FloatArray,
        *,
        k: int,
        exclude_track_ids: Sequence[int] = (),
        distance: str = DEFAULT_SOUNDS_LIKE_DISTANCE,
        query_hop_s: float = DEFAULT_LIVE_HOP_S,
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (track_id, distance) nearest to the curve ``recent [n, D]``, nearest first.

        Tracks in ``exclude_track_ids`` and every duplicate of them are left
        out. An empty ``recent`` (or library) gives ``[]``.
        """
        if recent.ndim != 2 or recent.shape[0] == 0 or self.n_tracks == 0:
            return []
        distances = self.distances(recent, distance=distance, query_hop_s=query_hop_s)
        excluded = self.excluded(exclude_track_ids)
        distances = np.where(excluded, np.inf, distances)
        order = np.argsort(distances, kind="stable")[:k]
        return [
            (int(self.track_ids[i]), float(distances[i]))
            for i in order
            if np.isfinite(distances[i])
        ]

    def excluded(self, track_ids: Sequence[int]) -> npt.NDArray[np.bool_]:
        """``[T]`` mask of ``track_ids`` and every track with the same content."""
        excluded = np.isin(self.track_ids, np.asarray(track_ids, dtype=np.int64))
        if excluded.any():
            excluded |= np.isin(self.groups, self.groups[excluded])
        return excluded
