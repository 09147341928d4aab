"""Cover art: pictures embedded with mutagen, extracted at build time, kept in the
generation's sqlite, carried through add and remove, served over real HTTP.

Real files (MP3 with ID3 APIC frames, FLAC picture blocks, Ogg Vorbis
``METADATA_BLOCK_PICTURE``), the real builder and store (``FakeEncoder``
embeddings), and a real ``WebsocketServer`` on a localhost port.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEncoder, embed_picture, png_bytes, write_tone_file

from synesthete.clients.server import ServerConfig, WebsocketServer
from synesthete.index.art import ART_MAX_BYTES, read_cover_art
from synesthete.index.builder import add_to_index, build_index, index_stats, remove_from_index
from synesthete.index.config import IndexConfig
from synesthete.index.store import Library

DURATION_S = 6.0
FRONT = png_bytes(64, 48, seed=1)
BACK = png_bytes(32, 32, seed=2)
OTHER_FRONT = png_bytes(40, 40, seed=3)
CONFIG = IndexConfig(speed_variants=())


def _tone(path: Path, seed: int) -> Path:
    return write_tone_file(path, seed=seed, duration_s=DURATION_S, sample_rate_hz=22_050)


@pytest.fixture
def music(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "music"
    files = {
        "mp3": _tone(folder / "a.mp3", 1),  # a back cover first, then the front cover
        "flac": _tone(folder / "b.flac", 2),
        "ogg": _tone(folder / "c.ogg", 3),  # the same front cover as a.mp3: stored once
        "plain": _tone(folder / "d.wav", 4),
        "huge": _tone(folder / "e.flac", 5),
        "fake": _tone(folder / "f.flac", 6),
    }
    embed_picture(files["mp3"], BACK, mime="image/png", kind=4)
    embed_picture(files["mp3"], FRONT, mime="image/png", kind=3)
    embed_picture(files["flac"], OTHER_FRONT, mime="image/png", kind=3)
    embed_picture(files["ogg"], FRONT, mime="image/png", kind=3)
    # Over the limit: left out rather than stored.
    embed_picture(files["huge"], FRONT + b"\0" * ART_MAX_BYTES, mime="image/png")
    # The tag says JPEG, the bytes are text: not an image a browser shows.
    embed_picture(files["fake"], b"not a picture at all" * 10, mime="image/jpeg")
    return files


def _ids(lib: Library) -> dict[str, int]:
    return {Path(r.path).name: r.id for r in lib.records()}


def test_read_cover_art_picks_the_front_cover_of_each_format(music: dict[str, Path]) -> None:
    assert read_cover_art(music["mp3"]).data == FRONT  # type: ignore[union-attr]
    assert read_cover_art(music["flac"]).data == OTHER_FRONT  # type: ignore[union-attr]
    ogg = read_cover_art(music["ogg"])
    assert ogg is not None and ogg.mime == "image/png" and ogg.data == FRONT
    for name in ("plain", "huge", "fake"):
        assert read_cover_art(music[name]) is None, name
    # Not an audio file at all: no art, no exception.
    text = music["plain"].with_name("notes.mp3")
    text.write_text("hello\n" * 100)
    assert read_cover_art(text) is None


def test_build_stores_each_picture_once_and_add_remove_keep_it(
    music: dict[str, Path], tmp_path: Path
) -> None:
    index = tmp_path / "index"
    build_index(index, [tmp_path / "music"], encoder=FakeEncoder(), config=CONFIG)
    with Library.open(index) as lib:
        ids = _ids(lib)
        assert lib.art(ids["a.mp3"]).data == FRONT  # type: ignore[union-attr]
        assert lib.art(ids["c.ogg"]).data == FRONT  # type: ignore[union-attr]
        assert lib.art(ids["b.flac"]).data == OTHER_FRONT  # type: ignore[union-attr]
        for name in ("d.wav", "e.flac", "f.flac"):
            assert lib.art(ids[name]) is None, name
        infos = {Path(t.path).name: t for t in lib.tracks()}
        assert infos["a.mp3"].has_art and not infos["d.wav"].has_art
        assert infos["a.mp3"].to_payload()["has_art"] is True
        assert infos["d.wav"].to_payload()["has_art"] is False
        sqlite_path = lib.generation_dir / "library.sqlite"
    with sqlite3.connect(sqlite_path) as db:
        assert db.execute("SELECT count(*) FROM art").fetchone() == (2,)
    stats = index_stats(index)
    assert (stats["tracks_with_art"], stats["pictures"]) == (3, 2)
    assert not any(p.name == "art.part" for p in (index / "gen-000001").iterdir())

    # add: carried tracks keep their art, and a new file brings its own.
    new = _tone(tmp_path / "more" / "g.flac", 7)
    embed_picture(new, BACK, mime="image/png")
    add_to_index(index, [new.parent], encoder=FakeEncoder(), config=CONFIG)
    with Library.open(index) as lib:
        ids = _ids(lib)
        assert lib.art(ids["a.mp3"]).data == FRONT  # type: ignore[union-attr]
        assert lib.art(ids["g.flac"]).data == BACK  # type: ignore[union-attr]
        assert lib.art(ids["d.wav"]) is None
    # remove: the others keep theirs.
    remove_from_index(index, [str(music["mp3"])])
    with Library.open(index, verify=True) as lib:
        ids = _ids(lib)
        assert "a.mp3" not in ids
        assert lib.art(ids["c.ogg"]).data == FRONT  # type: ignore[union-attr]
        assert lib.art(ids["b.flac"]).data == OTHER_FRONT  # type: ignore[union-attr]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_server_serves_art_over_http(music: dict[str, Path], tmp_path: Path) -> None:
    index = tmp_path / "index"
    build_index(index, [tmp_path / "music"], encoder=FakeEncoder(), config=CONFIG)

    async def fetch_all(lib: Library, token: str | None) -> dict[str, Any]:
        config = ServerConfig(port=0, token=token)
        async with WebsocketServer(config=config, art=lib.art) as server:
            base = f"http://127.0.0.1:{server.port}"
            ids = _ids(lib)
            urls = {
                "front": f"{base}/art/{ids['a.mp3']}",
                "none": f"{base}/art/{ids['d.wav']}",
                "unknown": f"{base}/art/99999",
                "huge_id": f"{base}/art/{'9' * 30}",
                "not_id": f"{base}/art/abc",
            }
            got = {k: await asyncio.to_thread(_get, u) for k, u in urls.items()}
            etag = got["front"][1].get("ETag", "")
            got["again"] = await asyncio.to_thread(_get, urls["front"], {"If-None-Match": etag})
            if token is not None:
                got["with_token"] = await asyncio.to_thread(_get, f"{urls['front']}?token={token}")
            return got

    with Library.open(index) as lib:
        got = asyncio.run(fetch_all(lib, None))
        status, headers, body = got["front"]
        assert (status, headers["Content-Type"], body) == (200, "image/png", FRONT)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert got["again"][0] == 304
        for key in ("none", "unknown", "huge_id", "not_id"):
            status, _, body = got[key]
            assert status == 404, key
            assert b"Traceback" not in body and len(body) < 100, body
        # With --token the art needs it too, like the events.
        guarded = asyncio.run(fetch_all(lib, "s3cret"))
        assert guarded["front"][0] == 401
        assert guarded["with_token"][:1] == (200,) and guarded["with_token"][2] == FRONT


def test_server_without_a_library_answers_404(tmp_path: Path) -> None:
    async def fetch() -> tuple[int, dict[str, str], bytes]:
        async with WebsocketServer(config=ServerConfig(port=0)) as server:
            return await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/art/1")

    status, _, body = asyncio.run(fetch())
    assert status == 404 and b"Traceback" not in body


def test_index_stats_json_names_art(music: dict[str, Path], tmp_path: Path) -> None:
    index = tmp_path / "index"
    build_index(index, [music["plain"]], encoder=FakeEncoder(), config=CONFIG)
    stats = index_stats(index)
    assert json.loads(json.dumps(stats))["tracks_with_art"] == 0
