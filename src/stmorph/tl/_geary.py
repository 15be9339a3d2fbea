"""Geary's C of many variables on one sparse graph, in compiled passes over its edges.

For a graph with weights ``w_ij`` (row ``i`` → column ``j``) and a variable ``x`` on its nodes,

.. math::

    C(x) = \\frac{(N - 1) \\sum_{ij} w_{ij} (x_i - x_j)^2}{2 S_0 \\sum_i (x_i - \\bar x)^2},
    \\qquad S_0 = \\sum_{ij} w_{ij}.

The numerator is one parallel pass over the edges (:mod:`._geary_kernels`) for all genes at once;
every squared difference is formed directly in float64, so there is no cancellation. Dense input
is read in place (C-ordered float) or converted in bounded blocks of genes; sparse input is never
densified: each edge touches only the stored entries of its two spots.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .._numba import run_kernel
from .._validation import check_graph_shape

DEFAULT_CHUNK_ELEMENTS = 2**23
"""Dense elements (n_obs × genes) copied at once when dense input must be converted (64 MiB of float64)."""


def graph_moments(graph: sparse.csr_matrix) -> tuple[float, float, float]:
    """Weight moments ``S0, S1, S2`` of Cliff & Ord (1981), as in PySAL ``libpysal.weights.W``.

    Parameters
    ----------
    graph
        ``n × n`` sparse weights.

    Returns
    -------
    ``S0 = Σ w_ij``, ``S1 = ½ Σ (w_ij + w_ji)^2``, ``S2 = Σ_i (out_i + in_i)^2``.
    """
    graph = sparse.csr_matrix(graph, dtype=np.float64)
    s0 = float(graph.sum())
    sym = graph + graph.T
    s1 = float(sym.multiply(sym).sum() / 2.0)
    degree = _degrees(graph)
    s2 = float(np.sum(degree**2))
    return s0, s1, s2


def _degrees(graph: sparse.csr_matrix) -> np.ndarray:
    """Weighted out-degree plus in-degree of every node (float64)."""
    return np.asarray(graph.sum(axis=1)).ravel() + np.asarray(graph.sum(axis=0)).ravel()


def geary_terms(
    graph: sparse.csr_matrix,
    X: np.ndarray | sparse.spmatrix,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Σ_ij w_ij (x_i - x_j)^2``, ``Σ_i (x_i - x̄)^2`` and ``Σ_i x_i^2`` for every column of ``X``.

    Parameters
    ----------
    graph
        ``n × n`` CSR weights.
    X
        ``n × g`` dense or sparse matrix; sparse input is never densified (a CSC matrix is
        converted to CSR, a copy of its stored entries).

    Returns
    -------
    Three float64 arrays of length ``g``.
    """
    graph = sparse.csr_matrix(graph, dtype=np.float64)
    check_graph_shape(graph, X.shape[0], "the graph")  # the compiled pass does not check bounds
    if sparse.issparse(X):
        return _sparse_geary_terms(graph, X)
    return _dense_geary_terms(graph, np.asarray(X))


def _dense_geary_terms(graph: sparse.csr_matrix, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three sums of a dense matrix: compiled, parallel passes over the graph's edges.

    C-ordered float32/float64 input is passed over once, in place; any other layout or dtype is
    copied to C order (float64 unless float32) in blocks of genes, so the copy is bounded in memory.
    """
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    if X.dtype == dtype and X.flags.c_contiguous:
        return _dense_block_terms(graph, X)
    out = np.empty((3, X.shape[1]))
    for cols in _column_blocks(X.shape[0], X.shape[1]):
        out[:, cols] = _dense_block_terms(graph, np.ascontiguousarray(X[:, cols], dtype=dtype))
    return out[0], out[1], out[2]


def _column_blocks(n_obs: int, n_genes: int) -> list[slice]:
    step = max(1, DEFAULT_CHUNK_ELEMENTS // max(n_obs, 1))
    return [slice(start, min(start + step, n_genes)) for start in range(0, n_genes, step)]


def _n_row_chunks() -> int:
    """Row ranges of one kernel call: a few per numba thread, to balance unequal degrees."""
    import numba

    return 4 * numba.get_num_threads()


def _dense_block_terms(graph: sparse.csr_matrix, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three sums of a C-ordered float block (one call of the compiled kernel)."""
    from ._geary_kernels import dense_geary_sums

    n = x.shape[0]
    numer, shifted_sum, shifted_sq = run_kernel(
        dense_geary_sums, graph.indptr, graph.indices, graph.data, x, _n_row_chunks()
    )
    ss = np.maximum(shifted_sq - shifted_sum**2 / n, 0.0)
    mean = x[0].astype(np.float64) + shifted_sum / n
    return numer, ss, ss + n * mean**2


def _sparse_geary_terms(graph: sparse.csr_matrix, X: sparse.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three sums of a sparse matrix, from its stored entries only (one compiled pass)."""
    from ._geary_kernels import sparse_geary_sums

    x = sparse.csr_matrix(X)
    if not x.has_canonical_format:  # the kernel reads each stored gene of a spot once
        x = x.copy()
        x.sum_duplicates()
    n, g = x.shape
    numer, total, sumsq = run_kernel(
        sparse_geary_sums,
        graph.indptr,
        graph.indices,
        graph.data,
        x.indptr,
        x.indices,
        x.data,
        g,
        _n_row_chunks(),
    )
    return numer, np.maximum(sumsq - total**2 / n, 0.0), sumsq


def constant_mask(ss: np.ndarray, sumsq: np.ndarray) -> np.ndarray:
    """Columns with (numerically) zero variance: ``Σ(x - x̄)^2`` below rounding of ``Σ x^2``."""
    return ss <= 1e-12 * np.maximum(sumsq, np.finfo(np.float64).tiny)


def gearys_c(numer: np.ndarray, ss: np.ndarray, n_obs: int, s0: float) -> np.ndarray:
    """Geary's C from :func:`geary_terms`; NaN where ``ss`` is zero."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (n_obs - 1) * numer / (2.0 * s0 * ss)
    c[~(ss > 0)] = np.nan
    return c


PVALUE_NULLS = ("randomization", "normality", "permutation")
"""The nulls :func:`stmorph.tl.eps` can test against (``pvalues=``)."""


def central_moments(X: np.ndarray | sparse.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """``Σ_i (x_i - x̄)^2`` and ``Σ_i (x_i - x̄)^4`` of every column of ``X`` (float64).

    Sparse input is never densified: the stored entries of a block of rows add their own terms and
    each column's implicit zeros add ``(n - stored) · x̄^4`` (and ``x̄^2``). Dense input is read in
    bounded blocks of genes, so no ``n × g`` float64 copy is made.
    """
    n = X.shape[0]
    if sparse.issparse(X):
        return _sparse_central_moments(sparse.csr_matrix(X), n)
    out = np.empty((2, X.shape[1]))
    for cols in _column_blocks(n, X.shape[1]):
        block = np.asarray(X[:, cols], dtype=np.float64)
        dev = block - block.mean(axis=0)
        sq = dev * dev
        out[0, cols] = sq.sum(axis=0)
        out[1, cols] = np.einsum("ij,ij->j", sq, sq)
    return out[0], out[1]


def _sparse_central_moments(x: sparse.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    if not x.has_canonical_format:  # a gene stored twice in one spot is one value
        x = x.copy()
        x.sum_duplicates()
    g = x.shape[1]
    mean = np.bincount(x.indices, weights=x.data, minlength=g) / n  # summed in float64
    stored = np.bincount(x.indices, minlength=g)
    implicit = (n - stored).astype(np.float64)
    second, fourth = implicit * mean**2, implicit * mean**4
    rows_per_block = max(1, DEFAULT_CHUNK_ELEMENTS * n // max(x.nnz, 1))
    for start in range(0, n, rows_per_block):
        lo, hi = x.indptr[start], x.indptr[min(start + rows_per_block, n)]
        cols = x.indices[lo:hi]
        sq = (x.data[lo:hi].astype(np.float64) - mean[cols]) ** 2
        second += np.bincount(cols, weights=sq, minlength=g)
        fourth += np.bincount(cols, weights=sq * sq, minlength=g)
    return second, fourth


def nonzero_counts(X: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Non-zero entries of every column of ``X`` (sparse never densified; dense read in blocks of genes)."""
    if sparse.issparse(X):
        x = sparse.csr_matrix(X)
        if not x.has_canonical_format:  # entries of one gene in one spot add up to its value
            x = x.copy()
            x.sum_duplicates()
        return np.bincount(x.indices[x.data != 0], minlength=x.shape[1])
    X = np.asarray(X)
    return np.concatenate([np.count_nonzero(X[:, cols], axis=0) for cols in _column_blocks(*X.shape)])


def kurtosis(X: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Sample kurtosis ``b2 = n Σ(x - x̄)^4 / (Σ(x - x̄)^2)^2`` of every column (NaN for a constant column)."""
    second, fourth = central_moments(X)
    with np.errstate(divide="ignore", invalid="ignore"):
        b2 = X.shape[0] * fourth / second**2
    b2[~(second > 0)] = np.nan
    return b2


def normality_variance(n_obs: int, moments: tuple[float, float, float]) -> float:
    """``Var[C]`` under the normality assumption (Cliff & Ord 1981; PySAL esda ``Geary.VC_norm``).

    ``((2 S1 + S2)(N - 1) - 4 S0^2) / (2 (N + 1) S0^2)``, the same for every gene.
    """
    s0, s1, s2 = moments
    return ((2.0 * s1 + s2) * (n_obs - 1) - 4.0 * s0**2) / (2.0 * (n_obs + 1) * s0**2)


def randomization_variance(n_obs: int, moments: tuple[float, float, float], b2: np.ndarray) -> np.ndarray:
    """``Var[C]`` over all permutations of the values (Cliff & Ord 1981, eq. 1.36; esda ``Geary.VC_rand``).

    With ``b2`` the kurtosis of each gene (:func:`kurtosis`)::

        Var[C] = [(N-1) S1 (N² - 3N + 3 - (N-1) b2)
                  - ¼ (N-1) S2 (N² + 3N - 6 - (N² - N + 2) b2)
                  + S0² (N² - 3 - (N-1)² b2)] / (N (N-2) (N-3) S0²)

    A heavy-tailed gene (seen in a few spots only) has a large ``b2`` and, under this null, a
    larger variance than the normality null assumes. Vectorised over genes.
    """
    s0, s1, s2 = moments
    n = float(n_obs)
    graph_term = (n - 1) * s1 * (n**2 - 3 * n + 3 - (n - 1) * b2)
    degree_term = 0.25 * (n - 1) * s2 * (n**2 + 3 * n - 6 - (n**2 - n + 2) * b2)
    total_term = s0**2 * (n**2 - 3 - (n - 1) ** 2 * b2)
    return (graph_term - degree_term + total_term) / (n * (n - 2) * (n - 3) * s0**2)


def analytic_pvalues(c: np.ndarray, var_c: float | np.ndarray) -> np.ndarray:
    """One-sided p-values ``Φ((C - 1) / sqrt(Var[C]))`` of Geary's C (``E[C] = 1`` under both nulls).

    ``var_c`` is :func:`normality_variance` (one number) or :func:`randomization_variance` (one per
    gene). Small C (positive autocorrelation, a predictable gene) gives a small p-value; C > 1
    gives p > 0.5. NaN stays NaN, and so does a gene whose variance is not positive.
    """
    from scipy.special import ndtr  # standard normal CDF; imported here to keep `import stmorph` fast

    var_c = np.broadcast_to(np.asarray(var_c, dtype=np.float64), np.shape(c))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (c - 1.0) / np.sqrt(np.where(var_c > 0, var_c, np.nan))
    return ndtr(z)


def permutation_pvalues(
    graph: sparse.csr_matrix,
    X: np.ndarray | sparse.spmatrix,
    c: np.ndarray,
    n_perms: int,
    rng: np.random.Generator,
    *,
    progress: bool = False,
) -> np.ndarray:
    """One-sided permutation p-values ``(1 + #{C_perm <= C}) / (n_perms + 1)``.

    Each permutation shuffles the rows of ``X`` (all genes at once, the same shuffle for every gene,
    as in PySAL/squidpy) and recomputes C as one sparse product per gene chunk.
    """
    from tqdm.auto import tqdm

    graph = sparse.csr_matrix(graph, dtype=np.float64)
    n = X.shape[0]
    s0 = float(graph.sum())
    X = sparse.csr_matrix(X) if sparse.issparse(X) else X
    _, ss, _ = geary_terms(graph, X)
    below = np.zeros(X.shape[1], dtype=np.int64)
    for _ in tqdm(range(n_perms), desc="permutations", disable=not progress):
        numer, _, _ = geary_terms(graph, X[rng.permutation(n)])
        below += gearys_c(numer, ss, n, s0) <= c
    p = (below + 1.0) / (n_perms + 1.0)
    p[np.isnan(c)] = np.nan
    return p


def clip_like_scale(X: np.ndarray | sparse.spmatrix, max_value: float) -> np.ndarray | sparse.spmatrix:
    """An affine equivalent of ``sc.pp.scale(X, max_value=max_value)`` (same Geary's C), sparse kept sparse.

    Each column is clipped to ``mean ± max_value · sd`` (sd with ``ddof=1``, as scanpy) — the
    values that z-scoring then clipping at ``±max_value`` would clip. Sparse columns are then
    shifted so that the clipped value of 0 stays 0 (the sparsity pattern is kept); the shift does not
    change Geary's C.
    """
    n = X.shape[0]
    if sparse.issparse(X):
        X = sparse.csc_matrix(X, dtype=np.float64, copy=True)
        mean = np.asarray(X.sum(axis=0)).ravel() / n
        sq = np.asarray(X.multiply(X).sum(axis=0)).ravel() / n
    else:
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        sq = np.einsum("ij,ij->j", X, X) / n
    sd = np.sqrt(np.maximum(sq - mean**2, 0.0) * n / max(n - 1, 1))
    lo, hi = mean - max_value * sd, mean + max_value * sd
    if not sparse.issparse(X):
        return np.clip(X, lo, hi)
    col = np.repeat(np.arange(X.shape[1]), np.diff(X.indptr))
    zero_value = np.clip(0.0, lo, hi)
    X.data = np.clip(X.data, lo[col], hi[col]) - zero_value[col]
    X.eliminate_zeros()
    return X
