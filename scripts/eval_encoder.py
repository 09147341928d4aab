"""Window-level retrieval on the val split: any encoder file, the same queries as training's val.

    python scripts/eval_encoder.py [MODEL.pt ...] [--corpus corpus] [--per-condition 40]
        [--json OUT]

Builds training's validation set (``inference.training.build_valset``, same
seed: 40 queries per benchmark condition, the benchmark's degradations with
its speech and ambience, against every val window at the 0.5 s index hop)
and scores each model file on it: per condition, the share of queries whose
nearest window is the right track (``track``), and also within 1 s (``hit1``)
or 0.5 s (``hit05``) of the true position. No model: the packaged default.
Runs in the runtime venv (the files hold their front end).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from provenance import git_commit

from synesthete.errors import SynestheteError
from synesthete.inference.config import default_model_path
from synesthete.inference.training import build_valset, evaluate, load_split, val_materials

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, nargs="*", help="TorchScript encoder files")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--per-condition", type=int, default=40)
    parser.add_argument("--seed", type=int, default=20261122 + 1, help="training's val seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the scores here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = args.models or [default_model_path()]
    try:
        tracks = load_split(args.corpus, "val")
        valset = build_valset(
            tracks,
            per_condition=args.per_condition,
            seed=args.seed,
            materials=val_materials(args.corpus),
        )
        results = {}
        for path in models:
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            started = time.perf_counter()
            results[str(path)] = evaluate(module.eval(), valset, torch.device("cpu"))
            print(f"{path}: scored in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    except (SynestheteError, OSError, RuntimeError) as err:
        print(f"eval_encoder: {err}", file=sys.stderr)
        return 2
    conditions = [k for k, v in next(iter(results.values())).items() if isinstance(v, dict)]
    names = [Path(p).stem for p in results]
    print("| condition | " + " | ".join(f"{n} track / hit1 / hit05" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for condition in conditions:
        cells = [
            " / ".join(f"{r[condition][k]:.2f}" for k in ("track", "hit1", "hit05"))
            for r in results.values()
        ]
        print(f"| {condition} | " + " | ".join(cells) + " |")
    means = [f"{r['mean_track']:.3f} / {r['mean']:.3f}" for r in results.values()]
    print("| mean (track / hit1) | " + " | ".join(means) + " |")
    if args.json is not None:
        doc = {"commit": git_commit()[0], "queries": len(valset.queries), "results": results}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
