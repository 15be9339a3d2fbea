"""Prediction metrics as small pure functions on ``(n_spots, n_genes)`` arrays.

Per-gene metrics (one value per column) follow the papers the predictions are compared with:
Pearson, Spearman and RMSE (EPS paper, BLEEP), SSIM as defined in HECLIP's code (per-gene
max-scaled vectors), and Hit@T per spot (HECLIP). Constant columns give NaN correlations and
SSIM instead of raising.
"""

from __future__ import annotations

import numpy as np

_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _as_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(
            f"y_true and y_pred must be 2-D arrays of the same shape; found {y_true.shape} and {y_pred.shape}"
        )
    return y_true, y_pred


def _constant(values: np.ndarray) -> np.ndarray:
    """True for columns whose values are all equal (exactly, so rounding cannot hide it)."""
    return np.ptp(values, axis=0) == 0 if len(values) else np.ones(values.shape[1], dtype=bool)


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``y_true`` with the same column of ``y_pred``.

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` arrays (a 1-D pair is one gene).

    Returns
    -------
    ``(n_genes,)`` float64; NaN where either column is constant.

    Examples
    --------
    >>> pearson(np.array([[1.0], [2.0], [3.0]]), np.array([[2.0], [4.0], [7.0]])).round(4)
    array([0.9934])
    """
    y_true, y_pred = _as_pair(y_true, y_pred)
    dt = y_true - y_true.mean(0)
    dp = y_pred - y_pred.mean(0)
    denom = np.sqrt((dt**2).sum(0) * (dp**2).sum(0))
    bad = _constant(y_true) | _constant(y_pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dt * dp).sum(0) / denom
    r[bad] = np.nan
    return np.clip(r, -1.0, 1.0)


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per column (Pearson of average ranks, as :func:`scipy.stats.spearmanr`).

    Examples
    --------
    >>> spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 9.0])).round(4)
    array([0.8])
    """
    y_true, y_pred = _as_pair(y_true, y_pred)
    from scipy.stats import rankdata  # imported here: scipy.stats takes ~0.5 s to import

    return pearson(rankdata(y_true, axis=0), rankdata(y_pred, axis=0))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Root mean squared error per column, in the units of the inputs.

    Examples
    --------
    >>> rmse(np.array([0.0, 0.0]), np.array([3.0, 4.0])).round(4)
    array([3.5355])
    """
    y_true, y_pred = _as_pair(y_true, y_pred)
    return np.sqrt(((y_true - y_pred) ** 2).mean(0))


def ssim(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Structural similarity per gene, as HECLIP computes it (code/GenesMetrics.py, from SpatialBenchmarking).

    Each column of ``y_true`` and of ``y_pred`` is divided by its own maximum; with ``M`` the smaller
    of the two scaled maxima (HECLIP's indexing picks the smaller one; it is 1 whenever both
    maxima are positive), ``C1 = (0.01 M)^2``, ``C2 = (0.03 M)^2``, ``C3 = C2 / 2`` and population
    moments ``μ``, ``σ``, ``σ_12``::

        SSIM = (2 μ1 μ2 + C1) / (μ1² + μ2² + C1) · (2 σ1 σ2 + C2) / (σ1² + σ2² + C2) · (σ12 + C3) / (σ1 σ2 + C3)

    Returns
    -------
    ``(n_genes,)`` float64; NaN where a column is constant or its maximum is 0 (max-scaling is undefined).

    Examples
    --------
    >>> ssim(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 4.0]))
    array([1.])
    """
    y_true, y_pred = _as_pair(y_true, y_pred)
    max_t, max_p = y_true.max(0), y_pred.max(0)
    bad = _constant(y_true) | _constant(y_pred) | (max_t == 0) | (max_p == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = y_true / max_t
        b = y_pred / max_p
        m = np.minimum(a.max(0), b.max(0))
        c1, c2 = (_SSIM_K1 * m) ** 2, (_SSIM_K2 * m) ** 2
        c3 = c2 / 2
        mu1, mu2 = a.mean(0), b.mean(0)
        s1, s2 = a.std(0), b.std(0)
        s12 = ((a - mu1) * (b - mu2)).mean(0)
        value = (
            (2 * mu1 * mu2 + c1)
            / (mu1**2 + mu2**2 + c1)
            * (2 * s1 * s2 + c2)
            / (s1**2 + s2**2 + c2)
            * (s12 + c3)
            / (s1 * s2 + c3)
        )
    value[bad] = np.nan
    return value


def top_indices(values: np.ndarray, t: int) -> np.ndarray:
    """Column indices of the ``t`` largest values in each row (``(n_rows, t)``; ties keep the later column).

    Matches HECLIP's ``np.argsort(x, axis=1)[:, -t:]`` with a stable sort.
    """
    return np.argsort(values, axis=1, kind="stable")[:, values.shape[1] - t :]


def hit_at(y_true: np.ndarray, y_pred: np.ndarray, t: int) -> np.ndarray:
    """Hit@T per spot (HECLIP): does the top-``t`` gene set of the prediction share a gene with the truth's?

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` arrays.
    t
        Size of the top sets (1 ≤ t ≤ n_genes).

    Returns
    -------
    ``(n_spots,)`` bool; HECLIP's Hit@T is its mean.

    Examples
    --------
    >>> hit_at(np.array([[1.0, 5.0, 2.0], [3.0, 1.0, 2.0]]), np.array([[0.0, 2.0, 1.0], [0.0, 1.0, 2.0]]), 1)
    array([ True, False])
    """
    y_true, y_pred = _as_pair(y_true, y_pred)
    if not 1 <= t <= y_true.shape[1]:
        raise ValueError(f"t must lie in [1, n_genes={y_true.shape[1]}]; found {t}")
    top_true = top_indices(y_true, t)
    top_pred = top_indices(y_pred, t)
    return (top_pred[:, :, None] == top_true[:, None, :]).any(axis=(1, 2))
