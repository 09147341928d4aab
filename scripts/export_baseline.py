"""Write the untrained baseline encoder to inference/models/baseline-v1.pt.

Reproduce: python scripts/export_baseline.py [--out PATH]
The file is deterministic given the code (seeded projection, no training).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synesthete.inference.baseline import BASELINE_NAME, BASELINE_SEED, BaselineEncoder
from synesthete.inference.config import default_model_path
from synesthete.inference.torchscript import save_scripted

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_FILE = ROOT / "inference" / "models" / "baseline-v1.calibration.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=default_model_path())
    args = parser.parse_args(argv)
    calibration = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.exists() else None
    module = BaselineEncoder()
    metadata = {
        "name": BASELINE_NAME,
        "kind": "baseline",
        "dim": module.dim,
        "seed": BASELINE_SEED,
        "training_commit": None,
        "corpus_split_hash": None,
        "calibration": calibration,
    }
    save_scripted(module, args.out, metadata=metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
