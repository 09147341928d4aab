"""Up-next benchmark: how high the real next track of a soundtrack ranks.

    python scripts/bench_upnext.py --index DIR [--corpus DIR] [--label TEXT]

Sequences: the tracks of each game soundtrack (package; music21's renders are
no album and are left out) in one split, in the order of their file names
(natural sort: ``track2`` before ``track10``, ``D_E1M1`` before ``D_E1M2``),
each with at least 3 tracks. For every n from 1 to len - 1, the first n tracks
are the history and the (n+1)-th is the truth; the candidates are every track
of the split's library not in the history (the up-next rule, ``index/upnext.py``).

Methods:

- **random**: exact expectations for a uniformly random order;
- **last**: "sounds like the last track" alone (``decay = 0``);
- **session**: the recency-weighted history, for several decays. The default
  decay is chosen on the **val** split (features as scripts/train_similarity.py
  caches them, through the same head); the bench split is reported.

Metrics: mean reciprocal rank (MRR) of the truth with a bootstrap 95 % interval,
hit@5, hit@10 and the mean percentile rank (0 = first). Results:
``bench/upnext-<commit10>[-label].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_similar import Track, bootstrap_ci, load_tracks  # noqa: E402
from provenance import git_commit  # noqa: E402

from synesthete.index.similar import TrackSummaries  # noqa: E402
from synesthete.index.sonic import SonicHead  # noqa: E402
from synesthete.index.upnext import up_next  # noqa: E402

DECAYS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)
MIN_SEQUENCE = 3
SEED = 20261207


def natural_key(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.casefold() for p in re.split(r"(\d+)", path)]


def sequences(tracks: list[Track]) -> list[list[Track]]:
    """Each soundtrack's tracks in file-name order (at least ``MIN_SEQUENCE``)."""
    by_game: dict[str, list[Track]] = {}
    for t in tracks:
        if t.game is not None:
            by_game.setdefault(t.game, []).append(t)
    out = []
    for game in sorted(by_game):
        members = sorted(by_game[game], key=lambda t: natural_key(t.path))
        # A tempo variant is the same music: keep the original only.
        members = [t for t in members if t.manifest_id == min(t.family)]
        if len(members) >= MIN_SEQUENCE:
            out.append(members)
    return out


def evaluate(
    summaries: TrackSummaries, seqs: list[list[Track]], *, decay: float | None
) -> dict[str, Any]:
    """Ranks of the true next track; ``decay=None`` is the random baseline (exact)."""
    rr, hit5, hit10, pct = [], [], [], []
    n_library = summaries.n_tracks
    for seq in seqs:
        ids = [t.track_id for t in seq]
        for n in range(1, len(ids)):
            history, truth = ids[:n], ids[n]
            n_candidates = n_library - int(summaries.excluded(history).sum())
            if decay is None:
                c = n_candidates
                rr.append(float(np.sum(1.0 / np.arange(1, c + 1)) / c))
                hit5.append(min(5, c) / c)
                hit10.append(min(10, c) / c)
                pct.append(0.5)
                continue
            ranked = [t for t, _ in up_next(summaries, history, k=n_library, decay=decay)]
            rank = ranked.index(truth) + 1
            rr.append(1.0 / rank)
            hit5.append(float(rank <= 5))
            hit10.append(float(rank <= 10))
            pct.append((rank - 1) / max(1, len(ranked) - 1))
    rng = np.random.default_rng(SEED)
    rr_a = np.array(rr)
    lo, hi = bootstrap_ci(rr_a, rng)
    return {
        "predictions": len(rr),
        "mrr": round(float(rr_a.mean()), 4),
        "mrr_ci95": [round(lo, 4), round(hi, 4)],
        "hit_at_5": round(float(np.mean(hit5)), 4),
        "hit_at_10": round(float(np.mean(hit10)), 4),
        "mean_percentile": round(float(np.mean(pct)), 4),
        "_rr": rr_a,
    }


def run_split(summaries: TrackSummaries, tracks: list[Track]) -> dict[str, Any]:
    seqs = sequences(tracks)
    rows: dict[str, Any] = {"random": evaluate(summaries, seqs, decay=None)}
    for decay in DECAYS:
        name = "last" if decay == 0.0 else f"session decay {decay:g}"
        rows[name] = evaluate(summaries, seqs, decay=decay)
    return {
        "tracks": summaries.n_tracks,
        "sequences": len(seqs),
        "sequence_lengths": [len(s) for s in seqs],
        "methods": rows,
    }


def val_summaries(corpus: Path, head: SonicHead | None) -> tuple[TrackSummaries, list[Track]]:
    """The val split's tracks from train_similarity's caches, through ``head`` (an audio
    head reads the style features of the same windows)."""
    from train_similarity import embed_split, features_split

    cache = ROOT / "runs" / "sim"
    val = embed_split(corpus, "val", model=None, cache_dir=cache)
    windows, window_head = val.windows, head
    if head is not None and head.reads_audio:
        styles = features_split(corpus, "val", cache_dir=cache)
        windows, window_head = head.apply(styles.windows), None
    summaries = TrackSummaries.from_windows(
        windows=windows,
        track_ids=[t.track_id for t in val.tracks],
        starts=val.starts,
        counts=val.counts,
        index_hop_s=2.0,
        head=window_head,
    )
    return summaries, val.tracks


def _window_summaries(
    library: Any, bench_tracks: list[Track], head: SonicHead | None
) -> TrackSummaries:
    """The bench tracks' summaries from the stored windows, through a head of windows."""
    return TrackSummaries.from_windows(
        windows=np.asarray(library.windows, dtype=np.float32),
        track_ids=[t.track_id for t in bench_tracks],
        starts=[library.record(t.track_id).window_start for t in bench_tracks],
        counts=[library.record(t.track_id).window_count for t in bench_tracks],
        content_keys=[library.record(t.track_id).content_hash for t in bench_tracks],
        index_hop_s=library.index_hop_s,
        head=head if head is not None and not head.reads_audio else None,
    )


def strip(result: dict[str, Any]) -> dict[str, Any]:
    for row in result["methods"].values():
        row.pop("_rr", None)
    return result


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Up next — commit {doc['commit'][:10]}{' (dirty)' if doc['dirty'] else ''}",
        "",
        f"{doc['date']}, index {doc['index']} ({doc['space']} space), default decay"
        f" {doc['decay']} (chosen on val: best MRR).",
        "Truth: the next track of a soundtrack in file-name order; candidates: every track of"
        " the split not yet played.",
        "",
    ]
    for key in ("bench", "val"):
        res = doc[key]
        lines += [
            f"## {key}: {res['tracks']} tracks, {res['sequences']} soundtracks"
            f" ({sum(n - 1 for n in res['sequence_lengths'])} predictions)",
            "",
            "| method | MRR (95% CI) | hit@5 | hit@10 | mean percentile rank |",
            "|---|---|---|---|---|",
        ]
        for name, row in res["methods"].items():
            label = f"**{name}**" if name == f"session decay {doc['decay']:g}" else name
            ci = row["mrr_ci95"]
            lines.append(
                f"| {label} | {row['mrr']:.3f} ({ci[0]:.3f}–{ci[1]:.3f}) | {row['hit_at_5']:.3f}"
                f" | {row['hit_at_10']:.3f} | {row['mean_percentile']:.3f} |"
            )
        if "session_minus_last_mrr_ci95" in res:
            lo, hi = res["session_minus_last_mrr_ci95"]
            lines.append("")
            lines.append(f"Session (default decay) minus last, MRR paired 95% CI: [{lo}, {hi}].")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--index", type=Path, required=True, help="an index of the bench split")
    parser.add_argument("--label", default=None)
    args = parser.parse_args(argv)
    from synesthete.index.store import Library

    commit, dirty = git_commit()
    library = Library.open(args.index)
    head = library.sonic_head()
    index_paths = {os.path.normpath(r.path): r.id for r in library.records()}
    tracks, _ = load_tracks(args.corpus, index_paths)
    bench_tracks = [t for t in tracks if t.split == "bench"]
    audio = head is not None and head.reads_audio
    stored = library.stored_sonic()
    if audio and stored is not None and stored.points is not None:
        # An audio head: the generation's stored style curves (the index is of the bench
        # split only, so its summaries are the bench tracks').
        row = {int(t): n for n, t in enumerate(stored.track_ids)}
        picks = [row[t.track_id] for t in bench_tracks]
        bench_summaries = TrackSummaries.from_windows(
            windows=stored.points,
            track_ids=[t.track_id for t in bench_tracks],
            starts=[int(stored.starts[n]) for n in picks],
            counts=[int(stored.counts[n]) for n in picks],
            content_keys=[library.record(t.track_id).content_hash for t in bench_tracks],
            index_hop_s=stored.hop_s,
        )
    else:
        bench_summaries = _window_summaries(library, bench_tracks, head)
    v_summaries, v_tracks = val_summaries(args.corpus, head)
    val = run_split(v_summaries, v_tracks)
    sessions = {k: v for k, v in val["methods"].items() if k.startswith("session")}
    best = max(sessions, key=lambda k: sessions[k]["mrr"])
    decay = float(best.rsplit(" ", 1)[1])
    bench = run_split(bench_summaries, bench_tracks)
    rng = np.random.default_rng(SEED + 1)
    for res in (val, bench):
        diff = res["methods"][best]["_rr"] - res["methods"]["last"]["_rr"]
        lo, hi = bootstrap_ci(diff, rng)
        res["session_minus_last_mrr_ci95"] = [round(lo, 4), round(hi, 4)]
    doc = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "index": str(args.index),
        "space": "fingerprint" if head is None else f"sonic ({head.inputs} head)",
        "decay": decay,
        "val": strip(val),
        "bench": strip(bench),
    }
    library.close()
    text = markdown(doc)
    print(text)
    name = f"upnext-{commit[:10]}{'-' + args.label if args.label else ''}"
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (ROOT / "bench" / f"{name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
