"""Contrastive training of ``EncoderNet`` on two CPU cores, resumable across sessions.

A step draws ``batch`` excerpts of the train split from the mel cache
(``mel_cache``): each gives a clean *index view*, as the library stores it,
and a *query view* shifted by up to half the index hop and degraded in the
mel-power domain (``mel_augment``: tempo, speed and pitch, rooms, noise,
babble and other music, device EQ and band limits, masks). NT-Xent pulls
each pair together against every other view in the batch, except views of
the same track less than ``mask_gap_frames`` apart, which are neither
positives nor fair negatives.

Everything that decides the run is in the checkpoint (``last.pt``): weights,
optimiser, step, the random generators and the schedule's length, so a run
stopped by a time budget resumes where it stopped with ``--resume``.

Validation (model selection) runs the benchmark's named degradations
(``augment.CONDITIONS``) on waveforms of the **val** split, through the whole
model as it is exported (STFT front end included), against every window of
every val track at the 0.5 s index hop. The benchmark split is never read.

Needs the ``[train]`` extra (torchaudio, pyroomacoustics).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.errors import ConfigError, ModelError
from synesthete.inference import augment, mel_cache
from synesthete.inference.mel_augment import AugmentConfig, MelAugmenter, MelStream
from synesthete.inference.model import (
    EncoderNet,
    ModelConfig,
    make_frontend,
    mel_centres_hz,
    pool_in_blocks,
)
from synesthete.inference.torchscript import read_metadata
from synesthete.stream.synth import synth_track

FloatArray = npt.NDArray[np.float32]
Log = Callable[[str], None]
INDEX_HOP = SAMPLE_RATE_HZ // 2


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that decides a training run (saved in every checkpoint)."""

    corpus: Path | None
    """Dev corpus root (scripts/corpus.sh); None trains on synthesized tracks (smoke runs)."""
    out_dir: Path
    steps: int = 20_000
    """Length of the schedule (the cosine decays to 0 there), whatever the chunks."""
    batch: int = 128
    """Pairs per step: 2 × batch views."""
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    temperature: float = 0.07
    align_weight: float = 0.0
    """Weight of the alignment term (mean squared distance of each positive pair, Wang and
    Isola 2020) added to NT-Xent. NT-Xent only ranks: a degraded view may sit at cosine 0.7
    from its clean view as long as nothing else is nearer, while the matcher names a track
    by its absolute distance; this term pulls positives in directly."""
    outsiders: int = 0
    """Views of interference alone per step (half a single talker, half the augmenter's
    noise, babble or both), each a negative of every music view: a voice on the radio
    must stay away from the music the way a noise-robust embedding could forget."""
    queue: int = 0
    """Clean index views of earlier steps kept as extra negatives of every view (a MoCo-style
    queue, without a momentum encoder: fine-tuning moves the network little over the ~20
    steps a queue of 4 096 spans). The matcher searches a whole library, not a batch: a
    degraded window must stay nearer its own place than thousands of other windows."""
    mask_gap_frames: int = 100
    """Same-track views closer than this (2 s) are left out as negatives."""
    eval_every: int = 1000
    eval_per_condition: int = 40
    time_budget_s: float | None = None
    seed: int = 20261122
    device: str = "cpu"
    threads: int | None = 2
    synthetic_tracks: int = 16
    synthetic_mix: int = 0
    """Synthesized tracks (``stream/synth.py``, seeds from ``SYNTHETIC_MIX_SEED``) added to
    the corpus's train split: pieces of one synthesizer become each other's negatives."""
    rooms: int = 200
    reverberant_copies: int = 0
    """Copies of the train split played in waveform rooms (one room per track per
    copy, ~400 MB each); ``augment.real_room_share`` of the roomed views read them."""
    talkers: int = 24
    talker_seconds: float = 90.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: str | None = None
    """A run checkpoint (``RUN/best.pt``) whose weights start this run (fine-tuning)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 2:
            raise ConfigError("training needs steps >= 1 and batch >= 2")
        if self.eval_every < 1:
            raise ConfigError("eval_every must be >= 1")
        if self.reverberant_copies < 0:
            raise ConfigError("reverberant_copies must be >= 0")
        if self.outsiders < 0:
            raise ConfigError("outsiders must be >= 0")
        if self.queue < 0:
            raise ConfigError("queue must be >= 0")
        if not self.align_weight >= 0.0:
            raise ConfigError("align_weight must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["corpus"] = None if self.corpus is None else str(self.corpus)
        doc["out_dir"] = str(self.out_dir)
        doc["model"] = self.model.to_dict()
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TrainConfig:
        doc = dict(doc)
        doc["corpus"] = None if doc["corpus"] is None else Path(doc["corpus"])
        doc["out_dir"] = Path(doc["out_dir"])
        doc["model"] = ModelConfig.from_dict(doc["model"])
        aug = dict(doc["augment"])
        for key, value in aug.items():
            if isinstance(value, list):
                aug[key] = tuple(value)
        doc["augment"] = AugmentConfig(**aug)
        return cls(**doc)


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


def load_split(corpus: Path, split: str, *, log: Log = print) -> list[Track]:
    """Decode one split to 16 kHz mono (cached as float16 under corpus/cache/train16k)."""
    rows = split_rows(corpus, split)
    jobs = []
    for row in rows:
        source = str(_resolve(corpus, row["path"]))
        key = hashlib.sha1(f"{row['id']}|{row.get('content_hash')}".encode()).hexdigest()[:16]
        jobs.append((source, str(corpus / "cache" / "train16k" / f"{key}.npy")))
    tracks: list[Track] = []
    started = time.perf_counter()
    workers = max(1, min(2, os.cpu_count() or 1))
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


SYNTHETIC_MIX_SEED = 100_000
"""First seed of ``--synthetic-mix`` tracks: far from the seeds the demo (0-23, its unknown
piece 10 000), the tests (5 000 and below) and the synthesized-stranger check (10 000-10 019)
use, so training never sees the pieces it is judged on."""


def synthetic_split(count: int, *, seed: int, seconds: float = 40.0) -> list[Track]:
    """Generated songs, for smoke runs and tests (no corpus needed). They are one package,
    ``synth``, so ``--grouped-fraction`` draws pieces of the one synthesizer side by side."""
    return [
        Track(
            name=f"synth:{seed + n}",
            audio=synth_track(seed=seed + n, duration_s=seconds, sample_rate_hz=SAMPLE_RATE_HZ),
        )
        for n in range(count)
    ]


def val_materials(corpus: Path | None) -> augment.Materials:
    """The benchmark's speech clips and ambience loops at 16 kHz, for **val** queries only.

    Training never sees them; selection measures against the same kind of
    chatter and room tone the benchmark uses. Without a corpus: synthetic.
    """
    if corpus is None:
        return augment.Materials(sample_rate_hz=SAMPLE_RATE_HZ)
    from synesthete.index.decode import load_mono

    speech = [
        load_mono(path, sample_rate_hz=SAMPLE_RATE_HZ)
        for path in sorted((corpus / "speech").glob("*.wav"))[:40]
    ]
    ambience: list[FloatArray] = []
    listing = corpus / "ambience.jsonl"
    if listing.is_file():
        for line in listing.read_text().splitlines()[:12]:
            clip = load_mono(
                json.loads(line)["path"], sample_rate_hz=SAMPLE_RATE_HZ, duration_s=30.0
            )
            if clip.size and float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) > 1e-3:
                ambience.append(clip)
    return augment.Materials(
        sample_rate_hz=SAMPLE_RATE_HZ, speech=tuple(speech), ambience=tuple(ambience)
    )


def build_augmenter(
    config: TrainConfig, train_tracks: Sequence[Track], *, log: Log
) -> MelAugmenter:
    """The mel caches (music, interference, talkers, rooms) and the augmenter over them."""
    front = mel_cache.MelFront(config.model)
    key = mel_cache.cache_key(config.model)
    pairs = [(t.name, t.audio) for t in train_tracks]
    if config.corpus is None:
        music = mel_cache.stream_of(mel_cache.music_stream(pairs, front)[0])
        cache_dir = None
    else:
        cache_dir = config.corpus / "cache" / f"mel-{key}"
        fingerprint = hashlib.sha1("\n".join(t.name for t in train_tracks).encode()).hexdigest()
        music, _ = mel_cache.cached_stream(
            cache_dir / f"train-{fingerprint[:10]}.npy",
            lambda: mel_cache.music_stream(pairs, front),
            log=log,
            what="train split",
        )
    noises = {
        kind: mel_cache.stream_of(pieces)
        for kind, (pieces, _) in mel_cache.noise_pieces(
            config.corpus, front, seed=config.seed
        ).items()
    }
    speech: MelStream | None = None
    if cache_dir is not None and config.talkers > 0:
        speech, _ = mel_cache.cached_stream(
            cache_dir / f"talkers-{config.talkers}-{int(config.talker_seconds)}.npy",
            lambda: mel_cache.speech_pieces(
                talkers=config.talkers,
                seconds=config.talker_seconds,
                seed=config.seed,
                front=front,
                log=log,
            ),
            log=log,
            what="espeak talkers",
        )
    rooms_path = None if cache_dir is None else cache_dir / f"rooms-{config.rooms}.pt"
    if rooms_path is not None and rooms_path.is_file():
        rooms = torch.load(rooms_path)
    else:
        started = time.perf_counter()
        rooms = mel_cache.room_kernels(config.rooms, seed=config.seed, config=config.model)
        if rooms_path is not None:
            torch.save(rooms, rooms_path)
        log(f"cache: {config.rooms} rooms ({time.perf_counter() - started:.0f} s)")
    reverberant: list[MelStream] = []
    for copy in range(config.reverberant_copies):
        seed = config.seed + 100_000 * (copy + 1)
        if cache_dir is None:
            pieces, _ = mel_cache.reverberant_stream(pairs, front, seed=seed)
            reverberant.append(mel_cache.stream_of(pieces))
            continue
        wet, _ = mel_cache.cached_stream(
            cache_dir / f"train-{fingerprint[:10]}-room{seed}.npy",
            functools.partial(mel_cache.reverberant_stream, pairs, front, seed=seed),
            log=log,
            what=f"train split in rooms (copy {copy + 1})",
        )
        reverberant.append(wet)
    return MelAugmenter(
        music=music,
        noises=noises,
        speech=speech,
        room_kernels=rooms,
        centres_hz=mel_centres_hz(config.model).tolist(),
        config=config.augment,
        reverberant=reverberant,
        groups=track_groups(train_tracks),
    )


def track_groups(tracks: Sequence[Track]) -> npt.NDArray[np.int64]:
    """One group per package: the part of a corpus id before its colon
    (``freedoom:freedoom1/D_E1M1`` is in ``freedoom``); an id without one is its own group."""
    names = [t.name.split(":", 1)[0] for t in tracks]
    index = {name: k for k, name in enumerate(dict.fromkeys(names))}
    return np.array([index[name] for name in names], dtype=np.int64)


# --- loss -------------------------------------------------------------------------------


def nt_xent(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float,
    *,
    exclude: torch.Tensor | None = None,
    outsiders: torch.Tensor | None = None,
    queue: torch.Tensor | None = None,
    queue_exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2n unit vectors; a[i] and b[i] are positives.

    ``exclude [n, n]`` (bool) marks pairs of excerpts that are neither
    positives nor negatives of each other (the same music a second apart);
    their four view pairs drop out of the softmax. ``outsiders [m, d]`` are
    unit vectors of what is not music (a voice alone, noise): extra negatives
    of every view, positives of none. ``queue [q, d]`` are clean views of
    earlier batches, extra negatives too; ``queue_exclude [n, q]`` (bool)
    marks those of the same music as excerpt ``i``, dropped for both its views.
    """
    n = a.shape[0]
    z = torch.cat([a, b], dim=0)
    logits = z @ z.t() / temperature
    extra_drop: list[torch.Tensor] = []
    if outsiders is not None and outsiders.shape[0] > 0:
        logits = torch.cat([logits, z @ outsiders.t() / temperature], dim=1)
        extra_drop.append(torch.zeros(2 * n, outsiders.shape[0], dtype=torch.bool, device=z.device))
    if queue is not None and queue.shape[0] > 0:
        logits = torch.cat([logits, z @ queue.t() / temperature], dim=1)
        if queue_exclude is None:
            queue_exclude = torch.zeros(n, queue.shape[0], dtype=torch.bool)
        extra_drop.append(queue_exclude.to(z.device).repeat(2, 1))
    drop = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    if exclude is not None:
        drop = drop | exclude.to(z.device).repeat(2, 2)
        positive = torch.eye(n, dtype=torch.bool, device=z.device)
        keep = torch.zeros(2 * n, 2 * n, dtype=torch.bool, device=z.device)
        keep[:n, n:] = positive
        keep[n:, :n] = positive
        drop = drop & ~keep
    if extra_drop:
        drop = torch.cat([drop, *extra_drop], dim=1)
    logits = logits.masked_fill(drop, -1e9)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    loss: torch.Tensor = functional.cross_entropy(logits, targets)
    return loss


def alignment(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between positives ``a[i]`` and ``b[i]`` (unit vectors: 0 when
    equal, 2 when orthogonal)."""
    return (a - b).pow(2).sum(dim=1).mean()


def dda_projection(
    clean: npt.NDArray[np.floating[Any]],
    degraded: npt.NDArray[np.floating[Any]],
    *,
    shrinkage: float = 1e-3,
    apart: npt.NDArray[np.floating[Any]] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distortion discriminant analysis (Burges, Platt and Jana, 2003) of ``[n, d]`` pairs.

    Returns ``(centre, W, ratios)``: the clean vectors' mean, and the ``[d, d]`` solution
    of the generalised eigenproblem ``S_signal w = λ S_noise w`` with columns by
    decreasing ``λ`` (the ``ratios``), scaled so that ``Wᵀ S_noise W = I``. ``S_signal``
    is the clean vectors' covariance and ``S_noise`` the second moment of the
    differences ``degraded - clean``, plus ``shrinkage`` × its mean eigenvalue on the
    diagonal (directions the pairs never moved along are not trusted to be noise-free).
    ``apart``, ``[m, d]`` vectors of what is not music (speech, noise), joins the clean
    vectors in ``S_signal`` (not in the centre): the directions that tell them from music
    count as signal, so a map that quiets babble does not also bring a voice alone near
    the music.
    """
    x = np.asarray(clean, dtype=np.float64)
    y = np.asarray(degraded, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] < 2:
        raise ConfigError(f"need [n, d] clean and degraded pairs, n >= 2; got {x.shape}, {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("the pairs hold NaN or inf")
    if not shrinkage > 0.0:
        raise ConfigError(f"shrinkage must be > 0, got {shrinkage}")
    d = x.shape[1]
    centre = x.mean(axis=0)
    spread = x
    if apart is not None:
        others = np.asarray(apart, dtype=np.float64)
        if others.ndim != 2 or others.shape[1] != d or not np.isfinite(others).all():
            raise ConfigError(f"apart must be finite [m, {d}] vectors, got {others.shape}")
        spread = np.concatenate([x, others])
    signal = np.cov(spread, rowvar=False)
    diff = y - x
    noise = diff.T @ diff / x.shape[0]
    noise += shrinkage * max(float(np.trace(noise)) / d, 1e-12) * np.eye(d)
    # S_n = L Lᵀ; λ, U of L⁻¹ S_s L⁻ᵀ; W = L⁻ᵀ U gives Wᵀ S_n W = I.
    lower = np.linalg.cholesky(noise)
    inner = np.linalg.solve(lower, np.linalg.solve(lower, signal).T)
    ratios, vectors = np.linalg.eigh((inner + inner.T) / 2.0)
    order = np.argsort(ratios)[::-1]
    matrix = np.linalg.solve(lower.T, vectors[:, order])
    return centre, matrix, ratios[order]


def neighbours(
    track: npt.NDArray[np.int64], frame: npt.NDArray[np.int64], gap_frames: int
) -> torch.Tensor:
    """``[n, n]`` bool: excerpts of one track less than ``gap_frames`` apart (self included)."""
    return same_music(track, frame, track, frame, gap_frames)


def same_music(
    track: npt.NDArray[np.int64],
    frame: npt.NDArray[np.int64],
    other_track: npt.NDArray[np.int64],
    other_frame: npt.NDArray[np.int64],
    gap_frames: int,
) -> torch.Tensor:
    """``[n, m]`` bool: excerpt ``i`` and other excerpt ``j`` are one track less than
    ``gap_frames`` apart."""
    same = track[:, None] == other_track[None, :]
    close = np.abs(frame[:, None] - other_frame[None, :]) < gap_frames
    return torch.from_numpy(same & close)


class NegativeQueue:
    """First in, first out: the last ``size`` clean index views, with their track and frame,
    so that views of the same music (one track, less than the mask gap apart) are no
    negatives of each other."""

    def __init__(self, size: int, dim: int) -> None:
        self.size = size
        self.vectors = torch.zeros(0, dim)
        self.track = np.zeros(0, dtype=np.int64)
        self.frame = np.zeros(0, dtype=np.int64)

    def exclude(
        self, track: npt.NDArray[np.int64], frame: npt.NDArray[np.int64], gap_frames: int
    ) -> torch.Tensor:
        """``[n, len(queue)]`` bool: queued views of the same music as each excerpt."""
        return same_music(track, frame, self.track, self.frame, gap_frames)

    def push(
        self, vectors: torch.Tensor, track: npt.NDArray[np.int64], frame: npt.NDArray[np.int64]
    ) -> None:
        self.vectors = torch.cat([self.vectors, vectors.detach().cpu()])[-self.size :]
        self.track = np.concatenate([self.track, track])[-self.size :]
        self.frame = np.concatenate([self.frame, frame])[-self.size :]

    def state(self) -> dict[str, Any]:
        return {"vectors": self.vectors, "track": self.track, "frame": self.frame}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.push(state["vectors"], state["track"], state["frame"])


# --- validation ---------------------------------------------------------------------------


@dataclass
class ValSet:
    """Benchmark-style retrieval on the val split.

    The library is every window of every val track at the 0.5 s index hop.
    A query is a 4 s window degraded by one of the benchmark's conditions; its
    nearest library window should be its track (``track``), within 1 s of the
    true position (``hit1``: the matcher's path tolerates that much) or 0.5 s
    (``hit05``).
    """

    queries: FloatArray  # [q, 64000]
    conditions: list[str]
    query_track: npt.NDArray[np.int64]
    query_pos_s: npt.NDArray[np.float64]
    library: list[FloatArray]  # the val tracks, windowed on the fly (no 4 GB copy)
    db_track: npt.NDArray[np.int64]
    db_pos_s: npt.NDArray[np.float64]

    def library_windows(self) -> list[FloatArray]:
        """Each track's windows at the index hop, as strided views ``[k, 64000]``."""
        return [
            np.lib.stride_tricks.sliding_window_view(audio, WINDOW_SAMPLES)[::INDEX_HOP]
            for audio in self.library
        ]


def build_valset(
    tracks: Sequence[Track],
    *,
    per_condition: int,
    seed: int,
    materials: augment.Materials,
    conditions: Sequence[str] | None = None,
) -> ValSet:
    rng = np.random.default_rng(seed)
    queries: list[FloatArray] = []
    names: list[str] = []
    q_track: list[int] = []
    q_pos: list[float] = []
    for name, condition in augment.CONDITIONS.items():
        if conditions is not None and name not in conditions:
            continue
        if name == "codec64" and not augment.codec_available("mp3"):
            continue
        for _ in range(per_condition):
            track_id = int(rng.integers(len(tracks)))
            audio = tracks[track_id].audio
            need = math.ceil(WINDOW_SAMPLES * condition.tempo_factor) + SAMPLE_RATE_HZ
            start = int(rng.integers(0, max(1, audio.shape[0] - need)))
            excerpt = audio[start : start + need]
            degraded = condition(
                excerpt, sample_rate_hz=SAMPLE_RATE_HZ, rng=rng, materials=materials
            )
            query = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
            piece = degraded[:WINDOW_SAMPLES]
            query[: piece.shape[0]] = piece
            queries.append(query)
            names.append(name)
            q_track.append(track_id)
            # The window's centre sits tempo_factor × 2 s into the track excerpt.
            centre_s = (
                start / SAMPLE_RATE_HZ
                + condition.tempo_factor * WINDOW_SAMPLES / 2 / SAMPLE_RATE_HZ
            )
            q_pos.append(centre_s - WINDOW_SAMPLES / 2 / SAMPLE_RATE_HZ)
    db_track: list[int] = []
    db_pos: list[float] = []
    for track_id, track in enumerate(tracks):
        for p in range(0, track.audio.shape[0] - WINDOW_SAMPLES + 1, INDEX_HOP):
            db_track.append(track_id)
            db_pos.append(p / SAMPLE_RATE_HZ)
    return ValSet(
        queries=np.stack(queries).astype(np.float32),
        conditions=names,
        query_track=np.array(q_track, dtype=np.int64),
        query_pos_s=np.array(q_pos),
        library=[t.audio for t in tracks],
        db_track=np.array(db_track, dtype=np.int64),
        db_pos_s=np.array(db_pos),
    )


def embed_all(model: torch.nn.Module, windows: FloatArray, device: torch.device) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for start in range(0, windows.shape[0], 256):
            chunk = torch.from_numpy(np.ascontiguousarray(windows[start : start + 256])).to(device)
            out.append(model(chunk).cpu())
    return torch.cat(out)


def evaluate(model: torch.nn.Module, valset: ValSet, device: torch.device) -> dict[str, Any]:
    """Scores any waveform → unit-vector module (training's, or a loaded model file).

    Per condition: ``track``, ``hit1`` and ``hit05`` rates; ``mean`` is the
    mean ``hit1`` over conditions, ``mean_track`` the mean ``track``.
    """
    was_training = model.training
    model.eval()
    db = torch.cat([embed_all(model, w, device) for w in valset.library_windows()])
    queries = embed_all(model, valset.queries, device)
    model.train(was_training)
    best = torch.argmax(queries @ db.t(), dim=1).numpy()
    track_ok = valset.db_track[best] == valset.query_track
    error_s = np.abs(valset.db_pos_s[best] - valset.query_pos_s)
    per: dict[str, dict[str, list[bool]]] = {}
    for name, ok, err in zip(valset.conditions, track_ok, error_s, strict=True):
        cell = per.setdefault(name, {"track": [], "hit1": [], "hit05": []})
        cell["track"].append(bool(ok))
        cell["hit1"].append(bool(ok and err <= 1.0))
        cell["hit05"].append(bool(ok and err <= 0.5))
    result: dict[str, Any] = {
        name: {k: round(float(np.mean(v)), 4) for k, v in cell.items()}
        for name, cell in per.items()
    }
    result["mean"] = float(np.mean([c["hit1"] for c in result.values()]))
    result["mean_track"] = float(
        np.mean([c["track"] for k, c in result.items() if isinstance(c, dict)])
    )
    return result


# --- the loop -------------------------------------------------------------------------------


def lr_at(config: TrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _checkpoint(
    *,
    model: EncoderNet,
    optimiser: torch.optim.Optimizer,
    config: TrainConfig,
    step: int,
    rng: np.random.Generator,
    best: dict[str, Any],
    val: dict[str, Any] | None,
    train_seconds: float,
    queue: NegativeQueue,
) -> dict[str, Any]:
    return {
        "queue": queue.state(),
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "model_config": config.model.to_dict(),
        "train_config": config.to_dict(),
        "step": step,
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "best": best,
        "val": val,
        "elapsed_s": train_seconds,
    }


def read_init(config: TrainConfig) -> dict[str, Any]:
    """Another run's weights to start from; its network must have this run's shape.

    A training checkpoint (``RUN/last.pt``) or an exported model file
    (``inference/models/encoder-v10p.pt``): from the latter the network's weights, in
    float32, without its projection (a fine-tune fits its own) or its traced front end
    (fixed, rebuilt by the run). So a shipped model is a starting point that outlives the
    session whose ``runs/`` folder held its checkpoint.
    """
    path = Path(str(config.init))
    try:
        with warnings.catch_warnings():
            # An exported file is a TorchScript archive: torch.load hands it to
            # torch.jit.load, and says so.
            warnings.filterwarnings("ignore", message=".*TorchScript archive")
            state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        raise ConfigError(f"cannot read the starting checkpoint {path}: {err}") from err
    if isinstance(state, torch.jit.ScriptModule):
        state = _exported_weights(path, state)
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(
            f"{path} is not a training checkpoint (RUN/best.pt or RUN/last.pt)"
            " or an exported encoder"
        )
    saved = ModelConfig.from_dict(state["model_config"])
    weights: dict[str, Any] = state["model"]
    if saved == config.model:
        return weights
    if saved.blocks == 1 and replace(saved, blocks=config.model.blocks) == config.model:
        return pool_in_blocks(weights, saved, config.model.blocks)
    raise ConfigError(f"{path} holds a network of another shape than this run's")


def _exported_weights(path: Path, scripted: torch.jit.ScriptModule) -> dict[str, Any]:
    """An exported encoder's network weights and shape, in a checkpoint's keys."""
    try:
        model_config = read_metadata(path)["model"]
    except (ModelError, KeyError) as err:
        raise ConfigError(f"{path}: an exported encoder without its network's shape") from err
    weights = {
        key: value.float() if value.is_floating_point() else value
        for key, value in scripted.state_dict().items()
        if not key.startswith(("frontend.", "post."))
    }
    return {"model": weights, "model_config": model_config}


def _save(checkpoint: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    train_tracks: Sequence[Track] | None = None,
    val_tracks: Sequence[Track] | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Run (or resume) training; writes ``last.pt``, ``best.pt`` and ``log.jsonl`` in ``out_dir``.

    With ``resume``, ``out_dir/last.pt`` decides everything but the time
    budget: weights, optimiser, step, random state and schedule carry on.
    """
    last_path = config.out_dir / "last.pt"
    state: dict[str, Any] | None = None
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"nothing to resume: {last_path} not found")
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        saved = TrainConfig.from_dict(state["train_config"])
        config = replace(saved, time_budget_s=config.time_budget_s, out_dir=config.out_dir)
    init_weights = read_init(config) if state is None and config.init is not None else None
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
    config.out_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    if train_tracks is None or val_tracks is None:
        if config.corpus is None:
            train_tracks = synthetic_split(config.synthetic_tracks, seed=config.seed)
            val_tracks = synthetic_split(
                max(2, config.synthetic_tracks // 4), seed=config.seed + 10_000
            )
        else:
            train_tracks = load_split(config.corpus, "train", log=log)
            val_tracks = load_split(config.corpus, "val", log=log)
            if config.synthetic_mix > 0:
                train_tracks = [
                    *train_tracks,
                    *synthetic_split(config.synthetic_mix, seed=SYNTHETIC_MIX_SEED),
                ]
                log(f"train: {config.synthetic_mix} synthesized tracks join the train split")
    augmenter = build_augmenter(config, train_tracks, log=log)
    valset = build_valset(
        val_tracks,
        per_condition=config.eval_per_condition,
        seed=config.seed + 1,
        materials=val_materials(config.corpus),
    )
    log(
        f"train: {len(valset.queries)} val queries against {len(valset.db_track)} windows;"
        f" set-up {time.perf_counter() - started:.0f} s"
    )

    model = EncoderNet(config.model, make_frontend(config.model)).to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    step = 0
    train_seconds = 0.0
    best: dict[str, Any] = {"score": -1.0, "step": -1}
    log_path = config.out_dir / "log.jsonl"
    queue = NegativeQueue(config.queue, config.model.dim)
    if state is not None:
        queue.restore(state.get("queue"))
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = int(state["step"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        best = dict(state["best"])
        train_seconds = float(state["elapsed_s"])
        log(f"train: resuming at step {step}/{config.steps} ({train_seconds / 60:.1f} min so far)")
    else:
        if init_weights is not None:
            missing, unexpected = model.load_state_dict(init_weights, strict=False)
            if unexpected or any(not key.startswith("frontend.") for key in missing):
                raise ConfigError(
                    f"{config.init} does not hold this network's weights"
                    f" (missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
            log(f"train: starting from the weights of {config.init}")
        log_path.write_text("")

    def save(val: dict[str, Any] | None) -> dict[str, Any]:
        checkpoint = _checkpoint(
            model=model, optimiser=optimiser, config=config, step=step, rng=rng,
            best=best, val=val, train_seconds=train_seconds, queue=queue,
        )  # fmt: skip
        _save(checkpoint, last_path)
        return checkpoint

    chunk_started = time.perf_counter()
    timing = {"data": 0.0, "model": 0.0, "steps": 0}
    losses: list[float] = []
    stop_reason = "schedule done"
    while step < config.steps:
        for group in optimiser.param_groups:
            group["lr"] = lr_at(config, step)
        t0 = time.perf_counter()
        batch = augmenter.draw(rng, config.batch)
        exclude = neighbours(batch.track, batch.frame, config.mask_gap_frames)
        t1 = time.perf_counter()
        index_features = model.features_from_db(batch.index_db.to(device))
        query_features = model.features_from_db(batch.query_db.to(device))
        index_vectors = model.embed_features(index_features)
        query_vectors = model.embed_features(query_features)
        outsider_vectors = None
        if config.outsiders > 0:
            alone = augmenter.outsiders(rng, config.outsiders)
            outsider_vectors = model.embed_features(model.features_from_db(alone.to(device)))
        loss = nt_xent(
            index_vectors,
            query_vectors,
            config.temperature,
            exclude=exclude,
            outsiders=outsider_vectors,
            queue=queue.vectors.to(device) if config.queue > 0 else None,
            queue_exclude=queue.exclude(batch.track, batch.frame, config.mask_gap_frames),
        )
        if config.align_weight > 0.0:
            loss = loss + config.align_weight * alignment(index_vectors, query_vectors)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        if config.queue > 0:
            queue.push(index_vectors, batch.track, batch.frame)
        t2 = time.perf_counter()
        timing["data"] += t1 - t0
        timing["model"] += t2 - t1
        timing["steps"] += 1
        train_seconds += t2 - t0
        losses.append(float(loss.detach()))
        step += 1

        out_of_time = (
            config.time_budget_s is not None
            and time.perf_counter() - chunk_started >= config.time_budget_s
        )
        if step % config.eval_every == 0 or step == config.steps or out_of_time:
            eval_started = time.perf_counter()
            scores = evaluate(model, valset, device)
            per_step = (timing["data"] + timing["model"]) / max(1, timing["steps"])
            record = {
                "step": step,
                "loss": float(np.mean(losses[-config.eval_every :])),
                "lr": lr_at(config, step - 1),
                "train_s": round(train_seconds, 1),
                "views_per_s": round(2 * config.batch / per_step, 1),
                "data_ms": round(1000 * timing["data"] / max(1, timing["steps"]), 1),
                "model_ms": round(1000 * timing["model"] / max(1, timing["steps"]), 1),
                "eval_s": round(time.perf_counter() - eval_started, 1),
                "val": scores,
            }
            timing = {"data": 0.0, "model": 0.0, "steps": 0}
            with log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            improved = scores["mean"] > best["score"]
            if improved:
                best = {"score": scores["mean"], "step": step, "val": scores}
            log(
                f"train: step {step}/{config.steps} loss {record['loss']:.3f}"
                f" val hit1 {scores['mean']:.3f} track {scores['mean_track']:.3f}"
                f" {record['views_per_s']:.0f} views/s (data {record['data_ms']:.0f} ms,"
                f" model {record['model_ms']:.0f} ms) {train_seconds / 60:.1f} min"
                f"{' *' if improved else ''}"
            )
            checkpoint = save(scores)
            if improved:
                _save(checkpoint, config.out_dir / "best.pt")
        if out_of_time:
            stop_reason = "time budget reached; resume with --resume"
            break
    log(f"train: {stop_reason}")
    summary = {
        "steps_run": step,
        "steps": config.steps,
        "best": best,
        "train_seconds": round(train_seconds, 1),
        "train_tracks": len(train_tracks),
        "val_tracks": len(val_tracks),
        "stopped": stop_reason,
    }
    (config.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
