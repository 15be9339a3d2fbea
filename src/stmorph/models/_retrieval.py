"""Retrieval prediction of BLEEP and HECLIP: average the expression of the top-k nearest reference spots.

The search is exact (cosine similarity = dot product of L2-normalised embeddings, on the CPU with
torch's multi-threaded matmul and top-k) and runs over chunks of query rows, so memory stays
bounded by ``max_elements`` similarity values whatever the size of the reference (a 10⁶-spot
reference is searched 16 query rows at a time by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .._logging import logger
from .._validation import ShapeMismatchError, check_choice, check_int

AGGREGATIONS = ("mean", "weighted")
MAX_ELEMENTS = 2**24
"""Default bound on the query-chunk × reference similarity block (2²⁴ float32 values = 64 MiB)."""


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (rows of zeros stay zero), as float32.

    Examples
    --------
    >>> l2_normalize(np.array([[3.0, 4.0]]))
    array([[0.6, 0.8]], dtype=float32)
    """
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(np.float32).tiny)


def _top_k(sim: torch.Tensor, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of each row, best first.

    ``torch.topk`` keeps only ``k`` entries per row (no full-width index array as ``argpartition``
    would allocate), so the similarity block is the only large temporary.
    """
    return torch.topk(sim, k, dim=1, largest=True, sorted=True).indices.numpy()


def _weights(query: np.ndarray, neighbours: np.ndarray, aggregation: str) -> np.ndarray:
    """Row-normalised weights of the retrieved neighbours.

    ``query`` is ``(q, d)``, ``neighbours`` the ``(q, k, d)`` embeddings of each query's retrieved
    reference spots, both *as given* (not L2-normalised). ``"weighted"`` is the formula of BLEEP's
    public inference code, ``w_j ∝ exp(-(‖s_j - q‖² - min_j ‖s_j - q‖² + 1))`` on the un-normalised
    projections (the neighbours themselves are chosen by cosine similarity); the shift by the
    minimum and the ``+1`` cancel in the normalisation and only keep ``exp`` from underflowing.
    """
    if aggregation == "mean":
        w = np.ones(neighbours.shape[:2], dtype=np.float64)
    else:
        d2 = np.sum((neighbours.astype(np.float64) - query[:, None, :]) ** 2, axis=2)
        w = np.exp(-(d2 - d2.min(axis=1, keepdims=True) + 1.0))
    return w / w.sum(axis=1, keepdims=True)


def retrieve(
    query: np.ndarray,
    reference: np.ndarray,
    reference_expression: np.ndarray,
    *,
    k: int = 50,
    aggregation: str = "mean",
    chunk_size: int | None = None,
    max_elements: int = MAX_ELEMENTS,
    progress: bool = False,
) -> np.ndarray:
    """Predict expression as the (weighted) mean of the ``k`` reference spots nearest to each query.

    Parameters
    ----------
    query
        ``(n_query, d)`` query embeddings.
    reference
        ``(n_ref, d)`` reference embeddings searched by cosine similarity.
    reference_expression
        ``(n_ref, n_genes)`` expression of the reference spots.
    k
        Number of neighbours (clipped to ``n_ref`` with a log message).
    aggregation
        ``"mean"`` (BLEEP's and HECLIP's default) or ``"weighted"`` (BLEEP's distance weights on
        the un-normalised ``query`` and ``reference``, see :func:`_weights`).
    chunk_size
        Query rows per chunk; ``None`` keeps the similarity block and the neighbour-weight matrix
        (rows × ``n_ref`` each) and, for ``"weighted"``, the gathered neighbour embeddings
        (rows × ``k`` × ``d``) under ``max_elements``; the average is one matmul of the weights
        with the reference expression.
    max_elements
        Memory bound used when ``chunk_size`` is ``None``.
    progress
        Show a progress bar over chunks.

    Returns
    -------
    ``(n_query, n_genes)`` float32 predictions; every value lies between the per-gene minimum
    and maximum of ``reference_expression`` (a convex combination of reference rows).

    Examples
    --------
    >>> ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    >>> expr = np.array([[10.0], [0.0], [20.0]])
    >>> retrieve(np.array([[1.0, 0.05]]), ref, expr, k=2)
    array([[15.]], dtype=float32)
    """
    return retrieve_grid(
        query,
        reference,
        reference_expression,
        ks=[k],
        aggregation=aggregation,
        chunk_size=chunk_size,
        max_elements=max_elements,
        progress=progress,
    )[0]


def retrieve_grid(
    query: np.ndarray,
    reference: np.ndarray,
    reference_expression: np.ndarray,
    *,
    ks: Sequence[int],
    aggregation: str = "mean",
    chunk_size: int | None = None,
    max_elements: int = MAX_ELEMENTS,
    progress: bool = False,
) -> list[np.ndarray]:
    """:func:`retrieve` for several ``k`` at once: one similarity search for the largest ``k``, then each average.

    The neighbours of every query are sorted by similarity, so the top ``k`` of each smaller
    ``k`` are the first ``k`` of the largest search; the cost of a grid of ``k`` is one search
    plus one average per value. Parameters are those of :func:`retrieve`; returns one
    prediction per value of ``ks``, in order.

    Examples
    --------
    >>> ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    >>> expr = np.array([[10.0], [0.0], [20.0]])
    >>> [float(p[0, 0]) for p in retrieve_grid(np.array([[1.0, 0.05]]), ref, expr, ks=[1, 2, 3])]
    [10.0, 15.0, 10.0]
    """
    check_choice(aggregation, AGGREGATIONS, "aggregation")
    for k in ks:
        check_int(k, "k", low=1)
    ks = [int(k) for k in ks]
    raw_query, raw_reference = np.asarray(query, dtype=np.float32), np.asarray(reference, dtype=np.float32)
    query, reference = l2_normalize(query), l2_normalize(reference)
    if query.shape[1] != reference.shape[1] or reference.shape[0] != len(reference_expression):
        raise ShapeMismatchError(
            f"query {query.shape}, reference {reference.shape} and reference_expression "
            f"{np.shape(reference_expression)} do not fit: query and reference need the same embedding size, "
            "reference and reference_expression the same number of spots."
        )
    n_ref, n_genes = reference.shape[0], reference_expression.shape[1]
    if max(ks) > n_ref:
        logger.info("retrieval: k=%d > %d reference spots; using k=%d", max(ks), n_ref, n_ref)
        ks = [min(k, n_ref) for k in ks]
    k_max = max(ks)
    gathered = k_max * reference.shape[1] if aggregation == "weighted" else 0
    step = chunk_size or max(1, max_elements // max(n_ref, gathered, 1))
    out = [np.empty((len(query), n_genes), dtype=np.float32) for _ in ks]
    expression = torch.from_numpy(np.ascontiguousarray(reference_expression, dtype=np.float32))
    query_t, reference_t = torch.from_numpy(query), torch.from_numpy(reference)
    starts = range(0, len(query), step)
    for start in tqdm(starts, desc="retrieval", disable=not progress, leave=False):
        rows = slice(start, start + step)
        idx = _top_k(query_t[rows] @ reference_t.T, k_max)
        raw_neighbours = raw_reference[idx] if aggregation == "weighted" else idx[..., None]
        for pred, k in zip(out, ks):
            w = _weights(raw_query[rows], raw_neighbours[:, :k], aggregation)
            pred[rows] = (_weight_matrix(idx[:, :k], w, n_ref) @ expression).numpy()
    return out


def _weight_matrix(idx: np.ndarray, w: np.ndarray, n_ref: int) -> torch.Tensor:
    """The ``(q, n_ref)`` matrix with ``w`` at the retrieved columns ``idx``: the average is one matmul.

    A matmul with the reference expression is far faster than gathering the ``(q, k, n_genes)``
    neighbour expression, and the matrix has the size of the similarity block it came from.
    """
    dense = np.zeros((len(idx), n_ref), dtype=np.float32)
    np.put_along_axis(dense, idx, w.astype(np.float32), axis=1)
    return torch.from_numpy(dense)
