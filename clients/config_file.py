"""The TOML config file: option defaults for every command, under the command-line flags.

``$XDG_CONFIG_HOME/synesthete/config.toml`` (``~/.config/...`` when unset), or
``--config PATH``. Keys are the CLI's long option names with dashes turned into
underscores (``--reconnect-timeout`` is ``reconnect_timeout``, ``--no-tui`` is
``no_tui = true``). Top-level keys apply to every command that takes the
option; a table per command overrides them: ``[listen]``, ``[identify]``, and
``[index_build]``, ``[index_add]``, ... for the ``index`` actions (``index``
itself is the top-level ``--index`` key)::

    index = "~/lib"
    threshold = 0.6

    [listen]
    device = "USB Audio"
    serve = "127.0.0.1:8765"

Precedence: flag, then the command's table, then the top level, then the
built-in default. A value goes through the option's own parser (a path, a
number, a choice), so the frozen configs the command builds validate it as
they validate a flag. An unknown key, an unknown table or a value of the wrong
type is a one-line ``ConfigError`` naming the file, the line and the key.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synesthete.errors import ConfigError

CONFIG_FLAG = "--config"
Source = str
"""``"default"``, ``"flag"`` or ``"file PATH:LINE"``."""


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/synesthete/config.toml``, or ``~/.config/synesthete/config.toml``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "synesthete" / "config.toml"


@dataclass(frozen=True, kw_only=True)
class ConfigFile:
    """A parsed config file: top-level option values and one table per command."""

    path: Path | None
    top: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    text: str = ""

    def line_of(self, key: str, table: str | None) -> int:
        """The line that sets ``key`` (in ``[table]``, or at the top level); 0 if not found."""
        current: str | None = None
        pattern = re.compile(
            rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*="""
        )
        for number, line in enumerate(self.text.splitlines(), start=1):
            header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
            if header:
                current = header.group(1).strip("\"'")
            elif current == table and pattern.match(line):
                return number
        return 0

    def where_table(self, table: str) -> str:
        for number, line in enumerate(self.text.splitlines(), start=1):
            header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
            if header and header.group(1).strip("\"'") == table:
                return f"{self.path}:{number}"
        return str(self.path)

    def where(self, key: str, table: str | None) -> str:
        line = self.line_of(key, table)
        return f"{self.path}:{line}" if line else str(self.path)


def load(path: Path | None, *, required: bool) -> ConfigFile:
    """Read ``path``; a missing file is an empty config unless ``required`` (``--config``)."""
    if path is None or not path.is_file():
        if required:
            raise ConfigError(f"config file {path} not found")
        return ConfigFile(path=None)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    return ConfigFile(path=path, top=top, tables=tables, text=text)


def config_flag(argv: Sequence[str]) -> str | None:
    """The value of ``--config`` given before the command, if any."""
    for i, token in enumerate(argv):
        if token == CONFIG_FLAG:
            if i + 1 >= len(argv):
                raise ConfigError(f"{CONFIG_FLAG} needs a path")
            return argv[i + 1]
        if token.startswith(CONFIG_FLAG + "="):
            return token.split("=", 1)[1]
        if not token.startswith("-"):
            return None
    return None


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_path(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[list[str], argparse.ArgumentParser]:
    """The command words in ``argv`` (``["index", "build"]``) and the parser that takes them."""
    words: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == CONFIG_FLAG:
            skip = True
            continue
        if token.startswith("-"):
            continue
        commands = _subparsers(parser)
        if token not in commands:
            break
        words.append(token)
        parser = commands[token]
        if not _subparsers(parser):
            break
    return words, parser


def table_name(words: Sequence[str]) -> str:
    return "_".join(words)


def table_names(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every command's table name (leaf commands only)."""
    names: set[str] = set()
    for word, sub in _subparsers(parser).items():
        path = (*prefix, word)
        if path == ("config",):
            continue  # `config show` reads the file; it takes no settings from it
        if _subparsers(sub):
            names |= table_names(sub, path)
        else:
            names.add(table_name(path))
    return names


def option_key(action: argparse.Action) -> str | None:
    """The config key of an option: its long name with dashes turned into underscores."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return None
    return longs[0][2:].replace("-", "_")


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {key: a for a in parser._actions if (key := option_key(a)) is not None}


def _all_keys(parser: argparse.ArgumentParser) -> set[str]:
    keys = set(options(parser))
    for sub in _subparsers(parser).values():
        keys |= _all_keys(sub)
    return keys


def check(config: ConfigFile, parser: argparse.ArgumentParser) -> None:
    """Refuse unknown tables and keys (a top-level key must be an option of some command)."""
    known_tables = table_names(parser)
    every_key = _all_keys(parser) - {"config", "version"}
    for key in config.top:
        if key not in every_key:
            flag = "--" + key.replace("_", "-")
            where = config.where(key, None)
            raise ConfigError(f"{where}: unknown key {key!r}: no command has {flag}")
    commands = {table_name(w): p for w, p in _leaves(parser)}
    for name, table in config.tables.items():
        if name not in known_tables:
            raise ConfigError(
                f"{config.where_table(name)}: unknown table [{name}]; "
                f"commands: {', '.join(sorted(known_tables))}"
            )
        taken = options(commands[name])
        for key in table:
            if key not in taken:
                raise ConfigError(
                    f"{config.where(key, name)}: unknown key {key!r} in [{name}]: "
                    f"{' '.join(name.split('_', 1))} has no --{key.replace('_', '-')}"
                )
            if isinstance(table[key], dict):
                raise ConfigError(f"{config.where(key, name)}: {key} must be a value, not a table")
            convert(taken[key], table[key], where=config.where(key, name), key=key)
    # Values are checked whatever the command run now, so a typo surfaces at once.
    for _, command in _leaves(parser):
        taken = options(command)
        for key, value in config.top.items():
            if key in taken:
                convert(taken[key], value, where=config.where(key, None), key=key)


def _leaves(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = []
    for word, sub in _subparsers(parser).items():
        path = (*prefix, word)
        out.extend(_leaves(sub, path) if _subparsers(sub) else [(path, sub)])
    return out


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _convert_one(action: argparse.Action, value: object, *, where: str, key: str) -> object:
    converter = action.type
    if isinstance(value, (bool, dict, list)):
        raise ConfigError(f"{where}: {key}: expected a {_kind(action)}, got {_describe(value)}")
    if converter is float:
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key}: expected a number, got {_describe(value)}")
        converted: object = float(value)
    elif converter is int:
        if not isinstance(value, int):
            raise ConfigError(f"{where}: {key}: expected an integer, got {_describe(value)}")
        converted = value
    else:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key}: expected a string, got {_describe(value)}")
        text = str(Path(value).expanduser()) if value.startswith("~") else value
        if converter is None:
            converted = text
        else:
            try:
                converted = converter(text)  # type: ignore[operator]
            except (argparse.ArgumentTypeError, ValueError, ConfigError) as err:
                raise ConfigError(f"{where}: {key}: {err}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {key}: {value!r} is not one of {choices}")
    return converted


def _kind(action: argparse.Action) -> str:
    if action.type is float:
        return "number"
    if action.type is int:
        return "integer"
    return "string"


def convert(action: argparse.Action, value: object, *, where: str, key: str) -> object:
    """A TOML value as the option's parsed value (what the flag would give)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key}: expected true or false, got {_describe(value)}")
        return action.const if value else action.default
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        items = value if isinstance(value, list) else None
        if items is None:
            raise ConfigError(f"{where}: {key}: expected a list, got {_describe(value)}")
        return [_convert_one(action, item, where=where, key=key) for item in items]
    return _convert_one(action, value, where=where, key=key)


def _given(action: argparse.Action, argv: Sequence[str]) -> bool:
    return any(
        token == option or (option.startswith("--") and token.startswith(option + "="))
        for token in argv
        for option in action.option_strings
    )


@dataclass(frozen=True, kw_only=True)
class Setting:
    key: str
    dest: str
    source: Source
    inverted: bool = False
    """A ``--no-x`` flag: the key is true when the destination is false."""


def apply(
    config: ConfigFile, parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[list[str], list[Setting]]:
    """Set the file's values as the defaults of the command ``argv`` names.

    Returns the command words and where each of its options comes from. Options
    the file sets are no longer required; a flag of a mutually exclusive group
    drops the file's values for the others.
    """
    words, command = command_path(parser, argv)
    table = config.tables.get(table_name(words), {}) if words else {}
    exclusive_given: set[int] = set()
    for group in command._mutually_exclusive_groups:
        if any(_given(a, argv) for a in group._group_actions):
            exclusive_given |= {id(a) for a in group._group_actions}
    settings: list[Setting] = []
    for key, action in options(command).items():
        inverted = isinstance(action, argparse._StoreFalseAction)
        if _given(action, argv):
            settings.append(Setting(key=key, dest=action.dest, source="flag", inverted=inverted))
            continue
        scope: str | None = table_name(words) if key in table else None
        value = table[key] if key in table else config.top.get(key)
        if value is None or (id(action) in exclusive_given):
            settings.append(Setting(key=key, dest=action.dest, source="default", inverted=inverted))
            continue
        where = config.where(key, scope)
        action.default = convert(action, value, where=where, key=key)
        action.required = False
        settings.append(
            Setting(key=key, dest=action.dest, source=f"file {where}", inverted=inverted)
        )
    return words, settings


def relax_positionals(parser: argparse.ArgumentParser) -> None:
    """Let ``parser`` parse without its positional arguments (``config show`` names none)."""
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            action.nargs = "*" if action.nargs in ("+", "*") else "?"
            action.required = False
    for group in parser._mutually_exclusive_groups:
        group.required = False


def show(args: argparse.Namespace, settings: Sequence[Setting], *, words: Sequence[str]) -> str:
    """``synesthete config show``: each option of the command, its value and its source."""
    lines = [f"# {' '.join(words)}"]
    for setting in settings:
        value = getattr(args, setting.dest, None)
        if setting.inverted and isinstance(value, bool):
            value = not value
        lines.append(f"{setting.key} = {_toml(value)}  # {setting.source}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
