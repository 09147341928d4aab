"""The material a training run reads, computed once and cached as mel power in dB.

- **Music:** each track of a split through the model's own front end, end to
  end in one ``[T, n_mels]`` float16 array (``cache/mel-<key>/<split>.npy``,
  memory-mapped) with the track boundaries beside it. The train split of the
  full corpus is about 3.1M frames, 400 MB.
- **Interference** that the benchmark never uses: pink, brown and white
  noise, synthetic babble, the dev packages' one-shot samples (sonic-pi), and
  talkers spoken by espeak-ng from the licence texts under
  /usr/share/common-licenses in a dozen voices (the benchmark's own espeak
  clips and ambience loops stay out).
- **Rooms:** pyroomacoustics impulse responses (RT60 0.2-1.0 s), each turned
  into per-band energy over 20 ms frame lags (``room_kernel``); and whole
  reverberant copies of the train split (``reverberant_stream``): every track
  convolved as a waveform with a room of its own, then through the front end,
  frame-aligned with the dry stream.

Needs the ``[train]`` extra (torchaudio, pyroomacoustics).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.errors import ConfigError, SynestheteError
from synesthete.inference import augment
from synesthete.inference.mel_augment import MelStream, power_to_db
from synesthete.inference.model import ModelConfig, make_frontend
from synesthete.stream.synth import pink_noise, speech_like_noise

FloatArray = npt.NDArray[np.float32]
Log = Callable[[str], None]

ROOM_RT60_S = (0.2, 1.0)
ROOM_LAGS = 50
"""Frame lags of a room kernel: one second at 20 ms."""
VOICES = ("en", "en-us", "en-gb-scotland", "de", "fr", "es", "it", "nl", "pl", "pt", "sv", "cs")
LICENCE_DIR = Path("/usr/share/common-licenses")


def cache_key(config: ModelConfig) -> str:
    """The front end's settings: a cache is valid for exactly one."""
    front = (config.n_mels, config.n_fft, config.hop_length, config.f_min_hz, config.f_max_hz)
    return hashlib.sha1(repr(front).encode()).hexdigest()[:10]


class MelFront:
    """Whole recordings → mel power in dB ``[T, n_mels]``, with the model's front end."""

    def __init__(self, config: ModelConfig) -> None:
        self.frontend = make_frontend(config).eval()

    def __call__(self, audio: FloatArray) -> torch.Tensor:
        with torch.inference_mode():
            power = self.frontend(torch.from_numpy(np.ascontiguousarray(audio, np.float32)))
        return power_to_db(power).t().contiguous().half()


def stream_of(pieces: Sequence[torch.Tensor]) -> MelStream:
    lengths = np.array([p.shape[0] for p in pieces], dtype=np.int64)
    ends = np.cumsum(lengths)
    return MelStream(db=torch.cat(list(pieces)), starts=ends - lengths, ends=ends)


def _save(stream: MelStream, path: Path, names: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, stream.db.numpy())
    meta = {"starts": stream.starts.tolist(), "ends": stream.ends.tolist(), "names": list(names)}
    path.with_suffix(".json").write_text(json.dumps(meta))
    tmp.replace(path)


def _load(path: Path) -> tuple[MelStream, list[str]] | None:
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    db = torch.from_numpy(np.load(path, mmap_mode="r").copy())
    stream = MelStream(
        db=db,
        starts=np.array(meta["starts"], dtype=np.int64),
        ends=np.array(meta["ends"], dtype=np.int64),
    )
    return stream, list(meta["names"])


def cached_stream(
    path: Path,
    make: Callable[[], tuple[list[torch.Tensor], list[str]]],
    *,
    log: Log,
    what: str,
) -> tuple[MelStream, list[str]]:
    """Load ``path`` or build it with ``make`` (mel pieces and their names) and save it."""
    loaded = _load(path)
    if loaded is not None:
        return loaded
    started = time.perf_counter()
    pieces, names = make()
    if not pieces:
        raise ConfigError(f"no material for {what}")
    stream = stream_of(pieces)
    _save(stream, path, names)
    mb = stream.db.numel() * 2 / 1e6
    log(
        f"cache: {what}: {len(pieces)} recordings, {stream.db.shape[0]} frames, {mb:.0f} MB"
        f" ({time.perf_counter() - started:.0f} s)"
    )
    return stream, names


def music_stream(
    tracks: Sequence[tuple[str, FloatArray]], front: MelFront
) -> tuple[list[torch.Tensor], list[str]]:
    return [front(audio) for _, audio in tracks], [name for name, _ in tracks]


def noise_pieces(
    corpus: Path | None, front: MelFront, *, seed: int
) -> dict[str, tuple[list[torch.Tensor], list[str]]]:
    """Interference by kind: minutes of stationary noise, synthetic babble and samples."""
    rng = np.random.default_rng(seed)
    minute = 60.0
    kinds: dict[str, tuple[list[torch.Tensor], list[str]]] = {}
    pink = [
        pink_noise(seconds=minute, sample_rate_hz=SAMPLE_RATE_HZ, seed=seed + k) for k in range(3)
    ]
    kinds["pink"] = ([front(a) for a in pink], [f"pink{k}" for k in range(3)])
    white = [rng.standard_normal(int(minute * SAMPLE_RATE_HZ)).astype(np.float32) * 0.1]
    # Brown: integrated white noise, its drift below ~4 Hz taken out.
    walk = np.cumsum(white[0].astype(np.float64))
    brown = walk - np.convolve(walk, np.ones(4001) / 4001, mode="same")
    kinds["white"] = ([front(a) for a in white], ["white"])
    kinds["brown"] = ([front((brown / np.abs(brown).max()).astype(np.float32))], ["brown"])
    synth = [
        speech_like_noise(
            seconds=minute, sample_rate_hz=SAMPLE_RATE_HZ, seed=seed + 50 + k, talkers=2 + k % 5
        )
        for k in range(5)
    ]
    kinds["synth_babble"] = ([front(a) for a in synth], [f"synth_babble{k}" for k in range(5)])
    listing = None if corpus is None else corpus / "samples.jsonl"
    if listing is not None and listing.is_file():
        from synesthete.index.decode import load_mono

        clips: list[FloatArray] = []
        for line in listing.read_text().splitlines():
            row = json.loads(line)
            try:
                clip = load_mono(row["path"], sample_rate_hz=SAMPLE_RATE_HZ)
            except (SynestheteError, OSError, RuntimeError):
                continue
            if clip.shape[0] >= SAMPLE_RATE_HZ // 4 and np.abs(clip).max() > 1e-3:
                clips.append(clip / float(np.abs(clip).max()))
        if clips:
            # One-shots strung together with short gaps: a sampler, a game, a kitchen.
            order = rng.permutation(len(clips))
            strung: list[FloatArray] = []
            for k in order:
                strung.append(clips[int(k)])
                strung.append(np.zeros(int(rng.uniform(0.0, 0.3) * SAMPLE_RATE_HZ), np.float32))
            audio = np.concatenate(strung)
            kinds["samples"] = ([front(audio)], ["samples"])
    return kinds


def _sentences() -> list[str]:
    text = []
    for name in ("GPL-3", "LGPL-3", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "Artistic"):
        path = LICENCE_DIR / name
        if path.is_file():
            text.append(path.read_text(errors="replace"))
    words = re.sub(r"[^A-Za-z0-9.,;:'\- ]+", " ", " ".join(text))
    return [s.strip() for s in re.split(r"(?<=[.;:])\s+", words) if 20 <= len(s.strip()) <= 240]


def speech_pieces(
    *, talkers: int, seconds: float, seed: int, front: MelFront, log: Log
) -> tuple[list[torch.Tensor], list[str]]:
    """Talkers spoken by espeak-ng: each a stream of sentences with short pauses.

    Texts: the licence texts shipped with Debian; the benchmark's espeak clips
    use texts written for the project, so the two never share an utterance.
    """
    espeak = shutil.which("espeak-ng")
    sentences = _sentences()
    if espeak is None or not sentences:
        log("cache: espeak-ng or licence texts missing; training babble is synthetic only")
        return [], []
    from synesthete.index.decode import load_mono

    rng = np.random.default_rng(seed)
    pieces: list[torch.Tensor] = []
    names: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(talkers):
            voice = VOICES[k % len(VOICES)]
            variant = ("", "+m3", "+f2", "+m7", "+f4", "+klatt")[int(rng.integers(6))]
            speed_wpm = int(rng.integers(130, 200))
            pitch = int(rng.integers(25, 75))
            parts: list[FloatArray] = []
            total = 0.0
            while total < seconds:
                text = " ".join(sentences[int(i)] for i in rng.integers(len(sentences), size=3))
                wav = Path(tmp) / f"{k}.wav"
                done = subprocess.run(
                    [espeak, "-v", voice + variant, "-s", str(speed_wpm), "-p", str(pitch),
                     "-w", str(wav), text],
                    capture_output=True, timeout=60, check=False,
                )  # fmt: skip
                if done.returncode != 0 or not wav.is_file():
                    break
                clip = load_mono(wav, sample_rate_hz=SAMPLE_RATE_HZ)
                parts.append(clip)
                parts.append(np.zeros(int(rng.uniform(0.1, 0.6) * SAMPLE_RATE_HZ), np.float32))
                total += clip.shape[0] / SAMPLE_RATE_HZ
            if parts:
                pieces.append(front(np.concatenate(parts)))
                names.append(f"espeak:{voice}{variant}")
    return pieces, names


def room_kernel(impulse_response: npt.NDArray[np.float64], config: ModelConfig) -> torch.Tensor:
    """Energy of each 20 ms segment of an impulse response in each mel band: ``[n_mels, lags]``.

    Reverberant mel power is then approximately this kernel convolved with the
    dry mel power along time (the convolutive transfer function model). Scaled
    so the bands' mean total gain is one: the room's colour stays, its level
    goes (windows are peak-normalised anyway).
    """
    from synesthete.inference.frontend import mel_filterbank

    hop = config.hop_length
    response = np.zeros(ROOM_LAGS * hop)
    take = min(response.shape[0], impulse_response.shape[0])
    response[:take] = impulse_response[:take]
    segments = response.reshape(ROOM_LAGS, hop)
    spectrum = np.abs(np.fft.rfft(segments, n=config.n_fft, axis=1)) ** 2  # [lags, bins]
    fbank = mel_filterbank(
        sample_rate_hz=SAMPLE_RATE_HZ,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        f_min_hz=config.f_min_hz,
        f_max_hz=config.f_max_hz,
    )
    # Peak-normalised triangles: the bands' gain, not their width.
    fbank = fbank / np.maximum(fbank.sum(axis=1, keepdims=True), 1e-12)
    kernel = fbank @ spectrum.T  # [n_mels, lags]
    kernel /= max(1e-12, float(kernel.sum(axis=1).mean()))
    return torch.from_numpy(kernel.astype(np.float32))


def reverberant_stream(
    tracks: Sequence[tuple[str, FloatArray]],
    front: Callable[[FloatArray], torch.Tensor],
    *,
    seed: int,
) -> tuple[list[torch.Tensor], list[str]]:
    """Each track played in a room of its own (waveform convolution), as mel dB.

    The per-band kernels are an approximation (the convolutive transfer
    function: energy per band and 20 ms lag, no phase). A copy of the whole
    split reverberated in the waveform domain carries what they miss (comb
    colouring inside a band, smearing inside a frame) at the cost of one more
    cache: frame ``t`` of the copy is frame ``t`` of the dry track, so a view
    reads it at exactly the dry positions. The tail past the track's end is
    cut; the response has unit energy (levels are set by the views' SNR draws).
    """
    pieces: list[torch.Tensor] = []
    names: list[str] = []
    for k, (name, audio) in enumerate(tracks):
        response = augment.room_impulse_response(
            sample_rate_hz=SAMPLE_RATE_HZ, rng=seed + k, rt60_s=ROOM_RT60_S
        )
        response = response / max(1e-12, float(np.sqrt(np.sum(response**2))))
        wet = augment.fft_convolve(audio, response)[: audio.shape[0]]
        pieces.append(front(wet.astype(np.float32)))
        names.append(name)
    return pieces, names


def room_kernels(count: int, *, seed: int, config: ModelConfig) -> torch.Tensor:
    kernels = [
        room_kernel(
            augment.room_impulse_response(
                sample_rate_hz=SAMPLE_RATE_HZ, rng=seed + k, rt60_s=ROOM_RT60_S
            ),
            config,
        )
        for k in range(count)
    ]
    return torch.stack(kernels) if kernels else torch.zeros(0, config.n_mels, ROOM_LAGS)
