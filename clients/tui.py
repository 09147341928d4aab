"""The rich live view: a dataclass snapshot and a pure ``render(snapshot)``.

``LiveView`` owns the ``rich.live.Live`` and redraws at most ``max_fps``
(10 Hz by default); everything shown comes from the snapshot, so tests render
into a captured console and compare text.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, replace

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from synesthete.events import (
    Candidates,
    CandidateScore,
    Event,
    NowPlaying,
    SoundsLike,
    Status,
    TrackInfo,
    Unknown,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSnapshot:
    """Everything the live view shows at one instant."""

    source: str
    t: float = 0.0
    now_playing: NowPlaying | None = None
    candidates: tuple[CandidateScore, ...] = ()
    sounds_like: tuple[tuple[TrackInfo, float], ...] = ()
    level_dbfs: float | None = None
    xruns: int = 0
    latency_ms: float | None = None
    clients: int = 0
    input_state: str = "ok"
    input_error: str | None = None
    reconnect_attempts: int = 0
    give_up_in_s: float | None = None
    overrun_frames: int = 0
    nonfinite_samples: int = 0
    clipped_samples: int = 0
    flags: tuple[str, ...] = ()
    server: str | None = None
    log: tuple[str, ...] = ()
    message: str | None = None


def _fmt_time(seconds: float) -> str:
    seconds = max(0.0, seconds)
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"


def _track_line(track: TrackInfo) -> str:
    return f"{track.title} — {track.artist}" if track.artist else track.title


def _level_bar(level_dbfs: float | None, *, width: int = 24) -> Text:
    if level_dbfs is None or not math.isfinite(level_dbfs):
        return Text("—", style="dim")
    fill = round(width * min(1.0, max(0.0, (level_dbfs + 60.0) / 60.0)))
    style = "red" if level_dbfs > -1.0 else "green"
    return (
        Text("█" * fill, style=style)
        + Text("░" * (width - fill), style="dim")
        + Text(f" {level_dbfs:5.1f} dBFS")
    )


def _input_line(snapshot: LiveSnapshot) -> Text:
    line = Text(snapshot.source)
    if snapshot.input_state == "ok":
        return line + Text("  ● ok", style="green")
    if snapshot.input_state == "lost":
        retry = f"reconnecting, attempt {snapshot.reconnect_attempts}"
        if snapshot.give_up_in_s is not None:
            retry += f", giving up in {snapshot.give_up_in_s:.0f} s"
        return line + Text(f"  ✖ LOST: {snapshot.input_error} ({retry})", style="bold red")
    state = snapshot.input_state.upper()
    return line + Text(f"  ✖ {state}: {snapshot.input_error}", style="bold red")


def _count(value: int, *, flagged: bool, label: str) -> Text:
    text = Text(str(value), style="bold red" if flagged else "")
    if flagged:
        text += Text(f" {label}", style="bold red")
    return text


def render(snapshot: LiveSnapshot) -> RenderableType:
    """Build the whole view from a snapshot (pure: no clocks, no I/O)."""
    now = snapshot.now_playing
    if now is None:
        body: RenderableType = Text("listening… (no match)", style="dim italic")
    else:
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("track", Text(_track_line(now.track), style="bold cyan"))
        if now.track.album:
            table.add_row("album", now.track.album)
        table.add_row(
            "confidence",
            Group(
                ProgressBar(total=1.0, completed=now.confidence, width=24),
                Text(f"{now.confidence:.2f}"),
            ),
        )
        position = _fmt_time(now.offset_s)
        if now.track.duration_s:
            position += f" / {_fmt_time(now.track.duration_s)}"
        table.add_row("position", position)
        if abs(now.tempo_ratio - 1.0) > 0.005:
            table.add_row("tempo", f"{(now.tempo_ratio - 1.0) * 100:+.1f} %")
        if now.state == "mixing":
            table.add_row("state", Text("mixing: fading out, next track not yet clear", "yellow"))
        body = table
    panels: list[RenderableType] = [Panel(body, title="now playing", border_style="cyan")]

    cand = Table(expand=True, show_edge=False)
    cand.add_column("#", justify="right", width=2)
    cand.add_column("candidate")
    cand.add_column("fréchet", justify="right")
    cand.add_column("min p2p", justify="right")
    cand.add_column("conf", justify="right")
    cand.add_column("at", justify="right")
    for rank, c in enumerate(snapshot.candidates[:5], start=1):
        cand.add_row(
            str(rank),
            _track_line(c.track),
            f"{c.frechet:.3f}",
            f"{c.min_p2p:.3f}",
            f"{c.confidence:.2f}",
            _fmt_time(c.offset_s),
        )
    panels.append(Panel(cand, title="candidates", border_style="blue"))

    if snapshot.sounds_like:
        similar = Table.grid(padding=(0, 1))
        for info, distance in snapshot.sounds_like[:5]:
            similar.add_row(_track_line(info), Text(f"{distance:.3f}", style="dim"))
        panels.append(Panel(similar, title="sounds like", border_style="magenta"))

    health = Table.grid(padding=(0, 2))
    flags = set(snapshot.flags)
    health.add_row("input", _input_line(snapshot), "stream", _fmt_time(snapshot.t))
    health.add_row(
        "level",
        _level_bar(snapshot.level_dbfs),
        "xruns",
        _count(snapshot.xruns, flagged="xrun" in flags, label="OVERFLOW"),
    )
    health.add_row(
        "clipped",
        _count(snapshot.clipped_samples, flagged="clipping" in flags, label="CLIPPING"),
        "overrun",
        _count(snapshot.overrun_frames, flagged="overrun" in flags, label="frames LOST"),
    )
    if snapshot.nonfinite_samples:
        health.add_row(
            "non-finite",
            _count(snapshot.nonfinite_samples, flagged="nonfinite" in flags, label="NaN/inf → 0"),
            "",
            "",
        )
    latency = "—" if snapshot.latency_ms is None else f"{snapshot.latency_ms:.1f} ms/window"
    health.add_row("latency", latency, "clients", str(snapshot.clients))
    if snapshot.server:
        health.add_row("server", snapshot.server, "", "")
    if snapshot.message:
        health.add_row("note", Text(snapshot.message, style="yellow"), "", "")
    panels.append(Panel(health, title="status", border_style="green"))

    if snapshot.log:
        panels.append(Panel(Text("\n".join(snapshot.log[-6:])), title="events", border_style="dim"))
    return Group(*panels)


def apply_event(snapshot: LiveSnapshot, event: Event) -> LiveSnapshot:
    """Fold one event into the snapshot (pure)."""
    if isinstance(event, NowPlaying):
        log = snapshot.log
        if snapshot.now_playing is None or snapshot.now_playing.track.id != event.track.id:
            log = (*log, f"{_fmt_time(event.t)}  ▶ {_track_line(event.track)}")[-20:]
        return replace(snapshot, t=event.t, now_playing=event, log=log)
    if isinstance(event, Unknown):
        log = snapshot.log
        if snapshot.now_playing is not None:
            log = (*log, f"{_fmt_time(event.t)}  ■ unknown ({event.reason})")[-20:]
        return replace(snapshot, t=event.t, now_playing=None, log=log)
    if isinstance(event, Candidates):
        return replace(snapshot, t=event.t, candidates=event.candidates)
    if isinstance(event, SoundsLike):
        return replace(snapshot, t=event.t, sounds_like=event.tracks)
    if isinstance(event, Status):
        return replace(
            snapshot,
            t=max(snapshot.t, event.t),
            level_dbfs=event.level_dbfs,
            xruns=event.xruns,
            latency_ms=event.latency_ms if event.latency_ms is not None else snapshot.latency_ms,
            clients=event.clients,
            input_state=event.input_state,
            input_error=event.input_error,
            reconnect_attempts=event.reconnect_attempts,
            give_up_in_s=event.give_up_in_s,
            overrun_frames=event.overrun_frames,
            nonfinite_samples=event.nonfinite_samples,
            clipped_samples=event.clipped_samples,
            flags=event.flags,
            message=event.message if event.message is not None else snapshot.message,
        )
    return snapshot


class LiveView:
    """Owns a ``rich.live.Live``; ``update`` folds events in and redraws at most ``max_fps``."""

    def __init__(
        self, *, snapshot: LiveSnapshot, console: Console | None = None, max_fps: float = 10.0
    ) -> None:
        self.snapshot = snapshot
        self._min_interval_s = 1.0 / max_fps
        self._last_draw = 0.0
        self._pending: deque[Event] = deque()
        self._live = Live(
            render(snapshot),
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.draw(force=True)
        self._live.__exit__(None, None, None)

    def update(self, event: Event) -> None:
        self.snapshot = apply_event(self.snapshot, event)
        self.draw()

    def set(self, **changes: object) -> None:
        self.snapshot = replace(self.snapshot, **changes)  # type: ignore[arg-type]
        self.draw()

    def draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_draw >= self._min_interval_s:
            self._last_draw = now
            self._live.update(render(self.snapshot), refresh=True)
