"""Contrastive training of ``EncoderNet`` (NT-Xent, after NAFP, Chang et al. 2021).

One step: draw ``batch`` random 4 s excerpts from the train split. Each gives
an *index view* (the clean window, as the library stores it) and a *query
view*: the same music shifted by up to ±``max_offset_s`` and degraded on the
fly (turntable speed, room, EQ and band limits, noise of several kinds at
-5..20 dB SNR, gain and clipping, then pitch/key-lock warps and masks on the
spectrogram). NT-Xent pulls each pair together against the other 2·batch-2
views in the batch.

Validation (model selection and early stopping) runs the benchmark's named
degradations (``augment.CONDITIONS``) on the **val** split only, with
synthetic babble and pink noise instead of the benchmark's recorded
material. The benchmark split is never read here.

Needs the ``[train]`` extra (torchaudio, pyroomacoustics).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.errors import ConfigError
from synesthete.inference import augment
from synesthete.inference.model import EncoderNet, ModelConfig, make_frontend, mel_centres_hz
from synesthete.stream.synth import pink_noise, speech_like_noise, synth_track

FloatArray = npt.NDArray[np.float32]

SPEED_RANGE = (0.90, 1.10)
"""Turntable speed drawn for the query view: wider than the ±8 % a DJ uses."""
SEMITONE_RANGE = 1.3
"""Pitch warps up to this many semitones either way (key changes, key lock)."""
SNR_DB_RANGE = (-5.0, 20.0)
PRE_ROLL = SAMPLE_RATE_HZ // 2
"""Audio before the query window that a room's reverberation carries into it."""
RIR_MAX_SAMPLES = SAMPLE_RATE_HZ * 3 // 4
NEIGHBOUR_S = (1.0, 8.0)
"""How far apart same-track crops are (see ``AudioBank.crops``): beyond the ±0.25 s
a positive may be off, within the reach of repeated bars."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that decides a training run (saved next to the checkpoints)."""

    corpus: Path | None
    """Dev corpus root (scripts/corpus.sh); None trains on synthesized tracks (smoke runs)."""
    out_dir: Path
    steps: int = 3000
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    temperature: float = 0.05
    max_offset_s: float = 0.25
    eval_every: int = 250
    eval_per_condition: int = 16
    eval_context_s: float = 5.0
    patience_evals: int = 8
    time_budget_s: float | None = None
    seed: int = 20261122
    device: str = "cpu"
    threads: int | None = None
    synthetic_tracks: int = 16
    rirs: int = 48
    same_track_fraction: float = 0.5
    init: Path | None = None
    """A checkpoint to start from (its weights only; the schedule starts afresh)."""
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 2:
            raise ConfigError("training needs steps >= 1 and batch >= 2")
        if self.eval_every < 1:
            raise ConfigError("eval_every must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["corpus"] = None if self.corpus is None else str(self.corpus)
        doc["out_dir"] = str(self.out_dir)
        doc["init"] = None if self.init is None else str(self.init)
        return doc


# --- data -------------------------------------------------------------------------------


@dataclass
class Track:
    name: str
    audio: FloatArray  # 16 kHz mono


def _resolve(corpus: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else corpus / p


def _decode_cached(args: tuple[str, str]) -> tuple[str, FloatArray | None, str]:
    from synesthete.errors import SynestheteError
    from synesthete.index.decode import load_mono

    source, cache = args
    cache_path = Path(cache)
    if cache_path.is_file():
        return source, np.load(cache_path).astype(np.float32), ""
    try:
        audio = load_mono(source, sample_rate_hz=SAMPLE_RATE_HZ)
    except (SynestheteError, OSError, RuntimeError) as err:
        return source, None, str(err).splitlines()[0]
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_suffix(".tmp.npy")
    np.save(tmp, audio.astype(np.float16))
    tmp.replace(cache_path)
    return source, audio, ""


def split_rows(corpus: Path, split: str) -> list[dict[str, Any]]:
    """Manifest rows of one split (``train`` or ``val``; ``bench`` is refused)."""
    if split not in {"train", "val"}:
        raise ConfigError(f"training reads the train and val splits only, not {split!r}")
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        raise ConfigError(f"{manifest} not found; build the corpus with scripts/corpus.sh")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("split") == split]


def load_split(corpus: Path, split: str, *, log: Callable[[str], None] = print) -> list[Track]:
    """Decode one split to 16 kHz mono (cached as float16 under corpus/cache/train16k)."""
    rows = split_rows(corpus, split)
    jobs = []
    for row in rows:
        source = str(_resolve(corpus, row["path"]))
        key = hashlib.sha1(f"{row['id']}|{row.get('content_hash')}".encode()).hexdigest()[:16]
        jobs.append((source, str(corpus / "cache" / "train16k" / f"{key}.npy")))
    tracks: list[Track] = []
    started = time.perf_counter()
    workers = max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for (source, audio, error), row in zip(pool.map(_decode_cached, jobs), rows, strict=True):
            if audio is None:
                log(f"train: skipping {source}: {error}")
                continue
            if audio.shape[0] >= WINDOW_SAMPLES + 2 * SAMPLE_RATE_HZ:
                tracks.append(Track(name=str(row["id"]), audio=audio))
    hours = sum(t.audio.shape[0] for t in tracks) / SAMPLE_RATE_HZ / 3600
    log(
        f"train: {split} split: {len(tracks)} tracks, {hours:.2f} h"
        f" ({time.perf_counter() - started:.0f} s to load)"
    )
    return tracks


def synthetic_split(count: int, *, seed: int, seconds: float = 40.0) -> list[Track]:
    """Generated songs, for smoke runs and tests (no corpus needed)."""
    return [
        Track(
            name=f"synth-{seed + n}",
            audio=synth_track(seed=seed + n, duration_s=seconds, sample_rate_hz=SAMPLE_RATE_HZ),
        )
        for n in range(count)
    ]


def noise_material(corpus: Path | None, *, seed: int) -> list[FloatArray]:
    """Interference clips at 16 kHz that the benchmark never uses.

    Synthetic babble and pink noise, plus the dev packages' one-shot samples
    (``samples.jsonl``: sonic-pi) when a corpus is given. The benchmark's
    espeak-ng speech and ambience loops are left out on purpose.
    """
    clips: list[FloatArray] = []
    for k in range(6):
        clips.append(
            speech_like_noise(
                seconds=20.0, sample_rate_hz=SAMPLE_RATE_HZ, seed=seed + k, talkers=2 + k % 4
            )
        )
        clips.append(pink_noise(seconds=20.0, sample_rate_hz=SAMPLE_RATE_HZ, seed=seed + 100 + k))
    listing = None if corpus is None else corpus / "samples.jsonl"
    if listing is not None and listing.is_file():
        from synesthete.index.decode import load_mono

        for line in listing.read_text().splitlines():
            row = json.loads(line)
            if float(row.get("duration_s", 0.0)) < 0.5:
                continue
            try:
                clip = load_mono(row["path"], sample_rate_hz=SAMPLE_RATE_HZ)
            except Exception:
                continue
            if np.abs(clip).max() > 1e-3:
                clips.append(clip)
    return clips


class AudioBank:
    """All tracks of a split, for fast random crops."""

    def __init__(self, tracks: Sequence[Track]) -> None:
        if not tracks:
            raise ConfigError("no usable tracks to train on")
        self.tracks = list(tracks)
        lengths = np.array([t.audio.shape[0] for t in tracks], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def crops(
        self, rng: np.random.Generator, n: int, length: int, *, same_track_fraction: float = 0.0
    ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """``n`` random crops ``[n, length]`` (zero-padded if a track is short) and track ids.

        With ``same_track_fraction`` > 0, that share of the crops come in
        pairs from one track, ``NEIGHBOUR_S`` apart: in a contrastive batch
        they are each other's hardest negatives, which teaches the encoder
        *where* in a track it is, not only which track.
        """
        ids = rng.choice(len(self.tracks), size=n, p=self.weights)
        starts = np.zeros(n, dtype=np.int64)
        for row, track_id in enumerate(ids):
            audio = self.tracks[int(track_id)].audio
            starts[row] = int(rng.integers(0, max(1, audio.shape[0] - length)))
        pairs = int(n * same_track_fraction) // 2
        for row in range(pairs):
            partner = n - 1 - row
            ids[partner] = ids[row]
            audio = self.tracks[int(ids[row])].audio
            gap = int(rng.uniform(*NEIGHBOUR_S) * SAMPLE_RATE_HZ)
            last = max(0, audio.shape[0] - length)
            # Go the way there is room for (a clipped gap could fall within a positive's reach).
            ahead = starts[row] + gap <= last and (starts[row] - gap < 0 or rng.random() < 0.5)
            starts[partner] = int(np.clip(starts[row] + (gap if ahead else -gap), 0, last))
        out = np.zeros((n, length), dtype=np.float32)
        for row, track_id in enumerate(ids):
            piece = self.tracks[int(track_id)].audio[starts[row] : starts[row] + length]
            out[row, : piece.shape[0]] = piece
        return out, ids.astype(np.int64)


# --- augmentation (torch, batched) ---------------------------------------------------------


class Augmenter:
    """Builds (index view, query view) waveform pairs and the query's spectrogram warps."""

    def __init__(
        self,
        *,
        bank: AudioBank,
        noises: Sequence[FloatArray],
        rirs: Sequence[npt.NDArray[np.float64]],
        config: TrainConfig,
    ) -> None:
        self.bank = bank
        self.noises = [torch.from_numpy(np.asarray(c, dtype=np.float32)) for c in noises]
        self.rirs = [
            torch.from_numpy(np.asarray(r[:RIR_MAX_SAMPLES], dtype=np.float32)) for r in rirs
        ]
        self.config = config
        self.max_offset = int(config.max_offset_s * SAMPLE_RATE_HZ)
        # Centred index window; room either side for the fastest speed, the pre-roll and offsets.
        self.source_length = 2 * (
            math.ceil((WINDOW_SAMPLES + PRE_ROLL) * SPEED_RANGE[1]) + self.max_offset
        )
        self._log_centres = torch.log(mel_centres_hz(config.model))

    def pair(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(index_view [b, 64000], query_view [b, 64000], pitch_warp [b])``."""
        b = self.config.batch
        source, _ = self.bank.crops(
            rng, b, self.source_length, same_track_fraction=self.config.same_track_fraction
        )
        src = torch.from_numpy(source)
        centre = self.source_length // 2
        index_start = centre - WINDOW_SAMPLES // 2
        index_view = src[:, index_start : index_start + WINDOW_SAMPLES].clone()

        # Turntable speed: the query's 64000 + PRE_ROLL samples span factor × as much music.
        speed = np.where(rng.random(b) < 0.5, rng.uniform(*SPEED_RANGE, size=b), 1.0)
        offset = rng.integers(-self.max_offset, self.max_offset + 1, size=b)
        out_len = WINDOW_SAMPLES + PRE_ROLL
        steps = torch.arange(out_len, dtype=torch.float64)
        # Window start (after the pre-roll) lands on index_start + offset in the source.
        start = index_start + offset - PRE_ROLL * speed
        pos = torch.from_numpy(start)[:, None] + steps[None, :] * torch.from_numpy(speed)[:, None]
        pos = pos.clamp(0, self.source_length - 2)
        lo = pos.floor().long()
        frac = (pos - lo).float()
        query = torch.lerp(src.gather(1, lo), src.gather(1, lo + 1), frac)

        query = self._spectral(query, rng)
        query = query[:, PRE_ROLL:]
        query = self._noise(query, rng)
        query = self._gain_and_clip(query, rng)

        # Key lock (tempo without pitch) half the time a speed was drawn, plus free pitch shifts.
        warp = np.ones(b)
        lock = (speed != 1.0) & (rng.random(b) < 0.5)
        warp[lock] = 1.0 / speed[lock]
        shift = rng.random(b) < 0.35
        warp[shift] *= 2.0 ** (
            rng.uniform(-SEMITONE_RANGE, SEMITONE_RANGE, size=int(shift.sum())) / 12
        )
        return index_view, query, torch.from_numpy(warp).float()

    def _spectral(self, audio: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Room reverberation, random EQ and device band limits, in one FFT pass."""
        b, n = audio.shape
        size = 1 << (n + RIR_MAX_SAMPLES - 1).bit_length()
        freqs = torch.fft.rfftfreq(size, d=1.0 / SAMPLE_RATE_HZ)
        spectrum = torch.fft.rfft(audio, n=size)
        gains = torch.ones(b, freqs.shape[0], dtype=torch.complex64)
        for row in range(b):
            if self.rirs and rng.random() < 0.3:
                rir = self.rirs[int(rng.integers(len(self.rirs)))]
                gains[row] *= torch.fft.rfft(rir, n=size)
            if rng.random() < 0.6:
                gains[row] *= _random_eq(freqs, rng)
            band = rng.random()
            if band < 0.12:
                gains[row] *= _band(freqs, augment.PHONE_BAND_HZ)
            elif band < 0.3:
                gains[row] *= _band(freqs, augment.LAPTOP_BAND_HZ)
            elif band < 0.4:
                gains[row] *= _band(freqs, (20.0, float(rng.uniform(3000.0, 7000.0))))
        shaped: torch.Tensor = torch.fft.irfft(spectrum * gains, n=size)[:, :n].float()
        return shaped

    def _noise(self, audio: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        b, n = audio.shape
        power = audio.pow(2).mean(dim=1).clamp(min=1e-8)
        out = audio.clone()
        music, _ = self.bank.crops(rng, b, n)
        for row in range(b):
            if rng.random() >= 0.8:
                continue
            kind = rng.random()
            if kind < 0.15:
                noise = torch.randn(n)
            elif kind < 0.4 or not self.noises:
                noise = torch.from_numpy(music[row])
            else:
                clip = self.noises[int(rng.integers(len(self.noises)))]
                reps = n // clip.shape[0] + 2
                looped = clip.repeat(reps)
                begin = int(rng.integers(0, looped.shape[0] - n))
                noise = looped[begin : begin + n]
            noise_power = noise.pow(2).mean().clamp(min=1e-10)
            snr_db = float(rng.uniform(*SNR_DB_RANGE))
            scale = torch.sqrt(power[row] / noise_power / (10.0 ** (snr_db / 10.0)))
            out[row] = audio[row] + scale * noise
        return out

    def _gain_and_clip(self, audio: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        b = audio.shape[0]
        gain = torch.from_numpy(10.0 ** (rng.uniform(-20.0, 6.0, size=b) / 20.0)).float()
        audio = audio * gain[:, None]
        clip = rng.random(b) < 0.2
        if clip.any():
            peak = audio.abs().amax(dim=1).clamp(min=1e-6)
            level = torch.from_numpy(rng.uniform(0.3, 0.9, size=b)).float() * peak
            clipped = torch.maximum(torch.minimum(audio, level[:, None]), -level[:, None])
            audio = torch.where(torch.from_numpy(clip)[:, None], clipped, audio)
        return audio

    def warp_and_mask(
        self,
        features: torch.Tensor,
        warp: torch.Tensor,
        rng: np.random.Generator,
        *,
        masks: bool = True,
    ) -> torch.Tensor:
        """Pitch warp along the mel axis (energy at f moves to f × warp), then time/freq masks."""
        b, n_mels, frames = features.shape
        source = self._log_centres[None, :] - torch.log(warp)[:, None]  # [b, n_mels]
        pos = torch.searchsorted(self._log_centres.contiguous(), source.contiguous())
        pos = pos.clamp(1, n_mels - 1)
        left = self._log_centres[pos - 1]
        right = self._log_centres[pos]
        frac = ((source - left) / (right - left)).clamp(0.0, 1.0)
        idx_lo = (pos - 1)[:, :, None].expand(b, n_mels, frames)
        idx_hi = pos[:, :, None].expand(b, n_mels, frames)
        warped = torch.lerp(
            features.gather(1, idx_lo), features.gather(1, idx_hi), frac[:, :, None]
        )
        floor = features.amin(dim=(1, 2), keepdim=True).expand_as(warped)
        outside = (source < self._log_centres[0]) | (source > self._log_centres[-1])
        warped = torch.where(outside[:, :, None].expand_as(warped), floor, warped)
        for row in range(b if masks else 0):
            if rng.random() < 0.3:
                width = int(rng.integers(1, max(2, frames // 8)))
                begin = int(rng.integers(0, frames - width))
                warped[row, :, begin : begin + width] = floor[row, 0, 0]
            if rng.random() < 0.2:
                width = int(rng.integers(1, max(2, n_mels // 8)))
                begin = int(rng.integers(0, n_mels - width))
                warped[row, begin : begin + width, :] = floor[row, 0, 0]
        return warped


def _random_eq(freqs: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A smooth random gain curve: a few ±12 dB bumps on a log-frequency axis."""
    log_f = torch.log2(freqs.clamp(min=20.0))
    db = torch.zeros_like(freqs)
    for _ in range(int(rng.integers(1, 4))):
        centre = float(rng.uniform(math.log2(60.0), math.log2(7000.0)))
        width = float(rng.uniform(0.3, 2.0))
        db += float(rng.uniform(-12.0, 12.0)) * torch.exp(-0.5 * ((log_f - centre) / width) ** 2)
    tilt = float(rng.uniform(-3.0, 3.0))  # dB per octave around 1 kHz
    db += tilt * (log_f - math.log2(1000.0))
    return torch.pow(10.0, db.clamp(-30.0, 15.0) / 20.0).to(torch.complex64)


def _band(freqs: torch.Tensor, band_hz: tuple[float, float]) -> torch.Tensor:
    """The benchmark's device band limit (``augment.butterworth_gain``) as a complex gain."""
    gain = augment.butterworth_gain(freqs.double().numpy(), band_hz, augment.BAND_ORDER)
    return torch.from_numpy(gain).to(torch.complex64)


def room_bank(count: int, *, seed: int) -> list[npt.NDArray[np.float64]]:
    """Simulated room impulse responses at 16 kHz (pyroomacoustics)."""
    return [
        augment.room_impulse_response(sample_rate_hz=SAMPLE_RATE_HZ, rng=seed + k)
        for k in range(count)
    ]


# --- loss and validation -----------------------------------------------------------------


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2n unit vectors; a[i] and b[i] are positives."""
    n = a.shape[0]
    z = torch.cat([a, b], dim=0)
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -1e9)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    loss: torch.Tensor = functional.cross_entropy(logits, targets)
    return loss


@dataclass
class ValSet:
    """Benchmark-style retrieval on the val split.

    For each query: the library holds the track's clean windows at the index
    hop (0.5 s) over ±``context_s`` around the true position, pooled with
    every other query's windows; a query is right when its nearest window is
    from its track and within 0.5 s of the true position.
    """

    queries: FloatArray  # [q, 64000]
    conditions: list[str]
    db: FloatArray  # [m, 64000]
    db_track: npt.NDArray[np.int64]
    db_pos_s: npt.NDArray[np.float64]
    query_track: npt.NDArray[np.int64]
    query_pos_s: npt.NDArray[np.float64]


def build_valset(
    tracks: Sequence[Track], *, per_condition: int, context_s: float, seed: int
) -> ValSet:
    rng = np.random.default_rng(seed)
    materials = augment.Materials(sample_rate_hz=SAMPLE_RATE_HZ)  # synthetic babble / noise
    queries: list[FloatArray] = []
    conditions: list[str] = []
    q_track: list[int] = []
    q_pos: list[float] = []
    db: list[FloatArray] = []
    db_track: list[int] = []
    db_pos: list[float] = []
    hop = SAMPLE_RATE_HZ // 2
    for name, condition in augment.CONDITIONS.items():
        for _ in range(per_condition):
            if not augment.codec_available("mp3") and name == "codec64":
                break
            track_id = int(rng.integers(len(tracks)))
            audio = tracks[track_id].audio
            need = math.ceil(WINDOW_SAMPLES * condition.tempo_factor) + SAMPLE_RATE_HZ
            start = int(rng.integers(0, audio.shape[0] - need))
            excerpt = audio[start : start + need]
            degraded = condition.apply(excerpt, SAMPLE_RATE_HZ, rng, materials)
            query = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
            piece = degraded[:WINDOW_SAMPLES]
            query[: piece.shape[0]] = piece
            queries.append(query)
            conditions.append(name)
            q_track.append(track_id)
            q_pos.append(start / SAMPLE_RATE_HZ)
            grid = (start // hop) * hop
            reach = int(context_s * SAMPLE_RATE_HZ) // hop * hop
            for p in range(grid - reach, grid + reach + hop, hop):
                if 0 <= p <= audio.shape[0] - WINDOW_SAMPLES:
                    db.append(audio[p : p + WINDOW_SAMPLES])
                    db_track.append(track_id)
                    db_pos.append(p / SAMPLE_RATE_HZ)
    return ValSet(
        queries=np.stack(queries).astype(np.float32),
        conditions=conditions,
        db=np.stack(db).astype(np.float32),
        db_track=np.array(db_track, dtype=np.int64),
        db_pos_s=np.array(db_pos),
        query_track=np.array(q_track, dtype=np.int64),
        query_pos_s=np.array(q_pos),
    )


def embed_all(model: EncoderNet, windows: FloatArray, device: torch.device) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for start in range(0, windows.shape[0], 128):
            chunk = torch.from_numpy(windows[start : start + 128]).to(device)
            out.append(model(chunk).cpu())
    return torch.cat(out)


def evaluate(model: EncoderNet, valset: ValSet, device: torch.device) -> dict[str, float]:
    """Top-1 accuracy per condition and overall (``mean``: the mean over conditions)."""
    was_training = model.training
    model.eval()
    db = embed_all(model, valset.db, device)
    queries = embed_all(model, valset.queries, device)
    model.train(was_training)
    best = torch.argmax(queries @ db.t(), dim=1).numpy()
    right = (valset.db_track[best] == valset.query_track) & (
        np.abs(valset.db_pos_s[best] - valset.query_pos_s) <= 0.5
    )
    per: dict[str, list[bool]] = {}
    for name, ok in zip(valset.conditions, right, strict=True):
        per.setdefault(name, []).append(bool(ok))
    result = {name: float(np.mean(v)) for name, v in per.items()}
    result["mean"] = float(np.mean(list(result.values())))
    result["min"] = float(min(v for k, v in result.items() if k != "mean"))
    return result


# --- the loop ------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    train_tracks: Sequence[Track] | None = None,
    val_tracks: Sequence[Track] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run training; writes ``best.pt``, ``last.pt`` and ``log.jsonl`` under ``out_dir``."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
    config.out_dir.mkdir(parents=True, exist_ok=True)

    if train_tracks is None or val_tracks is None:
        if config.corpus is None:
            train_tracks = synthetic_split(config.synthetic_tracks, seed=config.seed)
            val_tracks = synthetic_split(
                max(2, config.synthetic_tracks // 4), seed=config.seed + 10_000
            )
        else:
            train_tracks = load_split(config.corpus, "train", log=log)
            val_tracks = load_split(config.corpus, "val", log=log)
    started = time.perf_counter()
    bank = AudioBank(train_tracks)
    augmenter = Augmenter(
        bank=bank,
        noises=noise_material(config.corpus, seed=config.seed),
        rirs=room_bank(config.rirs, seed=config.seed) if config.rirs else [],
        config=config,
    )
    valset = build_valset(
        val_tracks,
        per_condition=config.eval_per_condition,
        context_s=config.eval_context_s,
        seed=config.seed + 1,
    )
    log(
        f"train: {len(valset.queries)} val queries against {len(valset.db)} windows;"
        f" set-up {time.perf_counter() - started:.0f} s"
    )

    model = EncoderNet(config.model, make_frontend(config.model))
    if config.init is not None:
        start_from = torch.load(config.init, map_location="cpu", weights_only=False)
        if ModelConfig(**start_from["model_config"]) != config.model:
            raise ConfigError(f"{config.init} has another model shape than this run")
        model.load_state_dict(start_from["model"])
        log(f"train: starting from {config.init} (step {start_from['step']})")
    model = model.to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    log_path = config.out_dir / "log.jsonl"
    log_path.write_text("")
    best: dict[str, Any] = {"score": -1.0, "step": -1}
    since_best = 0
    losses: list[float] = []
    loop_started = time.perf_counter()
    step = 0
    for step in range(config.steps):
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step)
        index_view, query_view, warp = augmenter.pair(rng)
        features_a = model.features(index_view.to(device))
        with torch.no_grad():
            features_b = augmenter.warp_and_mask(
                model.features(query_view.to(device)).cpu(), warp, rng
            ).to(device)
        loss = nt_xent(
            model.embed_features(features_a), model.embed_features(features_b), config.temperature
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        losses.append(float(loss.detach()))

        last = step == config.steps - 1
        elapsed = time.perf_counter() - loop_started
        out_of_time = config.time_budget_s is not None and elapsed >= config.time_budget_s
        if (step + 1) % config.eval_every == 0 or last or out_of_time:
            scores = evaluate(model, valset, device)
            score = scores["mean"]
            record = {
                "step": step + 1,
                "loss": float(np.mean(losses[-config.eval_every :])),
                "lr": lr_at(step),
                "elapsed_s": round(elapsed, 1),
                "val": scores,
            }
            with log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            improved = score > best["score"]
            log(
                f"train: step {step + 1}/{config.steps} loss {record['loss']:.3f}"
                f" val mean {score:.3f} min {scores['min']:.3f}"
                f" ({elapsed / 60:.1f} min){' *' if improved else ''}"
            )
            checkpoint = {
                "model": model.state_dict(),
                "model_config": config.model.to_dict(),
                "train_config": config.to_dict(),
                "step": step + 1,
                "val": scores,
                "elapsed_s": elapsed,
            }
            torch.save(checkpoint, config.out_dir / "last.pt")
            if improved:
                best = {"score": score, "step": step + 1, "val": scores}
                torch.save(checkpoint, config.out_dir / "best.pt")
                since_best = 0
            else:
                since_best += 1
            if since_best >= config.patience_evals:
                log(f"train: no val improvement in {since_best} evaluations; stopping early")
                break
        if out_of_time:
            log("train: time budget reached")
            break
    summary = {
        "steps_run": step + 1,
        "best": best,
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_tracks": len(train_tracks),
        "val_tracks": len(val_tracks),
    }
    (config.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
