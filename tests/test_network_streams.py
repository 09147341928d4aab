"""Network streams through ``synesthete listen --input URL``, against real servers.

The tests start their own parts: a real Icecast2 server (Debian ``icecast2``)
on a free localhost port, fed by ``ffmpeg -re`` source clients with an MP3
and an Ogg Vorbis mount; HLS segments written by ffmpeg and served by a
local ``http.server``; and playlists and a text page from the same server.
Without ``icecast2`` or ``ffmpeg`` (scripts/setup.sh installs both) the
tests that need them skip with the reason.

As root, Icecast refuses to run unless told to change to an unprivileged
user: the config names Debian's ``icecast2`` user, which the package creates.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import DemoLibrary, ListenProcess, cli_command, cli_env, free_port

SOURCE_PASSWORD = "source-secret"
ADMIN_PASSWORD = "admin-secret"
LISTENER_SECRET = "listener-pa55word"
START_TIMEOUT_S = 20.0


def _need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/setup.sh installs it)")


@dataclass(frozen=True)
class Icecast:
    port: int
    log: Path

    def url(self, mount: str, *, credentials: bool = False) -> str:
        auth = f"listener:{LISTENER_SECRET}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}{mount}"

    def source_url(self, mount: str) -> str:
        return f"icecast://source:{SOURCE_PASSWORD}@127.0.0.1:{self.port}{mount}"

    def set_song(self, mount: str, song: str) -> None:
        """The ICY ``StreamTitle`` of an MP3 mount, as a station's playout system sets it."""
        query = urllib.parse.urlencode({"mount": mount, "mode": "updinfo", "song": song})
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/admin/metadata?{query}")
        password = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        password.add_password(None, f"http://127.0.0.1:{self.port}/", "admin", ADMIN_PASSWORD)
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(password))
        with opener.open(request, timeout=10) as response:
            assert b"successful" in response.read()

    def wait_mount(self, mount: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the mount answers 200 (its source client is connected)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.url(mount), timeout=5) as response:
                    if response.status == 200 and response.read(1024):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mount {mount} not up in {timeout_s:g} s: {self.log.read_text()[-800:]}"
                )
            time.sleep(0.2)


@pytest.fixture(scope="module")
def icecast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Icecast]:
    _need("icecast2", "ffmpeg")
    root = tmp_path_factory.mktemp("icecast")
    port = free_port()
    owner = ""
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("icecast2")
        except KeyError:
            pytest.skip("running as root and no icecast2 user to switch to (apt: icecast2)")
        owner = "<changeowner><user>icecast2</user><group>icecast</group></changeowner>"
    share = Path("/usr/share/icecast2")
    config = root / "icecast.xml"
    config.write_text(
        f"""<icecast>
  <limits><sources>8</sources><clients>32</clients><burst-size>65536</burst-size>
    <source-timeout>5</source-timeout></limits>
  <authentication><source-password>{SOURCE_PASSWORD}</source-password>
    <admin-user>admin</admin-user><admin-password>{ADMIN_PASSWORD}</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths><basedir>{share}</basedir><logdir>/tmp</logdir><webroot>{share}/web</webroot>
    <adminroot>{share}/admin</adminroot></paths>
  <logging><accesslog>-</accesslog><errorlog>-</errorlog><loglevel>3</loglevel></logging>
  <security><chroot>0</chroot>{owner}</security>
</icecast>
"""
    )
    log = root / "icecast.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["icecast2", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.skip(f"icecast2 exited with {process.returncode}: {log.read_text()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                pytest.skip(f"icecast2 did not listen in {START_TIMEOUT_S:g} s")
            time.sleep(0.1)
        yield Icecast(port=port, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class SourceClient:
    """``ffmpeg -re`` playing a file in a loop into an Icecast mount, as a station's encoder."""

    CODECS: ClassVar[dict[str, list[str]]] = {
        ".mp3": ["-c:a", "libmp3lame", "-b:a", "128k", "-content_type", "audio/mpeg", "-f", "mp3"],
        ".ogg": ["-c:a", "libvorbis", "-q:a", "4", "-content_type", "application/ogg", "-f", "ogg"],
    }

    def __init__(self, server: Icecast, mount: str, audio: Path, *tags: str) -> None:
        self.server = server
        self.mount = mount
        self.audio = audio
        self.tags = tags
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        codec = self.CODECS[Path(self.mount).suffix]
        self.process = subprocess.Popen(
            [
                *("ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1"),
                *("-i", str(self.audio), "-vn", *self.tags, *codec),
                self.server.source_url(self.mount),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.server.wait_mount(self.mount)

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def __enter__(self) -> SourceClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _listen_to(library: DemoLibrary, url: str, tmp: Path, *args: str) -> ListenProcess:
    """``listen --input URL`` with a plays log (``tmp/plays.jsonl``), events in ``tmp``."""
    return ListenProcess(
        library, tmp / "events.jsonl", "--input", url, "--plays", str(tmp / "plays.jsonl"), *args
    )


def _playing(title: str) -> Callable[[dict[str, object]], bool]:
    def match(event: dict[str, object]) -> bool:
        track = event.get("track")
        return (
            event["type"] == "now_playing" and isinstance(track, dict) and track["title"] == title
        )

    return match


def _status(**fields: object) -> Callable[[dict[str, object]], bool]:
    return lambda e: e["type"] == "status" and all(e.get(k) == v for k, v in fields.items())


def _message_has(text: str) -> Callable[[dict[str, object]], bool]:
    return lambda e: e["type"] == "status" and text in str(e.get("message", ""))


@pytest.mark.slow
def test_icecast_mp3_names_the_track_reports_the_drop_and_names_it_again_after_the_restart(
    icecast: Icecast, demo_library: DemoLibrary, tmp_path: Path
) -> None:
    n = 3
    title = demo_library.titles[n]
    excerpt = demo_library.excerpt(n, start_s=2.0, seconds=30.0)
    source = SourceClient(icecast, "/radio.mp3", excerpt)
    ws_port = free_port()
    with source:
        icecast.set_song("/radio.mp3", f"{demo_library.artist(n)} - {title}")
        url = icecast.url("/radio.mp3", credentials=True)
        listen = _listen_to(
            demo_library, url, tmp_path, "--serve", f"127.0.0.1:{ws_port}", "--reconnect-timeout",
            "60",
        )  # fmt: skip
        try:
            first = listen.wait_for("now_playing", _playing(title), timeout_s=90)
            events = listen.events()
            said = [e for e in events if e["type"] == "stream_metadata" and e["origin"] == "icy"]
            assert said and said[0]["title"] == f"{demo_library.artist(n)} - {title}", said
            shown = f"http://***@127.0.0.1:{icecast.port}/radio.mp3"
            assert {e["file"] for e in events} == {shown}

            # Websocket clients see the same names, never the credentials.
            from websockets.sync.client import connect

            with connect(f"ws://127.0.0.1:{ws_port}/", open_timeout=10) as ws:
                snapshot = json.loads(ws.recv(timeout=10))
            assert snapshot["type"] == "snapshot"
            assert snapshot["stream_metadata"]["title"] == f"{demo_library.artist(n)} - {title}"
            assert snapshot["now_playing"]["file"] == shown
            assert LISTENER_SECRET not in json.dumps(snapshot)

            source.kill()  # the station's encoder dies mid-play
            lost = listen.wait_for("input lost", _status(input="lost"), after=first, timeout_s=15)
            events = listen.events()
            assert events[lost]["input_error"] == "the server ended the stream", events[lost]
            assert any(
                e["type"] == "unknown" and e["reason"] == "input_lost" for e in events[first:]
            )
            failed = listen.wait_for(
                "a failed reconnect", _message_has("reconnect attempt 1 failed"), after=lost,
                timeout_s=15,
            )  # fmt: skip
            assert "HTTP 404" in str(listen.events()[failed]["message"])
            # The play ended with the input: its line is in the log while listen still runs.
            log = (tmp_path / "plays.jsonl").read_text()
            plays = [json.loads(line) for line in log.splitlines()]
            assert [p["track"]["title"] for p in plays] == [title], plays
            play = plays[0]
            assert play["start"].endswith("Z") and play["start"] < play["end"]
            assert 0.0 <= play["offset_start_s"] < play["offset_end_s"] <= 32.0 + 1.0
            assert play["source"] == shown

            restarted_at = time.monotonic()
            source.start()
            back = listen.wait_for(
                "input back", _message_has("input back after"), after=lost, timeout_s=30
            )
            again = listen.wait_for("now_playing again", _playing(title), after=back, timeout_s=60)
            took_s = time.monotonic() - restarted_at
            assert took_s < 30.0, took_s
            times = [float(str(e["t"])) for e in listen.events()[: again + 1]]
            assert times == sorted(times), "stream time went backwards"
        finally:
            listen.close()
    everything = (
        listen.events_path.read_text()
        + listen.stderr_path.read_text()
        + listen.stdout_path.read_text()
        + (tmp_path / "plays.jsonl").read_text()
    )
    assert LISTENER_SECRET not in everything
    assert "Traceback" not in listen.stderr_path.read_text()


@pytest.mark.slow
def test_icecast_ogg_vorbis_names_the_track_and_passes_its_comments_on(
    icecast: Icecast, demo_library: DemoLibrary, tmp_path: Path
) -> None:
    n = 4
    title = demo_library.titles[n]
    excerpt = demo_library.excerpt(n, start_s=5.0, seconds=30.0)
    tags = ("-metadata", f"title={title}", "-metadata", f"artist={demo_library.artist(n)}")
    with SourceClient(icecast, "/radio.ogg", excerpt, *tags):
        listen = _listen_to(demo_library, icecast.url("/radio.ogg"), tmp_path)
        try:
            listen.wait_for("now_playing", _playing(title), timeout_s=90)
            said = [e for e in listen.events() if e["type"] == "stream_metadata"]
            assert said, "no stream_metadata from the Vorbis comments"
            assert said[0]["title"] == title and said[0]["artist"] == demo_library.artist(n)
            assert said[0]["origin"] == "tags"
        finally:
            listen.close()


@contextlib.contextmanager
def http_folder(folder: Path) -> Iterator[str]:
    """A local ``http.server`` serving ``folder``; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".m3u8": "application/vnd.apple.mpegurl",
        ".pls": "audio/x-scpls",
        ".ts": "video/mp2t",
    }

    def log_message(self, format: str, *args: object) -> None:
        pass


def _run_listen(library: DemoLibrary, url: str, *args: str, timeout_s: float = 120):
    return subprocess.run(
        cli_command(
            "listen",
            "--index",
            str(library.index),
            "--input",
            url,
            "--no-tui",
            "--threads",
            "1",
            *args,
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.mark.slow
def test_hls_vod_written_by_ffmpeg_is_named_and_ends_by_itself(
    demo_library: DemoLibrary, tmp_path: Path
) -> None:
    _need("ffmpeg")
    n = 6
    excerpt = demo_library.excerpt(n, start_s=8.0, seconds=16.0)
    hls = tmp_path / "hls"
    hls.mkdir()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(excerpt), "-c:a", "aac", "-b:a",
         "128k", "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
         str(hls / "index.m3u8")],
        check=True,
        timeout=120,
    )  # fmt: skip
    with http_folder(hls) as base:
        started = time.monotonic()
        result = _run_listen(demo_library, f"{base}/index.m3u8", "--events", "all")
        took_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    titles = {e["track"]["title"] for e in events if e["type"] == "now_playing"}
    assert titles == {demo_library.titles[n]}, (titles, result.stderr)
    assert events[-1]["type"] == "status" and events[-1].get("message") == "input ended"
    assert all(e.get("input", "ok") == "ok" for e in events if e["type"] == "status")
    # Paced as a stream: about its 16 s (less the lead allowed at the start), not at once.
    assert took_s >= 16.0 - 8.0, took_s


@pytest.mark.slow
def test_live_hls_from_ffmpeg_and_a_pls_playlist_of_it_are_named(
    demo_library: DemoLibrary, tmp_path: Path
) -> None:
    """A live HLS playlist that ffmpeg keeps rewriting (segments come and go), reached
    through a ``.pls`` playlist that points to it, as stations publish them."""
    _need("ffmpeg")
    n = 1
    excerpt = demo_library.excerpt(n, start_s=3.0, seconds=30.0)
    live = tmp_path / "live"
    live.mkdir()
    (live / "station.pls").write_text("[playlist]\nNumberOfEntries=1\nTitle1=Test station\n")
    writer = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
         str(excerpt), "-c:a", "aac", "-b:a", "96k", "-f", "hls", "-hls_time", "1",
         "-hls_list_size", "6", "-hls_flags", "delete_segments", str(live / "live.m3u8")],
    )  # fmt: skip
    try:
        with http_folder(live) as base:
            (live / "station.pls").write_text(
                f"[playlist]\nNumberOfEntries=1\nFile1={base}/live.m3u8\nTitle1=Test station\n"
            )
            deadline = time.monotonic() + 30
            while (
                not (live / "live.m3u8").exists()
                or (live / "live.m3u8").read_text().count("#EXTINF") < 3
            ):
                assert writer.poll() is None and time.monotonic() < deadline, "no live HLS"
                time.sleep(0.2)
            result = _run_listen(demo_library, f"{base}/station.pls", "--seconds", "12")
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    titles = {e["track"]["title"] for e in events if e["type"] == "now_playing"}
    assert titles == {demo_library.titles[n]}, (titles, result.stderr)
    assert {e["file"] for e in events} == {f"{base}/station.pls"}


def test_urls_that_never_worked_are_one_line_and_status_2(
    icecast: Icecast, demo_library: DemoLibrary, tmp_path: Path
) -> None:
    page = tmp_path / "site"
    page.mkdir()
    (page / "index.html").write_text("<html><body>not a stream</body></html>")
    (page / "noise.mp3").write_bytes(b"this is text, not audio\n" * 200)
    closed_port = free_port()
    with http_folder(page) as base:
        cases = {
            f"http://user:{LISTENER_SECRET}@127.0.0.1:{icecast.port}/missing.mp3": "HTTP 404",
            "http://no-such-host.invalid/stream.mp3": "cannot resolve host",
            f"http://127.0.0.1:{closed_port}/stream": "connection refused",
            f"{base}/index.html": "not an audio stream (the server sent text/html)",
            f"{base}/noise.mp3": "not audio that FFmpeg can decode",
            f"{base}/missing.m3u8": "cannot open",
        }
        for url, reason in cases.items():
            result = _run_listen(demo_library, url, timeout_s=60)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.returncode == 2, (url, result.stderr)
            assert len(lines) == 1 and lines[0].startswith("synesthete: error:"), (url, lines)
            assert reason in lines[0], (url, lines)
            assert LISTENER_SECRET not in result.stderr + result.stdout
            assert result.stdout == ""


@pytest.mark.slow
def test_hls_packed_audio_with_id3_tags_passes_the_title_on(
    demo_library: DemoLibrary, tmp_path: Path
) -> None:
    """Apple's packed audio: ADTS segments, each with an ID3 tag (a PRIV timestamp and the
    title), as stations that send "now playing" in HLS write them."""
    _need("ffmpeg")
    import struct

    from mutagen.id3 import ID3, PRIV, TIT2, TPE1

    n = 5
    excerpt = demo_library.excerpt(n, start_s=6.0, seconds=14.0)
    hls = tmp_path / "packed"
    hls.mkdir()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(excerpt), "-c:a", "aac", "-f",
         "segment", "-segment_time", "2", "-segment_format", "adts", str(hls / "s%03d.aac")],
        check=True,
        timeout=120,
    )  # fmt: skip
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:3", "#EXT-X-MEDIA-SEQUENCE:0"]
    for i, segment in enumerate(sorted(hls.glob("s*.aac"))):
        tag = ID3()
        stamp = struct.pack(">Q", round(i * 2.0 * 90_000))
        tag.add(PRIV(owner="com.apple.streaming.transportStreamTimestamp", data=stamp))
        tag.add(TIT2(encoding=3, text=[demo_library.titles[n]]))
        tag.add(TPE1(encoding=3, text=[demo_library.artist(n)]))
        buffer = io.BytesIO()
        tag.save(buffer, v2_version=4)
        segment.write_bytes(buffer.getvalue() + segment.read_bytes())
        lines += ["#EXTINF:2.0,", segment.name]
    (hls / "index.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n")
    with http_folder(hls) as base:
        result = _run_listen(demo_library, f"{base}/index.m3u8", "--events", "all")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    said = [e for e in events if e["type"] == "stream_metadata"]
    assert said and said[0]["origin"] == "id3", said
    assert (said[0]["title"], said[0]["artist"]) == (demo_library.titles[n], demo_library.artist(n))
    titles = {e["track"]["title"] for e in events if e["type"] == "now_playing"}
    assert titles == {demo_library.titles[n]}, titles
