"""Val accuracy per condition over training time, from a run's log.jsonl, as PNG and JSON.

    python scripts/plot_training.py RUN_DIR [--baseline EVAL.json] [--out bench/training-NAME]

Writes OUT.png (one line per benchmark condition: the share of val queries
whose nearest window is the right track, and within 1 s, against training
minutes; the baseline's figures, from ``scripts/eval_encoder.py --json``, as
dotted lines) and OUT.json (the same numbers). Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GROUPS = {
    "noise, rooms, chatter": ("pink5", "babble0", "room"),
    "speed, tempo, pitch, codec": (
        "clean", "speed+8", "speed-8", "tempo+6", "tempo-6", "pitch+1", "pitch-1", "codec64",
    ),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_training: needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 2
    log_path = args.run / "log.jsonl"
    if not log_path.is_file():
        print(f"plot_training: {log_path} not found", file=sys.stderr)
        return 2
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    baseline: dict[str, Any] = {}
    if args.baseline is not None:
        baseline = next(iter(json.loads(args.baseline.read_text())["results"].values()))
    out = args.out if args.out is not None else Path("bench") / f"training-{args.run.name}"
    minutes = [r["train_s"] / 60 for r in records]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    for row, metric in enumerate(("track", "hit1")):
        for col, (title, conditions) in enumerate(GROUPS.items()):
            ax = axes[row][col]
            for k, condition in enumerate(conditions):
                colour = f"C{k}"
                ys = [r["val"][condition][metric] for r in records if condition in r["val"]]
                ax.plot(minutes[: len(ys)], ys, marker="o", color=colour, label=condition)
                if condition in baseline:
                    ax.axhline(baseline[condition][metric], color=colour, linestyle=":")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            what = "right track" if metric == "track" else "right track within 1 s"
            ax.set_title(f"{title}: {what}")
            if row == 1:
                ax.set_xlabel("training minutes (2 CPU cores)")
            ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.suptitle(f"{args.run.name}: val split, nearest of every val window (dotted: baseline)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_suffix(".png"), dpi=80)
    summary = {
        "run": args.run.name,
        "evaluations": [
            {
                "step": r["step"],
                "train_min": round(r["train_s"] / 60, 1),
                "views_per_s": r["views_per_s"],
                "data_ms": r["data_ms"],
                "model_ms": r["model_ms"],
                "loss": round(r["loss"], 4),
                "val": r["val"],
            }
            for r in records
        ],
        "baseline": baseline or None,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
