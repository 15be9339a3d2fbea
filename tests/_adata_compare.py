"""Deep equality of two AnnData objects (used to check that a failed call changed nothing)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import sparse


def _is_text(array: np.ndarray) -> bool:
    if array.dtype.kind in "UST":
        return True
    return array.dtype == object and all(isinstance(v, str) for v in array.ravel())


def _assert_value_equal(a, b, where: str) -> None:
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), f"{where}: keys {set(a)} != {set(b)}"
        for key in a:
            _assert_value_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, obj=where)
    elif sparse.issparse(a):
        assert sparse.issparse(b) and a.shape == b.shape and a.dtype == b.dtype, where
        assert (sparse.csr_matrix(a) != sparse.csr_matrix(b)).nnz == 0, where
    elif isinstance(a, np.ndarray) and _is_text(a):
        # zarr stores read strings back as numpy's StringDType, h5ad as object: equal text is equal
        assert isinstance(b, np.ndarray) and _is_text(b) and a.shape == b.shape, where
        assert [str(v) for v in a.ravel()] == [str(v) for v in b.ravel()], where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float | np.floating) and np.isnan(a):
        assert isinstance(b, float | np.floating) and np.isnan(b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_adata_equal(a, b) -> None:
    """Fail unless ``a`` and ``b`` hold the same X, obs, var, obsm, obsp, varm, layers and uns."""
    assert a.shape == b.shape
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    _assert_value_equal(a.X, b.X, "X")
    for slot in ("obsm", "obsp", "varm", "layers", "uns"):
        _assert_value_equal(dict(getattr(a, slot)), dict(getattr(b, slot)), slot)
