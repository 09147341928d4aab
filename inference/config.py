"""Encoder settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synesthete.errors import ConfigError

DEFAULT_MODEL_NAME = "encoder-v3.pt"


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(__file__).resolve().parent / "models" / DEFAULT_MODEL_NAME


def packaged_model_path(name: str) -> Path | None:
    """The packaged model file called ``name`` (``baseline-v1``), if this version ships it.

    An index remembers its encoder's name; one built with an earlier default
    keeps working without ``--model`` while that model is still shipped.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = Path(__file__).resolve().parent / "models" / f"{name}.pt"
    return path if path.is_file() else None


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """Which TorchScript file to load, where to run it, and how to batch.

    ``device`` is ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    ``threads`` caps torch's intra-op threads (``None``: torch's default).
    """

    model_path: Path | None = None
    device: str = "auto"
    batch_windows: int = 64
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.device not in {"auto", "cpu", "cuda"} and not self.device.startswith("cuda:"):
            raise ConfigError(f"encoder device must be auto, cpu or cuda, got {self.device!r}")
        if self.batch_windows < 1:
            raise ConfigError(f"batch_windows must be >= 1, got {self.batch_windows}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")

    @property
    def resolved_model_path(self) -> Path:
        return self.model_path if self.model_path is not None else default_model_path()
