"""The "sounds like" vectors and the sonic map, stored with each generation.

When a generation is written (``index build``, ``add``, ``remove``), the
writer calls ``write_sonic``; it adds, beside ``windows.npy``::

    sonic.npy          [R, E] float16  each track's sonic curve: its windows
                                       ``sonic_hop_s`` apart through the head
                                       (only with a similarity head)
    sonic_tracks.npy   [T, 3] int64    (track id, first row, rows) per track
    sonic_map.npy      [T, 2] float32  the map positions, rows as sonic_tracks
    sonic_placer.npz                   the ``MapPlacer`` (index/sonic_map.py)

and meta keys: ``sonic_space`` (``sonic`` or ``fingerprint``), ``sonic_head``
(the head's digest: vectors of another head are not used), ``sonic_hop_s``,
``map`` (``stored``, or ``skipped: why``), ``map_seed``, ``map_method``,
``map_trustworthiness``, ``map_anchors`` and the seconds each part took.

Without a head the fingerprint windows are the vectors and only the map is
stored. Without umap-learn (the ``[map]`` extra) the map is skipped with one
line; so is a library of one track. A generation written before these files
(or whose head has changed since) opens as before: its vectors are computed
when it opens and its map when asked (``read_sonic`` returns what is usable,
``index stats`` says which).
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from synesthete.constants import DEFAULT_LIVE_HOP_S
from synesthete.errors import ConfigError, LibraryError

from .similar import sketch_block
from .sonic import SonicHead
from .sonic_map import (
    DEFAULT_MAP_SEED,
    MapPlacer,
    fit_layout,
    fit_placer,
    placer_inputs,
    trustworthiness,
)

SONIC_NAME = "sonic.npy"
SONIC_TRACKS_NAME = "sonic_tracks.npy"
MAP_NAME = "sonic_map.npy"
PLACER_NAME = "sonic_placer.npz"
MAP_EXTRA_HINT = "pip install 'synesthete[map]'"
SONIC_AUDIO_HOP_S = DEFAULT_LIVE_HOP_S
"""Spacing of an audio head's curves: the live hop, so a live window is one curve point."""
NO_MAP = "skipped: not asked for (--no-map)"
"""The ``map`` meta of a generation written without its map on purpose; ``add`` and
``remove`` keep to it."""

FloatArray = npt.NDArray[np.float32]


class StoredRows(Protocol):
    """What ``write_sonic`` reads of the stored windows (``compact.StoredWindows``)."""

    def rows(self, start: int, stop: int) -> FloatArray: ...


class TrackRows(Protocol):
    """What ``write_sonic`` reads of a track record (``store.TrackRecord``)."""

    @property
    def id(self) -> int: ...

    @property
    def window_start(self) -> int: ...

    @property
    def window_count(self) -> int: ...


def head_digest(head: SonicHead) -> str:
    """A short hash of the head's weights: stored vectors are valid for exactly one head."""
    digest = hashlib.sha1(f"{head.inputs}/{head.feature_version}".encode())
    for name, array in sorted(head.arrays().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class SonicWritten:
    """What ``write_sonic`` wrote: ``meta`` for the sqlite table, ``files`` for the
    manifest, ``notes`` (one line each) for the user."""

    meta: dict[str, str]
    files: tuple[str, ...]
    notes: tuple[str, ...]


def write_sonic(
    gen_dir: Path,
    *,
    records: Sequence[TrackRows],
    windows: StoredRows,
    index_hop_s: float,
    head: SonicHead | None,
    seed: int = DEFAULT_MAP_SEED,
    with_map: bool = True,
    given: Mapping[int, FloatArray] | None = None,
    fallback: SonicHead | None = None,
) -> SonicWritten:
    """Write the sonic curves (with a ``head``) and the map of ``records`` into ``gen_dir``.

    A head that reads windows runs over the stored ``windows``; an audio head's
    curves come ``given`` per track id (computed from the audio by the builder,
    or carried from the previous generation). Without a curve for every track
    the generation falls back to the head of windows ``fallback`` (or the
    fingerprint space), with a note.
    """
    started = time.perf_counter()
    meta: dict[str, str] = {}
    files: list[str] = []
    notes: list[str] = []
    ordered = sorted(records, key=lambda r: r.window_start)
    track_ids = np.array([r.id for r in ordered], dtype=np.int64)
    curves: list[FloatArray] = []
    hop_s = index_hop_s
    if head is not None and head.reads_audio:
        have = given or {}
        missing = sum(1 for r in ordered if r.id not in have)
        if missing:
            stand_in = "the fingerprint windows" if fallback is None else "a head of windows"
            notes.append(
                f"sounds like: {missing} of {len(ordered)} tracks have no stored style vectors"
                f" (their audio was not read for them); {stand_in} stands in until"
                " 'index build' is run again"
            )
            head = fallback
        else:
            curves = [np.asarray(have[r.id], dtype=np.float16).astype(np.float32) for r in ordered]
            hop_s = SONIC_AUDIO_HOP_S
    if head is not None and not head.reads_audio:
        step = sketch_block(hop_s=index_hop_s)
        hop_s = index_hop_s * step
        for r in ordered:
            rows = windows.rows(r.window_start, r.window_start + r.window_count)[::step]
            curves.append(head.apply(rows).astype(np.float16).astype(np.float32))
    if head is not None:
        counts = np.array([c.shape[0] for c in curves], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        points = np.concatenate(curves).astype(np.float16)
        np.save(gen_dir / SONIC_NAME, points, allow_pickle=False)
        np.save(gen_dir / SONIC_TRACKS_NAME, np.c_[track_ids, starts, counts], allow_pickle=False)
        files += [SONIC_NAME, SONIC_TRACKS_NAME]
        meta.update(sonic_space="sonic", sonic_head=head_digest(head), sonic_hop_s=repr(hop_s))
    else:
        curves = [windows.rows(r.window_start, r.window_start + r.window_count) for r in ordered]
        np.save(
            gen_dir / SONIC_TRACKS_NAME,
            np.c_[track_ids, [r.window_start for r in ordered], [r.window_count for r in ordered]],
            allow_pickle=False,
        )
        files.append(SONIC_TRACKS_NAME)
        meta.update(sonic_space="fingerprint", sonic_hop_s=repr(index_hop_s))
    meta["sonic_build_s"] = f"{time.perf_counter() - started:.3f}"
    if not with_map:
        meta["map"] = NO_MAP
        return SonicWritten(meta=meta, files=tuple(files), notes=tuple(notes))
    started = time.perf_counter()
    means = np.stack([_unit_mean(c) for c in curves])
    try:
        positions, transform = fit_layout(means, seed=seed)
    except ImportError:
        meta["map"] = f"skipped: umap-learn is not installed ({MAP_EXTRA_HINT})"
        notes.append(
            "sonic map: not stored, umap-learn is not installed"
            f" ({MAP_EXTRA_HINT}; 'synesthete map' needs it too)"
        )
        return SonicWritten(meta=meta, files=tuple(files), notes=tuple(notes))
    except LibraryError as err:
        # Too few tracks to lay out: nothing went wrong, and a user who indexed one file
        # did not ask for a map; `index stats` and `synesthete map` say why there is none.
        meta["map"] = f"skipped: {err}"
        return SonicWritten(meta=meta, files=tuple(files), notes=tuple(notes))
    inputs = placer_inputs(curves, seed=seed)
    targets = np.concatenate([positions, transform(inputs[len(curves) :])])
    placer = fit_placer(inputs, targets)
    np.save(gen_dir / MAP_NAME, positions.astype(np.float32), allow_pickle=False)
    with (gen_dir / PLACER_NAME).open("wb") as out:
        np.savez(out, points=placer.points.astype(np.float16), targets=placer.targets)
    files += [MAP_NAME, PLACER_NAME]
    meta.update(
        {
            "map": "stored",
            "map_seed": str(seed),
            "map_method": "umap" if len(curves) > 4 else "pca",
            "map_trustworthiness": f"{trustworthiness(means, positions):.4f}",
            "map_anchors": str(inputs.shape[0]),
            "map_build_s": f"{time.perf_counter() - started:.3f}",
        }
    )
    return SonicWritten(meta=meta, files=tuple(files), notes=tuple(notes))


def _unit_mean(curve: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    mean = np.asarray(curve, dtype=np.float64).mean(axis=0)
    out: npt.NDArray[np.float64] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


@dataclass(frozen=True, kw_only=True, eq=False)
class StoredSonic:
    """What a generation holds of "sounds like" and the map, as far as it is usable.

    ``points [R, E]`` are the sonic curves (``None``: fingerprint space, the
    windows are the points, or not stored); ``track_ids``, ``starts`` and
    ``counts`` ``[T]`` their rows; ``hop_s`` their spacing. ``positions [T, 2]``
    and ``placer`` are the map (``None`` when not stored), ``status`` says in
    words what is stored and what is computed on demand.
    """

    space: str
    points: FloatArray | None
    track_ids: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    hop_s: float
    positions: FloatArray | None
    placer: MapPlacer | None
    map_seed: int | None
    map_trustworthiness: float | None
    status: dict[str, str]


def read_sonic(
    gen_dir: Path, meta: Mapping[str, str], *, head: SonicHead | None, n_tracks: int
) -> StoredSonic | None:
    """The generation's stored vectors and map, or ``None`` when it stores neither in a
    form this version can use (an older generation, or one of another head)."""
    space = meta.get("sonic_space")
    if space == "sonic":
        if head is None or meta.get("sonic_head") != head_digest(head):
            return None
    elif space == "fingerprint":
        # An audio head's index without its vectors ranks by the windows, as stored.
        if head is not None and not head.reads_audio:
            return None
    else:
        return None
    try:
        table = _load(gen_dir / SONIC_TRACKS_NAME, dtype="int64", shape=(n_tracks, 3))
        points = (
            _load(gen_dir / SONIC_NAME, dtype="float16", shape=None).astype(np.float32)
            if space == "sonic"
            else None
        )
        hop_s = float(meta["sonic_hop_s"])
    except (KeyError, ValueError):
        return None
    if points is not None and (
        points.ndim != 2
        or points.shape[1] != head.dim  # type: ignore[union-attr]
        or int(table[:, 2].sum()) != points.shape[0]
    ):
        raise LibraryError(f"{gen_dir / SONIC_NAME}: does not fit {SONIC_TRACKS_NAME}")
    positions: FloatArray | None = None
    placer: MapPlacer | None = None
    if meta.get("map") == "stored":
        positions = _load(gen_dir / MAP_NAME, dtype="float32", shape=(n_tracks, 2))
        placer = _load_placer(gen_dir / PLACER_NAME)
        status = {
            "map": f"stored ({meta.get('map_method', 'umap')}, seed {meta.get('map_seed')},"
            f" 10-NN kept {float(meta.get('map_trustworthiness', 'nan')):.0%};"
            f" live audio placed by UMAP's transform distilled into"
            f" {meta.get('map_anchors', '?')} anchors)"
        }
    else:
        reason = meta.get("map", "not stored")
        status = {"map": f"computed on demand ({reason})"}
    if space == "sonic":
        status["vectors"] = (
            f"stored ({space} space, {'audio' if head and head.reads_audio else 'window'} head,"
            f" {table.shape[0]} tracks, a point every {hop_s:g} s)"
        )
    elif head is not None:
        status["vectors"] = (
            "stored windows (fingerprint space: the tracks' style vectors are not all stored;"
            " 'index build' again stores them)"
        )
    else:
        status["vectors"] = (
            "stored windows (fingerprint space: no similarity head for this encoder)"
        )
    return StoredSonic(
        space=space,
        points=points,
        track_ids=table[:, 0].copy(),
        starts=table[:, 1].copy(),
        counts=table[:, 2].copy(),
        hop_s=hop_s,
        positions=positions,
        placer=placer,
        map_seed=int(meta["map_seed"]) if "map_seed" in meta else None,
        map_trustworthiness=float(meta["map_trustworthiness"])
        if "map_trustworthiness" in meta
        else None,
        status=status,
    )


def _load(path: Path, *, dtype: str, shape: tuple[int, int] | None) -> Any:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LibraryError(f"{path}: is missing (rebuild the index)") from None
    except (OSError, ValueError) as err:
        raise LibraryError(f"{path}: unreadable: {err}") from None
    if array.dtype != np.dtype(dtype) or (shape is not None and array.shape != shape):
        raise LibraryError(
            f"{path}: expected {dtype} {shape or '[R, E]'}, got {array.dtype} {array.shape}"
        )
    return array


def _load_placer(path: Path) -> MapPlacer:
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {k: np.asarray(saved[k], dtype=np.float32) for k in ("points", "targets")}
    except FileNotFoundError:
        raise LibraryError(f"{path}: is missing (rebuild the index)") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise LibraryError(f"{path}: unreadable: {err}") from None
    try:
        return MapPlacer(**arrays)
    except ConfigError as err:
        raise LibraryError(f"{path}: {err}") from None


def describe_missing(meta: Mapping[str, str], *, head: SonicHead | None) -> dict[str, str]:
    """``index stats`` words for a generation whose stored vectors are not used."""
    space = meta.get("sonic_space")
    if space is None:
        why = "written before the index stored them; 'index build' again stores them"
    elif head is not None and meta.get("sonic_head") != head_digest(head):
        why = "stored for another similarity head; 'index build' again stores this one's"
    else:
        why = "not stored in a form this version reads"
    return {
        "vectors": f"computed when the index opens ({why})",
        "map": f"computed on demand ({why})",
    }
