"""Rows of an HDF5 dataset in any order (h5py reads only increasing indices): :func:`read_rows`."""

from __future__ import annotations

import os

import numpy as np


def read_rows(path: str | os.PathLike, dataset: str, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (any order, repeats allowed) of ``dataset`` in the HDF5 file ``path``, in that order.

    Examples
    --------
    >>> import h5py, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.h5")
    >>> with h5py.File(path, "w") as fh:
    ...     fh["img"] = np.arange(5) * 10
    >>> read_rows(path, "img", np.array([3, 0, 3])).tolist()
    [30, 0, 30]
    """
    import h5py

    unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    with h5py.File(path, "r") as fh:
        return fh[dataset][unique][inverse]
