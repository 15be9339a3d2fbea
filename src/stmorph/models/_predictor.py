"""The :class:`Predictor` base class and the prediction-method registry behind :func:`stmorph.tl.predict`.

A method is a :class:`Predictor` subclass. The built-in ones are registered by an import path
(``"module:Class"``) so that torch/lightgbm are only imported when that method is used.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._validation import InvalidParameterError, check_bool, check_choice, check_device, check_seed


class Predictor:
    """Base class of every prediction method.

    Subclasses set :attr:`name` and :attr:`input` and implement :meth:`fit` and :meth:`predict`.
    ``X`` is ``(n, d)`` float embeddings when ``input == "embedding"`` and ``(n, P, P, 3)`` uint8
    patches when ``input == "patches"``; ``Y`` is ``(n, n_genes)`` float32 expression.

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
        Names of the predicted genes, in column order (set by :func:`stmorph.tl.predict`).
    history
        Training curves of torch models: ``{"loss": [...], "val_loss": [...]}``.
    training
        What :func:`stmorph.tl.predict` recorded about the fit (``use_rep``, ``layer``,
        ``input_shape``, ``n_train``), so a fitted model can check a new slice's inputs.
    """

    name: ClassVar[str] = "base"
    input: str = "embedding"
    resumable: ClassVar[bool] = False
    """Whether :meth:`fit` trains over epochs and can save and resume its state (the torch models)."""

    def __init__(self, *, random_state: int = 0, device: str = "auto", progress: bool = True, **params: Any):
        self.random_state = check_seed(random_state)
        self.device = check_device(device)
        self.progress = check_bool(progress, "progress")
        self.params = params
        self.genes: list[str] = []
        self.history: dict[str, list[float]] = {}
        self.training: dict[str, Any] = {}
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

    def fit(self, X: np.ndarray, Y: np.ndarray) -> Predictor:
        """Fit on training inputs ``X`` and expression ``Y``; returns ``self``."""
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict ``(n, n_genes)`` float32 expression for inputs ``X``."""
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """Settings as a plain, h5ad-serialisable dict."""
        return {"method": self.name, "input": self.input, "random_state": self.random_state, **self.params}


OWN_OPTIONS = ("random_state", "device", "progress")
"""Options every :class:`Predictor` takes; the others are the method's own."""


def check_method_options(cls: type[Predictor], options: dict[str, Any]) -> None:
    """Raise :class:`InvalidParameterError` for options the method ``cls`` does not take."""
    import inspect

    sig = inspect.signature(cls.__init__)
    valid = [
        n
        for n, p in sig.parameters.items()
        if n != "self" and n not in OWN_OPTIONS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InvalidParameterError(
            f"method {cls.name!r} takes no option(s) {unknown}; its options are {valid or 'none'}."
        )


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
    ``(n, P, P, 3)`` uint8 patches), implement ``fit(X, Y)`` (returns ``self``) and ``predict(X)``
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
        ``name`` is not a non-empty string, or ``target`` is neither a Predictor subclass nor a
        ``"module:Class"`` path.

    Examples
    --------
    >>> import numpy as np, stmorph as st
    >>> class Mean(st.models.Predictor):
    ...     name = "mean"
    ...     def fit(self, X, Y):
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
    _REGISTRY[name] = target


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
        _REGISTRY[name] = target
    return target
