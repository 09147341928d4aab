"""Streaming decode of audio files to 16 kHz mono float32 with libsndfile (soundfile).

The pip ``soundfile`` wheel bundles libsndfile 1.2 with FLAC, Ogg Vorbis, Opus
and MP3 (mpg123) support, so every suffix ``scan.AUDIO_EXTENSIONS`` accepts
decodes without ffmpeg. Memory stays bounded by one block whatever the file
length: blocks are read, downmixed and resampled as they come.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_S
from synesthete.errors import AudioFormatError, ConfigError
from synesthete.stream.resample import Downmix, StreamResampler
from synesthete.stream.sources import (
    codec_name,
    decoder_chatter_filtered,
    describe_damaged_data,
    describe_decode_error,
    open_audio,
    soundfile_name,
)

from .config import DEFAULT_SILENCE_DBFS

DEFAULT_BLOCK_FRAMES = 65536

# libsndfile reports every failure as LibsndfileError (a RuntimeError); cffi
# raises TypeError/ValueError on a few malformed headers; OSError covers I/O.
_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError)


def peak_dbfs(peak: float) -> float:
    """Peak amplitude (full scale 1.0) in dBFS; ``-inf`` for digital silence."""
    return 20.0 * math.log10(peak) if peak > 0.0 else -math.inf


def decode_mono_16k_blocks(
    path: str | os.PathLike[str],
    *,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    min_duration_s: float = WINDOW_S,
    silence_dbfs: float | None = DEFAULT_SILENCE_DBFS,
) -> Iterator[npt.NDArray[np.float32]]:
    """Yield ``[m]`` float32 blocks of the file as 16 kHz mono, in order.

    Channels are downmixed (``stream.resample.Downmix``), then resampled with
    the streaming soxr resampler, so the concatenated output equals
    ``load_mono_16k(path)`` for any ``block_frames``. Raises
    ``AudioFormatError("<path>: <reason>")`` when the file cannot be opened or
    decoded, holds NaN/inf samples, or, checked at the end of the stream, is
    shorter than ``min_duration_s`` or peaks below ``silence_dbfs`` (``None``
    disables that check). A consumer must therefore treat everything it
    received as void if the generator raises.
    """
    for (block,) in decode_mono_16k_speeds(
        path,
        speeds=(),
        block_frames=block_frames,
        min_duration_s=min_duration_s,
        silence_dbfs=silence_dbfs,
    ):
        if block.size:
            yield block


def decode_mono_16k_speeds(
    path: str | os.PathLike[str],
    *,
    speeds: Sequence[float],
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    min_duration_s: float = WINDOW_S,
    silence_dbfs: float | None = DEFAULT_SILENCE_DBFS,
) -> Iterator[tuple[npt.NDArray[np.float32], ...]]:
    """``decode_mono_16k_blocks``, plus the file played at each of ``speeds``, in one pass.

    Yields a tuple per decoded block: the 16 kHz mono block as recorded, then
    one block per speed (lengths differ). A speed ``s`` is the track as a
    turntable at ``s`` plays it, read at 16 kHz: the native-rate mono goes
    through soxr from ``rate`` to ``16 kHz / s``. Resampling from the native
    rate, not from the 16 kHz stream, keeps a slowed copy's top band: soxr
    keeps up to about 7.5 kHz at 16 kHz, so a 0.94 copy made from 16 kHz
    audio would stop at about 7.05 kHz, while live audio at that speed
    reaches 7.5 kHz. Checks and errors as in ``decode_mono_16k_blocks``
    (on the block as recorded).
    """
    if block_frames < 1:
        raise ConfigError(f"block_frames must be >= 1, got {block_frames}")
    if any(not (math.isfinite(s) and s > 0.0) for s in speeds):
        raise ConfigError(f"speeds must be positive, got {list(speeds)}")
    where = os.fspath(path)
    total_samples = 0
    peak = 0.0
    frames_read = 0
    header_s: float | None = None
    codec = ""
    try:
        source = open_audio(soundfile_name(where), name=where)
        with source:
            header_s = source.frames / source.samplerate
            codec = codec_name(source.format, source.subtype)
            downmix = Downmix()
            resampler = StreamResampler(in_rate_hz=source.samplerate, out_rate_hz=SAMPLE_RATE_HZ)
            played = [
                soxr.ResampleStream(
                    source.samplerate, SAMPLE_RATE_HZ / s, 1, dtype="float32", quality="HQ"
                )
                for s in speeds
            ]
            while True:
                with decoder_chatter_filtered():
                    block = source.read(block_frames, dtype="float32", always_2d=True)
                if not block.shape[0]:
                    break
                _check_finite(where, block, first_frame=frames_read, rate_hz=source.samplerate)
                frames_read += block.shape[0]
                mono = downmix(block)
                out = resampler.push(mono)
                total_samples += out.shape[0]
                if out.size:
                    peak = max(peak, float(np.abs(out).max()))
                yield (out, *(stream.resample_chunk(mono, last=False) for stream in played))
            tail = resampler.flush()
            tails = [stream.resample_chunk(np.zeros(0, np.float32), last=True) for stream in played]
    except AudioFormatError:
        raise
    except _DECODE_ERRORS as err:
        if header_s is None:
            reason = describe_decode_error(err, where)
        else:
            # The header parsed, so the data stops or breaks part-way (blocks are
            # read whole, so only the block it broke in is known).
            reason = describe_damaged_data(
                err, codec=codec, header_s=header_s, decoded_s=frames_read / source.samplerate
            )
        raise AudioFormatError(f"{where}: {reason}") from err
    if tail.size:
        total_samples += tail.shape[0]
        peak = max(peak, float(np.abs(tail).max()))
    yield (tail, *tails)
    _check_content(
        where,
        duration_s=total_samples / SAMPLE_RATE_HZ,
        peak=peak,
        min_duration_s=min_duration_s,
        silence_dbfs=silence_dbfs,
    )


def load_mono_16k(
    path: str | os.PathLike[str],
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
    min_duration_s: float = 0.0,
    silence_dbfs: float | None = None,
) -> npt.NDArray[np.float32]:
    """``load_mono`` at the encoder rate (16 kHz)."""
    return load_mono(
        path,
        sample_rate_hz=SAMPLE_RATE_HZ,
        start_s=start_s,
        duration_s=duration_s,
        min_duration_s=min_duration_s,
        silence_dbfs=silence_dbfs,
    )


def load_mono(
    path: str | os.PathLike[str],
    *,
    sample_rate_hz: int,
    start_s: float = 0.0,
    duration_s: float | None = None,
    min_duration_s: float = 0.0,
    silence_dbfs: float | None = None,
) -> npt.NDArray[np.float32]:
    """Decode ``[start_s, start_s + duration_s)`` of a file to ``[n]`` float32 mono at
    ``sample_rate_hz``.

    ``duration_s=None`` reads to the end. The excerpt is resampled on its own,
    so its first samples differ slightly from the same span cut out of a full
    decode (filter warm-up); with ``start_s=0`` it equals the concatenated
    ``decode_mono_16k_blocks`` output. By default there is no length or
    silence check (excerpts may be short or quiet); errors as in
    ``decode_mono_16k_blocks``.
    """
    if start_s < 0.0:
        raise ConfigError(f"start_s must be >= 0, got {start_s}")
    if duration_s is not None and duration_s < 0.0:
        raise ConfigError(f"duration_s must be >= 0, got {duration_s}")
    where = os.fspath(path)
    try:
        source = open_audio(soundfile_name(where), name=where)
        with source:
            start_frame = round(start_s * source.samplerate)
            if start_frame > 0:
                if source.seekable():
                    source.seek(start_frame)
                else:  # PyAV's files: decode up to the excerpt
                    skipped = source.read(start_frame, dtype="float32", always_2d=True)
                    if skipped.shape[0] < start_frame:
                        raise AudioFormatError(f"{where}: shorter than {start_s:g} s")
            frames = -1 if duration_s is None else round(duration_s * source.samplerate)
            with decoder_chatter_filtered():
                audio = source.read(frames=frames, dtype="float32", always_2d=True)
            rate_hz = source.samplerate
    except AudioFormatError:
        raise
    except _DECODE_ERRORS as err:
        raise AudioFormatError(f"{where}: {describe_decode_error(err, where)}") from err
    _check_finite(where, audio, first_frame=start_frame, rate_hz=rate_hz)
    resampler = StreamResampler(in_rate_hz=rate_hz, out_rate_hz=sample_rate_hz)
    mono = np.concatenate([resampler.push(audio), resampler.flush()])
    _check_content(
        where,
        duration_s=mono.shape[0] / sample_rate_hz,
        peak=float(np.abs(mono).max()) if mono.size else 0.0,
        min_duration_s=min_duration_s,
        silence_dbfs=silence_dbfs,
    )
    return mono


def _check_finite(
    where: str, block: npt.NDArray[np.float32], *, first_frame: int, rate_hz: int
) -> None:
    """Reject NaN/inf samples (``block`` is ``[frames, channels]``).

    Such a file is rejected, not repaired: zeroing the bad samples would index
    audio that was never there, and a float file with NaNs usually comes from
    a broken export whose other samples are not to be trusted either.
    """
    finite = np.isfinite(block)
    if finite.all():
        return
    first_bad = int(np.argmin(finite.all(axis=1)))
    at_s = (first_frame + first_bad) / rate_hz
    raise AudioFormatError(
        f"{where}: contains NaN or infinite samples (first at {at_s:.2f} s); "
        "not indexed, re-export the file"
    )


def _check_content(
    where: str,
    *,
    duration_s: float,
    peak: float,
    min_duration_s: float,
    silence_dbfs: float | None,
) -> None:
    if duration_s < min_duration_s:
        raise AudioFormatError(
            f"{where}: too short ({duration_s:.2f} s; at least {min_duration_s:g} s needed)"
        )
    if silence_dbfs is not None and peak_dbfs(peak) < silence_dbfs:
        level = peak_dbfs(peak)
        shown = "digital silence" if math.isinf(level) else f"peak {level:.1f} dBFS"
        raise AudioFormatError(f"{where}: silent ({shown}; threshold {silence_dbfs:g} dBFS)")
