"""Train the contrastive encoder on the dev corpus's train split (val for selection).

    python scripts/train_encoder.py --corpus corpus --out runs/encoder-v1 [--steps 3000]
        [--batch 64] [--device cpu|cuda] [--time-budget-min 120] [--seed 20261122]
    python scripts/train_encoder.py --synthetic --steps 3 --out /tmp/smoke   # CI smoke run

Needs the [train] extra (torch 2.11 + torchaudio 2.11): bash scripts/setup.sh --train
creates .venv-train with it. Then export: python scripts/export_encoder.py RUN_DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synesthete.errors import SynestheteError
from synesthete.inference.model import ModelConfig
from synesthete.inference.training import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="dev corpus root (scripts/corpus.sh)")
    source.add_argument("--synthetic", action="store_true", help="generated tracks (smoke runs)")
    parser.add_argument("--out", type=Path, required=True, help="run directory for checkpoints")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-per-condition", type=int, default=16)
    parser.add_argument("--patience", type=int, default=8, help="evaluations without gain")
    parser.add_argument("--time-budget-min", type=float, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--dim", type=int, default=ModelConfig.dim)
    parser.add_argument("--width", type=int, default=ModelConfig.width)
    parser.add_argument("--synthetic-tracks", type=int, default=16)
    parser.add_argument("--rirs", type=int, default=48, help="simulated rooms in the bank")
    parser.add_argument(
        "--same-track-fraction",
        type=float,
        default=0.5,
        help="share of the batch drawn in same-track pairs 1-8 s apart (hard negatives)",
    )
    parser.add_argument("--init", type=Path, default=None, help="checkpoint to start from")
    args = parser.parse_args(argv)
    config = TrainConfig(
        corpus=None if args.synthetic else args.corpus,
        out_dir=args.out,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        temperature=args.temperature,
        eval_every=args.eval_every,
        eval_per_condition=args.eval_per_condition,
        patience_evals=args.patience,
        time_budget_s=None if args.time_budget_min is None else args.time_budget_min * 60.0,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        synthetic_tracks=args.synthetic_tracks,
        rirs=args.rirs,
        same_track_fraction=args.same_track_fraction,
        init=args.init,
        warmup_steps=min(100, max(1, args.steps // 10)),
        model=ModelConfig(dim=args.dim, width=args.width),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "scripts/train_encoder.py", *(argv or sys.argv[1:])])
    (args.out / "command.txt").write_text(command + "\n")
    try:
        summary = train(config)
    except SynestheteError as err:
        print(f"train_encoder: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
