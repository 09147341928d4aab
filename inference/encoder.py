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
