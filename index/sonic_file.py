"""Reading and writing similarity heads (``index/sonic.py``) as ``.npz`` files.

A head lies next to the encoder it reads, named after it:
``inference/models/<encoder>.sonic.npz``; when that one reads audio, a head of
windows may lie beside it (``<encoder>.sonic-windows.npz``) for indexes
written before their generations stored the audio head's curves. An index built with an encoder that
has no head keeps "sounds like" on the fingerprint windows themselves.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from synesthete.errors import ConfigError

from .sonic import SonicHead

MODELS_DIR = Path(__file__).resolve().parents[1] / "inference" / "models"
SUFFIX = ".sonic.npz"
WINDOWS_SUFFIX = ".sonic-windows.npz"


def save_head(head: SonicHead, path: str | os.PathLike[str]) -> None:
    """Write ``head`` to ``path`` (atomically: a temporary file, then a rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    arrays: dict[str, npt.NDArray[Any]] = {
        "w1": head.w1,
        "b1": head.b1,
        "w2": head.w2,
        "b2": head.b2,
        "encoder_name": np.array(head.encoder_name),
        "meta": np.array(json.dumps(dict(head.meta), sort_keys=True)),
        "inputs": np.array(head.inputs),
        "feature_version": np.array(head.feature_version),
    }
    if head.anchors is not None:
        arrays.update(anchors=head.anchors, anchor_scale=np.array(head.anchor_scale))
    with tmp.open("wb") as out:
        np.savez(out, allow_pickle=False, **arrays)
    tmp.replace(target)


def load_head(path: str | os.PathLike[str]) -> SonicHead:
    """The head in ``path``; ``ConfigError`` (one line) if it is missing or malformed."""
    try:
        with np.load(Path(path), allow_pickle=False) as saved:
            arrays = {name: np.asarray(saved[name], dtype=np.float32) for name in _ARRAYS}
            encoder_name = str(saved["encoder_name"])
            meta = json.loads(str(saved["meta"]))
            # Heads written before audio heads read the windows.
            inputs = str(saved["inputs"]) if "inputs" in saved else "windows"
            version = int(saved["feature_version"]) if "feature_version" in saved else 0
            # Heads written before anchors end in their own space.
            anchors = np.asarray(saved["anchors"], dtype=np.float32) if "anchors" in saved else None
            scale = float(saved["anchor_scale"]) if "anchor_scale" in saved else 0.0
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such similarity head") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{path}: not a similarity head ({err})") from None
    return SonicHead(
        encoder_name=encoder_name,
        meta=meta,
        inputs=inputs,
        feature_version=version,
        anchors=anchors,
        anchor_scale=scale,
        **arrays,
    )


_ARRAYS = ("w1", "b1", "w2", "b2")


def packaged_head(encoder_name: str) -> SonicHead | None:
    """The head shipped for ``encoder_name``, if this version ships one."""
    return _packaged(encoder_name, SUFFIX)


def packaged_window_head(encoder_name: str) -> SonicHead | None:
    """The head of windows shipped beside an audio head (``<encoder>.sonic-windows.npz``):
    what ranks an index whose generation does not store the audio head's curves."""
    return _packaged(encoder_name, WINDOWS_SUFFIX)


def _packaged(encoder_name: str, suffix: str) -> SonicHead | None:
    if not encoder_name or "/" in encoder_name or "\\" in encoder_name:
        return None
    if encoder_name.startswith("."):
        return None
    path = MODELS_DIR / f"{encoder_name}{suffix}"
    return load_head(path) if path.is_file() else None
