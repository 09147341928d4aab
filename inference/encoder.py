"""The Encoder protocol every embedding model satisfies."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@runtime_checkable
class Encoder(Protocol):
    """Batch of 4 s mono windows at ``sample_rate_hz`` → unit vectors.

    ``embed`` takes ``[n, window_samples]`` float32 and returns ``[n, dim]``
    float32 rows of L2 norm 1. It must be deterministic and must not keep
    state between calls, so index and live embeddings agree exactly.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def sample_rate_hz(self) -> int: ...

    @property
    def window_samples(self) -> int: ...

    def embed(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


@runtime_checkable
class SegmentEncoder(Protocol):
    """An encoder that can also embed evenly spaced windows of one stretch of audio with its
    front end run once over the stretch (``TorchScriptEncoder`` with a trained model).

    ``embed_segment`` must give ``embed``'s vectors for the same windows (within 1e-4);
    ``supports_segments`` says whether it can at a given hop.
    """

    def supports_segments(self, hop_samples: int) -> bool: ...

    def embed_segment(
        self, audio: npt.NDArray[np.float32], *, hop_samples: int, n_windows: int
    ) -> npt.NDArray[np.float32]: ...
