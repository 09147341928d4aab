"""Encoder training: the pieces in this venv, and a real tiny run in the [train] venv.

The smoke test runs scripts/train_encoder.py and scripts/export_encoder.py
with .venv-train's python (torch 2.11 + torchaudio, built by
``bash scripts/setup.sh --train``), then loads the exported file here, in the
runtime venv that has no torchaudio, and indexes and identifies with it.
Under scripts/test.sh (SYNESTHETE_REQUIRE_TRAIN=1) a missing train venv fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import cli_command, cli_env

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.inference.config import EncoderConfig
from synesthete.inference.model import ModelConfig, mel_centres_hz
from synesthete.inference.torchscript import TorchScriptEncoder
from synesthete.inference.training import (
    AudioBank,
    Augmenter,
    Track,
    TrainConfig,
    nt_xent,
    synthetic_split,
)
from synesthete.stream.synth import synth_track

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PYTHON = Path(os.environ.get("SYNESTHETE_TRAIN_PYTHON", ROOT / ".venv-train/bin/python"))


def test_nt_xent_rewards_matching_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    noise = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    matched = nt_xent(a, a, temperature=0.1)
    shuffled = nt_xent(a, a.roll(1, dims=0), temperature=0.1)
    unrelated = nt_xent(a, noise, temperature=0.1)
    assert matched < unrelated < shuffled + 1.0
    assert float(matched) < 0.1


def _augmenter(batch: int = 6) -> Augmenter:
    config = TrainConfig(corpus=None, out_dir=Path("unused"), batch=batch, rirs=0)
    bank = AudioBank(synthetic_split(2, seed=5, seconds=20.0))
    return Augmenter(bank=bank, noises=[], rirs=[], config=config)


def test_query_view_is_the_index_view_shifted_and_degraded() -> None:
    augmenter = _augmenter()
    rng = np.random.default_rng(1)
    index_view, query_view, warp = augmenter.pair(rng)
    assert index_view.shape == query_view.shape == (6, WINDOW_SAMPLES)
    assert torch.isfinite(query_view).all() and warp.shape == (6,)
    assert float(warp.min()) > 0.8 and float(warp.max()) < 1.25
    # Degraded, yet the same music: each query correlates best with its own index view
    # (within the ±0.25 s offset) rather than with the other pairs'.
    spec_i = torch.stft(index_view, 1024, 512, return_complex=True).abs().log1p().mean(dim=2)
    spec_q = torch.stft(query_view, 1024, 512, return_complex=True).abs().log1p().mean(dim=2)
    spec_i = torch.nn.functional.normalize(spec_i - spec_i.mean(1, keepdim=True), dim=1)
    spec_q = torch.nn.functional.normalize(spec_q - spec_q.mean(1, keepdim=True), dim=1)
    assert not torch.allclose(index_view, query_view)
    similarity = spec_q @ spec_i.t()
    own = similarity.diagonal()
    others = (similarity.sum(dim=1) - own) / 5
    assert int((own > others).sum()) >= 5, similarity
    assert float(own.mean()) > float(others.mean()) + 0.03, similarity


def test_pitch_warp_moves_a_tone_up_the_mel_axis() -> None:
    augmenter = _augmenter(batch=2)
    config = ModelConfig()
    centres = mel_centres_hz(config)
    features = torch.full((2, config.n_mels, 10), -1.0)
    band = 30
    features[:, band, :] = 1.0
    warp = torch.tensor([1.0, 2.0 ** (2 / 12)])  # unchanged; two semitones up
    out = augmenter.warp_and_mask(features, warp, np.random.default_rng(0), masks=False)
    peaks = out[:, :, 0].argmax(dim=1)
    assert int(peaks[0]) == band
    moved_to = float(centres[int(peaks[1])])
    assert moved_to > float(centres[band]) * 1.05
    assert abs(moved_to / float(centres[band]) - 2 ** (2 / 12)) < 0.06


def _require_train_python() -> Path:
    if TRAIN_PYTHON.is_file():
        return TRAIN_PYTHON
    message = f"{TRAIN_PYTHON} not found: run bash scripts/setup.sh --train"
    if os.environ.get("SYNESTHETE_REQUIRE_TRAIN") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.slow
def test_tiny_training_run_exports_a_model_the_runtime_loads(tmp_path: Path) -> None:
    python = _require_train_python()
    run = tmp_path / "run"
    env = cli_env()
    train = subprocess.run(
        [
            str(python), str(ROOT / "scripts" / "train_encoder.py"), "--synthetic",
            "--steps", "3", "--batch", "8", "--eval-every", "3", "--eval-per-condition", "1",
            "--synthetic-tracks", "4", "--rirs", "2", "--out", str(run),
        ],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_run"] == 3
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and np.isfinite(log[-1]["loss"])
    assert set(log[-1]["val"]) >= {"clean", "babble0", "speed+6", "pitch-1", "mean"}

    model = tmp_path / "encoder-smoke.pt"
    export = subprocess.run(
        [
            str(python), str(ROOT / "scripts" / "export_encoder.py"), str(run),
            "--name", "encoder-smoke", "--out", str(model),
        ],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-2000:]

    # This venv has no torchaudio: the exported file must load and run without it.
    probe = subprocess.run(
        [
            sys.executable, "-c",
            "import sys, numpy as np; from pathlib import Path;"
            "from synesthete.inference.config import EncoderConfig;"
            "from synesthete.inference.torchscript import TorchScriptEncoder;"
            f"e = TorchScriptEncoder(config=EncoderConfig(model_path=Path({str(model)!r})));"
            "v = e.embed(np.zeros((2, 64000), np.float32));"
            "assert 'torchaudio' not in sys.modules;"
            "print(e.name, e.dim, float(np.linalg.norm(v[0])))",
        ],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    name, dim, norm = probe.stdout.split()
    assert (name, dim) == ("encoder-smoke", "128") and abs(float(norm) - 1.0) < 1e-4

    encoder = TorchScriptEncoder(config=EncoderConfig(model_path=model, device="cpu"))
    meta = encoder.metadata
    assert meta["kind"] == "trained" and meta["corpus_split_hash"] == "synthetic"
    assert meta["training"]["step"] in {3} and "train_encoder.py" in meta["training"]["command"]
    assert meta["model"]["n_mels"] == ModelConfig().n_mels

    # The runtime path end to end with the new model: index, then identify an excerpt.
    music = tmp_path / "music"
    music.mkdir()
    for n in range(3):
        audio = synth_track(seed=300 + n, duration_s=20.0, sample_rate_hz=SAMPLE_RATE_HZ)
        sf.write(music / f"{n}.wav", audio, SAMPLE_RATE_HZ)
    index = tmp_path / "index"
    build = subprocess.run(
        cli_command("index", "build", "--index", str(index), "--model", str(model), "--quiet",
                    str(music)),
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    stats = subprocess.run(
        cli_command("index", "stats", "--index", str(index)),
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "encoder-smoke" in stats.stdout


def test_same_track_crops_come_in_pairs_a_few_seconds_apart() -> None:
    # Ramps: a crop's first sample tells where in its track it starts.
    n = 30 * SAMPLE_RATE_HZ
    tracks = [
        Track(name=f"ramp{k}", audio=(np.arange(n) / n + k).astype(np.float32)) for k in range(3)
    ]
    bank = AudioBank(tracks)
    crops, ids = bank.crops(np.random.default_rng(2), 8, WINDOW_SAMPLES, same_track_fraction=0.5)
    assert crops.shape == (8, WINDOW_SAMPLES)
    assert ids[0] == ids[7] and ids[1] == ids[6]
    for a, b in ((0, 7), (1, 6)):
        assert np.floor(crops[a, 0]) == np.floor(crops[b, 0]) == ids[a]  # same track
        gap_s = abs(float(crops[a, 0] - crops[b, 0])) * n / SAMPLE_RATE_HZ
        assert 0.99 <= gap_s <= 8.01, gap_s
    plain, _ = bank.crops(np.random.default_rng(2), 8, WINDOW_SAMPLES)
    assert plain.shape == (8, WINDOW_SAMPLES)
