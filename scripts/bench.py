"""Recognition benchmark: scores Synesthete the way users experience it.

    python scripts/bench.py [--quick] [--json OUT] [--corpus DIR] [--model PT]

It drives the recognizer only through the CLI (``synesthete index build`` and
``synesthete identify --format jsonl``), so it measures what users get:

1. The library is the corpus's **bench** split, minus a seeded 15 % of its
   tracks held out as out-of-library negatives. Nothing here touches the
   train or val splits.
2. Queries are 12 s excerpts at random offsets, one set per degradation of
   ``synesthete.inference.augment.CONDITIONS``; negatives are held-out tracks
   (clean and in noise), espeak-ng speech and noise.
3. DJ mixes: 5 library tracks each, 45–75 s, speed within ±6 %, 8 s
   equal-power crossfades, with ground-truth segments.
4. Speed: identify and index build × realtime, per-window encoder / search /
   matcher latency (p50/p99, in-process on the same files), peak RSS of the
   CLI processes, index bytes per hour of audio.

Results: JSON (with the git commit) and a markdown table, written to
``bench/results-<commit>[-quick].{json,md}`` and to ``--json OUT``.
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
from dataclasses import dataclass
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


def make_queries(
    library: list[Track],
    negatives: list[Track],
    plan: Plan,
    materials: Materials,
    out: Path,
) -> dict[str, list[tuple[Path, QueryTruth]]]:
    """Write query files per condition; return their truths."""
    rng = np.random.default_rng(SEED)
    sets: dict[str, list[tuple[Path, QueryTruth]]] = {}
    for name in plan.conditions:
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

    neg_items: list[tuple[Path, QueryTruth]] = []
    folder = out / "negatives"
    folder.mkdir(parents=True, exist_ok=True)

    def add_negative(kind: str, audio: np.ndarray) -> None:
        path = folder / f"{kind}-{len(neg_items):04d}.wav"
        sf.write(path, audio[: int(QUERY_S * QUERY_RATE_HZ)], QUERY_RATE_HZ, subtype="FLOAT")
        neg_items.append(
            (path, QueryTruth(condition=f"negative:{kind}", track=None, duration_s=QUERY_S))
        )

    for n in range(plan.negatives_per_kind * 2):
        track = negatives[n % len(negatives)]
        if track.duration_s < QUERY_S + 1:
            continue
        start_s = float(rng.uniform(0.0, track.duration_s - QUERY_S - 0.5))
        audio, rate = read_mono(track.path, start_s=start_s, seconds=QUERY_S)
        if not audible(audio):
            continue
        if n % 2:
            audio = pink_noise_at_snr(audio, sample_rate_hz=rate, rng=rng, snr_db=5.0)
            add_negative("music-noisy", audio)
        else:
            add_negative("music", audio)
    for n in range(plan.negatives_per_kind):
        if materials.speech:
            clips = [materials.speech[int(k)] for k in rng.integers(len(materials.speech), size=4)]
            speech_audio = np.concatenate(clips)
            if speech_audio.size >= QUERY_S * QUERY_RATE_HZ:
                add_negative("speech", 0.5 * speech_audio / max(1e-6, np.abs(speech_audio).max()))
        noise = pink_noise(seconds=QUERY_S, sample_rate_hz=QUERY_RATE_HZ, seed=SEED + n)
        add_negative("noise", 0.3 * noise)
    sets["negatives"] = neg_items
    return sets


def make_mixes(
    library: list[Track], plan: Plan, out: Path
) -> list[tuple[Path, list[tuple[str, float, float]], list[float]]]:
    rng = np.random.default_rng(SEED + 1)
    mixes = []
    folder = out / "mixes"
    folder.mkdir(parents=True, exist_ok=True)
    long_tracks = [t for t in library if t.duration_s >= 80.0]
    for m in range(plan.mixes):
        chosen = rng.choice(len(long_tracks), size=5, replace=False)
        pieces, paths, factors = [], [], []
        for k in chosen:
            track = long_tracks[int(k)]
            length_s = float(rng.uniform(45.0, 75.0))
            factor = float(rng.uniform(0.94, 1.06))
            start_s = float(rng.uniform(0.0, max(0.0, track.duration_s - length_s * factor - 1)))
            audio, rate = read_mono(track.path, start_s=start_s, seconds=length_s * factor)
            pieces.append(speed(audio, sample_rate_hz=rate, factor=factor))
            paths.append(track.path)
            factors.append(factor)
        mix, bounds = crossfade_mix(pieces, sample_rate_hz=QUERY_RATE_HZ, fade_s=8.0)
        path = folder / f"mix-{m:02d}.wav"
        sf.write(
            path, 0.9 * mix / max(1e-6, float(np.abs(mix).max())), QUERY_RATE_HZ, subtype="FLOAT"
        )
        segments = [(p, float(a), float(b)) for p, (a, b) in zip(paths, bounds, strict=True)]
        mixes.append((path, segments, factors))
    return mixes


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer queries (< 10 min)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--model", type=Path, default=None, help="encoder file (default: packaged)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep work files here")
    parser.add_argument("--label", default=None, help="suffix for the results file name")
    parser.add_argument("--index-hop", type=float, default=None, help="index hop in seconds")
    parser.add_argument("--hop", type=float, default=None, help="live hop in seconds")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    began = time.perf_counter()
    commit, dirty = git_commit()

    manifest = load_manifest(args.corpus)
    bench = [
        Track(
            path=e["path"],
            package=e["package"],
            title=e["title"],
            duration_s=float(e["duration_s"]),
            sample_rate_hz=int(e["sample_rate_hz"]),
        )
        for e in manifest
        if e["split"] == "bench" and Path(e["path"]).is_file()
    ]
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(bench))
    n_negative = max(3, round(NEGATIVE_FRACTION * len(bench)))
    negatives = [bench[int(i)] for i in order[:n_negative]]
    library = sorted((bench[int(i)] for i in order[n_negative:]), key=lambda t: t.path)
    library_hours = sum(t.duration_s for t in library) / 3600.0
    print(
        f"bench: {len(library)} library tracks ({library_hours:.2f} h), "
        f"{len(negatives)} held-out negatives, commit {commit[:10]}{' (dirty)' if dirty else ''}"
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
            *[t.path for t in library],
        ]
    )
    index_bytes = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    print(
        f"bench: index built in {build_s:.1f} s "
        f"({library_hours * 3600 / build_s:.0f}x realtime, {index_bytes / 1e6:.1f} MB)"
    )

    materials = load_materials(args.corpus)
    sets = make_queries(library, negatives, plan, materials, work / "queries")
    mixes = make_mixes(library, plan, work / "queries")
    print(f"bench: {sum(len(v) for v in sets.values())} queries, {len(mixes)} mixes written")

    results = []
    identify_audio_s = 0.0
    identify_wall_s = 0.0
    identify_rss = 0
    for name, items in sets.items():
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
        for path, truth in items:
            results.append(evaluate_query(by_file.get(str(path), []), truth, match_on="path"))
        print(f"bench: {name:>12}: {len(items)} queries in {wall:.1f} s")
    summary = summarize(results)

    mix_results = []
    for path, segments, _ in mixes:
        out = work / f"events-{path.stem}.jsonl"
        wall, rss, _ = run_cli(
            ["identify", "--index", str(index), *model_args, *live_args, str(path)], stdout=out
        )
        duration_s = sf.info(path).duration
        identify_wall_s += wall
        identify_audio_s += duration_s
        events = [json.loads(x) for x in out.read_text().splitlines() if x]
        mix_results.append(mix_metrics(events, segments, match_on="path", end_s=duration_s))
    mix_summary = summarize_mixes(mix_results) if mix_results else {}

    latency_files = [p for p, _ in sets["clean"][: plan.latency_files]]
    latency = measure_latency(index, latency_files, args.model)

    elapsed = time.perf_counter() - began
    doc: dict[str, Any] = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "model": str(args.model) if args.model else "packaged",
        "index_hop_s": args.index_hop or DEFAULT_INDEX_HOP_S,
        "live_hop_s": args.hop or DEFAULT_LIVE_HOP_S,
        "library": {
            "tracks": len(library),
            "hours": round(library_hours, 3),
            "negative_tracks": len(negatives),
        },
        "conditions": {k: v.to_dict() for k, v in summary.items()},
        "mixes": mix_summary,
        "speed": {
            "identify_x_realtime": round(identify_audio_s / identify_wall_s, 1),
            "index_build_x_realtime": round(library_hours * 3600 / build_s, 1),
            "index_build_s": round(build_s, 1),
            "peak_rss_mib": round(max(build_rss, identify_rss) / 1024, 1),
            "index_bytes_per_hour": round(index_bytes / library_hours),
            "latency": latency,
        },
        "runtime_s": round(elapsed, 1),
    }
    table = markdown_table(summary)
    mix_table = markdown_table({"mixes": mix_summary}, columns=MIX_COLUMNS, first_header="")
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
    markdown = (
        f"# Benchmark {doc['mode']} — commit {commit[:10]}{' (dirty)' if dirty else ''}\n\n"
        f"{len(library)} library tracks ({library_hours:.2f} h), model {doc['model']}, "
        f"{doc['date']}, runtime {elapsed / 60:.1f} min\n\n{table}\n{mix_table}\n{speed_md}"
    )
    print(markdown)
    suffix = f"-{args.label}" if args.label else ""
    name = f"results-{commit[:10]}{'-quick' if args.quick else ''}{suffix}"
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (ROOT / "bench" / f"{name}.md").write_text(markdown)
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
