"""End to end through the CLI: build an index of generated tracks, identify excerpts.

Real parts only: synthesized tracks written as FLAC/OGG/MP3/WAV files, the
packaged TorchScript encoder, a real Annoy index and sqlite, and ``identify``
run as a subprocess, its JSONL parsed as another tool would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from synesthete.clients.cli import main
from synesthete.index.store import Library as LibraryIndex
from synesthete.inference import augment
from synesthete.stream.synth import pink_noise, synth_track, synth_track_title

N_TRACKS = 22
EXCERPT_S = 12.0
FORMATS = [
    ("flac", "FLAC", "PCM_16"),
    ("ogg", "OGG", "VORBIS"),
    ("wav", "WAV", "PCM_16"),
    ("mp3", "MP3", "MPEG_LAYER_III"),
]


@dataclass(frozen=True)
class Library:
    index: Path
    tracks: dict[str, np.ndarray]  # title -> audio at RATE
    rate: int
    root: Path
    antiphase: Path  # a library track whose two channels cancel when averaged


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("e2e")
    music = root / "music"
    music.mkdir()
    rate = 22_050
    rng = np.random.default_rng(11)
    tracks: dict[str, np.ndarray] = {}
    for n in range(N_TRACKS):
        title = synth_track_title(n)
        audio = synth_track(seed=n, duration_s=float(rng.uniform(30, 50)), sample_rate_hz=rate)
        ext, fmt, subtype = FORMATS[n % len(FORMATS)]
        sf.write(music / f"{title}.{ext}", audio, rate, format=fmt, subtype=subtype)
        tracks[title] = audio
    # Like a tracker module in surround mode: right = -left, so a plain channel
    # average is silence. Kept out of ``tracks`` so the other tests' sets stay as they were.
    surround = synth_track(seed=900, duration_s=40.0, sample_rate_hz=rate)
    antiphase = music / "Surround Module.flac"
    sf.write(antiphase, np.stack([surround, -surround], axis=1), rate, subtype="PCM_16")
    index = root / "index"
    assert main(["index", "build", "--index", str(index), str(music), "--quiet"]) == 0
    return Library(index=index, tracks=tracks, rate=rate, root=root, antiphase=antiphase)


def run_cli(*args: str | Path, timeout_s: float = 300) -> str:
    """``synesthete ARGS`` in a subprocess, as a user runs it; its stdout."""
    return subprocess.run(
        [sys.executable, "-m", "synesthete.clients.cli", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout_s,
    ).stdout


def run_identify(library: Library, *args: str | Path, timeout_s: float = 300) -> str:
    """``synesthete identify --index LIBRARY ARGS``; its stdout."""
    return run_cli("identify", "--index", library.index, *args, timeout_s=timeout_s)


def identify(library: Library, files: list[Path]) -> dict[str, list[dict[str, object]]]:
    out = run_identify(library, *files, timeout_s=600)
    events: dict[str, list[dict[str, object]]] = {str(f): [] for f in files}
    for line in out.splitlines():
        event = json.loads(line)
        assert {"type", "file", "t"} <= event.keys()
        events[event["file"]].append(event)
    return events


def test_excerpts_are_identified_with_offsets(library: Library) -> None:
    rng = np.random.default_rng(5)
    titles = sorted(library.tracks)
    queries: dict[Path, tuple[str, float]] = {}
    for k, title in enumerate(titles):
        audio = library.tracks[title]
        length = int(EXCERPT_S * library.rate)
        start = int(rng.integers(0, audio.shape[0] - length))
        excerpt = audio[start : start + length]
        if k % 3 == 1:  # some stereo at 44.1 kHz, exercising downmix + resampling
            excerpt = soxr.resample(
                np.stack([excerpt, 0.8 * excerpt], axis=1), library.rate, 44_100
            )
            rate = 44_100
        else:
            rate = library.rate
        path = library.root / f"query-{k:02d}.wav"
        sf.write(path, excerpt, rate, subtype="FLOAT")
        queries[path] = (title, start / library.rate)

    events = identify(library, list(queries))
    offsets_ok: list[bool] = []
    for path, (title, start_s) in queries.items():
        playing = [e for e in events[str(path)] if e["type"] == "now_playing"]
        assert playing, f"{path.name}: no now_playing for {title}"
        wrong = [e for e in playing if e["track"]["title"] != title]  # type: ignore[index]
        assert not wrong, f"{path.name}: wrong identification {wrong[0]}"
        errors = [
            abs(float(e["offset_s"]) - (start_s + float(e["t"])))  # type: ignore[arg-type]
            for e in playing
        ]
        offsets_ok += [error <= 1.0 for error in errors]
        # The latest answer, backed by the whole excerpt, has the right position.
        assert errors[-1] <= 1.0, (path.name, playing[-1])
        last = events[str(path)][-1]
        assert last["type"] == "now_playing"
        assert 0.0 <= float(last["confidence"]) <= 1.0  # type: ignore[arg-type]
    # The tracks repeat their sections (like real music), so a single early
    # window may sit in another repeat of the same material; nearly all don't.
    assert sum(offsets_ok) >= 0.9 * len(offsets_ok), f"{sum(offsets_ok)}/{len(offsets_ok)}"


@pytest.mark.parametrize("factor", [1.08, 0.92])
def test_turntable_speed_is_identified_with_tempo_ratio_and_track_offsets(
    library: Library, factor: float
) -> None:
    """A turntable at ±8 % (tempo and pitch together): the right track, ``tempo_ratio``
    near the speed, and ``offset_s`` in the track's own seconds."""
    rng = np.random.default_rng(int(factor * 100))
    titles = sorted(library.tracks)[::3]
    queries: dict[Path, tuple[str, float]] = {}
    for k, title in enumerate(titles):
        audio = library.tracks[title]
        source_len = int(EXCERPT_S * factor * library.rate) + 1
        start = int(rng.integers(0, audio.shape[0] - source_len))
        played = augment.speed(
            audio[start : start + source_len], sample_rate_hz=library.rate, factor=factor
        )
        path = library.root / f"speed-{factor}-{k:02d}.wav"
        sf.write(path, played[: int(EXCERPT_S * library.rate)], library.rate, subtype="FLOAT")
        queries[path] = (title, start / library.rate)
    events = identify(library, list(queries))
    offsets_ok: list[bool] = []
    tempo_errors: list[float] = []
    for path, (title, start_s) in queries.items():
        playing = [e for e in events[str(path)] if e["type"] == "now_playing"]
        assert playing, f"{path.name}: no now_playing for {title}"
        assert {e["track"]["title"] for e in playing} == {title}  # type: ignore[index]
        last = playing[-1]
        tempo_errors.append(abs(float(last["tempo_ratio"]) - factor))  # type: ignore[arg-type]
        truth = start_s + factor * float(last["t"])  # type: ignore[arg-type]
        offsets_ok.append(abs(float(last["offset_s"]) - truth) <= 1.0)  # type: ignore[arg-type]
    # As above, the synthesized tracks repeat sections, so an excerpt may sit in a repeat.
    assert sum(offsets_ok) >= 0.8 * len(offsets_ok), offsets_ok
    # The tempo comes from the slope of an 8-window path: a few percent of noise.
    assert float(np.median(tempo_errors)) <= 0.02 and max(tempo_errors) <= 0.05, tempo_errors


def test_dj_mix_tracklist_has_one_line_per_track(library: Library) -> None:
    """Three tracks at -5 %, +7 % and +3 % with 10 s equal-power crossfades, written as a
    CUE sheet by ``identify --format cue``: one TRACK per played track, in order, each
    starting within a few seconds of its crossfade."""
    titles = [sorted(library.tracks)[i] for i in (2, 9, 15)]
    pieces = []
    for title, factor in zip(titles, (0.95, 1.07, 1.03), strict=True):
        audio = library.tracks[title][: int(28 * 1.07 * library.rate)]
        pieces.append(
            augment.speed(audio, sample_rate_hz=library.rate, factor=factor)[: 28 * library.rate]
        )
    mix, bounds = augment.crossfade_mix(pieces, sample_rate_hz=library.rate, fade_s=10.0)
    path = library.root / "dj-mix.wav"
    sf.write(path, 0.9 * mix / np.abs(mix).max(), library.rate, subtype="FLOAT")
    out = run_identify(library, "--format", "cue", path)
    cue_titles = [line.split('"')[1] for line in out.splitlines() if line.startswith("    TITLE")]
    assert cue_titles == titles, out
    starts = [line.split()[-1] for line in out.splitlines() if "INDEX 01" in line]
    assert starts[0] == "00:00:00"
    seconds = [int(m) * 60 + int(s) + int(f) / 75 for m, s, f in (x.split(":") for x in starts)]
    for start_s, (fade_start, fade_end) in zip(
        seconds[1:],
        zip([b[0] for b in bounds[1:]], [b[1] for b in bounds[:-1]], strict=True),
        strict=True,
    ):
        assert fade_start - 2.0 <= start_s <= fade_end + 6.0, (out, bounds)


def test_all_events_include_candidates_and_sounds_like(library: Library) -> None:
    title = sorted(library.tracks)[3]
    path = library.root / "sounds-like.wav"
    sf.write(path, library.tracks[title][: int(EXCERPT_S * library.rate)], library.rate)
    out = run_identify(library, "--events", "all", path)
    events = [json.loads(line) for line in out.splitlines()]
    kinds = {e["type"] for e in events}
    assert {"now_playing", "candidates", "sounds_like"} <= kinds
    similar = [e for e in events if e["type"] == "sounds_like"]
    for event in similar:
        names = [item["track"]["title"] for item in event["tracks"]]
        assert len(names) == 5 and title not in names
        distances = [item["distance"] for item in event["tracks"]]
        assert distances == sorted(distances)


def test_a_track_in_antiphase_stereo_is_indexed_and_identified(library: Library) -> None:
    """Its channel average is silence: it must neither be rejected as silent nor missed."""
    stereo, rate = sf.read(library.antiphase, dtype="float32", always_2d=True)
    start = 15 * rate
    query = library.root / "surround-query.wav"
    sf.write(query, stereo[start : start + int(EXCERPT_S * rate)], rate, subtype="FLOAT")
    events = identify(library, [query])[str(query)]
    playing = [e for e in events if e["type"] == "now_playing"]
    assert playing, events
    assert {e["track"]["title"] for e in playing} == {"Surround Module"}  # type: ignore[index]
    last = playing[-1]
    assert abs(float(last["offset_s"]) - (15.0 + float(last["t"]))) <= 1.0, last  # type: ignore[arg-type]


def test_two_versions_of_a_track_each_identified_and_never_sounds_like_each_other(
    library: Library, tmp_path: Path
) -> None:
    """A library holding one piece twice, the second key-locked 7 % faster (a game's
    "last lap" copy). The index records them as versions; each recording is still named
    as itself (versions are no rivals for confidence, but compete on Fréchet distance),
    and "sounds like" never offers one version for the other."""
    music = tmp_path / "music"
    music.mkdir()
    titles = sorted(library.tracks)[:4]
    for title in titles:
        sf.write(music / f"{title}.flac", library.tracks[title], library.rate)
    original = library.tracks[titles[0]]
    fast = augment.tempo(original, sample_rate_hz=library.rate, factor=1.07)
    sf.write(music / f"{titles[0]} (fast).flac", fast, library.rate)
    index = tmp_path / "index"
    assert main(["index", "build", "--index", str(index), str(music), "--quiet"]) == 0
    stats = run_cli("index", "stats", "--index", index, "--json")
    (pair,) = json.loads(stats)["versions"]
    assert set(pair.split(" = ")) == {
        f"{music / titles[0]}.flac",
        f"{music / titles[0]} (fast).flac",
    }
    text = run_cli("index", "stats", "--index", index)
    assert f"          versions: {pair}\n" in text, text

    queries = {}
    for name, audio in (("original", original), ("fast", fast)):
        path = tmp_path / f"{name}.wav"
        start = int(10 * library.rate)
        sf.write(path, audio[start : start + int(EXCERPT_S * library.rate)], library.rate)
        queries[name] = path
    events = identify(replace(library, index=index), list(queries.values()))
    for name, expected in (("original", titles[0]), ("fast", f"{titles[0]} (fast)")):
        playing = [e for e in events[str(queries[name])] if e["type"] == "now_playing"]
        assert playing, (name, events[str(queries[name])])
        assert playing[-1]["track"]["title"] == expected, (name, playing)  # type: ignore[index]
        assert float(playing[-1]["confidence"]) >= 0.5  # type: ignore[arg-type]

    similar = run_cli("similar", "--index", index, "--format", "json", f"{music / titles[0]}.flac")
    names = [t["track"]["title"] for t in json.loads(similar)["tracks"]]
    assert sorted(names) == sorted(titles[1:])

    assert main(["index", "remove", "--index", str(index), f"{music / titles[0]} (fast).flac"]) == 0
    with LibraryIndex.open(index) as opened:
        assert opened.version_pairs == ()
        assert opened.n_tracks == 4


STRANGER_XFAIL = pytest.mark.xfail(
    strict=True,
    reason="issue 14: encoder-v3 (the default since 6916e35) names a synthetic piece outside"
    " this synthetic library: since the first-window guard (9ac63ab) its first window is"
    " unknown, but a later one is named. Pieces of one synthesizer at other tempi and keys"
    " are near neighbours for a tempo- and pitch-invariant encoder.",
)


@pytest.mark.parametrize(
    "kind", [pytest.param("stranger", marks=STRANGER_XFAIL), pytest.param("noise")]
)
def test_audio_outside_the_library_is_unknown(library: Library, kind: str) -> None:
    rate = 22_050
    if kind == "stranger":
        audio = synth_track(seed=5_000, duration_s=EXCERPT_S, sample_rate_hz=rate)
    else:
        audio = 0.3 * pink_noise(seconds=EXCERPT_S, sample_rate_hz=rate, seed=3)
    path = library.root / f"{kind}.wav"
    sf.write(path, audio, rate)
    events = identify(library, [path])
    kinds = [e["type"] for e in events[str(path)]]
    assert "now_playing" not in kinds, (path.name, events[str(path)])
    assert kinds and kinds[0] == "unknown"


def test_too_short_and_broken_inputs(library: Library, capsys: pytest.CaptureFixture[str]) -> None:
    short = library.root / "short.wav"
    sf.write(short, np.zeros(16_000, dtype=np.float32), 16_000)
    broken = library.root / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt garbage")
    code = main(["identify", "--index", str(library.index), str(short), str(broken)])
    captured = capsys.readouterr()
    assert code != 0
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert lines == [{"type": "unknown", "file": str(short), "t": 0.0, "reason": "too_short"}]
    errors = [x for x in captured.err.splitlines() if x.strip()]
    assert len(errors) == 1 and "broken.wav" in errors[0]


def test_missing_index_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["identify", "--index", str(tmp_path / "nope"), "x.wav"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("synesthete: error:")
