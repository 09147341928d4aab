"""Finding audio files under the paths a user names."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from synesthete.errors import LibraryError
from synesthete.stream.avdecode import AV_ONLY_SUFFIXES

SOUNDFILE_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"}
)
"""Read with libsndfile (PyAV steps in for the odd file it refuses)."""
AUDIO_EXTENSIONS: frozenset[str] = SOUNDFILE_EXTENSIONS | AV_ONLY_SUFFIXES
"""Suffixes picked up in folders, compared case-insensitively: libsndfile's, and PyAV's
(m4a/AAC/ALAC, WMA, the audio of video files)."""

ProblemCallback = Callable[[Path, str], None]
"""Called with (path, reason) for a folder or file that cannot be scanned."""


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def iter_audio_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    on_problem: ProblemCallback | None = None,
) -> Iterator[Path]:
    """Yield the audio files under ``paths`` as absolute paths, each real file once.

    A path that names a file is taken if its suffix is an audio one; a folder is
    searched recursively. Within a folder, entries are visited in case-folded name
    order, so the result is deterministic. Hidden entries (names starting with
    ``.``, such as macOS ``._x.mp3`` resource forks) are skipped inside folders
    but taken when named explicitly. Symlinked folders are followed once: a
    folder already visited (by real path) is not entered again, so loops end.
    Yielded paths keep the names the user sees (symlinks are not resolved);
    duplicates are detected by real path.

    Every path must exist: a missing one raises ``LibraryError`` before anything
    is yielded. Folders that cannot be listed, and named files with a
    non-audio suffix, are reported through ``on_problem`` and skipped.
    """
    # normpath, not resolve: keep symlinked names as the user sees them, drop "..".
    roots = [Path(os.path.normpath(Path(p).expanduser().absolute())) for p in paths]
    for root in roots:
        if not root.exists():
            raise LibraryError(f"{root}: no such file or folder")
    return _walk_roots(roots, on_problem or _ignore)


def _ignore(path: Path, reason: str) -> None:
    del path, reason


def _walk_roots(roots: list[Path], on_problem: ProblemCallback) -> Iterator[Path]:
    seen_files: set[Path] = set()
    seen_dirs: set[Path] = set()
    for root in roots:
        if root.is_dir():
            yield from _walk_dir(root, seen_files, seen_dirs, on_problem)
        elif is_audio_path(root):
            if _first_visit(root, seen_files):
                yield root
        else:
            on_problem(root, f"not a supported audio file ({root.suffix or 'no suffix'})")


def _walk_dir(
    folder: Path,
    seen_files: set[Path],
    seen_dirs: set[Path],
    on_problem: ProblemCallback,
) -> Iterator[Path]:
    real_dir = folder.resolve()
    if real_dir in seen_dirs:
        return
    seen_dirs.add(real_dir)
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: (entry.name.casefold(), entry.name))
    except OSError as err:
        on_problem(folder, f"cannot list folder: {err.strerror or err}")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        child = folder / entry.name
        try:
            is_dir = entry.is_dir()  # follows symlinks; loops end through seen_dirs
            is_file = not is_dir and entry.is_file()
        except OSError as err:
            if err.errno == errno.ELOOP:
                on_problem(child, "symlink loop (the link points back to itself)")
            else:
                on_problem(child, f"cannot stat: {err.strerror or err}")
            continue
        if is_dir:
            yield from _walk_dir(child, seen_files, seen_dirs, on_problem)
        elif is_audio_path(child):
            if not is_file:
                on_problem(child, _not_a_file_reason(child))
            elif _first_visit(child, seen_files):
                yield child


def _not_a_file_reason(path: Path) -> str:
    if path.is_symlink():
        # is_file() follows links and returns False (not an error) for a loop too.
        try:
            path.stat()
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "symlink loop (the link points back to itself)"
            return "broken symlink (its target does not exist)"
    return "not a regular file (a device, pipe or socket)"


def _first_visit(path: Path, seen_files: set[Path]) -> bool:
    real = path.resolve()
    if real in seen_files:
        return False
    seen_files.add(real)
    return True
