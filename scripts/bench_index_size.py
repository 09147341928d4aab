"""Where an index's bytes go, per layout, and how well the compact ANN finds the full one's hits.

    python scripts/bench_index_size.py --index DIR [--json OUT] [--queries N]

Reads the curves of an existing index (any layout), writes them again as one
generation per layout (``compact.LAYOUTS``), and the compact layout once more
with its ANN in a Milvus Lite file (``--no-milvus`` skips that), in a temporary
folder, and reports for each:

- bytes per hour of audio, split by file (windows, projection, Annoy, sqlite;
  the Milvus file is not counted);
- the time to write the generation from its vectors (quantising, the
  projection, the Annoy build, version detection);
- candidate recall against brute force over the stored windows: queries are
  stored windows half an ANN stride off the ANN's grid with Gaussian noise
  (``--noise``, per component, then renormalised), and a hit counts when the
  query's own track is among the tracks of the top ``--k`` neighbours; plus
  the median and p99 time of one query (one live window: the ANN search and the
  refinement on the stored curves).

Writes bench/index-size-<commit>.json (and ``--json OUT``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="an existing index folder")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=32, help="neighbours per query (top_k)")
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-milvus",
        action="store_true",
        help="skip the compact layout with its ANN in Milvus Lite (needs the [scale] extra)",
    )
    args = parser.parse_args(argv)

    from synesthete.errors import SynestheteError
    from synesthete.index.compact import COMPACT_LAYOUT, LAYOUTS
    from synesthete.index.milvus_store import ANNOY_STORE, parse_vector_store
    from synesthete.index.store import GenerationWriter, Library

    try:
        source = Library.open(args.index)
    except SynestheteError as err:
        print(f"bench_index_size: {err}", file=sys.stderr)
        return 2
    hours = sum(r.duration_s for r in source.records()) / 3600.0
    rng = np.random.default_rng(args.seed)
    results: dict[str, Any] = {}
    with source, tempfile.TemporaryDirectory() as tmp:
        cases = [(name, layout, ANNOY_STORE) for name, layout in LAYOUTS.items()]
        if not args.no_milvus:
            lite = parse_vector_store(f"milvus://{tmp}/vectors.db")
            cases.append(("compact-milvus-lite", COMPACT_LAYOUT, lite))
        for name, layout, store in cases:
            out = Path(tmp) / name
            started = time.perf_counter()
            with GenerationWriter(
                index_dir=out,
                dim=source.dim,
                speed_variants=source.speeds[1:],
                layout=layout,
                vector_store=store,
            ) as writer:
                for record in sorted(source.records(), key=lambda r: r.window_start):
                    writer.add_track(
                        record, source.curve(record.id), source.variant_curves(record.id)
                    )
                meta = {k: v for k, v in source.meta.items() if k == "encoder_name"}
                meta["index_hop_s"] = source.meta["index_hop_s"]
                n_trees = layout.n_trees if layout.n_trees is not None else 16
                writer.commit(meta=meta, n_trees=n_trees, seed=source.seed)
            write_s = time.perf_counter() - started
            with Library.open(out) as lib:
                files = {p.name: p.stat().st_size for p in sorted(lib.generation_dir.iterdir())}
                recall, p50_ms, p99_ms = _recall(lib, rng=rng, args=args)
                results[name] = {
                    "layout": lib.layout.describe(),
                    "vector_store": "annoy" if store.kind == "annoy" else "milvus lite (FLAT)",
                    "n_trees": lib.n_trees,
                    "mb_per_hour": round(sum(files.values()) / 1e6 / hours, 3),
                    "mb_per_hour_by_file": {k: round(v / 1e6 / hours, 3) for k, v in files.items()},
                    "write_from_vectors_s": round(write_s, 2),
                    f"track_recall_at_{args.k}": round(recall, 4),
                    "query_ms_p50": round(p50_ms, 3),
                    "query_ms_p99": round(p99_ms, 3),
                }
            print(f"{name}: {json.dumps(results[name])}")
        curves = 1 + len(source.speeds) - 1
        doc = {
            "commit": _commit(),
            "index": str(args.index),
            "encoder_name": source.encoder_name,
            "dim": source.dim,
            "index_hop_s": source.index_hop_s,
            "speed_variants": list(source.speeds[1:]),
            "curves_per_track": curves,
            "audio_hours": round(hours, 3),
            "windows": source.n_windows,
            "windows_per_hour": round(source.n_windows / hours),
            "queries": args.queries,
            "query_noise": args.noise,
            "layouts": results,
        }
    text = json.dumps(doc, indent=2) + "\n"
    (ROOT / "bench").mkdir(exist_ok=True)
    target = ROOT / "bench" / f"index-size-{doc['commit'][:10]}.json"
    target.write_text(text, encoding="utf-8")
    if args.json is not None:
        args.json.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


def _recall(lib: Any, *, rng: np.random.Generator, args: argparse.Namespace) -> tuple[float, ...]:
    """Track recall@k of the library's candidate source on noisy off-grid stored windows."""
    source = lib.candidates()
    stride = 4  # queries half the compact stride off its grid, the same rows for every layout
    records = lib.records()
    hits = 0
    times: list[float] = []
    for _ in range(args.queries):
        record = records[int(rng.integers(len(records)))]
        curve = lib.curve(record.id)
        j = min(curve.shape[0] - 1, stride * int(rng.integers(max(1, curve.shape[0] // stride))))
        j = min(curve.shape[0] - 1, j + stride // 2)
        q = curve[j] + rng.normal(0.0, args.noise, curve.shape[1]).astype(np.float32)
        q = (q / np.linalg.norm(q)).astype(np.float32)
        began = time.perf_counter()
        [neighbors] = source.query(q[None, :], k=args.k)
        times.append((time.perf_counter() - began) * 1e3)
        hits += any(n.track_id == record.id for n in neighbors)
    return hits / args.queries, float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
