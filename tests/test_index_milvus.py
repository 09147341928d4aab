"""Milvus as the vector store: a real Milvus Lite file (pymilvus) beside the index folder.

The matcher, events and CLI are the same: only where the nearest-window search runs moves.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess

import numpy as np
import pytest
from conftest import build_index_cli, cli_command, cli_env
from fakes import FakeEncoder, write_good_library

from synesthete.constants import WINDOW_SAMPLES
from synesthete.errors import ConfigError, LibraryError
from synesthete.index.builder import add_to_index, build_index, index_stats, remove_from_index
from synesthete.index.config import IndexConfig
from synesthete.index.decode import load_mono_16k
from synesthete.index.milvus_store import _connect, parse_vector_store
from synesthete.index.store import Library

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


def test_vector_store_names_are_parsed_or_refused(tmp_path):
    assert parse_vector_store("annoy").kind == "annoy"
    lite = parse_vector_store(f"milvus://{tmp_path}/a/../v.db")
    assert lite.is_lite and lite.uri == str(tmp_path / "v.db")
    server = parse_vector_store("milvus://db.example:19531")
    assert not server.is_lite and server.uri == "http://db.example:19531"
    assert parse_vector_store("milvus://db.example").uri == "http://db.example:19530"
    for bad in ("faiss", "milvus:///tmp/x.sqlite", "milvus://host:port"):
        with pytest.raises(ConfigError):
            parse_vector_store(bad)


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    root = tmp_path_factory.mktemp("milvus")
    files = write_good_library(root / "music", duration_s=9.0)
    store = parse_vector_store(f"milvus://{root}/vectors.db")
    build_index(
        root / "milvus-index",
        [root / "music"],
        encoder=FakeEncoder(),
        config=IndexConfig(),
        vector_store=store,
    )
    build_index(root / "annoy-index", [root / "music"], encoder=FakeEncoder(), config=IndexConfig())
    return root, files, store


def test_a_milvus_index_finds_what_the_annoy_one_finds(libraries):
    root, files, store = libraries
    gen = root / "milvus-index" / "gen-000001"
    assert not (gen / "windows.ann").exists()
    stats = index_stats(root / "milvus-index")
    assert stats["vector_store"] == store.text
    encoder = FakeEncoder()
    with Library.open(root / "milvus-index") as lib, Library.open(root / "annoy-index") as ref:
        assert lib.meta["milvus_collection"].startswith("synesthete_")
        milvus, annoy = lib.candidates(), ref.candidates()
        for track_id, path in enumerate(files, start=1):
            audio = load_mono_16k(path)
            live = encoder.embed(audio[None, 12_345 : 12_345 + WINDOW_SAMPLES])
            [found] = milvus.query(live, k=5)
            [truth] = annoy.query(live, k=5)
            assert found[0].track_id == track_id
            assert (found[0].track_id, found[0].window_index, found[0].variant) == (
                truth[0].track_id,
                truth[0].window_index,
                truth[0].variant,
            )
            assert found[0].distance == pytest.approx(truth[0].distance, abs=1e-6)


def test_add_and_remove_keep_the_store_and_drop_collections_no_longer_read(libraries, tmp_path):
    _root, files, store = libraries
    index = tmp_path / "index"
    build_index(index, files[:3], encoder=FakeEncoder(), config=IndexConfig(), vector_store=store)
    with Library.open(index) as lib:
        first = lib.meta["milvus_collection"]
    add_to_index(index, files[3:], encoder=FakeEncoder())
    remove_from_index(index, ["2"])
    with Library.open(index) as lib:
        assert lib.vector_store == store and lib.n_tracks == len(files) - 1
        newest = lib.meta["milvus_collection"]
        [found] = lib.candidates().query(lib.curve(5)[3][None, :], k=3)
        assert found[0].track_id == 5
    client = _connect(store)
    try:
        assert client.has_collection(newest)
        # Three generations written, two kept on disk: the first one's collection is gone.
        assert not client.has_collection(first)
    finally:
        client.close()


def test_an_add_as_a_delta_inserts_only_the_new_tracks_into_its_own_collection(libraries, tmp_path):
    """A delta add writes the new tracks' items alone, to a collection of its own; the
    library searches both; compact merges them and drops what no kept generation reads."""
    from synesthete.index.builder import compact_index

    _root, files, store = libraries
    index = tmp_path / "index"
    build_index(index, files[:4], encoder=FakeEncoder(), config=IndexConfig(), vector_store=store)
    with Library.open(index) as lib:
        main_collection = lib.meta["milvus_collection"]
    report = add_to_index(
        index, files[4:], encoder=FakeEncoder(), config=IndexConfig(delta_fraction=1.0)
    )
    assert report.delta
    with Library.open(index) as lib:
        assert lib.parts == ("gen-000001", "gen-000002")
        source = lib.candidates()
        for track_id in (2, 5, 6):
            [found] = source.query(lib.curve(track_id)[3][None, :], k=3)
            assert found[0].track_id == track_id
        stride = lib.layout.ann_stride
        new_items = sum(
            len(range(0, n, stride)) for r in lib.records() if r.id > 4 for _, n in r.slices
        )
    with sqlite3.connect(index / "gen-000002" / "library.sqlite") as connection:
        delta_collection = dict(connection.execute("SELECT key, value FROM meta"))[
            "milvus_collection"
        ]
    assert delta_collection != main_collection
    client = _connect(store)
    try:
        assert client.get_collection_stats(delta_collection)["row_count"] == new_items
    finally:
        client.close()
    compact_index(index)
    add_to_index(index, [files[0]], encoder=FakeEncoder())  # unchanged: nothing written
    remove_from_index(index, ["6"])
    client = _connect(store)
    try:
        assert not client.has_collection(main_collection)
        assert not client.has_collection(delta_collection)
    finally:
        client.close()


def test_a_missing_collection_is_one_line(libraries, tmp_path):
    _root, files, store = libraries
    index = tmp_path / "index"
    build_index(index, files[:2], encoder=FakeEncoder(), config=IndexConfig(), vector_store=store)
    with Library.open(index) as lib:
        collection = lib.meta["milvus_collection"]
    client = _connect(store)
    client.drop_collection(collection)
    client.close()
    with Library.open(index) as lib, pytest.raises(LibraryError, match="rebuild the index"):
        lib.candidates()


def test_cli_build_and_identify_through_milvus_lite(demo_library, tmp_path):
    index = tmp_path / "index"
    build = build_index_cli(
        index, demo_library.root / "music", "--vector-store", f"milvus://{tmp_path}/v.db"
    )
    assert "build: indexed 8 files" in build.stdout
    excerpt = demo_library.excerpt(3, start_s=12.0, seconds=14.0)
    done = subprocess.run(
        cli_command("identify", "--index", str(index), str(excerpt)),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    playing = [e for e in events if e["type"] == "now_playing"]
    assert playing and playing[-1]["track"]["title"] == demo_library.titles[3]


def test_an_unreachable_milvus_server_is_one_line(demo_library, tmp_path):
    done = subprocess.run(
        cli_command(
            "index",
            "build",
            "--index",
            str(tmp_path / "index"),
            str(demo_library.root / "music" / "00.flac"),
            "--quiet",
            "--vector-store",
            "milvus://127.0.0.1:9",
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "milvus://127.0.0.1:9: cannot reach Milvus" in lines[0], lines
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "index" / "CURRENT").exists()
    bad = subprocess.run(
        cli_command(
            "index", "build", "--index", str(tmp_path / "i2"), "x", "--vector-store", "faiss"
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode != 0 and "vector store must be" in bad.stderr
    assert np.all([not line.startswith("Traceback") for line in bad.stderr.splitlines()])
