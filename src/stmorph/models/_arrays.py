"""The check every array read back from a saved model goes through."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelFileError


def check_array(arrays: dict[str, np.ndarray], key: str, shape: tuple[int | None, ...], where: Path) -> np.ndarray:
    """Return ``arrays[key]`` after checking it exists, matches ``shape`` (``None`` = any size) and is finite."""
    if key not in arrays:
        raise ModelFileError(f"{where} lacks the array {key!r}; the model files do not belong together.")
    arr = arrays[key]
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise ModelFileError(
            f"{where}: array {key!r} has shape {arr.shape}, but the config implies {tuple(shape)}; "
            "the model files do not belong together."
        )
    bad = int(np.count_nonzero(~np.isfinite(arr))) if arr.dtype.kind in "fc" else 0
    if bad:
        raise ModelFileError(
            f"{where}: array {key!r} holds {bad} non-finite value(s) (NaN or inf) of {arr.size}; predictions drawn "
            "from it would be NaN. The model is damaged (or its training diverged): train it again."
        )
    return arr
