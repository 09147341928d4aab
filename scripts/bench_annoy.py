"""Annoy recall@k against brute force, and query latency, over n_trees and search_k factors.

The data imitates a library's embedding curves: each "track" is a smooth
random walk on the unit sphere (about 360 windows, 3 minutes at a 0.5 s
hop) that drifts around one of a few dozen cluster centres ("genres").
Queries are live-like: a point between two consecutive windows of a random
track, plus noise, so the nearest library window is close but not equal.

Prints a table and writes bench/annoy.json with the commit it ran on.
Usage: python scripts/bench_annoy.py [--rows 20000 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from provenance import git_commit

from synesthete.index.annoy_index import AnnoyCandidates, BruteForceCandidates, RowMap, build_annoy
from synesthete.index.config import DEFAULT_ANNOY_SEED

REPO_ROOT = Path(__file__).resolve().parent.parent


def unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_curves(
    *, rows: int, dim: int, seed: int, windows_per_track: int = 360, n_clusters: int = 32
) -> tuple[npt.NDArray[np.float32], RowMap]:
    """``[rows, dim]`` unit vectors: smooth per-track random walks around cluster centres."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n_clusters, dim)).astype(np.float32))
    n_tracks = max(1, rows // windows_per_track)
    counts = np.full(n_tracks, rows // n_tracks, dtype=np.int64)
    counts[: rows - int(counts.sum())] += 1
    out = np.empty((rows, dim), dtype=np.float32)
    start = 0
    for count in counts:
        centre = centres[rng.integers(n_clusters)]
        home = unit(centre + 0.6 * unit(rng.standard_normal(dim).astype(np.float32)))
        x = unit(home + 0.3 * unit(rng.standard_normal(dim).astype(np.float32)))
        velocity = np.zeros(dim, dtype=np.float32)
        for i in range(int(count)):
            # Momentum keeps the walk smooth; the pull home keeps a track in its region.
            step = rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
            velocity = 0.8 * velocity + 0.08 * step
            x = unit(x + velocity + 0.02 * (home - x))
            out[start + i] = x
        start += int(count)
    window_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    row_map = RowMap(
        track_ids=np.arange(1, n_tracks + 1, dtype=np.int64),
        window_start=window_start,
        window_count=counts,
    )
    return out, row_map


def make_queries(
    vectors: npt.NDArray[np.float32], *, n: int, noise: float, seed: int
) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed + 1)
    rows = rng.integers(0, vectors.shape[0] - 1, size=n)
    frac = rng.uniform(0.0, 1.0, size=(n, 1)).astype(np.float32)
    between = (1 - frac) * vectors[rows] + frac * vectors[rows + 1]
    jitter = (
        noise * rng.standard_normal(between.shape).astype(np.float32) / np.sqrt(vectors.shape[1])
    )
    return unit(between + jitter)


def bench_size(
    *,
    rows: int,
    dim: int,
    n_queries: int,
    k: int,
    trees: list[int],
    factors: list[int],
    seed: int,
    noises: list[float],
) -> list[dict[str, object]]:
    """One library size; an Annoy build per n_trees, shared by every query-noise scenario."""
    t0 = time.perf_counter()
    vectors, row_map = make_curves(rows=rows, dim=dim, seed=seed)
    exact = BruteForceCandidates(vectors=vectors, row_map=row_map)
    adjacent = np.linalg.norm(np.diff(vectors, axis=0), axis=1)
    scenarios: list[dict[str, object]] = []
    truths = []
    for noise in noises:
        queries = make_queries(vectors, n=n_queries, noise=noise, seed=seed)
        exact_rows, exact_dist = exact.query_rows(queries, k=k)
        truths.append((queries, exact_rows))
        scenarios.append(
            {
                "rows": rows,
                "dim": dim,
                "queries": n_queries,
                "k": k,
                "query_noise": noise,
                "adjacent_window_distance_median": float(np.median(adjacent)),
                "query_to_nearest_distance_median": float(np.median(exact_dist[:, 0])),
                "query_to_kth_distance_median": float(np.median(exact_dist[:, -1])),
                "results": [],
            }
        )
    data_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        for n_trees in trees:
            path = Path(tmp) / f"t{n_trees}.ann"
            t_build = time.perf_counter()
            build_annoy(vectors, n_trees=n_trees, seed=DEFAULT_ANNOY_SEED, path=path)
            build_s = time.perf_counter() - t_build
            for factor in factors:
                source = AnnoyCandidates(
                    ann_path=path, dim=dim, n_trees=n_trees, row_map=row_map, search_k_factor=factor
                )
                for scenario, (queries, exact_rows) in zip(scenarios, truths, strict=True):
                    latencies_us = np.empty(n_queries)
                    hits = 0
                    top1 = 0
                    for q in range(n_queries):
                        t_q = time.perf_counter()
                        [(found, _)] = source.query_rows(queries[q : q + 1], k=k)
                        latencies_us[q] = (time.perf_counter() - t_q) * 1e6
                        hits += len(set(found) & set(exact_rows[q].tolist()))
                        top1 += int(bool(found) and found[0] == exact_rows[q, 0])
                    results = scenario["results"]
                    assert isinstance(results, list)
                    results.append(
                        {
                            "n_trees": n_trees,
                            "search_k_factor": factor,
                            "search_k": k * n_trees * factor,
                            "recall_at_k": hits / (k * n_queries),
                            "recall_at_1": top1 / n_queries,
                            "latency_us_median": float(np.median(latencies_us)),
                            "latency_us_p99": float(np.percentile(latencies_us, 99)),
                            "build_s": build_s,
                            "ann_mb": path.stat().st_size / 1e6,
                        }
                    )
                source.close()
    for scenario in scenarios:
        scenario["data_s"] = data_s
    return scenarios


def print_table(size: dict[str, object]) -> None:
    print(
        f"\n{size['rows']} rows x {size['dim']} dims, {size['queries']} queries, k={size['k']}, "
        f"query noise {size['query_noise']}; median distance: adjacent windows "
        f"{size['adjacent_window_distance_median']:.3f}, "
        f"query->nearest {size['query_to_nearest_distance_median']:.3f}, "
        f"query->k-th {size['query_to_kth_distance_median']:.3f}"
    )
    print(
        f"{'trees':>5} {'factor':>6} {'search_k':>8} {'recall@k':>8} {'recall@1':>8} "
        f"{'med us':>8} {'p99 us':>8} {'build s':>7} {'MB':>6}"
    )
    results = size["results"]
    assert isinstance(results, list)
    for r in results:
        print(
            f"{r['n_trees']:>5} {r['search_k_factor']:>6} {r['search_k']:>8} "
            f"{r['recall_at_k']:>8.3f} {r['recall_at_1']:>8.3f} {r['latency_us_median']:>8.0f} "
            f"{r['latency_us_p99']:>8.0f} {r['build_s']:>7.2f} {r['ann_mb']:>6.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--trees", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=[0.2, 0.5],
        help="query noise scenarios (L2 norm of the added noise, approx.)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "annoy.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    sizes = []
    for rows in args.rows:
        for scenario in bench_size(
            rows=rows,
            dim=args.dim,
            n_queries=args.queries,
            k=args.k,
            trees=args.trees,
            factors=args.factors,
            seed=args.seed,
            noises=args.noise,
        ):
            print_table(scenario)
            sizes.append(scenario)
    commit, dirty = git_commit()
    record = {
        "benchmark": "annoy_recall_latency",
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "annoy_build": "angular, n_jobs=1, seed=DEFAULT_ANNOY_SEED",
        "scenarios": sizes,
        "elapsed_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nwrote {args.out} (commit {commit}{' dirty' if dirty else ''}) "
        f"in {record['elapsed_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
