"""The similarity head (index/sonic.py), up next (index/upnext.py) and their CLI and events."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import DemoLibrary, cli_command, cli_env
from fakes import FakeEncoder, build_tone_index, make_tone_track

from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.errors import ConfigError
from synesthete.events import NowPlaying, UpNext
from synesthete.index.similar import TrackSummaries
from synesthete.index.sonic import SonicHead
from synesthete.index.sonic_file import load_head, packaged_head, save_head
from synesthete.index.upnext import up_next

ROOT = Path(__file__).resolve().parents[1]


def random_head(seed: int = 0, *, in_dim: int = 8, hidden: int = 16, dim: int = 4) -> SonicHead:
    rng = np.random.default_rng(seed)
    return SonicHead(
        encoder_name="fake-v1",
        w1=rng.standard_normal((in_dim, hidden)).astype(np.float32),
        b1=rng.standard_normal(hidden).astype(np.float32),
        w2=rng.standard_normal((hidden, dim)).astype(np.float32),
        b2=rng.standard_normal(dim).astype(np.float32),
        meta={"seed": seed},
    )


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_head_maps_windows_to_unit_style_vectors_row_by_row() -> None:
    head = random_head()
    windows = unit(np.random.default_rng(1).standard_normal((50, 8)))
    out = head.apply(windows)
    assert out.shape == (50, 4) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Row by row: a curve's points are its windows' points.
    np.testing.assert_allclose(head.apply(windows[7:9]), out[7:9], atol=1e-6)
    with pytest.raises(ConfigError):
        head.apply(windows[:, :5])
    assert head.applies_to(encoder_name="fake-v1", dim=8)
    assert not head.applies_to(encoder_name="other", dim=8)


def test_head_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    head = random_head(3)
    path = tmp_path / "fake-v1.sonic.npz"
    save_head(head, path)
    loaded = load_head(path)
    assert loaded.encoder_name == "fake-v1" and dict(loaded.meta) == {"seed": 3}
    for name, array in head.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[name], array)
    for bad in (tmp_path / "missing.npz", tmp_path / "bad.npz"):
        if bad.name == "bad.npz":
            bad.write_bytes(b"not a zip")
        with pytest.raises(ConfigError) as err:
            load_head(bad)
        assert len(str(err.value).splitlines()) == 1
    with pytest.raises(ConfigError):
        SonicHead(encoder_name="x", w1=head.w1, b1=head.b1, w2=head.w2[:3], b2=head.b2)


def test_packaged_head_reads_the_default_encoder() -> None:
    from synesthete.index.sonic_audio import FEATURE_DIM
    from synesthete.index.sonic_file import packaged_window_head

    head = packaged_head("encoder-v3")
    assert head is not None and head.reads_audio
    assert head.encoder_name == "encoder-v3" and head.in_dim == FEATURE_DIM
    assert head.applies_to(encoder_name="encoder-v3", dim=128)
    assert head.meta["trained_on"].startswith("train split")
    # Beside it, the head of windows for indexes that do not store the audio curves.
    windows = packaged_window_head("encoder-v3")
    assert windows is not None and not windows.reads_audio and windows.in_dim == 128
    assert packaged_head("fake-v1") is None
    assert packaged_head("../encoder-v3") is None


def test_summaries_with_a_head_rank_by_the_projected_curves() -> None:
    rng = np.random.default_rng(5)
    head = random_head(5)
    windows = unit(rng.standard_normal((60, 8)))
    kwargs = {"track_ids": [1, 2, 3, 4], "starts": [0, 15, 30, 45], "counts": [15] * 4}
    with_head = TrackSummaries.from_windows(windows=windows, head=head, **kwargs)
    projected = TrackSummaries.from_windows(windows=head.apply(windows), **kwargs)
    query = unit(rng.standard_normal((6, 8)))
    for distance in ("mean", "min", "frechet", "cosine"):
        np.testing.assert_allclose(
            with_head.distances(query, distance=distance),
            projected.distances(head.apply(query), distance=distance),
            atol=1e-5,
        )
    with pytest.raises(ConfigError):
        with_head.distances(head.apply(query))  # style vectors are not windows


# -- training: deterministic under a seed --------------------------------------------


def load_script(name: str) -> ModuleType:
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def synthetic_split(script: ModuleType, *, seed: int, games: int, per_game: int) -> object:
    """Tracks whose windows scatter around a per-game centre: the labels have something
    to learn."""
    from bench_similar import Track

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((games, 16))
    parts, tracks = [], []
    for g in range(games):
        for n in range(per_game):
            count = int(rng.integers(12, 24))
            parts.append(unit(centres[g] + 0.8 * rng.standard_normal((count, 16))))
            tracks.append(
                Track(
                    track_id=len(tracks),
                    path=f"/g{g}/{n}.ogg",
                    split="x",
                    artists=frozenset(),
                    album=None,
                    game=f"game{g}",
                    family=frozenset({f"g{g}-{n}"}),
                    manifest_id=f"g{g}-{n}",
                    duration_s=60.0,
                )
            )
    counts = np.array([p.shape[0] for p in parts])
    return script.Split(
        windows=np.concatenate(parts),
        starts=np.concatenate([[0], np.cumsum(counts)[:-1]]),
        counts=counts,
        tracks=tracks,
    )


def test_training_the_head_is_deterministic_under_a_seed_and_learns_the_labels() -> None:
    script = load_script("train_similarity")
    train = synthetic_split(script, seed=1, games=4, per_game=5)
    val = synthetic_split(script, seed=2, games=4, per_game=3)
    settings = {
        "steps": 40,
        "label_weight": 1.0,
        "hidden": 16,
        "dim": 8,
        "batch_tracks": 12,
        "temperature": 0.1,
        "log": lambda _: None,
    }
    first, record = script.train_head(train, val, seed=7, **settings)
    again, _ = script.train_head(train, val, seed=7, **settings)
    other, _ = script.train_head(train, val, seed=8, **settings)
    for name in ("w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["w1"], other["w1"])
    # 2 relevant tracks of 11 per query: P@5 is at most 0.4, 0.18 at random.
    assert record["best"]["whole_p5"] >= 0.35


def test_a_head_ending_in_anchors_gives_soft_nearness_to_each(tmp_path: Path) -> None:
    """Anchors: each window's unit vector becomes normalise(exp(s (anchors . y - 1))),
    one value per anchor; the file keeps them, and they change the head's digest."""
    from synesthete.index.sonic_store import head_digest

    plain = random_head(3)
    anchors = unit(np.random.default_rng(4).standard_normal((6, 4)))
    head = SonicHead(
        encoder_name="fake-v1",
        w1=plain.w1,
        b1=plain.b1,
        w2=plain.w2,
        b2=plain.b2,
        anchors=anchors,
        anchor_scale=20.0,
    )
    windows = unit(np.random.default_rng(5).standard_normal((30, 8)))
    out = head.apply(windows)
    assert head.dim == 6 and out.shape == (30, 6)
    expected = unit(np.exp(20.0 * (plain.apply(windows) @ anchors.T - 1.0)))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert (out > 0).all()
    # The nearest anchor has the largest share.
    np.testing.assert_array_equal(out.argmax(1), (plain.apply(windows) @ anchors.T).argmax(1))
    path = tmp_path / "fake-v1.sonic.npz"
    save_head(head, path)
    loaded = load_head(path)
    assert loaded.anchor_scale == 20.0 and loaded.anchors is not None
    np.testing.assert_array_equal(loaded.apply(windows), out)
    assert head_digest(loaded) == head_digest(head) != head_digest(plain)
    # A head without anchors reads as before (and its digest is the one stored so far).
    save_head(plain, path)
    assert load_head(path).anchors is None
    for bad in ({"anchors": anchors[:, :3], "anchor_scale": 20.0}, {"anchors": anchors}):
        with pytest.raises(ConfigError):
            SonicHead(encoder_name="x", w1=plain.w1, b1=plain.b1, w2=plain.w2, b2=plain.b2, **bad)


def test_an_ensemble_of_heads_is_one_head_with_the_members_side_by_side() -> None:
    """combine_heads stacks the members: its output is theirs concatenated, then normalised,
    and anchors at the label groups' means are deterministic unit rows."""
    script = load_script("train_similarity")
    members = [random_head(seed, in_dim=16) for seed in (1, 2, 3)]
    states = [{k: v for k, v in h.arrays().items()} for h in members]
    combined = script.combine_heads(states)
    head = SonicHead(encoder_name="fake-v1", **combined)
    windows = unit(np.random.default_rng(6).standard_normal((20, 16)))
    raw = [np.maximum(windows @ h.w1 + h.b1, 0.0) @ h.w2 + h.b2 for h in members]
    np.testing.assert_allclose(head.apply(windows), unit(np.concatenate(raw, 1)), atol=1e-5)
    np.testing.assert_allclose(
        script.state_project(combined)(windows), head.apply(windows), atol=1e-5
    )
    assert script.combine_heads(states[:1]) is states[0]
    split = synthetic_split(script, seed=1, games=4, per_game=5)
    anchors = script.anchor_centroids(head.apply, split)
    assert anchors.shape == (4, head.dim)
    np.testing.assert_allclose(np.linalg.norm(anchors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(anchors, script.anchor_centroids(head.apply, split))


# -- up next ---------------------------------------------------------------------------


def line_library() -> TrackSummaries:
    """Six one-window tracks on a quarter circle, 0..5 in order; 5 duplicates 4."""
    angles = np.linspace(0.0, np.pi / 2, 5)
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    windows = np.concatenate([points, points[4:5]]).astype(np.float32)
    return TrackSummaries.from_windows(
        windows=windows,
        track_ids=[10, 11, 12, 13, 14, 15],
        starts=list(range(6)),
        counts=[1] * 6,
        content_keys=["a", "b", "c", "d", "e", "e"],
    )


def test_up_next_follows_the_session_and_leaves_out_what_was_played() -> None:
    library = line_library()
    # decay 0: sounds like the last track only.
    assert [t for t, _ in up_next(library, [10, 12], k=2, decay=0.0)] == [11, 13]
    # Equal weights: the mean of 10 and 14 is 12.
    assert up_next(library, [10, 14], k=1, decay=1.0)[0][0] == 12
    # The played track's duplicate (15 = 14) is left out too.
    ranked = [t for t, _ in up_next(library, [14], k=5)]
    assert 14 not in ranked and 15 not in ranked and ranked[0] == 13
    distances = [d for _, d in up_next(library, [11], k=5)]
    assert distances == sorted(distances)
    assert up_next(library, [999], k=3) == []
    with pytest.raises(ConfigError):
        up_next(library, [10], k=0)
    with pytest.raises(ConfigError):
        up_next(library, [10], k=1, decay=1.5)


@pytest.fixture(scope="module")
def tone_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("upnext-live")
    build_tone_index(root, tracks=5, duration_s=16.0)
    return root / "index"


def test_recognizer_sends_up_next_after_each_track_change(tone_library: Path) -> None:
    from synesthete.index.config import MatcherConfig, RecognizerConfig
    from synesthete.index.recognizer import Recognizer
    from synesthete.index.store import Library

    with Library.open(tone_library) as library:
        summaries = library.summaries()
        recognizer = Recognizer(
            stream="test",
            input_rate_hz=SAMPLE_RATE_HZ,
            encoder=FakeEncoder(),
            candidates=library.brute_force(),
            library=library,
            config=RecognizerConfig(matcher=MatcherConfig(index_hop_s=library.index_hop_s)),
            summaries=summaries,
        )
        audio = np.concatenate([make_tone_track(seed=s, duration_s=16.0) for s in (2, 4)])
        events = []
        for start in range(0, audio.shape[0], 4096):
            events.extend(recognizer.push(audio[start : start + 4096]))
        events.extend(recognizer.flush())
        named = [e.track.id for e in events if isinstance(e, NowPlaying)]
        changes = [t for n, t in enumerate(named) if n == 0 or named[n - 1] != t]
        following = [e for e in events if isinstance(e, UpNext)]
        assert len(changes) >= 2 and len(following) == len(changes)
        for n, event in enumerate(following):
            assert list(event.history) == changes[: n + 1]
            ids = [info.id for info, _ in event.tracks]
            assert ids == [t for t, _ in up_next(summaries, changes[: n + 1], k=5)]
            assert not set(ids) & set(event.history)
            payload = event.to_payload()
            assert payload["type"] == "up_next" and payload["history"] == changes[: n + 1]
        # Each up_next comes right after the now_playing that changed the track.
        for n, event in enumerate(events):
            if isinstance(event, UpNext):
                before = events[n - 1]
                assert isinstance(before, NowPlaying) and before.track.id == event.history[-1]
        recognizer.reset()
        assert recognizer.history == []


# -- the CLI ---------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), env=cli_env(), capture_output=True, text=True, timeout=300
    )


def test_similar_after_lists_unplayed_tracks(demo_library: DemoLibrary) -> None:
    index = str(demo_library.index)
    out = run_cli("similar", "--index", index, "--after", "1", "2", "--k", "3", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [t["id"] for t in doc["after"]] == [1, 2]
    ids = [item["track"]["id"] for item in doc["tracks"]]
    assert len(ids) == 3 and not {1, 2} & set(ids)
    text = run_cli("similar", "--index", index, "--after", "2", "--k", "2")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("up next after ") and len(lines) == 3


def test_similar_after_errors_are_one_line(
    demo_library: DemoLibrary, capsys: pytest.CaptureFixture[str]
) -> None:
    from synesthete.clients.cli import main

    index = str(demo_library.index)
    for argv in (
        ["similar", "--index", index, "--after", "9999"],
        ["similar", "--index", index],
        ["similar", "--index", index, "1", "--after", "2"],
        ["similar", "--index", index, "--after", "1", "--k", "0"],
    ):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("synesthete: error: ")


def test_a_library_of_one_track_has_nothing_to_suggest(tmp_path: Path) -> None:
    index = build_tone_index(tmp_path, tracks=1, duration_s=12.0)
    for args in (("--after", "1"), ("1",)):
        out = run_cli("similar", "--index", str(index), *args)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "  (no other tracks in the index)"
