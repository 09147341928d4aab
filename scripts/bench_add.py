"""``index add`` at catalog scale: time of adding N tracks to libraries of L tracks.

    python scripts/bench_add.py [--sizes 1000,3000,10000] [--adds 10,100] [--track-s 60]

For each library size L a main generation is written straight from synthetic vectors
(``GenerationWriter``, the compact layout, speed variants 0.94 and 1.06, no sonic map):
each track a unit-norm random walk of ``track_s`` seconds at the 0.5 s hop, D = 128. Then,
on a hard-linked copy of that index each time (generations are never modified, so a copy
of links is a true copy), ``add_to_index`` adds N real audio files (noise bursts, decoded
and windowed as any file, embedded by a cheap deterministic encoder so that embedding
costs little and the writer's share shows):

- ``delta``: ``delta_fraction = 1``, the new tracks go into a delta beside the main
  generation (what ``index add`` does while the deltas hold at most 10 % of the main);
- ``full``: ``delta_fraction = 0``, a fresh main generation with every track, which is
  what every ``index add`` did before deltas (its cost is also that of ``index compact``).

The figure that matters is how each grows with L at fixed N. Wall seconds and this
process's CPU seconds are both recorded: on a machine shared with other work the CPU
seconds are the steadier figure. Results: ``bench/add-<commit>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
from provenance import git_commit

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.index.builder import add_to_index
from synesthete.index.config import DEFAULT_SPEED_VARIANTS, IndexConfig
from synesthete.index.store import GenerationWriter, TrackRecord, utc_now_iso

ROOT = Path(__file__).resolve().parents[1]
DIM = 128
HOP_S = 0.5
ENCODER_NAME = "bench-add-v1"
SEED = 18


class CheapEncoder:
    """A deterministic encoder of 4 s windows into D = 128 unit vectors: band energies of
    16 sub-blocks through a fixed random projection (cheap, so the writer's cost shows)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(SEED)
        self._projection = rng.standard_normal((64, DIM)).astype(np.float32)

    @property
    def name(self) -> str:
        return ENCODER_NAME

    @property
    def dim(self) -> int:
        return DIM

    @property
    def sample_rate_hz(self) -> int:
        return SAMPLE_RATE_HZ

    @property
    def window_samples(self) -> int:
        return WINDOW_SAMPLES

    def embed(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        blocks = windows.reshape(windows.shape[0], 64, -1)
        energy = np.log10(np.square(blocks).mean(axis=-1) + 1e-9)
        out = (energy - energy.mean(axis=1, keepdims=True)) @ self._projection
        result: npt.NDArray[np.float32] = (
            out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        ).astype(np.float32)
        return result


def walk(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    """``[n, DIM]`` unit vectors drifting along a track (AR(1) around a track centre)."""
    centre = rng.standard_normal(DIM)
    steps = rng.standard_normal((n, DIM))
    x = np.empty((n, DIM))
    x[0] = steps[0]
    for i in range(1, n):
        x[i] = 0.8 * x[i - 1] + 0.6 * steps[i]
    x = 2.0 * centre + x
    out: npt.NDArray[np.float32] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def build_main(index: Path, *, tracks: int, track_s: float) -> float:
    """A main generation of ``tracks`` synthetic tracks; returns seconds taken."""
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    windows = int((track_s - 4.0) / HOP_S) + 1
    with GenerationWriter(
        index_dir=index, dim=DIM, speed_variants=DEFAULT_SPEED_VARIANTS, sonic_map=False
    ) as writer:
        for track_id in range(1, tracks + 1):
            record = TrackRecord(
                id=track_id,
                path=f"/synthetic/{track_id:07d}.flac",
                title=f"synthetic {track_id}",
                artist=None,
                album=None,
                duration_s=track_s,
                content_hash=f"{track_id:064x}",
                window_start=0,
                window_count=windows,
                added=utc_now_iso(),
            )
            curves = [walk(rng, max(1, round(windows / s))) for s in (1.0, *DEFAULT_SPEED_VARIANTS)]
            writer.add_track(record, curves[0], curves[1:])
        writer.commit(
            meta={
                "encoder_name": ENCODER_NAME,
                "index_hop_s": repr(HOP_S),
                "window_s": "4.0",
                "sample_rate_hz": str(SAMPLE_RATE_HZ),
            },
            n_trees=4,
            seed=SEED,
        )
    return time.perf_counter() - started


def write_new_files(folder: Path, *, count: int, track_s: float) -> list[Path]:
    rng = np.random.default_rng(SEED + count)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        samples = int(track_s * SAMPLE_RATE_HZ)
        envelope = np.repeat(rng.uniform(0.05, 0.5, size=samples // 4000 + 1), 4000)[:samples]
        audio = (rng.standard_normal(samples) * envelope).astype(np.float32)
        path = folder / f"new {n:04d}.flac"
        sf.write(path, audio, SAMPLE_RATE_HZ, subtype="PCM_16")
        paths.append(path)
    return paths


def linked_copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target, copy_function=os.link)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--adds", default="10,100")
    parser.add_argument("--track-s", type=float, default=60.0)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    adds = [int(s) for s in args.adds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-add-", dir=args.work))
    commit, dirty = git_commit()
    results: list[dict[str, Any]] = []
    try:
        files = {n: write_new_files(work / f"new-{n}", count=n, track_s=args.track_s) for n in adds}
        for size in sizes:
            main_index = work / f"main-{size}"
            build_s = build_main(main_index, tracks=size, track_s=args.track_s)
            print(f"library of {size} tracks built from vectors in {build_s:.1f} s", flush=True)
            # Deltas first: on a shared machine the slow full rewrites may not all finish.
            for mode, fraction in (("delta", 1.0), ("full", 0.0)):
                for n in adds:
                    index = work / f"run-{size}-{n}-{mode}"
                    linked_copy(main_index, index)
                    started = time.perf_counter()
                    cpu_started = time.process_time()
                    report = add_to_index(
                        index,
                        files[n],
                        encoder=CheapEncoder(),
                        config=IndexConfig(delta_fraction=fraction, sonic_map=False),
                    )
                    elapsed_s = time.perf_counter() - started
                    cpu_s = time.process_time() - cpu_started
                    assert report.delta == (mode == "delta") and len(report.indexed) == n
                    row = {
                        "library_tracks": size,
                        "added_tracks": n,
                        "mode": mode,
                        "seconds": round(elapsed_s, 3),
                        "cpu_seconds": round(cpu_s, 3),
                        "cpu_seconds_per_added_track": round(cpu_s / n, 4),
                        "total_windows": report.total_windows,
                        "added_windows": report.windows,
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
                    write_results(results, args=args, commit=commit, dirty=dirty)
                    shutil.rmtree(index)
            shutil.rmtree(main_index)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {write_results(results, args=args, commit=commit, dirty=dirty)}")
    return 0


def write_results(
    results: list[dict[str, Any]], *, args: argparse.Namespace, commit: str, dirty: bool
) -> Path:
    """``bench/add-<commit>.json`` with the rows so far (written after every row)."""
    out = ROOT / "bench" / f"add-{commit[:10]}.json"
    out.write_text(
        json.dumps(
            {
                "commit": commit,
                "dirty": dirty,
                "track_s": args.track_s,
                "dim": DIM,
                "speed_variants": list(DEFAULT_SPEED_VARIANTS),
                "encoder": "CheapEncoder (band energies, a random projection)",
                "note": "2 cores shared with other work; sonic map off in both modes",
                "results": results,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
