"""Interfaces between the pure matcher and the storage adapters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from synesthete.events import TrackInfo


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One nearest library window of a live window.

    ``distance`` is Euclidean between unit vectors (0..2), the same scale the
    matcher uses internally. ``variant`` is the speed variant of the track
    the window belongs to (0: as recorded; see ``CurveLibrary.speeds``), and
    ``window_index`` counts windows of that variant's curve.
    """

    track_id: int
    window_index: int
    distance: float
    variant: int = 0


class CurveLibrary(Protocol):
    """Read access to the library's per-track embedding polylines."""

    @property
    def index_hop_s(self) -> float: ...

    @property
    def speeds(self) -> tuple[float, ...]:
        """Playback speed of each variant: ``speeds[0] == 1.0`` (as recorded), then the
        index's speed variants. Variant ``k``'s window ``j`` starts at track second
        ``j * index_hop_s * speeds[k]``."""
        ...

    def curve(self, track_id: int, variant: int = 0) -> npt.NDArray[np.float32]:
        """``[M, D]`` unit vectors of the variant's windows at the index hop, in time order."""
        ...

    def info(self, track_id: int) -> TrackInfo: ...

    def versions(self, track_id: int) -> frozenset[int]:
        """The other tracks that hold the same music (an edit, a sped-up copy): they
        fit the same audio, so the matcher does not count them as rivals."""
        ...


class CandidateSource(Protocol):
    """Nearest library windows of a batch of live embeddings (an Annoy index, or brute force)."""

    def query(self, embeddings: npt.NDArray[np.float32], *, k: int) -> Sequence[Sequence[Neighbor]]:
        """``embeddings`` is ``[n, D]``; returns n lists of up to ``k`` neighbors, nearest first."""
        ...
