"""Tags through mutagen, with file-name and folder fallbacks; never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import write_bad_files, write_tone_file
from mutagen.easyid3 import EasyID3
from mutagen.flac import FLAC
from mutagen.oggvorbis import OggVorbis

from synesthete.index.tags import read_tags, title_from_filename


@pytest.mark.parametrize(("suffix", "tagger"), [("flac", FLAC), ("ogg", OggVorbis)])
def test_vorbis_comment_tags(tmp_path, suffix, tagger):
    path = write_tone_file(tmp_path / "Some Album" / f"file.{suffix}", seed=1, duration_s=5.0)
    tags = tagger(path)
    tags["title"] = ["  Real Title  ", "second value"]
    tags["artist"] = "The Artist"
    tags["album"] = "Tagged Album"
    tags.save()
    assert read_tags(path) == ("Real Title", "The Artist", "Tagged Album")


def test_id3_tags_on_mp3(tmp_path):
    path = write_tone_file(tmp_path / "x.mp3", seed=2, duration_s=5.0)
    tags = EasyID3()
    tags["title"] = "Mp3 Title"
    tags["artist"] = "Mp3 Artist"
    tags.save(path)
    assert read_tags(path) == ("Mp3 Title", "Mp3 Artist", tmp_path.name)


def test_untagged_file_falls_back_to_name_and_folder(tmp_path):
    path = write_tone_file(tmp_path / "My Album" / "01_my-song__mix.wav", seed=3, duration_s=5.0)
    assert read_tags(path) == ("01 my song mix", None, "My Album")


@pytest.mark.parametrize("kind", ["empty", "corrupt", "truncated", "text"])
def test_unreadable_tags_never_raise(tmp_path, kind):
    path = write_bad_files(tmp_path / "Bad Folder")[kind]
    title, artist, album = read_tags(path)
    assert title == title_from_filename(path)
    assert artist is None
    assert album == "Bad Folder"


def test_missing_file_never_raises(tmp_path):
    assert read_tags(tmp_path / "gone.flac") == ("gone", None, tmp_path.name)


def test_title_from_filename_never_empty():
    assert title_from_filename(Path("/x/___.mp3")) == "___.mp3"
    assert title_from_filename(Path("/x/a-b_c.flac")) == "a b c"
