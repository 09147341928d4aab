"""A messy music folder through the real CLI: every good track indexed, every bad file named.

The folder mixes good tracks (odd rates and channel counts, a FLAC under an
``.mp3`` name, a file name that is not UTF-8) with empty, truncated, corrupt,
non-finite, silent, too short, unreadable and unopenable files, symlink loops
and a duplicate. ``synesthete index build`` must finish with status 0, print one
``skipped PATH: REASON`` line per bad file and no traceback, write each reason
into ``--report`` JSON, and index every good track exactly once.
docs/bad-input.md lists the same cases and outcomes.

Unreadable files: as root, ``chmod 000`` does not stop reads, so the CLI runs
under ``setpriv`` with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped from its
bounding set, which makes root obey file modes; where that is impossible the
one test about it is skipped.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from conftest import cli_command, cli_env

from synesthete.index.store import Library
from synesthete.stream.synth import synth_track

TRACK_S = 10.0
CLI_TIMEOUT_S = 300
NON_UTF8_NAME = b"caf\xe9 cr\xe8me.wav"  # Latin-1 bytes: not valid UTF-8
BAD_NON_UTF8_NAME = b"broken \xff.wav"


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Messy:
    root: Path
    music: Path
    index: Path
    report: dict[str, object]
    run: Run
    good: dict[str, Path]
    bad: dict[str, Path]
    unreadable_checked: bool
    """Whether the run could make a chmod 000 file unreadable (see the module docstring)."""
    prefix: list[str]


def write_track(
    path: Path,
    audio: npt.NDArray[np.float32],
    rate_hz: int,
    *,
    fmt: str | None = None,
    subtype: str | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # bytes, so soundfile opens names that are not UTF-8 too
    sf.write(os.fsencode(path), audio, rate_hz, format=fmt, subtype=subtype)
    return path


def channels(mono: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.float32]:
    gains = np.linspace(1.0, 0.6, n, dtype=np.float32)
    return (mono[:, None] * gains[None, :]).astype(np.float32)


def write_good(music: Path) -> dict[str, Path]:
    good: dict[str, Path] = {}
    rate = 22_050
    good["flac"] = write_track(
        music / "Album" / "01 first.flac",
        channels(synth_track(seed=1, duration_s=TRACK_S, sample_rate_hz=rate), 2),
        rate,
    )
    good["8k_mono"] = write_track(
        music / "Album" / "02 eight kilohertz mono.wav",
        synth_track(seed=2, duration_s=TRACK_S, sample_rate_hz=8_000),
        8_000,
        subtype="PCM_16",
    )
    good["96k_6ch"] = write_track(
        music / "Album" / "03 ninety-six kilohertz six channels.wav",
        channels(synth_track(seed=3, duration_s=TRACK_S, sample_rate_hz=96_000), 6),
        96_000,
        subtype="PCM_16",
    )
    good["flac_named_mp3"] = write_track(
        music / "Album" / "04 really a flac.mp3",
        synth_track(seed=4, duration_s=TRACK_S, sample_rate_hz=rate),
        rate,
        fmt="FLAC",
        subtype="PCM_16",
    )
    good["non_utf8_name"] = write_track(
        music / "Album" / os.fsdecode(NON_UTF8_NAME),
        synth_track(seed=5, duration_s=TRACK_S, sample_rate_hz=rate),
        rate,
    )
    # A folder link back up: the walk enters each real folder once.
    (music / "Album" / "back to top").symlink_to("..", target_is_directory=True)
    return good


def write_bad(folder: Path, *, unreadable: bool) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rate = 22_050
    bad: dict[str, Path] = {}
    bad["empty"] = folder / "empty.wav"
    bad["empty"].write_bytes(b"")
    flac = io.BytesIO()
    music = synth_track(seed=20, duration_s=TRACK_S, sample_rate_hz=rate)
    sf.write(flac, music, rate, format="FLAC")
    bad["truncated"] = folder / "truncated.flac"
    bad["truncated"].write_bytes(flac.getvalue()[: len(flac.getvalue()) // 3])
    bad["corrupt_header"] = folder / "corrupt header.wav"
    bad["corrupt_header"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    bad["random_bytes"] = folder / "random bytes.ogg"
    bad["random_bytes"].write_bytes(np.random.default_rng(7).bytes(50_000))
    bad["text_named_wav"] = folder / "notes.wav"
    bad["text_named_wav"].write_text("track list, not audio\n" * 40, encoding="utf-8")
    nan = synth_track(seed=21, duration_s=TRACK_S, sample_rate_hz=rate)
    nan[rate * 1 : rate * 1 + 10] = np.nan
    bad["nan"] = write_track(folder / "nan.wav", nan, rate, subtype="FLOAT")
    inf = channels(synth_track(seed=22, duration_s=TRACK_S, sample_rate_hz=rate), 2)
    inf[int(rate * 2.5), 1] = np.inf
    bad["inf"] = write_track(folder / "inf.wav", inf, rate, subtype="FLOAT")
    bad["silence"] = write_track(folder / "silence.flac", np.zeros(rate * 8, np.float32), rate)
    hiss = np.random.default_rng(8).uniform(-1e-4, 1e-4, rate * 8).astype(np.float32)
    bad["near_silence"] = write_track(folder / "hiss.wav", hiss, rate, subtype="FLOAT")
    bad["short"] = write_track(
        folder / "short.wav", synth_track(seed=23, duration_s=2.0, sample_rate_hz=rate), rate
    )
    bad["self_symlink"] = folder / "loop.wav"
    bad["self_symlink"].symlink_to("loop.wav")
    bad["broken_symlink"] = folder / "gone.flac"
    bad["broken_symlink"].symlink_to(folder / "missing.flac")
    bad["fifo"] = folder / "pipe.wav"
    os.mkfifo(bad["fifo"])
    bad["bad_non_utf8_name"] = folder / os.fsdecode(BAD_NON_UTF8_NAME)
    bad["bad_non_utf8_name"].write_bytes(b"")
    if unreadable:
        bad["unreadable"] = write_track(
            folder / "no permission.wav",
            synth_track(seed=24, duration_s=TRACK_S, sample_rate_hz=rate),
            rate,
        )
        bad["unreadable"].chmod(0)
    return bad


EXPECTED_REASONS: dict[str, str] = {
    "empty": "empty file",
    "truncated": "truncated or corrupt audio data (the header says 10.0 s;",
    "corrupt_header": "cannot decode:",
    "random_bytes": "not a recognised audio format (or corrupt header)",
    "text_named_wav": "not a recognised audio format (or corrupt header)",
    "nan": "contains NaN or infinite samples (first at 1.00 s); not indexed, re-export the file",
    "inf": "contains NaN or infinite samples (first at 2.50 s); not indexed, re-export the file",
    "silence": "silent (digital silence; threshold -60 dBFS)",
    "near_silence": "silent (peak -7",
    "short": "too short (2.00 s; at least 4 s needed)",
    "self_symlink": "symlink loop (the link points back to itself)",
    "broken_symlink": "broken symlink (its target does not exist)",
    "fifo": "not a regular file (a device, pipe or socket)",
    "bad_non_utf8_name": "empty file",
    "duplicate": "same content as ",
    "unreadable": "cannot read: Permission denied",
}
"""Bad case -> the start of its reason in the report."""


def unprivileged_prefix(tmp: Path) -> list[str] | None:
    """A command prefix under which a chmod 000 file cannot be read; None if there is none."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = tmp / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    result = subprocess.run(
        [*prefix, sys.executable, "-c", f"open({str(probe)!r}, 'rb')"],
        capture_output=True,
        timeout=60,
    )
    probe.unlink()
    return prefix if b"PermissionError" in result.stderr else None


def run_cli(prefix: list[str], *args: str) -> Run:
    result = subprocess.run(
        [*prefix, *cli_command(*args)],
        env=cli_env(),
        capture_output=True,
        timeout=CLI_TIMEOUT_S,
    )
    # Paths that are not UTF-8 come out as their raw bytes (surrogateescape on stderr).
    return Run(
        returncode=result.returncode,
        stdout=result.stdout.decode("utf-8", "surrogateescape"),
        stderr=result.stderr.decode("utf-8", "surrogateescape"),
    )


def skipped_by_path(report: dict[str, object]) -> dict[str, str]:
    entries = report["skipped"]
    assert isinstance(entries, list)
    return {entry["path"]: entry["reason"] for entry in entries}


def assert_no_traceback(run: Run) -> None:
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    for line in run.stderr.splitlines():
        assert line.startswith(("skipped ", "synesthete: error: ")), line


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Messy:
    root = tmp_path_factory.mktemp("messy")
    prefix = unprivileged_prefix(root)
    music = root / "music"
    good = write_good(music)
    bad = write_bad(music / "Bad", unreadable=prefix is not None)
    bad["duplicate"] = music / "Bad" / "first again.flac"
    shutil.copyfile(good["flac"], bad["duplicate"])
    (music / "cover.jpg").write_bytes(b"\xff\xd8 not audio: ignored, not reported")
    index = root / "index"
    report_path = root / "report.json"
    run = run_cli(
        prefix or [],
        "index",
        "build",
        "--index",
        str(index),
        "--report",
        str(report_path),
        "--quiet",
        "--threads",
        "1",
        str(music),
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(report_path.read_bytes().decode("utf-8"))  # strict UTF-8
    return Messy(
        root=root,
        music=music,
        index=index,
        report=report,
        run=run,
        good=good,
        bad=bad,
        unreadable_checked=prefix is not None,
        prefix=prefix or [],
    )


def test_build_finishes_with_one_line_per_bad_file_and_no_traceback(messy):
    assert_no_traceback(messy.run)
    lines = messy.run.stderr.splitlines()
    assert len(lines) == len(messy.bad)
    for path in messy.bad.values():
        reason = skipped_by_path(messy.report)[str(path)]
        # stderr shows undecodable name bytes as \udcXX (Python's backslashreplace)
        shown = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
        assert f"skipped {shown}: {reason}" in lines
    summary = messy.run.stdout.strip()
    assert "\n" not in summary
    assert f"indexed {len(messy.good)} files" in summary
    assert f"skipped {len(messy.bad)}" in summary


def test_every_good_track_is_indexed_once(messy):
    run = run_cli([], "index", "stats", "--index", str(messy.index), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["tracks"] == len(messy.good)
    indexed = {t["path"] for t in messy.report["indexed"]}
    assert indexed == {str(p) for p in messy.good.values()}
    with Library.open(messy.index, verify=True) as lib:
        by_path = {r.path: r for r in lib.records()}
        assert set(by_path) == {str(p) for p in messy.good.values()}
        for path in messy.good.values():
            record = by_path[str(path)]
            # Downmixed and resampled to 16 kHz, whatever the source rate and layout.
            assert record.duration_s == pytest.approx(TRACK_S, abs=0.01)
            assert record.window_count == 1 + int((TRACK_S - 4.0) / 0.5)


@pytest.mark.parametrize("case", sorted(EXPECTED_REASONS))
def test_each_bad_file_has_a_specific_reason(messy, case):
    if case == "unreadable" and not messy.unreadable_checked:
        pytest.skip(
            "running as root and CAP_DAC_OVERRIDE cannot be dropped (no setpriv or no "
            "CAP_SETPCAP): chmod 000 does not make a file unreadable here"
        )
    path = messy.bad[case]
    reason = skipped_by_path(messy.report)[str(path)]
    assert reason.startswith(EXPECTED_REASONS[case])
    assert "\n" not in reason
    if case == "duplicate":
        assert reason == f"same content as {messy.good['flac']}"


def test_every_skipped_entry_is_an_expected_bad_file(messy):
    assert set(skipped_by_path(messy.report)) == {str(p) for p in messy.bad.values()}


def test_names_that_are_not_utf8_keep_their_exact_bytes(messy):
    raw = (messy.root / "report.json").read_bytes()
    raw.decode("utf-8")  # the report stays valid UTF-8: undecodable bytes as \udcXX escapes
    assert b"\\udce9" in raw and b"\\udcff" in raw
    indexed = [os.fsencode(t["path"]) for t in messy.report["indexed"]]
    assert os.fsencode(messy.music / "Album") + b"/" + NON_UTF8_NAME in indexed
    skipped = [os.fsencode(path) for path in skipped_by_path(messy.report)]
    assert os.fsencode(messy.music / "Bad") + b"/" + BAD_NON_UTF8_NAME in skipped

    path = messy.good["non_utf8_name"]
    with Library.open(messy.index) as lib:
        record = next(r for r in lib.records() if r.path == str(path))
        info = lib.info(record.id)
    assert Path(record.path).exists()  # the exact name, usable to open the file
    # Titles and event paths are text for people and UTF-8 protocols.
    assert record.title == "caf\ufffd cr\ufffdme"
    assert info.path.encode("utf-8").endswith("caf\ufffd cr\ufffdme.wav".encode())
    gen = messy.index / (messy.index / "CURRENT").read_text().strip()
    connection = sqlite3.connect(f"{(gen / 'library.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        stored = connection.execute("SELECT path FROM tracks WHERE id = ?", (record.id,))
        assert stored.fetchone()[0] == os.fsencode(path)  # a BLOB with the exact bytes
    finally:
        connection.close()


def test_add_over_the_same_folder_skips_the_same_files_again(messy, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(messy.index, index, symlinks=True)
    newcomer = write_track(
        messy.root / "later" / "05 newcomer.ogg",
        synth_track(seed=6, duration_s=TRACK_S, sample_rate_hz=22_050),
        22_050,
    )
    report_path = tmp_path / "add.json"
    run = run_cli(
        messy.prefix,
        "index",
        "add",
        "--index",
        str(index),
        "--report",
        str(report_path),
        "--quiet",
        "--threads",
        "1",
        str(messy.music),
        str(newcomer),
    )
    assert run.returncode == 0, run.stderr
    assert_no_traceback(run)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert [t["path"] for t in report["indexed"]] == [str(newcomer)]
    assert set(report["unchanged"]) == {str(p) for p in messy.good.values()}
    assert skipped_by_path(report) == skipped_by_path(messy.report)
    assert report["total_tracks"] == len(messy.good) + 1


def test_a_folder_of_only_bad_files_fails_in_one_line_after_naming_each(messy, tmp_path):
    bad = write_bad(tmp_path / "bad", unreadable=messy.unreadable_checked)
    report_path = tmp_path / "report.json"
    run = run_cli(
        messy.prefix,
        "index",
        "build",
        "--index",
        str(tmp_path / "index"),
        "--report",
        str(report_path),
        "--quiet",
        str(tmp_path / "bad"),
    )
    assert run.returncode == 2
    assert_no_traceback(run)
    *skipped_lines, error = run.stderr.splitlines()
    assert error.startswith("synesthete: error: none of the ")
    assert "could be indexed (first: " in error
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["generation"] is None and report["indexed"] == []
    assert set(skipped_by_path(report)) == {str(p) for p in bad.values()}
    assert len(skipped_lines) == len(bad)
    assert not (tmp_path / "index" / "CURRENT").exists()


# -- a 3 hour file ------------------------------------------------------------------

LONG_HOURS = 3.0
LONG_RATE_HZ = 8_000
PATTERN_S = 60.0


def write_long_flac(path: Path, *, hours: float) -> Path:
    """A long mono FLAC written a minute at a time (never held in memory whole)."""
    pattern = synth_track(seed=31, duration_s=PATTERN_S, sample_rate_hz=LONG_RATE_HZ)
    with sf.SoundFile(path, "w", LONG_RATE_HZ, 1, format="FLAC", subtype="PCM_16") as out:
        for minute in range(round(hours * 3600 / PATTERN_S)):
            out.write(pattern * np.float32(0.5 + 0.5 * (minute % 7) / 7))
    return path


def build_peak_rss_mb(index: Path, audio: Path) -> tuple[float, Run]:
    """Peak resident memory of an ``index build`` in a fresh interpreter, in MB."""
    script = (
        "import resource, sys\n"
        "from synesthete.clients.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    args = ["index", "build", "--index", str(index), "--quiet", "--threads", "1"]
    result = subprocess.run(
        [sys.executable, "-c", script, *args, "--index-hop", "2", str(audio)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("maxrss_kb"))
    return int(line.split()[1]) / 1024, Run(result.returncode, result.stdout, result.stderr)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_three_hour_file_is_indexed_in_bounded_memory(tmp_path):
    """3 h at 8 kHz: decoding it whole at 16 kHz float32 would take 691 MB on its own.

    Measured here: peak RSS 412 MB for a 6 min file, 582 MB at 1 h and 574 MB
    at 3 h (the encoder's working set, not the audio); the build took ~36 s.
    """
    short = write_long_flac(tmp_path / "six minutes.flac", hours=0.1)
    long = write_long_flac(tmp_path / "three hours.flac", hours=LONG_HOURS)
    short_mb, _ = build_peak_rss_mb(tmp_path / "short-index", short)
    long_mb, run = build_peak_rss_mb(tmp_path / "long-index", long)
    assert "indexed 1 file " in run.stdout
    with Library.open(tmp_path / "long-index") as lib:
        (record,) = lib.records()
        assert record.duration_s == pytest.approx(LONG_HOURS * 3600, abs=0.01)
        assert record.window_count == 1 + int((LONG_HOURS * 3600 - 4.0) / 2.0)
    decoded_mb = LONG_HOURS * 3600 * 16_000 * 4 / 2**20
    assert long_mb - short_mb < decoded_mb / 2, (short_mb, long_mb)
