"""Fakes for tests: a tiny deterministic encoder and procedurally generated "tracks".

``FakeEncoder`` satisfies ``synesthete.inference.encoder.Encoder`` with numpy
only. It is not a good music model, but it separates the synthetic tracks of
``make_tone_track`` and is robust to small time shifts, which is all the
index and matcher tests need.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.errors import AudioFormatError

FAKE_ENCODER_NAME = "fake-v1"
FAKE_DIM = 32
_N_SUB_BLOCKS = 8
_N_BANDS = 64
_LOW_HZ = 60.0
_HIGH_HZ = 7600.0
_PROJECTION_SEED = 1234


class FakeEncoder:
    """Log band energies over 8 sub-blocks, pooled to mean/std per band, projected to 32-d.

    Per sub-block (0.5 s) the log energies of 64 log-spaced bands (60 Hz to
    7.6 kHz, floored at the window's mean band energy) are taken relative to
    their mean over bands, so gain does not matter; the mean and standard
    deviation over the sub-blocks (so a shift of a fraction of a window
    changes little) give 128 features, projected by a fixed seeded Gaussian
    matrix to ``dim`` and L2-normalised. On 10 ``make_tone_track`` tracks a
    4 s excerpt at a random offset finds its own track first (nearest window)
    every time, and 95 % of the time with white noise 28 dB below the peak.

    ``calls`` and ``windows_embedded`` count usage, so tests can check that an
    index update re-used stored windows instead of embedding them again.
    """

    def __init__(self, *, dim: int = FAKE_DIM, name: str = FAKE_ENCODER_NAME) -> None:
        self._dim = dim
        self._name = name
        self.calls = 0
        self.windows_embedded = 0
        sub_samples = WINDOW_SAMPLES // _N_SUB_BLOCKS
        freqs_hz = np.fft.rfftfreq(sub_samples, d=1.0 / SAMPLE_RATE_HZ)
        edges_hz = np.geomspace(_LOW_HZ, _HIGH_HZ, _N_BANDS + 1)
        # [bins, bands] 0/1 membership; a matrix product sums each band's power.
        band_of_bin = np.searchsorted(edges_hz, freqs_hz, side="right") - 1
        membership = np.zeros((freqs_hz.shape[0], _N_BANDS), dtype=np.float32)
        inside = (band_of_bin >= 0) & (band_of_bin < _N_BANDS)
        membership[np.nonzero(inside)[0], band_of_bin[inside]] = 1.0
        self._membership = membership
        self._taper = np.hanning(sub_samples).astype(np.float32)
        rng = np.random.default_rng(_PROJECTION_SEED)
        self._projection = (
            rng.standard_normal((2 * _N_BANDS, dim)) / np.sqrt(2 * _N_BANDS)
        ).astype(np.float32)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def sample_rate_hz(self) -> int:
        return SAMPLE_RATE_HZ

    @property
    def window_samples(self) -> int:
        return WINDOW_SAMPLES

    def embed(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``[n, window_samples]`` float32 -> ``[n, dim]`` unit rows."""
        if windows.ndim != 2 or windows.shape[1] != WINDOW_SAMPLES:
            raise AudioFormatError(f"expected [n, {WINDOW_SAMPLES}] windows, got {windows.shape}")
        if not np.isfinite(windows).all():
            raise AudioFormatError("windows contain NaN or infinite samples")
        self.calls += 1
        self.windows_embedded += windows.shape[0]
        n = windows.shape[0]
        blocks = windows.astype(np.float32, copy=False).reshape(n, _N_SUB_BLOCKS, -1)
        power = np.abs(np.fft.rfft(blocks * self._taper, axis=-1)) ** 2  # [n, 8, bins]
        energy = power.astype(np.float32) @ self._membership  # [n, 8, bands]
        # Floor at the window's mean band energy: bands far below it carry mostly
        # noise, and without the floor they dominate the log features.
        floor = energy.mean(axis=(1, 2), keepdims=True) + 1e-10
        bands = np.log10(energy + floor)
        bands -= bands.mean(axis=-1, keepdims=True)
        features = np.concatenate([bands.mean(axis=1), bands.std(axis=1)], axis=-1)
        out = features.astype(np.float32) @ self._projection
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        result: npt.NDArray[np.float32] = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return result


def make_tone_track(
    *, seed: int, duration_s: float, sample_rate_hz: int = SAMPLE_RATE_HZ, channels: int = 1
) -> npt.NDArray[np.float32]:
    """A deterministic synthetic "track": ``[n]`` (or ``[n, channels]``) float32, peak 0.5.

    A random tempo and timbre, a random chord every two beats (harmonic
    tones with attack/decay envelopes), a noise snare and a sine kick on the
    beats, and hats between them. Different seeds sound clearly different.
    """
    rng = np.random.default_rng(seed)
    n_samples = round(duration_s * sample_rate_hz)
    t_s = np.arange(n_samples, dtype=np.float64) / sample_rate_hz
    out = np.zeros(n_samples, dtype=np.float64)
    beat_s = 60.0 / rng.uniform(80.0, 140.0)
    partial_gains = rng.uniform(0.1, 1.0, size=6) / np.arange(1, 7)
    decay_per_s = rng.uniform(0.5, 3.0)
    chord_s = 2 * beat_s
    n_chords = int(np.ceil(duration_s / chord_s))
    for c in range(n_chords):
        start = round(c * chord_s * sample_rate_hz)
        stop = min(n_samples, round((c + 1) * chord_s * sample_rate_hz))
        if start >= stop:
            break
        local_s = t_s[start:stop] - t_s[start]
        envelope = np.minimum(1.0, local_s / 0.01) * np.exp(-decay_per_s * local_s)
        root_midi = rng.integers(40, 64)
        intervals = (0, 4, 7) if rng.random() < 0.5 else (0, 3, 7)
        for interval in (*intervals, 12 + intervals[rng.integers(0, 3)]):
            f0_hz = 440.0 * 2.0 ** ((root_midi + interval - 69) / 12.0)
            for k, gain in enumerate(partial_gains, start=1):
                if k * f0_hz < 0.45 * sample_rate_hz:
                    out[start:stop] += gain * envelope * np.sin(2 * np.pi * k * f0_hz * local_s)
    beat_samples = beat_s * sample_rate_hz
    hit_len = int(0.15 * sample_rate_hz)
    hit_t_s = np.arange(hit_len) / sample_rate_hz
    kick = np.sin(2 * np.pi * 55.0 * hit_t_s) * np.exp(-hit_t_s / 0.08) * 2.0
    snare = rng.standard_normal(hit_len) * np.exp(-hit_t_s / 0.05) * 0.8
    hat_noise = np.diff(rng.standard_normal(hit_len + 1)) * np.exp(-hit_t_s / 0.01) * 0.3
    n_beats = int(n_samples / beat_samples) + 1
    for b in range(2 * n_beats):
        start = round(b * beat_samples / 2)
        if start >= n_samples:
            break
        stop = min(n_samples, start + hit_len)
        if b % 2 == 1:
            hit = hat_noise
        elif (b // 2) % 2 == 0:
            hit = kick
        else:
            hit = snare
        out[start:stop] += hit[: stop - start]
    out += 0.01 * rng.standard_normal(n_samples)
    out *= 0.5 / max(float(np.abs(out).max()), 1e-9)
    mono = out.astype(np.float32)
    if channels == 1:
        return mono
    # Slightly different channel gains, so a downmix is not a trivial copy.
    gains = np.linspace(1.0, 0.8, channels, dtype=np.float32)
    return (mono[:, None] * gains[None, :]).astype(np.float32)


# -- audio files on disk ---------------------------------------------------------

FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
"""Suffix -> (soundfile format, subtype); all written by the pip soundfile wheel."""


def write_audio(path: Path, audio: npt.NDArray[np.float32], *, sample_rate_hz: int) -> Path:
    """Write ``audio`` (``[n]`` or ``[n, channels]``) in the format its suffix names."""
    fmt, subtype = FORMATS[path.suffix.lower().lstrip(".")]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate_hz, format=fmt, subtype=subtype)
    return path


def write_tone_file(
    path: Path,
    *,
    seed: int,
    duration_s: float = 12.0,
    sample_rate_hz: int = 44_100,
    channels: int = 2,
) -> Path:
    audio = make_tone_track(
        seed=seed, duration_s=duration_s, sample_rate_hz=sample_rate_hz, channels=channels
    )
    return write_audio(path, audio, sample_rate_hz=sample_rate_hz)


GOOD_TRACKS: tuple[tuple[str, int, int, int], ...] = (
    # (relative path, seed, sample rate, channels), listed in scan order
    ("Album One/01_First-Song.wav", 1, 44_100, 2),
    ("Album One/02 Second.flac", 2, 48_000, 1),
    ("Album One/03-third_song.ogg", 3, 44_100, 2),
    ("Album Two/d-fourth.mp3", 4, 44_100, 2),
    ("Album Two/E_FIFTH.FLAC", 5, 22_050, 2),
    ("Album Two/sub/sixth.opus", 6, 48_000, 2),
)


def write_good_library(folder: Path, *, duration_s: float = 12.0) -> list[Path]:
    """Six distinct tracks in wav/flac/ogg/mp3/opus, mixed rates and channel counts."""
    return [
        write_tone_file(
            folder / rel, seed=seed, duration_s=duration_s, sample_rate_hz=rate, channels=ch
        )
        for rel, seed, rate, ch in GOOD_TRACKS
    ]


def write_bad_files(folder: Path) -> dict[str, Path]:
    """Files the builder must skip, by kind: each has an audio suffix."""
    folder.mkdir(parents=True, exist_ok=True)
    bad: dict[str, Path] = {}
    bad["empty"] = folder / "empty.wav"
    bad["empty"].write_bytes(b"")
    bad["corrupt"] = folder / "corrupt.wav"
    bad["corrupt"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    bad["truncated"] = folder / "truncated.wav"
    flac_bytes = io.BytesIO()
    audio = make_tone_track(seed=98, duration_s=8.0)
    sf.write(flac_bytes, audio, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
    # A FLAC header that promises 8 s, cut after a few frames, under a .wav name.
    bad["truncated"].write_bytes(flac_bytes.getvalue()[:3000])
    bad["text"] = folder / "notes.mp3"
    bad["text"].write_text("this is not an mp3 file\n" * 50, encoding="utf-8")
    bad["silent"] = write_audio(
        folder / "silent.wav", np.zeros(16_000 * 6, dtype=np.float32), sample_rate_hz=16_000
    )
    bad["short"] = write_tone_file(folder / "short.flac", seed=99, duration_s=2.0)
    return bad


def build_tone_index(root: Path, *, tracks: int, duration_s: float) -> Path:
    """``root/index``: an index of ``tracks`` mono tone tracks (seeds 1..tracks, at 16 kHz,
    in ``root/music``) embedded by the ``FakeEncoder``."""
    from synesthete.index.builder import build_index
    from synesthete.index.config import IndexConfig

    for seed in range(1, tracks + 1):
        write_tone_file(
            root / "music" / f"{seed}.wav",
            seed=seed,
            duration_s=duration_s,
            sample_rate_hz=SAMPLE_RATE_HZ,
            channels=1,
        )
    build_index(root / "index", [root / "music"], encoder=FakeEncoder(), config=IndexConfig())
    return root / "index"


# -- cover art -----------------------------------------------------------------------


def png_bytes(width: int, height: int, *, seed: int) -> bytes:
    """A real RGB PNG of ``width`` x ``height``: a gradient whose colours follow ``seed``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    y, x = np.mgrid[0:height, 0:width]
    red = (base[0] + 255 * x // max(1, width)) % 256
    green = (base[1] + 255 * y // max(1, height)) % 256
    pixels = np.stack([red, green, np.full_like(x, base[2])], axis=-1).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def embed_picture(path: Path, data: bytes, *, mime: str, kind: int = 3) -> None:
    """Add a picture of type ``kind`` (3: front cover) to an audio file's tags, as taggers
    do: an ID3 APIC frame (MP3), a FLAC picture block, a ``METADATA_BLOCK_PICTURE``
    comment (Ogg Vorbis, Opus)."""
    import mutagen
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, ID3, ID3NoHeaderError

    suffix = path.suffix.lower()
    if suffix == ".mp3":
        try:
            tags = ID3(path)
        except ID3NoHeaderError:
            tags = ID3()
        tags.add(APIC(encoding=3, mime=mime, type=kind, desc=f"picture {kind}", data=data))
        tags.save(path)
        return
    picture = Picture()
    picture.type = kind
    picture.mime = mime
    picture.data = data
    if suffix == ".flac":
        flac = FLAC(path)
        flac.add_picture(picture)
        flac.save()
        return
    audio = mutagen.File(path)
    pictures = list(audio.get("metadata_block_picture", []))
    pictures.append(base64.b64encode(picture.write()).decode("ascii"))
    audio["metadata_block_picture"] = pictures
    audio.save()
