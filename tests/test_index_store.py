"""The on-disk library: layout, Library read API, checksums, and clear errors."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest
from fakes import FakeEncoder, write_good_library

from synesthete.constants import WINDOW_SAMPLES
from synesthete.errors import LibraryError
from synesthete.events import TrackInfo
from synesthete.index import store
from synesthete.index.builder import build_index, index_stats
from synesthete.index.config import IndexConfig
from synesthete.index.decode import load_mono_16k
from synesthete.index.protocols import CurveLibrary
from synesthete.index.store import Library
from synesthete.inference import augment
from synesthete.stream.windowing import window_audio

HOP_SAMPLES = 8000  # the default 0.5 s index hop at 16 kHz


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    files = write_good_library(root / "music", duration_s=9.0)
    build_index(root / "index", [root / "music"], encoder=FakeEncoder(), config=IndexConfig())
    return root / "index", files


def test_layout_on_disk(index):
    index_dir, files = index
    assert (index_dir / "CURRENT").read_text() == "gen-000001\n"
    gen = index_dir / "gen-000001"
    names = sorted(p.name for p in gen.iterdir())
    # The compact layout: int8 windows; FakeEncoder's D=32 is at most
    # the ANN's 32 axes, so no projection file. FakeEncoder has no similarity head:
    # the sonic map is stored, its curves are the windows themselves (no sonic.npy).
    assert names == [
        "library.sqlite",
        "manifest.json",
        "sonic_map.npy",
        "sonic_placer.npz",
        "sonic_tracks.npy",
        "windows.ann",
        "windows.npy",
    ]
    assert not [p for p in index_dir.iterdir() if p.name.startswith(".tmp-gen-")]
    manifest = json.loads((gen / "manifest.json").read_text())
    assert manifest["n_tracks"] == len(files)
    assert set(manifest["files"]) == {
        "library.sqlite",
        "sonic_map.npy",
        "sonic_placer.npz",
        "sonic_tracks.npy",
        "windows.ann",
        "windows.npy",
    }
    connection = sqlite3.connect(f"{gen.joinpath('library.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in connection.execute("PRAGMA table_info(tracks)")]
        assert columns == [
            "id",
            "path",
            "title",
            "artist",
            "album",
            "duration_s",
            "content_hash",
            "window_start",
            "window_count",
            "added",
        ]
        variant_columns = [row[1] for row in connection.execute("PRAGMA table_info(variants)")]
        assert variant_columns == ["track_id", "variant", "window_start", "window_count"]
        n_variant_rows = connection.execute("SELECT COUNT(*) FROM variants").fetchone()[0]
        version_columns = [row[1] for row in connection.execute("PRAGMA table_info(versions)")]
        assert version_columns == ["track_a", "track_b", "coverage_a", "coverage_b"]
        # Six different tone tracks: no two hold the same music.
        assert connection.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == 0
        meta = dict(connection.execute("SELECT key, value FROM meta"))
    finally:
        connection.close()
    assert meta["encoder_name"] == "fake-v1"
    assert meta["dim"] == "32"
    assert meta["format_version"] == "3"
    assert (meta["windows_dtype"], meta["ann_stride"], meta["ann_dim"]) == ("int8", "4", "0")
    assert json.loads(meta["speed_variants"]) == [0.94, 1.06]
    assert n_variant_rows == 2 * len(files)
    assert {"index_hop_s", "n_trees", "seed", "created"} <= set(meta)
    windows = np.load(gen / "windows.npy")
    assert windows.dtype == np.int8 and windows.shape == (manifest["n_windows"], 32)


def test_library_read_api(index):
    index_dir, files = index
    with Library.open(index_dir) as lib:
        library: CurveLibrary = lib
        assert library.index_hop_s == 0.5
        assert lib.encoder_name == "fake-v1" and lib.dim == 32
        tracks = lib.tracks()
        assert [t.id for t in tracks] == list(range(1, len(files) + 1))
        assert [t.path for t in tracks] == [str(p) for p in files]
        assert lib.info(1) == TrackInfo(
            id=1,
            path=str(files[0]),
            title="01 First Song",
            artist=None,
            album="Album One",
            duration_s=pytest.approx(9.0, abs=0.05),
        )
        assert lib.speeds == (1.0, 0.94, 1.06)
        total = 0
        for track in tracks:
            audio = load_mono_16k(track.path)
            for variant, speed in enumerate(lib.speeds):
                curve = lib.curve(track.id, variant)
                # Played at ``speed`` the track lasts n / speed samples.
                expected_m = 1 + (round(audio.shape[0] / speed) - WINDOW_SAMPLES) // HOP_SAMPLES
                assert curve.shape == (expected_m, 32), (track.path, speed)
                assert not curve.flags.writeable
                np.testing.assert_allclose(np.linalg.norm(curve, axis=1), 1.0, atol=1e-5)
                total += expected_m
        assert lib.n_windows == total
        with pytest.raises(LibraryError, match="no speed variant 3"):
            lib.curve(1, 3)
        # The stored curve is the encoder's output over the decoded file's windows.
        audio = load_mono_16k(files[2])
        windows = window_audio(audio, window_samples=WINDOW_SAMPLES, hop_samples=HOP_SAMPLES)
        expected = FakeEncoder().embed(np.ascontiguousarray(windows))
        # int8 storage: each component within half a step of the row's peak / 127.
        np.testing.assert_allclose(lib.curve(3), expected, atol=0.01)
        # A variant is the same file played faster or slower, as augment.speed plays it;
        # the streaming resampler and the one-shot one agree away from the ends.
        fast = augment.speed(audio, sample_rate_hz=16000, factor=1.06)
        windows = window_audio(fast, window_samples=WINDOW_SAMPLES, hop_samples=HOP_SAMPLES)
        expected = FakeEncoder().embed(np.ascontiguousarray(windows))
        np.testing.assert_allclose(lib.curve(3, 2)[:-1], expected[:-1], atol=0.01)


def test_a_generation_without_a_versions_table_has_no_versions(index, tmp_path):
    """Generations written before version detection still open, with no pairs."""
    index_dir, files = index
    copy = tmp_path / "library.sqlite"
    shutil.copy(index_dir / "gen-000001" / "library.sqlite", copy)
    connection = sqlite3.connect(copy)
    connection.execute("DROP TABLE versions")
    connection.commit()
    connection.close()
    _meta, records, pairs = store._read_sqlite(copy)
    assert len(records) == len(files) and pairs == []
    with Library.open(index_dir) as lib:
        assert lib.version_pairs == ()
        assert all(lib.versions(r.id) == frozenset() for r in lib.records())
        with pytest.raises(LibraryError, match="no track with id 99"):
            lib.versions(99)


def test_track_of_row(index):
    index_dir, _ = index
    with Library.open(index_dir) as lib:
        row = 0
        for record in sorted(lib.records(), key=lambda r: r.window_start):
            assert record.window_start == row
            slices = [(record.window_start, record.window_count), *record.variant_slices]
            for variant, (start, count) in enumerate(slices):
                assert start == row  # a track's variants follow its own windows
                for j in range(count):
                    assert lib.track_of_row(row + j) == (record.id, j, variant)
                row += count
        assert row == lib.n_windows
        ids, windows, variants = lib.tracks_of_rows(np.arange(lib.n_windows))
        assert ids.shape == windows.shape == variants.shape == (lib.n_windows,)
        with pytest.raises(LibraryError):
            lib.track_of_row(lib.n_windows)


def test_candidates_find_the_track_of_a_live_excerpt(index):
    index_dir, files = index
    encoder = FakeEncoder()
    with Library.open(index_dir) as lib:
        annoy = lib.candidates()
        exact = lib.brute_force()
        for track_id, path in enumerate(files, start=1):
            audio = load_mono_16k(path)
            start = 12_345  # off the 0.5 s grid, between windows 1 and 2
            live = encoder.embed(audio[None, start : start + WINDOW_SAMPLES])
            [neighbors] = annoy.query(live, k=5)
            assert neighbors[0].track_id == track_id
            assert neighbors[0].window_index in (1, 2)
            [truth] = exact.query(live, k=5)
            # The coarse ANN's hits, refined on the stored curves, start with the exact
            # nearest window, and every distance is the exact one to the window named.
            assert (neighbors[0].track_id, neighbors[0].window_index) == (
                truth[0].track_id,
                truth[0].window_index,
            )
            for n in neighbors:
                stored = lib.curve(n.track_id, n.variant)[n.window_index]
                assert n.distance == pytest.approx(
                    float(np.linalg.norm(stored - live[0])), abs=1e-5
                )
            distances = [n.distance for n in neighbors]
            assert distances == sorted(distances)


def test_unknown_track_and_closed_library(index):
    index_dir, _ = index
    lib = Library.open(index_dir)
    with pytest.raises(LibraryError, match="no track with id 99"):
        lib.info(99)
    lib.close()
    with pytest.raises(LibraryError, match="closed"):
        lib.curve(1)


def test_verify_passes_then_catches_corruption(index, tmp_path):
    index_dir, _ = index
    with Library.open(index_dir) as lib:
        lib.verify()
    for name in ("windows.npy", "windows.ann", "library.sqlite"):
        copy = tmp_path / name
        shutil.copytree(index_dir, copy)
        target = copy / "gen-000001" / name
        data = bytearray(target.read_bytes())
        data[-100] ^= 0xFF  # past the header: the file still opens
        target.write_bytes(bytes(data))
        with Library.open(copy, verify=False) as lib, pytest.raises(LibraryError) as info:
            lib.verify()
        assert name in str(info.value) and "checksum" in str(info.value)
        with pytest.raises(LibraryError, match="checksum"):
            Library.open(copy, verify=True)
        # A small index is verified whenever it is opened (VERIFY_ON_OPEN_MAX_BYTES).
        with pytest.raises(LibraryError, match="checksum"):
            Library.open(copy)


def test_large_index_gets_size_checks_on_open_and_full_checks_on_request(
    index, tmp_path, monkeypatch
):
    index_dir, _ = index
    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    target = copy / "gen-000001" / "windows.npy"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr(store, "VERIFY_ON_OPEN_MAX_BYTES", 0)
    Library.open(copy).close()  # same size: too costly to catch on every open
    with pytest.raises(LibraryError, match="checksum"):
        index_stats(copy, verify=True)
    target.write_bytes(bytes(data[:-512]))
    with pytest.raises(LibraryError, match=r"windows\.npy: \d+ bytes, the manifest says"):
        Library.open(copy)


def one_line_error(path):
    with pytest.raises(LibraryError) as info:
        Library.open(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_or_broken_index_gives_one_line_errors(index, tmp_path):
    index_dir, _ = index
    assert "does not exist" in one_line_error(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert "no CURRENT" in one_line_error(tmp_path / "empty")

    broken = tmp_path / "broken"
    shutil.copytree(index_dir, broken)
    (broken / "CURRENT").write_text("gen-000042\n")
    assert "gen-000042" in one_line_error(broken)
    (broken / "CURRENT").write_text("../../etc\n")
    assert "corrupt" in one_line_error(broken)
    (broken / "CURRENT").write_text("gen-000001\n")
    (broken / "gen-000001" / "windows.ann").unlink()
    assert "windows.ann is missing" in one_line_error(broken)

    bad_sqlite = tmp_path / "bad_sqlite"
    shutil.copytree(index_dir, bad_sqlite)
    (bad_sqlite / "gen-000001" / "library.sqlite").write_bytes(b"not a database" * 100)
    assert "library.sqlite" in one_line_error(bad_sqlite)

    bad_npy = tmp_path / "bad_npy"
    shutil.copytree(index_dir, bad_npy)
    np.save(bad_npy / "gen-000001" / "windows.npy", np.zeros((3, 32), dtype=np.float32))
    assert "windows.npy" in one_line_error(bad_npy)
