"""Style features of 4 s windows of audio, in numpy: what the fingerprint embedding discards.

The fingerprint encoder is trained to tell two places in one track apart under
noise and EQ, so it keeps little of what makes two tracks of one game or album
sound alike: the instruments and the mix (the spectral envelope), how busy the
music is (spectral flux), its rhythm (the onset envelope's periodicity) and its
tonality (the pitch-class profile). ``window_features`` computes those for each
window, gain-invariant (the level in dB is taken relative to the window's own):

- ``N_MELS`` band means of log-mel power (the timbre/mix), their standard
  deviations over time, and mean absolute frame-to-frame changes (flux);
- ``ONSET_LAGS`` normalised autocorrelations of the onset envelope at
  log-spaced lags from 40 ms to 2 s (rhythm and tempo), and its variation;
- the pitch-class profile, rotated so its strongest class comes first
  (key-invariant: a major and a minor profile still differ), and its entropy;
- the spectral peakiness (mean over frames of the std across bands);
- (version 2) the 10th and 90th percentiles over time of each band's level
  (the dynamics the mean and deviation blur), and, over ``COARSE_BANDS``
  groups of adjacent bands, the modulation spectrum (the share of each group's
  level changes at 0.5–2, 2–4, 4–8 and 8–16 Hz: phrasing, beat, tremolo,
  roughness) and the correlations between the groups' levels over time (which
  parts of the spectrum move together: one instrument or several).

The front end is its own (Hann STFT, HTK mel bands), not the encoder's: the
runtime needs no torchaudio for it, and a live window and an indexed one go
through the same code. ``FEATURE_DIM`` features per window, float32.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.errors import ConfigError

FloatArray = npt.NDArray[np.float32]

N_FFT = 1024
HOP_SAMPLES = 320
"""20 ms frames at 16 kHz."""
FRAMES_PER_WINDOW = 1 + (WINDOW_SAMPLES - N_FFT) // HOP_SAMPLES
N_MELS = 48
F_MIN_HZ = 40.0
F_MAX_HZ = 7600.0
FLOOR_DB = 80.0
"""Frames quieter than the window's loudest band by more than this count as this quiet."""
ONSET_LAGS = 16
MIN_LAG_FRAMES = 2
MAX_LAG_FRAMES = 100
CHROMA_MIN_HZ = 80.0
CHROMA_MAX_HZ = 4000.0
QUANTILES_PCT = (10.0, 90.0)
COARSE_BANDS = 8
"""Groups of ``N_MELS // COARSE_BANDS`` adjacent mel bands for the modulation spectrum and
the band correlations."""
FRAME_RATE_HZ = SAMPLE_RATE_HZ / HOP_SAMPLES
MODULATION_BANDS_HZ = ((0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 16.0))
FEATURE_VERSION = 2
"""Bumped whenever the features change: caches and stored vectors name it."""
FEATURE_DIM = (
    3 * N_MELS
    + ONSET_LAGS
    + 1
    + 12
    + 1
    + 1
    + len(QUANTILES_PCT) * N_MELS
    + COARSE_BANDS * len(MODULATION_BANDS_HZ)
    + COARSE_BANDS * (COARSE_BANDS - 1) // 2
)
_BATCH_WINDOWS = 32
"""Windows whose spectrograms are held at once (memory: 32 x 197 x 513 float32, 13 MB)."""


@functools.lru_cache(maxsize=1)
def _filterbanks() -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64], FloatArray]:
    """(mel ``[bins, N_MELS]``, chroma ``[bins, 12]``, onset lags ``[ONSET_LAGS]``, Hann)."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE_HZ)

    def mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = 2595.0 * np.log10(1.0 + hz / 700.0)
        return out

    edges_mel = np.linspace(mel(np.array(F_MIN_HZ)), mel(np.array(F_MAX_HZ)), N_MELS + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    bank = np.zeros((freqs.shape[0], N_MELS))
    for m in range(N_MELS):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        bank[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    chroma = np.zeros((freqs.shape[0], 12))
    inside = (freqs >= CHROMA_MIN_HZ) & (freqs <= CHROMA_MAX_HZ)
    pitch = 12.0 * np.log2(np.maximum(freqs, 1.0) / 440.0) + 69.0
    classes = np.round(pitch).astype(np.int64) % 12
    chroma[np.flatnonzero(inside), classes[inside]] = 1.0
    lags = np.unique(
        np.round(np.geomspace(MIN_LAG_FRAMES, MAX_LAG_FRAMES, ONSET_LAGS)).astype(np.int64)
    )
    while lags.shape[0] < ONSET_LAGS:  # rounding merged two: fill from the top
        lags = np.unique(np.r_[lags, lags.max() + 1])
    hann = np.hanning(N_FFT + 1)[:-1]
    return (
        bank.astype(np.float32),
        chroma.astype(np.float32),
        lags,
        hann.astype(np.float32),
    )


def window_features(windows: npt.NDArray[np.floating]) -> FloatArray:
    """``windows [n, WINDOW_SAMPLES]`` (16 kHz mono) → style features ``[n, FEATURE_DIM]``."""
    x = np.asarray(windows)
    if x.ndim != 2 or x.shape[1] != WINDOW_SAMPLES:
        raise ConfigError(f"style features read [n, {WINDOW_SAMPLES}] windows, got {x.shape}")
    out = np.empty((x.shape[0], FEATURE_DIM), dtype=np.float32)
    for start in range(0, x.shape[0], _BATCH_WINDOWS):
        out[start : start + _BATCH_WINDOWS] = _features(x[start : start + _BATCH_WINDOWS])
    return out


def _features(windows: npt.NDArray[np.floating]) -> FloatArray:
    mel_bank, chroma_bank, lags, hann = _filterbanks()
    audio = np.nan_to_num(np.asarray(windows, dtype=np.float32))
    n = audio.shape[0]
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT, axis=1)[
        :, ::HOP_SAMPLES
    ]  # [n, F, N_FFT], a view
    spectrum = np.fft.rfft(frames * hann, axis=2)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)  # [n, F, bins]
    db = 10.0 * np.log10(np.maximum(power @ mel_bank, 1e-10))  # [n, F, N_MELS]
    top = db.max(axis=(1, 2), keepdims=True)
    db = np.maximum(db, top - FLOOR_DB) - top  # gain-invariant, floored
    level = db.mean(axis=(1, 2), keepdims=True)
    band_mean = (db - level).mean(axis=1)
    band_std = db.std(axis=1)
    change = np.diff(db, axis=1)
    flux = np.abs(change).mean(axis=1)
    onset = np.maximum(change, 0.0).mean(axis=2)  # [n, F-1]
    onset = onset - onset.mean(axis=1, keepdims=True)
    energy = np.maximum((onset**2).sum(axis=1), 1e-9)
    auto = np.stack([(onset[:, :-lag] * onset[:, lag:]).sum(axis=1) / energy for lag in lags], 1)
    busy = np.maximum(flux.mean(axis=1, keepdims=True), 1e-6)
    onset_var = onset.std(axis=1, keepdims=True) / busy
    pcp = (power @ chroma_bank).mean(axis=1)  # [n, 12]
    pcp = pcp / np.maximum(pcp.sum(axis=1, keepdims=True), 1e-12)
    shift = pcp.argmax(axis=1)
    rotated = pcp[np.arange(n)[:, None], (shift[:, None] + np.arange(12)[None, :]) % 12]
    entropy = -(pcp * np.log(np.maximum(pcp, 1e-12))).sum(axis=1, keepdims=True) / np.log(12.0)
    peaky = db.std(axis=2).mean(axis=1, keepdims=True)
    quantiles = np.percentile(db - level, QUANTILES_PCT, axis=1)  # [Q, n, N_MELS]
    coarse = db.reshape(n, db.shape[1], COARSE_BANDS, N_MELS // COARSE_BANDS).mean(axis=3)
    coarse = coarse - coarse.mean(axis=1, keepdims=True)  # [n, F, COARSE_BANDS]
    modulation = np.abs(np.fft.rfft(coarse, axis=1)) ** 2  # [n, F // 2 + 1, COARSE_BANDS]
    rates_hz = np.fft.rfftfreq(coarse.shape[1], 1.0 / FRAME_RATE_HZ)
    varying = np.maximum(modulation[:, 1:].sum(axis=1), 1e-9)  # [n, COARSE_BANDS]
    shares = np.stack(
        [
            modulation[:, (rates_hz >= lo) & (rates_hz < hi)].sum(axis=1) / varying
            for lo, hi in MODULATION_BANDS_HZ
        ],
        axis=2,
    )  # [n, COARSE_BANDS, len(MODULATION_BANDS_HZ)]
    spread = np.maximum(coarse.std(axis=1), 1e-6)
    corr = np.einsum("nfi,nfj->nij", coarse, coarse) / coarse.shape[1]
    corr = corr / (spread[:, :, None] * spread[:, None, :])
    upper = np.triu_indices(COARSE_BANDS, 1)
    feats = np.concatenate(
        [
            band_mean / 10.0,
            band_std / 10.0,
            flux / 3.0,
            auto,
            onset_var,
            12.0 * rotated - 1.0,
            entropy,
            peaky / 10.0,
            *(q / 10.0 for q in quantiles),
            np.log10(shares + 1e-6).reshape(n, -1) / 2.0,
            corr[:, upper[0], upper[1]],
        ],
        axis=1,
    )
    result: FloatArray = feats.astype(np.float32)
    return result
