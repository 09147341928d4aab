"""Building and updating an index: scan, decode, window, embed, store.

Each track becomes a curve of window embeddings at the index hop: window j
covers ``[j * hop, j * hop + 4 s)``. Only full windows are embedded; the
tail after the last full window (shorter than one hop, so under 0.5 s at the
default hop) is left out rather than covered by an extra end-aligned window,
because the matcher reads window j's position as exactly ``j * hop`` and an
off-grid last window would break that.

Bad files are reported with a reason and skipped; the build goes on. A file
whose bytes equal an already indexed file's is skipped as a duplicate, since
two identical curves would only split the matcher's confidence.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from synesthete.constants import (
    MAX_INDEX_HOP_S,
    MIN_INDEX_HOP_S,
    SAMPLE_RATE_HZ,
    WINDOW_S,
    WINDOW_SAMPLES,
)
from synesthete.errors import AudioFormatError, LibraryError, ModelError
from synesthete.inference.encoder import Encoder, SegmentEncoder
from synesthete.stream.windowing import Windower

from .art import CoverArt, read_cover_art
from .compact import COMPACT_LAYOUT, StoreLayout
from .config import MAX_DELTAS, IndexConfig
from .constellation import PeakArray, PeakStream
from .decode import decode_mono_16k_speeds
from .milvus_store import ANNOY_STORE, VectorStore
from .scan import iter_audio_files
from .sonic import SonicHead
from .sonic_file import packaged_head
from .sonic_store import NO_MAP, SONIC_AUDIO_HOP_S
from .store import (
    DELTA_BASE_KEY,
    DELTA_PARENT_KEY,
    DISTANCE_SCALE_KEY,
    GenerationWriter,
    Library,
    TrackRecord,
    list_generations,
    sha256_file,
    utc_now_iso,
)
from .tags import read_tags

FileStatus = Literal["indexed", "updated", "unchanged", "skipped"]
_UNIT_NORM_TOLERANCE = 1e-3
SEGMENT_S = 64.0
"""Audio per front-end pass on the segment path: as many windows as start in 64 s (128 at
the 0.5 s hop; the 3.5 s two segments share is computed twice). Memory stays a few MB per
curve whatever the hop and the file length."""
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Meta keys the writer sets itself; everything else is carried from generation to generation.
_WRITER_META_KEYS = frozenset(
    {
        "format_version",
        "dim",
        "n_trees",
        "seed",
        "n_tracks",
        "n_windows",
        "speed_variants",
        "created",
        "windows_dtype",
        "ann_stride",
        "ann_dim",
        "vector_store",
        "milvus_collection",
        DELTA_PARENT_KEY,
        DELTA_BASE_KEY,
    }
)


@runtime_checkable
class ProgressCallback(Protocol):
    """What the builder reports while it works (the CLI draws a progress bar from it)."""

    def on_start(self, total_files: int) -> None:
        """Called once, with the number of audio files found."""

    def on_file(self, path: Path, status: str) -> None:
        """Called once per file when it is done; ``status`` is a ``FileStatus``."""

    def on_windows(self, n: int) -> None:
        """Called after each encoder batch with the number of windows just embedded.

        A view may also have ``on_audio(seconds)``: called once per indexed file with its
        length (not part of the protocol, so older views need not have it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexedTrack:
    """A track embedded in this run."""

    id: int
    path: str
    title: str
    artist: str | None
    album: str | None
    duration_s: float
    windows: int
    status: Literal["added", "updated"]


@dataclass(slots=True, kw_only=True)
class BuildReport:
    """What a build, add or remove did. ``to_json`` is what ``--report`` writes."""

    action: Literal["build", "add", "remove", "compact"]
    index_dir: str
    generation: str | None = None
    """The live generation afterwards (unchanged if nothing changed)."""
    indexed: list[IndexedTrack] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path or target, reason) for every file or target left out."""
    unchanged: list[str] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    audio_s: float = 0.0
    """Seconds of audio embedded in this run."""
    windows: int = 0
    """Windows embedded in this run (re-used windows not counted)."""
    total_tracks: int = 0
    total_windows: int = 0
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    """One line each: what the new generation left out (e.g. the sonic map without
    umap-learn)."""
    delta: bool = False
    """The new generation is a delta on top of the main one (``add_to_index``)."""
    merged_deltas: int = 0
    """Deltas merged into the new main generation (``compact_index``)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        data["audio_s"] = round(self.audio_s, 3)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data

    def to_json(self) -> str:
        """The report as JSON text that always encodes as UTF-8.

        A path whose name is not UTF-8 keeps its undecodable bytes as ``\\udcXX``
        escapes (Python's ``json.loads`` then ``os.fsencode`` give the exact bytes
        back), where raw surrogates would make writing the file fail.
        """
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        # Lone surrogates only occur inside JSON strings, where the escape is valid.
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

    def summary(self) -> str:
        """One line for the terminal."""
        if self.action == "remove":
            done = f"removed {_plural(len(self.removed), 'track')}"
        elif self.action == "compact":
            done = (
                f"merged {_plural(self.merged_deltas, 'delta')} into a fresh main generation"
                if self.merged_deltas
                else "no deltas to merge"
            )
        else:
            done = (
                f"indexed {_plural(len(self.indexed), 'file')} ({self.windows} windows, "
                f"{self.audio_s / 60.0:.1f} min of audio)"
            )
            if self.unchanged:
                done += f", {len(self.unchanged)} unchanged"
        if self.skipped:
            done += f", skipped {len(self.skipped)}"
        state = (
            f"{self.generation}: {_plural(self.total_tracks, 'track')}, "
            f"{_plural(self.total_windows, 'window')}"
            + (" (a delta beside the main generation)" if self.delta else "")
            if self.generation
            else "no index written"
        )
        return f"{self.action}: {done} in {self.elapsed_s:.1f} s -> {state}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddedTrack:
    """One decoded file as a generation stores it: its record (row slices not yet set),
    ``[M, D]`` windows, speed-variant curves, cover art, "sounds like" curve (``None``
    without an audio similarity head) and constellation (``constellation.py``)."""

    record: TrackRecord
    windows: npt.NDArray[np.float32]
    variants: list[npt.NDArray[np.float32]]
    art: CoverArt | None
    sonic: npt.NDArray[np.float32] | None
    peaks: PeakArray

    def add_to(self, writer: GenerationWriter, *, track_id: int | None = None) -> TrackRecord:
        record = self.record if track_id is None else replace(self.record, id=track_id)
        return writer.add_track(
            record, self.windows, self.variants, art=self.art, sonic=self.sonic, peaks=self.peaks
        )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class NothingIndexedError(LibraryError):
    """No file under the given paths could be indexed; ``report`` gives each one's reason."""

    def __init__(self, message: str, *, report: BuildReport) -> None:
        super().__init__(message)
        self.report = report


def build_index(
    index_dir: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    *,
    encoder: Encoder,
    config: IndexConfig,
    progress: ProgressCallback | None = None,
    layout: StoreLayout = COMPACT_LAYOUT,
    vector_store: VectorStore = ANNOY_STORE,
) -> BuildReport:
    """Index every audio file under ``paths`` into a new generation of ``index_dir``.

    An existing index there is replaced (as a new generation; ids start at
    1). ``layout`` says how the generation stores its windows (``compact.py``;
    its ``n_trees``, when set, overrides ``config.n_trees``), ``vector_store`` where
    its ANN goes (``milvus_store.py``; ``add`` and ``remove`` keep it). Raises
    ``LibraryError`` if a path does not exist or if ``index_dir`` is a
    non-empty folder that is not an index, and ``NothingIndexedError`` (with
    the report) if no file could be indexed; the index is then left as it was.
    """
    started = time.perf_counter()
    root = Path(index_dir)
    _check_encoder(encoder)
    report = BuildReport(action="build", index_dir=str(root))
    files = _scan(paths, report)
    if progress is not None:
        progress.on_start(len(files))
    with _fresh_writer(
        root, dim=encoder.dim, config=config, layout=layout, vector_store=vector_store
    ) as writer:
        by_hash: dict[str, str] = {}
        next_id = 1
        for path in files:
            status = _add_new_file(
                writer,
                path,
                track_id=next_id,
                by_hash=by_hash,
                encoder=encoder,
                config=config,
                report=report,
                progress=progress,
            )
            if status == "indexed":
                next_id += 1
            if progress is not None:
                progress.on_file(path, status)
        _commit_build(
            writer, report, paths=paths, files=files, encoder=encoder, config=config,
            layout=layout, started=started,
        )  # fmt: skip
    report.elapsed_s = time.perf_counter() - started
    return report


def _fresh_writer(
    root: Path, *, dim: int, config: IndexConfig, layout: StoreLayout, vector_store: VectorStore
) -> GenerationWriter:
    """The writer of a whole new index (``build``; the Ray build's too)."""
    return GenerationWriter(
        index_dir=root,
        dim=dim,
        speed_variants=config.speed_variants,
        layout=layout,
        vector_store=vector_store,
        sonic_map=config.sonic_map,
    )


def _commit_build(
    writer: GenerationWriter,
    report: BuildReport,
    *,
    paths: Sequence[str | os.PathLike[str]],
    files: list[Path],
    encoder: Encoder,
    config: IndexConfig,
    layout: StoreLayout,
    started: float,
) -> None:
    """Publish a whole new index and put its totals in ``report``; ``NothingIndexedError``
    when no file gave a window (the folder is left as it was)."""
    if writer.n_rows == 0:
        report.elapsed_s = time.perf_counter() - started
        raise NothingIndexedError(_nothing_indexed_message(paths, files, report), report=report)
    report.generation = writer.commit(
        meta=_meta(encoder=encoder, index_hop_s=config.index_hop_s),
        n_trees=layout.n_trees if layout.n_trees is not None else config.n_trees,
        seed=config.seed,
    )
    report.notes.extend(writer.notes)
    report.total_tracks = len(writer.records)
    report.total_windows = writer.n_rows


def add_to_index(
    index_dir: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    *,
    encoder: Encoder,
    config: IndexConfig | None = None,
    progress: ProgressCallback | None = None,
) -> BuildReport:
    """Add the audio files under ``paths`` to an existing index, as a new generation.

    Only new and changed files are embedded. A path already indexed with the same
    content hash is ``unchanged``; with different content it is re-embedded and keeps its
    id. New tracks get ids after the largest ever given in this index (ids of removed
    tracks are not reused). The index's stored hop, n_trees and seed are used whatever
    ``config`` says (existing windows are on that grid); ``config`` supplies the batch
    size, the length and silence limits and ``delta_fraction``. When nothing new could be
    indexed no generation is written and the report says so.

    **A delta, or a fresh main generation.** New tracks alone go into a *delta*
    generation on top of the live one (their windows, ANN, tables, versions and "sounds
    like" vectors; ``store.Library`` reads the chain as one), so an add costs what its own
    tracks cost and leaves the main generation's files untouched. The add writes a fresh
    main generation instead (every track's stored windows copied, the ANN, versions and
    map made anew, as ``compact_index`` does) when the deltas would then hold more than
    ``config.delta_fraction`` of the main generation's windows, when there would be more
    than ``MAX_DELTAS`` of them, or when a changed file is re-embedded (a delta never
    holds a track the generations below it hold).
    """
    started = time.perf_counter()
    root = Path(index_dir)
    _check_encoder(encoder)
    report = BuildReport(action="add", index_dir=str(root))
    files = _scan(paths, report)
    if progress is not None:
        progress.on_start(len(files))
    with _writer_like(root, config, dim=encoder.dim) as writer, Library.open(root) as lib:
        if lib.encoder_name != encoder.name or lib.dim != encoder.dim:
            raise LibraryError(
                f"{root}: index was built with encoder {lib.encoder_name!r} (dim {lib.dim}), "
                f"not {encoder.name!r} (dim {encoder.dim}); rebuild it with 'index build'"
            )
        _check_same_speeds(lib, writer)
        effective = _stored_config(lib, config)
        existing = {r.path: r for r in lib.records()}
        by_hash = {r.content_hash: r.path for r in existing.values()}
        hashes: dict[Path, str] = {}
        changed: set[str] = set()
        for path in files:
            try:
                hashes[path] = sha256_file(path)
            except OSError as err:
                _skip(report, path, f"cannot read: {err.strerror or err}", progress)
                continue
            record = existing.get(str(path))
            if record is not None and record.content_hash == hashes[path]:
                report.unchanged.append(str(path))
                if progress is not None:
                    progress.on_file(path, "unchanged")
            elif record is not None:
                changed.add(record.path)

        # Changed tracks are re-embedded first; a failure keeps the stored version.
        updated: dict[str, EmbeddedTrack] = {}
        for path_text in sorted(changed):
            path = Path(path_text)
            old = existing[path_text]
            result = _embed_styled_track(
                path,
                track_id=old.id,
                content_hash=hashes[path],
                added=old.added,
                encoder=encoder,
                config=effective,
                progress=progress,
                style_head=audio_head(encoder),
            )
            if isinstance(result, str):
                _skip(report, path, f"{result} (previous version kept)", progress)
                continue
            updated[path_text] = result
            by_hash[result.record.content_hash] = path_text
            if progress is not None:
                progress.on_file(path, "updated")

        # A fresh main generation copies the stored tracks first (as before deltas);
        # a delta takes the new ones alone, and may still turn into a fresh one below.
        as_delta = not updated and effective.delta_fraction > 0.0
        if not as_delta:
            _copy_tracks(writer, lib, updated=updated, report=report, progress=progress)

        # Ids of removed tracks are never handed out again (the store keeps the high-water mark).
        next_id = max([lib.last_track_id, *(r.id for r in existing.values())]) + 1
        for path in files:
            if str(path) in existing or path not in hashes:
                continue
            status = _add_new_file(
                writer,
                path,
                track_id=next_id,
                by_hash=by_hash,
                encoder=encoder,
                config=effective,
                report=report,
                progress=progress,
                content_hash=hashes[path],
            )
            if status == "indexed":
                next_id += 1
            if progress is not None:
                progress.on_file(path, status)

        if report.indexed and as_delta and _delta_fits(lib, writer.n_rows, effective):
            report.generation = writer.commit(
                meta=_carried_meta(lib), n_trees=lib.n_trees, seed=lib.seed, delta_of=lib
            )
            report.delta = True
            report.notes.extend(writer.notes)
            report.total_tracks = lib.n_tracks + len(writer.records)
            report.total_windows = lib.n_windows + writer.n_rows
        elif report.indexed:
            if as_delta:
                # Past the deltas' share: the stored tracks follow the new ones.
                _copy_tracks(writer, lib, updated={}, report=report, progress=progress)
            meta = _carried_meta(lib)
            lib.close()
            report.generation = writer.commit(meta=meta, n_trees=lib.n_trees, seed=lib.seed)
            report.notes.extend(writer.notes)
            report.total_tracks = len(writer.records)
            report.total_windows = writer.n_rows
        else:
            report.generation = lib.generation
            report.total_tracks = lib.n_tracks
            report.total_windows = lib.n_windows
            writer.abort()
    report.elapsed_s = time.perf_counter() - started
    return report


def _copy_tracks(
    writer: GenerationWriter,
    lib: Library,
    *,
    updated: dict[str, EmbeddedTrack],
    report: BuildReport,
    progress: ProgressCallback | None,
) -> None:
    """Append every stored track of ``lib`` to ``writer`` in row order (main generation, then
    its deltas), re-embedded ones (``updated``, by path) in place of their stored curves."""
    for record in sorted(lib.records(), key=lambda r: r.window_start):
        if record.path in updated:
            placed = updated[record.path].add_to(writer)
            _count(report, placed, status="updated")
            _report_audio(progress, placed.duration_s)
        else:
            _copy_track(writer, lib, record)


def _copy_track(writer: GenerationWriter, lib: Library, record: TrackRecord) -> None:
    """Append a stored track of ``lib`` to ``writer`` as it is."""
    writer.add_track(
        record,
        lib.curve(record.id),
        lib.variant_curves(record.id),
        art=lib.art(record.id),
        sonic=lib.sonic_curve(record.id),
        peaks=lib.peaks(record.id),
    )


def _delta_fits(lib: Library, new_windows: int, config: IndexConfig) -> bool:
    """Whether ``new_windows`` more rows may go into a delta on top of ``lib``."""
    if len(lib.parts) > MAX_DELTAS:
        return False
    return lib.delta_windows + new_windows <= config.delta_fraction * lib.main_windows


def compact_index(
    index_dir: str | os.PathLike[str], *, config: IndexConfig | None = None
) -> BuildReport:
    """Merge the deltas of ``index_dir`` into a fresh main generation (``index compact``).

    Every track's stored windows are copied, in the library's row order (the main
    generation's, then each delta's), and the ANN, version pairs, "sounds like" vectors and
    map are made anew: the same generation ``index build`` would write from the same
    curves. Nothing is written when the live generation has no deltas. ``config`` supplies
    ``sonic_map`` (default: as the main generation did).
    """
    started = time.perf_counter()
    root = Path(index_dir)
    report = BuildReport(action="compact", index_dir=str(root))
    with _writer_like(root, config) as writer, Library.open(root) as lib:
        _check_same_speeds(lib, writer)
        if len(lib.parts) == 1:
            report.generation = lib.generation
            report.total_tracks = lib.n_tracks
            report.total_windows = lib.n_windows
            writer.abort()
        else:
            _copy_tracks(writer, lib, updated={}, report=report, progress=None)
            report.merged_deltas = len(lib.parts) - 1
            meta = _carried_meta(lib)
            n_trees, seed = lib.n_trees, lib.seed
            lib.close()
            report.generation = writer.commit(meta=meta, n_trees=n_trees, seed=seed)
            report.notes.extend(writer.notes)
            report.total_tracks = len(writer.records)
            report.total_windows = writer.n_rows
    report.elapsed_s = time.perf_counter() - started
    return report


def remove_from_index(
    index_dir: str | os.PathLike[str], targets: Iterable[str | int]
) -> BuildReport:
    """Remove tracks by id (``"12"``), exact path, or folder prefix; write a new generation.

    A target that is all digits is a track id; anything else is a path,
    made absolute against the current folder, matching that file or every
    track under that folder. Targets matching nothing are reported in
    ``skipped``. Removing every track raises ``LibraryError`` (delete the
    folder instead); removing nothing writes no generation.
    """
    started = time.perf_counter()
    root = Path(index_dir)
    report = BuildReport(action="remove", index_dir=str(root))
    with _writer_like(root, None) as writer, Library.open(root) as lib:
        _check_same_speeds(lib, writer)
        doomed: set[int] = set()
        records = lib.records()
        for target in targets:
            matched = _match_target(str(target), records)
            if not matched:
                report.skipped.append((str(target), "no track matches this id or path"))
            doomed.update(matched)
        if not doomed:
            report.generation = lib.generation
            report.total_tracks = lib.n_tracks
            report.total_windows = lib.n_windows
            writer.abort()
        elif len(doomed) == len(records):
            raise LibraryError(
                f"{root}: removing these would leave the index empty; delete the folder instead"
            )
        else:
            for record in sorted(records, key=lambda r: r.window_start):
                if record.id in doomed:
                    report.removed.append({"id": record.id, "path": record.path})
                else:
                    _copy_track(writer, lib, record)
            report.removed.sort(key=lambda item: int(item["id"]))
            meta = _carried_meta(lib)
            n_trees, seed = lib.n_trees, lib.seed
            lib.close()
            report.generation = writer.commit(meta=meta, n_trees=n_trees, seed=seed)
            report.notes.extend(writer.notes)
            report.total_tracks = len(writer.records)
            report.total_windows = writer.n_rows
    report.elapsed_s = time.perf_counter() - started
    return report


def index_stats(index_dir: str | os.PathLike[str], *, verify: bool = False) -> dict[str, Any]:
    """A JSON-ready summary of the live generation.

    ``verify=True`` recomputes every checksum first, whatever the index size
    (see ``Library.open``), and raises ``LibraryError`` on a mismatch.
    """
    root = Path(index_dir)
    with Library.open(root, verify=True if verify else None) as lib:
        records = lib.records()
        file_bytes: dict[str, int] = {}
        for part in lib.parts:
            for path in sorted((root / part).iterdir()):
                if path.is_file():
                    file_bytes[path.name] = file_bytes.get(path.name, 0) + path.stat().st_size
        disk_bytes = sum(file_bytes.values())
        with_art = [r.art for r in records if r.art is not None]
        total_s = sum(r.duration_s for r in records)
        hours = total_s / 3600.0
        format_version = int(lib.meta["format_version"])
        sonic = lib.sonic_status()
        return {
            "index_dir": str(root),
            "generation": lib.generation,
            "generations_on_disk": list_generations(root),
            **(
                {
                    "main_generation": lib.base_generation,
                    "deltas": list(lib.parts[1:]),
                    "delta_tracks": lib.delta_tracks,
                    "delta_windows_percent": round(
                        100.0 * lib.delta_windows / max(lib.main_windows, 1), 1
                    ),
                }
                if len(lib.parts) > 1
                else {}
            ),
            "format_version": format_version,
            "layout": lib.layout.describe(),
            "vector_store": lib.vector_store.text,
            "encoder_name": lib.encoder_name,
            "dim": lib.dim,
            "index_hop_s": lib.index_hop_s,
            "speed_variants": list(lib.speeds[1:]),
            "n_trees": lib.n_trees,
            "seed": lib.seed,
            "created": lib.meta.get("created"),
            "tracks": lib.n_tracks,
            "windows": lib.n_windows,
            "audio_hours": round(total_s / 3600.0, 3),
            "artists": len({r.artist for r in records if r.artist}),
            "albums": len({r.album for r in records if r.album}),
            "disk_mb": round(disk_bytes / 1e6, 2),
            "mb_per_hour": round(disk_bytes / 1e6 / hours, 2) if hours else None,
            "mb_per_hour_by_file": {
                name: round(size / 1e6 / hours, 3) for name, size in file_bytes.items()
            }
            if hours
            else {},
            **_rebuild_note(lib.layout, format_version),
            "tracks_with_art": len(with_art),
            "pictures": len(set(with_art)),
            "versions": [
                f"{lib.info(p.track_a).path} = {lib.info(p.track_b).path}"
                for p in lib.version_pairs
            ],
            "sonic_vectors": sonic["vectors"],
            "sonic_map": sonic["map"],
            **_peak_note(lib),
            **({"verified": "checksums ok"} if verify else {}),
        }


# -- internals ---------------------------------------------------------------------


def _peak_note(lib: Library) -> dict[str, Any]:
    """How many tracks the peak check (``constellation.py``) can check, and what to do
    about the rest."""
    with_peaks = lib.tracks_with_peaks()
    note: dict[str, Any] = {"tracks_with_peaks": with_peaks}
    if with_peaks < lib.n_tracks:
        note["peak_check"] = (
            f"{lib.n_tracks - with_peaks} tracks have no stored peaks (indexed before "
            "them): they are matched by distance alone; 'index build' again to check them"
        )
    return note


def _rebuild_note(layout: StoreLayout, format_version: int) -> dict[str, str]:
    """``{"rebuild": why}`` for an index an ``index build`` would make much smaller."""
    if not layout.is_full:
        return {}
    written = f"format {format_version}" if format_version < 3 else "the full layout"
    return {
        "rebuild": f"{written} stores float32 windows and an Annoy item per window (about "
        "27 MB per hour of audio with two speed variants); 'index build' again writes the "
        "compact layout (about 4 MB per hour)"
    }


def audio_head(encoder: Encoder) -> SonicHead | None:
    """The similarity head shipped for ``encoder`` when it reads audio (its curves are made
    here, from the decoded audio); ``None`` for a head of windows or none."""
    head = packaged_head(encoder.name)
    if head is None or not head.reads_audio:
        return None
    return head if head.applies_to(encoder_name=encoder.name, dim=encoder.dim) else None


def _check_encoder(encoder: Encoder) -> None:
    if encoder.sample_rate_hz != SAMPLE_RATE_HZ or encoder.window_samples != WINDOW_SAMPLES:
        raise ModelError(
            f"encoder {encoder.name!r} takes {encoder.window_samples} samples at "
            f"{encoder.sample_rate_hz} Hz; the index needs {WINDOW_SAMPLES} at {SAMPLE_RATE_HZ} Hz"
        )


def _meta(*, encoder: Encoder, index_hop_s: float) -> dict[str, str]:
    return {
        "encoder_name": encoder.name,
        "index_hop_s": repr(float(index_hop_s)),
        "window_s": repr(WINDOW_S),
        "sample_rate_hz": str(SAMPLE_RATE_HZ),
        DISTANCE_SCALE_KEY: repr(distance_scale_of(encoder)),
    }


def distance_scale_of(encoder: Encoder) -> float:
    """How the encoder's distances run against encoder-v3's (its calibration's
    ``distance_scale``; 1 without one): the library's distance settings, such as how close
    two versions of a piece come, scale with it."""
    calibration = getattr(encoder, "calibration", None)
    scale = calibration.get("distance_scale") if isinstance(calibration, dict) else None
    return float(scale) if isinstance(scale, int | float) else 1.0


def _carried_meta(lib: Library) -> dict[str, str]:
    meta = {k: v for k, v in lib.meta.items() if k not in _WRITER_META_KEYS}
    meta["last_track_id"] = str(lib.last_track_id)
    return meta


def _writer_like(
    root: Path, config: IndexConfig | None, *, dim: int | None = None
) -> GenerationWriter:
    """A writer of the next generation shaped like the current one: its speed variants,
    layout and vector store, and the map as ``config`` says (else as the current one did).
    ``dim`` is the new vectors' width where the caller's encoder sets it (``index add``
    then checks it against the library's)."""
    with Library.open(root) as probe:
        width = probe.dim if dim is None else dim
        speed_variants, layout, store = probe.speeds[1:], probe.layout, probe.vector_store
        sonic_map = config.sonic_map if config is not None else _stores_map(probe)
    return GenerationWriter(
        index_dir=root,
        dim=width,
        speed_variants=speed_variants,
        layout=layout,
        vector_store=store,
        sonic_map=sonic_map,
    )


def _check_same_speeds(lib: Library, writer: GenerationWriter) -> None:
    if lib.speeds[1:] != writer.speed_variants:
        raise LibraryError(
            f"{lib.index_dir}: the index was rebuilt with other speed variants while this "
            "command waited for it; run the command again"
        )


def _stored_config(lib: Library, config: IndexConfig | None) -> IndexConfig:
    base = config if config is not None else IndexConfig()
    return IndexConfig(
        index_hop_s=lib.index_hop_s,
        n_trees=lib.n_trees,
        seed=lib.seed,
        speed_variants=lib.speeds[1:],
        batch_windows=base.batch_windows,
        search_k_factor=base.search_k_factor,
        min_duration_s=base.min_duration_s,
        silence_dbfs=base.silence_dbfs,
        sonic_map=base.sonic_map if config is not None else _stores_map(lib),
        delta_fraction=base.delta_fraction,
    )


def _stores_map(lib: Library) -> bool:
    """Whether the next generation lays out the map: unless this one was told not to."""
    return lib.meta.get("map") != NO_MAP


def _scan(paths: Sequence[str | os.PathLike[str]], report: BuildReport) -> list[Path]:
    def on_problem(path: Path, reason: str) -> None:
        report.skipped.append((str(path), reason))

    return list(iter_audio_files(paths, on_problem=on_problem))


def _skip(report: BuildReport, path: Path, reason: str, progress: ProgressCallback | None) -> None:
    report.skipped.append((str(path), reason))
    if progress is not None:
        progress.on_file(path, "skipped")


def _count(
    report: BuildReport, record: TrackRecord, *, status: Literal["added", "updated"]
) -> None:
    report.indexed.append(
        IndexedTrack(
            id=record.id,
            path=record.path,
            title=record.title,
            artist=record.artist,
            album=record.album,
            duration_s=record.duration_s,
            windows=record.window_count,
            status=status,
        )
    )
    report.audio_s += record.duration_s
    report.windows += record.window_count + sum(n for _, n in record.variant_slices)


def _report_audio(progress: ProgressCallback | None, seconds: float) -> None:
    """Tell a progress view that has ``on_audio(seconds)`` how much audio a file held (an
    optional callback: views written before it keep working)."""
    on_audio = getattr(progress, "on_audio", None)
    if callable(on_audio):
        on_audio(seconds)


def _add_new_file(
    writer: GenerationWriter,
    path: Path,
    *,
    track_id: int,
    by_hash: dict[str, str],
    encoder: Encoder,
    config: IndexConfig,
    report: BuildReport,
    progress: ProgressCallback | None,
    content_hash: str | None = None,
) -> FileStatus:
    """Embed one new file and append it to ``writer``; returns its status (reason in report)."""
    if content_hash is None:
        try:
            content_hash = sha256_file(path)
        except OSError as err:
            report.skipped.append((str(path), f"cannot read: {err.strerror or err}"))
            return "skipped"
    twin = by_hash.get(content_hash)
    if twin is not None:
        report.skipped.append((str(path), f"same content as {twin}"))
        return "skipped"
    result = _embed_styled_track(
        path,
        track_id=track_id,
        content_hash=content_hash,
        added=utc_now_iso(),
        encoder=encoder,
        config=config,
        progress=progress,
        style_head=audio_head(encoder),
    )
    if isinstance(result, str):
        report.skipped.append((str(path), result))
        return "skipped"
    placed = result.add_to(writer)
    by_hash[content_hash] = str(path)
    _count(report, placed, status="added")
    _report_audio(progress, placed.duration_s)
    return "indexed"


def _embed_styled_track(
    path: Path,
    *,
    track_id: int,
    content_hash: str,
    added: str,
    encoder: Encoder,
    config: IndexConfig,
    progress: ProgressCallback | None,
    style_head: SonicHead | None,
) -> EmbeddedTrack | str:
    """Decode and embed one file (``EmbeddedTrack``; its curve through an audio similarity
    head ``style_head`` too, where there is one), or the reason it was skipped."""
    style = _StyleCurve(style_head) if style_head is not None else None
    peaks = PeakStream()
    try:
        curves, duration_s = _embed_curves(
            path, encoder=encoder, config=config, progress=progress, style=style, peaks=peaks
        )
    except AudioFormatError as err:
        return _reason(err, path)
    windows, variants = curves[0], curves[1:]
    if windows.shape[0] == 0:
        return f"too short ({duration_s:.2f} s; one {WINDOW_S:g} s window needed)"
    title, artist, album = read_tags(path)
    record = TrackRecord(
        id=track_id,
        path=str(path),
        title=title,
        artist=artist,
        album=album,
        duration_s=duration_s,
        content_hash=content_hash,
        window_start=0,
        window_count=int(windows.shape[0]),
        added=added,
    )
    sonic = style.finish() if style is not None else None
    if sonic is not None and sonic.shape[0] == 0:
        sonic = None
    return EmbeddedTrack(
        record=record,
        windows=windows,
        variants=variants,
        art=read_cover_art(path),
        sonic=sonic,
        peaks=peaks.finish(),
    )


class _StyleCurve:
    """Windows the recorded speed's 16 kHz blocks every ``SONIC_AUDIO_HOP_S`` and puts them
    through an audio similarity head (``index/sonic_audio.py`` features): the track's
    "sounds like" curve ``[M_s, E]``."""

    _BATCH = 32

    def __init__(self, head: SonicHead) -> None:
        self._head = head
        self._windower = Windower(hop_s=SONIC_AUDIO_HOP_S)
        self._pending: list[npt.NDArray[np.float32]] = []
        self._chunks: list[npt.NDArray[np.float32]] = []

    def push(self, block: npt.NDArray[np.float32]) -> None:
        self._pending.extend(w.samples for w in self._windower.push(block))
        if len(self._pending) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._chunks.append(self._head.apply_audio(np.stack(self._pending)))
            self._pending.clear()

    def finish(self) -> npt.NDArray[np.float32]:
        self._flush()
        self._windower.flush()
        if not self._chunks:
            return np.zeros((0, self._head.dim), dtype=np.float32)
        return np.concatenate(self._chunks)


class _CurveEmbedder:
    """Windows one stream of 16 kHz blocks at the index hop and embeds them in batches.

    ``speed`` is the speed the blocks were played at (``decode_mono_16k_speeds``);
    a faster copy may come out under one window, and then keeps its audio.
    """

    def __init__(
        self,
        *,
        encoder: Encoder,
        config: IndexConfig,
        speed: float,
        progress: ProgressCallback | None,
    ) -> None:
        self._encoder = encoder
        self._progress = progress
        self._windower = Windower(
            hop_s=config.index_hop_s, min_hop_s=MIN_INDEX_HOP_S, max_hop_s=MAX_INDEX_HOP_S
        )
        self._batch = np.empty(
            (config.batch_windows, self._windower.window_samples), dtype=np.float32
        )
        self._filled = 0
        self._chunks: list[npt.NDArray[np.float32]] = []
        self._head: list[npt.NDArray[np.float32]] | None = None if speed == 1.0 else []
        """A variant's audio before its first window, kept in case no full window comes
        (the track as recorded needs no such fallback: it is skipped as too short)."""
        hop_samples = self._windower.hop_samples
        self._segments: SegmentEncoder | None = (
            encoder
            if isinstance(encoder, SegmentEncoder) and encoder.supports_segments(hop_samples)
            else None
        )
        """Set when the encoder runs its front end once per segment of windows rather than
        once per window (8 times per sample at the 0.5 s hop): the same vectors, faster."""
        self._hop_samples = hop_samples
        self._pending: list[npt.NDArray[np.float32]] = []
        self._pending_samples = 0

    def push(self, block: npt.NDArray[np.float32]) -> None:
        if self._segments is not None:
            self._push_segment(block)
            return
        if self._head is not None:
            self._head.append(block.copy())
        for window in self._windower.push(block):
            self._head = None
            self._batch[self._filled] = window.samples
            self._filled += 1
            if self._filled == self._batch.shape[0]:
                self._chunks.append(_embed_batch(self._encoder, self._batch, self._progress))
                self._filled = 0

    def _push_segment(self, block: npt.NDArray[np.float32]) -> None:
        self._pending.append(np.array(block, dtype=np.float32, copy=True))
        self._pending_samples += int(block.shape[0])
        n_windows = max(1, round(SEGMENT_S * SAMPLE_RATE_HZ / self._hop_samples))
        need = (n_windows - 1) * self._hop_samples + self._batch.shape[1]
        while self._pending_samples >= need:
            audio = np.concatenate(self._pending)
            self._embed_segment(audio, n_windows)
            rest = audio[n_windows * self._hop_samples :].copy()
            self._pending = [rest]
            self._pending_samples = int(rest.shape[0])

    def _embed_segment(self, audio: npt.NDArray[np.float32], n_windows: int) -> None:
        assert self._segments is not None
        out = self._segments.embed_segment(
            audio, hop_samples=self._hop_samples, n_windows=n_windows
        )
        self._chunks.append(_check_vectors(self._encoder, out, n_windows, self._progress))

    def _finish_segments(self) -> None:
        audio = np.concatenate(self._pending) if self._pending else np.zeros(0, dtype=np.float32)
        window_samples = self._batch.shape[1]
        self._pending = []
        self._pending_samples = 0
        if audio.shape[0] >= window_samples:
            n = 1 + (audio.shape[0] - window_samples) // self._hop_samples
            self._embed_segment(audio, n)
        elif not self._chunks and self._head is not None and audio.size:
            self._head = [audio]  # under one window: the variant's zero-padded fallback below
            self._segments = None

    def finish(self) -> npt.NDArray[np.float32]:
        if self._segments is not None:
            self._finish_segments()
        if self._head:
            # A track just over one window is under one window at a faster speed:
            # its variant gets the one window it has, zero-padded at the end.
            audio = np.concatenate(self._head)
            if audio.size:
                window = np.zeros(self._batch.shape[1], dtype=np.float32)
                window[: min(audio.size, window.size)] = audio[: window.size]
                self._batch[self._filled] = window
                self._filled += 1
        if self._filled:
            self._chunks.append(
                _embed_batch(self._encoder, self._batch[: self._filled], self._progress)
            )
            self._filled = 0
        self._windower.flush()
        if not self._chunks:
            return np.zeros((0, self._encoder.dim), dtype=np.float32)
        return np.concatenate(self._chunks)


def _embed_curves(
    path: Path,
    *,
    encoder: Encoder,
    config: IndexConfig,
    progress: ProgressCallback | None,
    style: _StyleCurve | None = None,
    peaks: PeakStream | None = None,
) -> tuple[list[npt.NDArray[np.float32]], float]:
    """``[M_k, D]`` embeddings of every full window at the index hop, as recorded and at each
    speed variant (one decode pass), and the file's length in seconds; ``style`` and
    ``peaks`` are fed the recorded speed's blocks too."""
    embedders = [
        _CurveEmbedder(encoder=encoder, config=config, speed=speed, progress=progress)
        for speed in (1.0, *config.speed_variants)
    ]
    total_samples = 0
    for blocks in decode_mono_16k_speeds(
        path,
        speeds=config.speed_variants,
        min_duration_s=config.min_duration_s,
        silence_dbfs=config.silence_dbfs,
    ):
        total_samples += blocks[0].shape[0]
        for embedder, block in zip(embedders, blocks, strict=True):
            embedder.push(block)
        if style is not None:
            style.push(blocks[0])
        if peaks is not None:
            peaks.push(blocks[0])
    return [e.finish() for e in embedders], total_samples / SAMPLE_RATE_HZ


def embed_file(
    path: str | os.PathLike[str], *, encoder: Encoder, index_hop_s: float
) -> tuple[npt.NDArray[np.float32], float]:
    """``[M, D]`` embeddings of a file's full windows at ``index_hop_s``, as an index holds
    them (variant 0), and its duration in seconds. ``AudioFormatError`` for a file that does
    not decode."""
    _check_encoder(encoder)
    curves, duration_s = _embed_curves(
        Path(path),
        encoder=encoder,
        config=IndexConfig(index_hop_s=index_hop_s, speed_variants=()),
        progress=None,
    )
    return curves[0], duration_s


def _embed_batch(
    encoder: Encoder,
    batch: npt.NDArray[np.float32],
    progress: ProgressCallback | None,
) -> npt.NDArray[np.float32]:
    return _check_vectors(encoder, encoder.embed(batch), batch.shape[0], progress)


def _check_vectors(
    encoder: Encoder,
    vectors: npt.NDArray[np.float32],
    n_windows: int,
    progress: ProgressCallback | None,
) -> npt.NDArray[np.float32]:
    out = np.asarray(vectors, dtype=np.float32)
    if out.shape != (n_windows, encoder.dim):
        raise ModelError(
            f"encoder {encoder.name!r} returned {out.shape} for {n_windows} windows, "
            f"expected ({n_windows}, {encoder.dim})"
        )
    norms = np.linalg.norm(out, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1.0) > _UNIT_NORM_TOLERANCE):
        raise ModelError(f"encoder {encoder.name!r} returned non-finite or non-unit embeddings")
    if progress is not None:
        progress.on_windows(out.shape[0])
    return out.copy()


def _reason(err: AudioFormatError, path: Path) -> str:
    """The error text without the leading ``<path>: `` (the report pairs them already)."""
    text = str(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _match_target(target: str, records: list[TrackRecord]) -> set[int]:
    if target.strip().isdigit():
        wanted = int(target)
        return {r.id for r in records if r.id == wanted}
    absolute = os.path.normpath(Path(target).expanduser().absolute())
    folder = absolute.rstrip(os.sep) + os.sep
    return {r.id for r in records if r.path == absolute or r.path.startswith(folder)}


def _nothing_indexed_message(
    paths: Sequence[str | os.PathLike[str]], files: list[Path], report: BuildReport
) -> str:
    named = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    if not files:
        return f"no audio files (wav, flac, ogg, opus, mp3) found under {named}"
    first_path, first_reason = report.skipped[0] if report.skipped else ("", "")
    return (
        f"none of the {len(files)} audio files under {named} could be indexed "
        f"(first: {first_path}: {first_reason})"
    )
