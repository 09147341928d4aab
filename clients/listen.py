"""``listen``: choose the source, start the sinks (JSONL, websocket, live view), run the loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from synesthete.clients.app import Engine
from synesthete.clients.identify import identify_file
from synesthete.clients.jsonl import JsonlWriter
from synesthete.clients.live import EventSink, LiveConfig, run_live
from synesthete.clients.plays import PlaysLog
from synesthete.clients.server import ServerConfig, WebsocketServer, parse_hostport
from synesthete.clients.tracklist import build_tracklist, write_tracklist
from synesthete.clients.tui import LiveSnapshot, LiveView
from synesthete.errors import ConfigError, DeviceError
from synesthete.events import Event, NowPlaying, Status, Unknown
from synesthete.stream.config import CaptureConfig
from synesthete.stream.sources import DeviceSource, FileSource, Source
from synesthete.stream.watchdog import ReconnectPolicy


@dataclass(frozen=True, kw_only=True)
class ListenOptions:
    device: str | None = None
    input_path: Path | None = None
    input_url: str | None = None
    """A network stream (``--input URL``): Icecast, HLS, a playlist, any URL FFmpeg opens."""
    system_audio: bool = False
    """Record what this computer plays (the default sink's monitor)."""
    plays_path: Path | None = None
    """Append one line per finished play here (JSONL, or CSV for ``.csv``)."""
    input_data: bytes | None = None
    """The input file's content when it was read already (``--input -``: standard input)."""
    realtime: bool = False
    speed: float = 1.0
    loop: bool = False
    serve: str | None = None
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    tui: bool = True
    jsonl_path: Path | None = None
    tracklist_path: Path | None = None
    max_seconds: float | None = None
    reconnect_timeout_s: float = 60.0
    events: str = "core"
    """Which events the stdout JSONL (``tui=False``) carries: ``core`` (``now_playing``,
    ``unknown``) or ``all``. The ``jsonl_path`` file always gets every event."""


CORE_EVENTS = frozenset({"now_playing", "unknown"})


def event_types(events: str) -> frozenset[str] | None:
    """``--events core|all`` as the type filter of a ``JsonlWriter`` (``None``: all)."""
    if events == "all":
        return None
    if events == "core":
        return CORE_EVENTS
    raise ConfigError(f"--events must be core or all, got {events!r}")


def exposure_warning(*, host: str, port: int, token: str | None) -> str | None:
    """What to tell someone who serves beyond this machine without a token, else ``None``."""
    if token is not None or _is_loopback(host):
        return None
    return (
        f"serving on {host}:{port} without --token: anyone who can reach this port can read"
        " every event, library file paths included (see README: Security model)"
    )


def overlay_url(server: WebsocketServer) -> str:
    """The ``/overlay`` page of a started server, as a browser would open it."""
    return server.url.replace("ws://", "http://", 1) + "overlay"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class InputNotes:
    """Without the live view, input losses and recoveries go to stderr as one-line notes.

    Giving up is left to the error line the CLI prints as it exits.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._state = "ok"

    def write(self, event: Event) -> None:
        if not isinstance(event, Status) or event.message is None:
            return
        if (event.input_state == "ok" and self._state == "ok") or event.input_state == "failed":
            return
        self._state = event.input_state
        print(f"synesthete: {event.message}", file=self._out, flush=True)


class TracklistEvents:
    """The events a tracklist is built from, and no others: a session may run for days.

    ``build_tracklist`` folds ``now_playing``/``unknown`` and reads only the
    time of the others, so of those only the latest is kept.
    """

    def __init__(self) -> None:
        self._kept: list[Event] = []
        self._last: Event | None = None

    def append(self, event: Event) -> None:
        if isinstance(event, (NowPlaying, Unknown)):
            self._kept.append(event)
        self._last = event

    def events(self) -> list[Event]:
        if self._last is None or (self._kept and self._kept[-1] is self._last):
            return list(self._kept)
        return [*self._kept, self._last]


def _device_spec(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def source_label(options: ListenOptions) -> str:
    """The input as events and the live view name it (a URL without its credentials)."""
    if options.input_url is not None:
        from synesthete.stream.network import redact_url

        return redact_url(options.input_url)
    if options.input_path is not None:
        return str(options.input_path)
    if options.system_audio:
        return "system audio"
    return options.device or "default"


def open_live_source(options: ListenOptions, capture: CaptureConfig) -> Source:
    """The real-time source ``options`` name: a stream, the system audio, a file or a device."""
    if options.input_url is not None:
        from synesthete.stream.network import NetworkSource, StreamConfig

        return NetworkSource(url=options.input_url, config=StreamConfig(speed=options.speed))
    if options.input_path is not None:
        return FileSource(
            path=options.input_path,
            data=options.input_data,
            realtime=True,
            speed=options.speed,
            loop=options.loop,
        )
    if options.system_audio:
        from synesthete.stream.pulse import SystemAudioSource

        return SystemAudioSource(config=capture)
    return DeviceSource(config=capture)


def reconnect_policy(options: ListenOptions) -> ReconnectPolicy:
    """The device path's policy; a network stream gets the stream's own stall limit (a
    server may pause longer than a sound card) and time for a connection to start."""
    if options.input_url is None:
        return ReconnectPolicy(timeout_s=options.reconnect_timeout_s)
    from synesthete.stream.network import StreamConfig

    stream = StreamConfig()
    return ReconnectPolicy(
        timeout_s=options.reconnect_timeout_s,
        stall_timeout_s=stream.read_timeout_s,
        start_timeout_s=stream.connect_timeout_s + stream.read_timeout_s,
    )


async def listen(*, engine: Engine, options: ListenOptions) -> int:
    capture = CaptureConfig(
        device=None
        if options.input_path is not None or options.input_url is not None
        else _device_spec(options.device)
    )
    live_source: Source | None = None
    if options.input_url is not None:
        # Connect first: a URL that never worked is one error line before anything starts.
        live_source = open_live_source(options, capture)
    try:
        return await _listen(engine=engine, options=options, capture=capture, source=live_source)
    finally:
        if live_source is not None:
            live_source.close()


def _map_job(engine: Engine) -> Callable[[], bytes | None]:
    """Draw the sonic map for ``/map`` once, when first asked, off the event loop (UMAP
    takes seconds): the returned callable gives its JSON when done, ``None`` before, and
    raises the one-line ``SynestheteError`` of a library with nothing to draw."""
    from synesthete.clients.map import library_map

    def draw() -> bytes:
        return json.dumps(library_map(engine.library).to_doc(), ensure_ascii=False).encode()

    job: list[asyncio.Future[bytes]] = []

    def result() -> bytes | None:
        if not job:
            job.append(asyncio.get_running_loop().run_in_executor(None, draw))
            # Retrieved here too, so a map that cannot be drawn is no "never retrieved" report.
            job[0].add_done_callback(lambda done: done.exception())
        return job[0].result() if job[0].done() else None

    return result


async def _listen(
    *, engine: Engine, options: ListenOptions, capture: CaptureConfig, source: Source | None
) -> int:
    server: WebsocketServer | None = None
    if options.serve is not None:
        host, port = parse_hostport(options.serve)
        server = WebsocketServer(
            config=ServerConfig(
                host=host, port=port, token=options.token, allowed_origins=options.allowed_origins
            ),
            report_threshold=engine.matcher_config.on_threshold,
            art=engine.library.art,
            sonic_map=_map_job(engine),
        )
        await server.start()
        warning = exposure_warning(host=host, port=server.port, token=options.token)
        if warning is not None:
            print(f"synesthete: warning: {warning}", file=sys.stderr, flush=True)
        if not options.tui:
            # The live view shows these; without it, stderr is where a user looks.
            print(
                f"synesthete: overlay: {overlay_url(server)}   websocket: {server.url}",
                file=sys.stderr,
                flush=True,
            )

    history = TracklistEvents()
    sinks: list[EventSink] = [] if options.tracklist_path is None else [history.append]
    if server is not None:
        sinks.append(server.broadcaster.publish)
    files: list[TextIO] = []
    view: LiveView | None = None
    with contextlib.ExitStack() as stack:
        if options.jsonl_path is not None:
            handle = stack.enter_context(options.jsonl_path.open("a", encoding="utf-8"))
            files.append(handle)
            sinks.append(JsonlWriter(handle).write)
        if options.plays_path is not None:
            paced = options.realtime or options.input_path is None
            plays = PlaysLog(options.plays_path, speed=options.speed if paced else 1.0)
            stack.callback(plays.close)
            sinks.append(plays.write)
        if options.tui:
            name = source_label(options)
            view = stack.enter_context(
                LiveView(
                    snapshot=LiveSnapshot(
                        source=name,
                        server=None
                        if server is None
                        else f"{server.url}  overlay: {overlay_url(server)}",
                    )
                )
            )
            sinks.append(view.update)
        else:
            sinks.append(JsonlWriter(sys.stdout, types=event_types(options.events)).write)
            sinks.append(InputNotes(sys.stderr).write)
        try:
            if options.input_path is not None and not options.realtime:
                await _replay_virtual(engine, options.input_path, sinks, data=options.input_data)
            else:
                if source is None:
                    source = open_live_source(options, capture)
                with source:
                    await run_live(
                        engine=engine,
                        source=source,
                        sinks=sinks,
                        config=LiveConfig(
                            capture=capture,
                            max_seconds=options.max_seconds,
                            reconnect=reconnect_policy(options),
                        ),
                        on_tick=None if view is None else view.draw,
                        clients=None if server is None else server.broadcaster.client_count,
                    )
                # FileSource.error is an exception, DeviceSource.error a message.
                failure = getattr(source, "error", None)
                if failure:
                    raise DeviceError(f"input stopped: {failure}")
        finally:
            if server is not None:
                await server.close()
            if options.tracklist_path is not None:
                named = options.input_path or options.input_url or options.system_audio
                name = source_label(options) if named or options.device else "live"
                with options.tracklist_path.open("w", encoding="utf-8") as out:
                    write_tracklist(
                        build_tracklist(history.events(), source=name), out, fmt="tracklist"
                    )
    return 0


async def _replay_virtual(
    engine: Engine,
    path: Path,
    sinks: list[EventSink],
    *,
    data: bytes | None = None,
) -> None:
    for event in identify_file(engine, str(path), data=data):
        for sink in sinks:
            sink(event)
        await asyncio.sleep(0)
