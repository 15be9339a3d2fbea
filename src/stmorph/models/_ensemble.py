"""An ensemble of prediction methods: the z-scored average of its members' predictions.

Two methods that make different errors (untrained retrieval and ridge) average to a better
prediction than either. Each member's predictions of a gene are centred and divided by their
spread on the training spots before averaging, so that each member weighs the same whatever the
scale of its predictions (a kNN mean is much smoother than a ridge fit), and the average is put
back on the members' mean location and scale. With ``n_best``, the members are chosen by grouped
cross-validation inside :meth:`Ensemble.fit`, so an outer cross-validation of the ensemble (that of
``method="auto"``) scores the whole procedure honestly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._logging import logger
from .._validation import InvalidParameterError, ModelFileError, check_int
from ._arrays import check_array
from ._cv import check_groups, fold_scores, folds, hvg_columns
from ._io import ArrayModel
from ._predictor import Predictor, make_method

DEFAULT_MEMBERS = (("knn", {"k": "cv"}), ("ridge", {"alpha": "cv", "standardize": True}))
"""Untrained retrieval and ridge, each with its setting chosen by grouped CV."""


def _member_list(members: Sequence) -> list[tuple[str, dict[str, Any]]]:
    """``(method, options)`` of each member (a method name or a ``(name, options)`` pair), checked."""
    if isinstance(members, str) or not isinstance(members, Sequence) or not members:
        raise InvalidParameterError(
            f"members must be a non-empty list of method names or (name, options) pairs; found {members!r}."
        )
    parsed = []
    for item in members:
        name, options = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        if name == Ensemble.name:
            raise InvalidParameterError("an ensemble cannot be a member of an ensemble.")
        options = _own(options) | _columns(options)
        if make_method(name, _own(options)).input != "embedding":  # unknown names and options raise here
            raise InvalidParameterError(f"ensemble member {name!r} trains on patches; members take embeddings.")
        parsed.append((name, options))
    return parsed


def _own(options: Mapping[str, Any]) -> dict[str, Any]:
    """A member's options for its method (without ``columns``)."""
    return {k: v for k, v in options.items() if k != "columns"}


def _columns(options: Mapping[str, Any]) -> dict[str, int]:
    if options.get("columns") is None:
        return {}
    return {"columns": check_int(options["columns"], "columns", low=1)}


def member_label(name: str, options: Mapping[str, Any]) -> str:
    """``name(key=value, ...)``: how a member or candidate is named in logs and CV tables.

    Examples
    --------
    >>> member_label("knn", {"k": "cv"})
    'knn(k=cv)'
    """
    return name + ("(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else "")


class Ensemble(ArrayModel, Predictor):
    """The z-scored average of several embedding methods' predictions.

    Parameters
    ----------
    members
        Method names or ``(name, options)`` pairs (default: ``knn(k="cv")`` and
        ``ridge(alpha="cv", standardize=True)``). An option ``columns=m`` makes the member read only
        the first ``m`` input columns, e.g. a spot's own embedding without its context.
    n_best
        Keep only the ``n_best`` members whose average has the best mean held-out Pearson over the 50
        most variable genes by grouped CV inside :meth:`fit` (leave one group out; every subset of
        ``n_best`` members is scored from the same fold predictions, so members that err
        differently win over two similar good ones); ``None``: every member.
    **kwargs
        ``random_state``, ``device``, ``progress`` (see :class:`~stmorph.models.Predictor`).

    Attributes
    ----------
    chosen_
        Indices of the members in use (all of them without ``n_best``).
    center_, scale_
        ``(n_chosen, n_genes)`` mean and standard deviation of each member's predictions of each gene
        on the training spots.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(90, 4)); Y = X[:, :2] + 0.1 * rng.normal(size=(90, 2))
    >>> model = Ensemble(members=["ridge", ("knn", {"k": 5})]).fit(X, Y)
    >>> model.predict(X).shape
    (90, 2)
    >>> groups = np.repeat([0, 1, 2], 30)
    >>> best = Ensemble(members=["ridge", ("knn", {"k": 5}), ("knn", {"k": 80})], n_best=2).fit(X, Y, groups)
    >>> len(best.chosen_)
    2
    """

    name = "ensemble"
    validates_on_groups: ClassVar[bool] = True
    """:func:`~stmorph.tl.predict` passes the CV groups to :meth:`fit` (for ``n_best`` and the members' ``"cv"``)."""

    def __init__(self, *, members: Sequence = DEFAULT_MEMBERS, n_best: int | None = None, **kwargs: Any):
        members = _member_list(members)
        if n_best is not None:
            n_best = check_int(n_best, "n_best", low=1, high=len(members))
        super().__init__(members=[[name, options] for name, options in members], n_best=n_best, **kwargs)

    def _member(self, index: int, options: Mapping[str, Any] | None = None) -> Predictor:
        """A new unfitted member ``index`` (with other ``options`` for its method when given)."""
        name, own = self.params["members"][index]
        common = {"random_state": self.random_state, "device": self.device, "progress": False}
        model = make_method(name, _own(own) if options is None else options, **common)
        model.genes = self.genes
        return model

    def _inputs(self, index: int, X: np.ndarray) -> np.ndarray:
        columns = self.params["members"][index][1].get("columns")
        if columns is not None and columns > X.shape[1]:
            raise InvalidParameterError(
                f"ensemble member {index} reads the first {columns} input columns; the inputs have {X.shape[1]}."
            )
        return X if columns is None else X[:, :columns]

    def _settled(self, index: int, X: np.ndarray, Y: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
        """Member ``index``'s options, each ``"cv"`` setting replaced by the value CV over all ``groups`` chooses."""
        options = _own(self.params["members"][index][1])
        if not any(isinstance(v, str) and v == "cv" for v in options.values()):
            return options
        params = self._member(index).fit(self._inputs(index, X), Y, groups=groups).get_params()
        return {k: params[f"{k}_cv"] if isinstance(v, str) and v == "cv" else v for k, v in options.items()}

    def _choose(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None) -> list[int]:
        """Indices of the ``n_best`` members by grouped CV (all members without ``n_best``).

        With two groups the selection folds train on one, too few for a member's own ``"cv"``
        settings: those are then chosen once by CV over both groups. The choice reads only the genes
        its scores read (each group's ``N_HVG`` most variable), so it fits those genes only.
        """
        n_best, n_members = self.params["n_best"], len(self.params["members"])
        if n_best is None or n_best == n_members:
            return list(range(n_members))
        groups = check_groups(groups, len(X), f"an ensemble choosing its n_best={n_best} members")
        scored = np.unique(np.concatenate([hvg_columns(Y[groups == g]) for g in np.unique(groups)]))
        Y = Y[:, scored]
        if len(np.unique(groups)) < 3:
            settled = [self._settled(i, X, Y, groups) for i in range(n_members)]
        else:
            settled = [None] * n_members
        columns = [options.get("columns") for _, options in self.params["members"]]
        subsets = list(combinations(range(n_members), n_best))
        scores = np.zeros(len(subsets))
        for train, test in folds(groups):
            fitted, held_out = [], []
            for i in range(n_members):
                model = FirstColumns(self._member(i, settled[i]), columns[i]).fit(X[train], Y[train], groups[train])
                fitted.append(model.predict(X[train]).astype(np.float64))
                held_out.append(model.predict(X[test]))
            for k, subset in enumerate(subsets):
                centers = np.array([fitted[i].mean(axis=0) for i in subset])
                scales = np.array([fitted[i].std(axis=0) for i in subset])
                scores[k] += fold_scores(Y[test], z_average([held_out[i] for i in subset], centers, scales))[0]
        chosen = list(subsets[int(np.argmax(scores))])
        labels = [member_label(*member) for member in self.params["members"]]
        logger.info("ensemble: members %s chosen by grouped CV of their average", [labels[i] for i in chosen])
        return chosen

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> Ensemble:
        """Choose the members (with ``n_best``), fit each on ``X``, ``Y`` and record its per-gene location and scale.

        ``groups`` are the CV folds (reference sections, or spatial blocks of one section) of the
        training rows, for ``n_best`` and the members' ``"cv"`` settings.
        """
        X, Y = np.asarray(X), np.asarray(Y, dtype=np.float32)
        self.chosen_ = self._choose(X, Y, groups)
        self.members_, centers, scales = [], [], []
        for index in self.chosen_:
            model = self._member(index).fit(self._inputs(index, X), Y, groups=groups)
            fitted = model.predict(self._inputs(index, X)).astype(np.float64)
            self.members_.append(model)
            centers.append(fitted.mean(axis=0))
            scales.append(fitted.std(axis=0))
        self.center_, self.scale_ = np.array(centers), np.array(scales)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        predictions = [model.predict(self._inputs(i, X)) for i, model in zip(self.chosen_, self.members_)]
        return z_average(predictions, self.center_, self.scale_)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["members"] = [member_label(*member) for member in self.params["members"]]
        if hasattr(self, "chosen_"):
            params["chosen"] = [params["members"][i] for i in self.chosen_]
        return params

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"center": self.center_, "scale": self.scale_}
        for j, model in enumerate(self.members_):
            if not isinstance(model, ArrayModel):
                raise ModelFileError(f"ensemble member {model.name!r} cannot be saved inside an ensemble.")
            arrays.update({f"member{j}.{k}": v for k, v in model._fitted_arrays().items()})
        return arrays

    def _fitted_config(self) -> dict[str, Any]:
        return {"chosen": self.chosen_, "members": [model._fitted_config() for model in self.members_]}

    def _restore_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any], where: Path) -> None:
        chosen, configs = fitted.get("chosen"), fitted.get("members")
        if not isinstance(chosen, list) or not isinstance(configs, list) or len(chosen) != len(configs):
            raise ModelFileError(f"{where}: the config lacks the ensemble's chosen members.")
        self.chosen_ = [int(i) for i in chosen]
        self.center_ = check_array(arrays, "center", (len(chosen), len(self.genes)), where)
        self.scale_ = check_array(arrays, "scale", (len(chosen), len(self.genes)), where)
        self.members_ = []
        for j, (index, config) in enumerate(zip(self.chosen_, configs)):
            model = self._member(index)
            prefix = f"member{j}."
            model._restore_arrays(
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}, config, where
            )
            self.members_.append(model)


def z_average(predictions: Sequence[np.ndarray], centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The z-scored average of ``predictions`` (per-gene ``centers``, ``scales`` of each) on their mean location/scale.

    Examples
    --------
    >>> z_average([np.array([[0.0], [2.0]]), np.array([[10.0], [30.0]])], np.array([[1.0], [20.0]]),
    ...           np.array([[1.0], [10.0]])).ravel().tolist()
    [5.0, 16.0]
    """
    safe = np.where(scales > 0, scales, 1.0)
    z = sum((p - c) / s for p, c, s in zip(predictions, centers, safe)) / len(predictions)
    return (z * scales.mean(axis=0) + centers.mean(axis=0)).astype(np.float32)


class FirstColumns:
    """A model fitted and applied on the first ``columns`` inputs only (all with ``None``), e.g. a spot's own
    embedding when the inputs also hold its context; what :func:`~stmorph.models._cv.cross_validate` fits."""

    def __init__(self, model: Predictor, columns: int | None):
        self.model, self.columns = model, columns

    def _cut(self, X: np.ndarray) -> np.ndarray:
        return X if self.columns is None else X[:, : self.columns]

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> FirstColumns:
        self.model.fit(self._cut(X), Y, groups=groups)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(self._cut(X))
