"""A rich progress bar for ``index build``/``add`` (the builder knows nothing of rich)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """Implements the builder's progress callbacks on stderr."""

    def __init__(self, *, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files · {task.fields[audio]} · {task.fields[windows]} windows"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}", style="dim"),
            console=console if console is not None else Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(
            "index", total=None, windows=0, audio=audio_text(0.0, 0.0), current=""
        )
        self._windows = 0
        self._audio_s = 0.0
        self._started = time.monotonic()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def on_start(self, total_files: int) -> None:
        self._started = time.monotonic()
        self._progress.update(self._task, total=total_files)

    def on_file(self, path: Path, status: str) -> None:
        self._progress.update(self._task, advance=1, current=path.name[:40])

    def on_windows(self, n: int) -> None:
        self._windows += n
        self._progress.update(self._task, windows=self._windows)

    def on_audio(self, seconds: float) -> None:
        """One more indexed file of ``seconds``: hours of audio done and the rate."""
        self._audio_s += seconds
        elapsed_s = time.monotonic() - self._started
        self._progress.update(self._task, audio=audio_text(self._audio_s, elapsed_s))


def audio_text(audio_s: float, elapsed_s: float) -> str:
    """``1.25 h of audio, 143x realtime`` (the rate once a second has passed)."""
    done = f"{audio_s / 3600.0:.2f} h of audio"
    if elapsed_s < 1.0:
        return done
    return f"{done}, {audio_s / elapsed_s:.0f}x realtime"
