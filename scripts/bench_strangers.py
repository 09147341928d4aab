"""Unknown synthesized pieces against a library of one synthesizer (the demo's kind).

    python scripts/bench_strangers.py [--model PT] [--strangers 20] [--known 20]

A library whose tracks all come from one source (one synthesizer here; one
genre, one soundfont, one game's soundtrack for a user) is where unknown music
most easily passes for a known track. This builds the demo's library
(``clients/demo.py``: 24 pieces from ``stream/synth.py``, seeds 0-23) into an
index with ``--model``, then plays through the real recognizer, as ``identify``
does:

- ``--strangers`` unknown pieces of the same synthesizer (seeds 10 000 on; the
  demo's closing piece is seed 10 000), 16 s each: each one that gets any
  track named is a false positive;
- ``--known`` clean 16 s excerpts of library pieces at seeded offsets: each
  one whose first answer is its own track is a hit (a model that never
  answers would otherwise look perfect).

Training never sees these seeds (``--synthetic-mix`` draws from 100 000).
Prints the figures and writes ``bench/strangers-<commit>-<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_commit

from synesthete.clients.app import open_engine
from synesthete.clients.demo import DEMO_RATE_HZ, prepare_demo
from synesthete.errors import SynestheteError
from synesthete.index.builder import build_index
from synesthete.index.config import IndexConfig
from synesthete.index.decode import load_mono
from synesthete.inference.config import EncoderConfig
from synesthete.inference.torchscript import TorchScriptEncoder
from synesthete.stream.synth import synth_track

ROOT = Path(__file__).resolve().parents[1]
STRANGER_SEED = 10_000
PIECE_S = 16.0
KNOWN_SEED = 3


def play(engine: Any, audio: np.ndarray) -> list[int]:
    """Track ids of every ``now_playing`` event for ``audio`` (DEMO_RATE_HZ mono)."""
    rec = engine.recognizer(stream="strangers", input_rate_hz=DEMO_RATE_HZ)
    named: list[int] = []
    block = DEMO_RATE_HZ // 2
    for start in range(0, audio.shape[0], block):
        for event in rec.push(audio[start : start + block].astype(np.float32)):
            if event.type == "now_playing":
                named.append(int(event.track.id))
    return named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="encoder file (default: packaged)")
    parser.add_argument("--strangers", type=int, default=20, help="unknown pieces")
    parser.add_argument("--known", type=int, default=20, help="excerpts of library pieces")
    parser.add_argument(
        "--demo-dir", type=Path, default=ROOT / "demo-data", help="where the demo library lives"
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    try:
        encoder_config = EncoderConfig(model_path=args.model)
        encoder = TorchScriptEncoder(config=encoder_config)
        files = prepare_demo(args.demo_dir, quiet=True)
        tracks = sorted(files.library.glob("*.flac"))
        with tempfile.TemporaryDirectory(prefix="synesthete-strangers-") as work:
            index = Path(work) / "index"
            build_index(index, [files.library], encoder=encoder, config=IndexConfig())
            engine = open_engine(index_dir=index, encoder_config=encoder_config)
            by_path = {Path(info.path).name: info.id for info in engine.library.tracks()}
            strangers: list[dict[str, Any]] = []
            for seed in range(STRANGER_SEED, STRANGER_SEED + args.strangers):
                audio = synth_track(seed=seed, duration_s=PIECE_S, sample_rate_hz=DEMO_RATE_HZ)
                strangers.append({"seed": seed, "named": play(engine, audio)})
            rng = np.random.default_rng(KNOWN_SEED)
            known: list[dict[str, Any]] = []
            for _ in range(args.known):
                path = tracks[int(rng.integers(len(tracks)))]
                audio = load_mono(path, sample_rate_hz=DEMO_RATE_HZ)  # the rate play() feeds
                length = int(PIECE_S * DEMO_RATE_HZ)
                start = int(rng.integers(0, max(1, audio.shape[0] - length)))
                named = play(engine, audio[start : start + length])
                truth = by_path[path.name]
                known.append({"track": path.name, "start_s": start / DEMO_RATE_HZ, "named": named,
                              "right": bool(named) and named[0] == truth})  # fmt: skip
            engine.close()
    except SynestheteError as err:
        print(f"bench_strangers: {err}", file=sys.stderr)
        return 2
    fired = sum(bool(s["named"]) for s in strangers)
    right = sum(k["right"] for k in known)
    commit, dirty = git_commit()
    result = {
        "commit": commit,
        "dirty": dirty,
        "model": encoder.name,
        "library_tracks": len(tracks),
        "strangers": len(strangers),
        "strangers_named": fired,
        "known": len(known),
        "known_right": right,
        "runtime_s": round(time.perf_counter() - began, 1),
        "stranger_details": strangers,
        "known_details": known,
    }
    out = ROOT / "bench" / f"strangers-{commit[:10]}-{encoder.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"bench_strangers: {encoder.name}: {fired} of {len(strangers)} unknown synthesized pieces"
        f" named; {right} of {len(known)} library excerpts named right first"
        f" ({len(tracks)} tracks, {result['runtime_s']:.0f} s); wrote {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
