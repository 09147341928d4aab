"""Events: the one vocabulary shared by the matcher, JSONL, websockets and the live view.

Every event has ``type``, ``file`` (the input as given, or the device name) and
``t`` (stream seconds of audio consumed when the event is emitted: the end of
the live window that produced it). ``to_payload`` gives the JSON-ready dict of
design.md; the websocket layer adds ``v``, ``seq`` and ``ts`` around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

EventType = Literal[
    "now_playing", "unknown", "candidates", "sounds_like", "up_next", "status", "stream_metadata"
]

_Answer = TypeVar("_Answer")


def current_answer(answer: _Answer | None, event_type: str, event: _Answer) -> _Answer | None:
    """The readers' rule, in one place: the latest ``now_playing`` is the current answer
    until an ``unknown`` follows.

    Fold every event of a stream through it, in order: ``event`` is an ``Event`` or its
    payload (the live view, the tracklist, the broadcaster's snapshot and the evaluation
    all use this reducer, on objects or on dicts).
    """
    if event_type == "now_playing":
        return event
    if event_type == "unknown":
        return None
    return answer


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackInfo:
    """Library metadata of one track, as readers see it."""

    id: int
    path: str
    title: str
    artist: str | None = None
    album: str | None = None
    duration_s: float | None = None
    has_art: bool = False
    """The index holds cover art for it (a server with ``--serve`` gives it at ``/art/<id>``)."""

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "has_art": self.has_art,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateScore:
    """One live candidate track with both running distances (smaller is closer)."""

    track: TrackInfo
    frechet: float
    min_p2p: float
    offset_s: float
    confidence: float

    def to_payload(self) -> dict[str, Any]:
        return {
            "track": self.track.to_payload(),
            "frechet": round(self.frechet, 5),
            "min_p2p": round(self.min_p2p, 5),
            "offset_s": round(self.offset_s, 3),
            "confidence": round(self.confidence, 4),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events; subclasses set ``type``."""

    file: str
    t: float

    @property
    def type(self) -> EventType:
        raise NotImplementedError

    def _fields(self) -> dict[str, Any]:
        return {}

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"type": self.type, "file": self.file, "t": round(self.t, 3)}
        payload.update(self._fields())
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class NowPlaying(Event):
    """An identification started, changed, or is confirmed with a fresh offset.

    ``state`` is ``"playing"``, or ``"mixing"`` once the track's own evidence
    has faded (as in a DJ crossfade) and no other track has taken over yet:
    the track is held, with its real, low confidence, for at most the
    matcher's ``mix_hold_windows`` before an ``unknown`` follows.
    """

    track: TrackInfo
    offset_s: float
    confidence: float
    tempo_ratio: float = 1.0
    state: str = "playing"

    @property
    def type(self) -> EventType:
        return "now_playing"

    def _fields(self) -> dict[str, Any]:
        return {
            "track": self.track.to_payload(),
            "offset_s": round(self.offset_s, 3),
            "confidence": round(self.confidence, 4),
            "tempo_ratio": round(self.tempo_ratio, 4),
            "state": self.state,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown(Event):
    """The current identification is lost, or nothing in the library matches."""

    reason: str = "no_match"

    @property
    def type(self) -> EventType:
        return "unknown"

    def _fields(self) -> dict[str, Any]:
        return {"reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidates(Event):
    """The live candidate tracks, best first."""

    candidates: tuple[CandidateScore, ...]

    @property
    def type(self) -> EventType:
        return "candidates"

    def _fields(self) -> dict[str, Any]:
        return {"candidates": [c.to_payload() for c in self.candidates]}


@dataclass(frozen=True, slots=True, kw_only=True)
class SoundsLike(Event):
    """Library tracks nearest by sound to the recent live audio (identified track excluded).

    ``metric`` names the track-level distance (``index/similar.py``).
    """

    tracks: tuple[tuple[TrackInfo, float], ...]
    metric: str = "mean"
    map_xy: tuple[float, float] | None = None
    """Where the recent audio falls on the stored sonic map (``index/sonic_map.py``), in
    [0, 1]^2; ``None`` (and no field) when the index stores no map."""

    @property
    def type(self) -> EventType:
        return "sounds_like"

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "tracks": [
                {"track": info.to_payload(), "distance": round(dist, 5)}
                for info, dist in self.tracks
            ],
            "metric": self.metric,
        }
        if self.map_xy is not None:
            fields["map_xy"] = [round(self.map_xy[0], 5), round(self.map_xy[1], 5)]
        return fields


@dataclass(frozen=True, slots=True, kw_only=True)
class UpNext(Event):
    """Library tracks to play next, after each change of the identified track.

    ``history`` is the session's identified tracks, oldest first (the one
    just identified last); ``tracks`` are (track, distance) best first, none
    of them played yet (``index/upnext.py``).
    """

    history: tuple[int, ...]
    tracks: tuple[tuple[TrackInfo, float], ...]

    @property
    def type(self) -> EventType:
        return "up_next"

    def _fields(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "tracks": [
                {"track": info.to_payload(), "distance": round(dist, 5)}
                for info, dist in self.tracks
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Event):
    """Health of the live loop: levels, input faults, latency, clients.

    ``input_state`` (``input`` in the payload) is ``"ok"``, ``"lost"`` (the
    device ended or stalled; ``input_error`` says why, and it is being
    reopened: ``reconnect_attempts`` so far, ``give_up_in_s`` left, ``None``
    when retrying for ever) or ``"failed"`` (given up; the loop stops). The
    counters run from the start of the session: ``xruns`` (callbacks whose
    status flagged an overflow), ``overrun_frames`` (frames the ring buffer
    overwrote before they were read), ``nonfinite_samples`` (NaN/inf replaced
    by 0) and ``clipped_samples`` (at full scale). ``flags`` names what
    happened since the previous status: ``"xrun"``, ``"overrun"``,
    ``"nonfinite"``, ``"clipping"``.
    """

    level_dbfs: float | None = None
    xruns: int = 0
    latency_ms: float | None = None
    clients: int = 0
    message: str | None = None
    input_state: str = "ok"
    input_error: str | None = None
    reconnect_attempts: int = 0
    give_up_in_s: float | None = None
    overrun_frames: int = 0
    nonfinite_samples: int = 0
    clipped_samples: int = 0
    flags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> EventType:
        return "status"

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "level_dbfs": None if self.level_dbfs is None else round(self.level_dbfs, 1),
            "xruns": self.xruns,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "clients": self.clients,
            "input": self.input_state,
            "overrun_frames": self.overrun_frames,
            "nonfinite_samples": self.nonfinite_samples,
            "clipped_samples": self.clipped_samples,
            "flags": list(self.flags),
        }
        if self.input_state != "ok":
            fields["input_error"] = self.input_error
            fields["reconnect_attempts"] = self.reconnect_attempts
            fields["give_up_in_s"] = (
                None if self.give_up_in_s is None else round(self.give_up_in_s, 1)
            )
        if self.message is not None:
            fields["message"] = self.message
        fields.update(self.extra)
        return fields


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamMetadata(Event):
    """What a network stream says it plays: ICY ``StreamTitle`` (``origin`` ``icy``; often
    ``"Artist - Title"`` in ``title``, ``artist`` then ``None``), ID3 in HLS (``id3``) or the
    container's own tags, e.g. Ogg Vorbis comments (``tags``). Sent when it changes.

    It is the broadcaster's word, not an identification: it never changes the
    current answer (``now_playing`` / ``unknown``).
    """

    title: str | None
    artist: str | None = None
    origin: str = "icy"
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def type(self) -> EventType:
        return "stream_metadata"

    def _fields(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "artist": self.artist,
            "origin": self.origin,
            "fields": dict(self.fields),
        }


def now_playing_after(current: NowPlaying | None, event: Event) -> NowPlaying | None:
    """:func:`current_answer` for event objects: the ``NowPlaying`` current after ``event``."""
    answer = current_answer(current, event.type, event)
    return answer if isinstance(answer, NowPlaying) else None
