"""Hostile and broken clients against a real server on localhost (port 0).

Every abuse ends in a close code, an HTTP refusal or an ``error`` message;
the server keeps serving the other clients. ``tests/test_server.py`` has the
basics (malformed JSON, ``v: 2``, a 5000-byte frame, origin, missing token).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from synesthete.clients.protocol import SUBPROTOCOL_MSGPACK, CommandBudget
from synesthete.clients.server import ServerConfig, WebsocketServer
from synesthete.errors import ConfigError
from synesthete.events import Unknown


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))  # type: ignore[no-any-return]


async def recv_msgpack(ws: ClientConnection) -> dict[str, Any]:
    return msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5), raw=False)  # type: ignore[no-any-return]


async def still_served(srv: WebsocketServer) -> None:
    """A fresh client connects, gets its snapshot and a pong."""
    async with connect(srv.url) as ws:
        assert (await recv_json(ws))["type"] == "snapshot"
        await ws.send('{"type": "ping", "id": "alive"}')
        assert (await recv_json(ws)) | {"seq": 0, "ts": 0} == {
            "v": 1,
            "type": "pong",
            "id": "alive",
            "seq": 0,
            "ts": 0,
        }


def test_command_budget_burst_refill_and_flood() -> None:
    budget = CommandBudget(rate_hz=10.0, burst=4, now_s=0.0)
    assert [budget.take(0.0) for _ in range(4)] == ["ok"] * 4
    assert budget.take(0.0) == "limited"  # tokens -1: ignored commands still cost one
    assert budget.take(0.05) == "limited"  # -1 + 0.5 - 1 = -1.5
    assert budget.take(0.3) == "ok"  # -1.5 + 2.5 - 1 = 0
    # Flooding while limited digs a debt; at -burst the verdict is flood.
    assert [budget.take(0.3) for _ in range(4)] == ["limited"] * 3 + ["flood"]
    # Slowing down recovers: tokens refill to the burst, never beyond.
    budget = CommandBudget(rate_hz=10.0, burst=4, now_s=0.0)
    assert [budget.take(100.0) for _ in range(5)] == ["ok"] * 4 + ["limited"]
    with pytest.raises(ConfigError):
        CommandBudget(rate_hz=0.0, burst=4, now_s=0.0)
    with pytest.raises(ConfigError):
        ServerConfig(command_burst=0)


def test_malformed_msgpack_and_versions_get_errors() -> None:
    bad_frames: list[str | bytes] = [
        b"\xc1",  # a byte msgpack never uses
        b"\x82\xa4type",  # truncated map
        msgpack.packb([1, 2]),
        msgpack.packb({"v": 2, "type": "ping"}),
        msgpack.packb({"v": "1", "type": "ping"}),
        msgpack.packb({"type": "ping", "id": 1.5}),
        msgpack.packb({"type": "ping", "extra": 1}) + b"\x00",  # trailing data
        b"\x91" * 3000,  # nesting deeper than the unpacker's stack
        b"\xa3\xff\xfe\xfd",  # a str that is not UTF-8
        msgpack.packb({1: "ping"}),  # a non-string key
        "[" * 3000,  # a JSON text frame, nested past Python's recursion limit
        '{"type": "ping", "id": 18446744073709551616}',  # no msgpack integer can echo it
    ]

    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            async with connect(srv.url, subprotocols=[SUBPROTOCOL_MSGPACK]) as ws:  # type: ignore[list-item]
                await recv_msgpack(ws)
                for frame in bad_frames:
                    await ws.send(frame)
                    reply = await recv_msgpack(ws)
                    assert reply["type"] == "error", frame
                    assert reply["v"] == 1 and "\n" not in reply["error"]
                await ws.send(msgpack.packb({"v": 1, "type": "ping", "id": 3}))
                assert (await recv_msgpack(ws))["id"] == 3
            await still_served(srv)

    run(main())


def test_json_edge_frames_get_errors_and_never_kill_the_relay() -> None:
    """A lone surrogate id used to be echoed into a pong no UTF-8 frame can carry."""
    bad_frames: list[str | bytes] = [
        b"\xff\xfe{}",  # a binary frame that is not UTF-8
        '{"type": "ping", "id": "\\ud800"}',
        '{"type": "subscribe", "types": ["\\udfff"]}',
        '{"v": true, "type": "ping"}',
        '{"v": null, "type": "ping"}',
        '{"type": "ping", "id": NaN}',
        '{"type": ["ping"]}',
        "[" * 2000 + "]" * 2000,
        "\ufeff{}",
        "",
    ]

    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                for frame in bad_frames:
                    await ws.send(frame)
                    reply = await recv_json(ws)
                    assert reply["type"] == "error", frame
                # The relay is alive: events still flow.
                srv.broadcaster.publish(Unknown(file="mic", t=1.0))
                assert (await recv_json(ws))["type"] == "unknown"

    run(main())


def test_command_flood_is_limited_then_closed_with_1008() -> None:
    # A slow refill, so that round trips on a loaded machine earn no token back.
    config = ServerConfig(port=0, command_rate_hz=0.5, command_burst=5)

    async def main() -> None:
        async with WebsocketServer(config=config) as srv:
            async with connect(srv.url) as bystander, connect(srv.url) as flooder:
                await recv_json(bystander)
                await recv_json(flooder)
                for n in range(5):
                    await flooder.send(json.dumps({"type": "ping", "id": n}))
                    assert (await recv_json(flooder))["type"] == "pong"
                await flooder.send('{"type": "ping", "id": "over"}')
                limited = await recv_json(flooder)
                assert limited["type"] == "error" and limited["error"].startswith("rate limit")
                # Keep flooding: no more replies, then a policy-violation close.
                for _ in range(200):
                    try:
                        await flooder.send('{"type": "ping"}')
                    except ConnectionClosed:
                        break
                    await asyncio.sleep(0)
                await asyncio.wait_for(flooder.wait_closed(), 5)
                assert flooder.close_code == 1008
                assert flooder.close_reason == "command flood"
                # Only the flooder paid.
                await bystander.send('{"type": "ping"}')
                assert (await recv_json(bystander))["type"] == "pong"

    run(main())


def test_a_client_that_slows_down_recovers_from_the_rate_limit() -> None:
    config = ServerConfig(port=0, command_rate_hz=2.0, command_burst=3)

    async def main() -> None:
        async with WebsocketServer(config=config) as srv:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                for _ in range(4):
                    await ws.send('{"type": "ping"}')
                replies = [(await recv_json(ws))["type"] for _ in range(4)]
                assert replies == ["pong", "pong", "pong", "error"]
                await asyncio.sleep(1.0)  # 2 tokens back (the debt was about 1)
                await ws.send('{"type": "ping", "id": "again"}')
                assert (await recv_json(ws))["id"] == "again"

    run(main())


def test_oversized_msgpack_frame_closes_with_1009() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            async with connect(srv.url, subprotocols=[SUBPROTOCOL_MSGPACK]) as ws:  # type: ignore[list-item]
                await recv_msgpack(ws)
                await ws.send(msgpack.packb({"type": "ping", "id": "x" * 5000}))
                await asyncio.wait_for(ws.wait_closed(), 5)
                assert ws.close_code == 1009
            await still_served(srv)

    run(main())


def test_wrong_token_bad_origin_and_bad_path_are_refused() -> None:
    config = ServerConfig(port=0, token="s3cret")

    async def main() -> None:
        async with WebsocketServer(config=config) as srv:
            refusals = [
                (srv.url + "?token=wrong", {}, None),
                (srv.url, {"Authorization": "Bearer wrong"}, None),
                (srv.url, {"Authorization": "Basic s3cret"}, None),
                # ?token= wins over the header, even when the header is right.
                (srv.url + "?token=wrong", {"Authorization": "Bearer s3cret"}, None),
                (srv.url + "?token=s3cret", {}, "https://evil.example"),
                (srv.url + "?token=s3cret", {}, "null"),
                (srv.url.rstrip("/") + "/admin?token=s3cret", {}, None),
            ]
            codes = []
            for url, headers, origin in refusals:
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url, additional_headers=headers, origin=origin):  # type: ignore[arg-type]
                        pass
                codes.append(refused.value.response.status_code)
            assert codes == [401, 401, 401, 401, 403, 403, 404]
            async with connect(srv.url + "?token=s3cret") as ws:
                assert (await recv_json(ws))["type"] == "snapshot"

    run(main())


def test_too_many_clients_get_503() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0, max_clients=2)) as srv:
            async with connect(srv.url) as first, connect(srv.url) as second:
                await recv_json(first)
                await recv_json(second)
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(srv.url):
                        pass
                assert refused.value.response.status_code == 503
            # The slots free up when clients leave.
            for _ in range(50):
                if not srv.broadcaster.clients:
                    break
                await asyncio.sleep(0.05)
            await still_served(srv)

    run(main())


def test_garbage_on_the_socket_never_takes_the_server_down() -> None:
    garbage = [
        b"\x00\xff" * 512 + b"\r\n\r\n",  # not HTTP at all
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain GET on the websocket path: no upgrade
        b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 10_000 + b"\r\n\r\n",  # an over-long header
        b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % n for n in range(300)) + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: nope\r\n\r\n",  # a bad key
        b"GET / HTTP/1.1\r\nHost: x\r\n",  # a request that never ends (the handshake times out)
    ]

    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            writers = []
            answers = []
            for data in garbage:
                reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                writer.write(data)
                await writer.drain()
                writers.append(writer)
                if data.endswith(b"\r\n\r\n"):
                    answers.append(await asyncio.wait_for(reader.read(200), 5))
            assert all(a == b"" or a.startswith(b"HTTP/1.1 4") for a in answers), answers
            await still_served(srv)
            for writer in writers:
                writer.close()

    run(main())


def test_a_client_that_vanishes_mid_handshake_or_mid_stream_is_cleaned_up() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            ws = await connect(srv.url)
            await recv_json(ws)
            ws.transport.abort()
            started = time.monotonic()
            while srv.broadcaster.clients and time.monotonic() - started < 5:
                await asyncio.sleep(0.02)
            assert not srv.broadcaster.clients
            srv.broadcaster.publish(Unknown(file="mic", t=1.0))  # nobody to send to: no error
            _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            await writer.drain()
            writer.transport.abort()  # gone mid-handshake
            await still_served(srv)

    run(main())


def test_the_served_overlay_is_its_own_allowed_origin_on_a_lan_address() -> None:
    srv = WebsocketServer(config=ServerConfig(host="0.0.0.0", port=8765, token="t"))
    lan = "192.168.1.20:8765"
    assert srv._origin_allowed(f"http://{lan}", lan)  # /overlay opened over the LAN
    assert not srv._origin_allowed(f"http://{lan}", "192.168.1.20:9999")
    assert not srv._origin_allowed("http://evil.example", lan)
    assert not srv._origin_allowed(f"https://{lan}", lan)  # we serve no https
    assert not srv._origin_allowed("null", lan)
    assert srv._origin_allowed(None, lan)
