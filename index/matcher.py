"""The incremental matcher: live window embeddings in, identification events out.

Pure code: numpy and the standard library only, no I/O (house-style rule 1).

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

Confidence
----------
:class:`Calibration` maps ``(frechet, margin, windows seen)`` to ``0..1`` with
a logistic model. The margin of a candidate is the smallest Fréchet distance
among the *other* candidates minus its own: positive for the best candidate
(the gap to the runner-up), negative for all others. Other versions of the
same music (``CurveLibrary.versions``: an edit, a sped-up copy) are not
rivals and are left out of the margin; the versions then compete on their
Fréchet distances. With a single candidate
the runner-up is the largest neighbor distance of the current window (how far
the rest of the library is). The margin is clipped to ``±margin_cap``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from synesthete.constants import (
    DEFAULT_INDEX_HOP_S,
    DEFAULT_LIVE_HOP_S,
    MAX_INDEX_HOP_S,
    MAX_LIVE_HOP_S,
    MIN_INDEX_HOP_S,
    MIN_LIVE_HOP_S,
    WINDOW_S,
)
from synesthete.errors import ConfigError, LibraryError, ModelError
from synesthete.events import (
    Candidates,
    CandidateScore,
    Event,
    NowPlaying,
    TrackInfo,
    Unknown,
)

from .protocols import CurveLibrary, Neighbor

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FrechetMode = Literal["horizon", "ema"]

_HOP_SLACK_S = 1e-9
"""Hops typed in TOML (0.5000001) still pass the range checks, as in IndexConfig."""

__all__ = [
    "Calibration",
    "DecisionFeatures",
    "FrechetResult",
    "Matcher",
    "MatcherConfig",
    "classical_discrete_frechet",
    "distance_matrix",
    "estimate_tempo_ratio",
    "min_point_distance",
    "refined_tempo_ratio",
    "step_range",
    "stepped_frechet_distance",
    "subsequence_frechet",
]


# --------------------------------------------------------------------------- calibration


def _require_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return as_float


def _require_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Logistic confidence model over the matcher's scores.

    ``confidence = sigmoid(bias + w_frechet * frechet + w_margin * clip(margin)
    + w_windows * min(n, H) / H)``, with the margin clipped to ``±margin_cap``.

    The defaults are hand-set for unit-vector distances (true matches score
    a Fréchet distance of about 0.05-0.3, unrelated audio 0.6-1.2): with a full
    horizon and no margin the 0.5 boundary sits at ``frechet = 0.45``, and a
    clear runner-up gap moves it to at most 0.54. Refit them by measurement
    and load the result with :meth:`from_dict`.
    """

    bias: float = 3.5
    w_frechet: float = -10.0
    w_margin: float = 3.0
    w_windows: float = 1.0
    margin_cap: float = 0.3

    def __post_init__(self) -> None:
        for name in ("bias", "w_frechet", "w_margin", "w_windows", "margin_cap"):
            _require_real(f"calibration.{name}", getattr(self, name))
        # The matcher ranks candidates by confidence and relies on it falling
        # as the distance grows and rising with the runner-up gap.
        if self.w_frechet >= 0.0:
            raise ConfigError(f"calibration.w_frechet must be < 0, got {self.w_frechet}")
        if self.w_margin < 0.0:
            raise ConfigError(f"calibration.w_margin must be >= 0, got {self.w_margin}")
        if self.margin_cap < 0.0:
            raise ConfigError(f"calibration.margin_cap must be >= 0, got {self.margin_cap}")

    def confidence(
        self, *, frechet: float, margin: float, n_windows: int, horizon_windows: int
    ) -> float:
        """Confidence in ``0..1``; an infinite (impossible) distance gives 0."""
        if not math.isfinite(frechet) or math.isnan(margin):
            return 0.0
        clipped_margin = min(max(margin, -self.margin_cap), self.margin_cap)
        window_fraction = min(n_windows, horizon_windows) / horizon_windows
        z = (
            self.bias
            + self.w_frechet * frechet
            + self.w_margin * clipped_margin
            + self.w_windows * window_fraction
        )
        if z >= 0.0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def to_dict(self) -> dict[str, float]:
        return {
            "bias": self.bias,
            "w_frechet": self.w_frechet,
            "w_margin": self.w_margin,
            "w_windows": self.w_windows,
            "margin_cap": self.margin_cap,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Calibration:
        """Build from a mapping such as :meth:`to_dict` gives; missing keys keep defaults."""
        known = set(cls().to_dict())
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"calibration: unknown keys {unknown}; expected {sorted(known)}")
        values = {key: _require_real(f"calibration.{key}", value) for key, value in data.items()}
        return cls(**values)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class MatcherConfig:
    """Settings of one :class:`Matcher`; fixed at construction.

    ``top_k`` is for the caller: how many nearest library windows to request
    per live window. ``candidate_ttl_windows``: a candidate absent from the
    neighbors for more than this many consecutive windows is dropped (never
    the currently identified track).
    """

    index_hop_s: float = DEFAULT_INDEX_HOP_S
    live_hop_s: float = DEFAULT_LIVE_HOP_S
    window_s: float = WINDOW_S
    horizon_windows: int = 8
    frechet_mode: FrechetMode = "ema"
    ema_decay: float = 0.3
    """Chosen on the val split's DJ mixes (docs/dj.md): 0.5 named the incoming track of a
    crossfade about 2 s sooner than 0.7, and 0.3 another 0.7 s sooner (median) with 0.5 pp
    more mix seconds right, with the same accuracy on excerpts; 0.2 gained no more."""
    tempo_tolerance: float = 0.12
    top_k: int = 32
    max_candidates: int = 16
    candidate_ttl_windows: int = 4
    on_threshold: float = 0.5
    off_threshold: float = 0.35
    max_frechet: float = 0.5
    """A track is never newly named while its Fréchet distance is above this, however
    clear its lead: true matches score about 0.05-0.4, and the calibration, which leans
    on the margin, can be fooled by audio far from every track but farther from the rest."""
    lost_windows: int = 2
    mix_hold_windows: int = 4
    switch_windows: int = 2
    version_tie_frechet: float = 0.06
    """Versions of one piece (``CurveLibrary.versions``) whose Fréchet distances are this
    close are tied: the one whose tempo ratio is nearest 1 is named (audio is more often
    played near its own speed than retimed to match another version), and a version
    takes over from the current track only with a lead larger than this, so a tracklist
    does not flip between versions on noise."""
    version_tempo_lead: float = 0.04
    """A tied version is preferred for its tempo only when its ``|log tempo_ratio|`` is
    smaller by more than this (the tempo of a short path is noisy by about 1 %)."""
    report_candidates: int = 5
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self) -> None:
        index_hop_s = _require_real("index_hop_s", self.index_hop_s)
        if not MIN_INDEX_HOP_S - _HOP_SLACK_S <= index_hop_s <= MAX_INDEX_HOP_S + _HOP_SLACK_S:
            raise ConfigError(
                f"index_hop_s must be in [{MIN_INDEX_HOP_S}, {MAX_INDEX_HOP_S}], got {index_hop_s}"
            )
        live_hop_s = _require_real("live_hop_s", self.live_hop_s)
        if not MIN_LIVE_HOP_S - _HOP_SLACK_S <= live_hop_s <= MAX_LIVE_HOP_S + _HOP_SLACK_S:
            raise ConfigError(
                f"live_hop_s must be in [{MIN_LIVE_HOP_S}, {MAX_LIVE_HOP_S}], got {live_hop_s}"
            )
        if _require_real("window_s", self.window_s) <= 0.0:
            raise ConfigError(f"window_s must be > 0, got {self.window_s}")
        _require_int("horizon_windows", self.horizon_windows, minimum=1)
        if self.frechet_mode not in ("horizon", "ema"):
            raise ConfigError(f"frechet_mode must be 'horizon' or 'ema', got {self.frechet_mode!r}")
        if not 0.0 <= _require_real("ema_decay", self.ema_decay) < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= _require_real("tempo_tolerance", self.tempo_tolerance) < 1.0:
            raise ConfigError(f"tempo_tolerance must be in [0, 1), got {self.tempo_tolerance}")
        _require_int("top_k", self.top_k, minimum=1)
        _require_int("max_candidates", self.max_candidates, minimum=1)
        _require_int("candidate_ttl_windows", self.candidate_ttl_windows, minimum=0)
        on = _require_real("on_threshold", self.on_threshold)
        off = _require_real("off_threshold", self.off_threshold)
        if not 0.0 < off <= on < 1.0:
            raise ConfigError(
                f"thresholds must satisfy 0 < off_threshold <= on_threshold < 1, "
                f"got off={off}, on={on}"
            )
        if not 0.0 < _require_real("max_frechet", self.max_frechet) <= 2.0:
            raise ConfigError(f"max_frechet must be in (0, 2], got {self.max_frechet}")
        _require_int("lost_windows", self.lost_windows, minimum=1)
        _require_int("mix_hold_windows", self.mix_hold_windows, minimum=0)
        _require_int("switch_windows", self.switch_windows, minimum=1)
        if not 0.0 <= _require_real("version_tempo_lead", self.version_tempo_lead) < 1.0:
            raise ConfigError(
                f"version_tempo_lead must be in [0, 1), got {self.version_tempo_lead}"
            )
        if not 0.0 <= _require_real("version_tie_frechet", self.version_tie_frechet) <= 2.0:
            raise ConfigError(
                f"version_tie_frechet must be in [0, 2], got {self.version_tie_frechet}"
            )
        _require_int("report_candidates", self.report_candidates, minimum=0)
        if not isinstance(self.calibration, Calibration):
            raise ConfigError(
                f"calibration must be a Calibration, got {type(self.calibration).__name__}"
            )

    @property
    def step_range(self) -> tuple[int, int]:
        """``(s_lo, s_hi)``: track windows one live window may advance, see :func:`step_range`."""
        return step_range(
            live_hop_s=self.live_hop_s,
            index_hop_s=self.index_hop_s,
            tempo_tolerance=self.tempo_tolerance,
        )


# --------------------------------------------------------------------------- pure functions


def _as_curve(name: str, values: npt.ArrayLike) -> npt.NDArray[np.floating]:
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


def _distance_row(q: npt.NDArray[np.floating], curve: npt.NDArray[np.floating]) -> FloatArray:
    """``[M]`` distances from one point ``q [D]`` to every point of ``curve [M, D]``.

    Differences first, then squares summed in float64: a point equal to a
    curve point gets exactly 0, which a Gram-matrix expansion would not give.
    """
    diff = curve - q
    squared: FloatArray = np.einsum("md,md->m", diff, diff, dtype=np.float64)
    return np.sqrt(squared)


def _distance_rows(
    points: Sequence[npt.NDArray[np.floating]] | npt.NDArray[np.floating],
    curve: npt.NDArray[np.floating],
) -> FloatArray:
    """``[n, M]``; one row at a time so memory stays ``O(M * D)``."""
    rows = np.empty((len(points), curve.shape[0]), dtype=np.float64)
    for i, q in enumerate(points):
        rows[i] = _distance_row(q, curve)
    return rows


def distance_matrix(query: npt.ArrayLike, track: npt.ArrayLike) -> FloatArray:
    """Euclidean distances ``[n, M]`` between ``query [n, D]`` and ``track [M, D]``."""
    q = _as_curve("query", query)
    p = _as_curve("track", track)
    if q.shape[1] != p.shape[1]:
        raise ConfigError(f"query has D={q.shape[1]} but track has D={p.shape[1]}")
    return _distance_rows(q, p)


def min_point_distance(query: npt.ArrayLike, track: npt.ArrayLike) -> float:
    """Mean over ``query [n, D]`` points of the distance to the nearest ``track [M, D]`` point."""
    return float(distance_matrix(query, track).min(axis=1).mean())


def step_range(*, live_hop_s: float, index_hop_s: float, tempo_tolerance: float) -> tuple[int, int]:
    """``(s_lo, s_hi)``: how many track windows one live window may advance.

    With ``r = live_hop_s / index_hop_s``: ``s_lo = max(0, floor(r * (1 - tol)))``
    and ``s_hi = max(1, ceil(r * (1 + tol)))``. ``r = 4, tol = 0.12`` gives
    ``(3, 5)``; ``r = 1`` gives ``(0, 2)``.
    """
    live = _require_real("live_hop_s", live_hop_s)
    index = _require_real("index_hop_s", index_hop_s)
    tol = _require_real("tempo_tolerance", tempo_tolerance)
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
    _require_int("s_lo", s_lo, minimum=0)
    _require_int("s_hi", s_hi, minimum=1)
    if s_lo > s_hi:
        raise ConfigError(f"s_lo must be <= s_hi, got s_lo={s_lo}, s_hi={s_hi}")


def _shifted(
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


def _stepped_dp(
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
        _shifted(cand_f, f, s_lo=s_lo, fill=math.inf)
        _shifted(cand_g, g, s_lo=s_lo, fill=math.inf)
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
    f, _, _ = _stepped_dp(matrix, s_lo=s_lo, s_hi=s_hi)
    return float(f.min())


def _best_end(f: FloatArray, g: FloatArray) -> int:
    """``argmin`` of ``(F, G)`` lexicographically; -1 when no coupling exists."""
    best = f.min()
    if not math.isfinite(float(best)):
        return -1
    return int(np.where(f == best, g, math.inf).argmin())


def _backtrack(steps: IntArray, end_index: int) -> tuple[int, ...]:
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
    f, g, steps = _stepped_dp(rows, s_lo=s_lo, s_hi=s_hi)
    end_index = _best_end(f, g)
    if end_index < 0:
        return FrechetResult(distance=math.inf, end_index=-1, start_index=-1)
    path = _backtrack(steps, end_index)
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
    rows: FloatArray, path: tuple[int, ...], *, live_hop_s: float, index_hop_s: float
) -> float:
    """Tempo from a coupling path, refined below the index hop.

    ``rows [n, M]`` are the distance rows of the last ``n`` live windows and
    ``path`` the track window coupled to each of the last ``len(path)`` rows.
    Each coupled position is refined by a parabola through the distances at
    ``j - 1, j, j + 1`` (the minimum of a smooth curve lies between samples),
    and the ratio is the least-squares slope of position against live time.
    Raw path steps are multiples of the index hop, so without this a 0.5 s
    index hop against a 2 s live hop quantises tempo in steps of 25 %.
    Fewer than 3 points give 1.0.
    """
    n_points = len(path)
    if n_points < 3:
        return 1.0
    offset = rows.shape[0] - n_points
    positions = np.empty(n_points)
    for i, j in enumerate(path):
        row = rows[offset + i]
        positions[i] = j
        if 0 < j < row.shape[0] - 1:
            left, mid, right = float(row[j - 1]), float(row[j]), float(row[j + 1])
            curvature = left - 2.0 * mid + right
            if curvature > 1e-9:
                positions[i] = j + float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    steps = np.arange(n_points, dtype=np.float64)
    slope = float(np.polyfit(steps, positions, 1)[0])
    return slope * index_hop_s / live_hop_s


def estimate_tempo_ratio(
    *, path_start: int, path_end: int, n_steps: int, live_hop_s: float, index_hop_s: float
) -> float:
    """Track seconds advanced per live second along a path; 1.0 for a path of one point."""
    if n_steps <= 0:
        return 1.0
    return ((path_end - path_start) * index_hop_s) / (n_steps * live_hop_s)


# --------------------------------------------------------------------------- the matcher


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionFeatures:
    """What the confidence of one candidate is computed from (see ``Calibration``)."""

    track_id: int
    frechet: float
    margin: float
    n_windows: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Score:
    frechet: float
    end_index: int
    min_p2p: float
    tempo_ratio: float
    confidence: float = 0.0


class _Candidate:
    """One candidate curve (a track at one speed variant): the curve, the distance rows of
    the recent live windows, EMA state.

    ``rows [H, M]``, ``row_min [H]`` and ``ema_steps [H, M]`` hold the last
    ``n_rows`` live windows, oldest first. ``ema_steps[i, j]`` is the step the
    EMA path took into track window ``j`` at live window ``i`` (-1: it started
    there).
    """

    __slots__ = (
        "curve",
        "ema_f",
        "ema_steps",
        "info",
        "last_seen",
        "n_rows",
        "row_min",
        "rows",
        "score",
        "speed",
        "track_id",
        "variant",
    )

    def __init__(
        self,
        *,
        track_id: int,
        variant: int,
        speed: float,
        curve: npt.NDArray[np.floating],
        info: TrackInfo,
        horizon_windows: int,
        last_seen: int,
    ) -> None:
        m = curve.shape[0]
        self.track_id = track_id
        self.variant = variant
        self.speed = speed
        self.curve = curve
        self.info = info
        self.rows = np.empty((horizon_windows, m), dtype=np.float64)
        self.row_min = np.empty(horizon_windows, dtype=np.float64)
        self.ema_steps = np.empty((horizon_windows, m), dtype=np.int64)
        self.ema_f = np.zeros(m, dtype=np.float64)
        self.n_rows = 0
        self.last_seen = last_seen
        self.score = _Score(frechet=math.inf, end_index=-1, min_p2p=math.inf, tempo_ratio=1.0)

    def push_row(self, row: FloatArray, *, ema: tuple[int, int, float] | None) -> None:
        """Append one live window's distance row; ``ema = (s_lo, s_hi, decay)`` in EMA mode."""
        first = self.n_rows == 0
        if self.n_rows < self.rows.shape[0]:
            self.n_rows += 1
        else:
            self.rows[:-1] = self.rows[1:]
            self.row_min[:-1] = self.row_min[1:]
            self.ema_steps[:-1] = self.ema_steps[1:]
        last = self.n_rows - 1
        self.rows[last] = row
        self.row_min[last] = row.min()
        if ema is None:
            return
        if first:
            self.ema_f = row.copy()
            self.ema_steps[last] = -1
            return
        s_lo, s_hi, decay = ema
        m = row.shape[0]
        # F_t[j] = (1 - λ) d_t[j] + λ min_s F_{t-1}[j - s]. A predecessor before
        # the track start stands for "the path starts here" and costs d_t[j].
        cand_f = _shifted(np.empty((s_hi - s_lo + 1, m)), self.ema_f, s_lo=s_lo, fill=row)
        k = cand_f.argmin(axis=0)
        cols = np.arange(m)
        step = s_lo + k
        self.ema_f = (1.0 - decay) * row + decay * cand_f[k, cols]
        self.ema_steps[last] = np.where(cols - step >= 0, step, -1)

    def ema_path_start(self, end_index: int) -> tuple[int, int]:
        """Backtrack the EMA path from ``end_index`` within the stored windows: (start, steps)."""
        path = self.ema_path(end_index)
        return path[0], len(path) - 1

    def ema_path(self, end_index: int) -> tuple[int, ...]:
        """EMA path over the stored rows (track windows, oldest first), ending at ``end_index``."""
        path = [end_index]
        for i in range(self.n_rows - 1, 0, -1):
            step = int(self.ema_steps[i, path[-1]])
            if step < 0:
                break
            path.append(path[-1] - step)
        return tuple(reversed(path))


def _off_tempo(cand: _Candidate) -> float:
    """How far the candidate's tempo ratio is from 1, as ``|log ratio|``."""
    return abs(math.log(cand.score.tempo_ratio))


class Matcher:
    """Per-stream incremental matcher (the streaming shape of house-style rule 4).

    Feed it one live window at a time with :meth:`push`: the window's
    embedding and its nearest library windows. It returns the events of that
    window: a ``NowPlaying`` or ``Unknown`` when the decision says so, then a
    ``Candidates`` event.

    Decisions (hysteresis, no flapping):

    * Nothing identified: identify the best candidate once its confidence
      reaches ``on_threshold``. At the very first window, if nothing does,
      emit ``Unknown(reason="no_match")``.
    * Identified: emit ``NowPlaying`` every window with a fresh offset,
      confidence and tempo ratio. Switch to another track when it reaches
      ``on_threshold`` and has a smaller Fréchet distance for
      ``switch_windows`` consecutive windows, or at once if the current track
      is below ``off_threshold``. Otherwise, after ``lost_windows`` consecutive
      windows below ``off_threshold``, emit the track once more with
      ``state="mixing"`` and hold it for up to ``mix_hold_windows`` further
      windows, then emit ``Unknown(reason="lost")``. In a DJ crossfade the
      outgoing track fades out of the windows before the incoming one is
      clear of it; the hold bridges that stretch instead of reporting a gap.
    * Two ``Unknown`` events never follow each other.
    """

    def __init__(self, *, config: MatcherConfig, library: CurveLibrary, stream: str) -> None:
        if not isinstance(config, MatcherConfig):
            raise ConfigError(f"config must be a MatcherConfig, got {type(config).__name__}")
        if not math.isclose(library.index_hop_s, config.index_hop_s, rel_tol=1e-9):
            raise ConfigError(
                f"library index_hop_s={library.index_hop_s} differs from "
                f"matcher index_hop_s={config.index_hop_s}"
            )
        self._config = config
        self._library = library
        self._stream = stream
        self._s_lo, self._s_hi = config.step_range
        self._recent: deque[npt.NDArray[np.float32]] = deque(maxlen=config.horizon_windows)
        self._dim: int | None = None
        self._n_windows = 0
        self._speeds = tuple(float(x) for x in library.speeds)
        if not self._speeds or self._speeds[0] != 1.0:
            raise LibraryError(f"library speeds must start with 1.0, got {self._speeds!r}")
        # Keyed by (track id, speed variant); ``_best`` holds each track's best variant.
        self._candidates: dict[tuple[int, int], _Candidate] = {}
        self._best: dict[int, _Candidate] = {}
        self._ranked: list[CandidateScore] = []
        self._features: list[DecisionFeatures] = []
        self._current_id: int | None = None
        self._current_event: NowPlaying | None = None
        self._last_was_unknown = False
        self._low_windows = 0
        self._challenger_id: int | None = None
        self._challenger_windows = 0

    # ----------------------------------------------------------------- streaming shape

    @property
    def config(self) -> MatcherConfig:
        return self._config

    @property
    def latency_samples(self) -> int:
        """The matcher adds no audio delay; its input windows already carry it."""
        return 0

    def reset(self) -> None:
        """Forget the stream: recent windows, candidates and the current identification."""
        self._recent.clear()
        self._dim = None
        self._n_windows = 0
        self._candidates.clear()
        self._best = {}
        self._ranked = []
        self._features = []
        self._current_id = None
        self._current_event = None
        self._last_was_unknown = False
        self._low_windows = 0
        self._challenger_id = None
        self._challenger_windows = 0

    def flush(self) -> list[Event]:
        """End of stream. Nothing is buffered, so there is nothing to emit; state is kept."""
        return []

    def candidates(self) -> list[CandidateScore]:
        """Scores of the last window's candidates, best first."""
        return list(self._ranked)

    def current(self) -> NowPlaying | None:
        """The latest ``NowPlaying`` of the current identification, or ``None``."""
        return self._current_event

    def push(
        self,
        embedding: npt.NDArray[np.float32],
        neighbors: Sequence[Neighbor],
        *,
        t: float,
    ) -> list[Event]:
        """Take one live window and return its events.

        ``embedding`` is ``[D]`` (unit norm); ``neighbors`` its nearest library
        windows (any order); ``t`` the stream seconds at the end of the window.
        """
        q = self._check_embedding(embedding)
        cfg = self._config
        self._recent.append(q)
        self._n_windows += 1
        window = self._n_windows

        for cand in self._candidates.values():
            self._push_row(cand, _distance_row(q, cand.curve))

        for neighbor in neighbors:
            key = (neighbor.track_id, neighbor.variant)
            seen = self._candidates.get(key)
            if seen is None:
                seen = self._add_candidate(key, window=window)
            seen.last_seen = window

        for key in [
            k
            for k, cand in self._candidates.items()
            if window - cand.last_seen > cfg.candidate_ttl_windows and k[0] != self._current_id
        ]:
            del self._candidates[key]

        for cand in self._candidates.values():
            cand.score = self._score(cand)
        self._prune()
        runner_up = max((n.distance for n in neighbors), default=None)
        self._rank(runner_up)

        events: list[Event] = []
        decision = self._decide(t)
        if decision is not None:
            events.append(decision)
        top = tuple(self._ranked[: cfg.report_candidates])
        events.append(Candidates(file=self._stream, t=t, candidates=top))
        return events

    # ----------------------------------------------------------------- scoring

    def _check_embedding(self, embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        q = np.array(embedding, dtype=np.float32)
        if q.ndim != 1 or q.shape[0] == 0:
            raise ModelError(f"live embedding must be a non-empty [D] vector, got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ModelError("live embedding contains non-finite values")
        if self._dim is None:
            self._dim = int(q.shape[0])
        elif q.shape[0] != self._dim:
            raise ModelError(
                f"live embedding has D={q.shape[0]}, earlier windows had D={self._dim}"
            )
        return q

    def _push_row(self, cand: _Candidate, row: FloatArray) -> None:
        cfg = self._config
        ema = (self._s_lo, self._s_hi, cfg.ema_decay) if cfg.frechet_mode == "ema" else None
        cand.push_row(row, ema=ema)

    def _add_candidate(self, key: tuple[int, int], *, window: int) -> _Candidate:
        track_id, variant = key
        if not 0 <= variant < len(self._speeds):
            raise LibraryError(
                f"neighbor names speed variant {variant} of track {track_id}; "
                f"the library has {len(self._speeds) - 1}"
            )
        curve = np.asarray(self._library.curve(track_id, variant))
        if curve.ndim != 2 or curve.shape[0] == 0 or curve.shape[1] != self._dim:
            raise LibraryError(
                f"curve of track {track_id} has shape {curve.shape}, expected [M, {self._dim}]"
            )
        cand = _Candidate(
            track_id=track_id,
            variant=variant,
            speed=self._speeds[variant],
            curve=curve,
            info=self._library.info(track_id),
            horizon_windows=self._config.horizon_windows,
            last_seen=window,
        )
        # A late candidate is scored over the whole stored horizon at once.
        for row in _distance_rows(list(self._recent), curve):
            self._push_row(cand, row)
        self._candidates[key] = cand
        return cand

    def _score(self, cand: _Candidate) -> _Score:
        cfg = self._config
        n = cand.n_rows
        rows = cand.rows[:n]
        min_p2p = float(cand.row_min[:n].mean())
        if cfg.frechet_mode == "ema":
            end = int(cand.ema_f.argmin())
            tempo = refined_tempo_ratio(
                rows,
                cand.ema_path(end),
                live_hop_s=cfg.live_hop_s,
                index_hop_s=cfg.index_hop_s,
            )
            return _Score(
                frechet=float(cand.ema_f[end]),
                end_index=end,
                min_p2p=min_p2p,
                tempo_ratio=tempo * cand.speed,
            )
        f, g, steps = _stepped_dp(rows, s_lo=self._s_lo, s_hi=self._s_hi)
        end = _best_end(f, g)
        if end < 0:
            # The track is too short to hold the horizon at the slowest step.
            return _Score(
                frechet=math.inf,
                end_index=int(rows[-1].argmin()),
                min_p2p=min_p2p,
                tempo_ratio=cand.speed,
            )
        tempo = refined_tempo_ratio(
            rows,
            _backtrack(steps, end),
            live_hop_s=cfg.live_hop_s,
            index_hop_s=cfg.index_hop_s,
        )
        return _Score(
            frechet=float(f[end]), end_index=end, min_p2p=min_p2p, tempo_ratio=tempo * cand.speed
        )

    def _prune(self) -> None:
        """Keep the curves of the ``max_candidates`` best tracks (the current one first)."""
        cap = self._config.max_candidates
        best = self._best_per_track()
        if len(best) <= cap:
            return
        order = sorted(best, key=lambda t: (t != self._current_id, best[t].score.frechet, t))
        kept = set(order[:cap])
        self._candidates = {k: c for k, c in self._candidates.items() if k[0] in kept}

    def _best_per_track(self) -> dict[int, _Candidate]:
        """Each candidate track's best speed variant: smallest Fréchet, then lowest variant."""
        best: dict[int, _Candidate] = {}
        for c in sorted(self._candidates.values(), key=lambda c: (c.score.frechet, c.variant)):
            best.setdefault(c.track_id, c)
        return best

    def recent_embeddings(self) -> npt.NDArray[np.float32]:
        """The live windows the matcher holds (the horizon), ``[n, D]``, oldest first."""
        if not self._recent:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return np.stack(self._recent)

    def features(self) -> list[DecisionFeatures]:
        """The calibration inputs of every current candidate (for fitting ``Calibration``)."""
        return list(self._features)

    def _rank(self, runner_up: float | None) -> None:
        """Confidence of each track's best speed variant; margins are taken between tracks
        (a track's other variants are not its rivals)."""
        cfg = self._config
        n_windows = len(self._recent)
        self._features = []
        self._best = self._best_per_track()
        finite = sorted(
            (c.score.frechet, c.track_id)
            for c in self._best.values()
            if math.isfinite(c.score.frechet)
        )
        for cand in self._best.values():
            own = cand.score.frechet
            # Another version of the same music fits as well as this one does;
            # it is no evidence against it.
            same_music = self._library.versions(cand.track_id)
            others = (f for f, tid in finite if tid != cand.track_id and tid not in same_music)
            second_or_none = next(others, None)
            if second_or_none is not None:
                second = second_or_none
            elif runner_up is not None:
                second = runner_up
            else:
                second = own
            margin = second - own if math.isfinite(own) else -math.inf
            self._features.append(
                DecisionFeatures(
                    track_id=cand.track_id, frechet=own, margin=margin, n_windows=n_windows
                )
            )
            conf = cfg.calibration.confidence(
                frechet=own,
                margin=margin,
                n_windows=n_windows,
                horizon_windows=cfg.horizon_windows,
            )
            s = cand.score
            cand.score = _Score(
                frechet=s.frechet,
                end_index=s.end_index,
                min_p2p=s.min_p2p,
                tempo_ratio=s.tempo_ratio,
                confidence=conf,
            )
        ordered = sorted(
            self._best.values(),
            key=lambda c: (-c.score.confidence, c.score.frechet, c.track_id),
        )
        self._ranked = [
            CandidateScore(
                track=c.info,
                frechet=c.score.frechet,
                min_p2p=c.score.min_p2p,
                offset_s=self._offset_s(c),
                confidence=c.score.confidence,
            )
            for c in ordered
            if math.isfinite(c.score.frechet)
        ]

    def _offset_s(self, cand: _Candidate) -> float:
        """Track seconds at the end of the live window (a variant's curve runs ``speed``
        times faster than the track: its window j spans track seconds ``speed * (j * hop
        .. j * hop + window)``)."""
        end = cand.score.end_index * self._config.index_hop_s + self._config.window_s
        return end * cand.speed

    # ----------------------------------------------------------------- decisions

    def _now_playing(self, cand: _Candidate, t: float, *, state: str = "playing") -> NowPlaying:
        event = NowPlaying(
            state=state,
            file=self._stream,
            t=t,
            track=cand.info,
            offset_s=self._offset_s(cand),
            confidence=cand.score.confidence,
            tempo_ratio=cand.score.tempo_ratio,
        )
        self._current_event = event
        self._last_was_unknown = False
        return event

    def _identify(self, cand: _Candidate, t: float) -> NowPlaying:
        self._current_id = cand.track_id
        self._low_windows = 0
        self._challenger_id = None
        self._challenger_windows = 0
        return self._now_playing(cand, t)

    def _unknown(self, reason: str, t: float) -> Unknown | None:
        self._current_id = None
        self._current_event = None
        self._low_windows = 0
        self._challenger_id = None
        self._challenger_windows = 0
        if self._last_was_unknown:
            return None
        self._last_was_unknown = True
        return Unknown(file=self._stream, t=t, reason=reason)

    def _among_versions(self, cand: _Candidate, *, skip: int | None = None) -> _Candidate:
        """``cand``, or a version of it tied on Fréchet distance whose tempo ratio is nearer
        1 by more than ``version_tempo_lead`` (see ``MatcherConfig.version_tie_frechet``)."""
        cfg = self._config
        same_music = self._library.versions(cand.track_id)
        if not same_music:
            return cand

        tied = [
            c
            for c in self._best.values()
            if c.track_id in same_music
            and c.track_id != skip
            and c.score.confidence >= cfg.on_threshold
            and c.score.frechet
            <= min(cand.score.frechet + cfg.version_tie_frechet, cfg.max_frechet)
            and _off_tempo(c) < _off_tempo(cand) - cfg.version_tempo_lead
        ]
        return min(tied, key=lambda c: (_off_tempo(c), c.score.frechet, c.track_id), default=cand)

    def _decide(self, t: float) -> Event | None:
        cfg = self._config
        by_confidence = sorted(
            self._best.values(),
            key=lambda c: (-c.score.confidence, c.score.frechet, c.track_id),
        )
        if self._current_id is None:
            if (
                by_confidence
                and by_confidence[0].score.confidence >= cfg.on_threshold
                and by_confidence[0].score.frechet <= cfg.max_frechet
            ):
                return self._identify(self._among_versions(by_confidence[0]), t)
            if self._n_windows == 1:
                return self._unknown("no_match", t)
            return None

        current = self._best[self._current_id]
        low = current.score.confidence < cfg.off_threshold
        self._low_windows = self._low_windows + 1 if low else 0
        same_music = self._library.versions(self._current_id)

        def beats_current(c: _Candidate) -> bool:
            if c.track_id not in same_music:
                return c.score.frechet < min(current.score.frechet, cfg.max_frechet)
            # A version must fit clearly better, and not at a clearly worse tempo: the
            # Fréchet distances of versions wander by more than their true difference.
            return (
                c.score.frechet
                < min(current.score.frechet - cfg.version_tie_frechet, cfg.max_frechet)
                and _off_tempo(c) <= _off_tempo(current) + cfg.version_tempo_lead
            )

        challenger = next(
            (
                c
                for c in by_confidence
                if c.track_id != self._current_id
                and c.score.confidence >= cfg.on_threshold
                and beats_current(c)
            ),
            None,
        )
        if challenger is None and same_music and not low:
            # The first answer among tied versions rests on one window, which has no
            # tempo; once the path shows it, a version nearer its own speed takes over
            # (the tempo lead is the hysteresis, so there is no waiting for windows).
            preferred = self._among_versions(current)
            if preferred is not current:
                return self._identify(preferred, t)
        if challenger is None:
            self._challenger_id = None
            self._challenger_windows = 0
        elif challenger.track_id == self._challenger_id:
            self._challenger_windows += 1
        else:
            self._challenger_id = challenger.track_id
            self._challenger_windows = 1

        if challenger is not None and (low or self._challenger_windows >= cfg.switch_windows):
            return self._identify(self._among_versions(challenger, skip=self._current_id), t)
        if self._low_windows >= cfg.lost_windows + cfg.mix_hold_windows:
            return self._unknown("lost", t)
        if self._low_windows == cfg.lost_windows:
            return self._now_playing(current, t, state="mixing")
        if low:
            # Hold: a reader keeps the last confident answer while we wait to
            # see whether the track comes back; repeating it with a collapsed
            # confidence would only mislead.
            return None
        return self._now_playing(current, t)
