"""The rich live view end to end: ``listen`` (with its TUI) in a detached tmux pane.

tmux runs on a private socket in ``tmp_path`` so no other tmux server is
touched; ``capture-pane -p`` reads the screen as text, which the test polls
until the panels show the replayed track.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DemoLibrary, cli_command, cli_env

SESSION = "synesthete-tui"
TIMEOUT_S = 120.0


class Tmux:
    """A tmux server of our own (``-S`` socket) running one detached session."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            env=cli_env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", SESSION).stdout

    def pane_dead(self) -> bool:
        shown = self("display-message", "-p", "-t", SESSION, "#{pane_dead}", check=False)
        return shown.stdout.strip() == "1"


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt: tmux)")
    server = Tmux(tmp_path / "tmux.sock")
    yield server
    server("kill-server", check=False)


@pytest.mark.parametrize(("columns", "rows"), [(120, 50), (80, 24)])
def test_listen_tui_in_tmux(
    tmux: Tmux, demo_library: DemoLibrary, tmp_path: Path, columns: int, rows: int
) -> None:
    """Full layout on a big terminal, the compact one on 80x24: every panel shows in both."""
    n = 4
    excerpt = demo_library.excerpt(n, start_s=5.0, seconds=30.0)
    command = cli_command(
        "listen",
        "--index",
        str(demo_library.index),
        "--input",
        str(excerpt),
        "--realtime",
        "--threads",
        "1",
    )
    # remain-on-exit keeps the last screen readable should listen end early.
    tmux(
        "new-session",
        "-d",
        "-s",
        SESSION,
        "-x",
        str(columns),
        "-y",
        str(rows),
        shlex.join(command),
        ";",
        "set-option",
        "-t",
        SESSION,
        "remain-on-exit",
        "on",
    )
    title = demo_library.titles[n]
    artist = demo_library.artist(n)
    deadline = time.monotonic() + TIMEOUT_S
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if _complete(screen, title) or tmux.pane_dead():
            break
        time.sleep(0.5)
    (tmp_path / "screen.txt").write_text(screen)
    assert _complete(screen, title), f"the live view never showed {title!r}:\n{screen}"

    lines = screen.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert len(lines) <= rows
    assert any(f"{title} — {artist}" in line and "track" in line for line in lines), screen
    confidence = re.search(r"confidence\s.*?(\d\.\d\d)", screen)
    assert confidence is not None and 0.5 <= float(confidence.group(1)) <= 1.0, screen
    assert re.search(r"position\s+\d+:\d\d / 0:40", screen), screen
    for panel in ("now playing", "candidates", "sounds like", "status"):
        assert panel in screen, f"no {panel!r} panel:\n{screen}"
    assert any(line.count(title) and re.search(r"\d\.\d{3}", line) for line in lines), (
        f"no candidate row with distances for {title!r}:\n{screen}"
    )
    for label in ("input", "level", "xruns", "latency", "clients"):
        assert label in screen, f"status shows no {label}:\n{screen}"
    assert "events" in screen and f"▶ {title}" in screen, screen


def _complete(screen: str, title: str) -> bool:
    """The now-playing panel names the track and a candidates row lists it with distances.

    The view redraws at most 10 times a second, so a capture can fall between
    the now_playing and the candidates event of one window: poll for both.
    """
    lines = screen.splitlines()
    now_playing = any(title in line and "track" in line for line in lines)
    candidate = any(title in line and re.search(r"\d\.\d{3}", line) for line in lines)
    panels = all(name in screen for name in ("confidence", "sounds like", "status"))
    return now_playing and candidate and panels
