"""Plumbing shared by stmorph's torch predictors (BLEEP, HECLIP, ST-Net): inputs, splits, inference, save/load."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import (
    InputTypeError,
    InvalidParameterError,
    ModelFileError,
    ShapeMismatchError,
    check_finite,
    check_path,
    check_same_shape,
)
from ._io import WEIGHTS_FILE, add_calibration, restore_calibration, save_arrays
from ._predictor import Predictor

if TYPE_CHECKING:
    import torch

NET_PREFIX = "net."


def check_whole(value: float, name: str) -> None:
    """Raise :class:`~stmorph.errors.InvalidParameterError` if ``value`` is not a whole number (``epochs=2.5``).

    Examples
    --------
    >>> check_whole(3, "epochs")
    >>> check_whole(2.5, "epochs")
    Traceback (most recent call last):
    ...
    stmorph.errors.InvalidParameterError: epochs must be a whole number; found 2.5 (it would be truncated to 2).
    """
    if isinstance(value, bool) or not np.isfinite(value) or value != int(value):
        shown = f" (it would be truncated to {int(value)})" if np.isfinite(value) else ""
        raise InvalidParameterError(f"{name} must be a whole number; found {value!r}{shown}.")


def check_inputs(X: np.ndarray, input_kind: str, method: str) -> np.ndarray:
    """Check ``X`` is what a predictor of ``input_kind`` takes: float embeddings or uint8 patches."""
    X = np.asarray(X)
    if input_kind == "patches":
        if X.ndim != 4 or X.shape[3] != 3 or X.shape[1] != X.shape[2] or X.dtype != np.uint8:
            raise InputTypeError(
                f"{method} trains end-to-end on image patches: expected uint8 (n, P, P, 3) patches "
                f"(obsm['patches'] from `st.pp.extract_patches`); found {X.dtype} array of shape {X.shape}."
            )
        return X
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise InputTypeError(
            f"{method} in frozen mode trains on image embeddings: expected a numeric (n, d) array "
            f"(obsm[use_rep] from `st.tl.embed`); found {X.dtype} array of shape {X.shape}."
        )
    X = X.astype(np.float32, copy=False)
    check_finite(X, "image embeddings")
    return X


def check_expression(Y: np.ndarray, n_obs: int) -> np.ndarray:
    """Return ``Y`` as finite float32 ``(n_obs, n_genes)``."""
    Y = np.asarray(Y, dtype=np.float32)
    if Y.ndim != 2 or Y.shape[0] != n_obs:
        raise ShapeMismatchError(f"expression must have shape (n_obs={n_obs}, n_genes); found {Y.shape}.")
    check_finite(Y, "expression")
    return Y


def train_val_split(
    n: int, val_fraction: float, rng: np.random.Generator, min_train: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` spots into training and validation indices (validation may be empty).

    Without ``groups`` (or with a single group) the validation spots are a random
    ``val_fraction`` of the spots. With ``groups`` (one label per spot: the reference sections,
    or spatial blocks of one section) whole groups are held out, in a random order, until they
    hold at least ``val_fraction`` of the spots; at least one group stays in training.
    Neighbouring spots share tissue, so a random split lets the validation spots be predicted
    from their own neighbours and rewards the epoch that fits the references best, not the one
    that transfers to a new section.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train, val = train_val_split(6, 0.3, rng, min_train=2, groups=np.array([0, 0, 1, 1, 2, 2]))
    >>> len(val), len(set(np.array([0, 0, 1, 1, 2, 2])[val]))
    (2, 1)
    """
    if groups is not None and len(np.unique(groups)) > 1 and val_fraction > 0:
        labels = rng.permutation(np.unique(groups))
        sizes = np.array([np.sum(groups == g) for g in labels])
        n_held = min(int(np.searchsorted(np.cumsum(sizes), val_fraction * n)) + 1, len(labels) - 1)
        is_val = np.isin(groups, labels[:n_held])
        if n - is_val.sum() >= min_train:
            return np.flatnonzero(~is_val), np.flatnonzero(is_val)
    order = rng.permutation(n)
    n_val = round(n * val_fraction)
    if n - n_val < min_train:
        n_val = 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def state_to_arrays(module: torch.nn.Module, prefix: str = NET_PREFIX) -> dict[str, np.ndarray]:
    """A module's state dict as CPU numpy arrays with ``prefix`` added to every key."""
    return {prefix + k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def arrays_to_state(arrays: dict[str, np.ndarray], prefix: str = NET_PREFIX) -> dict[str, torch.Tensor]:
    """Inverse of :func:`state_to_arrays` for the keys that carry ``prefix``."""
    import torch

    return {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}


class TorchPredictor(Predictor):
    """Base of stmorph's torch predictors: batched inference, the fitted-input check, and save/load.

    Subclasses build ``self.net_`` in :meth:`fit`, and implement :meth:`_arrays` and
    :meth:`_restore` (the arrays beyond the network weights, and how to rebuild the network).
    """

    resumable = True

    net_: Any = None
    input_shape_: tuple[int, ...] = ()

    def _require_fitted(self) -> None:
        if self.net_ is None:
            raise RuntimeError(f"this {self.name} model is not fitted; call fit(X, Y) or `st.tl.predict` first.")

    def _check_predict_inputs(self, X: np.ndarray) -> np.ndarray:
        self._require_fitted()
        X = check_inputs(X, self.input, self.name)
        check_same_shape(X.shape[1:], self.input_shape_, "the query input", f"the {self.name} model's training input")
        return X

    def _device(self) -> torch.device:
        from ._train import resolve_device

        return resolve_device(self.device)

    def _seed(self) -> np.random.Generator:
        from ._train import seed_everything

        seed_everything(self.random_state)
        return np.random.default_rng(self.random_state)

    def _inference(
        self, fn: Callable[[torch.Tensor], torch.Tensor], X: np.ndarray, to_tensor: Callable, batch_size: int
    ) -> np.ndarray:
        """Apply ``fn`` (in eval mode, without gradients) to ``X`` in batches; returns float32 numpy."""
        import torch

        self.net_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(X), batch_size):
                out.append(fn(to_tensor(X[start : start + batch_size])).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    # ----------------------------------------------------------------------------------- save/load
    def _config(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "input": self.input,
            "genes": [str(g) for g in self.genes],
            "input_shape": list(self.input_shape_),
            "random_state": self.random_state,
            "params": self.params,
            "history": self.history,
            "training": self.training,
        }

    def _arrays(self, folder: Path) -> dict[str, np.ndarray]:
        """Arrays to store in ``model.safetensors`` (may also write side files into ``folder``)."""
        raise NotImplementedError

    def _restore(self, folder: Path, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Rebuild ``self.net_`` and the fitted state from saved arrays."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted model into the folder ``path`` (safetensors + JSON; see :func:`stmorph.models.load`).

        Examples
        --------
        >>> import tempfile, numpy as np, stmorph as st
        >>> adata = st.datasets.simulate(200, 20).tables["table"]
        >>> st.pp.prepare_expression(adata)
        >>> query, reference = adata[:100].copy(), adata[100:].copy()  # two sections of one tissue
        >>> model = st.tl.predict(query, reference, method="bleep", use_rep="latent", epochs=5, return_model=True)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     model.save(folder)
        ...     loaded = st.models.load(folder)
        >>> np.allclose(loaded.predict(query.obsm["latent"]), model.predict(query.obsm["latent"]))
        True
        """
        folder = check_path(path, "path", "folder_to_write")
        self._require_fitted()
        folder.mkdir(parents=True, exist_ok=True)
        config, arrays = self._config(), self._arrays(folder)
        add_calibration(self, config, arrays)
        save_arrays(folder, config, arrays)

    @classmethod
    def from_saved(cls, folder: Path, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> TorchPredictor:
        """Rebuild a fitted model from what :meth:`save` wrote (used by :func:`stmorph.models.load`)."""
        params = dict(config.get("params", {}))
        model = cls(random_state=int(config.get("random_state", 0)), progress=False, **params)
        if config.get("input") != model.input:
            raise ModelFileError(
                f"{folder}: config input {config.get('input')!r} does not match a {cls.name} model with these "
                f"settings ({model.input!r})."
            )
        model.genes = [str(g) for g in config["genes"]]
        model.history = {k: [float(v) for v in vals] for k, vals in config.get("history", {}).items()}
        model.training = dict(config.get("training", {}))
        model.input_shape_ = tuple(int(s) for s in config.get("input_shape", ()))
        if not model.genes:
            raise ModelFileError(f"{folder / 'config.json'}: the list of genes is empty.")
        model._restore(folder, config, arrays)
        restore_calibration(model, config, arrays, folder / WEIGHTS_FILE)
        return model
