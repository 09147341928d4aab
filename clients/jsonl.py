"""JSON Lines output of events (design.md's JSONL contract)."""

from __future__ import annotations

import json
from typing import Any, TextIO

from synesthete.events import Event


def event_line(event: Event) -> str:
    """One compact UTF-8 JSON object, no trailing newline."""
    return json.dumps(event.to_payload(), ensure_ascii=False, separators=(",", ":"))


class JsonlWriter:
    """Writes events to a text stream, one object per line, flushed per event."""

    def __init__(self, stream: TextIO, *, types: frozenset[str] | None = None) -> None:
        self._stream = stream
        self._types = types

    def write(self, event: Event) -> None:
        if self._types is not None and event.type not in self._types:
            return
        self._stream.write(event_line(event) + "\n")
        self._stream.flush()


def read_events(lines: list[str]) -> list[dict[str, Any]]:
    """Parse JSONL text lines (blank lines ignored)."""
    return [json.loads(line) for line in lines if line.strip()]
