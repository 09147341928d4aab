"""The compact layout: int8 curves, a coarse projected Annoy refined on them, old formats.

Real sqlite, numpy and Annoy files in tmp_path; curves are seeded random walks on the
unit sphere (neighbouring windows close, tracks apart), like an encoder's curves.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest

from synesthete.errors import ConfigError, LibraryError
from synesthete.index.builder import index_stats, remove_from_index
from synesthete.index.compact import (
    COMPACT_LAYOUT,
    FULL_LAYOUT,
    StoredWindows,
    StoreLayout,
    dequantize_rows,
    fit_projection,
    quantize_rows,
)
from synesthete.index.store import GenerationWriter, Library, TrackRecord

DIM = 64
TRACKS = 12
WINDOWS = 70
SPEEDS = (0.94, 1.06)


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def walk(rng, m):
    """A curve of ``m`` unit windows drifting slowly, as an encoder's windows along a track."""
    steps = rng.normal(0.0, 0.25, (m, DIM)).astype(np.float32)
    return unit(rng.normal(0.0, 1.0, DIM)[None, :] + np.cumsum(steps, axis=0) * 0.3)


@pytest.fixture(scope="module")
def curves():
    rng = np.random.default_rng(11)
    out = {}
    for track_id in range(1, TRACKS + 1):
        own = walk(rng, WINDOWS)
        variants = [unit(own + rng.normal(0, 0.05, own.shape)) for _ in SPEEDS]
        out[track_id] = (own, variants)
    return out


def write_index(index_dir, curves, layout, *, n_trees=8):
    with GenerationWriter(
        index_dir=index_dir, dim=DIM, speed_variants=SPEEDS, layout=layout
    ) as writer:
        for track_id, (own, variants) in curves.items():
            record = TrackRecord(
                id=track_id,
                path=f"/music/track{track_id:02d}.flac",
                title=f"Track {track_id}",
                artist=None,
                album=None,
                duration_s=WINDOWS * 0.5 + 3.5,
                content_hash=f"hash{track_id}",
                window_start=0,
                window_count=0,
                added="2026-12-07T00:00:00+00:00",
            )
            writer.add_track(record, own, variants)
        writer.commit(
            meta={"encoder_name": "walk-v1", "index_hop_s": "0.5"}, n_trees=n_trees, seed=5
        )
    return index_dir


def live_queries(curves, rng, *, n=120, noise=0.04):
    """Points between two stored windows of a track's own curve, with noise: (track, [D])."""
    out = []
    for _ in range(n):
        track_id = int(rng.integers(1, TRACKS + 1))
        own = curves[track_id][0]
        j = int(rng.integers(0, WINDOWS - 1))
        out.append((track_id, j, unit(own[j] + own[j + 1] + rng.normal(0, noise, DIM))))
    return out


def test_int8_rows_round_trip_and_requantise_to_the_same_integers():
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(500, DIM)))
    q = quantize_rows(x)
    assert q.dtype == np.int8
    assert np.abs(q).max() == 127 and q.min() >= -127
    back = dequantize_rows(q)
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-5)
    # The distances the matcher reads move by far less than a match's 0.05-0.3.
    assert np.abs(np.linalg.norm(back - x, axis=1)).max() < 0.01
    again = quantize_rows(back)
    np.testing.assert_array_equal(again, q)


def test_projection_is_orthonormal_and_deterministic():
    rng = np.random.default_rng(2)
    stored = StoredWindows(windows=unit(rng.normal(size=(3000, DIM))))
    projection = fit_projection(stored, dim=16, chunk_rows=700)
    assert projection.shape == (17, DIM)
    axes = projection[:-1]
    np.testing.assert_allclose(axes @ axes.T, np.eye(16), atol=1e-5)
    np.testing.assert_array_equal(projection, fit_projection(stored, dim=16))
    np.testing.assert_allclose(projection[-1], stored.raw.mean(axis=0), atol=1e-5)


def test_layout_settings_are_checked():
    with pytest.raises(ConfigError, match="ann_stride"):
        StoreLayout(ann_stride=0)
    with pytest.raises(ConfigError, match="windows_dtype"):
        StoreLayout(windows_dtype="float16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ann_dim"):
        StoreLayout(ann_dim=-1)
    assert FULL_LAYOUT.is_full and not COMPACT_LAYOUT.is_full
    assert COMPACT_LAYOUT.for_dim(32).ann_dim == 0


def test_compact_index_finds_what_the_full_one_finds(tmp_path, curves):
    layout = StoreLayout(windows_dtype="int8", ann_stride=4, ann_dim=16, n_trees=8)
    compact = write_index(tmp_path / "compact", curves, layout)
    full = write_index(tmp_path / "full", curves, FULL_LAYOUT, n_trees=16)
    names = sorted(p.name for p in (compact / "gen-000001").iterdir())
    assert names == [
        "ann_projection.npy",
        "library.sqlite",
        "manifest.json",
        "sonic_tracks.npy",
        "windows.ann",
        "windows.npy",
    ]
    size = {
        name: sum(p.stat().st_size for p in (root / "gen-000001").iterdir())
        for name, root in (("compact", compact), ("full", full))
    }
    assert size["compact"] < size["full"] / 2
    rng = np.random.default_rng(3)
    with Library.open(compact) as small, Library.open(full) as big:
        assert small.layout == layout and big.layout.is_full
        source, exact = small.candidates(), big.brute_force()
        agree = 0
        queries = live_queries(curves, rng)
        for track_id, _j, q in queries:
            [found] = source.query(q[None, :], k=8)
            [truth] = exact.query(q[None, :], k=8)
            assert found[0].track_id == track_id
            agree += (found[0].track_id, found[0].window_index) == (
                truth[0].track_id,
                truth[0].window_index,
            )
            # Exact distances to the stored windows the neighbours name.
            for n in found:
                stored = small.curve(n.track_id, n.variant)[n.window_index]
                assert n.distance == pytest.approx(float(np.linalg.norm(stored - q)), abs=1e-5)
            assert truth[0].distance == pytest.approx(found[0].distance, abs=0.01)
        assert agree >= 0.95 * len(queries)


def test_remove_copies_int8_curves_exactly(tmp_path, curves):
    index = write_index(tmp_path / "index", curves, COMPACT_LAYOUT)
    with Library.open(index) as before:
        kept = {
            r.id: before.stored_windows.raw[r.window_start : r.window_start + r.window_count].copy()
            for r in before.records()
        }
    report = remove_from_index(index, ["3"])
    assert report.generation == "gen-000002"
    with Library.open(index) as after:
        assert after.layout.to_meta() == COMPACT_LAYOUT.to_meta()
        for record in after.records():
            start = record.window_start
            stored = after.stored_windows.raw[start : start + record.window_count]
            np.testing.assert_array_equal(stored, kept[record.id])
        assert 3 not in {r.id for r in after.records()}


def make_format_2(index):
    """Turn a full-layout generation into what format 2 wrote: no layout keys, format 2."""
    gen = index / "gen-000001"
    connection = sqlite3.connect(gen / "library.sqlite")
    with connection:
        connection.execute(
            "DELETE FROM meta WHERE key IN ('windows_dtype', 'ann_stride', 'ann_dim')"
        )
        connection.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    connection.close()
    manifest = json.loads((gen / "manifest.json").read_text())
    data = (gen / "library.sqlite").read_bytes()
    manifest["files"]["library.sqlite"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    manifest["format_version"] = 2
    (gen / "manifest.json").write_text(json.dumps(manifest))


def test_a_format_2_index_opens_and_stats_say_a_rebuild_would_shrink_it(tmp_path, curves):
    old = write_index(tmp_path / "old", curves, FULL_LAYOUT, n_trees=16)
    make_format_2(old)
    rng = np.random.default_rng(4)
    with Library.open(old, verify=True) as lib:
        assert lib.meta["format_version"] == "2" and lib.layout.is_full
        source = lib.candidates()
        for track_id, _j, q in live_queries(curves, rng, n=20):
            [found] = source.query(q[None, :], k=8)
            assert found[0].track_id == track_id
    stats = index_stats(old)
    assert stats["format_version"] == 2
    assert "format 2 stores float32 windows" in stats["rebuild"]
    assert "'index build' again writes the compact layout" in stats["rebuild"]
    new = write_index(tmp_path / "new", curves, COMPACT_LAYOUT)
    compact_stats = index_stats(new)
    assert "rebuild" not in compact_stats
    assert compact_stats["layout"].startswith("int8 windows; ANN over every 4th window")
    assert set(compact_stats["mb_per_hour_by_file"]) == {
        "library.sqlite",
        "manifest.json",
        "sonic_tracks.npy",
        "windows.ann",
        "windows.npy",
        "ann_projection.npy",
    }
    assert compact_stats["mb_per_hour"] < stats["mb_per_hour"] / 2


def test_a_damaged_projection_file_is_one_line(tmp_path, curves):
    index = write_index(tmp_path / "index", curves, COMPACT_LAYOUT)
    target = index / "gen-000001" / "ann_projection.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x40
    target.write_bytes(bytes(data))
    with pytest.raises(LibraryError, match=r"ann_projection\.npy: checksum mismatch"):
        Library.open(index)
    target.unlink()
    with pytest.raises(LibraryError, match=r"ann_projection\.npy"):
        Library.open(index)
