"""Log-mel front end in plain torch ops, so scripted models need no torchaudio at run time."""

# No `from __future__ import annotations` here: TorchScript reads the class-level
# buffer annotations at scripting time and cannot resolve them as strings.

import math

import numpy as np
import numpy.typing as npt
import torch


def hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    *, sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float, f_max_hz: float
) -> npt.NDArray[np.float32]:
    """Triangular HTK-mel filters, ``[n_mels, n_fft // 2 + 1]``, area-normalised (Slaney)."""
    n_freqs = n_fft // 2 + 1
    fft_hz = np.linspace(0.0, sample_rate_hz / 2.0, n_freqs)
    edges_hz = mel_to_hz(
        np.linspace(hz_to_mel(np.array(f_min_hz)), hz_to_mel(np.array(f_max_hz)), n_mels + 2)
    )
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= 2.0 / (upper - lower)
    return filters.astype(np.float32)


class LogMel(torch.nn.Module):
    """``[n, samples]`` waveform → ``[n, n_mels, frames]`` natural-log mel power."""

    window: torch.Tensor
    fbank: torch.Tensor

    def __init__(
        self,
        *,
        sample_rate_hz: int,
        n_fft: int = 1024,
        hop_samples: int = 256,
        n_mels: int = 64,
        f_min_hz: float = 40.0,
        f_max_hz: float | None = None,
        floor: float = 1e-10,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_samples = hop_samples
        self.floor = floor
        top_hz = f_max_hz if f_max_hz is not None else sample_rate_hz / 2.0
        self.register_buffer("window", torch.hann_window(n_fft), persistent=True)
        fbank = mel_filterbank(
            sample_rate_hz=sample_rate_hz,
            n_fft=n_fft,
            n_mels=n_mels,
            f_min_hz=f_min_hz,
            f_max_hz=top_hz,
        )
        self.register_buffer("fbank", torch.from_numpy(fbank), persistent=True)
        self.log_floor = math.log(floor)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_samples,
            win_length=self.n_fft,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.fbank, power)
        return torch.log(mel + self.floor)
