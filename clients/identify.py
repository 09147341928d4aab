"""``identify``: replay files as live streams on a virtual clock.

Each file goes through the same path as a live input: the source's blocks
enter the capture callback, land in the ring buffer, and the consumer drains
them into a fresh Recognizer. Only the clock differs (no waiting).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from synesthete.clients.app import Engine
from synesthete.events import Event
from synesthete.stream.capture import Capture
from synesthete.stream.ringbuffer import RingBuffer
from synesthete.stream.sources import FileSource

DEFAULT_BLOCK_FRAMES = 4096


def identify_file(
    engine: Engine,
    path: str,
    *,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    data: bytes | None = None,
) -> Iterator[Event]:
    """Events of one file as the live loop would emit them; ``path`` is reported as given.

    ``data`` is the file's content when it was read already (standard input).
    """
    source = FileSource(path=Path(path), block_frames=block_frames, realtime=False, data=data)
    with source:
        ring = RingBuffer(capacity_frames=4 * block_frames, channels=source.channels)
        capture = Capture(ring=ring)
        recognizer = engine.recognizer(stream=path, input_rate_hz=source.sample_rate_hz)
        for block in source.blocks():
            capture.callback(block, block.shape[0], None, 0)
            yield from recognizer.push(capture.drain())
        yield from recognizer.flush()
