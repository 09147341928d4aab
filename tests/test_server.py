"""The websocket server over real localhost connections (port 0)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from synesthete.clients.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, parse_command
from synesthete.clients.server import ServerConfig, WebsocketServer, parse_hostport
from synesthete.errors import ConfigError, ProtocolError
from synesthete.events import NowPlaying, TrackInfo, Unknown

TRACK = TrackInfo(id=7, path="/m/x.flac", title="Seven", artist="Band")


def now_playing(t: float) -> NowPlaying:
    return NowPlaying(file="mic", t=t, track=TRACK, offset_s=t + 10, confidence=0.9)


@pytest.fixture
async def server() -> AsyncIterator[WebsocketServer]:
    srv = WebsocketServer(config=ServerConfig(port=0, queue_messages=8))
    await srv.start()
    yield srv
    await srv.close()


async def recv_json(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))  # type: ignore[no-any-return]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_snapshot_then_events_in_json() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            srv.broadcaster.publish(now_playing(4.0))
            async with connect(srv.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
                snap = await recv_json(ws)
                assert snap["type"] == "snapshot" and snap["v"] == 1
                assert snap["now_playing"]["track"]["title"] == "Seven"
                srv.broadcaster.publish(Unknown(file="mic", t=8.0, reason="lost"))
                msg = await recv_json(ws)
                assert msg["type"] == "unknown" and msg["seq"] > snap["seq"]
                assert msg["file"] == "mic" and msg["t"] == 8.0 and "ts" in msg

    run(main())


def test_msgpack_subprotocol() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            async with connect(srv.url, subprotocols=[SUBPROTOCOL_MSGPACK]) as ws:  # type: ignore[list-item]
                assert ws.subprotocol == SUBPROTOCOL_MSGPACK
                snap = msgpack.unpackb(await ws.recv(), raw=False)
                assert snap["type"] == "snapshot" and snap["now_playing"] is None
                srv.broadcaster.publish(now_playing(6.0))
                msg = msgpack.unpackb(await ws.recv(), raw=False)
                assert msg["type"] == "now_playing" and msg["offset_s"] == 16.0

    run(main())


def test_commands_and_malformed_input() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"v": 1, "type": "ping", "id": 5}))
                assert (await recv_json(ws))["type"] == "pong"
                for bad in (
                    "{nope",
                    "[1,2]",
                    json.dumps({"v": 2, "type": "ping"}),
                    json.dumps({"type": "launch"}),
                    json.dumps({"type": "subscribe", "types": ["weather"]}),
                ):
                    await ws.send(bad)
                    reply = await recv_json(ws)
                    assert reply["type"] == "error", bad
                await ws.send(json.dumps({"type": "subscribe", "types": ["unknown"]}))
                assert (await recv_json(ws))["type"] == "subscribed"
                srv.broadcaster.publish(now_playing(1.0))
                srv.broadcaster.publish(Unknown(file="mic", t=2.0))
                assert (await recv_json(ws))["type"] == "unknown"  # now_playing filtered
                # The connection survived all of it.
                await ws.send(json.dumps({"type": "ping"}))
                assert (await recv_json(ws))["type"] == "pong"

    run(main())


def test_oversized_frame_closes_with_1009() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0, max_message_bytes=1024)) as srv:
            async with connect(srv.url) as ws:
                await recv_json(ws)
                await ws.send("x" * 5000)
                await ws.wait_closed()
                assert ws.close_code == 1009

    run(main())


def test_origin_allowlist_and_token() -> None:
    async def main() -> None:
        config = ServerConfig(port=0, token="s3cret", allowed_origins=("https://obs.example",))
        async with WebsocketServer(config=config) as srv:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(srv.url):
                    pass
            assert refused.value.response.status_code == 401
            with pytest.raises(InvalidStatus) as refused:
                async with connect(srv.url + "?token=s3cret", origin="https://evil.example"):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403
            async with connect(srv.url + "?token=s3cret", origin="https://obs.example") as ws:  # type: ignore[arg-type]
                assert (await recv_json(ws))["type"] == "snapshot"
            async with connect(
                srv.url,
                additional_headers={"Authorization": "Bearer s3cret"},
                origin="http://localhost:1234",
            ) as ws:  # type: ignore[arg-type]
                assert (await recv_json(ws))["type"] == "snapshot"

    run(main())


def test_overlay_page_is_served() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET /overlay?theme=light HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(65536), 5)
            writer.close()
            assert data.startswith(b"HTTP/1.1 200")
            assert b"text/html" in data and b"synesthete.v1.json" in data

    run(main())


def test_stalled_client_does_not_delay_a_healthy_one() -> None:
    """A client that never reads loses old messages; the healthy one gets every event fast."""

    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0, queue_messages=16)) as srv:
            stalled = await connect(srv.url, max_queue=1)
            # Stop reading at the TCP level too, so the server's sends back up.
            stalled.transport.pause_reading()  # type: ignore[attr-defined]
            async with connect(srv.url) as healthy:
                await recv_json(healthy)
                delays: list[float] = []
                # Incompressible padding: permessage-deflate must not hide the backlog.
                pad = os.urandom(12_000).hex()
                for n in range(400):
                    sent = time.perf_counter()
                    srv.broadcaster.publish_payload(
                        {**now_playing(float(n)).to_payload(), "pad": pad}
                    )
                    msg = await recv_json(healthy)
                    delays.append(time.perf_counter() - sent)
                    assert msg["t"] == float(n)
                stats = srv.broadcaster.stats()
                assert stats["slow_clients"] == 1 and stats["dropped"] > 0
                assert max(delays) < 0.05
            await stalled.close()

    run(main())


def test_parse_command_and_hostport() -> None:
    assert parse_command(b"\x81\xa4type\xa4ping", "msgpack").type == "ping"
    with pytest.raises(ProtocolError):
        parse_command("x" * 5000, "json")
    assert parse_hostport("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_hostport(":9000") == ("127.0.0.1", 9000)
    with pytest.raises(ConfigError):
        parse_hostport("localhost:http")
