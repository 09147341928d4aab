"""Wiring: open an index and an encoder once, then make a Recognizer per stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from synesthete.constants import DEFAULT_SOUNDS_LIKE_DISTANCE
from synesthete.errors import LibraryError
from synesthete.index.config import Calibration, MatcherConfig, RecognizerConfig
from synesthete.index.protocols import CandidateSource
from synesthete.index.recognizer import Recognizer
from synesthete.index.similar import check_distance
from synesthete.index.sonic_map import MapPlacer
from synesthete.index.store import Library
from synesthete.inference.config import EncoderConfig, packaged_model_path
from synesthete.inference.torchscript import TorchScriptEncoder


@dataclass
class Engine:
    """Shared, read-only parts of recognition: one encoder, one library, its candidate
    source (Annoy or Milvus), and the settings every stream's Recognizer starts from."""

    encoder: TorchScriptEncoder
    library: Library
    candidates: CandidateSource
    config: RecognizerConfig

    @property
    def matcher_config(self) -> MatcherConfig:
        return self.config.matcher

    def recognizer(
        self,
        *,
        stream: str,
        input_rate_hz: int,
        keep_timings: bool = False,
        early_windows: bool = False,
    ) -> Recognizer:
        return Recognizer(
            stream=stream,
            input_rate_hz=input_rate_hz,
            encoder=self.encoder,
            candidates=self.candidates,
            library=self.library,
            config=replace(self.config, keep_timings=keep_timings, early_windows=early_windows),
            summaries=self.library.summaries(),
            map_placer=self.map_placer(),
        )

    def map_placer(self) -> MapPlacer | None:
        """The stored sonic map's placer, when the index has one for its "sounds like" space."""
        stored = self.library.stored_sonic()
        if stored is None or stored.placer is None:
            return None
        if stored.placer.dim != self.library.summaries().dim:
            return None
        return stored.placer

    def close(self) -> None:
        self.library.close()


def open_engine(
    *,
    index_dir: Path,
    encoder_config: EncoderConfig | None = None,
    live_hop_s: float | None = None,
    on_threshold: float | None = None,
    resample_quality: str = "HQ",
    sounds_like_distance: str = DEFAULT_SOUNDS_LIKE_DISTANCE,
) -> Engine:
    """Open the index and the encoder it was built with; check they agree.

    The "sounds like" summaries for ``sounds_like_distance`` are built here,
    so the first live update does not pay for them.
    """
    distance = check_distance(sounds_like_distance)
    library = Library.open(index_dir)
    encoder_config = encoder_config or EncoderConfig()
    if encoder_config.model_path is None:
        # No --model: the packaged model the index was built with, if still shipped.
        packaged = packaged_model_path(library.encoder_name)
        if packaged is not None:
            encoder_config = replace(encoder_config, model_path=packaged)
    encoder = TorchScriptEncoder(config=encoder_config)
    encoder.warm_up()
    if library.encoder_name != encoder.name or library.dim != encoder.dim:
        library.close()
        raise LibraryError(
            f"index {index_dir} was built with encoder {library.encoder_name!r} (dim {library.dim})"
            f" but the model is {encoder.name!r} (dim {encoder.dim}); rebuild the index or pass"
            " the matching --model"
        )
    config = matcher_config_for(encoder.calibration, index_hop_s=library.index_hop_s)
    if live_hop_s is not None:
        config = replace(config, live_hop_s=live_hop_s)
    if on_threshold is not None:
        config = replace(
            config, on_threshold=on_threshold, off_threshold=min(config.off_threshold, on_threshold)
        )
    library.summaries().prepare([distance])
    return Engine(
        encoder=encoder,
        library=library,
        candidates=library.candidates(),
        config=RecognizerConfig(
            matcher=config, resample_quality=resample_quality, sounds_like_distance=distance
        ),
    )


def matcher_config_for(
    calibration: Mapping[str, float] | None, *, index_hop_s: float
) -> MatcherConfig:
    """The matcher's settings for a model: its calibration JSON may carry, besides the
    confidence model, its own distances (``max_frechet``, ``path_max_distance``,
    ``first_max_frechet``, ``verify_max_distance``), ``distance_scale`` and
    ``verify_min_z`` (``null`` turns the peak check off); every encoder has its own
    scale."""
    fitted = dict(calibration or {})
    guard = fitted.pop("max_frechet", None)
    path_distance = fitted.pop("path_max_distance", None)
    first_guard = fitted.pop("first_max_frechet", None)
    scale = fitted.pop("distance_scale", None)
    verify_set = "verify_min_z" in fitted
    verify_z = fitted.pop("verify_min_z", None)
    verify_distance = fitted.pop("verify_max_distance", None)
    config = MatcherConfig(
        index_hop_s=index_hop_s,
        calibration=Calibration.from_dict(fitted) if fitted else Calibration(),
    )
    if guard is not None:
        config = replace(config, max_frechet=float(guard))
    if path_distance is not None:
        config = replace(config, path_max_distance=float(path_distance))
    if first_guard is not None:
        config = replace(config, first_max_frechet=float(first_guard))
    if scale is not None:
        config = replace(config, distance_scale=float(scale))
    if verify_set:
        config = replace(config, verify_min_z=None if verify_z is None else float(verify_z))
    if verify_distance is not None:
        config = replace(config, verify_max_distance=float(verify_distance))
    return config
