"""Regenerate tests/golden/<model>.npz: the packaged model's outputs on fixed inputs.

Run only when a model file changes on purpose: python scripts/make_golden.py [--model PT]
(default: the packaged default model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from synesthete.inference.config import EncoderConfig
from synesthete.inference.torchscript import TorchScriptEncoder

ROOT = Path(__file__).resolve().parents[1]


def golden_inputs() -> np.ndarray:
    """[4, 64000] float32: a chord, a chirp, seeded noise, and quiet noise + click."""
    sr = 16_000
    t = np.arange(64_000, dtype=np.float64) / sr
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63))
    chirp = 0.3 * np.sin(2 * np.pi * (100.0 * t + 400.0 * t**2))
    noise = 0.1 * np.random.default_rng(1).standard_normal(t.shape)
    quiet = 0.001 * np.random.default_rng(2).standard_normal(t.shape)
    quiet[32_000] = 0.9
    return np.stack([chord, chirp, noise, quiet]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args(argv)
    encoder = TorchScriptEncoder(config=EncoderConfig(model_path=args.model, device="cpu"))
    out = ROOT / "tests" / "golden" / f"{encoder.name}.npz"
    np.savez(out, vectors=encoder.embed(golden_inputs()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
