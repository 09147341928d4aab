"""Training views made in the mel-power domain, from cached spectrograms.

A training step needs hundreds of (index view, query view) pairs. Decoding,
filtering and STFT-ing waveforms for each one costs more than the network on
two CPU cores, so the train split is cached once as mel power in dB
(``mel_cache``) and every degradation is modelled on mel power instead:

- **Position and tempo.** The query is read at frame positions
  ``a + off + i * rate``: a shift of up to ±``max_offset_frames`` (half the
  index hop), a time stretch (tempo, speed), linear interpolation in power.
- **Pitch and speed.** Energy at f moves to f × warp: interpolation along the
  mel axis on log-frequency band centres. A speed change warps both.
- **Rooms.** A room impulse response becomes a per-band kernel over frame
  lags (the energy of each 20 ms segment of the response in each band); the
  reverberant power is that kernel convolved along time (the convolutive
  transfer function approximation), with a second of pre-roll so earlier
  music rings into the window.
- **Noise, babble, other music.** Added as power at a drawn SNR, the sum of
  mel-band powers standing in for the in-band waveform power (HTK triangles
  sum to one between the first and last centre). Log-mixup-exp in BYOL-A's
  terms.
- **Devices.** EQ curves and phone / laptop / low-pass band limits are
  per-band gains.
- **Masks.** SpecAugment-style time and band masks at the floor.

The index view stays clean, as the library stores it. Everything here is
batched torch on the CPU; ``draw`` returns both views as the network's input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from synesthete.errors import ConfigError
from synesthete.inference import augment

LN10_OVER_10 = math.log(10.0) / 10.0


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """How often and how hard each degradation is drawn for a query view."""

    frames: int = 201
    max_offset_frames: float = 12.5
    """Half the 0.5 s index hop at 20 ms frames: how far a live window may sit."""
    pre_roll_frames: int = 50
    """Music before the window that a room rings into it (1 s)."""
    speed_p: float = 0.3
    speed_range: tuple[float, float] = (0.94, 1.06)
    tempo_p: float = 0.3
    tempo_range: tuple[float, float] = (0.94, 1.06)
    pitch_p: float = 0.25
    pitch_semitones: float = 1.2
    room_p: float = 0.4
    real_room_share: float = 0.5
    """Of the views put in a room, the share read from a reverberant copy of the
    split (waveform rooms) rather than convolved with a per-band kernel; only
    when the augmenter has such copies."""
    noise_p: float = 0.85
    snr_db_range: tuple[float, float] = (-5.0, 15.0)
    eq_p: float = 0.6
    band_p: float = 0.4
    time_mask_p: float = 0.3
    band_mask_p: float = 0.2
    same_track_fraction: float = 0.25
    babble_weight: int = 2
    """How many lots babble of talkers gets among the interference kinds (one each)."""
    same_track_gap_frames: tuple[int, int] = (100, 500)
    """Same-track pairs 2-10 s apart: each other's hardest negatives (position)."""
    grouped_fraction: float = 0.0
    """Share of the batch drawn ``group_size`` excerpts at a time from one group of tracks
    (one package: one game's soundtrack, one soundfont's renderings): each other's
    negatives of the same style, as the unknown music a library most often meets is
    (the rest of a soundtrack). Random tracks from 22 packages rarely share a batch's style,
    so without it the network may tell tracks apart by timbre alone."""
    group_size: int = 16

    def __post_init__(self) -> None:
        if self.frames < 8 or self.pre_roll_frames < 1:
            raise ConfigError("augment frames and pre-roll must be positive")
        if self.group_size < 2:
            raise ConfigError("group_size must be >= 2")
        for name in ("room_p", "real_room_share", "noise_p", "grouped_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class MelStream:
    """Mel power in dB of one or many recordings end to end: ``db [T, n_mels]`` float16.

    ``starts[k]:ends[k]`` are the frames of recording ``k``; crops never
    cross them.
    """

    db: torch.Tensor
    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        lengths = self.ends - self.starts
        if self.db.ndim != 2 or lengths.size == 0 or int(lengths.min()) < 1:
            raise ConfigError("a mel stream needs [T, n_mels] frames and non-empty recordings")
        self.weights = lengths / lengths.sum()

    @property
    def n_mels(self) -> int:
        return int(self.db.shape[1])

    def pick(self, rng: np.random.Generator, n: int) -> npt.NDArray[np.int64]:
        """``n`` recordings, by length (every frame equally likely)."""
        return rng.choice(self.starts.shape[0], size=n, p=self.weights).astype(np.int64)

    def read(self, recording: npt.NDArray[np.int64], positions: torch.Tensor) -> torch.Tensor:
        """Power (linear) at fractional frame ``positions [b, F]`` of each ``recording [b]``.

        Positions outside a recording clamp to its edge frames. Returns
        ``[b, n_mels, F]`` float32.
        """
        lo_bound = torch.from_numpy(self.starts[recording]).to(positions.dtype)[:, None]
        hi_bound = torch.from_numpy(self.ends[recording] - 1).to(positions.dtype)[:, None]
        pos = torch.minimum(torch.maximum(positions, lo_bound), hi_bound)
        lo = pos.floor().long()
        frac = (pos - lo.to(pos.dtype)).float()
        db = self.db[lo].float()
        if bool((frac > 0).any()):
            # Interpolating dB rather than power: one exp instead of two, and for
            # neighbouring 20 ms frames the difference is far below the noise.
            hi = torch.minimum(lo + 1, hi_bound.long())
            db = torch.lerp(db, self.db[hi].float(), frac[:, :, None])
        return _db_to_power(db).permute(0, 2, 1)

    def crops(self, rng: np.random.Generator, n: int, frames: int) -> torch.Tensor:
        """``n`` random crops of ``frames`` frames as power ``[n, n_mels, frames]``."""
        recording = self.pick(rng, n)
        span = self.ends[recording] - self.starts[recording]
        begin = self.starts[recording] + (rng.random(n) * np.maximum(1, span - frames)).astype(
            np.int64
        )
        steps = torch.arange(frames, dtype=torch.float64)
        return self.read(recording, torch.from_numpy(begin).double()[:, None] + steps[None, :])


def _db_to_power(db: torch.Tensor) -> torch.Tensor:
    return torch.exp(db * LN10_OVER_10)


def power_to_db(power: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.log10(torch.clamp(power, min=1e-10))


@dataclass
class Batch:
    """One training batch: both views as mel dB and who they are (for the loss's mask)."""

    index_db: torch.Tensor  # [b, n_mels, frames]
    query_db: torch.Tensor  # [b, n_mels, frames]
    track: npt.NDArray[np.int64]  # [b]
    frame: npt.NDArray[np.int64]  # [b] index view's first frame in the track stream


class MelAugmenter:
    """Draws batches of (clean index view, degraded query view) from cached mel power.

    ``noises`` maps a kind (``pink``, ``babble``, ``samples``, ...) to a
    stream of interference; ``speech`` is a stream of single talkers that
    babble is built from (several crops summed); ``room_kernels`` is
    ``[k, n_mels, lags]`` per-band energy over frame lags; ``reverberant``
    are copies of ``music`` played in rooms (frame-aligned with it).
    """

    def __init__(
        self,
        *,
        music: MelStream,
        noises: dict[str, MelStream],
        speech: MelStream | None,
        room_kernels: torch.Tensor | None,
        centres_hz: Sequence[float],
        config: AugmentConfig,
        reverberant: Sequence[MelStream] = (),
        groups: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self.music = music
        self._group_members: list[npt.NDArray[np.int64]] = []
        if groups is not None:
            if groups.shape[0] != music.starts.shape[0]:
                raise ConfigError("one group per music recording is needed")
            members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
            self._group_members = [m for m in members if m.size >= 2]
        lengths = (music.ends - music.starts).astype(np.float64)
        self._member_weights = [lengths[m] / lengths[m].sum() for m in self._group_members]
        sizes = np.array([lengths[m].sum() for m in self._group_members])
        self._group_weights = sizes / sizes.sum() if sizes.size else sizes
        self.reverberant = list(reverberant)
        self.noises = noises
        self.speech = speech
        self.rooms = room_kernels
        self.config = config
        self.centres_hz = torch.tensor(list(centres_hz), dtype=torch.float64)
        self._log_centres = torch.log(self.centres_hz).float()
        if self.centres_hz.shape[0] != music.n_mels:
            raise ConfigError("one centre frequency per mel band is needed")
        if room_kernels is not None and room_kernels.shape[1] != music.n_mels:
            raise ConfigError("room kernels must have one row per mel band")
        for copy in self.reverberant:
            if copy.db.shape != music.db.shape or not np.array_equal(copy.starts, music.starts):
                raise ConfigError("a reverberant copy must be frame-aligned with the music")

    # -- the batch ------------------------------------------------------------------------

    def draw(self, rng: np.random.Generator, batch: int) -> Batch:
        cfg = self.config
        frames = cfg.frames
        track = self.music.pick(rng, batch)
        pairs = int(batch * cfg.same_track_fraction) // 2
        self._group_rows(rng, track, first=pairs, last=batch - pairs)
        starts = self.music.starts[track]
        span = self.music.ends[track] - starts
        room_for = np.maximum(1, span - frames)
        frame = starts + (rng.random(batch) * room_for).astype(np.int64)
        for row in range(pairs):
            partner = batch - 1 - row
            track[partner] = track[row]
            gap = int(rng.integers(*cfg.same_track_gap_frames))
            lo, hi = int(starts[row]), int(starts[row] + room_for[row])
            ahead = frame[row] + gap <= hi and (frame[row] - gap < lo or rng.random() < 0.5)
            frame[partner] = int(np.clip(frame[row] + (gap if ahead else -gap), lo, hi))
        steps = torch.arange(frames, dtype=torch.float64)
        index_power = self.music.read(track, torch.from_numpy(frame).double()[:, None] + steps)

        query = self._query_power(rng, track, frame)
        return Batch(
            index_db=power_to_db(index_power),
            query_db=self._masks(power_to_db(query), rng),
            track=track,
            frame=frame,
        )

    def _group_rows(
        self, rng: np.random.Generator, track: npt.NDArray[np.int64], *, first: int, last: int
    ) -> None:
        """Redraw ``config.grouped_fraction`` of the batch, from row ``first`` on (before the
        same-track partners at ``last``), ``group_size`` rows at a time from one group each
        (groups by their length, tracks within by theirs)."""
        cfg = self.config
        if not self._group_members or cfg.grouped_fraction <= 0.0:
            return
        end = min(last, first + round(cfg.grouped_fraction * track.shape[0]))
        for lo in range(first, end, cfg.group_size):
            g = int(rng.choice(len(self._group_weights), p=self._group_weights))
            n = min(cfg.group_size, end - lo)
            track[lo : lo + n] = rng.choice(
                self._group_members[g], size=n, p=self._member_weights[g]
            )

    def _query_power(
        self, rng: np.random.Generator, track: npt.NDArray[np.int64], frame: npt.NDArray[np.int64]
    ) -> torch.Tensor:
        cfg = self.config
        b = track.shape[0]
        speed = np.where(rng.random(b) < cfg.speed_p, rng.uniform(*cfg.speed_range, b), 1.0)
        tempo = np.where(rng.random(b) < cfg.tempo_p, rng.uniform(*cfg.tempo_range, b), 1.0)
        semitones = np.where(
            rng.random(b) < cfg.pitch_p,
            rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones, b),
            0,
        )
        rate = speed * tempo  # track frames per query frame
        warp = speed * 2.0 ** (semitones / 12.0)  # energy at f lands at f × warp
        offset = rng.uniform(-cfg.max_offset_frames, cfg.max_offset_frames, b)
        pre = cfg.pre_roll_frames
        # Query frame i (i from -pre) reads track frame centre + offset + (i - mid) × rate:
        # the stretch pivots on the window's centre, so the true position stays put.
        mid = (cfg.frames - 1) / 2.0
        steps = torch.arange(-pre, cfg.frames, dtype=torch.float64)
        centre = torch.from_numpy(frame + mid + offset)[:, None]
        positions = centre + (steps[None, :] - mid) * torch.from_numpy(rate)[:, None]
        roomed = rng.random(b) < cfg.room_p
        real = np.zeros(b, dtype=bool)
        if self.reverberant:
            real = np.logical_and(roomed, rng.random(b) < cfg.real_room_share)
        power = self.music.read(track, positions)  # [b, n_mels, pre + frames]
        if self.reverberant:
            copy = rng.integers(len(self.reverberant), size=b)
            for j, stream in enumerate(self.reverberant):
                rows = torch.from_numpy(np.flatnonzero(real & (copy == j)))
                if rows.numel():
                    power[rows] = stream.read(track[rows.numpy()], positions[rows])
        power = self._warp(power, torch.from_numpy(warp).float())
        power = self._room(power, np.flatnonzero(roomed & ~real), rng)[:, :, pre:]
        power = self._noise(power, rng)
        return self._device(power, rng)

    # -- degradations ---------------------------------------------------------------------

    def _warp(self, power: torch.Tensor, warp: torch.Tensor) -> torch.Tensor:
        """Energy at f moves to f × warp: read each band at its centre / warp."""
        if bool((warp == 1.0).all()):
            return power
        b, n_mels, frames = power.shape
        source = self._log_centres[None, :] - torch.log(warp)[:, None]  # [b, n_mels]
        pos = torch.searchsorted(self._log_centres.contiguous(), source.contiguous())
        pos = pos.clamp(1, n_mels - 1)
        left = self._log_centres[pos - 1]
        right = self._log_centres[pos]
        frac = ((source - left) / (right - left)).clamp(0.0, 1.0)
        idx_lo = (pos - 1)[:, :, None].expand(b, n_mels, frames)
        idx_hi = pos[:, :, None].expand(b, n_mels, frames)
        warped = torch.lerp(power.gather(1, idx_lo), power.gather(1, idx_hi), frac[:, :, None])
        outside = (source < self._log_centres[0]) | (source > self._log_centres[-1])
        return warped.masked_fill(outside[:, :, None], 0.0)

    def _room(
        self, power: torch.Tensor, rows: npt.NDArray[np.int64], rng: np.random.Generator
    ) -> torch.Tensor:
        """Per-band convolution of ``rows`` with a random room's frame-lag kernel."""
        if self.rooms is None or self.rooms.shape[0] == 0:
            return power
        _, n_mels, frames = power.shape
        if rows.size == 0:
            return power
        lags = self.rooms.shape[2]
        kernels = self.rooms[torch.from_numpy(rng.integers(self.rooms.shape[0], size=rows.size))]
        chosen = power[torch.from_numpy(rows)]  # [r, n_mels, frames]
        padded = torch.nn.functional.pad(chosen, (lags - 1, 0))
        wet = torch.nn.functional.conv1d(
            padded.reshape(1, rows.size * n_mels, -1),
            kernels.flip(-1).reshape(rows.size * n_mels, 1, lags),
            groups=rows.size * n_mels,
        ).reshape(rows.size, n_mels, frames)
        out = power.clone()
        out[torch.from_numpy(rows)] = wet.clamp(min=0.0)
        return out

    def interference(self, rng: np.random.Generator, n: int, frames: int) -> torch.Tensor:
        """``n`` crops of one random kind of interference each, unit mean power."""
        talkers = ["babble"] * self.config.babble_weight if self.speech is not None else []
        kinds = [*self.noises, "music", *talkers]
        out = torch.empty(n, self.music.n_mels, frames)
        choice = rng.integers(len(kinds), size=n)
        for k, kind in enumerate(kinds):
            rows = np.flatnonzero(choice == k)
            if rows.size == 0:
                continue
            if kind == "music":
                crops = self.music.crops(rng, rows.size, frames)
            elif kind == "babble":
                crops = self._babble(rng, rows.size, frames)
            else:
                crops = self.noises[kind].crops(rng, rows.size, frames)
            out[torch.from_numpy(rows)] = _unit_power(crops)
        return out

    def outsiders(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        """``[n, n_mels, frames]`` dB of interference alone: half single talkers (when
        there are talkers), the rest the interference mix of ``interference``."""
        frames = self.config.frames
        voices = n // 2 if self.speech is not None else 0
        parts = [self.interference(rng, n - voices, frames)]
        if voices and self.speech is not None:
            parts.append(self.speech.crops(rng, voices, frames))
        return power_to_db(torch.cat(parts))

    def _babble(self, rng: np.random.Generator, n: int, frames: int) -> torch.Tensor:
        """2-6 talkers at ±3 dB each: single-talker crops summed as power."""
        assert self.speech is not None
        total = torch.zeros(n, self.music.n_mels, frames)
        talkers = rng.integers(2, 7, size=n)
        for k in range(int(talkers.max())):
            active = torch.from_numpy((talkers > k).astype(np.float32))[:, None, None]
            level = torch.from_numpy(10.0 ** (rng.uniform(-3.0, 3.0, n) / 10.0)).float()
            voice = _unit_power(self.speech.crops(rng, n, frames))
            total += active * level[:, None, None] * voice
        return total

    def _noise(self, power: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        b, _, frames = power.shape
        rows = np.flatnonzero(rng.random(b) < self.config.noise_p)
        if rows.size == 0:
            return power
        noise = self.interference(rng, rows.size, frames)
        # A second layer a third of the time: babble over a fan, music over chatter.
        extra = rng.random(rows.size) < 0.33
        if extra.any():
            second = self.interference(rng, int(extra.sum()), frames)
            weight = torch.from_numpy(10.0 ** (rng.uniform(-12.0, 0.0, int(extra.sum())) / 10.0))
            noise[torch.from_numpy(np.flatnonzero(extra))] += weight.float()[:, None, None] * second
        idx = torch.from_numpy(rows)
        signal = power[idx].mean(dim=(1, 2)).clamp(min=1e-10)
        snr_db = torch.from_numpy(rng.uniform(*self.config.snr_db_range, rows.size)).float()
        scale = signal / noise.mean(dim=(1, 2)).clamp(min=1e-10) / 10.0 ** (snr_db / 10.0)
        out = power.clone()
        out[idx] = power[idx] + scale[:, None, None] * noise
        return out

    def _device(self, power: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """EQ curves and device band limits as per-band power gains."""
        b = power.shape[0]
        log_f = torch.log2(self.centres_hz)
        gain_db = torch.zeros(b, self.centres_hz.shape[0], dtype=torch.float64)
        for row in np.flatnonzero(rng.random(b) < self.config.eq_p):
            for _ in range(int(rng.integers(1, 4))):
                centre = rng.uniform(math.log2(60.0), math.log2(7000.0))
                width = rng.uniform(0.3, 2.0)
                gain_db[row] += rng.uniform(-12.0, 12.0) * torch.exp(
                    -0.5 * ((log_f - centre) / width) ** 2
                )
            gain_db[row] += rng.uniform(-3.0, 3.0) * (log_f - math.log2(1000.0))
        gain = 10.0 ** (gain_db.clamp(-30.0, 15.0) / 10.0)
        for row in np.flatnonzero(rng.random(b) < self.config.band_p):
            kind = rng.random()
            if kind < 0.35:
                band = augment.PHONE_BAND_HZ
            elif kind < 0.8:
                band = augment.LAPTOP_BAND_HZ
            else:
                band = (20.0, float(rng.uniform(2500.0, 7000.0)))
            # The benchmark's own device filters, as power gains at the band centres.
            response = augment.butterworth_gain(self.centres_hz.numpy(), band, augment.BAND_ORDER)
            gain[row] *= torch.from_numpy(response**2)
        return power * gain.float()[:, :, None]

    def _masks(self, db: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        b, n_mels, frames = db.shape
        floor = db.amin(dim=(1, 2))
        for row in np.flatnonzero(rng.random(b) < self.config.time_mask_p):
            width = int(rng.integers(1, max(2, frames // 8)))
            begin = int(rng.integers(0, frames - width))
            db[row, :, begin : begin + width] = floor[row]
        for row in np.flatnonzero(rng.random(b) < self.config.band_mask_p):
            width = int(rng.integers(1, max(2, n_mels // 8)))
            begin = int(rng.integers(0, n_mels - width))
            db[row, begin : begin + width, :] = floor[row]
        return db


def _unit_power(power: torch.Tensor) -> torch.Tensor:
    return power / power.mean(dim=(1, 2), keepdim=True).clamp(min=1e-10)
