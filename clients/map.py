"""``synesthete map``: the sonic map of a library as a PNG (matplotlib) or one HTML page.

The layout is ``index/sonic_map.py``'s (UMAP over each track's mean vector in
the "sounds like" space, fixed seed). Points are coloured by album (or artist
when a track has no album); the PNG labels each group of two or more tracks at
its centre and a readable subset of titles. The HTML page is self-contained
(data and script inline, no CDN): hovering a point names it, clicking one draws
lines to its "sounds like" neighbours. The same page, served at ``/map`` by
``listen --serve``, also follows the live stream (``clients/static/map.html``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError, LibraryError
from synesthete.events import TrackInfo
from synesthete.index.sonic_map import DEFAULT_MAP_SEED, layout, trustworthiness
from synesthete.index.store import Library

NEIGHBOURS = 5
""""Sounds like" neighbours drawn from a highlighted track."""
MAX_TITLE_LABELS = 24
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a",
)  # fmt: skip
"""Colours of the groups, largest group first (Tableau 10, then matplotlib's tab20)."""


@dataclass(frozen=True, kw_only=True)
class SonicMap:
    """The tracks ``[T]``, their positions ``[T, 2]`` in [0, 1], their group (album or
    artist, ``None`` for neither), and each track's nearest ``NEIGHBOURS`` by sound."""

    tracks: tuple[TrackInfo, ...]
    positions: npt.NDArray[np.float32]
    groups: tuple[str | None, ...]
    neighbours: tuple[tuple[int, ...], ...]
    space: str
    trustworthiness: float
    seed: int
    stored: bool = False
    """Whether the layout came from the generation (else it was laid out when asked)."""

    def to_doc(self) -> dict[str, Any]:
        """JSON for the pages: tracks with x, y, group index, neighbours (track ids)."""
        names = group_names(self.groups)
        index = {name: n for n, name in enumerate(names)}
        return {
            "space": self.space,
            "seed": self.seed,
            "trustworthiness": round(self.trustworthiness, 4),
            "groups": [
                {"name": name, "colour": PALETTE[n % len(PALETTE)]} for n, name in enumerate(names)
            ],
            "tracks": [
                {
                    "id": info.id,
                    "title": info.title,
                    "artist": info.artist,
                    "album": info.album,
                    "x": round(float(xy[0]), 5),
                    "y": round(float(xy[1]), 5),
                    "group": None if group is None else index[group],
                    "neighbours": list(near),
                }
                for info, xy, group, near in zip(
                    self.tracks, self.positions, self.groups, self.neighbours, strict=True
                )
            ],
        }


def group_names(groups: tuple[str | None, ...]) -> list[str]:
    """Distinct group names, the largest first (ties by name)."""
    counts: dict[str, int] = {}
    for g in groups:
        if g is not None:
            counts[g] = counts.get(g, 0) + 1
    return sorted(counts, key=lambda g: (-counts[g], g))


def library_map(library: Library, *, seed: int = DEFAULT_MAP_SEED) -> SonicMap:
    """The map of ``library``: the one its generation stores (``index/sonic_store.py``) when
    it was laid out with ``seed``, else laid out now (``LibraryError``, one line, for fewer
    than two tracks; ``ConfigError`` without umap-learn)."""
    summaries = library.summaries()
    positions = stored_positions(library, summaries.track_ids, seed=seed)
    stored = positions is not None
    if positions is None:
        try:
            positions = layout(summaries.means, seed=seed)
        except ImportError:
            raise ConfigError(
                "the sonic map needs umap-learn: pip install 'synesthete[map]'"
                " (bash scripts/setup.sh installs it)"
            ) from None
    infos = tuple(library.info(int(t)) for t in summaries.track_ids)
    sims = summaries.means @ summaries.means.T
    neighbours = []
    for row in range(summaries.n_tracks):
        excluded = summaries.excluded([int(summaries.track_ids[row])])
        order = [int(i) for i in np.argsort(-sims[row], kind="stable") if not excluded[i]]
        neighbours.append(tuple(int(summaries.track_ids[i]) for i in order[:NEIGHBOURS]))
    return SonicMap(
        tracks=infos,
        positions=positions,
        groups=tuple(info.album or info.artist for info in infos),
        neighbours=tuple(neighbours),
        space="fingerprint" if summaries.head is None and summaries.audio_head is None else "sonic",
        trustworthiness=trustworthiness(summaries.means, positions),
        seed=seed,
        stored=stored,
    )


def stored_positions(
    library: Library, track_ids: npt.NDArray[np.int64], *, seed: int
) -> npt.NDArray[np.float32] | None:
    """The stored map's positions ``[T, 2]`` in the order of ``track_ids``, if the
    generation stores a map laid out with ``seed``."""
    stored = library.stored_sonic()
    if stored is None or stored.positions is None or stored.map_seed != seed:
        return None
    row_of = {int(t): n for n, t in enumerate(stored.track_ids)}
    if set(row_of) != {int(t) for t in track_ids}:
        return None
    return stored.positions[[row_of[int(t)] for t in track_ids]]


def write_png(sonic_map: SonicMap, path: Path, *, title: str) -> None:
    """A static picture: points by group colour, group labels, a subset of titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = group_names(sonic_map.groups)
    colour_of = {name: PALETTE[n % len(PALETTE)] for n, name in enumerate(names)}
    xy = sonic_map.positions
    fig, ax = plt.subplots(figsize=(11, 9), dpi=110)
    colours = [
        colour_of.get(g, "#999999") if g is not None else "#999999" for g in sonic_map.groups
    ]
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=28, linewidths=0.4, edgecolors="white")
    for name in names:
        members = np.array([g == name for g in sonic_map.groups])
        if members.sum() < 2:
            continue
        cx, cy = xy[members].mean(axis=0)
        box = {"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0}
        ax.text(
            cx, cy, name, fontsize=9, fontweight="bold", ha="center", va="center",
            color=colour_of[name], bbox=box,
        )  # fmt: skip
    for n in _label_subset(xy, MAX_TITLE_LABELS):
        ax.annotate(
            sonic_map.tracks[n].title[:28], xy[n], xytext=(4, 3), textcoords="offset points",
            fontsize=6.5, color="#333333",
        )  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(
        f"{title}: {len(sonic_map.tracks)} tracks, {sonic_map.space} space"
        f" (UMAP, seed {sonic_map.seed}; 10-NN kept {sonic_map.trustworthiness:.0%})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _label_subset(xy: npt.NDArray[np.float32], limit: int) -> list[int]:
    """Up to ``limit`` points spread over the map (greedy farthest-point), for labels."""
    if xy.shape[0] == 0:
        return []
    chosen = [int(np.argmin(np.sum((xy - xy.mean(axis=0)) ** 2, axis=1)))]
    nearest = np.sum((xy - xy[chosen[0]]) ** 2, axis=1)
    while len(chosen) < min(limit, xy.shape[0]):
        j = int(np.argmax(nearest))
        chosen.append(j)
        nearest = np.minimum(nearest, np.sum((xy - xy[j]) ** 2, axis=1))
    return chosen


def map_page(doc: dict[str, Any] | None) -> str:
    """The map page with ``doc`` inline (a file), or to fetch it from ``/map.json`` (live)."""
    page = resources.files("synesthete.clients").joinpath("static", "map.html").read_text()
    data = "null" if doc is None else json.dumps(doc, ensure_ascii=False).replace("</", "<\\/")
    return page.replace("/*MAP_DATA*/null", data, 1)


def write_map(library: Library, out: Path, *, seed: int = DEFAULT_MAP_SEED) -> SonicMap:
    """Write ``out`` (.png or .html) for ``library``; return the map."""
    suffix = out.suffix.lower()
    if suffix not in {".png", ".html", ".htm"}:
        raise ConfigError(f"{out}: --out must end in .png or .html")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent}: no such folder")
    sonic_map = library_map(library, seed=seed)
    try:
        if suffix == ".png":
            write_png(sonic_map, out, title=library.index_dir.name)
        else:
            out.write_text(map_page(sonic_map.to_doc()), encoding="utf-8")
    except OSError as err:
        raise LibraryError(f"{out}: cannot write: {err.strerror or err}") from None
    return sonic_map
