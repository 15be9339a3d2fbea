"""kNN graph of the spots' image embeddings (the graph EPS is computed on), and the spatial kNN graph of its control."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import sparse

from .._anndata import commit_outputs
from .._docs import doc_params
from .._keys import Key
from .._logging import logger
from .._numba import run_kernel
from .._tables import table_of
from .._validation import (
    InvalidParameterError,
    check_bool,
    check_choice,
    check_int,
    check_n_obs,
    check_obsp_graph,
    check_seed,
    checks_keys,
    get_rep,
)
from ._spatial import Exclusion, check_exclude_radius, exclusion_for

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

EXACT_MAX_OBS = 50_000
"""``method="auto"`` uses the exact search up to this many spots and pynndescent above it."""

METRICS = ("euclidean", "cosine")
METHODS = ("auto", "exact", "pynndescent")
PRECISIONS = ("auto", "float32", "int8")

INT8_MIN_OBS = 20_000
"""``precision="auto"`` searches in int8 from this many spots on (where the matrix products dominate)."""

INT8_CANDIDATES = 64
"""Candidates per spot kept by the int8 search (at least ``2 * n_neighbors``): the more, the wider the
margin between the ``k``-th neighbour and the first spot left out, so the fewer spots recomputed."""

_BLOCK_ELEMENTS = 2**22
"""Similarity entries held at once by the exact search (a 2048 × 2048 block: 16 MiB of float32).

Small enough that the two merge passes over a block read it from cache, large enough that the
matrix product keeps BLAS at full speed (a 4096 block was ~10 % slower end to end, 1024 ~40 %)."""


def prepare_embedding(rep: np.ndarray, *, metric: str = "euclidean", normalize: bool = True) -> np.ndarray:
    """Embeddings as float32/float64, L2-normalised per row when ``normalize`` or ``metric="cosine"``.

    Rows of norm 0 are left at 0 (as ``faiss.normalize_L2`` does).
    """
    rep = np.asarray(rep)
    rep = rep.astype(np.float64 if rep.dtype == np.float64 else np.float32, copy=True)
    if normalize or metric == "cosine":
        norm = np.linalg.norm(rep, axis=1, keepdims=True)
        np.divide(rep, norm, out=rep, where=norm > 0)
    return rep


def _rerank(rep: np.ndarray, cand: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 distances to candidate columns; keep the ``k`` best by (distance, index).

    Unfilled candidates (ids outside ``rep``, left when an exclusion radius allows fewer than
    ``2k`` spots) get an infinite distance and sort last.
    """
    from ._knn_kernels import candidate_distances

    dist = run_kernel(candidate_distances, rep, np.arange(cand.shape[0]), cand, metric == "cosine")
    order = np.lexsort((cand, dist), axis=1)[:, :k]  # by distance, then by index
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(dist, order, axis=1)


def _float32_products(base: np.ndarray, norms: np.ndarray, bounded: bool) -> tuple[Callable, Callable]:
    """``(pack, products)`` of :func:`_scan` for BLAS products in the embedding's own precision.

    With ``bounded``, each block comes with the bound ``γ_d max|x_i| max|x_j|`` on the rounding
    error of its products (``γ_d = d u / (1 - d u)``, ``u`` the unit roundoff; any summation order).
    """
    unit = np.finfo(base.dtype).eps / 2
    gamma = base.shape[1] * unit / (1 - base.shape[1] * unit) if bounded else 0.0

    def pack(cols: slice) -> tuple[np.ndarray, float]:
        return base[cols], float(norms[cols].max())

    def products(rows: slice, packed: tuple[np.ndarray, float]) -> tuple[np.ndarray, float]:
        return base[rows] @ packed[0].T, gamma * float(norms[rows].max()) * packed[1]

    return pack, products


def _scan(
    base: np.ndarray,
    sqnorm: np.ndarray,
    m: int,
    exclusion: Exclusion | None,
    pack: Callable,
    products: Callable,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` best ``(key, id)`` candidates of every spot, over the blocks on and above the diagonal.

    ``pack(cols)`` prepares a column block once; ``products(rows, packed)`` returns the block's
    similarities and a bound on their error, which lowers the keys (so they bound the exact keys
    from below). Returns ``(keys, ids)``, ``n × m``, sorted; every spot left out of a row has a
    key no smaller than the row's last.
    """
    from tqdm.auto import tqdm

    from ._knn_kernels import merge_columns, merge_rows

    n = base.shape[0]
    keys = np.full((n, m), np.inf)
    cand = np.full((n, m), np.iinfo(np.int64).max, dtype=np.int64)
    xy, r2 = (np.zeros((n, 2)), -1.0) if exclusion is None else (exclusion.xy, exclusion.radius**2)
    size = max(1, min(n, math.isqrt(_BLOCK_ELEMENTS)))
    starts = range(0, n, size)
    pairs = [(i, j) for j in starts for i in starts if i <= j]  # each column block packed once
    packed_j, packed = -1, None
    for i, j in tqdm(pairs, desc="exact kNN", disable=not progress):
        rows, cols = slice(i, min(i + size, n)), slice(j, min(j + size, n))
        if j != packed_j:
            packed_j, packed = j, pack(cols)
        sims, bound = products(rows, packed)
        run_kernel(merge_rows, sims, sqnorm, i, j, keys[rows], cand[rows], xy, r2, 2.0 * bound)
        if j > i:
            run_kernel(merge_columns, sims, sqnorm, j, i, keys[cols], cand[cols], xy, r2, 2.0 * bound)
    return keys, cand


def _base_and_norms(rep: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows searched (L2-normalised for ``"cosine"``) and their squared norms in float64."""
    base = rep
    if metric == "cosine":
        norm = np.linalg.norm(rep, axis=1, keepdims=True)
        base = np.divide(rep, norm, out=np.zeros_like(rep), where=norm > 0)
    return base, np.einsum("ij,ij->i", base, base, dtype=np.float64)


def knn_exact(rep: np.ndarray, n_neighbors: int, **options) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN (self excluded) by BLAS brute force over blocks of bounded memory: ``(indices, distances)``.

    :func:`knn_search` (same arguments) without the rows it recomputed; each array
    ``n × n_neighbors``, sorted by (distance, index).
    """
    idx, dist, _ = knn_search(rep, n_neighbors, **options)
    return idx, dist


def knn_search(
    rep: np.ndarray,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    exclusion: Exclusion | None = None,
    progress: bool = False,
    precision: str = "float32",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact kNN (self excluded) by brute force over blocks of bounded memory, proven exact.

    The similarity matrix is computed block by block with one matrix product each, and only for
    blocks on and above the diagonal: a block serves both its rows and, transposed, its columns,
    which halves the work. A running list of the best candidates per spot is kept (``2k`` in
    float32, :data:`INT8_CANDIDATES` in int8).

    The candidates of each spot come from float32 or int8 products, each with a proven bound on
    its error (int8: :class:`~stmorph.models.Int8Gram`; float32: rounding, ``γ_d |x_i| |x_j|``).
    Keys lowered by that bound are lower bounds of the exact squared distances, so after the scan
    every spot left out of a row's candidates is at least as far as the row's last key says. The
    candidates are re-ranked with exact float64 distances, in key order and only as far as needed
    (:func:`~stmorph.tl._knn_kernels.rerank_proven`); a row whose ``n_neighbors``-th exact distance
    is below the next key is proven exact (no spot left out can come closer, or tie).
    Every other row is recomputed exactly (:func:`_exact_rows`). Ties are broken by the smaller
    index, so the graph does not depend on the block size, thread count or precision.
    (``metric="cosine"`` searches in float32 and re-ranks without the proof.)

    Parameters
    ----------
    rep
        ``n × d`` embeddings (already normalised if wanted; see :func:`prepare_embedding`).
    n_neighbors
        Neighbours per spot.
    metric
        ``"euclidean"`` or ``"cosine"`` (``"cosine"`` only in float32).
    exclusion
        Take each spot's neighbours only among spots farther than ``exclusion.radius`` µm.
    progress
        Show a progress bar over blocks.
    precision
        ``"float32"`` (BLAS in the embedding's precision) or ``"int8"`` products for the candidates.

    Returns
    -------
    ``(indices, distances, recomputed)``: the neighbours and distances as :func:`knn_exact`
    returns them, and the rows that the proof did not cover and were recomputed.
    """
    n = rep.shape[0]
    base, sqnorm = _base_and_norms(rep, metric)
    if precision == "int8":
        from ..models import Int8Gram

        if metric != "euclidean":
            raise ValueError("the int8 search is Euclidean only; resolve_precision says so to users")
        m = min(max(INT8_CANDIDATES, 2 * n_neighbors), n - 1)
        gram = Int8Gram(base)
        keys, cand = _scan(base, sqnorm, m, exclusion, gram.pack, gram.products, progress)
        del gram
    else:
        m = min(2 * n_neighbors, n - 1)
        pack, products = _float32_products(base, np.sqrt(sqnorm), bounded=metric == "euclidean")
        keys, cand = _scan(base, sqnorm, m, exclusion, pack, products, progress)
    if metric != "euclidean":
        idx, dist = _rerank(rep, cand, n_neighbors, metric)
        return idx, dist, np.empty(0, dtype=np.int64)
    from ._knn_kernels import rerank_proven

    margin = 1e-9 * (1.0 + sqnorm + sqnorm.max())  # float64 rounding of the distances compared
    idx, dist, proven = run_kernel(rerank_proven, rep, sqnorm, keys, cand, n_neighbors, margin)
    recomputed = np.flatnonzero(~proven)
    if recomputed.size:
        idx[recomputed], dist[recomputed] = _exact_rows(base, sqnorm, recomputed, n_neighbors, exclusion)
    logger.info(
        "exact kNN (%s search): %d of %d spots proven exact, %d recomputed",
        precision,
        n - recomputed.size,
        n,
        recomputed.size,
    )
    return idx, dist, recomputed


def _exact_rows(
    base: np.ndarray, sqnorm: np.ndarray, rows: np.ndarray, k: int, exclusion: Exclusion | None
) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest of ``rows`` (Euclidean, self and ``exclusion`` left out), from full rows of products.

    Each row's products with every spot come from one BLAS product in ``base``'s precision, whose
    rounding error is at most ``γ_d |x_i| |x_j|`` (``γ_d = d u / (1 - d u)``, any summation order).
    Every spot whose key, lowered by that bound, is within the row's ``k``-th key raised by it is
    a possible neighbour; all of them (however many: duplicated spots tie) are re-ranked with exact
    float64 distances.
    """
    from ._knn_kernels import candidate_distances

    n, d = base.shape
    unit = np.finfo(base.dtype).eps / 2
    gamma = d * unit / (1 - d * unit)
    norms = np.sqrt(sqnorm)
    idx, dist = np.empty((rows.size, k), dtype=np.int64), np.empty((rows.size, k))
    step = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, rows.size, step):
        chunk = rows[start : start + step]
        keys = sqnorm - 2.0 * (base[chunk] @ base.T).astype(np.float64)
        keys[np.arange(chunk.size), chunk] = np.inf
        if exclusion is not None:
            offset = exclusion.xy[chunk][:, None, :] - exclusion.xy[None, :, :]
            keys[np.einsum("rjc,rjc->rj", offset, offset) <= exclusion.radius**2] = np.inf
        slack = 2.0 * gamma * norms[chunk] * norms.max() + 1e-9 * (1.0 + sqnorm[chunk] + sqnorm.max())
        kth = np.partition(keys, k - 1, axis=1)[:, k - 1]
        near = keys <= (kth + 2.0 * slack)[:, None]
        width = int(near.sum(axis=1).max())
        cand = np.full((chunk.size, width), -1, dtype=np.int64)
        r, j = np.nonzero(near)
        cand[r, np.arange(r.size) - np.searchsorted(r, r)] = j
        got = run_kernel(candidate_distances, base, chunk, cand, False)
        order = np.lexsort((np.where(cand < 0, n, cand), got), axis=1)[:, :k]
        idx[start : start + chunk.size] = np.take_along_axis(cand, order, axis=1)
        dist[start : start + chunk.size] = np.take_along_axis(got, order, axis=1)
    return idx, dist


def drop_self(idx: np.ndarray, dist: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort ``n_neighbors + 1`` candidates per row by (distance, index); drop the row itself, else the farthest."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    order = np.lexsort((idx, dist), axis=1)
    idx, dist, is_self = (np.take_along_axis(a, order, axis=1) for a in (idx, dist, is_self))
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), n_neighbors)
    keep = np.ones(idx.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, n_neighbors).astype(np.int64), dist[keep].reshape(n, n_neighbors).astype(np.float64)


def keep_outside(
    idx: np.ndarray, dist: np.ndarray, exclusion: Exclusion, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_neighbors`` nearest candidates of each row farther than ``exclusion.radius``, by (distance, index).

    The row itself lies within the radius, so it is dropped too. Every row must hold at least
    ``n_neighbors`` such candidates.
    """
    offset = exclusion.xy[idx] - exclusion.xy[:, None, :]
    allowed = np.einsum("rkc,rkc->rk", offset, offset) > exclusion.radius**2
    order = np.lexsort((idx, np.where(allowed, dist, np.inf)), axis=1)[:, :n_neighbors]
    if not np.take_along_axis(allowed, order, axis=1).all():
        raise RuntimeError("fewer candidates outside exclude_radius than requested; please report this")
    return np.take_along_axis(idx, order, axis=1).astype(np.int64), np.take_along_axis(dist, order, axis=1)


def knn_pynndescent(
    rep: np.ndarray,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    exclusion: Exclusion | None = None,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN with pynndescent (self excluded), sorted by (distance, index).

    With ``exclusion``, ``n_neighbors`` plus the most spots any spot has within the radius are
    searched, so at least ``n_neighbors`` of them lie outside it.
    """
    from pynndescent import NNDescent

    extra = 1 if exclusion is None else int(exclusion.within_counts().max())
    query = min(n_neighbors + extra, rep.shape[0])
    index = NNDescent(rep, n_neighbors=query, metric=metric, random_state=random_state, low_memory=True)
    idx, dist = index.neighbor_graph
    if exclusion is None:
        return drop_self(idx, dist, n_neighbors)
    return keep_outside(idx, dist.astype(np.float64), exclusion, n_neighbors)


def resolve_method(method: str, n_obs: int) -> str:
    """``"auto"`` → ``"exact"`` up to :data:`EXACT_MAX_OBS` spots, else ``"pynndescent"``."""
    check_choice(method, METHODS, "method")
    if method == "auto":
        return "exact" if n_obs <= EXACT_MAX_OBS else "pynndescent"
    return method


def resolve_precision(precision: str, metric: str, n_obs: int) -> str:
    """``"auto"`` → ``"int8"`` or ``"float32"``; raise when ``"int8"`` cannot be used.

    ``"auto"`` searches in int8 when the graph is Euclidean, has at least :data:`INT8_MIN_OBS`
    spots, torch is already imported (as after :func:`~stmorph.tl.embed`: importing it only for
    the search would add ~0.5 GB to the process) and its int8 kernel runs exactly here.
    """
    from ..models import int8_available

    check_choice(precision, PRECISIONS, "precision")
    if precision == "auto":
        usable = metric == "euclidean" and n_obs >= INT8_MIN_OBS and "torch" in sys.modules
        return "int8" if usable and int8_available() else "float32"
    if precision == "int8" and metric != "euclidean":
        raise InvalidParameterError(
            f"precision='int8' searches Euclidean distances, not metric={metric!r}; use metric='euclidean' "
            "(with normalize=True it ranks neighbours as cosine does) or precision='float32'."
        )
    if precision == "int8" and not int8_available():
        raise InvalidParameterError(
            "precision='int8' needs torch's oneDNN int8 matrix product, which does not run exactly on this "
            "machine; use precision='float32' (or 'auto', which falls back to it)."
        )
    return precision


def check_n_neighbors(n_obs: int, n_neighbors: int, what: str) -> None:
    """Raise unless ``n_neighbors >= 1`` and ``n_obs`` spots leave every spot that many others.

    ``what`` names the use in the message, e.g. ``"EPS"``.
    """
    check_int(n_neighbors, "n_neighbors", low=1)
    check_n_obs(n_obs, n_neighbors + 1, f"{what} with n_neighbors={n_neighbors}")


def knn_graph(
    rep: np.ndarray,
    n_neighbors: int = 5,
    *,
    metric: str = "euclidean",
    normalize: bool = True,
    method: str = "auto",
    exclusion: Exclusion | None = None,
    random_state: int = 0,
    progress: bool = False,
    precision: str = "auto",
) -> tuple[sparse.csr_matrix, sparse.csr_matrix, str]:
    """Directed unweighted kNN graph of embeddings, as ``(connectivities, distances, method used)``.

    Pure function behind :func:`image_graph` (no AnnData). ``connectivities`` holds ``1.0`` for
    each edge ``i → j`` (j among the ``n_neighbors`` nearest of i, self excluded, and farther
    than ``exclusion.radius`` from i when ``exclusion`` is given); ``distances`` holds the
    distance of the same edges. ``precision`` chooses the products of the exact search
    (:func:`resolve_precision`; the graph is the same either way).
    """
    check_choice(metric, METRICS, "metric")
    check_n_neighbors(rep.shape[0], n_neighbors, "a kNN graph")
    method = resolve_method(method, rep.shape[0])
    precision = resolve_precision(precision, metric, rep.shape[0])
    rep = prepare_embedding(rep, metric=metric, normalize=normalize)
    t0 = time.perf_counter()
    if method == "exact":
        idx, dist = knn_exact(
            rep, n_neighbors, metric=metric, exclusion=exclusion, progress=progress, precision=precision
        )
        method_used = f"exact, {precision} search"
    else:
        idx, dist = knn_pynndescent(rep, n_neighbors, metric=metric, exclusion=exclusion, random_state=random_state)
        method_used = method
    elapsed = time.perf_counter() - t0
    logger.info("kNN graph (%s, k=%d, n=%d) in %.1f s", method_used, n_neighbors, rep.shape[0], elapsed)
    conn, dists = edges_to_csr(idx, dist)
    return conn, dists, method


def edges_to_csr(idx: np.ndarray, dist: np.ndarray) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """``(connectivities, distances)`` CSR of ``n × k`` neighbour indices and their distances."""
    n, n_neighbors = idx.shape
    indptr = np.arange(0, n * n_neighbors + 1, n_neighbors, dtype=np.int64)
    order = np.argsort(idx, axis=1, kind="stable")  # canonical CSR: columns sorted within each row
    cols = np.take_along_axis(idx, order, axis=1).ravel()
    conn = sparse.csr_matrix((np.ones(cols.size, dtype=np.float32), cols, indptr), shape=(n, n))
    dists = sparse.csr_matrix((np.take_along_axis(dist, order, axis=1).ravel(), cols, indptr), shape=(n, n))
    return conn, dists


def spatial_knn_graph(xy: np.ndarray, n_neighbors: int) -> sparse.csr_matrix:
    """Directed unweighted kNN graph of spot positions ``xy`` (any unit), self excluded."""
    from scipy.spatial import cKDTree

    n = xy.shape[0]
    k = min(n, n_neighbors + 1)
    dist, idx = cKDTree(xy).query(xy, k=k)
    idx, dist = drop_self(idx.reshape(n, k), dist.reshape(n, k), n_neighbors)
    conn, _ = edges_to_csr(idx, dist)
    return conn


def build_graph(
    adata: AnnData,
    use_rep: str,
    *,
    n_neighbors: int = 5,
    metric: str = "euclidean",
    normalize: bool = True,
    method: str = "auto",
    exclude_radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
    key_added: str = "image",
    random_state: int = 0,
    progress: bool = False,
    precision: str = "auto",
) -> tuple[sparse.csr_matrix, dict[str, dict]]:
    """The graph of :func:`image_graph` without touching ``adata``: ``(connectivities, outputs)``.

    ``outputs`` holds the ``obsp`` and ``uns`` entries to store, as keyword arguments of
    :func:`~stmorph._anndata.commit_outputs` (the one place the graph's layout is written).
    """
    rep = get_rep(adata, use_rep)
    check_n_neighbors(rep.shape[0], n_neighbors, "a kNN graph")
    exclusion = exclusion_for(adata, exclude_radius, n_neighbors, spatial_key)
    precision = resolve_precision(precision, metric, rep.shape[0])
    conn, dists, used = knn_graph(
        rep,
        n_neighbors,
        metric=metric,
        normalize=normalize,
        method=method,
        exclusion=exclusion,
        random_state=random_state,
        progress=progress,
        precision=precision,
    )
    params = {
        "use_rep": use_rep,
        "n_neighbors": int(n_neighbors),
        "metric": metric,
        "normalize": bool(normalize),
        "method": used,
        "random_state": int(random_state),
    }
    if used == "exact":  # the products its candidates were found with (the graph is the same)
        params["precision"] = precision
    if exclusion is not None:  # absent = the paper's graph (h5ad cannot store None)
        params.update(exclude_radius=exclusion.radius, spatial_key=spatial_key)
    conn_key, dist_key = Key.obsp.connectivities(key_added), Key.obsp.distances(key_added)
    record = {"connectivities_key": conn_key, "distances_key": dist_key, "params": params}
    return conn, {"obsp": {conn_key: conn, dist_key: dists}, "uns": {key_added: record}}


def stored_params(adata: AnnData, key: str) -> dict:
    """The ``params`` :func:`image_graph` recorded for the graph ``key`` (``{}`` when there are none)."""
    record = adata.uns.get(key)
    params = record.get("params", {}) if isinstance(record, Mapping) else {}
    return dict(params) if isinstance(params, Mapping) else {}


def stored_exclude_radius(adata: AnnData, key: str) -> float | None:
    """The ``exclude_radius`` the stored graph ``key`` was built with (``None``: the paper's graph)."""
    radius = stored_params(adata, key).get("exclude_radius")
    return None if radius is None else float(radius)


def check_stored_exclusion(adata: AnnData, key: str, exclude_radius: float | None) -> None:
    """Raise when ``exclude_radius`` is asked for but the stored graph ``key`` was built with another one."""
    exclude_radius = check_exclude_radius(exclude_radius)
    if exclude_radius is None:
        return
    stored = stored_exclude_radius(adata, key)
    if stored != exclude_radius:
        built = "without an exclusion" if stored is None else f"with exclude_radius={stored:g}"
        raise InvalidParameterError(
            f"the stored graph {key!r} was built {built}, not exclude_radius={exclude_radius:g}; pass "
            "`use_rep=` to build the graph with this radius."
        )


def matches_stored(
    adata: AnnData,
    key: str,
    use_rep: str,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    normalize: bool = True,
    exclude_radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
) -> bool:
    """Whether ``obsp`` holds the graph ``key`` built (as :func:`image_graph` records) with these options."""
    params = stored_params(adata, key)
    return bool(
        Key.obsp.connectivities(key) in adata.obsp
        and params.get("use_rep") == use_rep
        and params.get("n_neighbors") == n_neighbors
        and params.get("normalize", True) == normalize
        and params.get("metric", "euclidean") == metric
        and stored_exclude_radius(adata, key) == exclude_radius
        and (exclude_radius is None or params.get("spatial_key", Key.obsm.spatial) == spatial_key)
    )


def stored_graph(adata: AnnData, key: str) -> sparse.csr_matrix:
    """``obsp[f"{key}_connectivities"]`` as CSR, after checking it is ``n_obs × n_obs`` with usable weights.

    Any graph is accepted (:func:`image_graph`'s, squidpy's, a user's): finite non-negative
    weights with at least one edge of positive weight.
    """
    conn_key = Key.obsp.connectivities(key)
    graph = check_obsp_graph(adata, conn_key)
    if (graph.data < 0).any() or not np.isfinite(graph.data).all() or not graph.data.sum() > 0:
        raise InvalidParameterError(
            f"adata.obsp[{conn_key!r}] must hold finite non-negative weights with at least one edge of "
            f"positive weight; found {graph.nnz} stored entries, min {graph.data.min() if graph.nnz else 'n/a'}, "
            f"sum {graph.data.sum() if graph.nnz else 0}."
        )
    return graph


@doc_params("spatial_key", "table_key", "copy")
@checks_keys("use_rep", "key_added", "spatial_key", "table_key")
def image_graph(
    adata: AnnData | SpatialData,
    use_rep: str,
    *,
    n_neighbors: int = 5,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    normalize: bool = True,
    method: Literal["auto", "exact", "pynndescent"] = "auto",
    precision: Literal["auto", "float32", "int8"] = "auto",
    exclude_radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
    key_added: str = "image",
    random_state: int = 0,
    table_key: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """kNN graph of the spots' image embeddings, stored like :func:`scanpy.pp.neighbors`.

    The graph of the EPS paper (Xia, Yao & Gao 2025): embeddings L2-normalised, Euclidean
    distance, the ``n_neighbors`` nearest other spots of each spot, directed and unweighted.

    Parameters
    ----------
    adata
        Annotated data matrix with embeddings in ``obsm[use_rep]``, or a SpatialData holding it
        (``table_key``).
    use_rep
        Key in ``adata.obsm`` (any representation: image, ATAC or protein embedding, ...).
    n_neighbors
        Neighbours per spot (self excluded).
    metric
        ``"euclidean"`` or ``"cosine"``.
    normalize
        L2-normalise embeddings first (the paper's choice; Euclidean then ranks like cosine).
    method
        ``"exact"``: BLAS brute force in row blocks (memory bounded, ties broken by the smaller
        index); ``"pynndescent"``: approximate; ``"auto"``: exact up to
        :data:`EXACT_MAX_OBS` (50,000) spots, pynndescent above.
    precision
        Products the exact search finds its candidates with; the graph is the same either way.
        ``"float32"``: BLAS in float32. ``"int8"``: int8 products (oneDNN through torch, x86),
        faster where the matrix products dominate, made exact by a proof: each product's
        quantisation error is bounded, the candidates are re-ranked with exact float64 distances,
        and every spot whose ``n_neighbors``-th neighbour lies within the bound of the first spot
        left out is recomputed exactly (their number is logged). ``"auto"``: int8 for Euclidean
        graphs of at least :data:`INT8_MIN_OBS` spots once torch is imported (as after
        :func:`~stmorph.tl.embed`) and where its kernel runs, float32 otherwise. ``"int8"`` needs
        ``metric="euclidean"``.
    exclude_radius
        Spatial-proximity control, in µm: each spot's neighbours are taken only among spots
        farther than this from it (centres ``obsm[spatial_key]`` times the pixel size recorded in
        ``uns['stmorph']['dataset']['mpp']`` or by :func:`~stmorph.pp.extract_patches`). ``None``:
        the paper's graph. A radius above the tile width removes neighbours that share pixels.
    {spatial_key}
    key_added
        Prefix of the output keys.
    random_state
        Seed of pynndescent.
    {table_key}
    progress
        Show a progress bar for the exact search.
    {copy}

    Returns
    -------
    ``None`` if ``copy=False``, else a new :class:`~anndata.AnnData`. Sets:

    ``adata.obsp[f'{key_added}_connectivities']`` : binary directed kNN graph (CSR, ``n × n``).
    ``adata.obsp[f'{key_added}_distances']`` : distances of the same edges.
    ``adata.uns[key_added]`` : ``{'connectivities_key', 'distances_key', 'params'}``
    (``params['exclude_radius']`` only when one was used; ``params['precision']``, the products
    of an exact search).

    Raises
    ------
    InvalidParameterError
        ``exclude_radius`` is not a finite number > 0, or the pixel size is unknown;
        ``precision="int8"`` with ``metric="cosine"`` or where the int8 kernel does not run.
    StmorphKeyError
        ``exclude_radius`` is given and ``obsm[spatial_key]`` is missing.
    TooFewObservationsError
        The radius leaves some spot fewer than ``n_neighbors`` candidates.

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 20).tables["table"]
    >>> st.tl.image_graph(adata, "latent", n_neighbors=5)
    >>> int(adata.obsp["image_connectivities"].sum(axis=1).max())
    5
    >>> adata.uns["image"]["params"]["precision"]  # "auto": int8 from 20,000 spots on
    'float32'
    >>> st.tl.image_graph(adata, "latent", exclude_radius=250.0, key_added="far")
    >>> adata.uns["far"]["params"]["exclude_radius"]
    250.0
    """
    check_int(n_neighbors, "n_neighbors", low=1)
    check_choice(metric, METRICS, "metric")
    check_choice(method, METHODS, "method")
    check_choice(precision, PRECISIONS, "precision")
    check_bool(normalize, "normalize")
    check_seed(random_state)
    check_bool(progress, "progress")
    check_bool(copy, "copy")
    adata = table_of(adata, table_key, name="st.tl.image_graph")
    _, outputs = build_graph(
        adata,
        use_rep,
        n_neighbors=n_neighbors,
        metric=metric,
        normalize=normalize,
        method=method,
        precision=precision,
        exclude_radius=exclude_radius,
        spatial_key=spatial_key,
        key_added=key_added,
        random_state=random_state,
        progress=progress,
    )
    adata = adata.copy() if copy else adata
    commit_outputs(adata, **outputs)
    return adata if copy else None
