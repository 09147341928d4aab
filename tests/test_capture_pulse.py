"""The real capture path: PulseAudio null sink → ALSA "pulse" PCM → PortAudio → listen.

A private PulseAudio server runs per module in ``tmp_path`` (its own socket,
runtime and state dirs; ``-n`` skips the system default.pa) with one null
sink, ``synth``, whose monitor is the default source. ``paplay`` plays a
library excerpt into the sink while ``synesthete listen --device pulse``
captures through PortAudio's ALSA host API, which reaches PulseAudio through
the ``pulse`` PCM of libasound2-plugins. Clients find the server through
``PULSE_SERVER``; autospawn is off so nothing else starts.

As root, PulseAudio only warns ("not intended to be run as root") when not in
``--system`` mode; a per-test server with its own HOME and runtime dir works.

The input-fault tests get a server each and break it under a running
``listen``. What PortAudio (ALSA host API, through the ``pulse`` PCM) does
then, as measured here: unloading the null sink or killing the server ends
the stream (``finished_callback`` fires, ``active`` turns false); freezing the
server (SIGSTOP) just stops the callbacks, with no error and ``active`` still
true, and stopping, closing or opening a stream blocks until the server runs
again. Reopening works once the server or sink is back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DemoLibrary, ListenProcess, cli_command, cli_env

SINK_RATE_HZ = 44_100
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class PulseServer:
    socket: Path
    client_env: dict[str, str]
    log: Path
    pid: int

    def pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args], env=self.client_env, capture_output=True, text=True, timeout=10
        )


NULL_SINK = (
    f"module-null-sink sink_name=synth rate={SINK_RATE_HZ} sink_properties=device.description=synth"
)


def _missing_tools() -> list[str]:
    return [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    with run_pulse(tmp_path_factory.mktemp("pulse")) as server:
        yield server


@contextlib.contextmanager
def run_pulse(root: Path) -> Iterator[PulseServer]:
    """A private PulseAudio server under ``root``; skips the test if it cannot run."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"PulseAudio tools missing: {', '.join(missing)} (apt: pulseaudio-utils)")
    runtime = root / "runtime"
    runtime.mkdir(mode=0o700)
    (root / "home").mkdir()
    sock = runtime / "native"
    config = root / "server.pa"
    config.write_text(
        f"load-module {NULL_SINK}\n"
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={sock}\n"
        "set-default-sink synth\n"
        "set-default-source synth.monitor\n"
    )
    client_conf = root / "client.conf"
    client_conf.write_text("autospawn = no\n")
    server_env = dict(os.environ)
    server_env.update(
        HOME=str(root / "home"),
        XDG_RUNTIME_DIR=str(runtime),
        PULSE_RUNTIME_PATH=str(runtime),
        PULSE_STATE_PATH=str(root / "state"),
    )
    server_env.pop("PULSE_SERVER", None)
    log = root / "pulseaudio.log"
    with log.open("wb") as log_handle:
        process = subprocess.Popen(
            [
                "pulseaudio",
                "--daemonize=no",
                "-n",
                "-F",
                str(config),
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--log-target=stderr",
            ],
            env=server_env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
        )
    # Clients write a cookie and a runtime link unless told where: keep both in tmp.
    client_env = cli_env(
        PULSE_SERVER=f"unix:{sock}",
        PULSE_CLIENTCONFIG=str(client_conf),
        PULSE_COOKIE=str(root / "cookie"),
        XDG_RUNTIME_DIR=str(runtime),
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.skip(f"pulseaudio exited with {process.returncode}: {_tail(log)}")
            info = subprocess.run(
                ["pactl", "info"], env=client_env, capture_output=True, text=True, timeout=10
            )
            if info.returncode == 0 and "Default Source: synth.monitor" in info.stdout:
                break
            if time.monotonic() > deadline:
                pytest.skip(f"pulseaudio did not answer in {START_TIMEOUT_S:g} s: {_tail(log)}")
            time.sleep(0.2)
        yield PulseServer(socket=sock, client_env=client_env, log=log, pid=process.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a test may have frozen it
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(no log)"


def _devices(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command("devices"), env=env, capture_output=True, text=True, timeout=60
    )


def _require_pulse_device(pulse: PulseServer) -> None:
    listed = _devices(pulse.client_env)
    if listed.returncode != 0:
        pytest.skip(f"synesthete devices failed: {listed.stderr.strip()}")
    if not any(line.split()[1:2] == ["pulse"] for line in listed.stdout.splitlines()):
        pytest.skip(
            "PortAudio lists no ALSA 'pulse' device (apt: libasound2-plugins): "
            + listed.stdout.strip().replace("\n", "; ")
        )


class Player:
    """Plays a file into the null sink with paplay, over and over, until stopped."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self._path = path
        self._env = env
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self.plays = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Player:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._process = subprocess.Popen(
                ["paplay", "--device=synth", str(self._path)],
                env=self._env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._process.wait() != 0:
                self._stop.wait(0.2)  # the sink is gone: do not spin
            self.plays += 1


@pytest.mark.hardware
def test_devices_lists_pulse_when_the_server_runs(pulse: PulseServer) -> None:
    listed = _devices(pulse.client_env)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[1] for line in listed.stdout.splitlines() if line.strip()]
    if "pulse" not in names:
        pytest.skip("PortAudio lists no ALSA 'pulse' device (apt: libasound2-plugins)")
    assert "pulse" in names
    row = next(line for line in listed.stdout.splitlines() if line.split()[1] == "pulse")
    assert "ALSA" in row and " in," in row


@pytest.mark.hardware
def test_listen_through_pulseaudio_names_the_track(
    pulse: PulseServer, demo_library: DemoLibrary
) -> None:
    _require_pulse_device(pulse)
    n, start_s, seconds = 5, 6.0, 24.0
    excerpt = demo_library.excerpt(n, start_s=start_s, seconds=seconds)
    with Player(excerpt, pulse.client_env):
        result = subprocess.run(
            cli_command(
                "listen",
                "--index",
                str(demo_library.index),
                "--device",
                "pulse",
                "--no-tui",
                "--seconds",
                "14",
                "--threads",
                "1",
            ),
            env=pulse.client_env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    playing = [e for e in events if e["type"] == "now_playing"]
    assert playing, f"no now_playing from the pulse capture: {events} {result.stderr}"
    assert {e["file"] for e in events} == {"pulse"}
    titles = {e["track"]["title"] for e in playing}
    assert titles == {demo_library.titles[n]}, titles
    # The excerpt loops, so the reported position lies somewhere inside it.
    for event in playing:
        assert start_s - 1.0 <= event["offset_s"] <= start_s + seconds + 1.0, event


def _assert_missing_device_is_one_line(library: DemoLibrary, env: dict[str, str]) -> str:
    result = subprocess.run(
        cli_command(
            "listen", "--index", str(library.index), "--device", "nonexistent-xyz", "--no-tui"
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("synesthete: error:") and "nonexistent-xyz" in errors[0]
    assert result.stdout == ""
    return errors[0]


def test_listen_with_a_missing_device_is_one_line(demo_library: DemoLibrary) -> None:
    """Without a sound server PortAudio may find no input at all: still one line."""
    _assert_missing_device_is_one_line(demo_library, cli_env())


@pytest.mark.hardware
def test_listen_with_a_missing_device_is_one_line_under_pulse(
    pulse: PulseServer, demo_library: DemoLibrary
) -> None:
    """With devices present (and ALSA's plugins loaded) the error names the alternatives."""
    _require_pulse_device(pulse)
    error = _assert_missing_device_is_one_line(demo_library, pulse.client_env)
    assert "available inputs:" in error and "pulse (ALSA)" in error, error


# ---------------------------------------------------------------------------
# Input faults: the device goes away under a running `listen`


def _is(kind: str, **fields: object) -> Callable[[dict[str, object]], bool]:
    return lambda e: e["type"] == kind and all(e.get(k) == v for k, v in fields.items())


def _message_has(text: str) -> Callable[[dict[str, object]], bool]:
    return lambda e: e["type"] == "status" and text in str(e.get("message", ""))


@pytest.fixture
def own_pulse(tmp_path: Path) -> Iterator[PulseServer]:
    """A server of the test's own: these tests unload its sink, freeze it and kill it."""
    root = tmp_path / "pulse"
    root.mkdir()
    with run_pulse(root) as server:
        yield server


@pytest.mark.hardware
def test_listen_reports_a_vanished_device_reopens_it_and_gives_up_when_it_stays_gone(
    own_pulse: PulseServer, demo_library: DemoLibrary, tmp_path: Path
) -> None:
    """Unload the sink (PortAudio ends the stream), load it again, then kill the server."""
    _require_pulse_device(own_pulse)
    n = 2
    excerpt = demo_library.excerpt(n, start_s=4.0, seconds=30.0)
    reconnect_timeout_s = 6.0
    with Player(excerpt, own_pulse.client_env):
        listen = ListenProcess(
            demo_library,
            tmp_path / "events.jsonl",
            "--device",
            "pulse",
            "--reconnect-timeout",
            f"{reconnect_timeout_s:g}",
            env=own_pulse.client_env,
        )
        try:
            title = demo_library.titles[n]
            playing = listen.wait_for(
                "now_playing",
                lambda e: e["type"] == "now_playing" and e["track"]["title"] == title,
                timeout_s=120,
            )
            unloaded = own_pulse.pactl("unload-module", "module-null-sink")
            assert unloaded.returncode == 0, unloaded.stderr
            lost = listen.wait_for(
                "input lost", _is("status", input="lost"), after=playing, timeout_s=15
            )
            events = listen.events()
            assert "stopped delivering audio" in str(events[lost]["input_error"]), events[lost]
            assert events[lost]["give_up_in_s"] is not None
            # The identification ends with the input.
            assert any(_is("unknown", reason="input_lost")(e) for e in events[playing:lost])
            # Reopening fails while the sink is gone, and each failure is reported.
            listen.wait_for(
                "a failed attempt",
                _message_has("reconnect attempt 1 failed"),
                after=lost,
                timeout_s=15,
            )

            loaded = own_pulse.pactl("load-module", *NULL_SINK.split())
            assert loaded.returncode == 0, loaded.stderr
            own_pulse.pactl("set-default-source", "synth.monitor")
            back = listen.wait_for(
                "input back", _message_has("input back after"), after=lost, timeout_s=30
            )
            assert listen.events()[back]["input"] == "ok"
            again = listen.wait_for(
                "now_playing after the reconnect",
                lambda e: e["type"] == "now_playing" and e["track"]["title"] == title,
                after=back,
                timeout_s=60,
            )
            events = listen.events()
            stream_times = [float(e["t"]) for e in events[: again + 1]]
            assert stream_times == sorted(stream_times), "stream time went backwards"

            # Now the whole server dies and stays dead: listen must give up, not hang.
            killed_at = time.monotonic()
            os.kill(own_pulse.pid, signal.SIGKILL)
            try:
                listen.process.wait(timeout=reconnect_timeout_s + 30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"listen still running {reconnect_timeout_s + 30:g} s after the kill")
            took_s = time.monotonic() - killed_at
            assert listen.process.returncode == 2
            assert reconnect_timeout_s - 1 <= took_s <= reconnect_timeout_s + 20, took_s
            errors = [
                line
                for line in listen.stderr_tail().splitlines()
                if line.startswith("synesthete: error:")
            ]
            assert len(errors) == 1 and "not back after" in errors[0], errors
            final = listen.events()[-1]
            assert final["type"] == "status" and final["input"] == "failed", final
        finally:
            listen.close()


@pytest.mark.hardware
def test_listen_detects_a_stalled_device_recovers_and_gives_up_when_it_stays_frozen(
    own_pulse: PulseServer, demo_library: DemoLibrary, tmp_path: Path
) -> None:
    """A frozen sound server: PortAudio stops calling back, reports nothing, and blocks
    closing and opening streams for as long as the server stays frozen."""
    _require_pulse_device(own_pulse)
    n = 6
    excerpt = demo_library.excerpt(n, start_s=4.0, seconds=30.0)
    reconnect_timeout_s = 8.0
    title = demo_library.titles[n]
    with Player(excerpt, own_pulse.client_env):
        listen = ListenProcess(
            demo_library,
            tmp_path / "events.jsonl",
            "--device",
            "pulse",
            "--reconnect-timeout",
            f"{reconnect_timeout_s:g}",
            env=own_pulse.client_env,
        )
        try:
            first = listen.wait_for(
                "now_playing",
                lambda e: e["type"] == "now_playing" and e["track"]["title"] == title,
                timeout_s=120,
            )
            os.kill(own_pulse.pid, signal.SIGSTOP)
            try:
                lost = listen.wait_for(
                    "input lost", _is("status", input="lost"), after=first, timeout_s=15
                )
                events = listen.events()
                assert "no audio for" in str(events[lost]["input_error"]), events[lost]
                # Audio flowed before, so the short stall limit applied, not the start-up one.
                assert float(str(events[lost]["input_error"]).split()[3]) < 5.0, events[lost]
                time.sleep(2.0)  # frozen a while longer: the reconnect attempt waits on it
            finally:
                os.kill(own_pulse.pid, signal.SIGCONT)
            back = listen.wait_for(
                "input back", _message_has("input back after"), after=lost, timeout_s=30
            )
            listen.wait_for(
                "now_playing after the stall",
                lambda e: e["type"] == "now_playing" and e["track"]["title"] == title,
                after=back,
                timeout_s=60,
            )

            # Frozen for good: the streams stay stuck, and listen must still exit.
            frozen_at = time.monotonic()
            os.kill(own_pulse.pid, signal.SIGSTOP)
            try:
                listen.process.wait(timeout=reconnect_timeout_s + 30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"listen still running {reconnect_timeout_s + 30:g} s after the freeze")
            took_s = time.monotonic() - frozen_at
            assert listen.process.returncode == 2, listen.stderr_tail()
            assert took_s <= reconnect_timeout_s + 20, took_s
            errors = [
                line
                for line in listen.stderr_tail().splitlines()
                if line.startswith("synesthete: error:")
            ]
            assert len(errors) == 1 and "no audio for" in errors[0], errors
        finally:
            listen.close()


# ---------------------------------------------------------------------------
# The computer's own audio: the default sink's monitor (listen --system-audio)

OTHER_SINK = "module-null-sink sink_name=other sink_properties=device.description=other"


@pytest.mark.hardware
def test_system_audio_records_the_default_sinks_monitor_and_devices_marks_monitors(
    own_pulse: PulseServer, demo_library: DemoLibrary
) -> None:
    """The default *source* is another sink's silent monitor, so only the default sink's
    monitor (what paplay plays) can name the track: --system-audio must pick that one."""
    _require_pulse_device(own_pulse)
    loaded = own_pulse.pactl("load-module", *OTHER_SINK.split())
    assert loaded.returncode == 0, loaded.stderr
    assert own_pulse.pactl("set-default-source", "other.monitor").returncode == 0
    assert own_pulse.pactl("set-default-sink", "synth").returncode == 0

    listed = _devices(own_pulse.client_env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line for line in listed.stdout.splitlines() if line.startswith("  -")}
    assert "monitor of sink synth" in rows["synth.monitor"], listed.stdout
    assert "listen --system-audio records this" in rows["synth.monitor"], listed.stdout
    assert "monitor of sink other" in rows["other.monitor"], listed.stdout
    assert "system-audio" not in rows["other.monitor"], listed.stdout

    n, start_s, seconds = 7, 10.0, 24.0
    excerpt = demo_library.excerpt(n, start_s=start_s, seconds=seconds)
    with Player(excerpt, own_pulse.client_env):
        result = subprocess.run(
            cli_command(
                *("listen", "--index", str(demo_library.index), "--system-audio", "--no-tui"),
                *("--seconds", "14", "--threads", "1"),
            ),
            env=own_pulse.client_env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    playing = [e for e in events if e["type"] == "now_playing"]
    assert playing, f"no now_playing from the monitor: {events} {result.stderr}"
    assert {e["track"]["title"] for e in playing} == {demo_library.titles[n]}
    assert {e["file"] for e in events} == {"system audio (synth.monitor)"}


def test_system_audio_without_a_sound_server_is_one_line(demo_library: DemoLibrary) -> None:
    env = cli_env(PULSE_SERVER="unix:/nonexistent/pulse/native", PULSE_CLIENTCONFIG="/dev/null")
    result = subprocess.run(
        cli_command("listen", "--index", str(demo_library.index), "--system-audio", "--no-tui"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("synesthete: error:"), lines
    assert result.stdout == ""
