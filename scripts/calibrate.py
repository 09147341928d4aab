"""Fit the matcher's confidence calibration for an encoder, on the corpus's VAL split.

    python scripts/calibrate.py [--corpus DIR] [--model PT] [--out JSON] [--max-frechet D]
    python scripts/calibrate.py --from-dump ROWS.npz --model PT ...   # refit, no replay

Known audio: excerpts of val-split tracks under a spread of degradations,
against an index of the val split less a seeded ``--holdout`` share of its
tracks. Unknown audio: excerpts of those held-out val tracks (music from the
same packages as the library: the hardest unknown music, and what a user's
"not in my library" mostly is) and of train-split tracks, heard as the known
ones are (clean, noisy, through chatter, in a room, through a codec), speech
and noise. The hold-out uses its own seed, not ``scripts/bench.py``'s, so
the val benchmark's negatives are mostly other tracks. Every live window
contributes the best candidate's features (Fréchet distance, margin to the
runner-up, windows seen) with label 1 when it is the true track and 0
otherwise.

The gated form (the default) fits two logistic regressions (Newton's method,
small L2): how well the audio fits (distance, windows; true windows against
unknown audio) times how clearly it beats the runner-up (margin; on known
audio). Then the operating point is the lowest threshold at which at most
``--max-fp`` of the unknown queries fire within the ``--max-frechet`` guard,
and ``shift`` moves it to 0.5, where the matcher decides. ``--form distance``
fits the distance alone (encoder-v3 ships it: its margins separated known from
unknown audio worse than its distances, see ``scripts/decision_lab.py``), and
``--first-max-frechet`` puts the guard of the stream's first window into the
choice of the operating point and into the JSON. The bench split is
never read. Writes the calibration JSON (default: next to the model;
``scripts/export_baseline.py`` embeds the baseline's) and a report under
``bench/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from provenance import git_commit

from synesthete.clients.app import open_engine
from synesthete.index.builder import build_index
from synesthete.index.config import Calibration, IndexConfig, MatcherConfig
from synesthete.index.decode import load_mono
from synesthete.inference.augment import CONDITIONS, Materials, source_seconds_needed
from synesthete.inference.config import EncoderConfig
from synesthete.inference.torchscript import TorchScriptEncoder
from synesthete.stream.synth import pink_noise

ROOT = Path(__file__).resolve().parents[1]
RATE_HZ = 22_050
QUERY_S = 12.0
SEED = 7_2026
HOLDOUT_SEED = 5_2027
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
NEGATIVE_MIX = ("clean", "pink5", "babble0", "room", "codec64")


def read_mono(path: str, start_s: float, seconds: float) -> np.ndarray:
    return load_mono(path, sample_rate_hz=RATE_HZ, start_s=start_s, duration_s=seconds)


def degraded_excerpt(
    entry: dict[str, Any], condition: str, rng: np.random.Generator, materials: Materials
) -> np.ndarray | None:
    """A random ``QUERY_S`` query from a manifest track under ``condition``; None when the
    track is too short for it or the excerpt is silent."""
    need = source_seconds_needed(condition, QUERY_S)
    if entry["duration_s"] < need + 1:
        return None
    start = float(rng.uniform(0, entry["duration_s"] - need - 0.5))
    audio = read_mono(entry["path"], start, need)
    if float(np.sqrt(np.mean(audio**2))) < 1e-3:
        return None
    audio = CONDITIONS[condition](audio, sample_rate_hz=RATE_HZ, rng=rng, materials=materials)
    return audio[: int(QUERY_S * RATE_HZ)]


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
    parser.add_argument("--dump", type=Path, default=None, help="save the feature rows (.npz)")
    parser.add_argument("--from-dump", type=Path, default=None, help="refit saved rows")
    parser.add_argument("--queries", type=int, default=300, help="known queries")
    parser.add_argument("--negatives", type=int, default=350, help="unknown queries")
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.15,
        help="share of val tracks left out of the index as unknown music (0: train music only)",
    )
    parser.add_argument(
        "--max-fp",
        type=float,
        default=0.005,
        help="largest share of unknown queries allowed to fire at the operating point"
        " (half the 1 %% target: the threshold sits where that rate climbs steeply)",
    )
    parser.add_argument(
        "--max-frechet",
        type=float,
        default=None,
        help="the model's guard distance (written to the JSON; default: the matcher's)",
    )
    parser.add_argument(
        "--path-max-distance",
        type=float,
        default=None,
        help="the model's position-path distance (written to the JSON; measure it with"
        " scripts/decision_lab.py)",
    )
    parser.add_argument("--form", choices=("gated", "additive", "distance"), default="gated")
    parser.add_argument(
        "--first-max-frechet",
        type=float,
        default=None,
        help="the model's guard on the stream's first window (written to the JSON, and"
        " applied when the operating point is chosen)",
    )
    parser.add_argument(
        "--distance-scale",
        type=float,
        default=None,
        help="the model's distances over encoder-v3's (written to the JSON; scales the"
        " matcher's version tie and position jump margins)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="use this operating threshold instead of the --max-fp one (reported either way)",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    encoder = TorchScriptEncoder(config=EncoderConfig(model_path=args.model))
    if args.from_dump is not None:
        saved = np.load(args.from_dump)
        data, kinds, known_queries = saved["data"], saved["kinds"], int(saved["known_queries"])
    else:
        data, kinds, known_queries = collect(args, encoder)
        if args.dump is not None:
            np.savez(args.dump, data=data, kinds=kinds, known_queries=known_queries)
    guard = args.max_frechet if args.max_frechet is not None else MatcherConfig().max_frechet
    calibration, report = fit(
        data,
        kinds,
        known_queries,
        form=args.form,
        max_frechet=guard,
        first_max_frechet=args.first_max_frechet,
        max_fp=args.max_fp,
        threshold=args.threshold,
    )
    report["runtime_s"] = round(time.perf_counter() - began, 1)
    if args.from_dump is not None:
        report["rows_from"] = str(args.from_dump)
    commit, _ = git_commit()
    report["commit"] = commit
    report["model"] = encoder.name
    out = args.out or ROOT / "inference" / "models" / f"{encoder.name}.calibration.json"
    written: dict[str, float] = calibration.to_dict()
    if args.max_frechet is not None:
        written["max_frechet"] = args.max_frechet
    if args.first_max_frechet is not None:
        written["first_max_frechet"] = args.first_max_frechet
    if args.path_max_distance is not None:
        written["path_max_distance"] = args.path_max_distance
    if args.distance_scale is not None:
        written["distance_scale"] = args.distance_scale
    out.write_text(json.dumps(written, indent=2) + "\n")
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / f"calibration-{encoder.name}.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )
    print(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


def collect(
    args: argparse.Namespace, encoder: TorchScriptEncoder
) -> tuple[np.ndarray, np.ndarray, int]:
    """Replay known and unknown queries; rows of (frechet, margin, window fraction,
    min_p2p, |log tempo|, label, query), each row's kind, and the number of known queries."""
    manifest = [
        json.loads(x)
        for x in (args.corpus / "manifest.jsonl").read_text().splitlines()
        if x.strip()
    ]
    val = [e for e in manifest if e["split"] == "val" and e["duration_s"] >= 20]
    train = [e for e in manifest if e["split"] == "train" and e["duration_s"] >= 20]
    if not val or not train:
        sys.exit("calibrate: the corpus needs val and train tracks")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(val))
    n_out = round(args.holdout * len(val))
    held_out = [val[int(i)] for i in sorted(order[:n_out])]
    val = [val[int(i)] for i in sorted(order[n_out:])]
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
    rows: list[tuple[float, ...]] = []
    kinds: list[str] = []

    def run(audio: np.ndarray, truth_id: int | None, query: int, kind: str) -> None:
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
            rows.append(
                (
                    best.frechet,
                    float(np.clip(best.margin, -0.3, 0.3)),
                    frac,
                    best.min_p2p,
                    abs(float(np.log(max(best.tempo_ratio, 1e-3)))),
                    label,
                    query,
                )
            )
            kinds.append(kind)

    query = 0
    for n in range(args.queries):
        entry = val[int(rng.integers(len(val)))]
        name = CONDITION_MIX[n % len(CONDITION_MIX)]
        excerpt = degraded_excerpt(entry, name, rng, materials)
        if excerpt is None:
            continue
        run(excerpt, path_to_id.get(entry["path"]), query, name)
        query += 1
    known_queries = query
    for n in range(args.negatives):
        # Most unknown audio a user meets is music that is not in the library,
        # heard as the library's music is: clean, through a phone, in a room.
        if n % 7 == 5:
            audio = 0.3 * pink_noise(seconds=QUERY_S, sample_rate_hz=RATE_HZ, seed=n)
            kind = "negative:noise"
        elif n % 7 == 6 and speech:
            audio = np.concatenate([speech[int(k)] for k in rng.integers(len(speech), size=4)])
            audio = 0.5 * audio[: int(QUERY_S * RATE_HZ)] / max(1e-6, float(np.abs(audio).max()))
            kind = "negative:speech"
        else:
            name = NEGATIVE_MIX[n % len(NEGATIVE_MIX)]
            # Alternately music of the library's own packages and of other packages.
            same = bool(held_out) and (n // 7) % 2 == 0
            pool = held_out if same else train
            entry = pool[int(rng.integers(len(pool)))]
            excerpt = degraded_excerpt(entry, name, rng, materials)
            if excerpt is None:
                continue
            audio = excerpt
            kind = f"negative:{'held-out' if same else 'music'}-{name}"
        run(audio.astype(np.float32), None, query, kind)
        query += 1
    shutil.rmtree(work, ignore_errors=True)
    return np.array(rows), np.array(kinds), known_queries


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0))))


def fit(
    data: np.ndarray,
    kinds: np.ndarray,
    known_queries: int,
    *,
    form: str,
    max_frechet: float,
    first_max_frechet: float | None = None,
    max_fp: float,
    threshold: float | None = None,
) -> tuple[Calibration, dict[str, Any]]:
    """The calibration and a report of its operating point (see the module's docstring)."""
    frechet, margin, fraction = data[:, 0], data[:, 1], data[:, 2]
    label, queries = data[:, 5], data[:, 6].astype(int)
    negative = queries >= known_queries
    ones = np.ones(len(data))
    if form == "gated":
        # How well it fits: true windows against unknown audio (a known query's
        # windows on a wrong track say nothing about fit).
        fits = (label == 1) | negative
        x_fit = np.column_stack([ones, frechet, fraction])
        w_fit = fit_logistic(x_fit[fits], label[fits])
        x_gate = np.column_stack([ones, margin])
        w_gate = fit_logistic(x_gate[~negative], label[~negative])
        fitted = Calibration(
            bias=float(w_fit[0]),
            w_frechet=float(min(w_fit[1], -1e-3)),
            w_margin=0.0,
            w_windows=float(w_fit[2]),
            gate_bias=float(w_gate[0]),
            gate_margin=float(max(w_gate[1], 1e-3)),
        )
    elif form == "distance":
        # How well it fits, and nothing else: on encoder-v3 the margin to the runner-up
        # separated known from unknown audio worse than the distance alone
        # (scripts/decision_lab.py), because noise moves a query away from every track.
        # Nor the windows seen: after the first window (see --first-max-frechet) one
        # threshold served better than one that loosens as windows accumulate.
        fits = (label == 1) | negative
        w_fit = fit_logistic(np.column_stack([ones, frechet])[fits], label[fits])
        fitted = Calibration(
            bias=float(w_fit[0]), w_frechet=float(min(w_fit[1], -1e-3)), w_margin=0.0, w_windows=0.0
        )
    else:
        x = np.column_stack([ones, frechet, margin, fraction])
        w = fit_logistic(x, label)
        fitted = Calibration(
            bias=float(w[0]),
            w_frechet=float(min(w[1], -1e-3)),
            w_margin=float(max(w[2], 0.0)),
            w_windows=float(w[3]),
        )
    horizon = MatcherConfig().horizon_windows
    probs = np.array(
        [
            fitted.confidence(
                frechet=f, margin=m, n_windows=round(r * horizon), horizon_windows=horizon
            )
            for f, m, r in zip(frechet, margin, fraction, strict=True)
        ]
    )
    guarded = frechet <= max_frechet
    if first_max_frechet is not None:
        first = np.isclose(fraction, 1.0 / horizon)
        guarded &= ~first | (frechet <= first_max_frechet)
    n_unknown = len(set(queries[negative]))
    report: dict[str, Any] = {
        "windows": len(data),
        "known_queries": known_queries,
        "unknown_queries": n_unknown,
        "form": form,
        "max_frechet": max_frechet,
        "first_max_frechet": first_max_frechet,
        "max_fp": max_fp,
        "thresholds": {},
    }
    operating: float | None = None
    for candidate in np.round(np.arange(0.05, 0.996, 0.005), 3):
        fires = (probs >= candidate) & guarded
        fp_rate = len(set(queries[fires & negative])) / max(1, n_unknown)
        if operating is None and fp_rate <= max_fp:
            operating = float(candidate)
        if operating == float(candidate) or round(candidate * 20) == candidate * 20:
            report["thresholds"][str(candidate)] = _operating_report(
                fires, label, queries, kinds, negative, known_queries, n_unknown
            )
    operating = operating if operating is not None else 0.995
    if threshold is not None:
        fires = (probs >= threshold) & guarded
        report["thresholds"][str(threshold)] = _operating_report(
            fires, label, queries, kinds, negative, known_queries, n_unknown
        )
        operating = float(threshold)
    calibration = replace(fitted, shift=float(np.log(operating / (1.0 - operating))))
    report["fitted_probability_model"] = fitted.to_dict()
    report["operating_threshold"] = operating
    report["at_operating_point"] = report["thresholds"].get(str(operating))
    report["calibration"] = calibration.to_dict()
    return calibration, report


def _operating_report(
    fires: np.ndarray,
    label: np.ndarray,
    queries: np.ndarray,
    kinds: np.ndarray,
    negative: np.ndarray,
    known_queries: int,
    n_unknown: int,
) -> dict[str, Any]:
    """Per query: known ones found (a true window fires) by condition, unknown ones firing."""
    found = set(queries[fires & (label == 1)])
    wrong = set(queries[fires & (label == 0) & ~negative])
    by_kind: dict[str, float] = {}
    for kind in sorted(set(kinds.tolist())):
        asked = set(queries[kinds == kind])
        hits = asked & (set(queries[fires]) if kind.startswith("negative") else found)
        by_kind[kind] = round(len(hits) / max(1, len(asked)), 4)
    return {
        "window_precision": round(float(label[fires].mean()), 4) if fires.any() else None,
        "window_recall": round(float(fires[label == 1].mean()), 4),
        "negative_queries_fp_rate": round(
            len(set(queries[fires & negative])) / max(1, n_unknown), 4
        ),
        "known_queries_with_wrong_window": round(len(wrong) / max(1, known_queries), 4),
        "by_kind": by_kind,
    }


if __name__ == "__main__":
    raise SystemExit(main())
