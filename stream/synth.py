"""Procedural test music and noise: pure numpy, deterministic from a seed.

``synth_track(seed=...)`` renders a small piece of "music": a seed-chosen
tempo, key and mode; verse/chorus/bridge chord progressions played by an
additive-synth pad with a seed-chosen timbre; a bass line; a lead melody
built from motifs that follow the chords; drums (kick = decaying pitched
sine, snare and hat = filtered noise bursts) in a seed-chosen pattern. The
sections follow a song form; a repeated section reuses its backing and adds a
per-occurrence ornament layer, so repeats are alike but not sample-identical.

Each distinct section is rendered once and then overlap-added wherever the
form uses it, which keeps rendering far faster than real time (the cost grows
with the number of distinct sections, not the duration).

``pink_noise`` and ``speech_like_noise`` (babble) are negatives and
augmentation material. Nothing here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError

MIN_TEMPO_BPM = 80.0
MAX_TEMPO_BPM = 160.0
STEPS_PER_BEAT = 4  # sixteenth-note grid
BEATS_PER_BAR = 4
STEPS_PER_BAR = STEPS_PER_BEAT * BEATS_PER_BAR
BARS_PER_SECTION = 4
PEAK_AMPLITUDE = 0.89
"""Tracks are peak-normalised to about -1 dBFS."""

MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 192_000

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_DORIAN = (0, 2, 3, 5, 7, 9, 10)
_MIXOLYDIAN = (0, 2, 4, 5, 7, 9, 10)
_MODES = (_MAJOR, _MINOR, _DORIAN, _MIXOLYDIAN)

# Chord roots as scale degrees (0 = tonic), one chord per bar.
_PROGRESSIONS = (
    (0, 4, 5, 3),
    (0, 5, 3, 4),
    (5, 3, 0, 4),
    (0, 3, 4, 3),
    (0, 3, 5, 4),
    (1, 4, 0, 5),
    (0, 2, 3, 4),
    (3, 4, 0, 0),
    (0, 6, 5, 4),
    (5, 4, 3, 4),
    (0, 0, 3, 4),
    (3, 0, 4, 5),
)

_KICK_PATTERNS = ((0, 8), (0, 6, 8), (0, 4, 8, 12), (0, 3, 8, 10), (0, 7, 10), (0, 10))
_SNARE_PATTERNS = ((4, 12), (4, 12, 14), (8,), (4, 11, 12), (4, 12, 15))
_HAT_PATTERNS = (
    tuple(range(0, 16, 2)),
    tuple(range(16)),
    (2, 6, 10, 14),
    (0, 4, 8, 12),
    (0, 2, 3, 6, 8, 10, 11, 14),
)
_BASS_PATTERNS = (
    ((0, 8, 0), (8, 8, 0)),
    ((0, 3, 0), (3, 3, 0), (6, 2, 7), (8, 3, 0), (11, 3, 0), (14, 2, 7)),
    ((0, 2, 0), (2, 2, 0), (4, 2, 12), (6, 2, 0), (8, 2, 0), (10, 2, 0), (12, 2, 12), (14, 2, 7)),
    ((0, 6, 0), (6, 2, 0), (8, 4, 7), (12, 4, 5)),
    ((0, 4, 0), (4, 4, 0), (8, 4, 0), (12, 4, 0)),
)
"""Bass bar patterns: (start step, length in steps, semitones above the chord root)."""

_FORMS = (
    ("intro", "verse", "verse", "chorus", "verse", "chorus", "chorus", "outro"),
    ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "chorus", "outro"),
    ("verse", "verse", "chorus", "chorus", "bridge", "verse", "chorus", "outro"),
    ("intro", "chorus", "verse", "chorus", "verse", "bridge", "chorus", "outro"),
)
_REPEAT_FROM = 1  # when a long render outlasts the form, loop from its second section

_SYLLABLE_ONSETS: tuple[str, ...] = (
    *("b", "br", "d", "dr", "f", "g", "gl", "k", "l", "m", "n", "p", "r", "s"),
    *("st", "t", "tr", "v", "z", "sh", "ch", "th", "pl", "kr", ""),
)
_SYLLABLE_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea", "y", "io")
_SYLLABLE_CODAS = ("", "", "", "n", "r", "l", "s", "k", "m", "th", "x", "nd")


def _validate(*, seed: int, seconds: float, sample_rate_hz: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise ConfigError(f"duration must be a finite number of seconds > 0, got {seconds!r}")
    if (
        isinstance(sample_rate_hz, bool)
        or not isinstance(sample_rate_hz, int)
        or not MIN_SAMPLE_RATE_HZ <= sample_rate_hz <= MAX_SAMPLE_RATE_HZ
    ):
        raise ConfigError(
            f"sample_rate_hz must be an int in {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ}, "
            f"got {sample_rate_hz!r}"
        )


def _midi_to_hz(midi: float) -> float:
    return float(440.0 * 2.0 ** ((midi - 69.0) / 12.0))


@dataclass(frozen=True, slots=True)
class _Timbre:
    """An additive voice: harmonic amplitudes ``[H]`` and an ADSR envelope."""

    harmonic_amps: npt.NDArray[np.float64]
    attack_s: float
    decay_s: float
    sustain_level: float
    release_s: float

    @staticmethod
    def random(rng: np.random.Generator, *, plucked: bool, max_harmonics: int) -> _Timbre:
        n_harmonics = int(rng.integers(3, max_harmonics + 1))
        numbers = np.arange(1, n_harmonics + 1, dtype=np.float64)
        rolloff = rng.uniform(0.7, 2.2)
        amps = rng.uniform(0.3, 1.0, n_harmonics) / numbers**rolloff
        if rng.random() < 0.3:  # hollow, clarinet-like: odd harmonics only
            amps[1::2] *= 0.05
        amps /= amps.sum()
        if plucked:
            return _Timbre(amps, rng.uniform(0.002, 0.01), rng.uniform(0.08, 0.4), 0.0, 0.05)
        return _Timbre(
            amps,
            rng.uniform(0.01, 0.35),
            rng.uniform(0.1, 0.6),
            rng.uniform(0.4, 0.9),
            rng.uniform(0.08, 0.4),
        )

    def envelope(self, *, hold_samples: int, sample_rate_hz: int) -> npt.NDArray[np.float64]:
        """ADSR over ``hold_samples`` plus the release tail: ``[hold + release]``."""
        attack = max(1, int(self.attack_s * sample_rate_hz))
        decay = max(1, int(self.decay_s * sample_rate_hz))
        release = max(1, int(self.release_s * sample_rate_hz))
        t = np.arange(hold_samples, dtype=np.float64)
        level = np.where(
            t < attack,
            t / attack,
            self.sustain_level
            + (1.0 - self.sustain_level) * np.exp(-np.maximum(t - attack, 0.0) / decay * 3.0),
        )
        end_level = float(level[-1]) if hold_samples else 0.0
        tail = end_level * np.linspace(1.0, 0.0, release, endpoint=False) ** 2
        return np.concatenate([level, tail])


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything the seed decides about one track."""

    sample_rate_hz: int
    step_samples: float
    swing: float
    tonic_midi: int
    scale: tuple[int, ...]
    progressions: dict[str, tuple[int, ...]]
    pad: _Timbre
    pad_rhythm: tuple[int, ...]  # steps at which the pad chord is (re)struck in a bar
    pad_sevenths: bool
    bass: _Timbre
    bass_pattern: tuple[tuple[int, int, int], ...]
    lead: _Timbre
    motifs: dict[str, tuple[tuple[tuple[int, int, int], ...], ...]]
    kick: npt.NDArray[np.float64]
    snare: npt.NDArray[np.float64]
    hat: npt.NDArray[np.float64]
    kick_steps: tuple[int, ...]
    snare_steps: tuple[int, ...]
    hat_steps: tuple[int, ...]
    hat_steps_chorus: tuple[int, ...]
    form: tuple[str, ...]


def _noise_burst(
    rng: np.random.Generator,
    *,
    seconds: float,
    sample_rate_hz: int,
    low_hz: float,
    high_hz: float,
    decay_s: float,
) -> npt.NDArray[np.float64]:
    n = max(8, int(seconds * sample_rate_hz))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate_hz)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0.0
    burst = np.fft.irfft(spectrum, n)
    burst /= np.max(np.abs(burst)) + 1e-12
    return burst * np.exp(-np.arange(n) / (decay_s * sample_rate_hz))


def _kick(rng: np.random.Generator, *, sample_rate_hz: int) -> npt.NDArray[np.float64]:
    n = int(0.35 * sample_rate_hz)
    t = np.arange(n) / sample_rate_hz
    f_start_hz, f_end_hz = rng.uniform(110, 190), rng.uniform(40, 62)
    freq_hz = f_end_hz + (f_start_hz - f_end_hz) * np.exp(-t / rng.uniform(0.02, 0.06))
    phase = 2.0 * np.pi * np.cumsum(freq_hz) / sample_rate_hz
    return np.sin(phase) * np.exp(-t / rng.uniform(0.08, 0.2))


def _snare(rng: np.random.Generator, *, sample_rate_hz: int) -> npt.NDArray[np.float64]:
    nyquist_hz = sample_rate_hz / 2
    noise = _noise_burst(
        rng,
        seconds=0.3,
        sample_rate_hz=sample_rate_hz,
        low_hz=rng.uniform(800, 1800),
        high_hz=min(rng.uniform(4000, 8000), 0.95 * nyquist_hz),
        decay_s=rng.uniform(0.05, 0.15),
    )
    t = np.arange(noise.shape[0]) / sample_rate_hz
    tone = np.sin(2 * np.pi * rng.uniform(170, 260) * t) * np.exp(-t / 0.04)
    return 0.8 * noise + 0.4 * tone


def _hat(rng: np.random.Generator, *, sample_rate_hz: int) -> npt.NDArray[np.float64]:
    nyquist_hz = sample_rate_hz / 2
    return _noise_burst(
        rng,
        seconds=0.12,
        sample_rate_hz=sample_rate_hz,
        low_hz=min(rng.uniform(5000, 8000), 0.6 * nyquist_hz),
        high_hz=nyquist_hz,
        decay_s=rng.uniform(0.012, 0.05),
    )


def _motif(rng: np.random.Generator) -> tuple[tuple[int, int, int], ...]:
    """One bar of melody: (start step, length in steps, scale degrees above the chord root)."""
    notes = []
    step = 0
    degree = int(rng.choice((0, 2, 4)))
    while step < STEPS_PER_BAR:
        length = int(rng.choice((2, 2, 4, 4, 6, 8)))
        length = min(length, STEPS_PER_BAR - step)
        if rng.random() > 0.2:  # else a rest
            notes.append((step, length, degree))
        degree = int(np.clip(degree + rng.choice((-2, -1, -1, 1, 1, 2, 3)), -2, 9))
        step += length
    return tuple(notes)


def _plan(seed: int, sample_rate_hz: int) -> _Plan:
    rng = np.random.default_rng(seed)
    tempo_bpm = rng.uniform(MIN_TEMPO_BPM, MAX_TEMPO_BPM)
    step_samples = 60.0 / tempo_bpm / STEPS_PER_BEAT * sample_rate_hz
    picks = rng.choice(len(_PROGRESSIONS), size=3, replace=False)
    verse_motifs = (_motif(rng), _motif(rng))
    chorus_motifs = (_motif(rng), _motif(rng))
    hat_steps = _HAT_PATTERNS[int(rng.integers(len(_HAT_PATTERNS)))]
    return _Plan(
        sample_rate_hz=sample_rate_hz,
        step_samples=step_samples,
        swing=float(rng.uniform(0.1, 0.3)) if rng.random() < 0.3 else 0.0,
        tonic_midi=int(rng.integers(40, 52)),
        scale=_MODES[int(rng.integers(len(_MODES)))],
        progressions={
            "verse": _PROGRESSIONS[picks[0]],
            "chorus": _PROGRESSIONS[picks[1]],
            "bridge": _PROGRESSIONS[picks[2]],
        },
        pad=_Timbre.random(rng, plucked=False, max_harmonics=8),
        pad_rhythm=((0,), (0, 8), (0, 4, 8, 12), (0, 6, 12))[int(rng.integers(4))],
        pad_sevenths=bool(rng.random() < 0.4),
        bass=_Timbre.random(rng, plucked=True, max_harmonics=4),
        bass_pattern=_BASS_PATTERNS[int(rng.integers(len(_BASS_PATTERNS)))],
        lead=_Timbre.random(rng, plucked=bool(rng.random() < 0.5), max_harmonics=10),
        motifs={
            # Call and response: A A' A B, where A' is A shifted up a third.
            "verse": (
                verse_motifs[0],
                tuple((s, n, d + 2) for s, n, d in verse_motifs[0]),
                verse_motifs[0],
                verse_motifs[1],
            ),
            "chorus": (chorus_motifs[0], chorus_motifs[1], chorus_motifs[0], chorus_motifs[1]),
        },
        kick=_kick(rng, sample_rate_hz=sample_rate_hz),
        snare=_snare(rng, sample_rate_hz=sample_rate_hz),
        hat=_hat(rng, sample_rate_hz=sample_rate_hz),
        kick_steps=_KICK_PATTERNS[int(rng.integers(len(_KICK_PATTERNS)))],
        snare_steps=_SNARE_PATTERNS[int(rng.integers(len(_SNARE_PATTERNS)))],
        hat_steps=hat_steps,
        hat_steps_chorus=tuple(sorted(set(hat_steps) | set(range(0, 16, 2)))),
        form=_FORMS[int(rng.integers(len(_FORMS)))],
    )


class _SectionRenderer:
    """Renders one 4-bar section of a planned track into a buffer with a tail."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.sr = plan.sample_rate_hz
        self.nyquist_hz = plan.sample_rate_hz / 2
        self.section_samples = round(BARS_PER_SECTION * STEPS_PER_BAR * plan.step_samples)
        self.tail_samples = self.sr  # room for release tails to ring into the next section

    def step_to_sample(self, step: int) -> int:
        swing = self.plan.swing * self.plan.step_samples if step % 2 == 1 else 0.0
        return round(step * self.plan.step_samples + swing)

    def degree_to_midi(self, degree: int, *, octave: int) -> int:
        scale = self.plan.scale
        return self.plan.tonic_midi + 12 * (octave + degree // 7) + scale[degree % 7]

    def add_note(
        self,
        buf: npt.NDArray[np.float64],
        *,
        start: int,
        hold_samples: int,
        midi: float,
        timbre: _Timbre,
        gain: float,
    ) -> None:
        envelope = timbre.envelope(hold_samples=hold_samples, sample_rate_hz=self.sr)
        n = min(envelope.shape[0], buf.shape[0] - start)
        if n <= 0:
            return
        f0_hz = _midi_to_hz(midi)
        # float32 sin is several times faster than float64; the phase error
        # (< 0.01 rad over a held bar) is irrelevant for test music.
        omega = (2.0 * np.pi * f0_hz / self.sr * np.arange(n)).astype(np.float32)
        wave = np.zeros(n, dtype=np.float32)
        for number, amp in enumerate(timbre.harmonic_amps, start=1):
            if number * f0_hz >= 0.9 * self.nyquist_hz:
                break
            # Fixed per-harmonic phases (= number) keep the crest factor down, deterministically.
            wave += np.float32(amp) * np.sin(np.float32(number) * omega + np.float32(number))
        buf[start : start + n] += gain * wave * envelope[:n]

    def add_hit(
        self,
        buf: npt.NDArray[np.float64],
        *,
        start: int,
        sample: npt.NDArray[np.float64],
        gain: float,
    ) -> None:
        n = min(sample.shape[0], buf.shape[0] - start)
        if n > 0:
            buf[start : start + n] += gain * sample[:n]

    def render(self, kind: str) -> npt.NDArray[np.float64]:
        plan = self.plan
        buf = np.zeros(self.section_samples + self.tail_samples)
        harmony = "chorus" if kind == "outro" else "verse" if kind == "intro" else kind
        progression = plan.progressions[harmony]
        with_drums = kind in ("verse", "chorus", "bridge")
        with_melody = kind in ("verse", "chorus")
        bar_steps = STEPS_PER_BAR
        for bar, chord_degree in enumerate(progression):
            bar_step = bar * bar_steps
            chord = [chord_degree, chord_degree + 2, chord_degree + 4]
            if plan.pad_sevenths:
                chord.append(chord_degree + 6)
            strikes = plan.pad_rhythm
            for i, strike in enumerate(strikes):
                next_strike = strikes[i + 1] if i + 1 < len(strikes) else bar_steps
                start = self.step_to_sample(bar_step + strike)
                hold = self.step_to_sample(bar_step + next_strike) - start
                for degree in chord:
                    self.add_note(
                        buf,
                        start=start,
                        hold_samples=hold,
                        midi=self.degree_to_midi(degree, octave=1),
                        timbre=plan.pad,
                        gain=0.16,
                    )
            if kind != "intro":
                root_midi = self.degree_to_midi(chord_degree, octave=0) - 12
                for step, length, semitones in plan.bass_pattern:
                    start = self.step_to_sample(bar_step + step)
                    self.add_note(
                        buf,
                        start=start,
                        hold_samples=self.step_to_sample(bar_step + step + length) - start,
                        midi=root_midi + semitones,
                        timbre=plan.bass,
                        gain=0.38,
                    )
            if with_melody:
                for step, length, degree in plan.motifs[kind][bar]:
                    start = self.step_to_sample(bar_step + step)
                    self.add_note(
                        buf,
                        start=start,
                        hold_samples=self.step_to_sample(bar_step + step + length) - start,
                        midi=self.degree_to_midi(chord_degree + degree, octave=2),
                        timbre=plan.lead,
                        gain=0.3 if kind == "chorus" else 0.24,
                    )
            hat_steps = plan.hat_steps_chorus if kind == "chorus" else plan.hat_steps
            if kind in ("intro", "outro"):
                hat_steps = plan.hat_steps[::2]
            for step in hat_steps:
                accent = 1.0 if step % 4 == 0 else 0.7
                self.add_hit(
                    buf,
                    start=self.step_to_sample(bar_step + step),
                    sample=plan.hat,
                    gain=0.1 * accent,
                )
            if with_drums:
                for step in plan.kick_steps:
                    self.add_hit(
                        buf, start=self.step_to_sample(bar_step + step), sample=plan.kick, gain=0.55
                    )
                for step in plan.snare_steps:
                    self.add_hit(
                        buf, start=self.step_to_sample(bar_step + step), sample=plan.snare, gain=0.3
                    )
        if kind == "outro":
            buf[: self.section_samples] *= np.linspace(1.0, 0.0, self.section_samples)
            buf[self.section_samples :] = 0.0
        return buf

    def render_ornament(self, rng: np.random.Generator, kind: str) -> npt.NDArray[np.float64]:
        """A per-occurrence layer: a sparse high counter-line and a drum fill.

        Real music rarely repeats a section sample for sample; without this,
        every repeat would be identical and a position in the track could not
        be told apart from the same position in another repeat.
        """
        plan = self.plan
        buf = np.zeros(self.section_samples + self.tail_samples)
        if kind in ("intro", "outro"):
            return buf
        progression = plan.progressions["chorus" if kind == "chorus" else kind]
        total_steps = BARS_PER_SECTION * STEPS_PER_BAR
        n_notes = int(rng.integers(14, 24))
        for step in np.sort(rng.choice(total_steps - 2, size=n_notes, replace=False)):
            bar = int(step) // STEPS_PER_BAR
            degree = progression[bar] + int(rng.choice([0, 2, 4, 7, 9]))
            start = self.step_to_sample(int(step))
            length = int(rng.integers(1, 3))
            self.add_note(
                buf,
                start=start,
                hold_samples=self.step_to_sample(int(step) + length) - start,
                midi=self.degree_to_midi(degree, octave=int(rng.integers(2, 4))),
                timbre=plan.lead,
                gain=0.32,
            )
        fill_bar = int(rng.integers(BARS_PER_SECTION))
        for step in rng.choice(STEPS_PER_BAR, size=int(rng.integers(3, 7)), replace=False):
            self.add_hit(
                buf,
                start=self.step_to_sample(fill_bar * STEPS_PER_BAR + int(step)),
                sample=plan.snare,
                gain=0.22,
            )
        return buf


def synth_track(
    *, seed: int, duration_s: float, sample_rate_hz: int = 22050
) -> npt.NDArray[np.float32]:
    """Render the track of ``seed``: ``[round(duration_s * sample_rate_hz)]`` float32 mono.

    Peak-normalised to ``PEAK_AMPLITUDE`` (< 1). Same seed, same samples at a
    given rate; different seeds give different tempo, key, harmony, timbres,
    grooves and form. The form (e.g. intro, verse, verse, chorus, ...) loops
    from its second section if ``duration_s`` outlasts it.
    """
    _validate(seed=seed, seconds=duration_s, sample_rate_hz=sample_rate_hz)
    total_samples = max(1, round(duration_s * sample_rate_hz))
    plan = _plan(int(seed), sample_rate_hz)
    renderer = _SectionRenderer(plan)
    section_samples = renderer.section_samples
    out = np.zeros(total_samples + renderer.tail_samples + section_samples)
    cache: dict[str, npt.NDArray[np.float64]] = {}
    position = 0
    index = 0
    form = plan.form
    while position < total_samples:
        if index < len(form):
            kind = form[index]
        else:
            kind = form[_REPEAT_FROM + (index - len(form)) % (len(form) - _REPEAT_FROM)]
        if kind == "outro" and position + section_samples < total_samples:
            kind = "chorus"  # the render goes on: no fade-out mid-track
        if kind not in cache:
            cache[kind] = renderer.render(kind)
        section = cache[kind]
        out[position : position + section.shape[0]] += section
        ornament = renderer.render_ornament(np.random.default_rng([int(seed), 0x0A7E, index]), kind)
        out[position : position + ornament.shape[0]] += ornament
        position += section_samples
        index += 1
    track = out[:total_samples]
    # Short fades keep a cut-off end from clicking.
    fade = min(total_samples // 2, int(0.01 * sample_rate_hz))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade)
        track[:fade] *= ramp
        track[-fade:] *= ramp[::-1]
    peak = float(np.max(np.abs(track)))
    if peak > 0:
        track *= PEAK_AMPLITUDE / peak
    return track.astype(np.float32)


def synth_track_title(seed: int) -> str:
    """Two invented, pronounceable words for ``seed``, e.g. ``"Glaimor Trouvex"``."""
    _validate(seed=seed, seconds=1.0, sample_rate_hz=MIN_SAMPLE_RATE_HZ)
    rng = np.random.default_rng([int(seed), 0x7171E])
    words = []
    for _ in range(2):
        syllables = int(rng.integers(2, 4))
        word = "".join(
            str(rng.choice(_SYLLABLE_ONSETS))
            + str(rng.choice(_SYLLABLE_VOWELS))
            + (str(rng.choice(_SYLLABLE_CODAS)) if k == syllables - 1 else "")
            for k in range(syllables)
        )
        words.append(word.capitalize())
    return " ".join(words)


def _peak_normalise(signal: npt.NDArray[np.float64], peak: float) -> npt.NDArray[np.float32]:
    current = float(np.max(np.abs(signal))) if signal.size else 0.0
    scaled = signal * (peak / current) if current > 0 else signal
    return scaled.astype(np.float32)


def _validate_peak(peak: float) -> None:
    if not (isinstance(peak, int | float) and 0.0 < peak <= 1.0):
        raise ConfigError(f"peak must be in (0, 1], got {peak!r}")


def pink_noise(
    *, seconds: float, sample_rate_hz: int, seed: int, peak: float = 0.5
) -> npt.NDArray[np.float32]:
    """1/f (pink) noise ``[round(seconds * sample_rate_hz)]`` float32, peak-normalised to ``peak``.

    Shaped in the frequency domain (power ∝ 1/f above 20 Hz, no DC).
    """
    _validate(seed=seed, seconds=seconds, sample_rate_hz=sample_rate_hz)
    _validate_peak(peak)
    n = max(1, round(seconds * sample_rate_hz))
    rng = np.random.default_rng([int(seed), 0x919C])
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate_hz)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    spectrum[0] = 0.0
    return _peak_normalise(np.fft.irfft(spectrum, n), peak)


def speech_like_noise(
    *,
    seconds: float,
    sample_rate_hz: int,
    seed: int,
    talkers: int = 4,
    peak: float = 0.5,
) -> npt.NDArray[np.float32]:
    """Babble: ``talkers`` overlapping synthetic voices, ``[round(seconds * rate)]`` float32.

    Each voice is a buzz at a wandering pitch (90-240 Hz) mixed with breath
    noise, cut into syllables of 3-7 per second with pauses, each syllable
    shaped by random vowel formants (F1/F2/F3) and a smooth amplitude
    envelope. Not intelligible, but it has speech's rhythm and spectrum,
    which is what makes it a hard negative for a music recogniser.
    """
    _validate(seed=seed, seconds=seconds, sample_rate_hz=sample_rate_hz)
    _validate_peak(peak)
    if isinstance(talkers, bool) or not isinstance(talkers, int) or not 1 <= talkers <= 32:
        raise ConfigError(f"talkers must be an int in 1..32, got {talkers!r}")
    n = max(1, round(seconds * sample_rate_hz))
    rng = np.random.default_rng([int(seed), 0x5BEEC4])
    nyquist_hz = sample_rate_hz / 2
    mix = np.zeros(n)
    for _ in range(talkers):
        # Intonation: a smooth random pitch contour around the voice's own base.
        base_f0_hz = rng.uniform(90, 240)
        knots = max(2, int(seconds * 4) + 2)
        contour = base_f0_hz * (1.0 + 0.15 * rng.standard_normal(knots))
        f0_hz = np.interp(np.arange(n), np.linspace(0, n, knots), contour)
        phase = np.cumsum(f0_hz) / sample_rate_hz
        buzz = 2.0 * (phase % 1.0) - 1.0
        breath = 0.3 * rng.standard_normal(n)
        voice = np.zeros(n)
        position = int(rng.integers(0, max(1, int(0.3 * sample_rate_hz))))
        while position < n:
            length = int(sample_rate_hz / rng.uniform(3.0, 7.0))
            end = min(n, position + length)
            segment_len = end - position
            if segment_len < 16:
                break
            if rng.random() < 0.2:  # a pause between phrases
                position = end + int(rng.integers(0, sample_rate_hz // 4))
                continue
            voiced = rng.random() < 0.8
            source = buzz[position:end] if voiced else breath[position:end]
            spectrum = np.fft.rfft(source)
            freqs = np.fft.rfftfreq(segment_len, 1.0 / sample_rate_hz)
            gain = np.zeros_like(freqs)
            formants_hz = (rng.uniform(300, 900), rng.uniform(900, 2400), rng.uniform(2400, 3300))
            for k, formant_hz in enumerate(formants_hz):
                if formant_hz < nyquist_hz:
                    bandwidth_hz = 80.0 + 60.0 * k
                    gain += np.exp(-0.5 * ((freqs - formant_hz) / bandwidth_hz) ** 2) / (k + 1)
            shaped = np.fft.irfft(spectrum * gain, segment_len)
            envelope = np.sin(np.linspace(0.0, np.pi, segment_len)) ** 2
            voice[position:end] += shaped * envelope * rng.uniform(0.5, 1.0)
            position = end
        mix += voice / (np.std(voice) + 1e-12)
    return _peak_normalise(mix, peak)
