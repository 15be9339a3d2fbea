"""The two scores every part of stmorph shares: per-gene Pearson r and the top ``n`` genes of a ranking.

``st.tl.evaluate`` (``tl/_metrics.py``) and the cross-validation that chooses settings and
methods (``models/_cv.py``) both import them from here, so a cross-validated score and the
evaluation of the same predictions are the same number.

Two rules are fixed here, once:

- **Constant genes have no correlation.** A column whose values are all equal up to
  floating-point rounding (spread at most :data:`CONSTANT_RTOL` times its largest absolute
  value) gets NaN, in the truth or in the prediction: a mean computed in floating point can leave
  rounding residues of about 1e-16 that would otherwise correlate with anything.
- **Ties go to the earlier gene.** :func:`top_n` ranks with a stable sort of the negated values:
  among equal values the one in the earlier column is taken first, and NaN is taken last.
"""

from __future__ import annotations

import numpy as np

CONSTANT_RTOL = 1e-12
"""A column whose values spread over at most this fraction of its largest absolute value is constant."""


def constant_columns(values: np.ndarray) -> np.ndarray:
    """True for each column of a 2-D array whose values are equal up to rounding (:data:`CONSTANT_RTOL`).

    Examples
    --------
    >>> constant_columns(np.array([[0.3, 0.0, 1.0], [0.1 * 3, 0.0, 2.0]]))  # 0.1 * 3 is 0.30000000000000004
    array([ True,  True, False])
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return np.ones(values.shape[1], dtype=bool)
    return np.ptp(values, axis=0) <= CONSTANT_RTOL * np.abs(values).max(axis=0)


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``y_true`` with the same column of ``y_pred``.

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` arrays of the same shape (a 1-D pair is one gene).

    Returns
    -------
    ``(n_genes,)`` float64 in ``[-1, 1]``; NaN where either column is constant
    (:func:`constant_columns`).

    Examples
    --------
    >>> pearson(np.array([[1.0], [2.0], [3.0]]), np.array([[2.0], [4.0], [7.0]])).round(4)
    array([0.9934])
    >>> pearson(np.array([1.0, 2.0, 3.0]), np.array([0.3, 0.3, 0.3]))
    array([nan])
    """
    y_true, y_pred = as_pair(y_true, y_pred)
    dt = y_true - y_true.mean(0)
    dp = y_pred - y_pred.mean(0)
    denom = np.sqrt((dt**2).sum(0) * (dp**2).sum(0))
    bad = constant_columns(y_true) | constant_columns(y_pred) | ~(denom > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dt * dp).sum(0) / denom
    r[bad] = np.nan
    return np.clip(r, -1.0, 1.0)


def as_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` and ``y_pred`` as float64 ``(n_spots, n_genes)`` arrays of one shape (a 1-D pair is one gene)."""
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


def top_n(values: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest values along the last axis, largest first; ties go to the earlier position.

    The one ranking rule of stmorph: the most variable genes of a fold (cross-validation), the
    HEG/HVG sets of :func:`~stmorph.tl.evaluate`, a section's highly variable genes
    (:func:`~stmorph.tl.reference_hvgs`), the top genes of a spot (Hit@T) and the genes
    :func:`~stmorph.pl.gene_correlation` draws by default all use it. NaN ranks below every number.

    Parameters
    ----------
    values
        1-D scores, or a 2-D array ranked row by row.
    n
        How many to keep (at most the length of the last axis).

    Returns
    -------
    Integer positions, shape ``values.shape[:-1] + (min(n, values.shape[-1]),)``.

    Examples
    --------
    >>> top_n(np.array([1.0, 3.0, 3.0, 2.0]), 2)  # the tie at 3.0: position 1 before position 2
    array([1, 2])
    >>> top_n(np.array([[0.0, 5.0, 5.0], [2.0, np.nan, 1.0]]), 1)
    array([[1],
           [0]])
    """
    values = np.asarray(values, dtype=np.float64)
    return np.argsort(-values, axis=-1, kind="stable")[..., : max(0, min(n, values.shape[-1]))]
