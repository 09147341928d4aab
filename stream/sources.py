"""Audio sources: input devices (sounddevice) and files (soundfile) behind one interface.

Every source delivers audio through the same callback signature as
``sounddevice.InputStream``: ``callback(indata [frames, channels] float32,
frames, time_info, status)``, so ``Capture.callback`` sees a file exactly as it
sees a microphone.

This is the one module of ``synesthete.stream`` that does I/O. sounddevice and
soundfile are imported lazily inside functions: importing this module must
work without PortAudio (``synesthete devices`` then reports a DeviceError,
and file input still works).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from synesthete.errors import AudioFormatError, ConfigError, DeviceError

from .avdecode import AvAudioFile
from .config import CaptureConfig

AudioCallback = Callable[[npt.NDArray[np.float32], int, Any, Any], None]
"""``(indata [frames, channels] float32, frames, time_info, status) -> None``."""

PORTAUDIO_MISSING = "PortAudio library not found: install libportaudio2"

STOP_TIMEOUT_S = 5.0
"""How long ``DeviceSource.stop`` waits for PortAudio to stop a stream.

A frozen sound server blocks ``Pa_StopStream`` for as long as it stays frozen;
past this the stream is left to close on a daemon thread instead of hanging
the caller."""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _import_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio into a DeviceError."""
    try:
        import sounddevice
    except OSError as err:  # sounddevice raises OSError when libportaudio is absent
        raise DeviceError(PORTAUDIO_MISSING) from err
    except ImportError as err:
        raise DeviceError(f"sounddevice is not importable: {_one_line(err)}") from err
    module: ModuleType = sounddevice
    return module


def soundfile_name(where: str) -> str | bytes:
    """The name to hand soundfile: bytes on POSIX, so names that are not UTF-8 open too.

    soundfile encodes a ``str`` name strictly, so a file called ``b"caf\\xe9.wav"``
    (``"caf\\udce9.wav"`` once Python has decoded it) would fail to open.
    """
    return where if sys.platform == "win32" else os.fsencode(where)


# The mpg123 decoder inside libsndfile writes notes straight to file descriptor 2:
# "Note: Illegal Audio-MPEG-Header ..." whenever libsndfile, failing to recognise a
# file, lets mpg123 probe it (a text file named .mp3), and "[src/libmpg123/...]
# error: ..." on damaged frames. The error we raise says it once, in one line.
_DECODER_CHATTER = (b"Note: ", b"Warning: ", b"[src/libmpg123/")
_STDERR_FD = 2
_stderr_lock = threading.RLock()


@contextlib.contextmanager
def decoder_chatter_filtered() -> Iterator[None]:
    """Around a libsndfile call: drop what its decoders print on fd 2, keep the rest.

    Whatever else reaches fd 2 meanwhile (another thread's message, a progress
    bar) is written back in order once the call returns, so nothing is lost.
    """
    with _stderr_lock:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(_STDERR_FD)
        except OSError:  # no fd 2 to protect
            yield
            return
        try:
            with tempfile.TemporaryFile() as sink:
                os.dup2(sink.fileno(), _STDERR_FD)
                try:
                    yield
                finally:
                    with contextlib.suppress(Exception):
                        sys.stderr.flush()
                    os.dup2(saved, _STDERR_FD)
                    sink.seek(0)
                    kept = b"".join(
                        line
                        for line in sink.read().splitlines(keepends=True)
                        if not line.startswith(_DECODER_CHATTER)
                    )
                    if kept:
                        os.write(_STDERR_FD, kept)
        finally:
            os.close(saved)


def describe_decode_error(err: BaseException, where: str) -> str:
    """libsndfile's message as one line, without the path it repeats, and less misleading."""
    text = " ".join(str(err).split())
    for name in (where, soundfile_name(where)):
        text = text.replace(f"Error opening {name!r}: ", "")
    text = text.removeprefix("Error : ")
    try:
        size_bytes = Path(where).stat().st_size
    except FileNotFoundError:
        return "no such file"
    except OSError as stat_err:
        return f"cannot read: {stat_err.strerror or stat_err}"
    if size_bytes == 0:
        return "empty file"
    # libsndfile says this for any unrecognised content once mpg123 has probed it.
    if "File does not exist or is not a regular file" in text or "Format not recognised" in text:
        return UNRECOGNISED_AUDIO
    return f"cannot decode: {text.rstrip('.') or type(err).__name__}"


UNRECOGNISED_AUDIO = "not a recognised audio format (or corrupt header)"
# libsndfile's words when mpg123 (or another codec library) fails without saying why.
_VAGUE_DECODER_REASONS = frozenset({"", "Unspecified internal error"})
_CODEC_NAMES = {"OGG": {"VORBIS": "Vorbis", "OPUS": "Opus"}}


def codec_name(format_name: str, subtype: str) -> str:
    """A file's codec for people, from libsndfile's format and subtype (``MP3``, ``FLAC``,
    ``Vorbis``, ``Opus``, ``WAV``...)."""
    return _CODEC_NAMES.get(format_name, {}).get(subtype, format_name)


def describe_damaged_data(
    err: BaseException, *, codec: str, header_s: float, decoded_s: float
) -> str:
    """One line for audio data that the decoder gives up on part-way (its header was fine).

    Says what the header promised, which decoder stopped, and how far it got
    (``decoded_s``: the audio read before the failing block, so the damage is
    at or after it). libsndfile's own reason is added only when it says
    something: for a damaged MP3 it is "Unspecified internal error".
    """
    reason = _sf_reason(err).removeprefix("Error : ").rstrip(".")
    detail = "" if reason in _VAGUE_DECODER_REASONS else f": {reason}"
    return (
        f"truncated or corrupt audio data (the header says {header_s:.1f} s; "
        f"the {codec} decoder gave up after {decoded_s:.1f} s{detail})"
    )


def _import_soundfile() -> ModuleType:
    try:
        import soundfile
    except (OSError, ImportError) as err:
        raise AudioFormatError(f"soundfile/libsndfile is not available: {_one_line(err)}") from err
    module: ModuleType = soundfile
    return module


def open_audio(target: str | bytes | io.BytesIO, *, name: str) -> Any:
    """Open a file for block reads: soundfile where it can, PyAV (``AvAudioFile``) otherwise.

    Suffixes that libsndfile cannot read at all (m4a, wma, video files...) go
    straight to PyAV. For the rest PyAV is tried only once libsndfile has failed
    to recognise the file (an MP3 with odd headers); if PyAV fails too, the
    error is libsndfile's, so a damaged WAV or a text file named ``.mp3`` is
    reported as before. Raises ``AudioFormatError("<name>: <reason>")``.
    """
    from .avdecode import AV_ONLY_SUFFIXES

    if not isinstance(target, io.BytesIO):
        path = Path(os.fsdecode(target))
        if path.suffix.lower() in AV_ONLY_SUFFIXES:
            if not path.exists():
                raise AudioFormatError(f"{name}: no such file")
            return AvAudioFile(target, name=name)
    sf = _import_soundfile()
    try:
        with decoder_chatter_filtered():
            return sf.SoundFile(target)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as err:
        first = err
    if isinstance(target, io.BytesIO):
        reason = _sf_reason(first)
        unrecognised = "Format not recognised" in reason or "File does not exist" in reason
        fallback: str | bytes | io.BytesIO = io.BytesIO(target.getvalue())
    else:
        reason = describe_decode_error(first, os.fsdecode(target))
        unrecognised = reason == UNRECOGNISED_AUDIO or reason.startswith("cannot decode")
        fallback = target
    if unrecognised:
        try:
            return AvAudioFile(fallback, name=name)
        except AudioFormatError:
            pass
    raise first


class Source(Protocol):
    """Anything that pushes audio blocks into a sounddevice-style callback."""

    @property
    def name(self) -> str:
        """The device name, or the file path as given; events carry it as ``file``."""
        ...

    @property
    def sample_rate_hz(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def finished(self) -> threading.Event:
        """Set once no more audio will come (end of file, or the device stream ended)."""
        ...

    def start(self, callback: AudioCallback) -> None:
        """Begin delivering blocks to ``callback`` (from another thread, except virtual files)."""
        ...

    def stop(self) -> None:
        """Stop delivering; after return no further callback runs."""
        ...

    def close(self) -> None:
        """Stop and release the device or file; idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class ReopenableSource(Source, Protocol):
    """A live device the loop can reopen after it was lost (``DeviceSource``)."""

    @property
    def error(self) -> str | None:
        """Why the stream ended on its own, if it did; ``None`` while it runs."""
        ...

    def reopen(self, callback: AudioCallback) -> None:
        """Close what is left of the stream and open the same device again; DeviceError if not."""
        ...


# ---------------------------------------------------------------------------
# Devices


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """One PortAudio device as ``synesthete devices`` lists it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    default_sample_rate_hz: float
    is_default_input: bool = False

    @property
    def is_input(self) -> bool:
        return self.max_input_channels > 0

    @property
    def label(self) -> str:
        return f"[{self.index}] {self.name} ({self.hostapi})"


def devices_from_query(
    raw_devices: Sequence[Mapping[str, Any]],
    hostapis: Sequence[Mapping[str, Any]],
    *,
    default_input_index: int | None,
) -> list[DeviceInfo]:
    """Build ``DeviceInfo`` from ``sd.query_devices()`` / ``sd.query_hostapis()`` dicts."""
    devices = []
    for position, raw in enumerate(raw_devices):
        index = int(raw.get("index", position))
        hostapi_index = int(raw.get("hostapi", -1))
        hostapi = (
            str(hostapis[hostapi_index]["name"])
            if 0 <= hostapi_index < len(hostapis)
            else "unknown host API"
        )
        devices.append(
            DeviceInfo(
                index=index,
                name=str(raw["name"]),
                hostapi=hostapi,
                max_input_channels=int(raw["max_input_channels"]),
                default_sample_rate_hz=float(raw["default_samplerate"]),
                is_default_input=index == default_input_index,
            )
        )
    return devices


def _describe_inputs(inputs: Sequence[DeviceInfo]) -> str:
    if not inputs:
        return "no audio input devices found"
    return "available inputs: " + "; ".join(d.label for d in inputs)


def match_device(
    spec: int | str | None,
    devices: Sequence[DeviceInfo],
    *,
    default_input_index: int | None,
) -> DeviceInfo:
    """Pick the input device that ``spec`` names, from a device list (pure; no PortAudio).

    ``spec`` is ``None`` (the default input), an index (an int or a string of
    digits, as a CLI passes it), or a case-insensitive query matched like
    python-sounddevice does: its whitespace-separated words must occur, in
    order, in ``"name, hostapi"``. Several matches are resolved by an exact
    name match, else they are an error. Errors are one-line DeviceErrors.
    """
    inputs = [d for d in devices if d.is_input]
    if spec is None:
        for device in inputs:
            if device.index == default_input_index:
                return device
        if not inputs:
            raise DeviceError("no audio input devices found")
        raise DeviceError(
            f"no default input device; pick one with --device ({_describe_inputs(inputs)})"
        )

    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int) and not isinstance(spec, bool):
        for device in devices:
            if device.index == spec:
                if not device.is_input:
                    raise DeviceError(
                        f"audio device {device.label} has no input channels; "
                        f"{_describe_inputs(inputs)}"
                    )
                return device
        raise DeviceError(f"no audio device with index {spec}; {_describe_inputs(inputs)}")
    if not isinstance(spec, str):
        raise DeviceError(f"device must be an index or a name, got {spec!r}")

    query = spec.strip().lower()
    words = query.split()
    if not words:
        raise DeviceError(f"empty device name; {_describe_inputs(inputs)}")
    matches: list[DeviceInfo] = []
    exact: list[DeviceInfo] = []
    for device in inputs:
        full = f"{device.name}, {device.hostapi}".lower()
        position = 0
        for word in words:
            position = full.find(word, position)
            if position < 0:
                break
            position += len(word)
        else:
            matches.append(device)
            if query in (device.name.lower(), full):
                exact.append(device)
    if len(matches) == 1:
        return matches[0]
    if len(exact) == 1:
        return exact[0]
    if not matches:
        raise DeviceError(f"no input device matches {spec!r}; {_describe_inputs(inputs)}")
    listed = "; ".join(d.label for d in matches)
    raise DeviceError(
        f"input device {spec!r} is ambiguous, it matches: {listed}; "
        "give the index or more of the name"
    )


class _PortAudioExit:
    """Keeps sounddevice's exit handler off while a PortAudio call may block.

    sounddevice terminates PortAudio at exit, and ``Pa_Terminate`` waits for a
    stream whose stop (or open) is stuck in a frozen sound server for as long
    as it stays frozen: the process would hang after its last line. So the
    handler is unregistered while any such call runs on a background thread
    and registered again when the last one returns; a process that exits
    meanwhile leaves it to the OS to free what PortAudio holds. Module-level
    because the handler it guards is.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._handler: Callable[[], None] | None = None

    def enter(self, sd: ModuleType) -> None:
        handler = getattr(sd, "_exit_handler", None)
        with self._lock:
            self._running += 1
            if handler is not None and self._running == 1:
                self._handler = handler
                atexit.unregister(handler)

    def leave(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0 and self._handler is not None:
                atexit.register(self._handler)
                self._handler = None

    @property
    def running(self) -> int:
        return self._running


_PORTAUDIO_EXIT = _PortAudioExit()


def portaudio_calls_in_flight() -> int:
    """Device stream stops and reopens that have not returned (a frozen sound server holds them).

    While there are any, the interpreter's normal teardown can hang or crash
    inside PortAudio or the sound server's client library, so the CLI leaves
    with ``os._exit`` instead.
    """
    return _PORTAUDIO_EXIT.running


def _default_input_index(sd: ModuleType) -> int | None:
    default = sd.default.device[0]
    if isinstance(default, int) and default >= 0:
        return default
    return None


def list_devices(*, inputs_only: bool = True) -> list[DeviceInfo]:
    """Query PortAudio for devices (input-capable only unless ``inputs_only=False``)."""
    sd = _import_sounddevice()
    try:
        raw_devices = list(sd.query_devices())
        hostapis = list(sd.query_hostapis())
        default_input_index = _default_input_index(sd)
    except sd.PortAudioError as err:
        raise DeviceError(f"cannot list audio devices: {_one_line(err)}") from err
    devices = devices_from_query(raw_devices, hostapis, default_input_index=default_input_index)
    return [d for d in devices if d.is_input] if inputs_only else devices


def resolve_device(spec: int | str | None) -> DeviceInfo:
    """The input device ``spec`` names (see ``match_device``), queried from PortAudio."""
    sd = _import_sounddevice()
    devices = list_devices(inputs_only=False)
    return match_device(spec, devices, default_input_index=_default_input_index(sd))


class DeviceSource:
    """A live input device through ``sounddevice.InputStream``.

    The device is resolved and its settings checked at construction, so a bad
    ``--device`` fails before anything heavy starts. The stream runs at the
    device's native rate (or ``config.sample_rate_hz``) in float32; software
    resampling happens downstream. ``stop`` closes the PortAudio stream, so a
    later ``start`` opens a fresh one; it gives up after ``STOP_TIMEOUT_S``
    rather than hang on a frozen sound server. ``finished`` and ``error`` tell
    when the stream ended on its own; ``reopen`` is for reconnecting then.
    """

    def __init__(self, *, config: CaptureConfig) -> None:
        self._sd = _import_sounddevice()
        self._config = config
        self._device = resolve_device(config.device)
        device = self._device
        rate_hz = config.sample_rate_hz or round(device.default_sample_rate_hz)
        if rate_hz <= 0:
            raise DeviceError(
                f"audio device {device.label} reports no default sample rate; set sample_rate_hz"
            )
        channels = config.channels or min(2, device.max_input_channels)
        if channels > device.max_input_channels:
            raise DeviceError(
                f"audio device {device.label} has {device.max_input_channels} input channels, "
                f"{channels} requested"
            )
        self._sample_rate_hz = rate_hz
        self._channels = channels
        sd = self._sd
        try:
            sd.check_input_settings(
                device=device.index, channels=channels, dtype="float32", samplerate=rate_hz
            )
        except (sd.PortAudioError, ValueError) as err:
            raise DeviceError(
                f"audio device {device.label} refuses {rate_hz} Hz, {channels} ch float32: "
                f"{_one_line(err)}"
            ) from err
        self._stream: Any = None
        self._stream_token: object = None
        self._closing: threading.Thread | None = None
        self._closed = False
        self._finished = threading.Event()
        self.error: str | None = None

    @property
    def name(self) -> str:
        return self._device.name

    @property
    def device(self) -> DeviceInfo:
        return self._device

    @property
    def sample_rate_hz(self) -> int:
        return self._sample_rate_hz

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def active(self) -> bool:
        return self._stream is not None and bool(self._stream.active)

    @property
    def finished(self) -> threading.Event:
        """Set when PortAudio ends the stream on its own (device unplugged or failed)."""
        return self._finished

    def _on_stream_end(self, token: object) -> None:
        if token is not self._stream_token:
            return  # a stream this source has since replaced
        if self._stream is not None:
            # PortAudio ended the stream without our stop(): the device went away.
            self.error = f"audio device {self._device.label} stopped delivering audio"
        self._finished.set()

    @property
    def latency_s(self) -> float | None:
        """Input latency PortAudio reports for the running stream."""
        return None if self._stream is None else float(self._stream.latency)

    def start(self, callback: AudioCallback) -> None:
        if self._closed:
            raise DeviceError(f"audio device {self._device.label} was closed")
        if self._stream is not None:
            raise DeviceError(f"audio device {self._device.label} is already started")
        sd = self._sd
        config = self._config
        # Each stream reports its end with its own token: a replaced stream
        # ending late must not mark the new one as finished.
        token = object()
        self._stream_token = token
        self._finished.clear()
        self.error = None
        stream: Any = None
        try:
            stream = sd.InputStream(
                device=self._device.index,
                samplerate=self._sample_rate_hz,
                channels=self._channels,
                dtype="float32",
                blocksize=config.block_frames,
                latency=config.latency,
                callback=callback,
                finished_callback=lambda: self._on_stream_end(token),
            )
            self._stream = stream
            stream.start()
        except (sd.PortAudioError, ValueError) as err:
            self._stream = None
            if stream is not None:
                stream.close(ignore_errors=True)
            raise DeviceError(
                f"cannot open audio device {self._device.label} at {self._sample_rate_hz} Hz, "
                f"{self._channels} ch: {_one_line(err)}"
            ) from err

    def stop(self) -> None:
        """Stop and close the stream; after return no callback runs (see ``STOP_TIMEOUT_S``)."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        sd = self._sd
        failure: list[BaseException] = []

        def stop_and_close() -> None:
            try:
                stream.stop()  # returns after the last callback has finished
            except sd.PortAudioError as err:
                failure.append(err)
            finally:
                stream.close(ignore_errors=True)
                _PORTAUDIO_EXIT.leave()

        _PORTAUDIO_EXIT.enter(sd)

        thread = threading.Thread(target=stop_and_close, name="synesthete-device-stop", daemon=True)
        self._closing = thread
        thread.start()
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise DeviceError(
                f"audio device {self._device.label} did not stop within {STOP_TIMEOUT_S:g} s "
                "(the sound server does not answer); left it to close in the background"
            )
        if failure:
            raise DeviceError(
                f"error stopping audio device {self._device.label}: {_one_line(failure[0])}"
            ) from failure[0]

    def reopen(self, callback: AudioCallback) -> None:
        """Open the device again after it was lost, for the live loop's reconnect.

        What is left of the old stream is closed (errors ignored: the device
        is gone). PortAudio lists devices once, when it starts, so it is
        restarted to see a device that was plugged back in (no other stream of
        this process may be open then); the device is found again by name and
        host API, since it may come back under another index. It must accept
        the same rate and channel count as before, which the rest of the
        pipeline was built for. Raises DeviceError while it is not back.
        """
        if self._closed:
            raise DeviceError(f"audio device {self._device.label} was closed")
        with contextlib.suppress(DeviceError):
            self.stop()
        closing = self._closing
        if closing is not None:
            closing.join(STOP_TIMEOUT_S)
            if closing.is_alive():
                raise DeviceError(
                    f"audio device {self._device.label} is still closing "
                    "(the sound server does not answer)"
                )
        sd = self._sd
        _PORTAUDIO_EXIT.enter(sd)  # the caller may give up on us while we block here
        try:
            self._rescan()
            self._device = self._find_again()
            try:
                sd.check_input_settings(
                    device=self._device.index,
                    channels=self._channels,
                    dtype="float32",
                    samplerate=self._sample_rate_hz,
                )
            except (sd.PortAudioError, ValueError) as err:
                raise DeviceError(
                    f"audio device {self._device.label} is listed but cannot capture "
                    f"{self._sample_rate_hz} Hz, {self._channels} ch float32: {_one_line(err)}"
                ) from err
            self.start(callback)
        finally:
            _PORTAUDIO_EXIT.leave()

    def _rescan(self) -> None:
        # sounddevice has no public call for this; _terminate/_initialize is
        # what its maintainer suggests for hot-plugging
        # (spatialaudio/python-sounddevice#125). It stops every stream of the
        # process, which is why the old one must be closed first.
        sd = self._sd
        terminate = getattr(sd, "_terminate", None)
        initialize = getattr(sd, "_initialize", None)
        if terminate is None or initialize is None:
            return
        with contextlib.suppress(sd.PortAudioError):
            terminate()
        try:
            initialize()
        except sd.PortAudioError as err:
            raise DeviceError(f"cannot restart PortAudio: {_one_line(err)}") from err

    def _find_again(self) -> DeviceInfo:
        old = self._device
        devices = list_devices(inputs_only=True)
        same = [d for d in devices if d.name == old.name and d.hostapi == old.hostapi]
        if not same:
            raise DeviceError(f"audio device {old.name} ({old.hostapi}) is not present")
        for device in same:
            if device.index == old.index:
                return device
        return same[0]

    def close(self) -> None:
        self._closed = True
        self.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Files


@dataclass(frozen=True, slots=True)
class VirtualTimeInfo:
    """Stands in for PortAudio's ``time_info``: stream seconds instead of a device clock.

    The attribute names are PortAudio's, so consumers read both the same way.
    """

    inputBufferAdcTime: float  # noqa: N815
    currentTime: float  # noqa: N815
    outputBufferDacTime: float = 0.0  # noqa: N815


NO_STATUS = 0
"""The ``status`` a FileSource passes: falsy, as an all-clear ``CallbackFlags`` is."""


class FileSource:
    """Replays an audio file through the sounddevice callback signature.

    Blocks of ``block_frames`` frames (the last may be shorter) are decoded
    with soundfile at the file's own rate and channel count, as float32
    ``[frames, channels]``.

    Two clocks:

    - **virtual** (``realtime=False``): ``run_virtual(callback)`` (and
      ``start``, which calls it) delivers every block synchronously on the
      calling thread, as fast as possible, then returns. A consumer keeps up
      by processing inside ``Capture``'s ``notify``, or iterates ``blocks()``.
    - **realtime** (``realtime=True``): ``start`` returns at once; a thread
      delivers block k when a device would have: at ``t0 + end_frame(k) /
      rate``, computed from ``t0`` every time so sleep errors do not accumulate.
      ``loop=True`` replays the file forever (realtime only). ``speed`` paces
      it that many times faster than real time (soak tests: hours of audio
      through the live loop in minutes).

    ``data``, when given, is the whole file already read (standard input,
    ``-`` on the command line); ``path`` then only names it in events and errors.

    End of file: ``finished`` (a ``threading.Event``) is set once no more audio
    will come, and then ``callback`` is called one last time with an empty
    ``[0, channels]`` block, so a consumer woken by ``Capture.notify`` sees
    the flag. Consumer recipe: ``done = source.finished.is_set(); block =
    capture.drain(); ...; if done: break`` (read the flag *before* draining,
    then the drain is guaranteed to include the last block). ``error`` holds
    whatever stopped a realtime thread early.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        block_frames: int = 1024,
        realtime: bool = False,
        loop: bool = False,
        speed: float = 1.0,
        data: bytes | None = None,
    ) -> None:
        if isinstance(block_frames, bool) or not isinstance(block_frames, int) or block_frames <= 0:
            raise ConfigError(f"block_frames must be an int > 0, got {block_frames!r}")
        if loop and not realtime:
            raise ConfigError("loop=True needs realtime=True: a looping file never ends otherwise")
        if not 0 < speed < float("inf"):
            raise ConfigError(f"speed must be a finite number > 0, got {speed!r}")
        if speed != 1.0 and not realtime:
            raise ConfigError("speed needs realtime=True: the virtual clock has no pace")
        self._name = os.fspath(path)
        self._block_frames = block_frames
        self._realtime = realtime
        self._loop = loop
        self._speed = float(speed)
        self._data = data
        if data is None and not Path(self._name).exists():
            raise AudioFormatError(f"{self._name}: no such file")
        if data is None and not Path(self._name).is_file():
            raise AudioFormatError(f"{self._name}: not a file")
        if data is not None and not data:
            raise AudioFormatError(f"{self._name}: no data (empty input)")
        sf = _import_soundfile()
        try:
            with open_audio(self._open_target(), name=self._name) as probe:
                rate_hz, channels, frames = int(probe.samplerate), int(probe.channels), probe.frames
                exact_frames = not isinstance(probe, AvAudioFile)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioFormatError(f"{self._name}: {self._decode_error(err)}") from err
        if rate_hz <= 0 or channels <= 0:
            raise AudioFormatError(
                f"{self._name}: invalid audio header ({rate_hz} Hz, {channels} ch)"
            )
        if frames == 0 and exact_frames:
            # libsndfile counts frames exactly; PyAV only estimates them (0: unknown).
            raise AudioFormatError(f"{self._name}: no audio frames")
        self._sample_rate_hz = rate_hz
        self._channels = channels
        self._frames = int(frames)
        self.finished = threading.Event()
        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def name(self) -> str:
        """The path as given."""
        return self._name

    def _open_target(self) -> str | bytes | io.BytesIO:
        return soundfile_name(self._name) if self._data is None else io.BytesIO(self._data)

    def _decode_error(self, err: BaseException) -> str:
        if self._data is None:
            return describe_decode_error(err, self._name)
        reason = _sf_reason(err)
        if "Format not recognised" in reason or "File does not exist" in reason:
            return UNRECOGNISED_AUDIO
        return f"cannot decode: {reason.rstrip('.')}"

    @property
    def sample_rate_hz(self) -> int:
        return self._sample_rate_hz

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def frames(self) -> int:
        """Frames in the file as its header reports them."""
        return self._frames

    @property
    def duration_s(self) -> float:
        return self._frames / self._sample_rate_hz

    @property
    def realtime(self) -> bool:
        return self._realtime

    @property
    def active(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What ended the realtime thread early, if anything."""
        return self._error

    def blocks(self) -> Generator[npt.NDArray[np.float32], None, None]:
        """Decode the file block by block: ``[block_frames, channels]`` float32 arrays.

        With ``loop=True`` this never ends. Raises AudioFormatError on a decode
        error or non-finite samples.
        """
        sf = _import_soundfile()
        try:
            handle = open_audio(self._open_target(), name=self._name)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioFormatError(f"{self._name}: {self._decode_error(err)}") from err
        with handle:
            position_frames = 0
            while True:
                try:
                    with decoder_chatter_filtered():
                        block = handle.read(self._block_frames, dtype="float32", always_2d=True)
                except (sf.SoundFileError, RuntimeError) as err:
                    damage = describe_damaged_data(
                        err,
                        codec=codec_name(handle.format, handle.subtype),
                        header_s=handle.frames / handle.samplerate,
                        decoded_s=position_frames / handle.samplerate,
                    )
                    raise AudioFormatError(f"{self._name}: {damage}") from err
                if block.shape[0] == 0:
                    if not self._loop:
                        return
                    handle.seek(0)
                    continue
                if not np.isfinite(block).all():
                    raise AudioFormatError(
                        f"{self._name}: non-finite samples near frame {position_frames}"
                    )
                position_frames += block.shape[0]
                yield block

    def run_virtual(self, callback: AudioCallback) -> int:
        """Deliver the whole file to ``callback`` on this thread; returns frames delivered."""
        if self._loop:
            raise ConfigError("run_virtual cannot replay a looping FileSource")
        if self.active:
            raise ConfigError(f"{self._name}: FileSource is already playing in realtime")
        self._begin()
        delivered_frames = 0
        blocks = self.blocks()
        try:
            for block in blocks:
                frames = block.shape[0]
                callback(block, frames, self._time_info(delivered_frames, frames), NO_STATUS)
                delivered_frames += frames
        finally:
            blocks.close()
            self.finished.set()
        self._signal_end(callback, delivered_frames)
        return delivered_frames

    def start(self, callback: AudioCallback) -> None:
        """Realtime: start the pacing thread and return. Virtual: same as ``run_virtual``."""
        if not self._realtime:
            self.run_virtual(callback)
            return
        if self.active:
            raise ConfigError(f"{self._name}: FileSource is already started")
        self._begin()
        self._thread = threading.Thread(
            target=self._run_realtime,
            args=(callback,),
            name=f"FileSource({self._name})",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the realtime thread; no callback runs after this returns."""
        self._stop_requested.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def close(self) -> None:
        self.stop()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the file has been delivered (or stopped); True when finished."""
        return self.finished.wait(timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _begin(self) -> None:
        self.finished.clear()
        self._stop_requested.clear()
        self._error = None

    def _time_info(self, start_frame: int, frames: int) -> VirtualTimeInfo:
        rate = self._sample_rate_hz
        return VirtualTimeInfo(
            inputBufferAdcTime=start_frame / rate, currentTime=(start_frame + frames) / rate
        )

    def _signal_end(self, callback: AudioCallback, delivered_frames: int) -> None:
        empty = np.zeros((0, self._channels), dtype=np.float32)
        callback(empty, 0, self._time_info(delivered_frames, 0), NO_STATUS)

    def _run_realtime(self, callback: AudioCallback) -> None:
        rate = self._sample_rate_hz * self._speed  # frames per wall-clock second
        delivered_frames = 0
        stopped = False
        blocks = self.blocks()
        try:
            t0_s = time.monotonic()
            for block in blocks:
                frames = block.shape[0]
                # A device hands over a block once it has been recorded in full.
                due_s = t0_s + (delivered_frames + frames) / rate
                delay_s = due_s - time.monotonic()
                if delay_s > 0 and self._stop_requested.wait(delay_s):
                    stopped = True
                    break
                if self._stop_requested.is_set():
                    stopped = True
                    break
                callback(block, frames, self._time_info(delivered_frames, frames), NO_STATUS)
                delivered_frames += frames
        except Exception as err:
            # A thread boundary: nobody would see the exception, so keep it for the owner.
            self._error = err
        finally:
            blocks.close()
            self.finished.set()
        if stopped:
            return
        try:
            self._signal_end(callback, delivered_frames)
        except Exception as err:
            if self._error is None:
                self._error = err


def _sf_reason(err: BaseException) -> str:
    reason = getattr(err, "error_string", None)
    return _one_line(err) if not reason else " ".join(str(reason).split())
