"""The "sounds like" vectors and the sonic map stored with each generation (index/sonic_store.py).

Real indexes built by the real builder (the ``FakeEncoder``'s, and the demo library's,
built with the packaged encoder and its similarity head), real UMAP, and a real
subprocess where umap-learn cannot be imported.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import DemoLibrary, cli_command, cli_env
from fakes import FakeEncoder, write_tone_file

from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.events import SoundsLike
from synesthete.index.builder import add_to_index, build_index, index_stats, remove_from_index
from synesthete.index.compact import StoredWindows
from synesthete.index.config import IndexConfig
from synesthete.index.similar import TrackSummaries
from synesthete.index.sonic import SonicHead
from synesthete.index.sonic_map import DEFAULT_MAP_SEED, fit_layout
from synesthete.index.sonic_store import (
    MAP_NAME,
    PLACER_NAME,
    SONIC_NAME,
    SONIC_TRACKS_NAME,
    read_sonic,
    write_sonic,
)
from synesthete.index.store import MANIFEST_NAME, SQLITE_NAME, Library, TrackRecord, sha256_file

TRACKS = 6


def tone_music(root: Path, *, tracks: int = TRACKS, first: int = 1) -> Path:
    for seed in range(first, first + tracks):
        write_tone_file(
            root / "music" / f"{seed}.wav",
            seed=seed,
            duration_s=16.0,
            sample_rate_hz=SAMPLE_RATE_HZ,
            channels=1,
        )
    return root / "music"


@pytest.fixture(scope="module")
def tone_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stored")
    build_index(root / "index", [tone_music(root)], encoder=FakeEncoder(), config=IndexConfig())
    return root / "index"


def test_a_generation_stores_its_map_and_reads_it_back(tone_index: Path) -> None:
    with Library.open(tone_index) as library:
        gen = library.generation_dir
        manifest = json.loads((gen / MANIFEST_NAME).read_text())
        for name in (SONIC_TRACKS_NAME, MAP_NAME, PLACER_NAME):
            assert name in manifest["files"], name  # checksummed like the other files
        assert not (gen / SONIC_NAME).exists()  # no head for the fake encoder: windows are
        stored = library.stored_sonic()
        assert stored is not None and stored.space == "fingerprint"
        assert stored.positions is not None and stored.placer is not None
        assert stored.positions.shape == (TRACKS, 2)
        summaries = library.summaries()
        # The stored layout is the one a fresh fit of the same means gives (same seed).
        fresh, _ = fit_layout(summaries.means, seed=DEFAULT_MAP_SEED)
        order = [list(stored.track_ids).index(t) for t in summaries.track_ids]
        np.testing.assert_allclose(stored.positions[order], fresh, atol=1e-6)
        # The placer puts each track's own mean near its own point.
        placed = stored.placer.place(summaries.means)
        own = np.linalg.norm(placed - stored.positions[order], axis=1)
        spread = np.linalg.norm(fresh[:, None] - fresh[None], axis=-1)
        assert float(np.median(own)) < float(np.median(spread[spread > 0]))
        assert library.meta["map"] == "stored"
    stats = index_stats(tone_index)
    assert stats["sonic_map"].startswith("stored (umap, seed 20261207")
    assert stats["sonic_vectors"].startswith("stored windows (fingerprint space")


def test_the_stored_map_is_deterministic_under_its_seed(tone_index: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_index(
        again / "index",
        [tone_music(again)],
        encoder=FakeEncoder(),
        config=IndexConfig(),
    )
    with Library.open(tone_index) as first, Library.open(again / "index") as second:
        for name in (MAP_NAME, PLACER_NAME, SONIC_TRACKS_NAME):
            assert (first.generation_dir / name).read_bytes() == (
                second.generation_dir / name
            ).read_bytes(), name


def test_add_and_remove_write_the_map_again_and_no_map_is_kept(tmp_path: Path) -> None:
    index = tmp_path / "index"
    build_index(
        index,
        [tone_music(tmp_path, tracks=5)],
        encoder=FakeEncoder(),
        config=IndexConfig(sonic_map=False),
    )
    with Library.open(index) as library:
        assert library.stored_sonic() is not None
        assert library.stored_sonic().positions is None  # type: ignore[union-attr]
        assert "not asked for (--no-map)" in library.sonic_status()["map"]
    # add and remove keep to --no-map...
    report = add_to_index(
        index, [tone_music(tmp_path / "more", tracks=1, first=9)], encoder=FakeEncoder()
    )
    assert report.indexed and not report.notes
    remove_from_index(index, ["1"])
    with Library.open(index) as library:
        assert library.meta["map"] == "skipped: not asked for (--no-map)"
    # ... until an add asks for it.
    add_to_index(
        index,
        [tone_music(tmp_path / "last", tracks=1, first=11)],
        encoder=FakeEncoder(),
        config=IndexConfig(),
    )
    with Library.open(index) as library:
        stored = library.stored_sonic()
        assert stored is not None and stored.positions is not None
        assert sorted(stored.track_ids.tolist()) == sorted(r.id for r in library.records())


def test_one_track_gets_no_map_and_stats_says_so(tmp_path: Path) -> None:
    report = build_index(
        tmp_path / "index",
        [tone_music(tmp_path, tracks=1)],
        encoder=FakeEncoder(),
        config=IndexConfig(),
    )
    # Indexing one file is no mistake: the build says nothing of a map nobody asked for.
    assert report.notes == []
    stats = index_stats(tmp_path / "index")["sonic_map"]
    assert "computed on demand" in stats and "a map needs at least two" in stats


def strip_to_an_older_generation(index: Path) -> None:
    """Make the live generation look as one written before the sonic files existed: their
    files, manifest entries and meta keys gone, the manifest's checksums made right."""
    with Library.open(index) as library:
        gen = library.generation_dir
    for name in (SONIC_NAME, SONIC_TRACKS_NAME, MAP_NAME, PLACER_NAME):
        (gen / name).unlink(missing_ok=True)
    connection = sqlite3.connect(gen / SQLITE_NAME)
    with connection:
        connection.execute("DELETE FROM meta WHERE key LIKE 'sonic%' OR key LIKE 'map%'")
    connection.close()
    manifest = json.loads((gen / MANIFEST_NAME).read_text())
    files = {
        name: {"sha256": sha256_file(gen / name), "bytes": (gen / name).stat().st_size}
        for name in manifest["files"]
        if (gen / name).exists()
    }
    manifest["files"] = files
    (gen / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_an_older_generation_still_works_and_stats_say_so(tone_index: Path, tmp_path: Path) -> None:
    from synesthete.clients.map import library_map

    old = tmp_path / "old"
    shutil.copytree(tone_index, old)
    strip_to_an_older_generation(old)
    with Library.open(old, verify=True) as library:
        assert library.stored_sonic() is None
        drawn = library_map(library)  # laid out on demand
        assert not drawn.stored
    with Library.open(tone_index) as library:
        stored_map = library_map(library)
        assert stored_map.stored
    # The same map either way: same means, same seed.
    np.testing.assert_allclose(drawn.positions, stored_map.positions, atol=1e-6)
    stats = index_stats(old)
    assert stats["sonic_map"].startswith("computed on demand (written before the index stored")
    assert stats["sonic_vectors"].startswith("computed when the index opens")


def test_stored_sonic_curves_rank_as_the_head_does(tmp_path: Path) -> None:
    """With a head, the stored curves (float16, one point every 2 s) give the summaries
    the head gives over the windows themselves."""
    rng = np.random.default_rng(5)
    dim, tracks, per_track = 8, 7, 40
    centres = rng.standard_normal((tracks, dim))
    windows = np.concatenate(
        [c + 0.3 * rng.standard_normal((per_track, dim)) for c in centres]
    ).astype(np.float32)
    windows /= np.linalg.norm(windows, axis=1, keepdims=True)
    head = SonicHead(
        encoder_name="fake-v1",
        w1=rng.standard_normal((dim, 16)).astype(np.float32),
        b1=rng.standard_normal(16).astype(np.float32),
        w2=rng.standard_normal((16, 4)).astype(np.float32),
        b2=rng.standard_normal(4).astype(np.float32),
    )
    records = [
        TrackRecord(
            id=t + 1,
            path=f"/m/{t}.wav",
            title=str(t),
            artist=None,
            album=None,
            duration_s=20.0,
            content_hash=str(t),
            window_start=t * per_track,
            window_count=per_track,
            added="",
        )
        for t in range(tracks)
    ]
    written = write_sonic(
        tmp_path,
        records=records,
        windows=StoredWindows(windows=windows),
        index_hop_s=0.5,
        head=head,
    )
    assert written.meta["sonic_hop_s"] == "2.0" and written.meta["map"] == "stored"
    stored = read_sonic(tmp_path, written.meta, head=head, n_tracks=tracks)
    assert stored is not None and stored.points is not None
    assert stored.points.shape == (tracks * per_track // 4, 4)
    from_store = TrackSummaries.from_windows(
        windows=stored.points,
        track_ids=stored.track_ids.tolist(),
        starts=stored.starts.tolist(),
        counts=stored.counts.tolist(),
        index_hop_s=stored.hop_s,
        head=head,
        through_head=True,
    )
    direct = TrackSummaries.from_windows(
        windows=windows,
        track_ids=[r.id for r in records],
        starts=[r.window_start for r in records],
        counts=[r.window_count for r in records],
        index_hop_s=0.5,
        head=head,
    )
    # Every 4th window (the 2 s sketch hop), in float16: means within 0.1, the same ranking.
    np.testing.assert_allclose(from_store.means, direct.means, atol=0.1)
    query = windows[3 * per_track + 10 : 3 * per_track + 18]
    assert [t for t, _ in from_store.nearest(query, k=3)] == [
        t for t, _ in direct.nearest(query, k=3)
    ]
    # Another head's vectors are not used.
    other = SonicHead(encoder_name="fake-v1", w1=head.w1 * 2, b1=head.b1, w2=head.w2, b2=head.b2)
    assert read_sonic(tmp_path, written.meta, head=other, n_tracks=tracks) is None


def test_demo_library_stores_sonic_vectors_and_live_audio_lands_on_its_track(
    demo_library: DemoLibrary,
) -> None:
    """The packaged encoder has a head: the demo index stores its sonic curves and map, and
    the recognizer places the live audio with the stored placer (``map_xy``)."""
    from synesthete.clients.app import open_engine

    stats = index_stats(demo_library.index)
    assert stats["sonic_vectors"].startswith("stored (sonic space")
    assert stats["sonic_map"].startswith("stored (umap")
    from synesthete.clients.map import library_map

    engine = open_engine(index_dir=demo_library.index)
    try:
        stored = engine.library.stored_sonic()
        assert stored is not None and stored.positions is not None and stored.points is not None
        assert engine.library.summaries().audio_head is not None  # the packaged head reads audio
        drawn = library_map(engine.library)
        assert drawn.stored and drawn.space == "sonic"
        position = {int(t): stored.positions[n] for n, t in enumerate(stored.track_ids)}
        by_title = {info.title: info.id for info in engine.library.tracks()}
        for n in (1, 5):
            recognizer = engine.recognizer(stream=f"track {n}", input_rate_hz=demo_library.rate_hz)
            audio = demo_library.audio(n)[: 30 * demo_library.rate_hz]
            events = recognizer.push(audio) + recognizer.flush()
            placed = [e.map_xy for e in events if isinstance(e, SoundsLike)]
            assert placed and all(xy is not None for xy in placed)
            xy = np.array(placed[-1])
            own = position[by_title[demo_library.titles[n]]]
            others = [p for t, p in position.items() if t != by_title[demo_library.titles[n]]]
            # Nearer its own track's point than to most of the others'.
            nearer = sum(np.linalg.norm(xy - own) < np.linalg.norm(xy - p) for p in others)
            assert nearer >= len(others) // 2, (xy, own)
            payload = next(e for e in events if isinstance(e, SoundsLike)).to_payload()
            assert len(payload["map_xy"]) == 2
    finally:
        engine.close()


def test_build_without_umap_skips_the_map_with_one_line(tmp_path: Path) -> None:
    """A real CLI build where umap-learn cannot be imported (a package of that name that
    raises ImportError, first on the path, as when the [map] extra is not installed)."""
    shadow = tmp_path / "shadow" / "umap"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named umap')\n")
    music = tone_music(tmp_path, tracks=5)
    env = cli_env(PYTHONPATH=f"{shadow.parent}")
    done = subprocess.run(
        cli_command("index", "build", "--index", str(tmp_path / "index"), str(music), "--quiet"),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "sonic map" in line]
    assert notes == [
        "synesthete: sonic map: not stored, umap-learn is not installed"
        " (pip install 'synesthete[map]'; 'synesthete map' needs it too)"
    ], done.stderr
    assert "Traceback" not in done.stderr
    stats = subprocess.run(
        cli_command("index", "stats", "--index", str(tmp_path / "index"), "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "umap-learn is not installed" in json.loads(stats.stdout)["sonic_map"]
    # Sounds like still works, and 'map' says what is missing in one line.
    drawn = subprocess.run(
        cli_command("map", "--index", str(tmp_path / "index"), "--out", str(tmp_path / "m.png")),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert drawn.returncode == 2
    assert drawn.stderr.strip().splitlines() == [
        "synesthete: error: the sonic map needs umap-learn: pip install 'synesthete[map]'"
        " (bash scripts/setup.sh installs it)"
    ]
