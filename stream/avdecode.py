"""Decoding with PyAV (FFmpeg) for what libsndfile does not read: m4a/AAC, ALAC, WMA, the
audio track of video files, and MP3 files whose odd headers libsndfile refuses.

``AvAudioFile`` offers the part of ``soundfile.SoundFile`` that the library scan,
``identify`` and ``FileSource`` use (``samplerate``, ``channels``, ``frames``,
``format``, ``subtype``, ``read``, ``seek(0)``, a context manager), so each of
them keeps soundfile for what it reads well and takes this one only where
soundfile cannot open a file (``open_audio``). PyAV is imported lazily: a
module that imports this one still imports without it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from types import ModuleType, TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from synesthete.errors import AudioFormatError

MAX_BAD_PACKETS = 32
"""Damaged packets skipped in a row before a file counts as undecodable."""

AV_ONLY_SUFFIXES: frozenset[str] = frozenset(
    {
        ".m4a", ".m4b", ".mp4", ".m4v", ".aac", ".alac", ".wma", ".asf", ".mka",
        ".mkv", ".webm", ".mov", ".avi", ".ac3", ".wv", ".ape", ".amr", ".3gp",
    }
)  # fmt: skip
"""Suffixes libsndfile cannot read at all: straight to PyAV (m4a/AAC/ALAC, WMA, video...)."""


def import_av() -> ModuleType:
    """Import PyAV, its FFmpeg log kept off stderr (our errors say it in one line)."""
    try:
        import av
        import av.logging
    except ImportError as err:
        raise AudioFormatError(f"PyAV (the av package) is not importable: {err}") from err
    av.logging.set_level(None)
    module: ModuleType = av
    return module


def av_reason(err: BaseException) -> str:
    """FFmpeg's reason without the file name or URL PyAV puts into ``str(err)``."""
    reason = getattr(err, "strerror", None)
    text = str(reason) if reason else type(err).__name__
    return " ".join(text.split())


class AvAudioFile:
    """The first audio stream of a file (a path, or bytes already read) decoded by FFmpeg.

    ``read(frames)`` returns ``[n, channels]`` float32 at the stream's own rate and
    channel count. ``frames`` is the container's estimate (for the duration shown
    in messages); the decoded length is what counts.
    """

    def __init__(self, target: str | bytes | io.BytesIO, *, name: str) -> None:
        self._av = import_av()
        self._target = target
        self._name = name
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._pending: list[npt.NDArray[np.float32]] = []
        self._pending_frames = 0
        self._open()

    def _open(self) -> None:
        av = self._av
        target = self._target
        source: Any = os.fsdecode(target) if isinstance(target, bytes) else target
        if isinstance(source, io.BytesIO):
            source.seek(0)
        try:
            container = av.open(source, mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise AudioFormatError(f"{self._name}: cannot decode: {av_reason(err)}") from err
        audio = [s for s in container.streams if s.type == "audio"]
        if not audio:
            container.close()
            raise AudioFormatError(f"{self._name}: no audio stream (a video without sound?)")
        stream = audio[0]
        context = stream.codec_context
        rate_hz = int(context.sample_rate or 0)
        # Surround is folded to stereo by FFmpeg: everything downstream downmixes to mono.
        channels = min(2, int(context.channels or 0))
        if rate_hz <= 0 or channels <= 0:
            container.close()
            raise AudioFormatError(
                f"{self._name}: invalid audio stream ({rate_hz} Hz, {channels} ch)"
            )
        self._container = container
        self._stream = stream
        self.samplerate = rate_hz
        self.channels = channels
        self.format = str(stream.codec_context.name).upper()
        self.subtype = self.format
        duration_s = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / 1_000_000
        self.frames = max(0, round(duration_s * rate_hz))
        self._resampler = av.AudioResampler(format="flt", layout=_layout(channels), rate=rate_hz)
        self._frames = self._decoded()
        self._pending = []
        self._pending_frames = 0

    def _decoded(self) -> Iterator[Any]:
        av = self._av
        bad_in_a_row = 0
        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as err:
                # A damaged packet: skip it as a player does, unless nothing decodes.
                bad_in_a_row += 1
                if bad_in_a_row > MAX_BAD_PACKETS:
                    raise AudioFormatError(
                        f"{self._name}: {MAX_BAD_PACKETS} damaged packets in a row "
                        f"({av_reason(err)})"
                    ) from err
                continue
            bad_in_a_row = 0
            for frame in frames:
                frame.pts = None  # the resampler need not keep timestamps
                yield from self._resampler.resample(frame)
        yield from self._resampler.resample(None)

    def read(
        self, frames: int = -1, *, dtype: str = "float32", always_2d: bool = True
    ) -> npt.NDArray[np.float32]:
        """Up to ``frames`` frames (``-1``: all that is left), ``[n, channels]`` float32."""
        del dtype, always_2d  # always float32 [n, channels], as the callers ask
        av = self._av
        want = None if frames < 0 else frames
        try:
            while self._frames is not None and (want is None or self._pending_frames < want):
                frame = next(self._frames, None)
                if frame is None:
                    self._frames = None
                    break
                block = frame.to_ndarray().reshape(-1, self.channels).astype(np.float32)
                if block.shape[0]:
                    self._pending.append(block)
                    self._pending_frames += block.shape[0]
        except av.error.FFmpegError as err:
            raise AudioFormatError(f"{self._name}: cannot decode: {av_reason(err)}") from err
        if not self._pending:
            return np.zeros((0, self.channels), dtype=np.float32)
        joined = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        take = joined.shape[0] if want is None else min(want, joined.shape[0])
        out, rest = joined[:take], joined[take:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_frames = rest.shape[0]
        return np.ascontiguousarray(out)

    def seek(self, frame: int) -> None:
        """Only back to the start (``FileSource(loop=True)``): the file is opened again."""
        if frame != 0:
            raise AudioFormatError(f"{self._name}: can only seek to the start")
        self.close()
        self._open()

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"
