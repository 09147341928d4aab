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
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DemoLibrary, cli_command, cli_env

SINK_RATE_HZ = 44_100
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class PulseServer:
    socket: Path
    client_env: dict[str, str]
    log: Path


def _missing_tools() -> list[str]:
    return [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    missing = _missing_tools()
    if missing:
        pytest.skip(f"PulseAudio tools missing: {', '.join(missing)} (apt: pulseaudio-utils)")
    root = tmp_path_factory.mktemp("pulse")
    runtime = root / "runtime"
    runtime.mkdir(mode=0o700)
    (root / "home").mkdir()
    sock = runtime / "native"
    config = root / "server.pa"
    config.write_text(
        f"load-module module-null-sink sink_name=synth rate={SINK_RATE_HZ} "
        "sink_properties=device.description=synth\n"
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
        yield PulseServer(socket=sock, client_env=client_env, log=log)
    finally:
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
            self._process.wait()
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
