"""Curve kernels: distances between polylines of unit vectors, and both Fréchet variants.

Pure code: numpy and the standard library only, no state and no I/O. The
:class:`~synesthete.index.matcher.Matcher` keeps the per-stream state and makes
the decisions; it, :mod:`~synesthete.index.versions` and
:mod:`~synesthete.index.similar` call these kernels.

Two subsequence Fréchet variants live here:

* the **stepped** one (:func:`subsequence_frechet`, :func:`stepped_dp`,
  :func:`stepped_frechet_distance`): a live curve against a track at the index
  hop, every live step advancing the track ``s_lo..s_hi`` windows (the
  matcher, and the version finder);
* the **banded** one (:func:`subsequence_frechet_many`): many query excerpts
  against every track's sketch at once, each query point held while the track
  advances ``0..max_step`` points ("sounds like").

Curves
------
Each library track is a polyline ``P = p_1..p_M`` of unit vectors, one per
window at the index hop (window ``i`` covers track seconds
``[i * index_hop_s, i * index_hop_s + window_s]``). The live stream is a
growing polyline ``Q = q_1..q_t`` at the live hop. Distances are Euclidean
between unit vectors, so they lie in ``0..2``.

Two running distances are kept per candidate track:

* **Min point-to-point** (``min_p2p``): mean over the recent ``q_i`` of
  ``min_j ||q_i - p_j||``. It ignores order, so loops and repeats cost nothing.
* **Stepped subsequence Fréchet** (``frechet``): the bottleneck cost of a
  monotone coupling of *all* of the recent ``Q`` to a subsequence of ``P``
  with free start and free end, where consecutive query points move
  ``s_lo..s_hi`` track windows forward.

Why a stepped coupling, and not the textbook discrete Fréchet distance
----------------------------------------------------------------------
``P`` is sampled ``r = live_hop_s / index_hop_s`` times denser than ``Q``
(``r = 4`` at the defaults). The classical discrete Fréchet distance (DFD) must
couple every point of both curves, so each ``q_i`` would also have to be close
to the ``r - 1`` track windows between its true partner and the next one. Those
windows are shifted by 0.5 s, 1 s, 1.5 s of audio and are genuinely different,
so the DFD of a perfect excerpt is far from zero. The stepped variant couples
``Q`` to the sub-sampled track ``p_{j_1}, p_{j_2}, ...`` with
``j_i - j_{i-1} in [s_lo, s_hi]`` and never looks at the points in between.

The step range comes from the nominal ratio ``r`` widened by the tempo
tolerance (:func:`step_range`: ``(3, 5)`` for ``r = 4`` and 12 %). A live
stream that plays 8 % fast advances 4.32 track windows per live window; the
coupling absorbs that with a mix of 4- and 5-steps, and the path's slope gives
the tempo ratio. A fixed diagonal (one step size, as in NAFP-style sequence
matching) drifts off the track by ``0.32`` windows per live window and loses
it after a few windows.

The recurrence is that of the DFD restricted to these steps::

    F[0, j] = d(0, j)                                   (free start)
    F[i, j] = max(d(i, j), min_{s in [s_lo, s_hi]} F[i-1, j-s])   (out of range: inf)
    distance = min_j F[n-1, j]                          (free end)

The maximum makes the distance a bottleneck: one bad pair sets it. Over a
long stream that is brittle, so the matcher only ever scores a horizon:

* ``frechet_mode="horizon"``: the exact stepped bottleneck over the last
  ``min(t, horizon_windows)`` live windows, recomputed each window in
  ``O(H * M * (s_hi - s_lo + 1))`` vectorised numpy. It equals
  :func:`subsequence_frechet` applied to the recent ``Q``.
* ``frechet_mode="ema"``: an averaged-cost path, *not* a bottleneck:
  ``F_t[j] = (1 - λ) d_t[j] + λ min_s F_{t-1}[j - s]`` with ``λ = ema_decay``,
  ``O(M * (s_hi - s_lo + 1))`` per window. A predecessor before the start of
  the track counts as "the path starts here" (value ``d_t[j]``), so a track
  that starts mid-stream can still be followed from its first window.

Path tie-breaks
---------------
Many couplings share one bottleneck pair, and the offset and tempo come from
the path, so ties are broken by the sum of the pair costs along the path: at
each cell the predecessor minimises ``(max(d, F_prev), G_prev)``
lexicographically, where ``G`` is that sum, and the end is the ``argmin`` of
``(F, G)``. The distance itself is unaffected (``max(d, min F_prev)`` equals
``min max(d, F_prev)``). Remaining ties go to the smaller step and the smaller
index.

"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from synesthete.checks import require_int, require_real
from synesthete.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_FRECHET_PACE = 2.0
"""The track may advance up to this many times the query's pace within a coupling."""

__all__ = [
    "FrechetResult",
    "as_curve",
    "averaged_path_step",
    "backtrack",
    "best_end",
    "classical_discrete_frechet",
    "distance_matrix",
    "distance_row",
    "distance_rows",
    "estimate_tempo_ratio",
    "frechet_steps",
    "min_point_distance",
    "refined_tempo_ratio",
    "shifted",
    "step_range",
    "stepped_dp",
    "stepped_frechet_distance",
    "subsequence_frechet",
    "subsequence_frechet_many",
]


def as_curve(name: str, values: npt.ArrayLike) -> npt.NDArray[np.floating]:
    array = np.asarray(values)
    if array.dtype.kind not in "fiu":
        raise ConfigError(f"{name} must be numeric, got dtype {array.dtype}")
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ConfigError(f"{name} must be a non-empty [n, D] array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} contains non-finite values")
    return array


def distance_row(q: npt.NDArray[np.floating], curve: npt.NDArray[np.floating]) -> FloatArray:
    """``[M]`` distances from one point ``q [D]`` to every point of ``curve [M, D]``.

    Differences first, then squares summed in float64: a point equal to a
    curve point gets exactly 0, which a Gram-matrix expansion would not give.
    """
    diff = curve - q
    squared: FloatArray = np.einsum("md,md->m", diff, diff, dtype=np.float64)
    return np.sqrt(squared)


def distance_rows(
    points: Sequence[npt.NDArray[np.floating]] | npt.NDArray[np.floating],
    curve: npt.NDArray[np.floating],
) -> FloatArray:
    """``[n, M]``; one row at a time so memory stays ``O(M * D)``."""
    rows = np.empty((len(points), curve.shape[0]), dtype=np.float64)
    for i, q in enumerate(points):
        rows[i] = distance_row(q, curve)
    return rows


def distance_matrix(query: npt.ArrayLike, track: npt.ArrayLike) -> FloatArray:
    """Euclidean distances ``[n, M]`` between ``query [n, D]`` and ``track [M, D]``."""
    q = as_curve("query", query)
    p = as_curve("track", track)
    if q.shape[1] != p.shape[1]:
        raise ConfigError(f"query has D={q.shape[1]} but track has D={p.shape[1]}")
    return distance_rows(q, p)


def min_point_distance(query: npt.ArrayLike, track: npt.ArrayLike) -> float:
    """Mean over ``query [n, D]`` points of the distance to the nearest ``track [M, D]`` point."""
    return float(distance_matrix(query, track).min(axis=1).mean())


def step_range(*, live_hop_s: float, index_hop_s: float, tempo_tolerance: float) -> tuple[int, int]:
    """``(s_lo, s_hi)``: how many track windows one live window may advance.

    With ``r = live_hop_s / index_hop_s``: ``s_lo = max(0, floor(r * (1 - tol)))``
    and ``s_hi = max(1, ceil(r * (1 + tol)))``. ``r = 4, tol = 0.12`` gives
    ``(3, 5)``; ``r = 1`` gives ``(0, 2)``.
    """
    live = require_real("live_hop_s", live_hop_s)
    index = require_real("index_hop_s", index_hop_s)
    tol = require_real("tempo_tolerance", tempo_tolerance)
    if live <= 0.0 or index <= 0.0:
        raise ConfigError(f"hops must be > 0, got live={live}, index={index}")
    if not 0.0 <= tol < 1.0:
        raise ConfigError(f"tempo_tolerance must be in [0, 1), got {tol}")
    ratio = live / index
    # Round off float noise first, so a product that is whole on paper (4 * 1.25)
    # cannot floor or ceil to its neighbour.
    s_lo = max(0, math.floor(round(ratio * (1.0 - tol), 9)))
    s_hi = max(1, math.ceil(round(ratio * (1.0 + tol), 9)))
    return s_lo, s_hi


def _check_steps(s_lo: int, s_hi: int) -> None:
    require_int("s_lo", s_lo, minimum=0)
    require_int("s_hi", s_hi, minimum=1)
    if s_lo > s_hi:
        raise ConfigError(f"s_lo must be <= s_hi, got s_lo={s_lo}, s_hi={s_hi}")


def shifted(
    out: FloatArray, values: FloatArray, *, s_lo: int, fill: FloatArray | float
) -> FloatArray:
    """``out[k, j] = values[j - (s_lo + k)]``, and ``fill`` where that index is negative.

    ``out`` is ``[S, M]``; ``fill`` is a scalar or an ``[M]`` row.
    """
    n_shifts, m = out.shape
    for k in range(n_shifts):
        s = min(s_lo + k, m)
        if isinstance(fill, float):
            out[k, :s] = fill
        else:
            out[k, :s] = fill[:s]
        out[k, s:] = values[: m - s]
    return out


def stepped_dp(
    rows: FloatArray, *, s_lo: int, s_hi: int
) -> tuple[FloatArray, FloatArray, IntArray]:
    """The stepped bottleneck recurrence over ``rows [n, M]`` (all query rows at once).

    Returns ``F [M]`` (bottleneck of the best path ending at each track
    window), ``G [M]`` (its sum of costs, the tie-break) and ``steps [n, M]``
    (the step taken into each cell; row 0 unused).
    """
    n, m = rows.shape
    n_shifts = s_hi - s_lo + 1
    steps = np.zeros((n, m), dtype=np.int64)
    f = rows[0].copy()
    g = rows[0].copy()
    cand_f = np.empty((n_shifts, m), dtype=np.float64)
    cand_g = np.empty((n_shifts, m), dtype=np.float64)
    cols = np.arange(m)
    for i in range(1, n):
        d = rows[i]
        shifted(cand_f, f, s_lo=s_lo, fill=math.inf)
        shifted(cand_g, g, s_lo=s_lo, fill=math.inf)
        key = np.maximum(cand_f, d)
        f = key.min(axis=0)
        k = np.where(key == f, cand_g, math.inf).argmin(axis=0)
        g = d + cand_g[k, cols]
        steps[i] = s_lo + k
    return f, g, steps


def stepped_frechet_distance(rows: npt.ArrayLike, *, s_lo: int, s_hi: int) -> float:
    """The distance of :func:`subsequence_frechet` from precomputed distance ``rows [n, M]``
    (no path): for callers that align many query slices against one track."""
    _check_steps(s_lo, s_hi)
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ConfigError(f"rows must be a non-empty [n, M] matrix, got shape {matrix.shape}")
    f, _, _ = stepped_dp(matrix, s_lo=s_lo, s_hi=s_hi)
    return float(f.min())


def best_end(f: FloatArray, g: FloatArray) -> int:
    """``argmin`` of ``(F, G)`` lexicographically; -1 when no coupling exists."""
    best = f.min()
    if not math.isfinite(float(best)):
        return -1
    return int(np.where(f == best, g, math.inf).argmin())


def backtrack(steps: IntArray, end_index: int) -> tuple[int, ...]:
    path = [end_index]
    for i in range(steps.shape[0] - 1, 0, -1):
        path.append(path[-1] - int(steps[i, path[-1]]))
    return tuple(reversed(path))


@dataclass(frozen=True, kw_only=True)
class FrechetResult:
    """Result of :func:`subsequence_frechet`.

    ``path[i]`` is the track window coupled to query point ``i``; ``start_index``
    and ``end_index`` are its ends. When no coupling exists (the track is too
    short for ``n`` points at ``s_lo``), ``distance`` is ``inf``, both indices
    are -1 and ``path`` is empty.
    """

    distance: float
    end_index: int
    start_index: int
    path: tuple[int, ...] = ()


def subsequence_frechet(
    query: npt.ArrayLike, track: npt.ArrayLike, *, s_lo: int, s_hi: int
) -> FrechetResult:
    """Stepped subsequence discrete Fréchet distance of ``query [n, D]`` inside ``track [M, D]``.

    All of ``query`` is coupled, monotonically, to track windows
    ``j_0 < ... `` with ``j_i - j_{i-1} in [s_lo, s_hi]``, free start and
    free end; the cost is the largest coupled distance. ``O(n * M * S)``.
    """
    _check_steps(s_lo, s_hi)
    rows = distance_matrix(query, track)
    f, g, steps = stepped_dp(rows, s_lo=s_lo, s_hi=s_hi)
    end_index = best_end(f, g)
    if end_index < 0:
        return FrechetResult(distance=math.inf, end_index=-1, start_index=-1)
    path = backtrack(steps, end_index)
    return FrechetResult(
        distance=float(f[end_index]), end_index=end_index, start_index=path[0], path=path
    )


def classical_discrete_frechet(query: npt.ArrayLike, track: npt.ArrayLike) -> float:
    """Textbook discrete Fréchet distance (Eiter & Mannila 1994) of two full curves.

    Both curves are coupled end to end, and either may advance alone, so every
    point of each is matched. ``O(n * M)`` in Python loops: an oracle for tests.

    Relation to :func:`subsequence_frechet` with ``(s_lo, s_hi) = (0, 1)``: that
    variant is the DFD with free ends in ``track`` and without steps that
    advance ``track`` alone. So (a) the DFD of ``query`` against
    ``track[start:end + 1]`` (the span of the stepped path) is at most the
    stepped distance, and (b) the two agree when an optimal full coupling only
    advances ``query`` (``Q = P``, ``Q`` a constant offset of ``P``, ``Q`` a
    copy of ``P`` that lingers on some points) and the free ends do not help.
    """
    d = distance_matrix(query, track)
    n, m = d.shape
    ca = np.full((n, m), math.inf)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                prev = -math.inf
            elif i == 0:
                prev = ca[0, j - 1]
            elif j == 0:
                prev = ca[i - 1, 0]
            else:
                prev = min(ca[i - 1, j], ca[i - 1, j - 1], ca[i, j - 1])
            ca[i, j] = max(prev, d[i, j])
    return float(ca[n - 1, m - 1])


def refined_tempo_ratio(
    rows: FloatArray,
    path: tuple[int, ...],
    *,
    live_hop_s: float,
    index_hop_s: float,
    max_distance: float = math.inf,
    min_points: int = 3,
) -> float:
    """Tempo from a coupling path, refined below the index hop.

    ``rows [n, M]`` are the distance rows of the last ``n`` live windows and
    ``path`` the track window coupled to each of the last ``len(path)`` rows.
    Each coupled position is refined by a parabola through the distances at
    ``j - 1, j, j + 1`` (the minimum of a smooth curve lies between samples),
    and the ratio is the least-squares slope of position against live time.
    Raw path steps are multiples of the index hop, so without this a 0.5 s
    index hop against a 2 s live hop quantises tempo in steps of 25 %.

    Only the coupled pairs within ``max_distance`` are fitted. A path has to
    couple every stored live window, also those from before the track came in
    (the previous track, a crossfade): there it is any chain of allowed steps,
    and its slope anywhere in the step range (``3..5`` windows per live
    window is ±25 %). Fewer than ``min_points`` fitted points give 1.0 (no
    evidence of a tempo change).
    """
    offset = rows.shape[0] - len(path)
    live: list[float] = []
    positions: list[float] = []
    for i, j in enumerate(path):
        row = rows[offset + i]
        mid = float(row[j])
        if not mid <= max_distance:
            continue
        position = float(j)
        if 0 < j < row.shape[0] - 1:
            left, right = float(row[j - 1]), float(row[j + 1])
            curvature = left - 2.0 * mid + right
            if curvature > 1e-9:
                position += float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
        live.append(float(i))
        positions.append(position)
    if len(positions) < max(2, min_points):
        return 1.0
    slope = float(np.polyfit(np.array(live), np.array(positions), 1)[0])
    return slope * index_hop_s / live_hop_s


def averaged_path_step(
    previous: FloatArray,
    row: FloatArray,
    *,
    s_lo: int,
    s_hi: int,
    decay: float,
    entry: FloatArray | float | None = None,
) -> tuple[FloatArray, IntArray]:
    """One live window of the averaged-cost path: ``(F_t [M], step [M])``.

    ``F_t[j] = (1 - decay) * row[j] + decay * min_s F_{t-1}[j - s]`` over
    ``s in [s_lo, s_hi]``, so ``F_t[j]`` is an exponentially weighted mean of
    the coupled distances along the best path ending at track window ``j``.
    A predecessor before the start of the track stands for "the path enters
    the track here" and costs ``entry`` (a scalar or ``[M]``; ``row``, the
    default, makes the entry free of history). ``step[j]`` is the step taken
    into ``j``, or -1 where the path enters. Ties go to the smaller step.
    """
    m = row.shape[0]
    fill = row if entry is None else entry
    cand_f = shifted(np.empty((s_hi - s_lo + 1, m)), previous, s_lo=s_lo, fill=fill)
    k = cand_f.argmin(axis=0)
    cols = np.arange(m)
    step = s_lo + k
    values: FloatArray = (1.0 - decay) * row + decay * cand_f[k, cols]
    steps: IntArray = np.where(cols - step >= 0, step, -1)
    return values, steps


def estimate_tempo_ratio(
    *, path_start: int, path_end: int, n_steps: int, live_hop_s: float, index_hop_s: float
) -> float:
    """Track seconds advanced per live second along a path; 1.0 for a path of one point."""
    if n_steps <= 0:
        return 1.0
    return ((path_end - path_start) * index_hop_s) / (n_steps * live_hop_s)


# ------------------------------------------------------------ banded variant ("sounds like")


def frechet_steps(*, query_hop_s: float, track_hop_s: float) -> int:
    """``S``: the most track sketch points one query sketch point may advance."""
    return max(1, math.ceil(round(_FRECHET_PACE * query_hop_s / track_hop_s, 9)))


def subsequence_frechet_many(
    rows: npt.NDArray[np.floating],
    *,
    position: npt.NDArray[np.int64],
    max_step: int,
    near_start: Sequence[npt.NDArray[np.int64]] = (),
) -> npt.NDArray[np.float32]:
    """Banded subsequence discrete Fréchet of ``E`` query excerpts against every track at once.

    ``rows [E, n, R]``: distances from each excerpt's ``n`` points to the ``R``
    points of all tracks laid end to end; ``position [R]`` is each point's
    index within its track (a coupling never crosses a track start).
    Returns ``[E, R]``: the best coupling cost ending at each point.
    ``near_start[s]``, when given, lists the points with ``position < s``.

    A coupling is the discrete Fréchet coupling of the whole excerpt with a
    contiguous stretch of one track, where each query point is held while the
    track advances ``0..max_step`` points: the cost of cell ``(i, j)`` is
    ``min( max(C[i-1, j], d[i, j]),  min_s max(C[i-1, j-s], d[i, j-s+1..j]) )``
    over ``s = 1..max_step``, with ``C[0, j] = d[0, j]`` (free start).
    """
    _, n, r = rows.shape
    if max_step < 1:
        raise ConfigError(f"max_step must be >= 1, got {max_step}")
    inf = np.float32(np.inf)
    cost = np.array(rows[:, 0, :], dtype=np.float32)
    shifted = np.empty_like(cost)
    run = np.empty_like(cost)
    d_shift = np.empty_like(cost)
    for i in range(1, n):
        d = rows[:, i, :]
        best = np.maximum(cost, d)
        np.copyto(run, d)
        for s in range(1, max_step + 1):
            if s >= r:
                break
            if s > 1:
                d_shift[:, : s - 1] = inf
                d_shift[:, s - 1 :] = d[:, : r - s + 1]
                np.maximum(run, d_shift, out=run)
            shifted[:, :s] = inf
            shifted[:, s:] = cost[:, : r - s]
            shifted[:, near_start[s] if s < len(near_start) else position < s] = inf
            np.minimum(best, np.maximum(shifted, run), out=best)
        cost = best
    return cost
