"""Export a trained encoder (a train_encoder.py run) as the TorchScript file the runtime loads.

    python scripts/export_encoder.py RUN_DIR [--name encoder-v1] [--out PATH] [--checkpoint best.pt]
                                    [--projection RUN_DIR/projection.npz]

Writes inference/models/<name>.pt by default: the scripted EncoderNet with
torchaudio's mel front end traced into plain torch ops (the file loads in a
torch without torchaudio), and its metadata (sample rate, window, dim, model
shape, training command/step/val scores, the commit it was exported at, the
corpus split hash, and the calibration in inference/models/<name>.calibration.json
when scripts/calibrate.py has written one). ``--projection`` puts a map fitted by
scripts/fit_projection.py after the network (recorded in the metadata). Needs the
[train] extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from provenance import git_commit

from synesthete.inference.config import EncoderConfig
from synesthete.inference.model import EncoderNet, ModelConfig, Projection, make_frontend
from synesthete.inference.torchscript import TorchScriptEncoder, save_scripted

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "inference" / "models"


def _split_hash(train_config: dict[str, Any]) -> str | None:
    corpus = train_config.get("corpus")
    if corpus is None:
        return "synthetic"
    summary = Path(corpus) / "manifest-summary.json"
    if not summary.is_file():
        summary = ROOT / corpus / "manifest-summary.json"
    if not summary.is_file():
        return None
    doc = json.loads(summary.read_text())
    value = doc.get("split_sha256")
    return str(value) if value is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="train_encoder.py --out directory")
    parser.add_argument("--name", default="encoder-v1")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--checkpoint", default="best.pt")
    parser.add_argument(
        "--projection", type=Path, default=None, help="scripts/fit_projection.py output"
    )
    parser.add_argument(
        "--half-parameters",
        action="store_true",
        help="store the weights as float16 (half the file; computed in float32 after loading)",
    )
    args = parser.parse_args(argv)
    checkpoint_path = args.run / args.checkpoint
    if not checkpoint_path.is_file():
        print(f"export_encoder: {checkpoint_path} not found", file=sys.stderr)
        return 2
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    config = ModelConfig.from_dict(checkpoint["model_config"])
    model = EncoderNet(config, make_frontend(config))
    model.load_state_dict(checkpoint["model"])
    projection = None
    if args.projection is not None:
        try:
            with np.load(args.projection) as fitted:
                model.post = Projection(
                    torch.from_numpy(fitted["center"]), torch.from_numpy(fitted["matrix"])
                )
                projection = json.loads(str(fitted["meta"]))
        except (OSError, KeyError, ValueError) as err:
            print(
                f"export_encoder: cannot use the projection {args.projection}: {err}",
                file=sys.stderr,
            )
            return 2
    model.eval()
    out = args.out if args.out is not None else MODELS / f"{args.name}.pt"
    # Beside the output, else where scripts/calibrate.py writes it by default: a file
    # exported to /tmp for a trial must not lose the calibration without a word.
    calibration_file = out.with_name(f"{args.name}.calibration.json")
    if not calibration_file.is_file():
        calibration_file = MODELS / f"{args.name}.calibration.json"
    calibration = json.loads(calibration_file.read_text()) if calibration_file.is_file() else None
    if calibration is None:
        print(
            f"export_encoder: no {args.name}.calibration.json: the file gets the matcher's"
            " default calibration; run scripts/calibrate.py and export again",
            file=sys.stderr,
        )
    command_file = args.run / "command.txt"
    train_config = checkpoint["train_config"]
    metadata = {
        "name": args.name,
        "kind": "trained",
        "dim": config.dim,
        "model": config.to_dict(),
        "training_commit": git_commit()[0],
        "corpus_split_hash": _split_hash(train_config),
        "training": {
            "command": command_file.read_text().strip() if command_file.is_file() else None,
            "step": checkpoint["step"],
            "train_s": round(float(checkpoint["elapsed_s"]), 1),
            "val": checkpoint["val"],
            "seed": train_config["seed"],
            "torch": torch.__version__,
        },
        "calibration": calibration,
        "projection": projection,
    }
    scripted = save_scripted(model, out, metadata=metadata, half_parameters=args.half_parameters)
    probe = torch.randn(3, 64_000, generator=torch.Generator().manual_seed(0)) * 0.1
    # float16 weights move a unit vector by about 0.002 (encoder-v10p); float32 by nothing.
    atol = 1e-2 if args.half_parameters else 1e-5
    with torch.inference_mode():
        eager = model(probe)
        loaded = TorchScriptEncoder(config=EncoderConfig(model_path=out, device="cpu"))
        again = torch.from_numpy(loaded.embed(probe.numpy()))
    if not torch.allclose(eager, again, atol=atol) or not torch.allclose(
        scripted(probe), again, atol=1e-4
    ):
        print("export_encoder: the scripted model disagrees with the trained one", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB), step {checkpoint['step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
