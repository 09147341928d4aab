"""Saving and loading TorchScript encoders with their metadata.

A model file is a scripted ``nn.Module`` mapping ``[n, window_samples]``
float32 waveforms to ``[n, dim]`` unit vectors, with a JSON document in the
``synesthete.json`` extra file: name, sample rate, window, dim, provenance and
the matcher calibration fitted for that encoder's distance scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_S, WINDOW_SAMPLES
from synesthete.errors import AudioFormatError, ModelError
from synesthete.inference.config import EncoderConfig

METADATA_FILE = "synesthete.json"
FORMAT_VERSION = 1


def save_scripted(
    module: torch.nn.Module, path: Path, *, metadata: dict[str, Any]
) -> torch.jit.ScriptModule:
    """Script ``module`` and write it with ``metadata`` (merged over the signal contract)."""
    module = module.eval()
    scripted = torch.jit.script(module)
    doc = {
        "format": FORMAT_VERSION,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "window_s": WINDOW_S,
        "window_samples": WINDOW_SAMPLES,
        **metadata,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(doc, indent=2)})
    tmp.replace(path)
    return scripted


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata document of a model file, without running it."""
    extra = {METADATA_FILE: ""}
    try:
        torch.jit.load(  # type: ignore[no-untyped-call]
            str(path), map_location="cpu", _extra_files=extra
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise ModelError(f"{path}: not a loadable TorchScript model ({_first_line(err)})") from err
    return _parse_metadata(path, extra[METADATA_FILE])


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _parse_metadata(path: Path, raw: str | bytes) -> dict[str, Any]:
    if not raw:
        raise ModelError(f"{path}: model has no {METADATA_FILE} metadata")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: metadata is not valid JSON ({err})") from err
    if not isinstance(doc, dict):
        raise ModelError(f"{path}: metadata must be a JSON object")
    for key in ("name", "dim", "sample_rate_hz", "window_samples"):
        if key not in doc:
            raise ModelError(f"{path}: metadata lacks {key!r}")
    if doc["sample_rate_hz"] != SAMPLE_RATE_HZ or doc["window_samples"] != WINDOW_SAMPLES:
        raise ModelError(
            f"{path}: model expects {doc['window_samples']} samples at {doc['sample_rate_hz']} Hz,"
            f" this build uses {WINDOW_SAMPLES} at {SAMPLE_RATE_HZ} Hz"
        )
    return doc


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but torch sees no CUDA device")
    return torch.device(requested)


class TorchScriptEncoder:
    """An ``Encoder`` backed by a scripted model file; batches windows, CUDA when present."""

    def __init__(self, *, config: EncoderConfig | None = None) -> None:
        self.config = config if config is not None else EncoderConfig()
        path = self.config.resolved_model_path
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        self.device = pick_device(self.config.device)
        extra = {METADATA_FILE: ""}
        try:
            self._module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(path), map_location=self.device, _extra_files=extra
            )
        except (RuntimeError, ValueError, OSError) as err:
            reason = _first_line(err)
            raise ModelError(f"{path}: not a loadable TorchScript model ({reason})") from err
        self._module.eval()
        self.metadata = _parse_metadata(path, extra[METADATA_FILE])
        self.path = path

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

    @property
    def sample_rate_hz(self) -> int:
        return int(self.metadata["sample_rate_hz"])

    @property
    def window_samples(self) -> int:
        return int(self.metadata["window_samples"])

    @property
    def calibration(self) -> dict[str, float] | None:
        value = self.metadata.get("calibration")
        return dict(value) if isinstance(value, dict) else None

    def warm_up(self, *, runs: int = 3) -> None:
        """Run a few batches of one window: TorchScript profiles and optimises its
        graph on the first calls, which would otherwise land on the first live window."""
        silence = np.zeros((1, self.window_samples), dtype=np.float32)
        for _ in range(runs):
            self.embed(silence)

    def embed(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``[n, window_samples]`` float32 → ``[n, dim]`` float32 unit vectors."""
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise AudioFormatError(
                f"encoder expects [n, {self.window_samples}] windows, got {windows.shape}"
            )
        if windows.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not np.isfinite(windows).all():
            raise AudioFormatError("encoder input contains NaN or inf samples")
        batch = self.config.batch_windows
        out = np.empty((windows.shape[0], self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, windows.shape[0], batch):
                chunk = torch.from_numpy(
                    np.ascontiguousarray(windows[start : start + batch], dtype=np.float32)
                ).to(self.device)
                vectors = self._module(chunk).float()
                out[start : start + batch] = vectors.cpu().numpy()
        # Guard the unit-norm contract against models that drift from it.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out
