"""Fuzz the client-command decoder (``parse_command``) in JSON and msgpack.

The contract: any frame gives a ``Command`` whose values can be echoed back in
both encodings, or a ``ProtocolError`` with a short one-line text; nothing
else ever escapes. A small run is in the default suite; the ``slow`` one runs
10,000 cases per test (CI runs ``slow`` tests too).
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synesthete.clients.protocol import (
    EVENT_TYPES,
    MAX_COMMAND_BYTES,
    Command,
    Encoding,
    encode,
    envelope,
    parse_command,
)
from synesthete.errors import ProtocolError

ENCODINGS: tuple[Encoding, ...] = ("json", "msgpack")
MAX_ERROR_CHARS = 200
QUICK = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
THOROUGH = settings(QUICK, max_examples=10_000)

# Values a hostile or buggy client might put anywhere: edge numbers, odd strings, nesting.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, 1, 2, -1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["ping", "snapshot", "subscribe", "", "\ud800", "now_playing", "\x00"]),
)
keys = st.sampled_from(["v", "type", "id", "types", ""]) | st.text(max_size=6)
# Shallow values are cheap to draw (deep recursion would triple the run time); the
# "nested" frames below cover deep nesting.
flat_values = st.one_of(
    scalars, st.lists(scalars, max_size=4), st.dictionaries(keys, scalars, max_size=4)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=6,
)
# Objects shaped like commands, so the checks past decoding get exercised, not only the parser.
command_like = st.fixed_dictionaries(
    {},
    optional={
        "v": st.just(1) | flat_values,
        "type": st.sampled_from(["ping", "snapshot", "subscribe"]) | flat_values,
        "id": st.integers() | flat_values,
        "types": st.lists(st.sampled_from(sorted(EVENT_TYPES)), max_size=6) | flat_values,
        "extra": flat_values,
    },
)


def _json_frame(value: Any) -> str | None:
    try:
        return json.dumps(value, ensure_ascii=False)  # NaN and lone surrogates pass through
    except (ValueError, TypeError):
        return None


def _msgpack_frame(value: Any) -> bytes | None:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError):
        return None
    return packed


@st.composite
def frames(draw: st.DrawFn) -> tuple[str | bytes, Encoding]:
    encoding = draw(st.sampled_from(ENCODINGS))
    kind = draw(st.sampled_from(["bytes", "text", "json", "msgpack", "mutated", "nested"]))
    frame: str | bytes | None
    if kind == "bytes":
        frame = draw(st.binary(max_size=256))
    elif kind == "text":
        frame = draw(st.text(max_size=256))
    elif kind == "nested":
        depth = draw(st.integers(min_value=1, max_value=MAX_COMMAND_BYTES // 2))
        opener = draw(st.sampled_from(["[", '{"a":', "\x91", "\x81\xa1a"]))
        frame = opener * depth if opener[0] in "[{" else (opener * depth).encode("latin-1")
    else:
        value = draw(st.one_of(command_like, values))
        frame = _msgpack_frame(value) if kind == "msgpack" else _json_frame(value)
        if frame is None:
            frame = b""
        if kind == "mutated":
            raw = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
            data = bytearray(raw)
            for _ in range(draw(st.integers(min_value=1, max_value=4))):
                if not data:
                    break
                at = draw(st.integers(min_value=0, max_value=len(data) - 1))
                data[at] = draw(st.integers(min_value=0, max_value=255))
            cut = draw(st.integers(min_value=0, max_value=len(data)))
            frame = bytes(data[:cut])
    return frame, encoding


def check_frame(frame: str | bytes, encoding: Encoding) -> None:
    """The decoder's contract for one frame."""
    try:
        command = parse_command(frame, encoding)
    except ProtocolError as err:
        text = str(err)
        assert text and len(text) <= MAX_ERROR_CHARS, text
        assert "\n" not in text and "\r" not in text, text
        reply = envelope({"type": "error", "error": text}, seq=1, ts=0.0)
        for out in ENCODINGS:
            wire = encode(reply, out)
            if isinstance(wire, str):
                wire.encode("utf-8")  # what websockets does with a text frame
        return
    assert isinstance(command, Command)
    assert command.type in {"ping", "snapshot", "subscribe"}
    if command.type == "subscribe":
        assert command.types is not None and command.types <= EVENT_TYPES
    replies = [
        {"type": "pong", "id": command.id},
        {"type": "subscribed", "id": command.id, "types": sorted(command.types or ())},
    ]
    for payload in replies:
        for out in ENCODINGS:
            wire = encode(envelope(payload, seq=1, ts=0.0), out)
            if isinstance(wire, str):
                wire.encode("utf-8")


@QUICK
@given(frames())
def test_decoder_never_raises_anything_else(case: tuple[str | bytes, Encoding]) -> None:
    check_frame(*case)


@pytest.mark.slow
@THOROUGH
@given(frames())
def test_decoder_fuzz_thorough(case: tuple[str | bytes, Encoding]) -> None:
    check_frame(*case)


@pytest.mark.parametrize(
    ("frame", "encoding", "expected"),
    [
        ("[" * 3000, "json", "malformed json: RecursionError"),
        ("[" * 2000 + "]" * 2000, "json", "malformed json: RecursionError"),
        (b"\x91" * 3000, "msgpack", "malformed msgpack"),
        ('{"type": "ping", "id": "\\ud800"}', "json", "id must be"),
        ('{"type": "ping", "id": 18446744073709551616}', "msgpack", "id must be"),
        ('{"v": true, "type": "ping"}', "json", "unsupported protocol version True"),
        ('{"v": 1.0, "type": "ping"}', "json", "unsupported protocol version 1.0"),
        ('{"v": [[1]], "type": "ping"}', "json", "unsupported protocol version a value of type"),
        ('{"type": "' + "x" * 500 + '"}', "json", "unknown command type 'xxx"),
        ('{"type": "subscribe", "types": ["\\ud800"]}', "json", "unknown event types: '\\ud800'"),
        (b"\xa2\xff\xfe", "msgpack", "malformed msgpack"),
        (b"\x81\x01\xa4ping", "msgpack", "malformed msgpack"),
        ("\u00e9" * 2100, "json", "command larger than 4096 bytes"),
    ],
)
def test_decoder_regressions(frame: str | bytes, encoding: Encoding, expected: str) -> None:
    """Inputs that once escaped as RecursionError, or parsed into unencodable replies."""
    with pytest.raises(ProtocolError) as raised:
        parse_command(frame, encoding)
    assert str(raised.value).startswith(expected)
    check_frame(frame, encoding)
