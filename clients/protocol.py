"""The websocket message protocol, sans I/O: envelopes out, commands in.

Server → client: ``{"v": 1, "type": ..., "seq": n, "ts": server_time, ...payload}``
as a JSON text frame, or a msgpack binary frame under the subprotocol
``synesthete.v1.msgpack``. Client → server: small commands, see PROTOCOL.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

import msgpack

from synesthete.errors import ConfigError, ProtocolError
from synesthete.events import EventType

PROTOCOL_VERSION = 1
SUBPROTOCOL_JSON = "synesthete.v1.json"
SUBPROTOCOL_MSGPACK = "synesthete.v1.msgpack"
SUBPROTOCOLS = (SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK)
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))
"""Every event type a client may subscribe to: those of ``synesthete.events``."""
MAX_COMMAND_BYTES = 4096
MAX_ERROR_VALUE_CHARS = 40
"""Client values quoted in an ``error`` reply are cut to this length."""
ID_MIN, ID_MAX = -(2**63), 2**63 - 1
"""Integer ids must fit msgpack's (and most clients') 64-bit integers."""

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
    id: str | int | None = None
    types: frozenset[str] | None = None


def _describe(value: Any) -> str:
    """A short, one-line, UTF-8-safe description of a client value for an error text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        # repr escapes newlines, surrogates and other non-printables: one safe line.
        text = repr(value)
        return (
            text
            if len(text) <= MAX_ERROR_VALUE_CHARS
            else text[: MAX_ERROR_VALUE_CHARS - 3] + "..."
        )
    return f"a value of type {type(value).__name__}"


def _is_utf8(text: str) -> bool:
    # JSON escapes such as "\ud800" decode to lone surrogates, which no UTF-8 reply can echo.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode_command(frame: str | bytes, encoding: Encoding) -> Any:
    if isinstance(frame, bytes) and encoding == "json":
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ProtocolError("binary frame is not UTF-8 JSON") from err
    if isinstance(frame, str):
        encoding = "json"  # be lenient: a text frame is JSON whatever the subprotocol
    try:
        return msgpack.unpackb(frame, raw=False) if encoding == "msgpack" else json.loads(frame)
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as err:
        # RecursionError: deeply nested JSON arrays fit easily in the size limit.
        raise ProtocolError(f"malformed {encoding}: {type(err).__name__}") from err


def parse_command(frame: str | bytes, encoding: Encoding) -> Command:
    """Validate one client frame; raise ``ProtocolError`` with a short reason otherwise.

    Any input gives a ``Command`` or a ``ProtocolError`` whose text is one
    line of at most a few hundred characters, and every value a ``Command``
    holds can be echoed back in JSON and in msgpack.
    """
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))
    if size > MAX_COMMAND_BYTES:
        raise ProtocolError(f"command larger than {MAX_COMMAND_BYTES} bytes")
    value = _decode_command(frame, encoding)
    if not isinstance(value, dict):
        raise ProtocolError("command must be an object")
    version = value.get("v", PROTOCOL_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {_describe(version)}; this server speaks 1"
        )
    kind = value.get("type")
    request_id = value.get("id")
    if request_id is not None and not _valid_id(request_id):
        raise ProtocolError("id must be a UTF-8 string or a 64-bit integer")
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
            shown = ", ".join(_describe(t) for t in unknown[:3])
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise ProtocolError(f"unknown event types: {shown}{more}")
        return Command(type="subscribe", id=request_id, types=frozenset(types))
    raise ProtocolError(f"unknown command type {_describe(kind)}")


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return ID_MIN <= value <= ID_MAX
    return isinstance(value, str) and _is_utf8(value)


Admission = Literal["ok", "limited", "flood"]


class CommandBudget:
    """A per-client token bucket for commands, sans I/O: ``take(now_s)`` says what to do.

    ``burst`` commands may come at once; tokens come back at ``rate_hz``. A
    command with no token left is ``limited`` (ignored) and still costs a
    token, so a client that keeps sending while limited digs a debt; once the
    debt reaches ``burst`` the verdict is ``flood`` (close the connection). A
    client that slows to ``rate_hz`` or below recovers on its own.
    """

    def __init__(self, *, rate_hz: float, burst: int, now_s: float) -> None:
        if not rate_hz > 0 or burst < 1:
            raise ConfigError(f"need rate_hz > 0 and burst >= 1, got {rate_hz}, {burst}")
        self.rate_hz = rate_hz
        self.burst = burst
        self._tokens = float(burst)
        self._refilled_s = now_s

    def take(self, now_s: float) -> Admission:
        elapsed_s = max(0.0, now_s - self._refilled_s)
        self._refilled_s = now_s
        self._tokens = min(float(self.burst), self._tokens + elapsed_s * self.rate_hz) - 1.0
        if self._tokens >= 0.0:
            return "ok"
        return "flood" if self._tokens <= -self.burst else "limited"
