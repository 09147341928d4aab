"""Fit a noise-robust projection of a trained encoder's vectors, in closed form.

    python scripts/fit_projection.py runs/encoder-v3 --checkpoint last.pt \
        --batches 40 --out runs/encoder-v3/projection.npz
    python scripts/export_encoder.py runs/encoder-v3 --checkpoint last.pt \
        --projection runs/encoder-v3/projection.npz --name encoder-v3p

Draws clean/degraded view pairs of the **train** split from the run's own
training augmenter (its cached mel, talkers, rooms and copies; a seed of this
script's own), embeds both through the checkpoint, and fits distortion
discriminant analysis (``synesthete.inference.training.dda_projection``) on the
head's outputs before their normalisation: the directions in which clean windows
differ much from each other and little from their degraded views. The result,
``unit((v - c) W)`` over the unit vectors, is what ``export_encoder.py
--projection`` puts after the network. Seconds of fitting, no training; val and
bench are not read. Needs the [train] extra, like training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from synesthete.errors import SynestheteError
from synesthete.inference import training
from synesthete.inference.mel_augment import power_to_db
from synesthete.inference.model import EncoderNet, ModelConfig, make_frontend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="train_encoder.py --out directory")
    parser.add_argument("--checkpoint", default="last.pt")
    parser.add_argument("--corpus", type=Path, default=None, help="default: the run's own")
    parser.add_argument("--batches", type=int, default=40, help="draws of --batch pairs")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--shrinkage", type=float, default=1e-3)
    parser.add_argument(
        "--interference",
        type=float,
        default=0.0,
        help="pure interference windows (talkers, babble, noise; the augmenter's own) added"
        " to the clean side, as a share of the pairs: what must stay apart from music",
    )
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/projection.npz")
    args = parser.parse_args(argv)
    path = args.run / args.checkpoint
    out = args.out or args.run / "projection.npz"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        print(f"fit_projection: cannot read {path}: {err}", file=sys.stderr)
        return 2
    if args.batches < 1 or args.batch < 2:
        print("fit_projection: --batches must be >= 1 and --batch >= 2", file=sys.stderr)
        return 2
    try:
        config = training.TrainConfig.from_dict(checkpoint["train_config"])
        config = replace(
            config,
            seed=args.seed,
            corpus=args.corpus if args.corpus is not None else config.corpus,
        )
        started = time.perf_counter()
        if config.corpus is None:
            tracks = training.synthetic_split(config.synthetic_tracks, seed=config.seed)
        else:
            tracks = training.load_split(config.corpus, "train")
        augmenter = training.build_augmenter(config, tracks, log=print)
        model = EncoderNet(
            ModelConfig.from_dict(checkpoint["model_config"]), make_frontend(config.model)
        )
        model.load_state_dict(checkpoint["model"])
        model.eval()
        rng = np.random.default_rng(args.seed)
        clean: list[np.ndarray] = []
        degraded: list[np.ndarray] = []
        with torch.inference_mode():
            for _ in range(args.batches):
                batch = augmenter.draw(rng, args.batch)
                for db, into in ((batch.index_db, clean), (batch.query_db, degraded)):
                    into.append(model.head_outputs(model.features_from_db(db)).numpy())
            others: list[np.ndarray] = []
            n_other = round(args.interference * args.batches * args.batch)
            frames = config.model.frames
            for lo in range(0, n_other, args.batch):
                n = min(args.batch, n_other - lo)
                half = n // 2
                # Single talkers (a voice on the radio) and the training's mixed interference.
                power = torch.cat(
                    [
                        augmenter.speech.crops(rng, half, frames)
                        if augmenter.speech is not None
                        else augmenter.interference(rng, half, frames),
                        augmenter.interference(rng, n - half, frames),
                    ]
                )
                others.append(
                    model.head_outputs(model.features_from_db(power_to_db(power))).numpy()
                )
        centre, matrix, ratios = training.dda_projection(
            np.concatenate(clean),
            np.concatenate(degraded),
            shrinkage=args.shrinkage,
            apart=np.concatenate(others) if others else None,
        )
    except SynestheteError as err:
        print(f"fit_projection: {err}", file=sys.stderr)
        return 2
    meta = {
        "checkpoint": str(path),
        "step": int(checkpoint["step"]),
        "pairs": args.batches * args.batch,
        "shrinkage": args.shrinkage,
        "seed": args.seed,
        "interference": args.interference,
        "command": " ".join(["python scripts/fit_projection.py", *(argv or sys.argv[1:])]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        center=centre.astype(np.float32),
        matrix=matrix.astype(np.float32),
        ratios=ratios,
        meta=json.dumps(meta),
    )
    print(
        f"fit_projection: {meta['pairs']} pairs in {time.perf_counter() - started:.0f} s;"
        f" signal/noise ratios {ratios[0]:.2f} .. {ratios[-1]:.3f}; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
