"""The :class:`Predictor` base class and the prediction-method registry behind :func:`stmorph.tl.predict`.

A method is a :class:`Predictor` subclass. The built-in ones are registered by an import path
(``"module:Class"``) so that torch/lightgbm are only imported when that method is used.
"""

from __future__ import annotations

import importlib
import inspect
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._validation import InvalidParameterError, check_bool, check_choice, check_device, check_seed

if TYPE_CHECKING:
    from ._conformal import Calibration


class Predictor:
    """Base class of every prediction method.

    Subclasses set :attr:`name` and :attr:`input` and implement :meth:`fit` and :meth:`predict`.
    ``X`` is ``(n, d)`` float embeddings when ``input == "embedding"`` and ``(n, P, P, 3)`` uint8
    patches when ``input == "patches"``; ``Y`` is ``(n, n_genes)`` float32 expression; ``groups``
    (or ``None``) labels the training spots' sections (or spatial blocks of one section), for the
    methods that cross-validate or validate on whole groups; the others ignore it.

    Parameters
    ----------
    random_state
        Seed of everything random in fitting.
    device
        Torch device for torch-based methods (``"auto"``: CUDA when available).
    progress
        Show progress bars while fitting.
    **params
        Method settings (defaults are the papers').

    Attributes
    ----------
    genes
        Names of the predicted genes, in column order (set by :meth:`train`).
    history
        Training curves of torch models: ``{"loss": [...], "val_loss": [...]}``.
    training
        What :meth:`train` recorded about the fit: how a slice's spots become inputs (``use_rep``,
        ``layer``, the standardisation of several keys), ``input_shape``, ``n_train`` and
        ``train_time_s``, so a fitted model can check and prepare a new slice's inputs.
    calibration
        The calibration of its prediction intervals (``interval=`` of :func:`stmorph.tl.predict`),
        or ``None``; ``save`` stores it and :func:`stmorph.models.load` restores it.
    """

    name: ClassVar[str] = "base"
    input: str = "embedding"
    resumable: ClassVar[bool] = False
    """Whether :meth:`fit` trains over epochs and can save and resume its state (the torch models)."""
    uses_sections: ClassVar[bool] = False
    """Whether :meth:`fit` takes ``sections=`` (the reference section of each row; BLEEP's and HECLIP's
    per-section gene selection). ``groups`` cannot serve: with one reference they are its spatial blocks."""

    def __init__(self, *, random_state: int = 0, device: str = "auto", progress: bool = True, **params: Any):
        self.random_state = check_seed(random_state)
        self.device = check_device(device)
        self.progress = check_bool(progress, "progress")
        self.params = params
        self.genes: list[str] = []
        self.history: dict[str, list[float]] = {}
        self.training: dict[str, Any] = {}
        self.calibration: Calibration | None = None
        self._checkpoint: Path | None = None
        self._resume = False

    def set_checkpoint(self, folder: str | os.PathLike | None, resume: bool = False) -> None:
        """Save the training state in ``folder`` after every epoch; with ``resume``, continue from it.

        Parameters
        ----------
        folder
            Folder of the training state (``train_state.pt``: tensors and plain values only).
        resume
            Continue an interrupted :meth:`fit` from the last finished epoch; the result equals an
            uninterrupted run with the same seed.

        Raises
        ------
        InvalidParameterError
            The method does not train over epochs, or ``resume`` is asked without a folder.
        """
        if not self.resumable:
            raise InvalidParameterError(
                f"method {self.name!r} is fitted in one step and keeps no training checkpoint; "
                "checkpoint= and resume= apply to the torch models (mlp, bleep, heclip, stnet)."
            )
        if resume and folder is None:
            raise InvalidParameterError("resume=True needs checkpoint=, the folder of the interrupted run.")
        self._checkpoint = None if folder is None else Path(folder)
        self._resume = bool(resume)

    def _train_options(self, X: np.ndarray, Y: np.ndarray) -> dict[str, Any]:
        """The checkpoint options of :func:`stmorph.models._train.train`, with the fingerprint of this fit.

        The fingerprint (content hashes of the training inputs ``X``, expression ``Y`` and genes, and
        every setting) is only computed when a checkpoint is kept.
        """
        if self._checkpoint is None:
            return {"checkpoint": None, "resume": False}
        import json

        from .._fingerprint import hash_arrays, hash_value

        print_ = {"method": self.name, "random_state": self.random_state}
        print_.update(json.loads(json.dumps(self.params, default=str)))  # plain values: read back weights_only
        print_.update(inputs_blake2b=hash_arrays(X), expression_blake2b=hash_arrays(Y))
        print_["genes_blake2b"] = hash_value([str(g) for g in self.genes])
        return {"checkpoint": self._checkpoint, "resume": self._resume, "fingerprint": print_}

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> Predictor:
        """Fit on inputs ``X`` and expression ``Y`` (``groups``: a label per row, or ``None``); returns ``self``."""
        raise NotImplementedError

    def train(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        *,
        genes: list[str],
        groups: np.ndarray | None = None,
        sections: np.ndarray | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> Predictor:
        """:meth:`fit`, then keep what applying the model to another slice needs.

        Parameters
        ----------
        X, Y, groups
            As for :meth:`fit`.
        genes
            Names of ``Y``'s columns (set before fitting: a training checkpoint records them).
        sections
            The reference section of each row (``None``: one section), passed to the methods
            whose ``fit`` takes it (:attr:`uses_sections`).
        inputs
            How a slice's spots became ``X`` (``use_rep``, ``layer``, standardisation), kept in
            :attr:`training` with ``input_shape``, ``n_train`` and ``train_time_s``.

        Returns
        -------
        ``self``.
        """
        if len(genes) != np.shape(Y)[1]:
            raise InvalidParameterError(f"{len(genes)} gene names for {np.shape(Y)[1]} expression columns.")
        self.genes = [str(g) for g in genes]
        start = time.perf_counter()
        self.fit(X, Y, groups=groups, **({"sections": sections} if self.uses_sections else {}))
        self.training = {
            **dict(inputs or {}),
            "input_shape": tuple(int(s) for s in np.shape(X)[1:]),
            "n_train": len(X),
            "train_time_s": time.perf_counter() - start,
        }
        return self

    @property
    def is_trained(self) -> bool:
        """Whether :meth:`train` (or :func:`stmorph.models.load`) gave this model its genes and inputs."""
        return bool(self.genes) and "input_shape" in self.training

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict ``(n, n_genes)`` float32 expression for inputs ``X``."""
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """Settings as a plain, h5ad-serialisable dict."""
        return {"method": self.name, "input": self.input, "random_state": self.random_state, **self.params}


_REGISTRY: dict[str, str | type[Predictor]] = {
    "linear": "stmorph.models._baselines:Linear",
    "ridge": "stmorph.models._baselines:Ridge",
    "knn": "stmorph.models._baselines:KNN",
    "ensemble": "stmorph.models._ensemble:Ensemble",
    "lightgbm": "stmorph.models._baselines:LightGBM",
    "mlp": "stmorph.models._mlp:MLP",
    "bleep": "stmorph.models._contrastive:BLEEP",
    "heclip": "stmorph.models._contrastive:HECLIP",
    "stnet": "stmorph.models._stnet:STNet",
}


def register_method(name: str, target: str | type[Predictor]) -> None:
    """Register a prediction method for :func:`stmorph.tl.predict` (``method=name``).

    A method is a :class:`~stmorph.models.Predictor` subclass: set ``name`` and ``input``
    (``"embedding"``: ``(n, d)`` float embeddings from ``obsm[use_rep]``; ``"patches"``:
    ``(n, P, P, 3)`` uint8 patches), implement ``fit(X, Y, groups=None)`` (returns ``self``;
    ``groups`` labels the reference sections, use or ignore it) and ``predict(X)``
    (``(n, n_genes)`` expression). Options of ``__init__`` become keyword options of
    :func:`~stmorph.tl.predict`; registering an existing name replaces that method.

    Parameters
    ----------
    name
        Name users pass as ``method=``.
    target
        A :class:`~stmorph.models.Predictor` subclass, or its import path ``"package.module:Class"``
        (imported on first use, so a heavy dependency is only loaded when the method is used).

    Raises
    ------
    InvalidParameterError
        ``name`` is not a non-empty string, ``target`` is neither a Predictor subclass nor a
        ``"module:Class"`` path, or its ``fit`` does not take ``groups`` (checked when the class
        is first used, for import paths).

    Examples
    --------
    >>> import numpy as np, stmorph as st
    >>> class Mean(st.models.Predictor):
    ...     name = "mean"
    ...     def fit(self, X, Y, groups=None):
    ...         self.mean_ = Y.mean(axis=0)
    ...         return self
    ...     def predict(self, X):
    ...         return np.tile(self.mean_, (len(X), 1))
    >>> st.tl.register_method("mean", Mean)
    >>> adata = st.datasets.simulate(100, 10).tables["table"]
    >>> st.tl.predict(adata, method="mean", use_rep="latent", split=0.2)
    >>> adata.layers["predicted_mean"].shape
    (100, 10)
    """
    if not isinstance(name, str) or not name:
        raise InvalidParameterError(f"a method name must be a non-empty string; found {name!r}.")
    if isinstance(target, str):
        valid = all(target.partition(":")[::2])  # both the module and the class name
    else:
        valid = isinstance(target, type) and issubclass(target, Predictor)
    if not valid:
        raise InvalidParameterError(
            f"method {name!r}: target must be a stmorph.models.Predictor subclass or an import path "
            f"'package.module:Class'; found {target!r}."
        )
    if not isinstance(target, str):
        _check_fit_signature(name, target)
    _REGISTRY[name] = target


def _check_fit_signature(name: str, cls: type[Predictor]) -> None:
    """Refuse a method whose ``fit`` cannot be called as ``fit(X, Y, groups=...)``."""
    params = inspect.signature(cls.fit).parameters
    if "groups" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise InvalidParameterError(
            f"method {name!r}: {cls.__name__}.fit must take (X, Y, groups=None); stmorph passes the reference "
            "sections as groups (ignore them if the method does not need them)."
        )


def list_methods() -> list[str]:
    """Names of the registered prediction methods (the values of ``method=`` in :func:`stmorph.tl.predict`).

    Examples
    --------
    >>> import stmorph as st
    >>> st.tl.list_methods()
    ['bleep', 'ensemble', 'heclip', 'knn', 'lightgbm', 'linear', 'mlp', 'ridge', 'stnet']
    """
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Predictor]:
    """The :class:`Predictor` class registered as ``name`` (imported on first use)."""
    check_choice(name, list_methods(), "method")
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _check_fit_signature(name, target)
        _REGISTRY[name] = target
    return target


_COMMON_OPTIONS = ("random_state", "device", "progress")


def make_method(name: str, options: Mapping[str, Any] | None = None, **common: Any) -> Predictor:
    """A new, unfitted instance of the registered method ``name`` with ``options``.

    Parameters
    ----------
    name
        A registered method (:func:`list_methods`).
    options
        The method's own settings (e.g. ``{"alpha": "cv"}`` for ridge); unknown ones raise an
        error listing the valid ones.
    **common
        ``random_state``, ``device``, ``progress``.

    Examples
    --------
    >>> make_method("ridge", {"alpha": 10.0}).params["alpha"]
    10.0
    """
    cls = get_method(name)
    options = dict(options or {})
    sig = inspect.signature(cls.__init__)
    valid = [
        n
        for n, p in sig.parameters.items()
        if n != "self" and n not in _COMMON_OPTIONS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InvalidParameterError(
            f"method {cls.name!r} takes no option(s) {unknown}; its options are {valid or 'none'}."
        )
    return cls(**common, **options)
