"""Cover art on the overlay card, in real headless Chromium, fed by a real ``synesthete listen``.

The library is built by ``synesthete index build`` from synthesized tracks
whose tags carry real pictures: a JPEG made by Chromium's own encoder in an
MP3's ID3 APIC frame, PNGs in FLAC picture blocks, and one FLAC without any.
The card must show the playing track's cover (fetched from the server's
``/art/<id>``), hide it with ``?art=0``, and show no broken image for a track
without art.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from conftest import Listener, build_index_cli, free_port
from fakes import embed_picture, png_bytes
from test_overlay_chromium import TIMEOUT_MS

from synesthete.index.store import Library
from synesthete.stream.synth import synth_track, synth_track_title

RATE_HZ = 22_050
TRACK_S = 30.0
EXCERPT_START_S = 4.0
EXCERPT_S = 24.0
COVER_PX = (200, 160)
SEEDS = {"covered": 21, "plain": 22, "png-a": 23, "png-b": 24}


@dataclass(frozen=True)
class ArtLibrary:
    root: Path
    index: Path
    jpeg: bytes
    titles: dict[str, str]
    ids: dict[str, int]

    def excerpt(self, name: str) -> Path:
        audio = synth_track(seed=SEEDS[name], duration_s=TRACK_S, sample_rate_hz=RATE_HZ)
        begin = int(EXCERPT_START_S * RATE_HZ)
        path = self.root / f"excerpt-{name}.wav"
        if not path.exists():
            sf.write(path, audio[begin : begin + int(EXCERPT_S * RATE_HZ)], RATE_HZ, "PCM_16")
        return path


def _chromium_jpeg(browser: Any) -> bytes:
    """A real JPEG from Chromium's encoder: a gradient with a circle, ``COVER_PX`` in size."""
    page = browser.new_page()
    try:
        data_url: str = page.evaluate(
            """([w, h]) => {
                const c = document.createElement("canvas"); c.width = w; c.height = h;
                const g = c.getContext("2d");
                const grad = g.createLinearGradient(0, 0, w, h);
                grad.addColorStop(0, "#f97316"); grad.addColorStop(1, "#7c3aed");
                g.fillStyle = grad; g.fillRect(0, 0, w, h);
                g.fillStyle = "#fde68a"; g.beginPath();
                g.arc(w / 2, h / 2, h / 3, 0, 2 * Math.PI); g.fill();
                return c.toDataURL("image/jpeg", 0.9);
            }""",
            list(COVER_PX),
        )
    finally:
        page.close()
    prefix = "data:image/jpeg;base64,"
    assert data_url.startswith(prefix)
    return base64.b64decode(data_url[len(prefix) :])


@pytest.fixture(scope="module")
def art_library(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> ArtLibrary:
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3, TALB, TIT2, TPE1

    root = tmp_path_factory.mktemp("art-library")
    music = root / "music"
    music.mkdir()
    jpeg = _chromium_jpeg(browser)
    titles = {name: synth_track_title(seed) for name, seed in SEEDS.items()}
    for name, seed in SEEDS.items():
        audio = synth_track(seed=seed, duration_s=TRACK_S, sample_rate_hz=RATE_HZ)
        if name == "covered":
            path = music / f"{name}.mp3"
            sf.write(path, audio, RATE_HZ, format="MP3", subtype="MPEG_LAYER_III")
            tags = ID3()
            tags.add(TIT2(encoding=3, text=titles[name]))
            tags.add(TPE1(encoding=3, text="Cover Band"))
            tags.add(TALB(encoding=3, text="Pictures"))
            tags.save(path)
            embed_picture(path, jpeg, mime="image/jpeg")
            continue
        path = music / f"{name}.flac"
        sf.write(path, audio, RATE_HZ, format="FLAC", subtype="PCM_16")
        flac = FLAC(path)
        flac["title"], flac["artist"], flac["album"] = titles[name], "Cover Band", "Pictures"
        flac.save()
        if name.startswith("png"):
            embed_picture(path, png_bytes(96, 96, seed=seed), mime="image/png")
    index = root / "index"
    build_index_cli(index, music)
    with Library.open(index) as lib:
        ids = {Path(r.path).stem: r.id for r in lib.records()}
    return ArtLibrary(root=root, index=index, jpeg=jpeg, titles=titles, ids=ids)


def _http_get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


ART_STATE = """() => {
    const img = document.getElementById("art");
    const box = img.getBoundingClientRect();
    return {src: img.getAttribute("src"), complete: img.complete, natural: img.naturalWidth,
            visible: getComputedStyle(img).display !== "none" && box.width > 0 && box.height > 0};
}"""


def test_card_shows_the_cover_and_hides_it_on_request(
    browser: Any, art_library: ArtLibrary, listeners: list[Listener], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    port = free_port()
    covered = Listener(art_library.index, art_library.excerpt("covered"), port, tmp_path)
    listeners.append(covered)
    covered.wait_ready()
    base = f"http://127.0.0.1:{port}"

    # The picture over real HTTP, byte for byte as embedded; a track without art is a 404.
    status, mime, body = _http_get(f"{base}/art/{art_library.ids['covered']}")
    assert (status, mime, body) == (200, "image/jpeg", art_library.jpeg)
    status, _, body = _http_get(f"{base}/art/{art_library.ids['plain']}")
    assert status == 404 and b"Traceback" not in body

    context = browser.new_context(viewport={"width": 640, "height": 400}, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{base}/overlay")
    expect(page.locator("[data-testid=title]")).to_have_text(
        art_library.titles["covered"], timeout=TIMEOUT_MS
    )
    art = page.locator("[data-testid=art]")
    expect(art).to_be_visible(timeout=TIMEOUT_MS)
    state = page.evaluate(ART_STATE)
    assert state["src"] == f"{base}/art/{art_library.ids['covered']}"
    assert state["complete"] and state["natural"] == COVER_PX[0] and state["visible"]
    page.screenshot(path=str(tmp_path / "overlay-art.png"))

    # ?art=0 hides it; so does a ?show= list without "art".
    for query in ("?art=0", "?show=title,artist"):
        bare = context.new_page()
        bare.goto(f"{base}/overlay{query}")
        expect(bare.locator("[data-testid=title]")).to_have_text(
            art_library.titles["covered"], timeout=TIMEOUT_MS
        )
        expect(bare.locator("[data-testid=art]")).to_be_hidden()
        assert bare.evaluate(ART_STATE)["src"] is None, query
        bare.close()

    # A track without art: the card shows no image at all, broken or not.
    covered.kill()
    plain = Listener(art_library.index, art_library.excerpt("plain"), port, tmp_path)
    listeners.append(plain)
    plain.wait_ready()
    expect(page.locator("[data-testid=title]")).to_have_text(
        art_library.titles["plain"], timeout=TIMEOUT_MS
    )
    expect(art).to_be_hidden()
    state = page.evaluate(ART_STATE)
    assert state["src"] is None and not state["visible"]
    page.screenshot(path=str(tmp_path / "overlay-no-art.png"))
    context.close()
