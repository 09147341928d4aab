"""Structural rules: the core does no I/O; --help and devices stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = [
    "stream/ringbuffer.py",
    "stream/capture.py",
    "stream/windowing.py",
    "stream/resample.py",
    "stream/synth.py",
    "stream/guard.py",
    "stream/watchdog.py",
    "index/matcher.py",
    "index/protocols.py",
    "index/recognizer.py",
    "index/similar.py",
    "index/versions.py",
    "synesthete/events.py",
    "synesthete/constants.py",
    "synesthete/errors.py",
]
BANNED = {
    "sounddevice",
    "websockets",
    "rich",
    "annoy",
    "msgpack",
    "sqlite3",
    "soundfile",
    "mutagen",
    "socket",
    "asyncio",
}
BANNED_CALLS = {"open"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_no_io(module: str) -> None:
    path = ROOT / module
    assert not (imported_roots(path) & BANNED), f"{module} imports {imported_roots(path) & BANNED}"
    tree = ast.parse(path.read_text())
    calls = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert not (calls & BANNED_CALLS), f"{module} calls {calls & BANNED_CALLS}"


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from synesthete.clients.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(','.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.strip().splitlines()[-1].split(","))


def test_help_imports_no_heavy_library() -> None:
    loaded = _modules_after(["--help"])
    assert not {"torch", "annoy", "sounddevice", "numpy"} & loaded


def test_devices_imports_no_torch_or_annoy() -> None:
    loaded = _modules_after(["devices"])
    assert not {"torch", "annoy"} & loaded


def test_no_generic_top_level_names_installed() -> None:
    import synesthete.stream

    code = (
        "import importlib.util as u\n"
        "print([n for n in ('stream', 'index', 'clients', 'inference') if u.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.strip() == "[]"
    assert synesthete.stream.__name__ == "synesthete.stream"
