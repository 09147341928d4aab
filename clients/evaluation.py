"""Recognition metrics from JSONL event streams, as users experience them (issue 3).

Pure functions over parsed event dicts (``synesthete.clients.jsonl.read_events``
parses lines); nothing here reads files. The reading rule is design.md's: the
current answer is the latest ``now_playing`` unless an ``unknown`` followed.
Events are taken in stream order; an event counts at time T when its ``t``
(stream seconds consumed when it was emitted) is <= T.

Per query (``evaluate_query``) against a ``QueryTruth``:

- **acc@T**: the current answer at stream time T is the true track.
- **time to first correct**: ``t`` of the first ``now_playing`` of the true track.
- **wrong ID**: any ``now_playing`` of another track during the query; of those,
  **version ID**: every other track named is a version of the true one
  (``QueryTruth.versions``: an edit, a sped-up copy; the index finds them).
- **false positive**: any ``now_playing`` at all on a negative (no true track).
- **offset error**: median over the query's correct ``now_playing`` events of
  |offset_s - true position at the event's t|, the true position being
  ``excerpt_start_s + t * tempo_factor``.

``summarize`` aggregates per condition and ``"overall"``; ``mix_metrics``
scores DJ mixes; ``markdown_table`` renders either.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from synesthete.errors import ConfigError, ProtocolError
from synesthete.events import current_answer

TrackKey = int | str
"""How a truth names a track: the library id (``match_on="id"``) or its path."""
MatchOn = Literal["id", "path"]

AT_SECONDS: tuple[float, ...] = (4.0, 6.0, 8.0, 12.0)
"""The stream times of acc@T."""
OVERALL = "overall"

SWITCH_TARGET_S = 6.0
"""A track change should be named within this long after the new track dominates."""

_EPS_S = 1e-6
"""Event times are rounded to the millisecond; compare with a hair of slack."""


# --------------------------------------------------------------------------- reading


def _event_t(event: Mapping[str, Any], index: int) -> float:
    try:
        t = event["t"]
    except (KeyError, TypeError):
        raise ProtocolError(f"event {index} has no 't': {event!r}") from None
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise ProtocolError(f"event {index} has a non-numeric 't': {t!r}")
    return float(t)


def _event_type(event: Mapping[str, Any], index: int) -> str:
    kind = event.get("type") if isinstance(event, Mapping) else None
    if not isinstance(kind, str):
        raise ProtocolError(f"event {index} has no 'type': {event!r}")
    return kind


def answer_track(event: Mapping[str, Any] | None, *, match_on: MatchOn = "id") -> TrackKey | None:
    """The track key (``id`` or ``path``) of a ``now_playing`` event; None for None."""
    if event is None:
        return None
    track = event.get("track")
    if not isinstance(track, Mapping) or match_on not in track:
        raise ProtocolError(f"now_playing event without track.{match_on}: {event!r}")
    key = track[match_on]
    if not isinstance(key, int | str) or isinstance(key, bool):
        raise ProtocolError(f"track.{match_on} must be an int or a string, got {key!r}")
    return key


def split_by_file(events: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group one ``identify`` run's events by their ``file``, in order of appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for index, event in enumerate(events):
        name = event.get("file") if isinstance(event, Mapping) else None
        if not isinstance(name, str):
            raise ProtocolError(f"event {index} has no 'file': {event!r}")
        groups.setdefault(name, []).append(dict(event))
    return groups


def current_answer_at(events: Sequence[Mapping[str, Any]], t_s: float) -> dict[str, Any] | None:
    """The ``now_playing`` event that is the current answer at stream time ``t_s``, or None.

    The latest ``now_playing`` with ``t <= t_s``, unless an ``unknown`` with
    ``t <= t_s`` came after it in the stream. Other event types are ignored.
    """
    answer: Mapping[str, Any] | None = None
    for index, event in enumerate(events):
        kind = _event_type(event, index)
        if kind not in ("now_playing", "unknown"):
            continue
        if _event_t(event, index) > t_s + _EPS_S:
            continue
        answer = current_answer(answer, kind, event)
    return None if answer is None else dict(answer)


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryTruth:
    """What a query really is.

    ``track`` is None for a negative (out-of-library music, speech, noise).
    The query's audio at time t is track position
    ``excerpt_start_s + t * tempo_factor`` (``augment.track_position``).
    ``duration_s``, when given, ends the query: later events are ignored.
    ``versions``: the other versions of ``track`` in the library (same key kind).
    """

    condition: str
    track: TrackKey | None
    excerpt_start_s: float = 0.0
    tempo_factor: float = 1.0
    duration_s: float | None = None
    versions: frozenset[TrackKey] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.condition, str) or not self.condition:
            raise ConfigError(f"condition must be a non-empty string, got {self.condition!r}")
        if self.track is not None and (
            isinstance(self.track, bool) or not isinstance(self.track, int | str)
        ):
            raise ConfigError(f"track must be an int, a string or None, got {self.track!r}")
        if not (math.isfinite(self.tempo_factor) and self.tempo_factor > 0):
            raise ConfigError(f"tempo_factor must be > 0, got {self.tempo_factor!r}")
        if not math.isfinite(self.excerpt_start_s):
            raise ConfigError(f"excerpt_start_s must be finite, got {self.excerpt_start_s!r}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"duration_s must be > 0, got {self.duration_s!r}")
        if not isinstance(self.versions, frozenset):
            raise ConfigError(f"versions must be a frozenset, got {self.versions!r}")
        if self.versions and (self.track is None or self.track in self.versions):
            raise ConfigError(
                f"versions must be other tracks than the true one, got {set(self.versions)!r}"
            )

    def position_at(self, t_s: float) -> float:
        """The true track position (s) heard at query time ``t_s``."""
        return self.excerpt_start_s + t_s * self.tempo_factor


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryResult:
    """One query's scores. For a negative, ``correct_at`` is empty and only FP counts."""

    condition: str
    negative: bool
    correct_at: dict[float, bool] = field(default_factory=dict)
    first_correct_s: float | None = None
    wrong_id: bool = False
    version_id: bool = False
    """A wrong ID whose every wrong answer was a version of the true track."""
    false_positive: bool = False
    offset_error_s: float | None = None


def evaluate_query(
    events: Sequence[Mapping[str, Any]],
    truth: QueryTruth,
    *,
    at_s: Sequence[float] = AT_SECONDS,
    match_on: MatchOn = "id",
) -> QueryResult:
    """Score one query's event stream against ``truth`` (see the module docstring)."""
    horizon_s = math.inf if truth.duration_s is None else truth.duration_s + _EPS_S
    during = [e for i, e in enumerate(events) if _event_t(e, i) <= horizon_s]
    playing = [e for i, e in enumerate(during) if _event_type(e, i) == "now_playing"]
    if truth.track is None:
        return QueryResult(condition=truth.condition, negative=True, false_positive=bool(playing))
    correct_at = {
        float(t): answer_track(current_answer_at(during, float(t)), match_on=match_on)
        == truth.track
        for t in at_s
    }
    first_correct_s: float | None = None
    wrong: set[TrackKey] = set()
    errors_s: list[float] = []
    for index, event in enumerate(playing):
        t = _event_t(event, index)
        answer = answer_track(event, match_on=match_on)
        if answer != truth.track:
            if answer is not None:
                wrong.add(answer)
            continue
        if first_correct_s is None:
            first_correct_s = t
        offset = event.get("offset_s")
        if isinstance(offset, int | float) and not isinstance(offset, bool):
            errors_s.append(abs(float(offset) - truth.position_at(t)))
    return QueryResult(
        condition=truth.condition,
        negative=False,
        correct_at=correct_at,
        first_correct_s=first_correct_s,
        wrong_id=bool(wrong),
        version_id=bool(wrong) and wrong <= truth.versions,
        offset_error_s=float(np.median(errors_s)) if errors_s else None,
    )


def _acc_key(t_s: float) -> str:
    return f"acc@{t_s:g}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionSummary:
    """Aggregates over one condition's queries (None where nothing was measured).

    Rates over positives: acc@T, ``first_correct_rate`` (ever correct),
    ``wrong_id_rate`` and the part of it that named only versions of the true
    track, ``version_id_rate``. The median time to first correct is over the queries
    that were ever correct (read it with ``first_correct_rate``). Offset error
    median and p90 are over the per-query median errors. FP rate is over
    negatives.
    """

    queries: int
    negatives: int
    acc_at: dict[float, float | None]
    first_correct_rate: float | None
    median_time_to_first_correct_s: float | None
    wrong_id_rate: float | None
    false_positive_rate: float | None
    offset_error_median_s: float | None
    offset_error_p90_s: float | None
    version_id_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``acc@T`` keys (``acc@4`` ...)."""
        out: dict[str, Any] = {"queries": self.queries, "negatives": self.negatives}
        out.update({_acc_key(t): v for t, v in self.acc_at.items()})
        out.update(
            {
                "first_correct_rate": self.first_correct_rate,
                "median_time_to_first_correct_s": self.median_time_to_first_correct_s,
                "wrong_id_rate": self.wrong_id_rate,
                "version_id_rate": self.version_id_rate,
                "false_positive_rate": self.false_positive_rate,
                "offset_error_median_s": self.offset_error_median_s,
                "offset_error_p90_s": self.offset_error_p90_s,
            }
        )
        return out


def _mean(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _summary(results: Sequence[QueryResult], at_s: Sequence[float]) -> ConditionSummary:
    positives = [r for r in results if not r.negative]
    negatives = [r for r in results if r.negative]
    first = [r.first_correct_s for r in positives if r.first_correct_s is not None]
    offsets = [r.offset_error_s for r in positives if r.offset_error_s is not None]
    acc_at: dict[float, float | None] = {}
    for t in at_s:
        if any(float(t) not in r.correct_at for r in positives):
            raise ConfigError(f"acc@{t:g} asked for, but some queries were scored without it")
        acc_at[float(t)] = _mean([r.correct_at[float(t)] for r in positives])
    return ConditionSummary(
        queries=len(positives),
        negatives=len(negatives),
        acc_at=acc_at,
        first_correct_rate=_mean([r.first_correct_s is not None for r in positives]),
        median_time_to_first_correct_s=_median(first),
        wrong_id_rate=_mean([r.wrong_id for r in positives]),
        version_id_rate=_mean([r.version_id for r in positives]),
        false_positive_rate=_mean([r.false_positive for r in negatives]),
        offset_error_median_s=_median(offsets),
        offset_error_p90_s=_percentile(offsets, 90.0),
    )


def summarize(
    results: Sequence[QueryResult], *, at_s: Sequence[float] = AT_SECONDS
) -> dict[str, ConditionSummary]:
    """Per condition (in order of first appearance) and ``"overall"`` (last)."""
    by_condition: dict[str, list[QueryResult]] = {}
    for result in results:
        by_condition.setdefault(result.condition, []).append(result)
    table = {name: _summary(group, at_s) for name, group in by_condition.items()}
    table[OVERALL] = _summary(results, at_s)
    return table


# --------------------------------------------------------------------------- mixes


@dataclass(frozen=True, slots=True, kw_only=True)
class MixResult:
    """Scores of one mix (see ``mix_metrics``); fractions are None when nothing was scored."""

    scored_seconds: int
    correct_seconds: int
    segments: int
    segments_found: int
    segments_hit: int
    segment_fractions: tuple[float | None, ...]
    switch_delays_s: tuple[float | None, ...] = ()
    """Per transition: seconds from the crossfade's midpoint (where the incoming track
    becomes the louder one) to the first ``now_playing`` naming it; None if it never was
    named while it played."""
    fade_lengths_s: tuple[float, ...] = ()
    """Per transition: the crossfade's length (the overlap of the two segments)."""

    @property
    def seconds_correct(self) -> float | None:
        return self.correct_seconds / self.scored_seconds if self.scored_seconds else None

    @property
    def segment_recall(self) -> float | None:
        return self.segments_found / self.segments if self.segments else None

    @property
    def segment_hit_rate(self) -> float | None:
        return self.segments_hit / self.segments if self.segments else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scored_seconds": self.scored_seconds,
            "correct_seconds": self.correct_seconds,
            "seconds_correct": self.seconds_correct,
            "segments": self.segments,
            "segments_found": self.segments_found,
            "segment_recall": self.segment_recall,
            "segments_hit": self.segments_hit,
            "segment_hit_rate": self.segment_hit_rate,
            "switch_delays_s": list(self.switch_delays_s),
            "fade_lengths_s": list(self.fade_lengths_s),
        }


def _check_segments(
    segments: Sequence[tuple[TrackKey, float, float]],
) -> list[tuple[TrackKey, float, float]]:
    checked = []
    for index, segment in enumerate(segments):
        if not (isinstance(segment, tuple | list) and len(segment) == 3):
            raise ConfigError(f"segment {index} must be (track, start_s, end_s), got {segment!r}")
        track, start_s, end_s = segment
        if isinstance(track, bool) or not isinstance(track, int | str):
            raise ConfigError(f"segment {index} track must be an int or a string, got {track!r}")
        if not (math.isfinite(start_s) and math.isfinite(end_s) and 0 <= start_s < end_s):
            raise ConfigError(f"segment {index} needs 0 <= start_s < end_s, got {segment!r}")
        checked.append((track, float(start_s), float(end_s)))
    return checked


def mix_metrics(
    events: Sequence[Mapping[str, Any]],
    segments: Sequence[tuple[TrackKey, float, float]],
    *,
    ignore_first_s: float = 6.0,
    step_s: float = 1.0,
    min_found_fraction: float = 0.5,
    end_s: float | None = None,
    match_on: MatchOn = "id",
) -> MixResult:
    """Score a DJ mix's event stream against its ground-truth ``segments``.

    ``segments`` are ``(track, start_s, end_s)`` in mix time, overlapping
    during crossfades (``augment.crossfade_mix`` boundaries). The current
    answer is sampled at t = step_s, 2 step_s, ... < ``end_s`` (default: the
    last segment end).

    **Seconds correct.** At a sample time t the *playing* segments are those
    with start <= t < end. A segment is *settled* once t >= start +
    ``ignore_first_s``. A sample is scored when at least one playing segment
    is settled, or when nothing plays (a gap); samples where only freshly
    started segments play are ignored, giving the recognizer time to switch.
    A scored sample is correct when the answer is the track of any playing
    segment (during a crossfade either track counts), or, in a gap, when
    there is no answer.

    **Segment recall.** A segment is *found* when the answer equals its track
    on at least ``min_found_fraction`` of its settled samples (t in
    [start + ignore_first_s, end)); a segment with no settled samples is found
    when it is *hit*. A segment is *hit* when the answer equals its track at
    any sample within [start, end). Recall = found / segments; the hit rate
    is the looser "it was named at some point".

    **Switch delay.** For each transition (segment i+1 starting before
    segment i ends) the seconds from the crossfade's midpoint, where the
    equal-power fade makes the incoming track the louder one, to the first
    ``now_playing`` event that names the incoming track at or after its start
    (negative: named before the midpoint; None: never named while it played).
    """
    checked = _check_segments(segments)
    if not (math.isfinite(step_s) and step_s > 0):
        raise ConfigError(f"step_s must be > 0, got {step_s!r}")
    if not (math.isfinite(ignore_first_s) and ignore_first_s >= 0):
        raise ConfigError(f"ignore_first_s must be >= 0, got {ignore_first_s!r}")
    if not 0.0 <= min_found_fraction <= 1.0:
        raise ConfigError(f"min_found_fraction must be in [0, 1], got {min_found_fraction!r}")
    stop_s = max((s[2] for s in checked), default=0.0) if end_s is None else float(end_s)
    sample_times = [k * step_s for k in range(1, math.ceil(stop_s / step_s) + 1)]
    sample_times = [t for t in sample_times if t < stop_s - _EPS_S]

    scored = correct = 0
    settled_hits = [0] * len(checked)
    settled_total = [0] * len(checked)
    hit = [False] * len(checked)
    for t in sample_times:
        answer = answer_track(current_answer_at(events, t), match_on=match_on)
        playing = [i for i, (_, start, end) in enumerate(checked) if start <= t < end]
        settled = [i for i in playing if t >= checked[i][1] + ignore_first_s - _EPS_S]
        for i in playing:
            if answer == checked[i][0]:
                hit[i] = True
        for i in settled:
            settled_total[i] += 1
            settled_hits[i] += answer == checked[i][0]
        if not playing:
            scored += 1
            correct += answer is None
        elif settled:
            scored += 1
            correct += any(answer == checked[i][0] for i in playing)

    fractions: list[float | None] = [
        hits / total if total else None
        for hits, total in zip(settled_hits, settled_total, strict=True)
    ]
    found = sum(
        (f >= min_found_fraction - 1e-12) if f is not None else h
        for f, h in zip(fractions, hit, strict=True)
    )
    switch_delays: list[float | None] = []
    fades: list[float] = []
    for (_, _, end_prev), (track, start, end) in itertools.pairwise(checked):
        mid = 0.5 * (start + min(end_prev, end))
        fades.append(max(0.0, min(end_prev, end) - start))
        named = [
            _event_t(event, index)
            for index, event in enumerate(events)
            if _event_type(event, index) == "now_playing"
            and start - _EPS_S <= _event_t(event, index) < end
            and answer_track(event, match_on=match_on) == track
        ]
        switch_delays.append(min(named) - mid if named else None)
    return MixResult(
        switch_delays_s=tuple(switch_delays),
        fade_lengths_s=tuple(fades),
        scored_seconds=scored,
        correct_seconds=correct,
        segments=len(checked),
        segments_found=int(found),
        segments_hit=sum(hit),
        segment_fractions=tuple(fractions),
    )


def summarize_mixes(results: Sequence[MixResult]) -> dict[str, Any]:
    """Pooled over mixes: seconds and segments add up, then the fractions are taken."""
    scored = sum(r.scored_seconds for r in results)
    segments = sum(r.segments for r in results)
    found = sum(r.segments_found for r in results)
    hits = sum(r.segments_hit for r in results)
    correct = sum(r.correct_seconds for r in results)
    delays = [d for r in results for d in r.switch_delays_s]
    timed = sorted(d for d in delays if d is not None)
    # The same delays counted from the end of the fade (the outgoing track gone).
    after_end = sorted(
        d - f / 2
        for r in results
        for d, f in zip(r.switch_delays_s, r.fade_lengths_s, strict=False)
        if d is not None
    )
    return {
        "mixes": len(results),
        "scored_seconds": scored,
        "seconds_correct": correct / scored if scored else None,
        "segments": segments,
        "segment_recall": found / segments if segments else None,
        "segment_hit_rate": hits / segments if segments else None,
        "transitions": len(delays),
        "switched_within_6s": (
            sum(d <= SWITCH_TARGET_S for d in timed) / len(delays) if delays else None
        ),
        "switch_delay_median_s": _median(timed),
        "switch_delay_p90_s": _percentile(timed, 90.0),
        "switch_delay_max_s": timed[-1] if timed else None,
        "switch_after_fade_end_median_s": _median(after_end),
        "switch_after_fade_end_p90_s": _percentile(after_end, 90.0),
    }


# --------------------------------------------------------------------------- markdown


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: the results key, its header, and how to show the value."""

    key: str
    header: str
    kind: Literal["count", "rate", "seconds"] = "rate"

    def format(self, value: Any) -> str:
        if value is None:
            return "–"
        if self.kind == "count":
            return str(int(value))
        if self.kind == "rate":
            return f"{100.0 * float(value):.1f}"
        return f"{float(value):.2f}"


QUERY_COLUMNS: tuple[Column, ...] = (
    Column("queries", "n", "count"),
    *(Column(_acc_key(t), f"{_acc_key(t)} %") for t in AT_SECONDS),
    Column("median_time_to_first_correct_s", "first correct s", "seconds"),
    Column("wrong_id_rate", "wrong ID %"),
    Column("version_id_rate", "of which version %"),
    Column("negatives", "neg", "count"),
    Column("false_positive_rate", "FP %"),
    Column("offset_error_median_s", "offset err s", "seconds"),
    Column("offset_error_p90_s", "offset p90 s", "seconds"),
)
"""The per-condition table of issue 3."""

MIX_COLUMNS: tuple[Column, ...] = (
    Column("mixes", "mixes", "count"),
    Column("scored_seconds", "scored s", "count"),
    Column("seconds_correct", "seconds correct %"),
    Column("segments", "segments", "count"),
    Column("segment_recall", "segment recall %"),
    Column("segment_hit_rate", "segment hit %"),
    Column("transitions", "transitions", "count"),
    Column("switched_within_6s", "switched ≤ 6 s %"),
    Column("switch_delay_median_s", "switch median s", "seconds"),
    Column("switch_delay_p90_s", "switch p90 s", "seconds"),
    Column("switch_after_fade_end_median_s", "after fade end median s", "seconds"),
)


def markdown_table(
    rows: Mapping[str, Mapping[str, Any] | ConditionSummary],
    *,
    columns: Sequence[Column] = QUERY_COLUMNS,
    first_header: str = "condition",
) -> str:
    """A GitHub-flavoured markdown table, one row per key of ``rows``.

    ``rows`` maps a row name to a results dict (as written to JSON) or a
    ``ConditionSummary``. A missing or None value shows as "–". Rates are
    percentages, times seconds.
    """
    headers = [first_header, *(c.header for c in columns)]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join([":---", *("---:" for _ in columns)]) + "|",
    ]
    for name, row in rows.items():
        values = row.to_dict() if isinstance(row, ConditionSummary) else row
        cells = [name, *(c.format(values.get(c.key)) for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
