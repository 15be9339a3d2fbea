"""Numba kernels of Geary's C on dense and sparse input (imported lazily: numba is slow to import)."""

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


@numba.njit(parallel=True, cache=True)
def sparse_geary_sums(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    x_indptr: np.ndarray,
    x_indices: np.ndarray,
    x_data: np.ndarray,
    n_genes: int,
    n_chunks: int,
) -> np.ndarray:
    """Edge sums and moments of every column of a CSR matrix, touching only stored entries.

    Parameters
    ----------
    indptr, indices, weights
        The CSR arrays of an ``n × n`` graph.
    x_indptr, x_indices, x_data
        The CSR arrays of an ``n × n_genes`` matrix in canonical form (no duplicate entries).
    n_genes
        Columns of the matrix.
    n_chunks
        Row ranges processed in parallel, each with its own accumulators.

    Returns
    -------
    ``(3, n_genes)`` float64: ``Σ_ij w_ij (x_i - x_j)^2``, ``Σ_i x_i`` and ``Σ_i x_i^2``. Each spot's
    row is scattered into a dense buffer once; every edge then adds the squared differences over the
    stored entries of the neighbour and, for the genes the neighbour does not store, the spot's own
    squared values. Everything is formed in float64; nothing of size nnz is allocated.
    """
    n = len(indptr) - 1
    out = np.zeros((n_chunks, 3, n_genes))
    rows_per_chunk = (n + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        acc = out[c]
        row = np.zeros(n_genes)
        last_edge = np.full(n_genes, -1, dtype=np.int64)  # the edge that last saw a gene in the neighbour
        for i in range(c * rows_per_chunk, min((c + 1) * rows_per_chunk, n)):
            for p in range(x_indptr[i], x_indptr[i + 1]):
                v = np.float64(x_data[p])
                row[x_indices[p]] = v
                acc[1, x_indices[p]] += v
                acc[2, x_indices[p]] += v * v
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                w = weights[e]
                for p in range(x_indptr[j], x_indptr[j + 1]):
                    q = x_indices[p]
                    d = row[q] - np.float64(x_data[p])
                    acc[0, q] += w * d * d
                    last_edge[q] = e
                for p in range(x_indptr[i], x_indptr[i + 1]):
                    q = x_indices[p]
                    if last_edge[q] != e:
                        acc[0, q] += w * row[q] * row[q]
            for p in range(x_indptr[i], x_indptr[i + 1]):
                row[x_indices[p]] = 0.0
    return out.sum(axis=0)
