"""Content fingerprints: what a checkpoint was made from, and what its own files hold.

A checkpoint records the fingerprint of its inputs (a content hash of the patches or of the
image region they are read from, of the reference expression and genes, and the options) and
checksums of what it wrote. Resuming compares them with the run at hand and refuses anything that
differs (:func:`check_same`), naming what differs.

Hashing is blake2b over the raw bytes in chunks (about 1 GB/s on one core); a lazily read image is
represented by a sample of its windows (:func:`sample_indices`), never read whole.

Examples
--------
>>> import numpy as np
>>> hash_arrays(np.zeros(3)) == hash_arrays(np.zeros(3))
True
>>> hash_arrays(np.zeros(3)) == hash_arrays(np.zeros(3, np.float32))
False
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointMismatchError

_CHUNK = 1 << 24  # bytes hashed per update: bounded memory for views and memory-mapped arrays
_SAMPLE = 32


def _update(digest: Any, array: np.ndarray) -> None:
    array = np.asarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    if array.dtype == object:
        digest.update("\x1f".join(map(str, array.ravel())).encode())
        return
    rows = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(1, -1)
    step = max(1, _CHUNK // max(rows[0].nbytes, 1))
    for start in range(0, len(rows), step):
        digest.update(np.ascontiguousarray(rows[start : start + step]).data)


def hash_arrays(*arrays: np.ndarray) -> str:
    """blake2b hex digest of the dtypes, shapes and bytes of ``arrays`` (chunked; no full copy).

    Examples
    --------
    >>> import numpy as np
    >>> len(hash_arrays(np.arange(4), np.array(["a", "b"], dtype=object)))
    32
    """
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        _update(digest, array)
    return digest.hexdigest()


def hash_value(value: Any) -> str:
    """blake2b hex digest of a JSON-serialisable value (options, gene lists), key order ignored.

    Examples
    --------
    >>> hash_value({"a": 1, "b": [2]}) == hash_value({"b": [2], "a": 1})
    True
    """
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def sample_indices(n: int, k: int = _SAMPLE) -> np.ndarray:
    """Up to ``k`` indices spread evenly over ``range(n)`` (first and last included).

    Examples
    --------
    >>> sample_indices(100, 5).tolist()
    [0, 25, 50, 74, 99]
    """
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int)) if n else np.zeros(0, int)


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Sorted keys whose values differ between two fingerprints (a key missing on one side differs)."""
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


def replace_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Write ``path`` by ``write(tmp)`` on a file beside it, then rename: a crash leaves the old or the new file.

    The one way the resumable runs (embedding checkpoints, dense features, training state) save
    their progress.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> replace_atomically(folder / "state.json", lambda tmp: tmp.write_text("{}"))
    >>> sorted(p.name for p in folder.iterdir())
    ['state.json']
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def check_same(saved: Mapping[str, Any], now: Mapping[str, Any], where: str, advice: str) -> None:
    """Raise :class:`~stmorph.errors.CheckpointMismatchError` naming every entry where ``saved`` and ``now`` differ.

    Examples
    --------
    >>> check_same({"epochs": 6}, {"epochs": 6}, "ckpt", "")
    >>> try:
    ...     check_same({"epochs": 6}, {"epochs": 3}, "ckpt", "Start over.")
    ... except CheckpointMismatchError as err:
    ...     print(err)
    checkpoint ckpt belongs to another run: ['epochs'] differ (checkpoint [6], now [3]). Start over.
    """
    differ = differences(saved, now)
    if differ:
        raise CheckpointMismatchError(
            f"checkpoint {where} belongs to another run: {differ} differ (checkpoint "
            f"{[_short(saved.get(k)) for k in differ]}, now {[_short(now.get(k)) for k in differ]}). {advice}"
        )


def _short(value: Any) -> Any:
    """A value as shown in an error message (long lists and texts shortened)."""
    text = repr(value)
    return value if len(text) <= 80 else text[:77] + "..."


def hash_file(path: Any) -> str:
    """blake2b hex digest of a file's bytes, read in chunks (e.g. an encoder's weights file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.bin"
    >>> _ = path.write_bytes(b"abc")
    >>> hash_file(path) == hash_file(path)
    True
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
