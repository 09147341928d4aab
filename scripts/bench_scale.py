"""Catalog-scale benchmark: 1k to 100k+ tracks, Annoy (compact) and Milvus Lite.

    python scripts/bench_scale.py [--sizes 1000,10000] [--backends annoy,milvus]
        [--val-index DIR] [--bench-index DIR] [--queries 20] [--conditions clean,pink5,...]

Real catalogs of that size are not at hand, so the catalog is simulated, fitted on real
curves and seeded with the real tracks to find:

1. **Fit (val split only).** An encoder-v3 index of the corpus' val split (``--val-index``,
   else built here) gives the statistics of real curves: the mean and covariance of track
   centres, the covariance of windows around their track's centre, the lag-1
   autocorrelation of that drift along a track, how far a speed copy's windows sit from
   the track's own, and the track lengths. Synthetic tracks are Gaussian AR(1) walks with
   those moments, normalised to the unit sphere; the AR coefficient and two scale
   factors are then chosen on a grid (on val) so that the synthetic median distance between
   neighbouring windows, between windows 32 s apart, and from a window to the nearest
   window of another track match the real ones at the val index's size. Both sets of
   statistics are written to the JSON.
2. **Catalog.** The bench split's library tracks (the same 90 tracks ``scripts/bench.py``
   indexes, from ``--bench-index``, else built here) are tracks 1..n of every catalog;
   the rest are synthetic, with speed copies at 0.94 and 1.06 like a default build.
3. **Build from vectors**, as ``GenerationWriter.commit`` does it for the compact
   layout: int8 windows, the 32 principal axes, every 4th window projected into the ANN
   (Annoy, 4 trees; or a Milvus Lite collection, FLAT). Timed; disk measured.
4. **Queries.** ``scripts/bench.py``'s query generator writes the first ``--queries``
   12 s queries of each condition (the same seeded excerpts a bench run uses), the
   encoder embeds them at the live 2 s hop, and each live window goes through the
   candidate search (``compact.RefinedCandidates``, top 32) and the real ``Matcher``, as
   ``identify`` runs them. Per live window: p50/p99 of search + matcher; recall of the true
   window (same track, within 1 s of the true position, any speed copy) in the top 32;
   acc@6 (the answer at 6 s of audio is the right track).

RAM is the growth of this process's resident memory while it queries (Annoy and the
int8 windows are memory-mapped, so that is what a query touches) plus the files' sizes;
for Milvus Lite the server process's resident memory is added.

Only the val split is read for fitting; the bench split gives the tracks to find and
the queries (reported figures only). Results: ``bench/scale-<commit>.json`` and
``bench/scale-<commit>.png``.
"""

from __future__ import annotations

import argparse
import json
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
from scipy.signal import lfilter

from bench import (
    Plan,
    load_manifest,
    load_materials,
    make_queries,
    split_library,
)
from synesthete.clients.app import matcher_config_for
from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.events import NowPlaying, TrackInfo, Unknown
from synesthete.index.annoy_index import AnnoyItems, RowMap, build_annoy_from_chunks
from synesthete.index.builder import build_index
from synesthete.index.compact import (
    RefinedCandidates,
    StoredWindows,
    ann_rows,
    fit_projection,
    project,
    quantize_rows,
)
from synesthete.index.config import DEFAULT_SEARCH_K_FACTOR, IndexConfig, MatcherConfig
from synesthete.index.matcher import Matcher
from synesthete.index.milvus_store import MilvusItems, parse_vector_store, write_items
from synesthete.index.store import Library
from synesthete.inference.config import EncoderConfig
from synesthete.inference.torchscript import TorchScriptEncoder

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261207
HOP_S = 0.5
SPEEDS = (1.0, 0.94, 1.06)
ANN_STRIDE = 4
ANN_DIM = 32
N_TREES = 4
TOP_K = 32
LIVE_HOP_S = 2.0
AT_S = 6.0
RECALL_TOLERANCE_S = 1.0
PROJECTION_ROWS = 262_144
DEFAULT_CONDITIONS = ("clean", "pink5", "babble0", "speed+6", "codec64")


# -- real curves ------------------------------------------------------------------------


@dataclass
class RealTrack:
    path: str
    curves: list[np.ndarray]  # [M_k, D] unit float32, one per speed


def open_or_build(index: Path | None, work: Path, split: str, corpus: Path) -> Path:
    """An encoder-v3 index of ``split``'s library tracks: ``index`` if given, else built."""
    manifest = load_manifest(corpus)
    library, _negatives = split_library(manifest, split)
    wanted = {t.path for t in library}
    if index is None:
        index = work / f"{split}-index"
        if not (index / "CURRENT").exists():
            print(f"bench_scale: building the {split} index ({len(library)} tracks)", flush=True)
            encoder = TorchScriptEncoder(config=EncoderConfig())
            build_index(index, [t.path for t in library], encoder=encoder, config=IndexConfig())
    with Library.open(index) as lib:
        paths = {r.path for r in lib.records()}
        if lib.encoder_name != "encoder-v3" or tuple(lib.speeds) != SPEEDS:
            sys.exit(f"bench_scale: {index} is not an encoder-v3 index with speeds {SPEEDS}")
        if not paths <= {e["path"] for e in manifest if e["split"] == split}:
            sys.exit(f"bench_scale: {index} holds tracks outside the {split} split")
        if split == "bench" and paths != wanted:
            sys.exit(f"bench_scale: {index} is not the bench library of scripts/bench.py")
    return index


def load_real(index: Path) -> list[RealTrack]:
    with Library.open(index) as lib:
        return [
            RealTrack(
                path=r.path,
                curves=[np.array(lib.curve(r.id), np.float32)]
                + [np.array(c, np.float32) for c in lib.variant_curves(r.id)],
            )
            for r in sorted(lib.records(), key=lambda r: r.path)
        ]


# -- the fitted model -------------------------------------------------------------------


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def resample_rows(y: np.ndarray, speed: float) -> np.ndarray:
    """The rows a copy at ``speed`` would hold: window j at track time j * hop * speed."""
    m = y.shape[0]
    n = int(np.floor((m - 1) / speed)) + 1
    pos = np.minimum(np.arange(n) * speed, m - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, m - 1)
    frac = (pos - lo)[:, None]
    return (1.0 - frac) * y[lo] + frac * y[hi]


@dataclass
class Model:
    mean: np.ndarray
    between: np.ndarray  # [D, D] factor: centre = mean + between @ z
    within: np.ndarray  # [D, D] factor of the drift's stationary covariance
    rho: float
    lengths: np.ndarray
    alpha_b: float = 1.0
    alpha_w: float = 1.0
    sigma_v: float = 0.3

    def track(self, rng: np.random.Generator, *, native_only: bool = False) -> list[np.ndarray]:
        d = self.mean.shape[0]
        m = int(rng.choice(self.lengths))
        centre = self.mean + self.alpha_b * (self.between @ rng.standard_normal(d))
        shocks = rng.standard_normal((m, d)) @ self.within.T
        drift = lfilter([np.sqrt(1.0 - self.rho**2)], [1.0, -self.rho], shocks, axis=0)
        drift[0] = shocks[0]  # start in the stationary distribution
        y = centre[None, :] + self.alpha_w * drift
        curves = [unit(y)]
        for speed in () if native_only else SPEEDS[1:]:
            copy = resample_rows(y, speed)
            noise = rng.standard_normal(copy.shape) @ self.within.T
            curves.append(unit(copy + self.sigma_v * self.alpha_w * noise))
        return curves


def factor(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((cov + cov.T) / 2.0)
    return vectors * np.sqrt(np.clip(values, 0.0, None))[None, :]


def drift_stats(curves: list[np.ndarray]) -> dict[str, float]:
    out = {}
    for lag in (1, 4, 16, 64):
        d = np.concatenate(
            [np.linalg.norm(c[lag:] - c[:-lag], axis=1) for c in curves if c.shape[0] > lag]
        )
        out[f"lag{lag}_median"] = float(np.median(d))
    return out


def neighbour_stats(curves: list[np.ndarray], rng: np.random.Generator) -> dict[str, float]:
    """Distance from sampled windows to the nearest window of another track."""
    rows = np.concatenate(curves)
    owner = np.concatenate([np.full(c.shape[0], i) for i, c in enumerate(curves)])
    pick = rng.choice(rows.shape[0], size=min(600, rows.shape[0]), replace=False)
    d2 = 2.0 - 2.0 * (rows[pick] @ rows.T)
    d2[owner[pick][:, None] == owner[None, :]] = np.inf
    nearest = np.sqrt(np.clip(d2.min(axis=1), 0.0, None))
    return {f"p{q}": float(np.percentile(nearest, q)) for q in (10, 50, 90)}


def variant_stats(tracks: list[list[np.ndarray]]) -> float:
    """Median distance of a speed copy's window to the native curve at the same track time."""
    d = []
    for curves in tracks:
        native = curves[0]
        for speed, copy in zip(SPEEDS[1:], curves[1:], strict=True):
            target = unit(resample_rows(native, speed))
            n = min(target.shape[0], copy.shape[0])
            d.append(np.linalg.norm(target[:n] - copy[:n], axis=1))
    return float(np.median(np.concatenate(d)))


def bisect(fn: Any, target: float, lo: float, hi: float, steps: int = 12) -> float:
    """``x`` in [lo, hi] with increasing ``fn(x)`` closest to ``target``."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if fn(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def fit_model(val: list[RealTrack]) -> tuple[Model, dict[str, Any]]:
    natives = [t.curves[0].astype(np.float64) for t in val]
    centres = np.stack([c.mean(axis=0) for c in natives])
    mean = centres.mean(axis=0)
    residuals = [c - c.mean(axis=0) for c in natives]
    r_all = np.concatenate(residuals)
    within_cov = np.cov(r_all, rowvar=False)
    between_cov = np.cov(centres, rowvar=False)
    num = sum(float(np.sum(r[1:] * r[:-1])) for r in residuals)
    den = sum(float(np.sum(r[:-1] * r[:-1])) for r in residuals)
    model = Model(
        mean=mean,
        between=factor(between_cov),
        within=factor(within_cov),
        rho=num / den,
        lengths=np.array([c.shape[0] for c in natives]),
    )
    real_curves = [t.curves[0] for t in val]
    real = {
        "drift": drift_stats(real_curves),
        "nearest_other_track": neighbour_stats(real_curves, np.random.default_rng(1)),
        "speed_copy_median": variant_stats([t.curves for t in val]),
    }

    def sample(n: int, seed: int, *, native_only: bool = False) -> list[list[np.ndarray]]:
        rng = np.random.default_rng(seed)
        return [model.track(rng, native_only=native_only) for _ in range(n)]

    targets = np.array(
        [
            real["drift"]["lag1_median"],
            real["drift"]["lag64_median"],
            real["nearest_other_track"]["p50"],
        ]
    )

    def loss(rho: float, alpha_w: float, alpha_b: float) -> float:
        model.rho, model.alpha_w, model.alpha_b = rho, alpha_w, alpha_b
        curves = [c[0] for c in sample(len(val), 2, native_only=True)]
        drift = drift_stats(curves)
        got = np.array(
            [
                drift["lag1_median"],
                drift["lag64_median"],
                neighbour_stats(curves, np.random.default_rng(1))["p50"],
            ]
        )
        return float(np.sum(((got - targets) / targets) ** 2))

    # Short drift, how far a track wanders and how close other tracks come interact
    # through the normalisation: a coarse grid, then one refinement around the best.
    grid = [
        (rho, alpha_w, alpha_b)
        for rho in (0.6, 0.75, 0.85, 0.92, 0.96)
        for alpha_w in (0.3, 0.5, 0.8, 1.2, 2.0)
        for alpha_b in (0.0, 0.25, 0.5, 1.0, 2.0)
    ]
    best = min(grid, key=lambda p: loss(*p))
    fine = [
        (min(0.995, best[0] * r), best[1] * w, best[2] * b + db)
        for r in (0.97, 1.0, 1.02)
        for w in (0.8, 1.0, 1.25)
        for b, db in ((0.8, 0.0), (1.0, 0.0), (1.25, 0.05))
    ]
    model.rho, model.alpha_w, model.alpha_b = min(fine, key=lambda p: loss(*p))

    def copy_gap(sigma: float) -> float:
        model.sigma_v = sigma
        return variant_stats(sample(12, 4))

    model.sigma_v = bisect(copy_gap, real["speed_copy_median"], 0.0, 2.0, steps=10)
    synthetic_tracks = sample(len(val), 5)
    synthetic_curves = [c[0] for c in synthetic_tracks]
    fitted = {
        "rho": round(model.rho, 4),
        "alpha_between": round(model.alpha_b, 4),
        "alpha_within": round(model.alpha_w, 4),
        "sigma_speed_copy": round(model.sigma_v, 4),
        "val_tracks": len(val),
        "mean_windows_per_track": float(model.lengths.mean()),
        "real": real,
        "synthetic": {
            "drift": drift_stats(synthetic_curves),
            "nearest_other_track": neighbour_stats(synthetic_curves, np.random.default_rng(1)),
            "speed_copy_median": variant_stats(synthetic_tracks),
        },
    }
    return model, fitted


# -- a catalog --------------------------------------------------------------------------


class SimLibrary:
    """The ``CurveLibrary`` the matcher reads: curves from the int8 windows."""

    def __init__(self, windows: StoredWindows, row_map: RowMap, names: dict[int, str]) -> None:
        self._windows = windows
        self._names = names
        self._slices: dict[tuple[int, int], tuple[int, int]] = {}
        for track, start, count, variant in zip(
            row_map.track_ids.tolist(),
            row_map.window_start.tolist(),
            row_map.window_count.tolist(),
            row_map.variants.tolist(),
            strict=True,
        ):
            self._slices[(track, variant)] = (start, count)

    @property
    def index_hop_s(self) -> float:
        return HOP_S

    @property
    def speeds(self) -> tuple[float, ...]:
        return SPEEDS

    def curve(self, track_id: int, variant: int = 0) -> np.ndarray:
        start, count = self._slices[(track_id, variant)]
        return self._windows.rows(start, start + count)

    def info(self, track_id: int) -> TrackInfo:
        return TrackInfo(
            id=track_id,
            path=self._names.get(track_id, f"synthetic/{track_id}"),
            title=str(track_id),
        )

    def versions(self, track_id: int) -> frozenset[int]:
        return frozenset()


@dataclass
class Catalog:
    folder: Path
    windows: StoredWindows
    row_map: RowMap
    items: np.ndarray
    projection: np.ndarray
    n_tracks: int
    n_windows: int
    hours: float
    windows_bytes: int
    quantize_s: float
    projection_s: float


def make_catalog(size: int, real: list[RealTrack], model: Model, folder: Path) -> Catalog:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "windows.i8"
    started = time.perf_counter()
    track_ids: list[int] = []
    starts: list[int] = []
    counts: list[int] = []
    variants: list[int] = []
    seconds = 0.0
    n_rows = 0
    gen_rng = np.random.default_rng(SEED + 7 * size)
    quantize_s = 0.0
    with path.open("wb") as out:
        for track_id in range(1, size + 1):
            curves = real[track_id - 1].curves if track_id <= len(real) else model.track(gen_rng)
            seconds += (curves[0].shape[0] - 1) * HOP_S + 4.0
            for variant, curve in enumerate(curves):
                t0 = time.perf_counter()
                out.write(quantize_rows(curve).tobytes())
                quantize_s += time.perf_counter() - t0
                track_ids.append(track_id)
                starts.append(n_rows)
                counts.append(int(curve.shape[0]))
                variants.append(variant)
                n_rows += int(curve.shape[0])
    generate_s = time.perf_counter() - started
    dim = real[0].curves[0].shape[1]
    raw = np.memmap(path, dtype=np.int8, mode="r", shape=(n_rows, dim))
    windows = StoredWindows(windows=raw)
    row_map = RowMap(
        track_ids=np.array(track_ids, np.int64),
        window_start=np.array(starts, np.int64),
        window_count=np.array(counts, np.int64),
        variants=np.array(variants, np.int64),
    )
    t0 = time.perf_counter()
    # A build fits the axes on every window (O(N D^2)); here on an even sample of them,
    # and the time is scaled to all rows, to keep the run bounded.
    sample = np.linspace(0, n_rows - 1, min(n_rows, PROJECTION_ROWS)).astype(np.int64)
    projection = fit_projection(StoredWindows(windows=np.asarray(raw[sample])), dim=ANN_DIM)
    projection_s = (time.perf_counter() - t0) * n_rows / sample.shape[0]
    items = ann_rows(row_map.window_start, row_map.window_count, stride=ANN_STRIDE)
    print(
        f"bench_scale: {size} tracks, {n_rows} windows, {seconds / 3600:.0f} h "
        f"(generated in {generate_s:.0f} s)",
        flush=True,
    )
    return Catalog(
        folder=folder,
        windows=windows,
        row_map=row_map,
        items=items,
        projection=projection,
        n_tracks=size,
        n_windows=n_rows,
        hours=seconds / 3600.0,
        windows_bytes=path.stat().st_size,
        quantize_s=quantize_s,
        projection_s=projection_s,
    )


def item_chunks(catalog: Catalog, chunk: int = 65536) -> Any:
    for first in range(0, catalog.items.shape[0], chunk):
        rows = catalog.items[first : first + chunk]
        yield project(catalog.windows.take(rows), catalog.projection)


def build_backend(
    catalog: Catalog, backend: str, *, n_trees: int = N_TREES
) -> tuple[Any, float, int]:
    """(item search, build seconds, bytes on disk) for ``annoy`` or ``milvus``."""
    started = time.perf_counter()
    if backend == "annoy":
        path = catalog.folder / f"items-{n_trees}.ann"
        n = build_annoy_from_chunks(
            item_chunks(catalog), dim=ANN_DIM, n_trees=n_trees, seed=SEED, path=path
        )
        elapsed = time.perf_counter() - started
        search = AnnoyItems(ann_path=path, dim=ANN_DIM, n_trees=n_trees, n_items=n)
        return search, elapsed, path.stat().st_size
    store = parse_vector_store(f"milvus://{catalog.folder}/milvus/vectors.db")
    n = write_items(store, "scale", item_chunks(catalog), dim=ANN_DIM)
    elapsed = time.perf_counter() - started
    search = MilvusItems(store=store, collection="scale", dim=ANN_DIM, n_items=n)
    size = sum(p.stat().st_size for p in (catalog.folder / "milvus").rglob("*") if p.is_file())
    return search, elapsed, size


# -- queries ----------------------------------------------------------------------------


@dataclass
class Query:
    condition: str
    track_path: str
    start_s: float
    tempo: float
    live: np.ndarray  # [n, D]


def make_live_queries(
    corpus: Path, bench_index: Path, conditions: tuple[str, ...], per_condition: int, work: Path
) -> list[Query]:
    manifest = load_manifest(corpus)
    library, negatives = split_library(manifest, "bench")
    plan = Plan(
        queries_per_condition=per_condition,
        negatives_per_kind=0,
        mixes=0,
        conditions=conditions,
        latency_files=0,
    )
    sets = make_queries(library, negatives, plan, load_materials(corpus), work / "queries")
    encoder = TorchScriptEncoder(config=EncoderConfig(threads=1))
    hop = int(LIVE_HOP_S * SAMPLE_RATE_HZ)
    queries = []
    for name in conditions:
        for path, truth in sets[name]:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            mono = soxr.resample(audio.mean(axis=1), rate, SAMPLE_RATE_HZ).astype(np.float32)
            starts = range(0, mono.shape[0] - WINDOW_SAMPLES + 1, hop)
            batch = np.stack([mono[s : s + WINDOW_SAMPLES] for s in starts])
            queries.append(
                Query(
                    condition=name,
                    track_path=str(truth.track),
                    start_s=float(truth.excerpt_start_s or 0.0),
                    tempo=float(truth.tempo_factor or 1.0),
                    live=np.asarray(encoder.embed(batch), np.float32),
                )
            )
    return queries


def matcher_config() -> MatcherConfig:
    """The matcher as ``identify`` sets it up for encoder-v3 (clients/app.py)."""
    from dataclasses import replace

    encoder = TorchScriptEncoder(config=EncoderConfig(threads=1))
    config = matcher_config_for(encoder.calibration, index_hop_s=HOP_S)
    return replace(config, live_hop_s=LIVE_HOP_S)


def rss_bytes(pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def child_rss() -> int:
    """Resident memory of this process's children (Milvus Lite's server)."""
    me = Path("/proc/self").resolve().name
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        ppid = next((ln.split()[1] for ln in text.splitlines() if ln.startswith("PPid:")), "")
        if ppid == me:
            total += rss_bytes(status.parent.name)
    return total


def run_queries(
    catalog: Catalog, search: Any, queries: list[Query], names: dict[int, str]
) -> dict[str, Any]:
    """Every query through candidates and matcher; per-window times, recall and acc@6."""
    source = RefinedCandidates(
        search=search,
        items=catalog.items,
        windows=catalog.windows,
        row_map=catalog.row_map,
        stride=ANN_STRIDE,
        projection=catalog.projection,
    )
    library = SimLibrary(catalog.windows, catalog.row_map, names)
    ids = {path: track_id for track_id, path in names.items()}
    config = matcher_config()
    per_window_ms: list[float] = []
    search_ms: list[float] = []
    hits = 0
    windows = 0
    candidate_tracks: list[int] = []
    correct: dict[str, list[bool]] = {}
    # Warm the search path once (first-touch page faults belong to start-up).
    source.query(queries[0].live[:1], k=TOP_K)
    for query in queries:
        truth = ids[query.track_path]
        matcher = Matcher(config=config, library=library, stream="q")
        answer: int | None = None
        for i, live in enumerate(query.live):
            t_end = i * LIVE_HOP_S + 4.0
            t0 = time.perf_counter()
            [found] = source.query(live[None, :], k=TOP_K)
            t1 = time.perf_counter()
            events = matcher.push(live, found, t=t_end)
            t2 = time.perf_counter()
            search_ms.append((t1 - t0) * 1000.0)
            candidate_tracks.append(len({n.track_id for n in found}))
            per_window_ms.append((t2 - t0) * 1000.0)
            position = query.start_s + i * LIVE_HOP_S * query.tempo
            windows += 1
            hits += any(
                n.track_id == truth
                and abs(n.window_index * HOP_S * SPEEDS[n.variant] - position) <= RECALL_TOLERANCE_S
                for n in found
            )
            if t_end <= AT_S + 1e-6:
                for event in events:
                    if isinstance(event, NowPlaying):
                        answer = event.track.id
                    elif isinstance(event, Unknown):
                        answer = None
        correct.setdefault(query.condition, []).append(answer == truth)
    all_correct = [c for flags in correct.values() for c in flags]
    return {
        "window_ms_p50": float(np.percentile(per_window_ms, 50)),
        "window_ms_p99": float(np.percentile(per_window_ms, 99)),
        "search_ms_p50": float(np.percentile(search_ms, 50)),
        "search_ms_p99": float(np.percentile(search_ms, 99)),
        "recall_at_32": hits / max(windows, 1),
        "candidate_tracks_per_window_mean": float(np.mean(candidate_tracks)),
        "acc_at_6": float(np.mean(all_correct)),
        "acc_at_6_by_condition": {k: float(np.mean(v)) for k, v in correct.items()},
        "queries": len(queries),
        "live_windows": windows,
    }


# -- main -------------------------------------------------------------------------------


def _label(row: dict[str, Any]) -> str:
    """A result's series in the plot: the backend, and for Annoy its trees and search_k."""
    if row["backend"] != "annoy" or "annoy_trees" not in row:
        return str(row["backend"])
    return f"annoy {row['annoy_trees']}t sk {row['search_k_setting']}"


def plot(results: list[dict[str, Any]], out: Path, commit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for backend in sorted({_label(r) for r in results}):
        rows = sorted((r for r in results if _label(r) == backend), key=lambda r: r["tracks"])
        x = [r["tracks"] for r in rows]
        axes[0].plot(x, [r["window_ms_p50"] for r in rows], "o-", label=f"{backend} p50")
        axes[0].plot(x, [r["window_ms_p99"] for r in rows], "o--", label=f"{backend} p99")
        axes[1].plot(x, [100 * r["recall_at_32"] for r in rows], "o-", label=f"{backend} recall@32")
        axes[1].plot(x, [100 * r["acc_at_6"] for r in rows], "s--", label=f"{backend} acc@6")
        axes[2].plot(x, [r["ram_bytes"] / 2**30 for r in rows], "o-", label=f"{backend} RAM")
        axes[2].plot(x, [r["disk_bytes"] / 2**30 for r in rows], "s--", label=f"{backend} disk")
    titles = ("ms per live window (search + matcher)", "% (bench queries)", "GiB")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("tracks in the catalog")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.suptitle(f"Synesthete catalog scale, commit {commit}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--backends", default="annoy,milvus")
    parser.add_argument("--val-index", type=Path, default=None)
    parser.add_argument("--bench-index", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=20, help="per condition")
    parser.add_argument("--conditions", default=",".join(DEFAULT_CONDITIONS))
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--milvus-max-tracks", type=int, default=10_000)
    parser.add_argument("--milvus-queries", type=int, default=40, help="queries run on Milvus")
    parser.add_argument(
        "--annoy-trees", default=str(N_TREES), help="Annoy tree counts to build, e.g. 4,8"
    )
    parser.add_argument(
        "--search-k",
        default="auto",
        help="Annoy search_k settings per tree count: 'auto' (the library's, growing with the"
        " items), or a factor F for a fixed k * trees * F as before (e.g. auto,8,32)",
    )
    args = parser.parse_args(argv)
    tree_counts = [int(t) for t in args.annoy_trees.split(",")]
    search_ks = [s.strip() for s in args.search_k.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [b.strip() for b in args.backends.split(",")]
    conditions = tuple(c.strip() for c in args.conditions.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="synesthete-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    commit, dirty = git_commit()
    started = time.perf_counter()

    val = load_real(open_or_build(args.val_index, work, "val", args.corpus))
    bench_index = open_or_build(args.bench_index, work, "bench", args.corpus)
    real = load_real(bench_index)
    model, fitted = fit_model(val)
    print(f"bench_scale: fitted {json.dumps(fitted)}", flush=True)
    queries = make_live_queries(args.corpus, bench_index, conditions, args.queries, work)
    names = {i + 1: t.path for i, t in enumerate(real)}
    print(f"bench_scale: {len(queries)} queries embedded", flush=True)

    results: list[dict[str, Any]] = []
    for size in sizes:
        folder = work / f"catalog-{size}"
        catalog = make_catalog(size, real, model, folder)
        runs = [
            (backend, trees, setting)
            for backend in backends
            for trees in (tree_counts if backend == "annoy" else [0])
            for setting in (search_ks if backend == "annoy" else [""])
        ]
        built: dict[tuple[str, int], tuple[Any, float, int]] = {}
        for backend, trees, setting in runs:
            if backend == "milvus" and size > args.milvus_max_tracks:
                continue
            base_rss = rss_bytes()
            if (backend, trees) not in built:
                for old in built.values():
                    old[0].close()
                built = {
                    (backend, trees): build_backend(catalog, backend, n_trees=trees or N_TREES)
                }
            search, build_s, ann_bytes = built[(backend, trees)]
            if backend == "annoy":
                search.search_k_factor = (
                    DEFAULT_SEARCH_K_FACTOR if setting == "auto" else int(setting)
                )
                search.scale_search_k = setting == "auto"
            before = rss_bytes()
            subset = queries
            if backend == "milvus" and len(queries) > args.milvus_queries:
                # Milvus Lite searches exhaustively: a spread subset keeps the run bounded.
                step = len(queries) / args.milvus_queries
                subset = [queries[int(i * step)] for i in range(args.milvus_queries)]
            row = run_queries(catalog, search, subset, names)
            server = child_rss() if backend == "milvus" else 0
            row.update(
                tracks=size,
                backend=backend,
                **(
                    {
                        "annoy_trees": trees,
                        "search_k_setting": setting,
                        "search_k_at_32": search.search_k(TOP_K),
                    }
                    if backend == "annoy"
                    else {}
                ),
                hours=round(catalog.hours, 1),
                windows=catalog.n_windows,
                ann_items=int(catalog.items.shape[0]),
                build_s=round(catalog.quantize_s + catalog.projection_s + build_s, 2),
                build_ann_s=round(build_s, 2),
                build_quantize_s=round(catalog.quantize_s, 2),
                build_projection_s=round(catalog.projection_s, 2),
                disk_bytes=catalog.windows_bytes + ann_bytes,
                ann_bytes=ann_bytes,
                ram_bytes=max(rss_bytes() - min(base_rss, before), 0) + server,
                milvus_server_rss_bytes=server,
            )
            results.append(row)
            print(f"bench_scale: {json.dumps(row)}", flush=True)
            if backend == "milvus":
                built.pop((backend, trees))[0].close()
                shutil.rmtree(folder / "milvus", ignore_errors=True)
        for old in built.values():
            old[0].close()
        shutil.rmtree(folder, ignore_errors=True)
        del catalog

    tag = f"{commit[:10]}{'-dirty' if dirty else ''}"
    out_json = ROOT / "bench" / f"scale-{tag}.json"
    doc = {
        "commit": commit,
        "dirty": dirty,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "machine": subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "layout": {
            "windows": "int8",
            "ann_stride": ANN_STRIDE,
            "ann_dim": ANN_DIM,
            "annoy_trees": tree_counts,
            "annoy_search_k": search_ks,
            "milvus_lite_index": "FLAT",
            "top_k": TOP_K,
            "speeds": SPEEDS,
            "index_hop_s": HOP_S,
            "live_hop_s": LIVE_HOP_S,
        },
        "conditions": conditions,
        "queries_per_condition": args.queries,
        "real_tracks_in_catalog": len(real),
        "fit": fitted,
        "results": results,
    }
    out_json.write_text(json.dumps(doc, indent=2) + "\n")
    plot(results, ROOT / "bench" / f"scale-{tag}.png", commit[:10])
    print(f"bench_scale: wrote {out_json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
