"""The websocket message protocol, sans I/O: envelopes out, commands in.

Server → client: ``{"v": 1, "type": ..., "seq": n, "ts": server_time, ...payload}``
as a JSON text frame, or a msgpack binary frame under the subprotocol
``synesthete.v1.msgpack``. Client → server: small commands, see PROTOCOL.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from synesthete.errors import ProtocolError

PROTOCOL_VERSION = 1
SUBPROTOCOL_JSON = "synesthete.v1.json"
SUBPROTOCOL_MSGPACK = "synesthete.v1.msgpack"
SUBPROTOCOLS = (SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK)
EVENT_TYPES = frozenset({"now_playing", "unknown", "candidates", "sounds_like", "status"})
MAX_COMMAND_BYTES = 4096

Encoding = Literal["json", "msgpack"]


def encoding_for(subprotocol: str | None) -> Encoding:
    return "msgpack" if subprotocol == SUBPROTOCOL_MSGPACK else "json"


def envelope(payload: dict[str, Any], *, seq: int, ts: float) -> dict[str, Any]:
    """Wrap an event payload (or a control message) in the versioned envelope."""
    message: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": payload["type"],
        "seq": seq,
        "ts": round(ts, 6),
    }
    for key, value in payload.items():
        if key != "type":
            message[key] = value
    return message


def encode(message: dict[str, Any], encoding: Encoding) -> str | bytes:
    if encoding == "msgpack":
        packed: bytes = msgpack.packb(message, use_bin_type=True)
        return packed
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def decode(frame: str | bytes, encoding: Encoding) -> dict[str, Any]:
    """Decode a server message (used by clients and tests)."""
    try:
        if encoding == "msgpack":
            if not isinstance(frame, bytes):
                raise ProtocolError("expected a binary msgpack frame")
            value = msgpack.unpackb(frame, raw=False)
        else:
            value = json.loads(frame)
    except (ValueError, msgpack.UnpackException) as err:
        raise ProtocolError(f"undecodable {encoding} frame: {err}") from err
    if not isinstance(value, dict):
        raise ProtocolError("message must be an object")
    return value


@dataclass(frozen=True, slots=True)
class Command:
    """A validated client command."""

    type: Literal["ping", "subscribe", "snapshot"]
    id: Any = None
    types: frozenset[str] | None = None


def parse_command(frame: str | bytes, encoding: Encoding) -> Command:
    """Validate one client frame; raise ``ProtocolError`` with a short reason otherwise."""
    if len(frame) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"command larger than {MAX_COMMAND_BYTES} bytes")
    if isinstance(frame, bytes) and encoding == "json":
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ProtocolError("binary frame is not UTF-8 JSON") from err
    if isinstance(frame, str) and encoding == "msgpack":
        encoding = "json"  # be lenient: a text frame is JSON whatever the subprotocol
    try:
        value = msgpack.unpackb(frame, raw=False) if encoding == "msgpack" else json.loads(frame)
    except (ValueError, msgpack.UnpackException, TypeError) as err:
        raise ProtocolError(f"malformed {encoding}: {type(err).__name__}") from err
    if not isinstance(value, dict):
        raise ProtocolError("command must be an object")
    version = value.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r}; this server speaks 1")
    kind = value.get("type")
    request_id = value.get("id")
    if request_id is not None and not isinstance(request_id, (str, int)):
        raise ProtocolError("id must be a string or an integer")
    if kind == "ping":
        return Command(type="ping", id=request_id)
    if kind == "snapshot":
        return Command(type="snapshot", id=request_id)
    if kind == "subscribe":
        types = value.get("types")
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise ProtocolError("subscribe needs types: a list of event type names")
        unknown = sorted(set(types) - EVENT_TYPES)
        if unknown:
            raise ProtocolError(f"unknown event types: {', '.join(unknown)}")
        return Command(type="subscribe", id=request_id, types=frozenset(types))
    raise ProtocolError(f"unknown command type {kind!r}")
