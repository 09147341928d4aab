#!/usr/bin/env python3
"""Build Synesthete's development corpus (docs/corpus.md).

Sources, and nothing else (the data rules):

* music files of the Debian packages named in ``--packages-file`` (each must also be in
  ``--allowed-file``, ../shared/corpus/dev-packages.txt), found with ``dpkg -L`` only;
* MIDI from those packages and pieces of the music21 score corpus, rendered with fluidsynth
  and FluidR3_GM (gain 0.2, always under ``timeout``); tracker modules and LMMS demo songs
  of those packages, rendered with openmpt123 and lmms where installed;
* synthesized speech (espeak-ng) for babble augmentation.

Writes into ``--out``::

    manifest.jsonl          one music track per line (MANIFEST_FIELDS), split by track
    manifest-summary.json   tracks and hours per split / package / source, seed, split hash
    ambience.jsonl          ambience loops and field recordings (augmentation, not music)
    samples.jsonl           sonic-pi samples (augmentation), when that package is listed
    speech.jsonl, speech/   espeak-ng clips, 16 kHz mono wav (babble augmentation)
    extracted/<pkg>/        members of .pk3 archives and MIDI lumps of .wad files
    rendered/<pkg>/         fluidsynth / openmpt123 / lmms renders (*.failed: why not)
    cache/probe.json        per-file duration and content hash, so re-runs skip decoding
    log.jsonl               every skipped or failed item, with the reason

Idempotent: every expensive step checks for its output first; a re-run only redoes what is
missing (``--retry-failed`` also retries renders that failed before).

The pure parts (content hash, de-duplication, variants, split, schema, MIDI sealing) have no
I/O and are tested in tests/test_corpus.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

SPLIT_SEED = 20261122
SPLITS = ("train", "val", "bench")
SPLIT_FRACTIONS: Mapping[str, float] = {"train": 0.7, "val": 0.1, "bench": 0.2}
SOURCES = ("debian", "midi", "music21")

MIN_TRACK_S = 30.0
HASH_RATE_HZ = 8000
HASH_SPAN_S = 60.0

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RENDER_RATE_HZ = 22050
FLUIDSYNTH_GAIN = 0.2  # FluidR3_GM clips on dense orchestral MIDI above about 0.3
RENDER_TIMEOUT_S = 120
LMMS_TIMEOUT_S = 300
MUSIC21_TIMEOUT_S = 300
MAX_RENDER_S = 20 * 60
# fluidsynth 2.3 keeps rendering while any voice sounds; a hung voice fills the disk in
# seconds. The file-size limit stops that even before the timeout does.
MAX_RENDER_BYTES = 512 * 1024 * 1024
# Ticks per quarter for music21's MIDI: its default (10080) overflows fluidsynth's timing.
MUSIC21_TICKS_PER_QUARTER = 480
SEAL_TAIL_S = 2.0
SILENCE_FLOOR_DB = -60.0
TRAILING_QUIET_S = 0.5

SPEECH_RATE_HZ = 16000
SPEECH_MIN_S = 5.0
SPEECH_MAX_S = 15.0
SPEECH_FADE_S = 0.05
AMBIENCE_MIN_S = 2.5

AUDIO_SUFFIXES = frozenset({".ogg", ".mp3", ".wav", ".flac"})
MODULE_SUFFIXES = frozenset({".xm", ".mod", ".it", ".s3m"})
MIDI_SUFFIXES = frozenset({".mid", ".midi"})
LMMS_SUFFIXES = frozenset({".mmpz", ".mmp"})

# A file is music when its package is a "*-music" package, when it lies under one of these
# folders, or when its package keeps music next to sound effects (then length decides).
MUSIC_DIR_NAMES = frozenset({"music", "musics", "tunes", "bgm", "cdtracks"})
ALL_AUDIO_IS_MUSIC = frozenset({"frozen-bubble-data"})
AMBIENCE_DIRS: Mapping[str, str] = {
    "btanks-data": "/sounds/ambient/",
    "lincity-ng-data": "/lincity-ng/sounds/",
}
SAMPLE_PACKAGES = frozenset({"sonic-pi-samples"})
LMMS_PROJECT_DIRS = ("/projects/demos/", "/projects/shorties/")
# A file next to its base track whose name adds one of these is a tempo variant.
VARIANT_RE = re.compile(r"^(?P<base>.+?)[_-]fast$", re.IGNORECASE)

MANIFEST_FIELDS = (
    "id",
    "path",
    "package",
    "title",
    "artist",
    "album",
    "duration_s",
    "sample_rate_hz",
    "channels",
    "content_hash",
    "source",
    "split",
    "variant_of",
    "renderer",
    "origin",
    "duplicates",
)

GM_CHURCH_ORGAN = 19
GM_CHOIR_AAHS = 52
# (music21 corpus path, GM program for every part or None to keep music21's choice).
# Interleaved by composer so that the first pieces (--quick) are already diverse. Pieces
# whose render is under MIN_TRACK_S are dropped like any other short track.
MUSIC21_PIECES: Sequence[tuple[str, int | None]] = (
    ("bach/bwv1.6.mxl", GM_CHURCH_ORGAN),
    ("mozart/k80/movement1.mxl", None),
    ("beethoven/opus18no1/movement2.mxl", None),
    ("palestrina/Kyrie_00.krn", GM_CHOIR_AAHS),
    ("monteverdi/madrigal.3.1.mxl", GM_CHOIR_AAHS),
    ("haydn/opus74no1/movement2.mxl", None),
    ("joplin/maple_leaf_rag.mxl", None),
    ("schumann_robert/opus41no1/movement1.mxl", None),
    ("corelli/opus3no1/1grave.xml", None),
    ("verdi/laDonnaEMobile.mxl", None),
    ("bach/bwv248.64-6.mxl", None),
    ("mozart/k155/movement1.mxl", None),
    ("beethoven/opus59no1/movement3.mxl", None),
    ("palestrina/Gloria_00.krn", GM_CHOIR_AAHS),
    ("monteverdi/madrigal.4.1.mxl", GM_CHOIR_AAHS),
    ("haydn/opus1no1/movement1.mxl", None),
    ("schumann_clara/polonaise_op1n1.mxl", None),
    ("handel/rinaldo/Lascia_chio_pianga.mxl", None),
    ("weber/concertino_clarinet.mxl", None),
    ("cpebach/h186.mxl", None),
    ("bach/bwv190.7-inst.mxl", None),
    ("mozart/k80/movement2.mxl", None),
    ("beethoven/opus59no2/movement1.mxl", None),
    ("palestrina/Credo_00.krn", GM_CHOIR_AAHS),
    ("monteverdi/madrigal.5.1.mxl", GM_CHOIR_AAHS),
    ("schubert/Lindenbaum.xml", None),
    ("luca/gloria.xml", GM_CHOIR_AAHS),
    ("ciconia/quod_jactatur.xml", GM_CHOIR_AAHS),
    ("bach/bwv248.9-1.mxl", GM_CHURCH_ORGAN),
    ("mozart/k458/movement3.mxl", None),
    ("beethoven/opus59no3/movement2.mxl", None),
    ("palestrina/Agnus_00.krn", GM_CHOIR_AAHS),
    ("monteverdi/madrigal.3.2.mxl", GM_CHOIR_AAHS),
    ("mozart/k156/movement2.mxl", None),
    ("bach/bwv244.29-a.mxl", GM_CHURCH_ORGAN),
    ("beethoven/opus18no1/movement3.mxl", None),
    ("josquin/laDeplorationDeLaMorteDeJohannesOckeghem.abc", GM_CHOIR_AAHS),
    ("beach/prayer_of_a_tired_child.musicxml", None),
    ("johnson_j_r/lift_every_voice.mxl", None),
    ("lusitano/allor_che_ignuda.mxl", GM_CHOIR_AAHS),
    ("trecento/Fava_Dicant_nunc_iudei.xml", GM_CHOIR_AAHS),
    ("bach/bwv145-a.mxl", GM_CHURCH_ORGAN),
)
MUSIC21_COMPOSERS: Mapping[str, str] = {
    "bach": "Johann Sebastian Bach",
    "beach": "Amy Beach",
    "beethoven": "Ludwig van Beethoven",
    "chopin": "Frédéric Chopin",
    "ciconia": "Johannes Ciconia",
    "corelli": "Arcangelo Corelli",
    "cpebach": "Carl Philipp Emanuel Bach",
    "handel": "George Frideric Handel",
    "haydn": "Joseph Haydn",
    "johnson_j_r": "J. Rosamond Johnson",
    "joplin": "Scott Joplin",
    "josquin": "Josquin des Prez",
    "luca": "Luca Marenzio",
    "lusitano": "Vicente Lusitano",
    "monteverdi": "Claudio Monteverdi",
    "mozart": "Wolfgang Amadeus Mozart",
    "palestrina": "Giovanni Pierluigi da Palestrina",
    "schubert": "Franz Schubert",
    "schumann_clara": "Clara Schumann",
    "schumann_robert": "Robert Schumann",
    "trecento": "Trecento (anonymous and various)",
    "verdi": "Giuseppe Verdi",
    "weber": "Carl Maria von Weber",
}
# openttd-openmsx credits (its readme.txt), by file name.
OPENMSX_COMPOSERS: Mapping[str, str] = {
    "tttheme2": "-lucas-",
    "keep_on_rolling": "Trolley Trev",
    "ttsong_iv_imuh3": "imuh3",
    "ttsong_iii_imuh3": "imuh3",
    "train_filled_with_cash": "imuh3",
    "flying_scotsman": "imuh3",
    "chuggachugga": "imuh3",
    "busy_schedule": "mimm",
    "the_fast_route": "mimm",
    "modern_motion": "Kyle Timmerman",
    **{
        name: "Tistou Blomberg"
        for name in (
            "ultimate_run",
            "midnight_snow_run",
            "run_for_your_life",
            "coconut_run2",
            "harp_harmony",
            "mighty_giant_run",
            "wood_whistles",
            "linns_basket",
            "relax_song",
            "chemistry_lab",
        )
    },
}
UFOAI_NOT_COMPOSERS = frozenset({"dynamictest"})
# File-name composers spelled as the other files' tags spell them, so labels agree.
UFOAI_COMPOSER_ALIASES: Mapping[str, str] = {
    "Crystan": 'Christian "Crystan" Hoffmann',
    "van": "Manuel 'Vanethian' Marino",
    "karlmacklin": "Karl Macklin",
}
PLACEHOLDER_TAGS = frozenset({"unknown", "<unknown>", "unknown artist", "various"})

# Short texts for babble, written for this project (no third-party text).
SPEECH_TEXTS: Mapping[str, Sequence[str]] = {
    "en": (
        "The next train to the harbour leaves from platform four in about ten minutes.",
        "Could you turn the music down a little? I can hardly hear what you are saying.",
        "We tried the new place on the corner last night, and the soup was surprisingly good.",
        "Remember to bring the blue folder to the meeting, the one with the budget in it.",
        "It rained all morning, but the afternoon was bright and warm enough for a walk.",
        "Nobody knew who had left the bicycle in the hallway, so it stayed there for a week.",
    ),
    "de": (
        "Der Zug nach Hamburg hat heute leider wieder zwanzig Minuten Verspätung.",
        "Kannst du mir bitte sagen, wo ich hier in der Nähe eine Apotheke finde?",
        "Am Wochenende fahren wir mit den Kindern an den See, wenn das Wetter hält.",
    ),
    "fr": (
        "Il fait beau aujourd'hui, nous pourrions déjeuner sur la terrasse du café.",
        "La réunion de demain est reportée à jeudi matin, à neuf heures et demie.",
        "Mon frère a acheté un vieux vélo et il le répare tous les soirs dans le garage.",
    ),
    "es": (
        "El mercado abre temprano los sábados y siempre hay mucha gente en la plaza.",
        "¿Sabes si la biblioteca está abierta durante las vacaciones de verano?",
        "Mañana vamos a visitar a mis abuelos, que viven en un pueblo cerca de la costa.",
    ),
    "it": (
        "Il treno per Milano parte dal binario tre fra dieci minuti circa.",
        "Stasera ceniamo da mia sorella, ha preparato una torta di mele enorme.",
    ),
    "nl": (
        "We fietsen elke ochtend langs het kanaal naar het station in de stad.",
        "De winkel op de hoek is vandaag gesloten vanwege een verbouwing.",
    ),
    "pl": ("Jutro rano jedziemy pociągiem do Krakowa, żeby odwiedzić rodzinę.",),
    "pt": ("Amanhã de manhã vamos ao mercado comprar fruta fresca e pão.",),
}
SPEECH_VARIANTS = ("", "+m3", "+f2", "+m7", "+f4", "+klatt", "+croak", "+f5", "+m2", "+whisper")


class CorpusError(Exception):
    """A corpus input that cannot be used; the message names the file and the reason."""


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Candidate:
    """One audio file that may become a manifest track (before probing)."""

    id: str
    path: Path
    package: str
    source: str
    origin: str
    renderer: str | None = None
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    variant_base: str | None = None  # id of the track this is a tempo variant of


@dataclass(frozen=True)
class Probe:
    duration_s: float
    sample_rate_hz: int
    channels: int
    content_hash: str | None


@dataclass(frozen=True)
class Track:
    id: str
    path: str
    package: str
    title: str
    artist: str | None
    album: str
    duration_s: float
    sample_rate_hz: int
    channels: int
    content_hash: str
    source: str
    split: str = ""
    variant_of: str | None = None
    renderer: str | None = None
    origin: str = ""
    duplicates: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["duplicates"] = list(self.duplicates)
        return {name: row[name] for name in MANIFEST_FIELDS}


# ---------------------------------------------------------------------------------------
# Pure parts


def content_hash(samples: npt.NDArray[np.floating[Any]], sample_rate_hz: int) -> str:
    """SHA-1 of the first HASH_SPAN_S of ``samples``, downmixed, at 8 kHz, as 16-bit PCM.

    ``samples`` is ``[frames]`` or ``[frames, channels]``. The same audio in another
    container or codec-free format (wav, flac, a copy) hashes the same; a tempo variant
    does not.
    """
    if sample_rate_hz <= 0:
        raise CorpusError(f"sample rate must be positive, got {sample_rate_hz}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    elif x.ndim != 1:
        raise CorpusError(f"samples must be [frames] or [frames, channels], got {x.shape}")
    x = x[: round(HASH_SPAN_S * sample_rate_hz)]
    if sample_rate_hz != HASH_RATE_HZ and x.size:
        import soxr

        x = soxr.resample(x, sample_rate_hz, HASH_RATE_HZ).astype(np.float32, copy=False)
    pcm = np.clip(np.round(np.nan_to_num(x) * 32767.0), -32768, 32767).astype("<i2")
    return hashlib.sha1(pcm.tobytes()).hexdigest()


def dedupe(tracks: Sequence[Track]) -> list[Track]:
    """One track per content hash: the first by (source, package, path); others listed.

    Kept tracks carry the paths of the copies they replace in ``duplicates``.
    """
    order = {name: i for i, name in enumerate(SOURCES)}
    groups: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        groups[track.content_hash].append(track)
    kept = []
    for group in groups.values():
        group.sort(key=lambda t: (order.get(t.source, len(order)), t.package, t.path))
        first, rest = group[0], group[1:]
        kept.append(replace(first, duplicates=tuple(sorted(t.path for t in rest))))
    return sorted(kept, key=lambda t: t.id)


def variant_base_stem(stem: str) -> str | None:
    """``"celtic_fast"`` -> ``"celtic"``; None when the name marks no variant."""
    match = VARIANT_RE.match(stem)
    return match.group("base") if match else None


def split_counts(n_groups: int, fractions: Mapping[str, float] = SPLIT_FRACTIONS) -> dict[str, int]:
    """How many groups of one stratum go to each split.

    Bench gets at least one group whenever the stratum has two, and train keeps at least one.
    """
    if n_groups <= 0:
        return dict.fromkeys(SPLITS, 0)
    if n_groups == 1:
        return {"train": 1, "val": 0, "bench": 0}
    bench = max(1, math.floor(n_groups * fractions["bench"] + 0.5))
    val = math.floor(n_groups * fractions["val"] + 0.5)
    bench = min(bench, n_groups - 1)
    val = min(val, n_groups - 1 - bench)
    return {"train": n_groups - bench - val, "val": val, "bench": bench}


def assign_splits(
    tracks: Sequence[Track],
    *,
    seed: int = SPLIT_SEED,
    fractions: Mapping[str, float] = SPLIT_FRACTIONS,
) -> list[Track]:
    """Split by track, stratified by package; a variant goes where its original goes.

    Within a package the groups (a track and its variants) are ordered by a seeded hash of
    the group id, so a track's split depends only on the seed, its package's track list and
    its own id, never on input order or on other packages.
    """
    by_id = {t.id: t for t in tracks}
    strata: dict[str, set[str]] = defaultdict(set)
    for track in tracks:
        group = track.variant_of if track.variant_of in by_id else track.id
        strata[track.package].add(group)
    split_of_group: dict[str, str] = {}
    for groups in strata.values():
        ordered = sorted(groups, key=lambda g: (_seeded_key(seed, g), g))
        counts = split_counts(len(ordered), fractions)
        names = ["bench"] * counts["bench"] + ["val"] * counts["val"] + ["train"] * counts["train"]
        split_of_group.update(zip(ordered, names, strict=True))
    out = []
    for track in tracks:
        group = track.variant_of if track.variant_of in by_id else track.id
        out.append(replace(track, split=split_of_group[group]))
    return out


def _seeded_key(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}\0{group}".encode()).hexdigest()


def split_digest(tracks: Iterable[Track]) -> str:
    """SHA-256 of the sorted ``id<TAB>split`` lines: equal digests, equal assignments."""
    lines = sorted(f"{t.id}\t{t.split}\n" for t in tracks)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def validate_row(row: Mapping[str, Any]) -> None:
    """Raise CorpusError unless ``row`` is a well-formed manifest line."""
    missing = [name for name in MANIFEST_FIELDS if name not in row]
    extra = sorted(set(row) - set(MANIFEST_FIELDS))
    if missing or extra:
        raise CorpusError(f"manifest row {row.get('id')!r}: missing {missing}, extra {extra}")
    checks = (
        ("id", isinstance(row["id"], str) and ":" in row["id"]),
        ("path", isinstance(row["path"], str) and Path(row["path"]).is_absolute()),
        ("title", isinstance(row["title"], str) and bool(row["title"])),
        ("album", isinstance(row["album"], str) and bool(row["album"])),
        ("artist", row["artist"] is None or isinstance(row["artist"], str)),
        ("duration_s", isinstance(row["duration_s"], float) and row["duration_s"] >= MIN_TRACK_S),
        ("sample_rate_hz", isinstance(row["sample_rate_hz"], int) and row["sample_rate_hz"] > 0),
        ("channels", isinstance(row["channels"], int) and row["channels"] > 0),
        ("content_hash", isinstance(row["content_hash"], str) and len(row["content_hash"]) == 40),
        ("source", row["source"] in SOURCES),
        ("split", row["split"] in SPLITS),
        ("variant_of", row["variant_of"] is None or isinstance(row["variant_of"], str)),
        ("duplicates", isinstance(row["duplicates"], list)),
    )
    bad = [name for name, ok in checks if not ok]
    if bad:
        raise CorpusError(f"manifest row {row['id']!r}: bad {', '.join(bad)}")


def summarize(tracks: Sequence[Track], *, seed: int) -> dict[str, Any]:
    """Counts and hours per split, package and source, with the split seed and digest."""

    def tally(items: Iterable[Track]) -> dict[str, Any]:
        items = list(items)
        return {
            "tracks": len(items),
            "hours": round(sum(t.duration_s for t in items) / 3600.0, 3),
        }

    packages: dict[str, Any] = {}
    for package in sorted({t.package for t in tracks}):
        mine = [t for t in tracks if t.package == package]
        packages[package] = {
            **tally(mine),
            "splits": {s: sum(t.split == s for t in mine) for s in SPLITS},
        }
    return {
        "total": tally(tracks),
        "splits": {s: tally(t for t in tracks if t.split == s) for s in SPLITS},
        "sources": {s: tally(t for t in tracks if t.source == s) for s in SOURCES},
        "packages": packages,
        "variants": sum(t.variant_of is not None for t in tracks),
        "duplicates_removed": sum(len(t.duplicates) for t in tracks),
        "split_seed": seed,
        "split_fractions": dict(SPLIT_FRACTIONS),
        "split_sha256": split_digest(tracks),
        "min_track_s": MIN_TRACK_S,
        "content_hash": f"sha1 of int16 mono {HASH_RATE_HZ} Hz, first {HASH_SPAN_S:g} s",
    }


def classify(package: str, path: PurePosixPath | Path) -> str:
    """What a package file is for the corpus.

    One of ``music``, ``midi``, ``module``, ``lmms``, ``pk3``, ``wad``, ``ambience``,
    ``sample`` or ``ignore``. Length is checked later: short "music" files are dropped.
    """
    text = "/" + path.as_posix().lstrip("/")
    suffix = path.suffix.lower()
    if suffix == ".pk3":
        return "pk3"
    if suffix == ".wad":
        return "wad"
    if suffix in LMMS_SUFFIXES:
        return "lmms" if any(d in text for d in LMMS_PROJECT_DIRS) else "ignore"
    if suffix in MIDI_SUFFIXES:
        return "midi"
    if suffix in MODULE_SUFFIXES:
        return "module"
    if suffix not in AUDIO_SUFFIXES:
        return "ignore"
    ambience = AMBIENCE_DIRS.get(package)
    if ambience is not None and ambience in text:
        return "ambience"
    if package in SAMPLE_PACKAGES:
        return "sample"
    if package == "lmms-common":
        return "ignore"  # instrument samples; its songs are the .mmpz projects
    folders = {part.lower() for part in path.parent.parts}
    if package.endswith("-music") or package in ALL_AUDIO_IS_MUSIC or folders & MUSIC_DIR_NAMES:
        return "music"
    return "ignore"


def track_id(package: str, path: PurePosixPath | Path) -> str:
    """A stable id ``package:relative/path/without/suffix``.

    System paths lose their ``/usr/share[/games]/<game>/`` prefix.
    """
    parts = list(PurePosixPath(path.as_posix()).with_suffix("").parts)
    if parts and parts[0] == "/":
        parts = parts[1:]
        for prefix in (["usr", "share", "games"], ["usr", "share"]):
            if parts[: len(prefix)] == prefix and len(parts) > len(prefix) + 1:
                parts = parts[len(prefix) + 1 :]
                break
    return f"{package}:{'/'.join(parts)}"


def openmsx_composer(stem: str) -> str | None:
    """OpenMSX credits; Jim Redfarn's files carry his name."""
    if stem.endswith("_redfarn"):
        return "Jim Redfarn"
    return OPENMSX_COMPOSERS.get(stem)


def title_from_stem(stem: str) -> str:
    """``"01_Some-Song"`` -> ``"01 Some Song"``; never empty."""
    text = " ".join(re.sub(r"[_\-]+", " ", stem).split())
    return text or stem


def split_camel(name: str) -> str:
    """``"TheThings"`` -> ``"The Things"``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)


def ufoai_composer(stem: str) -> str | None:
    """UFO:AI names files ``Composer-Title``, ``composer_title`` or ``ComposerNN``."""
    match = re.match(r"^([A-Za-z]+)[-_]", stem) or re.match(r"^([A-Z][a-z]+)(?=[A-Z0-9])", stem)
    if match is None or match.group(1).lower() in UFOAI_NOT_COMPOSERS:
        return None
    name = match.group(1)
    return UFOAI_COMPOSER_ALIASES.get(name) or split_camel(name)


# ---------------------------------------------------------------------------------------
# MIDI (Standard MIDI File) parsing, sealing and length


@dataclass(frozen=True)
class _Smf:
    format: int
    division: int
    tracks: tuple[tuple[tuple[int, int, bytes], ...], ...]  # (tick, status, data) per event


def _read_vlq(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if pos >= len(data):
            raise CorpusError("MIDI: truncated variable-length number")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos
    raise CorpusError("MIDI: variable-length number longer than 4 bytes")


def _write_vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def parse_smf(data: bytes) -> _Smf:
    """Events of a Standard MIDI File; meta events have status 0xFF and data ``type+body``."""
    if len(data) < 14 or data[:4] != b"MThd":
        raise CorpusError("MIDI: no MThd header")
    header_len, fmt, n_tracks, division = struct.unpack(">IHHH", data[4:14])
    pos = 8 + header_len
    tracks = []
    for _ in range(n_tracks):
        if data[pos : pos + 4] != b"MTrk":
            break  # some files announce more tracks than they hold
        (length,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        pos, end = pos + 8, min(pos + 8 + length, len(data))
        tick, running, events = 0, 0, []
        while pos < end:
            delta, pos = _read_vlq(data, pos)
            tick += delta
            status = data[pos]
            if status == 0xFF:
                size, body = _read_vlq(data, pos + 2)
                events.append((tick, 0xFF, data[pos + 1 : pos + 2] + data[body : body + size]))
                pos = body + size
            elif status in (0xF0, 0xF7):
                size, body = _read_vlq(data, pos + 1)
                events.append((tick, status, data[body : body + size]))
                pos = body + size
            else:
                if status & 0x80:
                    running = status
                    pos += 1
                elif not running:
                    raise CorpusError("MIDI: data byte without a status")
                if running >= 0xF0:
                    raise CorpusError(f"MIDI: unexpected system message 0x{running:02x}")
                size = 1 if running & 0xF0 in (0xC0, 0xD0) else 2
                events.append((tick, running, data[pos : pos + size]))
                pos += size
        tracks.append(tuple(events))
    if not tracks:
        raise CorpusError("MIDI: no tracks")
    return _Smf(format=fmt, division=division, tracks=tuple(tracks))


def _ticks_per_second(smf: _Smf) -> float | None:
    """Ticks per second for SMPTE time division; None for metrical (tempo-based) division."""
    if smf.division & 0x8000:
        fps = 256 - (smf.division >> 8)
        return float(fps * (smf.division & 0xFF))
    return None


def _tempo_map(smf: _Smf) -> list[tuple[int, int]]:
    tempos = [
        (tick, int.from_bytes(data[1:4], "big"))
        for events in smf.tracks
        for tick, status, data in events
        if status == 0xFF and data[:1] == b"\x51" and len(data) >= 4
    ]
    return sorted(tempos)


def _seconds_at(smf: _Smf, tick: int) -> float:
    per_second = _ticks_per_second(smf)
    if per_second is not None:
        return tick / per_second
    seconds, last_tick, tempo_us = 0.0, 0, 500_000
    for at, tempo in _tempo_map(smf):
        if at >= tick:
            break
        seconds += (at - last_tick) * tempo_us / 1e6 / smf.division
        last_tick, tempo_us = at, tempo
    return seconds + (tick - last_tick) * tempo_us / 1e6 / smf.division


def midi_duration_s(data: bytes) -> float:
    """Seconds from the start to the last channel event (note, controller, ...)."""
    smf = parse_smf(data)
    last = max((t for events in smf.tracks for t, s, _ in events if s < 0xF0), default=0)
    return _seconds_at(smf, last)


def seal_midi(data: bytes) -> bytes:
    """The MIDI file plus one track that releases every channel when the music ends.

    fluidsynth (2.3.1 and later) renders until no voice sounds, so a looped voice whose
    note-off got lost (overlapping unisons on one channel are common in music21 output)
    renders forever. At the last event the added track lifts the sustain pedal and sends
    all-notes-off (releases ring out), and SEAL_TAIL_S later all-sound-off on all channels.
    """
    smf = parse_smf(data)
    if smf.format == 2:
        raise CorpusError("MIDI: format 2 (independent sequences) is not supported")
    end = max((t for events in smf.tracks for t, _, _ in events), default=0)
    per_second = _ticks_per_second(smf)
    if per_second is None:
        tempos = [tempo for at, tempo in _tempo_map(smf) if at <= end] or [500_000]
        per_second = smf.division * 1e6 / tempos[-1]
    tail_ticks = max(1, int(SEAL_TAIL_S * per_second))
    body = bytearray(_write_vlq(end))
    release = [bytes([0xB0 | ch, cc, 0]) for ch in range(16) for cc in (64, 123)]
    body += b"\x00".join(release)
    body += _write_vlq(tail_ticks)
    body += b"\x00".join(bytes([0xB0 | ch, 120, 0]) for ch in range(16))
    body += b"\x00\xff\x2f\x00"
    header_len = struct.unpack(">I", data[4:8])[0]
    n_tracks = len(smf.tracks) + 1
    tracks = _track_chunks(data, 8 + header_len, len(smf.tracks))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, n_tracks, smf.division)
    return header + tracks + b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def _track_chunks(data: bytes, pos: int, n_tracks: int) -> bytes:
    out = bytearray()
    for _ in range(n_tracks):
        (length,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        chunk = data[pos : pos + 8 + length]
        if len(chunk) < 8 + length:  # truncated last track: fix its length field
            chunk = chunk[:4] + struct.pack(">I", len(chunk) - 8) + chunk[8:]
        out += chunk
        pos += 8 + length
    return bytes(out)


def wad_midi_lumps(data: bytes) -> list[tuple[str, bytes]]:
    """``(lump name, MIDI bytes)`` for every music lump (D_*) of a Doom WAD stored as MIDI."""
    if len(data) < 12 or data[:4] not in (b"IWAD", b"PWAD"):
        raise CorpusError("WAD: bad header")
    n_lumps, directory = struct.unpack("<ii", data[4:12])
    lumps = []
    for i in range(n_lumps):
        entry = data[directory + 16 * i : directory + 16 * i + 16]
        if len(entry) < 16:
            raise CorpusError("WAD: truncated directory")
        pos, size, raw_name = struct.unpack("<ii8s", entry)
        name = raw_name.split(b"\0", 1)[0].decode("ascii", "replace")
        body = data[pos : pos + size]
        if name.startswith("D_") and body[:4] == b"MThd":
            lumps.append((name, body))
    return lumps


# ---------------------------------------------------------------------------------------
# Package side (dpkg, archives, tags)


class Log:
    """Skipped and failed items: printed once and kept in log.jsonl and the summary."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, str]] = []

    def add(self, kind: str, item: str, reason: str) -> None:
        entry = {"kind": kind, "item": item, "reason": reason}
        self.entries.append(entry)
        print(f"corpus: {kind}: {item}: {reason}", file=sys.stderr)

    def write(self) -> None:
        _write_jsonl(self.path, self.entries)


def dpkg_installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0 and "install ok installed" in proc.stdout


def dpkg_files(package: str) -> list[Path]:
    """Regular files of an installed package; symlinks only when they stay inside it."""
    proc = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True)
    listed = [Path(line) for line in proc.stdout.splitlines() if line.startswith("/")]
    own = {str(p) for p in listed}
    files = []
    for path in listed:
        if path.is_symlink():
            if str(path.resolve()) in own and path.resolve().is_file():
                files.append(path)
        elif path.is_file():
            files.append(path)
    return sorted(files)


def read_list(path: Path) -> list[str]:
    """First word of each non-comment, non-empty line."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            names.append(line.split()[0])
    return names


def read_tags(path: Path) -> dict[str, str]:
    """``title``/``artist``/``album`` (and ``composer``) from tags; missing keys are absent."""
    import mutagen

    try:
        audio = mutagen.File(path, easy=True)
    except (mutagen.MutagenError, OSError, ValueError, LookupError, EOFError, struct.error):
        return {}
    if audio is None or audio.tags is None:
        return {}
    out = {}
    for key in ("title", "artist", "album", "composer"):
        try:
            values = audio.tags.get(key) or []
        except (ValueError, KeyError):
            values = []
        for value in [values] if isinstance(values, str) else values:
            text = " ".join(str(value).replace("\x00", " ").split())
            if text and not _placeholder_tag(text):
                out[key] = text
                break
    return out


def _placeholder_tag(text: str) -> bool:
    lowered = text.lower()
    return lowered.startswith(("http://", "https://", "www.")) or lowered in PLACEHOLDER_TAGS


def stk_music_info(files: Sequence[Path]) -> dict[str, dict[str, str]]:
    """SuperTuxKart ``*.music`` XML: per ogg file name, ``title``/``artist``/``variant_of``."""
    info: dict[str, dict[str, str]] = {}
    for path in files:
        if path.suffix != ".music":
            continue
        try:
            root = ET.fromstring(path.read_bytes())
        except ET.ParseError:
            continue
        title, composer, name = root.get("title"), root.get("composer"), root.get("file")
        if not name:
            continue
        entry = {k: v.strip() for k, v in (("title", title), ("artist", composer)) if v}
        info[name] = entry
        fast = root.get("fast-filename")
        if fast:
            fast_entry = {**entry, "variant_of": name}
            if title:
                fast_entry["title"] = f"{title.strip()} (fast)"
            info[fast] = fast_entry
    return info


def openmsx_titles(files: Sequence[Path]) -> dict[str, str]:
    """OpenMSX ``*.obm`` ``[names]`` section: file name -> title."""
    titles: dict[str, str] = {}
    for path in files:
        if path.suffix != ".obm":
            continue
        section = ""
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[names]" and "=" in line:
                name, title = (part.strip() for part in line.split("=", 1))
                titles[name] = title
    return titles


def extract_pk3(pk3: Path, package: str, dest_root: Path, log: Log) -> list[tuple[Path, str]]:
    """Unpack the music members of a .pk3 (zip) into ``dest_root``; ``(path, member)``."""
    out: list[tuple[Path, str]] = []
    try:
        archive = zipfile.ZipFile(pk3)
    except (zipfile.BadZipFile, OSError) as err:
        log.add("skip", str(pk3), f"not a readable zip: {err}")
        return out
    with archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            member = PurePosixPath(info.filename)
            if info.is_dir() or member.is_absolute() or ".." in member.parts:
                continue
            if classify(package, member) != "music":
                continue
            dest = dest_root / member
            if not (dest.is_file() and dest.stat().st_size == info.file_size):
                dest.parent.mkdir(parents=True, exist_ok=True)
                part = dest.with_name(dest.name + ".part")
                with archive.open(info) as src, part.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                part.replace(dest)
            out.append((dest, info.filename))
    return out


# ---------------------------------------------------------------------------------------
# Rendering


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_RENDER_BYTES, MAX_RENDER_BYTES))


def run_limited(
    cmd: Sequence[str], *, timeout_s: int, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """Run ``cmd`` under ``timeout`` and a file-size limit; ``(exit status, output tail)``."""
    full = ["timeout", "--kill-after=10", str(timeout_s), *cmd]
    proc = subprocess.run(
        full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_limit_file_size,
        env=None if env is None else {**os.environ, **env},
        check=False,
    )
    tail = proc.stdout.decode("utf-8", "replace").strip().splitlines()[-3:]
    return proc.returncode, " | ".join(tail)


def audible_frames(
    samples: npt.NDArray[np.int16], sample_rate_hz: int, *, floor_db: float = SILENCE_FLOOR_DB
) -> int:
    """Frames to keep so that at most TRAILING_QUIET_S of sub-``floor_db`` audio ends the clip.

    ``samples`` is ``[frames, channels]`` int16. Renderers pad the end with silence
    (fluidsynth plays to the last end-of-track, music21 adds an end delay).
    """
    level = np.abs(samples.astype(np.int32)).max(axis=1)
    loud = np.flatnonzero(level > 32767.0 * 10.0 ** (floor_db / 20.0))
    if loud.size == 0:
        return 0
    return min(len(level), int(loud[-1]) + 1 + int(TRAILING_QUIET_S * sample_rate_hz))


def _check_render(tmp: Path, out: Path) -> None:
    """Validate a fresh render, trim its silent tail, and store it as FLAC in ``out``."""
    import soundfile as sf

    if not tmp.is_file() or tmp.stat().st_size < 1024:
        raise CorpusError("no output")
    try:
        audio, rate = sf.read(str(tmp), dtype="int16", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise CorpusError(f"unreadable output: {err}") from err
    if len(audio) > (MAX_RENDER_S + 60) * rate:
        raise CorpusError(f"implausible length {len(audio) / rate:.0f} s")
    keep = audible_frames(audio, rate)
    if keep == 0:
        raise CorpusError("silent output")
    if keep == len(audio) and tmp.suffix == ".flac":
        tmp.replace(out)
        return
    final = out.with_name(out.stem + ".trimmed.flac")
    sf.write(str(final), audio[:keep], rate, format="FLAC", subtype="PCM_16")
    final.replace(out)


def render_midi(midi: Path, out: Path, *, soundfont: Path) -> None:
    """fluidsynth ``midi`` -> ``out`` (flac, RENDER_RATE_HZ). Raises CorpusError on failure."""
    data = midi.read_bytes()
    length_s = midi_duration_s(data)
    if length_s > MAX_RENDER_S:
        raise CorpusError(f"MIDI lasts {length_s:.0f} s, over {MAX_RENDER_S} s")
    sealed = out.with_name(out.stem + ".sealed.mid")
    tmp = out.with_name(out.stem + ".part.flac")
    sealed.write_bytes(seal_midi(data))
    try:
        cmd = ["fluidsynth", "-ni", "-q", "-g", str(FLUIDSYNTH_GAIN), "-r", str(RENDER_RATE_HZ)]
        cmd += ["-T", "flac", "-F", str(tmp), str(soundfont), str(sealed)]
        status, tail = run_limited(cmd, timeout_s=RENDER_TIMEOUT_S)
        if status != 0:
            raise CorpusError(f"fluidsynth exit {status}: {tail}")
        _check_render(tmp, out)
    finally:
        sealed.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def render_module(module: Path, out: Path) -> None:
    """openmpt123 tracker module -> ``out`` (flac, 16-bit, RENDER_RATE_HZ, played once)."""
    tmp = out.with_name(out.stem + ".part.flac")
    cmd = ["openmpt123", "--batch", "--quiet", "--force", "--no-float"]
    cmd += ["--samplerate", str(RENDER_RATE_HZ), "--repeat", "0", "--end-time", str(MAX_RENDER_S)]
    cmd += ["-o", str(tmp), str(module)]
    try:
        status, tail = run_limited(cmd, timeout_s=RENDER_TIMEOUT_S)
        if status != 0:
            raise CorpusError(f"openmpt123 exit {status}: {tail}")
        _check_render(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def render_lmms(project: Path, out: Path) -> None:
    """lmms project -> ``out`` (flac, 44.1 kHz), headless. lmms 1.2 writes no FLAC itself."""
    tmp = out.with_name(out.stem + ".part.wav")
    cmd = ["lmms", "--allowroot", "render", str(project), "-f", "wav", "-o", str(tmp)]
    try:
        status, tail = run_limited(
            cmd, timeout_s=LMMS_TIMEOUT_S, env={"QT_QPA_PLATFORM": "offscreen"}
        )
        # lmms 1.2 often crashes on exit after writing the whole file; keep a readable one.
        if status != 0 and not (tmp.is_file() and status in (-11, 139)):
            raise CorpusError(f"lmms exit {status}: {tail}")
        _check_render(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def music21_to_midi(rel: str, program: int | None, midi_out: Path, meta_out: Path) -> None:
    """(Child process.) Write a music21 corpus piece as MIDI plus a JSON of its metadata."""
    import warnings

    warnings.filterwarnings("ignore")
    from music21 import corpus, defaults, instrument

    defaults.ticksPerQuarter = MUSIC21_TICKS_PER_QUARTER
    score = corpus.parse(rel)
    if hasattr(score, "scores"):  # an Opus: take its first score
        score = score.scores[0]
    if program is not None:
        for part in score.parts:
            insts = list(part.recurse().getElementsByClass(instrument.Instrument))
            if not insts:
                part.insert(0, instrument.Instrument())
                insts = list(part.recurse().getElementsByClass(instrument.Instrument))
            for inst in insts:
                inst.midiProgram = program
    meta = score.metadata
    info = {
        "title": getattr(meta, "title", None),
        "movement": getattr(meta, "movementName", None),
        "composer": getattr(meta, "composer", None),
    }
    tmp = midi_out.with_name(midi_out.stem + ".part.mid")
    score.write("midi", fp=str(tmp))
    meta_out.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(midi_out)


# ---------------------------------------------------------------------------------------
# Build


@dataclass(frozen=True)
class RenderJob:
    """One file to render; ``candidate`` becomes a track candidate once ``out`` exists."""

    src: Path
    out: Path
    renderer: str
    candidate: Candidate
    music21: tuple[str, int | None] | None = None  # (corpus path, GM program) to convert first

    @property
    def name(self) -> str:
        return self.candidate.origin

    def finished_candidate(self) -> Candidate:
        if self.music21 is None:
            return self.candidate
        meta = _load_json(self.src.with_suffix(".json"))
        title = meta.get("title") or meta.get("movement")
        if not _usable_music21_title(title):
            title = None
        artist = self.candidate.artist or meta.get("composer")
        return replace(self.candidate, title=title or self.candidate.title, artist=artist)


def _usable_music21_title(title: object) -> bool:
    """music21 fills titles with file names or voice names ("CANTO") when a score has none."""
    if not isinstance(title, str) or title.endswith((".mxl", ".xml", ".krn", ".abc")):
        return False
    return not (title.isupper() and " " not in title)


def _run_job(job: RenderJob) -> tuple[RenderJob, str | None, float]:
    """(Worker thread.) Render one job; ``(job, error or None, seconds)``."""
    started = time.monotonic()
    job.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if job.music21 is not None and not job.src.is_file():
            rel, program = job.music21
            job.src.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--music21-to-midi", rel]
            cmd += ["--program", str(-1 if program is None else program)]
            cmd += ["--midi-out", str(job.src), "--meta-out", str(job.src.with_suffix(".json"))]
            status, tail = run_limited(cmd, timeout_s=MUSIC21_TIMEOUT_S)
            if status != 0 or not job.src.is_file():
                raise CorpusError(f"music21 exit {status}: {tail}")
        if job.renderer == "fluidsynth":
            render_midi(job.src, job.out, soundfont=SOUNDFONT)
        elif job.renderer == "openmpt123":
            render_module(job.src, job.out)
        else:
            render_lmms(job.src, job.out)
    except (CorpusError, OSError) as err:
        return job, str(err), time.monotonic() - started
    return job, None, time.monotonic() - started


@dataclass
class Build:
    out: Path
    packages: Sequence[str]
    music21_pieces: int
    speech_clips: int
    seed: int
    retry_failed: bool
    log: Log
    candidates: list[Candidate] = field(default_factory=list)
    jobs: list[RenderJob] = field(default_factory=list)
    ambience: list[tuple[str, Path]] = field(default_factory=list)
    samples: list[tuple[str, Path]] = field(default_factory=list)

    # -- collecting ------------------------------------------------------------------

    def collect(self) -> None:
        for package in self.packages:
            if not dpkg_installed(package):
                self.log.add("skip", package, "package not installed")
                continue
            files = dpkg_files(package)
            self._collect_package(package, files)

    def _collect_package(self, package: str, files: Sequence[Path]) -> None:
        stk = stk_music_info(files) if package == "supertuxkart-data" else {}
        titles = openmsx_titles(files)
        for path in files:
            kind = classify(package, path)
            if kind == "music":
                self._add_audio(package, path, str(path), stk.get(path.name, {}))
            elif kind == "pk3":
                dest = self.out / "extracted" / package
                for member_path, member in extract_pk3(path, package, dest, self.log):
                    self._add_audio(package, member_path, f"{path}:{member}", {}, member=member)
            elif kind == "wad":
                self._collect_wad(package, path)
            elif kind == "midi":
                hints = {"title": titles.get(path.name), "artist": openmsx_composer(path.stem)}
                self._add_render(package, path, track_id(package, path), "fluidsynth", hints)
            elif kind == "module":
                self._add_render(package, path, track_id(package, path), "openmpt123", {})
            elif kind == "lmms":
                self._add_render(package, path, track_id(package, path), "lmms", _lmms_hints(path))
            elif kind == "ambience":
                self.ambience.append((package, path))
            elif kind == "sample":
                self.samples.append((package, path))

    def _add_audio(
        self,
        package: str,
        path: Path,
        origin: str,
        hints: Mapping[str, str],
        *,
        member: str | None = None,
    ) -> None:
        where = PurePosixPath(member) if member is not None else path
        tid = track_id(package, where)
        base = hints.get("variant_of")
        base_stem = Path(base).stem if base else variant_base_stem(path.stem)
        variant_base = f"{tid.rsplit('/', 1)[0]}/{base_stem}" if base_stem else None
        artist = hints.get("artist")
        if package == "ufoai-music":
            artist = ufoai_composer(path.stem)
        self.candidates.append(
            Candidate(
                id=tid,
                path=path,
                package=package,
                source="debian",
                origin=origin,
                title=hints.get("title"),
                artist=artist,
                variant_base=variant_base,
            )
        )

    def _collect_wad(self, package: str, wad: Path) -> None:
        try:
            lumps = wad_midi_lumps(wad.read_bytes())
        except CorpusError as err:
            self.log.add("skip", str(wad), str(err))
            return
        seen: set[str] = set()
        album = {"freedoom1": "Freedoom: Phase 1", "freedoom2": "Freedoom: Phase 2"}.get(wad.stem)
        for name, body in lumps:
            digest = hashlib.sha1(body).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            dest = self.out / "extracted" / package / wad.stem / f"{name}.mid"
            if not (dest.is_file() and dest.read_bytes() == body):
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(body)
            tid = f"{package}:{wad.stem}/{name}"
            hints = {"title": name.removeprefix("D_"), "album": album or package}
            self._add_render(package, dest, tid, "fluidsynth", hints, origin=f"{wad}:{name}")

    def _add_render(
        self,
        package: str,
        src: Path,
        tid: str,
        renderer: str,
        hints: Mapping[str, str | None],
        *,
        origin: str | None = None,
        source: str | None = None,
        music21: tuple[str, int | None] | None = None,
    ) -> None:
        """Queue a render of ``src`` (or take the earlier one) for candidate ``tid``."""
        rel = tid.split(":", 1)[1]
        out = self.out / "rendered" / package / f"{rel}.flac"
        if source is None:
            source = "midi" if renderer == "fluidsynth" else "debian"
        job = RenderJob(
            src=src,
            out=out,
            renderer=renderer,
            music21=music21,
            candidate=Candidate(
                id=tid,
                path=out,
                package=package,
                source=source,
                origin=origin or str(src),
                renderer=renderer,
                title=hints.get("title"),
                artist=hints.get("artist"),
                album=hints.get("album"),
            ),
        )
        failed = out.with_suffix(".failed")
        if out.is_file():
            self.candidates.append(job.finished_candidate())
        elif failed.is_file() and not self.retry_failed:
            reason = failed.read_text(encoding="utf-8").strip()
            self.log.add("render-failed", job.name, f"(earlier run) {reason}")
        elif shutil.which(renderer) is None:
            self.log.add("skip", job.name, f"{renderer} not installed")
        elif renderer == "fluidsynth" and not SOUNDFONT.is_file():
            self.log.add("skip", job.name, f"soundfont {SOUNDFONT} missing")
        else:
            self.jobs.append(job)

    def collect_music21(self) -> None:
        for rel, program in MUSIC21_PIECES[: self.music21_pieces]:
            stem = str(PurePosixPath(rel).with_suffix(""))
            midi = self.out / "extracted" / "music21" / f"{stem}.mid"
            folder = rel.split("/", 1)[0]
            hints = {
                "title": title_from_stem(stem.replace("/", " ")),
                "artist": MUSIC21_COMPOSERS.get(folder),
                "album": f"music21 corpus: {folder}",
            }
            self._add_render(
                "music21",
                midi,
                f"music21:{stem}",
                "fluidsynth",
                hints,
                origin=f"music21:{rel}",
                source="music21",
                music21=(rel, program),
            )

    def render_all(self, workers: int) -> None:
        """Run the queued renders, ``workers`` at a time; failures leave a ``.failed`` note."""
        if not self.jobs:
            return
        print(f"corpus: rendering {len(self.jobs)} files, {workers} at a time", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for job, error, took_s in pool.map(_run_job, self.jobs):
                failed = job.out.with_suffix(".failed")
                if error is not None:
                    failed.write_text(f"{error}\n", encoding="utf-8")
                    self.log.add("render-failed", job.name, error)
                    continue
                failed.unlink(missing_ok=True)
                self.candidates.append(job.finished_candidate())
                print(f"corpus: rendered {job.candidate.id} in {took_s:.1f} s", file=sys.stderr)
        self.jobs.clear()

    # -- probing ---------------------------------------------------------------------

    def probe_all(self) -> list[Track]:
        cache_path = self.out / "cache" / "probe.json"
        cache: dict[str, Any] = _load_json(cache_path)
        tracks = []
        for i, cand in enumerate(self.candidates):
            try:
                probe = _probe_cached(cand.path, cache)
            except CorpusError as err:
                self.log.add("skip", str(cand.path), str(err))
                continue
            if i % 50 == 49:
                _write_json(cache_path, cache)
            if probe.duration_s < MIN_TRACK_S or probe.content_hash is None:
                continue
            tracks.append(self._track(cand, probe))
        _write_json(cache_path, cache)
        return tracks

    def _track(self, cand: Candidate, probe: Probe) -> Track:
        tags = read_tags(cand.path) if cand.source == "debian" and cand.renderer is None else {}
        stem = PurePosixPath(cand.origin.rsplit(":", 1)[-1]).stem
        return Track(
            id=cand.id,
            path=str(cand.path.resolve()),
            package=cand.package,
            title=tags.get("title") or cand.title or title_from_stem(stem),
            artist=tags.get("artist") or tags.get("composer") or cand.artist,
            album=tags.get("album") or cand.album or cand.package,
            duration_s=round(probe.duration_s, 3),
            sample_rate_hz=probe.sample_rate_hz,
            channels=probe.channels,
            content_hash=probe.content_hash or "",
            source=cand.source,
            variant_of=cand.variant_base,
            renderer=cand.renderer,
            origin=cand.origin,
        )

    # -- augmentation ----------------------------------------------------------------

    def write_augmentation(self) -> None:
        cache_path = self.out / "cache" / "probe.json"
        cache: dict[str, Any] = _load_json(cache_path)
        for name, items, min_s in (
            ("ambience.jsonl", self.ambience, AMBIENCE_MIN_S),
            ("samples.jsonl", self.samples, 0.0),
        ):
            rows = []
            for package, path in items:
                try:
                    probe = _probe_cached(path, cache, want_hash=False)
                except CorpusError as err:
                    self.log.add("skip", str(path), str(err))
                    continue
                if probe.duration_s < min_s:
                    continue
                rows.append(
                    {
                        "path": str(path),
                        "package": package,
                        "name": path.stem,
                        "duration_s": round(probe.duration_s, 3),
                        "sample_rate_hz": probe.sample_rate_hz,
                        "channels": probe.channels,
                    }
                )
            if rows or name == "ambience.jsonl":
                _write_jsonl(self.out / name, rows)
        _write_json(cache_path, cache)

    def write_speech(self) -> list[dict[str, Any]]:
        if self.speech_clips <= 0:
            return []
        if shutil.which("espeak-ng") is None:
            self.log.add("skip", "speech", "espeak-ng not installed")
            return []
        import soundfile as sf
        import soxr

        folder = self.out / "speech"
        folder.mkdir(parents=True, exist_ok=True)
        previous = {row.get("path"): row for row in _read_jsonl(self.out / "speech.jsonl")}
        rng = random.Random(self.seed)
        others = [lang for lang in sorted(SPEECH_TEXTS) if lang != "en"]
        min_samples = int(SPEECH_MIN_S * SPEECH_RATE_HZ)
        rows = []
        for i in range(self.speech_clips):
            # Half the clips in English (a quarter US), the rest cycle through the others.
            lang = others[(i // 2) % len(others)] if i % 2 else ("en-us" if i % 4 == 2 else "en")
            texts = SPEECH_TEXTS[lang.split("-")[0]]
            voice = lang + SPEECH_VARIANTS[i % len(SPEECH_VARIANTS)]
            speed_wpm = rng.randrange(130, 200, 5)
            pitch = rng.randrange(25, 75, 5)
            first = rng.randrange(len(texts))
            path = folder / f"speech_{i:02d}_{voice.replace('+', '_')}.wav"
            if path.is_file() and str(path.resolve()) in previous:
                rows.append(previous[str(path.resolve())])
                continue
            text, clip = "", np.zeros(0, dtype=np.float32)
            for k in range(4):  # add sentences until the clip is long enough
                text = f"{text} {texts[(first + k) % len(texts)]}".strip()
                clip = _espeak(voice, speed_wpm, pitch, text, folder / ".part.wav")
                if clip.size:
                    clip = soxr.resample(clip, _ESPEAK_RATE_HZ, SPEECH_RATE_HZ).astype(np.float32)
                if clip.size >= min_samples:
                    break
            if clip.size < min_samples:
                self.log.add("skip", f"speech {voice}", "espeak-ng gave too little audio")
                continue
            clip = _fade_out(clip[: int(SPEECH_MAX_S * SPEECH_RATE_HZ)], SPEECH_RATE_HZ)
            sf.write(str(path), clip, SPEECH_RATE_HZ, subtype="PCM_16")
            rows.append(
                {
                    "path": str(path.resolve()),
                    "voice": voice,
                    "speed_wpm": speed_wpm,
                    "pitch": pitch,
                    "text": text,
                    "duration_s": round(clip.size / SPEECH_RATE_HZ, 3),
                    "sample_rate_hz": SPEECH_RATE_HZ,
                }
            )
        (folder / ".part.wav").unlink(missing_ok=True)
        _write_jsonl(self.out / "speech.jsonl", rows)
        return rows


_ESPEAK_RATE_HZ = 22050


def _espeak(
    voice: str, speed_wpm: int, pitch: int, text: str, tmp: Path
) -> npt.NDArray[np.float32]:
    import soundfile as sf

    cmd = ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(tmp), text]
    status, _ = run_limited(cmd, timeout_s=60)
    if status != 0 or not tmp.is_file():
        return np.zeros(0, dtype=np.float32)
    audio, rate = sf.read(str(tmp), dtype="float32", always_2d=True)
    if rate != _ESPEAK_RATE_HZ:
        raise CorpusError(f"espeak-ng wrote {rate} Hz, expected {_ESPEAK_RATE_HZ}")
    mono: npt.NDArray[np.float32] = audio.mean(axis=1, dtype=np.float32)
    return mono


def _fade_out(clip: npt.NDArray[np.float32], rate_hz: int) -> npt.NDArray[np.float32]:
    n = min(clip.size, int(SPEECH_FADE_S * rate_hz))
    out = clip.copy()
    if n:
        out[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return out


def _lmms_hints(path: Path) -> dict[str, str | None]:
    """LMMS demos are named ``Artist-Title``."""
    artist, sep, title = path.stem.partition("-")
    if not sep:
        return {"title": title_from_stem(path.stem), "artist": None, "album": "LMMS demos"}
    return {"title": title_from_stem(title), "artist": artist, "album": "LMMS demos"}


def _probe_cached(path: Path, cache: dict[str, Any], *, want_hash: bool = True) -> Probe:
    """Duration, rate, channels (and content hash when long enough), cached by size+mtime."""
    import soundfile as sf

    try:
        stat = path.stat()
    except OSError as err:
        raise CorpusError(f"cannot stat: {err}") from err
    key = str(path)
    entry = cache.get(key)
    stamp = [stat.st_size, stat.st_mtime_ns]
    if not (isinstance(entry, dict) and entry.get("stamp") == stamp):
        try:
            info = sf.info(key)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise CorpusError(f"undecodable: {err}") from err
        entry = {
            "stamp": stamp,
            "duration_s": float(info.duration),
            "sample_rate_hz": int(info.samplerate),
            "channels": int(info.channels),
            "content_hash": None,
        }
        cache[key] = entry
    if want_hash and entry["content_hash"] is None and entry["duration_s"] >= MIN_TRACK_S:
        rate = entry["sample_rate_hz"]
        try:
            audio, _ = sf.read(key, frames=int(HASH_SPAN_S * rate), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise CorpusError(f"undecodable: {err}") from err
        entry["content_hash"] = content_hash(audio, rate)
    return Probe(
        duration_s=entry["duration_s"],
        sample_rate_hz=entry["sample_rate_hz"],
        channels=entry["channels"],
        content_hash=entry["content_hash"],
    )


def resolve_variants(tracks: Sequence[Track], candidates: Sequence[Candidate]) -> list[Track]:
    """Point ``variant_of`` at the kept id of the base track, or None when it is absent.

    ``tracks`` are de-duplicated; a base that lost to a duplicate maps to the kept copy.
    """
    kept_by_path = {}
    for track in tracks:
        kept_by_path[track.path] = track.id
        for dup in track.duplicates:
            kept_by_path[dup] = track.id
    id_to_path = {c.id: str(c.path.resolve()) for c in candidates}
    out = []
    for track in tracks:
        base = track.variant_of
        kept = kept_by_path.get(id_to_path.get(base, "")) if base else None
        out.append(replace(track, variant_of=kept if kept != track.id else None))
    return out


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    allowed = set(read_list(Path(args.allowed_file)))
    packages = read_list(Path(args.packages_file))
    refused = [p for p in packages if p not in allowed]
    if refused:
        raise CorpusError(
            f"not in {args.allowed_file} (reserved for held-out evaluation): {', '.join(refused)}"
        )
    log = Log(out / "log.jsonl")
    job = Build(
        out=out,
        packages=packages,
        music21_pieces=args.music21_pieces,
        speech_clips=args.speech_clips,
        seed=args.seed,
        retry_failed=args.retry_failed,
        log=log,
    )
    job.collect()
    job.collect_music21()
    job.render_all(args.jobs)
    print(f"corpus: probing {len(job.candidates)} candidate files", file=sys.stderr)
    probed = job.probe_all()
    counts = Counter(t.id for t in probed)
    clashes = sorted(tid for tid, n in counts.items() if n > 1)
    if clashes:
        raise CorpusError(f"track ids not unique: {', '.join(clashes[:5])}")
    tracks = assign_splits(resolve_variants(dedupe(probed), job.candidates), seed=args.seed)
    rows = [t.to_json() for t in tracks]
    for row in rows:
        validate_row(row)
    _write_jsonl(out / "manifest.jsonl", rows)
    job.write_augmentation()
    speech = job.write_speech()
    summary = summarize(tracks, seed=args.seed)
    summary["candidates_probed"] = len(probed)
    summary["ambience_files"] = len(_read_jsonl(out / "ambience.jsonl"))
    summary["speech_clips"] = len(speech)
    summary["packages_requested"] = list(packages)
    summary["problems"] = dict(Counter(e["kind"] for e in log.entries))
    summary["runtime_s"] = round(time.monotonic() - started, 1)
    _write_json(out / "manifest-summary.json", summary)
    log.write()
    print(format_summary(summary))
    print(f"corpus: manifest {out / 'manifest.jsonl'}")
    return 0


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError):
        return []


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = [f"{'split':<8}{'tracks':>8}{'hours':>9}"]
    for name in SPLITS:
        row = summary["splits"][name]
        lines.append(f"{name:<8}{row['tracks']:>8}{row['hours']:>9.2f}")
    total = summary["total"]
    lines.append(f"{'total':<8}{total['tracks']:>8}{total['hours']:>9.2f}")
    lines.append(
        f"packages {len(summary['packages'])}, variants {summary['variants']}, "
        f"duplicates removed {summary['duplicates_removed']}, "
        f"split sha256 {summary['split_sha256'][:12]}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="corpus", help="output folder")
    parser.add_argument("--packages-file", help="packages to scan, one per line")
    parser.add_argument("--allowed-file", help="dev-packages.txt: the allowed packages")
    parser.add_argument("--music21-pieces", type=int, default=len(MUSIC21_PIECES))
    parser.add_argument("--speech-clips", type=int, default=30)
    parser.add_argument("--seed", type=int, default=SPLIT_SEED)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel renders")
    parser.add_argument("--retry-failed", action="store_true", help="retry failed renders")
    # Internal: one music21 piece to MIDI, run as a child process under `timeout`.
    parser.add_argument("--music21-to-midi", metavar="CORPUS_PATH", help=argparse.SUPPRESS)
    parser.add_argument("--program", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--midi-out", help=argparse.SUPPRESS)
    parser.add_argument("--meta-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.music21_to_midi:
            program = None if args.program < 0 else args.program
            music21_to_midi(args.music21_to_midi, program, Path(args.midi_out), Path(args.meta_out))
            return 0
        if not args.packages_file or not args.allowed_file:
            parser.error("--packages-file and --allowed-file are required")
        return build(args)
    except CorpusError as err:
        print(f"corpus: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
