"""Spectral-peak constellations: the second opinion on a candidate the embedding is unsure of.

A 4 s embedding says which music a window sounds like. Under a talker at 0 dB or in a
reverberant room a known track's windows drift as far from their stored places as
unknown music of the same style comes to them, so the distance alone cannot name them
(docs/encoder.md, "The ceiling"). What still separates them is *which notes come when*:
the loudest points of the spectrogram, each a local maximum in time and frequency, as
landmark fingerprinters (Wang 2003; audfprint, Dejavu, Olaf) use them.

Every indexed track keeps its constellation: at most ``PEAKS_PER_S`` peaks per second,
``(frame, bin)`` at a 20 ms hop and 15.6 Hz bins (about 60 bytes a second stored). When the
matcher's best candidate is close but not close enough, ``match_peaks`` lays the last
seconds of live peaks over the candidate's stored peaks at the position its path names
(give or take ``SEARCH_S``) and counts how many land on a stored peak. Music the library
does not hold, even from the same soundfont, lands about as often at every offset;
the known track lands far more often at one. ``Match.z`` measures that excess.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from synesthete.constants import SAMPLE_RATE_HZ

N_FFT = 1024
FRAME_HOP = 320
"""20 ms at 16 kHz: 50 frames a second."""
FRAMES_PER_S = SAMPLE_RATE_HZ // FRAME_HOP
LOW_BIN, HIGH_BIN = 8, 330
"""The bins searched for peaks: 125 Hz to 5.2 kHz, where melody and harmony are."""
PEAKS_PER_S = 15
"""The loudest peaks kept in each second."""
NEIGHBOURHOOD = (6, 8)
"""A peak is the largest value within this many frames and bins on each side."""
FLOOR = 1.0
"""... and at least this much (natural log of magnitude) above the spectrogram's median."""
TOLERANCE = 1
"""A live peak lands on a stored one within this many frames and bins."""
HELD_FRAMES = 12
"""A peak this few frames (0.24 s) after another in its bin or the next is a held note's:
the check matches where notes start (``drop_held``), so two pieces that sustain the same
chord do not line up at every offset. With chance measured per query (``Match``) it took
the worst stored track's chance maximum on dev data (a polyphonic vocal render) from
z 11.3 to 7.2 (docs/encoder.md, "Chance per query, held notes dropped")."""
SEARCH_S = 1.5
"""How far from the path's position the alignment is searched, each way."""
SPAN_S = 8.0
"""The live seconds compared: the last two live windows' span at the 2 s hop and more."""
_CHUNK_FRAMES = 30 * FRAMES_PER_S
"""``PeakStream`` picks peaks 30 s at a time (whole seconds, so the per-second cap holds)."""
_WINDOW = np.hanning(N_FFT).astype(np.float32)

PeakArray = npt.NDArray[np.int32]
"""``[N, 2]`` int32: each peak's frame (from the start of the audio) and bin."""


def empty_peaks() -> PeakArray:
    return np.zeros((0, 2), dtype=np.int32)


def _log_spectrogram(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``[frames, HIGH_BIN - LOW_BIN]`` log magnitudes; frame ``i`` starts at ``i * FRAME_HOP``."""
    if audio.shape[0] < N_FFT:
        return np.zeros((0, HIGH_BIN - LOW_BIN), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::FRAME_HOP]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=1)[:, LOW_BIN:HIGH_BIN]
    return np.log(np.abs(spectrum) + 1e-6).astype(np.float32)


def _running_max(
    values: npt.NDArray[np.float32], radius: int, axis: int
) -> npt.NDArray[np.float32]:
    """The largest value within ``radius`` places along ``axis`` (at the edges, of those
    there are): ``radius`` shifted maxima each way, a few times faster than a sliding
    window's on the builder's path."""
    source = np.moveaxis(values, axis, 0)
    out = source.copy()
    for k in range(1, radius + 1):
        np.maximum(out[k:], source[:-k], out=out[k:])
        np.maximum(out[:-k], source[k:], out=out[:-k])
    return np.moveaxis(out, 0, axis)


def _pick(
    spec: npt.NDArray[np.float32], *, first: int, last: int, floor: float, frame0: int = 0
) -> PeakArray:
    """Peaks of ``spec`` in its frames ``[first, last)`` (the rest is context), the loudest
    ``PEAKS_PER_S`` of each whole second; frames returned from ``frame0`` (the stream frame
    of ``spec``'s first)."""
    radius_t, radius_f = NEIGHBOURHOOD
    local = _running_max(_running_max(spec, radius_t, 0), radius_f, 1)
    t, f = np.nonzero((spec == local) & (spec > floor))
    inside = (t >= first) & (t < last)
    t, f = t[inside] + frame0, f[inside]
    if t.size == 0:
        return empty_peaks()
    loudness = spec[t - frame0, f]
    second = t // FRAMES_PER_S
    # Within each second, loudest first; keep the first PEAKS_PER_S of each.
    order = np.lexsort((-loudness, second))
    ranked = second[order]
    rank = np.arange(order.size) - np.searchsorted(ranked, ranked, side="left")
    keep = np.sort(order[rank < PEAKS_PER_S])
    return np.stack([t[keep], f[keep] + LOW_BIN], axis=1).astype(np.int32)


def spectral_peaks(audio: npt.NDArray[np.float32]) -> PeakArray:
    """The constellation of ``audio`` (mono float32 at 16 kHz), frames from its start."""
    spec = _log_spectrogram(np.asarray(audio, dtype=np.float32))
    if spec.shape[0] == 0:
        return empty_peaks()
    return _pick(spec, first=0, last=spec.shape[0], floor=float(np.median(spec)) + FLOOR)


class PeakStream:
    """``spectral_peaks`` of a stream of 16 kHz blocks, 30 s at a time, so memory stays
    small whatever the track's length (each chunk's loudness floor is its own median):
    ``push`` the blocks, then ``finish``."""

    _CONTEXT_FRAMES = NEIGHBOURHOOD[0] + 1

    def __init__(self) -> None:
        self._buffer: list[npt.NDArray[np.float32]] = []
        self._buffered = 0
        self._frame0 = 0
        """The stream frame at which the buffered audio starts."""
        self._lead = 0
        """Frames at the buffer's start that are context (their peaks are out already)."""
        self._found: list[PeakArray] = []

    def push(self, block: npt.NDArray[np.float32]) -> None:
        self._buffer.append(np.asarray(block, dtype=np.float32))
        self._buffered += int(block.shape[0])
        lookahead = self._CONTEXT_FRAMES * FRAME_HOP + N_FFT
        while self._buffered >= (self._lead + _CHUNK_FRAMES) * FRAME_HOP + lookahead:
            self._chunk(final=False)

    def finish(self) -> PeakArray:
        if self._buffered:
            self._chunk(final=True)
        self._buffer, self._buffered = [], 0
        return np.concatenate(self._found) if self._found else empty_peaks()

    def _chunk(self, *, final: bool) -> None:
        audio = np.concatenate(self._buffer)
        spec = _log_spectrogram(audio)
        last = spec.shape[0] if final else self._lead + _CHUNK_FRAMES
        if last > self._lead:
            floor = float(np.median(spec[self._lead : last])) + FLOOR
            self._found.append(
                _pick(spec, first=self._lead, last=last, floor=floor, frame0=self._frame0)
            )
        if final:
            return
        keep = last - self._CONTEXT_FRAMES
        rest = audio[keep * FRAME_HOP :]
        self._buffer, self._buffered = [rest], int(rest.shape[0])
        self._frame0 += keep
        self._lead = self._CONTEXT_FRAMES


def at_speed(peaks: PeakArray, speed: float) -> PeakArray:
    """The constellation of the same audio played ``speed`` times as fast (shorter and
    higher): a speed variant of the index."""
    if speed == 1.0 or peaks.shape[0] == 0:
        return peaks
    out = np.empty_like(peaks)
    out[:, 0] = np.rint(peaks[:, 0] / speed)
    out[:, 1] = np.rint(peaks[:, 1] * speed)
    return out


_BIN_BITS = 9
"""Stored peaks pack into one uint32 each: the frame above ``_BIN_BITS`` bits of bin."""
_MAX_FRAME = (1 << (32 - _BIN_BITS)) - 1
"""46 hours at 50 frames a second; peaks of longer files are not stored past it."""


def to_bytes(peaks: PeakArray) -> bytes:
    """4 bytes a peak (``frame << 9 | bin``, little-endian uint32)."""
    kept = peaks[(peaks[:, 0] >= 0) & (peaks[:, 0] <= _MAX_FRAME)].astype(np.uint32)
    return ((kept[:, 0] << _BIN_BITS) | kept[:, 1]).astype("<u4").tobytes()


def from_bytes(data: bytes) -> PeakArray:
    """``to_bytes`` undone; ``ValueError`` when ``data`` is not whole peaks."""
    if len(data) % 4:
        raise ValueError("peak data is not a whole number of peaks")
    packed = np.frombuffer(data, dtype="<u4")
    out = np.empty((packed.size, 2), dtype=np.int32)
    out[:, 0] = packed >> _BIN_BITS
    out[:, 1] = packed & ((1 << _BIN_BITS) - 1)
    return out


@dataclass(frozen=True, slots=True)
class Match:
    """How the live peaks fit a stored constellation: ``hits`` at the best alignment
    (``offset_frames``: stored frame minus live frame) against what chance gives there.

    Chance is measured per query, not assumed: live peak ``i`` lands at a share ``p_i`` of
    the searched alignments, so an alignment's count has mean ``expected = sum p_i`` and
    variance ``variance = sum p_i (1 - p_i)`` if the peaks land independently, and
    ``z = (hits - expected) / sqrt(variance + 1)``. A live peak that lands everywhere (a
    pitch the stored track holds throughout) adds to the mean and nothing to the spread,
    so it cannot make an alignment stand out; one that lands at a single alignment can."""

    hits: int
    expected: float
    variance: float
    live_peaks: int
    offset_frames: int

    @property
    def z(self) -> float:
        return (self.hits - self.expected) / float(np.sqrt(self.variance + 1.0))


NO_MATCH = Match(hits=0, expected=0.0, variance=0.0, live_peaks=0, offset_frames=0)


def drop_held(peaks: PeakArray, gap_frames: int = HELD_FRAMES) -> PeakArray:
    """``peaks`` without those that come within ``gap_frames`` after another peak in their
    bin or a neighbouring one: what is left marks where notes start or change, not how
    long they are held."""
    if peaks.shape[0] < 2:
        return peaks
    t = peaks[:, 0].astype(np.int64)
    f = peaks[:, 1].astype(np.int64)
    scale = int(t.max()) + gap_frames + 2  # keys bin * scale + frame keep bins apart
    latest = f * scale + t - 1
    held = np.zeros(t.size, dtype=bool)
    for df in (-1, 0, 1):
        keys = np.sort((f + df) * scale + t)  # every peak, as seen from the bin df away
        found = np.searchsorted(keys, latest, side="right") - 1
        before = keys[np.maximum(found, 0)]
        held |= (found >= 0) & (before >= latest + 1 - gap_frames)
    return peaks[~held]


def match_peaks(
    live: PeakArray, stored: PeakArray, *, offset_frames: int, search_frames: int
) -> Match:
    """Lay ``live`` over ``stored`` at every offset within ``offset_frames ±
    search_frames`` (stored frame = live frame + offset) and count the live peaks that
    land within ``TOLERANCE`` frames and bins of a stored peak."""
    if live.shape[0] == 0 or stored.shape[0] == 0:
        return NO_MATCH
    lo = offset_frames - search_frames
    hi = offset_frames + search_frames
    t_min = int(live[:, 0].min()) + lo - TOLERANCE
    t_max = int(live[:, 0].max()) + hi + TOLERANCE
    near = stored[(stored[:, 0] >= t_min) & (stored[:, 0] <= t_max)]
    if near.shape[0] == 0:
        return replace(NO_MATCH, live_peaks=int(live.shape[0]))
    grid = np.zeros((t_max - t_min + 1, HIGH_BIN * 2 + TOLERANCE + 2), dtype=bool)
    for dt in range(-TOLERANCE, TOLERANCE + 1):
        for df in range(-TOLERANCE, TOLERANCE + 1):
            rows = near[:, 0] - t_min + dt
            cols = near[:, 1] + df
            ok = (rows >= 0) & (rows < grid.shape[0]) & (cols >= 0) & (cols < grid.shape[1])
            grid[rows[ok], cols[ok]] = True
    offsets = np.arange(lo, hi + 1)
    rows = live[None, :, 0] + offsets[:, None] - t_min  # [offsets, peaks]
    cols = np.broadcast_to(live[None, :, 1], rows.shape)
    inside = (rows >= 0) & (rows < grid.shape[0])
    landed = grid[np.clip(rows, 0, grid.shape[0] - 1), cols] & inside
    counts = landed.sum(axis=1)
    share = landed.mean(axis=0)  # per live peak: at what share of the alignments it lands
    best = int(np.argmax(counts))
    return Match(
        hits=int(counts[best]),
        expected=float(share.sum()),
        variance=float((share * (1.0 - share)).sum()),
        live_peaks=int(live.shape[0]),
        offset_frames=int(offsets[best]),
    )


def frames_of(seconds: float) -> int:
    return round(seconds * FRAMES_PER_S)


class PeakVerifier:
    """The library's constellations as the matcher checks candidates against them: read
    on demand through ``lookup`` (``Library.peaks``) and kept for the last ``keep``
    tracks, at each speed variant asked for."""

    def __init__(self, lookup: Callable[[int], PeakArray | None], *, keep: int = 32) -> None:
        self._lookup = lookup
        self._keep = keep
        self._cache: OrderedDict[tuple[int, float], PeakArray | None] = OrderedDict()

    def stored(self, track_id: int, speed: float) -> PeakArray | None:
        key = (track_id, speed)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if speed == 1.0:
            found = self._lookup(track_id)
            peaks = None if found is None else drop_held(found)
        else:  # a speed variant: the cached recorded-speed peaks, scaled
            recorded = self.stored(track_id, 1.0)
            peaks = None if recorded is None else at_speed(recorded, speed)
        self._cache[key] = peaks
        if len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return peaks

    def match(self, track_id: int, speed: float, *, live: PeakArray, offset_s: float) -> Match:
        """``match_peaks`` of ``live`` against the track's stored peaks at ``speed``, its
        frame 0 laid at ``offset_s`` of the stored audio (give or take ``SEARCH_S``)."""
        stored = self.stored(track_id, speed)
        if stored is None:
            return NO_MATCH
        return match_peaks(
            drop_held(live),
            stored,
            offset_frames=frames_of(offset_s),
            search_frames=frames_of(SEARCH_S),
        )
