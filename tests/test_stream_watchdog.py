"""The input watchdog: loss, stall, backoff, recovery and giving up, on a fake clock."""

from __future__ import annotations

import itertools
import math

import pytest

from synesthete.errors import ConfigError
from synesthete.stream.watchdog import Change, InputState, InputWatchdog, ReconnectPolicy

POLICY = ReconnectPolicy(
    timeout_s=30.0, first_delay_s=0.5, max_delay_s=5.0, stall_timeout_s=2.0, start_timeout_s=10.0
)


class Clock:
    """Drives a watchdog tick by tick (0.1 s, like the live loop), frames as told."""

    def __init__(self, watchdog: InputWatchdog) -> None:
        self.watchdog = watchdog
        self.now_s = 0.0
        self.frames = 0
        self.flowing = True
        self.ended = False
        self.changes: list[tuple[float, Change]] = []

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.1)):
            self.now_s = round(self.now_s + 0.1, 6)
            if self.flowing:
                self.frames += 4410
            change = self.watchdog.observe(
                now_s=self.now_s, frames_captured=self.frames, ended=self.ended, error="gone"
            )
            if change is not None:
                self.changes.append((self.now_s, change))


def lost_watchdog(policy: ReconnectPolicy = POLICY) -> tuple[InputWatchdog, Clock]:
    watchdog = InputWatchdog(policy=policy, now_s=0.0)
    clock = Clock(watchdog)
    clock.run(1.0)
    clock.ended = True
    clock.flowing = False
    clock.run(0.1)
    assert watchdog.state is InputState.LOST
    return watchdog, clock


def test_a_flowing_input_stays_ok() -> None:
    watchdog = InputWatchdog(policy=POLICY, now_s=0.0)
    clock = Clock(watchdog)
    clock.run(60.0)
    assert watchdog.state is InputState.OK
    assert clock.changes == []


def test_an_ended_stream_is_lost_at_once_with_its_reason() -> None:
    watchdog, clock = lost_watchdog()
    assert clock.changes == [(1.1, Change.LOST)]
    assert watchdog.error == "gone"
    assert watchdog.losses == 1
    assert watchdog.attempts == 0
    assert watchdog.give_up_in_s(now_s=1.1) == pytest.approx(30.0)


def test_a_stall_is_a_loss_after_stall_timeout() -> None:
    watchdog = InputWatchdog(policy=POLICY, now_s=0.0)
    clock = Clock(watchdog)
    clock.run(5.0)
    clock.flowing = False  # no finished_callback, no error: the callback just stops
    clock.run(5.0)
    ((at_s, change),) = clock.changes
    assert change is Change.LOST
    assert at_s == pytest.approx(5.0 + 2.1)
    assert watchdog.error == "no audio for 2.1 s"


def test_the_first_audio_may_take_start_timeout() -> None:
    watchdog = InputWatchdog(policy=POLICY, now_s=0.0)
    clock = Clock(watchdog)
    clock.flowing = False
    clock.run(9.9)
    assert watchdog.state is InputState.OK  # PulseAudio takes ~2 s to start: no false alarm
    clock.run(1.0)
    assert watchdog.state is InputState.LOST
    assert watchdog.error is not None and watchdog.error.startswith("no audio for 10.")


def test_attempts_back_off_and_each_failure_is_reported() -> None:
    watchdog, clock = lost_watchdog()
    started: list[float] = []
    while watchdog.state is InputState.LOST and clock.now_s < 29.0:
        if watchdog.attempt_due(now_s=clock.now_s):
            watchdog.attempt_started()
            started.append(clock.now_s)
            assert not watchdog.attempt_due(now_s=clock.now_s)
            clock.run(0.2)  # the reopen takes a while
            watchdog.attempt_failed(now_s=clock.now_s, error=f"not present ({len(started)})")
        clock.run(0.1)
    waits = [round(b - (a + 0.2), 1) for a, b in itertools.pairwise(started)]
    assert round(started[0] - 1.1, 1) == 0.5
    assert waits[:5] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert watchdog.attempts == len(started)
    assert watchdog.error == "gone"  # the loss, not the latest attempt
    assert watchdog.attempt_error == f"not present ({len(started)})"


def test_giving_up_after_timeout_even_while_an_attempt_blocks() -> None:
    watchdog, clock = lost_watchdog()
    clock.run(0.5)
    assert watchdog.attempt_due(now_s=clock.now_s)
    watchdog.attempt_started()  # ... and it never returns (a frozen sound server)
    clock.run(29.3)
    assert watchdog.state is InputState.LOST
    assert watchdog.give_up_in_s(now_s=clock.now_s) == pytest.approx(0.2, abs=1e-6)
    clock.run(0.2)
    assert watchdog.state is InputState.FAILED
    assert clock.changes[-1] == (pytest.approx(31.1), Change.FAILED)
    assert watchdog.give_up_in_s(now_s=clock.now_s) is None
    clock.run(5.0)
    assert clock.changes[-1][1] is Change.FAILED  # reported once


def test_a_reopened_device_must_deliver_to_count_as_back() -> None:
    watchdog, clock = lost_watchdog()
    clock.ended = False
    clock.run(0.5)
    watchdog.attempt_started()
    watchdog.reopened(now_s=clock.now_s, frames_captured=clock.frames)
    assert watchdog.state is InputState.LOST
    clock.run(10.5)  # opened, but silent past start_timeout: a failed attempt
    assert clock.changes[-1][1] is Change.ATTEMPT_FAILED
    assert watchdog.attempt_error is not None and "no audio for" in watchdog.attempt_error
    assert watchdog.state is InputState.LOST
    lost_at_s = watchdog.lost_at_s

    while not watchdog.attempt_due(now_s=clock.now_s):
        clock.run(0.1)
    watchdog.attempt_started()
    watchdog.reopened(now_s=clock.now_s, frames_captured=clock.frames)
    assert watchdog.lost_at_s == lost_at_s  # the outage and its deadline go on
    clock.flowing = True
    clock.run(0.1)
    assert clock.changes[-1][1] is Change.RECOVERED
    assert watchdog.state is InputState.OK
    assert watchdog.error is None and watchdog.attempts == 0 and watchdog.lost_at_s is None
    assert watchdog.last_outage_s == pytest.approx(clock.now_s - 1.1)

    # Back to normal: the short stall limit applies again, and a new loss starts afresh.
    clock.flowing = False
    clock.run(2.2)
    assert watchdog.state is InputState.LOST
    assert watchdog.losses == 2 and watchdog.attempts == 0


def test_an_ended_reopened_stream_is_a_failed_attempt() -> None:
    watchdog, clock = lost_watchdog()
    clock.run(0.5)
    watchdog.attempt_started()
    watchdog.reopened(now_s=clock.now_s, frames_captured=clock.frames)
    clock.run(0.1)  # still ended: the new stream died at once
    assert clock.changes[-1][1] is Change.ATTEMPT_FAILED
    assert watchdog.attempt_error == "gone"


def test_timeout_zero_gives_up_at_the_loss() -> None:
    watchdog = InputWatchdog(policy=ReconnectPolicy(timeout_s=0.0), now_s=0.0)
    clock = Clock(watchdog)
    clock.run(1.0)
    clock.ended = True
    clock.run(0.1)
    assert clock.changes == [(1.1, Change.FAILED)]
    assert watchdog.state is InputState.FAILED
    assert watchdog.error == "gone"
    assert not watchdog.attempt_due(now_s=100.0)


def test_infinite_timeout_never_gives_up() -> None:
    watchdog, clock = lost_watchdog(ReconnectPolicy(timeout_s=math.inf))
    clock.run(3600.0)
    assert watchdog.state is InputState.LOST
    assert watchdog.give_up_in_s(now_s=clock.now_s) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": -1.0},
        {"timeout_s": math.nan},
        {"first_delay_s": 0.0},
        {"stall_timeout_s": math.inf},
        {"start_timeout_s": -2.0},
        {"first_delay_s": 2.0, "max_delay_s": 1.0},
    ],
)
def test_bad_policies_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ReconnectPolicy(**kwargs)
