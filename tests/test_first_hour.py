"""A new user's first hour (issue 16): the CLI's rough edges, through real subprocesses.

Every test runs ``synesthete ...`` as a user would (``cli_command``), holds
ports with real sockets, and parses machine-readable output with ``json`` and
``csv``, as another tool would.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import DemoLibrary, cli_command, cli_env, free_port

from synesthete.clients.cli import build_parser

EXCERPT_S = 10.0
ROOT = Path(__file__).resolve().parents[1]


def run(
    *args: str | Path, timeout_s: float = 300, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """``synesthete ARGS`` in a subprocess; never raises on a non-zero exit."""
    return subprocess.run(
        cli_command(*map(str, args)),
        env=cli_env(),
        capture_output=True,
        text=stdin is None,
        input=stdin,
        timeout=timeout_s,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A localhost port that another program is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


# ---------------------------------------------------------------- 2. a busy port


def test_listen_on_a_busy_port_is_one_line_and_status_2(
    demo_library: DemoLibrary, held_port: int, tmp_path: Path
) -> None:
    excerpt = demo_library.excerpt(1, start_s=5.0, seconds=EXCERPT_S)
    tracklist = tmp_path / "tracklist.txt"
    tracklist.write_text("yesterday's set\n")
    done = run(
        "listen",
        "--index",
        demo_library.index,
        "--input",
        excerpt,
        "--serve",
        f"127.0.0.1:{held_port}",
        "--no-tui",
        "--tracklist",
        tracklist,
        "--threads",
        "1",
    )
    assert done.returncode == 2, done.stderr
    (line,) = error_lines(done.stderr)
    assert line.startswith("synesthete: error: cannot serve on 127.0.0.1:")
    assert "in use" in line and "--serve" in line
    assert done.stdout == ""
    # Nothing lost: the tracklist of an earlier session is left as it was.
    assert tracklist.read_text() == "yesterday's set\n"


def test_demo_on_a_busy_port_says_so_before_building(held_port: int, tmp_path: Path) -> None:
    started = time.monotonic()
    done = run(
        "demo",
        "--dir",
        tmp_path / "demo",
        "--no-tui",
        "--fast",
        "--serve",
        f"127.0.0.1:{held_port}",
    )
    assert done.returncode == 2, done.stderr
    (line,) = error_lines(done.stderr)
    assert line.startswith("synesthete: error: cannot serve on") and "in use" in line
    assert not (tmp_path / "demo" / "index").exists()
    assert time.monotonic() - started < 60


# ------------------------------------------------- 5. several files, one document


@pytest.fixture(scope="module")
def two_excerpts(demo_library: DemoLibrary) -> list[Path]:
    return [demo_library.excerpt(n, start_s=6.0, seconds=EXCERPT_S) for n in (3, 5)]


def test_identify_json_of_several_files_is_one_document(
    demo_library: DemoLibrary, two_excerpts: list[Path]
) -> None:
    done = run("identify", "--index", demo_library.index, "--format", "json", *two_excerpts)
    assert done.returncode == 0, done.stderr
    document = json.load(io.StringIO(done.stdout))
    assert [item["source"] for item in document] == [str(p) for p in two_excerpts]
    titles = [[s["track"]["title"] for s in item["segments"] if s["track"]] for item in document]
    assert titles == [[demo_library.titles[3]], [demo_library.titles[5]]]


def test_identify_csv_of_several_files_has_one_header(
    demo_library: DemoLibrary, two_excerpts: list[Path]
) -> None:
    done = run("identify", "--index", demo_library.index, "--format", "csv", *two_excerpts)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {row["source"] for row in rows} == {str(p) for p in two_excerpts}
    assert all(row["source"] != "source" for row in rows)  # no second header
    by_source = {row["source"]: row["title"] for row in rows if row["title"]}
    assert by_source == {
        str(two_excerpts[0]): demo_library.titles[3],
        str(two_excerpts[1]): demo_library.titles[5],
    }


def test_identify_cue_of_several_files_is_one_sheet(
    demo_library: DemoLibrary, two_excerpts: list[Path]
) -> None:
    done = run("identify", "--index", demo_library.index, "--format", "cue", *two_excerpts)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    top_titles = [line for line in lines if line.startswith("TITLE ")]
    assert len(top_titles) == 1
    files = [line for line in lines if line.startswith("FILE ")]
    assert files == [f'FILE "{p}" WAVE' for p in two_excerpts]
    numbers = [int(line.split()[1]) for line in lines if line.strip().startswith("TRACK ")]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2


def test_identify_a_folder_scans_it_like_index_build(
    demo_library: DemoLibrary, tmp_path: Path
) -> None:
    folder = tmp_path / "clips"
    (folder / "deeper").mkdir(parents=True)
    clip = demo_library.excerpt(2, start_s=4.0, seconds=EXCERPT_S)
    (folder / "deeper" / "b.wav").write_bytes(clip.read_bytes())
    (folder / "a.wav").write_bytes(
        demo_library.excerpt(4, start_s=4.0, seconds=EXCERPT_S).read_bytes()
    )
    (folder / "notes.txt").write_text("not audio, not picked up")
    done = run("identify", "--index", demo_library.index, "--format", "json", folder)
    assert done.returncode == 0, done.stderr
    document = json.load(io.StringIO(done.stdout))
    assert [item["source"] for item in document] == [
        str(folder / "a.wav"),
        str(folder / "deeper" / "b.wav"),
    ]
    titles = [[s["track"]["title"] for s in item["segments"] if s["track"]] for item in document]
    assert titles == [[demo_library.titles[4]], [demo_library.titles[2]]]


# ---------------------------------------------------------- 6. text named .mp3


@pytest.fixture
def text_named_mp3(tmp_path: Path) -> Path:
    path = tmp_path / "music" / "notes.mp3"
    path.parent.mkdir()
    path.write_text("shopping list: milk, eggs, a new needle for the turntable\n" * 40)
    return path


def test_identify_a_text_file_named_mp3_is_one_clear_line(
    demo_library: DemoLibrary, text_named_mp3: Path
) -> None:
    done = run("identify", "--index", demo_library.index, text_named_mp3)
    assert done.returncode == 2
    (line,) = error_lines(done.stderr)
    assert line == (
        f"synesthete: error: {text_named_mp3}: not a recognised audio format (or corrupt header)"
    )
    assert done.stdout == ""


def test_index_build_skips_a_text_file_named_mp3_in_one_line(
    demo_library: DemoLibrary, text_named_mp3: Path, tmp_path: Path
) -> None:
    clip = demo_library.excerpt(0, start_s=0.0, seconds=EXCERPT_S)
    (text_named_mp3.parent / "clip.wav").write_bytes(clip.read_bytes())
    done = run(
        "index",
        "build",
        "--index",
        tmp_path / "index",
        text_named_mp3.parent,
        "--quiet",
        "--speed-variants",
        "none",
    )
    assert done.returncode == 0, done.stderr
    assert error_lines(done.stderr) == [
        f"skipped {text_named_mp3}: not a recognised audio format (or corrupt header)"
    ]
    assert "indexed 1 file " in done.stdout and "1 track," in done.stdout


# ------------------------------------------------------------------- 8. --help


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for deeper, subsub in _subparsers(sub):
                    yield f"{name} {deeper}", subsub


def test_every_command_and_option_has_help_text() -> None:
    missing = []
    for name, parser in _subparsers(build_parser()):
        if not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.metavar}")
    assert missing == []


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("identify", ["Identify audio files", "FILE  ", "--format", "one document for all files"]),
        ("index", ["Build and maintain the library index"]),
        ("index build", ["--index INDEX", "index directory"]),
        ("watch", ["Print the events of a running"]),
        ("devices", ["List the audio input devices"]),
        ("demo", ["Synthesize a small tagged library", "no live view"]),
        ("listen", ["--events {core,all}", "sounds_like and status", "--no-tui"]),
    ],
)
def test_help_of_each_command(command: str, expected: list[str]) -> None:
    done = run(*command.split(), "--help", timeout_s=60)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for piece in expected:
        assert " ".join(piece.split()) in text, (piece, done.stdout)
    if command == "identify":
        # --events names what identify emits: never status, which only listen sends.
        events_help = text[text.index("--events {core,all} ") :]
        assert "sounds_like" in events_help[:300] and "status" not in events_help[:300]


def test_listen_events_all_carries_status_and_sounds_like_and_prints_the_overlay(
    demo_library: DemoLibrary,
) -> None:
    excerpt = demo_library.excerpt(6, start_s=5.0, seconds=16.0)
    port = free_port()
    args = ["listen", "--index", demo_library.index, "--input", excerpt, "--no-tui"]
    args += ["--speed", "4", "--serve", f"127.0.0.1:{port}", "--threads", "1"]
    core = run(*args)
    everything = run(*args, "--events", "all")
    for done in (core, everything):
        assert done.returncode == 0, done.stderr
        assert f"synesthete: overlay: http://127.0.0.1:{port}/overlay" in done.stderr
    core_types = {json.loads(line)["type"] for line in core.stdout.splitlines()}
    all_types = {json.loads(line)["type"] for line in everything.stdout.splitlines()}
    assert core_types <= {"now_playing", "unknown"} and "now_playing" in core_types
    assert {"now_playing", "candidates", "sounds_like", "status"} <= all_types


# -------------------------------------------------------------- 9. rough edges


def test_index_remove_of_a_missing_id_fails(demo_library: DemoLibrary, tmp_path: Path) -> None:
    index = tmp_path / "index"
    clip = demo_library.excerpt(0, start_s=0.0, seconds=EXCERPT_S)
    built = run("index", "build", "--index", index, clip, "--quiet", "--speed-variants", "none")
    assert built.returncode == 0, built.stderr
    done = run("index", "remove", "--index", index, "999")
    assert done.returncode == 2
    (line,) = error_lines(done.stderr)
    assert line == "synesthete: error: not removed 999: no track matches this id or path"


def test_index_stats_keys_are_aligned(demo_library: DemoLibrary) -> None:
    done = run("index", "stats", "--index", demo_library.index)
    assert done.returncode == 0, done.stderr
    colons = {line.index(": ") for line in done.stdout.splitlines() if ": " in line}
    assert len(colons) == 1, done.stdout


def test_watch_of_a_dead_port_is_one_line_with_a_hint() -> None:
    port = free_port()
    done = run("watch", f"127.0.0.1:{port}", timeout_s=60)
    assert done.returncode == 2
    (line,) = error_lines(done.stderr)
    assert "Errno" not in line and "nothing is listening" in line
    assert "synesthete listen --serve" in line


@dataclass(frozen=True)
class DemoRun:
    done: subprocess.CompletedProcess[str]
    events: list[dict[str, Any]]
    directory: Path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``synesthete demo --no-tui --fast`` from nothing, once for the tests below."""
    directory = tmp_path_factory.mktemp("demo-run") / "demo"
    done = run(
        "demo", "--dir", directory, "--no-tui", "--fast", "--serve",
        f"127.0.0.1:{free_port()}", timeout_s=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    return DemoRun(done=done, events=events, directory=directory)


@pytest.mark.slow
def test_demo_without_the_live_view_keeps_stdout_jsonl(demo_run: DemoRun) -> None:
    done, events = demo_run.done, demo_run.events
    assert events and {e["type"] for e in events} <= {"now_playing", "unknown"}
    assert "demo: synthesizing 24 tracks" in done.stderr
    assert "demo: indexed 24/24 tracks" in done.stderr
    assert "Tracklist (" in done.stderr and "What was really played:" in done.stderr
    # The four library pieces are named, in order.
    truth = json.loads((demo_run.directory / "set-truth.json").read_text())
    listed = (demo_run.directory / "set-tracklist.txt").read_text().splitlines()
    named = [line for line in listed if line[:2].isdigit() and "(unknown)" not in line]
    for item in truth[:-1]:
        assert any(str(item["title"]) in line for line in named[: len(truth) - 1]), listed


@pytest.mark.slow
def test_demo_closing_piece_stays_unknown(demo_run: DemoRun) -> None:
    """Once the live window (4 s) holds only the piece outside the library, past the 3 s
    crossfade and one more hop, nothing is named, and the tracklist ends unknown."""
    truth = json.loads((demo_run.directory / "set-truth.json").read_text())
    stranger = next(item for item in truth if item["title"] is None)
    settled_s = float(stranger["set_start_s"]) + 3.0 + 4.0 + 2.0
    named = [
        (e["t"], e["track"]["title"], e["confidence"])
        for e in demo_run.events
        if e["type"] == "now_playing" and e["t"] >= settled_s
    ]
    assert not named, f"the piece outside the library was named: {named}"
    assert demo_run.events[-1]["type"] == "unknown"
    listed = (demo_run.directory / "set-tracklist.txt").read_text().splitlines()
    entries = [line for line in listed if line[:2].isdigit()]
    assert entries[-1].endswith("(unknown)"), listed


# ------------------------------------------------- an index from an earlier version


def test_an_index_built_with_an_earlier_packaged_model_opens_without_model(
    demo_library: DemoLibrary, tmp_path: Path
) -> None:
    """The default model changed (baseline-v1 → a trained encoder): a library indexed
    before still answers without --model, with the packaged model it was built with."""
    music = tmp_path / "music"
    music.mkdir()
    for n in (1, 4):
        (music / f"{n:02d}.flac").write_bytes(
            (demo_library.root / "music" / f"{n:02d}.flac").read_bytes()
        )
    index = tmp_path / "index"
    baseline = ROOT / "inference" / "models" / "baseline-v1.pt"
    built = run("index", "build", "--index", index, music, "--model", baseline, "--quiet")
    assert built.returncode == 0, built.stderr
    excerpt = demo_library.excerpt(4, start_s=6.0, seconds=EXCERPT_S)
    done = run("identify", "--index", index, "--format", "json", excerpt)
    assert done.returncode == 0, done.stderr
    segments = json.loads(done.stdout)[0]["segments"]
    assert [s["track"]["title"] for s in segments if s["track"]] == [demo_library.titles[4]]
    # Asking for another model on it is a one-line error, as before.
    trained = ROOT / "inference" / "models" / "encoder-v3.pt"
    wrong = run("identify", "--index", index, "--model", trained, excerpt)
    assert wrong.returncode == 2
    assert len(error_lines(wrong.stderr)) == 1 and "baseline-v1" in wrong.stderr


def test_the_demo_indexes_again_when_the_packaged_model_changed(tmp_path: Path) -> None:
    from synesthete.clients.demo import prepare_demo
    from synesthete.index.store import Library
    from synesthete.inference.torchscript import TorchScriptEncoder

    directory = tmp_path / "demo"
    files = prepare_demo(directory, n_tracks=6, quiet=True)
    baseline = ROOT / "inference" / "models" / "baseline-v1.pt"
    # What an earlier version left: the same library indexed with the old default.
    files.index.rename(tmp_path / "new-index")
    done = run(
        "index", "build", "--index", files.index, files.library, "--model", baseline, "--quiet"
    )
    assert done.returncode == 0, done.stderr
    notes = io.StringIO()
    prepare_demo(directory, n_tracks=6, quiet=True, notes=notes)
    library = Library.open(files.index)
    try:
        assert library.encoder_name == TorchScriptEncoder().name != "baseline-v1"
    finally:
        library.close()
    assert "built with another model" in notes.getvalue()


# ----------------------------------------------------------------- stdin: -


def streamed_wav(path: Path) -> bytes:
    """The WAV as ``ffmpeg ... -f wav -`` writes it to a pipe: RIFF and data sizes unknown."""
    data = bytearray(path.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    at = data.index(b"data")
    data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


def test_identify_and_listen_read_audio_from_stdin(demo_library: DemoLibrary) -> None:
    piped = streamed_wav(demo_library.excerpt(7, start_s=3.0, seconds=EXCERPT_S))
    for args in (
        ["identify", "--index", demo_library.index, "-"],
        ["listen", "--index", demo_library.index, "--input", "-", "--no-tui", "--threads", "1"],
    ):
        done = run(*args, stdin=piped)
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.decode().splitlines()]
        names = {e["track"]["title"] for e in events if e["type"] == "now_playing"}
        assert names == {demo_library.titles[7]} and {e["file"] for e in events} == {"-"}


def test_text_on_stdin_is_one_line(demo_library: DemoLibrary) -> None:
    done = run("identify", "--index", demo_library.index, "-", stdin=b"not audio\n" * 50)
    assert done.returncode == 2
    assert error_lines(done.stderr.decode()) == [
        "synesthete: error: -: not a recognised audio format (or corrupt header)"
    ]


# ------------------------------------------------------------------ index list


def test_index_list_finds_track_ids_by_title_artist_or_path(demo_library: DemoLibrary) -> None:
    everything = run("index", "list", "--index", demo_library.index, "--format", "json")
    assert everything.returncode == 0, everything.stderr
    tracks = json.load(io.StringIO(everything.stdout))
    assert sorted(t["title"] for t in tracks) == sorted(demo_library.titles)
    wanted = demo_library.titles[5]
    found = run("index", "list", "--index", demo_library.index, "--search", wanted.upper())
    assert found.returncode == 0, found.stderr
    (line,) = found.stdout.splitlines()
    track_id = next(t["id"] for t in tracks if t["title"] == wanted)
    assert line.split()[0] == str(track_id) and f"{demo_library.artist(5)} - {wanted}" in line
    by_artist = run(
        "index",
        "list",
        "--index",
        demo_library.index,
        "--search",
        demo_library.artist(2),
        "--format",
        "json",
    )
    assert [t["title"] for t in json.load(io.StringIO(by_artist.stdout))] == [
        demo_library.titles[2]
    ]
    by_path = run("index", "list", "--index", demo_library.index, "--search", "03.flac")
    assert demo_library.titles[3] in by_path.stdout and len(by_path.stdout.splitlines()) == 1
    nothing = run("index", "list", "--index", demo_library.index, "--search", "no such song")
    assert nothing.returncode == 1 and nothing.stdout == ""
    assert error_lines(nothing.stderr) == ["synesthete: no track matches 'no such song'"]
