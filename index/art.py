"""Cover art embedded in audio files (mutagen): pick the front cover, check it, keep it small.

Best effort, like the tags: a file without a picture, with a picture that is
not an image a browser shows (JPEG, PNG, GIF, WebP, told by its first bytes,
never by the tag's declared type), or with one over ``ART_MAX_BYTES`` simply
has no art, and is indexed as usual.

Nothing here resizes: no image library is among the dependencies, and the
overlay scales the picture itself. Instead a picture larger than
``ART_MAX_BYTES`` is left out, and the store keeps one copy per distinct
picture (an album's tracks share one cover), so art adds about one cover per
album to an index.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mutagen
import mutagen.flac

ART_MAX_BYTES = 1 << 20
"""1 MiB: a 1400 px JPEG cover (the size stores ship) fits; a print scan does not."""
FRONT_COVER = 3
"""The picture type of a front cover (ID3 APIC and FLAC/Vorbis METADATA_BLOCK_PICTURE)."""

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
# mutagen wraps most parse failures in MutagenError; corrupt containers leak the rest.
_ART_ERRORS = (
    mutagen.MutagenError,
    OSError,
    ValueError,
    LookupError,
    EOFError,
    TypeError,
    struct.error,
    UnicodeError,
)


@dataclass(frozen=True, slots=True)
class CoverArt:
    """One picture: its bytes and their media type (as sniffed from the bytes)."""

    mime: str
    data: bytes

    @property
    def sha256(self) -> str:
        """Hex sha256 of ``data``: the picture's key in the store."""
        return hashlib.sha256(self.data).hexdigest()


def image_mime(data: bytes) -> str | None:
    """The media type of an image a browser shows, from its first bytes; ``None`` otherwise."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def checked_art(data: bytes) -> CoverArt | None:
    """``data`` as cover art, or ``None`` when it is not a shown image or is too large."""
    if not data or len(data) > ART_MAX_BYTES:
        return None
    mime = image_mime(data)
    return None if mime is None else CoverArt(mime=mime, data=bytes(data))


def choose_cover(pictures: Iterable[tuple[int, bytes]]) -> CoverArt | None:
    """The cover among ``(picture type, bytes)`` pairs, in file order.

    A front cover wins; only a file without one falls back to its other
    pictures. A front cover that is unusable (too large, not an image) means
    no art rather than the back cover or a band photo in its place.
    """
    found = list(pictures)
    fronts = [data for kind, data in found if kind == FRONT_COVER]
    for data in fronts or [data for _, data in found]:
        art = checked_art(data)
        if art is not None:
            return art
    return None


def read_cover_art(path: str | os.PathLike[str]) -> CoverArt | None:
    """The embedded cover of an audio file, or ``None``. Never raises on bad files or tags.

    Reads ID3 APIC frames (MP3, and WAV or AIFF with an ID3 chunk), FLAC
    picture blocks, and Vorbis comments' ``METADATA_BLOCK_PICTURE`` (Ogg
    Vorbis, Opus).
    """
    try:
        audio = mutagen.File(Path(path))
        if audio is None:
            return None
        return choose_cover(_pictures(audio))
    except _ART_ERRORS:
        return None


def _pictures(audio: Any) -> list[tuple[int, bytes]]:
    found: list[tuple[int, bytes]] = []
    for picture in getattr(audio, "pictures", None) or ():  # FLAC picture blocks
        found.append((int(picture.type), bytes(picture.data)))
    tags = audio.tags
    if tags is None:
        return found
    if hasattr(tags, "getall"):  # ID3
        found += [(int(frame.type), bytes(frame.data)) for frame in tags.getall("APIC")]
    elif hasattr(tags, "get"):  # Vorbis comments (Ogg Vorbis, Opus; FLAC's own)
        for text in tags.get("metadata_block_picture", None) or ():
            try:
                data = base64.b64decode(text, validate=False)
                picture = mutagen.flac.Picture(data)  # type: ignore[no-untyped-call]
            except _ART_ERRORS:  # binascii.Error is a ValueError
                continue
            found.append((int(picture.type), bytes(picture.data)))
    return found
