"""Many clients, some stalled, one server: isolation, not timing.

A smaller cousin of ``scripts/bench_ws_load.py`` (which measures the delays):
100 clients of which 10 never read. It asserts behaviour only: every healthy
client receives every event in order and is never flagged; every stalled
client is flagged slow and loses messages; the server keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from synesthete.clients.protocol import envelope
from synesthete.clients.server import Outgoing, ServerConfig, WebsocketServer
from synesthete.events import NowPlaying, TrackInfo

HEALTHY = 90
STALLED = 10
EVENTS = 200
TRACK = TrackInfo(id=3, path="/m/three.flac", title="Three", artist="Band", duration_s=200.0)


async def stalled_client(srv: WebsocketServer) -> ClientConnection:
    """Handshake, then never read: a tiny receive buffer and a paused transport."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
    ws = await connect(srv.url + "?stalled=1", sock=sock, max_queue=1, compression=None)
    ws.transport.pause_reading()
    return ws


async def read_events(ws: ClientConnection, out: list[dict[str, Any]]) -> None:
    try:
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] == "now_playing":
                out.append(message)
    except ConnectionClosed:
        pass


@pytest.mark.slow
def test_hundred_clients_with_ten_stalled_are_isolated() -> None:
    async def main() -> None:
        async with WebsocketServer(config=ServerConfig(port=0)) as srv:
            broadcaster = srv.broadcaster
            stalled = [await stalled_client(srv) for _ in range(STALLED)]
            healthy = [await connect(srv.url) for _ in range(HEALTHY)]
            received: list[list[dict[str, Any]]] = [[] for _ in healthy]
            readers = [
                asyncio.create_task(read_events(ws, out))
                for ws, out in zip(healthy, received, strict=True)
            ]
            # Back the stalled sockets up for real. Realistic events would take
            # minutes to fill ~3 MB of kernel buffers, so their own queues get
            # big incompressible filler (the healthy clients never see it).
            filler = Outgoing(
                envelope(
                    {
                        "type": "status",
                        "file": "filler",
                        "t": -1.0,
                        "pad": os.urandom(24_000).hex(),
                    },
                    seq=0,
                    ts=0.0,
                )
            )
            deadline = time.monotonic() + 60
            while broadcaster.stats()["slow_clients"] < STALLED:
                assert time.monotonic() < deadline, broadcaster.stats()
                for client in broadcaster.clients:
                    if "stalled" in client.connection.request.path and not client.slow:
                        for _ in range(8):
                            client.offer(filler)
                await asyncio.sleep(0.02)

            # Events faster than the recognizer makes them (50/s against about 6/s).
            for n in range(EVENTS):
                broadcaster.publish(
                    NowPlaying(
                        file="mic", t=float(n), track=TRACK, offset_s=n + 5.0, confidence=0.9
                    )
                )
                await asyncio.sleep(0.02)

            # The server stays responsive meanwhile: a newcomer gets a snapshot and a pong.
            async with connect(srv.url) as newcomer:
                snapshot = json.loads(await asyncio.wait_for(newcomer.recv(), 10))
                assert snapshot["type"] == "snapshot"
                assert snapshot["now_playing"]["t"] == float(EVENTS - 1)
                await newcomer.send('{"type": "ping", "id": 1}')
                assert json.loads(await asyncio.wait_for(newcomer.recv(), 10))["type"] == "pong"

            deadline = time.monotonic() + 30
            while any(len(out) < EVENTS for out in received):
                assert time.monotonic() < deadline, sorted({len(out) for out in received})
                await asyncio.sleep(0.05)
            for out in received:
                assert [m["t"] for m in out] == [float(n) for n in range(EVENTS)]
                assert all("dropped" not in m for m in out)

            stats = broadcaster.stats()
            flagged = [c for c in broadcaster.clients if c.slow]
            assert stats["slow_clients"] == STALLED
            assert all("stalled" in c.connection.request.path for c in flagged)
            assert all(c.dropped > 0 and len(c.queue) <= c.capacity for c in flagged)

            for ws in stalled:
                ws.transport.abort()
            await asyncio.gather(*(ws.close() for ws in healthy))
            await asyncio.gather(*readers)

    asyncio.run(main())
