"""Block-size invariance of the whole per-stream path (house rule 5).

The Recognizer (guard → resample → window → embed → candidates → match →
events) is pushed the same audio in blocks of 1, 7, 256 and 4096 samples and
all at once, on the exact path ``identify`` uses (no early windows): every
block size gives the same events (the same JSONL). The tiny
deterministic ``FakeEncoder`` keeps it fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fakes import FakeEncoder, build_tone_index, make_tone_track

from synesthete.events import Candidates, Event, NowPlaying
from synesthete.index.config import MatcherConfig, RecognizerConfig
from synesthete.index.recognizer import Recognizer
from synesthete.index.store import Library

BLOCK_SIZES = (1, 7, 256, 4096, None)  # None: everything at once
INPUT_RATE_HZ = 22_050  # not the encoder's rate, so the resampler does real work
SEED = 3


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tone_index(tmp_path_factory.mktemp("blocks"), tracks=4, duration_s=12.0)


def _events(library: Library, audio: npt.NDArray[np.float32], block: int | None) -> list[Event]:
    recognizer = Recognizer(
        stream="blocks",
        input_rate_hz=INPUT_RATE_HZ,
        encoder=FakeEncoder(),
        candidates=library.brute_force(),
        library=library,
        config=RecognizerConfig(matcher=MatcherConfig(index_hop_s=library.index_hop_s)),
        summaries=library.summaries(),
    )
    step = audio.shape[0] if block is None else block
    events: list[Event] = []
    for start in range(0, audio.shape[0], step):
        events.extend(recognizer.push(audio[start : start + step]))
    events.extend(recognizer.flush())
    return events


def test_every_block_size_gives_the_same_events(library: Path) -> None:
    # 10 s: four windows at the 2 s live hop, enough for candidates and a decision.
    audio = make_tone_track(seed=SEED, duration_s=10.0, sample_rate_hz=INPUT_RATE_HZ, channels=2)
    audio[INPUT_RATE_HZ : INPUT_RATE_HZ + 5, 0] = np.nan  # the guard is on the path too
    with Library.open(library) as opened:
        results = {block: _events(opened, audio, block) for block in BLOCK_SIZES}
    oneshot = results[None]
    assert any(isinstance(e, Candidates) for e in oneshot)
    assert any(isinstance(e, NowPlaying) for e in oneshot), oneshot
    # What identify writes (JSONL payloads) is identical. The objects may differ in the
    # last bits: a block completes 0, 1 or several windows, the encoder embeds them as one
    # batch, and a matrix product's rounding depends on the batch's shape.
    expected = [e.to_payload() for e in oneshot]
    for block, events in results.items():
        assert [e.to_payload() for e in events] == expected, block
