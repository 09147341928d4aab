"""``synesthete demo``: a self-contained tour with procedurally synthesized music.

1. Synthesizes a small library (FLAC with tags) and indexes it.
2. Renders a "live set": excerpts of library tracks at random offsets with
   crossfades, then a piece that is not in the library.
3. Replays the set through ``listen`` (real-time by default) with the live
   view and the websocket server, then prints the tracklist and the truth.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
import soundfile as sf

from synesthete.clients.app import open_engine
from synesthete.clients.listen import ListenOptions, listen
from synesthete.clients.server import check_port_free, parse_hostport
from synesthete.errors import SynestheteError
from synesthete.stream.synth import synth_track, synth_track_title

DEMO_RATE_HZ = 22_050
SET_RATE_HZ = 44_100
DEMO_SEED = 7


@dataclass(frozen=True)
class DemoFiles:
    library: Path
    index: Path
    set_path: Path
    truth_path: Path


def _write_tagged_flac(
    path: Path, audio: npt.NDArray[np.float32], *, title: str, artist: str, album: str
) -> None:
    from mutagen.flac import FLAC

    sf.write(path, audio, DEMO_RATE_HZ, format="FLAC", subtype="PCM_16")
    tags = FLAC(path)  # type: ignore[no-untyped-call]
    tags["title"] = title
    tags["artist"] = artist
    tags["album"] = album
    tags.save()


def prepare_demo(
    directory: Path, *, n_tracks: int = 24, quiet: bool = False, notes: TextIO | None = None
) -> DemoFiles:
    """Create (or reuse) the demo library, its index and the live set.

    The first run takes about a minute on a small machine; ``notes`` (stderr
    for the CLI) gets a line per step so it is never silent. Without
    ``quiet`` the indexing step also shows a progress bar.
    """
    from synesthete.clients.progress import RichProgress
    from synesthete.index.builder import build_index
    from synesthete.index.config import IndexConfig
    from synesthete.inference.torchscript import TorchScriptEncoder

    rng = np.random.default_rng(DEMO_SEED)
    library = directory / "library"
    index = directory / "index"
    set_path = directory / "set.wav"
    truth_path = directory / "set-truth.json"
    library.mkdir(parents=True, exist_ok=True)
    durations = rng.uniform(40.0, 80.0, size=n_tracks)
    tracks: list[tuple[str, npt.NDArray[np.float32]]] = []
    fresh = not (index / "CURRENT").exists()
    encoder = TorchScriptEncoder()
    if not fresh and _built_with(index) != encoder.name:
        # An earlier version's demo: index it again with the model shipped now.
        _note(notes, f"demo: {index} was built with another model; indexing again")
        shutil.rmtree(index)
        fresh = True
    if fresh:
        _note(notes, f"demo: synthesizing {n_tracks} tracks in {library} (first run only)")
    for n in range(n_tracks):
        title = synth_track_title(n)
        path = library / f"{n:02d} {title}.flac"
        audio = synth_track(seed=n, duration_s=float(durations[n]), sample_rate_hz=DEMO_RATE_HZ)
        if not path.exists():
            _write_tagged_flac(
                path,
                audio,
                title=title,
                artist=f"Demo Ensemble {n % 5 + 1}",
                album="Synesthete Demo",
            )
        tracks.append((title, audio))
    if fresh:
        _note(notes, f"demo: indexing them into {index} (about a minute on 2 cores)")
        progress = None if quiet else RichProgress()
        if progress is not None:
            with progress:
                build_index(
                    index, [library], encoder=encoder, config=IndexConfig(), progress=progress
                )
        else:
            build_index(
                index,
                [library],
                encoder=encoder,
                config=IndexConfig(),
                progress=None if notes is None else _FileNotes(notes, total=n_tracks),
            )
    if not set_path.exists():
        _note(notes, f"demo: rendering the live set {set_path}")
        _render_set(tracks, rng, set_path, truth_path)
    return DemoFiles(library=library, index=index, set_path=set_path, truth_path=truth_path)


def _built_with(index: Path) -> str | None:
    """The encoder name an existing demo index records (None if it cannot be read)."""
    from synesthete.index.store import Library

    try:
        library = Library.open(index)
    except SynestheteError:
        return None
    try:
        return library.encoder_name
    finally:
        library.close()


def _note(out: TextIO | None, text: str) -> None:
    if out is not None:
        print(text, file=out, flush=True)


class _FileNotes:
    """Builder progress as plain lines (for ``--no-tui``): one every ``every`` files."""

    def __init__(self, out: TextIO, *, total: int, every: int = 6) -> None:
        self._out = out
        self._total = total
        self._every = every
        self._done = 0

    def on_start(self, total_files: int) -> None:
        self._total = total_files

    def on_file(self, path: Path, status: str) -> None:
        self._done += 1
        if self._done % self._every == 0 or self._done == self._total:
            _note(self._out, f"demo: indexed {self._done}/{self._total} tracks")

    def on_windows(self, n: int) -> None:
        pass


def _render_set(
    tracks: list[tuple[str, npt.NDArray[np.float32]]],
    rng: np.random.Generator,
    set_path: Path,
    truth_path: Path,
) -> None:
    import soxr

    excerpt_s, fade_s = 20.0, 3.0
    chosen = rng.choice(len(tracks), size=4, replace=False)
    pieces: list[npt.NDArray[np.float32]] = []
    truth: list[dict[str, object]] = []
    for n in chosen:
        title, audio = tracks[int(n)]
        length = int(excerpt_s * DEMO_RATE_HZ)
        start = int(rng.integers(0, audio.shape[0] - length))
        pieces.append(audio[start : start + length])
        truth.append({"title": title, "track_offset_s": start / DEMO_RATE_HZ})
    stranger = synth_track(seed=10_000, duration_s=16.0, sample_rate_hz=DEMO_RATE_HZ)
    pieces.append(stranger)
    truth.append({"title": None, "note": "not in the library"})
    fade = int(fade_s * DEMO_RATE_HZ)
    ramp = np.sin(np.linspace(0.0, np.pi / 2.0, fade, dtype=np.float32))
    mix = pieces[0].copy()
    starts = [0.0]
    for piece in pieces[1:]:
        starts.append((mix.shape[0] - fade) / DEMO_RATE_HZ)
        head = mix[-fade:] * ramp[::-1] + piece[:fade] * ramp
        mix = np.concatenate([mix[:-fade], head, piece[fade:]])
    for item, start_s in zip(truth, starts, strict=True):
        item["set_start_s"] = round(start_s, 2)
    stereo = soxr.resample(np.stack([mix, mix], axis=1), DEMO_RATE_HZ, SET_RATE_HZ)
    sf.write(set_path, (0.8 * stereo).astype(np.float32), SET_RATE_HZ, subtype="PCM_16")
    truth_path.write_text(json.dumps(truth, indent=2))


def run_demo(*, directory: Path, serve: str | None, tui: bool, realtime: bool) -> int:
    """Prepare and replay the demo set.

    With the live view the closing tracklist goes to stdout; with ``tui=False``
    stdout carries only the JSONL events, and every human line goes to stderr.
    """
    if serve is not None:
        # Before a minute of synthesis and indexing, not after it.
        check_port_free(*parse_hostport(serve))
    human = sys.stdout if tui else sys.stderr
    files = prepare_demo(directory, quiet=not tui, notes=sys.stderr)
    engine = open_engine(index_dir=files.index)
    tracklist_path = directory / "set-tracklist.txt"
    try:
        options = ListenOptions(
            input_path=files.set_path,
            realtime=realtime,
            serve=serve,
            tui=tui,
            tracklist_path=tracklist_path,
        )
        if serve is not None and tui:
            print(f"overlay: http://{serve}/overlay   websocket: ws://{serve}/")
        asyncio.run(listen(engine=engine, options=options))
    finally:
        engine.close()
    print("\nTracklist (" + str(tracklist_path) + "):", file=human)
    print(tracklist_path.read_text(), file=human)
    print("What was really played:", file=human)
    for item in json.loads(files.truth_path.read_text()):
        label = item["title"] or "(a piece not in the library)"
        print(f"  {item['set_start_s']:6.1f} s  {label}", file=human)
    return 0
