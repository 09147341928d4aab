"""``synesthete watch``: a websocket client that prints a Synesthete server's events.

Two output forms, one line per event:

- human-readable (default), e.g. ``    12.0s  ▶ Title — Artist  at 0:34  conf 0.87``;
- JSONL (``--jsonl``): the event payloads of design.md's JSONL contract, that
  is the websocket message without the envelope's ``v``, ``seq`` and ``ts``
  (and without a slow client's ``dropped`` counter), so the output reads like
  ``synesthete listen --no-tui`` or ``identify``.

The snapshot that arrives on every (re)connect is unpacked into the events it
holds, so a reader's rule "the latest now_playing is the answer until an
unknown follows" survives reconnects: when a reconnect finds nothing playing
after a ``now_playing`` was written, an ``unknown`` with reason
``reconnected`` is written. Control replies (``pong``, ``subscribed``) are not
printed; server ``error`` messages and dropped-message notes go to stderr.

The connection is retried with exponential backoff once it has worked (and
from the start with ``--wait``); a bad URL, a refused first connection or a
refused handshake (bad token, wrong path) is a one-line error. ``EventPrinter``
holds the formatting and needs no socket; ``watch`` is the asyncio loop.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import (
    ConnectionClosedError,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from synesthete.clients.protocol import (
    EVENT_TYPES,
    PROTOCOL_VERSION,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Encoding,
    decode,
    encode,
)
from synesthete.errors import ConfigError, ProtocolError, SynestheteError

DEFAULT_PORT = 8765
ENVELOPE_KEYS = frozenset({"v", "seq", "ts", "dropped"})
CONTROL_TYPES = frozenset({"pong", "subscribed"})
# The order a snapshot's held events are written in: the answer comes last.
SNAPSHOT_KEYS = (
    "status",
    "stream_metadata",
    "candidates",
    "sounds_like",
    "up_next",
    "now_playing",
)


class WatchError(SynestheteError):
    """The watch client cannot reach the server, or the server refused it."""


def normalize_url(text: str) -> str:
    """``ws://HOST:PORT/`` as given; ``http(s)://`` becomes ``ws(s)://``; ``HOST:PORT`` is expanded.

    Raises ``ConfigError`` (one line) for anything that is not a websocket address.
    """
    value = text.strip()
    shorthand = "://" not in value
    if shorthand:
        value = f"ws://{value}"
    parts = urlsplit(value)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or (shorthand and "@" in parts.netloc):
        raise ConfigError(f"not a websocket URL (ws://HOST:PORT/): {text!r}")
    try:
        port = parts.port
    except ValueError as err:
        raise ConfigError(f"bad port in websocket URL {text!r}") from err
    if not parts.hostname:
        raise ConfigError(f"websocket URL has no host: {text!r}")
    if port is None and shorthand:
        port = DEFAULT_PORT
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def parse_types(text: str) -> frozenset[str]:
    """``now_playing,unknown`` → a set of event types; unknown names are a ``ConfigError``."""
    types = frozenset(t.strip() for t in text.split(",") if t.strip())
    if not types:
        raise ConfigError("--types needs at least one event type")
    unknown = sorted(types - EVENT_TYPES)
    if unknown:
        raise ConfigError(
            f"unknown event types: {', '.join(unknown)} (known: {', '.join(sorted(EVENT_TYPES))})"
        )
    return types


@dataclass(frozen=True, kw_only=True)
class WatchConfig:
    """What to connect to and how to print; the CLI maps ``watch``'s options onto it."""

    url: str
    jsonl: bool = False
    msgpack: bool = False
    types: frozenset[str] | None = None
    token: str | None = None
    count: int | None = None
    reconnect: bool = True
    wait: bool = False
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 1.0
    """How long leaving (Ctrl-C, ``--count``) waits for the server's closing handshake;
    websockets' default of 10 s kept Ctrl-C waiting on a stalled server."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", normalize_url(self.url))
        if self.types is not None:
            unknown = sorted(self.types - EVENT_TYPES)
            if unknown or not self.types:
                raise ConfigError(f"unknown event types: {', '.join(unknown) or '(none given)'}")
        if self.count is not None and self.count < 1:
            raise ConfigError(f"--count must be >= 1, got {self.count}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError("backoff must satisfy 0 < initial <= max")
        if not self.close_timeout_s > 0:
            raise ConfigError(f"close timeout must be > 0, got {self.close_timeout_s}")

    @property
    def encoding(self) -> Encoding:
        return "msgpack" if self.msgpack else "json"


def _fmt_time(seconds: float) -> str:
    minutes, secs = divmod(int(max(0.0, seconds)), 60)
    return f"{minutes:d}:{secs:02d}"


def _track_name(track: Any) -> str:
    if not isinstance(track, dict):
        return "?"
    title = str(track.get("title") or "?")
    artist = track.get("artist")
    return f"{title} — {artist}" if artist else title


def _number(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) else default


def describe(payload: dict[str, Any]) -> str:
    """One human-readable line for an event payload (or an enveloped message)."""
    kind = payload.get("type")
    stamp = f"{_number(payload.get('t')):8.1f}s"
    if kind == "now_playing":
        line = (
            f"{stamp}  ▶ {_track_name(payload.get('track'))}"
            f"  at {_fmt_time(_number(payload.get('offset_s')))}"
            f"  conf {_number(payload.get('confidence')):.2f}"
        )
        tempo = _number(payload.get("tempo_ratio"), 1.0)
        if abs(tempo - 1.0) > 0.005:
            line += f"  tempo {(tempo - 1.0) * 100:+.1f}%"
        if payload.get("state") == "mixing":
            line += "  (mixing)"
        return line
    if kind == "unknown":
        return f"{stamp}  ■ unknown ({payload.get('reason', 'no_match')})"
    if kind == "candidates":
        items = payload.get("candidates") or []
        listed = ", ".join(
            f"{_track_name(c.get('track'))} {_number(c.get('confidence')):.2f}"
            for c in items[:3]
            if isinstance(c, dict)
        )
        return f"{stamp}  ? candidates: {listed or '(none)'}"
    if kind == "sounds_like":
        items = payload.get("tracks") or []
        listed = ", ".join(
            f"{_track_name(s.get('track'))} ({_number(s.get('distance')):.3f})"
            for s in items[:3]
            if isinstance(s, dict)
        )
        return f"{stamp}  ≈ sounds like: {listed or '(none)'}"
    if kind == "up_next":
        items = payload.get("tracks") or []
        listed = ", ".join(_track_name(s.get("track")) for s in items[:3] if isinstance(s, dict))
        return f"{stamp}  » up next: {listed or '(none)'}"
    if kind == "stream_metadata":
        said = " — ".join(str(payload[k]) for k in ("title", "artist") if payload.get(k))
        return f"{stamp}  ♪ stream says: {said or '(nothing)'} ({payload.get('origin')})"
    if kind == "status":
        level = payload.get("level_dbfs")
        latency = payload.get("latency_ms")
        parts = [
            "level " + ("—" if level is None else f"{_number(level):.1f} dBFS"),
            f"xruns {payload.get('xruns', 0)}",
            "latency " + ("—" if latency is None else f"{_number(latency):.1f} ms"),
            f"clients {payload.get('clients', 0)}",
        ]
        if payload.get("input") not in (None, "ok"):
            state = str(payload["input"]).upper()
            parts.insert(0, f"input {state} ({payload.get('input_error')})")
        flags = payload.get("flags")
        if isinstance(flags, list) and flags:
            parts.append("flags " + ",".join(str(f) for f in flags))
        if payload.get("message"):
            parts.append(str(payload["message"]))
        return f"{stamp}  · status: {', '.join(parts)}"
    body = {k: v for k, v in payload.items() if k not in ENVELOPE_KEYS | {"type", "t"}}
    return f"{stamp}  {kind}: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}"


def strip_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """A websocket message as a JSONL payload: without ``v``, ``seq``, ``ts`` and ``dropped``."""
    return {k: v for k, v in message.items() if k not in ENVELOPE_KEYS}


class EventPrinter:
    """Turns server messages into output lines and stderr notes (sans I/O).

    ``feed(message)`` returns ``(lines, notes)``; ``written`` counts the event
    lines so far; ``connected()`` resets the per-connection state (the
    server's ``dropped`` counter starts again with every connection).
    """

    def __init__(self, *, jsonl: bool, types: frozenset[str] | None = None) -> None:
        self.jsonl = jsonl
        self.types = types
        self.written = 0
        self._dropped_seen = 0
        self._playing: dict[str, Any] | None = None
        self._connections = 0

    def connected(self) -> None:
        self._connections += 1
        self._dropped_seen = 0

    def _wanted(self, kind: str) -> bool:
        return self.types is None or kind in self.types

    def _line(self, payload: dict[str, Any], *, snapshot: bool = False) -> str:
        if payload.get("type") == "now_playing":
            self._playing = payload
        elif payload.get("type") == "unknown":
            self._playing = None
        self.written += 1
        if self.jsonl:
            return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        line = describe(payload)
        return f"{line}  (snapshot)" if snapshot else line

    def feed(self, message: dict[str, Any]) -> tuple[list[str], list[str]]:
        version = message.get("v")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"server speaks protocol version {version!r}; this client speaks {PROTOCOL_VERSION}"
            )
        notes: list[str] = []
        dropped = message.get("dropped")
        if isinstance(dropped, int) and dropped > self._dropped_seen:
            notes.append(
                f"the server dropped {dropped - self._dropped_seen} message(s): "
                "this client reads too slowly"
            )
            self._dropped_seen = dropped
        kind = str(message.get("type"))
        if kind == "error":
            notes.append(f"server error: {message.get('error')}")
            return [], notes
        if kind in CONTROL_TYPES:
            return [], notes
        if kind == "snapshot":
            return self._snapshot(message), notes
        if not self._wanted(kind):
            return [], notes
        return [self._line(strip_envelope(message))], notes

    def _snapshot(self, message: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        held = {key: message.get(key) for key in SNAPSHOT_KEYS}
        if held["now_playing"] is None and self._playing is not None and self._wanted("unknown"):
            # Whatever was playing ended while we were away; say so in-band.
            status = held["status"] if isinstance(held["status"], dict) else {}
            lines.append(
                self._line(
                    {
                        "type": "unknown",
                        "file": status.get("file", self._playing.get("file")),
                        "t": status.get("t", self._playing.get("t")),
                        "reason": "reconnected",
                    },
                    snapshot=True,
                )
            )
        if self.jsonl:
            for key in SNAPSHOT_KEYS:
                payload = held[key]
                if isinstance(payload, dict) and self._wanted(key):
                    lines.append(self._line(payload, snapshot=True))
            return lines
        now = held["now_playing"]
        if isinstance(now, dict):
            if self._wanted("now_playing"):
                lines.append(self._line(now, snapshot=True))
        elif not lines:
            lines.append(f"{'':9}  (snapshot) nothing identified yet")
        return lines


def connect_failure(error: BaseException) -> str:
    """Why a connection attempt failed, in words, without errno numbers."""
    if isinstance(error, ConnectionRefusedError):
        return "nothing is listening there (connection refused)"
    if isinstance(error, TimeoutError):
        return "no answer (timed out)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return " ".join(str(error).split()) or type(error).__name__


async def watch(config: WatchConfig, *, out: TextIO, err: TextIO) -> int:
    """Print events until ``count`` lines were written, or forever (Ctrl-C stops it)."""
    printer = EventPrinter(jsonl=config.jsonl, types=config.types)
    encoding = config.encoding
    subprotocol = SUBPROTOCOL_MSGPACK if config.msgpack else SUBPROTOCOL_JSON
    headers = None if config.token is None else {"Authorization": f"Bearer {config.token}"}
    delay_s = config.backoff_initial_s
    ever_connected = False
    # One stderr note per outage, not one per attempt: a retry every 10 s would flood it.
    outage_noted = False
    while True:
        try:
            async with connect(
                config.url,
                subprotocols=[subprotocol],  # type: ignore[list-item]
                additional_headers=headers,
                open_timeout=config.open_timeout_s,
                close_timeout=config.close_timeout_s,
            ) as connection:
                ever_connected = True
                delay_s = config.backoff_initial_s
                if outage_noted:
                    err.write(f"synesthete: watch: connected to {config.url}\n")
                    outage_noted = False
                printer.connected()
                if connection.subprotocol not in (None, subprotocol):
                    raise WatchError(f"server chose subprotocol {connection.subprotocol!r}")
                if config.types is not None:
                    command = {
                        "v": PROTOCOL_VERSION,
                        "type": "subscribe",
                        "types": sorted(config.types),
                    }
                    await connection.send(encode(command, encoding))
                async for frame in connection:
                    try:
                        message = decode(frame, encoding)
                    except ProtocolError as error:
                        err.write(f"synesthete: watch: ignoring a frame: {error}\n")
                        continue
                    lines, notes = printer.feed(message)
                    for note in notes:
                        err.write(f"synesthete: watch: {note}\n")
                    for line in lines:
                        out.write(line + "\n")
                    out.flush()
                    if config.count is not None and printer.written >= config.count:
                        return 0
            reason = "the server closed the connection"
        except InvalidURI as error:
            raise ConfigError(f"bad websocket URL {config.url!r}: {error}") from error
        except InvalidStatus as error:
            response = error.response
            body = response.body.decode("utf-8", "replace").strip() if response.body else ""
            detail = f": {body}" if body else ""
            raise WatchError(
                f"{config.url} refused the connection: HTTP {response.status_code}{detail}"
            ) from error
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosedError) as error:
            reason = connect_failure(error)
            if not ever_connected and not config.wait:
                hint = ""
                if isinstance(error, ConnectionRefusedError):
                    hint = (
                        "; start one with `synesthete listen --serve HOST:PORT` (or demo),"
                        " or pass --wait to wait for it"
                    )
                raise WatchError(f"cannot connect to {config.url}: {reason}{hint}") from error
        if not config.reconnect:
            return 0
        if not outage_noted:
            doing = "reconnecting" if ever_connected else "waiting for the server"
            err.write(
                f"synesthete: watch: {reason}; {doing} (retrying with backoff up to "
                f"{config.backoff_max_s:g} s)\n"
            )
            err.flush()
            outage_noted = True
        await asyncio.sleep(delay_s)
        delay_s = min(config.backoff_max_s, delay_s * 2)
