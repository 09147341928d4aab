"""``similar``: the library tracks that sound most like a track or an audio file.

The query is a track of the index (by id or by its path) or any audio file,
embedded on the fly through the index's encoder at the index hop. The query
track and every track with the same content are left out of the answer.
Distances are those of the live "sounds like" (``index/similar.py``), over the
whole query curve.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError, LibraryError
from synesthete.events import TrackInfo
from synesthete.index.similar import check_distance
from synesthete.index.store import Library, TrackRecord, sha256_file
from synesthete.inference.config import EncoderConfig


@dataclass(frozen=True, kw_only=True)
class SimilarQuery:
    """A resolved query: its curve ``[n, D]`` at ``hop_s``, what it is, the tracks to leave out."""

    label: str
    curve: npt.NDArray[np.float32]
    hop_s: float
    track: TrackInfo | None
    exclude_track_ids: tuple[int, ...]

    def to_payload(self) -> dict[str, Any]:
        return {
            "query": self.label,
            "track": None if self.track is None else self.track.to_payload(),
            "excluded_ids": list(self.exclude_track_ids),
            "windows": int(self.curve.shape[0]),
        }


def _indexed_by_path(library: Library, target: str) -> TrackRecord | None:
    records = library.records()
    wanted = os.path.normpath(Path(target).expanduser().absolute())
    for record in records:
        if record.path == wanted:
            return record
    if not Path(target).exists():
        return None
    real = os.path.realpath(target)
    for record in records:
        if os.path.realpath(record.path) == real:
            return record
    return None


def resolve_query(
    library: Library,
    target: str,
    *,
    encoder_config: EncoderConfig | None = None,
) -> SimilarQuery:
    """A track id, an indexed track's path, or an audio file -> ``SimilarQuery``.

    ``LibraryError`` for an id the index lacks or a path that is neither
    indexed nor a file; ``AudioFormatError`` for a file that does not decode
    or is shorter than one window.
    """
    record: TrackRecord | None = None
    if target.strip().isdigit():
        try:
            record = library.record(int(target))
        except LibraryError:
            if not Path(target).is_file():
                raise
    if record is None:
        record = _indexed_by_path(library, target)
    if record is not None:
        curve = np.asarray(library.curve(record.id), dtype=np.float32)
        hop_s = library.index_hop_s
        style = library.sonic_curve(record.id)
        if library.summaries().audio_head is not None and style is not None:
            curve, hop_s = np.asarray(style, dtype=np.float32), _style_hop_s(library)
        return SimilarQuery(
            label=target,
            curve=curve,
            hop_s=hop_s,
            track=record.to_info(),
            exclude_track_ids=(record.id,),
        )
    path = Path(target)
    if not path.is_file():
        raise LibraryError(f"{target}: not a track id or indexed path, and no such file")
    return _file_query(library, path, label=target, encoder_config=encoder_config)


def _file_query(
    library: Library, path: Path, *, label: str, encoder_config: EncoderConfig | None
) -> SimilarQuery:
    from synesthete.errors import AudioFormatError
    from synesthete.index.builder import embed_file
    from synesthete.inference.torchscript import TorchScriptEncoder

    encoder = TorchScriptEncoder(config=encoder_config)
    if library.encoder_name != encoder.name or library.dim != encoder.dim:
        raise LibraryError(
            f"index {library.index_dir} was built with encoder {library.encoder_name!r} "
            f"(dim {library.dim}) but the model is {encoder.name!r} (dim {encoder.dim}); "
            "pass the matching --model"
        )
    curve, duration_s = embed_file(path, encoder=encoder, index_hop_s=library.index_hop_s)
    if curve.shape[0] == 0:
        raise AudioFormatError(f"{path}: too short ({duration_s:.2f} s; one 4 s window needed)")
    try:
        content_hash = sha256_file(path)
    except OSError as err:
        raise AudioFormatError(f"{path}: cannot read: {err.strerror or err}") from None
    twins = tuple(r.id for r in library.records() if r.content_hash == content_hash)
    head = library.summaries().audio_head
    if head is not None:
        # An audio similarity head: the file's style curve, as the index stores its tracks'.
        from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
        from synesthete.index.decode import load_mono
        from synesthete.stream.windowing import window_audio

        audio = load_mono(path, sample_rate_hz=SAMPLE_RATE_HZ)
        hop_s = _style_hop_s(library)
        windows = window_audio(
            audio, window_samples=WINDOW_SAMPLES, hop_samples=round(hop_s * SAMPLE_RATE_HZ)
        )
        return SimilarQuery(
            label=label,
            curve=head.apply_audio(windows),
            hop_s=hop_s,
            track=None,
            exclude_track_ids=twins,
        )
    return SimilarQuery(
        label=label, curve=curve, hop_s=library.index_hop_s, track=None, exclude_track_ids=twins
    )


def _style_hop_s(library: Library) -> float:
    stored = library.stored_sonic()
    return stored.hop_s if stored is not None else library.index_hop_s


def similar_tracks(
    library: Library, query: SimilarQuery, *, k: int, distance: str
) -> list[tuple[TrackInfo, float]]:
    """Up to ``k`` (track, distance), nearest first, without the query and its duplicates."""
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    nearest = library.summaries().nearest(
        query.curve,
        k=k,
        exclude_track_ids=query.exclude_track_ids,
        distance=check_distance(distance),
        query_hop_s=query.hop_s,
    )
    return [(library.info(track_id), dist) for track_id, dist in nearest]


def write_similar(
    query: SimilarQuery,
    results: list[tuple[TrackInfo, float]],
    out: TextIO,
    *,
    fmt: str,
    distance: str,
) -> None:
    """``txt``: a header and one line per track; ``json``: one object."""
    if fmt == "json":
        doc = {
            **query.to_payload(),
            "metric": distance,
            "tracks": [
                {"rank": rank, "distance": round(dist, 5), "track": info.to_payload()}
                for rank, (info, dist) in enumerate(results, start=1)
            ],
        }
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return
    name = query.label if query.track is None else _describe(query.track)
    out.write(f"sounds like {name} ({distance} distance):\n")
    for rank, (info, dist) in enumerate(results, start=1):
        out.write(f"{rank:3d}  {dist:8.4f}  {info.id:>5}  {_describe(info)}  {info.path}\n")
    if not results:
        out.write("  (no other tracks in the index)\n")


def up_next_tracks(
    library: Library, played: list[str], *, k: int
) -> tuple[list[TrackInfo], list[tuple[TrackInfo, float]]]:
    """The played tracks (ids or indexed paths, oldest first) and up to ``k`` to play next.

    ``LibraryError`` (one line) for a track the index lacks.
    """
    from synesthete.index.upnext import up_next

    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    history: list[TrackInfo] = []
    for target in played:
        record: TrackRecord | None = None
        if target.strip().isdigit():
            try:
                record = library.record(int(target))
            except LibraryError:
                record = None
        if record is None:
            record = _indexed_by_path(library, target)
        if record is None:
            raise LibraryError(f"{target}: not a track id or indexed path of {library.index_dir}")
        history.append(record.to_info())
    ranked = up_next(library.summaries(), [info.id for info in history], k=k)
    return history, [(library.info(track_id), dist) for track_id, dist in ranked]


def write_up_next(
    history: list[TrackInfo],
    results: list[tuple[TrackInfo, float]],
    out: TextIO,
    *,
    fmt: str,
) -> None:
    """``txt``: what was played, then one line per track; ``json``: one object."""
    if fmt == "json":
        doc = {
            "after": [info.to_payload() for info in history],
            "tracks": [
                {"rank": rank, "distance": round(dist, 5), "track": info.to_payload()}
                for rank, (info, dist) in enumerate(results, start=1)
            ],
        }
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return
    out.write(f"up next after {' > '.join(_describe(info) for info in history)}:\n")
    for rank, (info, dist) in enumerate(results, start=1):
        out.write(f"{rank:3d}  {dist:8.4f}  {info.id:>5}  {_describe(info)}  {info.path}\n")
    if not results:
        out.write("  (no other tracks in the index)\n")


def _describe(info: TrackInfo) -> str:
    who = f"{info.artist} - " if info.artist else ""
    album = f" [{info.album}]" if info.album else ""
    return f"{who}{info.title}{album}"
