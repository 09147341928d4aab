"""The trained encoder's network: log-mel front end, separable-conv body, projection.

``EncoderNet`` maps ``[n, 64000]`` float32 waveforms (4 s at 16 kHz) to
``[n, dim]`` unit vectors, like every Synesthete encoder. Training splits it
in two (``features`` then ``embed_features``) so that spectrogram-domain
augmentations can run in between; the exported module runs both.

The front end is handed in: training and export pass torchaudio's
``MelSpectrogram`` (see ``make_frontend``), which scripts into plain
``torch.stft`` plus a filterbank buffer, so the exported file needs no
torchaudio at run time. See docs/encoder.md for why the network looks the
way it does.
"""

from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from synesthete.constants import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; stored in the model file's metadata."""

    dim: int = 128
    width: int = 32
    n_mels: int = 64
    n_fft: int = 512
    hop_length: int = 320
    f_min_hz: float = 100.0
    f_max_hz: float = 7800.0
    top_db: float = 80.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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


class SeparableBlock(nn.Module):
    """Depthwise 3×3 then pointwise 1×1, each with batch norm; residual when shapes agree."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            channels_in, channels_in, 3, stride=stride, padding=1, groups=channels_in, bias=False
        )
        self.norm1 = nn.BatchNorm2d(channels_in)
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = functional.relu(self.norm1(self.depthwise(x)))
        y = self.norm2(self.pointwise(y))
        if self.residual:
            y = y + x
        return functional.relu(y)


class EncoderNet(nn.Module):
    """Waveform windows in, unit vectors out."""

    def __init__(self, config: ModelConfig, frontend: nn.Module) -> None:
        super().__init__()
        self.dim = config.dim
        self.top_db = config.top_db
        self.frontend = frontend
        w = config.width
        widths = [w, 2 * w, 4 * w, 6 * w, 8 * w]
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        for c_in, c_out in pairwise(widths):
            blocks.append(SeparableBlock(c_in, c_out, stride=2))
            blocks.append(SeparableBlock(c_out, c_out, stride=1))
        self.body = nn.Sequential(*blocks)
        pooled = 2 * widths[-1]
        self.head = nn.Sequential(
            nn.Linear(pooled, 2 * config.dim), nn.ReLU(), nn.Linear(2 * config.dim, config.dim)
        )

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``[n, samples]`` → ``[n, n_mels, frames]`` log-mel, 0 dB at each window's peak."""
        power = self.frontend(waveforms)
        db = 10.0 * torch.log10(torch.clamp(power, min=1e-10))
        peak = torch.amax(db, dim=(1, 2), keepdim=True)
        db = torch.clamp(db - peak, min=-self.top_db)
        return db / (self.top_db / 2.0) + 1.0  # roughly [-1, 1]

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """``[n, n_mels, frames]`` → ``[n, dim]`` unit vectors."""
        x = self.body(self.stem(features.unsqueeze(1)))
        x = torch.mean(x, dim=2)  # over frequency: [n, c, t]
        pooled = torch.cat([torch.mean(x, dim=2), torch.amax(x, dim=2)], dim=1)
        return functional.normalize(self.head(pooled), dim=1)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.features(waveforms))
