"""The sonic map: a 2-D layout of the library's tracks, and where new audio falls on it.

Each track is its mean vector in the "sounds like" space (the sonic head's
style vectors when the index has one). ``layout`` places the tracks with UMAP
(umap-learn, cosine metric, fixed seed: the same library gives the same map);
``trustworthiness`` says how well the 2-D neighbours keep the true ones.
``place`` puts any query vector (the live audio's, a file's) on the map: the
similarity-weighted mean of its ``PLACE_NEIGHBOURS`` nearest tracks' positions,
which is how UMAP's own ``transform`` starts, without its optimisation (a
few microseconds, so the live dot can move every window, and deterministic).

Coordinates are scaled into [0, 1] x [0, 1].

A generation stores its map when it is written (``index/sonic_store.py``):
the positions, and a ``MapPlacer``, a small network distilled from UMAP's own
``transform`` (``fit_layout``), so the live audio lands where UMAP would put
it, in microseconds and without umap-learn or numba at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError, LibraryError

DEFAULT_MAP_SEED = 20261207
PLACE_NEIGHBOURS = 5
PLACE_SHARPNESS = 20.0
"""Softmax sharpness over cosine similarities: the nearest track pulls hardest."""
UMAP_NEIGHBOURS = 15
UMAP_MIN_DIST = 0.15

FloatArray = npt.NDArray[np.float32]


def _unit(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    x64 = np.asarray(x, dtype=np.float64)
    out: npt.NDArray[np.float64] = x64 / np.maximum(
        np.linalg.norm(x64, axis=-1, keepdims=True), 1e-12
    )
    return out


@dataclass(frozen=True, slots=True)
class _Scale:
    """The affine map of raw layout coordinates into [0.05, 0.95]^2 (aspect kept)."""

    low: npt.NDArray[np.float64]
    span: float
    offset: npt.NDArray[np.float64]

    @classmethod
    def of(cls, xy: npt.NDArray[np.floating]) -> _Scale:
        low = np.asarray(xy, dtype=np.float64).min(axis=0)
        span = float(np.max(np.asarray(xy, dtype=np.float64).max(axis=0) - low))
        if span < 1e-12:
            return cls(low=low, span=0.0, offset=np.zeros(2))
        centred = (xy - low) / span
        return cls(low=low, span=span, offset=(1.0 - centred.max(axis=0)) / 2.0)

    def __call__(self, xy: npt.NDArray[np.floating]) -> FloatArray:
        if self.span == 0.0:
            return np.full(np.shape(xy), 0.5, dtype=np.float32)
        centred = (np.asarray(xy, dtype=np.float64) - self.low) / self.span + self.offset
        out: FloatArray = (0.05 + 0.9 * centred).astype(np.float32)
        return out


def _scaled(xy: npt.NDArray[np.floating]) -> FloatArray:
    """Into [0.05, 0.95]^2, keeping the aspect ratio."""
    return _Scale.of(xy)(xy)


Transform = Callable[[npt.NDArray[np.floating]], FloatArray]
"""Unit vectors ``[n, E]`` → map positions ``[n, 2]`` (the fitted layout's own transform)."""


def fit_layout(
    vectors: npt.NDArray[np.floating], *, seed: int = DEFAULT_MAP_SEED
) -> tuple[FloatArray, Transform]:
    """``vectors [T, E]`` (track means) → (positions ``[T, 2]`` in [0, 1], the transform
    that puts new vectors on the same map).

    UMAP for five tracks or more (its ``transform``, scaled like the positions);
    two to four tracks, too few for UMAP's graph, lie along their first two
    principal axes, and the transform is that projection. ``LibraryError`` for
    an empty library or a library of one track (nothing to lay out);
    ``ImportError`` when umap-learn is missing and UMAP is needed.
    """
    points = _unit(vectors)
    n = points.shape[0]
    if n == 0:
        raise LibraryError("the library is empty: there is no map to draw")
    if n == 1:
        raise LibraryError("the library has one track: a map needs at least two")
    if n <= 4:
        centre = points.mean(axis=0)
        _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
        axes = np.zeros((points.shape[1], 2))
        axes[:, : min(2, vt.shape[0])] = vt[:2].T
        scale = _Scale.of((points - centre) @ axes)

        def project(query: npt.NDArray[np.floating]) -> FloatArray:
            return scale((_unit(query) - centre) @ axes)

        return project(points), project
    import umap  # type: ignore[import-untyped]  # umap-learn: imported here, it pulls in numba

    reducer = umap.UMAP(
        n_neighbors=min(UMAP_NEIGHBOURS, n - 1),
        n_components=2,
        min_dist=UMAP_MIN_DIST,
        metric="cosine",
        random_state=seed,
        init="spectral" if n > 10 else "random",
        n_jobs=1,
    )
    raw = np.asarray(reducer.fit_transform(points), dtype=np.float64)
    scale = _Scale.of(raw)

    def transform(query: npt.NDArray[np.floating]) -> FloatArray:
        return scale(np.asarray(reducer.transform(_unit(query)), dtype=np.float64))

    return scale(raw), transform


def layout(vectors: npt.NDArray[np.floating], *, seed: int = DEFAULT_MAP_SEED) -> FloatArray:
    """``vectors [T, E]`` (track means) → positions ``[T, 2]`` in [0, 1] (``fit_layout``)."""
    return fit_layout(vectors, seed=seed)[0]


def place(
    query: npt.NDArray[np.floating],
    vectors: npt.NDArray[np.floating],
    positions: npt.NDArray[np.floating],
    *,
    k: int = PLACE_NEIGHBOURS,
) -> tuple[float, float]:
    """Where ``query [E]`` falls on the map of ``vectors [T, E]`` at ``positions [T, 2]``."""
    sims = _unit(vectors) @ _unit(query)
    nearest = np.argsort(-sims, kind="stable")[: max(1, min(k, sims.shape[0]))]
    weights = np.exp(PLACE_SHARPNESS * (sims[nearest] - sims[nearest[0]]))
    xy = weights @ np.asarray(positions, dtype=np.float64)[nearest] / weights.sum()
    return float(xy[0]), float(xy[1])


def trustworthiness(
    vectors: npt.NDArray[np.floating], positions: npt.NDArray[np.floating], *, k: int = 10
) -> float:
    """Share of each track's ``k`` nearest neighbours (cosine, in the full space) that are
    also among its ``k`` nearest on the map, averaged over tracks (1 = all kept)."""
    points = _unit(vectors)
    n = points.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return 1.0
    high = 1.0 - points @ points.T
    xy = np.asarray(positions, dtype=np.float64)
    low = np.sum((xy[:, None, :] - xy[None, :, :]) ** 2, axis=-1)
    np.fill_diagonal(high, np.inf)
    np.fill_diagonal(low, np.inf)
    kept = 0
    for i in range(n):
        a = {int(j) for j in np.argsort(high[i], kind="stable")[:k]}
        b = {int(j) for j in np.argsort(low[i], kind="stable")[:k]}
        kept += len(a & b)
    return float(kept) / float(n * k)


PLACER_NEIGHBOURS = 10
PLACER_SHARPNESS = 50.0
PLACER_STRETCHES = 6
"""Live-like stretches per track (``PLACER_STRETCH_POINTS`` consecutive points each) that
UMAP's ``transform`` places, beside the track means, as the placer's anchors."""
PLACER_STRETCH_POINTS = 8


@dataclass(frozen=True, kw_only=True, eq=False)
class MapPlacer:
    """UMAP's ``transform``, distilled: anchors ``points [m, E]`` (unit vectors: the track
    means and live-like stretches of each track) at ``targets [m, 2]`` (where the layout and
    its ``transform`` put them). A new vector lands at the similarity-weighted mean of its
    ``PLACER_NEIGHBOURS`` nearest anchors' targets (softmax of ``PLACER_SHARPNESS`` times the
    cosine). scripts/bench_map.py measured it against ``transform`` itself, a small network
    distilled the same way, and ``place``."""

    points: FloatArray
    targets: FloatArray

    def __post_init__(self) -> None:
        if (
            self.points.ndim != 2
            or self.targets.shape != (self.points.shape[0], 2)
            or self.points.shape[0] == 0
        ):
            raise ConfigError(
                f"map placer: points {self.points.shape} and targets {self.targets.shape} disagree"
            )
        for name, value in self.arrays().items():
            if not np.all(np.isfinite(value)):
                raise ConfigError(f"map placer: {name} has non-finite values")

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    def place(self, vectors: npt.NDArray[np.floating]) -> FloatArray:
        """Vectors ``[n, E]`` (or one ``[E]``) → positions ``[n, 2]`` in [0, 1]."""
        x = _unit(np.atleast_2d(np.asarray(vectors, dtype=np.float64)))
        if x.shape[1] != self.dim:
            raise ConfigError(f"map placer reads [n, {self.dim}] vectors, got {x.shape}")
        sims = x @ _unit(self.points).T
        k = min(PLACER_NEIGHBOURS, sims.shape[1])
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(sims, nearest, axis=1)
        weights = np.exp(PLACER_SHARPNESS * (top - top[:, :1]))
        xy = np.einsum("nk,nkc->nc", weights, self.targets[nearest].astype(np.float64))
        out: FloatArray = np.clip(xy / weights.sum(axis=1, keepdims=True), 0.0, 1.0).astype(
            np.float32
        )
        return out

    def arrays(self) -> dict[str, FloatArray]:
        return {"points": self.points, "targets": self.targets}


def placer_inputs(curves: list[npt.NDArray[np.floating]], *, seed: int) -> npt.NDArray[np.float64]:
    """The placer's anchors: each curve's mean, then ``PLACER_STRETCHES`` live-like
    stretches of it (means of ``PLACER_STRETCH_POINTS`` consecutive points at seeded
    offsets), all unit vectors ``[T * (1 + PLACER_STRETCHES), E]``."""
    rng = np.random.default_rng(seed)
    means = [np.asarray(c, dtype=np.float64).mean(axis=0) for c in curves]
    stretches = []
    for curve in curves:
        count = curve.shape[0]
        span = min(PLACER_STRETCH_POINTS, count)
        for first in rng.integers(0, count - span + 1, size=PLACER_STRETCHES):
            stretches.append(np.asarray(curve[first : first + span], dtype=np.float64).mean(0))
    return _unit(np.array(means + stretches))


def fit_placer(inputs: npt.NDArray[np.floating], targets: npt.NDArray[np.floating]) -> MapPlacer:
    """The ``MapPlacer`` anchored at ``inputs [m, E]`` → ``targets [m, 2]`` (stored as float16
    and float32: what the generation holds is what places the live audio)."""
    points = _unit(np.asarray(inputs, dtype=np.float64)).astype(np.float16).astype(np.float32)
    return MapPlacer(points=points, targets=np.asarray(targets, dtype=np.float32))


def neighbours_kept(
    queries: npt.NDArray[np.floating],
    placed: npt.NDArray[np.floating],
    vectors: npt.NDArray[np.floating],
    positions: npt.NDArray[np.floating],
    *,
    k: int = 10,
) -> float:
    """For new points: the share of each query's ``k`` nearest tracks (cosine, full space)
    that are also the ``k`` nearest to where it was ``placed`` on the map."""
    q = _unit(queries)
    points = _unit(vectors)
    k = min(k, points.shape[0])
    high = 1.0 - q @ points.T
    xy = np.asarray(positions, dtype=np.float64)
    low = np.sum((np.asarray(placed, dtype=np.float64)[:, None, :] - xy[None]) ** 2, axis=-1)
    kept = 0
    for i in range(q.shape[0]):
        a = set(np.argsort(high[i], kind="stable")[:k].tolist())
        b = set(np.argsort(low[i], kind="stable")[:k].tolist())
        kept += len(a & b)
    return float(kept) / float(max(1, q.shape[0] * k))
