"""Numba kernels of the exact kNN search (imported lazily: numba is slow to import).

Both kernels merge one block of similarities ``s`` into the running ``m`` best candidates of
their rows, in place. Row ``r`` (global index ``row0 + r``) sees column ``j = col0 + c`` with key
``sqnorm[j] - 2 s - slack``: the squared Euclidean distance minus the row constant ``|x_r|^2``,
lowered by ``slack`` (``0`` for float32 products; twice the proven error bound of int8 ones, so
that the key is a lower bound of the exact one). Self
pairs are skipped. ``keys``/``ids`` (``rows × m``, sorted) keep the smallest ``(key, id)`` pairs in
lexicographic order, so the result does not depend on the order in which blocks are merged.
Spots ``j`` with ``|xy_j - xy_i|^2 <= r2`` are no candidates of spot ``i`` (the spatial exclusion
of ``exclude_radius``; ``r2 < 0`` excludes nothing). The test runs only for a pair that would
enter the list, so it costs nothing measurable.
"""

from __future__ import annotations

import numba
import numpy as np

_TILE = 64
"""Rows updated together by :func:`merge_columns` (one contiguous run of a similarity row)."""


@numba.njit(inline="always")
def _insert(keys: np.ndarray, ids: np.ndarray, r: int, key: float, j: int) -> None:
    p = keys.shape[1] - 1
    while p > 0 and (keys[r, p - 1] > key or (keys[r, p - 1] == key and ids[r, p - 1] > j)):
        keys[r, p] = keys[r, p - 1]
        ids[r, p] = ids[r, p - 1]
        p -= 1
    keys[r, p] = key
    ids[r, p] = j


@numba.njit(inline="always")
def _allowed(xy: np.ndarray, r2: float, i: int, j: int) -> bool:
    """Whether ``j`` may be a neighbour of ``i``: not ``i`` itself, and farther than ``sqrt(r2)``."""
    if i == j:
        return False
    if r2 < 0.0:
        return True
    dx = xy[i, 0] - xy[j, 0]
    dy = xy[i, 1] - xy[j, 1]
    return dx * dx + dy * dy > r2


@numba.njit(parallel=True, cache=True)
def merge_rows(
    sims: np.ndarray,
    sqnorm: np.ndarray,
    row0: int,
    col0: int,
    keys: np.ndarray,
    ids: np.ndarray,
    xy: np.ndarray,
    r2: float,
    slack: float,
) -> None:
    """Merge ``sims`` (``rows × cols``) into the candidates of its rows."""
    n_rows, n_cols = sims.shape
    m = keys.shape[1]
    for r in numba.prange(n_rows):
        worst, worst_id, own = keys[r, m - 1], ids[r, m - 1], row0 + r
        for c in range(n_cols):
            j = col0 + c
            key = sqnorm[j] - 2.0 * sims[r, c] - slack
            if (key < worst or (key == worst and j < worst_id)) and _allowed(xy, r2, own, j):
                _insert(keys, ids, r, key, j)
                worst, worst_id = keys[r, m - 1], ids[r, m - 1]


@numba.njit(parallel=True, cache=True)
def merge_columns(
    sims: np.ndarray,
    sqnorm: np.ndarray,
    row0: int,
    col0: int,
    keys: np.ndarray,
    ids: np.ndarray,
    xy: np.ndarray,
    r2: float,
    slack: float,
) -> None:
    """Merge ``sims.T`` (``sims`` is ``cols × rows``) into the candidates of its rows, without a transposed copy."""
    n_cols, n_rows = sims.shape
    m = keys.shape[1]
    n_tiles = (n_rows + _TILE - 1) // _TILE
    for t in numba.prange(n_tiles):
        start = t * _TILE
        width = min(start + _TILE, n_rows) - start
        worst = np.empty(_TILE)
        tmp = np.empty(_TILE)
        for r in range(width):
            worst[r] = keys[start + r, m - 1]
        for c in range(n_cols):
            j = col0 + c
            sq = sqnorm[j] - slack
            hit = False
            for r in range(width):
                tmp[r] = sq - 2.0 * sims[c, start + r]
                hit |= tmp[r] <= worst[r]
            if not hit:
                continue
            for r in range(width):
                key = tmp[r]
                row = start + r
                if key <= worst[r] and (key < worst[r] or j < ids[row, m - 1]) and _allowed(xy, r2, row0 + row, j):
                    _insert(keys, ids, row, key, j)
                    worst[r] = keys[row, m - 1]


@numba.njit(inline="always")
def _euclidean(rep: np.ndarray, i: int, j: int) -> float:
    acc = 0.0
    for d in range(rep.shape[1]):
        diff = np.float64(rep[i, d]) - np.float64(rep[j, d])
        acc += diff * diff
    return np.sqrt(acc)


@numba.njit(inline="always")
def _cosine(rep: np.ndarray, i: int, j: int) -> float:
    dot = qq = cc = 0.0
    for d in range(rep.shape[1]):
        a, b = np.float64(rep[i, d]), np.float64(rep[j, d])
        dot += a * b
        qq += a * a
        cc += b * b
    norm = np.sqrt(qq) * np.sqrt(cc)
    return 1.0 - dot / norm if norm > 0 else 1.0


@numba.njit(parallel=True, cache=True)
def candidate_distances(rep: np.ndarray, queries: np.ndarray, cand: np.ndarray, cosine: bool) -> np.ndarray:
    """Exact float64 distances from ``rep[queries[r]]`` to each ``rep[cand[r, t]]`` (``inf`` for ids outside ``rep``).

    Euclidean, or cosine distance ``1 - cos`` (``1`` when a norm is 0). Every product is formed in
    float64 from the stored values, so float32 near-ties are resolved exactly; nothing of size
    ``n × candidates × d`` is allocated.
    """
    n = rep.shape[0]
    out = np.empty(cand.shape)
    for r in numba.prange(cand.shape[0]):
        i = queries[r]
        for t in range(cand.shape[1]):
            j = cand[r, t]
            if j < 0 or j >= n:
                out[r, t] = np.inf
            elif cosine:
                out[r, t] = _cosine(rep, i, j)
            else:
                out[r, t] = _euclidean(rep, i, j)
    return out


@numba.njit(parallel=True, cache=True)
def rerank_proven(
    rep: np.ndarray, sqnorm: np.ndarray, keys: np.ndarray, cand: np.ndarray, k: int, margin: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest of each row's candidates by exact Euclidean distance, and whether that is proven exact.

    ``keys``/``cand`` are the sorted lower-bound keys and ids of :func:`merge_rows`: every spot left
    out of row ``i`` has a key of at least ``keys[i, -1]``. Candidates are taken in key order and
    their exact float64 distances computed until the next key (plus ``sqnorm[i]``: a lower bound of
    the squared distance of it and of every later spot) exceeds the ``k``-th squared distance found
    by more than ``margin[i]``: then no spot left can come closer or tie, and the row is proven.
    Returns ``(ids, distances, proven)``, ``ids``/``distances`` ``n × k`` sorted by (distance, id).
    """
    n, m = cand.shape
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k))
    proven = np.zeros(n, dtype=np.bool_)
    for i in numba.prange(n):
        best_d = np.full(k, np.inf)
        best_j = np.full(k, np.iinfo(np.int64).max)
        found = 0
        done = False
        for t in range(m):
            j = cand[i, t]
            if j < 0 or j >= n:  # no spot left at all
                done = True
                break
            if found == k and keys[i, t] + sqnorm[i] > best_d[k - 1] ** 2 + margin[i]:
                done = True
                break
            d = _euclidean(rep, i, j)
            if found < k:
                found += 1
            if d < best_d[k - 1] or (d == best_d[k - 1] and j < best_j[k - 1]):
                p = k - 1
                while p > 0 and (best_d[p - 1] > d or (best_d[p - 1] == d and best_j[p - 1] > j)):
                    best_d[p] = best_d[p - 1]
                    best_j[p] = best_j[p - 1]
                    p -= 1
                best_d[p] = d
                best_j[p] = j
        if not done:  # every candidate computed: the spots left out must lie beyond the last key
            done = found == k and keys[i, m - 1] + sqnorm[i] > best_d[k - 1] ** 2 + margin[i]
        proven[i] = done
        idx[i] = best_j
        dist[i] = best_d
    return idx, dist, proven
