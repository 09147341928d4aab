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

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
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
    StreamMetadata,
    TrackInfo,
    Unknown,
    UpNext,
    now_playing_after,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSnapshot:
    """Everything the live view shows at one instant."""

    source: str
    t: float = 0.0
    now_playing: NowPlaying | None = None
    candidates: tuple[CandidateScore, ...] = ()
    sounds_like: tuple[tuple[TrackInfo, float], ...] = ()
    up_next: tuple[tuple[TrackInfo, float], ...] = ()
    """The latest ``up_next`` suggestions (after the last track change)."""
    status: Status | None = None
    """The latest ``status`` event, as sent (with the last known latency and note kept)."""
    server: str | None = None
    log: tuple[str, ...] = ()
    stream_says: str | None = None
    """What a network stream says it plays (ICY ``StreamTitle``, ID3, Vorbis comments)."""

    @property
    def health(self) -> Status:
        """The latest status, or an empty one before the first."""
        return self.status if self.status is not None else Status(file=self.source, t=self.t)


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
    status = snapshot.health
    line = Text(snapshot.source)
    if status.input_state == "ok":
        return line + Text("  ● ok", style="green")
    if status.input_state == "lost":
        retry = f"reconnecting, attempt {status.reconnect_attempts}"
        if status.give_up_in_s is not None:
            retry += f", giving up in {status.give_up_in_s:.0f} s"
        return line + Text(f"  ✖ LOST: {status.input_error} ({retry})", style="bold red")
    state = status.input_state.upper()
    return line + Text(f"  ✖ {state}: {status.input_error}", style="bold red")


def _count(value: int, *, flagged: bool, label: str) -> Text:
    text = Text(str(value), style="bold red" if flagged else "")
    if flagged:
        text += Text(f" {label}", style="bold red")
    return text


COMPACT_BELOW_ROWS = 40
"""Terminals with fewer rows (or fewer than ``COMPACT_BELOW_COLUMNS`` columns) get the
compact layout: the full one is about 42 rows tall, and ``Live`` crops what does not
fit from the bottom, which is where the status and events panels are."""
COMPACT_BELOW_COLUMNS = 100
COMPACT_CANDIDATES = 3
FULL_LOG_LINES = 6


def render(snapshot: LiveSnapshot) -> RenderableType:
    """Build the whole view from a snapshot (pure: no clocks, no I/O).

    The layout follows the console it is drawn on: the full one on a big
    terminal, a compact one below ``COMPACT_BELOW_ROWS`` x ``COMPACT_BELOW_COLUMNS``.
    Either way the events panel gets only the rows left, and names are cut
    with an ellipsis rather than wrapped.
    """
    return _Layout(snapshot)


class _Layout:
    """Chooses the layout for the console's size when rich renders it."""

    def __init__(self, snapshot: LiveSnapshot) -> None:
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = options.size.height
        compact = rows < COMPACT_BELOW_ROWS or options.max_width < COMPACT_BELOW_COLUMNS
        panels = _compact_panels(self.snapshot) if compact else _full_panels(self.snapshot)
        yield from panels
        if not self.snapshot.log:
            return
        used = sum(len(console.render_lines(p, options, pad=False)) for p in panels)
        # One row spare: a view as tall as the terminal scrolls it on every redraw.
        room = rows - 1 - used - 2
        wanted = min(FULL_LOG_LINES, len(self.snapshot.log))
        shown = min(wanted, room)
        if shown >= 1:
            log = Text("\n".join(self.snapshot.log[-shown:]), no_wrap=True, overflow="ellipsis")
            yield Panel(log, title="events", border_style="dim")


def _cut(text: str, style: str = "") -> Text:
    """One line, cut with an ellipsis where the column ends."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _position(now: NowPlaying) -> str:
    position = _fmt_time(now.offset_s)
    if now.track.duration_s:
        position += f" / {_fmt_time(now.track.duration_s)}"
    return position


def _now_playing_panel(snapshot: LiveSnapshot, *, compact: bool) -> Panel:
    now = snapshot.now_playing
    if now is None:
        body: RenderableType = Text("listening… (no match)", style="dim italic")
        if compact and snapshot.sounds_like:
            body = Group(body, _sounds_like_line(snapshot))
        return Panel(body, title="now playing", border_style="cyan")
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    track = _track_line(now.track)
    if compact and now.track.album:
        track += f" · {now.track.album}"
    table.add_row("track", _cut(track, "bold cyan"))
    if now.track.album and not compact:
        table.add_row("album", _cut(now.track.album))
    bar = ProgressBar(total=1.0, completed=now.confidence, width=24 if not compact else 12)
    if compact:
        # Confidence, position and tempo share one row.
        position = _position(now)
        if abs(now.tempo_ratio - 1.0) > 0.005:
            position += f"  tempo {(now.tempo_ratio - 1.0) * 100:+.1f} %"
        table.add_row("confidence", _compact_row(bar, now, position))
    else:
        table.add_row("confidence", Group(bar, Text(f"{now.confidence:.2f}")))
        table.add_row("position", _position(now))
        if abs(now.tempo_ratio - 1.0) > 0.005:
            table.add_row("tempo", f"{(now.tempo_ratio - 1.0) * 100:+.1f} %")
    if now.state == "mixing":
        table.add_row("state", _cut("mixing: fading out, next track not yet clear", "yellow"))
    if compact and snapshot.sounds_like:
        table.add_row("sounds like", _sounds_like_line(snapshot, label=False))
    return Panel(table, title="now playing", border_style="cyan")


def _compact_row(bar: ProgressBar, now: NowPlaying, position: str) -> Table:
    row = Table.grid(padding=(0, 1))
    row.add_column(no_wrap=True)
    row.add_column(no_wrap=True)
    row.add_column(no_wrap=True, style="bold")
    row.add_column(no_wrap=True, overflow="ellipsis")
    row.add_row(bar, Text(f"{now.confidence:.2f}"), "position", position)
    return row


def _sounds_like_line(snapshot: LiveSnapshot, *, label: bool = True) -> Text:
    names = " · ".join(info.title for info, _ in snapshot.sounds_like[:5])
    return _cut(f"sounds like {names}" if label else names, "magenta")


def _candidates_panel(snapshot: LiveSnapshot, *, limit: int) -> Panel:
    cand = Table(expand=True, show_edge=False, pad_edge=False)
    cand.add_column("#", justify="right", width=2, no_wrap=True)
    cand.add_column("candidate", ratio=1, no_wrap=True, overflow="ellipsis")
    cand.add_column("fréchet", justify="right", no_wrap=True)
    cand.add_column("min p2p", justify="right", no_wrap=True)
    cand.add_column("conf", justify="right", no_wrap=True)
    cand.add_column("at", justify="right", no_wrap=True)
    for rank, c in enumerate(snapshot.candidates[:limit], start=1):
        cand.add_row(
            str(rank),
            _track_line(c.track),
            f"{c.frechet:.3f}",
            f"{c.min_p2p:.3f}",
            f"{c.confidence:.2f}",
            _fmt_time(c.offset_s),
        )
    return Panel(cand, title="candidates", border_style="blue")


def _status_panel(snapshot: LiveSnapshot, *, compact: bool) -> Panel:
    status = snapshot.health
    flags = set(status.flags)
    latency = "—" if status.latency_ms is None else f"{status.latency_ms:.1f} ms/window"
    xruns = _count(status.xruns, flagged="xrun" in flags, label="OVERFLOW")
    clipped = _count(status.clipped_samples, flagged="clipping" in flags, label="CLIPPING")
    overrun = _count(status.overrun_frames, flagged="overrun" in flags, label="frames LOST")
    health = Table.grid(padding=(0, 2 if not compact else 1))
    if compact:
        health.add_column(style="bold", no_wrap=True)
        health.add_column(ratio=1)
        health.add_row("input", _input_line(snapshot) + Text(f"  stream {_fmt_time(snapshot.t)}"))
        counters = (
            Text("xruns ") + xruns + Text("  clipped ") + clipped + Text("  overrun ") + overrun
        )
        if status.nonfinite_samples:
            counters += Text("  non-finite ") + _count(
                status.nonfinite_samples, flagged="nonfinite" in flags, label="NaN/inf → 0"
            )
        health.add_row("level", _level_bar(status.level_dbfs, width=12) + Text("  ") + counters)
        health.add_row("latency", _cut(f"{latency}  clients {status.clients}"))
        if snapshot.server:
            health.add_row("server", _cut(snapshot.server))
        if snapshot.stream_says:
            health.add_row("stream", _cut(f"♪ {snapshot.stream_says}", "magenta"))
        if status.message:
            health.add_row("note", _cut(status.message, "yellow"))
        return Panel(health, title="status", border_style="green")
    health.add_row("input", _input_line(snapshot), "stream", _fmt_time(snapshot.t))
    health.add_row("level", _level_bar(status.level_dbfs), "xruns", xruns)
    health.add_row("clipped", clipped, "overrun", overrun)
    if status.nonfinite_samples:
        health.add_row(
            "non-finite",
            _count(status.nonfinite_samples, flagged="nonfinite" in flags, label="NaN/inf → 0"),
            "",
            "",
        )
    health.add_row("latency", latency, "clients", str(status.clients))
    if snapshot.server:
        health.add_row("server", snapshot.server, "", "")
    if snapshot.stream_says:
        health.add_row("stream", _cut(f"♪ {snapshot.stream_says}", "magenta"), "", "")
    if status.message:
        health.add_row("note", Text(status.message, style="yellow"), "", "")
    return Panel(health, title="status", border_style="green")


def _full_panels(snapshot: LiveSnapshot) -> list[RenderableType]:
    panels: list[RenderableType] = [
        _now_playing_panel(snapshot, compact=False),
        _candidates_panel(snapshot, limit=5),
    ]
    if snapshot.sounds_like:
        similar = Table.grid(padding=(0, 1), expand=True)
        similar.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        similar.add_column(no_wrap=True)
        for info, distance in snapshot.sounds_like[:5]:
            similar.add_row(_track_line(info), Text(f"{distance:.3f}", style="dim"))
        panels.append(Panel(similar, title="sounds like", border_style="magenta"))
    if snapshot.up_next:
        following = Table.grid(padding=(0, 1), expand=True)
        following.add_column(no_wrap=True)
        following.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        for rank, (info, _) in enumerate(snapshot.up_next[:5], start=1):
            following.add_row(Text(f"{rank}.", style="dim"), _track_line(info))
        panels.append(Panel(following, title="up next", border_style="cyan"))
    panels.append(_status_panel(snapshot, compact=False))
    return panels


def _compact_panels(snapshot: LiveSnapshot) -> list[RenderableType]:
    return [
        _now_playing_panel(snapshot, compact=True),
        _candidates_panel(snapshot, limit=COMPACT_CANDIDATES),
        _status_panel(snapshot, compact=True),
    ]


def apply_event(snapshot: LiveSnapshot, event: Event) -> LiveSnapshot:
    """Fold one event into the snapshot (pure)."""
    if isinstance(event, (NowPlaying, Unknown)):
        before = snapshot.now_playing
        after = now_playing_after(before, event)
        log = snapshot.log
        if after is not None and (before is None or before.track.id != after.track.id):
            log = (*log, f"{_fmt_time(event.t)}  ▶ {_track_line(after.track)}")[-20:]
        elif isinstance(event, Unknown) and before is not None:
            log = (*log, f"{_fmt_time(event.t)}  ■ unknown ({event.reason})")[-20:]
        return replace(snapshot, t=event.t, now_playing=after, log=log)
    if isinstance(event, Candidates):
        return replace(snapshot, t=event.t, candidates=event.candidates)
    if isinstance(event, SoundsLike):
        return replace(snapshot, t=event.t, sounds_like=event.tracks)
    if isinstance(event, UpNext):
        return replace(snapshot, t=event.t, up_next=event.tracks)
    if isinstance(event, StreamMetadata):
        said = " — ".join(part for part in (event.title, event.artist) if part) or None
        log = snapshot.log
        if said is not None:
            log = (*log, f"{_fmt_time(event.t)}  ♪ stream says: {said}")[-20:]
        return replace(snapshot, t=max(snapshot.t, event.t), stream_says=said, log=log)
    if isinstance(event, Status):
        last = snapshot.status
        if last is not None:
            # A status without a latency (no window yet) or a note keeps the last ones shown.
            event = replace(
                event,
                latency_ms=event.latency_ms if event.latency_ms is not None else last.latency_ms,
                message=event.message if event.message is not None else last.message,
            )
        return replace(snapshot, t=max(snapshot.t, event.t), status=event)
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
