"""Validation of config values at the edges: numbers that must be real, integers with a floor.

Raise ``ConfigError`` naming the setting; no I/O.
"""

from __future__ import annotations

import math
import re

from synesthete.errors import ConfigError


def require_real(name: str, value: object) -> float:
    """``value`` as a finite float; ``ConfigError`` for a bool, a non-number or inf/NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return as_float


def require_int(name: str, value: object, *, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``; a bool is refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str) -> bool:
    """``scheme://...``: a network input rather than a file name."""
    return bool(_URL.match(text))
