"""When is a live input lost, and when to try reopening it: a clock-driven state machine.

Sans I/O: the live loop feeds it observations (the monotonic time, how many
frames the capture callback has seen, whether the source says it ended) and
asks it what to do; it never touches a device. That keeps every branch of the
reconnect policy testable without PortAudio and without sleeping.

A device can go away in two ways, and both end up in ``LOST``:

- **it ends**: PortAudio calls the stream's ``finished_callback`` (USB
  unplugged, PulseAudio restarted or its sink unloaded);
- **it stalls**: the callback just stops being called and PortAudio says
  nothing (a frozen sound server does this: the stream even stays
  ``active``). No audio for ``stall_timeout_s`` on a running device is a loss.

While ``LOST`` the loop reopens the device when ``attempt_due``; an outage
ends only when audio flows again (a device that opens but stays silent is a
failed attempt, not a recovery), so it is bounded by ``timeout_s`` from the
moment of the loss, after which the state is ``FAILED``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from synesthete.errors import ConfigError


class InputState(StrEnum):
    """``status`` events carry this as ``input``."""

    OK = "ok"
    LOST = "lost"
    FAILED = "failed"


class Change(StrEnum):
    """What an observation changed, for the loop to report."""

    LOST = "lost"
    ATTEMPT_FAILED = "attempt_failed"
    RECOVERED = "recovered"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class ReconnectPolicy:
    """How long a lost input is retried, how often, and what counts as a stall.

    ``timeout_s``: how long after a loss to keep trying (``math.inf``: for
    ever; 0: give up at once). The first attempt comes ``first_delay_s``
    after the loss; the wait after each failed one doubles from there, up to
    ``max_delay_s`` (0.5 s, then 1, 2, 4, 5, 5, ... by default).
    ``stall_timeout_s``: no audio for this long on a running device is a loss.
    ``start_timeout_s``: the first audio after opening may take this long
    (PulseAudio takes about 2 s to start a capture stream).
    """

    timeout_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 5.0
    stall_timeout_s: float = 2.0
    start_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if math.isnan(self.timeout_s) or self.timeout_s < 0:
            raise ConfigError(f"reconnect timeout must be >= 0 s (or inf), got {self.timeout_s!r}")
        for name in ("first_delay_s", "max_delay_s", "stall_timeout_s", "start_timeout_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if self.max_delay_s < self.first_delay_s:
            raise ConfigError(
                f"max_delay_s ({self.max_delay_s}) must be >= first_delay_s ({self.first_delay_s})"
            )


class InputWatchdog:
    """Tracks one real-time input through ok → lost → (ok | failed).

    Call ``observe`` on every loop tick. While ``LOST``: when ``attempt_due``,
    call ``attempt_started`` and reopen the device (off the event loop), then
    ``attempt_failed(error)`` or ``reopened``; ``observe`` then tells whether
    the reopened device really delivers (``RECOVERED``) or not
    (``ATTEMPT_FAILED``). ``observe`` returns ``FAILED`` once the outage has
    lasted ``timeout_s``, even while an attempt is still running (a reopen
    may block for as long as a frozen sound server does).
    """

    def __init__(self, *, policy: ReconnectPolicy, now_s: float, frames_captured: int = 0) -> None:
        self.policy = policy
        self.state = InputState.OK
        self.error: str | None = None
        """Why the input was lost, while it is (and once it has failed)."""
        self.attempt_error: str | None = None
        """Why the latest reconnect attempt of this outage failed."""
        self.losses = 0
        self.attempts = 0
        """Reopen attempts in the current outage."""
        self.lost_at_s: float | None = None
        self.last_outage_s = 0.0
        """How long the latest outage lasted, once it is over."""
        self._next_attempt_s = math.inf
        self._delay_s = policy.first_delay_s
        self._in_attempt = False
        self._probing = False
        self._heard = False
        self._progress_frames = frames_captured
        self._progress_at_s = now_s

    # ------------------------------------------------------------------ observing

    def observe(
        self, *, now_s: float, frames_captured: int, ended: bool, error: str | None = None
    ) -> Change | None:
        """One tick: has the input been lost, come back, or is the outage over?"""
        if self.state is InputState.FAILED:
            return None
        if self.state is InputState.LOST:
            if self.lost_at_s is not None and now_s - self.lost_at_s >= self.policy.timeout_s:
                self.state = InputState.FAILED
                return Change.FAILED
            if not self._probing:
                return None
            if frames_captured != self._progress_frames:
                self._recover(now_s=now_s, frames_captured=frames_captured)
                return Change.RECOVERED
            problem = self._problem(now_s=now_s, ended=ended, error=error)
            if problem is None:
                return None
            self._probing = False
            self._schedule_retry(now_s=now_s, error=problem)
            return Change.ATTEMPT_FAILED
        if frames_captured != self._progress_frames:
            self._progress_frames = frames_captured
            self._progress_at_s = now_s
            self._heard = True
            # A stream can end right after its last block; look at `ended` below all the same.
        problem = self._problem(now_s=now_s, ended=ended, error=error)
        if problem is None:
            return None
        self.state = InputState.LOST
        self.error = problem
        self.attempt_error = None
        self.losses += 1
        self.attempts = 0
        self.lost_at_s = now_s
        self._next_attempt_s = now_s + self.policy.first_delay_s
        self._delay_s = min(self.policy.max_delay_s, 2.0 * self.policy.first_delay_s)
        if self.policy.timeout_s <= 0:
            self.state = InputState.FAILED
            return Change.FAILED
        return Change.LOST

    def _problem(self, *, now_s: float, ended: bool, error: str | None) -> str | None:
        if ended:
            return error or "the input stream ended"
        silent_s = now_s - self._progress_at_s
        limit_s = self.policy.stall_timeout_s if self._heard else self.policy.start_timeout_s
        if silent_s > limit_s:
            return f"no audio for {silent_s:.1f} s"
        return None

    # ------------------------------------------------------------------ reopening

    def attempt_due(self, *, now_s: float) -> bool:
        """``LOST``, no attempt running or being verified, and the backoff has passed."""
        return (
            self.state is InputState.LOST
            and not self._in_attempt
            and not self._probing
            and now_s >= self._next_attempt_s
        )

    def attempt_started(self) -> None:
        """The loop began reopening the device (call when ``attempt_due``)."""
        self.attempts += 1
        self._in_attempt = True

    def attempt_failed(self, *, now_s: float, error: str) -> None:
        """The reopen raised: wait (with backoff) and try again."""
        self._in_attempt = False
        if self.state is InputState.LOST:
            self._schedule_retry(now_s=now_s, error=error)

    def reopened(self, *, now_s: float, frames_captured: int) -> None:
        """The device opened again; ``observe`` confirms once audio flows."""
        self._in_attempt = False
        if self.state is not InputState.LOST:
            return
        self._probing = True
        self._heard = False
        self._progress_frames = frames_captured
        self._progress_at_s = now_s

    @property
    def attempt_running(self) -> bool:
        return self._in_attempt

    def next_attempt_in_s(self, *, now_s: float) -> float | None:
        if self.state is not InputState.LOST or self._in_attempt or self._probing:
            return None
        return max(0.0, self._next_attempt_s - now_s)

    def give_up_in_s(self, *, now_s: float) -> float | None:
        """Seconds left before ``FAILED``; ``None`` when not lost or retrying for ever."""
        if self.state is not InputState.LOST or self.lost_at_s is None:
            return None
        if math.isinf(self.policy.timeout_s):
            return None
        return max(0.0, self.lost_at_s + self.policy.timeout_s - now_s)

    def outage_s(self, *, now_s: float) -> float:
        return 0.0 if self.lost_at_s is None else now_s - self.lost_at_s

    def _schedule_retry(self, *, now_s: float, error: str) -> None:
        self.attempt_error = error
        self._next_attempt_s = now_s + self._delay_s
        self._delay_s = min(self.policy.max_delay_s, 2.0 * self._delay_s)

    def _recover(self, *, now_s: float, frames_captured: int) -> None:
        self.last_outage_s = self.outage_s(now_s=now_s)
        self.state = InputState.OK
        self._probing = False
        self._heard = True
        self._progress_frames = frames_captured
        self._progress_at_s = now_s
        self.error = None
        self.attempt_error = None
        self.attempts = 0
        self.lost_at_s = None
        self._delay_s = self.policy.first_delay_s
        self._next_attempt_s = math.inf
