"""Which code a benchmark ran on: the commit and whether tracked files had changes.

Imported by the scripts next to it (``from provenance import git_commit``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = ROOT) -> tuple[str, bool]:
    """``(full commit hash or "unknown", dirty)``; untracked files do not count as dirty."""

    def run(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        except OSError:
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = run("rev-parse", "HEAD") or "unknown"
    dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    return commit, dirty
