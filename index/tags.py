"""Track metadata from tags (mutagen), with file-name fallbacks.

Tags are best effort: a file whose tags cannot be read still gets a title
(from its name) and an album (from its folder), and is indexed normally.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mutagen

from synesthete.stream.avdecode import AV_ONLY_SUFFIXES, import_av

# mutagen wraps most parse failures in MutagenError, but some container
# parsers leak the underlying struct/index/value errors on corrupt files.
_TAG_ERRORS = (
    mutagen.MutagenError,
    OSError,
    ValueError,
    LookupError,
    EOFError,
    struct.error,
    UnicodeError,
)


def displayable(name: str) -> str:
    """A file or folder name as text: bytes that are not UTF-8 become U+FFFD.

    Python decodes such names with surrogate escapes (``b"caf\\xe9"`` ->
    ``"caf\\udce9"``), which keeps the path exact but cannot be written as
    UTF-8 (sqlite, JSON, a terminal). Titles and albums are for people, so they
    get the replacement character; the stored path keeps the exact bytes.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name decode produced
        raw = name.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def title_from_filename(path: Path) -> str:
    """``01_Some-Song.flac`` -> ``01 Some Song``; never empty."""
    title = re.sub(r"[_\-]+", " ", displayable(path.stem))
    title = " ".join(title.split())
    return title or displayable(path.name)


def read_tags(path: str | os.PathLike[str]) -> tuple[str, str | None, str | None]:
    """``(title, artist, album)`` of an audio file. Never raises on bad or missing tags.

    The first non-empty value of each tag is used. Without a title tag the
    title comes from the file name (underscores and hyphens become spaces);
    without an album tag the album is the parent folder's name. A missing
    artist stays ``None``.
    """
    where = Path(path)
    tags = _easy_tags(where)
    if where.suffix.lower() in AV_ONLY_SUFFIXES and not all(
        _first(tags, key) for key in ("title", "artist", "album")
    ):
        # mutagen has no easy keys for WMA (ASF) and does not read Matroska/WebM at all;
        # FFmpeg reads the tags of every container it decodes.
        tags = {**_av_tags(where), **{k: v for k, v in tags.items() if _first(tags, k)}}
    title = _first(tags, "title") or title_from_filename(where)
    artist = _first(tags, "artist")
    album = _first(tags, "album") or (displayable(where.parent.name) or None)
    return title, artist, album


_AV_KEYS = {"title": "title", "artist": "artist", "author": "artist", "album": "album"}


def _av_tags(path: Path) -> dict[str, str]:
    """Title, artist and album as FFmpeg reads them (container, then first audio stream)."""
    try:
        av = import_av()
        with av.open(os.fsdecode(path), mode="r") as container:
            found = dict(container.metadata)
            audio = [s for s in container.streams if s.type == "audio"]
            if audio:
                found = {**dict(audio[0].metadata), **found}
    except Exception:  # tags are best effort: the decoder reports a bad file
        return {}
    tags: dict[str, str] = {}
    for key, value in found.items():
        name = _AV_KEYS.get(str(key).lower())
        if name is not None and isinstance(value, str) and value.strip() and name not in tags:
            tags[name] = value
    return tags


def _easy_tags(path: Path) -> Mapping[str, Any]:
    try:
        audio = mutagen.File(path, easy=True)
    except _TAG_ERRORS:
        return {}
    if audio is None or audio.tags is None:
        return {}
    try:
        return dict(audio.tags)
    except _TAG_ERRORS:
        return {}


def _first(tags: Mapping[str, Any], key: str) -> str | None:
    values = tags.get(key)
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    try:
        candidates = list(values)
    except TypeError:
        return None
    for value in candidates:
        text = " ".join(displayable(str(value)).replace("\x00", " ").split())
        if text:
            return text
    return None
