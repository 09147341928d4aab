"""``listen``: choose the source, start the sinks (JSONL, websocket, live view), run the loop."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from synesthete.clients.app import Engine
from synesthete.clients.identify import identify_file
from synesthete.clients.jsonl import JsonlWriter
from synesthete.clients.live import EventSink, LiveConfig, run_live
from synesthete.clients.server import ServerConfig, WebsocketServer, parse_hostport
from synesthete.clients.tracklist import build_tracklist, write_tracklist
from synesthete.clients.tui import LiveSnapshot, LiveView
from synesthete.errors import DeviceError
from synesthete.events import Event
from synesthete.stream.config import CaptureConfig
from synesthete.stream.sources import DeviceSource, FileSource, Source


@dataclass(frozen=True, kw_only=True)
class ListenOptions:
    device: str | None = None
    input_path: Path | None = None
    realtime: bool = False
    serve: str | None = None
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    tui: bool = True
    jsonl_path: Path | None = None
    tracklist_path: Path | None = None
    max_seconds: float | None = None


def _device_spec(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


async def listen(*, engine: Engine, options: ListenOptions) -> int:
    server: WebsocketServer | None = None
    if options.serve is not None:
        host, port = parse_hostport(options.serve)
        server = WebsocketServer(
            config=ServerConfig(
                host=host, port=port, token=options.token, allowed_origins=options.allowed_origins
            )
        )
        await server.start()

    history: list[Event] = []
    sinks: list[EventSink] = [history.append]
    files: list[TextIO] = []
    view: LiveView | None = None
    with contextlib.ExitStack() as stack:
        if options.jsonl_path is not None:
            handle = stack.enter_context(options.jsonl_path.open("a", encoding="utf-8"))
            files.append(handle)
            sinks.append(JsonlWriter(handle).write)
        if options.tui:
            name = str(options.input_path) if options.input_path else (options.device or "default")
            view = stack.enter_context(
                LiveView(
                    snapshot=LiveSnapshot(
                        source=name,
                        server=None
                        if server is None
                        else f"{server.url}  overlay: http://{server.config.host}:{server.port}/overlay",
                    )
                )
            )
            sinks.append(view.update)
        else:
            sinks.append(JsonlWriter(sys.stdout, types=frozenset({"now_playing", "unknown"})).write)
        try:
            if options.input_path is not None and not options.realtime:
                await _replay_virtual(engine, options.input_path, sinks, server)
            else:
                source: Source
                if options.input_path is not None:
                    source = FileSource(path=options.input_path, realtime=True)
                else:
                    source = DeviceSource(config=CaptureConfig(device=_device_spec(options.device)))
                with source:
                    await run_live(
                        engine=engine,
                        source=source,
                        sinks=sinks,
                        server=server,
                        config=LiveConfig(max_seconds=options.max_seconds),
                        on_tick=None if view is None else view.draw,
                    )
                # FileSource.error is an exception, DeviceSource.error a message.
                failure = getattr(source, "error", None)
                if failure:
                    raise DeviceError(f"input stopped: {failure}")
        finally:
            if server is not None:
                await server.close()
            if options.tracklist_path is not None:
                name = str(options.input_path or options.device or "live")
                with options.tracklist_path.open("w", encoding="utf-8") as out:
                    write_tracklist(build_tracklist(history, source=name), out, fmt="tracklist")
    return 0


async def _replay_virtual(
    engine: Engine, path: Path, sinks: list[EventSink], server: WebsocketServer | None
) -> None:
    for event in identify_file(engine, str(path)):
        for sink in sinks:
            sink(event)
        if server is not None:
            server.broadcaster.publish(event)
        await asyncio.sleep(0)
