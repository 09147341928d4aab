"""Settings of the library index: how tracks are windowed, embedded and indexed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from synesthete.constants import (
    DEFAULT_INDEX_HOP_S,
    MAX_INDEX_HOP_S,
    MIN_INDEX_HOP_S,
    WINDOW_S,
)
from synesthete.errors import ConfigError

DEFAULT_N_TREES = 16
DEFAULT_SEARCH_K_FACTOR = 8
"""Annoy ``search_k = k * n_trees * factor``.

Chosen with scripts/bench_annoy.py (bench/annoy.json; 20k and 100k windows of
D=128 curve-like data, clean and noisy live queries): 16 trees with factor 8
keeps recall@10 against brute force >= 0.994 in every scenario at about
0.2 ms per query; factor 4 drops to 0.98 on the noisy 100k set, and 32 trees
cost 25 % more disk and 50 % more build time for no measurable gain.
"""

DEFAULT_SPEED_VARIANTS: tuple[float, ...] = (0.94, 1.06)
"""Playback speeds at which every track is also indexed (besides 1.0).

A turntable's pitch fader moves tempo and pitch together by up to ±8 %, and
a 1-semitone key change is a 5.9 % frequency shift; the encoder's windows
drift apart under both. Copies at 0.94 and 1.06 leave at most about 2-3 %
between any played speed in 0.92..1.08 and the nearest stored curve. Chosen
on the val split (see docs/dj.md); costs 3x the windows of an index
without variants.
"""
MIN_SPEED_VARIANT = 0.8
MAX_SPEED_VARIANT = 1.25
MAX_SPEED_VARIANTS = 8

DEFAULT_ANNOY_SEED = 20261122
DEFAULT_SILENCE_DBFS = -60.0


def check_speed_variants(values: Sequence[float]) -> tuple[float, ...]:
    """Validated speed variants: finite, within 0.8..1.25, not 1.0, distinct; sorted."""
    speeds: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"speed variant must be a number, got {value!r}")
        speed = float(value)
        if not (math.isfinite(speed) and MIN_SPEED_VARIANT <= speed <= MAX_SPEED_VARIANT):
            raise ConfigError(
                f"speed variant must be within {MIN_SPEED_VARIANT}..{MAX_SPEED_VARIANT}, "
                f"got {value!r}"
            )
        if abs(speed - 1.0) < 1e-3 or any(abs(speed - s) < 1e-3 for s in speeds):
            raise ConfigError(
                f"speed variants must differ from 1.0 and from each other, got {list(values)!r}"
            )
        speeds.append(speed)
    if len(speeds) > MAX_SPEED_VARIANTS:
        raise ConfigError(f"at most {MAX_SPEED_VARIANTS} speed variants, got {len(speeds)}")
    return tuple(sorted(speeds))


def parse_speed_variants(text: str) -> tuple[float, ...]:
    """Speed variants from a comma list (``"0.94,1.06"``, ``""`` for none) or the JSON list
    an index stores (``"[0.94, 1.06]"``)."""
    body = text.strip()
    if body.startswith("["):
        body = body[1:-1] if body.endswith("]") else body
    parts = [p.strip() for p in body.split(",") if p.strip()]
    values: list[float] = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise ConfigError(
                f"speed variants must be numbers like 0.94,1.06, got {text!r}"
            ) from None
    return check_speed_variants(values)


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    """How ``synesthete index build|add`` turns audio files into an index.

    ``index_hop_s``, ``n_trees``, ``seed`` and ``speed_variants`` are written
    into the index and fixed for its lifetime: ``add`` reuses the stored values, so existing and
    new windows stay on the same grid.
    """

    index_hop_s: float = DEFAULT_INDEX_HOP_S
    n_trees: int = DEFAULT_N_TREES
    seed: int = DEFAULT_ANNOY_SEED
    speed_variants: tuple[float, ...] = DEFAULT_SPEED_VARIANTS
    batch_windows: int = 64
    search_k_factor: int = DEFAULT_SEARCH_K_FACTOR
    min_duration_s: float = WINDOW_S
    silence_dbfs: float = DEFAULT_SILENCE_DBFS

    def __post_init__(self) -> None:
        object.__setattr__(self, "speed_variants", check_speed_variants(self.speed_variants))
        # A tiny tolerance so 0.5 typed as 0.5000001 by a TOML float still passes.
        if not (MIN_INDEX_HOP_S - 1e-9 <= self.index_hop_s <= MAX_INDEX_HOP_S + 1e-9):
            raise ConfigError(
                f"index_hop_s must be within {MIN_INDEX_HOP_S}..{MAX_INDEX_HOP_S} s, "
                f"got {self.index_hop_s}"
            )
        if not 1 <= self.n_trees <= 1024:
            raise ConfigError(f"n_trees must be within 1..1024, got {self.n_trees}")
        if not 0 <= self.seed < 2**31:
            raise ConfigError(f"seed must be within 0..2**31-1, got {self.seed}")
        if self.batch_windows < 1:
            raise ConfigError(f"batch_windows must be >= 1, got {self.batch_windows}")
        if self.search_k_factor < 1:
            raise ConfigError(f"search_k_factor must be >= 1, got {self.search_k_factor}")
        if self.min_duration_s < WINDOW_S:
            raise ConfigError(
                f"min_duration_s must be >= one window ({WINDOW_S} s), got {self.min_duration_s}"
            )
        if self.silence_dbfs >= 0.0:
            raise ConfigError(f"silence_dbfs must be below 0 dBFS, got {self.silence_dbfs}")
