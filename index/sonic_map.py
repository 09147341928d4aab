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
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from synesthete.errors import LibraryError

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


def _scaled(xy: npt.NDArray[np.floating]) -> FloatArray:
    """Into [0.05, 0.95]^2, keeping the aspect ratio."""
    lo = xy.min(axis=0)
    span = float(np.max(xy.max(axis=0) - lo))
    if span < 1e-12:
        return np.full(xy.shape, 0.5, dtype=np.float32)
    centred = (xy - lo) / span
    centred += (1.0 - centred.max(axis=0)) / 2.0
    out: FloatArray = (0.05 + 0.9 * centred).astype(np.float32)
    return out


def layout(vectors: npt.NDArray[np.floating], *, seed: int = DEFAULT_MAP_SEED) -> FloatArray:
    """``vectors [T, E]`` (track means) → positions ``[T, 2]`` in [0, 1].

    ``LibraryError`` for an empty library or a library of one track (nothing
    to lay out). Two to four tracks, too few for UMAP's graph, lie along
    their first principal axis.
    """
    points = _unit(vectors)
    n = points.shape[0]
    if n == 0:
        raise LibraryError("the library is empty: there is no map to draw")
    if n == 1:
        raise LibraryError("the library has one track: a map needs at least two")
    if n <= 4:
        centred = points - points.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred @ vt[0], np.zeros(n)]
        if xy.shape[1] < 2:
            xy = np.c_[xy, np.zeros(n)]
        return _scaled(xy)
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
    xy = np.asarray(reducer.fit_transform(points), dtype=np.float64)
    return _scaled(xy)


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
