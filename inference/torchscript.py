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
HALF = "float16"
"""``parameters`` in a model's metadata when its weights are stored as float16."""
SEGMENT_ATOL = 1e-4
"""How far the one-front-end-per-segment path may move a vector from the waveform path's."""
_EDGE_SAMPLES_PER_FFT = 5 / 4
"""An edge frame is computed on the window's first (last) n_fft * 5/4 samples: enough for its
reflect padding and more than two hops of the front end, so the frame sits where it does in
the window."""


def save_scripted(
    module: torch.nn.Module,
    path: Path,
    *,
    metadata: dict[str, Any],
    half_parameters: bool = False,
) -> torch.jit.ScriptModule:
    """Script ``module`` and write it with ``metadata`` (merged over the signal contract).

    With ``half_parameters`` the learned weights are stored as float16 (half the file;
    buffers such as the filterbank and a projection stay float32) and the loader turns
    them back to float32: the model then computes in float32 with weights rounded once,
    the same for the index and the live windows.
    """
    module = module.eval()
    scripted = torch.jit.script(module)
    doc = {
        "format": FORMAT_VERSION,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "window_s": WINDOW_S,
        "window_samples": WINDOW_SAMPLES,
        **metadata,
    }
    if half_parameters:
        doc["parameters"] = HALF
        for parameter in scripted.parameters():
            parameter.data = parameter.data.half()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(doc, indent=2)})
    tmp.replace(path)
    return scripted.float()


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
        if self.metadata.get("parameters") == HALF:
            self._module.float()  # stored as float16, computed in float32
        self.path = path
        self._segments_ok: bool | None = None

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

    def supports_segments(self, hop_samples: int) -> bool:
        """Whether ``embed_segment`` may be used at this window hop.

        It needs a model with the trained encoder's methods (``frontend``,
        ``features_from_db``, ``embed_features``; see inference/model.py), a hop
        that is a whole number of front-end hops, and it must give the waveform
        path's vectors (checked once per encoder on a seeded probe, within
        ``SEGMENT_ATOL``). Any other model embeds window by window.
        """
        shape = self._frontend_shape()
        if shape is None or hop_samples % shape[1] != 0:
            return False
        if self._segments_ok is None:
            self._segments_ok = self._probe_segments(shape[1])
        return self._segments_ok

    def embed_segment(
        self, audio: npt.NDArray[np.float32], *, hop_samples: int, n_windows: int
    ) -> npt.NDArray[np.float32]:
        """``[n_windows, dim]`` vectors of the windows starting at ``0, hop, 2 hop, ...`` of
        ``audio`` (``[(n_windows - 1) * hop + window_samples]`` or longer), with the
        front end run once over the segment instead of once per window.

        A window's spectrogram frames are the segment's frames where they lie inside the
        window; its first and last frame (reflect-padded at the window's own edges) are
        computed from the window's edges. Only call when ``supports_segments(hop)``.
        """
        shape = self._frontend_shape()
        if shape is None:
            raise ModelError(f"encoder {self.name!r} cannot embed segments")
        n_fft, fe_hop = shape
        need = (n_windows - 1) * hop_samples + self.window_samples
        if audio.ndim != 1 or audio.shape[0] < need or n_windows < 1:
            raise AudioFormatError(f"segment of {audio.shape} holds fewer than {n_windows} windows")
        if not np.isfinite(audio[:need]).all():
            raise AudioFormatError("encoder input contains NaN or inf samples")
        frames = self.window_samples // fe_hop + 1
        step = hop_samples // fe_hop
        edge = int(n_fft * _EDGE_SAMPLES_PER_FFT)
        starts = np.arange(n_windows) * hop_samples
        module = self._module
        out = np.empty((n_windows, self.dim), dtype=np.float32)
        with torch.inference_mode():
            segment = torch.from_numpy(np.ascontiguousarray(audio[:need], dtype=np.float32))
            power = module.frontend(segment[None, :].to(self.device))[0]  # [mels, F]
            heads = np.stack([audio[s : s + edge] for s in starts])
            tails = np.stack(
                [audio[s + self.window_samples - edge : s + self.window_samples] for s in starts]
            )
            first = module.frontend(torch.from_numpy(heads).to(self.device))[:, :, 0]
            last = module.frontend(torch.from_numpy(tails).to(self.device))[:, :, -1]
            index = torch.from_numpy(
                (np.arange(n_windows)[:, None] * step + np.arange(frames)[None, :]).astype(np.int64)
            ).to(self.device)
            batch = self.config.batch_windows
            for lo in range(0, n_windows, batch):
                hi = min(lo + batch, n_windows)
                windows_power = power[:, index[lo:hi]].permute(1, 0, 2).clone()  # [b, mels, T]
                windows_power[:, :, 0] = first[lo:hi]
                windows_power[:, :, -1] = last[lo:hi]
                db = 10.0 * torch.log10(torch.clamp(windows_power, min=1e-10))
                vectors = module.embed_features(module.features_from_db(db)).float()
                out[lo:hi] = vectors.cpu().numpy()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out

    def _frontend_shape(self) -> tuple[int, int] | None:
        """(n_fft, hop) of a trained encoder's front end, or ``None`` for other models."""
        model = self.metadata.get("model")
        if not isinstance(model, dict) or self.metadata.get("kind") != "trained":
            return None
        try:
            n_fft, hop = int(model["n_fft"]), int(model["hop_length"])
        except (KeyError, TypeError, ValueError):
            return None
        for method in ("frontend", "features_from_db", "embed_features"):
            if not hasattr(self._module, method):
                return None
        if n_fft < 2 or hop < 1 or self.window_samples % hop != 0:
            return None
        return n_fft, hop

    def _probe_segments(self, fe_hop: int) -> bool:
        """Do three windows of seeded noise-and-tones agree between the two paths?"""
        rng = np.random.default_rng(20261207)
        hop = fe_hop * max(1, 8000 // fe_hop)
        n = 2 * hop + self.window_samples
        t = np.arange(n) / self.sample_rate_hz
        audio = (
            0.3 * np.sin(2 * np.pi * 440.0 * t * (1.0 + 0.1 * t)) + 0.05 * rng.standard_normal(n)
        ).astype(np.float32)
        windows = np.stack([audio[k * hop : k * hop + self.window_samples] for k in range(3)])
        try:
            fast = self.embed_segment(audio, hop_samples=hop, n_windows=3)
        except (RuntimeError, ValueError):
            return False
        return bool(np.abs(fast - self.embed(windows)).max() <= SEGMENT_ATOL)

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
