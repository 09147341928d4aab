"""Sounds like: library tracks nearest to the recent live audio, by track-level distance.

Pure code over precomputed summaries, so a live update costs a matrix-vector
product over the library's tracks, not a pass over every window. The default
distance is mean-to-mean: the Euclidean distance between the normalised mean
embedding of the recent live windows and each track's normalised mean
embedding (equivalently, cosine distance of the means).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError


def _normalise_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


@dataclass(frozen=True)
class TrackSummaries:
    """Per-track summary vectors: ``means [T, D]`` (unit rows) for ``track_ids [T]``.

    ``groups [T]`` names duplicates (tracks with the same content hash share a
    group), so "sounds like" can leave out every copy of the identified track.
    """

    track_ids: npt.NDArray[np.int64]
    means: npt.NDArray[np.float32]
    groups: npt.NDArray[np.int64]

    @classmethod
    def from_windows(
        cls,
        *,
        windows: npt.NDArray[np.float32],
        track_ids: Sequence[int],
        starts: Sequence[int],
        counts: Sequence[int],
        content_keys: Sequence[str] | None = None,
    ) -> TrackSummaries:
        """Summaries from the window matrix ``[N, D]`` and each track's row range."""
        if not (len(track_ids) == len(starts) == len(counts)):
            raise ConfigError("track_ids, starts and counts must have the same length")
        dim = windows.shape[1] if windows.ndim == 2 else 0
        means = np.zeros((len(track_ids), dim), dtype=np.float32)
        for row, (start, count) in enumerate(zip(starts, counts, strict=True)):
            if count > 0:
                means[row] = windows[start : start + count].mean(axis=0)
        keys = list(content_keys) if content_keys is not None else [str(t) for t in track_ids]
        first_of: dict[str, int] = {}
        groups = np.array([first_of.setdefault(k, i) for i, k in enumerate(keys)], dtype=np.int64)
        return cls(
            track_ids=np.asarray(track_ids, dtype=np.int64),
            means=_normalise_rows(means),
            groups=groups,
        )

    def nearest(
        self,
        recent: npt.NDArray[np.float32],
        *,
        k: int,
        exclude_track_ids: Sequence[int] = (),
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (track_id, distance) nearest to the mean of ``recent [n, D]``, nearest first.

        Tracks in ``exclude_track_ids`` and every duplicate of them are left out.
        """
        if recent.ndim != 2 or recent.shape[0] == 0 or self.means.shape[0] == 0:
            return []
        query = recent.mean(axis=0)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (self.means @ query)))
        excluded = np.isin(self.track_ids, np.asarray(exclude_track_ids, dtype=np.int64))
        if excluded.any():
            excluded |= np.isin(self.groups, self.groups[excluded])
        distances = np.where(excluded, np.inf, distances)
        order = np.argsort(distances, kind="stable")[:k]
        return [
            (int(self.track_ids[i]), float(distances[i]))
            for i in order
            if np.isfinite(distances[i])
        ]
