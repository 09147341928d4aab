"""The audio callback: copy into the ring buffer, count xruns, signal the consumer.

``Capture.callback`` has sounddevice's ``InputStream`` callback signature and
runs on the audio thread (PortAudio's, or a FileSource's). Following house
rule 2 it only copies: one slice-assignment into the preallocated ring, a
couple of integer updates, two scalar reductions for the peak meter, and the
``notify`` hook. It never logs, locks, or allocates audio-sized memory.

The asyncio consumer wires it up like this::

    event = asyncio.Event()
    capture = Capture(ring=ring, notify=lambda: loop.call_soon_threadsafe(event.set))
    source.start(capture.callback)
    while True:
        await event.wait()
        event.clear()
        block = capture.drain()  # [n, channels] at the device rate
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from .ringbuffer import RingBuffer


class Capture:
    """Bridges an audio callback (producer) and a consumer through a ``RingBuffer``.

    Counters written by the callback (``xruns``, ``frames_captured``, the peak)
    are plain ints/floats updated only on the audio thread; the consumer reads
    them without a lock (atomic under the GIL; a read may be one block stale).
    """

    def __init__(self, *, ring: RingBuffer, notify: Callable[[], object] | None = None) -> None:
        self._ring = ring
        self._notify = notify
        self._xruns = 0
        self._frames_captured = 0
        self._peak = 0.0

    @property
    def ring(self) -> RingBuffer:
        return self._ring

    @property
    def xruns(self) -> int:
        """Callbacks whose ``status`` reported a problem (input overflow etc.)."""
        return self._xruns

    @property
    def frames_captured(self) -> int:
        """Frames delivered to the callback since construction."""
        return self._frames_captured

    def callback(
        self,
        indata: npt.NDArray[np.float32],
        frames: int,
        time_info: Any,
        status: Any,
    ) -> None:
        """sounddevice ``InputStream`` callback. ``indata`` is ``[frames, channels]`` float32.

        ``indata`` is only valid during the call, which is why it is copied
        into the ring rather than referenced. ``status`` is a
        ``sounddevice.CallbackFlags`` (truthy when any flag is set) or, from
        fakes, an int/bool. ``time_info`` is unused.
        """
        if status:
            self._xruns += 1
        self._ring.write(indata)
        self._frames_captured += indata.shape[0]
        if indata.shape[0]:
            # max() and min() reduce to scalars without a temporary array,
            # unlike np.abs(indata).max(); two passes over ~1k frames is cheap.
            peak = max(float(indata.max()), -float(indata.min()))
            if peak > self._peak:
                self._peak = peak
        if self._notify is not None:
            self._notify()

    def take_peak(self) -> float:
        """Peak ``|sample|`` since the previous call (consumer side), then restart the meter.

        The reset may race with a callback raising the peak; at worst one
        block's peak is lost from one meter reading, which a meter tolerates.
        """
        peak = self._peak
        self._peak = 0.0
        return peak

    def drain(self, max_frames: int | None = None) -> npt.NDArray[np.float32]:
        """Consumer side: everything buffered so far, ``[n, channels]`` float32, in order."""
        return self._ring.read(max_frames)


def peak_to_dbfs(peak: float, *, floor_dbfs: float = -120.0) -> float:
    """Convert a linear peak (1.0 = full scale) to dBFS, clamped at ``floor_dbfs``."""
    if peak <= 0.0:
        return floor_dbfs
    return max(floor_dbfs, 20.0 * float(np.log10(peak)))
