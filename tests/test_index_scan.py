"""Finding audio files: recursion, order, suffixes, symlinks, unreadable folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from synesthete.errors import LibraryError
from synesthete.index import scan
from synesthete.index.scan import iter_audio_files


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def collect(paths, problems=None):
    def on_problem(path, reason):
        if problems is not None:
            problems.append((path, reason))

    return list(iter_audio_files(paths, on_problem=on_problem))


def test_recursive_sorted_case_insensitive(tmp_path):
    for rel in ("b/2.FLAC", "b/1.mp3", "a.wav", "c/d/e.Opus", "c/x.oga", "c/y.ogg", "z.txt"):
        touch(tmp_path / rel)
    found = collect([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.wav",
        "b/1.mp3",
        "b/2.FLAC",
        "c/d/e.Opus",
        "c/x.oga",
        "c/y.ogg",
    ]
    assert all(p.is_absolute() for p in found)
    assert collect([tmp_path]) == found  # deterministic


def test_explicit_files_and_folders_in_given_order_each_once(tmp_path):
    song = touch(tmp_path / "lib" / "song.wav")
    other = touch(tmp_path / "other.flac")
    found = collect([other, tmp_path / "lib", song])
    assert found == [other, song]


def test_explicit_non_audio_file_is_reported_not_fatal(tmp_path):
    text = touch(tmp_path / "readme.txt")
    song = touch(tmp_path / "song.mp3")
    problems = []
    assert collect([text, song], problems) == [song]
    assert problems == [(text, "not a supported audio file (.txt)")]


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    touch(tmp_path / "lib" / "a.wav")
    monkeypatch.chdir(tmp_path)
    assert collect(["lib/../lib"]) == [tmp_path / "lib" / "a.wav"]


def test_missing_path_raises_one_line_before_yielding(tmp_path):
    touch(tmp_path / "a.wav")
    with pytest.raises(LibraryError) as info:
        iter_audio_files([tmp_path, tmp_path / "nope"])
    message = str(info.value)
    assert "nope" in message and "no such file" in message
    assert "\n" not in message


def test_hidden_entries_skipped_in_folders_but_not_when_named(tmp_path):
    touch(tmp_path / ".hidden" / "a.wav")
    fork = touch(tmp_path / "._resource.mp3")
    touch(tmp_path / "real.mp3")
    assert [p.name for p in collect([tmp_path])] == ["real.mp3"]
    assert collect([fork]) == [fork]


def test_symlink_loop_terminates_and_duplicates_yield_once(tmp_path):
    song = touch(tmp_path / "lib" / "a" / "song.wav")
    (tmp_path / "lib" / "a" / "loop").symlink_to(tmp_path / "lib", target_is_directory=True)
    (tmp_path / "lib" / "alias.wav").symlink_to(song)
    found = collect([tmp_path / "lib"])
    # alias.wav sorts first and names the same real file: the file is yielded once.
    assert len(found) == 1
    assert found[0].resolve() == song.resolve()


def test_broken_symlink_is_reported(tmp_path):
    (tmp_path / "gone.flac").symlink_to(tmp_path / "missing.flac")
    problems = []
    assert collect([tmp_path], problems) == []
    assert problems == [(tmp_path / "gone.flac", "broken symlink (its target does not exist)")]


def test_symlink_to_itself_and_fifo_are_reported(tmp_path):
    (tmp_path / "loop.wav").symlink_to("loop.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    problems = []
    assert collect([tmp_path], problems) == []
    assert problems == [
        (tmp_path / "loop.wav", "symlink loop (the link points back to itself)"),
        (tmp_path / "pipe.wav", "not a regular file (a device, pipe or socket)"),
    ]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder_is_reported_not_fatal(tmp_path):
    touch(tmp_path / "ok" / "a.wav")
    locked = tmp_path / "locked"
    touch(locked / "b.wav")
    locked.chmod(0)
    try:
        problems = []
        found = collect([tmp_path], problems)
    finally:
        locked.chmod(0o755)
    assert [p.name for p in found] == ["a.wav"]
    assert problems[0][0] == locked and "cannot list folder" in problems[0][1]


def test_listing_error_is_reported_not_fatal(tmp_path, monkeypatch):
    # Runs as root too, where chmod cannot make a folder unreadable.
    touch(tmp_path / "ok" / "a.wav")
    touch(tmp_path / "locked" / "b.wav")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    problems = []
    found = collect([tmp_path], problems)
    assert [p.name for p in found] == ["a.wav"]
    assert problems == [(tmp_path / "locked", "cannot list folder: Permission denied")]
