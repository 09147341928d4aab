"""Fit the matcher's confidence calibration for an encoder, on the corpus's VAL split.

    python scripts/calibrate.py [--corpus DIR] [--model PT] [--out JSON]

Known audio: excerpts of val-split tracks under a spread of degradations,
against an index of the val split. Unknown audio: excerpts of train-split
tracks (not indexed), speech and noise. Every live window contributes the
best candidate's features (Fréchet distance, margin to the runner-up,
windows seen) with label 1 when it is the true track and 0 otherwise; a
logistic regression (Newton's method, small L2) gives the weights. The
bench split is never read. Writes the calibration JSON (default: next to the
packaged model, which ``scripts/export_baseline.py`` embeds) and a report
under ``bench/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from provenance import git_commit

from synesthete.clients.app import open_engine
from synesthete.index.builder import build_index
from synesthete.index.config import Calibration, IndexConfig
from synesthete.index.decode import load_mono
from synesthete.inference.augment import CONDITIONS, Materials, source_seconds_needed
from synesthete.inference.config import EncoderConfig
from synesthete.inference.torchscript import TorchScriptEncoder
from synesthete.stream.synth import pink_noise

ROOT = Path(__file__).resolve().parents[1]
RATE_HZ = 22_050
QUERY_S = 12.0
SEED = 7_2026
CONDITION_MIX = (
    "clean",
    "clean",
    "pink5",
    "babble0",
    "room",
    "speed+6",
    "speed-6",
    "tempo+6",
    "pitch+1",
    "codec64",
)


def read_mono(path: str, start_s: float, seconds: float) -> np.ndarray:
    return load_mono(path, sample_rate_hz=RATE_HZ, start_s=start_s, duration_s=seconds)


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Weights w of p = sigmoid(x @ w) by Newton's method; ``x`` includes a bias column."""
    w = np.zeros(x.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=300, help="known queries")
    parser.add_argument("--negatives", type=int, default=150, help="unknown queries")
    parser.add_argument(
        "--max-fp",
        type=float,
        default=0.04,
        help="largest share of unknown queries allowed to fire at the operating point",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    manifest = [
        json.loads(x)
        for x in (args.corpus / "manifest.jsonl").read_text().splitlines()
        if x.strip()
    ]
    val = [e for e in manifest if e["split"] == "val" and e["duration_s"] >= 20]
    train = [e for e in manifest if e["split"] == "train" and e["duration_s"] >= 20]
    if not val or not train:
        sys.exit("calibrate: the corpus needs val and train tracks")
    encoder = TorchScriptEncoder(config=EncoderConfig(model_path=args.model))
    work = Path(tempfile.mkdtemp(prefix="synesthete-calib-"))
    build_index(
        work / "index", [Path(e["path"]) for e in val], encoder=encoder, config=IndexConfig()
    )
    engine = open_engine(
        index_dir=work / "index", encoder_config=EncoderConfig(model_path=args.model)
    )
    path_to_id = {info.path: info.id for info in engine.library.tracks()}
    speech = [
        soxr.resample(
            sf.read(p, dtype="float32", always_2d=True)[0].mean(axis=1),
            sf.info(p).samplerate,
            RATE_HZ,
        ).astype(np.float32)
        for p in sorted((args.corpus / "speech").glob("*.wav"))[:30]
    ]
    materials = Materials(sample_rate_hz=RATE_HZ, speech=tuple(speech))
    rng = np.random.default_rng(SEED)
    rows: list[tuple[float, float, float, int, int]] = []  # frechet, margin, frac, label, query

    def run(audio: np.ndarray, truth_id: int | None, query: int) -> None:
        recognizer = engine.recognizer(stream="calibration", input_rate_hz=RATE_HZ)
        horizon = recognizer.matcher.config.horizon_windows
        for start in range(0, audio.shape[0], RATE_HZ // 2):
            events = recognizer.push(audio[start : start + RATE_HZ // 2])
            if not any(e.type == "candidates" for e in events):
                continue  # no new window in this block (0.5 s blocks: at most one)
            feats = [f for f in recognizer.matcher.features() if np.isfinite(f.frechet)]
            if not feats:
                continue
            best = min(feats, key=lambda f: (f.frechet, f.track_id))
            label = int(truth_id is not None and best.track_id == truth_id)
            frac = min(best.n_windows, horizon) / horizon
            rows.append((best.frechet, float(np.clip(best.margin, -0.3, 0.3)), frac, label, query))

    query = 0
    for n in range(args.queries):
        entry = val[int(rng.integers(len(val)))]
        name = CONDITION_MIX[n % len(CONDITION_MIX)]
        need = source_seconds_needed(name, QUERY_S)
        if entry["duration_s"] < need + 1:
            continue
        start = float(rng.uniform(0, entry["duration_s"] - need - 0.5))
        audio = read_mono(entry["path"], start, need)
        if float(np.sqrt(np.mean(audio**2))) < 1e-3:
            continue
        audio = CONDITIONS[name](audio, sample_rate_hz=RATE_HZ, rng=rng, materials=materials)
        run(audio[: int(QUERY_S * RATE_HZ)], path_to_id.get(entry["path"]), query)
        query += 1
    known_queries = query
    for n in range(args.negatives):
        if n % 3 == 2:
            audio = 0.3 * pink_noise(seconds=QUERY_S, sample_rate_hz=RATE_HZ, seed=n)
        elif n % 3 == 1 and speech:
            audio = np.concatenate([speech[int(k)] for k in rng.integers(len(speech), size=4)])
            audio = 0.5 * audio[: int(QUERY_S * RATE_HZ)] / max(1e-6, float(np.abs(audio).max()))
        else:
            entry = train[int(rng.integers(len(train)))]
            start = float(rng.uniform(0, entry["duration_s"] - QUERY_S - 0.5))
            audio = read_mono(entry["path"], start, QUERY_S)
            if n % 2:
                audio = CONDITIONS["pink5"](audio, sample_rate_hz=RATE_HZ, rng=rng)
        run(audio.astype(np.float32), None, query)
        query += 1

    shutil.rmtree(work, ignore_errors=True)
    data = np.array(rows)
    x = np.column_stack([np.ones(len(data)), data[:, 0], data[:, 1], data[:, 2]])
    y = data[:, 3]
    w = fit_logistic(x, y)
    calibration = Calibration(
        bias=float(w[0]),
        w_frechet=float(min(w[1], -1e-3)),
        w_margin=float(max(w[2], 0.0)),
        w_windows=float(w[3]),
        margin_cap=0.3,
    )
    probs = 1.0 / (
        1.0
        + np.exp(
            -(
                x
                @ np.array(
                    [
                        calibration.bias,
                        calibration.w_frechet,
                        calibration.w_margin,
                        calibration.w_windows,
                    ]
                )
            )
        )
    )
    queries = data[:, 4].astype(int)
    negative_queries = queries >= known_queries
    fitted = calibration.to_dict()
    report: dict[str, Any] = {
        "windows": len(data),
        "known_queries": known_queries,
        "unknown_queries": query - known_queries,
        "calibration": calibration.to_dict(),
        "thresholds": {},
    }
    operating: float | None = None
    for threshold in np.round(np.arange(0.5, 0.96, 0.05), 2):
        fires = probs >= threshold
        fp_queries = len(set(queries[fires & negative_queries]))
        wrong = len(set(queries[fires & (y == 0) & ~negative_queries]))
        fp_rate = fp_queries / max(1, query - known_queries)
        if operating is None and fp_rate <= args.max_fp:
            operating = float(threshold)
        report["thresholds"][str(threshold)] = {
            "window_precision": round(float(y[fires].mean()), 4) if fires.any() else None,
            "window_recall": round(float(fires[y == 1].mean()), 4),
            "negative_queries_fp_rate": round(fp_queries / max(1, query - known_queries), 4),
            "known_queries_with_wrong_window": round(wrong / max(1, known_queries), 4),
        }
    # The contract is a threshold that separates known from unknown audio: move
    # the chosen operating point to 0.5, where the matcher decides.
    operating = operating if operating is not None else 0.95
    shift = float(np.log(operating / (1.0 - operating)))
    calibration = Calibration(
        bias=calibration.bias - shift,
        w_frechet=calibration.w_frechet,
        w_margin=calibration.w_margin,
        w_windows=calibration.w_windows,
        margin_cap=calibration.margin_cap,
    )
    report["fitted_probability_model"] = fitted
    report["operating_threshold"] = operating
    report["max_fp"] = args.max_fp
    report["calibration"] = calibration.to_dict()
    report["runtime_s"] = round(time.perf_counter() - began, 1)
    commit, _ = git_commit()
    report["commit"] = commit
    report["model"] = encoder.name
    out = args.out or ROOT / "inference" / "models" / f"{encoder.name}.calibration.json"
    out.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / f"calibration-{encoder.name}.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )
    print(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
