"""Train the similarity ("sonic") head on the train split; select it on val.

    python scripts/train_similarity.py [--corpus DIR] [--model PT] [--out NPZ]
                                       [--steps N] [--seed S] [--label-weight W ...]
                                       [--inputs windows|audio] [--ensemble K]
                                       [--anchor-scale S ...]

1. **Features.** Every track of the train and val splits (decoded once to
   corpus/cache/train16k, as the encoder training does) is cut into 4 s
   windows every ``HOP_S`` and embedded by the fingerprint encoder (default:
   the packaged one). Cached under runs/sim/ (gitignored), so a second run
   trains at once.
2. **Head.** ``index/sonic.py``'s two-layer head, applied to each window; a
   stretch of a track is the normalised mean of its windows' unit outputs,
   which is the ``mean`` distance's track vector.
3. **Loss.** A multi-positive contrastive loss (SupCon) over a batch of
   tracks, two stretches each: the two stretches of one track are positives
   (taken from the first and second halves of the track, far apart, as
   Stollery's triplets were), tracks of the same artist/composer, album or
   game are positives of weight ``--label-weight`` (the relevance labels of
   scripts/bench_similar.py, so the train split's labels only); every other
   track is a negative. Stretch lengths vary from a live query's 8 windows to
   a minute.
4. **Selection on val.** Every ``EVAL_EVERY`` steps the head ranks the val
   tracks for each val track (whole-track queries, and live-like queries: 8
   windows 2 s apart at a seeded offset), P@5 and MAP with the same labels.
   The checkpoint and label weight with the best mean of whole and live MAP
   win. The bench split is never read here.
5. **Ensemble** (``--ensemble K``). K heads from seeds ``seed .. seed+K-1``, each
   chosen on val as above, side by side as one two-layer head (``combine_heads``:
   their outputs concatenated before the one normalisation). Seeds disagree by
   about 0.03 of val score; three together beat each alone on val.
6. **Anchors** (``--anchor-scale S ...``, optional). The head may end in soft
   nearness to the train split's label groups (``anchor_centroids``); val picks
   the scale, or none.

Writes the head (``--out``, default inference/models/<encoder>.sonic.npz) with
its settings, its val figures and this command in ``meta``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_similar import Track, average_precision, relevant, split_artists  # noqa: E402
from provenance import git_commit  # noqa: E402

HOPS_S = {"train": 4.0, "val": 2.0}
"""Window spacing per split: back to back for train (a stretch of n windows spans 4n s),
and val at the live hop, as a live query is."""
LIVE_POINTS = 8
"""A live query: the matcher's horizon, 8 windows at the live hop."""
SEGMENT_POINTS = (2, 4, 4, 8, 16)
"""Stretch lengths drawn per step (train windows, 4 s each): 8 s to a minute, about a live
query's 18 s most often."""
EVAL_EVERY = 100
TOP = 5


@dataclass(frozen=True)
class Split:
    """Window embeddings of one split, track after track."""

    windows: np.ndarray  # [N, D]
    starts: np.ndarray  # [T]
    counts: np.ndarray  # [T]
    tracks: list[Track]


def _manifest(corpus: Path) -> list[dict[str, Any]]:
    path = corpus / "manifest.jsonl"
    if not path.is_file():
        sys.exit(f"train_similarity: no corpus manifest at {path}; run: bash scripts/corpus.sh")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tracks(rows: list[dict[str, Any]]) -> list[Track]:
    family: dict[str, set[str]] = {r["id"]: {r["id"]} for r in rows}
    for r in rows:
        if r.get("variant_of") and r["variant_of"] in family:
            family[r["id"]].add(r["variant_of"])
            family[r["variant_of"]].add(r["id"])

    def norm(text: str | None) -> str | None:
        folded = " ".join((text or "").casefold().split())
        return folded or None

    return [
        Track(
            track_id=n,
            path=r["path"],
            split=r["split"],
            artists=split_artists(r.get("artist")),
            album=norm(r.get("album")),
            game=None if r["source"] == "music21" else r["package"],
            family=frozenset(family[r["id"]]),
            manifest_id=r["id"],
            duration_s=float(r["duration_s"]),
        )
        for n, r in enumerate(rows)
    ]


def embed_split(corpus: Path, split: str, *, model: Path | None, cache_dir: Path) -> Split:
    """Embeddings of every track of ``split``, windows ``HOPS_S[split]`` apart (cached).

    Reads the 16 kHz decodes the encoder training caches (corpus/cache/train16k),
    one track at a time, and decodes a track that is not there yet.
    """
    from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
    from synesthete.index.decode import load_mono
    from synesthete.inference.config import EncoderConfig
    from synesthete.inference.torchscript import TorchScriptEncoder
    from synesthete.stream.windowing import window_audio

    all_rows = _manifest(corpus)
    rows = [r for r in all_rows if r["split"] == split]
    encoder = TorchScriptEncoder(config=EncoderConfig(model_path=model, threads=1))
    hop_s = HOPS_S[split]
    key = hashlib.sha1(
        json.dumps([encoder.name, hop_s, [r["id"] for r in rows]]).encode()
    ).hexdigest()[:10]
    cache = cache_dir / f"emb-{encoder.name}-{split}-{key}.npz"
    by_id = {t.manifest_id: t for t in _tracks(all_rows)}
    if cache.is_file():
        with np.load(cache) as saved:
            names = [str(x) for x in saved["names"]]
            return Split(
                windows=saved["windows"],
                starts=saved["starts"],
                counts=saved["counts"],
                tracks=[by_id[n] for n in names],
            )
    hop = round(hop_s * SAMPLE_RATE_HZ)
    parts, names = [], []
    started = time.perf_counter()
    for n, row in enumerate(rows):
        decoded = hashlib.sha1(f"{row['id']}|{row.get('content_hash')}".encode()).hexdigest()[:16]
        cached = corpus / "cache" / "train16k" / f"{decoded}.npy"
        source = Path(row["path"]) if Path(row["path"]).is_absolute() else corpus / row["path"]
        if cached.is_file():
            audio = np.load(cached).astype(np.float32)
        elif source.is_file():
            audio = load_mono(str(source), sample_rate_hz=SAMPLE_RATE_HZ)
        else:
            print(f"train_similarity: skipping {row['id']}: no audio", flush=True)
            continue
        windows = window_audio(audio, window_samples=WINDOW_SAMPLES, hop_samples=hop)
        if windows.shape[0] < 2:
            continue
        emb = [
            encoder.embed(np.ascontiguousarray(windows[b : b + 64]))
            for b in range(0, windows.shape[0], 64)
        ]
        parts.append(np.concatenate(emb).astype(np.float32))
        names.append(row["id"])
        if (n + 1) % 25 == 0:
            print(
                f"train_similarity: {split}: {n + 1}/{len(rows)} tracks embedded"
                f" ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    counts = np.array([p.shape[0] for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out = Split(
        windows=np.concatenate(parts),
        starts=starts,
        counts=counts,
        tracks=[by_id[n] for n in names],
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, windows=out.windows, starts=starts, counts=counts, names=np.array(names))
    return out


def features_split(corpus: Path, split: str, *, cache_dir: Path) -> Split:
    """Style features (``index/sonic_audio.py``) of every track of ``split``, windowed as
    ``embed_split`` windows it (same hop, same tracks), cached under ``cache_dir``.

    The bench split is decoded from its files; it is read only by ``--report-bench``.
    """
    from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
    from synesthete.index.decode import load_mono
    from synesthete.index.sonic_audio import FEATURE_DIM, window_features
    from synesthete.stream.windowing import window_audio

    all_rows = _manifest(corpus)
    rows = [r for r in all_rows if r["split"] == split]
    hop_s = HOPS_S.get(split, 2.0)
    key = hashlib.sha1(
        json.dumps([FEATURE_DIM, _feature_code_key(), hop_s, [r["id"] for r in rows]]).encode()
    ).hexdigest()[:10]
    cache = cache_dir / f"feat-{split}-{key}.npz"
    by_id = {t.manifest_id: t for t in _tracks(all_rows)}
    if cache.is_file():
        with np.load(cache) as saved:
            names = [str(x) for x in saved["names"]]
            return Split(
                windows=saved["windows"],
                starts=saved["starts"],
                counts=saved["counts"],
                tracks=[by_id[n] for n in names],
            )
    hop = round(hop_s * SAMPLE_RATE_HZ)
    parts, names = [], []
    started = time.perf_counter()
    for n, row in enumerate(rows):
        decoded = hashlib.sha1(f"{row['id']}|{row.get('content_hash')}".encode()).hexdigest()[:16]
        cached = corpus / "cache" / "train16k" / f"{decoded}.npy"
        source = Path(row["path"]) if Path(row["path"]).is_absolute() else corpus / row["path"]
        if cached.is_file():
            audio = np.load(cached).astype(np.float32)
        elif source.is_file():
            audio = load_mono(str(source), sample_rate_hz=SAMPLE_RATE_HZ)
        else:
            continue
        windows = window_audio(audio, window_samples=WINDOW_SAMPLES, hop_samples=hop)
        if windows.shape[0] < 2:
            continue
        parts.append(window_features(windows))
        names.append(row["id"])
        if (n + 1) % 50 == 0:
            print(
                f"train_similarity: {split}: {n + 1}/{len(rows)} tracks' style features"
                f" ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    counts = np.array([p.shape[0] for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out = Split(
        windows=np.concatenate(parts),
        starts=starts,
        counts=counts,
        tracks=[by_id[n] for n in names],
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, windows=out.windows, starts=starts, counts=counts, names=np.array(names))
    return out


def _feature_code_key() -> str:
    """The feature code's version: a cache is valid for exactly one."""
    from synesthete.index.sonic_audio import FEATURE_VERSION

    return f"v{FEATURE_VERSION}"


def _standardised(
    windows: Split, features: Split, centre: np.ndarray | None, scale: np.ndarray | None
) -> tuple[Split, np.ndarray, np.ndarray]:
    """``features`` standardised by ``centre`` and ``scale`` (the train split's, computed
    here when ``None``), checked to be windowed as ``windows`` (same tracks, same counts)."""
    same = [t.manifest_id for t in windows.tracks] == [t.manifest_id for t in features.tracks]
    if not same or not np.array_equal(windows.counts, features.counts):
        sys.exit("train_similarity: the style features are not windowed as the embeddings")
    x = features.windows.astype(np.float64)
    if centre is None or scale is None:
        centre, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    out = Split(
        windows=((x - centre) / scale).astype(np.float32),
        starts=features.starts,
        counts=features.counts,
        tracks=features.tracks,
    )
    return out, centre, scale


def label_matrices(tracks: list[Track]) -> tuple[np.ndarray, np.ndarray]:
    """``[T, T]`` relevant (labels) and candidate (not the track or its family) masks."""
    n = len(tracks)
    rel = np.zeros((n, n), dtype=bool)
    cand = np.ones((n, n), dtype=bool)
    for i, a in enumerate(tracks):
        for j, b in enumerate(tracks):
            same = i == j or a.manifest_id in b.family
            cand[i, j] = not same
            rel[i, j] = not same and relevant(a, b)
    return rel, cand


def rank_scores(
    queries: np.ndarray, library: np.ndarray, rel: np.ndarray, cand: np.ndarray
) -> tuple[float, float]:
    """Mean P@5 and MAP of ranking ``library [T, E]`` by cosine to ``queries [T, E]``."""
    sims = queries @ library.T
    p5, ap = [], []
    for q in range(sims.shape[0]):
        if not rel[q].any():
            continue
        allowed = np.flatnonzero(cand[q])
        order = allowed[np.argsort(-sims[q, allowed], kind="stable")]
        r = rel[q, order]
        p5.append(float(r[:TOP].mean()))
        ap.append(average_precision(r))
    return float(np.mean(p5)), float(np.mean(ap))


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return out


def val_queries(split: Split, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Whole curves, and live-like curves (``LIVE_POINTS`` windows at a seeded offset)."""
    rng = np.random.default_rng(seed)
    whole, live = [], []
    for start, count in zip(split.starts, split.counts, strict=True):
        curve = split.windows[start : start + count]
        whole.append(curve)
        first = int(rng.integers(0, max(1, count - LIVE_POINTS + 1)))
        live.append(curve[first : first + LIVE_POINTS])
    return whole, live


def evaluate(
    project: Any, split: Split, rel: np.ndarray, cand: np.ndarray, seed: int
) -> dict[str, float]:
    """Val P@5/MAP for ``mean`` queries through ``project`` (windows → unit rows)."""
    whole, live = val_queries(split, seed)
    library = _unit(np.stack([project(c).mean(axis=0) for c in whole]))
    live_q = _unit(np.stack([project(c).mean(axis=0) for c in live]))
    wp5, wmap = rank_scores(library, library, rel, cand)
    lp5, lmap = rank_scores(live_q, library, rel, cand)
    return {
        "whole_p5": round(wp5, 4),
        "whole_map": round(wmap, 4),
        "live_p5": round(lp5, 4),
        "live_map": round(lmap, 4),
        "score": round((wmap + lmap) / 2, 4),
    }


def label_groups(tracks: list[Track]) -> np.ndarray:
    """``[T]`` group of each track: its game, else its first credited artist or composer,
    else its album, else itself (the labels ``relevant`` reads, one per track)."""
    keys = []
    for t in tracks:
        if t.game is not None:
            keys.append(f"game:{t.game}")
        elif t.artists:
            keys.append(f"artist:{min(t.artists)}")
        elif t.album is not None:
            keys.append(f"album:{t.album}")
        else:
            keys.append(f"track:{t.manifest_id}")
    names = sorted(set(keys))
    return np.array([names.index(k) for k in keys], dtype=np.int64)


def anchor_centroids(project: Any, split: Split) -> np.ndarray:
    """``[C, E]`` unit anchors: each label group's mean track vector (the normalised mean
    of its windows through ``project``), over ``split`` (the train split)."""
    tracks = _unit(
        np.stack(
            [
                project(split.windows[a : a + c]).mean(axis=0)
                for a, c in zip(split.starts, split.counts, strict=True)
            ]
        )
    )
    groups = label_groups(split.tracks)
    return _unit(np.stack([tracks[groups == g].mean(axis=0) for g in range(groups.max() + 1)]))


def through_anchors(project: Any, anchors: np.ndarray, scale: float) -> Any:
    """``project`` followed by the head's anchor stage (``SonicHead.apply``)."""

    def run(x: np.ndarray) -> np.ndarray:
        return _unit(np.exp(scale * (project(x) @ anchors.T - 1.0)))

    return run


def state_project(state: dict[str, np.ndarray]) -> Any:
    """Rows through a head's weights (``SonicHead.apply`` without anchors), in numpy."""

    def run(x: np.ndarray) -> np.ndarray:
        hidden = np.maximum(np.asarray(x, dtype=np.float32) @ state["w1"] + state["b1"], 0.0)
        return _unit(hidden @ state["w2"] + state["b2"])

    return run


def combine_heads(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One head whose output is the members' outputs side by side (before the one
    normalisation): hidden layers stacked, second layers block-diagonal. An ensemble of
    seeds as a plain two-layer head, so nothing downstream changes."""
    if len(states) == 1:
        return states[0]
    hidden = [s["w2"].shape[0] for s in states]
    outs = [s["w2"].shape[1] for s in states]
    w2 = np.zeros((sum(hidden), sum(outs)), dtype=np.float32)
    row = col = 0
    for s, h, o in zip(states, hidden, outs, strict=True):
        w2[row : row + h, col : col + o] = s["w2"]
        row, col = row + h, col + o
    return {
        "w1": np.concatenate([s["w1"] for s in states], axis=1).astype(np.float32),
        "b1": np.concatenate([s["b1"] for s in states]).astype(np.float32),
        "w2": w2,
        "b2": np.concatenate([s["b2"] for s in states]).astype(np.float32),
    }


def train_head(
    train: Split,
    val: Split,
    *,
    steps: int,
    seed: int,
    label_weight: float,
    hidden: int,
    dim: int,
    batch_tracks: int,
    temperature: float,
    log: Any = print,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train one head; return the best-on-val weights and the val history."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    in_dim = train.windows.shape[1]
    head = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
    optimiser = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-4)
    windows = torch.from_numpy(np.ascontiguousarray(train.windows, dtype=np.float32))
    rel, _ = label_matrices(train.tracks)
    val_rel, val_cand = label_matrices(val.tracks)
    rel_t = torch.from_numpy(rel)
    n_tracks = len(train.tracks)

    def project(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = head(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            return nn.functional.normalize(y, dim=1).numpy()

    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, np.ndarray]] | None = None
    for step in range(1, steps + 1):
        length = int(rng.choice(SEGMENT_POINTS))
        picks = rng.choice(n_tracks, size=min(batch_tracks, n_tracks), replace=False)
        rows = []
        for t in picks:
            start, count = int(train.starts[t]), int(train.counts[t])
            span = min(length, count)
            half = count // 2
            for lo, hi in ((0, half), (half, count)) if count >= 2 * span else ((0, count),) * 2:
                first = lo + int(rng.integers(0, max(1, hi - lo - span + 1)))
                rows.append(np.arange(start + first, start + first + span))
        lengths = torch.tensor([len(r) for r in rows])
        flat = torch.from_numpy(np.concatenate(rows))
        x = windows[flat]
        x = x + 0.02 * torch.randn_like(x)
        y = nn.functional.normalize(head(x), dim=1)
        owner = torch.repeat_interleave(torch.arange(len(rows)), lengths)
        pooled = torch.zeros(len(rows), dim).index_add_(0, owner, y)
        z = nn.functional.normalize(pooled, dim=1)
        track_of = torch.from_numpy(np.repeat(picks, 2))
        same = track_of[:, None] == track_of[None, :]
        weights = same.float() + label_weight * rel_t[track_of][:, track_of].float()
        eye = torch.eye(len(rows), dtype=torch.bool)
        weights = weights.masked_fill(eye, 0.0)
        logits = (z @ z.T / temperature).masked_fill(eye, -1e9)
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        loss = -((weights * log_prob).sum(1) / weights.sum(1).clamp(min=1e-6)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % EVAL_EVERY == 0 or step == steps:
            figures = evaluate(project, val, val_rel, val_cand, seed)
            history.append({"step": step, "loss": round(float(loss.detach()), 4), **figures})
            loss_value = float(loss.detach())
            log(f"train_similarity: w={label_weight} step {step}: loss {loss_value:.3f} {figures}")
            if best is None or figures["score"] > best[0]:
                state = {
                    "w1": head[0].weight.detach().numpy().T.copy(),
                    "b1": head[0].bias.detach().numpy().copy(),
                    "w2": head[2].weight.detach().numpy().T.copy(),
                    "b2": head[2].bias.detach().numpy().copy(),
                }
                best = (figures["score"], step, state)
    assert best is not None
    chosen = next(h for h in history if h["step"] == best[1])
    return best[2], {"history": history, "best": chosen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--model", type=Path, default=None, help="encoder (default: packaged)")
    parser.add_argument("--out", type=Path, default=None, help="head file to write")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "sim")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--label-weight", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-tracks", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="train this many heads (seeds seed, seed+1, ...) and ship them side by side as"
        " one head (combine_heads)",
    )
    parser.add_argument(
        "--anchor-scale",
        type=float,
        nargs="*",
        default=[],
        help="also try the head ending in anchors (the train split's label groups) at these"
        " scales; val picks among them and the plain head",
    )
    parser.add_argument(
        "--inputs",
        choices=("windows", "audio"),
        default="windows",
        help="what the head reads: the fingerprint windows, or the audio's style features"
        " (index/sonic_audio.py)",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    from synesthete.index.sonic import SonicHead
    from synesthete.inference.config import EncoderConfig
    from synesthete.inference.torchscript import TorchScriptEncoder

    encoder_name = TorchScriptEncoder(config=EncoderConfig(model_path=args.model, threads=1)).name
    train = embed_split(args.corpus, "train", model=args.model, cache_dir=args.cache)
    val = embed_split(args.corpus, "val", model=args.model, cache_dir=args.cache)
    print(
        f"train_similarity: train {len(train.tracks)} tracks / {train.windows.shape[0]} windows,"
        f" val {len(val.tracks)} tracks / {val.windows.shape[0]} windows",
        flush=True,
    )
    val_rel, val_cand = label_matrices(val.tracks)
    fingerprint = evaluate(lambda x: _unit(np.asarray(x)), val, val_rel, val_cand, args.seed)
    print(f"train_similarity: fingerprint embedding on val: {fingerprint}", flush=True)
    centre: np.ndarray | None = None
    scale: np.ndarray | None = None
    if args.inputs == "audio":
        train, centre, scale = _standardised(
            train, features_split(args.corpus, "train", cache_dir=args.cache), None, None
        )
        val, _, _ = _standardised(
            val, features_split(args.corpus, "val", cache_dir=args.cache), centre, scale
        )
        print(f"train_similarity: style features, {train.windows.shape[1]} per window", flush=True)
    runs = []
    for weight in args.label_weight:
        members = []
        for member in range(args.ensemble):
            state, record = train_head(
                train,
                val,
                steps=args.steps,
                seed=args.seed + member,
                label_weight=weight,
                hidden=args.hidden,
                dim=args.dim,
                batch_tracks=args.batch_tracks,
                temperature=args.temperature,
            )
            members.append((state, record))
        state = combine_heads([m[0] for m in members])
        figures = evaluate(state_project(state), val, val_rel, val_cand, args.seed)
        if args.ensemble > 1:
            print(f"train_similarity: w={weight} ensemble of {args.ensemble}: {figures}")
        record = {"best": figures, "members": [m[1]["best"] for m in members]}
        runs.append((figures["score"], weight, state, record))
    _, weight, state, record = max(runs, key=lambda r: r[0])
    anchors, anchor_scale = None, 0.0
    if args.anchor_scale:
        project = state_project(state)
        centroids = anchor_centroids(project, train)
        for trial in args.anchor_scale:
            figures = evaluate(
                through_anchors(project, centroids, trial), val, val_rel, val_cand, args.seed
            )
            print(f"train_similarity: anchors at scale {trial:g}: {figures}")
            record.setdefault("anchor_scales", {})[f"{trial:g}"] = figures
            if figures["score"] > record["best"]["score"]:
                anchors, anchor_scale = centroids.astype(np.float32), float(trial)
                record["best"] = {**figures, "anchor_scale": trial}
    if centre is not None and scale is not None:
        # The standardisation folds into the first layer: the head reads raw features.
        state["w1"] = (state["w1"] / scale[:, None]).astype(np.float32)
        state["b1"] = (state["b1"] - centre @ state["w1"]).astype(np.float32)
    commit, dirty = git_commit()
    meta = {
        "encoder_name": encoder_name,
        "trained_on": "train split; selected on val (bench never read)",
        "command": "python scripts/train_similarity.py " + " ".join(argv or sys.argv[1:]),
        "commit": commit,
        "dirty": dirty,
        "seed": args.seed,
        "steps": args.steps,
        "hops_s": HOPS_S,
        "hidden": args.hidden,
        "dim": args.dim,
        "batch_tracks": args.batch_tracks,
        "temperature": args.temperature,
        "label_weight": weight,
        "anchor_scale": anchor_scale,
        "anchors": 0 if anchors is None else int(anchors.shape[0]),
        "inputs": args.inputs,
        "val_fingerprint": fingerprint,
        "val_best": record["best"],
        "ensemble": args.ensemble,
        "val_by_label_weight": {str(r[1]): r[3]["best"] for r in runs},
        "val_members": record["members"],
        "val_anchor_scales": record.get("anchor_scales", {}),
        "runtime_s": round(time.perf_counter() - began, 1),
    }
    from synesthete.index.sonic_audio import FEATURE_VERSION

    head = SonicHead(
        encoder_name=encoder_name,
        meta=meta,
        inputs=args.inputs,
        feature_version=FEATURE_VERSION if args.inputs == "audio" else 0,
        anchors=anchors,
        anchor_scale=anchor_scale,
        **state,
    )
    from synesthete.index.sonic_file import save_head

    out = args.out or ROOT / "inference" / "models" / f"{encoder_name}.sonic.npz"
    save_head(head, out)
    print(json.dumps(meta, indent=2))
    print(f"train_similarity: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
