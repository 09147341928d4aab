"""Codecs libsndfile does not read, through PyAV: m4a (AAC and ALAC), WMA and video files.

ffmpeg (Debian ``ffmpeg``, installed by scripts/setup.sh) encodes excerpts of
the demo library's tracks into those formats, with tags; ``index build``
indexes them (tags read by mutagen) and skips the bad ones with a reason,
and ``identify`` names each against the demo library's FLAC originals.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DemoLibrary, build_index_cli, cli_command, cli_env

EXCERPT_S = 16.0
VIDEO_IN = ["-f", "lavfi", "-i", "testsrc=size=96x64:rate=10"]
# (file name, track, ffmpeg arguments after the audio input)
FORMATS = (
    ("aac.m4a", 0, ["-c:a", "aac", "-b:a", "128k"]),
    ("alac.m4a", 1, ["-c:a", "alac"]),
    ("windows.wma", 2, ["-c:a", "wmav2", "-b:a", "128k"]),
    ("clip.mp4", 3, [*VIDEO_IN, "-map", "1:v", "-map", "0:a", "-c:v", "mpeg4", "-c:a", "aac"]),
    (
        "clip.mkv",
        5,
        [*VIDEO_IN, "-map", "1:v", "-map", "0:a", "-c:v", "mpeg4", "-c:a", "libmp3lame"],
    ),
)


@dataclass(frozen=True)
class Encoded:
    music: Path
    files: dict[str, int]
    """File name -> demo track number."""
    bad: dict[str, str]
    """File name -> words its skip reason must hold."""


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def encoded(demo_library: DemoLibrary, tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (scripts/setup.sh installs it)")
    music = tmp_path_factory.mktemp("av-music")
    files = {}
    for name, n, codec in FORMATS:
        excerpt = demo_library.excerpt(n, start_s=4.0, seconds=EXCERPT_S)
        tags = ["-metadata", f"title={demo_library.titles[n]}"]
        tags += ["-metadata", f"artist={demo_library.artist(n)}"]
        _ffmpeg("-i", str(excerpt), *codec, *tags, "-t", f"{EXCERPT_S:g}", str(music / name))
        files[name] = n
    # Bad files: what they are, and the words of the reason.
    (music / "random.m4a").write_bytes(bytes(range(256)) * 64)
    _ffmpeg(*VIDEO_IN, "-t", "3", "-c:v", "mpeg4", str(music / "no-sound.mp4"))
    whole = (music / "aac.m4a").read_bytes()
    (music / "cut.m4a").write_bytes(whole[: len(whole) // 3])  # the index (moov) is at the end
    bad = {
        "random.m4a": "cannot decode",
        "no-sound.mp4": "no audio stream",
        "cut.m4a": "cannot decode",
    }
    return Encoded(music=music, files=files, bad=bad)


def test_index_build_takes_m4a_alac_wma_and_video_files_and_skips_bad_ones(
    encoded: Encoded, demo_library: DemoLibrary, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = build_index_cli(tmp_path / "index", encoded.music, "--report", str(report))
    assert "Traceback" not in run.stderr
    skipped = {Path(s["path"]).name: s["reason"] for s in json.loads(report.read_text())["skipped"]}
    assert set(skipped) == set(encoded.bad), skipped
    for name, words in encoded.bad.items():
        assert words in skipped[name], (name, skipped[name])
        assert f"skipped {encoded.music / name}: " in run.stderr
    listed = subprocess.run(
        cli_command("index", "list", "--index", str(tmp_path / "index"), "--format", "json"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    tracks = {Path(t["path"]).name: t for t in json.loads(listed.stdout)}
    assert set(tracks) == set(encoded.files), tracks
    for name, n in encoded.files.items():
        assert tracks[name]["title"] == demo_library.titles[n], tracks[name]
        assert tracks[name]["artist"] == demo_library.artist(n), tracks[name]
        assert tracks[name]["duration_s"] == pytest.approx(EXCERPT_S, abs=0.2), tracks[name]


def test_identify_names_each_format_and_a_video_against_the_flac_library(
    encoded: Encoded, demo_library: DemoLibrary
) -> None:
    paths = [str(encoded.music / name) for name in encoded.files]
    result = subprocess.run(
        cli_command("identify", "--index", str(demo_library.index), "--threads", "1", *paths),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    for name, n in encoded.files.items():
        named = {
            e["track"]["title"]
            for e in events
            if e["type"] == "now_playing" and Path(e["file"]).name == name
        }
        assert named == {demo_library.titles[n]}, (name, named)


def test_identify_reports_a_bad_m4a_in_one_line_and_goes_on(
    encoded: Encoded, demo_library: DemoLibrary
) -> None:
    good = encoded.music / "aac.m4a"
    bad = encoded.music / "random.m4a"
    result = subprocess.run(
        cli_command(
            *("identify", "--index", str(demo_library.index), "--threads", "1"),
            *(str(bad), str(good)),
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"synesthete: error: {bad}: "), lines
    assert any(json.loads(line)["type"] == "now_playing" for line in result.stdout.splitlines())
