"""Record live windows of val queries once, then try decision rules on them offline.

    python scripts/decision_lab.py record --model PT --out runs/lab-v3.npz
    python scripts/decision_lab.py report runs/lab-v3.npz

``record`` builds the val library of ``scripts/bench.py --split val`` (its held-out
negatives stay out), plays degraded 12 s queries and the benchmark's kinds of
negatives (held-out music, clean and degraded, noise and espeak speech; the
speech since ``7c90a02``'s projection named a voice alone as music) through the
real recognizer (with a seed of its own, not the
benchmark's), and saves every live window's embedding, the shipped matcher's
events (first answer, its track and time), and every stored curve of the
library (all speed variants). ``report`` then scores decision rules over
those windows with exact distances against the whole library, no ANN: per
condition the share of known queries answered right by 6 s and by 12 s, and
the share of negatives that fire anywhere, at operating points chosen on the
negatives. The bench split is never read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr

import bench
from synesthete.clients.app import open_engine
from synesthete.index.builder import build_index
from synesthete.index.config import IndexConfig
from synesthete.index.decode import decode_mono_16k_speeds
from synesthete.index.frechet import distance_row, distance_rows, step_range
from synesthete.inference.augment import CONDITIONS, source_seconds_needed
from synesthete.inference.config import EncoderConfig
from synesthete.inference.torchscript import TorchScriptEncoder
from synesthete.stream.synth import pink_noise

SEED = 4_2031
HOLDOUT_SEED = 7_2031
RATE = bench.QUERY_RATE_HZ
AUDIO_RATE = 16_000
"""``record --keep-audio`` keeps every query's audio at this rate (float16)."""
LAB_CONDITIONS = ("clean", "pink5", "babble0", "room", "codec64", "speed+6", "tempo+6", "pitch+1")


def record(args: argparse.Namespace) -> int:
    manifest = bench.load_manifest(args.corpus)
    library, negatives = bench.split_library(manifest, "val")
    if args.holdout > 0.0:
        # More unknown pieces than the benchmark's few: a seeded share of the val library
        # leaves the index and joins them (0 keeps older recordings' queries).
        order = np.random.default_rng(HOLDOUT_SEED).permutation(len(library))
        n_out = round(args.holdout * len(library))
        negatives = [*negatives, *(library[int(i)] for i in sorted(order[:n_out]))]
        library = [library[int(i)] for i in sorted(order[n_out:])]
    # Queries come from the val library alone; an extra split's tracks join the index as
    # candidates only (a library the size of the bench's and more, to find hub tracks).
    indexed = [
        *library,
        *(bench.split_library(manifest, args.extra_split)[0] if args.extra_split else []),
    ]
    materials = bench.load_materials(args.corpus)
    encoder = TorchScriptEncoder(config=EncoderConfig(model_path=args.model))
    work = Path(tempfile.mkdtemp(prefix="synesthete-lab-"))
    began = time.perf_counter()
    build_index(
        work / "index", [Path(t.path) for t in indexed], encoder=encoder, config=IndexConfig()
    )
    engine = open_engine(
        index_dir=work / "index",
        encoder_config=EncoderConfig(model_path=args.model),
        live_hop_s=args.live_hop,
    )
    print(f"lab: index of {len(indexed)} tracks in {time.perf_counter() - began:.0f} s")
    lib = engine.library
    infos = lib.tracks()
    path_to_id = {info.path: info.id for info in infos}
    curves, owners, variants, positions = [], [], [], []
    for info in infos:
        for v in range(len(lib.speeds)):
            c = np.asarray(lib.curve(info.id, v), dtype=np.float32)
            curves.append(c)
            owners.append(np.full(len(c), info.id))
            variants.append(np.full(len(c), v))
            positions.append(np.arange(len(c)))
    rng = np.random.default_rng(SEED)
    rows: list[dict[str, Any]] = []
    embeddings: list[np.ndarray] = []
    kept_audio: list[np.ndarray] = []

    def play(audio: np.ndarray, truth: int, kind: str, start_s: float, tempo: float) -> None:
        rec = engine.recognizer(stream="lab", input_rate_hz=RATE)
        first: tuple[float, int] | None = None
        for s in range(0, audio.shape[0], RATE // 2):
            for e in rec.push(audio[s : s + RATE // 2].astype(np.float32)):
                if e.type == "now_playing" and first is None:
                    first = (float(e.t), int(e.track.id))  # type: ignore[attr-defined]
        emb = rec.matcher.recent_embeddings()
        embeddings.append(emb)
        if args.keep_audio:
            clip = np.zeros(int(bench.QUERY_S * AUDIO_RATE), dtype=np.float16)
            low = soxr.resample(audio.astype(np.float32), RATE, AUDIO_RATE)[: clip.size]
            clip[: low.size] = low
            kept_audio.append(clip)
        rows.append(
            {
                "kind": kind,
                "truth": truth,
                "start_s": start_s,
                "tempo": tempo,
                "n": len(emb),
                "first_t": None if first is None else first[0],
                "first_id": None if first is None else first[1],
            }
        )

    for name in LAB_CONDITIONS:
        condition = CONDITIONS[name]
        need = source_seconds_needed(name, bench.QUERY_S)
        done = 0
        while done < args.per_condition:
            track = library[int(rng.integers(len(library)))]
            if track.duration_s < need + 1.0:
                continue
            start = float(rng.uniform(0.0, track.duration_s - need - 0.5))
            source, _ = bench.read_mono(track.path, start_s=start, seconds=need)
            if not bench.audible(source):
                continue
            query = condition(source, sample_rate_hz=RATE, rng=rng, materials=materials)
            play(
                query[: int(bench.QUERY_S * RATE)],
                path_to_id[track.path],
                name,
                start,
                float(condition.tempo_factor),
            )
            done += 1
        print(f"lab: {name} done ({time.perf_counter() - began:.0f} s)")
    for n in range(args.negatives_per_kind * 2):
        track = negatives[n % len(negatives)]
        if track.duration_s < bench.QUERY_S + 1:
            continue
        start = float(rng.uniform(0.0, track.duration_s - bench.QUERY_S - 0.5))
        audio, _ = bench.read_mono(track.path, start_s=start, seconds=bench.QUERY_S)
        if not bench.audible(audio):
            continue
        if n % 2:
            kind = str(("pink5", "babble0", "room", "codec64")[(n // 2) % 4])
            audio = CONDITIONS[kind](audio, sample_rate_hz=RATE, rng=rng, materials=materials)
            play(audio, -1, f"negative:music-{kind}", start, 1.0)
        else:
            play(audio, -1, "negative:music", start, 1.0)
    for n in range(args.negatives_per_kind // 2):
        noise = pink_noise(seconds=bench.QUERY_S, sample_rate_hz=RATE, seed=SEED + n)
        play(0.3 * noise, -1, "negative:noise", 0.0, 1.0)
    # After every other draw, so the queries above stay those of older recordings.
    for _ in range(args.negatives_per_kind // 2 if materials.speech else 0):
        clips = [materials.speech[int(k)] for k in rng.integers(len(materials.speech), size=4)]
        voice = np.concatenate(clips)[: int(bench.QUERY_S * RATE)]
        if voice.size >= bench.QUERY_S * RATE:
            play(
                0.5 * voice / max(1e-6, float(np.abs(voice).max())), -1, "negative:speech", 0.0, 1.0
            )
    print(f"lab: negatives done ({time.perf_counter() - began:.0f} s)")
    engine.close()
    shutil.rmtree(work, ignore_errors=True)
    lengths = np.array([len(e) for e in embeddings])
    np.savez(
        args.out,
        emb=np.concatenate(embeddings),
        lengths=lengths,
        rows=json.dumps(rows),
        curves=np.concatenate(curves),
        owners=np.concatenate(owners),
        variants=np.concatenate(variants),
        positions=np.concatenate(positions),
        speeds=np.array(lib.speeds),
        versions=json.dumps({str(i.id): sorted(lib.versions(i.id)) for i in infos}),
        live_hop_s=np.array(args.live_hop),
        holdout=np.array(args.holdout),
        paths=json.dumps({str(i.id): i.path for i in infos}),
        **({"audio": np.stack(kept_audio)} if args.keep_audio else {}),
    )
    print(f"lab: wrote {args.out} ({len(rows)} queries)")
    return 0


INDEX_HOP_S = 0.5

PATH_MODES = {"ema": 0.3, "mean": None, "bottleneck": 1.0}
"""How a path's distances are pooled: the matcher's EMA (weight 0.3 on the past), their
plain mean, or their largest (the stepped Fréchet bottleneck)."""


def path_costs(
    rows: np.ndarray, decay: float | None, steps: tuple[int, int] = (3, 5)
) -> np.ndarray:
    """Per live window ``t`` and curve position ``j``, the cost of the best path of stepped
    positions ending at ``j`` (``rows [T, M]``, the distances; ``steps``, the track windows
    one live window may advance, the matcher's ``step_range``): see ``PATH_MODES``."""
    n_t, m = rows.shape
    out = np.empty_like(rows)
    acc = rows[0].copy()
    out[0] = acc
    for t in range(1, n_t):
        prev = np.full(m, np.inf)
        for s in range(steps[0], steps[1] + 1):
            prev[s:] = np.minimum(prev[s:], acc[:-s] if s else acc)
        if decay is None:
            # Running sum; a path that cannot reach back starts here at the mean cost.
            summed = prev + rows[t]
            acc = np.where(np.isfinite(summed), summed, rows[t] * (t + 1))
            out[t] = acc / (t + 1)
        elif decay >= 1.0:
            acc = np.maximum(rows[t], prev)
            out[t] = acc
        else:
            prev = np.where(np.isfinite(prev), prev, acc.min())
            acc = (1 - decay) * rows[t] + decay * prev
            out[t] = acc
    return out


def window_features(lab: dict[str, Any], decay: float | None, horizon: int) -> np.ndarray:
    """One row per live window of every query: (query, window, best track is the truth,
    best track's path cost d1, the runner-up track's d2, the mean and std of the next ten
    tracks' costs, query is a negative). Versions of the best track are not its rivals."""
    curves = lab["curves"]
    hop = lab["live_hop_s"]
    steps = step_range(live_hop_s=hop, index_hop_s=INDEX_HOP_S, tempo_tolerance=0.12)
    if decay is not None and 0.0 < decay < 1.0:
        decay = decay ** (hop / 2.0)  # the same time constant as at the 2 s hop
    out: list[tuple[float, ...]] = []
    for i, r in enumerate(lab["rows"]):
        emb = lab["emb"][lab["starts"][i] : lab["starts"][i] + lab["lengths"][i]]
        dist = distance_rows(emb, curves)  # [T, N]
        per_t: list[dict[int, float]] = [{} for _ in range(len(emb))]
        for (track, _variant), (lo, hi) in lab["slices"].items():
            for t in range(len(emb)):
                first = max(0, t + 1 - horizon)
                cost = float(path_costs(dist[first : t + 1, lo:hi], decay, steps)[-1].min())
                per_t[t][track] = min(cost, per_t[t].get(track, np.inf))
        for t, scores in enumerate(per_t):
            best = min(scores, key=lambda k: scores[k])
            versions = lab["versions"].get(best, set())
            rivals = np.sort([v for k, v in scores.items() if k != best and k not in versions])
            cohort = rivals[:10] if rivals.size else np.array([2.0])
            out.append(
                (
                    i, t, float(best == r["truth"]), scores[best], float(cohort[0]),
                    float(cohort.mean()), float(cohort.std()) + 1e-3, float(r["truth"] < 0),
                )
            )  # fmt: skip
    return np.array(out)


def load_lab(path: Path) -> dict[str, Any]:
    z = np.load(path)
    owners, variants = z["owners"], z["variants"]
    slices: dict[tuple[int, int], tuple[int, int]] = {}
    key = np.stack([owners, variants], axis=1)
    change = np.flatnonzero(np.any(np.diff(key, axis=0) != 0, axis=1)) + 1
    for lo, hi in itertools.pairwise([0, *change.tolist(), len(owners)]):
        slices[(int(owners[lo]), int(variants[lo]))] = (lo, hi)
    lengths = z["lengths"]
    return {
        "emb": z["emb"],
        "starts": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
        "lengths": lengths,
        "rows": json.loads(str(z["rows"])),
        "curves": z["curves"],
        "slices": slices,
        "versions": {int(k): set(v) for k, v in json.loads(str(z["versions"])).items()},
        "live_hop_s": float(z["live_hop_s"]) if "live_hop_s" in z else 2.0,
    }


def true_window_distances(lab: dict[str, Any]) -> None:
    """Per condition, percentiles of each live window's distance to its true place in the
    true track (nearest stored window within 1 s of it, at speed 1; any place for speed
    queries, whose match is a speed copy)."""
    by_kind: dict[str, list[float]] = {}
    for i, r in enumerate(lab["rows"]):
        if r["truth"] < 0:
            continue
        emb = lab["emb"][lab["starts"][i] : lab["starts"][i] + lab["lengths"][i]]
        speed_query = r["kind"].startswith("speed")
        for t, q in enumerate(emb):
            best = np.inf
            for (track, variant), (lo, hi) in lab["slices"].items():
                if track != r["truth"] or (variant != 0 and not speed_query):
                    continue
                d = distance_row(q, lab["curves"][lo:hi])
                if not speed_query:
                    j = round((r["start_s"] + lab["live_hop_s"] * t * r["tempo"]) / INDEX_HOP_S)
                    d = d[max(0, j - 2) : j + 3]
                if d.size:
                    best = min(best, float(d.min()))
            by_kind.setdefault(r["kind"], []).append(best)
    exact = [v for k, vs in by_kind.items() if k in EXACT_KINDS for v in vs]
    for kind, values in [*sorted(by_kind.items()), ("clean+codec+speed+tempo", exact)]:
        pct = "  ".join(f"p{p} {np.percentile(values, p):.3f}" for p in (50, 90, 95, 99, 99.5))
        print(f"true-window distance, {kind}: {pct}")


EXACT_KINDS = ("clean", "codec64", "speed+6", "tempo+6")
"""Conditions whose windows should all support a position path (``path_max_distance``)."""


def answered(
    q: np.ndarray,
    t: np.ndarray,
    fires: np.ndarray,
    right: np.ndarray,
    *,
    neg: np.ndarray,
    kinds: list[str],
    at6: int,
) -> list[str]:
    """Per condition, ``"kind by6/by12"``: the share of its known queries whose first
    firing window (``fires``, one row per live window: query ``q``, window ``t``) is
    ``right``, by the window that ends 6 s in and at all."""
    cells = []
    for kind in sorted({kinds[int(x)] for x in q[~neg]}):
        queries = sorted({int(x) for x in q[~neg] if kinds[int(x)] == kind})
        by6 = by12 = 0
        for query in queries:
            hits = np.flatnonzero((q == query) & fires)
            if hits.size:
                k = hits[np.argmin(t[hits])]
                by12 += bool(right[k])
                by6 += bool(right[k]) and t[k] <= at6
        cells.append(f"{kind} {100 * by6 / len(queries):.0f}/{100 * by12 / len(queries):.0f}")
    return cells


def score_rules(
    feats: np.ndarray, kinds: list[str], max_fp: float, live_hop_s: float = 2.0
) -> None:
    """Each rule at the loosest threshold that fires on at most ``max_fp`` of the
    negatives: per condition, the known queries answered right by 6 s (the live windows
    up to the one that ends 6 s in: two at the 2 s hop) and by 12 s."""
    q, t = feats[:, 0].astype(int), feats[:, 1].astype(int)
    right, d1, d2, cm, cs = feats[:, 2].astype(bool), *feats[:, 3:7].T
    neg = feats[:, 7].astype(bool)
    first = t >= 1
    at6 = round(2.0 / live_hop_s)  # the live window that ends 6 s in
    rules = {
        "distance": -d1,
        "margin": d2 - d1,
        "cohort z": (cm - d1) / cs,
        "distance + margin": -d1 + (d2 - d1),
        "distance + 2 margin": -d1 + 2 * (d2 - d1),
        "distance + cohort gap": -d1 + (cm - d1),
        "distance, not on the first window": np.where(first, -d1, -np.inf),
    }
    n_neg = len(set(q[neg].tolist()))
    conditions = sorted({kinds[i] for i in set(q[~neg].tolist())})
    # The ceiling of every rule: the best track is the truth, whatever its distance (at the
    # second live window, 6 s, and at the last).
    cells = []
    for kind in conditions:
        by6 = np.array([kinds[int(i)] == kind for i in q]) & ~neg & (t == at6)
        last = np.array([kinds[int(i)] == kind for i in q]) & ~neg
        ends = [np.flatnonzero(last & (q == i)).max() for i in sorted(set(q[last].tolist()))]
        cells.append(f"{kind} {100 * right[by6].mean():.0f}/{100 * right[ends].mean():.0f}")
    print(f"  {'best track, no threshold (ceiling)':34s} FP 100 %" + " " * 13 + "  ".join(cells))
    for name, score in rules.items():
        threshold = np.inf
        for candidate in np.sort(score[neg & np.isfinite(score)])[::-1]:
            if len(set(q[neg & (score > candidate)].tolist())) > max_fp * n_neg:
                break
            threshold = candidate
        fires = score > threshold
        cells = answered(q, t, fires, right, neg=neg, kinds=kinds, at6=at6)
        fp = len(set(q[neg & fires].tolist())) / n_neg
        print(f"  {name:34s} FP {100 * fp:.1f} % at {threshold:+.3f}  " + "  ".join(cells))


def report(args: argparse.Namespace) -> int:
    lab = load_lab(args.lab)
    rows = lab["rows"]
    kinds = [r["kind"] for r in rows]
    known = sorted({k for r, k in zip(rows, kinds, strict=True) if r["truth"] >= 0})
    n_neg = sum(r["truth"] < 0 for r in rows)
    print(f"lab: {len(rows) - n_neg} known queries, {n_neg} negatives")
    cells = []
    for kind in known:
        qs = [r for r in rows if r["kind"] == kind]
        by6 = np.mean([r["first_id"] == r["truth"] and r["first_t"] <= 6.01 for r in qs])
        by12 = np.mean([r["first_id"] == r["truth"] for r in qs])
        cells.append(f"{kind} {100 * by6:.0f}/{100 * by12:.0f}")
    fp = np.mean([r["first_id"] is not None for r in rows if r["truth"] < 0])
    print(f"the shipped matcher: FP {100 * fp:.1f} %  " + "  ".join(cells))
    true_window_distances(lab)
    for mode in args.modes:
        for horizon in args.horizons:
            began = time.perf_counter()
            feats = window_features(lab, PATH_MODES[mode], horizon)
            print(f"path {mode}, last {horizon} windows ({time.perf_counter() - began:.0f} s):")
            score_rules(feats, kinds, args.max_fp, lab["live_hop_s"])
    return 0


def peak_table(args: argparse.Namespace) -> int:
    """The peak check (``index/constellation.py``) over a recording made with
    ``--keep-audio``: per live window, the ``--candidates`` nearest tracks by path distance
    (the matcher's EMA) each checked against its stored peaks at the path's position, over
    the last ``SPAN_S`` of audio; then, per ``--z``, the queries answered right by 6 s and
    by 12 s when a window fires on the distance (the loosest point at ``--max-fp``) or on
    the best-fitting checked track within ``--cap`` of distance."""
    from synesthete.index import constellation as peaks_of

    z = np.load(args.lab)
    if "audio" not in z:
        print(f"decision_lab: {args.lab} has no audio; record it with --keep-audio")
        return 2
    lab = load_lab(args.lab)
    paths = {int(k): v for k, v in json.loads(str(z["paths"])).items()}
    audio, speeds = z["audio"], [float(x) for x in z["speeds"]]
    stored = {}
    for track, path in paths.items():
        stream = peaks_of.PeakStream()
        for blocks in decode_mono_16k_speeds(Path(path), speeds=()):
            stream.push(blocks[0])
        stored[track] = stream.finish()
    verifier = peaks_of.PeakVerifier(stored.get, keep=4 * len(stored))
    steps = step_range(live_hop_s=lab["live_hop_s"], index_hop_s=INDEX_HOP_S, tempo_tolerance=0.12)
    hop = lab["live_hop_s"]
    out = []  # (query, window, truth, best track, its cost, checked track, its z)
    for i, r in enumerate(lab["rows"]):
        emb = lab["emb"][lab["starts"][i] : lab["starts"][i] + lab["lengths"][i]]
        dist = distance_rows(emb, lab["curves"])
        best: list[dict[int, tuple[float, int, int]]] = [{} for _ in range(len(emb))]
        for (track, variant), (lo, hi) in lab["slices"].items():
            costs = path_costs(dist[:, lo:hi], PATH_MODES["ema"], steps)
            for t in range(len(emb)):
                j = int(np.argmin(costs[t]))
                if costs[t, j] < best[t].get(track, (np.inf, 0, 0))[0]:
                    best[t][track] = (float(costs[t, j]), variant, j)
        clip = audio[i].astype(np.float32)
        for t in range(len(emb)):
            end = hop * t + 4.0
            begin = max(0.0, end - peaks_of.SPAN_S)
            live = peaks_of.spectral_peaks(clip[int(begin * AUDIO_RATE) : int(end * AUDIO_RATE)])
            ranked = sorted(best[t].items(), key=lambda kv: kv[1][0])
            checked = (-1, -np.inf, np.nan)
            for track, (cost, variant, j) in ranked[: args.candidates]:
                if cost > args.cap:
                    continue
                m = verifier.match(
                    track,
                    speeds[variant],
                    live=live,
                    offset_s=j * INDEX_HOP_S + 4.0 - (end - begin),
                )
                if m.z > checked[1]:
                    # shift: stored time minus live time where the peaks line up (steady
                    # from window to window on the right track at speed 1).
                    checked = (track, m.z, m.offset_frames / peaks_of.FRAMES_PER_S - begin)
            out.append((i, t, r["truth"], ranked[0][0], ranked[0][1][0], *checked))
    feats = np.array(out, dtype=np.float64)
    if args.save:
        np.save(args.save, feats)
    q, t, truth, top, cost, track, fit, _ = feats.T
    kinds = [r["kind"] for r in lab["rows"]]
    neg = truth < 0
    n_neg = len(set(q[neg].astype(int).tolist()))
    at6 = round(2.0 / hop)

    def table(name: str, fires: np.ndarray, answer: np.ndarray) -> None:
        cells = answered(q, t, fires, answer == truth, neg=neg, kinds=kinds, at6=at6)
        fp = len(set(q[neg & fires].astype(int).tolist())) / n_neg
        print(f"  {name:28s} FP {100 * fp:.2f} %  " + "  ".join(cells))

    threshold = -np.inf
    for candidate in np.sort(cost[neg]):
        if len(set(q[neg & (cost <= candidate)].astype(int).tolist())) > args.max_fp * n_neg:
            break
        threshold = candidate
    print(f"lab: {len(lab['rows'])} queries, {n_neg} negatives; distance point {threshold:.4f}")
    table("distance alone", cost <= threshold, top)
    for level in args.z:
        passed = fit >= level
        table(f"distance, or peaks z >= {level:g}", (cost <= threshold) | passed,
              np.where(cost <= threshold, top, track))  # fmt: skip
    # The stored tracks that chance fits best: the negatives' highest checks.
    worst = sorted(zip(fit[neg], track[neg].astype(int), strict=True), reverse=True)[:8]
    print("negatives' best fits: " + ", ".join(
        f"z {z_:.1f} {Path(paths[t_]).name}" for z_, t_ in worst if t_ >= 0))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--corpus", type=Path, default=bench.ROOT / "corpus")
    rec.add_argument("--model", type=Path, default=None)
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--per-condition", type=int, default=60)
    rec.add_argument("--negatives-per-kind", type=int, default=80)
    rec.add_argument("--live-hop", type=float, default=2.0, help="seconds between live windows")
    rec.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="share of the val library moved out of the index among the unknown pieces",
    )
    rec.add_argument(
        "--keep-audio",
        action="store_true",
        help=f"keep every query's audio ({AUDIO_RATE} Hz, float16) and the library's paths",
    )
    rec.add_argument(
        "--extra-split",
        choices=("train",),
        default=None,
        help="also index this split's library (no queries drawn from it): more candidates",
    )
    rep = sub.add_parser("report")
    rep.add_argument("lab", type=Path)
    rep.add_argument("--modes", nargs="+", choices=sorted(PATH_MODES), default=["ema", "mean"])
    rep.add_argument("--horizons", type=int, nargs="+", default=[8])
    rep.add_argument("--max-fp", type=float, default=0.01)
    pk = sub.add_parser("peaks", help="the peak check over a --keep-audio recording")
    pk.add_argument("lab", type=Path)
    pk.add_argument("--max-fp", type=float, default=0.008)
    pk.add_argument(
        "--cap", type=float, default=0.18, help="distance within which tracks are checked"
    )
    pk.add_argument("--z", type=float, nargs="+", default=[6.0, 7.0, 8.5, 10.0])
    pk.add_argument(
        "--candidates", type=int, default=3, help="nearest tracks checked per window (matcher: 3)"
    )
    pk.add_argument(
        "--save",
        type=Path,
        default=None,
        help="also save every window's checks (.npy: query, window, truth, nearest track, "
        "its cost, best-fitting checked track, its z, its shift in s)",
    )
    args = parser.parse_args(argv)
    if args.command == "record":
        return record(args)
    if args.command == "peaks":
        return peak_table(args)
    return report(args)


if __name__ == "__main__":
    raise SystemExit(main())
