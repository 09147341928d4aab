"""The sonic map stored with a generation: what it costs and how faithfully it places new audio.

    python scripts/bench_map.py --index DIR [--label NAME]

On the library of ``--index`` (its "sounds like" curves, stored or computed):

1. **Layout.** ``fit_layout`` (UMAP, the default seed), timed in this process from
   the first call (numba compiles on the first fit and the first transform), and
   again warm; 10-NN trustworthiness of the track positions.
2. **Placing new audio.** Queries are live-like stretches (8 consecutive points)
   of every track at offsets of another seed than the placer's training
   stretches. Three ways to place them: UMAP's own ``transform`` (what a pickled
   model would run live), the stored ``MapPlacer`` distilled from it
   (``sonic_store.write_sonic``: anchors at the track means and at live-like
   stretches, placed by the layout and ``transform``), and the nearest-track
   weighting ``place`` over the track positions alone. For each: the share of a
   query's 10 nearest tracks (cosine, full space) among the 10 nearest to where
   it lands (``neighbours_kept``), the mean distance to where ``transform`` puts
   it, the milliseconds per query, and the bytes the method stores.
3. **Cost in the generation.** Seconds ``write_sonic`` takes (vectors, then map)
   and the bytes of each file it adds, next to the generation's other files.

Results: ``bench/map-<commit10>[-label].{json,md}``.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_commit

from synesthete.index.sonic_map import (
    DEFAULT_MAP_SEED,
    fit_layout,
    fit_placer,
    neighbours_kept,
    place,
    placer_inputs,
    trustworthiness,
)
from synesthete.index.sonic_store import write_sonic
from synesthete.index.store import Library

ROOT = Path(__file__).resolve().parents[1]
QUERY_SEED = 7


def curves_of(library: Library) -> list[np.ndarray]:
    summaries = library.summaries()
    stored = library.stored_sonic()
    if stored is not None and stored.points is not None:
        return [stored.points[s : s + c] for s, c in zip(stored.starts, stored.counts, strict=True)]
    head = summaries.head
    out = []
    for r in sorted(library.records(), key=lambda r: r.window_start):
        rows = library.curve(r.id)
        out.append(head.apply(rows) if head is not None else np.asarray(rows))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    with Library.open(args.index) as library:
        curves = curves_of(library)
        n = len(curves)
        means = np.stack([c.mean(0) / np.linalg.norm(c.mean(0)) for c in curves])
        started = time.perf_counter()
        positions, transform = fit_layout(means, seed=DEFAULT_MAP_SEED)
        fit_cold_s = time.perf_counter() - started
        train_inputs = placer_inputs(curves, seed=DEFAULT_MAP_SEED)
        started = time.perf_counter()
        train_targets = np.concatenate([positions, transform(train_inputs[n:])])
        transform_cold_s = time.perf_counter() - started
        started = time.perf_counter()
        fit_layout(means, seed=DEFAULT_MAP_SEED)
        fit_warm_s = time.perf_counter() - started
        started = time.perf_counter()
        placer = fit_placer(train_inputs, train_targets)
        placer_fit_s = time.perf_counter() - started
        queries = placer_inputs(curves, seed=QUERY_SEED)[n:]
        started = time.perf_counter()
        by_transform = np.concatenate([transform(q[None]) for q in queries])
        transform_ms = (time.perf_counter() - started) * 1000 / len(queries)
        methods: dict[str, tuple[np.ndarray, float, int]] = {}
        reducer_bytes = _pickled_bytes(transform)
        methods["umap transform (pickled model)"] = (by_transform, transform_ms, reducer_bytes)
        started = time.perf_counter()
        got = np.concatenate([placer.place(q[None]) for q in queries])
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        buffer = io.BytesIO()
        np.savez(buffer, points=placer.points.astype(np.float16), targets=placer.targets)
        methods["transform distilled into anchors (stored)"] = (got, ms, len(buffer.getvalue()))
        started = time.perf_counter()
        got = np.array([place(q, means, positions) for q in queries])
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        methods["nearest tracks (place, no model)"] = (got, ms, 0)
        rows = []
        for name, (xy, ms, size) in methods.items():
            rows.append(
                {
                    "method": name,
                    "neighbours_kept_10": round(neighbours_kept(queries, xy, means, positions), 4),
                    "mean_distance_to_transform": round(
                        float(np.mean(np.linalg.norm(xy - by_transform, axis=1))), 4
                    ),
                    "ms_per_query": round(ms, 4),
                    "bytes": size,
                }
            )
        stored = library.stored_sonic()
        given = (
            {
                int(t): stored.points[s : s + c]
                for t, s, c in zip(stored.track_ids, stored.starts, stored.counts, strict=True)
            }
            if stored is not None and stored.points is not None
            else None
        )
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            written = write_sonic(
                Path(tmp),
                records=library.records(),
                windows=library.stored_windows,
                index_hop_s=library.index_hop_s,
                head=library.sonic_head(),
                given=given,  # an audio head's curves, as the builder hands them over
            )
            write_s = time.perf_counter() - started
            added = {name: (Path(tmp) / name).stat().st_size for name in written.files}
        generation = {
            p.name: p.stat().st_size
            for p in library.generation_dir.iterdir()
            if p.is_file() and p.name not in written.files
        }
        features_ms = _features_ms_per_window(library)
        audio_h = sum(r.duration_s for r in library.records()) / 3600.0
        commit, dirty = git_commit()
        doc: dict[str, Any] = {
            "commit": commit,
            "dirty": dirty,
            "index": str(args.index),
            "tracks": n,
            "audio_hours": round(audio_h, 3),
            "space": "sonic" if library.sonic_head() is not None else "fingerprint",
            "fit_cold_s": round(fit_cold_s, 2),
            "first_transform_cold_s": round(transform_cold_s, 2),
            "fit_warm_s": round(fit_warm_s, 3),
            "placer_fit_s": round(placer_fit_s, 3),
            "trustworthiness_10": round(trustworthiness(means, positions), 4),
            "queries": len(queries),
            "placing": rows,
            "write_sonic_s": round(write_s, 2),
            "write_sonic_meta": written.meta,
            "added_bytes": added,
            "style_features_ms_per_window": round(features_ms, 3),
            "style_features_s_per_audio_hour": round(features_ms * 1.8, 2),
            "generation_bytes": generation,
        }
    name = f"map-{commit[:10]}" + (f"-{args.label}" if args.label else "")
    out = ROOT / "bench"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / f"{name}.md").write_text(_markdown(doc))
    print(_markdown(doc))
    return 0


def _features_ms_per_window(library: Library) -> float:
    """Milliseconds of CPU per 4 s window for the style features an audio head reads (what
    ``index build`` adds per window, one every 2 s), on the library's first decodable file."""
    from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
    from synesthete.errors import AudioFormatError
    from synesthete.index.decode import load_mono
    from synesthete.index.sonic_audio import window_features
    from synesthete.stream.windowing import window_audio

    for record in library.records():
        try:
            audio = load_mono(record.path, sample_rate_hz=SAMPLE_RATE_HZ, duration_s=130.0)
        except (AudioFormatError, OSError):
            continue
        windows = window_audio(audio, window_samples=WINDOW_SAMPLES, hop_samples=2 * SAMPLE_RATE_HZ)
        window_features(windows[:2])
        started = time.process_time()
        window_features(windows)
        return (time.process_time() - started) * 1000.0 / max(1, windows.shape[0])
    return float("nan")


def _pickled_bytes(transform: Any) -> int:
    """Bytes of the UMAP model behind ``transform`` pickled (0 when it has none)."""
    cells = [c.cell_contents for c in (transform.__closure__ or ())]
    reducer = next((c for c in cells if type(c).__name__ == "UMAP"), None)
    return len(pickle.dumps(reducer)) if reducer is not None else 0


def _markdown(doc: dict[str, Any]) -> str:
    gen_total = sum(doc["generation_bytes"].values())
    added_total = sum(doc["added_bytes"].values())
    lines = [
        f"# Sonic map: stored layout and live placement — commit {doc['commit'][:10]}"
        + (" (dirty)" if doc["dirty"] else ""),
        "",
        f"{doc['index']}: {doc['tracks']} tracks, {doc['audio_hours']} h, {doc['space']} space;"
        f" {doc['queries']} live-like queries (8 consecutive points, held-out offsets).",
        "",
        f"UMAP fit: {doc['fit_cold_s']} s in a fresh process (numba compiling), first"
        f" transform {doc['first_transform_cold_s']} s, then a fit takes {doc['fit_warm_s']} s;"
        f" placer fit {doc['placer_fit_s']} s. 10-NN trustworthiness {doc['trustworthiness_10']}.",
        "",
        "| placing new audio | 10-NN kept | mean distance to UMAP transform | ms / query | bytes |",
        "|---|---|---|---|---|",
    ]
    for r in doc["placing"]:
        lines.append(
            f"| {r['method']} | {r['neighbours_kept_10']:.3f} |"
            f" {r['mean_distance_to_transform']:.3f} | {r['ms_per_query']:.3f} | {r['bytes']} |"
        )
    lines += [
        "",
        f"Written with the generation: {doc['write_sonic_s']} s in all"
        f" (vectors {doc['write_sonic_meta'].get('sonic_build_s')} s,"
        f" map {doc['write_sonic_meta'].get('map_build_s', '-')} s), "
        + ", ".join(f"{k} {v} B" for k, v in doc["added_bytes"].items())
        + f": {added_total} B, {100.0 * added_total / max(1, gen_total):.1f} % of the"
        f" generation's other files ({gen_total} B).",
        "",
        f"Style features for an audio head: {doc['style_features_ms_per_window']} ms of CPU per"
        f" 4 s window, a window every 2 s: {doc['style_features_s_per_audio_hour']} s per hour"
        " of audio.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
