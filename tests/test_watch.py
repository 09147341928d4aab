"""``synesthete watch`` against a real websocket server (port 0, its own loop thread)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from conftest import cli_command, cli_env, free_port, sigint_as_in_a_terminal

from synesthete.clients.cli import main
from synesthete.clients.server import Client, ServerConfig, WebsocketServer
from synesthete.clients.watch import EventPrinter, describe, normalize_url, parse_types
from synesthete.errors import ConfigError, ProtocolError
from synesthete.events import (
    Candidates,
    CandidateScore,
    Event,
    NowPlaying,
    Status,
    TrackInfo,
    Unknown,
)

T = TypeVar("T")
A = TrackInfo(id=1, path="/m/a.flac", title="Amber Line", artist="The Tests", album="X")
B = TrackInfo(id=2, path="/m/b.flac", title="Blue Hour", artist=None)


def playing(track: TrackInfo, t: float) -> NowPlaying:
    return NowPlaying(file="mic", t=t, track=track, offset_s=t + 30.0, confidence=0.91)


class ServerThread:
    """A WebsocketServer running on its own event loop in a daemon thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = WebsocketServer(config=config)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def run(self, fn: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return fn()

        return self.call(wrapped())

    def publish(self, *events: Event) -> None:
        def go() -> None:
            for event in events:
                self.server.broadcaster.publish(event)

        self.run(go)

    def clients(self) -> list[Client]:
        return self.run(lambda: list(self.server.broadcaster.clients))

    @property
    def url(self) -> str:
        return self.server.url


def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def run_main_in_thread(argv: list[str]) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
    thread.start()
    return thread, codes


def test_watch_jsonl_prints_the_snapshot_then_events(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerThread(ServerConfig(port=0)) as srv:
        srv.publish(playing(A, 4.0))
        thread, codes = run_main_in_thread(["watch", srv.url, "--jsonl", "--count", "4"])
        wait_until(lambda: len(srv.clients()) == 1, what="the watcher to connect")
        later: list[Event] = [
            Status(file="mic", t=5.0, level_dbfs=-12.0, xruns=0, latency_ms=8.5, clients=1),
            Unknown(file="mic", t=6.0, reason="lost"),
            playing(B, 8.0),
        ]
        srv.publish(*later)
        thread.join(timeout=20)
    assert codes == [0]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Exactly design.md's JSONL payloads: no envelope fields.
    assert lines == [playing(A, 4.0).to_payload(), *(e.to_payload() for e in later)]


def test_watch_msgpack_with_types_subscribes(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerThread(ServerConfig(port=0)) as srv:
        argv = ["watch", srv.url, "--jsonl", "--msgpack", "--count", "2"]
        thread, codes = run_main_in_thread([*argv, "--types", "now_playing,unknown"])
        wait_until(lambda: any(c.types is not None for c in srv.clients()), what="the subscription")
        [client] = srv.clients()
        assert client.encoding == "msgpack"
        assert client.types is not None and {"now_playing", "unknown"} <= client.types
        score = CandidateScore(track=A, frechet=0.1, min_p2p=0.2, offset_s=3.0, confidence=0.7)
        srv.publish(
            Status(file="mic", t=1.0),
            Candidates(file="mic", t=2.0, candidates=(score,)),
            playing(A, 2.0),
            Unknown(file="mic", t=4.0, reason="lost"),
        )
        thread.join(timeout=20)
    assert codes == [0]
    kinds = [json.loads(line)["type"] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["now_playing", "unknown"]


def test_watch_human_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerThread(ServerConfig(port=0)) as srv:
        thread, codes = run_main_in_thread(["watch", srv.url, "--count", "2"])
        wait_until(lambda: len(srv.clients()) == 1, what="the watcher to connect")
        srv.publish(playing(A, 12.0), Unknown(file="mic", t=14.0, reason="lost"))
        thread.join(timeout=20)
    assert codes == [0]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(snapshot) nothing identified yet")
    assert lines[1] == "    12.0s  ▶ Amber Line — The Tests  at 0:42  conf 0.91"
    assert lines[2] == "    14.0s  ■ unknown (lost)"


def test_watch_with_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerThread(ServerConfig(port=0, token="s3cret")) as srv:
        srv.publish(playing(B, 2.0))
        code = main(["watch", srv.url, "--token", "nope", "--no-reconnect"])
        err = capsys.readouterr().err.splitlines()
        assert code != 0 and len(err) == 1 and "HTTP 401" in err[0], err
        code = main(["watch", srv.url, "--token", "s3cret", "--jsonl", "--count", "1"])
        out = capsys.readouterr().out.splitlines()
    assert code == 0 and json.loads(out[0])["track"]["title"] == "Blue Hour"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["watch", "ftp://127.0.0.1:1/"], "not a websocket URL"),
        (["watch", "ws://:80/"], "no host"),
        (["watch", "ws://127.0.0.1:99999/"], "bad port"),
        (["watch", "127.0.0.1:1", "--types", "now_playing,weather"], "unknown event types"),
        (["watch", "127.0.0.1:1", "--count", "0"], "--count"),
    ],
)
def test_watch_bad_arguments_are_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    err = capsys.readouterr().err.splitlines()
    assert code != 0 and len(err) == 1 and needle in err[0], err
    assert err[0].startswith("synesthete: error:")


def test_watch_refused_connection_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["watch", f"ws://127.0.0.1:{free_port()}/"])
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert code != 0 and captured.out == ""
    assert len(err) == 1 and "cannot connect to ws://127.0.0.1:" in err[0], err


class LineReader:
    """Collects a text stream's lines on a thread; ``line``/``next`` wait for one."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout_s: float = 20.0) -> str:
        try:
            text = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no line from watch within {timeout_s} s") from None
        self.seen.append(text)
        return text

    def next(self, timeout_s: float = 20.0) -> dict[str, Any]:
        return json.loads(self.line(timeout_s))  # type: ignore[no-any-return]

    def drain(self, timeout_s: float = 20.0) -> None:
        """Wait for end of stream and keep every remaining line in ``seen``."""
        self._thread.join(timeout_s)
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())

    def until(self, needle: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.line(max(0.1, deadline - time.monotonic()))
            if needle in text:
                return text


@contextlib.contextmanager
def watch_process(port: int, *options: str) -> Iterator[subprocess.Popen[str]]:
    """``synesthete watch ws://127.0.0.1:PORT/ OPTIONS`` that a test stops with Ctrl-C;
    killed on the way out if it is still running."""
    process = subprocess.Popen(
        cli_command("watch", f"ws://127.0.0.1:{port}/", *options),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_watch_reconnects_after_a_restart_and_stops_on_ctrl_c() -> None:
    port = free_port()
    config = ServerConfig(port=port)
    with watch_process(port, "--jsonl", "--wait") as process:
        out, err = LineReader(process.stdout), LineReader(process.stderr)
        # --wait: the watcher starts before the server and keeps trying.
        assert "waiting for the server" in err.line()
        with ServerThread(config) as first:
            first.publish(playing(A, 4.0))
            err.until("connected to ws://127.0.0.1")
            assert out.next()["track"]["title"] == "Amber Line"
        assert "the server closed the connection; reconnecting" in err.line()
        with ServerThread(config) as second:
            err.until("connected to ws://127.0.0.1")
            # Nothing plays on the new server: the watcher says the old answer is gone.
            gone = out.next()
            assert gone == {"type": "unknown", "file": "mic", "t": 4.0, "reason": "reconnected"}
            second.publish(playing(B, 2.0))
            assert out.next()["track"]["title"] == "Blue Hour"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=20) == 0
        err.drain()
        assert not any("Traceback" in line for line in err.seen), err.seen
        # One note per outage, however many attempts it took.
        assert sum("reconnecting" in line for line in err.seen) == 1, err.seen


def test_ctrl_c_does_not_wait_on_a_stalled_server() -> None:
    """A server that stops answering (its loop blocked) must not hold Ctrl-C for
    websockets' 10 s closing handshake."""
    port = free_port()
    with ServerThread(ServerConfig(port=port)) as server, watch_process(port, "--jsonl") as process:
        out = LineReader(process.stdout)
        server.publish(playing(A, 4.0))
        assert out.next()["track"]["title"] == "Amber Line"
        server.loop.call_soon_threadsafe(time.sleep, 9.0)  # the server stalls
        time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - started < 5.0


def test_event_printer_and_url_rules() -> None:
    assert normalize_url("localhost:9000") == "ws://localhost:9000/"
    assert normalize_url("example.org") == "ws://example.org:8765/"
    assert normalize_url("https://example.org/x?a=1") == "wss://example.org/x?a=1"
    assert normalize_url("ws://[::1]:8765") == "ws://[::1]:8765/"
    with pytest.raises(ConfigError):
        normalize_url("mailto:x@y")
    assert parse_types(" now_playing , unknown ") == {"now_playing", "unknown"}
    with pytest.raises(ConfigError):
        parse_types(",")

    printer = EventPrinter(jsonl=True)
    printer.connected()
    message = {"v": 1, "seq": 3, "ts": 1.0, "dropped": 2, **playing(A, 1.0).to_payload()}
    lines, notes = printer.feed(message)
    assert [json.loads(x) for x in lines] == [playing(A, 1.0).to_payload()]
    assert notes and "dropped 2" in notes[0]
    assert printer.feed({"v": 1, "type": "pong", "seq": 4, "ts": 1.0}) == ([], [])
    lines, notes = printer.feed({"v": 1, "type": "error", "seq": 5, "ts": 1.0, "error": "bad"})
    assert lines == [] and notes == ["server error: bad"]
    with pytest.raises(ProtocolError):
        printer.feed({"v": 2, "type": "now_playing"})
    status = Status(file="mic", t=3.0, level_dbfs=-20.0, latency_ms=9.0, clients=2)
    assert describe(status.to_payload()) == (
        "     3.0s  · status: level -20.0 dBFS, xruns 0, latency 9.0 ms, clients 2"
    )
    lost = Status(
        file="mic",
        t=3.0,
        input_state="lost",
        input_error="mic unplugged",
        flags=("clipping",),
        message="input lost: mic unplugged; giving up in 60 s",
    )
    assert describe(lost.to_payload()) == (
        "     3.0s  · status: input LOST (mic unplugged), level —, xruns 0, latency —, clients 0,"
        " flags clipping, input lost: mic unplugged; giving up in 60 s"
    )


def test_watch_stays_light() -> None:
    """``watch`` is a small client: it never loads torch, annoy or PortAudio."""
    code = (
        "import sys\n"
        "from synesthete.clients.cli import main\n"
        "main(['watch', 'ws://127.0.0.1:1/', '--no-reconnect'])\n"
        "print(','.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(out.stdout.strip().splitlines()[-1].split(","))
    assert not {"torch", "annoy", "sounddevice", "numpy"} & loaded
