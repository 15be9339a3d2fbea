"""Grouped cross-validation: the folds, the score, and the searches behind ``"cv"`` settings and ``method="auto"``.

Folds are *groups* of spots, never random spots (neighbouring spots share tissue, so a random
split leaks through spatial autocorrelation): one group per reference section when there are
several, and contiguous spatial blocks (k-means on ``obsm["spatial"]``) within a single section.
Every held-out fold is scored by the mean Pearson r over its ``N_HVG`` most variable genes
(the selection criterion) and over all genes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._scores import pearson, top_n
from .._validation import TooFewObservationsError

ALPHA_GRID = tuple(10.0**p for p in range(-2, 7))
"""Ridge penalties searched by ``alpha="cv"``."""
K_GRID = (5, 10, 20, 50, 100, 200)
"""Neighbour counts searched by ``k="cv"``."""
N_BLOCKS = 5
"""Spatial blocks of a single section."""
N_HVG = 50
"""The score of a fold is the mean Pearson r over this many most variable genes of the held-out spots."""


def spatial_blocks(coords: np.ndarray, n_blocks: int = N_BLOCKS, random_state: int = 0) -> np.ndarray:
    """Contiguous spatial blocks of spots: k-means labels of their coordinates.

    Parameters
    ----------
    coords
        ``(n, 2)`` spot coordinates (``obsm["spatial"]``).
    n_blocks
        Number of blocks (at most the number of distinct coordinates).
    random_state
        Seed of k-means.

    Examples
    --------
    >>> xy = np.array([[0, 0], [0, 1], [1, 0], [50, 50], [50, 51], [51, 50]])
    >>> labels = spatial_blocks(xy, n_blocks=2)
    >>> len(set(labels[:3])), len(set(labels[3:])), bool(labels[0] != labels[3])
    (1, 1, True)
    """
    from sklearn.cluster import KMeans

    coords = np.asarray(coords, dtype=np.float64)
    n_blocks = min(n_blocks, len(np.unique(coords, axis=0)))
    if n_blocks < 2:
        return np.zeros(len(coords), dtype=np.int64)
    return KMeans(n_blocks, n_init=4, random_state=random_state).fit_predict(coords).astype(np.int64)


def check_groups(groups: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """``groups`` as an array of ``n`` labels with at least two distinct values, else a clear error."""
    if groups is None or len(np.unique(groups)) < 2:
        found = "no groups" if groups is None else "a single group"
        raise TooFewObservationsError(
            f"{what} needs at least 2 cross-validation folds, found {found}: pass several reference sections, "
            'or one section with obsm["spatial"] (split into spatial blocks); or set a fixed value instead of "cv".'
        )
    groups = np.asarray(groups)
    if len(groups) != n:
        raise TooFewObservationsError(f"{what}: {len(groups)} group labels for {n} training spots.")
    return groups


def fold_scores(y_true: np.ndarray, y_pred: np.ndarray, n_hvg: int = N_HVG) -> tuple[float, float]:
    """Mean Pearson r over the ``n_hvg`` most variable genes of ``y_true`` and over all (non-constant) genes.

    The same numbers as ``pearson_HVG-{n_hvg}`` and ``pearson_all`` of :func:`stmorph.tl.evaluate`
    on the same predictions (one Pearson r and one gene ranking, :mod:`stmorph._scores`), except
    that a set without a finite r scores 0.0 here (a candidate that predicts nothing loses) and NaN
    there.

    Examples
    --------
    >>> y = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    >>> fold_scores(y, y)
    (1.0, 1.0)
    """
    r = pearson(y_true, y_pred)
    return _nanmean(r[hvg_columns(y_true, n_hvg)]), _nanmean(r)


def hvg_columns(y: np.ndarray, n_hvg: int = N_HVG) -> np.ndarray:
    """Indices of the ``n_hvg`` columns of ``y`` with the largest variance (ties: the earlier column), in column order.

    Examples
    --------
    >>> hvg_columns(np.array([[0.0, 5.0, 1.0], [0.0, -5.0, 0.0]]), n_hvg=2)
    array([1, 2])
    """
    return np.sort(top_n(np.asarray(y, dtype=np.float64).var(axis=0), n_hvg))


def _nanmean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else 0.0


def folds(groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index pairs, one per group (leave one group out), in sorted group order."""
    return [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in np.unique(groups)]


def grid_search(
    grid: Sequence[Any],
    predict_fold: Callable[[np.ndarray, np.ndarray, np.ndarray], list[np.ndarray]],
    Y: np.ndarray,
    groups: np.ndarray | None,
    name: str,
) -> tuple[np.ndarray, Any]:
    """Choose the grid value with the best mean held-out HVG score, leaving one group out at a time.

    Parameters
    ----------
    grid
        Candidate values of the setting.
    predict_fold
        ``predict_fold(train, test, columns)`` returns, for every grid value, the predictions of
        rows ``test`` and genes ``columns`` (the held-out fold's most variable genes, the only ones
        the score reads), fitted on rows ``train``.
    Y
        ``(n, n_genes)`` expression.
    groups
        ``(n,)`` fold labels (:func:`check_groups`).
    name
        Name of the setting, for error messages.

    Returns
    -------
    The ``(n_folds, len(grid))`` HVG scores and the chosen value (the first of the best ones).
    """
    groups = check_groups(groups, len(Y), f'{name}="cv"')
    scores = []
    for train, test in folds(groups):
        columns = hvg_columns(Y[test])
        truth = Y[np.ix_(test, columns)]
        scores.append([fold_scores(truth, pred)[0] for pred in predict_fold(train, test, columns)])
    scores = np.array(scores)
    return scores, grid[int(np.argmax(scores.mean(axis=0)))]


def _inner_groups(groups: np.ndarray, blocks: np.ndarray | None, train: np.ndarray) -> np.ndarray | None:
    """Fold labels of the ``train`` rows for a model's own ``"cv"`` settings (remaining groups, else ``blocks``)."""
    inner = groups[train]
    if len(np.unique(inner)) < 2:
        return None if blocks is None else blocks[train]
    return inner


def cross_predict(
    make_model: Callable[[], Any],
    X: np.ndarray,
    Y: np.ndarray,
    groups: np.ndarray,
    blocks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions: each group's rows predicted by a model fitted on the other groups.

    Leave one group out (reference sections, or spatial blocks of one section), nested: each
    fold's model fits its own ``"cv"`` settings on inner folds, the remaining groups or, when a
    single group remains (two reference sections), the spatial ``blocks`` of the training rows.
    These are the predictions behind ``method="auto"``'s choice, a prediction's expected accuracy
    per gene and its conformal intervals.

    Parameters
    ----------
    make_model
        Returns a new, unfitted model (a :class:`~stmorph.models.Predictor`: ``fit(X, Y, groups=None)``,
        ``predict(X)``).
    X
        ``(n, ...)`` inputs.
    Y
        ``(n, n_genes)`` expression.
    groups
        ``(n,)`` fold labels (at least two distinct ones: :func:`check_groups`).
    blocks
        ``(n,)`` spatial block labels (unique across groups), or ``None``.

    Returns
    -------
    ``(n, n_genes)`` float32 out-of-fold predictions, and the ``(n,)`` fold label of every row
    (``groups`` itself: row ``i`` was predicted by the model fitted without ``groups[i]``).

    Examples
    --------
    >>> from stmorph.models._baselines import Ridge
    >>> X = np.arange(12.0).reshape(6, 2); Y = X @ np.array([[1.0], [2.0]])
    >>> oof, fold = cross_predict(lambda: Ridge(alpha=1e-6), X, Y, np.array([0, 0, 1, 1, 2, 2]))
    >>> bool(np.allclose(oof, Y, atol=1e-4)), fold.tolist()
    (True, [0, 0, 1, 1, 2, 2])
    """
    groups = check_groups(groups, len(X), "cross_predict")
    oof = np.empty((len(X), np.shape(Y)[1]), dtype=np.float32)
    for train, test in folds(groups):
        model = make_model().fit(X[train], Y[train], groups=_inner_groups(groups, blocks, train))
        oof[test] = np.asarray(model.predict(X[test]), dtype=np.float32)
    return oof, groups


def cross_validate(
    make_models: Sequence[Callable[[], Any]],
    labels: Sequence[str],
    X: np.ndarray,
    Y: np.ndarray,
    groups: np.ndarray,
    blocks: np.ndarray | None = None,
    *,
    return_predictions: bool = False,
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Leave-one-group-out scores of several candidate models (nested: each fits its own ``"cv"`` settings inside).

    Each candidate's out-of-fold predictions come from :func:`cross_predict`.

    Parameters
    ----------
    make_models
        One factory of new, unfitted models per candidate.
    labels
        Name of each candidate.
    X, Y, groups, blocks
        As :func:`cross_predict`.
    return_predictions
        Also return each candidate's out-of-fold predictions (``{label: (n, n_genes)}``), so
        that what is computed from them later (the winner's expected accuracy per gene, its
        intervals) costs no refit.

    Returns
    -------
    The CV table as plain arrays, one row per candidate × fold: ``candidate``, ``fold``,
    ``pearson_hvg50``, ``pearson_all``; and with ``return_predictions``, the predictions.
    """
    rows, predictions = [], {}
    for make, label in zip(make_models, labels):
        oof, fold_of = cross_predict(make, X, Y, groups, blocks)
        predictions[label] = oof
        for fold, (_, test) in zip(np.unique(fold_of), folds(fold_of)):
            rows.append((label, str(fold), *fold_scores(Y[test], oof[test])))
    candidate, fold, hvg, every = zip(*rows)
    table = {
        "candidate": np.asarray(candidate, dtype=object),
        "fold": np.asarray(fold, dtype=object),
        "pearson_hvg50": np.asarray(hvg, dtype=np.float64),
        "pearson_all": np.asarray(every, dtype=np.float64),
    }
    return (table, predictions) if return_predictions else table


def best_candidate(table: dict[str, np.ndarray], labels: Sequence[str]) -> str:
    """The candidate with the highest mean ``pearson_hvg50`` over folds (the first one on ties)."""
    means = [table["pearson_hvg50"][table["candidate"] == label].mean() for label in labels]
    return labels[int(np.argmax(means))]
