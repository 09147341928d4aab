"""The computer's own audio: the monitor source of the default PulseAudio/PipeWire sink.

A sink's monitor carries what the sink plays, so recording it names the music
this machine sends out (an OBS overlay of one's own stream). Capture goes
through the same path as a microphone: PortAudio's ALSA ``pulse`` device
(libasound2-plugins), told which source to record by ``PULSE_SOURCE``, which
libpulse reads when the stream connects. ``pactl`` (pulseaudio-utils, which
also talks to PipeWire's pulse server) says which sink is the default and
lists the sources for ``synesthete devices``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from synesthete.errors import DeviceError

from .config import CaptureConfig
from .sources import DeviceSource

PACTL_TIMEOUT_S = 10.0
MONITOR_SUFFIX = ".monitor"
PULSE_DEVICE = "pulse"
"""PortAudio's ALSA device that reaches the sound server (libasound2-plugins)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSource:
    """One source of the sound server, as ``pactl list short sources`` gives it."""

    name: str
    spec: str
    """Sample spec, e.g. ``s16le 2ch 44100Hz``."""
    is_default_sink_monitor: bool = False

    @property
    def is_monitor(self) -> bool:
        return self.name.endswith(MONITOR_SUFFIX)

    @property
    def sink(self) -> str | None:
        return self.name.removesuffix(MONITOR_SUFFIX) if self.is_monitor else None


def _pactl(*args: str) -> str:
    if shutil.which("pactl") is None:
        raise DeviceError(
            "pactl not found: the computer's own audio needs pulseaudio-utils "
            "(PulseAudio, or PipeWire's pulse server)"
        )
    try:
        done = subprocess.run(
            ["pactl", *args], capture_output=True, text=True, timeout=PACTL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DeviceError(f"pactl {' '.join(args)} failed: {err}") from err
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise DeviceError(f"no PulseAudio/PipeWire sound server answers ({reason})")
    return done.stdout


def default_sink() -> str:
    """The default sink's name (``pactl get-default-sink``, or ``pactl info`` where older)."""
    try:
        name = _pactl("get-default-sink").strip()
    except DeviceError:
        name = ""
    if not name:
        for line in _pactl("info").splitlines():
            if line.startswith("Default Sink:"):
                name = line.split(":", 1)[1].strip()
    if not name or name == "@DEFAULT_SINK@":
        raise DeviceError("the sound server has no default sink: nothing plays, no monitor")
    return name


def server_sources() -> list[ServerSource]:
    """The sound server's sources, monitors included and marked (``devices`` lists them)."""
    try:
        monitor = default_sink() + MONITOR_SUFFIX
    except DeviceError:
        monitor = None
    sources = []
    for line in _pactl("list", "short", "sources").splitlines():
        cells = line.split("\t")
        if len(cells) < 2 or not cells[1]:
            continue
        sources.append(
            ServerSource(
                name=cells[1],
                spec=cells[3] if len(cells) > 3 else "",
                is_default_sink_monitor=cells[1] == monitor,
            )
        )
    return sources


def default_sink_monitor() -> str:
    """The monitor source of the default sink; DeviceError (one line) if there is none."""
    sink = default_sink()
    monitor = sink + MONITOR_SUFFIX
    names = {source.name for source in server_sources()}
    if monitor not in names:
        raise DeviceError(f"the default sink {sink!r} has no monitor source ({monitor} missing)")
    return monitor


class SystemAudioSource(DeviceSource):
    """``listen --system-audio``: the default sink's monitor through PortAudio's ``pulse``
    device. Reconnects as any device does (the monitor is found again by name)."""

    def __init__(self, *, config: CaptureConfig | None = None) -> None:
        self._monitor = default_sink_monitor()
        # libpulse reads this when the ALSA plugin connects the record stream: the
        # plugin then records the monitor instead of the default source.
        os.environ["PULSE_SOURCE"] = self._monitor
        base = config if config is not None else CaptureConfig()
        try:
            super().__init__(
                config=CaptureConfig(
                    device=PULSE_DEVICE,
                    block_frames=base.block_frames,
                    ring_seconds=base.ring_seconds,
                    channels=base.channels,
                    sample_rate_hz=base.sample_rate_hz,
                    latency=base.latency,
                )
            )
        except DeviceError as err:
            raise DeviceError(
                f"--system-audio records {self._monitor} through PortAudio's ALSA 'pulse' "
                f"device (apt: libasound2-plugins): {err}"
            ) from err

    @property
    def name(self) -> str:
        return f"system audio ({self._monitor})"

    @property
    def monitor(self) -> str:
        return self._monitor
