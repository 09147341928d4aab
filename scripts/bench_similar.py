""" "Sounds like" benchmark: track-level distances against weak labels from the corpus.

    python scripts/bench_similar.py [--corpus DIR] [--index DIR] [--model PT] [--index-hop S]

1. One index over every split of the corpus (``synesthete index build``, or
   ``--index DIR`` to reuse one built over the same files).
2. Weak labels from the manifest: two tracks are **relevant** to each other
   when they share a credited artist (or composer; "A & B" credits both),
   the same album, or, outside the music21 renders, the same package (the
   game a Debian or MIDI track ships with). Tempo variants (``variant_of``)
   of the query are left out of the ranking and of the relevant set, as
   content duplicates are in the product.
3. Two kinds of query per track: **whole** (the track's whole curve at the
   index hop, as ``synesthete similar TRACK`` uses) and **live** (a 30 s
   excerpt at a seeded offset, windowed at the live hop and embedded, of
   which the last ``horizon_windows`` windows are kept: the curve the live
   ``sounds_like`` event ranks by). Each query ranks the other tracks of its
   own group; the query track and its duplicates are excluded.
4. Groups: the **bench** split gives the reported table; **train+val** ("dev")
   picks the default: the distance with the best live MAP there, unless a
   cheaper one is within noise (a paired bootstrap 95 % interval of the MAP
   difference that contains 0).
5. Metrics: precision@5 and MAP (queries with no relevant track in the group
   are skipped and counted), with bootstrap 95 % intervals for MAP, against
   a random ranking (exact expected P@5, Monte-Carlo MAP) and, for live
   queries, exact min point-to-point over every window (to check the
   representatives). Cost: milliseconds per live update for each distance,
   on the dev library and on a synthetic 500 tracks x 600 windows library.

Results: ``bench/similar-<commit10>[-label].{json,md}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_commit

from synesthete.constants import (
    DEFAULT_INDEX_HOP_S,
    DEFAULT_LIVE_HOP_S,
    DEFAULT_SOUNDS_LIKE_DISTANCE,
    SOUNDS_LIKE_DISTANCES,
    WINDOW_S,
)
from synesthete.index.config import MatcherConfig
from synesthete.index.similar import DISTANCES, TrackSummaries
from synesthete.index.sonic import SonicHead
from synesthete.index.sonic_file import load_head, packaged_head

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261122
TOP = 5
LIVE_EXCERPT_S = 30.0
BOOTSTRAP = 1000
RANDOM_RUNS = 200
COST_ORDER = ("mean", "min", "frechet")
"""The selectable distances, cheapest first: a tie on quality goes to the cheaper one."""
BASELINE = "cosine"
SYNTHETIC_TRACKS = 500
SYNTHETIC_WINDOWS = 600


@dataclass(frozen=True)
class Track:
    track_id: int
    path: str
    split: str
    artists: frozenset[str]
    album: str | None
    game: str | None
    family: frozenset[str]
    """Manifest ids of the track itself and its tempo variants."""
    manifest_id: str
    duration_s: float


def _norm(text: str | None) -> str | None:
    if text is None:
        return None
    folded = " ".join(text.casefold().split())
    return folded or None


def split_artists(credit: str | None) -> frozenset[str]:
    """'Max Freeman & Chris Leutwyler' -> both names, case-folded."""
    if credit is None:
        return frozenset()
    parts = re.split(r"\s*(?:&|,|/|;|\band\b|\bfeat\.?|\bft\.?)\s*", credit.casefold())
    return frozenset(p for p in (_norm(x) for x in parts) if p)


def relevant(a: Track, b: Track) -> bool:
    if a.artists & b.artists:
        return True
    if a.album is not None and a.album == b.album:
        return True
    return a.game is not None and a.game == b.game


def load_tracks(corpus: Path, index_paths: dict[str, int]) -> tuple[list[Track], int]:
    path = corpus / "manifest.jsonl"
    if not path.is_file():
        sys.exit(f"bench_similar: no corpus manifest at {path}; run: bash scripts/corpus.sh")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    family: dict[str, set[str]] = {r["id"]: {r["id"]} for r in rows}
    for r in rows:
        if r.get("variant_of") and r["variant_of"] in family:
            family[r["id"]].add(r["variant_of"])
            family[r["variant_of"]].add(r["id"])
    tracks = []
    missing = 0
    for r in rows:
        track_id = index_paths.get(os.path.normpath(r["path"]))
        if track_id is None:
            missing += 1
            continue
        tracks.append(
            Track(
                track_id=track_id,
                path=r["path"],
                split=r["split"],
                artists=split_artists(r.get("artist")),
                album=_norm(r.get("album")),
                game=None if r["source"] == "music21" else r["package"],
                family=frozenset(family[r["id"]]),
                manifest_id=r["id"],
                duration_s=float(r["duration_s"]),
            )
        )
    return tracks, missing


def run_cli(args: list[str]) -> float:
    cmd = [sys.executable, "-m", "synesthete.clients.cli", *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_similar: {' '.join(args[:2])} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - started


def live_curves(
    tracks: Sequence[Track], *, model: Path | None, live_hop_s: float, horizon: int
) -> dict[int, np.ndarray]:
    """The recent live curve of a 30 s excerpt of each track: ``[<=horizon, D]``."""
    from synesthete.index.decode import load_mono_16k
    from synesthete.inference.config import EncoderConfig
    from synesthete.inference.torchscript import TorchScriptEncoder
    from synesthete.stream.windowing import Windower

    encoder = TorchScriptEncoder(config=EncoderConfig(model_path=model, threads=1))
    rng = np.random.default_rng(SEED)
    curves: dict[int, np.ndarray] = {}
    for n, track in enumerate(tracks):
        start_s = float(rng.uniform(0.0, max(0.0, track.duration_s - LIVE_EXCERPT_S)))
        audio = load_mono_16k(track.path, start_s=start_s, duration_s=LIVE_EXCERPT_S)
        windower = Windower(hop_s=live_hop_s)
        windows = windower.push(audio)
        if not windows:
            continue
        batch = np.stack([w.samples for w in windows[-horizon:]])
        curves[track.track_id] = np.asarray(encoder.embed(batch), dtype=np.float32)
        if (n + 1) % 100 == 0:
            print(f"bench_similar: live excerpts embedded: {n + 1}/{len(tracks)}", flush=True)
    return curves


def live_excerpt_windows(
    tracks: Sequence[Track], *, live_hop_s: float, horizon: int
) -> dict[int, np.ndarray]:
    """``live_curves``' excerpts (same seed, same offsets): the last ``horizon`` audio
    windows of each, ``[<=horizon, WINDOW_SAMPLES]``."""
    from synesthete.index.decode import load_mono_16k
    from synesthete.stream.windowing import Windower

    rng = np.random.default_rng(SEED)
    out: dict[int, np.ndarray] = {}
    for track in tracks:
        start_s = float(rng.uniform(0.0, max(0.0, track.duration_s - LIVE_EXCERPT_S)))
        audio = load_mono_16k(track.path, start_s=start_s, duration_s=LIVE_EXCERPT_S)
        windows = Windower(hop_s=live_hop_s).push(audio)
        if windows:
            out[track.track_id] = np.stack([w.samples for w in windows[-horizon:]])
    return out


def live_style_curves(
    tracks: Sequence[Track],
    head: SonicHead,
    *,
    live_hop_s: float,
    horizon: int,
    excerpts: dict[int, np.ndarray] | None = None,
) -> dict[int, np.ndarray]:
    """``live_curves``' excerpts (same seed, same offsets) through an audio head:
    ``[<=horizon, E]`` style vectors of the last windows (``excerpts``: those windows,
    decoded once for several heads)."""
    if excerpts is None:
        excerpts = live_excerpt_windows(tracks, live_hop_s=live_hop_s, horizon=horizon)
    return {t: head.apply_audio(windows) for t, windows in excerpts.items()}


@dataclass
class _StyleRecord:
    id: int
    window_start: int
    window_count: int
    content_hash: str


class StyleLibrary:
    """Each track's curve through an audio head, shaped as ``make_group`` and
    ``evaluate_group`` read a library (``windows``, ``record``, ``curve``, ``index_hop_s``)."""

    def __init__(self, curves: dict[int, np.ndarray], library: Any, *, hop_s: float) -> None:
        ids = sorted(curves)
        counts = [curves[t].shape[0] for t in ids]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        self.windows = np.concatenate([curves[t] for t in ids]).astype(np.float32)
        self.index_hop_s = hop_s
        self._records = {
            t: _StyleRecord(t, int(a), int(c), library.record(t).content_hash)
            for t, a, c in zip(ids, starts, counts, strict=True)
        }

    def record(self, track_id: int) -> _StyleRecord:
        return self._records[track_id]

    def curve(self, track_id: int) -> np.ndarray:
        r = self._records[track_id]
        return self.windows[r.window_start : r.window_start + r.window_count]


def style_curves(
    corpus: Path, tracks: Sequence[Track], head: SonicHead, cache: Path
) -> dict[int, np.ndarray]:
    """Whole-track curves through an audio head: the style features of the bench split
    (scripts/train_similarity.py's ``features_split``, 4 s windows every 2 s, cached)."""
    from train_similarity import features_split

    split = features_split(corpus, "bench", cache_dir=cache)
    by_manifest = {t.manifest_id: t.track_id for t in tracks}
    out: dict[int, np.ndarray] = {}
    for track, start, count in zip(split.tracks, split.starts, split.counts, strict=True):
        if track.manifest_id in by_manifest:
            out[by_manifest[track.manifest_id]] = head.apply(split.windows[start : start + count])
    return out


def reading_current_features(head: SonicHead) -> SonicHead:
    """An audio head of feature version 1 as a head of this version's features: version 2
    appends its columns to version 1's 175, so zero weights on them give the same vectors."""
    from dataclasses import replace

    from synesthete.index.sonic_audio import FEATURE_DIM, FEATURE_VERSION

    if head.feature_version != 1 or FEATURE_VERSION != 2 or head.in_dim != V1_FEATURE_DIM:
        return head
    w1 = np.zeros((FEATURE_DIM, head.w1.shape[1]), dtype=np.float32)
    w1[:V1_FEATURE_DIM] = head.w1
    return replace(head, w1=w1, feature_version=FEATURE_VERSION)


V1_FEATURE_DIM = 175


def average_precision(ranked_relevance: np.ndarray) -> float:
    hits = np.flatnonzero(ranked_relevance)
    if hits.size == 0:
        return 0.0
    return float(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))


@dataclass
class GroupEval:
    name: str
    tracks: list[Track]
    summaries: TrackSummaries
    candidates: np.ndarray  # [Q, T] bool: may be ranked for query q
    relevance: np.ndarray  # [Q, T] bool


def make_group(
    name: str, tracks: list[Track], library: Any, head: SonicHead | None = None
) -> GroupEval:
    records = [library.record(t.track_id) for t in tracks]
    summaries = TrackSummaries.from_windows(
        windows=np.asarray(library.windows, dtype=np.float32),
        track_ids=[r.id for r in records],
        starts=[r.window_start for r in records],
        counts=[r.window_count for r in records],
        content_keys=[r.content_hash for r in records],
        index_hop_s=library.index_hop_s,
        head=head,
    )
    n = len(tracks)
    candidates = np.ones((n, n), dtype=bool)
    relevance = np.zeros((n, n), dtype=bool)
    for i, a in enumerate(tracks):
        for j, b in enumerate(tracks):
            same = i == j or a.manifest_id in b.family
            candidates[i, j] = not same
            relevance[i, j] = not same and relevant(a, b)
    # Content duplicates of the query are left out as in the product.
    candidates &= ~(summaries.groups[:, None] == summaries.groups[None, :])
    relevance &= candidates
    return GroupEval(name, tracks, summaries, candidates, relevance)


def score_rankings(
    group: GroupEval, distances: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per-query P@5 and AP for ``distances[row] [T]``; rows of queries with relevant tracks."""
    p5, ap, rows = [], [], []
    for q, dist in distances.items():
        if not group.relevance[q].any():
            continue
        allowed = np.flatnonzero(group.candidates[q])
        order = allowed[np.argsort(dist[allowed], kind="stable")]
        rel = group.relevance[q, order]
        p5.append(float(rel[:TOP].mean()))
        ap.append(average_precision(rel))
        rows.append(q)
    return np.array(p5), np.array(ap), rows


def random_baseline(group: GroupEval, rows: list[int]) -> tuple[float, float]:
    rng = np.random.default_rng(SEED)
    p5, ap = [], []
    for q in rows:
        allowed = np.flatnonzero(group.candidates[q])
        rel = group.relevance[q, allowed]
        p5.append(rel.mean())
        ap.append(
            np.mean([average_precision(rel[rng.permutation(rel.size)]) for _ in range(RANDOM_RUNS)])
        )
    return float(np.mean(p5)), float(np.mean(ap))


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, values.size, size=(BOOTSTRAP, values.size))
    means = values[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def exact_min_distances(group: GroupEval, library: Any, curve: np.ndarray) -> np.ndarray:
    """``mean_i min_j |q_i - p_j|`` over every window of every track of the group (through
    the group's head, if it has one)."""
    out = np.empty(len(group.tracks))
    head = group.summaries.head
    if head is not None:
        curve = head.apply(curve)
    for row, track in enumerate(group.tracks):
        windows = np.asarray(library.curve(track.track_id), dtype=np.float32)
        if head is not None:
            windows = head.apply(windows)
        sq = 2.0 - 2.0 * (curve @ windows.T)
        out[row] = float(np.sqrt(np.maximum(sq.min(axis=1), 0.0)).mean())
    return out


def evaluate_group(
    group: GroupEval,
    library: Any,
    live: dict[int, np.ndarray],
    *,
    live_hop_s: float,
) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    result: dict[str, Any] = {"tracks": len(group.tracks)}
    per_query: dict[str, dict[str, np.ndarray]] = {}
    for kind in ("whole", "live"):
        rows_of_kind: dict[str, Any] = {}
        queries: dict[int, tuple[np.ndarray, float]] = {}
        for q, track in enumerate(group.tracks):
            if kind == "whole":
                curve = np.asarray(library.curve(track.track_id), dtype=np.float32)
                queries[q] = (curve, library.index_hop_s)
            elif track.track_id in live:
                queries[q] = (live[track.track_id], live_hop_s)
        methods: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
            name: (
                lambda c, h, name=name: group.summaries.distances(c, distance=name, query_hop_s=h)
            )
            for name in DISTANCES
        }
        if kind == "live":
            methods["min (exact)"] = lambda c, h: exact_min_distances(group, library, c)
        rows: list[int] = []
        for name, method in methods.items():
            started = time.perf_counter()
            dists = {q: method(c, h) for q, (c, h) in queries.items()}
            p5, ap, rows = score_rankings(group, dists)
            lo, hi = bootstrap_ci(ap, rng)
            p_lo, p_hi = bootstrap_ci(p5, rng)
            rows_of_kind[name] = {
                "p_at_5": round(float(p5.mean()), 4),
                "p_at_5_ci95": [round(p_lo, 4), round(p_hi, 4)],
                "map": round(float(ap.mean()), 4),
                "map_ci95": [round(lo, 4), round(hi, 4)],
                "seconds": round(time.perf_counter() - started, 1),
            }
            per_query.setdefault(kind, {})[name] = ap
            per_query.setdefault(f"{kind} p5", {})[name] = p5
            print(
                f"bench_similar: {group.name:>5} {kind:>5} {name:>12}: P@5 {p5.mean():.3f}"
                f" MAP {ap.mean():.3f} [{lo:.3f}, {hi:.3f}] ({len(rows)} queries)",
                flush=True,
            )
        rp5, rmap = random_baseline(group, rows)
        rows_of_kind["random"] = {"p_at_5": round(rp5, 4), "map": round(rmap, 4)}
        result[kind] = {
            "queries": len(rows),
            "queries_without_relevant": len(queries) - len(rows),
            "distances": rows_of_kind,
        }
    result["_ap"] = per_query
    return result


def compare_spaces(
    by_space: dict[str, dict[str, Any]], *, old_space: str = "fingerprint", new_space: str = "sonic"
) -> dict[str, Any]:
    """Bench split, per distance and query kind: sonic minus fingerprint, P@5 and MAP,
    with paired bootstrap 95 % intervals (the same queries in both)."""
    rng = np.random.default_rng(SEED + 2)
    old, new = by_space[old_space]["bench"]["_ap"], by_space[new_space]["bench"]["_ap"]
    out: dict[str, Any] = {}
    for kind in ("whole", "live"):
        for name in DISTANCES:
            row: dict[str, Any] = {}
            for metric, key in (("p_at_5", f"{kind} p5"), ("map", kind)):
                diff = new[key][name] - old[key][name]
                lo, hi = bootstrap_ci(diff, rng)
                row[metric] = {
                    "old": round(float(old[key][name].mean()), 4),
                    "new": round(float(new[key][name].mean()), 4),
                    "difference_ci95": [round(lo, 4), round(hi, 4)],
                }
            out[f"{kind} {name}"] = row
    return out


def choose_default(dev: dict[str, Any]) -> dict[str, Any]:
    """Best dev live MAP; a cheaper distance within noise of it wins instead."""
    ap = dev["_ap"]["live"]
    rng = np.random.default_rng(SEED + 1)
    maps = {name: float(ap[name].mean()) for name in SOUNDS_LIKE_DISTANCES}
    best = max(maps, key=lambda name: maps[name])
    ties = {
        name: [round(x, 4) for x in bootstrap_ci(ap[best] - ap[name], rng)]
        for name in COST_ORDER
        if name != best
    }
    choice = best
    for name in COST_ORDER:
        if name == best:
            break
        if ties[name][0] <= 0.0:
            choice = name
            break
    return {
        "rule": "best MAP on train+val live queries; the cheapest distance whose paired"
        " bootstrap 95% CI of the MAP difference to the best contains 0 wins instead",
        "live_map": {k: round(v, 4) for k, v in maps.items()},
        "best": best,
        "map_difference_ci95_best_minus": ties,
        "chosen": choice,
    }


def synthetic_library(
    rng: np.random.Generator, dim: int
) -> tuple[Callable[[], TrackSummaries], np.ndarray]:
    """Random-walk track curves (unit rows), ``SYNTHETIC_TRACKS`` x ``SYNTHETIC_WINDOWS``."""
    curves = []
    for _ in range(SYNTHETIC_TRACKS):
        centre = 3.0 * rng.standard_normal(dim)
        curves.append(
            np.cumsum(0.15 * rng.standard_normal((SYNTHETIC_WINDOWS, dim)), axis=0) + centre
        )
    windows = np.concatenate(curves).astype(np.float32)
    windows /= np.linalg.norm(windows, axis=1, keepdims=True)

    def make() -> TrackSummaries:
        return TrackSummaries.from_windows(
            windows=windows,
            track_ids=list(range(SYNTHETIC_TRACKS)),
            starts=[i * SYNTHETIC_WINDOWS for i in range(SYNTHETIC_TRACKS)],
            counts=[SYNTHETIC_WINDOWS] * SYNTHETIC_TRACKS,
            index_hop_s=DEFAULT_INDEX_HOP_S,
        )

    return make, windows


def time_updates(
    make: Callable[[], TrackSummaries], queries: Sequence[np.ndarray], *, live_hop_s: float
) -> dict[str, Any]:
    """Build cost of the summaries (means, then each distance's extra), then ms per live
    update (``nearest``, k=5)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summaries = make()
    out: dict[str, Any] = {
        "tracks": summaries.n_tracks,
        "build_means": {
            "wall_s": round(time.perf_counter() - wall0, 3),
            "cpu_s": round(time.process_time() - cpu0, 3),
        },
    }
    for name in DISTANCES:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        summaries.prepare([name])
        build = {
            "wall_s": round(time.perf_counter() - wall0, 3),
            "cpu_s": round(time.process_time() - cpu0, 3),
        }
        wall, cpu = [], []
        for q in queries:
            w0, c0 = time.perf_counter(), time.process_time()
            summaries.nearest(q, k=TOP, distance=name, query_hop_s=live_hop_s)
            wall.append(1000 * (time.perf_counter() - w0))
            cpu.append(1000 * (time.process_time() - c0))
        out[name] = {
            "prepare": build,
            "wall_ms_p50": round(float(np.percentile(wall, 50)), 2),
            "wall_ms_p99": round(float(np.percentile(wall, 99)), 2),
            "cpu_ms_p50": round(float(np.percentile(cpu, 50)), 2),
            "n": len(queries),
        }
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Sounds like — commit {doc['commit'][:10]}{' (dirty)' if doc['dirty'] else ''}",
        "",
        f"{doc['date']}, model {doc['model']}, index hop {doc['index_hop_s']} s, live hop"
        f" {doc['live_hop_s']} s (live curve: last {doc['live_windows']} windows of a"
        f" {LIVE_EXCERPT_S:g} s excerpt), runtime {doc['runtime_s'] / 60:.1f} min.",
        "Weak labels: same artist/composer, same album, or same package (game).",
        "",
    ]
    comparisons = doc["comparison"] or {}
    if comparisons and "whole mean" in comparisons:  # results written before several spaces
        comparisons = {"fingerprint → sonic": comparisons}
    for title, comparison in comparisons.items():
        old_space, new_space = title.split(" → ")
        lines += [
            f"## Old ({old_space}) against new ({new_space}), bench split",
            "",
            "Paired bootstrap 95% intervals of new - old over the same queries.",
            "",
            "| query | distance | P@5 old → new (Δ 95% CI) | MAP old → new (Δ 95% CI) |",
            "|---|---|---|---|",
        ]
        for key, row in comparison.items():
            kind, name = key.split(" ", 1)
            cells = []
            for metric in ("p_at_5", "map"):
                m = row[metric]
                ci = m["difference_ci95"]
                cells.append(f"{m['old']:.3f} → **{m['new']:.3f}** ({ci[0]:+.3f}…{ci[1]:+.3f})")
            lines.append(f"| {kind} | {name} | " + " | ".join(cells) + " |")
        lines.append("")
    chosen = doc["choice"]["chosen"] if doc["choice"] else doc["current_default"]
    for space, groups in doc["spaces"].items():
        for key, title in (
            ("bench", "bench split (reported)"),
            ("dev", "train+val (default choice)"),
        ):
            if key not in groups:
                continue
            group = groups[key]
            w, li = group["whole"], group["live"]
            lines += [
                f"## {space}: {title}: {group['tracks']} tracks; queries with a relevant track:"
                f" whole {w['queries']}, live {li['queries']}",
                "",
                "| distance | whole P@5 (95% CI) | whole MAP (95% CI) | live P@5 (95% CI)"
                " | live MAP (95% CI) |",
                "|---|---|---|---|---|",
            ]
            names = [*DISTANCES, "min (exact)", "random"]
            for name in names:
                cells = []
                for d in (w["distances"].get(name), li["distances"].get(name)):
                    if not d:
                        cells += ["–", "–"]
                        continue
                    for metric in ("p_at_5", "map"):
                        ci = d.get(f"{metric}_ci95")
                        ci_text = f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
                        cells.append(f"{d[metric]:.3f}{ci_text}")
                label = f"**{name}**" if name == chosen else name
                if name == BASELINE:
                    label = f"{name} (baseline: plain mean cosine)"
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    choice = doc["choice"]
    if choice:
        lines += [
            f"Default: **{choice['chosen']}** ({choice['rule']}; best was {choice['best']};"
            f" paired 95% CIs of MAP(best) - MAP(other):"
            f" {choice['map_difference_ci95_best_minus']}).",
            "",
        ]
    if not doc["timing"]:  # --no-timing
        return "\n".join(lines)
    lines += [
        "## Cost per live update",
        "",
        "`nearest` with k=5 on live curves: p50 wall / p50 CPU ms; then the one-off build of"
        " what the distance needs (wall s), after the means"
        f" (load average {doc['machine']['loadavg_1min']} on {doc['machine']['cpus']} CPUs"
        ", one BLAS thread if OMP_NUM_THREADS=1).",
        "",
        "| library | " + " | ".join(DISTANCES) + " |",
        "|---|" + "---|" * len(DISTANCES),
    ]
    for key, timing in doc["timing"].items():
        cells = [
            f"{timing[n]['wall_ms_p50']} / {timing[n]['cpu_ms_p50']} ms;"
            f" {timing[n]['prepare']['wall_s']} s"
            for n in DISTANCES
        ]
        means_s = timing["build_means"]["wall_s"]
        lines.append(
            f"| {key} ({timing['tracks']} tracks; means {means_s} s) | " + " | ".join(cells) + " |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--index", type=Path, default=None, help="reuse this index")
    parser.add_argument("--model", type=Path, default=None, help="encoder file (default: packaged)")
    parser.add_argument("--index-hop", type=float, default=None, help="index hop when building")
    parser.add_argument("--hop", type=float, default=DEFAULT_LIVE_HOP_S, help="live hop in s")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the built index here")
    parser.add_argument("--label", default=None, help="suffix for the results file name")
    parser.add_argument(
        "--head", type=Path, default=None, help="similarity head (default: the packaged one)"
    )
    parser.add_argument(
        "--fingerprint-only", action="store_true", help="only the fingerprint embedding"
    )
    parser.add_argument(
        "--audio-head",
        type=Path,
        default=None,
        help="also an audio similarity head (reads the style features, index/sonic_audio.py):"
        " the bench split's tracks and live excerpts through it, compared with --head's space",
    )
    parser.add_argument(
        "--baseline-audio-head",
        type=Path,
        default=None,
        help="with --audio-head (or an audio --head): an earlier audio head, measured on the"
        " same queries and compared with paired intervals",
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the cost per live update")
    parser.add_argument(
        "--no-dev",
        action="store_true",
        help="skip the train+val group (the default distance's choice): bench figures only",
    )
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "runs" / "sim", help="style feature cache"
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    commit, dirty = git_commit()
    from synesthete.index.store import Library

    work = args.workdir or Path(tempfile.mkdtemp(prefix="synesthete-similar-"))
    index = args.index
    if index is None:
        rows = [
            json.loads(x) for x in (args.corpus / "manifest.jsonl").read_text().splitlines() if x
        ]
        index = work / "index"
        if index.exists():
            shutil.rmtree(index)
        hop_args = ["--index-hop", str(args.index_hop)] if args.index_hop else []
        model_args = ["--model", str(args.model)] if args.model else []
        paths = [r["path"] for r in rows if Path(r["path"]).is_file()]
        build_s = run_cli(
            ["index", "build", "--index", str(index), "--quiet", *model_args, *hop_args, *paths]
        )
        print(f"bench_similar: indexed {len(paths)} files in {build_s:.0f} s", flush=True)
    library = Library.open(index)
    index_paths = {os.path.normpath(r.path): r.id for r in library.records()}
    tracks, missing = load_tracks(args.corpus, index_paths)
    print(
        f"bench_similar: {len(tracks)} corpus tracks in the index ({missing} not indexed),"
        f" commit {commit[:10]}{' (dirty)' if dirty else ''}",
        flush=True,
    )
    horizon = MatcherConfig().horizon_windows
    where = hashlib.sha256(str(Path(index).resolve()).encode()).hexdigest()[:8]
    cache = work / f"live-{where}-{library.generation}-{args.hop:g}s-{SEED}.npz"
    if args.workdir is not None and args.model is None and cache.is_file():
        with np.load(cache) as saved:
            live = {int(k): saved[k] for k in saved.files}
        print(f"bench_similar: live curves from {cache}", flush=True)
    else:
        live = live_curves(tracks, model=args.model, live_hop_s=args.hop, horizon=horizon)
        if args.workdir is not None and args.model is None:
            np.savez(cache, **{str(k): v for k, v in live.items()})
    head = None
    if args.head is not None:
        head = load_head(args.head)
    elif not args.fingerprint_only:
        head = packaged_head(library.encoder_name)
    if head is not None and not head.applies_to(encoder_name=library.encoder_name, dim=library.dim):
        sys.exit(
            f"bench_similar: the head reads {head.encoder_name}, the index has"
            f" {library.encoder_name}"
        )
    spaces: dict[str, SonicHead | None] = {"fingerprint": None}
    if head is not None and head.reads_audio:
        args.audio_head, head = args.audio_head or args.head, None
    if head is not None:
        spaces["sonic"] = head
    split_of = {
        "bench": [t for t in tracks if t.split == "bench"],
        "dev": [t for t in tracks if t.split in ("train", "val") and not args.no_dev],
    }
    by_space: dict[str, dict[str, Any]] = {}
    for space, space_head in spaces.items():
        by_space[space] = {
            key: evaluate_group(
                make_group(f"{space[:5]} {key}", members, library, space_head),
                library,
                live,
                live_hop_s=args.hop,
            )
            for key, members in split_of.items()
            if members
        }
    comparisons: dict[str, Any] = {}
    if args.audio_head is not None:
        bench_tracks = split_of["bench"]
        complete = True
        excerpts: dict[int, np.ndarray] | None = None
        audio_spaces = [("sonic-audio", args.audio_head)]
        if args.baseline_audio_head is not None:
            audio_spaces.insert(0, ("baseline-audio", args.baseline_audio_head))
        for space, path in audio_spaces:
            audio = load_head(path) if path.is_file() else None
            if audio is None or not audio.reads_audio:
                sys.exit(f"bench_similar: {path} is not an audio similarity head")
            audio = reading_current_features(audio)
            styles = StyleLibrary(
                style_curves(args.corpus, bench_tracks, audio, args.cache),
                library,
                hop_s=DEFAULT_LIVE_HOP_S,
            )
            if excerpts is None:
                excerpts = live_excerpt_windows(bench_tracks, live_hop_s=args.hop, horizon=horizon)
            style_live = live_style_curves(
                bench_tracks, audio, live_hop_s=args.hop, horizon=horizon, excerpts=excerpts
            )
            members = [t for t in bench_tracks if t.track_id in styles._records]
            by_space[space] = {
                "bench": evaluate_group(
                    make_group(f"{space[:5]} bench", members, styles, None),
                    styles,
                    style_live,
                    live_hop_s=args.hop,
                )
            }
            complete = complete and len(members) == len(bench_tracks)
        for old_space in ("baseline-audio", "sonic", "fingerprint"):
            if old_space in by_space and complete:
                comparisons[f"{old_space} → sonic-audio"] = compare_spaces(
                    by_space, old_space=old_space, new_space="sonic-audio"
                )
    product = next(s for s in ("sonic-audio", "sonic", "fingerprint") if s in by_space)
    results = by_space[product]
    choice = choose_default(results["dev"]) if "dev" in results else None
    if "sonic" in by_space:
        comparisons["fingerprint → sonic"] = compare_spaces(by_space)
    comparison = comparisons or None
    corpus_queries = [live[t.track_id] for t in tracks if t.track_id in live]
    rng = np.random.default_rng(SEED)
    synthetic, windows = synthetic_library(rng, library.dim)
    # Live-like queries: `horizon` windows at the live hop (every 4th 0.5 s window).
    step = round(args.hop / DEFAULT_INDEX_HOP_S)
    picks = rng.integers(0, windows.shape[0] - step * horizon, size=50)
    synth_queries = [windows[p : p + step * horizon : step] for p in picks]
    timing = (
        {}
        if args.no_timing
        else {
            # Fresh summaries of the whole index, so their build is timed too.
            "corpus": time_updates(library.summaries, corpus_queries, live_hop_s=args.hop),
            "synthetic 500x600": time_updates(synthetic, synth_queries, live_hop_s=args.hop),
        }
    )
    library.close()
    for space_results in by_space.values():
        for result in space_results.values():
            del result["_ap"]
    doc: dict[str, Any] = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_1min": round(os.getloadavg()[0], 2),
        },
        "model": str(args.model) if args.model else "packaged",
        "index": str(index),
        "index_hop_s": library.index_hop_s,
        "live_hop_s": args.hop,
        "live_windows": horizon,
        "live_excerpt_s": LIVE_EXCERPT_S,
        "window_s": WINDOW_S,
        "current_default": DEFAULT_SOUNDS_LIKE_DISTANCE,
        "groups": results,
        "space": product,
        "spaces": by_space,
        "head": None if head is None else dict(head.meta),
        "comparison": comparison,
        "choice": choice,
        "timing": timing,
        "runtime_s": round(time.perf_counter() - began, 1),
    }
    text = markdown(doc)
    print(text)
    suffix = f"-{args.label}" if args.label else ""
    name = f"similar-{commit[:10]}{suffix}"
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (ROOT / "bench" / f"{name}.md").write_text(text)
    if args.workdir is None and args.index is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
