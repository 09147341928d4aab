"""The TorchScript encoder contract, the baseline model and the committed file."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DemoLibrary, build_index_cli

from synesthete.constants import WINDOW_SAMPLES
from synesthete.errors import AudioFormatError, ConfigError, ModelError
from synesthete.inference.baseline import BaselineEncoder, baseline_example_input
from synesthete.inference.config import EncoderConfig, default_model_path
from synesthete.inference.encoder import Encoder
from synesthete.inference.torchscript import TorchScriptEncoder, read_metadata, save_scripted

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_golden", ROOT / "scripts" / "make_golden.py")
assert spec is not None and spec.loader is not None
make_golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_golden)


MODELS = sorted((ROOT / "inference" / "models").glob("*.pt"))
BASELINE = ROOT / "inference" / "models" / "baseline-v1.pt"


@pytest.fixture(scope="module")
def encoder() -> TorchScriptEncoder:
    """The baseline model (the contract tests below hold for every encoder)."""
    return TorchScriptEncoder(config=EncoderConfig(model_path=BASELINE, device="cpu"))


@pytest.fixture(scope="module", params=MODELS, ids=[m.stem for m in MODELS])
def committed(request: pytest.FixtureRequest) -> TorchScriptEncoder:
    """Each model file committed under inference/models."""
    path: Path = request.param
    return TorchScriptEncoder(config=EncoderConfig(model_path=path, device="cpu"))


def test_every_committed_model_satisfies_protocol(committed: TorchScriptEncoder) -> None:
    assert isinstance(committed, Encoder)
    assert committed.window_samples == WINDOW_SAMPLES
    assert committed.metadata["name"] == committed.name == committed.path.stem
    assert committed.calibration is not None, "run scripts/calibrate.py, then re-export"


def test_the_default_model_is_committed() -> None:
    assert default_model_path() in MODELS


def test_outputs_match_committed_golden_vectors(committed: TorchScriptEncoder) -> None:
    golden = np.load(ROOT / "tests" / "golden" / f"{committed.name}.npz")["vectors"]
    np.testing.assert_allclose(committed.embed(make_golden.golden_inputs()), golden, atol=1e-4)


def test_committed_models_are_gain_invariant_and_discriminative(
    committed: TorchScriptEncoder,
) -> None:
    x = make_golden.golden_inputs()
    loud, quiet = committed.embed(x[:3]), committed.embed(0.1 * x[:3])
    np.testing.assert_allclose(loud, quiet, atol=2e-3)
    silence = committed.embed(np.zeros((1, WINDOW_SAMPLES), dtype=np.float32))
    assert np.isfinite(silence).all()


def test_committed_file_matches_the_code(tmp_path: Path, encoder: TorchScriptEncoder) -> None:
    fresh = tmp_path / "fresh.pt"
    save_scripted(BaselineEncoder(), fresh, metadata={"name": "baseline-v1", "dim": 128})
    rebuilt = TorchScriptEncoder(config=EncoderConfig(model_path=fresh, device="cpu"))
    x = make_golden.golden_inputs()
    np.testing.assert_allclose(rebuilt.embed(x), encoder.embed(x), atol=1e-5)


def test_unit_norm_and_batch_independent(encoder: TorchScriptEncoder) -> None:
    x = baseline_example_input(n=5).numpy()
    together = encoder.embed(x)
    apart = np.concatenate([encoder.embed(x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, apart, atol=1e-5)


def test_gain_invariant_and_discriminative(encoder: TorchScriptEncoder) -> None:
    x = make_golden.golden_inputs()
    loud, quiet = encoder.embed(x[:3]), encoder.embed(0.1 * x[:3])
    np.testing.assert_allclose(loud, quiet, atol=2e-3)
    distances = np.linalg.norm(loud[:, None] - loud[None], axis=2)
    assert distances[np.triu_indices(3, 1)].min() > 0.3


def test_small_shift_moves_less_than_other_content(encoder: TorchScriptEncoder) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(80_000) / 16_000
    sig = np.sin(2 * np.pi * 220 * t) * (1 + np.sign(np.sin(2 * np.pi * 2 * t))) * 0.2
    sig = (sig + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)
    windows = np.stack([sig[:64_000], sig[4_000:68_000], 0.3 * make_golden.golden_inputs()[1]])
    v = encoder.embed(windows)
    assert np.linalg.norm(v[0] - v[1]) < np.linalg.norm(v[0] - v[2]) / 3


def test_bad_input_is_rejected(encoder: TorchScriptEncoder) -> None:
    with pytest.raises(AudioFormatError, match="expects"):
        encoder.embed(np.zeros((2, 100), dtype=np.float32))
    bad = np.zeros((1, WINDOW_SAMPLES), dtype=np.float32)
    bad[0, 5] = np.nan
    with pytest.raises(AudioFormatError, match="NaN"):
        encoder.embed(bad)
    assert encoder.embed(np.zeros((0, WINDOW_SAMPLES), dtype=np.float32)).shape == (0, 128)


def test_silence_gives_a_finite_unit_vector(encoder: TorchScriptEncoder) -> None:
    silence = np.zeros((2, WINDOW_SAMPLES), dtype=np.float32)
    silence[1, 1000:1100] = 1e-7  # numerically silent, not exactly zero
    v = encoder.embed(silence)
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        TorchScriptEncoder(config=EncoderConfig(model_path=tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable"):
        TorchScriptEncoder(config=EncoderConfig(model_path=junk))
    with pytest.raises(ModelError):
        read_metadata(junk)


def test_model_without_metadata_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.script(BaselineEncoder()), str(path))
    with pytest.raises(ModelError, match="metadata"):
        TorchScriptEncoder(config=EncoderConfig(model_path=path))


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        EncoderConfig(device="tpu")
    with pytest.raises(ConfigError):
        EncoderConfig(batch_windows=0)


def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelError, match="CUDA"):
        TorchScriptEncoder(config=EncoderConfig(device="cuda"))


@pytest.mark.parametrize("model", MODELS, ids=[m.stem for m in MODELS])
def test_model_loads_without_torchaudio_in_a_fresh_process(model: Path) -> None:
    code = (
        "import sys; sys.modules['torchaudio'] = None\n"
        "from pathlib import Path\n"
        "from synesthete.inference.config import EncoderConfig\n"
        "from synesthete.inference.torchscript import TorchScriptEncoder\n"
        "import numpy as np\n"
        f"e = TorchScriptEncoder(config=EncoderConfig(model_path=Path({str(model)!r})))\n"
        "print(e.embed(np.zeros((1, 64000), dtype=np.float32)).shape, e.dim)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    shape, dim = out.stdout.strip().rsplit(" ", 1)
    assert shape == f"(1, {dim})"
    assert model.stat().st_size < 5_000_000


def test_a_models_calibration_may_set_its_own_max_frechet(
    tmp_path: Path, demo_library: DemoLibrary
) -> None:
    """The new-identification guard is a distance, and distances are the encoder's own."""
    from synesthete.clients.app import open_engine
    from synesthete.index.config import MatcherConfig

    fitted = read_metadata(BASELINE)["calibration"]
    # An index of the baseline (the default model is another): two tracks are enough.
    music = tmp_path / "music"
    music.mkdir()
    for n in (0, 1):
        (music / f"{n:02d}.flac").write_bytes(
            (demo_library.root / "music" / f"{n:02d}.flac").read_bytes()
        )
    index = tmp_path / "index"
    build_index_cli(index, music, "--model", str(BASELINE))
    for guard in (None, 0.77):
        calibration = (
            dict(fitted)
            if guard is None
            else {**fitted, "max_frechet": guard, "distance_scale": 0.4, "path_max_distance": 0.3}
        )
        path = tmp_path / str(guard) / "baseline-v1.pt"
        save_scripted(
            BaselineEncoder(), path, metadata={"name": "baseline-v1", "dim": 128,
                                               "calibration": calibration},
        )  # fmt: skip
        engine = open_engine(index_dir=index, encoder_config=EncoderConfig(model_path=path))
        try:
            expected = MatcherConfig().max_frechet if guard is None else guard
            assert engine.matcher_config.max_frechet == expected
            # The hysteresis margins in distance units follow the model's distance scale.
            scale = 1.0 if guard is None else 0.4
            assert engine.matcher_config.distance_scale == scale
            tie = MatcherConfig().version_tie_frechet * scale
            assert engine.matcher_config.version_tie == pytest.approx(tie)
            assert engine.matcher_config.path_distance == (expected if guard is None else 0.3)
            assert engine.matcher_config.calibration.bias == fitted["bias"]
        finally:
            engine.library.close()
