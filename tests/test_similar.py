"""Sounds like: the track-level distances, exclusions and duplicates, live events, the CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import DemoLibrary, cli_command, cli_env
from fakes import FakeEncoder, build_tone_index, make_tone_track

from synesthete.constants import (
    DEFAULT_SOUNDS_LIKE_DISTANCE,
    SAMPLE_RATE_HZ,
    SOUNDS_LIKE_DISTANCES,
)
from synesthete.errors import ConfigError
from synesthete.events import SoundsLike
from synesthete.index.frechet import subsequence_frechet_many
from synesthete.index.similar import (
    DISTANCES,
    REPRESENTATIVES,
    TrackSummaries,
    check_distance,
    farthest_points,
)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_nearest_by_mean_excludes_identified_track_and_its_duplicates() -> None:
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((4, 16)))
    windows = np.concatenate([unit(c + 0.05 * rng.standard_normal((10, 16))) for c in centres])
    # Track 13 is a byte-identical copy of track 10 (same content key).
    summaries = TrackSummaries.from_windows(
        windows=np.concatenate([windows, windows[:10]]),
        track_ids=[10, 11, 12, 14, 13],
        starts=[0, 10, 20, 30, 40],
        counts=[10, 10, 10, 10, 10],
        content_keys=["a", "b", "c", "d", "a"],
    )
    np.testing.assert_allclose(np.linalg.norm(summaries.means, axis=1), 1.0, atol=1e-6)
    live = unit(centres[0] + 0.05 * rng.standard_normal((3, 16)))
    ranked = summaries.nearest(live, k=5)
    assert {ranked[0][0], ranked[1][0]} == {10, 13}
    assert ranked[0][1] < ranked[2][1] / 3
    others = summaries.nearest(live, k=5, exclude_track_ids=[10])
    assert [t for t, _ in others] and not {10, 13} & {t for t, _ in others}
    assert [d for _, d in others] == sorted(d for _, d in others)


def test_empty_inputs() -> None:
    summaries = TrackSummaries.from_windows(
        windows=np.zeros((0, 8), dtype=np.float32), track_ids=[], starts=[], counts=[]
    )
    assert summaries.nearest(np.ones((1, 8), dtype=np.float32), k=3) == []


# -- known answers on constructed curves -----------------------------------------


def basis(dim: int = 8) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)


def summaries_of(curves: list[np.ndarray], **kwargs: object) -> TrackSummaries:
    counts = [c.shape[0] for c in curves]
    starts = list(np.cumsum([0, *counts[:-1]]))
    return TrackSummaries.from_windows(
        windows=np.concatenate(curves).astype(np.float32),
        track_ids=list(range(len(curves))),
        starts=starts,
        counts=counts,
        index_hop_s=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


def held(points: list[np.ndarray], windows_each: int) -> np.ndarray:
    """A track curve that holds each point for ``windows_each`` index windows."""
    return np.repeat(np.stack(points), windows_each, axis=0)


def test_distance_names_match_the_cli_choices() -> None:
    assert set(SOUNDS_LIKE_DISTANCES) < set(DISTANCES)
    assert DEFAULT_SOUNDS_LIKE_DISTANCE in SOUNDS_LIKE_DISTANCES
    with pytest.raises(ConfigError):
        check_distance("euclid")


def test_mean_and_cosine_known_answers() -> None:
    e = basis()
    # Track 0 alternates e0/e1 (raw mean (e0+e1)/2); track 1 is e0 throughout.
    summaries = summaries_of([np.stack([e[0], e[1]] * 4), held([e[0]], 8)])
    query = np.stack([e[0]] * 3)
    mean = summaries.distances(query, distance="mean")
    # mean-to-mean: angle 45 deg between e0 and the normalised (e0+e1)/2.
    np.testing.assert_allclose(mean, [np.sqrt(2 - np.sqrt(2)), 0.0], atol=1e-6)
    cosine = summaries.distances(query, distance="cosine")
    # Plain mean cosine: mean over pairs of 1 - q.p = 1 - 1/2 for track 0.
    np.testing.assert_allclose(cosine, [0.5, 0.0], atol=1e-6)


def test_min_known_answer_is_the_mean_over_query_points_of_the_nearest_window() -> None:
    e = basis()
    summaries = summaries_of([np.stack([e[0], e[2]] * 3), np.stack([e[1]] * 6)])
    query = np.stack([e[0], e[1]])
    # Track 0: e0 -> 0, e1 -> sqrt(2); track 1: e0 -> sqrt(2), e1 -> 0.
    np.testing.assert_allclose(
        summaries.distances(query, distance="min"), [np.sqrt(2) / 2] * 2, atol=1e-6
    )


def test_min_representatives_cover_a_long_track() -> None:
    rng = np.random.default_rng(3)
    walk = unit(np.cumsum(rng.standard_normal((900, 16)), axis=0))
    summaries = summaries_of([walk])
    reps = summaries.representatives().points
    assert reps.shape[0] == REPRESENTATIVES
    query = unit(walk[::7] + 0.01 * rng.standard_normal((129, 16)))
    exact = np.sqrt(np.maximum(0.0, 2 - 2 * (query @ walk.T))).min(axis=1).mean()
    approx = summaries.distances(query, distance="min")[0]
    assert exact <= approx + 1e-6
    # Farthest-point sampling: every window lies within the covering radius of a pick.
    radius = np.sqrt(np.maximum(0.0, 2 - 2 * (walk[::4] @ reps.T))).min(axis=1).max()
    assert approx - exact <= radius


def test_farthest_points_weights_and_small_inputs() -> None:
    rng = np.random.default_rng(4)
    points = unit(rng.standard_normal((50, 8)))
    chosen, weights = farthest_points(points, k=10)
    assert len(set(chosen.tolist())) == 10
    assert weights.sum() == pytest.approx(1.0)
    chosen, weights = farthest_points(points[:3], k=10)
    assert chosen.tolist() == [0, 1, 2] and weights.tolist() == pytest.approx([1 / 3] * 3)


def test_frechet_is_order_aware_where_min_and_mean_are_not() -> None:
    e = basis()
    # At the 0.5 s index hop a track holding each point for 4 s has 8 windows a
    # point, i.e. two 2 s sketch points: e1 e1 e2 e2 e3 e3.
    summaries = summaries_of([held([e[1], e[2], e[3]], 8), held([e[4]], 24)])
    forward = np.stack([e[1], e[2], e[3]])  # live windows at the 2 s live hop
    backward = forward[::-1].copy()
    assert summaries.distances(forward, distance="frechet", query_hop_s=2.0)[0] == 0.0
    # Reversed, the first point couples to e3 and nothing after it is e2 or e1.
    np.testing.assert_allclose(
        summaries.distances(backward, distance="frechet", query_hop_s=2.0)[0], np.sqrt(2)
    )
    for name in ("mean", "min"):
        # (float32 rounding: sqrt(2 - 2 * 0.99999994) is 3e-4)
        assert summaries.distances(backward, distance=name)[0] == pytest.approx(0.0, abs=1e-3)
    # Skipping e2 is not allowed: the coupling passes every track point between.
    skip = np.stack([e[1], e[3]])
    np.testing.assert_allclose(
        summaries.distances(skip, distance="frechet", query_hop_s=2.0)[0], np.sqrt(2)
    )


def brute_force_frechet(d: np.ndarray, max_step: int) -> float:
    """Every start and every sequence of steps: query point i couples to the track
    points it advances over (step >= 1) or holds the current one (step 0)."""
    n, m = d.shape
    best = np.inf
    for start in range(m):
        for steps in itertools.product(range(max_step + 1), repeat=n - 1):
            j, cost = start, d[0, start]
            for i, s in enumerate(steps, start=1):
                if j + s >= m:
                    cost = np.inf
                    break
                cost = max(cost, d[i, j] if s == 0 else d[i, j + 1 : j + s + 1].max())
                j += s
            best = min(best, cost)
    return float(best)


@pytest.mark.parametrize("max_step", [1, 2, 3])
def test_banded_subsequence_frechet_matches_brute_force(max_step: int) -> None:
    rng = np.random.default_rng(max_step)
    lengths = [1, 4, 7, 2]
    d = rng.uniform(0.0, 2.0, size=(2, 4, sum(lengths))).astype(np.float32)
    position = np.concatenate([np.arange(n) for n in lengths])
    starts = np.cumsum([0, *lengths[:-1]])
    cost = subsequence_frechet_many(d, position=position, max_step=max_step)
    per_track = np.minimum.reduceat(cost, starts, axis=1)
    for e in range(d.shape[0]):
        for t, (s, n) in enumerate(zip(starts, lengths, strict=True)):
            expected = brute_force_frechet(d[e, :, s : s + n], max_step)
            assert per_track[e, t] == pytest.approx(expected)


def test_frechet_of_a_long_query_is_the_mean_over_its_excerpts() -> None:
    rng = np.random.default_rng(5)
    tracks = [unit(np.cumsum(rng.standard_normal((200, 8)), axis=0)) for _ in range(3)]
    summaries = summaries_of(tracks)
    query = tracks[1][:128]  # index hop: 32 sketch points, 4 excerpts of 8
    whole = summaries.distances(query, distance="frechet", query_hop_s=0.5)
    parts = [
        summaries.distances(query[i : i + 32], distance="frechet", query_hop_s=0.5)
        for i in range(0, 128, 32)
    ]
    np.testing.assert_allclose(whole, np.mean(parts, axis=0), atol=1e-3)
    assert whole[1] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("distance", DISTANCES)
def test_every_distance_excludes_the_track_and_its_duplicates(distance: str) -> None:
    rng = np.random.default_rng(6)
    tracks = [unit(np.cumsum(rng.standard_normal((40, 8)), axis=0)) for _ in range(4)]
    summaries = summaries_of(
        [*tracks, tracks[2]], content_keys=["a", "b", "c", "d", "c"]
    )  # track 4 is a copy of track 2
    query = tracks[2][8:24:4]
    ranked = summaries.nearest(query, k=5, distance=distance, query_hop_s=2.0)
    assert {t for t, _ in ranked[:2]} == {2, 4}
    others = summaries.nearest(
        query, k=5, exclude_track_ids=[2], distance=distance, query_hop_s=2.0
    )
    assert [t for t, _ in others] and not {2, 4} & {t for t, _ in others}
    assert [d for _, d in others] == sorted(d for _, d in others)


@pytest.mark.parametrize("distance", DISTANCES)
def test_every_distance_excludes_the_versions_of_the_track(distance: str) -> None:
    """Track 4 is track 2 re-encoded and played a little faster (other bytes, same music);
    the index names it a version of 2 (``same_music``), and that makes it a duplicate."""
    rng = np.random.default_rng(6)
    tracks = [unit(np.cumsum(rng.standard_normal((40, 8)), axis=0)) for _ in range(4)]
    version = unit(tracks[2][::2].repeat(2, axis=0)[:38] + 0.01 * rng.standard_normal((38, 8)))
    query = tracks[2][8:24:4]
    plain = summaries_of([*tracks, version])
    assert 4 in [t for t, _ in plain.nearest(query, k=5, exclude_track_ids=[2], distance=distance)]
    aware = summaries_of([*tracks, version], same_music=[(2, 4), (7, 1)])  # 7: not in the index
    others = aware.nearest(query, k=5, exclude_track_ids=[2], distance=distance, query_hop_s=2.0)
    assert {t for t, _ in others} == {0, 1, 3}
    assert 2 not in {t for t, _ in aware.nearest(query, k=5, exclude_track_ids=[4])}


def test_bad_queries_are_config_errors() -> None:
    summaries = summaries_of([basis()[:4]])
    with pytest.raises(ConfigError):
        summaries.distances(np.ones((2, 5), dtype=np.float32), distance="mean")
    with pytest.raises(ConfigError):
        summaries.distances(np.full((2, 8), np.nan, dtype=np.float32), distance="min")
    with pytest.raises(ConfigError):
        TrackSummaries.from_windows(windows=basis(), track_ids=[1], starts=[0], counts=[0])


# -- live: the sounds_like event follows the flag --------------------------------


@pytest.fixture(scope="module")
def fake_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("similar-live")
    build_tone_index(root, tracks=6, duration_s=16.0)
    return root


@pytest.mark.parametrize("distance", SOUNDS_LIKE_DISTANCES)
def test_live_sounds_like_uses_the_chosen_distance(fake_library: Path, distance: str) -> None:
    from synesthete.index.config import MatcherConfig, RecognizerConfig
    from synesthete.index.recognizer import Recognizer
    from synesthete.index.store import Library

    with Library.open(fake_library / "index") as library:
        summaries = library.summaries()
        config = MatcherConfig(index_hop_s=library.index_hop_s)
        recognizer = Recognizer(
            stream="test",
            input_rate_hz=SAMPLE_RATE_HZ,
            encoder=FakeEncoder(),
            candidates=library.brute_force(),
            library=library,
            config=RecognizerConfig(matcher=config, sounds_like_distance=distance),
            summaries=summaries,
        )
        audio = make_tone_track(seed=3, duration_s=16.0)
        seen = 0
        for start in range(0, audio.shape[0], SAMPLE_RATE_HZ // 2):
            for event in recognizer.push(audio[start : start + SAMPLE_RATE_HZ // 2]):
                if not isinstance(event, SoundsLike):
                    continue
                seen += 1
                current = recognizer.matcher.current()
                exclude = [] if current is None else [current.track.id]
                expected = summaries.nearest(
                    recognizer.matcher.recent_embeddings(),
                    k=5,
                    exclude_track_ids=exclude,
                    distance=distance,
                    query_hop_s=config.live_hop_s,
                )
                assert event.metric == distance
                assert event.to_payload()["metric"] == distance
                assert [(i.id, d) for i, d in event.tracks] == expected
                assert current is None or current.track.id not in {i.id for i, _ in event.tracks}
        assert seen >= 2


def test_recognizer_refuses_an_unknown_distance() -> None:
    from synesthete.index.config import RecognizerConfig

    with pytest.raises(ConfigError):
        RecognizerConfig(sounds_like_distance="nearest")


# -- the CLI: `synesthete similar` and the --sounds-like flag ---------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), env=cli_env(), capture_output=True, text=True, timeout=300
    )


def test_similar_cli_by_id_path_and_file(demo_library: DemoLibrary) -> None:
    index = str(demo_library.index)
    by_id = run_cli("similar", "--index", index, "1", "--k", "3", "--format", "json")
    assert by_id.returncode == 0, by_id.stderr
    doc = json.loads(by_id.stdout)
    assert doc["track"]["id"] == 1 and doc["metric"] == DEFAULT_SOUNDS_LIKE_DISTANCE
    ids = [item["track"]["id"] for item in doc["tracks"]]
    assert len(ids) == 3 and 1 not in ids
    distances = [item["distance"] for item in doc["tracks"]]
    assert distances == sorted(distances)

    # The same track named by its path, as text, with another distance.
    by_path = run_cli(
        "similar", "--index", index, doc["track"]["path"], "--k", "3", "--distance", "frechet"
    )
    assert by_path.returncode == 0, by_path.stderr
    lines = by_path.stdout.splitlines()
    assert "frechet" in lines[0] and doc["track"]["title"] in lines[0] and len(lines) == 4

    # Any audio file: an excerpt of track 2 is embedded; track 2 comes first.
    excerpt = demo_library.excerpt(2, start_s=10.0, seconds=12.0)
    by_file = run_cli("similar", "--index", index, str(excerpt), "--format", "json")
    assert by_file.returncode == 0, by_file.stderr
    found = json.loads(by_file.stdout)
    assert found["track"] is None and found["excluded_ids"] == []
    assert found["tracks"][0]["track"]["title"] == demo_library.titles[2]


def test_similar_cli_errors_are_one_line(
    demo_library: DemoLibrary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from synesthete.clients.cli import main

    index = str(demo_library.index)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    for target in ("9999", str(tmp_path / "missing.flac"), str(bad)):
        assert main(["similar", "--index", index, target]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("synesthete: error: ")
    assert main(["similar", "--index", index, "1", "--k", "0"]) == 2
    assert "--k" in capsys.readouterr().err


def test_identify_sounds_like_flag_sets_the_metric(demo_library: DemoLibrary) -> None:
    excerpt = demo_library.excerpt(1, start_s=5.0, seconds=10.0)
    out = run_cli(
        "identify",
        "--index",
        str(demo_library.index),
        "--events",
        "all",
        "--sounds-like",
        "min",
        str(excerpt),
    )
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    similar = [e for e in events if e["type"] == "sounds_like"]
    assert similar and all(e["metric"] == "min" for e in similar)
