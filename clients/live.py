"""``listen``: the asyncio live loop.

Threads, and nothing else: the PortAudio (or file-replay) thread runs the
capture callback, which copies into the ring buffer and wakes the loop; the
loop drains the ring buffer and hands each chunk to ONE executor thread that
runs the Recognizer (torch and Annoy never run on the event loop); events go
to the sinks (JSONL, websocket broadcaster, live view) on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from synesthete.clients.app import Engine
from synesthete.clients.server import WebsocketServer
from synesthete.events import Event, Status
from synesthete.stream.capture import Capture, peak_to_dbfs
from synesthete.stream.ringbuffer import RingBuffer
from synesthete.stream.sources import Source

EventSink = Callable[[Event], None]


@dataclass(frozen=True, kw_only=True)
class LiveConfig:
    """Loop settings: ring size, how often status goes out, when to stop."""

    ring_seconds: float = 20.0
    status_interval_s: float = 1.0
    max_seconds: float | None = None


@dataclass
class LiveStats:
    windows: int = 0
    events: int = 0
    latency_ms: list[float] = field(default_factory=list)


async def run_live(
    *,
    engine: Engine,
    source: Source,
    sinks: list[EventSink],
    server: WebsocketServer | None = None,
    config: LiveConfig | None = None,
    on_tick: Callable[[], None] | None = None,
) -> LiveStats:
    """Run until the source finishes, ``max_seconds`` of audio passed, or cancellation."""
    config = config if config is not None else LiveConfig()
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    ring = RingBuffer(
        capacity_frames=int(config.ring_seconds * source.sample_rate_hz), channels=source.channels
    )

    def notify() -> None:
        loop.call_soon_threadsafe(wake.set)

    capture = Capture(ring=ring, notify=notify)
    recognizer = engine.recognizer(
        stream=source.name, input_rate_hz=source.sample_rate_hz, keep_timings=True
    )
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

    def status(t: float, message: str | None = None) -> Status:
        timing = recognizer.timing
        recent = [
            e + s + m
            for e, s, m in zip(
                timing.encoder_ms[-8:], timing.search_ms[-8:], timing.matcher_ms[-8:], strict=True
            )
        ]
        return Status(
            file=source.name,
            t=t,
            level_dbfs=peak_to_dbfs(capture.take_peak()),
            xruns=capture.xruns,
            latency_ms=float(np.median(recent)) if recent else None,
            clients=0 if server is None else len(server.broadcaster.clients),
            message=message,
            extra={
                "nonfinite_samples": recognizer.nonfinite_samples,
                "overrun_frames": ring.overrun_frames,
            },
        )

    source.start(capture.callback)
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
                events = await loop.run_in_executor(executor, recognizer.push, chunk)
                if events:
                    stats.latency_ms.append((time.perf_counter() - started) * 1000.0)
                for event in events:
                    emit(event)
            t = consumed_frames / source.sample_rate_hz
            if t - last_status >= config.status_interval_s:
                last_status = t
                emit(status(t))
            if finished or (config.max_seconds is not None and t >= config.max_seconds):
                break
        for event in await loop.run_in_executor(executor, recognizer.flush):
            emit(event)
        emit(status(consumed_frames / source.sample_rate_hz, message="input ended"))
    finally:
        source.stop()
        executor.shutdown(wait=True)
    return stats
