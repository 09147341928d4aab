"""Versions of one piece of music in a library: found when an index is written.

Pure code: numpy and the standard library only, no I/O (house-style rule 1).

Libraries hold the same music more than once: an album version and a radio
edit, a remaster, a sped-up "last lap" copy of a game theme, a nightcore
upload. To the matcher those are two tracks that both fit the live audio, so
the gap between the best and the second-best track (the margin that
confidence rests on) is near zero and the answer stays "unknown" although
the music is plainly in the library. Users expect the best-fitting version,
said with confidence, and "sounds like" should not offer the other version
as a discovery.

How a pair is found
-------------------
Each track's own curve (variant 0) is read the way the live matcher reads
audio: every ``r``-th window (``r = live_hop_s / index_hop_s``), in chunks of
``chunk_windows`` such windows. For a track ``A``:

1. **Votes.** Each of its live-rate windows asks the candidate source for its
   ``k`` nearest library windows. A track ``B`` that turns up for at least
   ``min_vote_fraction`` of them is a suspect.
2. **Coverage.** For each suspect pair, both ways, each chunk of ``A`` is
   aligned inside every speed variant of ``B`` with the stepped subsequence
   Fréchet distance (:func:`frechet.stepped_frechet_distance`, the live
   matcher's own score, so the same tempo tolerance holds). The chunk is
   *covered* when the best variant's distance is at most ``max_frechet``.
3. **Verdict.** ``A`` and ``B`` are versions when at least
   ``min_coverage`` of the chunks of one of them are covered by the other
   (an edit is covered by its album version, not the other way round) and at
   least ``min_covered_chunks`` chunks are.

Measured on the val split with synthetic versions of nine tracks (tempo
× 1.07 key-locked, speed × 1.05, a 60 % edit), 55 tracks in all: every
version pair had coverage ≥ 0.5 (most 1.0, median chunk distance 0.10–0.31)
and no other pair of the 429 suspects (votes ≥ 0.1) had more than 0.08
(median chunk distances 0.54 and up). The defaults sit in that gap.

The pairs are a property of a generation's content, so the writer computes
them afresh for every generation; ``add`` and ``remove`` never carry stale
ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from synesthete.constants import DEFAULT_LIVE_HOP_S
from synesthete.errors import ConfigError

from .frechet import step_range, stepped_frechet_distance
from .protocols import CandidateSource

FloatArray = npt.NDArray[np.float64]
CurveOf = Callable[[int, int], npt.NDArray[np.float32]]
"""``curve(track_id, variant) -> [M, D]`` unit windows at the index hop."""

__all__ = ["CurveOf", "VersionConfig", "VersionPair", "find_versions", "version_groups"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionConfig:
    """How :func:`find_versions` decides (see the module docstring)."""

    live_hop_s: float = DEFAULT_LIVE_HOP_S
    chunk_windows: int = 8
    """Live-rate windows per chunk: the matcher's default horizon (8 × 2 s)."""
    neighbors_k: int = 20
    min_vote_fraction: float = 0.3
    max_frechet: float = 0.45
    """A covered chunk is as close as a confident live identification (the
    default calibration's 0.5 boundary at a full horizon is 0.45)."""
    min_coverage: float = 0.5
    min_covered_chunks: int = 2
    tempo_tolerance: float = 0.12

    def scaled(self, distance_scale: float) -> VersionConfig:
        """These settings for an encoder whose distances run ``distance_scale`` times
        encoder-v3's (``MatcherConfig.distance_scale``): ``max_frechet`` scales with them.
        A projected encoder's distances are about a fifth of encoder-v3's; at 0.45 every
        pair of pieces of one synthesizer counted as versions of each other."""
        if not 0.0 < distance_scale <= 10.0:
            raise ConfigError(f"versions: distance_scale must be in (0, 10], got {distance_scale}")
        return replace(self, max_frechet=self.max_frechet * distance_scale)

    def __post_init__(self) -> None:
        if not self.live_hop_s > 0.0:
            raise ConfigError(f"versions.live_hop_s must be > 0, got {self.live_hop_s}")
        for name in ("chunk_windows", "neighbors_k", "min_covered_chunks"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"versions.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_vote_fraction", "min_coverage"):
            if not 0.0 < float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"versions.{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 < self.max_frechet <= 2.0:
            raise ConfigError(f"versions.max_frechet must be in (0, 2], got {self.max_frechet}")


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionPair:
    """Two tracks holding the same music. ``track_a < track_b``; ``coverage_a`` is the
    fraction of ``track_a``'s chunks found in ``track_b``, ``coverage_b`` the reverse."""

    track_a: int
    track_b: int
    coverage_a: float
    coverage_b: float


def _live_rate(curve: npt.NDArray[np.float32], *, stride: int) -> npt.NDArray[np.float32]:
    """Every ``stride``-th window: a view, so the library's curves are never copied whole."""
    return curve[::stride]


def _chunk_starts(n_live: int, *, size: int) -> list[int]:
    """Starts of half-overlapping chunks of ``size`` rows; a short track is one chunk."""
    if n_live <= size:
        return [0]
    return list(range(0, n_live - size + 1, max(1, size // 2)))


def _distances(live: npt.NDArray[np.float32], curve: npt.NDArray[np.float32]) -> FloatArray:
    """``[n, M]`` Euclidean distances between unit vectors, from one matrix product."""
    gram = np.asarray(live, dtype=np.float64) @ np.asarray(curve, dtype=np.float64).T
    return np.sqrt(np.maximum(2.0 - 2.0 * gram, 0.0))


def _coverage(
    live: npt.NDArray[np.float32],
    other: Sequence[npt.NDArray[np.float32]],
    *,
    size: int,
    steps: tuple[int, int],
    max_frechet: float,
) -> tuple[float, int]:
    """(fraction, count) of the chunks of ``live`` that some curve in ``other`` covers.

    A chunk's Fréchet distance is at least its worst point's distance to the
    nearest window of the curve, so most chunks of unrelated music are ruled
    out before any alignment.
    """
    starts = _chunk_starts(live.shape[0], size=size)
    matrices = [_distances(live, curve) for curve in other]
    nearest = [m.min(axis=1) for m in matrices]
    covered = 0
    for s in starts:
        for rows, near in zip(matrices, nearest, strict=True):
            chunk = rows[s : s + size]
            if near[s : s + size].max() > max_frechet:
                continue
            if stepped_frechet_distance(chunk, s_lo=steps[0], s_hi=steps[1]) <= max_frechet:
                covered += 1
                break
    return covered / len(starts), covered


def find_versions(
    *,
    track_ids: Sequence[int],
    curve: CurveOf,
    n_variants: int,
    source: CandidateSource,
    index_hop_s: float,
    config: VersionConfig | None = None,
    query_ids: Sequence[int] | None = None,
) -> list[VersionPair]:
    """Pairs of tracks that hold the same music, sorted by ``(track_a, track_b)``.

    ``curve(t, v)`` gives variant ``v`` (``0 .. n_variants - 1``; 0 is the
    track as recorded) of track ``t``; ``source`` answers nearest-window
    queries over every curve. Cost: one ``k``-NN query per live-rate window
    of the library, then a few Fréchet alignments per suspect pair.

    ``query_ids`` (default: every track) are the tracks whose windows vote: only pairs
    with one of them in are found, at the cost of their windows alone. ``index add``
    asks for the added tracks' pairs this way; a pair is found from either side (an edit's
    windows vote for its album version, the album version's for the edit in the part they
    share), so this misses a pair only when the added track is the longer one and the
    shared part is under ``min_vote_fraction`` of it, which a full build would find from
    the other side.
    """
    cfg = config or VersionConfig()
    if n_variants < 1:
        raise ConfigError(f"n_variants must be >= 1, got {n_variants}")
    stride = max(1, round(cfg.live_hop_s / index_hop_s))
    steps = step_range(
        live_hop_s=stride * index_hop_s,
        index_hop_s=index_hop_s,
        tempo_tolerance=cfg.tempo_tolerance,
    )
    ids = [int(t) for t in track_ids]
    known = set(ids)
    voters = ids if query_ids is None else [int(t) for t in query_ids if int(t) in known]
    suspects: set[tuple[int, int]] = set()
    live: dict[int, npt.NDArray[np.float32]] = {}

    def live_of(t: int) -> npt.NDArray[np.float32]:
        if t not in live:
            live[t] = _live_rate(curve(t, 0), stride=stride)
        return live[t]

    for track in voters:
        votes: Counter[int] = Counter()
        queries = np.ascontiguousarray(live_of(track))
        for neighbors in source.query(queries, k=cfg.neighbors_k):
            votes.update({n.track_id for n in neighbors if n.track_id != track})
        needed = cfg.min_vote_fraction * queries.shape[0]
        for other, count in votes.items():
            if count >= needed and other in known:
                suspects.add((min(track, other), max(track, other)))

    pairs: list[VersionPair] = []
    for a, b in sorted(suspects):
        curves_a = [curve(a, v) for v in range(n_variants)]
        curves_b = [curve(b, v) for v in range(n_variants)]
        frac_a, n_a = _coverage(
            live_of(a), curves_b, size=cfg.chunk_windows, steps=steps, max_frechet=cfg.max_frechet
        )
        frac_b, n_b = _coverage(
            live_of(b), curves_a, size=cfg.chunk_windows, steps=steps, max_frechet=cfg.max_frechet
        )
        if (frac_a >= cfg.min_coverage and n_a >= cfg.min_covered_chunks) or (
            frac_b >= cfg.min_coverage and n_b >= cfg.min_covered_chunks
        ):
            pairs.append(VersionPair(track_a=a, track_b=b, coverage_a=frac_a, coverage_b=frac_b))
    return pairs


def version_groups(track_ids: Sequence[int], pairs: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Track id -> group id (the smallest id of its connected component of ``pairs``)."""
    parent = {int(t): int(t) for t in track_ids}

    def root(t: int) -> int:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for a, b in pairs:
        if a in parent and b in parent:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {t: root(t) for t in parent}
