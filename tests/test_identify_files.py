"""What ``identify`` and ``index build`` say about the files they are given, through the CLI.

A damaged MP3 (real MPEG frames with junk over the middle) is one clear line
naming the file, what the header promised and where the MP3 decoder gave up;
CUE sheets give each input the file type its extension calls for.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import cli_command, cli_env
from fakes import make_tone_track

RATE_HZ = 44_100
TRACK_S = 12.0


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*map(str, args)),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an index of one MP3 track, that MP3)."""
    root = tmp_path_factory.mktemp("identify-files")
    good = root / "music" / "good.mp3"
    good.parent.mkdir()
    audio = make_tone_track(seed=3, duration_s=TRACK_S, sample_rate_hz=RATE_HZ)
    sf.write(good, audio, RATE_HZ, format="MP3", subtype="MPEG_LAYER_III")
    built = run("index", "build", "--index", root / "index", good.parent, "--quiet")
    assert built.returncode == 0, built.stderr
    return root / "index", good


def _damaged_copy(good: Path, folder: Path) -> Path:
    """The MP3 with 20 kB of seeded junk over its middle third."""
    data = bytearray(good.read_bytes())
    start = len(data) // 3
    junk = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    data[start : start + len(junk)] = junk
    folder.mkdir(parents=True, exist_ok=True)
    damaged = folder / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    return damaged


DAMAGE = re.compile(
    r"damaged\.mp3: truncated or corrupt audio data \(the header says 12\.0 s; "
    r"the MP3 decoder gave up after (\d+\.\d) s\)$"
)


def test_a_damaged_mp3_is_one_clear_line(library: tuple[Path, Path], tmp_path: Path) -> None:
    index, good = library
    damaged = _damaged_copy(good, tmp_path / "bad")

    done = run("identify", "--index", index, damaged)
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith(f"synesthete: error: {damaged}: "), line
    found = DAMAGE.search(line)
    assert found is not None, line
    assert 0.0 < float(found.group(1)) < TRACK_S
    assert "Unspecified internal error" not in line and "frame" not in line

    # The good file next to it still runs, and the bad one is still named.
    both = run("identify", "--index", index, good, damaged)
    assert both.returncode == 2
    assert '"type":"now_playing"' in both.stdout.replace(" ", "")
    assert [bool(DAMAGE.search(x)) for x in both.stderr.splitlines() if x.strip()] == [True]

    # index build skips it with the same reason, one line.
    built = run("index", "build", "--index", tmp_path / "index", good.parent, damaged.parent)
    assert built.returncode == 0, built.stderr
    skipped = [x for x in built.stderr.splitlines() if x.startswith("skipped ")]
    assert len(skipped) == 1 and DAMAGE.search(skipped[0]), built.stderr
    assert "Traceback" not in built.stderr + done.stderr + both.stderr


def test_cue_file_types_follow_the_extension(library: tuple[Path, Path], tmp_path: Path) -> None:
    """CUE knows WAVE, MP3, AIFF and BINARY: MPEG audio is MP3, AIFF is AIFF, and FLAC, Ogg
    and WAV are WAVE (the spec has no FLAC or Ogg type; WAVE is what players read)."""
    index, good = library
    audio, rate = sf.read(good, dtype="float32")
    inputs = {
        "a.mp3": ("MP3", "MPEG_LAYER_III", "MP3"),
        "b.flac": ("FLAC", "PCM_16", "WAVE"),
        "c.wav": ("WAV", "PCM_16", "WAVE"),
        "d.aiff": ("AIFF", "PCM_16", "AIFF"),
        "e.ogg": ("OGG", "VORBIS", "WAVE"),
        "F.AIF": ("AIFF", "PCM_16", "AIFF"),
    }
    paths = []
    for name, (fmt, subtype, _) in inputs.items():
        path = tmp_path / name
        sf.write(path, audio, rate, format=fmt, subtype=subtype)
        paths.append(path)
    done = run("identify", "--index", index, "--format", "cue", *paths)
    assert done.returncode == 0, done.stderr
    files = [line for line in done.stdout.splitlines() if line.startswith("FILE ")]
    assert files == [f'FILE "{tmp_path / name}" {kind}' for name, (*_, kind) in inputs.items()]
    # Every input was identified: a TRACK with the library's title under each FILE.
    assert done.stdout.count('TITLE "good"') == len(inputs)
