"""The incremental matcher: live window embeddings in, identification events out.

Pure code: numpy and the standard library only, no I/O (house-style rule 1).

The curve kernels (distances, the stepped subsequence Fréchet distance, its
recurrence and tie-breaks, tempo from a path) are in :mod:`.frechet`; this
module keeps the per-stream state and the decisions.

Two running distances are kept per candidate track:

* **Min point-to-point** (``min_p2p``): mean over the recent ``q_i`` of
  ``min_j ||q_i - p_j||``. It ignores order, so loops and repeats cost nothing.
* **Stepped subsequence Fréchet** (``frechet``), over a horizon only, because
  a bottleneck over a long stream is brittle:

  * ``frechet_mode="horizon"``: the exact stepped bottleneck over the last
    ``min(t, horizon_windows)`` live windows, recomputed each window in
    ``O(H * M * (s_hi - s_lo + 1))`` vectorised numpy. It equals
    :func:`.frechet.subsequence_frechet` applied to the recent ``Q``.
  * ``frechet_mode="ema"``: an averaged-cost path, *not* a bottleneck:
    ``F_t[j] = (1 - λ) d_t[j] + λ min_s F_{t-1}[j - s]`` with ``λ = ema_decay``,
    ``O(M * (s_hi - s_lo + 1))`` per window. A predecessor before the start of
    the track counts as "the path starts here" (value ``d_t[j]``), so a track
    that starts mid-stream can still be followed from its first window.

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
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.errors import ConfigError, LibraryError, ModelError
from synesthete.events import (
    Candidates,
    CandidateScore,
    Event,
    NowPlaying,
    TrackInfo,
    Unknown,
)

from .config import MatcherConfig
from .constellation import PeakArray, PeakVerifier, spectral_peaks
from .frechet import (
    averaged_path_step,
    best_end,
    distance_row,
    distance_rows,
    refined_tempo_ratio,
    stepped_dp,
)
from .protocols import CurveLibrary, Neighbor

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


__all__ = ["DecisionFeatures", "Matcher"]

POSITION_DECAY = 0.7
"""Memory of the position path: a live window ``k`` windows back weighs ``0.7 ** k`` as
much as the newest. The score's ``ema_decay`` (0.3) forgets within a window or two, which
names an incoming track soon; a position chosen that way follows whichever repeat of a
section (a chorus) fits the newest window best. On synthesized plays at 0.92-1.08 speed
and on crossfaded mixes, 0.6-0.7 gave the fewest offsets off by more than 1 s (8 of 1170
against 20 at 0.3)."""

POSITION_JUMP = 0.06
"""An established position (``MIN_PATH_POINTS`` matched windows) moves on by an allowed
step unless a path ending elsewhere costs less by more than this: a crossfade or a noisy
window makes every cell of a track fit worse, and a repeat of the section a few tens of
seconds away must not take over for it. Positions that are not yet established move
freely, so an early guess in the wrong repeat is corrected as soon as the music tells."""

MIN_PATH_POINTS = 4
"""Matched windows (coupled distance within ``MatcherConfig.path_distance``) a position
path needs before its slope is a tempo and before its position resists jumps. The slope
of 3 points spans 4 s of audio, and was off by up to 14 % on those plays; from 4 points
(6 s), under 6 % but for one path that began on a weak window."""


# --------------------------------------------------------------------------- the matcher


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionFeatures:
    """What the confidence of one candidate is computed from (see ``Calibration``)."""

    track_id: int
    frechet: float
    margin: float
    n_windows: int
    min_p2p: float = math.inf
    """Mean over the live windows of their nearest window anywhere in the track (no path)."""
    tempo_ratio: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Score:
    frechet: float
    end_index: int
    min_p2p: float
    tempo_ratio: float
    confidence: float = 0.0


class _Candidate:
    """One candidate curve (a track at one speed variant): the curve, the distance rows of
    the recent live windows, the EMA score and the position path.

    ``rows [H, M]``, ``row_min [H]`` and ``path_steps [H, M]`` hold the last
    ``n_rows`` live windows, oldest first. ``path_f [M]`` is the averaged cost of
    the position path ending at each track window (``POSITION_DECAY``) and
    ``path_steps[i, j]`` the step that path took into track window ``j`` at live
    window ``i`` (-1: it started there). ``ema_f [M]`` is the score's own
    averaged cost (``MatcherConfig.ema_decay``), kept only in EMA mode.
    """

    __slots__ = (
        "curve",
        "ema_f",
        "info",
        "last_seen",
        "n_rows",
        "path_end",
        "path_f",
        "path_steps",
        "path_support",
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
        self.path_steps = np.empty((horizon_windows, m), dtype=np.int64)
        self.path_f = np.zeros(m, dtype=np.float64)
        self.path_end = -1
        self.path_support = 0
        self.ema_f = np.zeros(m, dtype=np.float64)
        self.n_rows = 0
        self.last_seen = last_seen
        self.score = _Score(frechet=math.inf, end_index=-1, min_p2p=math.inf, tempo_ratio=1.0)

    def push_row(self, row: FloatArray, *, steps: tuple[int, int], ema_decay: float | None) -> None:
        """Append one live window's distance row; ``ema_decay`` only in EMA mode."""
        first = self.n_rows == 0
        if self.n_rows < self.rows.shape[0]:
            self.n_rows += 1
        else:
            self.rows[:-1] = self.rows[1:]
            self.row_min[:-1] = self.row_min[1:]
            self.path_steps[:-1] = self.path_steps[1:]
        last = self.n_rows - 1
        self.rows[last] = row
        self.row_min[last] = row.min()
        s_lo, s_hi = steps
        if first:
            self.path_f = row.copy()
            self.path_steps[last] = -1
            if ema_decay is not None:
                self.ema_f = row.copy()
            return
        self.path_f, self.path_steps[last] = averaged_path_step(
            self.path_f,
            row,
            s_lo=s_lo,
            s_hi=s_hi,
            decay=POSITION_DECAY,
            entry=float(self.path_f.min()),
        )
        if ema_decay is not None:
            self.ema_f, _ = averaged_path_step(
                self.ema_f, row, s_lo=s_lo, s_hi=s_hi, decay=ema_decay
            )

    def advance_position(
        self, *, s_lo: int, s_hi: int, max_distance: float, jump: float = POSITION_JUMP
    ) -> tuple[int, ...]:
        """Move the position on by this live window; return its path over the stored rows
        (track windows, oldest first). Call once per live window.

        The path ends at the track window of lowest averaged cost, except that an
        established position (``MIN_PATH_POINTS`` coupled distances within
        ``max_distance``) goes on by an allowed step unless that costs more by
        ``POSITION_JUMP``.
        """
        end = int(self.path_f.argmin())
        last = self.path_end
        if (
            self.n_rows > 1
            and self.path_support >= MIN_PATH_POINTS
            and last + s_lo < self.path_f.shape[0]
        ):
            follow = last + s_lo + int(self.path_f[last + s_lo : last + s_hi + 1].argmin())
            if not self.path_f[end] < self.path_f[follow] - jump:
                end = follow
        path = [end]
        for i in range(self.n_rows - 1, 0, -1):
            step = int(self.path_steps[i, path[-1]])
            if step < 0:
                break
            path.append(path[-1] - step)
        path.reverse()
        coupled = self.rows[np.arange(self.n_rows - len(path), self.n_rows), path]
        self.path_end = end
        self.path_support = int(np.count_nonzero(coupled <= max_distance))
        return tuple(path)


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
      reaches ``on_threshold`` within ``max_frechet`` (``first_max_frechet`` on
      the stream's first window). At the very first window, if nothing does,
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

    With a ``verifier`` and the live audio (``push(..., audio=)``), a candidate within
    ``verify_max_distance`` whose confidence falls short is checked by its spectral
    peaks (``constellation.py``): one that passes ``verify_min_z`` is named (nothing
    identified) or keeps the current track from counting as low, with its confidence
    raised to ``on_threshold``.
    """

    def __init__(
        self,
        *,
        config: MatcherConfig,
        library: CurveLibrary,
        stream: str,
        verifier: PeakVerifier | None = None,
    ) -> None:
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
        self._verifier = verifier if config.verify_min_z is not None else None
        self._audio: npt.NDArray[np.float32] | None = None
        self._live_peaks: dict[bool, PeakArray] = {}
        """This window's live peaks: of the whole ``audio`` (False), of the window alone (True)."""
        self._checked: dict[tuple[int, bool], float] = {}
        """This window's peak checks: (track id, window alone) to ``Match.z``."""

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
        audio: npt.NDArray[np.float32] | None = None,
    ) -> list[Event]:
        """Take one live window and return its events.

        ``embedding`` is ``[D]`` (unit norm); ``neighbors`` its nearest library
        windows (any order); ``t`` the stream seconds at the end of the window;
        ``audio`` the stream's last seconds of 16 kHz audio up to ``t`` (at least the
        window; ``constellation.SPAN_S`` serve best), for the peak check.
        """
        q = self._check_embedding(embedding)
        cfg = self._config
        self._audio = audio
        self._live_peaks = {}
        self._checked = {}
        self._recent.append(q)
        self._n_windows += 1
        window = self._n_windows

        for cand in self._candidates.values():
            self._push_row(cand, distance_row(q, cand.curve))

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
        ema_decay = cfg.ema_decay if cfg.frechet_mode == "ema" else None
        cand.push_row(row, steps=(self._s_lo, self._s_hi), ema_decay=ema_decay)

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
        for row in distance_rows(list(self._recent), curve):
            self._push_row(cand, row)
        self._candidates[key] = cand
        return cand

    def _score(self, cand: _Candidate) -> _Score:
        """How well the candidate fits (the Fréchet score of ``frechet_mode``), and where
        and how fast it plays (from the position path, whatever the mode)."""
        cfg = self._config
        n = cand.n_rows
        rows = cand.rows[:n]
        min_p2p = float(cand.row_min[:n].mean())
        if cfg.frechet_mode == "ema":
            frechet = float(cand.ema_f.min())
        else:
            f, g, _ = stepped_dp(rows, s_lo=self._s_lo, s_hi=self._s_hi)
            end = best_end(f, g)
            # No coupling: the track is too short to hold the horizon at the slowest step.
            frechet = float(f[end]) if end >= 0 else math.inf
        path = cand.advance_position(
            s_lo=self._s_lo,
            s_hi=self._s_hi,
            max_distance=cfg.path_distance,
            jump=POSITION_JUMP * cfg.distance_scale,
        )
        tempo = refined_tempo_ratio(
            rows,
            path,
            live_hop_s=cfg.live_hop_s,
            index_hop_s=cfg.index_hop_s,
            max_distance=cfg.path_distance,
            min_points=MIN_PATH_POINTS,
        )
        return _Score(
            frechet=frechet, end_index=path[-1], min_p2p=min_p2p, tempo_ratio=tempo * cand.speed
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
                    track_id=cand.track_id,
                    frechet=own,
                    margin=margin,
                    n_windows=n_windows,
                    min_p2p=cand.score.min_p2p,
                    tempo_ratio=cand.score.tempo_ratio,
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

    # ----------------------------------------------------------------- peak check

    def _verified(self, cand: _Candidate, *, window_only: bool = False) -> bool:
        """Whether ``cand`` passes the peak check on this window (its confidence is then
        raised to ``on_threshold``). ``window_only``: on the live window's audio alone, not
        the seconds before it, which may still be the track that just ended (the check that
        keeps the current track)."""
        cfg = self._config
        if (
            self._verifier is None
            or self._audio is None
            or cfg.verify_min_z is None
            or cand.score.frechet > cfg.verify_distance
        ):
            return False
        key = (cand.track_id, window_only)
        z = self._checked.get(key)
        if z is None:
            audio = self._audio
            if window_only:
                audio = audio[-round(cfg.window_s * SAMPLE_RATE_HZ) :]
            live = self._live_peaks.get(window_only)
            if live is None:
                live = self._live_peaks[window_only] = spectral_peaks(audio)
            live_s = audio.shape[0] / SAMPLE_RATE_HZ
            start = cand.score.end_index * cfg.index_hop_s + cfg.window_s - live_s
            z = self._verifier.match(cand.track_id, cand.speed, live=live, offset_s=start).z
            self._checked[key] = z
        if z < cfg.verify_min_z:
            return False
        if cand.score.confidence < cfg.on_threshold:
            cand.score = replace(cand.score, confidence=cfg.on_threshold)
        return True

    def _verified_candidate(self) -> _Candidate | None:
        """Of the ``verify_candidates`` nearest tracks, the one whose peaks fit best, if
        it passes the peak check."""
        cfg = self._config
        nearest = sorted(
            (c for c in self._best.values() if c.score.frechet <= cfg.verify_distance),
            key=lambda c: (c.score.frechet, c.track_id),
        )[: cfg.verify_candidates]
        passed = [c for c in nearest if self._verified(c)]
        return max(passed, key=lambda c: self._checked[(c.track_id, False)], default=None)

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
            and c.score.frechet <= min(cand.score.frechet + cfg.version_tie, cfg.max_frechet)
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
            guard = cfg.max_frechet
            if self._n_windows == 1 and cfg.first_max_frechet is not None:
                guard = min(guard, cfg.first_max_frechet)
            if (
                by_confidence
                and by_confidence[0].score.confidence >= cfg.on_threshold
                and by_confidence[0].score.frechet <= guard
            ):
                return self._identify(self._among_versions(by_confidence[0]), t)
            verified = self._verified_candidate()
            if verified is not None:
                return self._identify(verified, t)
            if self._n_windows == 1:
                return self._unknown("no_match", t)
            return None

        current = self._best[self._current_id]
        low = current.score.confidence < cfg.off_threshold and not self._verified(
            current, window_only=True
        )
        self._low_windows = self._low_windows + 1 if low else 0
        same_music = self._library.versions(self._current_id)

        def beats_current(c: _Candidate) -> bool:
            if c.track_id not in same_music:
                return c.score.frechet < min(current.score.frechet, cfg.max_frechet)
            # A version must fit clearly better, and not at a clearly worse tempo: the
            # Fréchet distances of versions wander by more than their true difference.
            return (
                c.score.frechet < min(current.score.frechet - cfg.version_tie, cfg.max_frechet)
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
