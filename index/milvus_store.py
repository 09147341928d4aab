"""Milvus as a generation's ANN, through pymilvus: a Milvus Lite file or a Milvus server.

``--vector-store`` names where a generation's ANN items go:

- ``annoy`` (the default): ``windows.ann`` in the generation folder;
- ``milvus:///abs/path/file.db``: Milvus Lite, in-process, one file (what the tests use);
- ``milvus://host:19530``: a Milvus standalone or cluster.

Milvus holds only the ANN items (``compact.ann_rows``, in the ANN's projected space);
the curves the matcher scores stay in the generation folder as int8 (about 3 MB per
hour of audio), so a hit is refined locally exactly as with Annoy
(``compact.RefinedCandidates``) and a live window costs one Milvus search. Each
generation writes its own collection (named in its meta) and drops the collections of
generations it deletes, so readers of the previous generation keep theirs.

pymilvus is imported only when a Milvus store is used (it is the ``[scale]`` extra).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError, LibraryError

MILVUS_SCHEME = "milvus://"
VECTOR_FIELD = "v"
ID_FIELD = "id"
CONNECT_TIMEOUT_S = 10.0
_INSERT_ROWS = 4096
LITE_INDEX = {"index_type": "FLAT", "metric_type": "COSINE", "params": {}}
"""Milvus Lite: exact search (a laptop-sized library; the compact ANN keeps it small)."""
SERVER_INDEX = {
    "index_type": "HNSW",
    "metric_type": "COSINE",
    "params": {"M": 16, "efConstruction": 200},
}
"""A Milvus server: HNSW; searched with ``ef`` of at least 4 k (see ``MilvusItems``)."""


@dataclass(frozen=True, slots=True)
class VectorStore:
    """Where a generation's ANN lives. ``text`` is the normalised ``--vector-store`` value."""

    kind: Literal["annoy", "milvus"]
    text: str
    uri: str = ""
    """pymilvus's uri: a Milvus Lite file path, or ``http://host:port``."""

    @property
    def is_lite(self) -> bool:
        return self.kind == "milvus" and not self.uri.startswith("http://")


ANNOY_STORE = VectorStore(kind="annoy", text="annoy")


def parse_vector_store(text: str) -> VectorStore:
    """``annoy``, ``milvus:///abs/file.db`` or ``milvus://host[:port]``; ``ConfigError`` else."""
    value = text.strip()
    if value in ("", "annoy"):
        return ANNOY_STORE
    if not value.startswith(MILVUS_SCHEME):
        raise ConfigError(
            f"vector store must be annoy, milvus:///path/file.db or milvus://host:19530, "
            f"got {text!r}"
        )
    rest = value[len(MILVUS_SCHEME) :]
    if rest.startswith("/"):
        path = Path(os.path.normpath(rest))
        if path.suffix != ".db":
            raise ConfigError(f"a Milvus Lite store is a .db file, got {text!r}")
        return VectorStore(kind="milvus", text=f"{MILVUS_SCHEME}{path}", uri=str(path))
    host, _, port = rest.rstrip("/").partition(":")
    if not host or "/" in host or (port and not port.isdigit()):
        raise ConfigError(f"a Milvus server is milvus://host:port, got {text!r}")
    address = f"{host}:{port or '19530'}"
    return VectorStore(kind="milvus", text=f"{MILVUS_SCHEME}{address}", uri=f"http://{address}")


def new_collection_name() -> str:
    return f"synesthete_{uuid.uuid4().hex[:20]}"


def _connect(store: VectorStore) -> Any:
    """A ``MilvusClient``; one ``LibraryError`` line when the store cannot be reached."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise LibraryError(
            f"{store.text}: pymilvus is not installed (pip install 'synesthete[scale]')"
        ) from None
    if store.is_lite:
        Path(store.uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(uri=store.uri, timeout=CONNECT_TIMEOUT_S)
    except Exception as err:  # pymilvus raises MilvusException and grpc/OS errors alike
        raise LibraryError(f"{store.text}: cannot reach Milvus ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def write_items(
    store: VectorStore, collection: str, chunks: Iterable[npt.NDArray[np.float32]], *, dim: int
) -> int:
    """Insert ``[n, dim]`` chunks as items 0, 1, ... of a new collection, index and load it;
    returns the number of items."""
    from pymilvus import DataType, MilvusClient

    client = _connect(store)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        params = LITE_INDEX if store.is_lite else SERVER_INDEX
        index.add_index(field_name=VECTOR_FIELD, **params)
        client.create_collection(collection, schema=schema, index_params=index)
        n_items = 0
        for chunk in chunks:
            rows = np.asarray(chunk, dtype=np.float32)
            for first in range(0, rows.shape[0], _INSERT_ROWS):
                part = rows[first : first + _INSERT_ROWS]
                client.insert(
                    collection,
                    [
                        {ID_FIELD: n_items + i, VECTOR_FIELD: row.tolist()}
                        for i, row in enumerate(part)
                    ],
                )
                n_items += int(part.shape[0])
        client.flush(collection)
        client.load_collection(collection)
        return n_items
    except LibraryError:
        raise
    except Exception as err:
        raise LibraryError(
            f"{store.text}: writing collection {collection} failed ({_first_line(err)})"
        ) from None
    finally:
        client.close()


def drop_collection(store: VectorStore, collection: str) -> None:
    """Drop a collection if it is there; a store that cannot be reached is left as it is."""
    try:
        client = _connect(store)
    except LibraryError:
        return
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
    except Exception:  # best effort: a leftover collection costs space, not correctness
        return
    finally:
        client.close()


class MilvusItems:
    """A generation's collection as a ``compact.ItemSearch``."""

    def __init__(self, *, store: VectorStore, collection: str, dim: int, n_items: int) -> None:
        self.store = store
        self.collection = collection
        self.dim = dim
        self._client: Any | None = _connect(store)
        try:
            if not self._client.has_collection(collection):
                raise LibraryError(
                    f"{store.text}: collection {collection} is missing (dropped, or another "
                    "Milvus); rebuild the index"
                )
            stats = self._client.get_collection_stats(collection)
            found = int(stats.get("row_count", -1))
            if found != n_items:
                raise LibraryError(
                    f"{store.text}: collection {collection} holds {found} items, the index "
                    f"{n_items}; rebuild the index"
                )
            self._client.load_collection(collection)
        except LibraryError:
            self.close()
            raise
        except Exception as err:
            self.close()
            raise LibraryError(
                f"{store.text}: cannot open {collection} ({_first_line(err)})"
            ) from None

    def query_items(
        self, vectors: npt.NDArray[np.float32], *, k: int
    ) -> list[npt.NDArray[np.int64]]:
        if self._client is None:
            raise LibraryError(f"{self.store.text}: closed")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ConfigError(f"vectors must be [n, {self.dim}], got shape {vectors.shape}")
        params: dict[str, Any] = {"metric_type": "COSINE"}
        if not self.store.is_lite:
            params["params"] = {"ef": max(64, 4 * k)}
        try:
            results = self._client.search(
                self.collection,
                data=np.asarray(vectors, dtype=np.float32).tolist(),
                limit=k,
                anns_field=VECTOR_FIELD,
                search_params=params,
                output_fields=[],
            )
        except Exception as err:
            raise LibraryError(f"{self.store.text}: search failed ({_first_line(err)})") from None
        return [np.asarray([int(hit["id"]) for hit in hits], dtype=np.int64) for hits in results]

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                client.close()
            except Exception:  # closing a dead connection is not worth an error
                return
