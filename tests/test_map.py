"""The sonic map: layout (index/sonic_map.py), ``synesthete map`` and the live ``/map`` page.

The live test drives real headless Chromium against a real ``synesthete listen --serve``
that replays one file holding two library tracks back to back: the dot must move
between two screenshots as the input changes track. ``SYNESTHETE_UPDATE_SCREENSHOT=1``
also refreshes ``docs/map-live.png``, the README's picture.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import DemoLibrary, Listener, cli_command, cli_env, free_port
from fakes import build_tone_index

from synesthete.errors import LibraryError
from synesthete.index.sonic_map import layout, place, trustworthiness

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 90_000


def clustered(seed: int, *, groups: int = 4, each: int = 8, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((groups, dim))
    return np.concatenate([c + rng.standard_normal((each, dim)) for c in centres])


def test_layout_is_deterministic_under_a_seed_and_keeps_neighbours() -> None:
    vectors = clustered(1)
    first = layout(vectors, seed=3)
    again = layout(vectors, seed=3)
    other = layout(vectors, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == (32, 2) and first.min() >= 0.0 and first.max() <= 1.0
    assert trustworthiness(vectors, first, k=5) > 0.5


def test_small_libraries() -> None:
    with pytest.raises(LibraryError, match="empty"):
        layout(np.zeros((0, 4)))
    with pytest.raises(LibraryError, match="one track"):
        layout(np.ones((1, 4)))
    three = layout(np.eye(3, 4), seed=1)
    assert three.shape == (3, 2) and np.isfinite(three).all()


def test_place_puts_a_track_on_its_own_point() -> None:
    vectors = clustered(2)
    positions = layout(vectors, seed=1)
    for n in (0, 9, 30):
        x, y = place(vectors[n] * 2.0, vectors, positions)
        assert abs(x - positions[n, 0]) < 0.02 and abs(y - positions[n, 1]) < 0.02


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), env=cli_env(), capture_output=True, text=True, timeout=1800
    )


@pytest.mark.timeout(1800)  # three CLI runs, each compiling UMAP's numba code
def test_map_cli_writes_png_and_a_self_contained_page(
    demo_library: DemoLibrary, tmp_path: Path, browser: Any
) -> None:
    from playwright.sync_api import expect

    png, html = tmp_path / "map.png", tmp_path / "map.html"
    for out in (png, html):
        done = run_cli("map", "--index", str(demo_library.index), "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert f"written to {out}" in done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = html.read_text()
    assert "<script src" not in text and "http://" not in text and "https://" not in text
    # It draws offline, from file://.
    page = browser.new_page()
    page.goto(html.as_uri())
    expect(page.locator("[data-testid=hint]")).to_contain_text(f"{len(demo_library.titles)} tracks")
    page.close()


@pytest.mark.timeout(1800)
def test_map_cli_bad_cases_are_one_line(tmp_path: Path) -> None:
    one = build_tone_index(tmp_path / "one", tracks=1, duration_s=12.0)
    for args in (
        ("--index", str(one), "--out", str(tmp_path / "m.png")),
        ("--index", str(one), "--out", str(tmp_path / "m.svg")),
        ("--index", str(tmp_path / "none"), "--out", str(tmp_path / "m.png")),
    ):
        done = run_cli("map", *args)
        assert done.returncode == 2
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("synesthete: error: ")
    assert "one track" in run_cli("map", "--index", str(one), "--out", "m.png").stderr


@pytest.mark.timeout(1800)
def test_live_map_dot_moves_when_the_track_changes(
    browser: Any, demo_library: DemoLibrary, listeners: list[Listener], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    first_n, second_n = 2, 6
    # One track, then another, over and over (--loop): however long the map takes to
    # draw, the input changes track again afterwards.
    parts = [demo_library.audio(n) for n in (first_n, second_n)]
    both = tmp_path / "two-tracks.wav"
    sf.write(both, np.concatenate(parts), demo_library.rate_hz, subtype="PCM_16")
    listener = Listener(demo_library, both, free_port(), tmp_path, loop=True)
    listeners.append(listener)
    listener.wait_ready()
    map_url = f"http://127.0.0.1:{listener.port}/map"

    page = browser.new_page(viewport={"width": 720, "height": 560})
    page.goto(map_url)
    expect(page.locator("[data-testid=hint]")).to_contain_text(
        f"{len(demo_library.titles)} tracks", timeout=10 * TIMEOUT_MS
    )
    now = page.locator("[data-testid=now]")
    expect(now).to_contain_text(demo_library.titles[first_n], timeout=2 * TIMEOUT_MS)
    expect(page.locator("[data-testid=connection]")).to_have_text("live")
    canvas = page.locator("[data-testid=map]")
    expect(canvas).to_have_attribute("data-dot", re.compile(r"^[0-9.]+,[0-9.]+$"))
    first_dot = canvas.get_attribute("data-dot")
    first_png = page.screenshot()
    expect(now).to_contain_text(demo_library.titles[second_n], timeout=2 * TIMEOUT_MS)
    page.wait_for_timeout(300)
    second_dot = canvas.get_attribute("data-dot")
    second_png = page.screenshot()
    (tmp_path / "map-first.png").write_bytes(first_png)
    (tmp_path / "map-second.png").write_bytes(second_png)
    assert first_dot and second_dot
    a = np.array([float(v) for v in first_dot.split(",")])
    b = np.array([float(v) for v in second_dot.split(",")])
    assert np.linalg.norm(a - b) > 0.02, (first_dot, second_dot)
    assert first_png != second_png
    # The data behind the page: every library track placed, neighbours listed.
    with urllib.request.urlopen(f"http://127.0.0.1:{listener.port}/map.json") as response:
        doc = json.loads(response.read())
    assert len(doc["tracks"]) == len(demo_library.titles)
    assert all(0.0 <= t["x"] <= 1.0 and t["neighbours"] for t in doc["tracks"])
    if os.environ.get("SYNESTHETE_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "map-second.png", ROOT / "docs" / "map-live.png")
    page.close()


def in_thread(job: Any) -> Any:
    """``asyncio.run(job())`` in a thread of its own: playwright's sync API may hold this
    thread's event loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(job())).result()


def test_map_json_is_guarded_like_the_events() -> None:
    """A real server on localhost: 401 without the token, 503 while drawing, then the
    data; a library with nothing to draw is a 404 with its one line."""
    import asyncio

    from synesthete.clients.server import ServerConfig, WebsocketServer

    body = json.dumps({"tracks": []}).encode()
    state: dict[str, bytes | None] = {"map": None}

    def sonic_map() -> bytes | None:
        return state["map"]

    def get(url: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    async def main() -> list[tuple[int, bytes]]:
        config = ServerConfig(port=0, token="s3cret")
        seen = []
        async with WebsocketServer(config=config, sonic_map=sonic_map) as srv:
            base = f"http://127.0.0.1:{srv.port}/map.json"
            for url in (base, base + "?token=s3cret"):
                seen.append(await asyncio.to_thread(get, url))
            state["map"] = body
            seen.append(await asyncio.to_thread(get, base + "?token=s3cret"))
            page = await asyncio.to_thread(get, f"http://127.0.0.1:{srv.port}/map")
            seen.append((page[0], page[1][:15]))
        return seen

    seen = in_thread(main)
    assert [code for code, _ in seen] == [401, 503, 200, 200]
    assert seen[2][1] == body and seen[3][1] == b"<!doctype html>"

    def nothing() -> bytes | None:
        raise LibraryError("the library has one track: a map needs at least two")

    async def refused() -> tuple[int, bytes]:
        async with WebsocketServer(config=ServerConfig(port=0), sonic_map=nothing) as srv:
            return await asyncio.to_thread(get, f"http://127.0.0.1:{srv.port}/map.json")

    code, text = in_thread(refused)
    assert code == 404 and text == b"the library has one track: a map needs at least two\n"
