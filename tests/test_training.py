"""Encoder training: the pieces in this venv, and a real tiny run in the [train] venv.

The smoke test runs scripts/train_encoder.py and scripts/export_encoder.py
with .venv-train's python (torch 2.11 + torchaudio, built by
``bash scripts/setup.sh --train``), then loads the exported file here, in the
runtime venv that has no torchaudio, and indexes and identifies with it.
Under scripts/test.sh (SYNESTHETE_REQUIRE_TRAIN=1) a missing train venv fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import cli_command, cli_env

from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.errors import ConfigError
from synesthete.inference import augment
from synesthete.inference.config import EncoderConfig
from synesthete.inference.frontend import LogMel
from synesthete.inference.mel_augment import (
    AugmentConfig,
    Batch,
    MelAugmenter,
    MelStream,
    power_to_db,
)
from synesthete.inference.mel_cache import (
    ROOM_RT60_S,
    reverberant_stream,
    room_kernel,
    stream_of,
)
from synesthete.inference.model import (
    EncoderNet,
    ModelConfig,
    Projection,
    mel_centres_hz,
    pool_in_blocks,
)
from synesthete.inference.torchscript import TorchScriptEncoder, save_scripted
from synesthete.inference.training import (
    NegativeQueue,
    Track,
    TrainConfig,
    alignment,
    dda_projection,
    neighbours,
    nt_xent,
    read_init,
    track_groups,
)
from synesthete.stream.synth import pink_noise, synth_track

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PYTHON = Path(os.environ.get("SYNESTHETE_TRAIN_PYTHON", ROOT / ".venv-train/bin/python"))
CONFIG = ModelConfig()


def _front() -> LogMel:
    """The model's front end in plain torch (this venv has no torchaudio)."""
    return LogMel(
        sample_rate_hz=SAMPLE_RATE_HZ,
        n_fft=CONFIG.n_fft,
        hop_samples=CONFIG.hop_length,
        n_mels=CONFIG.n_mels,
        f_min_hz=CONFIG.f_min_hz,
        f_max_hz=CONFIG.f_max_hz,
    )


def _mel_db(audio: np.ndarray) -> torch.Tensor:
    """``[T, n_mels]`` float16 dB, as the mel cache stores a recording."""
    with torch.inference_mode():
        log_power = _front()(torch.from_numpy(audio.astype(np.float32)))
    return (log_power * (10.0 / np.log(10.0))).t().contiguous().half()


def test_nt_xent_rewards_matching_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    noise = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)
    matched = nt_xent(a, a, temperature=0.1)
    shuffled = nt_xent(a, a.roll(1, dims=0), temperature=0.1)
    unrelated = nt_xent(a, noise, temperature=0.1)
    assert matched < unrelated < shuffled + 1.0
    assert float(matched) < 0.1


def test_outsiders_are_negatives_of_every_view() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(8, 32, generator=g), dim=1)
    b = torch.nn.functional.normalize(a + 0.3 * torch.randn(8, 32, generator=g), dim=1)
    plain = nt_xent(a, b, temperature=0.1)
    far = nt_xent(a, b, temperature=0.1, outsiders=-a[:2])  # opposite every view it copies
    near = nt_xent(a, b, temperature=0.1, outsiders=a[:2])  # as close as a positive
    assert torch.allclose(nt_xent(a, b, 0.1, outsiders=a[:0]), plain)
    assert plain < far < near and near - plain > 5 * (far - plain)
    # The outsider adds a push away from itself to the view it sits on.
    grads = []
    for extra in (None, a[:1]):
        views = a.clone().requires_grad_(True)
        nt_xent(views, b, temperature=0.1, outsiders=extra).backward()
        assert views.grad is not None
        grads.append(views.grad[0])
    assert float((grads[1] - grads[0]) @ a[0]) > 0  # descent now moves away from it


def test_queued_views_are_negatives_unless_they_are_the_same_music() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.nn.functional.normalize(torch.randn(4, 32, generator=g), dim=1)
    b = torch.nn.functional.normalize(a + 0.3 * torch.randn(4, 32, generator=g), dim=1)
    queue = NegativeQueue(size=6, dim=32)
    queue.push(a[:2], np.array([0, 1]), np.array([0, 500]))  # excerpts 0 and 1's own music
    queue.push(-a[2:], np.array([7, 8]), np.array([0, 0]))
    queue.push(a[2:3], np.array([9]), np.array([0]))  # another track, sitting on excerpt 2
    assert len(queue.vectors) == 5
    queue.push(-a[:3], np.array([5, 5, 5]), np.array([0, 0, 0]))
    assert len(queue.vectors) == 6 and queue.track.tolist() == [7, 8, 9, 5, 5, 5]
    # The oldest dropped first: excerpt 0's copy is gone, excerpt 2's rival stays.
    track, frame = np.array([0, 1, 2, 3]), np.array([0, 520, 0, 0])
    exclude = queue.exclude(track, frame, gap_frames=100)
    assert exclude.shape == (4, 6) and not bool(exclude.any())
    plain = nt_xent(a, b, temperature=0.1)
    with_queue = nt_xent(a, b, 0.1, queue=queue.vectors, queue_exclude=exclude)
    assert float(with_queue) > float(plain)  # a rival as close as a positive costs
    # Marked as the same music, a queued view drops out of its excerpt's softmax rows.
    same = NegativeQueue(size=4, dim=32)
    same.push(a[:1], np.array([0]), np.array([40]))
    mask = same.exclude(track, frame, gap_frames=100)
    assert mask[:, 0].tolist() == [True, False, False, False]
    masked = nt_xent(a, b, 0.1, queue=same.vectors, queue_exclude=mask)
    unmasked = nt_xent(a, b, 0.1, queue=same.vectors)
    assert float(plain) <= float(masked) < float(unmasked)
    restored = NegativeQueue(size=4, dim=32)
    restored.restore(same.state())
    assert torch.equal(restored.vectors, same.vectors) and restored.frame.tolist() == [40]


def test_alignment_is_the_mean_squared_distance_of_positives() -> None:
    a = torch.eye(4)
    assert float(alignment(a, a)) == 0.0
    assert float(alignment(a, a.roll(1, dims=0))) == pytest.approx(2.0)
    # Half the pairs equal, half orthogonal: the mean of 0 and 2.
    b = torch.stack([a[0], a[1], a[3], a[2]])
    assert float(alignment(a, b)) == pytest.approx(1.0)


def test_excluded_neighbours_are_not_negatives() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(8, 32, generator=g), dim=1)
    twins = a.clone()
    twins[1] = a[0]  # excerpt 1 is the same music as excerpt 0
    plain = nt_xent(twins, twins, temperature=0.1)
    track = np.array([0, 0, 1, 2, 3, 4, 5, 6])
    frame = np.array([0, 30, 0, 0, 0, 0, 0, 0])
    exclude = neighbours(track, frame, 100)
    assert bool(exclude[0, 1]) and bool(exclude[1, 0]) and not bool(exclude[0, 2])
    masked = nt_xent(twins, twins, temperature=0.1, exclude=exclude)
    assert float(masked) < 0.05 < float(plain)
    far = neighbours(track, np.array([0, 300, 0, 0, 0, 0, 0, 0]), 100)
    assert not bool(far[0, 1])


def test_mel_stream_interpolates_and_never_crosses_a_recording() -> None:
    db = torch.arange(20, dtype=torch.float16)[:, None].repeat(1, 3)  # frame k holds k dB
    stream = MelStream(db=db, starts=np.array([0, 10]), ends=np.array([10, 20]))
    positions = torch.tensor([[2.5, -4.0, 9.7], [10.0, 25.0, 12.25]], dtype=torch.float64)
    power = stream.read(np.array([0, 1]), positions)
    got = power_to_db(power)[:, 0, :]
    assert torch.allclose(got, torch.tensor([[2.5, 0.0, 9.0], [10.0, 19.0, 12.25]]), atol=1e-3)


def _augmenter(
    tracks: int = 4, groups: np.ndarray | None = None, **overrides: float
) -> MelAugmenter:
    music = stream_of(
        [_mel_db(synth_track(seed=40 + k, duration_s=20.0, sample_rate_hz=SAMPLE_RATE_HZ))
         for k in range(tracks)]
    )  # fmt: skip
    pink = stream_of([_mel_db(pink_noise(seconds=10.0, sample_rate_hz=SAMPLE_RATE_HZ, seed=3))])
    rooms = torch.stack(
        [room_kernel(augment.room_impulse_response(sample_rate_hz=SAMPLE_RATE_HZ, rng=k), CONFIG)
         for k in range(2)]
    )  # fmt: skip
    return MelAugmenter(
        music=music,
        noises={"pink": pink},
        speech=None,
        room_kernels=rooms,
        centres_hz=mel_centres_hz(CONFIG).tolist(),
        config=AugmentConfig(**overrides),  # type: ignore[arg-type]
        groups=groups,
    )


def test_grouped_rows_come_a_group_at_a_time_from_packages_of_several_tracks() -> None:
    names = ["a:1", "a:2", "a:3", "b:1", "b:2", "solo"]
    groups = track_groups([Track(name=n, audio=np.zeros(1, np.float32)) for n in names])
    assert groups.tolist() == [0, 0, 0, 1, 1, 2]
    augmenter = _augmenter(
        tracks=6, groups=groups, grouped_fraction=1.0, group_size=4, same_track_fraction=0.0
    )
    seen = set()
    for seed in range(6):
        track = augmenter.draw(np.random.default_rng(seed), 12).track
        for lo in range(0, 12, 4):
            chunk = groups[track[lo : lo + 4]]
            assert len(set(chunk.tolist())) == 1 and chunk[0] != 2  # a one-track package never
            seen.add(int(chunk[0]))
    assert seen == {0, 1}
    # Off by default, and the same-track partners keep their rows.
    paired = _augmenter(tracks=6, groups=groups, grouped_fraction=0.5, same_track_fraction=0.5)
    batch = paired.draw(np.random.default_rng(9), 8)
    assert [batch.track[k] == batch.track[7 - k] for k in range(2)] == [True, True]
    plain = _augmenter(tracks=6).draw(np.random.default_rng(3), 12)
    assert np.array_equal(plain.track, _augmenter(tracks=6, groups=groups).draw(
        np.random.default_rng(3), 12).track)  # fmt: skip
    with pytest.raises(ConfigError, match="one group per music recording"):
        _augmenter(tracks=6, groups=groups[:5])


def test_query_view_is_the_index_view_shifted_and_degraded() -> None:
    augmenter = _augmenter()
    batch = augmenter.draw(np.random.default_rng(1), 12)
    assert batch.index_db.shape == batch.query_db.shape == (12, CONFIG.n_mels, CONFIG.frames)
    assert torch.isfinite(batch.query_db).all() and torch.isfinite(batch.index_db).all()
    assert not torch.allclose(batch.index_db, batch.query_db)
    # Degraded, yet the same music: each query's spectral profile correlates best with
    # its own index view's (most queries), and more than with the others' on average.
    profile_i = batch.index_db.mean(dim=2)
    profile_q = batch.query_db.mean(dim=2)
    profile_i = torch.nn.functional.normalize(profile_i - profile_i.mean(1, keepdim=True), dim=1)
    profile_q = torch.nn.functional.normalize(profile_q - profile_q.mean(1, keepdim=True), dim=1)
    similarity = profile_q @ profile_i.t()
    own = similarity.diagonal()
    same_track = torch.from_numpy(batch.track[:, None] == batch.track[None, :])
    others = similarity.masked_fill(same_track, float("nan")).nanmean(dim=1)
    assert int((own > others).sum()) >= 9, similarity
    assert float(own.mean()) > float(others.mean()) + 0.05, similarity


def test_same_track_pairs_are_seconds_apart() -> None:
    augmenter = _augmenter(same_track_fraction=0.5)
    batch = augmenter.draw(np.random.default_rng(2), 8)
    for a, b in ((0, 7), (1, 6)):
        assert batch.track[a] == batch.track[b]
        assert 100 <= abs(int(batch.frame[a]) - int(batch.frame[b])) < 500


def test_clean_query_views_differ_only_by_the_offset() -> None:
    off = dict(speed_p=0.0, tempo_p=0.0, pitch_p=0.0, room_p=0.0, noise_p=0.0, eq_p=0.0,
               band_p=0.0, time_mask_p=0.0, band_mask_p=0.0, max_offset_frames=0.0)  # fmt: skip
    batch = _augmenter(**off).draw(np.random.default_rng(3), 6)
    assert torch.allclose(batch.index_db, batch.query_db, atol=0.05)


def test_reverberant_copies_are_waveform_rooms_that_query_views_read_in_step() -> None:
    tracks = [
        (f"t{k}", synth_track(seed=60 + k, duration_s=20.0, sample_rate_hz=SAMPLE_RATE_HZ))
        for k in range(2)
    ]
    dry = stream_of([_mel_db(audio) for _, audio in tracks])
    pieces, names = reverberant_stream(tracks, _mel_db, seed=5)
    wet = stream_of(pieces)
    assert names == ["t0", "t1"] and wet.db.shape == dry.db.shape
    # Track k rings in room seed + k, convolved as a waveform (the tail cut at the end).
    rir = augment.room_impulse_response(sample_rate_hz=SAMPLE_RATE_HZ, rng=6, rt60_s=ROOM_RT60_S)
    room = augment.room(
        tracks[1][1], sample_rate_hz=SAMPLE_RATE_HZ, rng=0, band_hz=None, snr_db=None,
        impulse_response=rir,
    )  # fmt: skip
    got = wet.db[int(wet.starts[1]) : int(wet.ends[1])].float()[60:-10]
    want = _mel_db(room).float()[60:-10]
    dry_db = dry.db[int(dry.starts[1]) : int(dry.ends[1])].float()[60:-10]

    def error_db(x: torch.Tensor) -> float:
        return float(((x - x.mean()) - (want - want.mean())).abs().clamp(max=40.0).mean())

    assert error_db(got) < 0.1 < 0.5 * error_db(dry_db)
    off = dict(speed_p=0.0, tempo_p=0.0, pitch_p=0.0, noise_p=0.0, eq_p=0.0, band_p=0.0,
               time_mask_p=0.0, band_mask_p=0.0, max_offset_frames=0.0, room_p=1.0)  # fmt: skip

    def augmenter(share: float) -> MelAugmenter:
        return MelAugmenter(
            music=dry,
            noises={},
            speech=None,
            room_kernels=torch.stack([room_kernel(rir, CONFIG)]),
            centres_hz=mel_centres_hz(CONFIG).tolist(),
            config=AugmentConfig(real_room_share=share, **off),  # type: ignore[arg-type]
            reverberant=[wet],
        )

    def wet_at(batch: Batch) -> torch.Tensor:
        steps = torch.arange(CONFIG.frames, dtype=torch.float64)
        positions = torch.from_numpy(batch.frame).double()[:, None] + steps
        return power_to_db(wet.read(batch.track, positions))

    real = augmenter(1.0).draw(np.random.default_rng(4), 6)
    assert torch.allclose(real.query_db, wet_at(real), atol=0.05)
    kernel = augmenter(0.0).draw(np.random.default_rng(4), 6)
    assert not torch.allclose(kernel.query_db, wet_at(kernel), atol=1.0)
    assert not torch.allclose(kernel.query_db, kernel.index_db, atol=1.0)
    shorter = stream_of([pieces[0]])
    with pytest.raises(ConfigError, match="frame-aligned"):
        MelAugmenter(
            music=dry, noises={}, speech=None, room_kernels=None,
            centres_hz=mel_centres_hz(CONFIG).tolist(), config=AugmentConfig(),
            reverberant=[shorter],
        )  # fmt: skip
    with pytest.raises(ConfigError, match="real_room_share"):
        AugmentConfig(real_room_share=1.5)


def test_pitch_warp_moves_a_tone_up_the_mel_axis() -> None:
    augmenter = _augmenter(tracks=1)
    centres = mel_centres_hz(CONFIG)
    power = torch.full((2, CONFIG.n_mels, 10), 1e-6)
    band = 30
    power[:, band, :] = 1.0
    warp = torch.tensor([1.0, 2.0 ** (2 / 12)])  # unchanged; two semitones up
    out = augmenter._warp(power, warp)
    peaks = out[:, :, 0].argmax(dim=1)
    assert int(peaks[0]) == band
    moved_to = float(centres[int(peaks[1])])
    assert abs(moved_to / float(centres[band]) - 2 ** (2 / 12)) < 0.06


def test_room_kernel_reverberates_mel_power_like_the_waveform_room() -> None:
    audio = synth_track(seed=3, duration_s=12.0, sample_rate_hz=SAMPLE_RATE_HZ)
    rir = augment.room_impulse_response(sample_rate_hz=SAMPLE_RATE_HZ, rng=1, rt60_s=(0.8, 1.0))
    wet = augment.room(
        audio, sample_rate_hz=SAMPLE_RATE_HZ, rng=0, band_hz=None, snr_db=None, impulse_response=rir
    )
    kernel = room_kernel(rir, CONFIG)
    assert kernel.shape == (CONFIG.n_mels, 50)
    assert float(kernel[:, :5].sum()) > float(kernel[:, -5:].sum())  # it decays
    dry_db, wet_db = _mel_db(audio).float().t(), _mel_db(wet).float().t()
    lags = kernel.shape[1]
    power = torch.pow(10.0, dry_db / 10.0)
    ctf = torch.nn.functional.conv1d(
        torch.nn.functional.pad(power, (lags - 1, 0))[None],
        kernel.flip(-1)[:, None, :],
        groups=CONFIG.n_mels,
    )[0]
    ctf_db = power_to_db(ctf)

    def error_db(x: torch.Tensor) -> float:
        x, y = x[:, 60:-10], wet_db[:, 60:-10]
        return float(((x - x.mean()) - (y - y.mean())).abs().clamp(max=40.0).mean())

    assert error_db(ctf_db) < 0.5 * error_db(dry_db)


def test_the_network_pools_position_away_and_keeps_unit_norm() -> None:
    torch.manual_seed(0)
    model = EncoderNet(CONFIG, _front()).eval()
    assert sum(p.numel() for p in model.parameters()) < 1_500_000
    db = torch.randn(3, CONFIG.n_mels, CONFIG.frames) * 10.0 - 30.0
    with torch.inference_mode():
        out = model.embed_features(model.features_from_db(db))
        louder = model.embed_features(model.features_from_db(db + 12.0))
    assert out.shape == (3, CONFIG.dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out, louder, atol=1e-5)  # gain does not matter
    assert ModelConfig.from_dict(CONFIG.to_dict()) == CONFIG


def test_a_block_pooled_network_starts_as_its_whole_window_parent_then_hears_order() -> None:
    torch.manual_seed(0)
    parent = EncoderNet(CONFIG, _front()).eval()
    blocked_config = ModelConfig(blocks=4)
    child = EncoderNet(blocked_config, _front()).eval()
    child.load_state_dict(pool_in_blocks(parent.state_dict(), CONFIG, 4))
    db = torch.randn(3, CONFIG.n_mels, CONFIG.frames) * 10.0 - 30.0
    # The same frames with the window's halves swapped: the same sounds in another order.
    half = CONFIG.frames // 2
    swapped = torch.cat([db[:, :, half:], db[:, :, :half]], dim=2)
    with torch.inference_mode():
        start, start_swapped = (
            child.embed_features(child.features_from_db(x)) for x in (db, swapped)
        )
        parent_out = parent.embed_features(parent.features_from_db(db))
    assert torch.allclose(start, parent_out, atol=1e-5)
    with torch.no_grad():  # what training would do to the stretches' columns
        child.head[0].weight[:, 2 * CONFIG.widths[-1] :].normal_(0.0, 0.05)
        moved, moved_swapped = (
            child.embed_features(child.features_from_db(x)) for x in (db, swapped)
        )
    apart_before = float((start - start_swapped).norm(dim=1).mean())
    apart_after = float((moved - moved_swapped).norm(dim=1).mean())
    assert apart_after > 2.0 * apart_before
    assert ModelConfig.from_dict(blocked_config.to_dict()) == blocked_config
    scripted = torch.jit.script(child)
    assert scripted(torch.randn(2, 64_000) * 0.1).shape == (2, CONFIG.dim)
    with pytest.raises(ValueError, match="whole-window"):
        pool_in_blocks(child.state_dict(), blocked_config, 2)
    with pytest.raises(ValueError, match="blocks"):
        ModelConfig(blocks=0)


def test_dda_weights_the_directions_noise_leaves_alone() -> None:
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((4000, 6))
    noise = np.zeros_like(clean)
    noise[:, :2] = 3.0 * rng.standard_normal((4000, 2))  # degradation moves axes 0 and 1
    degraded = clean + noise + 0.05 * rng.standard_normal(clean.shape)
    centre, matrix, ratios = dda_projection(clean, degraded, shrinkage=1e-3)
    assert np.allclose(centre, clean.mean(axis=0))
    assert np.all(np.diff(ratios) <= 0) and ratios[3] > 50 * ratios[4]
    # The four best directions ignore the noisy axes; noise is whitened.
    assert np.abs(matrix[:2, :4]).max() < 0.05 * np.abs(matrix[2:, :4]).max()
    diff = degraded - clean
    noise_moment = diff.T @ diff / len(diff)
    noise_moment += 1e-3 * np.trace(noise_moment) / 6 * np.eye(6)
    assert np.allclose(matrix.T @ noise_moment @ matrix, np.eye(6), atol=1e-8)

    # After the map, a degraded view is nearer its clean view than before, against the spread.
    def spread_ratio(a: np.ndarray, b: np.ndarray) -> float:
        return float(
            np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(a - a[::-1], axis=1).mean()
        )

    top = matrix[:, :4]
    assert spread_ratio((clean - centre) @ top, (degraded - centre) @ top) < 0.1
    assert spread_ratio(clean, degraded) > 0.5
    # What must stay apart from music (a voice alone) far out along a noisy axis: that axis
    # is signal again, and the map keeps it instead of quieting it.
    voices = np.zeros((400, 6))
    voices[:, 0] = 40.0 + rng.standard_normal(400)
    _, kept, kept_ratios = dda_projection(clean, degraded, shrinkage=1e-3, apart=voices)
    assert kept_ratios[4] > 50 * ratios[4] and kept_ratios[5] < 2 * ratios[5]
    assert np.abs(kept[0, 4]) > 10 * np.abs(kept[1, 4])  # the kept direction is axis 0
    with pytest.raises(ConfigError):
        dda_projection(clean, degraded, apart=voices[:, :3])
    with pytest.raises(ConfigError):
        dda_projection(clean, degraded[:10])
    with pytest.raises(ConfigError):
        dda_projection(clean, np.full_like(clean, np.nan))


def test_a_projection_after_the_head_keeps_unit_vectors_and_scripts() -> None:
    torch.manual_seed(0)
    model = EncoderNet(CONFIG, _front()).eval()
    db = torch.randn(3, CONFIG.n_mels, CONFIG.frames) * 10.0 - 30.0
    with torch.inference_mode():
        plain = model.embed_features(model.features_from_db(db))
    identity = Projection(torch.zeros(CONFIG.dim), torch.eye(CONFIG.dim))
    mirror = Projection(torch.zeros(CONFIG.dim), -2.0 * torch.eye(CONFIG.dim))
    for post, expected in ((identity, plain), (mirror, -plain)):
        model.post = post
        scripted = torch.jit.script(model)
        with torch.inference_mode():
            out = scripted.embed_features(scripted.features_from_db(db))
        assert torch.allclose(out, expected, atol=1e-5)
        assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert set(EncoderNet(CONFIG, _front()).state_dict()) == set(
        k for k in model.state_dict() if not k.startswith("post.")
    )  # a checkpoint of the trained network needs no projection
    with pytest.raises(ValueError, match="projection"):
        Projection(torch.zeros(4), torch.eye(3))


def test_a_model_stored_with_half_weights_loads_and_computes_in_float32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EncoderNet(CONFIG, _front()).eval()
    meta = {"name": "tiny", "kind": "trained", "dim": CONFIG.dim}
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_scripted(model, full, metadata=meta)
    save_scripted(model, half, metadata=meta, half_parameters=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    waves = (0.1 * torch.randn(3, 64_000)).numpy()
    exact = TorchScriptEncoder(config=EncoderConfig(model_path=full, device="cpu"))
    rounded = TorchScriptEncoder(config=EncoderConfig(model_path=half, device="cpu"))
    assert rounded.metadata["parameters"] == "float16" and "parameters" not in exact.metadata
    a, b = exact.embed(waves), rounded.embed(waves)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert 0.0 < float(np.abs(a - b).max()) < 1e-2  # rounded once, not computed in float16


def test_a_fine_tune_starts_from_an_exported_model_file_without_its_projection(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    config = replace(CONFIG, blocks=2)
    model = EncoderNet(config, _front()).eval()
    db = torch.randn(3, config.n_mels, config.frames) * 10.0 - 30.0
    with torch.inference_mode():
        plain = model.embed_features(model.features_from_db(db))
    model.post = Projection(torch.zeros(config.dim), -2.0 * torch.eye(config.dim))
    shipped = tmp_path / "encoder-shipped.pt"
    meta = {"name": "encoder-shipped", "kind": "trained", "dim": config.dim}
    save_scripted(
        model, shipped, metadata={**meta, "model": config.to_dict()}, half_parameters=True
    )
    run = TrainConfig(model=config, init=str(shipped), corpus=None, out_dir=tmp_path / "run")
    weights = read_init(run)
    assert not any(key.startswith("post.") for key in weights)
    fresh = EncoderNet(config, _front()).eval()
    missing, unexpected = fresh.load_state_dict(weights, strict=False)
    assert not unexpected and all(key.startswith("frontend.") for key in missing)
    with torch.inference_mode():
        start = fresh.embed_features(fresh.features_from_db(db))
    assert 0.0 < float((start - plain).abs().max()) < 1e-2  # the float16 weights, as float32
    # Another shape, or a file without its network's shape, is refused in one line.
    with pytest.raises(ConfigError, match="another shape"):
        read_init(replace(run, model=CONFIG))
    save_scripted(model, shipped, metadata=meta)
    with pytest.raises(ConfigError, match="without its network's shape"):
        read_init(run)


def _require_train_python() -> Path:
    if TRAIN_PYTHON.is_file():
        return TRAIN_PYTHON
    message = f"{TRAIN_PYTHON} not found: run bash scripts/setup.sh --train"
    if os.environ.get("SYNESTHETE_REQUIRE_TRAIN") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.slow
def test_tiny_training_run_exports_a_model_the_runtime_loads(tmp_path: Path) -> None:
    python = _require_train_python()
    run = tmp_path / "run"
    env = cli_env()
    train = subprocess.run(
        [
            str(python), str(ROOT / "scripts" / "train_encoder.py"), "--synthetic",
            "--steps", "3", "--batch", "8", "--eval-every", "3", "--eval-per-condition", "1",
            "--synthetic-tracks", "4", "--rooms", "2", "--talkers", "0", "--out", str(run),
            "--time-budget-min", "0.0001",
        ],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_run"] == 1 and "resume" in summary["stopped"]
    resumed = subprocess.run(
        [str(python), str(ROOT / "scripts" / "train_encoder.py"), "--resume", "--out", str(run)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at step 1/3" in resumed.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_run"] == 3 and summary["stopped"] == "schedule done"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and np.isfinite(log[-1]["loss"])
    assert [r["step"] for r in log] == [1, 3]
    assert set(log[-1]["val"]) >= {"clean", "babble0", "speed+6", "pitch-1", "mean"}
    assert log[-1]["views_per_s"] > 0 and log[-1]["model_ms"] > 0

    # Fine-tuning starts from another run's weights, if the network has the same shape.
    def tune(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(python), str(ROOT / "scripts" / "train_encoder.py"), "--synthetic",
                "--steps", "1", "--batch", "8", "--eval-every", "1", "--eval-per-condition", "1",
                "--synthetic-tracks", "4", "--rooms", "2", "--talkers", "0",
                "--out", str(tmp_path / name), "--init", str(run / "best.pt"), *extra,
            ],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    extra = ("--babble-weight", "3", "--align-weight", "0.5", "--outsiders", "4", "--queue", "16")
    tuned = tune("tuned", *extra, "--grouped-fraction", "0.5")
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert f"starting from the weights of {run / 'best.pt'}" in tuned.stdout
    saved = torch.load(tmp_path / "tuned" / "last.pt", map_location="cpu", weights_only=False)
    assert saved["train_config"]["augment"]["babble_weight"] == 3
    assert saved["train_config"]["augment"]["grouped_fraction"] == 0.5
    assert saved["train_config"]["align_weight"] == 0.5
    assert saved["train_config"]["outsiders"] == 4 and saved["train_config"]["queue"] == 16
    assert saved["queue"]["vectors"].shape == (8, 128)  # one step of 8 clean views queued
    other = tune("other", "--widths", "64,64", "--strides", "2,2")
    assert other.returncode == 2 and "another shape" in other.stderr
    assert "Traceback" not in other.stderr and not (tmp_path / "other" / "last.pt").exists()

    model = tmp_path / "encoder-smoke.pt"
    export = subprocess.run(
        [
            str(python), str(ROOT / "scripts" / "export_encoder.py"), str(run),
            "--name", "encoder-smoke", "--out", str(model),
        ],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-2000:]

    # This venv has no torchaudio: the exported file must load and run without it.
    probe = subprocess.run(
        [
            sys.executable, "-c",
            "import sys, numpy as np; from pathlib import Path;"
            "from synesthete.inference.config import EncoderConfig;"
            "from synesthete.inference.torchscript import TorchScriptEncoder, save_scripted;"
            f"e = TorchScriptEncoder(config=EncoderConfig(model_path=Path({str(model)!r})));"
            "v = e.embed(np.zeros((2, 64000), np.float32));"
            "assert 'torchaudio' not in sys.modules;"
            "print(e.name, e.dim, float(np.linalg.norm(v[0])))",
        ],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    name, dim, norm = probe.stdout.split()
    assert (name, dim) == ("encoder-smoke", "128") and abs(float(norm) - 1.0) < 1e-4

    encoder = TorchScriptEncoder(config=EncoderConfig(model_path=model, device="cpu"))
    meta = encoder.metadata
    assert meta["kind"] == "trained" and meta["corpus_split_hash"] == "synthetic"
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    assert meta["training"]["step"] == best["step"] in {1, 3}  # the exported checkpoint's
    assert "train_encoder.py" in meta["training"]["command"]
    assert meta["model"]["n_mels"] == ModelConfig().n_mels

    # The runtime path end to end with the new model: index, then identify an excerpt.
    music = tmp_path / "music"
    music.mkdir()
    for n in range(3):
        audio = synth_track(seed=300 + n, duration_s=20.0, sample_rate_hz=SAMPLE_RATE_HZ)
        sf.write(music / f"{n}.wav", audio, SAMPLE_RATE_HZ)
    index = tmp_path / "index"
    build = subprocess.run(
        cli_command("index", "build", "--index", str(index), "--model", str(model), "--quiet",
                    str(music)),
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    stats = subprocess.run(
        cli_command("index", "stats", "--index", str(index)),
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "encoder-smoke" in stats.stdout

    # A closed-form projection fitted on the run's own augmenter, exported after the head.
    fitted = tmp_path / "projection.npz"
    fit = subprocess.run(
        [
            str(python), str(ROOT / "scripts" / "fit_projection.py"), str(run),
            "--batches", "4", "--batch", "64", "--interference", "0.25", "--out", str(fitted),
        ],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert "256 pairs" in fit.stdout
    projected = tmp_path / "encoder-smoke-p.pt"
    export = subprocess.run(
        [
            str(python), str(ROOT / "scripts" / "export_encoder.py"), str(run),
            "--name", "encoder-smoke-p", "--out", str(projected), "--projection", str(fitted),
        ],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-2000:]
    with_map = TorchScriptEncoder(config=EncoderConfig(model_path=projected, device="cpu"))
    assert with_map.metadata["projection"]["pairs"] == 256
    windows = np.stack(
        [synth_track(seed=400 + n, duration_s=4.0, sample_rate_hz=SAMPLE_RATE_HZ) for n in range(2)]
    ).astype(np.float32)
    mapped, plain = with_map.embed(windows), encoder.embed(windows)
    assert np.allclose(np.linalg.norm(mapped, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(mapped, plain, atol=1e-2)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a numpy file")
    refused = subprocess.run(
        [
            str(python), str(ROOT / "scripts" / "export_encoder.py"), str(run),
            "--out", str(tmp_path / "x.pt"), "--projection", str(broken),
        ],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "cannot use the projection" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "x.pt").exists()
