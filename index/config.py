"""Settings of the library index and of recognition: one frozen dataclass per layer.

``IndexConfig`` (how tracks are windowed, embedded and indexed), ``Calibration`` and
``MatcherConfig`` (the matcher), ``RecognizerConfig`` (one stream's path from audio
blocks to events, the matcher's settings inside).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from synesthete.checks import require_int, require_real
from synesthete.constants import (
    DEFAULT_INDEX_HOP_S,
    DEFAULT_LIVE_HOP_S,
    DEFAULT_SOUNDS_LIKE_DISTANCE,
    MAX_INDEX_HOP_S,
    MAX_LIVE_HOP_S,
    MIN_INDEX_HOP_S,
    MIN_LIVE_HOP_S,
    SOUNDS_LIKE_DISTANCES,
    WINDOW_S,
)
from synesthete.errors import ConfigError

FrechetMode = Literal["horizon", "ema"]

_HOP_SLACK_S = 1e-9
"""Hops typed in TOML (0.5000001) still pass the range checks."""

RESAMPLE_QUALITIES = ("HQ", "VHQ", "MQ", "LQ", "QQ")

DEFAULT_N_TREES = 16
DEFAULT_DELTA_FRACTION = 0.1
"""Deltas up to 10 % of the main generation's windows: an add costs what its own tracks
cost, and one add in every ~10 % of growth pays for a full rewrite (a full generation
costs about what a tenth of the library's adds did before; searching a delta beside the
main generation adds one small ANN query per live window)."""
MAX_DELTAS = 8
"""Deltas on top of one main generation, at most: each adds an ANN query per live window."""
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
    sonic_map: bool = True
    """Lay out the sonic map and store it with each generation (``index/sonic_store.py``)."""
    delta_fraction: float = DEFAULT_DELTA_FRACTION
    """``index add`` writes the new tracks as a delta beside the main generation while the
    deltas hold at most this fraction of the main generation's windows; past it the add
    writes a fresh main generation (``builder.add_to_index``). 0: always a fresh one."""

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
        if not 0.0 <= self.delta_fraction <= 1.0:
            raise ConfigError(f"delta_fraction must be within 0..1, got {self.delta_fraction}")


def _log1pexp(x: float) -> float:
    """``log(1 + exp(x))`` without overflow."""
    return x + math.log1p(math.exp(-x)) if x > 0.0 else math.log1p(math.exp(x))


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Logistic confidence model over the matcher's scores.

    ``confidence = sigmoid(logit(p_known * p_gate) - shift)``, where
    ``p_known = sigmoid(bias + w_frechet * frechet + w_margin * clip(margin)
    + w_windows * min(n, H) / H)`` says how well the audio fits the track,
    and, when ``gate_margin > 0``, ``p_gate = sigmoid(gate_bias + gate_margin
    * clip(margin))`` says how clearly it beats the runner-up track (else 1).
    The margin is clipped to ``±margin_cap``.

    In the gated form (what ``scripts/calibrate.py`` fits) a clear margin can
    only confirm a close fit: it cannot lift a distant one over the threshold.
    A small library leaves an unknown piece with no runner-up near it, so an
    additive margin term (the older form, ``gate_margin = 0``) named such a
    piece with high confidence. ``shift`` puts the fitted operating point at
    0.5.

    The defaults are hand-set for unit-vector distances (true matches score
    a Fréchet distance of about 0.05-0.3, unrelated audio 0.6-1.2): with a full
    horizon and no margin the 0.5 boundary sits at ``frechet = 0.45``, and a
    clear runner-up gap moves it to at most 0.54. Refit them by measurement
    and load the result with :meth:`from_dict`.
    """

    bias: float = 3.5
    w_frechet: float = -10.0
    w_margin: float = 3.0
    w_windows: float = 1.0
    margin_cap: float = 0.3
    gate_bias: float = 0.0
    gate_margin: float = 0.0
    shift: float = 0.0

    def __post_init__(self) -> None:
        for name in self._keys():
            require_real(f"calibration.{name}", getattr(self, name))
        # The matcher ranks candidates by confidence and relies on it falling
        # as the distance grows and rising with the runner-up gap.
        if self.w_frechet >= 0.0:
            raise ConfigError(f"calibration.w_frechet must be < 0, got {self.w_frechet}")
        if self.w_margin < 0.0:
            raise ConfigError(f"calibration.w_margin must be >= 0, got {self.w_margin}")
        if self.gate_margin < 0.0:
            raise ConfigError(f"calibration.gate_margin must be >= 0, got {self.gate_margin}")
        if self.margin_cap < 0.0:
            raise ConfigError(f"calibration.margin_cap must be >= 0, got {self.margin_cap}")

    @staticmethod
    def _keys() -> tuple[str, ...]:
        return (
            "bias", "w_frechet", "w_margin", "w_windows", "margin_cap",
            "gate_bias", "gate_margin", "shift",
        )  # fmt: skip

    def confidence(
        self, *, frechet: float, margin: float, n_windows: int, horizon_windows: int
    ) -> float:
        """Confidence in ``0..1``; an infinite (impossible) distance gives 0."""
        if not math.isfinite(frechet) or math.isnan(margin):
            return 0.0
        clipped_margin = min(max(margin, -self.margin_cap), self.margin_cap)
        window_fraction = min(n_windows, horizon_windows) / horizon_windows
        z = (
            self.bias
            + self.w_frechet * frechet
            + self.w_margin * clipped_margin
            + self.w_windows * window_fraction
        )
        if self.gate_margin > 0.0:
            # log(p_known * p_gate) - log(1 - p_known * p_gate), computed stably.
            log_p = -_log1pexp(-z) - _log1pexp(
                -(self.gate_bias + self.gate_margin * clipped_margin)
            )
            z = log_p - math.log(-math.expm1(log_p)) if log_p < 0.0 else 30.0
        z -= self.shift
        if z >= 0.0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def to_dict(self) -> dict[str, float]:
        return {key: float(getattr(self, key)) for key in self._keys()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Calibration:
        """Build from a mapping such as :meth:`to_dict` gives; missing keys keep defaults."""
        known = set(cls().to_dict())
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"calibration: unknown keys {unknown}; expected {sorted(known)}")
        values = {key: require_real(f"calibration.{key}", value) for key, value in data.items()}
        return cls(**values)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class MatcherConfig:
    """Settings of one :class:`Matcher`; fixed at construction.

    ``top_k`` is for the caller: how many nearest library windows to request
    per live window. ``candidate_ttl_windows``: a candidate absent from the
    neighbors for more than this many consecutive windows is dropped (never
    the currently identified track).
    """

    index_hop_s: float = DEFAULT_INDEX_HOP_S
    live_hop_s: float = DEFAULT_LIVE_HOP_S
    window_s: float = WINDOW_S
    horizon_windows: int = 8
    frechet_mode: FrechetMode = "ema"
    ema_decay: float = 0.3
    """Chosen on the val split's DJ mixes (docs/dj.md): 0.5 named the incoming track of a
    crossfade about 2 s sooner than 0.7, and 0.3 another 0.7 s sooner (median) with 0.5 pp
    more mix seconds right, with the same accuracy on excerpts; 0.2 gained no more."""
    tempo_tolerance: float = 0.12
    top_k: int = 32
    max_candidates: int = 16
    candidate_ttl_windows: int = 4
    on_threshold: float = 0.5
    off_threshold: float = 0.35
    max_frechet: float = 0.5
    """A track is never newly named while its Fréchet distance is above this, however
    clear its lead: true matches score about 0.05-0.4, and the calibration, which leans
    on the margin, can be fooled by audio far from every track but farther from the rest."""
    first_max_frechet: float | None = None
    """On the stream's first window a track is named only within this distance (``None``:
    ``max_frechet``). One window is the riskiest evidence: music outside the library
    finds some stored window close to any single one of its windows far more easily than
    a path of two. For encoder-v3 on val (``scripts/decision_lab.py``), 0.55 on the first
    window and 0.70 after it answered 45 % of babble queries by 6 s, 97 % in pink noise
    and 53 % in the room, against 40, 87 and 43 % for one threshold, at 1 % of unknown
    queries named; every clean, codec, speed, tempo and pitch query still answered on its
    first window."""
    path_max_distance: float | None = None
    """A window counts toward a position path (its support, and the points its tempo is
    fitted to) when its coupled distance is at most this; ``None``: ``max_frechet``. A
    guard for naming may be wide for a model whose noisy matches sit far out, while a
    tempo fitted to such windows drifts toward 1; a model's calibration JSON can set
    both. encoder-v3's is 0.6: its true windows' distances on clean, codec, speed and
    tempo queries of val have a 99th percentile of 0.49 and a 99.5th of 0.53
    (``scripts/decision_lab.py``), and synthesized music, unlike the corpus, needs the
    rest (at 0.5 a +8 % turntable set of synthesized tracks read its tempo 2.2 % off)."""
    lost_windows: int = 2
    mix_hold_windows: int = 4
    switch_windows: int = 2
    version_tie_frechet: float = 0.06
    """Versions of one piece (``CurveLibrary.versions``) whose Fréchet distances are this
    close are tied: the one whose tempo ratio is nearest 1 is named (audio is more often
    played near its own speed than retimed to match another version), and a version
    takes over from the current track only with a lead larger than this, so a tracklist
    does not flip between versions on noise."""
    distance_scale: float = 1.0
    """How an encoder's distances run against the ones the distance-unit hysteresis
    settings were chosen for (``version_tie_frechet`` and the position path's jump margin,
    set on encoder-v3): both are multiplied by it. A model's calibration JSON carries it
    when its distances run on another scale, as a projected encoder's do (its true-window
    distances on clean, codec, speed and tempo queries of val over encoder-v3's)."""
    version_tempo_lead: float = 0.04
    """A tied version is preferred for its tempo only when its ``|log tempo_ratio|`` is
    smaller by more than this (the tempo of a short path is noisy by about 1 %)."""
    report_candidates: int = 5
    verify_min_z: float | None = 7.0
    """A candidate whose confidence falls short is still named when its spectral peaks
    (``constellation.py``) land on the stored track's at one alignment this far above
    chance (``Match.z``); ``None`` turns the check off. In val's decision lab against a
    342-track library (encoder-v10p, 1 200 known queries, 480 unknown ones) 7.0 raised
    acc@6 from 31 to 53 % under babble and from 31 to 66 % in the room, with one more
    unknown query named (0.83 % against 0.62 %: a piece that shares a passage, note for
    note, with a stored one); other unknown queries reached 5.8 at most
    (docs/encoder.md, "The peak check"). A model's calibration JSON may set it, or turn it
    off with ``null`` (``verify_min_z``)."""
    verify_max_distance: float | None = None
    """Only candidates within this Fréchet distance are checked (``None``:
    ``max_frechet``)."""
    verify_candidates: int = 3
    """How many of the nearest tracks are checked on a window."""
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self) -> None:
        index_hop_s = require_real("index_hop_s", self.index_hop_s)
        if not MIN_INDEX_HOP_S - _HOP_SLACK_S <= index_hop_s <= MAX_INDEX_HOP_S + _HOP_SLACK_S:
            raise ConfigError(
                f"index_hop_s must be in [{MIN_INDEX_HOP_S}, {MAX_INDEX_HOP_S}], got {index_hop_s}"
            )
        live_hop_s = require_real("live_hop_s", self.live_hop_s)
        if not MIN_LIVE_HOP_S - _HOP_SLACK_S <= live_hop_s <= MAX_LIVE_HOP_S + _HOP_SLACK_S:
            raise ConfigError(
                f"live_hop_s must be in [{MIN_LIVE_HOP_S}, {MAX_LIVE_HOP_S}], got {live_hop_s}"
            )
        if require_real("window_s", self.window_s) <= 0.0:
            raise ConfigError(f"window_s must be > 0, got {self.window_s}")
        require_int("horizon_windows", self.horizon_windows, minimum=1)
        if self.frechet_mode not in ("horizon", "ema"):
            raise ConfigError(f"frechet_mode must be 'horizon' or 'ema', got {self.frechet_mode!r}")
        if not 0.0 <= require_real("ema_decay", self.ema_decay) < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= require_real("tempo_tolerance", self.tempo_tolerance) < 1.0:
            raise ConfigError(f"tempo_tolerance must be in [0, 1), got {self.tempo_tolerance}")
        require_int("top_k", self.top_k, minimum=1)
        require_int("max_candidates", self.max_candidates, minimum=1)
        require_int("candidate_ttl_windows", self.candidate_ttl_windows, minimum=0)
        on = require_real("on_threshold", self.on_threshold)
        off = require_real("off_threshold", self.off_threshold)
        if not 0.0 < off <= on < 1.0:
            raise ConfigError(
                f"thresholds must satisfy 0 < off_threshold <= on_threshold < 1, "
                f"got off={off}, on={on}"
            )
        if not 0.0 < require_real("max_frechet", self.max_frechet) <= 2.0:
            raise ConfigError(f"max_frechet must be in (0, 2], got {self.max_frechet}")
        if self.first_max_frechet is not None and not (
            0.0 < require_real("first_max_frechet", self.first_max_frechet) <= 2.0
        ):
            raise ConfigError(f"first_max_frechet must be in (0, 2], got {self.first_max_frechet}")
        if self.path_max_distance is not None and not (
            0.0 < require_real("path_max_distance", self.path_max_distance) <= 2.0
        ):
            raise ConfigError(f"path_max_distance must be in (0, 2], got {self.path_max_distance}")
        require_int("lost_windows", self.lost_windows, minimum=1)
        require_int("mix_hold_windows", self.mix_hold_windows, minimum=0)
        require_int("switch_windows", self.switch_windows, minimum=1)
        if not 0.0 <= require_real("version_tempo_lead", self.version_tempo_lead) < 1.0:
            raise ConfigError(
                f"version_tempo_lead must be in [0, 1), got {self.version_tempo_lead}"
            )
        if not 0.0 < require_real("distance_scale", self.distance_scale) <= 10.0:
            raise ConfigError(f"distance_scale must be in (0, 10], got {self.distance_scale}")
        if not 0.0 <= require_real("version_tie_frechet", self.version_tie_frechet) <= 2.0:
            raise ConfigError(
                f"version_tie_frechet must be in [0, 2], got {self.version_tie_frechet}"
            )
        require_int("report_candidates", self.report_candidates, minimum=0)
        if self.verify_min_z is not None and require_real("verify_min_z", self.verify_min_z) <= 0:
            raise ConfigError(f"verify_min_z must be > 0 or None, got {self.verify_min_z}")
        if self.verify_max_distance is not None and not (
            0.0 < require_real("verify_max_distance", self.verify_max_distance) <= 2.0
        ):
            raise ConfigError(
                f"verify_max_distance must be in (0, 2], got {self.verify_max_distance}"
            )
        require_int("verify_candidates", self.verify_candidates, minimum=1)
        if not isinstance(self.calibration, Calibration):
            raise ConfigError(
                f"calibration must be a Calibration, got {type(self.calibration).__name__}"
            )

    @property
    def version_tie(self) -> float:
        """``version_tie_frechet`` on this encoder's distance scale."""
        return self.version_tie_frechet * self.distance_scale

    @property
    def verify_distance(self) -> float:
        """The distance within which candidates get the peak check (``verify_max_distance``)."""
        return self.max_frechet if self.verify_max_distance is None else self.verify_max_distance

    @property
    def path_distance(self) -> float:
        """The distance within which a window supports a position path (see
        ``path_max_distance``)."""
        return self.max_frechet if self.path_max_distance is None else self.path_max_distance

    @property
    def step_range(self) -> tuple[int, int]:
        """``(s_lo, s_hi)``: track windows one live window may advance, see :func:`step_range`."""
        # Imported here: the CLI reads this module before --help, and the kernels need numpy.
        from .frechet import step_range

        return step_range(
            live_hop_s=self.live_hop_s,
            index_hop_s=self.index_hop_s,
            tempo_tolerance=self.tempo_tolerance,
        )


# --------------------------------------------------------------------------- pure functions


@dataclass(frozen=True, kw_only=True)
class RecognizerConfig:
    """Settings of one :class:`~synesthete.index.recognizer.Recognizer`; fixed at construction.

    ``early_windows``: finish each window with the resampler's estimate of its held-back
    last milliseconds instead of waiting for them (live only; ``identify`` waits, so its
    output is exact). ``keep_timings``: record per-window encoder, search and matcher
    times (for status events and benchmarks). "Sounds like" goes out every
    ``sounds_like_every_windows`` windows with ``sounds_like_k`` tracks.
    """

    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    resample_quality: str = "HQ"
    sounds_like_k: int = 5
    sounds_like_every_windows: int = 2
    sounds_like_distance: str = DEFAULT_SOUNDS_LIKE_DISTANCE
    early_windows: bool = False
    keep_timings: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.matcher, MatcherConfig):
            raise ConfigError(f"matcher must be a MatcherConfig, got {type(self.matcher).__name__}")
        if str(self.resample_quality).upper() not in RESAMPLE_QUALITIES:
            raise ConfigError(
                f"resample quality must be one of {', '.join(RESAMPLE_QUALITIES)}, "
                f"got {self.resample_quality!r}"
            )
        require_int("sounds_like_k", self.sounds_like_k, minimum=0)
        require_int("sounds_like_every_windows", self.sounds_like_every_windows, minimum=1)
        known = (*SOUNDS_LIKE_DISTANCES, "cosine")
        if self.sounds_like_distance not in known:
            raise ConfigError(
                f"unknown sounds-like distance {self.sounds_like_distance!r}; "
                f"choose from {', '.join(known)}"
            )
