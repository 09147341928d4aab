"""The index progress bar: files, hours of audio and the rate, rendered into a captured console."""

from __future__ import annotations

import io

from fakes import FakeEncoder, write_good_library
from rich.console import Console

from synesthete.clients.progress import RichProgress, audio_text
from synesthete.index.builder import build_index
from synesthete.index.config import IndexConfig


def test_audio_text_gives_hours_then_the_rate():
    assert audio_text(0.0, 0.0) == "0.00 h of audio"
    assert audio_text(5400.0, 0.5) == "1.50 h of audio"
    assert audio_text(5400.0, 36.0) == "1.50 h of audio, 150x realtime"


def test_the_bar_counts_files_and_hours_of_audio(tmp_path):
    files = write_good_library(tmp_path / "music", duration_s=9.0)
    out = io.StringIO()
    console = Console(file=out, color_system=None, width=200, force_terminal=False)
    with RichProgress(console=console) as progress:
        report = build_index(
            tmp_path / "index",
            [tmp_path / "music"],
            encoder=FakeEncoder(),
            config=IndexConfig(),
            progress=progress,
        )
    text = out.getvalue()
    assert f"{len(files)}/{len(files)} files" in text
    assert f"{report.audio_s / 3600.0:.2f} h of audio" in text
    assert f"{report.windows} windows" in text
