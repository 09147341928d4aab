"""The untrained baseline encoder: pooled log-mel statistics and a seeded projection.

It exists so the whole pipeline runs before any model is trained, and as the
floor a trained encoder must beat. The descriptor of one 4 s window:

The log-mel is floored 80 dB below each window's peak, so a gain change
shifts every value equally and the level removal makes it vanish.

* spectral envelope: time-mean of the log-mel, level removed (gain invariant);
* spectral variability: time-std of the log-mel per band;
* onset activity: time-mean of |Δ log-mel| per band;
* coarse rhythm/arrangement: 16 bands × 4 one-second blocks, band means removed.

Each group is L2-normalised and weighted, so no group dominates by scale;
the concatenation goes through a fixed orthonormal projection (seeded) to
``dim`` and is L2-normalised. Pooled statistics shift little when the window
moves by a fraction of the index hop, which is what lets a live window match
index windows it is not aligned with.
"""

# No `from __future__ import annotations` here: TorchScript reads the class-level
# buffer annotations at scripting time and cannot resolve them as strings.

import numpy as np
import torch

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.inference.frontend import LogMel

BASELINE_NAME = "baseline-v1"
BASELINE_SEED = 20261122


def _normalise(x: torch.Tensor) -> torch.Tensor:
    norm: torch.Tensor = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / (norm + 1e-8)


def _soft_normalise(x: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """Scale to unit norm, but never amplify a group whose norm is below ``floor``.

    A plain L2 normalisation would blow a near-constant group (steady rhythm,
    flat spectrum) up to the same weight as an informative one, noise included.
    """
    norm: torch.Tensor = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.clamp(norm, min=floor)


class BaselineEncoder(torch.nn.Module):
    """``[n, 64000]`` float32 waveform at 16 kHz → ``[n, dim]`` unit vectors."""

    projection: torch.Tensor
    group_weights: torch.Tensor
    group_floors: torch.Tensor
    silence_bias: torch.Tensor

    def __init__(
        self,
        *,
        dim: int = 128,
        n_mels: int = 64,
        rhythm_bands: int = 16,
        rhythm_blocks: int = 4,
        seed: int = BASELINE_SEED,
    ) -> None:
        super().__init__()
        if n_mels % rhythm_bands != 0:
            raise ValueError("n_mels must be a multiple of rhythm_bands")
        self.frontend = LogMel(sample_rate_hz=SAMPLE_RATE_HZ, n_mels=n_mels)
        self.n_mels = n_mels
        self.rhythm_bands = rhythm_bands
        self.rhythm_blocks = rhythm_blocks
        self.dim = dim
        # +1: a small constant component, so digital silence (every group
        # zero) still maps to a unit vector instead of the zero vector.
        feature_dim = 3 * n_mels + rhythm_bands * rhythm_blocks + 1
        generator = np.random.default_rng(seed)
        gaussian = generator.standard_normal((feature_dim, max(dim, feature_dim)))
        q, _ = np.linalg.qr(gaussian)
        self.register_buffer("projection", torch.from_numpy(q[:, :dim].astype(np.float32)))
        self.register_buffer(
            "group_weights", torch.tensor([1.0, 0.7, 0.7, 0.8], dtype=torch.float32)
        )
        # Typical norms of each group on music are several times these floors.
        self.register_buffer(
            "group_floors", torch.tensor([5.0, 3.0, 1.0, 3.0], dtype=torch.float32)
        )
        self.register_buffer("silence_bias", torch.tensor([[0.05]], dtype=torch.float32))
        self.dynamic_range_nats = 80.0 / 10.0 * 2.302585  # 80 dB of power

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        logmel = self.frontend(waveform)  # [n, mels, frames]
        peak = logmel.amax(dim=(1, 2), keepdim=True)
        logmel = torch.maximum(logmel, peak - self.dynamic_range_nats)
        logmel = logmel - logmel.mean(dim=(1, 2), keepdim=True)
        envelope = logmel.mean(dim=2)
        envelope = envelope - envelope.mean(dim=1, keepdim=True)
        spread = logmel.std(dim=2)
        onsets = (logmel[:, :, 1:] - logmel[:, :, :-1]).abs().mean(dim=2)
        n, mels, frames = logmel.shape
        usable = frames - frames % self.rhythm_blocks
        banded = logmel[:, :, :usable].reshape(
            n,
            self.rhythm_bands,
            mels // self.rhythm_bands,
            self.rhythm_blocks,
            usable // self.rhythm_blocks,
        )
        rhythm = banded.mean(dim=(2, 4))  # [n, bands, blocks]
        rhythm = (rhythm - rhythm.mean(dim=2, keepdim=True)).reshape(n, -1)
        w, floors = self.group_weights, self.group_floors
        features = torch.cat(
            [
                w[0] * _soft_normalise(envelope, floors[0]),
                w[1] * _soft_normalise(spread, floors[1]),
                w[2] * _soft_normalise(onsets, floors[2]),
                w[3] * _soft_normalise(rhythm, floors[3]),
                self.silence_bias.expand(n, 1),
            ],
            dim=1,
        )
        return _normalise(torch.matmul(features, self.projection))


def baseline_example_input(*, n: int = 2) -> torch.Tensor:
    """A fixed ``[n, WINDOW_SAMPLES]`` input used when scripting and in golden tests."""
    generator = torch.Generator().manual_seed(7)
    return 0.1 * torch.randn(n, WINDOW_SAMPLES, generator=generator)
