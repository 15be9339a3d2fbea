"""Numba kernel of Geary's C on dense input (imported lazily: numba is slow to import)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def dense_geary_sums(
    indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, x: np.ndarray, n_chunks: int
) -> np.ndarray:
    """Edge sums and shifted moments of every column of a dense C-ordered ``x``, in one pass.

    Parameters
    ----------
    indptr, indices, weights
        The CSR arrays of an ``n × n`` graph.
    x
        ``n × g`` float32 or float64, C-ordered.
    n_chunks
        Row ranges processed in parallel, each with its own accumulators.

    Returns
    -------
    ``(3, g)`` float64: ``Σ_ij w_ij (x_i - x_j)^2``, ``Σ_i (x_i - x_0)`` and ``Σ_i (x_i - x_0)^2``.
    Differences and sums are formed in float64; the shift by the first row keeps the moments accurate
    for columns far from zero.
    """
    n, g = x.shape
    out = np.zeros((n_chunks, 3, g))
    rows_per_chunk = (n + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        acc = out[c]
        for i in range(c * rows_per_chunk, min((c + 1) * rows_per_chunk, n)):
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                w = weights[e]
                for q in range(g):
                    d = np.float64(x[i, q]) - np.float64(x[j, q])
                    acc[0, q] += w * d * d
            for q in range(g):
                v = np.float64(x[i, q]) - np.float64(x[0, q])
                acc[1, q] += v
                acc[2, q] += v * v
    return out.sum(axis=0)
