"""The on-disk library: immutable generations switched atomically through ``CURRENT``.

Layout of an index folder::

    DIR/CURRENT                      name of the live generation (one line)
    DIR/.lock                        flock'ed by writers (build/add/remove)
    DIR/gen-000003/library.sqlite    meta(key, value); tracks(...); variants(...);
                                     versions(...); art(sha256, mime, data); track_art(...);
                                     peaks(track_id, data): each track's constellation
    DIR/gen-000003/windows.npy       [N, D] int8 (or float32), every curve's windows, row order
    DIR/gen-000003/ann_projection.npy [d + 1, D] float32, the ANN's axes and mean (if d > 0)
    DIR/gen-000003/windows.ann       Annoy (angular) over every ann_stride-th window of each curve
    DIR/gen-000003/manifest.json     sha256 and size of the files above, counts

Format 3 stores the compact layout by default (``compact.py``: int8 curves, a
coarse ANN on a few principal axes, refined on the curves; about 4 MB per
hour of audio where format 2 took 27). Format 1 and 2 generations (float32
windows, Annoy item i == row i) still open and are searched as before; ``index
stats`` says what a rebuild would save.

A generation is never modified once published. Writers build the next one
in ``DIR/.tmp-gen-*``, fsync it, rename it to ``gen-N`` and then replace
``CURRENT`` atomically (write ``CURRENT.tmp``, fsync, ``os.replace``), so a
reader sees either the old or the new library, never a mix. The previous
generation is kept after a switch (a reader that opened it keeps working);
older ones are deleted.

Deltas
------
``index add`` writes a *delta* (``builder.add_to_index``): a generation folder of the
same kind holding only the new tracks (their int8 curves, an Annoy file over their ANN
items on the main generation's projection, a copy of that projection, their rows of
the tables with ids that continue the library's, the version pairs they are in, their
"sounds like" vectors; no map), with ``format_version`` ``3-delta`` and meta
``delta_parent`` (the generation it was added on) and ``delta_base`` (the main one).
``CURRENT`` names the newest delta; ``Library.open`` follows ``delta_parent`` down to the
main generation and reads the chain as one library (``Library.parts``), so an add
never rewrites the main generation's files. ``compact`` (or an add past the deltas'
share, ``IndexConfig.delta_fraction``) writes a fresh main generation; publishing keeps
the new chain and the previous one (its readers), and deletes the rest. A delta is
published exactly as any generation is, so what follows holds for it too.

A writer killed at any point (tests/test_kill_loop.py does it with SIGKILL)
leaves the live generation as it was, plus at most a ``.tmp-gen-*`` folder or
an unpublished ``gen-N`` above ``CURRENT``; the next writer deletes those once
it holds the lock. The lock is an ``flock``, which the kernel drops when its
holder dies, so a killed writer never blocks the next one. Opening checks
file sizes against the manifest and, for small generations, the checksums
too (see ``VERIFY_ON_OPEN_MAX_BYTES``).

Each track's windows are contiguous rows: ``tracks.window_start`` and
``window_count`` give the slice, and row order is the tracks' order by
``window_start`` (ids need not increase along rows). Track ids are stable
across generations: ``add`` keeps them and numbers new tracks max + 1.

Speed variants
--------------
An index may also hold each track at a few playback speeds (meta
``speed_variants``, e.g. ``[0.94, 1.06]``): the decoded audio resampled as a
turntable would play it, windowed on the same hop and embedded. Variant ``k``
(1-based) of a track is its own curve, ``variants(track_id, variant,
window_start, window_count)``, stored right after the track's own windows.
Variant 0 is the track as recorded (the ``tracks`` row). Annoy indexes every
curve, so a live window played 8 % fast finds the 1.06 copy's windows.
Format 1 indexes (before variants) open as indexes without variants.

Cover art
---------
``art`` holds each distinct picture once (key: its sha256), ``track_art``
names each track's; ``Library.art`` reads one. Generations written before
cover art lack both tables and read as tracks without art.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError, LibraryError
from synesthete.events import TrackInfo

from .annoy_index import (
    AnnoyCandidates,
    AnnoyItems,
    BruteForceCandidates,
    RowMap,
    build_annoy_from_chunks,
)
from .art import CoverArt
from .compact import (
    COMPACT_LAYOUT,
    ItemSearch,
    MergedCandidates,
    RefinedCandidates,
    StackedWindows,
    StoredWindows,
    StoreLayout,
    ann_rows,
    fit_projection,
    project,
    quantize_rows,
)
from .config import DEFAULT_SEARCH_K_FACTOR, check_speed_variants, parse_speed_variants
from .constellation import PeakArray
from .constellation import from_bytes as peaks_from_bytes
from .constellation import to_bytes as peaks_to_bytes
from .milvus_store import ANNOY_STORE, VectorStore, new_collection_name, parse_vector_store
from .similar import TrackSummaries
from .sonic import SonicHead
from .sonic_file import packaged_head, packaged_window_head
from .sonic_store import StoredSonic, describe_missing, read_sonic, write_sonic
from .tags import displayable
from .versions import VersionConfig, VersionPair, find_versions, version_groups

FORMAT_VERSION = 3
DELTA_FORMAT_VERSION = "3-delta"
"""The ``format_version`` of a delta generation: a version before deltas refuses it in one
line ("not supported; rebuild") instead of reading only the tracks the delta added."""
READABLE_FORMAT_VERSIONS = ("1", "2", "3", DELTA_FORMAT_VERSION)
DELTA_PARENT_KEY = "delta_parent"
"""Meta of a delta generation: the generation it was added on top of (main or delta)."""
DELTA_BASE_KEY = "delta_base"
"""Meta of a delta generation: the main generation at the bottom of its chain."""
DISTANCE_SCALE_KEY = "distance_scale"
"""Meta key: the encoder's distance scale (``MatcherConfig.distance_scale``), which the
version search's distances are multiplied by; absent in indexes written before it (1)."""
MAX_DELTA_CHAIN = 64
CURRENT_NAME = "CURRENT"
LOCK_NAME = ".lock"
SQLITE_NAME = "library.sqlite"
WINDOWS_NAME = "windows.npy"
ANNOY_NAME = "windows.ann"
PROJECTION_NAME = "ann_projection.npy"
MANIFEST_NAME = "manifest.json"
CHECKSUMMED_FILES = (WINDOWS_NAME, ANNOY_NAME, SQLITE_NAME)
"""An Annoy generation has these (a Milvus one no ANNOY_NAME); the compact layout adds
PROJECTION_NAME. The manifest lists a generation's files; opening and ``verify`` check
those."""
GENERATION_RE = re.compile(r"^gen-(\d{6,})$")
TMP_PREFIX = ".tmp-gen-"
_HASH_CHUNK_BYTES = 1 << 20
VERIFY_ON_OPEN_MAX_BYTES = 64 << 20
"""Generations up to this size (the three checksummed files together) have their
sha256 recomputed whenever they are opened. Hashing runs at about 1.1 GB/s on a
warm cache here (SHA-NI), so that costs at most ~60 ms, next to the ~1.5 s a CLI
command spends importing torch. With 128-d embeddings a window costs about
1.24 kB (512 B in windows.npy, ~730 B in a 16-tree Annoy file), so that is
about 54k windows: 7.5 hours of audio at the default 0.5 s hop, some 110
tracks. Larger generations get the size checks only, and a full check with
``synesthete index stats --verify``.
"""
_COPY_CHUNK_ROWS = 65536

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tracks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    artist TEXT,
    album TEXT,
    duration_s REAL NOT NULL,
    content_hash TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_count INTEGER NOT NULL,
    added TEXT NOT NULL
);
CREATE INDEX tracks_content_hash ON tracks (content_hash);
CREATE TABLE variants (
    track_id INTEGER NOT NULL REFERENCES tracks (id),
    variant INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    window_count INTEGER NOT NULL,
    PRIMARY KEY (track_id, variant)
);
CREATE TABLE versions (
    track_a INTEGER NOT NULL REFERENCES tracks (id),
    track_b INTEGER NOT NULL REFERENCES tracks (id),
    coverage_a REAL NOT NULL,
    coverage_b REAL NOT NULL,
    PRIMARY KEY (track_a, track_b),
    CHECK (track_a < track_b)
);
CREATE TABLE art (sha256 TEXT PRIMARY KEY, mime TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE track_art (
    track_id INTEGER PRIMARY KEY REFERENCES tracks (id),
    sha256 TEXT NOT NULL REFERENCES art (sha256)
);
CREATE TABLE peaks (track_id INTEGER PRIMARY KEY REFERENCES tracks (id), data BLOB NOT NULL);
"""
_TRACK_COLUMNS = (
    "id, path, title, artist, album, duration_s, content_hash, window_start, window_count, added"
)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackRecord:
    """One row of the ``tracks`` table. ``path`` is absolute, as scanned."""

    id: int
    path: str
    title: str
    artist: str | None
    album: str | None
    duration_s: float
    content_hash: str
    window_start: int
    window_count: int
    added: str
    variant_slices: tuple[tuple[int, int], ...] = ()
    """(window_start, window_count) of speed variants 1..V, in the index's variant order."""
    art: str | None = None
    """sha256 of the track's cover art in the ``art`` table, or ``None`` without art."""

    @property
    def slices(self) -> tuple[tuple[int, int], ...]:
        """(window_start, window_count) of every curve, indexed by variant (0: native)."""
        return ((self.window_start, self.window_count), *self.variant_slices)

    def to_info(self) -> TrackInfo:
        """The track as events carry it.

        Events are UTF-8 text (JSONL, websocket), so a path that is not UTF-8
        shows U+FFFD for its undecodable bytes; the exact path stays in
        ``self.path`` and in the library.
        """
        return TrackInfo(
            id=self.id,
            path=displayable(self.path),
            title=self.title,
            artist=self.artist,
            album=self.album,
            duration_s=self.duration_s,
            has_art=self.art is not None,
        )


def row_map_of(records: Sequence[TrackRecord]) -> RowMap:
    """Row -> (track, window, variant) over the records' curves, in row order."""
    curves: list[tuple[int, int, int, int]] = []  # (start, count, track id, variant)
    for r in records:
        curves += [(a, n, r.id, k) for k, (a, n) in enumerate(r.slices)]
    curves.sort()
    return RowMap(
        track_ids=np.array([c[2] for c in curves], dtype=np.int64),
        window_start=np.array([c[0] for c in curves], dtype=np.int64),
        window_count=np.array([c[1] for c in curves], dtype=np.int64),
        variants=np.array([c[3] for c in curves], dtype=np.int64),
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class GenerationPart:
    """One generation folder as read from disk: a main generation, or a delta on top of one.

    ``records`` carry the folder's own row numbers (its ``windows.npy``); ``Library`` puts
    the parts one after another in one row space.
    """

    name: str
    meta: dict[str, str]
    records: list[TrackRecord]
    windows: StoredWindows
    version_pairs: tuple[VersionPair, ...] = ()
    projection: npt.NDArray[np.float32] | None = None
    sizes_bytes: int = 0


class Library:
    """A read-only view of the live generation of an index folder.

    Implements ``protocols.CurveLibrary``. The windows are memory-mapped, so
    ``curve`` returns views without copying. Open with ``Library.open``.

    The live generation may be a *delta* (``index add``, see ``builder.add_to_index``):
    a small folder with only the tracks added since the main generation was written, on
    top of it (and of earlier deltas). The library reads the chain as one: tracks, curves
    (the parts' rows one after another), versions, "sounds like" vectors, and candidates
    from every part's ANN merged by distance. ``generation`` is the live (newest) folder,
    ``base_generation`` and ``generation_dir`` the main one, ``parts`` all of them.
    """

    def __init__(
        self,
        *,
        index_dir: Path,
        generation: str,
        meta: Mapping[str, str],
        records: list[TrackRecord],
        windows: npt.NDArray[np.float32] | StoredWindows,
        version_pairs: Sequence[VersionPair] = (),
        projection: npt.NDArray[np.float32] | None = None,
        deltas: Sequence[GenerationPart] = (),
    ) -> None:
        self.index_dir = index_dir
        self.base_generation = generation
        self.generation = deltas[-1].name if deltas else generation
        self.generation_dir = index_dir / generation
        self.meta: dict[str, str] = dict(meta)
        self.encoder_name = self.meta["encoder_name"]
        self.dim = _meta_int(self.meta, "dim")
        self._index_hop_s = _meta_float(self.meta, "index_hop_s")
        self.n_trees = _meta_int(self.meta, "n_trees")
        self.seed = _meta_int(self.meta, "seed")
        self.layout = StoreLayout.from_meta(self.meta, n_trees=self.n_trees)
        try:
            self.vector_store = parse_vector_store(self.meta.get("vector_store", "annoy"))
        except ConfigError as err:
            raise LibraryError(f"{self.generation_dir}: {err}") from None
        main = GenerationPart(
            name=generation,
            meta=dict(meta),
            records=list(records),
            windows=windows
            if isinstance(windows, StoredWindows)
            else StoredWindows(windows=windows),
            version_pairs=tuple(version_pairs),
            projection=projection,
        )
        self._parts: tuple[GenerationPart, ...] = (main, *deltas)
        self._speeds = (1.0, *parse_speed_variants(self.meta.get("speed_variants", "[]")))
        # Each part's tracks, on its own rows (its ANN's items), then on the library's.
        self._part_row_maps: list[RowMap] = []
        placed: list[TrackRecord] = []
        self._part_of: dict[int, int] = {}
        offset = 0
        for p, part in enumerate(self._parts):
            self._check_part(part)
            local = sorted(part.records, key=lambda r: r.window_start)
            self._part_row_maps.append(row_map_of(local))
            for r in local:
                if r.id in self._part_of:
                    raise LibraryError(
                        f"{self.index_dir / part.name}: track {r.id} is also in "
                        f"{self._parts[self._part_of[r.id]].name}"
                    )
                self._part_of[r.id] = p
                placed.append(_shifted(r, offset) if offset else r)
            offset += part.windows.n_rows
        # The largest id ever given in this index, removed tracks included.
        self.last_track_id = max(
            *(
                _meta_int(part.meta, "last_track_id") if "last_track_id" in part.meta else 0
                for part in self._parts
            ),
            max((r.id for r in placed), default=0),
            0,
        )
        self._records = {r.id: r for r in placed}
        self.row_map = row_map_of(placed)
        self.version_pairs = tuple(
            p
            for part in self._parts
            for p in part.version_pairs
            if p.track_a in self._records and p.track_b in self._records
        )
        groups = version_groups(
            list(self._records), [(p.track_a, p.track_b) for p in self.version_pairs]
        )
        members: dict[int, set[int]] = {}
        for track_id, group in groups.items():
            members.setdefault(group, set()).add(track_id)
        self._versions = {t: frozenset(members[g] - {t}) for t, g in groups.items()}
        self._stored: StoredWindows | None = (
            main.windows if not deltas else StackedWindows([p.windows for p in self._parts])
        )
        self._projection = projection
        self._dense: npt.NDArray[np.float32] | None = None
        self._candidates: list[AnnoyCandidates | RefinedCandidates | MergedCandidates] = []
        self._summaries: TrackSummaries | None = None
        self._sonic: tuple[StoredSonic | None] | None = None
        self._head: tuple[SonicHead | None] | None = None

    def _check_part(self, part: GenerationPart) -> None:
        where = self.index_dir / part.name
        for r in part.records:
            if len(r.variant_slices) != len(self._speeds) - 1:
                raise LibraryError(
                    f"{where}: track {r.id} has {len(r.variant_slices)} speed "
                    f"variants, the index declares {len(self._speeds) - 1}"
                )
        n_rows = sum(n for r in part.records for _, n in r.slices)
        stored = part.windows
        if (stored.n_rows, stored.dim) != (n_rows, self.dim):
            raise LibraryError(
                f"{where}: windows.npy is {(stored.n_rows, stored.dim)}, the tracks table "
                f"needs ({n_rows}, {self.dim})"
            )
        if stored.dtype != self.layout.windows_dtype:
            raise LibraryError(
                f"{where}: windows.npy is {stored.dtype}, the index meta says "
                f"{self.layout.windows_dtype}"
            )
        expected_projection = (self.layout.ann_dim + 1, self.dim) if self.layout.ann_dim else None
        shape = None if part.projection is None else part.projection.shape
        if shape != expected_projection:
            raise LibraryError(
                f"{where}: {PROJECTION_NAME} does not fit ann_dim "
                f"{self.layout.ann_dim} and dim {self.dim}"
            )

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, index_dir: str | os.PathLike[str], *, verify: bool | None = None) -> Library:
        """Open the live generation. Raises ``LibraryError`` (one line) if missing or corrupt.

        Opening always checks structure: files present, their sizes against
        ``manifest.json``, tables, shapes and counts. ``verify=True`` also
        recomputes the checksums and checks the embeddings are finite (reads
        every byte, about a second per GB); ``None`` (the default) does that
        when the generation is at most ``VERIFY_ON_OPEN_MAX_BYTES``, so a flipped
        byte in a small index is an error rather than wrong answers; ``False``
        never does. Annoy trusts its file, so a large index of doubtful origin
        should be verified before it is queried. A delta is opened with the
        generations below it (``delta_parent``, down to the main one).
        """
        root = Path(index_dir)
        chain = [_read_part(root, read_current(root))]
        while DELTA_PARENT_KEY in chain[-1].meta:
            if len(chain) > MAX_DELTA_CHAIN:
                raise LibraryError(f"{root}: more than {MAX_DELTA_CHAIN} deltas in a chain")
            parent = chain[-1].meta[DELTA_PARENT_KEY]
            if not GENERATION_RE.match(parent):
                raise LibraryError(f"{root / chain[-1].name}: meta names a bad parent {parent!r}")
            chain.append(_read_part(root, parent))
        main, deltas = chain[-1], chain[-2::-1]
        for delta in deltas:
            if delta.meta.get(DELTA_BASE_KEY) != main.name:
                raise LibraryError(
                    f"{root / delta.name}: a delta of {delta.meta.get(DELTA_BASE_KEY)!r}, "
                    f"found on top of {main.name}"
                )
        library = cls(
            index_dir=root,
            generation=main.name,
            meta=main.meta,
            records=main.records,
            windows=main.windows,
            version_pairs=main.version_pairs,
            projection=main.projection,
            deltas=deltas,
        )
        if verify is None:
            verify = sum(p.sizes_bytes for p in chain) <= VERIFY_ON_OPEN_MAX_BYTES
        if verify:
            try:
                library.verify()
            except BaseException:
                library.close()
                raise
        return library

    @property
    def parts(self) -> tuple[str, ...]:
        """The generation folders this library reads: the main one, then its deltas."""
        return tuple(p.name for p in self._parts)

    @property
    def delta_tracks(self) -> int:
        """Tracks in the deltas on top of the main generation (0 without deltas)."""
        return sum(len(p.records) for p in self._parts[1:])

    @property
    def delta_windows(self) -> int:
        """Windows (rows, every curve) in the deltas on top of the main generation."""
        return sum(p.windows.n_rows for p in self._parts[1:])

    @property
    def main_windows(self) -> int:
        """Windows (rows, every curve) of the main generation."""
        return self._parts[0].windows.n_rows

    @property
    def projection(self) -> npt.NDArray[np.float32] | None:
        """The ANN's axes and mean ``[ann_dim + 1, D]`` (``None``: no projection); a delta
        projects on its main generation's."""
        return self._projection

    # -- CurveLibrary ----------------------------------------------------------

    @property
    def index_hop_s(self) -> float:
        return self._index_hop_s

    @property
    def speeds(self) -> tuple[float, ...]:
        return self._speeds

    def curve(self, track_id: int, variant: int = 0) -> npt.NDArray[np.float32]:
        """``[M, D]`` read-only view of a variant's window embeddings, in time order."""
        record = self.record(track_id)
        if not 0 <= variant < len(record.slices):
            raise LibraryError(
                f"{self.index_dir}: track {track_id} has no speed variant {variant} "
                f"(the index has {len(self._speeds) - 1})"
            )
        start, count = record.slices[variant]
        rows = self._require_open().rows(start, start + count)
        rows.flags.writeable = False
        return rows

    def variant_curves(self, track_id: int) -> list[npt.NDArray[np.float32]]:
        """The track's speed-variant curves 1..V (what ``GenerationWriter.add_track`` takes)."""
        return [self.curve(track_id, k) for k in range(1, len(self._speeds))]

    def info(self, track_id: int) -> TrackInfo:
        return self.record(track_id).to_info()

    def art(self, track_id: int) -> CoverArt | None:
        """The track's cover art (``index/art.py``), or ``None`` when it has none.

        Read from the generation's sqlite on each call (one row; the bytes are
        checked against their sha256, so a damaged picture reads as none).
        ``LibraryError`` for an unknown id or an unreadable database.
        """
        key = self.record(track_id).art
        if key is None:
            return None
        rows = self._part_rows(
            self._parts[self._part_of[int(track_id)]].name,
            "art",
            "SELECT mime, data FROM art WHERE sha256 = ?",
            (key,),
        )
        if not rows:
            return None
        art = CoverArt(mime=str(rows[0][0]), data=bytes(rows[0][1]))
        return art if art.sha256 == key else None

    def tracks_with_peaks(self) -> int:
        """How many tracks have a stored constellation (every part's ``peaks`` rows)."""
        query = "SELECT count(*) FROM peaks"
        counts = (self._part_rows(part.name, "peaks", query) for part in self._parts)
        return sum(int(rows[0][0]) for rows in counts if rows)

    def peaks(self, track_id: int) -> PeakArray | None:
        """The track's constellation at the recorded speed (``constellation.py``), or
        ``None`` where its generation stores none (written before them, or a damaged row).

        Read from the generation's sqlite on each call (a few kB); the matcher keeps the
        few it is comparing. ``LibraryError`` for an unknown id or an unreadable database.
        """
        self.record(track_id)
        rows = self._part_rows(
            self._parts[self._part_of[int(track_id)]].name,
            "peaks",
            "SELECT data FROM peaks WHERE track_id = ?",
            (int(track_id),),
        )
        if not rows:
            return None
        try:
            return peaks_from_bytes(bytes(rows[0][0]))
        except ValueError:
            return None

    def _part_rows(
        self, part: str, table: str, query: str, params: tuple[Any, ...] = ()
    ) -> list[Any]:
        """``query``'s rows from one part's sqlite, opened read-only for the call (none
        when that generation has no ``table``); ``LibraryError`` when it is unreadable."""
        database = self.index_dir / part / SQLITE_NAME
        uri = f"{database.absolute().as_uri()}?mode=ro&immutable=1"
        try:
            connection = sqlite3.connect(uri, uri=True)
            try:
                return _rows_if_table(connection, table, query, params)
            finally:
                connection.close()
        except sqlite3.Error as err:
            raise LibraryError(f"{database}: unreadable: {err}") from err

    def versions(self, track_id: int) -> frozenset[int]:
        """The other tracks holding the same music as ``track_id`` (see ``versions.py``)."""
        self.record(track_id)
        return self._versions[int(track_id)]

    # -- the rest ----------------------------------------------------------------

    @property
    def windows(self) -> npt.NDArray[np.float32]:
        """All windows ``[N, D]`` as unit float32: the memory map itself for float32
        storage; int8 storage is dequantised whole on first use (``4 * N * D`` bytes of
        RAM; the matcher reads curves through ``curve`` and never needs this)."""
        stored = self._require_open()
        if not stored.quantized and not isinstance(stored, StackedWindows):
            return stored.raw  # type: ignore[return-value]
        if self._dense is None:
            self._dense = stored.rows(0, stored.n_rows)
            self._dense.flags.writeable = False
        return self._dense

    @property
    def stored_windows(self) -> StoredWindows:
        """The windows as stored (int8 or float32), for row access without a dense copy."""
        return self._require_open()

    @property
    def n_windows(self) -> int:
        return self.row_map.n_rows

    @property
    def n_tracks(self) -> int:
        return len(self._records)

    def record(self, track_id: int) -> TrackRecord:
        try:
            return self._records[int(track_id)]
        except KeyError:
            raise LibraryError(f"{self.index_dir}: no track with id {track_id}") from None

    def summaries(self) -> TrackSummaries:
        """Per-track summaries for "sounds like" (computed once, on first use; in memory only:
        a generation is never written after it is published). From the stored sonic curves
        when the generation has them (``sonic_store.py``), else through the head now."""
        if self._summaries is None:
            stored = self.stored_sonic()
            same_music = [(p.track_a, p.track_b) for p in self.version_pairs]
            head = self.sonic_head()
            if stored is not None and stored.points is not None and head is not None:
                # An audio head's queries come as style vectors already (the recognizer
                # and `similar` put the audio through it); a window head's go through it.
                self._summaries = TrackSummaries.from_windows(
                    windows=stored.points,
                    track_ids=stored.track_ids.tolist(),
                    starts=stored.starts.tolist(),
                    counts=stored.counts.tolist(),
                    content_keys=[self.record(int(t)).content_hash for t in stored.track_ids],
                    same_music=same_music,
                    index_hop_s=stored.hop_s,
                    head=None if head.reads_audio else head,
                    through_head=not head.reads_audio,
                    audio_head=head if head.reads_audio else None,
                )
            else:
                records = list(self._records.values())
                self._summaries = TrackSummaries.from_windows(
                    windows=self.windows,
                    track_ids=[r.id for r in records],
                    starts=[r.window_start for r in records],
                    counts=[r.window_count for r in records],
                    content_keys=[r.content_hash for r in records],
                    same_music=same_music,
                    index_hop_s=self.index_hop_s,
                    head=head if head is not None and not head.reads_audio else None,
                )
        return self._summaries

    def sonic_curve(self, track_id: int) -> npt.NDArray[np.float32] | None:
        """The track's stored curve through an audio similarity head ``[M_s, E]`` (what
        ``add`` and ``remove`` carry to the next generation), or ``None``."""
        stored = self.stored_sonic()
        head = self.sonic_head()
        if stored is None or stored.points is None or head is None or not head.reads_audio:
            return None
        rows = np.flatnonzero(stored.track_ids == int(track_id))
        if rows.size == 0:
            return None
        start, count = int(stored.starts[rows[0]]), int(stored.counts[rows[0]])
        return stored.points[start : start + count]

    def sonic_head(self) -> SonicHead | None:
        """The similarity head "sounds like" ranks by (``index/sonic.py``), if any: the one
        shipped for this index's encoder; when it reads audio and this generation does not
        store its curves, the head of windows shipped beside it (or none)."""
        if self._head is None:
            head = _head_for(self.encoder_name, self.dim)
            if head is not None and head.reads_audio:
                found = read_sonic(
                    self.generation_dir,
                    self.meta,
                    head=head,
                    n_tracks=len(self._parts[0].records),
                )
                if found is None or found.points is None:
                    head = _window_head_for(self.encoder_name, self.dim)
            self._head = (head,)
        return self._head[0]

    def stored_sonic(self) -> StoredSonic | None:
        """The generation's stored "sounds like" vectors and map (``sonic_store.py``), or
        ``None`` for a generation without them (older, or written for another head)."""
        if self._sonic is None:
            head = self.sonic_head()
            found = [
                read_sonic(
                    self.index_dir / part.name, part.meta, head=head, n_tracks=len(part.records)
                )
                for part in self._parts
            ]
            self._sonic = (found[0] if len(found) == 1 else self._merged_sonic(found),)
        return self._sonic[0]

    def _merged_sonic(self, found: Sequence[StoredSonic | None]) -> StoredSonic | None:
        """The main generation's stored vectors and map with its deltas' vectors appended;
        the deltas' tracks placed on the stored map by its placer (as live audio is), so the
        map and the live view keep working until ``index compact`` lays it out again.
        ``None`` when a part lacks usable vectors (then they are computed on opening)."""
        main = found[0]
        parts = [f for f in found if f is not None]
        if main is None or len(parts) != len(found):
            return None
        if any(f.space != main.space or f.hop_s != main.hop_s for f in parts):
            return None
        if (main.points is None) != any(f.points is None for f in parts):
            return None
        track_ids, starts, counts = [], [], []
        point_offset = row_offset = 0
        for part, stored in zip(self._parts, parts, strict=True):
            track_ids.append(stored.track_ids)
            # Sonic points number their own rows; fingerprint "points" are window rows.
            starts.append(stored.starts + (point_offset if main.points is not None else row_offset))
            counts.append(stored.counts)
            point_offset += 0 if stored.points is None else int(stored.points.shape[0])
            row_offset += part.windows.n_rows
        points = (
            None
            if main.points is None
            else np.concatenate([f.points for f in parts if f.points is not None])
        )
        all_ids = np.concatenate(track_ids)
        all_starts = np.concatenate(starts)
        all_counts = np.concatenate(counts)
        positions = main.positions
        status = dict(main.status)
        added = self.delta_tracks
        if positions is not None and main.placer is not None:
            n_main = main.track_ids.shape[0]
            means = []
            for start, count, track_id in zip(
                all_starts[n_main:].tolist(),
                all_counts[n_main:].tolist(),
                all_ids[n_main:].tolist(),
                strict=True,
            ):
                curve = (
                    points[start : start + count]
                    if points is not None
                    else self.curve(int(track_id))
                )
                mean = np.asarray(curve, dtype=np.float64).mean(axis=0)
                means.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            placed = main.placer.place(np.array(means)) if means else np.zeros((0, 2))
            positions = np.concatenate([positions, np.asarray(placed, dtype=np.float32)])
            status["map"] += (
                f"; {added} tracks added since, placed on it by the placer"
                " ('index compact' lays the map out again)"
            )
        else:
            status["map"] = (
                status.get("map", "computed on demand") + f"; {added} tracks added since"
            )
        return replace(
            main,
            points=points,
            track_ids=all_ids,
            starts=all_starts,
            counts=all_counts,
            positions=positions,
            status=status,
        )

    def sonic_status(self) -> dict[str, str]:
        """In words: whether the "sounds like" vectors and the map are stored or computed on
        demand (``index stats``)."""
        stored = self.stored_sonic()
        if stored is None:
            return describe_missing(self.meta, head=self.sonic_head())
        return stored.status

    def records(self) -> list[TrackRecord]:
        """All track rows, by id."""
        return sorted(self._records.values(), key=lambda r: r.id)

    def tracks(self) -> list[TrackInfo]:
        """All tracks, by id."""
        return [r.to_info() for r in self.records()]

    def track_of_row(self, row: int) -> tuple[int, int, int]:
        """Row of windows.npy / Annoy item -> (track id, window index in its curve, variant)."""
        track_ids, window_indices, variants = self.row_map.lookup(np.array([row]))
        return int(track_ids[0]), int(window_indices[0]), int(variants[0])

    def tracks_of_rows(
        self, rows: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Vectorised ``track_of_row``: rows ``[n]`` -> (track ids, window indices, variants)."""
        return self.row_map.lookup(rows)

    def candidates(
        self, *, search_k_factor: int = DEFAULT_SEARCH_K_FACTOR
    ) -> AnnoyCandidates | RefinedCandidates | MergedCandidates:
        """The generation's ``CandidateSource`` (its Annoy file, or its Milvus collection);
        with deltas, every part's, merged by distance. Closed with the library."""
        self._require_open()
        sources = [
            open_candidates(
                self.index_dir / part.name,
                layout=self.layout,
                n_trees=_meta_int(part.meta, "n_trees"),
                windows=part.windows,
                row_map=row_map,
                projection=part.projection,
                vector_store=self.vector_store,
                collection=part.meta.get("milvus_collection", ""),
                search_k_factor=search_k_factor,
            )
            for part, row_map in zip(self._parts, self._part_row_maps, strict=True)
        ]
        source = sources[0] if len(sources) == 1 else MergedCandidates(sources)
        self._candidates.append(source)
        return source

    def brute_force(self) -> BruteForceCandidates:
        """The exact ``CandidateSource`` over the same windows (reference, small libraries)."""
        return BruteForceCandidates(vectors=self.windows, row_map=self.row_map)

    def verify(self) -> None:
        """Recompute the manifest checksums, cross-check counts; ``LibraryError`` on a mismatch
        (every part: the main generation and its deltas)."""
        self._require_open()
        for part in self._parts:
            gen_dir = self.index_dir / part.name
            manifest = read_manifest(gen_dir)
            files = _manifest_files(gen_dir, manifest)
            for name in sorted(files):
                entry = files[name]
                if "sha256" not in entry:
                    raise LibraryError(f"{gen_dir}: manifest.json lacks {name}")
                actual = sha256_file(gen_dir / name)
                if actual != entry["sha256"]:
                    raise LibraryError(
                        f"{gen_dir / name}: checksum mismatch "
                        "(corrupt or modified; rebuild the index)"
                    )
            if manifest.get("n_windows") != part.windows.n_rows or manifest.get("n_tracks") != len(
                part.records
            ):
                raise LibraryError(f"{gen_dir}: manifest counts disagree with the tables")
            stored = part.windows
            if not stored.quantized and not np.isfinite(stored.raw).all():
                raise LibraryError(f"{gen_dir / WINDOWS_NAME}: non-finite embeddings")

    def close(self) -> None:
        for source in self._candidates:
            source.close()
        self._candidates.clear()
        self._stored = None
        self._dense = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_open(self) -> StoredWindows:
        if self._stored is None:
            raise LibraryError(f"{self.index_dir}: library is closed")
        return self._stored


def _read_part(root: Path, generation: str) -> GenerationPart:
    """One generation folder's tables, windows and projection (checked, memory-mapped)."""
    gen_dir = root / generation
    if not gen_dir.is_dir():
        raise LibraryError(f"{root}: CURRENT names {generation}, which does not exist")
    for name in (SQLITE_NAME, WINDOWS_NAME, MANIFEST_NAME):
        if not (gen_dir / name).is_file():
            raise LibraryError(f"{gen_dir}: {name} is missing")
    sizes_bytes = _check_sizes(gen_dir, read_manifest(gen_dir))
    meta, records, pairs = _read_sqlite(gen_dir / SQLITE_NAME)
    layout = StoreLayout.from_meta(meta, n_trees=_meta_int(meta, "n_trees"))
    if meta.get("vector_store", "annoy") == "annoy" and not (gen_dir / ANNOY_NAME).is_file():
        raise LibraryError(f"{gen_dir}: {ANNOY_NAME} is missing")
    windows = _load_npy(gen_dir / WINDOWS_NAME, dtype=layout.windows_dtype, ndim=2)
    projection = (
        np.asarray(_load_npy(gen_dir / PROJECTION_NAME, dtype="float32", ndim=2))
        if layout.ann_dim
        else None
    )
    return GenerationPart(
        name=generation,
        meta=meta,
        records=records,
        windows=StoredWindows(windows=windows),
        version_pairs=tuple(pairs),
        projection=projection,
        sizes_bytes=sizes_bytes,
    )


def _shifted(record: TrackRecord, offset: int) -> TrackRecord:
    """The record with its curves ``offset`` rows further on (a delta's rows in the library)."""
    return replace(
        record,
        window_start=record.window_start + offset,
        variant_slices=tuple((a + offset, n) for a, n in record.variant_slices),
    )


def delta_chain(index_dir: Path, generation: str) -> list[str]:
    """``generation`` and the generations below it (a delta's parents down to its main
    generation), newest first; best effort: an unreadable folder ends the chain."""
    chain = [generation]
    while len(chain) <= MAX_DELTA_CHAIN:
        try:
            meta, _records, _pairs = _read_sqlite(index_dir / chain[-1] / SQLITE_NAME)
        except LibraryError:
            break
        parent = meta.get(DELTA_PARENT_KEY)
        if parent is None or not GENERATION_RE.match(parent) or parent in chain:
            break
        chain.append(parent)
    return chain


def open_candidates(
    gen_dir: Path,
    *,
    layout: StoreLayout,
    n_trees: int,
    windows: StoredWindows,
    row_map: RowMap,
    projection: npt.NDArray[np.float32] | None,
    vector_store: VectorStore = ANNOY_STORE,
    collection: str = "",
    search_k_factor: int = DEFAULT_SEARCH_K_FACTOR,
) -> AnnoyCandidates | RefinedCandidates:
    """The ``CandidateSource`` of a generation: its Annoy file with item i == row i when the
    ANN holds every window as it is, else the coarse ANN (Annoy or Milvus) refined on the
    stored curves."""
    if vector_store.kind == "annoy" and layout.ann_stride == 1 and layout.ann_dim == 0:
        return AnnoyCandidates(
            ann_path=gen_dir / ANNOY_NAME,
            dim=windows.dim,
            n_trees=n_trees,
            row_map=row_map,
            search_k_factor=search_k_factor,
        )
    items = ann_rows(row_map.window_start, row_map.window_count, stride=layout.ann_stride)
    search: ItemSearch
    if vector_store.kind == "milvus":
        from .milvus_store import MilvusItems

        search = MilvusItems(
            store=vector_store,
            collection=collection,
            dim=layout.ann_dim or windows.dim,
            n_items=int(items.shape[0]),
        )
    else:
        search = AnnoyItems(
            ann_path=gen_dir / ANNOY_NAME,
            dim=layout.ann_dim or windows.dim,
            n_trees=n_trees,
            n_items=int(items.shape[0]),
            search_k_factor=search_k_factor,
        )
    return RefinedCandidates(
        search=search,
        items=items,
        windows=windows,
        row_map=row_map,
        stride=layout.ann_stride,
        projection=projection,
    )


def _sonic_meta_key(key: str) -> bool:
    """A meta key ``sonic_store.write_sonic`` writes for each generation anew."""
    return key == "map" or key.startswith(("sonic_", "map_"))


def _head_for(encoder_name: str, dim: int) -> SonicHead | None:
    """The similarity head shipped for ``encoder_name``, if it reads windows of ``dim``."""
    head = packaged_head(encoder_name)
    if head is None or not head.applies_to(encoder_name=encoder_name, dim=dim):
        return None
    return head


def _window_head_for(encoder_name: str, dim: int) -> SonicHead | None:
    """The head of windows for ``encoder_name``: the shipped head if it reads windows, else
    the one shipped beside an audio head."""
    head = _head_for(encoder_name, dim)
    if head is not None and not head.reads_audio:
        return head
    fallback = packaged_window_head(encoder_name)
    if fallback is None or fallback.reads_audio:
        return None
    return fallback if fallback.applies_to(encoder_name=encoder_name, dim=dim) else None


def _load_npy(path: Path, *, dtype: str, ndim: int) -> npt.NDArray[Any]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise LibraryError(f"{path}: is missing") from None
    except (OSError, ValueError) as err:
        raise LibraryError(f"{path}: unreadable: {err}") from err
    if array.dtype != np.dtype(dtype) or array.ndim != ndim:
        shape = "[N, D]" if ndim == 2 else "[N]"
        raise LibraryError(f"{path}: expected {shape} {dtype}, got {array.dtype} {array.shape}")
    loaded: npt.NDArray[Any] = array
    return loaded


def read_current(index_dir: Path) -> str:
    """The live generation's name; ``LibraryError`` if the folder is not an index."""
    if not index_dir.exists():
        raise LibraryError(f"{index_dir}: no index here (the folder does not exist)")
    if not index_dir.is_dir():
        raise LibraryError(f"{index_dir}: not an index folder (it is a file)")
    current = index_dir / CURRENT_NAME
    try:
        name = current.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise LibraryError(
            f"{index_dir}: not a Synesthete index (no CURRENT file); "
            "create one with 'synesthete index build'"
        ) from None
    except (OSError, UnicodeError) as err:
        raise LibraryError(f"{current}: unreadable: {err}") from err
    if not GENERATION_RE.match(name):
        raise LibraryError(f"{current}: corrupt (expected a generation name, got {name[:40]!r})")
    return name


def read_manifest(gen_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((gen_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeError, json.JSONDecodeError) as err:
        raise LibraryError(f"{gen_dir / MANIFEST_NAME}: unreadable: {err}") from err
    if not isinstance(data, dict):
        raise LibraryError(f"{gen_dir / MANIFEST_NAME}: not a JSON object")
    return data


def _manifest_files(gen_dir: Path, manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise LibraryError(f"{gen_dir}: manifest.json has no file list")
    for name in (WINDOWS_NAME, SQLITE_NAME):
        if not isinstance(files.get(name), dict):
            raise LibraryError(f"{gen_dir}: manifest.json lacks {name}")
    for name, entry in files.items():
        if not isinstance(entry, dict) or "/" in str(name) or str(name).startswith("."):
            raise LibraryError(f"{gen_dir}: manifest.json has a bad entry {str(name)[:40]!r}")
    return files


def _check_sizes(gen_dir: Path, manifest: Mapping[str, Any]) -> int:
    """Compare each checksummed file's size with the manifest (a stat each); total bytes."""
    files = _manifest_files(gen_dir, manifest)
    total_bytes = 0
    for name in sorted(files):
        expected = files[name].get("bytes")
        try:
            actual = (gen_dir / name).stat().st_size
        except FileNotFoundError:
            raise LibraryError(f"{gen_dir}: {name} is missing (rebuild the index)") from None
        except OSError as err:
            raise LibraryError(f"{gen_dir / name}: unreadable: {err.strerror or err}") from err
        if actual != expected:
            raise LibraryError(
                f"{gen_dir / name}: {actual} bytes, the manifest says {expected} "
                "(truncated or replaced; rebuild the index)"
            )
        total_bytes += actual
    return total_bytes


def _drop_milvus_collection(gen_dir: Path) -> None:
    """Drop the Milvus collection of a generation about to be deleted (best effort: its
    sqlite may be damaged, the server away; a leftover collection costs only space)."""
    try:
        meta, _records, _pairs = _read_sqlite(gen_dir / SQLITE_NAME)
        store = parse_vector_store(meta.get("vector_store", "annoy"))
    except (LibraryError, ConfigError):
        return
    collection = meta.get("milvus_collection", "")
    if store.kind == "milvus" and collection:
        from .milvus_store import drop_collection

        drop_collection(store, collection)


def _path_to_sql(path: str) -> str | bytes:
    """A track path as stored: TEXT when it is UTF-8, else its exact bytes as a BLOB.

    A file name that is not UTF-8 arrives surrogate-escaped (``"caf\\udce9.wav"``),
    which sqlite cannot encode; the BLOB keeps it exact, and ``_path_from_sql``
    turns it back into the same ``str``.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def _path_from_sql(value: object) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def _meta_int(meta: Mapping[str, str], key: str) -> int:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        raise LibraryError(f"index meta {key!r} is missing or not an integer") from None


def _meta_float(meta: Mapping[str, str], key: str, default: float | None = None) -> float:
    """``meta[key]`` as a number; ``default`` where the key is absent (else an error)."""
    if key not in meta and default is not None:
        return default
    try:
        value = float(meta[key])
    except (KeyError, ValueError):
        raise LibraryError(f"index meta {key!r} is missing or not a number") from None
    if not math.isfinite(value):
        raise LibraryError(f"index meta {key!r} is not a finite number")
    return value


def _rows_if_table(
    connection: sqlite3.Connection, table: str, query: str, params: tuple[Any, ...] = ()
) -> list[Any]:
    """``query``'s rows, or none when the database has no ``table``."""
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return connection.execute(query, params).fetchall() if found else []


def _read_sqlite(path: Path) -> tuple[dict[str, str], list[TrackRecord], list[VersionPair]]:
    # Generations are write-once, so readers open them immutable: no locks and
    # no -wal/-shm files appear next to a published database.
    uri = f"{path.absolute().as_uri()}?mode=ro&immutable=1"
    try:
        connection = sqlite3.connect(uri, uri=True)
        try:
            meta = {str(k): str(v) for k, v in connection.execute("SELECT key, value FROM meta")}
            rows = connection.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks ORDER BY id").fetchall()
            # Format 1 has no variants table, and generations written before version
            # detection no versions table: they read as none.
            variant_rows = _rows_if_table(
                connection,
                "variants",
                "SELECT track_id, variant, window_start, window_count FROM variants "
                "ORDER BY track_id, variant",
            )
            version_rows = _rows_if_table(
                connection,
                "versions",
                "SELECT track_a, track_b, coverage_a, coverage_b FROM versions "
                "ORDER BY track_a, track_b",
            )
            # Generations written before cover art have no track_art table: no art.
            art_keys = {
                int(track_id): str(key)
                for track_id, key in _rows_if_table(
                    connection, "track_art", "SELECT track_id, sha256 FROM track_art"
                )
            }
        finally:
            connection.close()
    except sqlite3.Error as err:
        raise LibraryError(f"{path}: unreadable: {err}") from err
    version = meta.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise LibraryError(
            f"{path}: index format {version!r} is not supported (expected {FORMAT_VERSION}); "
            "rebuild the index"
        )
    slices: dict[int, list[tuple[int, int]]] = {}
    for track_id, variant, start, count in variant_rows:
        found = slices.setdefault(int(track_id), [])
        if int(variant) != len(found) + 1:
            raise LibraryError(f"{path}: speed variants of track {track_id} are not 1..V")
        found.append((int(start), int(count)))
    for key in ("encoder_name", "dim", "index_hop_s", "n_trees", "seed"):
        if key not in meta:
            raise LibraryError(f"{path}: meta lacks {key!r}")
    records = [
        TrackRecord(
            id=int(row[0]),
            path=_path_from_sql(row[1]),
            title=str(row[2]),
            artist=None if row[3] is None else str(row[3]),
            album=None if row[4] is None else str(row[4]),
            duration_s=float(row[5]),
            content_hash=str(row[6]),
            window_start=int(row[7]),
            window_count=int(row[8]),
            added=str(row[9]),
            variant_slices=tuple(slices.get(int(row[0]), ())),
            art=art_keys.get(int(row[0])),
        )
        for row in rows
    ]
    pairs = [
        VersionPair(track_a=int(a), track_b=int(b), coverage_a=float(ca), coverage_b=float(cb))
        for a, b, ca, cb in version_rows
    ]
    return meta, records, pairs


# -- writing -------------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    """fsync a file, or a folder's entry table (no-op where folders cannot be opened)."""
    if sys.platform == "win32" and path.is_dir():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_generations(index_dir: Path) -> list[str]:
    """Generation folder names present, oldest first."""
    if not index_dir.is_dir():
        return []
    found = [p.name for p in index_dir.iterdir() if p.is_dir() and GENERATION_RE.match(p.name)]
    return sorted(found, key=lambda name: int(name.split("-", 1)[1]))


def is_index_dir(index_dir: Path) -> bool:
    return (index_dir / CURRENT_NAME).is_file()


def _owned_name(name: str) -> bool:
    return (
        name in (CURRENT_NAME, CURRENT_NAME + ".tmp", LOCK_NAME)
        or name.startswith(TMP_PREFIX)
        or bool(GENERATION_RE.match(name))
    )


class IndexLock:
    """Exclusive writer lock on ``DIR/.lock`` (flock, so a dead process releases it).

    Without ``fcntl`` (Windows) the lock is advisory only and always succeeds.
    """

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir
        self._handle: BinaryIO | None = None

    def acquire(self) -> None:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.index_dir / LOCK_NAME).open("ab")
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise LibraryError(
                    f"{self.index_dir}: another build, add or remove is writing this index"
                ) from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None


class GenerationWriter:
    """Writes the next generation of an index; ``commit`` publishes it atomically.

    Use as a context manager: leaving it without ``commit`` (an error) deletes
    the temporary folder and leaves the live generation untouched. Holds the
    writer lock from construction to commit/abort. ``sonic_map``: also lay out
    the sonic map (``sonic_store.py``; the builder asks for it as
    ``IndexConfig.sonic_map`` says, on by default).
    """

    def __init__(
        self,
        *,
        index_dir: str | os.PathLike[str],
        dim: int,
        speed_variants: tuple[float, ...] = (),
        version_config: VersionConfig | None = None,
        layout: StoreLayout = COMPACT_LAYOUT,
        vector_store: VectorStore = ANNOY_STORE,
        sonic_map: bool = False,
    ) -> None:
        self.speed_variants = check_speed_variants(speed_variants)
        self.sonic_map = sonic_map
        self.layout = layout.for_dim(dim)
        self.vector_store = vector_store
        self.collection = new_collection_name() if vector_store.kind == "milvus" else ""
        self.version_config = version_config or VersionConfig()
        self.index_dir = Path(index_dir)
        if self.index_dir.exists() and not self.index_dir.is_dir():
            raise LibraryError(f"{self.index_dir}: exists and is not a folder")
        if self.index_dir.is_dir() and not is_index_dir(self.index_dir):
            strangers = [p.name for p in self.index_dir.iterdir() if not _owned_name(p.name)]
            if strangers:
                raise LibraryError(
                    f"{self.index_dir}: folder is not empty and not an index "
                    f"(contains {strangers[0]!r}); choose a new or empty folder"
                )
        self.dim = dim
        self._lock = IndexLock(self.index_dir)
        self._lock.acquire()
        self._closed = False
        try:
            self._remove_stale_temporaries()
            self.tmp_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.index_dir))
            # mkdtemp makes it private (0700); a published generation is for every reader.
            self.tmp_dir.chmod(0o755)
            self._raw_path = self.tmp_dir / "windows.f32.part"
            self._raw: BinaryIO | None = self._raw_path.open("wb")
            # Pictures wait here, one file per distinct picture, until commit puts them
            # in the sqlite file: memory holds one picture at a time, whatever the library.
            self._art_dir = self.tmp_dir / "art.part"
            self._art_dir.mkdir()
            # Constellations likewise wait one file per track (``constellation.py``).
            self._peaks_dir = self.tmp_dir / "peaks.part"
            self._peaks_dir.mkdir()
        except BaseException:
            self._lock.release()
            raise
        self._records: list[TrackRecord] = []
        self._paths: set[str] = set()
        self._ids: set[int] = set()
        self._n_rows = 0
        self._art_mime: dict[str, str] = {}
        self._sonic_files: tuple[str, ...] = ()
        self._sonic_curves: dict[int, npt.NDArray[np.float32]] = {}
        self.notes: list[str] = []
        """One line each, for the user: what the commit left out (e.g. the sonic map)."""

    @property
    def n_rows(self) -> int:
        return self._n_rows

    @property
    def records(self) -> list[TrackRecord]:
        return list(self._records)

    def add_track(
        self,
        record: TrackRecord,
        windows: npt.NDArray[np.float32],
        variants: Sequence[npt.NDArray[np.float32]] = (),
        *,
        art: CoverArt | None = None,
        sonic: npt.NDArray[np.float32] | None = None,
        peaks: PeakArray | None = None,
    ) -> TrackRecord:
        """Append one track's ``[M, D]`` windows, then its speed variants' ``[M_k, D]``
        (one per ``speed_variants``, in order), and its cover ``art``; returns the record
        with its row slices and art key set (``record.art`` itself is not read). ``sonic``
        is its curve ``[M_s, E]`` through an audio similarity head (``sonic_store.py``);
        ``peaks`` its constellation at the recorded speed (``constellation.py``)."""
        if self._raw is None:
            raise LibraryError("generation writer is closed")
        if len(variants) != len(self.speed_variants):
            raise LibraryError(
                f"{record.path}: {len(variants)} speed variants given, the index has "
                f"{len(self.speed_variants)}"
            )
        for curve in (windows, *variants):
            if curve.ndim != 2 or curve.shape[1] != self.dim or curve.shape[0] < 1:
                raise LibraryError(
                    f"{record.path}: windows must be [M>=1, {self.dim}], got {curve.shape}"
                )
        if record.id in self._ids or record.path in self._paths:
            raise LibraryError(f"{record.path}: track id {record.id} or path added twice")
        slices = [self._append_rows(curve) for curve in (windows, *variants)]
        placed = replace(
            record,
            window_start=slices[0][0],
            window_count=slices[0][1],
            variant_slices=tuple(slices[1:]),
            art=None if art is None else self._keep_art(art),
        )
        self._records.append(placed)
        if peaks is not None:
            (self._peaks_dir / str(placed.id)).write_bytes(peaks_to_bytes(peaks))
        if sonic is not None:
            self._sonic_curves[placed.id] = np.asarray(sonic, dtype=np.float32)
        self._paths.add(placed.path)
        self._ids.add(placed.id)
        return placed

    def _keep_art(self, art: CoverArt) -> str:
        key = art.sha256
        if key not in self._art_mime:
            (self._art_dir / key).write_bytes(art.data)
            self._art_mime[key] = art.mime
        return key

    def _append_rows(self, curve: npt.NDArray[np.float32]) -> tuple[int, int]:
        assert self._raw is not None
        start = self._n_rows
        # A long track may arrive as a memory-mapped slice: copy it in chunks.
        for first in range(0, curve.shape[0], _COPY_CHUNK_ROWS):
            chunk = np.ascontiguousarray(curve[first : first + _COPY_CHUNK_ROWS], np.float32)
            self._raw.write(chunk.tobytes())
        self._n_rows += int(curve.shape[0])
        return start, int(curve.shape[0])

    def commit(
        self,
        *,
        meta: Mapping[str, str],
        n_trees: int,
        seed: int,
        delta_of: Library | None = None,
    ) -> str:
        """Write tables, windows, Annoy and manifest; publish; return the generation name.

        ``delta_of``: publish a *delta* on top of that library's live generation (which must
        be this index's, opened under this writer's lock): only the tracks given here, their
        ANN on the main generation's projection, their versions against the whole library,
        their "sounds like" vectors and no map of their own (``Library`` reads the chain).
        """
        if self._raw is None:
            raise LibraryError("generation writer is closed")
        if not self._records:
            raise LibraryError(f"{self.index_dir}: refusing to publish an empty index")
        if delta_of is not None and (
            delta_of.index_dir.resolve() != self.index_dir.resolve()
            or delta_of.layout != self.layout
            or delta_of.vector_store != self.vector_store
        ):
            raise LibraryError(f"{self.index_dir}: a delta must sit on this index's own layout")
        self._raw.close()
        self._raw = None
        try:
            stored = self._write_windows()
            row_map = row_map_of(self._records)
            if delta_of is None:
                projection = self._write_projection(stored)
            else:
                projection = delta_of.projection
                if projection is not None:
                    np.save(self.tmp_dir / PROJECTION_NAME, projection, allow_pickle=False)
            self._write_ann(stored, row_map, projection, n_trees=n_trees, seed=seed)
            pairs = self._find_versions(
                stored, row_map, projection, meta=meta, n_trees=n_trees, base=delta_of
            )
            sonic = write_sonic(
                self.tmp_dir,
                records=self._records,
                windows=stored,
                index_hop_s=_meta_float(meta, "index_hop_s"),
                head=_head_for(str(meta.get("encoder_name", "")), self.dim),
                fallback=_window_head_for(str(meta.get("encoder_name", "")), self.dim),
                with_map=self.sonic_map and delta_of is None,
                given=self._sonic_curves,
            )
            self._sonic_files = sonic.files
            self.notes.extend(sonic.notes)
            del stored
            full_meta = {
                # What the previous generation said of its sonic files is not carried.
                **{str(k): str(v) for k, v in meta.items() if not _sonic_meta_key(str(k))},
                **sonic.meta,
                **self.layout.to_meta(),
                "vector_store": self.vector_store.text,
                **({"milvus_collection": self.collection} if self.collection else {}),
                "format_version": str(FORMAT_VERSION),
                **(
                    {
                        "format_version": DELTA_FORMAT_VERSION,
                        DELTA_PARENT_KEY: delta_of.generation,
                        DELTA_BASE_KEY: delta_of.base_generation,
                    }
                    if delta_of is not None
                    else {}
                ),
                "dim": str(self.dim),
                "n_trees": str(n_trees),
                "seed": str(seed),
                "n_tracks": str(len(self._records)),
                "n_windows": str(self._n_rows),
                "speed_variants": json.dumps(list(self.speed_variants)),
                "last_track_id": str(
                    max(
                        int(meta.get("last_track_id", "0")),
                        max(r.id for r in self._records),
                    )
                ),
                "created": utc_now_iso(),
            }
            self._write_sqlite(self.tmp_dir / SQLITE_NAME, full_meta, pairs)
            shutil.rmtree(self._art_dir)
            shutil.rmtree(self._peaks_dir)
            self._write_manifest(full_meta)
            for name in (*self._data_files(), MANIFEST_NAME):
                _fsync_path(self.tmp_dir / name)
            _fsync_path(self.tmp_dir)
            return self._publish()
        except BaseException:
            self._discard()
            raise
        finally:
            self._release()

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self._discard()
        self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._closed:
            self.abort()

    # -- internals -----------------------------------------------------------------

    def _write_windows(self) -> StoredWindows:
        """windows.npy (int8 or float32) from the raw float32 part, in chunks."""
        shape = (self._n_rows, self.dim)
        raw = np.memmap(self._raw_path, dtype=np.float32, mode="r", shape=shape)
        int8 = self.layout.windows_dtype == "int8"
        out = np.lib.format.open_memmap(
            self.tmp_dir / WINDOWS_NAME,
            mode="w+",
            dtype=np.int8 if int8 else np.float32,
            shape=shape,
        )
        for start in range(0, self._n_rows, _COPY_CHUNK_ROWS):
            chunk = raw[start : start + _COPY_CHUNK_ROWS]
            out[start : start + _COPY_CHUNK_ROWS] = quantize_rows(chunk) if int8 else chunk
        out.flush()
        del out, raw
        self._raw_path.unlink()
        return StoredWindows(
            windows=np.load(self.tmp_dir / WINDOWS_NAME, mmap_mode="r"),
        )

    def _write_projection(self, stored: StoredWindows) -> npt.NDArray[np.float32] | None:
        if not self.layout.ann_dim:
            return None
        projection = fit_projection(stored, dim=self.layout.ann_dim)
        np.save(self.tmp_dir / PROJECTION_NAME, projection, allow_pickle=False)
        return projection

    def _write_ann(
        self,
        stored: StoredWindows,
        row_map: RowMap,
        projection: npt.NDArray[np.float32] | None,
        *,
        n_trees: int,
        seed: int,
    ) -> None:
        """The ANN (Annoy file or Milvus collection) over every ``ann_stride``-th window of
        each curve, in the ANN's space."""
        items = ann_rows(row_map.window_start, row_map.window_count, stride=self.layout.ann_stride)

        def chunks() -> Iterator[npt.NDArray[np.float32]]:
            for first in range(0, items.shape[0], _COPY_CHUNK_ROWS):
                yield project(stored.take(items[first : first + _COPY_CHUNK_ROWS]), projection)

        dim = self.layout.ann_dim or self.dim
        if self.vector_store.kind == "milvus":
            from .milvus_store import write_items

            write_items(self.vector_store, self.collection, chunks(), dim=dim)
            return
        build_annoy_from_chunks(
            chunks(), dim=dim, n_trees=n_trees, seed=seed, path=self.tmp_dir / ANNOY_NAME
        )

    def _find_versions(
        self,
        stored: StoredWindows,
        row_map: RowMap,
        projection: npt.NDArray[np.float32] | None,
        *,
        meta: Mapping[str, str],
        n_trees: int,
        base: Library | None = None,
    ) -> list[VersionPair]:
        """Version pairs of this generation's tracks, found through its own Annoy file; for a
        delta (``base``), the pairs with a track of the delta in them, found through the
        base's candidates and the delta's merged (only the delta's tracks are queried)."""
        if len(self._records) < 2 and base is None:
            return []
        source: AnnoyCandidates | RefinedCandidates | MergedCandidates = open_candidates(
            self.tmp_dir,
            layout=self.layout,
            n_trees=n_trees,
            windows=stored,
            row_map=row_map,
            projection=projection,
            vector_store=self.vector_store,
            collection=self.collection,
        )
        by_id = {r.id: r for r in self._records}

        def curve(track_id: int, variant: int) -> npt.NDArray[np.float32]:
            if track_id not in by_id and base is not None:
                return base.curve(track_id, variant)
            start, count = by_id[track_id].slices[variant]
            return stored.rows(start, start + count)

        if base is not None:
            # The base's own sources stay with the base (closed with it).
            source = MergedCandidates([base.candidates(), source])
        try:
            return find_versions(
                track_ids=sorted(by_id) + ([] if base is None else [r.id for r in base.records()]),
                curve=curve,
                n_variants=1 + len(self.speed_variants),
                source=source,
                index_hop_s=_meta_float(meta, "index_hop_s"),
                config=self.version_config.scaled(_meta_float(meta, DISTANCE_SCALE_KEY, 1.0)),
                query_ids=None if base is None else sorted(by_id),
            )
        finally:
            source.close()

    def _write_sqlite(
        self, path: Path, meta: Mapping[str, str], pairs: Sequence[VersionPair] = ()
    ) -> None:
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            with connection:
                connection.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items())
                )
                connection.executemany(
                    f"INSERT INTO tracks ({_TRACK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.id,
                            _path_to_sql(r.path),
                            r.title,
                            r.artist,
                            r.album,
                            r.duration_s,
                            r.content_hash,
                            r.window_start,
                            r.window_count,
                            r.added,
                        )
                        for r in self._records
                    ],
                )
                connection.executemany(
                    "INSERT INTO variants (track_id, variant, window_start, window_count) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (r.id, k, start, count)
                        for r in self._records
                        for k, (start, count) in enumerate(r.variant_slices, start=1)
                    ],
                )
                connection.executemany(
                    "INSERT INTO versions (track_a, track_b, coverage_a, coverage_b) "
                    "VALUES (?, ?, ?, ?)",
                    [(p.track_a, p.track_b, p.coverage_a, p.coverage_b) for p in pairs],
                )
                for key, mime in sorted(self._art_mime.items()):
                    connection.execute(
                        "INSERT INTO art (sha256, mime, data) VALUES (?, ?, ?)",
                        (key, mime, (self._art_dir / key).read_bytes()),
                    )
                connection.executemany(
                    "INSERT INTO track_art (track_id, sha256) VALUES (?, ?)",
                    [(r.id, r.art) for r in self._records if r.art is not None],
                )
                connection.executemany(
                    "INSERT INTO peaks (track_id, data) VALUES (?, ?)",
                    (
                        (r.id, (self._peaks_dir / str(r.id)).read_bytes())
                        for r in self._records
                        if (self._peaks_dir / str(r.id)).is_file()
                    ),
                )
            # Fold the WAL into the main file so the published folder is one file.
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
        for suffix in ("-wal", "-shm"):
            leftover = path.with_name(path.name + suffix)
            if leftover.exists():
                leftover.unlink()

    def _write_manifest(self, meta: Mapping[str, str]) -> None:
        files = {
            name: {
                "sha256": sha256_file(self.tmp_dir / name),
                "bytes": (self.tmp_dir / name).stat().st_size,
            }
            for name in self._data_files()
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "encoder_name": meta.get("encoder_name"),
            "dim": self.dim,
            "n_tracks": len(self._records),
            "n_windows": self._n_rows,
            "created": meta.get("created"),
            "files": files,
        }
        (self.tmp_dir / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )

    def _data_files(self) -> tuple[str, ...]:
        ann = (ANNOY_NAME,) if self.vector_store.kind == "annoy" else ()
        extras = (PROJECTION_NAME,) if self.layout.ann_dim else ()
        return (WINDOWS_NAME, *ann, SQLITE_NAME, *extras, *self._sonic_files)

    def _publish(self) -> str:
        previous: str | None = None
        if is_index_dir(self.index_dir):
            previous = read_current(self.index_dir)
        existing = list_generations(self.index_dir)
        numbers = [int(name.split("-", 1)[1]) for name in existing]
        if previous is not None:
            numbers.append(int(previous.split("-", 1)[1]))
        name = f"gen-{max(numbers, default=0) + 1:06d}"
        self.tmp_dir.rename(self.index_dir / name)
        _fsync_path(self.index_dir)
        current_tmp = self.index_dir / (CURRENT_NAME + ".tmp")
        with current_tmp.open("w", encoding="utf-8") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        current_tmp.replace(self.index_dir / CURRENT_NAME)
        _fsync_path(self.index_dir)
        # A delta needs the generations below it; so do readers of the previous chain.
        keep = {*delta_chain(self.index_dir, name)}
        if previous is not None:
            keep.update(delta_chain(self.index_dir, previous))
        for old in list_generations(self.index_dir):
            if old not in keep:
                _drop_milvus_collection(self.index_dir / old)
                shutil.rmtree(self.index_dir / old, ignore_errors=True)
        return name

    def _remove_stale_temporaries(self) -> None:
        """Delete what a killed writer left: ``.tmp-gen-*`` folders, and generations
        numbered above ``CURRENT`` (renamed into place, killed before the switch).

        Only called with the lock held, so no other writer owns these; no reader
        can have opened an unpublished generation, since ``CURRENT`` only ever
        moves to a higher number.
        """
        current: int | None = None
        if is_index_dir(self.index_dir):
            try:
                current = int(read_current(self.index_dir).split("-", 1)[1])
            except LibraryError:
                current = None  # a corrupt CURRENT: leave the generations alone
        for child in self.index_dir.iterdir():
            if child.name.startswith(TMP_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            match = GENERATION_RE.match(child.name)
            if match and current is not None and int(match.group(1)) > current:
                shutil.rmtree(child, ignore_errors=True)

    def _discard(self) -> None:
        if self.collection:
            from .milvus_store import drop_collection

            drop_collection(self.vector_store, self.collection)
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def _release(self) -> None:
        if not self._closed:
            self._closed = True
            self._lock.release()
