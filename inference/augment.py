"""Degradations: what happens to music between a library file and a listener's input.

The recognition benchmark (issue 3) runs every query through one named
condition of ``CONDITIONS``; encoder training applies the same functions on
the fly. Each function takes mono float32 audio ``[n]`` and returns float32
audio, does no file I/O, and is deterministic given its ``rng``
(a ``numpy.random.Generator``, or an int seed). Functions that draw nothing
at random (``speed``, ``tempo``, ``pitch_shift``, ``codec``, ``band_limit``)
take no ``rng``.

Primitives do not clip or renormalise: ``add_noise_at_snr`` may return peaks
above 1. ``limit_peak`` scales a result down (never up), which keeps every
ratio (SNR included) intact; the named conditions apply it last.

Heavy or optional libraries load lazily: pyroomacoustics for ``room`` and
``room_impulse_response``; libsndfile's MP3/Opus encoders (through soundfile)
for ``codec``. When one is missing the function raises
``DegradationUnavailableError`` with the fix in its message.
"""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import soxr

from synesthete.errors import AudioFormatError, ConfigError, SynestheteError
from synesthete.stream.synth import pink_noise, speech_like_noise

FloatArray = npt.NDArray[np.float32]
RngLike = np.random.Generator | int

SPEED_OF_SOUND_M_S = 343.0
PEAK_LIMIT = 0.99
"""``limit_peak`` target: just under full scale, so a 16-bit WAV write never clips."""

PHONE_BAND_HZ = (300.0, 3400.0)
"""Narrowband telephony: what a phone call or a cheap phone mic passes."""
LAPTOP_BAND_HZ = (100.0, 8000.0)
"""A laptop or webcam mic: tiny capsule (no bass), wideband voice processing (no air)."""
BAND_ORDER = 4
"""Butterworth order of ``band_limit`` (24 dB/octave): a typical device roll-off."""

_MIN_FACTOR = 0.5
_MAX_FACTOR = 2.0
_MAX_SEMITONES = 12.0
_PV_WINDOW_S = 0.05
"""Phase-vocoder window: long enough to resolve bass harmonics, short enough for drums."""
_ROOM_MAX_ISM_ORDER = 12
"""Image sources up to this order give the early reflections; a noise tail does the rest."""
_CODEC_MAX_DELAY_S = 0.1
_CODEC_DELAY_PROBE_S = 4.0
"""The decoder delay is measured on the first seconds only: it is constant."""


class DegradationUnavailableError(SynestheteError, RuntimeError):
    """A degradation needs a library (or codec support in one) that this install lacks."""


# --------------------------------------------------------------------------- helpers


def _check_audio(audio: FloatArray, *, name: str = "audio") -> FloatArray:
    if not isinstance(audio, np.ndarray):
        raise AudioFormatError(f"{name} must be a numpy array, got {type(audio).__name__}")
    if audio.dtype != np.float32:
        raise AudioFormatError(f"{name} must be float32, got {audio.dtype}")
    if audio.ndim != 1:
        raise AudioFormatError(f"{name} must be mono [n], got shape {audio.shape}")
    if audio.shape[0] == 0:
        raise AudioFormatError(f"{name} is empty")
    if not np.all(np.isfinite(audio)):
        raise AudioFormatError(f"{name} contains NaN or infinite samples")
    return audio


def _as_float32(clip: npt.ArrayLike, *, name: str) -> FloatArray:
    array = np.asarray(clip, dtype=np.float32)
    return _check_audio(np.ascontiguousarray(array), name=name)


def _check_rate(sample_rate_hz: int) -> int:
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, int | np.integer):
        raise ConfigError(f"sample_rate_hz must be an int, got {sample_rate_hz!r}")
    if not 4_000 <= int(sample_rate_hz) <= 192_000:
        raise ConfigError(f"sample_rate_hz must be in 4000..192000, got {sample_rate_hz}")
    return int(sample_rate_hz)


def _check_number(value: float, *, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ConfigError(f"{name} must be in [{low}, {high}], got {value!r}")
    return number


def _check_range(
    value: tuple[float, float], *, name: str, low: float, high: float
) -> tuple[float, float]:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise ConfigError(f"{name} must be a (low, high) pair, got {value!r}")
    lo = _check_number(value[0], name=f"{name}[0]", low=low, high=high)
    hi = _check_number(value[1], name=f"{name}[1]", low=low, high=high)
    if lo > hi:
        raise ConfigError(f"{name} must have low <= high, got {value!r}")
    return lo, hi


def _check_int_pair(value: tuple[int, int], *, name: str, low: int, high: int) -> tuple[int, int]:
    """An integer ``(lo, hi)`` with ``low <= lo <= hi <= high`` (bools are not integers)."""
    if not (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(k, int) and not isinstance(k, bool) for k in value)
        and low <= value[0] <= value[1] <= high
    ):
        raise ConfigError(
            f"{name} must be an int pair {low} <= low <= high <= {high}, got {value!r}"
        )
    return int(value[0]), int(value[1])


def as_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator (returned as is) or an int seed >= 0."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int | np.integer) or rng < 0:
        raise ConfigError(f"rng must be a numpy Generator or an int seed >= 0, got {rng!r}")
    return np.random.default_rng(int(rng))


def _seed_from(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _fit_length(audio: npt.NDArray[Any], length: int) -> FloatArray:
    """Crop or zero-pad ``audio`` to exactly ``length`` samples, as float32."""
    out = np.zeros(length, dtype=np.float32)
    keep = min(length, audio.shape[0])
    out[:keep] = audio[:keep]
    return out


def _power(audio: npt.NDArray[Any]) -> float:
    return float(np.mean(np.square(audio, dtype=np.float64)))


def _unit_rms(audio: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    rms = math.sqrt(_power(audio))
    as64 = np.asarray(audio, dtype=np.float64)
    return as64 / rms if rms > 0 else as64


def _loop_to_length(
    clip: FloatArray, length: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """``clip`` repeated end to end from a random start, ``[length]``."""
    start = int(rng.integers(0, clip.shape[0]))
    reps = math.ceil((start + length) / clip.shape[0])
    return np.tile(clip.astype(np.float64), reps)[start : start + length]


def _rfft_freqs(size: int, sample_rate_hz: int) -> npt.NDArray[np.float64]:
    return np.asarray(np.fft.rfftfreq(size, 1.0 / sample_rate_hz), dtype=np.float64)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def fft_convolve(audio: FloatArray, kernel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Full linear convolution ``[n + k - 1]`` by FFT."""
    full = audio.shape[0] + kernel.shape[0] - 1
    size = _next_pow2(full)
    spectrum = np.fft.rfft(audio.astype(np.float64), size) * np.fft.rfft(kernel, size)
    return np.fft.irfft(spectrum, size)[:full]


def limit_peak(audio: FloatArray, *, peak: float = PEAK_LIMIT) -> FloatArray:
    """Scale ``audio`` ``[n]`` down so that max |x| <= ``peak``; never scales up.

    Real chains have headroom control (AGC, limiters, a DJ's gain knob); a
    plain scale keeps every ratio (SNR, EQ) of the degradation intact.
    """
    _check_audio(audio)
    peak = _check_number(peak, name="peak", low=1e-6, high=1.0)
    current = float(np.max(np.abs(audio)))
    if current <= peak:
        return audio.astype(np.float32, copy=True)
    return (audio * np.float32(peak / current)).astype(np.float32)


# --------------------------------------------------------------------------- noise


def add_noise_at_snr(
    audio: FloatArray,
    noise: FloatArray,
    *,
    snr_db: float,
    rng: RngLike,
) -> FloatArray:
    """``audio + g * noise`` ``[n]`` with g set so that the SNR over the excerpt is ``snr_db``.

    SNR = mean(audio²) / mean((g * noise)²) over the n output samples. ``noise``
    is looped from a random start (``rng``) or cropped to n samples. Real
    listening always has something else in the room; measuring the SNR over
    the excerpt itself makes the condition's difficulty independent of the
    track's loudness. Raises ``AudioFormatError`` if ``audio`` or the noise
    excerpt is silent (the SNR would be undefined).
    """
    _check_audio(audio)
    _check_audio(noise, name="noise")
    snr_db = _check_number(snr_db, name="snr_db", low=-60.0, high=100.0)
    generator = as_rng(rng)
    signal_power = _power(audio)
    if signal_power <= 0.0:
        raise AudioFormatError("audio is silent: SNR is undefined")
    excerpt = _loop_to_length(noise, audio.shape[0], generator)
    noise_power = _power(excerpt)
    if noise_power <= 0.0:
        raise AudioFormatError("noise is silent: SNR is undefined")
    gain = math.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (audio.astype(np.float64) + gain * excerpt).astype(np.float32)


def pink_noise_at_snr(
    audio: FloatArray,
    *,
    sample_rate_hz: int,
    rng: RngLike,
    snr_db: float = 5.0,
) -> FloatArray:
    """Pink (1/f) noise added at ``snr_db`` (default 5 dB): ``[n]``.

    Pink noise is the broadband hiss-and-rumble of fans, traffic, HVAC and
    crowds; 5 dB SNR is a loud bar or a noisy street.
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    generator = as_rng(rng)
    noise = pink_noise(
        seconds=audio.shape[0] / rate, sample_rate_hz=rate, seed=_seed_from(generator)
    )
    return add_noise_at_snr(audio, noise, snr_db=snr_db, rng=generator)


def _talker(
    clips: Sequence[FloatArray], length: int, rate: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """One voice: random clips one after another with short pauses, from a random start."""
    lead_in = int(rng.integers(0, max(1, rate)))
    voice = np.zeros(length + lead_in)
    position = 0
    while position < voice.shape[0]:
        clip = clips[int(rng.integers(0, len(clips)))]
        end = min(voice.shape[0], position + clip.shape[0])
        voice[position:end] = clip[: end - position]
        position = end + int(rng.uniform(0.1, 0.6) * rate)
    return voice[lead_in:]


def babble_at_snr(
    audio: FloatArray,
    *,
    sample_rate_hz: int,
    rng: RngLike,
    speech_clips: Sequence[FloatArray] = (),
    ambience: Sequence[FloatArray] = (),
    snr_db: float = 0.0,
    talkers: tuple[int, int] = (3, 6),
    ambience_db: tuple[float, float] = (-12.0, -3.0),
) -> FloatArray:
    """Several overlapping talkers plus an ambience loop, added at ``snr_db``: ``[n]``.

    A pub, a party, a shop: people talking over the music is the hardest
    everyday interference, because speech shares music's rhythm and band.

    A random number of talkers in ``talkers`` (inclusive) is drawn; each
    strings random ``speech_clips`` (e.g. espeak-ng voices, at
    ``sample_rate_hz``) together with 0.1-0.6 s pauses, at unit RMS ±3 dB.
    One random ``ambience`` loop is added at a random level in
    ``ambience_db`` relative to the babble. With no ``speech_clips``, the
    synthetic babble of ``synesthete.stream.synth.speech_like_noise`` stands
    in; with no ``ambience``, none is added.
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    generator = as_rng(rng)
    _check_int_pair(talkers, name="talkers", low=1, high=32)
    amb_lo, amb_hi = _check_range(ambience_db, name="ambience_db", low=-60.0, high=20.0)
    clips = [_as_float32(c, name="speech clip") for c in speech_clips]
    loops = [_as_float32(a, name="ambience loop") for a in ambience]
    n = audio.shape[0]
    count = int(generator.integers(talkers[0], talkers[1] + 1))
    if clips:
        babble = np.zeros(n)
        for _ in range(count):
            level = 10.0 ** (generator.uniform(-3.0, 3.0) / 20.0)
            babble += level * _unit_rms(_talker(clips, n, rate, generator))
    else:
        babble = speech_like_noise(
            seconds=n / rate, sample_rate_hz=rate, seed=_seed_from(generator), talkers=count
        ).astype(np.float64)
    noise = _unit_rms(babble)
    if loops:
        loop = loops[int(generator.integers(0, len(loops)))]
        level = 10.0 ** (generator.uniform(amb_lo, amb_hi) / 20.0)
        noise = noise + level * _unit_rms(_loop_to_length(loop, n, generator))
    return add_noise_at_snr(audio, noise.astype(np.float32), snr_db=snr_db, rng=generator)


# --------------------------------------------------------------------------- filters


def butterworth_gain(
    freqs_hz: npt.NDArray[np.float64], band_hz: tuple[float, float], order: int
) -> npt.NDArray[np.float64]:
    """Magnitude of a Butterworth high-pass at band[0] times a low-pass at band[1]."""
    low_hz, high_hz = band_hz
    highpass = 1.0 / np.sqrt(1.0 + (low_hz / np.maximum(freqs_hz, 1e-9)) ** (2 * order))
    lowpass = 1.0 / np.sqrt(1.0 + (freqs_hz / high_hz) ** (2 * order))
    return highpass * lowpass


def band_limit(
    audio: FloatArray,
    *,
    sample_rate_hz: int,
    band_hz: tuple[float, float] = PHONE_BAND_HZ,
    order: int = BAND_ORDER,
) -> FloatArray:
    """Zero-phase Butterworth band-pass (magnitude response, FFT domain): ``[n]``.

    Phones and laptops hear through small capsules and voice-band processing:
    ``PHONE_BAND_HZ`` or ``LAPTOP_BAND_HZ``. An upper edge at or above Nyquist
    leaves the top open. Zero phase keeps the timing (and so the ground-truth
    offsets) unchanged.
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    low_hz, high_hz = _check_range(band_hz, name="band_hz", low=0.0, high=float(rate))
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 16:
        raise ConfigError(f"order must be an int in 1..16, got {order!r}")
    n = audio.shape[0]
    pad = _next_pow2(n + rate // 4)  # room for the filter's ringing, no wrap-around
    freqs_hz = _rfft_freqs(pad, rate)
    top_hz = math.inf if high_hz >= rate / 2 else max(high_hz, 1e-3)
    gain = butterworth_gain(freqs_hz, (low_hz, top_hz), order)
    filtered = np.fft.irfft(np.fft.rfft(audio.astype(np.float64), pad) * gain, pad)
    return filtered[:n].astype(np.float32)


BiquadKind = Literal["peak", "lowshelf", "highshelf"]


def _biquad_response(
    kind: BiquadKind,
    *,
    freq_hz: float,
    gain_db: float,
    q: float,
    sample_rate_hz: int,
    freqs_hz: npt.NDArray[np.float64],
) -> npt.NDArray[np.complex128]:
    """Complex response of an RBJ-cookbook biquad at ``freqs_hz``."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq_hz / sample_rate_hz
    cos_w0 = math.cos(w0)
    if kind == "peak":
        alpha = math.sin(w0) / (2.0 * q)
        b = (1.0 + alpha * amp, -2.0 * cos_w0, 1.0 - alpha * amp)
        a = (1.0 + alpha / amp, -2.0 * cos_w0, 1.0 - alpha / amp)
    else:
        alpha = math.sin(w0) / 2.0 * math.sqrt(2.0)  # shelf slope S = 1
        root = 2.0 * math.sqrt(amp) * alpha
        sign = 1.0 if kind == "lowshelf" else -1.0
        b = (
            amp * ((amp + 1) - sign * (amp - 1) * cos_w0 + root),
            sign * 2.0 * amp * ((amp - 1) - sign * (amp + 1) * cos_w0),
            amp * ((amp + 1) - sign * (amp - 1) * cos_w0 - root),
        )
        a = (
            (amp + 1) + sign * (amp - 1) * cos_w0 + root,
            -sign * 2.0 * ((amp - 1) + sign * (amp + 1) * cos_w0),
            (amp + 1) + sign * (amp - 1) * cos_w0 - root,
        )
    z = np.exp(-2j * np.pi * freqs_hz / sample_rate_hz)
    response: npt.NDArray[np.complex128] = (b[0] + b[1] * z + b[2] * z * z) / (
        a[0] + a[1] * z + a[2] * z * z
    )
    return response


def eq_and_gain(
    audio: FloatArray,
    *,
    sample_rate_hz: int,
    rng: RngLike,
    peaks: tuple[int, int] = (1, 3),
    band_gain_db: float = 9.0,
    shelf_gain_db: float = 6.0,
    gain_db: tuple[float, float] = (-9.0, 3.0),
    clip_probability: float = 0.25,
    max_drive_db: float = 12.0,
) -> FloatArray:
    """Random tone shaping, level change and soft clipping, for training: ``[n]``.

    Every playback chain colours the sound: speaker and room resonances,
    DJ-mixer EQ, loudness processing, an overdriven amplifier or a too-hot
    line-in. Draws a low shelf (60-300 Hz) and a high shelf (2-8 kHz), each
    ±``shelf_gain_db``, and ``peaks`` peaking bands (100 Hz-6 kHz, Q 0.5-3,
    ±``band_gain_db``), applied as causal biquad responses; then a gain in
    ``gain_db``; then, with ``clip_probability``, soft clipping
    ``tanh(drive * x) / drive`` (unity gain for quiet samples, peaks squashed)
    with a drive up to ``max_drive_db`` above the signal's peak.
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    generator = as_rng(rng)
    _check_int_pair(peaks, name="peaks", low=0, high=16)
    band_gain_db = _check_number(band_gain_db, name="band_gain_db", low=0.0, high=30.0)
    shelf_gain_db = _check_number(shelf_gain_db, name="shelf_gain_db", low=0.0, high=30.0)
    gain_lo, gain_hi = _check_range(gain_db, name="gain_db", low=-60.0, high=40.0)
    clip_probability = _check_number(clip_probability, name="clip_probability", low=0.0, high=1.0)
    max_drive_db = _check_number(max_drive_db, name="max_drive_db", low=0.0, high=40.0)

    n = audio.shape[0]
    pad = _next_pow2(n + rate // 4)
    freqs_hz = _rfft_freqs(pad, rate)
    nyquist_hz = rate / 2
    response = _biquad_response(
        "lowshelf",
        freq_hz=min(generator.uniform(60.0, 300.0), 0.4 * nyquist_hz),
        gain_db=generator.uniform(-shelf_gain_db, shelf_gain_db),
        q=0.707,
        sample_rate_hz=rate,
        freqs_hz=freqs_hz,
    )
    response *= _biquad_response(
        "highshelf",
        freq_hz=min(generator.uniform(2000.0, 8000.0), 0.8 * nyquist_hz),
        gain_db=generator.uniform(-shelf_gain_db, shelf_gain_db),
        q=0.707,
        sample_rate_hz=rate,
        freqs_hz=freqs_hz,
    )
    for _ in range(int(generator.integers(peaks[0], peaks[1] + 1))):
        center_hz = math.exp(generator.uniform(math.log(100.0), math.log(6000.0)))
        response *= _biquad_response(
            "peak",
            freq_hz=min(center_hz, 0.8 * nyquist_hz),
            gain_db=generator.uniform(-band_gain_db, band_gain_db),
            q=generator.uniform(0.5, 3.0),
            sample_rate_hz=rate,
            freqs_hz=freqs_hz,
        )
    shaped = np.fft.irfft(np.fft.rfft(audio.astype(np.float64), pad) * response, pad)[:n]
    shaped *= 10.0 ** (generator.uniform(gain_lo, gain_hi) / 20.0)
    if generator.random() < clip_probability:
        peak = float(np.max(np.abs(shaped)))
        if peak > 0:
            drive = 10.0 ** (generator.uniform(0.0, max_drive_db) / 20.0) / peak
            shaped = np.tanh(drive * shaped) / drive
    return shaped.astype(np.float32)


# --------------------------------------------------------------------------- room


def _room_module() -> Any:
    try:
        return importlib.import_module("pyroomacoustics")
    except ImportError as err:
        raise DegradationUnavailableError(
            "room simulation needs pyroomacoustics: pip install 'synesthete[augment]'"
        ) from err


def room_impulse_response(
    *,
    sample_rate_hz: int,
    rng: RngLike,
    rt60_s: tuple[float, float] = (0.25, 0.8),
) -> npt.NDArray[np.float64]:
    """A simulated room impulse response ``[k]``, direct path at sample 0, unit energy.

    A pyroomacoustics shoebox with random dimensions (3-10 × 3-8 × 2.4-3.5 m),
    source (speaker) and mic positions at least 0.5 m from any wall and 1 m
    apart, and wall absorption set by Sabine's formula for an RT60 drawn from
    ``rt60_s``. The image-source method runs up to order
    ``_ROOM_MAX_ISM_ORDER`` for the early reflections; from the time that order
    stops being complete, an exponentially decaying Gaussian tail with the
    target RT60 continues the response, its level matched to the image
    sources there. Pure image sources would need order ~100 for RT60 0.8 s
    (seconds per response) and overshoot the target RT60 by about half; the
    hybrid is fast and hits it. The propagation delay is removed so the
    ground-truth offsets of a query stay put.
    """
    rate = _check_rate(sample_rate_hz)
    generator = as_rng(rng)
    rt_lo, rt_hi = _check_range(rt60_s, name="rt60_s", low=0.05, high=5.0)
    pra = _room_module()
    rt60 = float(generator.uniform(rt_lo, rt_hi))
    dims = np.array(
        [generator.uniform(3.0, 10.0), generator.uniform(3.0, 8.0), generator.uniform(2.4, 3.5)]
    )
    # Sabine needs mean absorption 0.161 V / (S RT60) <= 1; shrink the room until it fits.
    surface = 2.0 * (dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    while 0.161 * float(np.prod(dims)) / (surface * rt60) > 0.95:
        dims = np.maximum(dims * 0.9, 1.5)
        surface = 2.0 * (dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    absorption = min(0.95, 0.161 * float(np.prod(dims)) / (surface * rt60))
    margin = 0.5
    source = generator.uniform(margin, dims - margin)
    mic = generator.uniform(margin, dims - margin)
    for _ in range(100):
        if np.linalg.norm(mic - source) >= 1.0:
            break
        mic = generator.uniform(margin, dims - margin)
    shoebox = pra.ShoeBox(
        dims.tolist(),
        fs=rate,
        materials=pra.Material(absorption),
        max_order=_ROOM_MAX_ISM_ORDER,
        air_absorption=False,
    )
    shoebox.add_source(source.tolist())
    shoebox.add_microphone(mic.tolist())
    shoebox.compute_rir()
    early = np.asarray(shoebox.rir[0][0], dtype=np.float64)

    direct_sample = round(float(np.linalg.norm(mic - source)) / SPEED_OF_SOUND_M_S * rate)
    direct_sample += int(pra.constants.get("frac_delay_length")) // 2
    early = early[min(direct_sample, early.shape[0] - 1) :]

    # Every image of order > N travels at least N room-widths more than the direct path.
    complete_s = _ROOM_MAX_ISM_ORDER * float(np.min(dims)) / SPEED_OF_SOUND_M_S
    complete = min(early.shape[0], max(1, round(complete_s * rate)))
    length = max(complete + 1, round(rt60 * rate * 1.2))
    response = np.zeros(length)
    response[:complete] = early[:complete]
    decay_per_sample = 3.0 * math.log(10.0) / (rt60 * rate)  # 60 dB of amplitude per RT60
    reference = max(1, round(0.01 * rate))
    level = math.sqrt(_power(early[max(0, complete - reference) : complete]))
    tail_t = np.arange(length - complete, dtype=np.float64)
    response[complete:] = (
        level * np.exp(-decay_per_sample * tail_t) * generator.standard_normal(tail_t.shape[0])
    )
    energy = float(np.sum(response**2))
    return response / math.sqrt(energy) if energy > 0 else response


def room(
    audio: FloatArray,
    *,
    sample_rate_hz: int,
    rng: RngLike,
    rt60_s: tuple[float, float] = (0.25, 0.8),
    band_hz: tuple[float, float] | None = PHONE_BAND_HZ,
    snr_db: float | None = 10.0,
    noise: FloatArray | None = None,
    impulse_response: npt.NDArray[np.float64] | None = None,
) -> FloatArray:
    """Music played on a speaker in a room and recorded by a phone or laptop: ``[n]``.

    1. Convolve with ``impulse_response``, or a new ``room_impulse_response``;
       the result keeps the input's RMS and length (the reverb tail past the
       end is cut, as a recording of the excerpt would cut it).
    2. Add room noise (``noise`` looped, or pink noise) at ``snr_db``
       relative to the reverberant music; ``None`` adds none.
    3. Band-limit like the recording device (``band_hz``; ``None`` skips):
       the device hears the room noise too, so the filter comes last and the
       SNR is the one in the room, before the device.
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    generator = as_rng(rng)
    if impulse_response is None:
        impulse_response = room_impulse_response(sample_rate_hz=rate, rng=generator, rt60_s=rt60_s)
    kernel = np.asarray(impulse_response, dtype=np.float64)
    if kernel.ndim != 1 or kernel.shape[0] == 0 or not np.all(np.isfinite(kernel)):
        raise AudioFormatError("impulse_response must be a finite, non-empty [k] array")
    n = audio.shape[0]
    wet = fft_convolve(audio, kernel)[:n]
    wet_rms = math.sqrt(_power(wet))
    if wet_rms > 0:
        wet *= math.sqrt(_power(audio)) / wet_rms
    out = wet.astype(np.float32)
    if snr_db is not None:
        if noise is None:
            noise = pink_noise(seconds=n / rate, sample_rate_hz=rate, seed=_seed_from(generator))
        out = add_noise_at_snr(out, noise, snr_db=snr_db, rng=generator)
    if band_hz is not None:
        out = band_limit(out, sample_rate_hz=rate, band_hz=band_hz)
    return out


# --------------------------------------------------------------------------- time and pitch


def _check_factor(factor: float) -> float:
    return _check_number(factor, name="factor", low=_MIN_FACTOR, high=_MAX_FACTOR)


def speed(audio: FloatArray, *, sample_rate_hz: int, factor: float) -> FloatArray:
    """Turntable/varispeed: tempo and pitch both × ``factor``; ``[round(n / factor)]``.

    DJs ride the pitch fader (±8 % on a Technics), radio speeds songs up a
    few percent, and a wrong sample-rate setting does the same. Output sample
    t is input time t × factor (soxr resampling, high quality).
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    factor = _check_factor(factor)
    length = max(1, round(audio.shape[0] / factor))
    if factor == 1.0:
        return audio.astype(np.float32, copy=True)
    resampled = soxr.resample(audio, rate * factor, rate, quality="HQ")
    return _fit_length(np.asarray(resampled), length)


def _hann(size: int) -> npt.NDArray[np.float64]:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / size)  # periodic: sums flat


def _pv_fft_size(sample_rate_hz: int) -> int:
    return 1 << round(math.log2(_PV_WINDOW_S * sample_rate_hz))


def _stretch(audio: FloatArray, *, sample_rate_hz: int, factor: float) -> FloatArray:
    """Phase vocoder with identity phase locking; output ``[round(n / factor)]``.

    Analysis frames advance by ``factor`` × the synthesis hop. Each bin's
    instantaneous frequency comes from the phase difference of consecutive
    analysis frames; spectral peaks (larger than their 2 neighbours on each
    side) advance their synthesis phase by it, and every other bin keeps its
    analysis phase offset to the peak whose region it lies in (Laroche and
    Dolson 1999), which keeps the partials of a chord coherent and removes
    most of the plain phase vocoder's "phasiness". One frame at a time, so
    memory stays O(n).
    """
    n = audio.shape[0]
    size = _pv_fft_size(sample_rate_hz)
    hop_out = size // 4
    half = size // 2
    length = max(1, round(n / factor))
    n_frames = math.ceil((length + size) / hop_out) + 1
    positions = np.round(np.arange(n_frames) * hop_out * factor).astype(np.int64)
    padded = np.zeros(int(positions[-1]) + size + 1)
    padded[half : half + n] = audio
    window = _hann(size)
    bins = np.arange(size // 2 + 1)
    omega = 2.0 * np.pi * bins / size  # bin centre, radians per sample
    out = np.zeros(n_frames * hop_out + size)
    norm = np.zeros_like(out)
    window_sq = window**2
    prev_phase = np.zeros(bins.shape[0])
    syn_phase = np.zeros(bins.shape[0])
    for k in range(n_frames):
        start = int(positions[k])
        spectrum = np.fft.rfft(padded[start : start + size] * window)
        magnitude = np.abs(spectrum)
        phase = np.angle(spectrum)
        if k == 0:
            syn_phase = phase.copy()
        else:
            step = max(1, start - int(positions[k - 1]))
            deviation = phase - prev_phase - omega * step
            deviation -= 2.0 * np.pi * np.round(deviation / (2.0 * np.pi))
            advanced = syn_phase + (omega + deviation / step) * hop_out
            padded_mag = np.concatenate(([-1.0, -1.0], magnitude, [-1.0, -1.0]))
            is_peak = (
                (magnitude > padded_mag[:-4])
                & (magnitude > padded_mag[1:-3])
                & (magnitude >= padded_mag[3:-1])
                & (magnitude >= padded_mag[4:])
            )
            peaks = np.flatnonzero(is_peak)
            if peaks.shape[0] == 0:
                syn_phase = advanced
            else:
                midpoints = (peaks[:-1] + peaks[1:]) / 2.0
                owner = peaks[np.searchsorted(midpoints, bins, side="left")]
                syn_phase = advanced[owner] + phase - phase[owner]
        prev_phase = phase
        frame = np.fft.irfft(magnitude * np.exp(1j * syn_phase), size) * window
        at = k * hop_out
        out[at : at + size] += frame
        norm[at : at + size] += window_sq
    out /= np.maximum(norm, 1e-3 * float(np.max(norm)))
    return _fit_length(out[half:], length)


def tempo(audio: FloatArray, *, sample_rate_hz: int, factor: float) -> FloatArray:
    """Key-locked time stretch: tempo × ``factor``, pitch kept; ``[round(n / factor)]``.

    DJ software's "key lock"/"master tempo" and streaming apps' playback-speed
    setting change the tempo without the pitch. Output time t is input time
    t × factor. Phase vocoder with identity phase locking (see ``_stretch``).
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    factor = _check_factor(factor)
    if factor == 1.0:
        return audio.astype(np.float32, copy=True)
    return _stretch(audio, sample_rate_hz=rate, factor=factor)


def pitch_shift(audio: FloatArray, *, sample_rate_hz: int, semitones: float) -> FloatArray:
    """Transpose by ``semitones`` keeping the duration and timing: ``[n]``.

    Karaoke machines, DJ key shifting and some uploads transpose songs. The
    audio is stretched by 2^(s/12) (pitch kept) and resampled back to n
    samples, which multiplies every frequency by 2^(s/12).
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    semitones = _check_number(semitones, name="semitones", low=-_MAX_SEMITONES, high=_MAX_SEMITONES)
    if semitones == 0.0:
        return audio.astype(np.float32, copy=True)
    ratio = 2.0 ** (semitones / 12.0)
    stretched = _stretch(audio, sample_rate_hz=rate, factor=1.0 / ratio)
    resampled = soxr.resample(stretched, rate * ratio, rate, quality="HQ")
    return _fit_length(np.asarray(resampled), audio.shape[0])


# --------------------------------------------------------------------------- codec

CodecName = Literal["mp3", "opus"]

_CODEC_RATES_HZ: dict[str, tuple[int, ...]] = {
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "opus": (8000, 12000, 16000, 24000, 48000),
}
_CODEC_FORMATS = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}


def _kbps_range(codec_name: str, rate: int) -> tuple[float, float]:
    """libsndfile's bitrate span, which its compression level (0..1) maps onto linearly."""
    if codec_name == "opus":
        return 6.0, 256.0
    if rate >= 32_000:
        return 32.0, 320.0  # MPEG-1 layer III
    if rate >= 16_000:
        return 8.0, 160.0  # MPEG-2
    return 8.0, 64.0  # MPEG-2.5


def codec_available(codec_name: CodecName) -> bool:
    """Whether this soundfile/libsndfile can encode ``codec_name`` (mp3 needs >= 1.1)."""
    if codec_name not in _CODEC_FORMATS:
        return False
    try:
        soundfile = importlib.import_module("soundfile")
    except ImportError:
        return False
    container, subtype = _CODEC_FORMATS[codec_name]
    return container in soundfile.available_formats() and subtype in dict(
        soundfile.available_subtypes(container)
    )


def _encode(audio: FloatArray, *, sample_rate_hz: int, kbps: float, codec_name: CodecName) -> bytes:
    """Encode ``audio`` (at a rate the codec supports) into an in-memory file."""
    if not codec_available(codec_name):
        raise DegradationUnavailableError(
            f"this libsndfile cannot encode {codec_name}; "
            "soundfile >= 0.12 wheels bundle libsndfile with MP3 and Opus"
        )
    soundfile = importlib.import_module("soundfile")
    low, high = _kbps_range(codec_name, sample_rate_hz)
    if not low <= kbps <= high:
        raise ConfigError(
            f"{codec_name} at {sample_rate_hz} Hz takes {low:g}..{high:g} kbps, got {kbps:g}"
        )
    container, subtype = _CODEC_FORMATS[codec_name]
    options: dict[str, Any] = {"compression_level": (high - kbps) / (high - low)}
    if codec_name == "mp3":
        options["bitrate_mode"] = "CONSTANT"
    buffer = io.BytesIO()
    try:
        soundfile.write(buffer, audio, sample_rate_hz, format=container, subtype=subtype, **options)
    except (RuntimeError, ValueError) as err:  # soundfile.LibsndfileError is a RuntimeError
        raise DegradationUnavailableError(f"{codec_name} encoding failed: {err}") from err
    return buffer.getvalue()


def _decode(data: bytes) -> npt.NDArray[np.float32]:
    soundfile = importlib.import_module("soundfile")
    decoded, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono: npt.NDArray[np.float32] = np.asarray(decoded, dtype=np.float32).mean(axis=1)
    return mono


def _delay_samples(reference: FloatArray, delayed: FloatArray, max_lag: int) -> int:
    """Lag (0..max_lag) at which ``delayed`` best matches ``reference``."""
    n = reference.shape[0]
    size = _next_pow2(n + max_lag + delayed.shape[0])
    corr = np.fft.irfft(
        np.fft.rfft(delayed.astype(np.float64), size)
        * np.conj(np.fft.rfft(reference.astype(np.float64), size)),
        size,
    )
    return int(np.argmax(corr[: max_lag + 1]))


def codec(
    audio: FloatArray,
    *,
    sample_rate_hz: int,
    kbps: float = 64.0,
    codec_name: CodecName = "mp3",
) -> FloatArray:
    """A real lossy encode/decode round trip through libsndfile: ``[n]``.

    Low-bitrate streams, voice-chat links and old MP3 rips drop and smear
    what the psychoacoustic model deems inaudible. ``mp3`` is LAME at
    constant bitrate, ``opus`` is libopus (VBR around ``kbps``). A rate the
    codec does not support is resampled to the next supported one and back.
    The decoder's delay is measured by cross-correlation and removed, so the
    output lines up with the input sample for sample.
    """
    _check_audio(audio)
    rate = _check_rate(sample_rate_hz)
    if codec_name not in _CODEC_FORMATS:
        raise ConfigError(f"codec_name must be 'mp3' or 'opus', got {codec_name!r}")
    kbps = _check_number(kbps, name="kbps", low=1.0, high=512.0)
    rates = _CODEC_RATES_HZ[codec_name]
    coded_rate = next((r for r in rates if r >= rate), rates[-1])
    source = audio if coded_rate == rate else np.asarray(soxr.resample(audio, rate, coded_rate))
    source = source.astype(np.float32)
    peak = float(np.max(np.abs(source)))
    scale = 1.0 / peak if peak > 1.0 else 1.0  # the encoders take [-1, 1]
    decoded = _decode(
        _encode(
            source * np.float32(scale), sample_rate_hz=coded_rate, kbps=kbps, codec_name=codec_name
        )
    )
    max_lag = round(_CODEC_MAX_DELAY_S * coded_rate)
    probe = min(source.shape[0], round(_CODEC_DELAY_PROBE_S * coded_rate))
    lag = (
        _delay_samples(source[:probe], decoded[: probe + max_lag], max_lag)
        if decoded.shape[0] > 0
        else 0
    )
    aligned = _fit_length(decoded[lag:], source.shape[0]) / np.float32(scale)
    if coded_rate != rate:
        aligned = np.asarray(soxr.resample(aligned, coded_rate, rate), dtype=np.float32)
    return _fit_length(aligned, audio.shape[0])


# --------------------------------------------------------------------------- mixes


def _check_fades(fade_s: float | Sequence[float], transitions: int) -> list[float]:
    """One fade length per transition, from a single length or a sequence of them."""
    if isinstance(fade_s, str) or not isinstance(fade_s, Sequence | np.ndarray):
        return [_check_number(fade_s, name="fade_s", low=0.0, high=600.0)] * transitions
    if len(fade_s) != transitions:
        raise ConfigError(
            f"fade_s has {len(fade_s)} lengths for {transitions + 1} segments; "
            f"need {transitions}, one per transition"
        )
    return [
        _check_number(f, name=f"fade_s[{k}]", low=0.0, high=600.0) for k, f in enumerate(fade_s)
    ]


def crossfade_mix(
    segments: Sequence[FloatArray],
    *,
    sample_rate_hz: int,
    fade_s: float | Sequence[float] = 8.0,
) -> tuple[FloatArray, list[tuple[float, float]]]:
    """Join ``segments`` with equal-power crossfades, like a DJ: ``([m], boundaries)``.

    ``fade_s`` is one fade length for every transition, or a sequence of
    ``len(segments) - 1`` lengths, ``fade_s[k]`` for the transition from
    segment k to k+1 (DJs blend for a few bars or for a minute). Segment k+1
    starts ``fade_s[k]`` before segment k ends; over the overlap the outgoing
    gain is cos(πu/2) and the incoming sin(πu/2), u from 0 to 1, so the
    summed power of uncorrelated material stays constant.
    ``boundaries[i]`` is segment i's ``(start_s, end_s)`` in the mix,
    overlaps included. A segment must be at least as long as its fade-in plus
    its fade-out, so that at most two segments ever play at once.
    """
    rate = _check_rate(sample_rate_hz)
    if len(segments) == 0:
        raise ConfigError("crossfade_mix needs at least one segment")
    fades_s = _check_fades(fade_s, len(segments) - 1)
    clips = [_as_float32(s, name=f"segment {i}") for i, s in enumerate(segments)]
    fades = [round(f * rate) for f in fades_s]
    fade_in = [0, *fades]  # fade_in[i]: samples segment i fades in over
    fade_out = [*fades, 0]
    for i, clip in enumerate(clips):
        if clip.shape[0] < fade_in[i] + fade_out[i]:
            raise ConfigError(
                f"segment {i} is {clip.shape[0] / rate:.2f} s, shorter than its fades "
                f"({fade_in[i] / rate:g} s in + {fade_out[i] / rate:g} s out)"
            )
    starts = [0]
    for clip, fade in zip(clips[:-1], fades, strict=True):
        starts.append(starts[-1] + clip.shape[0] - fade)
    total = starts[-1] + clips[-1].shape[0]
    mix = np.zeros(total)
    boundaries: list[tuple[float, float]] = []
    for i, (clip, start) in enumerate(zip(clips, starts, strict=True)):
        gain = np.ones(clip.shape[0])
        if fade_in[i] > 0:
            u = (np.arange(fade_in[i]) + 0.5) / fade_in[i]
            gain[: fade_in[i]] = np.sin(0.5 * np.pi * u)
        if fade_out[i] > 0:
            u = (np.arange(fade_out[i]) + 0.5) / fade_out[i]
            gain[clip.shape[0] - fade_out[i] :] = np.cos(0.5 * np.pi * u)
        mix[start : start + clip.shape[0]] += clip * gain
        boundaries.append((start / rate, (start + clip.shape[0]) / rate))
    return mix.astype(np.float32), boundaries


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True, kw_only=True)
class Materials:
    """Recorded material for the conditions that need it, at ``sample_rate_hz``.

    ``speech``: short speech clips (espeak-ng voices); ``ambience``: room-tone
    and crowd loops (the dev packages' ambience tracks). Either may be empty:
    the conditions fall back to synthetic babble and pink noise.
    """

    sample_rate_hz: int
    speech: tuple[FloatArray, ...] = field(default=())
    ambience: tuple[FloatArray, ...] = field(default=())

    def __post_init__(self) -> None:
        _check_rate(self.sample_rate_hz)
        object.__setattr__(
            self, "speech", tuple(_as_float32(c, name="speech clip") for c in self.speech)
        )
        object.__setattr__(
            self, "ambience", tuple(_as_float32(c, name="ambience loop") for c in self.ambience)
        )

    def resampled(self, sample_rate_hz: int) -> Materials:
        """The same material at another rate (soxr)."""
        rate = _check_rate(sample_rate_hz)
        if rate == self.sample_rate_hz:
            return self

        def convert(clip: FloatArray) -> FloatArray:
            return np.asarray(soxr.resample(clip, self.sample_rate_hz, rate), dtype=np.float32)

        return Materials(
            sample_rate_hz=rate,
            speech=tuple(convert(c) for c in self.speech),
            ambience=tuple(convert(c) for c in self.ambience),
        )


ConditionFn = Callable[[FloatArray, int, np.random.Generator, Materials], FloatArray]


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """A named benchmark degradation.

    ``tempo_factor`` is track seconds per query second: a query of D seconds
    needs ``D * tempo_factor`` seconds of source, and query time t is track
    position ``excerpt_start_s + t * tempo_factor``.
    """

    name: str
    reason: str
    apply: ConditionFn
    tempo_factor: float = 1.0

    def __call__(
        self,
        audio: FloatArray,
        *,
        sample_rate_hz: int,
        rng: RngLike,
        materials: Materials | None = None,
    ) -> FloatArray:
        """The degraded query ``[≈ n / tempo_factor]``, peak-limited to ``PEAK_LIMIT``."""
        _check_audio(audio)
        rate = _check_rate(sample_rate_hz)
        if materials is None:
            materials = Materials(sample_rate_hz=rate)
        elif materials.sample_rate_hz != rate:
            raise ConfigError(
                f"materials are at {materials.sample_rate_hz} Hz but the audio is at {rate} Hz; "
                "use materials.resampled(rate)"
            )
        return limit_peak(self.apply(audio, rate, as_rng(rng), materials))


def _clean(audio: FloatArray, rate: int, rng: np.random.Generator, m: Materials) -> FloatArray:
    return audio.astype(np.float32, copy=True)


def _pink5(audio: FloatArray, rate: int, rng: np.random.Generator, m: Materials) -> FloatArray:
    return pink_noise_at_snr(audio, sample_rate_hz=rate, rng=rng, snr_db=5.0)


def _babble0(audio: FloatArray, rate: int, rng: np.random.Generator, m: Materials) -> FloatArray:
    return babble_at_snr(
        audio,
        sample_rate_hz=rate,
        rng=rng,
        speech_clips=m.speech,
        ambience=m.ambience,
        snr_db=0.0,
    )


def _room(audio: FloatArray, rate: int, rng: np.random.Generator, m: Materials) -> FloatArray:
    band = PHONE_BAND_HZ if rng.random() < 0.5 else LAPTOP_BAND_HZ
    noise = None
    if m.ambience:
        noise = m.ambience[int(rng.integers(0, len(m.ambience)))]
    return room(audio, sample_rate_hz=rate, rng=rng, band_hz=band, snr_db=10.0, noise=noise)


def _speed_by(factor: float) -> ConditionFn:
    def apply(audio: FloatArray, rate: int, rng: np.random.Generator, m: Materials) -> FloatArray:
        return speed(audio, sample_rate_hz=rate, factor=factor)

    return apply


def _tempo_by(factor: float) -> ConditionFn:
    def apply(audio: FloatArray, rate: int, rng: np.random.Generator, m: Materials) -> FloatArray:
        return tempo(audio, sample_rate_hz=rate, factor=factor)

    return apply


def _pitch_by(semitones: float) -> ConditionFn:
    def apply(audio: FloatArray, rate: int, rng: np.random.Generator, m: Materials) -> FloatArray:
        return pitch_shift(audio, sample_rate_hz=rate, semitones=semitones)

    return apply


def _codec64(audio: FloatArray, rate: int, rng: np.random.Generator, m: Materials) -> FloatArray:
    return codec(audio, sample_rate_hz=rate, kbps=64.0, codec_name="mp3")


def _conditions() -> dict[str, Condition]:
    table = [
        Condition(name="clean", reason="the recognizer's ceiling: a line-in or file", apply=_clean),
        Condition(name="pink5", reason="loud broadband noise: bar, street, fans", apply=_pink5),
        Condition(
            name="babble0",
            reason="people talking over the music at equal level, with room ambience",
            apply=_babble0,
        ),
        Condition(
            name="room",
            reason="a speaker in a reverberant room, heard by a phone or laptop mic",
            apply=_room,
        ),
    ]
    for percent in (4, 6, 8):
        for sign in (1, -1):
            factor = 1.0 + sign * percent / 100.0
            table.append(
                Condition(
                    name=f"speed{sign * percent:+d}",
                    reason="turntable pitch fader: tempo and pitch together",
                    apply=_speed_by(factor),
                    tempo_factor=factor,
                )
            )
    for sign in (1, -1):
        factor = 1.0 + sign * 0.06
        table.append(
            Condition(
                name=f"tempo{sign * 6:+d}",
                reason="DJ key lock / playback-speed setting: tempo without pitch",
                apply=_tempo_by(factor),
                tempo_factor=factor,
            )
        )
    for semitones in (1, -1):
        table.append(
            Condition(
                name=f"pitch{semitones:+d}",
                reason="key shift (karaoke, DJ key change): pitch without tempo",
                apply=_pitch_by(float(semitones)),
            )
        )
    table.append(
        Condition(
            name="codec64",
            reason="a 64 kbps MP3 stream or rip",
            apply=_codec64,
        )
    )
    return {c.name: c for c in table}


CONDITIONS: dict[str, Condition] = _conditions()
"""The benchmark's named conditions, in report order."""


def _condition(name: str) -> Condition:
    try:
        return CONDITIONS[name]
    except KeyError:
        raise ConfigError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}") from None


def source_seconds_needed(condition: str, duration_s: float) -> float:
    """Seconds of source audio that make a ``duration_s`` query under ``condition``."""
    duration_s = _check_number(duration_s, name="duration_s", low=0.0, high=1e7)
    return duration_s * _condition(condition).tempo_factor


def track_position(condition: str, query_t_s: float, excerpt_start_s: float) -> float:
    """Ground truth: the track position (s) heard at query time ``query_t_s``.

    ``excerpt_start_s`` is where the source excerpt starts in the track.
    """
    return excerpt_start_s + query_t_s * _condition(condition).tempo_factor
