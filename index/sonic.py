"""The similarity ("sonic") embedding: fingerprint windows → style vectors.

The fingerprint encoder was trained to tell two places in one track apart,
not to say which tracks feel alike. A small head, trained by
scripts/train_similarity.py on the train split (positives: far-apart stretches
of one track, and tracks of the same artist, album or game; negatives: the
rest), maps each window embedding ``[D]`` to a unit style vector ``[E]``. A
track's sonic curve is its windows through the head, so the track-level
distances of ``index/similar.py`` (mean, min point-to-point, Fréchet) apply to
it unchanged; the live query goes through the same head.

The head is two dense layers with a ReLU, in numpy (the runtime needs no torch
for it). It is tied to the encoder it was trained on: ``encoder_name``.

A head may end in **anchors** ``[C, E]``: unit vectors in its space, one per
group of tracks of the train split that share a game, album or composer (the
group's mean track vector). Each window's unit vector ``y`` then becomes
``normalise(exp(anchor_scale * (anchors · y - 1)))`` ``[C]``: how near it lies
to each known style, softly. Tracks near the same anchors rank together even
where the metric space leaves them apart (on val: score 0.31 → 0.38,
scripts/train_similarity.py ``--anchor-scale``).

A head reads one of two inputs (``inputs``):

``windows``
    the fingerprint window embeddings ``[n, D]``: the library's curves can be
    computed from any generation's stored windows;
``audio``
    the style features of the same 4 s windows of audio
    (``index/sonic_audio.py``, ``[n, FEATURE_DIM]``, version
    ``feature_version``): timbre, flux, rhythm and tonality, which the
    fingerprint embedding was trained to discard. The library's curves are
    computed from the audio when a generation is written and stored with it
    (``index/sonic_store.py``); live, each window's features go through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError

FloatArray = npt.NDArray[np.float32]
HEAD_INPUTS = ("windows", "audio")

_APPLY_ROWS = 65536
"""Windows put through the head at once (memory: rows x hidden floats)."""


@dataclass(frozen=True, kw_only=True, eq=False)
class SonicHead:
    """``x [n, D] -> normalise(relu(x W1 + b1) W2 + b2) [n, E]``.

    ``w1 [D, H]``, ``b1 [H]``, ``w2 [H, E]``, ``b2 [E]``; ``encoder_name`` is the
    fingerprint encoder whose windows it reads; ``meta`` how it was made.
    """

    encoder_name: str
    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: FloatArray
    meta: Mapping[str, Any] = field(default_factory=dict)
    inputs: str = "windows"
    feature_version: int = 0
    anchors: FloatArray | None = None
    """``[C, E]`` unit rows: the output is the soft nearness to each (see the module)."""
    anchor_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.inputs not in HEAD_INPUTS:
            raise ConfigError(
                f"sonic head: inputs must be one of {HEAD_INPUTS}, not {self.inputs!r}"
            )
        shapes = (self.w1.ndim, self.b1.ndim, self.w2.ndim, self.b2.ndim)
        if shapes != (2, 1, 2, 1):
            raise ConfigError("sonic head: w1, w2 must be matrices and b1, b2 vectors")
        if self.w1.shape[1] != self.b1.shape[0] or self.w2.shape[0] != self.w1.shape[1]:
            raise ConfigError(
                f"sonic head: layer shapes disagree: w1 {self.w1.shape}, b1 {self.b1.shape},"
                f" w2 {self.w2.shape}"
            )
        if self.w2.shape[1] != self.b2.shape[0]:
            raise ConfigError(f"sonic head: w2 {self.w2.shape} and b2 {self.b2.shape} disagree")
        if self.anchors is not None:
            if self.anchors.ndim != 2 or self.anchors.shape[1] != self.w2.shape[1]:
                raise ConfigError(
                    f"sonic head: anchors {self.anchors.shape} do not read w2's"
                    f" {self.w2.shape[1]} outputs"
                )
            if not (np.isfinite(self.anchor_scale) and self.anchor_scale > 0.0):
                raise ConfigError(
                    f"sonic head: anchor_scale must be positive, not {self.anchor_scale}"
                )
        for name, array in self.arrays().items():
            if not np.all(np.isfinite(array)):
                raise ConfigError(f"sonic head: {name} has non-finite values")

    @property
    def in_dim(self) -> int:
        return int(self.w1.shape[0])

    @property
    def dim(self) -> int:
        """Size of the style vectors: the anchors' count, or w2's outputs."""
        if self.anchors is not None:
            return int(self.anchors.shape[0])
        return int(self.w2.shape[1])

    @property
    def reads_audio(self) -> bool:
        """Whether the head reads the audio's style features rather than the windows."""
        return self.inputs == "audio"

    def applies_to(self, *, encoder_name: str, dim: int) -> bool:
        """Whether the head serves an index of this encoder: its windows go through it, or
        (an audio head) its audio does, features of the version this code computes."""
        if encoder_name != self.encoder_name:
            return False
        if self.reads_audio:
            from .sonic_audio import FEATURE_DIM, FEATURE_VERSION

            return self.in_dim == FEATURE_DIM and self.feature_version == FEATURE_VERSION
        return dim == self.in_dim

    def apply_audio(self, windows: npt.NDArray[np.floating]) -> FloatArray:
        """Audio windows ``[n, WINDOW_SAMPLES]`` → unit style vectors ``[n, E]`` (an audio
        head: their style features through it)."""
        from .sonic_audio import window_features

        if not self.reads_audio:
            raise ConfigError("sonic head reads fingerprint windows, not audio")
        return self.apply(window_features(windows))

    def apply(self, windows: npt.NDArray[np.floating]) -> FloatArray:
        """``windows [n, D]`` → unit style vectors ``[n, E]`` (row by row, so a curve's
        points are the points of its windows)."""
        x = np.asarray(windows)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ConfigError(f"sonic head reads [n, {self.in_dim}] windows, got {x.shape}")
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        for start in range(0, x.shape[0], _APPLY_ROWS):
            chunk = np.asarray(x[start : start + _APPLY_ROWS], dtype=np.float32)
            hidden = chunk @ self.w1
            hidden += self.b1
            np.maximum(hidden, 0.0, out=hidden)
            y = hidden @ self.w2
            y += self.b2
            y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
            if self.anchors is not None:
                # exp(s (cos - 1)) lies in (0, 1]: no overflow at any scale.
                y = np.exp(np.float32(self.anchor_scale) * (y @ self.anchors.T - 1.0))
                y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
            out[start : start + chunk.shape[0]] = y
        return out

    def arrays(self) -> dict[str, FloatArray]:
        """The weights (and the anchors, if any), by name: what a head's digest reads."""
        out = {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}
        if self.anchors is not None:
            out["anchors"] = self.anchors
            out["anchor_scale"] = np.array([self.anchor_scale], dtype=np.float32)
        return out
