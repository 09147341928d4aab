"""Shared fixtures: a small tagged demo library, indexed once per session through the CLI.

The live-client tests (PulseAudio capture, Chromium overlay, tmux TUI, watch)
replay excerpts of these tracks through ``synesthete listen`` subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from synesthete.stream.synth import synth_track, synth_track_title

DEMO_RATE_HZ = 22_050
DEMO_TRACKS = 8
DEMO_TRACK_S = 40.0
DEMO_ARTIST = "Test Ensemble"
DEMO_ALBUM = "Synesthete Tests"
# Torch threads per CLI subprocess: the machines these tests run on are small and shared.
CLI_THREADS = "1"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]


@dataclass(frozen=True)
class DemoLibrary:
    """Synthesized, tagged FLAC tracks and their index (built with ``synesthete index build``)."""

    root: Path
    index: Path
    titles: tuple[str, ...]
    rate_hz: int

    def audio(self, n: int) -> npt.NDArray[np.float32]:
        """Track ``n`` exactly as indexed (the synthesizer is deterministic). Shape [samples]."""
        return synth_track(seed=n, duration_s=DEMO_TRACK_S, sample_rate_hz=self.rate_hz)

    def artist(self, n: int) -> str:
        return f"{DEMO_ARTIST} {n + 1}"

    def excerpt(
        self, n: int, *, start_s: float, seconds: float, rate_hz: int | None = None
    ) -> Path:
        """Write ``seconds`` of track ``n`` from ``start_s`` as a 16-bit WAV; returns its path.

        ``rate_hz`` other than the library rate writes a resampled stereo file,
        as a sound card would deliver it.
        """
        audio = self.audio(n)
        begin = int(start_s * self.rate_hz)
        clip = audio[begin : begin + int(seconds * self.rate_hz)]
        rate = self.rate_hz
        if rate_hz is not None and rate_hz != self.rate_hz:
            import soxr

            clip = soxr.resample(clip, self.rate_hz, rate_hz).astype(np.float32)
            clip = np.stack([clip, clip], axis=1)
            rate = rate_hz
        path = self.root / "excerpts" / f"track{n}-{start_s:g}s-{seconds:g}s-{rate}Hz.wav"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            sf.write(path, clip, rate, subtype="PCM_16")
        return path


def _write_tagged_flac(path: Path, audio: npt.NDArray[np.float32], **tags: str) -> None:
    from mutagen.flac import FLAC

    sf.write(path, audio, DEMO_RATE_HZ, format="FLAC", subtype="PCM_16")
    flac = FLAC(path)  # type: ignore[no-untyped-call]
    for key, value in tags.items():
        flac[key] = value
    flac.save()


def cli_command(*args: str) -> list[str]:
    """``synesthete ARGS...`` as a subprocess command line (this interpreter, no PATH lookup)."""
    return [sys.executable, "-m", "synesthete.clients.cli", *args]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for CLI subprocesses: unbuffered, few threads."""
    env = dict(os.environ)
    env.update(
        # Never the user's config file; the session fixture ``no_user_config`` sets an empty
        # one, and a test that wants a file passes XDG_CONFIG_HOME or --config itself.
        XDG_CONFIG_HOME=os.environ.get("XDG_CONFIG_HOME", "/nonexistent-synesthete-config"),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=CLI_THREADS,
        MKL_NUM_THREADS=CLI_THREADS,
    )
    env.update(extra)
    return env


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child that a test stops with Ctrl-C (SIGINT).

    A shell starts background jobs with SIGINT ignored, and an ignored signal
    stays ignored across fork and exec; Python then installs no
    KeyboardInterrupt handler. Restoring the default makes the child react as
    it does when started from a terminal, however the test run was started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def build_index_cli(index: Path, music: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``synesthete index build --index INDEX MUSIC --quiet [EXTRA...]``, as a user runs it;
    fails the test on a non-zero exit, else returns the run (its stderr names skipped files)."""
    return subprocess.run(
        cli_command("index", "build", "--index", str(index), str(music), "--quiet", *extra),
        env=cli_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )


class ListenProcess:
    """``synesthete listen --no-tui --jsonl EVENTS --threads 1 ARGS`` in the background, its
    events read back from the file. stdout and stderr go to files beside it, never to a pipe
    nobody reads (PortAudio's ALSA messages could fill one)."""

    def __init__(
        self, library: DemoLibrary, events: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.events_path = events
        self.stderr_path = events.with_suffix(".stderr")
        self.stdout_path = events.with_suffix(".stdout")
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.process = subprocess.Popen(
                cli_command(
                    "listen", "--index", str(library.index), "--no-tui", "--jsonl", str(events),
                    "--threads", "1", *args,
                ),
                env=cli_env() if env is None else env,
                stdout=out,
                stderr=err,
            )  # fmt: skip

    def events(self) -> list[dict[str, object]]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text(encoding="utf-8").splitlines()
        # The last line may be half written.
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_for(
        self,
        what: str,
        predicate: Callable[[dict[str, object]], bool],
        *,
        after: int = 0,
        timeout_s: float,
    ) -> int:
        """Index of the first event from ``after`` on that matches; fails on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        while True:
            events = self.events()
            for i in range(after, len(events)):
                if predicate(events[i]):
                    return i
            if self.process.poll() is not None:
                pytest.fail(
                    f"listen exited ({self.process.returncode}) before {what}: "
                    f"{self.stderr_tail()} | events: {events[after:][-5:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout_s:g} s; events: {events[after:][-5:]}")
            time.sleep(0.1)

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def free_port() -> int:
    """A localhost TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def no_user_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Neither in-process ``main()`` calls nor CLI subprocesses (``cli_env`` copies
    ``os.environ``) read the developer's ``~/.config/synesthete/config.toml``: the config
    home is an empty temporary folder for the whole session. Autouse and session-scoped,
    so it is in place before the session fixtures run the CLI."""
    home = tmp_path_factory.mktemp("xdg-config")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def demo_library(tmp_path_factory: pytest.TempPathFactory) -> DemoLibrary:
    root = tmp_path_factory.mktemp("demo-library")
    music = root / "music"
    music.mkdir()
    titles = []
    for n in range(DEMO_TRACKS):
        title = synth_track_title(n)
        audio = synth_track(seed=n, duration_s=DEMO_TRACK_S, sample_rate_hz=DEMO_RATE_HZ)
        _write_tagged_flac(
            music / f"{n:02d}.flac",
            audio,
            title=title,
            artist=f"{DEMO_ARTIST} {n + 1}",
            album=DEMO_ALBUM,
        )
        titles.append(title)
    index = root / "index"
    build_index_cli(index, music)
    return DemoLibrary(root=root, index=index, titles=tuple(titles), rate_hz=DEMO_RATE_HZ)


def chromium_path() -> str | None:
    """Debian's chromium (or ``$SYNESTHETE_CHROMIUM``), driven by playwright through
    ``executable_path``; ``playwright install`` is never needed."""
    candidates = [os.environ.get("SYNESTHETE_CHROMIUM"), "/usr/bin/chromium"]
    candidates.append(shutil.which("chromium"))
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the overlay tests; skipped without playwright or chromium."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip: the [dev] extra)"
    )
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (apt: chromium)")
    with sync_api.sync_playwright() as playwright:
        # headless=True makes playwright pass --headless to the Debian binary.
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Listener:
    """``synesthete listen --input FILE --realtime --serve 127.0.0.1:PORT --no-tui`` (the
    overlay tests drive these; ``listeners`` kills the ones a test started)."""

    def __init__(
        self,
        library: DemoLibrary | Path,
        excerpt: Path,
        port: int,
        logs: Path,
        *,
        token: str | None = None,
        loop: bool = False,
    ) -> None:
        index = library if isinstance(library, Path) else library.index
        self.port = port
        self.stdout = logs / f"listen-{port}-{excerpt.stem}.out"
        self.stderr = self.stdout.with_suffix(".err")
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                cli_command(
                    "listen",
                    "--index",
                    str(index),
                    "--input",
                    str(excerpt),
                    "--realtime",
                    "--serve",
                    f"127.0.0.1:{port}",
                    "--no-tui",
                    "--threads",
                    "1",
                    *(() if token is None else ("--token", token)),
                    *(("--loop",) if loop else ()),
                ),
                env=cli_env(),
                stdout=out,
                stderr=err,
            )

    @property
    def overlay(self) -> str:
        return f"http://127.0.0.1:{self.port}/overlay"

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"listen exited early: {self.stderr.read_text()}")
            try:
                with urllib.request.urlopen(self.overlay, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"listen did not serve {self.overlay} in {timeout_s:g} s")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.kill()
