"""The trained encoder's network: log-mel front end, separable-conv body, projection.

``EncoderNet`` maps ``[n, 64000]`` float32 waveforms (4 s at 16 kHz) to
``[n, dim]`` unit vectors, like every Synesthete encoder. Training feeds it
cached, augmented mel power (``features_from_db`` then ``embed_features``);
the exported module runs the whole chain from the waveform.

The front end is handed in: training and export pass torchaudio's
``MelSpectrogram`` (see ``make_frontend``), which scripts into plain
``torch.stft`` plus a filterbank buffer, so the exported file needs no
torchaudio at run time. See docs/encoder.md for why the network looks the
way it does.
"""

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from synesthete.constants import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; stored in the model file's metadata."""

    dim: int = 128
    n_mels: int = 64
    n_fft: int = 512
    hop_length: int = 320
    f_min_hz: float = 100.0
    f_max_hz: float = 7800.0
    top_db: float = 80.0
    widths: tuple[int, ...] = (128, 192, 256, 256)
    strides: tuple[int, ...] = (2, 2, 2, 1)
    kernel: int = 5
    hidden: int = 512
    blocks: int = 1

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; keep equality and hashing exact.
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if len(self.widths) != len(self.strides) or not self.widths:
            raise ValueError("widths and strides must be non-empty and of equal length")
        if not 1 <= self.blocks <= 8:
            raise ValueError(f"blocks must be 1 to 8, got {self.blocks}")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["widths"] = list(self.widths)
        doc["strides"] = list(self.strides)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ModelConfig":
        """The inverse of ``to_dict``; unknown keys (older checkpoints) are an error."""
        return cls(**doc)

    @property
    def frames(self) -> int:
        """Spectrogram frames of one 4 s window (torch.stft, centred)."""
        return 64_000 // self.hop_length + 1


def make_frontend(config: ModelConfig) -> nn.Module:
    """torchaudio's power mel spectrogram for ``config`` (imports torchaudio)."""
    import torchaudio

    frontend: nn.Module = torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE_HZ,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        f_min=config.f_min_hz,
        f_max=config.f_max_hz,
        n_mels=config.n_mels,
        power=2.0,
    )
    return frontend


def mel_centres_hz(config: ModelConfig) -> torch.Tensor:
    """Centre frequency (Hz) of each mel band, HTK mel scale as torchaudio's default."""
    low = 2595.0 * torch.log10(torch.tensor(1.0 + config.f_min_hz / 700.0))
    high = 2595.0 * torch.log10(torch.tensor(1.0 + config.f_max_hz / 700.0))
    mels = torch.linspace(float(low), float(high), config.n_mels + 2)[1:-1]
    return 700.0 * (torch.pow(10.0, mels / 2595.0) - 1.0)


def pool_in_blocks(
    weights: dict[str, torch.Tensor], config: ModelConfig, blocks: int
) -> dict[str, torch.Tensor]:
    """A whole-window network's weights (``config.blocks == 1``) for ``blocks`` stretches.

    The head's first layer reads the whole-window pools first and the
    stretches' pools after them; the stretches' columns start at zero, so the
    new network starts out as exactly the old one and training learns what
    order adds (``train_encoder.py --init RUN/last.pt --blocks 4``).
    """
    if config.blocks != 1:
        raise ValueError(f"can only split a whole-window network, this one pools {config.blocks}")
    out = dict(weights)
    first = weights["head.0.weight"]
    channels = first.shape[1] // 2
    out["head.0.weight"] = torch.cat(
        [first, first.new_zeros(first.shape[0], 2 * channels * blocks)], dim=1
    )
    return out


class EncoderNet(nn.Module):
    """Waveform windows in, unit vectors out.

    The body is a stack of 1-D convolutions over time with the mel bands as
    channels: each layer is one dense GEMM, which is what a CPU does fastest
    (a 2-D separable stack of the same accuracy ran at a third of the views
    per second here). Mean and max pooling over time make the vector
    indifferent to where in the window an event falls (a live window is up to
    a quarter second off the stored ones). With ``blocks`` > 1 the head also
    reads the pools of that many consecutive stretches of the window (four:
    one second each), so the vector can keep the order of what it heard: two
    passages of one style with the same sounds in another order stay apart.
    """

    def __init__(self, config: ModelConfig, frontend: nn.Module) -> None:
        super().__init__()
        self.dim = config.dim
        self.top_db = config.top_db
        self.frontend = frontend
        layers: list[nn.Module] = []
        channels = config.n_mels
        for width, stride in zip(config.widths, config.strides, strict=True):
            layers += [
                nn.Conv1d(
                    channels, width, config.kernel, stride=stride,
                    padding=config.kernel // 2, bias=False,
                ),
                nn.BatchNorm1d(width),
                nn.ReLU(),
            ]  # fmt: skip
            channels = width
        self.body = nn.Sequential(*layers)
        self.blocks = config.blocks
        pools = 1 + (config.blocks if config.blocks > 1 else 0)  # whole window, then stretches
        self.head = nn.Sequential(
            nn.Linear(2 * channels * pools, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.dim),
        )
        # Training leaves this the identity; export may put a fitted Projection here.
        self.post: nn.Module = nn.Identity()

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``[n, samples]`` → ``[n, n_mels, frames]`` log-mel, 0 dB at each window's peak."""
        power = self.frontend(waveforms)
        return self.features_from_db(10.0 * torch.log10(torch.clamp(power, min=1e-10)))

    def features_from_db(self, db: torch.Tensor) -> torch.Tensor:
        """``[n, n_mels, frames]`` mel power in dB → the network's input, roughly [-1, 1].

        Each window's peak goes to 0 dB (gain does not matter) with an
        ``top_db`` floor (silence stays finite). Training feeds cached and
        augmented mel power through here; the waveform path does the same.
        """
        peak = torch.amax(db, dim=(1, 2), keepdim=True)
        db = torch.clamp(db - peak, min=-self.top_db)
        return db / (self.top_db / 2.0) + 1.0

    def head_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """``[n, n_mels, frames]`` → ``[n, dim]``, the head's outputs before normalisation."""
        x = self.body(features)
        pooled = torch.cat([torch.mean(x, dim=2), torch.amax(x, dim=2)], dim=1)
        if self.blocks > 1:
            means = functional.adaptive_avg_pool1d(x, self.blocks).flatten(1)
            peaks = functional.adaptive_max_pool1d(x, self.blocks).flatten(1)
            pooled = torch.cat([pooled, means, peaks], dim=1)
        out: torch.Tensor = self.head(pooled)
        return out

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """``[n, n_mels, frames]`` → ``[n, dim]`` unit vectors."""
        vectors: torch.Tensor = self.post(functional.normalize(self.head_outputs(features), dim=1))
        return vectors

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.features(waveforms))


class Projection(nn.Module):
    """A fixed linear map of the unit embeddings, back to unit length: ``unit((v - c) W)``.

    ``scripts/fit_projection.py`` fits ``c`` and the square ``W`` in closed form by
    distortion discriminant analysis (Burges, Platt and Jana, 2003): directions in which
    clean windows differ much from each other and little from their own degraded views
    get the weight. ``scripts/export_encoder.py --projection`` puts it after the head, so
    the index and the live windows go through the same map.
    """

    center: torch.Tensor
    matrix: torch.Tensor

    def __init__(self, center: torch.Tensor, matrix: torch.Tensor) -> None:
        super().__init__()
        if center.ndim != 1 or matrix.shape != (center.shape[0], center.shape[0]):
            raise ValueError(
                f"projection needs a [d] centre and a [d, d] matrix, got"
                f" {tuple(center.shape)} and {tuple(matrix.shape)}"
            )
        self.register_buffer("center", center.float())
        self.register_buffer("matrix", matrix.float())

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return functional.normalize((vectors - self.center) @ self.matrix, dim=1)
