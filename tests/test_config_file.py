"""The TOML config file: keys are long options, [command] tables override, flags win."""

from __future__ import annotations

from pathlib import Path

import pytest

from synesthete.clients.cli import _parse, main

EXAMPLE = """\
index = "~/lib"
threshold = 0.6

[listen]
device = "USB Audio"
serve = "127.0.0.1:8765"
no_tui = true

[identify]
threshold = 0.7
"""


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "synesthete").mkdir()
    return tmp_path / "synesthete" / "config.toml"


def test_top_level_keys_apply_to_every_command_and_tables_override(config_home: Path) -> None:
    config_home.write_text(EXAMPLE)
    listen = _parse(["listen"])
    assert listen.index == Path("~/lib").expanduser()  # --index is satisfied by the file
    assert (listen.threshold, listen.device, listen.serve) == (0.6, "USB Audio", "127.0.0.1:8765")
    assert listen.no_tui is True
    identify = _parse(["identify", "song.wav"])
    assert identify.threshold == 0.7 and identify.files == ["song.wav"]
    assert not hasattr(identify, "device")


def test_flags_override_the_file(config_home: Path) -> None:
    config_home.write_text(EXAMPLE)
    args = _parse(["listen", "--threshold", "0.8", "--index", "/other"])
    assert (args.threshold, args.index) == (0.8, Path("/other"))
    # A flag of a mutually exclusive group drops the file's value for the others.
    args = _parse(["listen", "--input", "set.flac"])
    assert args.device is None and args.input == Path("set.flac")


def test_config_show_says_where_each_setting_came_from(
    config_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_home.write_text(EXAMPLE)
    assert main(["config", "show", "listen", "--hop", "1.0"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" = ")[0]: line for line in out.splitlines() if " = " in line}
    assert lines["threshold"].endswith(f"# file {config_home}:2")
    assert lines["device"] == f'device = "USB Audio"  # file {config_home}:5'
    assert lines["no_tui"] == f"no_tui = true  # file {config_home}:7"
    assert lines["hop"] == "hop = 1.0  # flag"
    assert lines["events"] == 'events = "core"  # default'


def test_an_explicit_config_path_is_read_and_must_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[similar]\nk = 3\n")
    assert _parse(["--config", str(path), "similar", "--index", "x", "a.wav"]).k == 3
    assert main(["--config", str(tmp_path / "missing.toml"), "devices"]) == 2
    assert "missing.toml not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("thresold = 0.6\n", ":1: unknown key 'thresold'"),
        ("[listen]\n\nbogus = 1\n", ":3: unknown key 'bogus' in [listen]"),
        ("[listen]\nthreshold = 'high'\n", ":2: threshold: expected a number"),
        ("[listen]\nno_tui = 'yes'\n", ":2: no_tui: expected true or false"),
        ("[similar]\nk = 2.5\n", ":2: k: expected an integer"),
        ("[listen]\nevents = 'some'\n", ":2: events: 'some' is not one of core, all"),
        ("[lisen]\nhop = 1.0\n", ":1: unknown table [lisen]"),
    ],
)
def test_a_bad_file_is_a_one_line_error_naming_file_line_and_key(
    config_home: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    config_home.write_text(body)
    assert main(["listen", "--index", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"synesthete: error: {config_home}"), err
    assert expected in err, err


def test_tests_do_not_read_the_developers_config() -> None:
    import os

    home = Path(os.environ["XDG_CONFIG_HOME"])
    assert home != Path.home() / ".config"
    assert not (home / "synesthete" / "config.toml").exists()
