"""Regression baselines of the EPS paper on image embeddings: linear, ridge (α=1), LightGBM (one model per gene).

The MLP baseline is torch code and lives in :mod:`stmorph.models._mlp`.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._logging import logger
from .._validation import check_int, check_range
from ._predictor import Predictor


class _SklearnRegressor(Predictor):
    """A multi-output scikit-learn regressor fitted on all genes at once."""

    def _estimator(self) -> Any:
        raise NotImplementedError

    def fit(self, X: np.ndarray, Y: np.ndarray) -> _SklearnRegressor:
        self.estimator_ = self._estimator().fit(X, Y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator_.predict(X), dtype=np.float32).reshape(len(X), -1)


class Linear(_SklearnRegressor):
    """Ordinary least squares (:class:`sklearn.linear_model.LinearRegression`) on the embeddings.

    With more embedding dimensions than training spots the fit is the minimum-norm solution and
    interpolates the training data; use ``"ridge"`` there.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3)); Y = X @ np.ones((3, 2))
    >>> np.allclose(Linear().fit(X, Y).predict(X), Y, atol=1e-5)
    True
    """

    name = "linear"

    def _estimator(self) -> Any:
        from sklearn.linear_model import LinearRegression

        return LinearRegression()


class Ridge(_SklearnRegressor):
    """Ridge regression (:class:`sklearn.linear_model.Ridge`), α=1 as in the EPS paper.

    Parameters
    ----------
    alpha
        L2 penalty.
    **kwargs
        ``random_state``, ``device``, ``progress`` (see :class:`~stmorph.models.Predictor`).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3)); Y = X @ np.ones((3, 2))
    >>> Ridge(alpha=1.0).fit(X, Y).predict(X).shape
    (50, 2)
    """

    name = "ridge"

    def __init__(self, *, alpha: float = 1.0, **kwargs: Any):
        check_range(alpha, "alpha", low=0.0, inclusive=True)
        super().__init__(alpha=float(alpha), **kwargs)

    def _estimator(self) -> Any:
        from sklearn.linear_model import Ridge as SkRidge

        return SkRidge(alpha=self.params["alpha"])


def _default_n_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class LightGBM(Predictor):
    """Gradient-boosted trees, one LightGBM model per gene (100 trees each, as in the EPS paper).

    Genes are fitted in parallel threads (LightGBM releases the GIL), each model single-threaded.
    Every thread bins the embeddings once and reuses that binned dataset for all its genes, so
    the per-gene cost is the boosting alone.

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
        **kwargs: Any,
    ):
        check_int(n_estimators, "n_estimators", low=1)
        check_range(learning_rate, "learning_rate", low=0.0)
        check_int(num_leaves, "num_leaves", low=2)
        check_int(max_bin, "max_bin", low=2)
        n_jobs = _default_n_jobs() if n_jobs is None else n_jobs
        check_int(n_jobs, "n_jobs", low=1)
        super().__init__(
            n_estimators=int(n_estimators),
            learning_rate=float(learning_rate),
            num_leaves=int(num_leaves),
            max_bin=int(max_bin),
            n_jobs=int(n_jobs),
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

    def fit(self, X: np.ndarray, Y: np.ndarray) -> LightGBM:
        import lightgbm as lgb

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

        logger.info("lightgbm: fitting %d genes with %d threads", Y.shape[1], self.params["n_jobs"])
        self.boosters_ = self._map_genes(fit_gene, Y.shape[1], "lightgbm genes")
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        columns = self._map_genes(
            lambda g: self.boosters_[g].predict(X, num_threads=1), len(self.boosters_), "lightgbm predict"
        )
        return np.stack(columns, axis=1).astype(np.float32) if columns else np.empty((len(X), 0), np.float32)
