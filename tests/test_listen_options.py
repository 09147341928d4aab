"""``listen`` edges: the exposure warning, stderr notes on input faults, option checks."""

from __future__ import annotations

import io

import pytest

from synesthete.clients.cli import main
from synesthete.clients.listen import InputNotes, exposure_warning
from synesthete.events import NowPlaying, Status, TrackInfo


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "localhost", "LOCALHOST"])
def test_loopback_needs_no_token(host: str) -> None:
    assert exposure_warning(host=host, port=8765, token=None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "studio.lan"])
def test_serving_beyond_loopback_without_a_token_is_warned(host: str) -> None:
    warning = exposure_warning(host=host, port=8765, token=None)
    assert warning is not None and "\n" not in warning
    assert f"{host}:8765 without --token" in warning
    assert exposure_warning(host=host, port=8765, token="s3cret") is None


def test_input_notes_report_losses_and_recoveries_once_each() -> None:
    out = io.StringIO()
    notes = InputNotes(out)
    track = TrackInfo(id=1, path="/m/a.flac", title="A")
    for event in (
        Status(file="mic", t=1.0),
        Status(file="mic", t=1.0, message="input ended"),  # not an input fault: silent
        NowPlaying(file="mic", t=4.0, track=track, offset_s=4.0, confidence=0.9),
        Status(
            file="mic", t=5.0, input_state="lost", message="input lost: gone; giving up in 60 s"
        ),
        Status(file="mic", t=5.0, input_state="lost"),
        Status(file="mic", t=5.0, input_state="lost", message="reconnect attempt 1 failed: x"),
        Status(file="mic", t=5.0, message="input back after 2.0 s"),
        Status(file="mic", t=6.0),
        Status(file="mic", t=7.0, input_state="failed", message="input lost (gone); giving up"),
    ):
        notes.write(event)
    assert out.getvalue().splitlines() == [
        "synesthete: input lost: gone; giving up in 60 s",
        "synesthete: reconnect attempt 1 failed: x",
        "synesthete: input back after 2.0 s",
    ]  # giving up is the CLI's own error line


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_bad_reconnect_timeout_is_one_line_before_anything_loads(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["listen", "--index", "/nonexistent", "--reconnect-timeout", value])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reconnect-timeout must be >= 0" in err
