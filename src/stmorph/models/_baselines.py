"""Baselines on image embeddings: the EPS paper's linear, ridge (α=1) and LightGBM, and untrained retrieval (knn).

Ridge and knn can standardise the features and reduce them with PCA (:class:`FeatureTransform`),
and choose ``alpha``/``k`` by grouped cross-validation (``"cv"``, :mod:`stmorph.models._cv`).
The MLP baseline is torch code and lives in :mod:`stmorph.models._mlp`.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import format_duration, logger
from .._optional import import_optional
from .._validation import InvalidParameterError, ModelFileError, check_choice, check_int, check_range
from ._arrays import check_array
from ._cv import ALPHA_GRID, K_GRID, grid_search
from ._io import ArrayModel
from ._predictor import Predictor

CV = "cv"
"""Value of ``alpha=`` (ridge) or ``k=`` (knn) that chooses it by grouped cross-validation."""


class FeatureTransform:
    """Per-column standardisation and optional PCA, fitted on the training embeddings only.

    Parameters
    ----------
    standardize
        Z-score every column with the training mean and standard deviation (constant columns
        are only centred).
    n_pcs
        Keep this many principal components of the (standardised) training features
        (clipped to ``min(n, d)``); ``None`` keeps all columns.

    Examples
    --------
    >>> X = np.array([[0.0, 10.0], [2.0, 30.0]])
    >>> FeatureTransform(standardize=True).fit(X).transform(X)
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    """

    def __init__(self, standardize: bool = False, n_pcs: int | None = None):
        self.standardize = bool(standardize)
        self.n_pcs = n_pcs

    def fit(self, X: np.ndarray) -> FeatureTransform:
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0) if self.standardize or self.n_pcs else np.zeros(X.shape[1])
        std = X.std(axis=0) if self.standardize else np.ones(X.shape[1])
        self.scale_ = np.where(std > 0, std, 1.0)
        self.components_ = None
        if self.n_pcs is not None:
            _, _, vt = np.linalg.svd((X - self.mean_) / self.scale_, full_matrices=False)
            self.components_ = vt[: min(self.n_pcs, len(vt))].T
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return (Z if self.components_ is None else Z @ self.components_).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted statistics, keyed ``features.*`` (for saving)."""
        arrays = {"features.mean": self.mean_, "features.scale": self.scale_}
        return arrays if self.components_ is None else {**arrays, "features.components": self.components_}

    def restore(self, arrays: dict[str, np.ndarray], where: Path) -> FeatureTransform:
        """Set the fitted statistics from :meth:`to_arrays`' output."""
        self.mean_ = check_array(arrays, "features.mean", (None,), where)
        self.scale_ = check_array(arrays, "features.scale", (len(self.mean_),), where)
        self.components_ = None
        if self.n_pcs is not None:
            self.components_ = check_array(arrays, "features.components", (len(self.mean_), None), where)
        return self


def _check_features(standardize: bool, n_pcs: int | None) -> dict[str, Any]:
    if n_pcs is not None:
        check_range(n_pcs, "n_pcs", low=1, inclusive=True)
    return {"standardize": bool(standardize), **({} if n_pcs is None else {"n_pcs": int(n_pcs)})}


class _TunedPredictor(ArrayModel, Predictor):
    """A predictor with a feature transform and one setting (``tuned``) that ``"cv"`` chooses from ``grid``.

    Subclasses implement :meth:`_fit_value` (fit with one value of the setting on transformed
    features) and :meth:`_predict_grid` (predictions of held-out rows for every grid value).
    """

    tuned: str
    grid: tuple

    def _features(self) -> FeatureTransform:
        return FeatureTransform(self.params["standardize"], self.params.get("n_pcs"))

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> _TunedPredictor:
        """Fit on ``X``, ``Y``; with the setting ``"cv"``, choose it first by CV over ``groups`` (one label per row)."""
        self.features_ = self._features().fit(X)
        Z, Y = self.features_.transform(X), np.asarray(Y, dtype=np.float32)
        value = self.params[self.tuned]
        if value == CV:
            self.cv_scores_, value = grid_search(
                self.grid,
                lambda train, test, columns: self._predict_grid(Z[train], Y[np.ix_(train, columns)], Z[test]),
                Y,
                groups,
                self.tuned,
            )
            logger.info("%s: %s=%s chosen by %d-fold grouped CV", self.name, self.tuned, value, len(np.unique(groups)))
        self.value_ = value
        self._fit_value(Z, Y, value)
        return self

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if hasattr(self, "value_") and params[self.tuned] == CV:
            params[f"{self.tuned}_cv"] = self.value_
        return params

    def _fitted_config(self) -> dict[str, Any]:
        return {"value": self.value_}

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {**self.features_.to_arrays(), **self._state()}

    def _restore_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any], where: Path) -> None:
        if "value" not in fitted:
            raise ModelFileError(f"{where}: the config lacks the fitted {self.tuned}.")
        self.value_ = fitted["value"]
        self.features_ = self._features().restore(arrays, where)
        self._set_state(arrays, where)

    def _state(self) -> dict[str, np.ndarray]:
        """The fitted arrays beyond the feature transform."""
        raise NotImplementedError

    def _set_state(self, arrays: dict[str, np.ndarray], where: Path) -> None:
        raise NotImplementedError

    def _fit_value(self, Z: np.ndarray, Y: np.ndarray, value: Any) -> None:
        raise NotImplementedError

    def _predict_grid(self, Z: np.ndarray, Y: np.ndarray, Z_test: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


class Linear(ArrayModel, Predictor):
    """Ordinary least squares with an intercept on the embeddings (as :class:`sklearn.linear_model.LinearRegression`).

    With more embedding dimensions than training spots the fit is the minimum-norm solution and
    interpolates the training data; use ``"ridge"`` there. Solved through one eigendecomposition
    of the centred Gram matrix (:func:`ridge_solution` with ``alpha=0``): on 732 spots × 1,280
    dimensions × 3,000 genes it matches LinearRegression's least-squares solver to 4e-7 and is
    ~10× faster (docs/benchmarks.md).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3)); Y = X @ np.ones((3, 2))
    >>> np.allclose(Linear().fit(X, Y).predict(X), Y, atol=1e-5)
    True
    """

    name = "linear"

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> Linear:
        self.coef_, self.intercept_ = ridge_solution(X, np.reshape(Y, (len(Y), -1)), 0.0)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_).astype(np.float32)

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_}

    def _restore_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any], where: Path) -> None:
        self.coef_, self.intercept_ = _linear_state(arrays, len(self.genes), where)


def _linear_state(arrays: dict[str, np.ndarray], n_genes: int, where: Path) -> tuple[np.ndarray, np.ndarray]:
    """Saved ``coef`` ``(d, n_genes)`` and ``intercept`` ``(n_genes,)``, checked against the genes."""
    return check_array(arrays, "coef", (None, n_genes), where), check_array(arrays, "intercept", (n_genes,), where)


def _ridge_basis(Z: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centred ridge in an eigenbasis: ``coef(α) = left · diag(1/(w+α)) · right`` for every α at once.

    One symmetric eigendecomposition of the smaller Gram matrix of the centred features (the
    ``n × n`` kernel when there are fewer spots than dimensions, else the ``d × d`` covariance)
    serves every penalty; it is much cheaper than an SVD of ``Z`` and exact.

    Returns
    -------
    ``left`` ``(d, r)``, the eigenvalues ``w`` ``(r,)`` (clipped at 0), ``right`` ``(r, n_genes)``
    and ``(z_mean, y_mean)``, the column means of ``Z`` and ``Y``.
    """
    Z, Y = np.asarray(Z, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    z_mean, y_mean = Z.mean(axis=0), Y.mean(axis=0)
    zc, yc = Z - z_mean, Y - y_mean
    if len(zc) <= zc.shape[1]:
        w, u = np.linalg.eigh(zc @ zc.T)
        left, right = zc.T @ u, u.T @ yc
    else:
        w, v = np.linalg.eigh(zc.T @ zc)
        left, right = v, v.T @ (zc.T @ yc)
    return left, np.clip(w, 0.0, None), right, (z_mean, y_mean)


def _ridge_path(Z: np.ndarray, Y: np.ndarray, Z_test: np.ndarray, alphas) -> list[np.ndarray]:
    """Ridge predictions (with intercept) of ``Z_test`` for every α, from one eigendecomposition."""
    left, w, right, (z_mean, y_mean) = _ridge_basis(Z, Y)
    projected = (np.asarray(Z_test, dtype=np.float64) - z_mean) @ left
    return [(projected / (w + a)) @ right + y_mean for a in alphas]


def ridge_solution(Z: np.ndarray, Y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients ``(d, n_genes)`` and intercept ``(n_genes,)`` of ridge regression with penalty ``alpha``.

    Minimises ``‖Y − Z·coef − intercept‖² + alpha·‖coef‖²`` (intercept not penalised), as
    :class:`sklearn.linear_model.Ridge`.

    Examples
    --------
    >>> Z = np.array([[0.0], [1.0], [2.0]]); Y = np.array([[1.0], [3.0], [5.0]])
    >>> coef, intercept = ridge_solution(Z, Y, 0.0)
    >>> np.round(coef, 6).tolist(), np.round(intercept, 6).tolist()
    ([[2.0]], [1.0])
    """
    left, w, right, (z_mean, y_mean) = _ridge_basis(Z, Y)
    if alpha == 0:  # least squares: the pseudo-inverse on the non-null eigenvalues
        inverse = np.divide(1.0, w, out=np.zeros_like(w), where=w > w.max(initial=0.0) * 1e-12)
    else:
        inverse = 1.0 / (w + alpha)
    coef = (left * inverse) @ right
    return coef, y_mean - z_mean @ coef


class Ridge(_TunedPredictor):
    """Ridge regression on the embeddings, α=1 as in the EPS paper, or α chosen by grouped CV.

    Parameters
    ----------
    alpha
        L2 penalty (EPS paper: 1.0), or ``"cv"``: the α of ``ALPHA_GRID`` (10⁻² … 10⁶) with the best
        mean held-out Pearson over the 50 most variable genes, by grouped CV (leave one
        reference section out; spatial blocks within one section; see :mod:`stmorph.models._cv`).
    standardize
        Z-score each embedding column on the training spots first (off in the EPS paper).
    n_pcs
        Reduce the (standardised) embeddings to this many principal components first
        (HEST-Benchmark's probe uses 256); ``None``: no PCA.
    **kwargs
        ``random_state``, ``device``, ``progress`` (see :class:`~stmorph.models.Predictor`).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3)); Y = X @ np.ones((3, 2))
    >>> Ridge(alpha=1.0).fit(X, Y).predict(X).shape
    (50, 2)
    >>> groups = np.repeat([0, 1, 2], [17, 17, 16])
    >>> Ridge(alpha="cv").fit(X, Y, groups=groups).value_ < 1
    True
    """

    name = "ridge"
    tuned = "alpha"
    grid = ALPHA_GRID

    def __init__(self, *, alpha: float | str = 1.0, standardize: bool = False, n_pcs: int | None = None, **kwargs):
        if alpha != CV:
            check_range(alpha, "alpha", low=0.0, inclusive=True)
            alpha = float(alpha)
        super().__init__(alpha=alpha, **_check_features(standardize, n_pcs), **kwargs)

    def _fit_value(self, Z: np.ndarray, Y: np.ndarray, value: float) -> None:
        self.coef_, self.intercept_ = ridge_solution(Z, Y, value)

    def _state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_}

    def _set_state(self, arrays: dict[str, np.ndarray], where: Path) -> None:
        self.coef_, self.intercept_ = _linear_state(arrays, len(self.genes), where)

    def _predict_grid(self, Z: np.ndarray, Y: np.ndarray, Z_test: np.ndarray) -> list[np.ndarray]:
        return _ridge_path(Z, Y, Z_test, self.grid)

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.features_.transform(X).astype(np.float64) @ self.coef_ + self.intercept_
        return out.astype(np.float32)


class KNN(_TunedPredictor):
    """Untrained retrieval: the mean expression of the ``k`` reference spots nearest (cosine) to each query spot.

    BLEEP's and HECLIP's inference step without their training, on any embedding: the baseline a
    trained retrieval model must beat. The search is :func:`~stmorph.models._retrieval.retrieve`.

    Parameters
    ----------
    k
        Number of neighbours (50, as BLEEP), or ``"cv"``: the ``k`` of ``K_GRID`` chosen by grouped CV
        (as for :class:`Ridge`).
    aggregation
        ``"mean"`` or ``"weighted"`` (BLEEP's weights ``exp(-‖s - q‖²)``, normalised, on the
        transformed features).
    standardize, n_pcs
        Feature transform before the search (see :class:`Ridge`); off by default.
    **kwargs
        ``random_state``, ``device``, ``progress`` (see :class:`~stmorph.models.Predictor`).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]); Y = np.array([[1.0], [3.0], [10.0]])
    >>> KNN(k=2).fit(X, Y).predict(np.array([[1.0, 0.05]]))
    array([[2.]], dtype=float32)
    """

    name = "knn"
    tuned = "k"
    grid = K_GRID

    def __init__(
        self,
        *,
        k: int | str = 50,
        aggregation: str = "mean",
        standardize: bool = False,
        n_pcs: int | None = None,
        **kwargs: Any,
    ):
        if k != CV:
            check_range(k, "k", low=1, inclusive=True)
            k = int(k)
        from ._retrieval import AGGREGATIONS

        check_choice(aggregation, AGGREGATIONS, "aggregation")
        super().__init__(k=k, aggregation=aggregation, **_check_features(standardize, n_pcs), **kwargs)

    def _retrieve(self, Z_test: np.ndarray, Z: np.ndarray, Y: np.ndarray, k: int) -> np.ndarray:
        from ._retrieval import retrieve

        return retrieve(Z_test, Z, Y, k=k, aggregation=self.params["aggregation"], progress=self.progress)

    def _fit_value(self, Z: np.ndarray, Y: np.ndarray, value: int) -> None:
        self.reference_, self.reference_expression_ = Z, Y

    def _state(self) -> dict[str, np.ndarray]:
        return {"reference": self.reference_, "reference_expression": self.reference_expression_}

    def _set_state(self, arrays: dict[str, np.ndarray], where: Path) -> None:
        self.reference_expression_ = check_array(arrays, "reference_expression", (None, len(self.genes)), where)
        self.reference_ = check_array(arrays, "reference", (len(self.reference_expression_), None), where)

    def _predict_grid(self, Z: np.ndarray, Y: np.ndarray, Z_test: np.ndarray) -> list[np.ndarray]:
        from ._retrieval import retrieve_grid

        return retrieve_grid(Z_test, Z, Y, ks=self.grid, aggregation=self.params["aggregation"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._retrieve(self.features_.transform(X), self.reference_, self.reference_expression_, self.value_)


def _lightgbm() -> Any:
    """The ``lightgbm`` module, an optional dependency (``pip install "stmorph[lightgbm]"``)."""
    return import_optional("lightgbm", package="lightgbm", extra="lightgbm", needed_for='method="lightgbm"')


def _default_n_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


LIGHTGBM_MAX_GENES = 1000
"""Genes LightGBM fits unless ``max_genes=None``; the cost on HER2ST sections is in docs/benchmarks.md."""
N_TIMED_GENES = 4
"""Genes fitted to estimate the cost of a refused LightGBM fit."""


class LightGBM(ArrayModel, Predictor):
    """Gradient-boosted trees, one LightGBM model per gene (100 trees each, as in the EPS paper).

    Genes are fitted in parallel threads (LightGBM releases the GIL), each model single-threaded.
    Every thread bins the embeddings once and reuses that binned dataset for all its genes, so
    the per-gene cost is the boosting alone. Needs the optional ``lightgbm`` package
    (``pip install "stmorph[lightgbm]"``); without it the model cannot be built
    (:class:`~stmorph.errors.MissingDependencyError`).

    Parameters
    ----------
    n_estimators
        Trees per gene.
    learning_rate, num_leaves
        LightGBM settings (its defaults).
    max_bin
        Histogram bins per embedding dimension (LightGBM's default 255, as the published code).
        The cost of a tree grows with it: ``max_bin=63`` fits ~2.5× faster on 1024-d embeddings
        (docs/benchmarks.md) at a small loss of split resolution.
    n_jobs
        Number of genes fitted at the same time (default: CPU count, at most 8).
    max_genes
        Refuse to fit more genes than this (default 1000) before any long wait: the error gives the
        time all of them would take, measured on a few genes, and how to fit fewer
        (``genes=st.tl.reference_hvgs(reference)``). ``None`` fits every gene (100 trees each:
        about 15 minutes for the ~14,500 genes of a HER2ST section on 2 cores).
    **kwargs
        ``random_state``, ``device``, ``progress`` (see :class:`~stmorph.models.Predictor`).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(60, 3)); Y = np.c_[X[:, 0], X[:, 1] ** 2]
    >>> LightGBM(n_estimators=10, progress=False).fit(X, Y).predict(X).shape
    (60, 2)
    """

    name = "lightgbm"

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 31,
        max_bin: int = 255,
        n_jobs: int | None = None,
        max_genes: int | None = LIGHTGBM_MAX_GENES,
        **kwargs: Any,
    ):
        check_int(n_estimators, "n_estimators", low=1)
        if max_genes is not None:
            check_int(max_genes, "max_genes", low=1)
        check_range(learning_rate, "learning_rate", low=0.0)
        check_int(num_leaves, "num_leaves", low=2)
        check_int(max_bin, "max_bin", low=2)
        n_jobs = _default_n_jobs() if n_jobs is None else n_jobs
        check_int(n_jobs, "n_jobs", low=1)
        _lightgbm()  # a missing package fails here, before any work
        super().__init__(
            n_estimators=int(n_estimators),
            learning_rate=float(learning_rate),
            num_leaves=int(num_leaves),
            max_bin=int(max_bin),
            n_jobs=int(n_jobs),
            max_genes=None if max_genes is None else int(max_genes),
            **kwargs,
        )

    def _booster_params(self) -> dict[str, Any]:
        return {
            "objective": "regression",
            "learning_rate": self.params["learning_rate"],
            "num_leaves": self.params["num_leaves"],
            "max_bin": self.params["max_bin"],
            "num_threads": 1,
            "seed": self.random_state,
            "deterministic": True,
            "verbosity": -1,
        }

    def _map_genes(self, fn, n_genes: int, desc: str) -> list:
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=self.params["n_jobs"]) as pool:
            results = pool.map(fn, range(n_genes))
            return list(tqdm(results, total=n_genes, desc=desc, disable=not self.progress, leave=False))

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> LightGBM:
        lgb = _lightgbm()
        params = self._booster_params()
        X = np.ascontiguousarray(X, dtype=np.float32)
        Y = np.asfortranarray(Y, dtype=np.float32)  # contiguous gene columns
        local = threading.local()

        def fit_gene(g: int):
            if not hasattr(local, "data"):  # bin X once per thread, then only swap the label
                local.data = lgb.Dataset(X, label=Y[:, g], params=params, free_raw_data=False).construct()
            else:
                local.data.set_label(Y[:, g])
            return lgb.train(params, local.data, num_boost_round=self.params["n_estimators"]).free_dataset()

        limit = self.params["max_genes"]
        if limit is not None and Y.shape[1] > limit:
            self._refuse(fit_gene, Y.shape[1], limit)
        logger.info("lightgbm: fitting %d genes with %d threads", Y.shape[1], self.params["n_jobs"])
        self.boosters_ = self._map_genes(fit_gene, Y.shape[1], "lightgbm genes")
        return self

    def _refuse(self, fit_gene, n_genes: int, limit: int) -> None:
        """Raise :class:`InvalidParameterError` with the time ``n_genes`` would take, timed on a few genes."""
        n_timed = min(N_TIMED_GENES, n_genes)
        start = time.perf_counter()
        for g in range(n_timed):
            fit_gene(g)
        per_gene = (time.perf_counter() - start) / n_timed
        n_jobs = self.params["n_jobs"]
        raise InvalidParameterError(
            f"lightgbm fits {self.params['n_estimators']} trees per gene: {n_genes} genes would take about "
            f"{format_duration(per_gene * n_genes / n_jobs)} here ({per_gene:.2g} s per gene, measured on {n_timed}, "
            f"{n_jobs} at a time), more than max_genes={limit} allows. Predict fewer genes, e.g. "
            "genes=st.tl.reference_hvgs(reference) (each reference's most variable), and/or max_bin=63 (~2.5× "
            "faster); or pass max_genes=None to fit all of them."
        )

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        """Each gene's booster as LightGBM's own text model (UTF-8 bytes): plain data, no code."""
        text = [booster.model_to_string().encode() for booster in self.boosters_]
        return {f"booster.{g}": np.frombuffer(model, np.uint8) for g, model in enumerate(text)}

    def _restore_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any], where: Path) -> None:
        lgb = _lightgbm()
        self.boosters_ = [
            lgb.Booster(model_str=check_array(arrays, f"booster.{g}", (None,), where).tobytes().decode())
            for g in range(len(self.genes))
        ]

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        columns = self._map_genes(
            lambda g: self.boosters_[g].predict(X, num_threads=1), len(self.boosters_), "lightgbm predict"
        )
        return np.stack(columns, axis=1).astype(np.float32) if columns else np.empty((len(X), 0), np.float32)
