"""The prediction-method registry behind :func:`stmorph.tl.predict`.

A method is a :class:`Predictor` subclass. It is registered by an import path (``"module:Class"``)
so that torch/lightgbm are only imported when that method is used.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._validation import InvalidParameterError, check_choice


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
        self.random_state = random_state
        self.device = device
        self.progress = progress
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

    def _train_options(self) -> dict[str, Any]:
        """The checkpoint options of :func:`stmorph.models._train.train`."""
        return {"checkpoint": self._checkpoint, "resume": self._resume}

    def fit(self, X: np.ndarray, Y: np.ndarray) -> Predictor:
        """Fit on training inputs ``X`` and expression ``Y``; returns ``self``."""
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict ``(n, n_genes)`` float32 expression for inputs ``X``."""
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """Settings as a plain, h5ad-serialisable dict."""
        return {"method": self.name, "input": self.input, "random_state": self.random_state, **self.params}


_REGISTRY: dict[str, str | type[Predictor]] = {
    "linear": "stmorph.tl._baselines:Linear",
    "ridge": "stmorph.tl._baselines:Ridge",
    "lightgbm": "stmorph.tl._baselines:LightGBM",
    "mlp": "stmorph.models._mlp:MLP",
    "bleep": "stmorph.models._contrastive:BLEEP",
    "heclip": "stmorph.models._contrastive:HECLIP",
    "stnet": "stmorph.models._stnet:STNet",
}


def register_method(name: str, target: str | type[Predictor]) -> None:
    """Register a prediction method for :func:`stmorph.tl.predict`.

    Parameters
    ----------
    name
        Name users pass as ``method=``.
    target
        A :class:`Predictor` subclass, or its import path ``"package.module:Class"`` (imported on
        first use).

    Examples
    --------
    >>> from stmorph.tl._methods import Predictor, register_method
    >>> class Mean(Predictor):
    ...     name = "mean"
    ...     def fit(self, X, Y):
    ...         self.mean_ = Y.mean(0)
    ...         return self
    ...     def predict(self, X):
    ...         return np.tile(self.mean_, (len(X), 1))
    >>> register_method("mean", Mean)
    """
    _REGISTRY[name] = target


def list_methods() -> list[str]:
    """Names of the registered prediction methods."""
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
