"""Network streams as a live input: Icecast/Shoutcast, HLS, playlists, any URL FFmpeg opens.

``NetworkSource`` is a ``ReopenableSource``: it feeds the same capture callback
(and so the same ring buffer) as a sound card, from a decode thread of its own
that delivers audio at the stream's pace, and the live loop treats a dropped
connection as it treats a device that went away (``status`` ``input: lost``,
reopening with backoff, ``--reconnect-timeout``).

How a URL is opened:

- **http(s)** other than HLS: our own HTTP client (``http.client``) asks for
  ICY metadata (``Icy-MetaData: 1``), takes Shoutcast's ``ICY 200 OK``,
  follows redirects, resolves ``.pls``/``.m3u`` playlists to the stream they
  list, refuses what is not audio, and hands the audio bytes (the ICY
  metadata blocks taken out and parsed) to PyAV as a file object. Closing the
  socket unblocks the decode thread at once.
- **HLS** (``.m3u8``, or a playlist with ``#EXT-X-`` tags) and every other
  scheme (rtsp, rtmp, srt, file...): FFmpeg opens the URL itself, under
  PyAV's open and read timeouts.

Audio is resampled by FFmpeg to one rate and channel count, fixed when the
source is created, so a station that changes its format, or comes back with
another after a reconnect, still fits the pipeline built for the first.

Tags (ICY ``StreamTitle``, ID3 in HLS, Vorbis comments of an Ogg stream) are
queued as ``StreamTags`` for the loop to send as ``stream_metadata`` events.
ICY metadata and timed ID3 packets (an MPEG-TS data stream) are read as they
come, every change; container tags (Ogg comments, the ID3 of HLS packed-audio
segments) only as PyAV reports them, which is once, when the stream opens:
PyAV does not refresh a stream's metadata after that.

Credentials in a URL (``user:pass@``) are sent as HTTP Basic auth (or left to
FFmpeg) but never shown: ``name`` and every message use ``redact_url``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import math
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from synesthete import __version__
from synesthete.checks import is_url
from synesthete.errors import ConfigError, StreamError

from .avdecode import av_reason, import_av
from .sources import NO_STATUS, AudioCallback, VirtualTimeInfo

USER_AGENT = f"synesthete/{__version__}"
DEFAULT_RATE_HZ = 48_000
"""Output rate when a stream does not say its own before the first frame."""
MAX_PLAYLIST_DEPTH = 3
MAX_BAD_PACKETS = 64
"""Damaged packets in a row before a stream counts as undecodable (a few are skipped)."""
TAGS_CHECK_PACKETS = 32
"""How often (in packets) container and stream tags are looked at for changes."""

_SECRET_PARAMS = frozenset(
    {"password", "passwd", "pass", "pwd", "token", "key", "apikey", "api_key", "secret", "auth"}
)
_PLAYLIST_TYPES = frozenset(
    {
        "audio/x-scpls", "audio/scpls", "audio/x-mpegurl", "audio/mpegurl",
        "application/x-mpegurl", "application/vnd.apple.mpegurl", "application/pls+xml",
    }
)  # fmt: skip
_PLAYLIST_SUFFIXES = (".pls", ".m3u", ".m3u8")
_NOT_AUDIO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")
_FORMAT_BY_TYPE = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/aac": "aac",
    "audio/aacp": "aac",
    "audio/x-aac": "aac",
    "application/ogg": "ogg",
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/webm": "webm",
    "audio/flac": "flac",
}
_ICY_FIELD = re.compile(r"(\w+)='(.*?)';(?=\s*\w+='|\s*$)", re.DOTALL)


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """How a network stream is opened and paced.

    ``connect_timeout_s``: to connect and get the first answer. ``read_timeout_s``:
    no data for this long is a stalled server (the connection is dropped and
    reopened). ``max_lead_s``: how far delivery may run ahead of the wall clock,
    so a server's connect burst (Icecast sends a few seconds at once) reaches
    the recognizer at once while a finite stream (HLS VOD, a file) is still
    delivered in real time. ``speed`` paces a stream that comes faster than
    real time that many times faster (soak tests); a live server keeps its own pace.
    """

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    max_lead_s: float = 8.0
    speed: float = 1.0
    max_redirects: int = 5
    playlist_max_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "read_timeout_s", "speed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.max_lead_s) and self.max_lead_s >= 0):
            raise ConfigError(f"max_lead_s must be a finite number >= 0, got {self.max_lead_s!r}")
        if self.max_redirects < 0 or self.playlist_max_bytes < 1:
            raise ConfigError("max_redirects must be >= 0 and playlist_max_bytes >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamTags:
    """Tags a stream carries: ``origin`` is ``icy`` (ICY metadata), ``id3`` (HLS timed
    ID3) or ``tags`` (the container's own, e.g. Vorbis comments)."""

    origin: str
    title: str | None
    artist: str | None = None
    fields: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class TaggedSource(Protocol):
    """A source whose stream carries tags (``NetworkSource``)."""

    def take_tags(self) -> list[StreamTags]: ...


def redact_url(url: str) -> str:
    """The URL without credentials: ``user:pass@`` becomes ``***@``, and secret-looking
    query values (``token=``, ``password=``, ``key=``...) become ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        scheme = url.split("://", 1)[0]
        return f"{scheme}://***"
    netloc = parts.netloc
    if "@" in netloc:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = "***@" + host + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = "&".join(
                f"{k}=***" if k.lower() in _SECRET_PARAMS else urllib.parse.urlencode({k: v})
                for k, v in pairs
            )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def parse_icy_metadata(block: bytes) -> dict[str, str]:
    """``StreamTitle='Artist - Title';StreamUrl='...';`` as a dict (UTF-8, else Latin-1)."""
    raw = block.rstrip(b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return {match.group(1): match.group(2) for match in _ICY_FIELD.finditer(text.strip())}


def parse_playlist(text: str, *, base_url: str) -> list[str]:
    """The stream URLs a ``.pls`` or ``.m3u`` playlist lists, in order (relative ones
    resolved against ``base_url``)."""
    urls = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        if "=" in line and line.lower().startswith("file"):
            line = line.split("=", 1)[1].strip()
        elif "=" in line and not is_url(line):
            continue  # a .pls key such as Title1= or NumberOfEntries=
        urls.append(urllib.parse.urljoin(base_url, line))
    return urls


def _tags_from_dict(origin: str, values: dict[str, str]) -> StreamTags | None:
    lowered = {k.lower(): v.strip() for k, v in values.items() if isinstance(v, str)}
    title = lowered.get("streamtitle") or lowered.get("title") or None
    artist = lowered.get("artist") or None
    if title is None and artist is None:
        return None
    fields = tuple(sorted((k, v) for k, v in values.items() if isinstance(v, str) and v))
    return StreamTags(origin=origin, title=title, artist=artist, fields=fields)


def _id3_tags(data: bytes) -> StreamTags | None:
    """Title and artist of an ID3v2 tag (HLS timed metadata), through mutagen."""
    from mutagen.id3 import ID3, ID3NoHeaderError

    try:
        tag = ID3(io.BytesIO(data))  # type: ignore[no-untyped-call]
    except (ID3NoHeaderError, ValueError, EOFError, KeyError):
        return None
    except Exception:  # mutagen raises its own errors for damaged tags: just no tags
        return None
    values = {}
    for frame_id, name in (("TIT2", "title"), ("TPE1", "artist"), ("TALB", "album")):
        frame = tag.get(frame_id)  # type: ignore[no-untyped-call]
        if frame is not None and frame.text:
            values[name] = str(frame.text[0])
    return _tags_from_dict("id3", values)


class _IcyResponse(http.client.HTTPResponse):
    """Takes Shoutcast v1's ``ICY 200 OK`` status line as HTTP/1.0."""

    def _read_status(self) -> tuple[str, int, str]:
        fp: Any = self.fp
        if fp.peek(4)[:4] == b"ICY ":
            line = str(fp.readline(65537), "iso-8859-1").split(None, 2)
            status = int(line[1]) if len(line) > 1 and line[1].isdigit() else 200
            return "HTTP/1.0", status, line[2].strip() if len(line) > 2 else "OK"
        result: tuple[str, int, str] = super()._read_status()  # type: ignore[misc]
        return result


class _IcyReader:
    """A file object over an HTTP response for PyAV: the ICY metadata blocks (every
    ``metaint`` bytes) are taken out and parsed, the audio bytes passed on."""

    def __init__(
        self,
        response: http.client.HTTPResponse,
        *,
        metaint: int,
        on_tags: Callable[[StreamTags], None],
    ) -> None:
        self._response = response
        self._metaint = metaint
        self._until_meta = metaint
        self._on_tags = on_tags
        self.bytes_read = 0

    @property
    def complete(self) -> bool:
        """A response of known length read to its end (a file, not a live stream)."""
        return self._response.length == 0

    def read(self, size: int = -1) -> bytes:
        want = 65536 if size is None or size < 0 else size
        if self._metaint:
            if self._until_meta == 0:
                self._read_metadata()
                self._until_meta = self._metaint
            want = min(want, self._until_meta)
        data = self._response.read1(want)
        self._until_meta -= len(data)
        self.bytes_read += len(data)
        return data

    def _read_metadata(self) -> None:
        length = self._read_exact(1)
        if not length:
            return
        size = length[0] * 16
        if size:
            block = self._read_exact(size)
            tags = _tags_from_dict("icy", parse_icy_metadata(block))
            if tags is not None:
                self._on_tags(tags)

    def _read_exact(self, size: int) -> bytes:
        chunks = []
        while size > 0:
            data = self._response.read1(size)
            if not data:
                break
            chunks.append(data)
            size -= len(data)
        return b"".join(chunks)


@dataclass
class _Opened:
    """One connection: the demuxer, its audio stream and what to close to stop it."""

    container: Any
    audio: Any
    data_streams: list[Any]
    live: bool
    sock: socket.socket | None = None
    reader: _IcyReader | None = None

    def interrupt(self) -> None:
        """Unblock a read in progress (our HTTP client's; FFmpeg's own ends by its timeout)."""
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _is_hls(url: str) -> bool:
    return urllib.parse.urlsplit(url).path.lower().endswith(".m3u8")


def open_stream(
    url: str, *, config: StreamConfig, on_tags: Callable[[StreamTags], None], depth: int = 0
) -> _Opened:
    """Connect to ``url`` and find its audio; StreamError (one line, no credentials) if not."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https") and not _is_hls(url):
        return _open_http(url, config=config, on_tags=on_tags, depth=depth)
    return _open_ffmpeg(url, config=config)


def _connect_error(shown: str, host: str, err: BaseException) -> StreamError:
    if isinstance(err, socket.gaierror):
        return StreamError(f"{shown}: cannot resolve host {host!r} ({err.strerror or err})")
    if isinstance(err, TimeoutError | socket.timeout):
        return StreamError(f"{shown}: no answer from {host} (timed out)")
    if isinstance(err, ConnectionRefusedError):
        return StreamError(f"{shown}: connection refused by {host}")
    if isinstance(err, ssl.SSLError):
        return StreamError(f"{shown}: TLS error with {host}: {err.reason or err}")
    if isinstance(err, OSError):
        return StreamError(f"{shown}: cannot connect to {host}: {err.strerror or err}")
    text = " ".join(str(err).split()) or type(err).__name__
    return StreamError(f"{shown}: bad answer from {host}: {text}")


def _open_http(
    url: str, *, config: StreamConfig, on_tags: Callable[[StreamTags], None], depth: int
) -> _Opened:
    shown = redact_url(url)
    original_host = urllib.parse.urlsplit(url).hostname
    for _ in range(config.max_redirects + 1):
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if not host:
            raise StreamError(f"{shown}: no host in the URL")
        try:
            port = parts.port
        except ValueError as err:
            raise StreamError(f"{shown}: bad port in the URL") from err
        connection: http.client.HTTPConnection
        if parts.scheme.lower() == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=config.connect_timeout_s, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=config.connect_timeout_s)
        connection.response_class = _IcyResponse
        headers = {"User-Agent": USER_AGENT, "Icy-MetaData": "1", "Accept": "*/*"}
        if parts.username is not None and host == original_host:
            secret = (
                f"{urllib.parse.unquote(parts.username)}:"
                f"{urllib.parse.unquote(parts.password or '')}"
            )
            headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as err:
            connection.close()
            raise _connect_error(shown, host, err) from None
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location")
            connection.close()
            if not location:
                raise StreamError(f"{shown}: HTTP {response.status} without a Location")
            url = urllib.parse.urljoin(url, location)
            continue
        if response.status != 200:
            connection.close()
            raise StreamError(f"{shown}: HTTP {response.status} {response.reason}".rstrip())
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        path = parts.path.lower()
        if content_type in _PLAYLIST_TYPES or path.endswith(_PLAYLIST_SUFFIXES):
            try:
                body = response.read(config.playlist_max_bytes)
            except (OSError, http.client.HTTPException) as err:
                raise _connect_error(shown, host, err) from None
            finally:
                connection.close()
            return _open_playlist(
                url, body, shown=shown, config=config, on_tags=on_tags, depth=depth
            )
        if content_type.startswith(_NOT_AUDIO_TYPES):
            connection.close()
            raise StreamError(f"{shown}: not an audio stream (the server sent {content_type})")
        try:
            metaint = int(response.getheader("icy-metaint") or 0)
        except ValueError:
            metaint = 0
        sock = connection.sock
        if sock is not None:
            sock.settimeout(config.read_timeout_s)
        reader = _IcyReader(response, metaint=max(0, metaint), on_tags=on_tags)
        av = import_av()
        try:
            container = av.open(
                reader,
                mode="r",
                format=_FORMAT_BY_TYPE.get(content_type),
                timeout=(config.connect_timeout_s, config.read_timeout_s),
            )
        except (av.error.FFmpegError, OSError, ValueError) as err:
            connection.close()
            what = content_type or "no Content-Type"
            raise StreamError(
                f"{shown}: not audio that FFmpeg can decode ({what}: {av_reason(err)})"
            ) from None
        opened = _with_audio(container, shown)
        opened.live = response.length is None
        opened.sock = sock
        opened.reader = reader
        return opened
    raise StreamError(f"{shown}: more than {config.max_redirects} redirects")


def _open_playlist(
    url: str,
    body: bytes,
    *,
    shown: str,
    config: StreamConfig,
    on_tags: Callable[[StreamTags], None],
    depth: int,
) -> _Opened:
    text = body.decode("utf-8", errors="replace")
    if "#EXT-X-" in text:  # HLS, whatever the name says
        return _open_ffmpeg(url, config=config)
    entries = parse_playlist(text, base_url=url)
    if not entries:
        raise StreamError(f"{shown}: the playlist lists no stream")
    if depth >= MAX_PLAYLIST_DEPTH:
        raise StreamError(f"{shown}: playlists nested more than {MAX_PLAYLIST_DEPTH} deep")
    failure: StreamError | None = None
    for entry in entries[:5]:  # stations list mirrors: take the first that answers
        try:
            return open_stream(entry, config=config, on_tags=on_tags, depth=depth + 1)
        except StreamError as err:
            failure = err
    assert failure is not None  # entries is not empty
    raise StreamError(f"{shown}: no stream of the playlist answers (last: {failure})")


def _open_ffmpeg(url: str, *, config: StreamConfig) -> _Opened:
    shown = redact_url(url)
    av = import_av()
    try:
        container = av.open(
            url,
            mode="r",
            timeout=(config.connect_timeout_s, config.read_timeout_s),
            options={"user_agent": USER_AGENT},
        )
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise StreamError(f"{shown}: cannot open: {av_reason(err)}") from None
    opened = _with_audio(container, shown)
    # A live stream (HLS without ENDLIST, rtsp...) has no duration.
    opened.live = container.duration is None
    return opened


def _with_audio(container: Any, shown: str) -> _Opened:
    audio = [s for s in container.streams if s.type == "audio"]
    if not audio:
        container.close()
        raise StreamError(f"{shown}: no audio in the stream")
    data = [s for s in container.streams if s.type == "data"]
    return _Opened(container=container, audio=audio[0], data_streams=data, live=True)


class NetworkSource:
    """A network stream through the sounddevice callback signature (see the module doc).

    The URL is opened at construction, so a URL that never worked fails before
    anything heavy starts (StreamError, one line). ``start`` runs the decode
    thread; ``finished`` is set when it ends on its own, with ``error`` saying
    why, or ``complete`` true when a finite stream (HLS VOD, a file) reached its
    end; ``reopen`` connects again for the live loop's reconnect.
    """

    def __init__(self, *, url: str, config: StreamConfig | None = None) -> None:
        self._url = url
        self._name = redact_url(url)
        self._config = config if config is not None else StreamConfig()
        self._tags: deque[StreamTags] = deque(maxlen=64)
        self._tags_lock = threading.Lock()
        self._pending: _Opened | None = open_stream(
            url, config=self._config, on_tags=self._queue_tags
        )
        context = self._pending.audio.codec_context
        self._sample_rate_hz = int(context.sample_rate or 0) or DEFAULT_RATE_HZ
        self._channels = 1 if int(context.channels or 2) == 1 else 2
        self._live = self._pending.live
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: _Opened | None = None
        self._stop_flag = threading.Event()
        self._deliver_lock = threading.Lock()
        self._closed = False
        self._complete = False
        self.error: str | None = None
        self.connections = 0
        """Connections opened so far (the first, then one per successful reopen)."""

    # ------------------------------------------------------------------ Source

    @property
    def name(self) -> str:
        """The URL as given, credentials taken out."""
        return self._name

    @property
    def sample_rate_hz(self) -> int:
        return self._sample_rate_hz

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def finished(self) -> threading.Event:
        return self._finished

    @property
    def live(self) -> bool:
        """A stream without an end (a station); a finite one (HLS VOD, a file) has one."""
        return self._live

    @property
    def complete(self) -> bool:
        """The stream ended at its natural end: a finite stream played to the end, not a loss."""
        return self._complete

    def start(self, callback: AudioCallback) -> None:
        if self._closed:
            raise StreamError(f"{self._name}: the stream was closed")
        thread = self._thread
        if thread is not None and thread.is_alive():
            raise StreamError(f"{self._name}: already started")
        opened, self._pending = self._pending, None
        if opened is None:
            opened = open_stream(self._url, config=self._config, on_tags=self._queue_tags)
        self.connections += 1
        self._finished.clear()
        self.error = None
        self._complete = False
        stop_flag = threading.Event()  # one per thread: an old one left running keeps its own
        self._stop_flag = stop_flag
        self._current = opened
        self._thread = threading.Thread(
            target=self._run,
            args=(opened, callback, stop_flag),
            name="synesthete-stream",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the decode thread; after return no further callback runs."""
        self._stop_flag.set()
        current = self._current
        if current is not None:
            current.interrupt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # FFmpeg's own reads end by their timeout; past it the thread is left
            # to end on its own (its stop flag is set, so it delivers nothing more).
            thread.join(self._config.read_timeout_s + 1.0)
        with self._deliver_lock:
            pass  # a delivery in progress has returned; later ones see the flag

    def reopen(self, callback: AudioCallback) -> None:
        """Connect again after a loss; StreamError while the server does not answer."""
        if self._closed:
            raise StreamError(f"{self._name}: the stream was closed")
        self.stop()
        self._pending = open_stream(self._url, config=self._config, on_tags=self._queue_tags)
        self.start(callback)

    def close(self) -> None:
        self._closed = True
        self.stop()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ tags

    def _queue_tags(self, tags: StreamTags) -> None:
        with self._tags_lock:
            self._tags.append(tags)

    def take_tags(self) -> list[StreamTags]:
        """Tags seen since the last call, oldest first (the loop sends them as events)."""
        with self._tags_lock:
            tags = list(self._tags)
            self._tags.clear()
        return tags

    # ------------------------------------------------------------------ decode thread

    def _run(self, opened: _Opened, callback: AudioCallback, stop_flag: threading.Event) -> None:
        delivered_frames = 0
        error: str | None = None
        try:
            delivered_frames = self._decode(opened, callback, stop_flag)
            if not stop_flag.is_set():
                reader = opened.reader
                # Our HTTP client knows whether a response of known length was read to
                # its end; FFmpeg's own inputs say so by having a duration.
                finite = reader.complete if reader is not None else not opened.live
                if finite:
                    self._complete = True
                else:
                    error = "the server ended the stream"
        except StreamError as err:
            error = str(err)
        except Exception as err:
            # A thread boundary: say why in the status, never as a traceback.
            error = _describe_failure(err)
        finally:
            opened.close()
        if stop_flag.is_set():
            return
        self.error = error
        self._finished.set()
        with self._deliver_lock:
            if not stop_flag.is_set():
                # Wake the consumer so it sees `finished` (FileSource does the same).
                empty = np.zeros((0, self._channels), dtype=np.float32)
                rate = self._sample_rate_hz
                callback(
                    empty,
                    0,
                    VirtualTimeInfo(
                        inputBufferAdcTime=delivered_frames / rate,
                        currentTime=delivered_frames / rate,
                    ),
                    NO_STATUS,
                )

    def _decode(self, opened: _Opened, callback: AudioCallback, stop_flag: threading.Event) -> int:
        av = import_av()
        rate_hz, channels = self._sample_rate_hz, self._channels
        layout = "mono" if channels == 1 else "stereo"
        resampler = av.AudioResampler(format="flt", layout=layout, rate=rate_hz)
        pace_hz = rate_hz * self._config.speed  # frames per wall-clock second
        lead_s = self._config.max_lead_s
        t0_s: float | None = None
        delivered_frames = 0
        bad_in_a_row = 0
        packets = 0
        last_tags: dict[str, str] = {}

        def deliver(block: npt.NDArray[np.float32]) -> bool:
            nonlocal t0_s, delivered_frames
            frames = block.shape[0]
            if t0_s is None:
                t0_s = time.monotonic()
            due_s = t0_s + (delivered_frames + frames) / pace_hz - lead_s
            delay_s = due_s - time.monotonic()
            if delay_s > 0 and stop_flag.wait(delay_s):
                return False
            with self._deliver_lock:
                if stop_flag.is_set():
                    return False
                callback(
                    block,
                    frames,
                    VirtualTimeInfo(
                        inputBufferAdcTime=delivered_frames / rate_hz,
                        currentTime=(delivered_frames + frames) / rate_hz,
                    ),
                    NO_STATUS,
                )
            delivered_frames += frames
            return True

        def emit(frames_out: list[Any]) -> bool:
            for out in frames_out:
                block = out.to_ndarray().reshape(-1, channels)
                if block.shape[0] and not deliver(np.ascontiguousarray(block, dtype=np.float32)):
                    return False
            return True

        # HLS carries its tags as ID3 (packed audio segments); other containers their own.
        tags_origin = "id3" if "hls" in str(opened.container.format.name) else "tags"
        streams = [opened.audio, *opened.data_streams]
        for packet in opened.container.demux(*streams):
            if stop_flag.is_set():
                return delivered_frames
            packets += 1
            if packet.stream.index != opened.audio.index:
                tags = _id3_tags(bytes(packet)) if packet.size else None
                if tags is not None:
                    self._queue_tags(tags)
                continue
            if packets % TAGS_CHECK_PACKETS == 1:
                found = {**dict(opened.container.metadata), **dict(opened.audio.metadata)}
                if found != last_tags:
                    last_tags = found
                    tags = _tags_from_dict(tags_origin, found)
                    if tags is not None:
                        self._queue_tags(tags)
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError as err:
                bad_in_a_row += 1
                if bad_in_a_row > MAX_BAD_PACKETS:
                    raise StreamError(
                        f"{MAX_BAD_PACKETS} damaged packets in a row ({av_reason(err)})"
                    ) from None
                continue
            bad_in_a_row = 0
            for frame in decoded:
                frame.pts = None
                try:
                    resampled = resampler.resample(frame)
                except ValueError:
                    # The stream changed format (a new Ogg chain, another AAC profile):
                    # a resampler for the new one, to the same output.
                    resampler = av.AudioResampler(format="flt", layout=layout, rate=rate_hz)
                    resampled = resampler.resample(frame)
                if not emit(resampled):
                    return delivered_frames
        emit(resampler.resample(None))
        return delivered_frames


def _describe_failure(err: BaseException) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return "no data from the server (timed out)"
    strerror = getattr(err, "strerror", None)
    if strerror:
        return " ".join(str(strerror).split())
    if isinstance(err, OSError | http.client.HTTPException):
        return f"connection lost ({type(err).__name__})"
    return f"{type(err).__name__}: {' '.join(str(err).split())}"
