"""The websocket server: a thin broadcaster around ``clients.protocol``.

Each client gets a bounded queue and a relay task (the python-websockets
broadcast recipe). A client that cannot keep up loses its oldest messages and
is flagged ``slow``; it never delays the others or the recognizer, because
``publish`` only appends to deques. The same server answers plain HTTP GETs
for the browser overlay at ``/overlay``, for tracks' cover art at
``/art/<track id>``, and for the live sonic map at ``/map`` (its data at
``/map.json``).
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import http
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from synesthete.clients.protocol import (
    SUBPROTOCOLS,
    Command,
    CommandBudget,
    Encoding,
    encode,
    encoding_for,
    envelope,
    parse_command,
)
from synesthete.errors import ConfigError, ProtocolError, SynestheteError
from synesthete.events import Event, current_answer

if TYPE_CHECKING:
    from synesthete.index.art import CoverArt

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
STATIC_FILES = {
    "/overlay": ("overlay.html", "text/html; charset=utf-8"),
    "/map": ("map.html", "text/html; charset=utf-8"),
}
MAP_JSON_PATH = "/map.json"
ART_PATH = re.compile(r"^/art/(\d{1,18})$")

ArtSource = Callable[[int], "CoverArt | None"]
"""Track id -> its cover art or ``None`` (``Library.art``); ``LibraryError`` for an unknown id."""

MapSource = Callable[[], "bytes | None"]
"""The sonic map as JSON (``clients/map.py``), ``None`` while it is being drawn;
``SynestheteError`` when there is no map to draw (one line, e.g. a library of one track)."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Where and how the websocket server listens.

    ``allowed_origins`` adds browser origins (``scheme://host[:port]``) to the
    default of pages served from localhost; clients that send no Origin
    (scripts, OBS) are always allowed. ``token``, when set, must be given as
    ``?token=`` or an ``Authorization: Bearer`` header. Each client may send
    ``command_burst`` commands at once and ``command_rate_hz`` per second
    after that (see ``CommandBudget``); at most ``max_clients`` are connected
    at a time. ``compression`` offers permessage-deflate to clients that ask
    for it; it costs CPU per message and client, and memory per client, to
    save bytes on small event messages over loopback or a LAN, so it is off
    by default (measured with scripts/bench_ws_load.py).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    allowed_origins: tuple[str, ...] = ()
    token: str | None = None
    queue_messages: int = 256
    max_message_bytes: int = 4096
    ping_interval_s: float | None = 20.0
    command_rate_hz: float = 20.0
    command_burst: int = 40
    max_clients: int = 1000
    compression: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.queue_messages < 1:
            raise ConfigError("queue_messages must be >= 1")
        if not self.command_rate_hz > 0 or self.command_burst < 1:
            raise ConfigError("command_rate_hz must be > 0 and command_burst >= 1")
        if self.max_clients < 1:
            raise ConfigError("max_clients must be >= 1")


def bind_failure(host: str, port: int, err: OSError) -> str:
    """The one line to show when ``host:port`` cannot be bound."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if err.errno == errno.EADDRINUSE:
        return (
            f"cannot serve on {where}: the port is in use (another synesthete listen or demo?);"
            " stop it or choose another port with --serve HOST:PORT"
        )
    if err.errno == errno.EADDRNOTAVAIL:
        return f"cannot serve on {where}: this machine has no such address"
    if err.errno == errno.EACCES:
        return f"cannot serve on {where}: permission denied (ports below 1024 need privileges)"
    reason = err.strerror or " ".join(str(err).split()) or type(err).__name__
    return f"cannot serve on {where}: {reason}"


def check_port_free(host: str, port: int) -> None:
    """Raise ``ConfigError`` now if ``host:port`` cannot be bound (as the server binds it).

    For commands that do minutes of work before they serve (``demo``): the
    server's own bind still reports a port taken in the meantime.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ConfigError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # asyncio sets SO_REUSEADDR too: a port in TIME_WAIT is free, one listened on is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as err:
                raise ConfigError(bind_failure(host, port, err)) from None


def parse_hostport(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` or ``PORT`` → (host, port); host defaults to 127.0.0.1."""
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError as err:
        raise ConfigError(f"--serve expects HOST:PORT, got {value!r}") from err
    return host, port


@dataclass(eq=False, slots=True)
class Outgoing:
    """One message on its way to many clients, encoded at most once per encoding."""

    message: dict[str, Any]
    frames: dict[Encoding, str | bytes] = field(default_factory=dict)

    def frame(self, encoding: Encoding) -> str | bytes:
        frame = self.frames.get(encoding)
        if frame is None:
            frame = self.frames[encoding] = encode(self.message, encoding)
        return frame


@dataclass(eq=False)
class Client:
    """One connected client's state; its relay task drains ``queue``."""

    connection: ServerConnection
    encoding: Encoding
    capacity: int
    budget: CommandBudget
    queue: deque[Outgoing] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    types: frozenset[str] | None = None
    dropped: int = 0
    slow: bool = False
    rate_limited: bool = False

    def offer(self, message: dict[str, Any] | Outgoing) -> None:
        item = message if isinstance(message, Outgoing) else Outgoing(message)
        if self.types is not None and item.message["type"] not in self.types:
            return
        if len(self.queue) >= self.capacity:
            self.queue.popleft()
            self.dropped += 1
            self.slow = True
        self.queue.append(item)
        self.wake.set()


class Broadcaster:
    """Holds the latest state for snapshots and fans messages out to clients.

    ``report_threshold`` is the confidence the matcher needs to name a track;
    snapshots carry it as ``threshold`` so a client can tell a held or
    fading ``now_playing`` (below it) from a confirmed one.
    """

    def __init__(self, *, config: ServerConfig, report_threshold: float | None = None) -> None:
        self.config = config
        self.report_threshold = report_threshold
        self.clients: set[Client] = set()
        self._seq = 0
        self._latest: dict[str, dict[str, Any] | None] = {
            "now_playing": None,
            "candidates": None,
            "sounds_like": None,
            "up_next": None,
            "status": None,
            "stream_metadata": None,
        }

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def publish(self, event: Event) -> None:
        """Queue an event for every client; never blocks."""
        self.publish_payload(event.to_payload())

    def publish_payload(self, payload: dict[str, Any]) -> None:
        kind = payload["type"]
        self._latest["now_playing"] = current_answer(self._latest["now_playing"], kind, payload)
        if kind in self._latest and kind != "now_playing":
            self._latest[kind] = payload
        # Shared by every client's queue, so each encoding is built once, not once per client.
        message = Outgoing(envelope(payload, seq=self.next_seq(), ts=time.time()))
        for client in self.clients:
            client.offer(message)

    def snapshot(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": "snapshot",
            **self._latest,
            "threshold": self.report_threshold,
        }
        return envelope(payload, seq=self.next_seq(), ts=time.time())

    def client_count(self) -> int:
        return len(self.clients)

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self.clients),
            "slow_clients": sum(1 for c in self.clients if c.slow),
            "dropped": sum(c.dropped for c in self.clients),
        }


class WebsocketServer:
    """Runs the websocket endpoint at ``/`` and the overlay page, bound per ``ServerConfig``."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        broadcaster: Broadcaster | None = None,
        report_threshold: float | None = None,
        art: ArtSource | None = None,
        sonic_map: MapSource | None = None,
    ) -> None:
        self.config = config
        self._art = art
        self._map = sonic_map
        self.broadcaster = (
            broadcaster
            if broadcaster is not None
            else Broadcaster(config=config, report_threshold=report_threshold)
        )
        self._server: Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"ws://{host}:{self.port}/"

    async def start(self) -> None:
        """Bind and listen; a port in use or an address that cannot be bound is a
        ``ConfigError`` naming it (one line for the CLI), not asyncio's ``OSError``."""
        try:
            self._server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
                process_request=self._process_request,
                max_size=self.config.max_message_bytes,
                ping_interval=self.config.ping_interval_s,
                select_subprotocol=_select_subprotocol,
                compression="deflate" if self.config.compression else None,
            )
        except OSError as err:
            raise ConfigError(bind_failure(self.config.host, self.config.port, err)) from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> WebsocketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        if origin is None:
            return True
        if origin in self.config.allowed_origins:
            return True
        parts = urlsplit(origin)
        if parts.hostname is not None and parts.hostname in LOCAL_HOSTS:
            return True
        # Same origin: a page this server served itself (/overlay opened over the LAN).
        # A browser on another site sends its own origin, which cannot match our Host.
        return host_header is not None and parts.scheme == "http" and parts.netloc == host_header

    def _token_ok(self, request: Request) -> bool:
        if self.config.token is None:
            return True
        given = parse_qs(urlsplit(request.path).query).get("token", [None])[0]
        header = request.headers.get("Authorization")
        if given is None and header is not None and header.startswith("Bearer "):
            given = header.removeprefix("Bearer ").strip()
        return given is not None and hmac.compare_digest(given, self.config.token)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in STATIC_FILES and "Upgrade" not in request.headers:
            name, content_type = STATIC_FILES[path]
            body = resources.files("synesthete.clients").joinpath("static", name).read_bytes()
            headers = Headers(
                [
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"),
                ]
            )
            return Response(http.HTTPStatus.OK.value, "OK", headers, body)
        if path == MAP_JSON_PATH and "Upgrade" not in request.headers:
            return self._map_response(connection, request)
        art_path = ART_PATH.match(path)
        if art_path is not None and "Upgrade" not in request.headers:
            return self._art_response(connection, request, int(art_path.group(1)))
        if path != "/":
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        if not self._origin_allowed(request.headers.get("Origin"), request.headers.get("Host")):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        if not self._token_ok(request):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or bad token\n")
        if len(self.broadcaster.clients) >= self.config.max_clients:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        return None

    def _map_response(self, connection: ServerConnection, request: Request) -> Response:
        """The sonic map's data, guarded by the token like the events (it names every
        track); ``503`` while it is still being drawn, ``404`` with the reason when
        there is none."""
        if not self._token_ok(request):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or bad token\n")
        if self._map is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "no map: no library\n")
        try:
            body = self._map()
        except SynestheteError as err:
            return connection.respond(http.HTTPStatus.NOT_FOUND, f"{err}\n")
        if body is None:
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "the map is being drawn\n"
            )
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Cross-Origin-Resource-Policy", "same-site"),
            ]
        )
        return Response(http.HTTPStatus.OK.value, "OK", headers, body)

    def _art_response(
        self, connection: ServerConnection, request: Request, track_id: int
    ) -> Response:
        """A track's cover art; ``404`` for a track without art or not in the index.

        The token guards it like the events (a cover tells what is in the
        library). ``Cross-Origin-Resource-Policy`` keeps other sites' pages
        from embedding it; the overlay this server serves is same-origin. The
        picture of a track id changes only when the index is rebuilt, so
        browsers revalidate it by its sha256 (``ETag``) instead of keeping it.
        """
        if not self._token_ok(request):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or bad token\n")
        try:
            # One indexed sqlite row: cheap enough for the event loop.
            art = None if self._art is None else self._art(track_id)
        except SynestheteError:
            art = None
        if art is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "no cover art for this track\n")
        etag = f'"{art.sha256}"'
        headers = Headers(
            [
                ("Cache-Control", "no-cache"),
                ("ETag", etag),
                ("X-Content-Type-Options", "nosniff"),
                ("Cross-Origin-Resource-Policy", "same-site"),
            ]
        )
        if request.headers.get("If-None-Match") == etag:
            return Response(http.HTTPStatus.NOT_MODIFIED.value, "Not Modified", headers, b"")
        headers["Content-Type"] = art.mime
        headers["Content-Length"] = str(len(art.data))
        return Response(http.HTTPStatus.OK.value, "OK", headers, art.data)

    async def _handle(self, connection: ServerConnection) -> None:
        client = Client(
            connection=connection,
            encoding=encoding_for(connection.subprotocol),
            capacity=self.config.queue_messages,
            budget=CommandBudget(
                rate_hz=self.config.command_rate_hz,
                burst=self.config.command_burst,
                now_s=time.monotonic(),
            ),
        )
        client.offer(self.broadcaster.snapshot())
        self.broadcaster.clients.add(client)
        relay = asyncio.create_task(self._relay(client))
        try:
            async for frame in connection:
                verdict = client.budget.take(time.monotonic())
                if verdict == "ok":
                    client.rate_limited = False
                    self._answer(client, frame)
                elif verdict == "limited":
                    # One error per run of ignored commands: replies must not amplify a flood.
                    if not client.rate_limited:
                        client.rate_limited = True
                        self._error(
                            client,
                            f"rate limit: at most {self.config.command_rate_hz:g} commands/s"
                            f" (burst {self.config.command_burst}); commands ignored",
                        )
                else:
                    await connection.close(CloseCode.POLICY_VIOLATION, "command flood")
                    break
        except ConnectionClosed:
            pass
        finally:
            self.broadcaster.clients.discard(client)
            relay.cancel()

    def _answer(self, client: Client, frame: str | bytes) -> None:
        try:
            command = parse_command(frame, client.encoding)
        except ProtocolError as err:
            self._error(client, str(err))
            return
        self._apply(client, command)

    def _error(self, client: Client, text: str) -> None:
        client.offer(
            envelope(
                {"type": "error", "error": text}, seq=self.broadcaster.next_seq(), ts=time.time()
            )
        )

    def _apply(self, client: Client, command: Command) -> None:
        seq, now = self.broadcaster.next_seq(), time.time()
        if command.type == "ping":
            client.offer(envelope({"type": "pong", "id": command.id}, seq=seq, ts=now))
        elif command.type == "subscribe":
            # Control replies must reach the client whatever it subscribed to.
            client.types = None
            client.offer(
                envelope(
                    {"type": "subscribed", "id": command.id, "types": sorted(command.types or ())},
                    seq=seq,
                    ts=now,
                )
            )
            client.types = (command.types or frozenset()) | {
                "snapshot",
                "pong",
                "error",
                "subscribed",
            }
        elif command.type == "snapshot":
            client.offer(self.broadcaster.snapshot())

    async def _relay(self, client: Client) -> None:
        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                while client.queue:
                    item = client.queue.popleft()
                    if client.slow and item.message["type"] != "snapshot":
                        frame = encode({**item.message, "dropped": client.dropped}, client.encoding)
                    else:
                        frame = item.frame(client.encoding)
                    await client.connection.send(frame)
        except ConnectionClosed:
            pass


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None
