"""The browser overlay in real headless Chromium, fed by a real ``synesthete listen``.

Debian's ``chromium`` is driven by Python playwright through
``executable_path`` (``playwright install`` is never needed). ``listen``
replays a library excerpt in real time with ``--serve``; the page is the one
that server serves at ``/overlay``.

Screenshots land in ``tmp_path`` (and in ``$SYNESTHETE_ARTIFACTS`` when set).
``SYNESTHETE_UPDATE_SCREENSHOT=1`` also refreshes ``docs/overlay.png``, the
README's picture, so ordinary runs leave the working tree alone.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path
from typing import Any

from conftest import DemoLibrary, Listener, free_port

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 60_000
EXCERPT_S = 30.0
CHECKERBOARD_CSS = """
html { background-color: #2b2f36;
  background-image: linear-gradient(45deg, #3a3f48 25%, transparent 25%, transparent 75%,
      #3a3f48 75%), linear-gradient(45deg, #3a3f48 25%, transparent 25%, transparent 75%,
      #3a3f48 75%);
  background-size: 16px 16px; background-position: 0 0, 8px 8px; }
"""


def _save_artifact(data: bytes, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    extra = os.environ.get("SYNESTHETE_ARTIFACTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / name)
    return path


def _corner_alpha(page: Any, png: bytes) -> int:
    """Decode a PNG in the page itself and return the alpha of pixel (1, 1)."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    alpha: int = page.evaluate(
        """async (url) => {
            const img = new Image(); img.src = url; await img.decode();
            const canvas = document.createElement("canvas");
            canvas.width = img.width; canvas.height = img.height;
            const ctx = canvas.getContext("2d"); ctx.drawImage(img, 0, 0);
            return ctx.getImageData(1, 1, 1, 1).data[3];
        }""",
        url,
    )
    return alpha


def test_overlay_in_chromium(
    browser: Any, demo_library: DemoLibrary, listeners: list[Listener], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    port = free_port()
    first_n, second_n = 2, 6
    first = Listener(
        demo_library, demo_library.excerpt(first_n, start_s=5.0, seconds=EXCERPT_S), port, tmp_path
    )
    listeners.append(first)
    first.wait_ready()

    context = browser.new_context(viewport={"width": 560, "height": 400}, device_scale_factor=1)
    page = context.new_page()
    page.goto(first.overlay)
    title = page.locator("[data-testid=title]")
    expect(title).to_have_text(demo_library.titles[first_n], timeout=TIMEOUT_MS)
    expect(page.locator("[data-testid=connection]")).to_have_text("connected")
    expect(page.locator("[data-testid=artist]")).to_have_text(
        f"{demo_library.artist(first_n)} · Synesthete Tests"
    )
    expect(page.locator("[data-testid=confidence]")).to_have_text(re.compile(r"^match \d+%$"))
    # The position counts against the track's length (the library's tracks last 0:40).
    expect(page.locator("[data-testid=position]")).to_have_text(re.compile(r"^0:\d\d / 0:40$"))
    # One progress bar; confidence is a labelled row of pips, not a second bar.
    assert page.locator(".bar").count() == 1
    assert page.locator("[data-testid=confidence-meter] i").count() == 5
    assert page.locator("[data-testid=confidence-meter] i.on").count() >= 3
    expect(page.locator("[data-testid=offline]")).to_be_hidden()
    # The snapshot tells clients the threshold the matcher names a track at.
    snapshot = page.evaluate(
        """() => new Promise(resolve => {
            const ws = new WebSocket("ws://" + location.host + "/", ["synesthete.v1.json"]);
            ws.onmessage = ev => { ws.close(); resolve(JSON.parse(ev.data)); };
        })"""
    )
    assert snapshot["type"] == "snapshot" and snapshot["threshold"] == 0.5
    # Below the threshold (here raised by the URL above any confidence) an answer is shown as
    # unsure, never as sure.
    unsure = context.new_page()
    unsure.goto(first.overlay + "?threshold=1.5")
    expect(unsure.locator("[data-testid=title]")).to_have_text(
        demo_library.titles[first_n], timeout=TIMEOUT_MS
    )
    expect(unsure.locator("[data-testid=confidence]")).to_have_text(re.compile(r"^unsure \d+%$"))
    expect(unsure.locator("#card")).to_have_class(re.compile(r"\bunsure\b"))
    assert unsure.evaluate(
        "() => getComputedStyle(document.getElementById('title')).fontStyle"
    ) == ("italic")
    unsure.close()
    # "Sounds like": other library tracks, never the one playing.
    similar = page.locator("[data-testid=similar] li")
    expect(similar.first).to_be_visible(timeout=TIMEOUT_MS)
    similar_titles = similar.all_inner_texts()
    assert demo_library.titles[first_n] not in " ".join(similar_titles)
    assert any(t in " ".join(similar_titles) for t in demo_library.titles), similar_titles

    # Transparent: nothing paints behind the card, so OBS composites it over the scene.
    backgrounds = page.evaluate(
        "() => [getComputedStyle(document.documentElement).backgroundColor,"
        " getComputedStyle(document.body).backgroundColor]"
    )
    assert backgrounds == ["rgba(0, 0, 0, 0)", "rgba(0, 0, 0, 0)"]
    transparent_png = page.screenshot(omit_background=True)
    _save_artifact(transparent_png, "overlay-transparent.png", tmp_path)
    assert _corner_alpha(page, transparent_png) == 0

    # URL parameters: a light theme showing the title only; a doubled size.
    styled = context.new_page()
    styled.goto(first.overlay + "?theme=light&show=title")
    expect(styled.locator("[data-testid=title]")).to_have_text(
        demo_library.titles[first_n], timeout=TIMEOUT_MS
    )
    assert "light" in (styled.get_attribute("body", "class") or "")
    for hidden in ("artist", "confidence", "confidence-meter", "progress", "similar", "connection"):
        expect(styled.locator(f"[data-testid={hidden}]")).to_be_hidden()
    expect(styled.locator("[data-testid=title]")).to_be_visible()
    assert styled.evaluate("() => getComputedStyle(document.body).color") == "rgb(17, 24, 39)"
    assert page.evaluate("() => getComputedStyle(document.body).color") == "rgb(245, 247, 250)"
    _save_artifact(styled.screenshot(omit_background=True), "overlay-light-title.png", tmp_path)
    big = context.new_page()
    big.goto(first.overlay + "?size=2")
    expect(big.locator("[data-testid=title]")).to_have_text(
        demo_library.titles[first_n], timeout=TIMEOUT_MS
    )
    font_px = "(p) => parseFloat(getComputedStyle(p.querySelector('#title')).fontSize)"
    ratio = big.evaluate(f"() => ({font_px})(document)") / page.evaluate(
        f"() => ({font_px})(document)"
    )
    assert abs(ratio - 2.0) < 0.01
    styled.close()
    big.close()

    # A screenshot for the README: the card over a checkerboard, cropped to it.
    shot = context.new_page()
    shot.goto(first.overlay)
    expect(shot.locator("[data-testid=title]")).to_have_text(
        demo_library.titles[first_n], timeout=TIMEOUT_MS
    )
    expect(shot.locator("[data-testid=similar] li").first).to_be_visible(timeout=TIMEOUT_MS)
    shot.add_style_tag(content=CHECKERBOARD_CSS)
    shot.wait_for_timeout(500)  # the card's CSS transitions (opacity, bars) settle
    box = shot.locator("#card").bounding_box()
    assert box is not None
    margin = 12
    clip = {
        "x": max(0.0, box["x"] - margin),
        "y": max(0.0, box["y"] - margin),
        "width": box["width"] + 2 * margin,
        "height": box["height"] + 2 * margin,
    }
    readme_png = shot.screenshot(clip=clip)
    saved = _save_artifact(readme_png, "overlay.png", tmp_path)
    if os.environ.get("SYNESTHETE_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(saved, ROOT / "docs" / "overlay.png")
    shot.close()

    # Auto-reconnect: kill the server, start another on the same port with another track.
    first.kill()
    expect(page.locator("[data-testid=connection]")).to_have_text(
        "disconnected · reconnecting", timeout=TIMEOUT_MS
    )
    # The last track is stale now: the card fades and says so, whatever ?show= hides.
    expect(page.locator("[data-testid=offline]")).to_be_visible()
    expect(page.locator("[data-testid=offline]")).to_have_text("disconnected")
    expect(page.locator("#card")).to_have_class(re.compile(r"\bdisconnected\b"))
    dimmed = "(id) => parseFloat(getComputedStyle(document.getElementById(id)).opacity)"
    assert page.evaluate(f"() => ({dimmed})('title')") < 0.5
    assert page.evaluate(f"() => ({dimmed})('offline')") == 1.0
    _save_artifact(page.screenshot(omit_background=True), "overlay-disconnected.png", tmp_path)
    second = Listener(
        demo_library,
        demo_library.excerpt(second_n, start_s=5.0, seconds=EXCERPT_S),
        port,
        tmp_path,
    )
    listeners.append(second)
    second.wait_ready()
    expect(title).to_have_text(demo_library.titles[second_n], timeout=TIMEOUT_MS)
    expect(page.locator("[data-testid=connection]")).to_have_text("connected")
    expect(page.locator("[data-testid=offline]")).to_be_hidden()
    assert page.evaluate(f"() => ({dimmed})('title')") == 1.0
    _save_artifact(page.screenshot(omit_background=True), "overlay-reconnected.png", tmp_path)
    context.close()
