"""build / add / remove / stats over real files, real sqlite and real Annoy in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import (
    GOOD_TRACKS,
    FakeEncoder,
    make_tone_track,
    write_bad_files,
    write_good_library,
    write_tone_file,
)
from mutagen.flac import FLAC
from mutagen.oggvorbis import OggVorbis

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.errors import ConfigError, LibraryError, ModelError
from synesthete.index.builder import (
    ProgressCallback,
    add_to_index,
    build_index,
    distance_scale_of,
    index_stats,
    remove_from_index,
)
from synesthete.index.config import DEFAULT_SPEED_VARIANTS, IndexConfig, parse_speed_variants
from synesthete.index.decode import load_mono_16k
from synesthete.index.store import GenerationWriter, Library

DURATION_S = 8.0


class RecordingProgress:
    def __init__(self):
        self.total = None
        self.files: list[tuple[str, str]] = []
        self.windows = 0

    def on_start(self, total_files):
        self.total = total_files

    def on_file(self, path, status):
        self.files.append((path.name, status))

    def on_windows(self, n):
        self.windows += n


def expected_windows(path, hop_samples=8000, speeds=(1.0, *DEFAULT_SPEED_VARIANTS)):
    """Windows embedded for a file: its own plus each speed variant's (n / speed samples)."""
    n = load_mono_16k(path).shape[0]
    return sum(1 + (round(n / speed) - WINDOW_SAMPLES) // hop_samples for speed in speeds)


def generations(index_dir):
    return sorted(p.name for p in index_dir.iterdir() if p.name.startswith("gen-"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    music = root / "music"
    good = write_good_library(music, duration_s=DURATION_S)
    bad = write_bad_files(music / "Bad")
    (music / "cover.jpg").write_bytes(b"\xff\xd8 not audio, not reported")
    tagged_flac = FLAC(good[1])
    tagged_flac["title"] = "Tagged Flac Title"
    tagged_flac["artist"] = "Flac Artist"
    tagged_flac["album"] = "Flac Album"
    tagged_flac.save()
    tagged_ogg = OggVorbis(good[2])
    tagged_ogg["title"] = "Tagged Ogg Title"
    tagged_ogg["artist"] = "Ogg Artist"
    tagged_ogg.save()
    progress = RecordingProgress()
    encoder = FakeEncoder()
    report = build_index(
        root / "index", [music], encoder=encoder, config=IndexConfig(), progress=progress
    )
    return root, good, bad, report, progress, encoder


def test_good_files_indexed_and_bad_ones_reported(built):
    _, good, bad, report, _, _ = built
    assert [t.path for t in report.indexed] == [str(p) for p in good]
    assert [t.id for t in report.indexed] == [1, 2, 3, 4, 5, 6]
    reasons = dict(report.skipped)
    assert set(reasons) == {str(p) for p in bad.values()}
    assert reasons[str(bad["empty"])] == "empty file"
    assert reasons[str(bad["corrupt"])].startswith("cannot decode")
    assert reasons[str(bad["truncated"])].startswith("truncated or corrupt audio data")
    assert reasons[str(bad["text"])].startswith("not a recognised audio format")
    assert reasons[str(bad["silent"])].startswith("silent")
    assert reasons[str(bad["short"])].startswith("too short")
    assert report.generation == "gen-000001"
    assert report.windows == sum(expected_windows(p) for p in good)
    assert report.total_windows == report.windows and report.total_tracks == 6
    assert report.audio_s == pytest.approx(6 * DURATION_S, abs=0.3)


def test_report_json_and_summary(built):
    _, good, bad, report, _, _ = built
    data = json.loads(report.to_json())
    assert data["action"] == "build"
    assert len(data["indexed"]) == len(good)
    assert {s["path"] for s in data["skipped"]} == {str(p) for p in bad.values()}
    assert data["windows"] == report.windows
    assert data["elapsed_s"] >= 0
    summary = report.summary()
    assert "indexed 6 files" in summary and "skipped 6" in summary and "\n" not in summary


def test_progress_callbacks(built):
    _, good, bad, report, progress, encoder = built
    assert isinstance(progress, ProgressCallback)
    assert progress.total == len(good) + len(bad)
    statuses = dict(progress.files)
    assert len(progress.files) == len(good) + len(bad)
    assert all(statuses[p.name] == "indexed" for p in good)
    assert all(statuses[p.name] == "skipped" for p in bad.values())
    # Windows of files rejected at the end (silence) were embedded too, then dropped.
    assert progress.windows == encoder.windows_embedded >= report.windows


def test_tags_and_fallbacks(built):
    root, _, _, _, _, _ = built
    with Library.open(root / "index") as lib:
        first = lib.info(1)
        assert (first.title, first.artist, first.album) == ("01 First Song", None, "Album One")
        flac = lib.info(2)
        assert (flac.title, flac.artist, flac.album) == (
            "Tagged Flac Title",
            "Flac Artist",
            "Flac Album",
        )
        ogg = lib.info(3)
        assert (ogg.title, ogg.artist, ogg.album) == ("Tagged Ogg Title", "Ogg Artist", "Album One")
        assert lib.info(5).title == "E FIFTH"


def test_stats(built):
    root, good, _, report, _, _ = built
    stats = index_stats(root / "index")
    assert stats["generation"] == "gen-000001"
    assert stats["tracks"] == len(good)
    assert stats["windows"] == report.windows
    assert stats["encoder_name"] == "fake-v1" and stats["dim"] == 32
    assert stats["index_hop_s"] == 0.5
    # Albums: two tagged or from folders ("Album One", "Album Two", "sub"), one tag.
    assert stats["artists"] == 2 and stats["albums"] == 4
    json.dumps(stats)


def test_tail_shorter_than_a_hop_is_not_embedded(tmp_path):
    path = write_tone_file(tmp_path / "m" / "x.wav", seed=1, duration_s=10.3, sample_rate_hz=16_000)
    report = build_index(tmp_path / "i", [path], encoder=FakeEncoder(), config=IndexConfig())
    assert report.indexed[0].windows == 1 + (164_800 - 64_000) // 8000 == 13
    config = IndexConfig(index_hop_s=1.0)
    report = build_index(tmp_path / "j", [path], encoder=FakeEncoder(), config=config)
    assert report.indexed[0].windows == 7
    with Library.open(tmp_path / "j") as lib:
        assert lib.index_hop_s == 1.0


def test_duplicate_content_is_skipped(tmp_path):
    music = tmp_path / "music"
    original = write_tone_file(music / "a.flac", seed=1, duration_s=DURATION_S)
    shutil.copy(original, music / "b.flac")
    report = build_index(tmp_path / "i", [music], encoder=FakeEncoder(), config=IndexConfig())
    assert [t.path for t in report.indexed] == [str(original)]
    assert report.skipped == [(str(music / "b.flac"), f"same content as {original}")]


def test_nothing_indexable_raises(tmp_path):
    write_bad_files(tmp_path / "bad")
    with pytest.raises(LibraryError, match="none of the 6 audio files") as info:
        build_index(tmp_path / "i", [tmp_path / "bad"], encoder=FakeEncoder(), config=IndexConfig())
    assert "\n" not in str(info.value)
    assert not (tmp_path / "i" / "CURRENT").exists()
    assert not [p for p in (tmp_path / "i").iterdir() if p.name.startswith((".tmp", "gen-"))]
    (tmp_path / "none").mkdir()
    with pytest.raises(LibraryError, match="no audio files"):
        build_index(
            tmp_path / "i", [tmp_path / "none"], encoder=FakeEncoder(), config=IndexConfig()
        )
    with pytest.raises(LibraryError, match="no such file"):
        build_index(
            tmp_path / "i", [tmp_path / "nope"], encoder=FakeEncoder(), config=IndexConfig()
        )


def test_refuses_a_folder_that_is_not_an_index(tmp_path):
    music = tmp_path / "music"
    write_tone_file(music / "a.wav", seed=1, duration_s=DURATION_S)
    with pytest.raises(LibraryError, match="not empty and not an index"):
        build_index(music, [music], encoder=FakeEncoder(), config=IndexConfig())


def test_encoder_failure_leaves_the_live_generation_alone(tmp_path):
    music = tmp_path / "music"
    write_tone_file(music / "a.wav", seed=1, duration_s=DURATION_S)
    build_index(tmp_path / "i", [music], encoder=FakeEncoder(), config=IndexConfig())

    class BrokenEncoder(FakeEncoder):
        def embed(self, windows):
            return np.full((windows.shape[0], self.dim), np.nan, dtype=np.float32)

    with pytest.raises(ModelError, match="non-finite"):
        build_index(tmp_path / "i", [music], encoder=BrokenEncoder(), config=IndexConfig())
    assert (tmp_path / "i" / "CURRENT").read_text() == "gen-000001\n"
    assert generations(tmp_path / "i") == ["gen-000001"]
    assert not [p for p in (tmp_path / "i").iterdir() if p.name.startswith(".tmp")]


def test_concurrent_writer_is_refused(tmp_path):
    music = tmp_path / "music"
    write_tone_file(music / "a.wav", seed=1, duration_s=DURATION_S)
    with (
        GenerationWriter(index_dir=tmp_path / "i", dim=32),
        pytest.raises(LibraryError, match="another build"),
    ):
        build_index(tmp_path / "i", [music], encoder=FakeEncoder(), config=IndexConfig())


def test_rebuild_replaces_the_index(tmp_path):
    first = write_tone_file(tmp_path / "m1" / "a.wav", seed=1, duration_s=DURATION_S)
    second = write_tone_file(tmp_path / "m2" / "b.wav", seed=2, duration_s=DURATION_S)
    build_index(tmp_path / "i", [first], encoder=FakeEncoder(), config=IndexConfig())
    report = build_index(tmp_path / "i", [second], encoder=FakeEncoder(), config=IndexConfig())
    assert report.generation == "gen-000002"
    with Library.open(tmp_path / "i") as lib:
        assert [t.path for t in lib.tracks()] == [str(second)]
        assert lib.tracks()[0].id == 1


# -- add ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def music_template(tmp_path_factory):
    """The six good files, written once; tests get their own copy."""
    music = tmp_path_factory.mktemp("template") / "music"
    write_good_library(music, duration_s=DURATION_S)
    return music


@pytest.fixture
def four_of_six(tmp_path, music_template):
    music = tmp_path / "music"
    shutil.copytree(music_template, music)
    good = [music / rel for rel, *_ in GOOD_TRACKS]
    encoder = FakeEncoder()
    build_index(tmp_path / "index", good[:4], encoder=encoder, config=IndexConfig())
    return tmp_path / "index", music, good


def test_add_embeds_only_new_files_and_keeps_ids(four_of_six):
    index_dir, music, good = four_of_six
    with Library.open(index_dir) as lib:
        before = {t.path: (t.id, lib.curve(t.id).copy()) for t in lib.tracks()}
    encoder = FakeEncoder()
    progress = RecordingProgress()
    report = add_to_index(index_dir, [music], encoder=encoder, progress=progress)

    assert report.generation == "gen-000002"
    assert (index_dir / "CURRENT").read_text() == "gen-000002\n"
    assert [(t.id, t.path) for t in report.indexed] == [(5, str(good[4])), (6, str(good[5]))]
    assert report.unchanged == [str(p) for p in good[:4]]
    assert encoder.windows_embedded == report.windows == sum(expected_windows(p) for p in good[4:])
    assert progress.total == 6 and sorted(s for _, s in progress.files).count("unchanged") == 4
    with Library.open(index_dir) as lib:
        lib.verify()
        assert lib.n_tracks == 6
        for path, (track_id, curve) in before.items():
            assert lib.info(track_id).path == path
            np.testing.assert_array_equal(lib.curve(track_id), curve)


def test_speed_variants_survive_add_and_remove(four_of_six):
    """Variants are stored with their track: add copies them, remove drops them."""
    index_dir, music, good = four_of_six
    with Library.open(index_dir) as lib:
        assert lib.speeds == (1.0, *DEFAULT_SPEED_VARIANTS)
        before = {r.path: [lib.curve(r.id, k).copy() for k in (0, 1, 2)] for r in lib.records()}
    add_to_index(index_dir, [music], encoder=FakeEncoder())
    remove_from_index(index_dir, [str(good[0])])
    with Library.open(index_dir) as lib:
        lib.verify()
        assert lib.speeds == (1.0, *DEFAULT_SPEED_VARIANTS)
        assert lib.n_tracks == 5
        for record in lib.records():
            assert len(record.variant_slices) == 2
            if record.path in before:
                for k, curve in enumerate(before[record.path]):
                    np.testing.assert_array_equal(lib.curve(record.id, k), curve)
        # Every row of windows.npy belongs to exactly one curve.
        ids, _, variants = lib.tracks_of_rows(np.arange(lib.n_windows))
        assert sorted(set(zip(ids.tolist(), variants.tolist(), strict=True))) == sorted(
            (r.id, k) for r in lib.records() for k in (0, 1, 2)
        )


def test_no_speed_variants_and_a_track_just_over_one_window(tmp_path):
    """``speed_variants=()`` stores only the tracks; a 4.1 s track still gets one window per
    variant (at 1.06 it lasts 3.87 s, so that window is zero-padded at the end)."""
    short = tmp_path / "music" / "short.wav"
    short.parent.mkdir()
    write_tone_file(short, seed=5, duration_s=4.1, sample_rate_hz=16000, channels=1)
    build_index(
        tmp_path / "plain", [short], encoder=FakeEncoder(), config=IndexConfig(speed_variants=())
    )
    with Library.open(tmp_path / "plain") as lib:
        assert lib.speeds == (1.0,) and lib.n_windows == 1
        assert lib.records()[0].variant_slices == ()
    build_index(tmp_path / "varied", [short], encoder=FakeEncoder(), config=IndexConfig())
    with Library.open(tmp_path / "varied") as lib:
        assert lib.n_windows == 3
        assert [lib.curve(1, k).shape[0] for k in (0, 1, 2)] == [1, 1, 1]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((1.0,), "differ from 1.0"),
        ((0.94, 0.9401), "differ from 1.0 and from each other"),
        ((0.5,), "within 0.8..1.25"),
        ((float("nan"),), "within 0.8..1.25"),
        ((1.01,) * 1 + tuple(1.02 + 0.01 * i for i in range(8)), "at most 8"),
    ],
)
def test_bad_speed_variants_are_one_line_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        IndexConfig(speed_variants=values)


def test_speed_variants_parse_from_the_cli_and_the_stored_meta():
    assert parse_speed_variants("1.06, 0.94") == (0.94, 1.06)
    assert parse_speed_variants("[0.94, 1.06]") == (0.94, 1.06)
    assert parse_speed_variants("[]") == parse_speed_variants("") == ()
    with pytest.raises(ConfigError, match="numbers like"):
        parse_speed_variants("fast")


def test_add_with_nothing_new_writes_no_generation(four_of_six):
    index_dir, _, good = four_of_six
    encoder = FakeEncoder()
    report = add_to_index(index_dir, good[:2], encoder=encoder)
    assert report.generation == "gen-000001" and report.indexed == []
    assert report.unchanged == [str(p) for p in good[:2]]
    assert encoder.calls == 0
    assert generations(index_dir) == ["gen-000001"]


def test_add_changed_file_is_updated_under_its_id(four_of_six):
    index_dir, _, good = four_of_six
    with Library.open(index_dir) as lib:
        old_curve = lib.curve(2).copy()
        old_added = lib.record(2).added
    _, _, rate, channels = GOOD_TRACKS[1]
    write_tone_file(good[1], seed=77, duration_s=DURATION_S, sample_rate_hz=rate, channels=channels)
    report = add_to_index(index_dir, [good[1]], encoder=FakeEncoder())
    assert [(t.id, t.status) for t in report.indexed] == [(2, "updated")]
    with Library.open(index_dir) as lib:
        assert lib.n_tracks == 4
        assert lib.info(2).path == str(good[1])
        assert lib.record(2).added == old_added
        assert not np.allclose(lib.curve(2)[: len(old_curve)], old_curve)


def test_generations_are_pruned_to_live_and_previous(four_of_six):
    index_dir, music, good = four_of_six
    add_to_index(index_dir, [good[4]], encoder=FakeEncoder())
    add_to_index(index_dir, [good[5]], encoder=FakeEncoder())
    assert generations(index_dir) == ["gen-000002", "gen-000003"]
    assert (index_dir / "CURRENT").read_text() == "gen-000003\n"
    assert music.exists()


def test_add_with_another_encoder_is_refused(four_of_six):
    index_dir, music, _ = four_of_six
    with pytest.raises(LibraryError, match="built with encoder 'fake-v1'"):
        add_to_index(index_dir, [music], encoder=FakeEncoder(name="other-v2"))
    assert generations(index_dir) == ["gen-000001"]


def test_add_keeps_the_stored_hop(tmp_path):
    path = write_tone_file(tmp_path / "m" / "a.wav", seed=1, duration_s=DURATION_S)
    other = write_tone_file(tmp_path / "m" / "b.wav", seed=2, duration_s=DURATION_S)
    build_index(tmp_path / "i", [path], encoder=FakeEncoder(), config=IndexConfig(index_hop_s=1.0))
    report = add_to_index(tmp_path / "i", [other], encoder=FakeEncoder(), config=IndexConfig())
    assert report.indexed[0].windows == expected_windows(
        other, hop_samples=SAMPLE_RATE_HZ, speeds=(1.0,)
    )


# -- remove ------------------------------------------------------------------------


def test_remove_by_id_path_and_folder(four_of_six):
    index_dir, music, good = four_of_six
    with Library.open(index_dir) as lib:
        curve_3 = lib.curve(3).copy()
    report = remove_from_index(index_dir, ["2", str(good[0]), str(music / "nowhere")])
    assert report.removed == [{"id": 1, "path": str(good[0])}, {"id": 2, "path": str(good[1])}]
    assert report.skipped == [(str(music / "nowhere"), "no track matches this id or path")]
    assert report.generation == "gen-000002"
    with Library.open(index_dir) as lib:
        lib.verify()
        assert [t.id for t in lib.tracks()] == [3, 4]
        np.testing.assert_array_equal(lib.curve(3), curve_3)
    # A folder prefix matches whole path components only: "Album T" matches nothing.
    report = remove_from_index(index_dir, [str(music / "Album T"), str(music / "Album Two") + "/"])
    assert [r["id"] for r in report.removed] == [4]
    assert report.skipped == [(str(music / "Album T"), "no track matches this id or path")]
    with pytest.raises(LibraryError, match="empty"):
        remove_from_index(index_dir, [str(music)])
    report = remove_from_index(index_dir, ["999"])
    assert report.removed == [] and report.generation == "gen-000003"
    with Library.open(index_dir) as lib:
        assert [t.id for t in lib.tracks()] == [3]


def test_ids_of_removed_tracks_are_not_reused(four_of_six):
    index_dir, _, good = four_of_six
    remove_from_index(index_dir, ["4"])
    remove_from_index(index_dir, ["3"])
    report = add_to_index(index_dir, [good[4], good[3]], encoder=FakeEncoder())
    assert [(t.id, t.path) for t in report.indexed] == [(5, str(good[4])), (6, str(good[3]))]
    with Library.open(index_dir) as lib:
        assert [t.id for t in lib.tracks()] == [1, 2, 5, 6]
        assert lib.last_track_id == 6


def test_remove_from_a_missing_index(tmp_path):
    with pytest.raises(LibraryError, match="does not exist"):
        remove_from_index(tmp_path / "nope", ["1"])
    with pytest.raises(LibraryError, match="does not exist"):
        index_stats(tmp_path / "nope")


def test_fake_encoder_is_deterministic_and_unit():
    encoder = FakeEncoder()
    audio = make_tone_track(seed=3, duration_s=6.0)
    windows = np.stack([audio[:WINDOW_SAMPLES], audio[16_000 : 16_000 + WINDOW_SAMPLES]])
    a = encoder.embed(windows)
    b = FakeEncoder().embed(windows)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert a.shape == (2, 32) and a.dtype == np.float32


def test_paths_are_absolute_in_the_index(tmp_path, monkeypatch):
    write_tone_file(tmp_path / "m" / "a.wav", seed=1, duration_s=DURATION_S)
    monkeypatch.chdir(tmp_path)
    report = build_index(Path("i"), ["m"], encoder=FakeEncoder(), config=IndexConfig())
    assert report.indexed[0].path == str(tmp_path / "m" / "a.wav")
    write_tone_file(tmp_path / "m" / "b.wav", seed=2, duration_s=DURATION_S)
    add_to_index(Path("i"), ["m/b.wav"], encoder=FakeEncoder())
    report = remove_from_index("i", ["m/a.wav"])  # relative to the current folder
    assert report.removed == [{"id": 1, "path": str(tmp_path / "m" / "a.wav")}]


def test_the_index_records_the_encoders_distance_scale_for_its_version_search() -> None:
    from synesthete.inference.config import EncoderConfig, packaged_model_path
    from synesthete.inference.torchscript import TorchScriptEncoder

    def scale_of(name: str) -> float:
        path = packaged_model_path(name)
        assert path is not None
        return distance_scale_of(TorchScriptEncoder(config=EncoderConfig(model_path=path)))

    assert scale_of("encoder-v10p") == 0.2  # its calibration's: a projected encoder's
    assert scale_of("encoder-v3") == 1.0  # none said: encoder-v3's own
