"""``index build --ray``: decode and embed on a Ray cluster, write the index here.

The driver (this process) scans the paths, as the plain build does. Ray Data then
reads the file list and runs ``map_batches`` over it with a pool of actors, one
per CPU of the cluster, each holding its own encoder (``torch`` with one thread):
an actor hashes a file, decodes it at every speed, embeds its curves and reads
its tags and cover art, exactly as ``builder._embed_styled_track`` does in the plain
build. The results stream back in file order and the driver writes them with the
same ``GenerationWriter``, so the track table, ids, skip reasons, duplicate
detection and the vector store (Annoy files or Milvus) come out as a plain build
of the same files would give them. Only the embedding moves.

On a cluster every node needs ``synesthete[scale]`` installed and must see the
music at the same paths as the driver (a shared folder): workers open the files
themselves, the driver ships only their names.

``ray`` is imported only when a build asks for it (the ``[scale]`` extra).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError, LibraryError, SynestheteError
from synesthete.inference.encoder import Encoder

from .builder import (
    BuildReport,
    EmbeddedTrack,
    ProgressCallback,
    _check_encoder,
    _commit_build,
    _count,
    _embed_styled_track,
    _fresh_writer,
    _report_audio,
    _scan,
    audio_head,
)
from .compact import COMPACT_LAYOUT, StoreLayout
from .config import IndexConfig
from .milvus_store import ANNOY_STORE, VectorStore
from .store import GenerationWriter, sha256_file, utc_now_iso

RAY_CLIENT_SCHEME = "ray://"
CONNECT_TIMEOUT_S = 5.0
"""How long the reachability probe of a cluster address waits: Ray's own connect to a
dead GCS address retries for minutes."""
MAX_BLOCKS_PER_CPU = 16
"""Files are split into up to this many Ray Data blocks per CPU of the cluster: enough
for a long file not to hold up the others, few enough for the per-block overhead."""
INSTALL_HINT = "pip install 'synesthete[scale]'"

EncoderFactory = Callable[[], Encoder]
"""Builds an encoder inside a Ray worker; pickled and sent to every actor (a
``functools.partial(TorchScriptEncoder, config=...)`` for the CLI)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RayOptions:
    """Which Ray to use.

    ``address``: ``None`` starts a local Ray for the build (stopped after it);
    ``"auto"`` joins the cluster this machine belongs to (``ray start``);
    ``"ray://host:10001"`` is a Ray Client connection and ``"host:6379"`` a cluster's
    GCS address. A Ray already initialised in this process is used as it is.
    ``num_cpus`` and ``object_store_bytes`` size a local Ray (``None``: Ray's defaults).
    """

    address: str | None = None
    num_cpus: int | None = None
    object_store_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus must be >= 1, got {self.num_cpus}")
        if self.object_store_bytes is not None and self.object_store_bytes < 75 * 2**20:
            raise ConfigError(
                f"Ray needs an object store of at least 75 MiB, got {self.object_store_bytes} B"
            )


@dataclass(frozen=True, slots=True)
class EmbeddedFile:
    """What a worker sends back for one file: its content hash and curves, or why not.

    ``content_hash`` is ``None`` when the file could not be read; ``result`` is then the
    reason. Otherwise ``result`` is the embedded track (its record's id still 0) or the
    reason it was skipped.
    """

    content_hash: str | None
    result: EmbeddedTrack | str
    """The track as ``builder._embed_styled_track`` gives it, or the reason it was skipped."""
    error: str | None = None
    """Set when the worker's encoder broke its contract (``ModelError``): the build stops."""


def parse_ray_address(text: str | None) -> str | None:
    """``--ray``'s value: ``None``/``""``/``local`` (a local Ray), ``auto``,
    ``ray://host:port`` or ``host:port``; ``ConfigError`` for anything else."""
    if text is None:
        return None
    value = text.strip()
    if value in ("", "local"):
        return None
    if value == "auto":
        return value
    rest = value[len(RAY_CLIENT_SCHEME) :] if value.startswith(RAY_CLIENT_SCHEME) else value
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"a Ray address is auto, ray://host:10001 or host:6379 (a cluster's GCS), got "
            f"{text!r}; for a local Ray give --ray with no address after the paths"
        )
    return value


def build_index_ray(
    index_dir: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    *,
    encoder_factory: EncoderFactory,
    config: IndexConfig,
    ray_options: RayOptions | None = None,
    progress: ProgressCallback | None = None,
    layout: StoreLayout = COMPACT_LAYOUT,
    vector_store: VectorStore = ANNOY_STORE,
    encoder: Encoder | None = None,
) -> BuildReport:
    """``builder.build_index`` with the decoding and embedding spread over Ray.

    ``encoder_factory`` makes each Ray actor's encoder; ``encoder`` is this process's
    copy (its name and dimension go in the index; made with the factory when not
    given). Gives the index a plain build of the same files gives: same track table
    and ids, same skip reasons, the same curves (up to the encoder's own float
    rounding) in the same vector store. Raises ``LibraryError`` in one line when Ray
    is not installed, its address cannot be reached, or a worker fails, and what
    ``build_index`` raises otherwise.
    """
    started = time.perf_counter()
    options = ray_options if ray_options is not None else RayOptions()
    root = Path(index_dir)
    report = BuildReport(action="build", index_dir=str(root))
    files = _scan(paths, report)
    local = encoder if encoder is not None else encoder_factory()
    _check_encoder(local)
    with _ray_session(options) as ray:
        if progress is not None:
            progress.on_start(len(files))
        with _fresh_writer(
            root, dim=local.dim, config=config, layout=layout, vector_store=vector_store
        ) as writer:
            by_hash: dict[str, str] = {}
            next_id = 1
            outcomes = _embed_on_ray(ray, files, encoder_factory=encoder_factory, config=config)
            for path, outcome in zip(files, outcomes, strict=True):
                placed = _place(writer, path, outcome, track_id=next_id, by_hash=by_hash)
                if isinstance(placed, str):
                    report.skipped.append((str(path), placed))
                    status = "skipped"
                else:
                    next_id += 1
                    _count(report, placed, status="added")
                    if progress is not None:
                        progress.on_windows(
                            placed.window_count + sum(n for _, n in placed.variant_slices)
                        )
                    _report_audio(progress, placed.duration_s)
                    status = "indexed"
                if progress is not None:
                    progress.on_file(path, status)
            _commit_build(
                writer, report, paths=paths, files=files, encoder=local, config=config,
                layout=layout, started=started,
            )  # fmt: skip
    report.elapsed_s = time.perf_counter() - started
    return report


def embed_file(path: Path, *, encoder: Encoder, config: IndexConfig) -> EmbeddedFile:
    """One file as the plain build embeds it (what a Ray actor runs per file)."""
    try:
        content_hash = sha256_file(path)
    except OSError as err:
        return EmbeddedFile(None, f"cannot read: {err.strerror or err}")
    result = _embed_styled_track(
        path,
        track_id=0,
        content_hash=content_hash,
        added=utc_now_iso(),
        encoder=encoder,
        config=config,
        progress=None,
        style_head=audio_head(encoder),
    )
    return EmbeddedFile(content_hash, result)


class EmbedFiles:
    """The ``map_batches`` callable: one encoder per actor, a batch of paths in, pickled
    ``EmbeddedFile``s out (a ragged set of curves, tags and pictures per row)."""

    def __init__(self, *, encoder_factory: EncoderFactory, config: IndexConfig) -> None:
        self._encoder = encoder_factory()
        self._config = config

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        results: list[bytes] = []
        for path in batch["path"].tolist():
            try:
                outcome = embed_file(Path(path), encoder=self._encoder, config=self._config)
            except SynestheteError as err:
                # An encoder that breaks its contract: the driver stops the build with it.
                outcome = EmbeddedFile(None, "", error=str(err))
            results.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        blobs = np.empty(len(results), dtype=object)
        blobs[:] = results
        return {"i": np.asarray(batch["i"]), "outcome": blobs}


# -- internals ---------------------------------------------------------------------


def _place(
    writer: GenerationWriter,
    path: Path,
    outcome: EmbeddedFile,
    *,
    track_id: int,
    by_hash: dict[str, str],
) -> Any:
    """Add one worker's outcome to ``writer`` as the plain build would; returns the placed
    ``TrackRecord`` or the reason the file was skipped."""
    if outcome.error is not None:
        raise LibraryError(f"{path}: a Ray worker failed: {outcome.error}")
    if outcome.content_hash is None:
        return str(outcome.result)
    twin = by_hash.get(outcome.content_hash)
    if twin is not None:
        return f"same content as {twin}"
    if isinstance(outcome.result, str):
        return outcome.result
    placed = outcome.result.add_to(writer, track_id=track_id)
    by_hash[outcome.content_hash] = str(path)
    return placed


def _embed_on_ray(
    ray: Any, files: list[Path], *, encoder_factory: EncoderFactory, config: IndexConfig
) -> Iterator[EmbeddedFile]:
    """Every file's ``EmbeddedFile``, in file order, as the cluster finishes them."""
    if not files:
        return
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    items = [{"i": i, "path": str(path)} for i, path in enumerate(files)]
    with warnings.catch_warnings():
        # Ray 2.60 marks ``map_batches``' free actor options deprecated without a
        # replacement for max_restarts yet (hence ray < 2.64 in the [scale] extra).
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = ray.data.from_items(
            items, override_num_blocks=min(len(files), MAX_BLOCKS_PER_CPU * cpus)
        ).map_batches(
            EmbedFiles,
            fn_constructor_kwargs={"encoder_factory": encoder_factory, "config": config},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(cpus, len(files))),
            num_cpus=1,
            # A failed actor fails the build with its reason, in one line; restarting it
            # would need its constructor arguments to outlive the object store's spills
            # (Ray logs an error line at start-up about that otherwise).
            max_restarts=0,
        )
    expected = 0
    try:
        for batch in dataset.iter_batches(batch_size=1, batch_format="numpy"):
            for index, blob in zip(batch["i"].tolist(), batch["outcome"].tolist(), strict=True):
                if index != expected:
                    raise LibraryError(f"Ray returned file {index} where {expected} was due")
                expected += 1
                outcome = pickle.loads(blob)
                if not isinstance(outcome, EmbeddedFile):
                    raise LibraryError(f"Ray returned {type(outcome).__name__} for a file")
                yield outcome
    except (SynestheteError, GeneratorExit):
        raise
    except Exception as err:  # RayTaskError, ActorDiedError, ObjectLostError, ...
        raise LibraryError(f"Ray build failed: {_last_line(err)}") from None
    if expected != len(files):
        raise LibraryError(f"Ray returned {expected} of {len(files)} files")


@contextlib.contextmanager
def _ray_session(options: RayOptions) -> Iterator[Any]:
    """The ``ray`` module, connected as ``options`` say; a Ray started here is shut down
    after the build, one already running in this process is left alone."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = parse_ray_address(options.address)
    _probe(address)
    kwargs: dict[str, Any] = {
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address is None:
        kwargs.update(include_dashboard=False)
        if options.num_cpus is not None:
            kwargs["num_cpus"] = options.num_cpus
        if options.object_store_bytes is not None:
            kwargs["object_store_memory"] = options.object_store_bytes
    else:
        kwargs["address"] = address
    where = "a local Ray" if address is None else f"Ray at {address}"
    try:
        with _quiet_ray_logs():
            ray.init(**kwargs)
    except Exception as err:  # ConnectionError, RuntimeError (version mismatch), ...
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise LibraryError(f"cannot start {where}: {_first_line(err)}") from None
    try:
        with _quiet_ray_logs():
            yield ray
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise LibraryError(
            f"--ray needs Ray Data, which is not installed ({INSTALL_HINT})"
        ) from None
    return ray


def _probe(address: str | None) -> None:
    """A TCP connect to a ``host:port`` address, so a dead one is one line in seconds."""
    if address is None or address == "auto":
        return
    rest = address.removeprefix(RAY_CLIENT_SCHEME).rstrip("/")
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise LibraryError(f"cannot reach Ray at {address} ({reason})") from None


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    """Ray's log lines (start-up notes, Ray Data's per-dataset reports and advice) would
    tear through the progress bar; a failure reaches the user as one error line."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _last_line(err: BaseException) -> str:
    """A Ray task error's text is the remote traceback; its last line is the exception."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]
