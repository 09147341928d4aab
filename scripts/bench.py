"""Recognition benchmark: scores Synesthete the way users experience it.

    python scripts/bench.py [--quick] [--split {bench,val}] [--json OUT] [--corpus DIR]
                            [--model PT] [--conditions A,B,...] [--no-negatives] [--no-mixes]
                            [--index-arg=ARG ...]

It drives the recognizer only through the CLI (``synesthete index build`` and
``synesthete identify --format jsonl``), so it measures what users get:

1. The library is one split of the corpus, minus a seeded 15 % of its tracks
   held out as out-of-library negatives. ``--split bench`` (the default) uses
   the **bench** split, for the figures we publish; ``--split val`` uses the
   **val** split instead, for tuning (thresholds, hops, index options): tuning
   decisions are made on val, never on bench. The train split is never read.
2. Queries are 12 s excerpts at random offsets, one set per degradation of
   ``synesthete.inference.augment.CONDITIONS``; negatives are held-out tracks
   (clean and in noise), espeak-ng speech and noise. Each condition draws
   from its own seeded generator, so ``--conditions clean,speed+8`` writes
   the same queries as a full run (and ``--quick`` the first of them).
3. DJ mixes, built like a DJ set: 5 library tracks each, 50–90 s per piece
   (at least its two crossfades plus 10 s alone), speed within ±8 % (a
   turntable pitch fader), an equal-power crossfade of 8–30 s drawn per
   transition; scored against the ground-truth segments. The first mix's
   tracklist (``identify --format cue`` and ``txt``) is written next to the
   results with its ground truth, for reading side by side.
4. Speed: identify and index build × realtime, per-window encoder / search /
   matcher latency (p50/p99, in-process on the same files), peak RSS of the
   CLI processes, index bytes per hour of audio.

``--conditions`` runs only those query sets; negatives and mixes still run
unless ``--no-negatives`` / ``--no-mixes``. ``--index-arg`` (repeatable)
passes one argument verbatim to ``index build``; write it with ``=`` when it
starts with a dash: ``--index-arg=--speed-variants --index-arg=0.94,1.06``.

Results: JSON (with the git commit, the split, the index arguments and one
row per mix) and a markdown table, written to
``bench/results-<commit>[-val][-quick][-LABEL].{json,md}`` and to ``--json
OUT``; the sample tracklist to ``bench/tracklist-<same tag>-mix00.{cue,txt}``
and ``...-mix00-truth.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from provenance import git_commit

from synesthete.clients.evaluation import (
    MIX_COLUMNS,
    QueryTruth,
    evaluate_query,
    markdown_table,
    mix_metrics,
    split_by_file,
    summarize,
    summarize_mixes,
)
from synesthete.constants import DEFAULT_INDEX_HOP_S, DEFAULT_LIVE_HOP_S
from synesthete.index.decode import load_mono
from synesthete.index.store import Library
from synesthete.inference.augment import (
    CONDITIONS,
    Materials,
    crossfade_mix,
    pink_noise_at_snr,
    source_seconds_needed,
    speed,
)
from synesthete.stream.synth import pink_noise

ROOT = Path(__file__).resolve().parents[1]
QUERY_S = 12.0
QUERY_RATE_HZ = 22_050
SEED = 20261122
NEGATIVE_FRACTION = 0.15
SPLITS = ("bench", "val")

MIX_TRACKS = 5
MIX_PIECE_S = (50.0, 90.0)
MIX_SPEED_FACTOR = (0.92, 1.08)
"""A turntable pitch fader's ±8 %."""
MIX_FADE_S = (8.0, 30.0)
"""From a quick blend over a few bars to a long mix-in over 16 bars at 128 BPM."""
MIX_SOLO_S = 10.0
"""Each piece plays alone at least this long between its fades, as in a real set."""
MIX_MIN_TRACK_S = MIX_PIECE_S[1] * MIX_SPEED_FACTOR[1] + 1.0
"""Source seconds the longest piece at the fastest speed needs, plus a margin."""


@dataclass(frozen=True)
class Track:
    path: str
    package: str
    title: str
    duration_s: float
    sample_rate_hz: int


@dataclass(frozen=True)
class Plan:
    queries_per_condition: int
    negatives_per_kind: int
    mixes: int
    conditions: tuple[str, ...]
    latency_files: int


@dataclass(frozen=True)
class Mix:
    """A written DJ mix and its ground truth: segments (track path, start_s, end_s) in mix time."""

    path: Path
    segments: list[tuple[str, float, float]]
    factors: list[float]
    fades_s: list[float]


QUICK = Plan(
    queries_per_condition=30,
    negatives_per_kind=20,
    mixes=3,
    conditions=tuple(CONDITIONS),
    latency_files=20,
)
FULL = Plan(
    queries_per_condition=150,
    negatives_per_kind=100,
    mixes=10,
    conditions=tuple(CONDITIONS),
    latency_files=60,
)


def condition_rng(name: str) -> np.random.Generator:
    """A generator per query set, so a set's queries do not depend on which others run."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


def parse_conditions(text: str) -> tuple[str, ...]:
    """``a,b,c`` as condition names in report order; exits with one line if one is unknown."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(CONDITIONS))
    if unknown or not names:
        problem = f"unknown condition(s) {', '.join(unknown)}" if unknown else "no condition given"
        sys.exit(f"bench: --conditions: {problem}; known: {', '.join(CONDITIONS)}")
    return tuple(n for n in CONDITIONS if n in names)


def load_manifest(corpus: Path) -> list[dict[str, Any]]:
    path = corpus / "manifest.jsonl"
    if not path.is_file():
        sys.exit(f"bench: no corpus manifest at {path}; run: bash scripts/corpus.sh --quick")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_cli(args: list[str], *, stdout: Path | None = None) -> tuple[float, int, str]:
    """Run ``synesthete ARGS``; return (wall seconds, peak RSS KiB, stderr tail)."""
    cmd = [sys.executable, "-m", "synesthete.clients.cli", *args]
    started = time.perf_counter()
    with stdout.open("w") if stdout else open(os.devnull, "w") as out:  # noqa: PTH123
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
        _, stderr = proc.communicate()
        # wait4 was consumed by communicate(); RUSAGE_CHILDREN holds the max over children.
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode not in (0, 2):
        raise SystemExit(
            f"bench: {' '.join(args[:2])} failed ({proc.returncode}): {stderr[-2000:]}"
        )
    return wall, peak_kib, stderr[-2000:]


def read_mono(path: str, *, start_s: float, seconds: float) -> tuple[np.ndarray, int]:
    """An excerpt as mono float32 at the query rate."""
    audio = load_mono(path, sample_rate_hz=QUERY_RATE_HZ, start_s=start_s, duration_s=seconds)
    return audio, QUERY_RATE_HZ


def audible(audio: np.ndarray) -> bool:
    return bool(audio.size) and float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > 1e-3


def load_materials(corpus: Path) -> Materials:
    speech: list[np.ndarray] = []
    for path in sorted((corpus / "speech").glob("*.wav"))[:40]:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        speech.append(soxr.resample(audio.mean(axis=1), rate, QUERY_RATE_HZ).astype(np.float32))
    ambience: list[np.ndarray] = []
    listing = corpus / "ambience.jsonl"
    if listing.is_file():
        for line in listing.read_text().splitlines()[:12]:
            entry = json.loads(line)
            try:
                audio, _ = read_mono(entry["path"], start_s=0.0, seconds=30.0)
            except (RuntimeError, sf.LibsndfileError):
                continue
            if audible(audio):
                ambience.append(audio)
    return Materials(sample_rate_hz=QUERY_RATE_HZ, speech=tuple(speech), ambience=tuple(ambience))


def negative_record(
    path: Path, truth: QueryTruth, events: list[dict[str, Any]], sources: dict[str, Any]
) -> dict[str, Any]:
    """One negative query: where it came from (``sources``, by file name), and what (if
    anything) it was taken for."""
    named = [
        e for e in events if e.get("type") == "now_playing" and float(e.get("t", 0.0)) <= QUERY_S
    ]
    record: dict[str, Any] = {
        "file": path.name,
        "kind": truth.condition,
        **sources.get(path.name, {}),
        "fired": bool(named),
    }
    if named:
        first = named[0]
        record.update(
            first_t_s=first.get("t"),
            named=(first.get("track") or {}).get("path"),
            confidence=max(float(e.get("confidence", 0.0)) for e in named),
        )
    return record


def make_queries(
    library: list[Track],
    negatives: list[Track],
    plan: Plan,
    materials: Materials,
    out: Path,
) -> dict[str, list[tuple[Path, QueryTruth]]]:
    """Write query files per condition (and negatives unless none are planned); return truths."""
    sets: dict[str, list[tuple[Path, QueryTruth]]] = {}
    for name in plan.conditions:
        rng = condition_rng(name)
        condition = CONDITIONS[name]
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        need_s = source_seconds_needed(name, QUERY_S)
        items: list[tuple[Path, QueryTruth]] = []
        attempts = 0
        while (
            len(items) < plan.queries_per_condition and attempts < 10 * plan.queries_per_condition
        ):
            attempts += 1
            track = library[int(rng.integers(len(library)))]
            if track.duration_s < need_s + 1.0:
                continue
            start_s = float(rng.uniform(0.0, track.duration_s - need_s - 0.5))
            source, rate = read_mono(track.path, start_s=start_s, seconds=need_s)
            if not audible(source):
                continue
            query = condition(source, sample_rate_hz=rate, rng=rng, materials=materials)
            query = query[: int(QUERY_S * rate)]
            path = folder / f"{len(items):04d}.wav"
            sf.write(path, query, rate, subtype="FLOAT")
            items.append(
                (
                    path,
                    QueryTruth(
                        condition=name,
                        track=track.path,
                        excerpt_start_s=start_s,
                        tempo_factor=condition.tempo_factor,
                        duration_s=QUERY_S,
                    ),
                )
            )
        sets[name] = items
    if plan.negatives_per_kind == 0:
        return sets

    rng = condition_rng("negatives")
    neg_items: list[tuple[Path, QueryTruth]] = []
    folder = out / "negatives"
    folder.mkdir(parents=True, exist_ok=True)

    sources: dict[str, dict[str, Any]] = {}

    def add_negative(kind: str, audio: np.ndarray, source: dict[str, Any] | None = None) -> None:
        path = folder / f"{kind}-{len(neg_items):04d}.wav"
        sf.write(path, audio[: int(QUERY_S * QUERY_RATE_HZ)], QUERY_RATE_HZ, subtype="FLOAT")
        neg_items.append(
            (path, QueryTruth(condition=f"negative:{kind}", track=None, duration_s=QUERY_S))
        )
        sources[path.name] = source or {}

    for n in range(plan.negatives_per_kind * 2):
        track = negatives[n % len(negatives)]
        if track.duration_s < QUERY_S + 1:
            continue
        start_s = float(rng.uniform(0.0, track.duration_s - QUERY_S - 0.5))
        audio, rate = read_mono(track.path, start_s=start_s, seconds=QUERY_S)
        if not audible(audio):
            continue
        source = {"track": track.path, "start_s": round(start_s, 2)}
        if n % 2:
            audio = pink_noise_at_snr(audio, sample_rate_hz=rate, rng=rng, snr_db=5.0)
            add_negative("music-noisy", audio, source)
        else:
            add_negative("music", audio, source)
    for n in range(plan.negatives_per_kind):
        if materials.speech:
            clips = [materials.speech[int(k)] for k in rng.integers(len(materials.speech), size=4)]
            speech_audio = np.concatenate(clips)
            if speech_audio.size >= QUERY_S * QUERY_RATE_HZ:
                add_negative("speech", 0.5 * speech_audio / max(1e-6, np.abs(speech_audio).max()))
        noise = pink_noise(seconds=QUERY_S, sample_rate_hz=QUERY_RATE_HZ, seed=SEED + n)
        add_negative("noise", 0.3 * noise)
    sets["negatives"] = neg_items
    # Where each negative came from, for the per-negative record in the results.
    (folder / "sources.json").write_text(json.dumps(sources))
    return sets


def make_mixes(library: list[Track], plan: Plan, out: Path) -> list[Mix]:
    """Write ``plan.mixes`` DJ mixes of ``MIX_TRACKS`` library tracks each (see point 3)."""
    rng = np.random.default_rng(SEED + 1)
    mixes = []
    folder = out / "mixes"
    folder.mkdir(parents=True, exist_ok=True)
    long_tracks = [t for t in library if t.duration_s >= MIX_MIN_TRACK_S]
    if plan.mixes and len(long_tracks) < MIX_TRACKS:
        sys.exit(
            f"bench: mixes need {MIX_TRACKS} library tracks of >= {MIX_MIN_TRACK_S:.0f} s, "
            f"the library has {len(long_tracks)}; use --no-mixes"
        )
    for m in range(plan.mixes):
        chosen = rng.choice(len(long_tracks), size=MIX_TRACKS, replace=False)
        fades_s = [float(rng.uniform(*MIX_FADE_S)) for _ in range(MIX_TRACKS - 1)]
        fade_in_s, fade_out_s = [0.0, *fades_s], [*fades_s, 0.0]
        pieces, paths, factors = [], [], []
        for i, k in enumerate(chosen):
            track = long_tracks[int(k)]
            shortest_s = max(MIX_PIECE_S[0], fade_in_s[i] + fade_out_s[i] + MIX_SOLO_S)
            length_s = float(rng.uniform(shortest_s, MIX_PIECE_S[1]))
            factor = float(rng.uniform(*MIX_SPEED_FACTOR))
            start_s = float(rng.uniform(0.0, max(0.0, track.duration_s - length_s * factor - 1)))
            audio, rate = read_mono(track.path, start_s=start_s, seconds=length_s * factor)
            pieces.append(speed(audio, sample_rate_hz=rate, factor=factor))
            paths.append(track.path)
            factors.append(factor)
        mix, bounds = crossfade_mix(pieces, sample_rate_hz=QUERY_RATE_HZ, fade_s=fades_s)
        path = folder / f"mix-{m:02d}.wav"
        sf.write(
            path, 0.9 * mix / max(1e-6, float(np.abs(mix).max())), QUERY_RATE_HZ, subtype="FLOAT"
        )
        segments = [(p, float(a), float(b)) for p, (a, b) in zip(paths, bounds, strict=True)]
        mixes.append(Mix(path=path, segments=segments, factors=factors, fades_s=fades_s))
    return mixes


def mm_ss(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def truth_text(mix: Mix) -> str:
    """The ground truth of a mix, laid out to read next to its ``identify --format txt``."""
    lines = [
        f"# {mix.path.name}: ground truth; consecutive segments overlap by their crossfade",
        "# start  end    speed    track",
    ]
    for (track, start_s, end_s), factor in zip(mix.segments, mix.factors, strict=True):
        lines.append(
            f"{mm_ss(start_s)}  {mm_ss(end_s)}  {100 * (factor - 1):+5.1f} %  {Path(track).name}"
        )
    fades = ", ".join(f"{f:.1f}" for f in mix.fades_s)
    lines.append(f"# crossfades: {fades} s")
    return "\n".join(lines) + "\n"


def write_sample_tracklists(
    mix: Mix, *, index: Path, cli_args: Sequence[str], stem: Path
) -> list[Path]:
    """``identify --format cue`` and ``txt`` of one mix, and its truth, at ``STEM.{cue,txt}``."""
    written = []
    for fmt in ("cue", "txt"):
        out = stem.with_name(f"{stem.name}.{fmt}")
        run_cli(
            ["identify", "--index", str(index), *cli_args, "--format", fmt, str(mix.path)],
            stdout=out,
        )
        written.append(out)
    truth = stem.with_name(f"{stem.name}-truth.txt")
    truth.write_text(truth_text(mix))
    written.append(truth)
    return written


def measure_latency(index: Path, files: list[Path], model: Path | None) -> dict[str, Any]:
    """Per-window encoder / search / matcher wall time, in-process, batch of one window."""
    from synesthete.clients.app import open_engine
    from synesthete.inference.config import EncoderConfig

    engine = open_engine(index_dir=index, encoder_config=EncoderConfig(model_path=model))
    enc: list[float] = []
    search: list[float] = []
    match: list[float] = []
    for path in files:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        recognizer = engine.recognizer(stream=str(path), input_rate_hz=rate, keep_timings=True)
        block = rate // 10  # 100 ms blocks: one window at a time, as live
        for start in range(0, audio.shape[0], block):
            recognizer.push(audio[start : start + block])
        enc += recognizer.timing.encoder_ms
        search += recognizer.timing.search_ms
        match += recognizer.timing.matcher_ms
    engine.close()
    warm = slice(2, None)  # the first windows pay TorchScript's profiling runs

    def pct(xs: list[float]) -> dict[str, float]:
        arr = np.array(xs[warm] if len(xs) > 4 else xs)
        return {
            "p50_ms": round(float(np.percentile(arr, 50)), 3),
            "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "n": int(arr.size),
        }

    total = [e + s + m for e, s, m in zip(enc, search, match, strict=True)]
    return {
        "encoder": pct(enc),
        "search": pct(search),
        "matcher": pct(match),
        "window_total": pct(total),
    }


def split_library(manifest: list[dict[str, Any]], split: str) -> tuple[list[Track], list[Track]]:
    """``(library, negatives)`` from one split: a seeded ``NEGATIVE_FRACTION`` is held out."""
    tracks = [
        Track(
            path=e["path"],
            package=e["package"],
            title=e["title"],
            duration_s=float(e["duration_s"]),
            sample_rate_hz=int(e["sample_rate_hz"]),
        )
        for e in manifest
        if e["split"] == split and Path(e["path"]).is_file()
    ]
    if not tracks:
        sys.exit(f"bench: the corpus has no readable tracks in its {split!r} split")
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(tracks))
    n_negative = max(3, round(NEGATIVE_FRACTION * len(tracks)))
    negatives = [tracks[int(i)] for i in order[:n_negative]]
    library = sorted((tracks[int(i)] for i in order[n_negative:]), key=lambda t: t.path)
    return library, negatives


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer queries (< 10 min)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="bench",
        help="library and negatives from this corpus split; tune on val, report on bench",
    )
    parser.add_argument("--model", type=Path, default=None, help="encoder file (default: packaged)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep work files here")
    parser.add_argument("--label", default=None, help="suffix for the results file name")
    parser.add_argument("--index-hop", type=float, default=None, help="index hop in seconds")
    parser.add_argument("--hop", type=float, default=None, help="live hop in seconds")
    parser.add_argument(
        "--conditions",
        default=None,
        metavar="A,B,...",
        help=f"run only these query sets (default: all of {', '.join(CONDITIONS)})",
    )
    parser.add_argument("--no-negatives", action="store_true", help="skip the negative queries")
    parser.add_argument("--no-mixes", action="store_true", help="skip the DJ mixes")
    parser.add_argument(
        "--index-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to 'index build' (repeatable; --index-arg=--flag for dashed ones)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.conditions is not None:
        plan = replace(plan, conditions=parse_conditions(args.conditions))
    if args.no_negatives:
        plan = replace(plan, negatives_per_kind=0)
    if args.no_mixes:
        plan = replace(plan, mixes=0)
    index_args: list[str] = args.index_arg
    began = time.perf_counter()
    commit, dirty = git_commit()

    manifest = load_manifest(args.corpus)
    library, negatives = split_library(manifest, args.split)
    library_hours = sum(t.duration_s for t in library) / 3600.0
    print(
        f"bench: {len(library)} library tracks ({library_hours:.2f} h) from the {args.split} "
        f"split, {len(negatives)} held-out negatives, "
        f"commit {commit[:10]}{' (dirty)' if dirty else ''}"
    )

    work = args.workdir or Path(tempfile.mkdtemp(prefix="synesthete-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    index = work / "index"
    if index.exists():
        shutil.rmtree(index)
    list_file = work / "library.txt"
    list_file.write_text("\n".join(t.path for t in library))
    model_args = ["--model", str(args.model)] if args.model else []
    hop_args = ["--index-hop", str(args.index_hop)] if args.index_hop else []
    live_args = ["--hop", str(args.hop)] if args.hop else []
    build_s, build_rss, _ = run_cli(
        [
            "index",
            "build",
            "--index",
            str(index),
            "--quiet",
            *model_args,
            *hop_args,
            *index_args,
            *[t.path for t in library],
        ]
    )
    index_bytes = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    print(
        f"bench: index built in {build_s:.1f} s "
        f"({library_hours * 3600 / build_s:.0f}x realtime, {index_bytes / 1e6:.1f} MB)"
    )

    # Truth must be what the index holds: a track the builder refused (it says
    # why on stderr) would only be scored as missed in every query and mix.
    with Library.open(index) as opened:
        indexed = {record.path for record in opened.records()}
        # Naming another version of the truth (an edit, a sped-up copy) is still a
        # wrong ID, but the table tells it apart from naming other music.
        versions_of = {
            record.path: frozenset(opened.record(v).path for v in opened.versions(record.id))
            for record in opened.records()
        }
    rejected = [t.path for t in library if t.path not in indexed]
    for path in rejected:
        print(f"bench: not indexed, left out of the queries and mixes: {path}")
    library = [t for t in library if t.path in indexed]

    materials = load_materials(args.corpus)
    sets = {
        name: [
            (path, replace(truth, versions=versions_of.get(truth.track, frozenset())))
            if isinstance(truth.track, str)
            else (path, truth)
            for path, truth in items
        ]
        for name, items in make_queries(
            library, negatives, plan, materials, work / "queries"
        ).items()
    }
    mixes = make_mixes(library, plan, work / "queries")
    print(f"bench: {sum(len(v) for v in sets.values())} queries, {len(mixes)} mixes written")

    results = []
    identify_audio_s = 0.0
    identify_wall_s = 0.0
    identify_rss = 0
    negative_details: list[dict[str, Any]] = []
    for name, items in sets.items():
        if not items:
            print(f"bench: {name:>12}: no queries (no library track long enough)")
            continue
        out = work / f"events-{name}.jsonl"
        wall, rss, _ = run_cli(
            ["identify", "--index", str(index), *model_args, *live_args]
            + [str(p) for p, _ in items],
            stdout=out,
        )
        identify_wall_s += wall
        identify_audio_s += QUERY_S * len(items)
        identify_rss = max(identify_rss, rss)
        by_file = split_by_file(json.loads(x) for x in out.read_text().splitlines() if x)
        sources_path = items[0][0].parent / "sources.json"
        sources = json.loads(sources_path.read_text()) if sources_path.is_file() else {}
        for path, truth in items:
            results.append(evaluate_query(by_file.get(str(path), []), truth, match_on="path"))
            if truth.track is None:
                negative_details.append(
                    negative_record(path, truth, by_file.get(str(path), []), sources)
                )
        print(f"bench: {name:>12}: {len(items)} queries in {wall:.1f} s")
    summary = summarize(results)

    mix_results = []
    mix_details: list[dict[str, Any]] = []
    for mix in mixes:
        out = work / f"events-{mix.path.stem}.jsonl"
        wall, rss, _ = run_cli(
            ["identify", "--index", str(index), *model_args, *live_args, str(mix.path)],
            stdout=out,
        )
        duration_s = sf.info(mix.path).duration
        identify_wall_s += wall
        identify_audio_s += duration_s
        identify_rss = max(identify_rss, rss)
        events = [json.loads(x) for x in out.read_text().splitlines() if x]
        scored = mix_metrics(events, mix.segments, match_on="path", end_s=duration_s)
        mix_results.append(scored)
        mix_details.append(
            {
                "mix": mix.path.name,
                "duration_s": round(duration_s, 2),
                "seconds_correct": scored.seconds_correct,
                "segment_recall": scored.segment_recall,
                "fades_s": [round(f, 2) for f in mix.fades_s],
                "segments": [
                    {
                        "track": track,
                        "start_s": round(start_s, 2),
                        "end_s": round(end_s, 2),
                        "speed_factor": round(factor, 4),
                    }
                    for (track, start_s, end_s), factor in zip(
                        mix.segments, mix.factors, strict=True
                    )
                ],
            }
        )
        correct = scored.seconds_correct
        print(
            f"bench: {mix.path.stem}: {duration_s / 60:.1f} min, {scored.segments} tracks, "
            f"fades {', '.join(f'{f:.0f}' for f in mix.fades_s)} s: seconds correct "
            f"{'–' if correct is None else f'{100 * correct:.1f} %'}, "
            f"segments found {scored.segments_found}/{scored.segments}"
        )
    mix_summary = summarize_mixes(mix_results) if mix_results else {}

    is_partial = args.conditions is not None or args.no_negatives or args.no_mixes
    tag = (
        f"{commit[:10]}{'-val' if args.split == 'val' else ''}{'-quick' if args.quick else ''}"
        f"{'-partial' if is_partial else ''}{f'-{args.label}' if args.label else ''}"
    )
    (ROOT / "bench").mkdir(exist_ok=True)
    tracklists: list[Path] = []
    if mixes:
        tracklists = write_sample_tracklists(
            mixes[0],
            index=index,
            cli_args=[*model_args, *live_args],
            stem=ROOT / "bench" / f"tracklist-{tag}-mix00",
        )

    latency_set = "clean" if "clean" in sets else plan.conditions[0]
    latency_files = [p for p, _ in sets[latency_set][: plan.latency_files]]
    latency = measure_latency(index, latency_files, args.model)

    elapsed = time.perf_counter() - began
    doc: dict[str, Any] = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "split": args.split,
        "plan": asdict(plan),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "model": str(args.model) if args.model else "packaged",
        "index_hop_s": args.index_hop or DEFAULT_INDEX_HOP_S,
        "live_hop_s": args.hop or DEFAULT_LIVE_HOP_S,
        "index_args": index_args,
        "library": {
            "tracks": len(library),
            "hours": round(library_hours, 3),
            "negative_tracks": len(negatives),
            "not_indexed": rejected,
        },
        "conditions": {k: v.to_dict() for k, v in summary.items()},
        "mixes": mix_summary,
        "mix_details": mix_details,
        "negative_details": negative_details,
        "speed": {
            "identify_x_realtime": round(identify_audio_s / identify_wall_s, 1),
            "index_build_x_realtime": round(library_hours * 3600 / build_s, 1),
            "index_build_s": round(build_s, 1),
            "peak_rss_mib": round(max(build_rss, identify_rss) / 1024, 1),
            "index_bytes_per_hour": round(index_bytes / library_hours),
            "latency": {**latency, "query_set": latency_set},
        },
        "runtime_s": round(elapsed, 1),
    }
    table = markdown_table(summary)
    mix_table = (
        markdown_table({"mixes": mix_summary}, columns=MIX_COLUMNS, first_header="") + "\n"
        if mix_summary
        else ""
    )
    lat = latency
    speed_md = (
        f"- identify: {doc['speed']['identify_x_realtime']}x realtime; index build: "
        f"{doc['speed']['index_build_x_realtime']}x realtime; peak RSS "
        f"{doc['speed']['peak_rss_mib']} MiB; index {index_bytes / library_hours / 1e6:.1f} MB/h\n"
        f"- per window (p50 / p99 ms): encoder {lat['encoder']['p50_ms']} / "
        f"{lat['encoder']['p99_ms']}, search {lat['search']['p50_ms']} / "
        f"{lat['search']['p99_ms']}, matcher {lat['matcher']['p50_ms']} / "
        f"{lat['matcher']['p99_ms']}, total {lat['window_total']['p50_ms']} / "
        f"{lat['window_total']['p99_ms']}\n"
    )
    index_md = f", index args `{' '.join(index_args)}`" if index_args else ""
    partial = [
        *([f"conditions {', '.join(plan.conditions)}"] if args.conditions is not None else []),
        *(["no negatives"] if args.no_negatives else []),
        *(["no mixes"] if args.no_mixes else []),
    ]
    partial_md = f"Partial run: {'; '.join(partial)}\n\n" if partial else ""
    markdown = (
        f"# Benchmark {doc['mode']} on the {args.split} split — commit "
        f"{commit[:10]}{' (dirty)' if dirty else ''}\n\n"
        f"{len(library)} library tracks ({library_hours:.2f} h), model {doc['model']}"
        f"{index_md}, {doc['date']}, runtime {elapsed / 60:.1f} min\n\n"
        f"{partial_md}{table}\n{mix_table}{speed_md}"
    )
    print(markdown)
    for record in negative_details:
        if record["fired"]:
            print(
                f"bench: {record['kind']} {record['file']} ({record.get('track', '?')} at"
                f" {record.get('start_s', 0.0)} s) was named {record['named']} at"
                f" {record['first_t_s']} s, confidence {record['confidence']:.2f}"
            )
    name = f"results-{tag}"
    (ROOT / "bench" / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (ROOT / "bench" / f"{name}.md").write_text(markdown)
    for path in tracklists:
        print(f"bench: wrote {path.relative_to(ROOT)}")
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
