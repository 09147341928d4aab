"""Events: the one vocabulary shared by the matcher, JSONL, websockets and the live view.

Every event has ``type``, ``file`` (the input as given, or the device name) and
``t`` (stream seconds of audio consumed when the event is emitted: the end of
the live window that produced it). ``to_payload`` gives the JSON-ready dict of
design.md; the websocket layer adds ``v``, ``seq`` and ``ts`` around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal["now_playing", "unknown", "candidates", "sounds_like", "status"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackInfo:
    """Library metadata of one track, as readers see it."""

    id: int
    path: str
    title: str
    artist: str | None = None
    album: str | None = None
    duration_s: float | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
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
    """An identification started, changed, or is confirmed with a fresh offset."""

    track: TrackInfo
    offset_s: float
    confidence: float
    tempo_ratio: float = 1.0

    @property
    def type(self) -> EventType:
        return "now_playing"

    def _fields(self) -> dict[str, Any]:
        return {
            "track": self.track.to_payload(),
            "offset_s": round(self.offset_s, 3),
            "confidence": round(self.confidence, 4),
            "tempo_ratio": round(self.tempo_ratio, 4),
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
    """Library tracks nearest by sound to the recent live audio (identified track excluded)."""

    tracks: tuple[tuple[TrackInfo, float], ...]

    @property
    def type(self) -> EventType:
        return "sounds_like"

    def _fields(self) -> dict[str, Any]:
        return {
            "tracks": [
                {"track": info.to_payload(), "distance": round(dist, 5)}
                for info, dist in self.tracks
            ]
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Event):
    """Health of the live loop: levels, xruns, latency, clients."""

    level_dbfs: float | None = None
    xruns: int = 0
    latency_ms: float | None = None
    clients: int = 0
    message: str | None = None
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
        }
        if self.message is not None:
            fields["message"] = self.message
        fields.update(self.extra)
        return fields
