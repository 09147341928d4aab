"""Regenerate the screenshots under docs/: the overlay and the terminal live view.

    .venv/bin/python scripts/screenshots.py [--out docs] [--work DIR]

Everything is real: a small library of synthesized tracks (one with a cover
picture that Chromium's own JPEG encoder made, embedded in its FLAC tags) is
indexed with ``synesthete index build``; ``synesthete listen --realtime
--serve`` replays excerpts; Debian's headless Chromium (through playwright,
as in the tests) loads ``/overlay``; tmux runs the live view at 80x24.

Writes:

- ``overlay-art.png``: the card playing a track with its cover art;
- ``overlay-unknown.png``: the card while a piece that is not in the library plays;
- ``overlay-disconnected.png``: the card after the server has gone;
- ``live-view-80x24.txt`` and ``live-view-80x24.png``: the live view in an 80x24
  terminal (the text as tmux captured it; the picture rendered from the same
  capture, colours included, by rich and Chromium).

Takes about two minutes on 2 cores (most of it real-time playback).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import soundfile as sf

from synesthete.stream.synth import synth_track, synth_track_title

ROOT = Path(__file__).resolve().parents[1]
RATE_HZ = 22_050
TRACK_S = 40.0
EXCERPT_S = 30.0
LIBRARY_SEEDS = (3, 8, 13, 21, 34)
PLAYING_SEED = 8
STRANGER_SEED = 10_000  # not in the library
ARTIST = "Synesthete Ensemble"
ALBUM = "Screenshots"
TIMEOUT_S = 120.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]
CHECKERBOARD_CSS = """
html { background-color: #2b2f36;
  background-image: linear-gradient(45deg, #3a3f48 25%, transparent 25%, transparent 75%,
      #3a3f48 75%), linear-gradient(45deg, #3a3f48 25%, transparent 25%, transparent 75%,
      #3a3f48 75%);
  background-size: 16px 16px; background-position: 0 0, 8px 8px; }
"""
COVER_JS = """([size, title]) => {
    const c = document.createElement("canvas"); c.width = size; c.height = size;
    const g = c.getContext("2d");
    const grad = g.createLinearGradient(0, 0, size, size);
    grad.addColorStop(0, "#0ea5e9"); grad.addColorStop(1, "#9333ea");
    g.fillStyle = grad; g.fillRect(0, 0, size, size);
    for (let i = 0; i < 7; i++) {
        g.strokeStyle = `rgba(255, 255, 255, ${0.12 + 0.08 * i})`; g.lineWidth = size / 60;
        g.beginPath(); g.arc(size * 0.5, size * 0.42, size * (0.06 + 0.045 * i), 0, 2 * Math.PI);
        g.stroke();
    }
    g.fillStyle = "#ffffff"; g.font = `700 ${size / 11}px sans-serif`; g.textAlign = "center";
    g.fillText(title, size / 2, size * 0.88);
    return c.toDataURL("image/jpeg", 0.88);
}"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "synesthete.clients.cli", *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    # Never the user's config file: the pictures must not depend on it.
    env.update(XDG_CONFIG_HOME="/nonexistent-synesthete-config", PYTHONUNBUFFERED="1")
    return env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chromium_path() -> str:
    for candidate in (os.environ.get("SYNESTHETE_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("chromium")
    if found is None:
        raise SystemExit("screenshots: chromium is not installed (apt: chromium)")
    return found


def build_library(work: Path, browser: Any) -> Path:
    """Tagged FLAC tracks, the playing one with a cover picture; returns the index folder."""
    from mutagen.flac import FLAC, Picture

    music = work / "music"
    index = work / "index"
    if (index / "CURRENT").exists():
        return index
    music.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    cover_url: str = page.evaluate(COVER_JS, [480, ALBUM.upper()])
    page.close()
    cover = base64.b64decode(cover_url.split(",", 1)[1])
    for seed in LIBRARY_SEEDS:
        path = music / f"{seed:02d}.flac"
        audio = synth_track(seed=seed, duration_s=TRACK_S, sample_rate_hz=RATE_HZ)
        sf.write(path, audio, RATE_HZ, format="FLAC", subtype="PCM_16")
        tags = FLAC(path)
        tags["title"], tags["artist"], tags["album"] = synth_track_title(seed), ARTIST, ALBUM
        if seed == PLAYING_SEED:
            picture = Picture()
            picture.type, picture.mime, picture.data = 3, "image/jpeg", cover
            tags.add_picture(picture)
        tags.save()
    print(f"screenshots: indexing {len(LIBRARY_SEEDS)} tracks into {index}", file=sys.stderr)
    subprocess.run(
        cli("index", "build", "--index", str(index), str(music), "--quiet"),
        env=cli_env(),
        check=True,
        timeout=600,
    )
    return index


def excerpt(work: Path, seed: int) -> Path:
    path = work / f"excerpt-{seed}.wav"
    if not path.exists():
        audio = synth_track(seed=seed, duration_s=TRACK_S, sample_rate_hz=RATE_HZ)
        start = int(5.0 * RATE_HZ)
        sf.write(path, audio[start : start + int(EXCERPT_S * RATE_HZ)], RATE_HZ, "PCM_16")
    return path


@contextmanager
def listening(index: Path, audio: Path, port: int, work: Path) -> Iterator[Path]:
    """``listen --realtime --serve`` on ``audio``; yields its stdout (JSONL) file to poll."""
    log = work / f"listen-{audio.stem}.jsonl"
    with log.open("w") as out:
        process = subprocess.Popen(
            cli(
                "listen",
                "--index",
                str(index),
                "--input",
                str(audio),
                "--realtime",
                "--serve",
                f"127.0.0.1:{port}",
                "--no-tui",
            ),
            env=cli_env(),
            stdout=out,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"screenshots: listen on {audio.name} exited early")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/overlay", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        yield log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def wait_for_event(log: Path, event_type: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if json.loads(line).get("type") == event_type:
                return
        time.sleep(0.3)
    raise SystemExit(f"screenshots: no {event_type} event in {TIMEOUT_S:g} s")


def card_shot(page: Any, path: Path) -> None:
    """The card over a checkerboard (the overlay itself is transparent), cropped to it."""
    page.add_style_tag(content=CHECKERBOARD_CSS)
    page.wait_for_timeout(600)  # CSS transitions (opacity, bars) settle
    box = page.locator("#card").bounding_box()
    margin = 12
    clip = {
        "x": max(0.0, box["x"] - margin),
        "y": max(0.0, box["y"] - margin),
        "width": box["width"] + 2 * margin,
        "height": box["height"] + 2 * margin,
    }
    page.screenshot(path=str(path), clip=clip)
    print(f"screenshots: wrote {path}", file=sys.stderr)


def overlay_shots(browser: Any, index: Path, work: Path, out: Path) -> None:
    from playwright.sync_api import expect

    port = free_port()
    overlay = f"http://127.0.0.1:{port}/overlay"
    context = browser.new_context(viewport={"width": 720, "height": 480}, device_scale_factor=2)
    with listening(index, excerpt(work, PLAYING_SEED), port, work):
        page = context.new_page()
        page.goto(overlay)
        expect(page.locator("#title")).to_have_text(
            synth_track_title(PLAYING_SEED), timeout=TIMEOUT_S * 1000
        )
        expect(page.locator("#art")).to_be_visible(timeout=TIMEOUT_S * 1000)
        expect(page.locator("#similar li").first).to_be_visible(timeout=TIMEOUT_S * 1000)
        page.wait_for_timeout(1500)
        card_shot(page, out / "overlay-art.png")
    # listen is gone: the same page, as it looks once the connection has closed.
    expect(page.locator("#offline")).to_be_visible(timeout=TIMEOUT_S * 1000)
    card_shot(page, out / "overlay-disconnected.png")
    page.close()

    with listening(index, excerpt(work, STRANGER_SEED), port, work) as log:
        page = context.new_page()
        page.goto(overlay)
        expect(page.locator("#conn")).to_have_text("connected", timeout=TIMEOUT_S * 1000)
        wait_for_event(log, "unknown")
        page.wait_for_timeout(1000)
        card_shot(page, out / "overlay-unknown.png")
        page.close()
    context.close()


def tmux_shot(browser: Any, index: Path, work: Path, out: Path) -> None:
    """The live view in tmux at 80x24: the text, and a picture of it with its colours."""
    if shutil.which("tmux") is None:
        raise SystemExit("screenshots: tmux is not installed (apt: tmux)")
    from rich.console import Console
    from rich.text import Text

    socket = work / "tmux.sock"
    session = "synesthete-shot"
    title = synth_track_title(PLAYING_SEED)

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", str(socket), *args],
            env=cli_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    # Started in the work folder, so the view shows the input as a short relative name.
    played = excerpt(work, PLAYING_SEED).relative_to(work)
    command = cli("listen", "--index", str(index), "--input", str(played), "--realtime")
    size = ("-x", "80", "-y", "24")
    tmux("new-session", "-d", "-s", session, "-c", str(work), *size, shlex.join(command))
    try:
        deadline = time.monotonic() + TIMEOUT_S
        screen = ""
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-t", session)
            if f"▶ {title}" in screen and "sounds like" in screen and "1." in screen:
                break
            time.sleep(0.5)
        time.sleep(4.0)  # a few more windows: candidates and "sounds like" fill in
        screen = tmux("capture-pane", "-p", "-t", session)
        coloured = tmux("capture-pane", "-p", "-e", "-t", session)
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], check=False, timeout=30)
    if title not in screen:
        raise SystemExit(f"screenshots: the live view never showed {title!r}:\n{screen}")
    text_path = out / "live-view-80x24.txt"
    text_path.write_text("\n".join(line.rstrip() for line in screen.splitlines()) + "\n")
    print(f"screenshots: wrote {text_path}", file=sys.stderr)

    console = Console(record=True, width=80, file=io.StringIO(), color_system="truecolor")
    console.print(Text.from_ansi(coloured.rstrip("\n")), end="", soft_wrap=True)
    svg = console.export_svg(title="synesthete listen (80x24)")
    page = browser.new_page(device_scale_factor=2)
    page.set_content(f"<html><body style='margin:0'>{svg}</body></html>")
    box = page.locator("svg").bounding_box()
    png_path = out / "live-view-80x24.png"
    page.screenshot(path=str(png_path), clip=box)
    page.close()
    print(f"screenshots: wrote {png_path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the files go")
    parser.add_argument("--work", type=Path, help="keep the library and logs here (reused)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="synesthete-shots-") as scratch:
        work = (args.work or Path(scratch)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
            )
            try:
                index = build_library(work, browser)
                overlay_shots(browser, index, work, args.out)
                tmux_shot(browser, index, work, args.out)
            finally:
                browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
