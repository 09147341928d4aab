"""``index add`` as a delta beside the main generation, and ``index compact`` (issue 18).

Real files throughout: tone tracks embedded by the ``FakeEncoder``, real sqlite, real
Annoy files, identification through the same ``identify_file`` path the CLI uses. The
deltas are forced with ``IndexConfig(delta_fraction=...)`` where the default (10 % of the
main generation's windows) would turn a test-sized add into a fresh main generation.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEncoder, write_tone_file

from synesthete.clients.app import Engine
from synesthete.clients.cli import main
from synesthete.clients.identify import identify_file
from synesthete.clients.map import library_map
from synesthete.errors import LibraryError
from synesthete.index.builder import (
    add_to_index,
    build_index,
    compact_index,
    index_stats,
    remove_from_index,
)
from synesthete.index.config import IndexConfig, MatcherConfig, RecognizerConfig
from synesthete.index.store import (
    ANNOY_NAME,
    DELTA_FORMAT_VERSION,
    WINDOWS_NAME,
    Library,
)

MAIN_TRACKS = 8
TRACK_S = 12.0
DELTA = IndexConfig(delta_fraction=1.0)
"""Deltas up to the main generation's size: every add in these tests stays a delta."""
TESTS = Path(__file__).parent


def tone(folder: Path, seed: int) -> Path:
    return write_tone_file(folder / f"tone {seed:02d}.wav", seed=seed, duration_s=TRACK_S)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tone files: 8 for the main generation, 4 to add later."""
    root = tmp_path_factory.mktemp("delta")
    for seed in range(1, MAIN_TRACKS + 1):
        tone(root / "music", seed)
    for seed in range(MAIN_TRACKS + 1, MAIN_TRACKS + 5):
        tone(root / "new", seed)
    return root


@pytest.fixture
def lib_root(template: Path, tmp_path: Path) -> Path:
    """A private copy of the files and a main generation of the 8 (sonic map stored)."""
    root = tmp_path / "copy"
    shutil.copytree(template, root)
    build_index(root / "index", main_files(root), encoder=FakeEncoder(), config=IndexConfig())
    return root


def new_files(root: Path) -> list[Path]:
    return sorted((root / "new").iterdir())


def main_files(root: Path) -> list[Path]:
    return sorted((root / "music").iterdir())


def fingerprint(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Each file's inode, mtime and sha256: what a rewrite would change."""
    return {
        p.name: (
            p.stat().st_ino,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.iterdir())
    }


def identified(index: Path, path: Path) -> str | None:
    """The track ``identify`` names last for ``path`` (its path), or ``None``."""
    library = Library.open(index)
    try:
        engine = Engine(
            encoder=FakeEncoder(),  # type: ignore[arg-type]
            library=library,
            candidates=library.candidates(),
            config=RecognizerConfig(matcher=MatcherConfig(index_hop_s=library.index_hop_s)),
        )
        playing = [e for e in identify_file(engine, str(path)) if e.type == "now_playing"]
    finally:
        library.close()
    return playing[-1].track.path if playing else None  # type: ignore[attr-defined]


def test_add_writes_a_delta_and_leaves_the_main_generation_untouched(lib_root: Path) -> None:
    index = lib_root / "index"
    before = fingerprint(index / "gen-000001")
    with Library.open(index) as lib:
        old_curves = {r.id: lib.curve(r.id, 2).copy() for r in lib.records()}
    encoder = FakeEncoder()
    report = add_to_index(index, new_files(lib_root)[:2], encoder=encoder, config=DELTA)

    assert report.delta and report.generation == "gen-000002"
    assert [t.id for t in report.indexed] == [9, 10]
    assert encoder.windows_embedded == report.windows  # the new tracks' windows alone
    assert "a delta beside the main generation" in report.summary()
    assert fingerprint(index / "gen-000001") == before
    assert sorted(p.name for p in index.iterdir() if p.name.startswith("gen-")) == [
        "gen-000001",
        "gen-000002",
    ]
    delta = index / "gen-000002"
    assert {WINDOWS_NAME, ANNOY_NAME} <= {p.name for p in delta.iterdir()}
    assert np.load(delta / WINDOWS_NAME).shape[0] == report.windows
    with Library.open(index, verify=True) as lib:
        assert lib.parts == ("gen-000001", "gen-000002")
        assert lib.generation == "gen-000002" and lib.base_generation == "gen-000001"
        assert lib.meta["format_version"] == "3"
        assert lib.n_tracks == MAIN_TRACKS + 2 and lib.delta_tracks == 2
        assert lib.n_windows == lib.main_windows + report.windows
        for track_id, curve in old_curves.items():
            np.testing.assert_array_equal(lib.curve(track_id, 2), curve)
        # Every row of the library belongs to exactly one curve, across both parts.
        ids, _, variants = lib.tracks_of_rows(np.arange(lib.n_windows))
        assert sorted(set(zip(ids.tolist(), variants.tolist(), strict=True))) == sorted(
            (r.id, k) for r in lib.records() for k in (0, 1, 2)
        )
        assert lib.windows.shape == (lib.n_windows, lib.dim)
    with sqlite3.connect(delta / "library.sqlite") as connection:
        meta = dict(connection.execute("SELECT key, value FROM meta"))
        rows = connection.execute("SELECT id FROM tracks ORDER BY id").fetchall()
    assert meta["format_version"] == DELTA_FORMAT_VERSION
    assert meta["delta_parent"] == meta["delta_base"] == "gen-000001"
    assert rows == [(9,), (10,)]


def test_added_and_old_tracks_are_identified(lib_root: Path) -> None:
    index = lib_root / "index"
    add_to_index(index, new_files(lib_root)[:2], encoder=FakeEncoder(), config=DELTA)
    add_to_index(index, new_files(lib_root)[2:3], encoder=FakeEncoder(), config=DELTA)
    with Library.open(index) as lib:
        assert lib.parts == ("gen-000001", "gen-000002", "gen-000003")
        # The stored windows of a delta track find that track first among all the parts.
        source = lib.candidates()
        for track_id in (2, 9, 11):
            hits = source.query(np.ascontiguousarray(lib.curve(track_id)[::4]), k=8)
            assert all(found[0].track_id == track_id for found in hits)
    for path in [*new_files(lib_root)[:3], *main_files(lib_root)[::3]]:
        assert identified(index, path) == str(path)


def test_compact_gives_the_generation_a_fresh_build_gives(lib_root: Path) -> None:
    index = lib_root / "index"
    added = new_files(lib_root)
    add_to_index(index, added[:2], encoder=FakeEncoder(), config=DELTA)
    add_to_index(index, added[2:], encoder=FakeEncoder(), config=DELTA)
    with Library.open(index) as lib:
        assert len(lib.parts) == 3
        before = [(r.id, r.path, r.content_hash) for r in lib.records()]
    report = compact_index(index)
    assert report.merged_deltas == 2 and not report.delta
    assert "merged 2 deltas" in report.summary()
    fresh = lib_root / "fresh"
    build_index(fresh, [*main_files(lib_root), *added], encoder=FakeEncoder(), config=IndexConfig())
    with Library.open(index, verify=True) as lib, Library.open(fresh) as ref:
        assert lib.parts == (report.generation,)
        assert [(r.id, r.path, r.content_hash) for r in lib.records()] == before
        assert [(r.id, r.path) for r in ref.records()] == [(r[0], r[1]) for r in before]
        assert lib.version_pairs == ref.version_pairs
        for name in (WINDOWS_NAME, ANNOY_NAME, "sonic_map.npy"):
            assert (lib.generation_dir / name).read_bytes() == (
                ref.generation_dir / name
            ).read_bytes(), name
        queries = np.ascontiguousarray(ref.windows[::7])
        assert lib.candidates().query(queries, k=16) == ref.candidates().query(queries, k=16)
    # Nothing left to merge: no generation written.
    again = compact_index(index)
    assert again.generation == report.generation and again.merged_deltas == 0
    assert "no deltas to merge" in again.summary()


def test_duplicates_removal_and_a_changed_file_with_a_delta(lib_root: Path) -> None:
    index = lib_root / "index"
    added = new_files(lib_root)
    add_to_index(index, added[:2], encoder=FakeEncoder(), config=DELTA)
    twin = lib_root / "twin.wav"
    shutil.copyfile(added[0], twin)
    again = lib_root / "again.wav"
    shutil.copyfile(main_files(lib_root)[0], again)
    report = add_to_index(index, [twin, again, *added[:2]], encoder=FakeEncoder(), config=DELTA)
    assert report.indexed == [] and report.generation == "gen-000002"
    assert sorted(reason for _, reason in report.skipped) == sorted(
        [f"same content as {added[0]}", f"same content as {main_files(lib_root)[0]}"]
    )
    assert report.unchanged == [str(p) for p in added[:2]]

    # Removing a main track and a delta track writes one fresh main generation.
    report = remove_from_index(index, ["3", str(added[1])])
    assert [r["id"] for r in report.removed] == [3, 10]
    with Library.open(index, verify=True) as lib:
        assert lib.parts == (report.generation,)
        assert [r.id for r in lib.records()] == [1, 2, 4, 5, 6, 7, 8, 9]
    assert identified(index, added[0]) == str(added[0])

    # A changed file under a delta track's path is re-embedded in a fresh main generation.
    add_to_index(index, [added[2]], encoder=FakeEncoder(), config=DELTA)
    write_tone_file(added[2], seed=77, duration_s=TRACK_S)
    report = add_to_index(index, [added[2]], encoder=FakeEncoder(), config=DELTA)
    assert [(t.id, t.status) for t in report.indexed] == [(11, "updated")] and not report.delta
    with Library.open(index) as lib:
        assert len(lib.parts) == 1 and lib.n_tracks == 9 and lib.last_track_id == 11
    assert identified(index, added[2]) == str(added[2])


def test_stats_map_and_sounds_like_read_the_deltas(lib_root: Path) -> None:
    index = lib_root / "index"
    add_to_index(index, new_files(lib_root)[:2], encoder=FakeEncoder(), config=DELTA)
    stats = index_stats(index, verify=True)
    assert stats["tracks"] == MAIN_TRACKS + 2
    assert stats["generation"] == "gen-000002" and stats["main_generation"] == "gen-000001"
    assert stats["deltas"] == ["gen-000002"] and stats["delta_tracks"] == 2
    assert 0 < stats["delta_windows_percent"] < 100
    assert "2 tracks added since, placed on it by the placer" in stats["sonic_map"]
    with Library.open(index) as lib:
        stored = lib.stored_sonic()
        assert stored is not None and stored.positions is not None
        assert sorted(stored.track_ids.tolist()) == [r.id for r in lib.records()]
        assert stored.positions.shape == (MAIN_TRACKS + 2, 2)
        sonic_map = library_map(lib, seed=stored.map_seed or 0)
        assert sonic_map.stored and len(sonic_map.tracks) == MAIN_TRACKS + 2
        summaries = lib.summaries()
        assert sorted(summaries.track_ids.tolist()) == [r.id for r in lib.records()]
        query = np.ascontiguousarray(lib.curve(9)[::4])
        nearest = summaries.nearest(query, k=3, exclude_track_ids=[], query_hop_s=2.0)
        assert nearest[0][0] == 9


def test_add_past_the_delta_fraction_writes_a_fresh_main_generation(lib_root: Path) -> None:
    index = lib_root / "index"
    added = new_files(lib_root)
    report = add_to_index(index, added[:1], encoder=FakeEncoder(), config=DELTA)
    assert report.delta
    with Library.open(index) as lib:
        fraction = lib.delta_windows / lib.main_windows
    # A limit the next add would cross: every track goes into a fresh main generation.
    report = add_to_index(
        index, added[1:3], encoder=FakeEncoder(), config=IndexConfig(delta_fraction=fraction)
    )
    assert not report.delta and report.generation == "gen-000003"
    with Library.open(index, verify=True) as lib:
        assert lib.parts == ("gen-000003",) and lib.n_tracks == MAIN_TRACKS + 3
    # The previous chain stays for its readers; older generations go.
    assert sorted(p.name for p in index.iterdir() if p.name.startswith("gen-")) == [
        "gen-000001",
        "gen-000002",
        "gen-000003",
    ]
    for path in (added[0], added[2], main_files(lib_root)[1]):
        assert identified(index, path) == str(path)
    # delta_fraction 0: never a delta.
    report = add_to_index(
        index, added[3:], encoder=FakeEncoder(), config=IndexConfig(delta_fraction=0.0)
    )
    assert not report.delta
    assert sorted(p.name for p in index.iterdir() if p.name.startswith("gen-")) == [
        "gen-000003",
        "gen-000004",
    ]


def test_cli_compact_and_a_bad_delta_fraction(
    lib_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = lib_root / "index"
    add_to_index(index, new_files(lib_root)[:1], encoder=FakeEncoder(), config=DELTA)
    assert main(["index", "stats", "--index", str(index)]) == 0
    assert "delta_tracks: 1" in capsys.readouterr().out
    assert main(["index", "compact", "--index", str(index), "--no-map"]) == 0
    assert "merged 1 delta into a fresh main generation" in capsys.readouterr().out
    with Library.open(index) as lib:
        assert len(lib.parts) == 1 and lib.n_tracks == MAIN_TRACKS + 1
    assert main(["index", "compact", "--index", str(index)]) == 0
    assert "no deltas to merge" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["index", "add", "--index", str(index), "--delta-fraction", "2", "x.wav"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "must be within 0..1" in err and "Traceback" not in err


_ADD_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from fakes import FakeEncoder
from synesthete.index.builder import add_to_index
from synesthete.index.config import IndexConfig
print("start", flush=True)
add_to_index(Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]], encoder=FakeEncoder(),
             config=IndexConfig(delta_fraction=1.0))
"""


def test_an_add_killed_at_any_moment_leaves_the_index_readable(lib_root: Path) -> None:
    """SIGKILL a delta add at seeded moments: the index opens verified, holds the tracks
    before or after the add, and the add run again completes and leaves no debris."""
    index = lib_root / "index"
    added = [str(p) for p in new_files(lib_root)[:2]]
    rng = np.random.default_rng(18)
    outcomes = set()
    for attempt in range(4):
        with Library.open(index) as lib:
            tracks_before = lib.n_tracks
        proc = subprocess.Popen(
            [sys.executable, "-c", _ADD_SCRIPT, str(TESTS), str(index), *added],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"start"
        time.sleep(float(rng.uniform(0.0, 1.5)) * (attempt + 1) / 4)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=120)
        with Library.open(index, verify=True) as lib:
            assert lib.n_tracks in (tracks_before, MAIN_TRACKS + 2)
            outcomes.add(lib.n_tracks)
        # Run it again to the end; then back to the main generation for the next kill.
        report = add_to_index(index, [Path(p) for p in added], encoder=FakeEncoder(), config=DELTA)
        assert report.generation is not None
        assert not [p for p in index.iterdir() if p.name.startswith(".tmp-gen-")]
        with Library.open(index, verify=True) as lib:
            assert lib.n_tracks == MAIN_TRACKS + 2
        assert identified(index, Path(added[1])) == added[1]
        remove_from_index(index, added)
    assert MAIN_TRACKS in outcomes


def test_an_old_reader_refuses_a_delta_and_a_broken_chain_is_one_line(lib_root: Path) -> None:
    index = lib_root / "index"
    add_to_index(index, new_files(lib_root)[:1], encoder=FakeEncoder(), config=DELTA)
    shutil.rmtree(index / "gen-000001")
    with pytest.raises(LibraryError, match="gen-000001, which does not exist"):
        Library.open(index)
    assert main(["index", "stats", "--index", str(index)]) == 2
