"""Metrics on hand-made event streams whose answers are known."""

from __future__ import annotations

import json

import pytest

from synesthete.clients.evaluation import (
    MIX_COLUMNS,
    OVERALL,
    QueryTruth,
    current_answer_at,
    evaluate_query,
    markdown_table,
    mix_metrics,
    split_by_file,
    summarize,
    summarize_mixes,
)
from synesthete.clients.jsonl import event_line, read_events
from synesthete.errors import ConfigError, ProtocolError
from synesthete.events import NowPlaying, TrackInfo, Unknown


def playing(t: float, track: int, offset_s: float = 0.0, file: str = "q.wav") -> dict:
    return {
        "type": "now_playing",
        "file": file,
        "t": t,
        "track": {"id": track, "path": f"/lib/{track}.flac", "title": str(track)},
        "offset_s": offset_s,
        "confidence": 0.9,
    }


def unknown(t: float, file: str = "q.wav") -> dict:
    return {"type": "unknown", "file": file, "t": t, "reason": "no_match"}


def status(t: float) -> dict:
    return {"type": "status", "file": "q.wav", "t": t}


# --------------------------------------------------------------------------- current answer


def test_current_answer_follows_now_playing_and_unknown() -> None:
    events = [status(1.0), playing(4.0, 7), playing(6.0, 8), unknown(8.0), playing(10.0, 7)]
    assert current_answer_at(events, 3.9) is None
    assert current_answer_at(events, 4.0)["track"]["id"] == 7  # type: ignore[index]
    assert current_answer_at(events, 7.5)["track"]["id"] == 8  # type: ignore[index]
    assert current_answer_at(events, 8.0) is None
    assert current_answer_at(events, 9.9) is None
    assert current_answer_at(events, 12.0)["track"]["id"] == 7  # type: ignore[index]


def test_real_event_payloads_round_trip_through_jsonl() -> None:
    info = TrackInfo(id=3, path="/lib/a.flac", title="A")
    lines = [
        event_line(NowPlaying(file="q.wav", t=4.0, track=info, offset_s=10.0, confidence=0.8)),
        event_line(Unknown(file="q.wav", t=6.0)),
    ]
    events = read_events(lines)
    assert current_answer_at(events, 5.0)["track"]["id"] == 3  # type: ignore[index]
    assert current_answer_at(events, 6.0) is None


def test_split_by_file_keeps_order() -> None:
    events = [playing(2.0, 1, file="a"), playing(2.0, 2, file="b"), unknown(4.0, file="a")]
    groups = split_by_file(events)
    assert list(groups) == ["a", "b"]
    assert [e["type"] for e in groups["a"]] == ["now_playing", "unknown"]


def test_malformed_events_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="'t'"):
        current_answer_at([{"type": "unknown"}], 1.0)
    with pytest.raises(ProtocolError, match=r"track\.id"):
        evaluate_query([{"type": "now_playing", "t": 1.0}], QueryTruth(condition="clean", track=1))


# --------------------------------------------------------------------------- queries


def test_acc_at_t_with_an_unknown_following() -> None:
    # Right at 4 s, lost at 7 s, back at 9 s; acc@4 yes, @6 yes, @8 no, @12 yes.
    events = [playing(4.0, 5, 4.0), unknown(7.0), playing(9.0, 5, 9.0)]
    result = evaluate_query(events, QueryTruth(condition="clean", track=5))
    assert result.correct_at == {4.0: True, 6.0: True, 8.0: False, 12.0: True}
    assert result.first_correct_s == 4.0
    assert not result.wrong_id
    assert result.offset_error_s == pytest.approx(0.0)


def test_wrong_id_then_correct() -> None:
    events = [playing(4.0, 9), playing(6.0, 5, 6.0)]
    result = evaluate_query(events, QueryTruth(condition="clean", track=5))
    assert result.correct_at == {4.0: False, 6.0: True, 8.0: True, 12.0: True}
    assert result.wrong_id
    assert result.first_correct_s == 6.0


def test_naming_another_version_is_a_wrong_id_told_apart_from_other_music() -> None:
    truth = QueryTruth(condition="speed-8", track=5, versions=frozenset({6}))
    only_version = evaluate_query([playing(4.0, 6), playing(8.0, 5, 8.0)], truth)
    assert only_version.wrong_id and only_version.version_id
    assert only_version.correct_at[8.0] and not only_version.correct_at[4.0]
    also_other = evaluate_query([playing(4.0, 6), playing(6.0, 9)], truth)
    assert also_other.wrong_id and not also_other.version_id
    right = evaluate_query([playing(4.0, 5, 4.0)], truth)
    assert not right.wrong_id and not right.version_id
    table = summarize([only_version, also_other, right])
    assert table["speed-8"].wrong_id_rate == pytest.approx(2 / 3)
    assert table["speed-8"].version_id_rate == pytest.approx(1 / 3)
    assert "| of which version % |" in markdown_table(table)


@pytest.mark.parametrize(
    ("track", "versions"),
    [(5, frozenset({5, 6})), (None, frozenset({6})), (5, {6})],
)
def test_versions_must_be_other_tracks(track: int | None, versions: frozenset[int]) -> None:
    with pytest.raises(ConfigError, match="versions"):
        QueryTruth(condition="clean", track=track, versions=versions)


def test_never_correct() -> None:
    result = evaluate_query([unknown(4.0)], QueryTruth(condition="clean", track=5))
    assert result.correct_at == {4.0: False, 6.0: False, 8.0: False, 12.0: False}
    assert result.first_correct_s is None and result.offset_error_s is None
    assert not result.wrong_id


def test_offset_error_uses_tempo_factor_and_excerpt_start() -> None:
    # speed+4 from 100 s: true positions at t = 4, 6, 8 are 104.16, 106.24, 108.32.
    truth = QueryTruth(condition="speed+4", track=5, excerpt_start_s=100.0, tempo_factor=1.04)
    events = [
        playing(4.0, 5, 104.16 + 0.5),  # 0.5 s late
        playing(6.0, 5, 106.24 - 0.1),  # 0.1 s early
        playing(7.0, 8, 999.0),  # wrong track: not an offset error
        playing(8.0, 5, 108.32 + 0.2),
    ]
    result = evaluate_query(events, truth)
    assert result.offset_error_s == pytest.approx(0.2)
    assert result.wrong_id


def test_events_after_the_query_are_ignored() -> None:
    truth = QueryTruth(condition="clean", track=5, duration_s=12.0)
    result = evaluate_query([playing(4.0, 5), playing(12.5, 9)], truth)
    assert not result.wrong_id


def test_false_positive_on_negatives() -> None:
    negative = QueryTruth(condition="negatives", track=None)
    assert evaluate_query([playing(8.0, 1), unknown(10.0)], negative).false_positive
    assert not evaluate_query([unknown(4.0), status(6.0)], negative).false_positive


def test_match_on_path() -> None:
    truth = QueryTruth(condition="clean", track="/lib/5.flac")
    result = evaluate_query([playing(4.0, 5)], truth, match_on="path")
    assert result.correct_at[4.0]


def test_summarize_per_condition_and_overall() -> None:
    clean = QueryTruth(condition="clean", track=1)
    pink = QueryTruth(condition="pink5", track=1)
    negative = QueryTruth(condition="negatives", track=None)
    results = [
        evaluate_query([playing(4.0, 1, 4.0)], clean),  # right from 4 s
        evaluate_query([playing(6.0, 1, 7.0)], clean),  # right from 6 s, 1 s off
        evaluate_query([playing(4.0, 2), playing(8.0, 1, 8.0)], pink),  # wrong, then right
        evaluate_query([], pink),  # never
        evaluate_query([playing(5.0, 3)], negative),
        evaluate_query([], negative),
        evaluate_query([], negative),
        evaluate_query([], negative),
    ]
    table = summarize(results)
    assert list(table) == ["clean", "pink5", "negatives", OVERALL]
    c = table["clean"]
    assert c.queries == 2 and c.negatives == 0
    assert c.acc_at == {4.0: 0.5, 6.0: 1.0, 8.0: 1.0, 12.0: 1.0}
    assert c.median_time_to_first_correct_s == 5.0
    assert c.wrong_id_rate == 0.0
    assert c.false_positive_rate is None
    assert c.offset_error_median_s == pytest.approx(0.5)
    assert c.offset_error_p90_s == pytest.approx(0.9)
    p = table["pink5"]
    assert p.acc_at == {4.0: 0.0, 6.0: 0.0, 8.0: 0.5, 12.0: 0.5}
    assert p.first_correct_rate == 0.5 and p.wrong_id_rate == 0.5
    n = table["negatives"]
    assert n.queries == 0 and n.negatives == 4
    assert n.false_positive_rate == 0.25 and n.acc_at[4.0] is None
    o = table[OVERALL]
    assert o.queries == 4 and o.negatives == 4
    assert o.acc_at[12.0] == 0.75
    assert o.median_time_to_first_correct_s == 6.0
    assert o.wrong_id_rate == 0.25 and o.false_positive_rate == 0.25
    json.dumps({k: v.to_dict() for k, v in table.items()})  # JSON-ready


# --------------------------------------------------------------------------- mixes


def test_mix_seconds_correct_with_crossfade_either_track_rule() -> None:
    # Track 1 plays 0-20 s, track 2 12-40 s (8 s crossfade at 12-20 s).
    segments = [(1, 0.0, 20.0), (2, 12.0, 40.0)]
    # Answer: none until 3 s, track 1 from 3 s, track 2 from 15 s, unknown at 35 s.
    events = [playing(3.0, 1), playing(15.0, 2), unknown(35.0)]
    result = mix_metrics(events, segments, ignore_first_s=6.0, step_s=1.0)
    # Samples t = 1..39. Ignored: t = 1..5 (only track 1 plays, unsettled).
    # Scored: 6..39 = 34 samples. Crossfade 12..19: either track counts, so all right.
    # Wrong: 35..39 (unknown while track 2 plays) = 5.
    assert result.scored_seconds == 34
    assert result.correct_seconds == 29
    assert result.seconds_correct == pytest.approx(29 / 34)
    # Track 1 settled samples 6..19 (14), answered 6..14 (9): 9/14 >= 0.5: found.
    # Track 2 settled samples 18..39 (22), answered 18..34 (17): found.
    assert result.segment_fractions == pytest.approx((9 / 14, 17 / 22))
    assert result.segments_found == 2 and result.segment_recall == 1.0


def test_mix_gap_counts_right_only_without_an_answer() -> None:
    segments = [(1, 0.0, 10.0), (2, 14.0, 30.0)]  # silence 10-14 s
    events = [playing(2.0, 1), unknown(11.0)]
    result = mix_metrics(events, segments, ignore_first_s=6.0)
    # Scored: 6..9 (track 1: right), 10..13 (gap: 10 wrong, 11..13 right),
    # 20..29 (track 2 settled: all wrong). 14..19 ignored.
    assert result.scored_seconds == 4 + 4 + 10
    assert result.correct_seconds == 4 + 3
    assert result.segments_found == 1 and result.segments_hit == 1
    assert result.segment_recall == 0.5


def test_segment_recall_threshold_and_hit() -> None:
    segments = [(1, 0.0, 30.0), (2, 22.0, 60.0)]
    # Track 2 is only named briefly (t 40-44) before a wrong answer takes over.
    events = [playing(2.0, 1), playing(40.0, 2), playing(45.0, 9)]
    result = mix_metrics(events, segments, ignore_first_s=6.0)
    assert result.segments_hit == 2
    assert result.segments_found == 1  # track 2: 5 of 32 settled samples
    assert result.segment_hit_rate == 1.0 and result.segment_recall == 0.5
    strict = mix_metrics(events, segments, ignore_first_s=6.0, min_found_fraction=0.1)
    assert strict.segments_found == 2


def test_summarize_mixes_pools_seconds_and_segments() -> None:
    a = mix_metrics([playing(1.0, 1)], [(1, 0.0, 10.0)], ignore_first_s=0.0)
    b = mix_metrics([], [(1, 0.0, 10.0), (2, 5.0, 20.0)], ignore_first_s=0.0)
    pooled = summarize_mixes([a, b])
    assert pooled["mixes"] == 2
    assert pooled["scored_seconds"] == 9 + 19
    assert pooled["seconds_correct"] == pytest.approx(9 / 28)
    assert pooled["segment_recall"] == pytest.approx(1 / 3)


def test_switch_delay_is_measured_from_the_crossfade_midpoint() -> None:
    # 1 -> 2 fades 12-20 s (midpoint 16), 2 -> 3 fades 36-40 s (midpoint 38), 3 never named.
    segments = [(1, 0.0, 20.0), (2, 12.0, 40.0), (3, 36.0, 60.0)]
    events = [playing(3.0, 1), playing(11.0, 2), playing(15.0, 1), playing(19.0, 2)]
    result = mix_metrics(events, segments, ignore_first_s=6.0)
    # Track 2 is first named at 19 s (11 s is before its start): 3 s after the midpoint.
    assert result.switch_delays_s == (pytest.approx(3.0), None)
    early = mix_metrics([playing(2.0, 1), playing(14.0, 2)], segments[:2], ignore_first_s=6.0)
    assert early.switch_delays_s == (pytest.approx(-2.0),)
    pooled = summarize_mixes([result, early])
    assert pooled["transitions"] == 3
    assert pooled["switched_within_6s"] == pytest.approx(2 / 3)  # the miss counts against
    assert pooled["switch_delay_median_s"] == pytest.approx(0.5)
    assert pooled["switch_delay_max_s"] == pytest.approx(3.0)
    # From the fade's end (8 s and 4 s fades): 3 - 4 = -1 and -2 - 4 = -6.
    assert result.fade_lengths_s == (8.0, 4.0)
    assert pooled["switch_after_fade_end_median_s"] == pytest.approx(-3.5)


def test_bad_segments_are_rejected() -> None:
    with pytest.raises(ConfigError, match="start_s < end_s"):
        mix_metrics([], [(1, 5.0, 5.0)])


# --------------------------------------------------------------------------- markdown


def test_markdown_table_renders_rates_times_and_missing_values() -> None:
    truth = QueryTruth(condition="clean", track=1)
    table = summarize([evaluate_query([playing(4.0, 1, 4.25)], truth)])
    text = markdown_table({k: v.to_dict() for k, v in table.items()})
    lines = text.splitlines()
    assert lines[0].startswith("| condition | n | acc@4 % | acc@6 % | acc@8 % | acc@12 % |")
    assert lines[1].startswith("|:---|---:|")
    assert lines[2] == (
        "| clean | 1 | 100.0 | 100.0 | 100.0 | 100.0 | 4.00 | 0.0 | 0.0 | 0 | – | 0.25 | 0.25 |"
    )
    assert lines[3].startswith("| overall | 1 |")
    assert markdown_table(table) == text  # summaries render like their dicts
    mixes = markdown_table({"mixes": summarize_mixes([])}, columns=MIX_COLUMNS, first_header="set")
    assert mixes.splitlines()[2] == "| mixes | 0 | 0 | – | 0 | – | – | 0 | – | – | – | – |"
