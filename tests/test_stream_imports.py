"""House rule 1: the core of synesthete.stream does no I/O and imports no device/file libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE_MODULES = (
    "synesthete.stream.config",
    "synesthete.stream.ringbuffer",
    "synesthete.stream.capture",
    "synesthete.stream.resample",
    "synesthete.stream.windowing",
    "synesthete.stream.synth",
    "synesthete.stream.guard",
    "synesthete.stream.watchdog",
)
BANNED = ("sounddevice", "soundfile", "websockets", "rich", "annoy", "msgpack", "sqlite3", "torch")


def _loaded_after_import(module: str) -> set[str]:
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_modules_import_no_io_libraries(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert not {name for name in loaded if name.split(".")[0] in BANNED}


def test_sources_imports_sounddevice_and_soundfile_lazily() -> None:
    """``synesthete devices`` and file input must import even where PortAudio is missing."""
    loaded = _loaded_after_import("synesthete.stream.sources")
    assert "sounddevice" not in loaded
    assert "soundfile" not in loaded
