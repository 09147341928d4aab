"""``listen``: the asyncio live loop.

Threads, and nothing else: the PortAudio (or file-replay) thread runs the
capture callback, which copies into the ring buffer and wakes the loop; the
loop drains the ring buffer and hands each chunk to ONE executor thread that
runs the Recognizer (torch and Annoy never run on the event loop); events go
to the sinks (JSONL, websocket broadcaster, live view) on the loop. A
device that ends or stalls is reopened from a short-lived daemon thread (see
``_Reopen``), under the policy of ``stream/watchdog.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from synesthete.clients.app import Engine
from synesthete.clients.server import WebsocketServer
from synesthete.errors import DeviceError, SynestheteError
from synesthete.events import Event, Status, Unknown
from synesthete.index.recognizer import Recognizer
from synesthete.stream.capture import Capture, peak_to_dbfs
from synesthete.stream.guard import CLIPPING_FRACTION, InputGuard
from synesthete.stream.ringbuffer import RingBuffer
from synesthete.stream.sources import AudioCallback, ReopenableSource, Source
from synesthete.stream.watchdog import Change, InputState, InputWatchdog, ReconnectPolicy

EventSink = Callable[[Event], None]


@dataclass(frozen=True, kw_only=True)
class LiveConfig:
    """Loop settings: ring size, how often status goes out, when to stop, reconnecting."""

    ring_seconds: float = 20.0
    status_interval_s: float = 1.0
    max_seconds: float | None = None
    # Finish each window with the resampler's estimate of its held-back last
    # milliseconds instead of waiting for them (see Recognizer._complete_early).
    early_windows: bool = True
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)


LATENCY_HISTORY = 4096
"""Per-window latencies kept in ``LiveStats`` (the newest; a session may run for days)."""


@dataclass
class LiveStats:
    windows: int = 0
    events: int = 0
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_HISTORY))


async def run_live(
    *,
    engine: Engine,
    source: Source,
    sinks: list[EventSink],
    server: WebsocketServer | None = None,
    config: LiveConfig | None = None,
    on_tick: Callable[[], None] | None = None,
) -> LiveStats:
    """Run until the source finishes, ``max_seconds`` of audio passed, or cancellation.

    A device (a ``ReopenableSource``) that ends or stalls is reported
    (``status`` with ``input: "lost"``, and ``unknown`` with reason
    ``input_lost`` if a track was identified) and reopened with backoff as
    ``config.reconnect`` says; once that gives up, a final ``status`` with
    ``input: "failed"`` goes out and DeviceError is raised. After a reconnect
    a fresh Recognizer starts (the audio before and after the gap is not one
    stream), its events shifted to the session's stream time.
    """
    config = config if config is not None else LiveConfig()
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    rate_hz = source.sample_rate_hz

    def notify() -> None:
        # A stream left closing in the background may call this after the loop
        # closed. try/except, not contextlib.suppress: no object per audio block.
        try:  # noqa: SIM105
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:
            pass

    def new_capture() -> Capture:
        ring = RingBuffer(
            capacity_frames=int(config.ring_seconds * rate_hz), channels=source.channels
        )
        return Capture(ring=ring, notify=notify)

    def new_recognizer() -> Recognizer:
        return engine.recognizer(
            stream=source.name,
            input_rate_hz=rate_hz,
            keep_timings=True,
            early_windows=config.early_windows,
        )

    capture = new_capture()
    recognizer = new_recognizer()
    recognizer_start_s = 0.0  # session stream time at which `recognizer` started
    guard = InputGuard()
    health = _Health()
    device = source if isinstance(source, ReopenableSource) else None
    watchdog = (
        None if device is None else InputWatchdog(policy=config.reconnect, now_s=time.monotonic())
    )
    reopening: _Reopen | None = None
    loss_reported = False
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synesthete-infer")
    stats = LiveStats()
    consumed_frames = 0
    last_status = -math.inf

    def emit(event: Event) -> None:
        stats.events += 1
        for sink in sinks:
            sink(event)
        if server is not None:
            server.broadcaster.publish(event)

    def emit_recognized(event: Event) -> None:
        if recognizer_start_s:
            event = dataclasses.replace(event, t=event.t + recognizer_start_s)
        emit(event)

    def status(t: float, message: str | None = None) -> Status:
        timing = recognizer.timing
        recent = [
            e + s + m
            for e, s, m in zip(
                timing.encoder_ms[-8:], timing.search_ms[-8:], timing.matcher_ms[-8:], strict=True
            )
        ]
        now_s = time.monotonic()
        xruns = health.retired_xruns + capture.xruns
        overrun_frames = health.retired_overrun_frames + capture.ring.overrun_frames
        return Status(
            file=source.name,
            t=t,
            level_dbfs=peak_to_dbfs(capture.take_peak()),
            xruns=xruns,
            latency_ms=float(np.median(recent)) if recent else None,
            clients=0 if server is None else len(server.broadcaster.clients),
            message=message,
            input_state="ok" if watchdog is None else watchdog.state.value,
            input_error=None if watchdog is None else watchdog.error,
            reconnect_attempts=0 if watchdog is None else watchdog.attempts,
            give_up_in_s=None if watchdog is None else watchdog.give_up_in_s(now_s=now_s),
            overrun_frames=overrun_frames,
            nonfinite_samples=guard.nonfinite_samples,
            clipped_samples=guard.clipped_samples,
            flags=health.flags(xruns=xruns, overrun_frames=overrun_frames, guard=guard),
        )

    def retry_note(watchdog: InputWatchdog, now_s: float) -> str:
        left = watchdog.give_up_in_s(now_s=now_s)
        return "retrying for ever" if left is None else f"giving up in {left:.0f} s"

    def supervise(
        device: ReopenableSource, watchdog: InputWatchdog, *, ended: bool, t: float
    ) -> None:
        """Watch a device input and reopen it when lost (see InputWatchdog)."""
        nonlocal capture, recognizer, recognizer_start_s, reopening, loss_reported
        now_s = time.monotonic()
        change = watchdog.observe(
            now_s=now_s, frames_captured=capture.frames_captured, ended=ended, error=device.error
        )
        if watchdog.state is not InputState.OK and not loss_reported:
            loss_reported = True
            if recognizer.matcher.current() is not None:
                emit(Unknown(file=source.name, t=t, reason="input_lost"))
            if watchdog.state is InputState.LOST:
                note = retry_note(watchdog, now_s)
                emit(status(t, message=f"input lost: {watchdog.error}; {note}"))
        if change is Change.ATTEMPT_FAILED:
            emit(
                status(
                    t,
                    message=f"reconnect attempt {watchdog.attempts} failed: "
                    f"{watchdog.attempt_error}; {retry_note(watchdog, now_s)}",
                )
            )
        elif change is Change.RECOVERED:
            loss_reported = False
            emit(status(t, message=f"input back after {watchdog.last_outage_s:.1f} s"))
        if watchdog.state is not InputState.LOST:
            return
        if reopening is not None and reopening.done:
            if reopening.error is not None:
                watchdog.attempt_failed(now_s=now_s, error=reopening.error)
                emit(
                    status(
                        t,
                        message=f"reconnect attempt {watchdog.attempts} failed: "
                        f"{reopening.error}; {retry_note(watchdog, now_s)}",
                    )
                )
            else:
                watchdog.reopened(now_s=now_s, frames_captured=capture.frames_captured)
            reopening = None
        if reopening is None and watchdog.attempt_due(now_s=now_s):
            watchdog.attempt_started()
            # A fresh ring and callback per attempt: a stream still closing in
            # the background may call its old callback, and a ring has one producer.
            health.retire(capture)
            capture = new_capture()
            recognizer = new_recognizer()
            recognizer_start_s = t
            reopening = _Reopen(source=device, callback=capture.callback, notify=notify)

    source.start(capture.callback)
    failed = False
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=0.1)
            wake.clear()
            if on_tick is not None:
                on_tick()
            # Read the flag before draining: then the drain holds the last block.
            finished = source.finished.is_set()
            chunk = capture.drain()
            if chunk.shape[0]:
                consumed_frames += chunk.shape[0]
                started = time.perf_counter()
                events = await loop.run_in_executor(executor, _push, guard, recognizer, chunk)
                if events:
                    stats.latency_ms.append((time.perf_counter() - started) * 1000.0)
                for event in events:
                    emit_recognized(event)
            t = consumed_frames / rate_hz
            if t - last_status >= config.status_interval_s:
                last_status = t
                emit(status(t))
            if device is not None and watchdog is not None:
                supervise(device, watchdog, ended=finished, t=t)
                if watchdog.state is InputState.FAILED:
                    failed = True
                    gave_up = _gave_up(watchdog, now_s=time.monotonic())
                    emit(status(t, message=gave_up))
                    raise DeviceError(f"audio input {source.name}: {gave_up}")
            elif finished:
                break
            if config.max_seconds is not None and t >= config.max_seconds:
                break
        for event in await loop.run_in_executor(executor, recognizer.flush):
            emit_recognized(event)
        emit(status(consumed_frames / rate_hz, message="input ended"))
    finally:
        try:
            source.stop()
        except DeviceError:
            if not failed:
                raise
        executor.shutdown(wait=True)
    return stats


def _gave_up(watchdog: InputWatchdog, *, now_s: float) -> str:
    """The one line that ends a session whose device did not come back."""
    text = f"input lost ({watchdog.error})"
    if watchdog.attempts == 0:
        return f"{text}; not reopening (reconnect timeout 0)"
    text += (
        f" and not back after {watchdog.outage_s(now_s=now_s):.0f} s"
        f" and {watchdog.attempts} reconnect attempt{'' if watchdog.attempts == 1 else 's'}"
    )
    if watchdog.attempt_error is not None:
        text += f" (last: {watchdog.attempt_error})"
    return text + "; giving up"


def _push(guard: InputGuard, recognizer: Recognizer, chunk: npt.NDArray[np.float32]) -> list[Event]:
    """Executor side: sanitise, then recognise."""
    return recognizer.push(guard.push(chunk))


class _Health:
    """Counters across the captures of one session, and what changed since the last status."""

    def __init__(self) -> None:
        self.retired_xruns = 0
        self.retired_overrun_frames = 0
        self._last = (0, 0, 0, 0, 0)

    def retire(self, capture: Capture) -> None:
        self.retired_xruns += capture.xruns
        self.retired_overrun_frames += capture.ring.overrun_frames

    def flags(self, *, xruns: int, overrun_frames: int, guard: InputGuard) -> tuple[str, ...]:
        now = (xruns, overrun_frames, guard.nonfinite_samples, guard.clipped_samples, guard.samples)
        last, self._last = self._last, now
        flags = []
        if now[0] > last[0]:
            flags.append("xrun")
        if now[1] > last[1]:
            flags.append("overrun")
        if now[2] > last[2]:
            flags.append("nonfinite")
        samples = now[4] - last[4]
        if samples > 0 and (now[3] - last[3]) / samples > CLIPPING_FRACTION:
            flags.append("clipping")
        return tuple(flags)


class _Reopen:
    """One reconnect attempt, on a daemon thread.

    A frozen sound server blocks opening (and closing) for as long as it stays
    frozen. The inference executor must not wait on that, and a daemon thread,
    unlike an executor's, does not keep the process from exiting once the loop
    has given up.
    """

    def __init__(
        self, *, source: ReopenableSource, callback: AudioCallback, notify: Callable[[], None]
    ) -> None:
        self.done = False
        self.error: str | None = None
        self._source = source
        self._callback = callback
        self._notify = notify
        threading.Thread(target=self._run, name="synesthete-reopen", daemon=True).start()

    def _run(self) -> None:
        try:
            self._source.reopen(self._callback)
        except SynestheteError as err:
            self.error = str(err)
        except Exception as err:
            # A thread boundary: nobody else would see it, so hand it to the loop.
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.done = True
            self._notify()
