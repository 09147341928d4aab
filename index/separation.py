"""How close a library's pieces come to one another: found when an index is written.

Pure code: numpy and the standard library only, no I/O (house-style rule 1).

An encoder's operating distance (where its calibration says 0.5) is fitted on
the val split's library, whose pieces come from many packages. Music outside
the library is named when it comes that close to a piece in it, and how often
that happens depends on the library: pieces of one synthesizer, one soundfont
or one soundtrack sit close to each other, and unknown music of the same style
sits as close. The library's own pieces tell how close that is. For live-rate
windows of every track (the track as recorded), the distance to the nearest
window of *another* track (any speed variant; not a version of it, see
``versions.py``) is what an unknown piece of the same style would score, as
the library's own pieces stand in for one another.

``separation`` is a low percentile of those distances. The matcher's operating
distance is capped there (``clients.app.matcher_config_for``), so a library of
one style tightens it and a varied one leaves the fitted point alone.

Measured with encoder-v10p (operating distance 0.130): on the demo's 24
synthesized pieces the 1st percentile is 0.092, and 20 unknown pieces of the
same synthesizer (``scripts/bench_strangers.py``) had best path distances of
0.097-0.126, ten of them under 0.130; the val split's library (55 tracks of 22
packages) has 0.123.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from synesthete.constants import DEFAULT_LIVE_HOP_S
from synesthete.errors import ConfigError

from .protocols import CandidateSource

CurveOf = Callable[[int, int], npt.NDArray[np.float32]]

SEPARATION_PERCENTILE = 1.0
"""Which percentile of the nearest-other-track distances is the library's separation."""
MAX_QUERIES = 4000
"""At most this many live-rate windows are asked (a seeded sample beyond): a few seconds
of ANN queries however large the library."""
NEIGHBORS_K = 64
"""Neighbours asked per window: its own track's nearby windows and speed variants fill
the first few dozen, so the nearest other track is found beyond them."""
MIN_DISTANCES = 100
"""Fewer found distances than this (a library of a few short tracks) say nothing."""

__all__ = ["nearest_other_track", "separation"]


def nearest_other_track(
    *,
    track_ids: Sequence[int],
    curve: CurveOf,
    source: CandidateSource,
    index_hop_s: float,
    versions: Mapping[int, frozenset[int]],
    live_hop_s: float = DEFAULT_LIVE_HOP_S,
    max_queries: int = MAX_QUERIES,
    k: int = NEIGHBORS_K,
    seed: int = 0,
) -> npt.NDArray[np.float64]:
    """For live-rate windows of ``track_ids`` (variant 0; a seeded sample of ``max_queries``
    when there are more), the distance to the nearest window of another track that is not
    a version of it; ``inf`` where none is among the ``k`` nearest (its own track's windows,
    a loop of it, came closer: the nearest other track is farther than those, which the low
    percentiles that matter are not). In order of ``track_ids``, then time."""
    if index_hop_s <= 0.0 or live_hop_s <= 0.0:
        raise ConfigError("separation: hops must be > 0")
    stride = max(1, round(live_hop_s / index_hop_s))
    items = [(int(t), w) for t in track_ids for w in range(0, curve(int(t), 0).shape[0], stride)]
    if len(items) > max_queries:
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(items), size=max_queries, replace=False))
        items = [items[i] for i in picked]
    found: list[float] = []
    batch = 512
    for lo in range(0, len(items), batch):
        chunk = items[lo : lo + batch]
        queries = np.stack([np.asarray(curve(t, 0)[w], dtype=np.float32) for t, w in chunk])
        for (track, _), neighbors in zip(chunk, source.query(queries, k=k), strict=True):
            same = versions.get(track, frozenset()) | {track}
            near = next((n.distance for n in neighbors if n.track_id not in same), np.inf)
            found.append(float(near))
    return np.asarray(found, dtype=np.float64)


def separation(
    distances: npt.NDArray[np.float64], *, percentile: float = SEPARATION_PERCENTILE
) -> float | None:
    """The ``percentile`` of ``distances``, ``inf`` counted as farther than any (``None``
    below ``MIN_DISTANCES`` of them, or where it falls among the ``inf``)."""
    if distances.size < MIN_DISTANCES:
        return None
    rank = int(np.floor(percentile / 100.0 * (distances.size - 1)))
    value = float(np.partition(distances, rank)[rank])
    return value if np.isfinite(value) else None
