"""The recognizer: one stream's path from raw audio blocks to events.

Composes the streaming resampler, the windower, an ``Encoder``, a
``CandidateSource`` and the ``Matcher``. It does no I/O and owns no thread:
the live loop calls ``push`` from its executor thread, ``identify`` calls it
in a plain loop on a virtual clock, so both give the same events.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from synesthete.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from synesthete.errors import ConfigError
from synesthete.events import Event, NowPlaying, SoundsLike, Unknown, UpNext
from synesthete.index.config import RecognizerConfig
from synesthete.index.constellation import SPAN_S, PeakVerifier
from synesthete.index.matcher import Matcher
from synesthete.index.protocols import CandidateSource, CurveLibrary
from synesthete.index.similar import TrackSummaries, check_distance
from synesthete.index.sonic_map import MapPlacer
from synesthete.index.upnext import up_next
from synesthete.inference.encoder import Encoder
from synesthete.stream.guard import InputGuard
from synesthete.stream.resample import StreamResampler
from synesthete.stream.windowing import RecentAudio, Window, Windower

TIMING_WINDOWS = 4096
"""``WindowTiming`` keeps at least this many recent windows, at most twice as many.

A live stream runs for days; its timings must not grow with it."""


@dataclass(slots=True)
class WindowTiming:
    """Wall-clock cost of the last windows, for status events and benchmarks."""

    encoder_ms: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)
    matcher_ms: list[float] = field(default_factory=list)

    def clear(self) -> None:
        self.encoder_ms.clear()
        self.search_ms.clear()
        self.matcher_ms.clear()

    def trim(self, keep: int) -> None:
        """Forget all but the last ``keep`` windows."""
        del self.encoder_ms[:-keep]
        del self.search_ms[:-keep]
        del self.matcher_ms[:-keep]


class Recognizer:
    """Raw audio of one stream in, events out: ``push(chunk) -> list[Event]``.

    ``chunk`` is ``[frames]`` or ``[frames, channels]`` float32 at
    ``input_rate_hz``. The ``guard`` (the only one on the path) replaces non-finite
    samples by 0 and counts them and the clipped ones; NaN never reaches the encoder.
    """

    def __init__(
        self,
        *,
        stream: str,
        input_rate_hz: int,
        encoder: Encoder,
        candidates: CandidateSource,
        library: CurveLibrary,
        config: RecognizerConfig,
        summaries: TrackSummaries | None = None,
        map_placer: MapPlacer | None = None,
    ) -> None:
        if encoder.sample_rate_hz != SAMPLE_RATE_HZ or encoder.window_samples != WINDOW_SAMPLES:
            raise ConfigError(
                f"encoder {encoder.name} expects {encoder.window_samples} samples at "
                f"{encoder.sample_rate_hz} Hz; the pipeline produces {WINDOW_SAMPLES} at "
                f"{SAMPLE_RATE_HZ} Hz"
            )
        self.stream = stream
        self.encoder = encoder
        self.candidate_source = candidates
        self.config = config
        self.guard = InputGuard()
        self._resampler = StreamResampler(
            in_rate_hz=input_rate_hz, out_rate_hz=SAMPLE_RATE_HZ, quality=config.resample_quality
        )
        self._windower = Windower(hop_s=config.matcher.live_hop_s)
        peaks = getattr(library, "peaks", None)
        verifier = (
            PeakVerifier(peaks)
            if config.matcher.verify_min_z is not None and callable(peaks)
            else None
        )
        self._matcher = Matcher(
            config=config.matcher, library=library, stream=stream, verifier=verifier
        )
        self._recent_audio = RecentAudio(seconds=SPAN_S) if verifier is not None else None
        """The audio the peak check reads; ``None`` while the check is off."""
        self._windows_seen = 0
        self._library = library
        self._summaries = summaries
        self._map_placer = map_placer
        """Puts the recent audio on the stored sonic map (``SoundsLike.map_xy``)."""
        self._style_head = None if summaries is None else summaries.audio_head
        self._recent_style: deque[npt.NDArray[np.float32]] = deque(
            maxlen=config.matcher.horizon_windows
        )
        """With an audio similarity head: the recent windows' style vectors, the query of
        "sounds like" (the matcher's recent windows otherwise)."""
        self.sounds_like_distance = check_distance(config.sounds_like_distance)
        self.timing = WindowTiming()
        self.history: list[int] = []
        """Tracks identified in this stream, oldest first (a track again after
        another counts again); "up next" ranks from it."""

    @property
    def matcher(self) -> Matcher:
        return self._matcher

    @property
    def latency_samples(self) -> int:
        """Input-to-decision delay in 16 kHz samples: the window plus the resampler's lag.

        With ``early_windows`` the resampler's lag does not delay decisions.
        """
        if self.config.early_windows:
            return self._windower.latency_samples
        return self._windower.latency_samples + self._resampler.latency_samples

    def push(self, chunk: npt.NDArray[np.float32]) -> list[Event]:
        """Sanitise, resample, window, embed, look up, match: the events ``chunk`` completes."""
        samples = self._resampler.push(self.guard.push(chunk))
        windows = self._windower.push(samples)
        if self.config.early_windows:
            early = self._complete_early()
            if early is not None:
                windows.append(early)
        return self._process(windows)

    def _complete_early(self) -> Window | None:
        """The next window, if only the resampler's held-back samples are missing.

        The resampler's filter holds back a few ms of output (about 24-32 ms
        at HQ). Live, waiting for them would add that to every decision, so
        the window is finished with the resampler's estimate of those samples
        instead: they differ from the exact ones only in the last few ms of
        the 4 s window.
        """
        missing = self._windower.samples_missing
        if missing == 0 or missing > self._resampler.latency_samples:
            return None
        return self._windower.complete_early(self._resampler.estimate_pending())

    def flush(self) -> list[Event]:
        """End of stream: drain the resampler, score the last windows, close the stream."""
        events = self._process(self._windower.push(self._resampler.flush()))
        events.extend(self._matcher.flush())
        if self._windows_seen == 0:
            events.append(Unknown(file=self.stream, t=0.0, reason="too_short"))
        return events

    def reset(self) -> None:
        self._resampler.reset()
        self._windower.reset()
        self._matcher.reset()
        if self._recent_audio is not None:
            self._recent_audio.reset()
        self._windows_seen = 0
        self.guard.reset()
        self.timing.clear()
        self.history.clear()
        self._recent_style.clear()

    def _sounds_like(self, *, t: float) -> SoundsLike | None:
        if (
            self._summaries is None
            or self._windows_seen % self.config.sounds_like_every_windows != 0
        ):
            return None
        current = self._matcher.current()
        exclude = [] if current is None else [current.track.id]
        recent = self._recent_query()
        map_xy: tuple[float, float] | None = None
        if self._map_placer is not None and recent.ndim == 2 and recent.shape[0] > 0:
            x, y = self._map_placer.place(self._summaries.query_vector(recent))[0]
            map_xy = (float(x), float(y))
        nearest = self._summaries.nearest(
            recent,
            k=self.config.sounds_like_k,
            exclude_track_ids=exclude,
            distance=self.sounds_like_distance,
            query_hop_s=self.config.matcher.live_hop_s,
        )
        return SoundsLike(
            file=self.stream,
            t=t,
            tracks=tuple((self._library.info(track_id), dist) for track_id, dist in nearest),
            metric=self.sounds_like_distance,
            map_xy=map_xy,
        )

    def _recent_query(self) -> npt.NDArray[np.float32]:
        """The "sounds like" query: the recent windows' style vectors with an audio head,
        else the matcher's recent window embeddings."""
        if self._style_head is None:
            return self._matcher.recent_embeddings()
        if not self._recent_style:
            return np.zeros((0, self._style_head.dim), dtype=np.float32)
        return np.stack(self._recent_style)

    def _up_next(self, now: NowPlaying) -> UpNext | None:
        """After a change of the identified track: ``sounds_like_k`` tracks to play next."""
        if self.history and self.history[-1] == now.track.id:
            return None
        self.history.append(now.track.id)
        if self._summaries is None or self.config.sounds_like_k < 1:
            return None
        ranked = up_next(self._summaries, self.history, k=self.config.sounds_like_k)
        return UpNext(
            file=self.stream,
            t=now.t,
            history=tuple(self.history),
            tracks=tuple((self._library.info(track_id), dist) for track_id, dist in ranked),
        )

    def _process(self, windows: Sequence[Window]) -> list[Event]:
        if not windows:
            return []
        batch = np.stack([w.samples for w in windows])
        started = time.perf_counter()
        embeddings = self.encoder.embed(batch)
        encoded = time.perf_counter()
        neighbors = self.candidate_source.query(embeddings, k=self.config.matcher.top_k)
        styles: list[npt.NDArray[np.float32]] = (
            list(self._style_head.apply_audio(batch)) if self._style_head is not None else []
        )
        searched = time.perf_counter()
        events: list[Event] = []
        for n, (window, embedding, found) in enumerate(
            zip(windows, embeddings, neighbors, strict=True)
        ):
            if styles:
                self._recent_style.append(styles[n])
            audio = None if self._recent_audio is None else self._recent_audio.push(window)
            for event in self._matcher.push(embedding, found, t=window.end_s, audio=audio):
                events.append(event)
                if isinstance(event, NowPlaying):
                    following = self._up_next(event)
                    if following is not None:
                        events.append(following)
            self._windows_seen += 1
            similar = self._sounds_like(t=window.end_s)
            if similar is not None:
                events.append(similar)
        matched = time.perf_counter()
        if self.config.keep_timings:
            per_window = 1000.0 / len(windows)
            self.timing.encoder_ms.append((encoded - started) * per_window)
            self.timing.search_ms.append((searched - encoded) * per_window)
            self.timing.matcher_ms.append((matched - searched) * per_window)
            if len(self.timing.matcher_ms) > 2 * TIMING_WINDOWS:
                self.timing.trim(TIMING_WINDOWS)
        return events
