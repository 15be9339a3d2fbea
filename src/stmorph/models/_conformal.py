"""Split-conformal prediction intervals per spot × gene, calibrated across reference sections.

The calibration spots are the reference spots, each predicted out of fold: by a model fitted
without its section (leave one reference out; spatial blocks of a single reference). For gene
``g`` the normalised residual of calibration spot ``i`` is ``z = (y - ŷ) / s``, where ``s`` is
the spot × gene *scale* (:data:`SCALES`); the interval of a query spot is
``ŷ ± q_g · s`` with ``q_g`` the split-conformal quantile of ``|z|`` at ``level``, cut to the range
of the gene's calibration values (expression never leaves it: log1p values are never negative,
so the lower bound of a sparse gene stops at 0).

Guarantee: when the query section and the reference sections are *exchangeable* (drawn alike
from one population of sections), each gene's interval holds the truth with probability at
least ``level - 2 / (n + 1)`` for a query spot (``n`` calibration spots; the ``2 / (n + 1)`` is
the chance that a value falls outside the calibration range, nil for log1p's lower bound),
averaged over spots and draws of the sections. It says nothing about one particular spot, and
it fails when the query differs systematically from every reference (another tissue, protocol
or batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import InvalidParameterError, TooFewObservationsError, check_range
from ..errors import ModelFileError, NotCalibratedError

SCALES = ("none", "knn")
"""Candidate scales: ``"none"`` (1: one width per gene) and ``"knn"`` (the mean absolute out-of-fold
residual of the :data:`K_SCALE` calibration spots nearest to the spot in the model's input
space, cosine, per gene)."""
K_SCALE = 50
"""Neighbours of the ``"knn"`` scale."""
FLOOR = 0.1
"""Every ``"knn"`` scale is raised by this fraction of the gene's mean absolute residual, so a spot
whose neighbours happened to be predicted perfectly keeps a non-zero width."""
MAX_ELEMENTS = 2**20
"""Bound on the values of one chunk of spots × genes (or × calibration spots) while computing intervals."""
PREFIX = "calibration."
"""Prefix of the calibration arrays in a saved model's ``model.safetensors``."""


def check_level(level: float) -> float:
    """``level`` (``interval=``) as a float in ``(0, 1)``, else :class:`~stmorph.errors.InvalidParameterError`.

    Examples
    --------
    >>> check_level(0.9)
    0.9
    """
    return check_range(level, "interval", low=0.0, high=1.0)


def stored_calibration(calibration: Calibration | None, level: float) -> Calibration:
    """The calibration a fitted model keeps, checked against the ``level`` asked.

    Raises
    ------
    NotCalibratedError
        The model holds no calibration, or one for another level.

    Examples
    --------
    >>> stored_calibration(None, 0.9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stmorph.errors.NotCalibratedError: interval=0.9: this model holds no interval calibration ...
    """
    if calibration is None:
        raise NotCalibratedError(
            f"interval={level:g}: this model holds no interval calibration (it was fitted without interval=, or "
            f"saved before intervals existed). Refit it with st.tl.predict(..., interval={level:g}, return_model=True)."
        )
    if not math.isclose(calibration.level, level):
        raise NotCalibratedError(
            f"interval={level:g}: this model is calibrated for interval={calibration.level:g} only; ask that level, "
            f"or refit with interval={level:g}."
        )
    return calibration


def conformal_rank(n: int, level: float, what: str = "intervals") -> int:
    """The 0-based rank of the split-conformal quantile of ``n`` calibration values at ``level``.

    It is ``ceil((n + 1) · level) - 1``; when that exceeds ``n - 1`` the quantile is infinite and
    :class:`~stmorph.errors.TooFewObservationsError` is raised.

    Examples
    --------
    >>> conformal_rank(99, 0.9)
    89
    """
    rank = math.ceil((n + 1) * level - 1e-9)
    if rank > n:
        need = math.ceil(level / (1 - level) - 1e-9)
        raise TooFewObservationsError(
            f"{what}: {n} calibration spot(s) cannot calibrate a {level:g} interval (it needs at least {need}); "
            "pass more or larger reference sections, or ask a narrower interval."
        )
    return rank - 1


def _conformal_quantile(z: np.ndarray, level: float) -> np.ndarray:
    """Per column, the split-conformal quantile of the values ``z`` at ``level``."""
    rank = conformal_rank(len(z), level)
    return np.partition(z, rank, axis=0)[rank].astype(np.float32)


def _row_step(width: int) -> int:
    return max(1, MAX_ELEMENTS // max(width, 1))


@dataclass
class Calibration:
    """The calibration of a fitted model's intervals (what a saved model keeps).

    Attributes
    ----------
    level
        Nominal coverage of the intervals.
    scale
        The scale chosen (:data:`SCALES`).
    quantile
        ``(n_genes,)`` conformal quantile of the absolute normalised residual.
    low, high
        ``(n_genes,)`` range of the calibration values (the intervals are cut to it).
    bank, spread, floor
        ``"knn"`` scale only: the ``(n_cal, d)`` inputs of the calibration spots, their
        ``(n_cal, n_genes)`` absolute out-of-fold residuals, and the ``(n_genes,)`` floor.
    table
        The cross-validation that chose ``scale`` (plain arrays: ``scale``, ``fold``,
        ``coverage``, ``width``, ``score``), or ``None``.
    """

    level: float
    scale: str
    quantile: np.ndarray
    low: np.ndarray
    high: np.ndarray
    bank: np.ndarray | None = None
    spread: np.ndarray | None = None
    floor: np.ndarray | None = None
    table: dict[str, np.ndarray] | None = None

    @property
    def n_genes(self) -> int:
        return len(self.quantile)

    def scales(self, x: np.ndarray) -> np.ndarray:
        """``(n, n_genes)`` float32 scale of the spots with inputs ``x`` (call on chunks of rows)."""
        if self.scale == "none":
            return np.ones((len(x), self.n_genes), dtype=np.float32)
        return _knn_scale(x, self.bank, self.spread, self.floor)

    def intervals(self, layer: np.ndarray, columns: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds around the predictions ``layer[:, columns]`` of spots with inputs ``x``.

        ``layer`` is the ``(n_obs, n_vars)`` prediction layer; the bounds have its shape and are
        NaN outside ``columns``. Rows are processed in chunks (:data:`MAX_ELEMENTS` values), so
        the only full-size arrays made are the two returned.

        Examples
        --------
        >>> one = lambda v: np.array([v], np.float32)
        >>> cal = Calibration(0.9, "none", quantile=one(2.0), low=one(0.0), high=one(10.0))
        >>> lower, upper = cal.intervals(np.array([[1.0, np.nan], [5.0, np.nan]]), np.array([0]), np.zeros((2, 3)))
        >>> lower.tolist(), upper.tolist()
        ([[0.0, nan], [3.0, nan]], [[3.0, nan], [7.0, nan]])
        """
        columns = np.asarray(columns)
        if len(columns) != self.n_genes:
            raise InvalidParameterError(f"the calibration covers {self.n_genes} genes; {len(columns)} were predicted.")
        lower = np.full(np.shape(layer), np.nan, dtype=np.float32)
        upper = np.full(np.shape(layer), np.nan, dtype=np.float32)
        step = _row_step(max(self.n_genes, 0 if self.bank is None else len(self.bank)))
        for start in range(0, len(lower), step):
            rows = slice(start, start + step)
            half = self.scales(x[rows])
            half *= self.quantile
            pred = np.asarray(layer[rows][:, columns], dtype=np.float32)
            bound = np.subtract(pred, half)
            lower[rows, columns] = np.maximum(bound, self.low, out=bound)
            np.add(pred, half, out=bound)
            upper[rows, columns] = np.minimum(bound, self.high, out=bound)
        return lower, upper

    # ------------------------------------------------------------------------------ save / load
    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store, keys prefixed with :data:`PREFIX`."""
        arrays = {"quantile": self.quantile, "low": self.low, "high": self.high}
        if self.scale == "knn":
            arrays.update(bank=self.bank, spread=self.spread, floor=self.floor)
        return {PREFIX + k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}

    def config(self) -> dict[str, Any]:
        """The plain values to store in the model config."""
        return {"level": self.level, "scale": self.scale}

    @classmethod
    def from_saved(cls, config: dict[str, Any], arrays: dict[str, np.ndarray], n_genes: int, where: Any) -> Calibration:
        """Rebuild from :meth:`config` and :meth:`arrays` (:class:`~stmorph.errors.ModelFileError` if damaged)."""
        from ._arrays import check_array

        level, scale = config.get("level"), config.get("scale")
        if not isinstance(level, float) or not 0 < level < 1 or scale not in SCALES:
            raise ModelFileError(f"{where}: the calibration entry {config!r} is damaged (level in (0, 1), scale).")

        def get(key: str, shape: tuple) -> np.ndarray:
            return check_array(arrays, PREFIX + key, shape, where)

        cal = cls(level, scale, *(get(key, (n_genes,)) for key in ("quantile", "low", "high")))
        if scale == "knn":
            cal.bank = get("bank", (None, None))
            cal.spread = get("spread", (len(cal.bank), n_genes))
            cal.floor = get("floor", (n_genes,))
        return cal


def _knn_scale(x: np.ndarray, bank: np.ndarray, spread: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Mean ``spread`` of the :data:`K_SCALE` rows of ``bank`` nearest (cosine) to each row of ``x``, plus ``floor``."""
    from ._retrieval import retrieve

    return retrieve(x, bank, spread, k=K_SCALE, max_elements=MAX_ELEMENTS) + floor


def _fold_scales(scale: str, x: np.ndarray, spread: np.ndarray, groups: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """The scale of every calibration spot, from a bank without its own group (as a query's bank lacks the query)."""
    out = np.ones(spread.shape, dtype=np.float32)
    if scale == "none":
        return out
    for g in np.unique(groups):
        own = groups == g
        bank, bank_spread = x[~own], spread[~own]
        rows = np.flatnonzero(own)
        step = _row_step(max(len(bank), spread.shape[1]))
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            out[chunk] = _knn_scale(x[chunk], bank, bank_spread, floor)
    return out


def fit_calibration(
    x: np.ndarray, y: np.ndarray, oof: np.ndarray, groups: np.ndarray, level: float, scale: str
) -> Calibration:
    """Calibrate intervals of one ``scale`` on out-of-fold predictions.

    Parameters
    ----------
    x
        ``(n, d)`` model inputs of the calibration spots (used by the ``"knn"`` scale).
    y, oof
        ``(n, n_genes)`` truth and out-of-fold predictions.
    groups
        ``(n,)`` fold of every spot (``oof[i]`` was predicted without ``groups[i]``).
    level
        Nominal coverage.
    scale
        One of :data:`SCALES`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(400, 2)); oof = np.zeros_like(y); x = rng.normal(size=(400, 3))
    >>> cal = fit_calibration(x, y, oof, np.repeat([0, 1], 200), 0.9, "none")
    >>> bool(np.all(np.abs(cal.quantile - 1.645) < 0.2))  # |N(0, 1)| stays below 1.645 90 % of the time
    True
    """
    y = np.asarray(y, dtype=np.float32)
    spread = np.abs(y - np.asarray(oof, dtype=np.float32))
    floor = (FLOOR * spread.mean(axis=0)).astype(np.float32) + np.float32(1e-6)
    quantile = _conformal_quantile(spread / _fold_scales(scale, x, spread, groups, floor), level)
    cal = Calibration(level, scale, quantile, y.min(axis=0), y.max(axis=0))
    if scale == "knn":
        cal.bank, cal.spread, cal.floor = np.asarray(x, dtype=np.float32), spread, floor
    return cal


def interval_scores(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> dict[str, np.ndarray]:
    """Per gene: coverage, mean width and mean interval (Winkler) score, widths and scores divided by the gene's SD.

    The interval score ``(hi - lo) + 2/α · (distance of y outside [lo, hi])`` (Gneiting & Raftery
    2007) is proper: it is smallest for the true quantiles, so a narrow interval that misses
    pays for it.

    Examples
    --------
    >>> y = np.array([[0.0], [2.0]])
    >>> s = interval_scores(y, np.array([[-1.0], [-1.0]]), np.array([[1.0], [1.0]]), 0.5)
    >>> float(s["coverage"][0]), float(s["width"][0]), float(s["score"][0])
    (0.5, 2.0, 4.0)
    """
    sd = np.asarray(y, dtype=np.float64).std(axis=0)
    sd = np.where(sd > 0, sd, np.nan)
    miss = np.maximum(lower - y, 0) + np.maximum(y - upper, 0)
    alpha = 1 - level
    return {
        "coverage": ((y >= lower) & (y <= upper)).mean(axis=0),
        "width": (upper - lower).mean(axis=0) / sd,
        "score": ((upper - lower) + 2 / alpha * miss).mean(axis=0) / sd,
    }


def select_scale(
    x: np.ndarray, y: np.ndarray, oof: np.ndarray, groups: np.ndarray, level: float, scales: Sequence[str]
) -> tuple[str, dict[str, np.ndarray]]:
    """Choose the scale with the lowest mean interval score, calibrating on all groups but one and scoring the other.

    Needs at least three groups (the calibration spots of a fold need a bank outside their own
    group); with fewer, the first of ``scales`` is returned with an empty table.

    Returns
    -------
    The chosen scale and the table, one row per scale × held-out group: ``scale``, ``fold``,
    ``coverage``, ``width`` and ``score`` (means over the genes that vary in that group).
    """
    labels = np.unique(groups)
    rows = []
    if len(labels) >= 3 and len(scales) > 1:
        for scale in scales:
            for g in labels:
                cal, held = groups != g, groups == g
                calibration = fit_calibration(x[cal], y[cal], oof[cal], groups[cal], level, scale)
                lower, upper = calibration.intervals(oof[held], np.arange(oof.shape[1]), x[held])
                scores = interval_scores(y[held], lower, upper, level)
                rows.append((scale, str(g), *(float(np.nanmean(scores[k])) for k in ("coverage", "width", "score"))))
    if not rows:
        return scales[0], {}
    scale, fold, coverage, width, score = (np.asarray(col) for col in zip(*rows))
    table = {"scale": scale.astype(object), "fold": fold.astype(object), "coverage": coverage, "width": width}
    table["score"] = score
    means = [score[scale == s].mean() for s in scales]
    return scales[int(np.argmin(means))], table


def calibrate(
    x: np.ndarray,
    y: np.ndarray,
    oof: np.ndarray,
    groups: np.ndarray,
    level: float,
    *,
    scales: Sequence[str] | None = None,
    select_groups: np.ndarray | None = None,
) -> Calibration:
    """Choose the scale by grouped CV (:func:`select_scale`) and calibrate it on all the out-of-fold predictions.

    Parameters
    ----------
    x, y, oof, groups, level
        As :func:`fit_calibration`. Embedding inputs (2-d ``x``) can use every scale; other
        inputs (image patches) use ``"none"``.
    scales
        Candidates (default :data:`SCALES`).
    select_groups
        Groups of the scale selection when ``groups`` has fewer than three (e.g. spatial blocks
        of two reference sections); default ``groups``.

    Raises
    ------
    TooFewObservationsError
        Fewer than two groups, or too few spots for the level.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 4)); noise = np.exp(x[:, :1])  # the noise grows with the first input
    >>> y = noise * rng.normal(size=(300, 3)); oof = np.zeros_like(y)
    >>> calibrate(x, y, oof, np.repeat([0, 1, 2], 100), 0.8).scale
    'knn'
    """
    level = check_level(level)
    groups = np.asarray(groups)
    if len(np.unique(groups)) < 2:
        raise TooFewObservationsError(
            "intervals need at least 2 calibration folds: several reference sections, or one section with "
            'obsm["spatial"] (split into spatial blocks).'
        )
    x = np.asarray(x)
    candidates = list(SCALES if scales is None else scales)
    if x.ndim != 2:  # image patches: no input space to find neighbours in
        candidates = ["none"]
    conformal_rank(len(y), level)
    chosen_by = groups if select_groups is None or len(np.unique(groups)) >= 3 else np.asarray(select_groups)
    scale, table = select_scale(x, y, oof, chosen_by, level, candidates)
    calibration = fit_calibration(x, y, oof, groups, level, scale)
    calibration.table = table or None
    return calibration


def calibrate_model(
    model: Any,
    X: np.ndarray,
    Y: np.ndarray,
    groups: np.ndarray | None,
    blocks: np.ndarray | None,
    level: float,
    oof: np.ndarray | None = None,
) -> Calibration:
    """Set ``model.calibration`` for ``level`` intervals from its out-of-fold predictions on its training data.

    Parameters
    ----------
    model
        The fitted :class:`~stmorph.models.Predictor`; its out-of-fold twins are new instances with the
        same settings.
    X, Y
        The training inputs and expression the model was fitted on.
    groups
        Fold labels: the reference sections, or the spatial blocks of a single section.
    blocks
        Spatial blocks of the training spots (inner folds; scale selection with two sections).
    level
        Nominal coverage (``interval=``).
    oof
        Out-of-fold predictions already made with these ``groups`` (e.g. by ``method="auto"``'s
        cross-validation); computed with :func:`~stmorph.models._cv.cross_predict` when ``None``.

    Raises
    ------
    TooFewObservationsError
        Fewer than two folds, or too few training spots for ``level``.

    Examples
    --------
    >>> from stmorph.models._baselines import Ridge
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4)); Y = X[:, :2] + rng.normal(size=(300, 2))
    >>> model = Ridge().fit(X, Y)
    >>> calibrate_model(model, X, Y, np.repeat([0, 1, 2], 100), None, 0.9).scale in SCALES
    True
    """
    from ._cv import cross_predict

    level = check_level(level)
    if groups is None or len(np.unique(groups)) < 2:
        raise TooFewObservationsError(
            f"interval={level:g} needs at least 2 calibration folds: several reference sections, or one section "
            'with obsm["spatial"] (split into spatial blocks).'
        )
    conformal_rank(len(Y), level, f"interval={level:g}")
    if oof is None:

        def twin() -> Any:
            return type(model)(random_state=model.random_state, device=model.device, progress=False, **model.params)

        oof, _ = cross_predict(twin, X, Y, groups, blocks)
    model.calibration = calibrate(X, Y, oof, groups, level, select_groups=blocks)
    return model.calibration
