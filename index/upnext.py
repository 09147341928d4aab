"""Up next: library tracks to play after a session's history of tracks.

The session's history is the tracks identified so far, oldest first (or a
seed list: ``synesthete similar --after ID ID ...``). Each library track is
stood for by its mean vector in the "sounds like" space (the sonic head's
style vectors when the index has one, ``index/sonic.py``). The query is the
recency-weighted mean of the history's vectors: the last track weighs 1, the
one before ``decay``, then ``decay**2``, ... so a session that wanders follows
its latest turn while keeping the colour of what came before. Candidates are
ranked by cosine to that mean; every track of the history, and each of its
duplicates and versions, is left out.

``decay = 0`` is "sounds like the last track" alone; scripts/bench_upnext.py
measures both against a random order on soundtracks kept in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError

from .similar import TrackSummaries

DEFAULT_DECAY = 0.9
"""Weight of each older track relative to the next: chosen on the val split by
scripts/bench_upnext.py."""


def history_vector(
    summaries: TrackSummaries, history: Sequence[int], *, decay: float = DEFAULT_DECAY
) -> npt.NDArray[np.float64] | None:
    """The unit query vector of ``history`` (ids oldest first); ``None`` if none is known."""
    if not 0.0 <= decay <= 1.0:
        raise ConfigError(f"up-next decay must be in [0, 1], got {decay}")
    rows = summaries.rows_of(history)
    if rows.size == 0:
        return None
    weights = decay ** np.arange(rows.size - 1, -1, -1, dtype=np.float64)
    centre = weights @ summaries.means[rows].astype(np.float64)
    norm = float(np.linalg.norm(centre))
    if norm < 1e-12:
        centre = summaries.means[rows[-1]].astype(np.float64)
        norm = float(np.linalg.norm(centre))
    out: npt.NDArray[np.float64] = centre / max(norm, 1e-12)
    return out


def up_next(
    summaries: TrackSummaries,
    history: Sequence[int],
    *,
    k: int,
    decay: float = DEFAULT_DECAY,
    exclude_track_ids: Sequence[int] = (),
) -> list[tuple[int, float]]:
    """Up to ``k`` (track_id, cosine distance ``1 - cos``), best first.

    ``history`` and ``exclude_track_ids`` (and all their duplicates) are left
    out. A history with no known track, or a library with nothing left, gives
    ``[]``.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    query = history_vector(summaries, history, decay=decay)
    if query is None:
        return []
    distances = 1.0 - summaries.means.astype(np.float64) @ query
    excluded = summaries.excluded([*history, *exclude_track_ids])
    distances = np.where(excluded, np.inf, distances)
    order = np.argsort(distances, kind="stable")[:k]
    return [
        (int(summaries.track_ids[i]), float(distances[i]))
        for i in order
        if np.isfinite(distances[i])
    ]
