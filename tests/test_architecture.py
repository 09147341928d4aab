"""Structural rules (house rule 1): the core does no I/O; --help and devices stay light.

For every core module the test follows its imports through the package, module
by module (relative, lazy and parent-package imports too; ``TYPE_CHECKING``
blocks are not run, so they are skipped), and checks every module reached:
no I/O library and no torch is imported, and no file is opened, read or written.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"stream", "index", "clients", "inference"}
"""Top-level folders mapped under ``synesthete.`` (the rest of the package is ``synesthete/``)."""

CORE_MODULES = (
    "synesthete.stream.config",
    "synesthete.stream.ringbuffer",
    "synesthete.stream.capture",
    "synesthete.stream.resample",
    "synesthete.stream.windowing",
    "synesthete.stream.synth",
    "synesthete.stream.guard",
    "synesthete.stream.watchdog",
    "synesthete.index.config",
    "synesthete.index.frechet",
    "synesthete.index.matcher",
    "synesthete.index.protocols",
    "synesthete.index.recognizer",
    "synesthete.index.similar",
    "synesthete.index.versions",
    "synesthete.inference.encoder",
    "synesthete.events",
    "synesthete.constants",
    "synesthete.errors",
    "synesthete.checks",
)
BANNED_IMPORTS = frozenset(
    {
        # devices, files, tags, streams
        "sounddevice",
        "soundfile",
        "mutagen",
        "av",
        # storage and search
        "sqlite3",
        "annoy",
        "pymilvus",
        "ray",
        # network and UI
        "websockets",
        "socket",
        "asyncio",
        "http",
        "urllib",
        "msgpack",
        "rich",
        # the file system and processes
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "subprocess",
        # the runtime model lives behind the Encoder protocol
        "torch",
        "torchaudio",
    }
)
BANNED_CALLS = frozenset({"open", "input", "print"})
BANNED_METHODS = frozenset(
    {
        "open",
        "read_text",
        "write_text",
        "read_bytes",
        "write_bytes",
        "mkdir",
        "unlink",
        "touch",
        "iterdir",
        "glob",
        "rglob",
        "fromfile",
        "tofile",
        "loadtxt",
        "savetxt",
        "savez",
    }
)
"""Methods that touch files (``Path.read_text``, ``np.save``, ...); ``load``/``save`` are left
out as names too common to ban, and are covered by the banned imports."""


def module_file(name: str) -> Path | None:
    """The source file of ``synesthete.…`` module ``name``; None for a name inside a module."""
    parts = name.split(".")
    if parts[0] != "synesthete":
        return None
    if len(parts) >= 2 and parts[1] in FOLDERS:
        base = ROOT.joinpath(*parts[1:])
    else:
        base = ROOT.joinpath("synesthete", *parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


@cache
def _parse(path: Path) -> list[ast.AST]:
    return _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of everything ``name`` imports (``from m import x`` gives m and m.x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _parse(path):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def reached_from(start: str) -> tuple[dict[str, Path], dict[str, str]]:
    """The package modules ``start`` loads (with their files), and each outside library it
    imports, with the module that imports it."""
    modules: dict[str, Path] = {}
    outside: dict[str, str] = {}
    todo = [start]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if name in modules or path is None:
            continue
        modules[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        for imported in imports_of(name, path):
            if imported.split(".")[0] == "synesthete":
                todo.append(imported)
            else:
                outside.setdefault(imported.split(".")[0], name)
    return modules, outside


def file_access(path: Path) -> set[str]:
    calls: set[str] = set()
    for node in _parse(path):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in BANNED_CALLS:
            calls.add(f"{node.func.id}()")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in BANNED_METHODS:
            calls.add(f".{node.func.attr}()")
    return calls


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_and_everything_it_imports_do_no_io(module: str) -> None:
    assert module_file(module) is not None, f"{module}: no such module"
    modules, outside = reached_from(module)
    banned = {lib: by for lib, by in outside.items() if lib in BANNED_IMPORTS}
    assert not banned, f"{module} reaches I/O or torch: {banned} (library: imported by)"
    for name, path in modules.items():
        assert not file_access(path), f"{module} reaches {name}, which calls {file_access(path)}"


def test_the_import_follower_sees_lazy_relative_and_parent_imports() -> None:
    """The checker itself: an adapter is caught through a chain of package imports."""
    modules, outside = reached_from("synesthete.clients.app")
    assert "synesthete.index.store" in modules and "synesthete.index" in modules
    assert outside.get("sqlite3") is not None and outside.get("torch") is not None
    # stream/sources.py imports sounddevice inside functions only: still followed.
    _, outside = reached_from("synesthete.stream.sources")
    assert "sounddevice" in outside and "soundfile" in outside


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nprint(','.join(sorted(sys.modules)))\n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(out.stdout.strip().splitlines()[-1].split(","))


def _modules_after_cli(argv: list[str]) -> set[str]:
    return _loaded_after(
        "import sys\n"
        "from synesthete.clients.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass"
    )


def test_help_imports_no_heavy_library() -> None:
    loaded = _modules_after_cli(["--help"])
    assert not {"torch", "annoy", "sounddevice", "numpy"} & loaded


def test_devices_imports_no_torch_or_annoy() -> None:
    loaded = _modules_after_cli(["devices"])
    assert not {"torch", "annoy"} & loaded


def test_sources_imports_sounddevice_and_soundfile_lazily() -> None:
    """``synesthete devices`` and file input must import even where PortAudio is missing."""
    loaded = _loaded_after("import sys\nimport synesthete.stream.sources")
    assert "sounddevice" not in loaded
    assert "soundfile" not in loaded


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
