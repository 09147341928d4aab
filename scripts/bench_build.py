"""Index build speed in × realtime: this build against what builds did before format 3.

    python scripts/bench_build.py [--split val] [--tracks N] [--threads T] [--json OUT]

Builds the first ``--tracks`` library tracks of a corpus split (val by default;
tune on val) twice with the packaged encoder and default index settings:

- ``now``: the encoder as it is (a trained model runs its front end once per
  segment of windows: ``TorchScriptEncoder.embed_segment``) and the compact
  layout;
- ``before``: the encoder through a wrapper that only offers ``embed`` (every
  window's spectrogram computed on its own) and the full layout (float32, a
  16-tree Annoy over every window): what ``index build`` did before format 3.

Reports wall time, × realtime (seconds of audio per second, speed variants not
counted as audio), and the encoder's share of it, and the largest difference
between the two builds' stored windows (int8 rounding, under 0.01).

Writes bench/build-<commit>.json (and ``--json OUT``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class _WindowsOnly:
    """The encoder through the plain ``Encoder`` protocol (no segment path)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.sample_rate_hz, self.window_samples = inner.sample_rate_hz, inner.window_samples

    def embed(self, windows: Any) -> Any:
        return self._inner.embed(windows)


class _Timed:
    """Counts the seconds spent inside the encoder."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.sample_rate_hz, self.window_samples = inner.sample_rate_hz, inner.window_samples
        self.seconds = 0.0
        if hasattr(inner, "embed_segment"):
            self.supports_segments = inner.supports_segments
            self.embed_segment = self._timed(inner.embed_segment)

    def _timed(self, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began

        return call

    def embed(self, windows: Any) -> Any:
        return self._timed(self._inner.embed)(windows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--split", choices=("val", "bench"), default="val")
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--keep", type=Path, default=None, help="copy the segment-path index here afterwards"
    )
    args = parser.parse_args(argv)

    from synesthete.index.builder import build_index
    from synesthete.index.compact import COMPACT_LAYOUT, FULL_LAYOUT
    from synesthete.index.config import IndexConfig
    from synesthete.index.store import Library
    from synesthete.inference.config import EncoderConfig
    from synesthete.inference.torchscript import TorchScriptEncoder

    rows = [json.loads(line) for line in (args.corpus / "manifest.jsonl").open(encoding="utf-8")]
    paths = [Path(r["path"]) for r in rows if r.get("split") == args.split][: args.tracks]
    audio_s = sum(float(r["duration_s"]) for r in rows if Path(r["path"]) in set(paths))
    encoder = TorchScriptEncoder(config=EncoderConfig(device="cpu", threads=args.threads))
    encoder.warm_up()
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, wrapped, layout in (
            ("now", encoder, COMPACT_LAYOUT),
            ("before", _WindowsOnly(encoder), FULL_LAYOUT),
        ):
            timed = _Timed(wrapped)
            began = time.perf_counter()
            report = build_index(
                Path(tmp) / label,
                paths,
                encoder=timed,
                config=IndexConfig(),
                progress=None,
                layout=layout,
            )
            wall_s = time.perf_counter() - began
            runs[label] = {
                "wall_s": round(wall_s, 2),
                "x_realtime": round(audio_s / wall_s, 1),
                "encoder_s": round(timed.seconds, 2),
                "other_s": round(wall_s - timed.seconds, 2),
                "windows": report.windows,
            }
            print(f"{label}: {json.dumps(runs[label])}", flush=True)
        with (
            Library.open(Path(tmp) / "now") as fast,
            Library.open(Path(tmp) / "before") as slow,
        ):
            max_diff = float(np.abs(fast.windows - slow.windows).max())
        if args.keep is not None:
            shutil.copytree(Path(tmp) / "now", args.keep, dirs_exist_ok=True)
    doc = {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_1min": round(os.getloadavg()[0], 2),
        },
        "split": args.split,
        "tracks": len(paths),
        "audio_hours": round(audio_s / 3600.0, 3),
        "torch_threads": args.threads,
        "model": encoder.name,
        "runs": runs,
        "speedup": round(runs["before"]["wall_s"] / runs["now"]["wall_s"], 2),
        "max_abs_diff_stored": max_diff,
    }
    text = json.dumps(doc, indent=2) + "\n"
    (ROOT / "bench").mkdir(exist_ok=True)
    target = ROOT / "bench" / f"build-{doc['commit'][:10]}.json"
    target.write_text(text, encoding="utf-8")
    if args.json is not None:
        args.json.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
