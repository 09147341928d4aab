"""The pure parts of scripts/corpus.py: content hash, de-duplication, variants, split, schema.

No apt, no network, no renderers: signals are synthesized into tmp_path.
"""

from __future__ import annotations

import importlib.util
import json
import random
import struct
import sys
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile as sf

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "corpus.py"
_spec = importlib.util.spec_from_file_location("corpus_script", _SCRIPT)
assert _spec is not None and _spec.loader is not None
corpus = importlib.util.module_from_spec(_spec)
sys.modules["corpus_script"] = corpus  # dataclasses look their module up by name
_spec.loader.exec_module(corpus)

RATE_HZ = 8000


def _tone(seconds, *, freq_hz=440.0, seed=0, rate_hz=RATE_HZ, channels=1):
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq_hz * t) + 0.05 * rng.standard_normal(t.size)
    x = x.astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _track(tid, package="pkg", *, variant_of=None, duration_s=60.0, content=None):
    return corpus.Track(
        id=tid,
        path=f"/corpus/{tid.replace(':', '/')}.ogg",
        package=package,
        title=tid,
        artist=None,
        album=package,
        duration_s=duration_s,
        sample_rate_hz=44100,
        channels=2,
        content_hash=content or corpus.hashlib.sha1(tid.encode()).hexdigest(),
        source="debian",
        variant_of=variant_of,
    )


# -- content hash and de-duplication ------------------------------------------------------


def test_content_hash_ignores_container_and_copies(tmp_path):
    # The same 16-bit PCM in each container (libsndfile's float-to-int rounding differs
    # between its WAV and FLAC writers, which would make these different recordings).
    audio = np.round(_tone(40.0, channels=2) * 32767).astype(np.int16)
    for name, fmt in (("a.wav", "WAV"), ("b.flac", "FLAC"), ("c.wav", "WAV")):
        sf.write(tmp_path / name, audio, RATE_HZ, format=fmt, subtype="PCM_16")
    cache = {}
    hashes = {corpus._probe_cached(tmp_path / n, cache).content_hash for n in ("a.wav", "b.flac")}
    hashes.add(corpus._probe_cached(tmp_path / "c.wav", cache).content_hash)
    assert len(hashes) == 1


def test_content_hash_separates_different_audio_and_tempo_variants():
    base = _tone(40.0)
    other = _tone(40.0, freq_hz=330.0, seed=1)
    faster = base[::2].copy()  # same notes in half the time: a tempo variant, not a copy
    digests = {corpus.content_hash(x, RATE_HZ) for x in (base, other, faster)}
    assert len(digests) == 3


def test_content_hash_reads_only_the_first_span():
    head = _tone(corpus.HASH_SPAN_S)
    a = np.concatenate([head, _tone(5.0, seed=1)])
    b = np.concatenate([head, _tone(5.0, seed=2)])
    assert corpus.content_hash(a, RATE_HZ) == corpus.content_hash(b, RATE_HZ)


def test_content_hash_downmixes_and_resamples():
    mono = _tone(10.0, rate_hz=16000)
    stereo = np.stack([mono, mono], axis=1)
    assert corpus.content_hash(mono, 16000) == corpus.content_hash(stereo, 16000)
    with pytest.raises(corpus.CorpusError):
        corpus.content_hash(mono, 0)


def test_dedupe_keeps_one_copy_and_lists_the_others():
    same = "a" * 40
    copies = [
        _track(f"drascula-music:drascula/{lang}/track02", "drascula-music", content=same)
        for lang in ("it", "audio", "en", "de", "fr", "es")
    ]
    unique = _track("drascula-music:drascula/audio/track03", "drascula-music")
    for order in ([*copies, unique], [*reversed(copies), unique]):
        kept = corpus.dedupe(order)
        assert [t.id for t in kept] == [
            "drascula-music:drascula/audio/track02",
            "drascula-music:drascula/audio/track03",
        ]
        assert len(kept[0].duplicates) == 5
        assert kept[0].path not in kept[0].duplicates
        assert kept[1].duplicates == ()


def test_dedupe_prefers_debian_over_rendered_copies():
    same = "b" * 40
    rendered = replace(_track("music21:bach/x", "music21", content=same), source="music21")
    shipped = _track("zz-music:x", "zz-music", content=same)
    (kept,) = corpus.dedupe([rendered, shipped])
    assert kept.id == "zz-music:x"


# -- split ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, (0, 0, 0)),
        (1, (1, 0, 0)),
        (2, (1, 0, 1)),
        (3, (2, 0, 1)),
        (5, (3, 1, 1)),
        (10, (7, 1, 2)),
        (63, (44, 6, 13)),
    ],
)
def test_split_counts(n, expected):
    counts = corpus.split_counts(n)
    assert (counts["train"], counts["val"], counts["bench"]) == expected
    assert sum(counts.values()) == n


def _library():
    tracks = []
    for package, n in (("big-music", 60), ("mid-data", 12), ("small-data", 3), ("one-data", 1)):
        tracks += [_track(f"{package}:music/t{i:02d}", package) for i in range(n)]
    return tracks


def test_split_is_deterministic_and_order_free():
    tracks = _library()
    first = corpus.assign_splits(tracks, seed=20261122)
    shuffled = tracks[:]
    random.Random(7).shuffle(shuffled)
    second = corpus.assign_splits(shuffled, seed=20261122)
    assert {t.id: t.split for t in first} == {t.id: t.split for t in second}
    assert corpus.split_digest(first) == corpus.split_digest(second)
    other_seed = corpus.assign_splits(tracks, seed=1)
    assert corpus.split_digest(other_seed) != corpus.split_digest(first)


def test_split_is_by_track_and_stratified_by_package():
    split = corpus.assign_splits(_library())
    assert {t.split for t in split} <= set(corpus.SPLITS)
    for package, n in (("big-music", 60), ("mid-data", 12), ("small-data", 3)):
        mine = [t for t in split if t.package == package]
        counts = corpus.split_counts(n)
        for name in corpus.SPLITS:
            assert sum(t.split == name for t in mine) == counts[name]
        assert any(t.split == "bench" for t in mine)
    (only,) = [t for t in split if t.package == "one-data"]
    assert only.split == "train"


def test_split_of_a_package_ignores_other_packages():
    alone = corpus.assign_splits([t for t in _library() if t.package == "mid-data"])
    together = corpus.assign_splits(_library())
    mine = {t.id: t.split for t in together if t.package == "mid-data"}
    assert {t.id: t.split for t in alone} == mine


def test_variants_share_their_originals_split():
    tracks = []
    for i in range(20):
        base = _track(f"supertuxkart-data:data/music/song{i:02d}", "supertuxkart-data")
        tracks.append(base)
        if i % 2 == 0:
            tracks.append(
                _track(f"{base.id}_fast", "supertuxkart-data", variant_of=base.id),
            )
    orphan = _track("supertuxkart-data:data/music/gone_fast", "supertuxkart-data")
    tracks.append(replace(orphan, variant_of="supertuxkart-data:data/music/gone"))
    for seed in (1, 2, 3, corpus.SPLIT_SEED):
        split = {t.id: t for t in corpus.assign_splits(tracks, seed=seed)}
        for track in split.values():
            if track.variant_of in split:
                assert track.split == split[track.variant_of].split
    # Groups, not files, are counted: 20 originals + the orphan are 21 groups.
    split = corpus.assign_splits(tracks)
    groups = {t.variant_of if t.variant_of in {u.id for u in split} else t.id for t in split}
    assert len(groups) == 21


def test_resolve_variants_follows_dedupe_and_drops_missing_bases(tmp_path):
    def cand(tid):
        return corpus.Candidate(
            id=tid,
            path=tmp_path / f"{tid.split(':')[1]}.ogg",
            package="p",
            source="debian",
            origin="x",
        )

    cands = [cand("p:a"), cand("p:a_copy"), cand("p:a_fast"), cand("p:b_fast")]
    same = "c" * 40
    tracks = [
        replace(_track("p:a_copy", "p", content=same), path=str(cands[1].path)),
        replace(_track("p:a", "p", content=same), path=str(cands[0].path)),
        replace(_track("p:a_fast", "p", variant_of="p:a"), path=str(cands[2].path)),
        replace(_track("p:b_fast", "p", variant_of="p:b"), path=str(cands[3].path)),
    ]
    kept = {t.id: t for t in corpus.resolve_variants(corpus.dedupe(tracks), cands)}
    assert set(kept) == {"p:a", "p:a_fast", "p:b_fast"}
    assert kept["p:a_fast"].variant_of == "p:a"
    assert kept["p:b_fast"].variant_of is None


def test_variant_names():
    assert corpus.variant_base_stem("celtic_fast") == "celtic"
    assert corpus.variant_base_stem("landing_in_gran_paradiso_fast") == "landing_in_gran_paradiso"
    assert corpus.variant_base_stem("Fast_and_furious") is None
    assert corpus.variant_base_stem("breakfast") is None


# -- manifest schema and summary -------------------------------------------------------------


def test_manifest_rows_have_the_schema():
    tracks = corpus.assign_splits(_library())
    for track in tracks:
        row = json.loads(json.dumps(track.to_json()))
        assert tuple(row) == corpus.MANIFEST_FIELDS
        corpus.validate_row(row)
    row = tracks[0].to_json()
    for broken in (
        {**row, "split": "test"},
        {**row, "source": "youtube"},
        {**row, "duration_s": 12.0},
        {**row, "path": "relative/path.ogg"},
        {k: v for k, v in row.items() if k != "content_hash"},
        {**row, "extra": 1},
    ):
        with pytest.raises(corpus.CorpusError):
            corpus.validate_row(broken)


def test_summary_counts_and_hours():
    tracks = corpus.assign_splits(_library())
    summary = corpus.summarize(tracks, seed=corpus.SPLIT_SEED)
    assert summary["total"]["tracks"] == len(tracks)
    assert sum(s["tracks"] for s in summary["splits"].values()) == len(tracks)
    assert summary["total"]["hours"] == pytest.approx(len(tracks) * 60.0 / 3600.0, abs=1e-3)
    assert summary["packages"]["small-data"]["splits"] == {"train": 2, "val": 0, "bench": 1}
    assert summary["split_sha256"] == corpus.split_digest(tracks)
    assert "train" in corpus.format_summary(summary)


# -- package files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("package", "path", "kind"),
    [
        ("supertux-data", "/usr/share/games/supertux2/music/forest/x.ogg", "music"),
        ("supertux-data", "/usr/share/games/supertux2/sounds/jump.wav", "ignore"),
        ("hedgewars-data", "/usr/share/games/hedgewars/Data/Music/City.ogg", "music"),
        ("drascula-music", "/usr/share/scummvm/drascula/de/track2.ogg", "music"),
        ("frozen-bubble-data", "/usr/share/games/frozen-bubble/snd/introzik.ogg", "music"),
        ("btanks-data", "/usr/share/games/btanks/data/sounds/ambient/forest.ogg", "ambience"),
        ("btanks-data", "/usr/share/games/btanks/data/tunes/menu.ogg", "music"),
        ("lincity-ng-data", "/usr/share/games/lincity-ng/sounds/Water1.wav", "ambience"),
        ("ufoai-music", "/usr/share/games/ufoai/base/0music.pk3", "pk3"),
        ("nexuiz-music", "sound/cdtracks/stairs.ogg", "music"),
        ("freedoom", "/usr/share/games/doom/freedoom1.wad", "wad"),
        ("openttd-openmsx", "/usr/share/games/openttd/baseset/openmsx/x.mid", "midi"),
        ("pingus-data", "/usr/share/games/pingus/data/music/pingus-1.it", "module"),
        ("lmms-common", "/usr/share/lmms/projects/demos/Skiessi/Skiessi-C64.mmpz", "lmms"),
        ("lmms-common", "/usr/share/lmms/projects/tutorials/editing.mmp", "ignore"),
        ("lmms-common", "/usr/share/lmms/samples/drums/kick01.ogg", "ignore"),
        ("sonic-pi-samples", "/usr/share/sonic-pi/samples/ambi_drone.flac", "sample"),
        ("supertuxkart-data", "/usr/share/games/supertuxkart/data/tracks/cave/x.ogg", "ignore"),
        ("naev-data", "/usr/share/naev/dat/snd/music/agriculture.ogg", "music"),
        ("naev-data", "/usr/share/naev/dat/gfx/logo.png", "ignore"),
    ],
)
def test_classify(package, path, kind):
    assert corpus.classify(package, PurePosixPath(path)) == kind


def test_track_ids_are_stable_and_readable():
    assert (
        corpus.track_id("supertux-data", Path("/usr/share/games/supertux2/music/forest/a.ogg"))
        == "supertux-data:music/forest/a"
    )
    assert (
        corpus.track_id("naev-data", Path("/usr/share/naev/dat/snd/music/b.ogg"))
        == "naev-data:dat/snd/music/b"
    )
    assert corpus.track_id("ufoai-music", PurePosixPath("music/David01.ogg")) == (
        "ufoai-music:music/David01"
    )


def test_name_heuristics():
    assert corpus.ufoai_composer("Crystan-Battlescape01") == 'Christian "Crystan" Hoffmann'
    assert corpus.ufoai_composer("David01") == "David"
    assert corpus.ufoai_composer("TheThings-Slippycurb") == "The Things"
    assert corpus.ufoai_composer("karlmacklin_geoscape") == "Karl Macklin"
    assert corpus.ufoai_composer("PsymongR1") == "Psymong"
    assert corpus.ufoai_composer("dawn") is None
    assert corpus.ufoai_composer("dynamictest-battle-41-74sec") is None
    assert corpus.openmsx_composer("moo_redfarn") == "Jim Redfarn"
    assert corpus.openmsx_composer("modern_motion") == "Kyle Timmerman"
    assert corpus.title_from_stem("01_Some-Song") == "01 Some Song"
    assert corpus._placeholder_tag("<Unknown>") and corpus._placeholder_tag("http://x.org")
    assert not corpus._placeholder_tag("Wansti")


def test_supertuxkart_music_files(tmp_path):
    (tmp_path / "farm.music").write_text(
        '<?xml version="1.0"?>\n<music title="Golden Fields" composer="Krobonil &amp; OzoneOne"'
        ' file="farm.ogg" fast="true" fast-filename="farm_f.ogg"/>\n'
    )
    (tmp_path / "broken.music").write_text("<music")
    info = corpus.stk_music_info(sorted(tmp_path.iterdir()))
    assert info["farm.ogg"] == {"title": "Golden Fields", "artist": "Krobonil & OzoneOne"}
    assert info["farm_f.ogg"]["variant_of"] == "farm.ogg"
    assert info["farm_f.ogg"]["title"] == "Golden Fields (fast)"


def test_openmsx_titles(tmp_path):
    obm = tmp_path / "openmsx.obm"
    obm.write_text("[files]\ntheme = tttheme2.mid\n[names]\ntttheme2.mid   = OpenTTD journey\n")
    assert corpus.openmsx_titles([obm]) == {"tttheme2.mid": "OpenTTD journey"}


def test_extract_pk3_takes_music_members_only(tmp_path):
    pk3 = tmp_path / "music.pk3"
    with zipfile.ZipFile(pk3, "w") as z:
        z.writestr("sound/cdtracks/a.ogg", b"ogg bytes")
        z.writestr("maps/readme.txt", b"not music")
        z.writestr("../evil.ogg", b"outside")
    log = corpus.Log(tmp_path / "log.jsonl")
    dest = tmp_path / "extracted" / "nexuiz-music"
    for _ in range(2):  # the second call finds the files in place
        got = corpus.extract_pk3(pk3, "nexuiz-music", dest, log)
        assert got == [(dest / "sound/cdtracks/a.ogg", "sound/cdtracks/a.ogg")]
    assert (dest / "sound/cdtracks/a.ogg").read_bytes() == b"ogg bytes"
    assert not (tmp_path / "extracted" / "evil.ogg").exists()


# -- MIDI ---------------------------------------------------------------------------------------


def _smf(events_per_track, *, fmt=1, division=480):
    chunks = []
    for events in events_per_track:
        body = b"".join(corpus._write_vlq(delta) + raw for delta, raw in events)
        body += b"\x00\xff\x2f\x00"
        chunks.append(b"MTrk" + struct.pack(">I", len(body)) + body)
    header = b"MThd" + struct.pack(">IHHH", 6, fmt, len(chunks), division)
    return header + b"".join(chunks)


def test_midi_duration_follows_the_tempo_map():
    tempo = [(0, b"\xff\x51\x03" + (1_000_000).to_bytes(3, "big"))]  # 60 bpm
    notes = [(0, b"\xc0\x13"), (0, b"\x90\x3c\x40"), (960, b"\x80\x3c\x00")]  # two beats
    data = _smf([tempo, notes])
    assert corpus.midi_duration_s(data) == pytest.approx(2.0)
    running = _smf([[(0, b"\x90\x3c\x40"), (480, b"\x3c\x00")]])  # running status note-off
    assert corpus.midi_duration_s(running) == pytest.approx(0.5)


def test_seal_midi_silences_every_channel_after_the_end():
    hanging = _smf([[(0, b"\x90\x3c\x40"), (1920, b"\x91\x40\x40")]], fmt=0)  # never released
    sealed = corpus.parse_smf(corpus.seal_midi(hanging))
    assert sealed.format == 1 and len(sealed.tracks) == 2
    added = sealed.tracks[-1]
    offs = [(t, s & 0x0F) for t, s, d in added if s & 0xF0 == 0xB0 and d[0] == 120]
    assert sorted(ch for _, ch in offs) == list(range(16))
    assert {t for t, _ in offs} == {1920 + int(corpus.SEAL_TAIL_S * 480 * 2)}
    notes_off = [s & 0x0F for t, s, d in added if s & 0xF0 == 0xB0 and d[0] == 123 and t == 1920]
    assert sorted(notes_off) == list(range(16))
    assert corpus.parse_smf(hanging).tracks == sealed.tracks[:1]


def test_bad_midi_is_a_corpus_error():
    with pytest.raises(corpus.CorpusError):
        corpus.parse_smf(b"RIFF....")
    with pytest.raises(corpus.CorpusError):
        corpus.seal_midi(_smf([[(0, b"\x90\x3c\x40")]], fmt=2))


def test_wad_midi_lumps():
    midi = _smf([[(0, b"\x90\x3c\x40"), (480, b"\x80\x3c\x00")]])
    lumps = [(b"D_E1M1", midi), (b"DSPISTOL", b"\x03\x00sound"), (b"D_OLD", b"MUS\x1a....")]
    data, directory = bytearray(b"IWAD" + b"\0" * 8), []
    for name, body in lumps:
        directory.append(struct.pack("<ii8s", len(data), len(body), name))
        data += body
    data[4:12] = struct.pack("<ii", len(lumps), len(data))
    data += b"".join(directory)
    assert corpus.wad_midi_lumps(bytes(data)) == [("D_E1M1", midi)]


def test_audible_frames_trims_the_silent_tail():
    rate = 1000
    audio = np.zeros((10 * rate, 2), dtype=np.int16)
    audio[: 4 * rate, 0] = 3000
    keep = corpus.audible_frames(audio, rate)
    assert keep == 4 * rate + int(corpus.TRAILING_QUIET_S * rate)
    assert corpus.audible_frames(np.zeros((rate, 1), dtype=np.int16), rate) == 0
    assert corpus.audible_frames(np.full((rate, 1), 3000, dtype=np.int16), rate) == rate


# -- from files to manifest rows ----------------------------------------------------------------


def test_files_to_manifest(tmp_path):
    """Copies collapse, short files drop, variants follow, every row validates."""
    music = tmp_path / "music"
    music.mkdir()
    song = _tone(70.0, channels=2)
    for name in ("song.wav", "song_copy.wav"):
        sf.write(music / name, song, RATE_HZ, subtype="PCM_16")
    sf.write(music / "song_fast.wav", song[::2], RATE_HZ, subtype="PCM_16")
    sf.write(music / "other.flac", _tone(31.0, freq_hz=250.0, seed=3), RATE_HZ)
    sf.write(music / "jingle.wav", _tone(5.0), RATE_HZ, subtype="PCM_16")  # too short

    job = corpus.Build(
        out=tmp_path / "out",
        packages=["demo-music"],
        music21_pieces=0,
        speech_clips=0,
        seed=corpus.SPLIT_SEED,
        retry_failed=False,
        log=corpus.Log(tmp_path / "log.jsonl"),
    )
    job._collect_package("demo-music", sorted(music.iterdir()))
    assert len(job.candidates) == 5
    probed = job.probe_all()
    tracks = corpus.assign_splits(corpus.resolve_variants(corpus.dedupe(probed), job.candidates))
    by_id = {t.id: t for t in tracks}
    assert sorted(tid.rsplit("/", 1)[1] for tid in by_id) == ["other", "song", "song_fast"]
    (fast,) = [t for t in tracks if t.id.endswith("song_fast")]
    (base,) = [t for t in tracks if t.id.endswith("/song")]
    assert fast.variant_of == base.id and fast.split == base.split
    assert len(base.duplicates) == 1 and base.duplicates[0].endswith("song_copy.wav")
    assert base.album == "demo-music" and base.title == "song"
    for track in tracks:
        corpus.validate_row(json.loads(json.dumps(track.to_json())))
    cache = json.loads((tmp_path / "out" / "cache" / "probe.json").read_text())
    assert len(cache) == 5  # the short file is probed (and cached) but not hashed


def test_packages_outside_the_allowed_list_are_refused(tmp_path):
    allowed = tmp_path / "dev-packages.txt"
    allowed.write_text("# comment\nsupertux-data   45 tracks\nfreedoom  MIDI\n")
    wanted = tmp_path / "packages.txt"
    wanted.write_text("supertux-data\nsome-other-music\n")
    assert corpus.read_list(allowed) == ["supertux-data", "freedoom"]
    code = corpus.main(
        [
            "--out",
            str(tmp_path / "out"),
            "--packages-file",
            str(wanted),
            "--allowed-file",
            str(allowed),
        ]
    )
    assert code == 1
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
