"""``index build --ray``: a real local Ray (2 CPUs, a 200 MB object store) embeds the files.

The index it writes must be the one a plain build writes: same track table, same curves
(within the encoder's float rounding), same answers to a live window, in either vector
store. A missing Ray and an unreachable address are one line each.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import cli_command, cli_env
from fakes import write_bad_files, write_good_library

from synesthete.constants import WINDOW_SAMPLES
from synesthete.errors import ConfigError
from synesthete.index.builder import build_index
from synesthete.index.config import IndexConfig
from synesthete.index.decode import load_mono_16k
from synesthete.index.ray_build import RayOptions, build_index_ray, parse_ray_address
from synesthete.index.store import Library
from synesthete.inference.config import EncoderConfig
from synesthete.inference.torchscript import TorchScriptEncoder

OBJECT_STORE_BYTES = 200 * 2**20
CONFIG = IndexConfig(sonic_map=False)
"""The map's UMAP layout is the same code after either build, and slow: left out here."""
RECORD_FIELDS = (
    "id",
    "path",
    "title",
    "artist",
    "album",
    "duration_s",
    "content_hash",
    "window_start",
    "window_count",
    "variant_slices",
    "art",
)


def one_thread_encoder() -> TorchScriptEncoder:
    return TorchScriptEncoder(config=EncoderConfig(threads=1))


def test_ray_addresses_are_parsed_or_refused():
    assert parse_ray_address(None) is None
    assert parse_ray_address("local") is None
    assert parse_ray_address("auto") == "auto"
    assert parse_ray_address("ray://head.lan:10001") == "ray://head.lan:10001"
    assert parse_ray_address("10.0.0.5:6379") == "10.0.0.5:6379"
    for bad in ("/srv/music", "music", "ray://head.lan", "head:port", "head:70000"):
        with pytest.raises(ConfigError, match="a Ray address is"):
            parse_ray_address(bad)
    with pytest.raises(ConfigError):
        RayOptions(object_store_bytes=1_000)


def test_the_plain_cli_path_never_imports_ray():
    code = (
        "import sys\n"
        "from synesthete.clients import cli\n"
        "from synesthete.index import builder, ray_build\n"
        "cli.build_parser().parse_args(['index', 'build', '--index', 'x', 'y', '--ray', 'auto'])\n"
        "print('ray' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    """Six short tracks in five formats, a byte-for-byte duplicate and two bad files."""
    root = tmp_path_factory.mktemp("ray-music")
    files = write_good_library(root / "music", duration_s=9.0)
    shutil.copyfile(files[2], root / "music" / "zz-copy-of-third.wav")
    bad = write_bad_files(root / "bad")
    for kind in ("corrupt", "short"):
        shutil.copyfile(bad[kind], root / "music" / bad[kind].name)
    return root / "music", files


@pytest.fixture(scope="module")
def plain_index(music, tmp_path_factory):
    index = tmp_path_factory.mktemp("plain") / "index"
    report = build_index(index, [music[0]], encoder=one_thread_encoder(), config=CONFIG)
    return index, report


@pytest.fixture(scope="module")
def local_ray():
    """A Ray head in this process, sized for a small shared machine; its GCS address lets a
    CLI run join it as a cluster."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")

    def start():
        return ray.init(
            num_cpus=2,
            object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )

    try:
        context = start()
    except Exception as err:  # Ray raises a bare Exception here
        # Ray gives its raylet a fixed 30 s to register; on a machine busy with other
        # work that can pass, and a second start then succeeds.
        if "timed out during startup" not in str(err):
            raise
        ray.shutdown()
        context = start()
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


def assert_same_index(index, reference, *, encoder, files):
    with Library.open(index) as lib, Library.open(reference) as ref:
        assert lib.meta["encoder_name"] == ref.meta["encoder_name"]
        assert lib.speeds == ref.speeds and lib.index_hop_s == ref.index_hop_s
        table = [{f: getattr(r, f) for f in RECORD_FIELDS} for r in lib.records()]
        truth = [{f: getattr(r, f) for f in RECORD_FIELDS} for r in ref.records()]
        assert table == truth
        for record in ref.records():
            np.testing.assert_allclose(lib.curve(record.id), ref.curve(record.id), atol=1e-4)
            for ours, theirs in zip(
                lib.variant_curves(record.id), ref.variant_curves(record.id), strict=True
            ):
                np.testing.assert_allclose(ours, theirs, atol=1e-4)
            sonic, reference_sonic = lib.sonic_curve(record.id), ref.sonic_curve(record.id)
            assert (sonic is None) == (reference_sonic is None)
            if sonic is not None:
                np.testing.assert_allclose(sonic, reference_sonic, atol=1e-4)
        candidates, reference_candidates = lib.candidates(), ref.candidates()
        by_path = {r.path: r.id for r in ref.records()}
        for path in files:
            audio = load_mono_16k(path)
            live = encoder.embed(audio[None, 23_456 : 23_456 + WINDOW_SAMPLES])
            [found] = candidates.query(live, k=5)
            [expected] = reference_candidates.query(live, k=5)
            assert found[0].track_id == by_path[str(path)]
            assert [(n.track_id, n.window_index, n.variant) for n in found[:3]] == [
                (n.track_id, n.window_index, n.variant) for n in expected[:3]
            ]
            assert found[0].distance == pytest.approx(expected[0].distance, abs=1e-4)


def test_a_ray_build_gives_the_plain_build_index(music, plain_index, local_ray, tmp_path):
    folder, files = music
    reference, plain_report = plain_index
    report = build_index_ray(
        tmp_path / "index",
        [folder],
        encoder_factory=functools.partial(TorchScriptEncoder, config=EncoderConfig(threads=1)),
        config=CONFIG,
        ray_options=RayOptions(num_cpus=2, object_store_bytes=OBJECT_STORE_BYTES),
    )
    assert report.skipped == plain_report.skipped
    assert [(t.id, t.path, t.windows) for t in report.indexed] == [
        (t.id, t.path, t.windows) for t in plain_report.indexed
    ]
    reasons = dict(report.skipped)
    assert reasons[str(folder / "zz-copy-of-third.wav")] == f"same content as {files[2]}"
    assert "too short" in reasons[str(folder / "short.flac")]
    assert_same_index(tmp_path / "index", reference, encoder=one_thread_encoder(), files=files)


def test_cli_ray_build_joins_a_cluster_and_writes_to_milvus(
    music, plain_index, local_ray, tmp_path
):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    folder, files = music
    store = f"milvus://{tmp_path}/vectors.db"
    done = subprocess.run(
        cli_command(
            "index",
            "build",
            "--index",
            str(tmp_path / "index"),
            str(folder),
            "--quiet",
            "--threads",
            "1",
            "--vector-store",
            store,
            "--no-map",
            f"--ray={local_ray}",
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "build: indexed 6 files" in done.stdout
    assert "Traceback" not in done.stderr
    skipped = [line for line in done.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 3, done.stderr
    with Library.open(tmp_path / "index") as lib:
        assert lib.vector_store.text == store
    assert_same_index(tmp_path / "index", plain_index[0], encoder=one_thread_encoder(), files=files)


def run_build_with_ray(tmp_path, *ray_args, **env):
    music = write_good_library(tmp_path / "music", duration_s=6.0)[:1]
    return subprocess.run(
        cli_command(
            "index",
            "build",
            "--index",
            str(tmp_path / "index"),
            str(music[0]),
            "--quiet",
            *ray_args,
        ),
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9"])
def test_an_unreachable_ray_is_one_line(tmp_path, address):
    pytest.importorskip("ray")
    done = run_build_with_ray(tmp_path, "--ray", address)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == [f"synesthete: error: cannot reach Ray at {address} (Connection refused)"]
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_ray_not_installed_is_one_line(tmp_path):
    # A ``ray`` package that cannot be imported, first on the path: as without the extra.
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    done = run_build_with_ray(tmp_path, "--ray", PYTHONPATH=str(shadow.parent))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "synesthete: error: --ray needs Ray Data, which is not installed "
        "(pip install 'synesthete[scale]')"
    ]


def test_a_path_given_as_the_ray_address_is_refused_plainly(tmp_path):
    done = run_build_with_ray(tmp_path, "--ray", str(tmp_path / "music"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "a Ray address is auto, ray://host:10001 or host:6379" in done.stderr
