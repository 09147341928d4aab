"""``listen``: the asyncio live loop.

Threads, and nothing else: the PortAudio (or file-replay) thread runs the
capture callback, which copies into the ring buffer and wakes the loop; the
loop drains the ring buffer and hands each chunk to ONE executor thread that
runs the Recognizer (torch and Annoy never run on the event loop); events go
to the sinks (JSONL, websocket broadcaster, live view, tracklist: all plain
subscribers) on the loop. ``_Driver`` is that loop and nothing more;
``_Reconnect`` wraps it: a device that ends or stalls is reopened from a
short-lived daemon thread (see ``_Reopen``), under the policy of
``stream/watchdog.py``, and the driver restarts on a fresh capture and Recognizer.
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

from synesthete.clients.app import Engine
from synesthete.errors import DeviceError, SynestheteError
from synesthete.events import Event, Status, StreamMetadata, Unknown
from synesthete.index.recognizer import Recognizer
from synesthete.stream.capture import Capture, peak_to_dbfs
from synesthete.stream.config import CaptureConfig
from synesthete.stream.guard import CLIPPING_FRACTION, InputGuard
from synesthete.stream.network import StreamTags, TaggedSource
from synesthete.stream.ringbuffer import RingBuffer
from synesthete.stream.sources import AudioCallback, ReopenableSource, Source
from synesthete.stream.watchdog import Change, InputState, InputWatchdog, ReconnectPolicy

EventSink = Callable[[Event], None]
"""Every consumer of events is one of these: JSONL, the broadcaster, the live view, a tracklist."""


@dataclass(frozen=True, kw_only=True)
class LiveConfig:
    """Loop settings: the ring (``capture.ring_seconds``), how often status goes out, when to
    stop, reconnecting."""

    capture: CaptureConfig = field(default_factory=CaptureConfig)
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
    config: LiveConfig | None = None,
    on_tick: Callable[[], None] | None = None,
    clients: Callable[[], int] | None = None,
) -> LiveStats:
    """Run until the source finishes, ``max_seconds`` of audio passed, or cancellation.

    Every event goes to every sink, in order. ``clients`` counts the websocket
    clients for ``status`` events. A device (a ``ReopenableSource``) that ends or
    stalls is reported (``status`` with ``input: "lost"``, and ``unknown`` with
    reason ``input_lost`` if a track was identified) and reopened with backoff as
    ``config.reconnect`` says; once that gives up, a final ``status`` with
    ``input: "failed"`` goes out and DeviceError is raised. After a reconnect a
    fresh Recognizer starts (the audio before and after the gap is not one
    stream), its events shifted to the session's stream time.
    """
    config = config if config is not None else LiveConfig()
    driver = _Driver(
        engine=engine, source=source, sinks=sinks, config=config, clients=clients or (lambda: 0)
    )
    reconnect = (
        _Reconnect(driver, source, config.reconnect)
        if isinstance(source, ReopenableSource)
        else None
    )
    driver.watchdog = None if reconnect is None else reconnect.watchdog
    source.start(driver.capture.callback)
    failed = False
    try:
        while True:
            await driver.wait()
            if on_tick is not None:
                on_tick()
            # Read the flag before draining: then the drain holds the last block.
            finished = source.finished.is_set()
            t = await driver.step()
            if isinstance(source, TaggedSource):
                for tags in source.take_tags():
                    driver.emit_tags(tags, t=t)
            # A finite network stream (HLS VOD) that played to its end ends the session as
            # a file does; `complete` is set only by sources that can tell.
            if finished and getattr(source, "complete", False):
                break
            if reconnect is not None:
                gave_up = reconnect.supervise(ended=finished, t=t)
                if gave_up is not None:
                    failed = True
                    raise DeviceError(f"audio input {source.name}: {gave_up}")
            elif finished:
                break
            if config.max_seconds is not None and t >= config.max_seconds:
                break
        await driver.finish()
    finally:
        try:
            source.stop()
        except DeviceError:
            if not failed:
                raise
        driver.close()
    return driver.stats


class _Driver:
    """The thin asyncio driver of one stream: wake on the ring, drain, run the Recognizer's
    ``push`` in the one executor thread, hand the events to the sinks; a ``status`` every
    ``status_interval_s`` of stream time.

    ``restart`` swaps in a fresh capture and Recognizer (a reconnect), keeping the
    session's counters and clock.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        source: Source,
        sinks: list[EventSink],
        config: LiveConfig,
        clients: Callable[[], int],
    ) -> None:
        self._engine = engine
        self._source = source
        self._sinks = sinks
        self._config = config
        self._clients = clients
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._rate_hz = source.sample_rate_hz
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synesthete-infer")
        self._health = _Health()
        self._consumed_frames = 0
        self._last_status = -math.inf
        self.stats = LiveStats()
        self.watchdog: InputWatchdog | None = None
        self.capture = self._new_capture()
        self.recognizer = self._new_recognizer()
        self._start_s = 0.0  # session stream time at which `recognizer` started
        self._last_tags: StreamTags | None = None

    def notify(self) -> None:
        # A stream left closing in the background may call this after the loop
        # closed. try/except, not contextlib.suppress: no object per audio block.
        try:  # noqa: SIM105
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:
            pass

    def _new_capture(self) -> Capture:
        ring = RingBuffer(
            capacity_frames=self._config.capture.ring_capacity_frames(sample_rate_hz=self._rate_hz),
            channels=self._source.channels,
        )
        return Capture(ring=ring, notify=self.notify)

    def _new_recognizer(self) -> Recognizer:
        return self._engine.recognizer(
            stream=self._source.name,
            input_rate_hz=self._rate_hz,
            keep_timings=True,
            early_windows=self._config.early_windows,
        )

    def restart(self, *, t: float) -> Capture:
        """A fresh ring and callback, and a fresh Recognizer whose events start at ``t``.

        A stream still closing in the background may call its old callback, and a
        ring has one producer.
        """
        self._health.retire(self.capture, self.recognizer.guard)
        self.capture = self._new_capture()
        self.recognizer = self._new_recognizer()
        self._start_s = t
        return self.capture

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=0.1)
        self._wake.clear()

    async def step(self) -> float:
        """Drain the ring, recognise, emit; returns the stream time consumed so far."""
        chunk = self.capture.drain()
        if chunk.shape[0]:
            self._consumed_frames += chunk.shape[0]
            started = time.perf_counter()
            events = await self._loop.run_in_executor(self._executor, self.recognizer.push, chunk)
            if events:
                self.stats.latency_ms.append((time.perf_counter() - started) * 1000.0)
            for event in events:
                self.emit_recognized(event)
        t = self.t
        if t - self._last_status >= self._config.status_interval_s:
            self._last_status = t
            self.emit(self.status(t))
        return t

    async def finish(self) -> None:
        for event in await self._loop.run_in_executor(self._executor, self.recognizer.flush):
            self.emit_recognized(event)
        self.emit(self.status(self.t, message="input ended"))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    @property
    def t(self) -> float:
        return self._consumed_frames / self._rate_hz

    def emit(self, event: Event) -> None:
        self.stats.events += 1
        for sink in self._sinks:
            sink(event)

    def emit_tags(self, tags: StreamTags, *, t: float) -> None:
        """A ``stream_metadata`` event when the stream's tags changed (ICY repeats them)."""
        if tags == self._last_tags:
            return
        self._last_tags = tags
        self.emit(
            StreamMetadata(
                file=self._source.name,
                t=t,
                title=tags.title,
                artist=tags.artist,
                origin=tags.origin,
                fields=tags.fields,
            )
        )

    def emit_recognized(self, event: Event) -> None:
        if self._start_s:
            event = dataclasses.replace(event, t=event.t + self._start_s)
        self.emit(event)

    def status(self, t: float, message: str | None = None) -> Status:
        timing = self.recognizer.timing
        recent = [
            e + s + m
            for e, s, m in zip(
                timing.encoder_ms[-8:], timing.search_ms[-8:], timing.matcher_ms[-8:], strict=True
            )
        ]
        watchdog = self.watchdog
        health = self._health.totals(self.capture, self.recognizer.guard)
        return Status(
            file=self._source.name,
            t=t,
            level_dbfs=peak_to_dbfs(self.capture.take_peak()),
            xruns=health.xruns,
            latency_ms=float(np.median(recent)) if recent else None,
            clients=self._clients(),
            message=message,
            input_state="ok" if watchdog is None else watchdog.state.value,
            input_error=None if watchdog is None else watchdog.error,
            reconnect_attempts=0 if watchdog is None else watchdog.attempts,
            give_up_in_s=None
            if watchdog is None
            else watchdog.give_up_in_s(now_s=time.monotonic()),
            overrun_frames=health.overrun_frames,
            nonfinite_samples=health.nonfinite_samples,
            clipped_samples=health.clipped_samples,
            flags=self._health.flags(health),
        )


class _Reconnect:
    """Wraps the driver: watches a device input and reopens it when lost (see InputWatchdog)."""

    def __init__(self, driver: _Driver, device: ReopenableSource, policy: ReconnectPolicy) -> None:
        self._driver = driver
        self._device = device
        self.watchdog = InputWatchdog(policy=policy, now_s=time.monotonic())
        self._reopening: _Reopen | None = None
        self._loss_reported = False

    def _note(self, now_s: float) -> str:
        left = self.watchdog.give_up_in_s(now_s=now_s)
        return "retrying for ever" if left is None else f"giving up in {left:.0f} s"

    def supervise(self, *, ended: bool, t: float) -> str | None:
        """Observe the input after a step; the line that ends the session once reconnecting
        gave up, else ``None``."""
        driver, watchdog = self._driver, self.watchdog
        emit, status = driver.emit, driver.status
        now_s = time.monotonic()
        change = watchdog.observe(
            now_s=now_s,
            frames_captured=driver.capture.frames_captured,
            ended=ended,
            error=self._device.error,
        )
        if watchdog.state is not InputState.OK and not self._loss_reported:
            self._loss_reported = True
            if driver.recognizer.matcher.current() is not None:
                emit(Unknown(file=self._device.name, t=t, reason="input_lost"))
            if watchdog.state is InputState.LOST:
                emit(status(t, message=f"input lost: {watchdog.error}; {self._note(now_s)}"))
        if change is Change.ATTEMPT_FAILED:
            emit(
                status(
                    t,
                    message=f"reconnect attempt {watchdog.attempts} failed: "
                    f"{watchdog.attempt_error}; {self._note(now_s)}",
                )
            )
        elif change is Change.RECOVERED:
            self._loss_reported = False
            emit(status(t, message=f"input back after {watchdog.last_outage_s:.1f} s"))
        if watchdog.state is InputState.FAILED:
            gave_up = _gave_up(watchdog, now_s=time.monotonic())
            emit(status(t, message=gave_up))
            return gave_up
        if watchdog.state is not InputState.LOST:
            return None
        reopening = self._reopening
        if reopening is not None and reopening.done:
            if reopening.error is not None:
                watchdog.attempt_failed(now_s=now_s, error=reopening.error)
                emit(
                    status(
                        t,
                        message=f"reconnect attempt {watchdog.attempts} failed: "
                        f"{reopening.error}; {self._note(now_s)}",
                    )
                )
            else:
                watchdog.reopened(now_s=now_s, frames_captured=driver.capture.frames_captured)
            self._reopening = None
        if self._reopening is None and watchdog.attempt_due(now_s=now_s):
            watchdog.attempt_started()
            capture = driver.restart(t=t)
            self._reopening = _Reopen(
                source=self._device, callback=capture.callback, notify=driver.notify
            )
        return None


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


@dataclass(frozen=True, slots=True)
class _Counts:
    """Session totals of the input's health counters."""

    xruns: int
    overrun_frames: int
    nonfinite_samples: int
    clipped_samples: int
    samples: int


class _Health:
    """Counters across the captures and Recognizers of one session (a reconnect replaces
    both), and what changed since the last status."""

    def __init__(self) -> None:
        self._retired = _Counts(0, 0, 0, 0, 0)
        self._last = self._retired

    @staticmethod
    def _counts(capture: Capture, guard: InputGuard) -> _Counts:
        return _Counts(
            capture.xruns,
            capture.ring.overrun_frames,
            guard.nonfinite_samples,
            guard.clipped_samples,
            guard.samples,
        )

    def retire(self, capture: Capture, guard: InputGuard) -> None:
        self._retired = self.totals(capture, guard)

    def totals(self, capture: Capture, guard: InputGuard) -> _Counts:
        now, old = self._counts(capture, guard), self._retired
        return _Counts(
            *(
                a + b
                for a, b in zip(dataclasses.astuple(old), dataclasses.astuple(now), strict=True)
            )
        )

    def flags(self, now: _Counts) -> tuple[str, ...]:
        last, self._last = self._last, now
        flags = []
        if now.xruns > last.xruns:
            flags.append("xrun")
        if now.overrun_frames > last.overrun_frames:
            flags.append("overrun")
        if now.nonfinite_samples > last.nonfinite_samples:
            flags.append("nonfinite")
        samples = now.samples - last.samples
        if (
            samples > 0
            and (now.clipped_samples - last.clipped_samples) / samples > CLIPPING_FRACTION
        ):
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
