"""Train the contrastive encoder on the dev corpus's train split (val for selection).

    python scripts/train_encoder.py --corpus corpus --out runs/encoder-v2 \
        --steps 20000 --time-budget-min 140          # one chunk of a run
    python scripts/train_encoder.py --out runs/encoder-v2 --resume --time-budget-min 140
    python scripts/train_encoder.py --corpus corpus --out runs/encoder-v3 \
        --init runs/encoder-v2/best.pt --lr 1e-3 --steps 9000      # fine-tune another run
    python scripts/train_encoder.py --synthetic --steps 3 --out /tmp/smoke   # CI smoke run

A run is resumable: every evaluation writes RUN/last.pt with the weights, the
optimiser, the step, the random state and the schedule, and --resume carries on
from it (only the time budget is taken from the new command line). Needs the
[train] extra (torch 2.11 + torchaudio 2.11): bash scripts/setup.sh --train
creates .venv-train with it. Then export: python scripts/export_encoder.py RUN_DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synesthete.errors import SynestheteError
from synesthete.inference.mel_augment import AugmentConfig
from synesthete.inference.model import ModelConfig
from synesthete.inference.training import TrainConfig, train


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="dev corpus root (scripts/corpus.sh)")
    source.add_argument("--synthetic", action="store_true", help="generated tracks (smoke runs)")
    source.add_argument("--resume", action="store_true", help="carry on from OUT/last.pt")
    parser.add_argument("--out", type=Path, required=True, help="run directory for checkpoints")
    defaults = TrainConfig(corpus=None, out_dir=Path())
    parser.add_argument("--steps", type=int, default=defaults.steps, help="schedule length")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="pairs per step")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument(
        "--align-weight",
        type=float,
        default=defaults.align_weight,
        help="weight of the positives' mean squared distance added to NT-Xent (0: off)",
    )
    parser.add_argument(
        "--outsiders",
        type=int,
        default=defaults.outsiders,
        help="views of interference alone per step, negatives of every music view",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=defaults.queue,
        help="clean views of earlier steps kept as extra negatives (0: off; e.g. 4096)",
    )
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--eval-per-condition", type=int, default=defaults.eval_per_condition)
    parser.add_argument("--time-budget-min", type=float, default=None, help="stop this chunk after")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--dim", type=int, default=ModelConfig.dim)
    parser.add_argument(
        "--widths", type=_ints, default=ModelConfig.widths, help="e.g. 128,192,256,256"
    )
    parser.add_argument("--strides", type=_ints, default=ModelConfig.strides, help="e.g. 2,2,2,1")
    parser.add_argument(
        "--blocks",
        type=int,
        default=ModelConfig.blocks,
        help="pool each window in this many consecutive stretches, in order (1: whole window;"
        " --init from a whole-window run spreads its head over them)",
    )
    parser.add_argument(
        "--synthetic-mix",
        type=int,
        default=defaults.synthetic_mix,
        help="synthesized tracks added to the corpus's train split (pieces of one synthesizer"
        " as each other's negatives)",
    )
    parser.add_argument("--synthetic-tracks", type=int, default=defaults.synthetic_tracks)
    parser.add_argument("--rooms", type=int, default=defaults.rooms, help="simulated rooms")
    parser.add_argument("--talkers", type=int, default=defaults.talkers, help="espeak talkers")
    parser.add_argument(
        "--same-track-fraction",
        type=float,
        default=AugmentConfig.same_track_fraction,
        help="share of the batch drawn in same-track pairs 2-10 s apart (hard negatives)",
    )
    parser.add_argument(
        "--babble-weight",
        type=int,
        default=AugmentConfig.babble_weight,
        help="lots for babble of talkers among the interference kinds (each other kind has one)",
    )
    parser.add_argument(
        "--grouped-fraction",
        type=float,
        default=AugmentConfig.grouped_fraction,
        help="share of the batch drawn 16 at a time from one package (negatives of one style)",
    )
    parser.add_argument("--room-p", type=float, default=AugmentConfig.room_p)
    parser.add_argument(
        "--reverberant-copies",
        type=int,
        default=defaults.reverberant_copies,
        help="copies of the train split reverberated as waveforms (cached, ~400 MB each)",
    )
    parser.add_argument(
        "--real-room-share",
        type=float,
        default=AugmentConfig.real_room_share,
        help="of the roomed views, the share read from those copies instead of a kernel",
    )
    parser.add_argument(
        "--init", type=Path, default=None, help="start from this run checkpoint's weights"
    )
    args = parser.parse_args(argv)
    budget_s = None if args.time_budget_min is None else args.time_budget_min * 60.0
    try:
        config = TrainConfig(
            corpus=None if args.synthetic or args.resume else args.corpus,
            out_dir=args.out,
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            warmup_steps=(
                args.warmup_steps
                if args.warmup_steps is not None
                else min(defaults.warmup_steps, max(1, args.steps // 10))
            ),
            temperature=args.temperature,
            align_weight=args.align_weight,
            outsiders=args.outsiders,
            queue=args.queue,
            eval_every=args.eval_every,
            eval_per_condition=args.eval_per_condition,
            time_budget_s=budget_s,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            synthetic_tracks=args.synthetic_tracks,
            synthetic_mix=args.synthetic_mix,
            rooms=args.rooms,
            reverberant_copies=args.reverberant_copies,
            talkers=args.talkers,
            augment=AugmentConfig(
                same_track_fraction=args.same_track_fraction,
                babble_weight=args.babble_weight,
                grouped_fraction=args.grouped_fraction,
                room_p=args.room_p,
                real_room_share=args.real_room_share,
            ),
            init=None if args.init is None else str(args.init),
            model=ModelConfig(
                dim=args.dim, widths=args.widths, strides=args.strides, blocks=args.blocks
            ),
        )
    except (SynestheteError, ValueError) as err:
        print(f"train_encoder: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "scripts/train_encoder.py", *(argv or sys.argv[1:])])
    with (args.out / "command.txt").open("a") as handle:
        handle.write(command + "\n")
    try:
        summary = train(config, resume=args.resume)
    except SynestheteError as err:
        print(f"train_encoder: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
