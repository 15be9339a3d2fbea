"""The MLP baseline of the EPS paper: embeddings → one hidden layer of 256 (ReLU) → all genes, MSE loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_int, check_range
from ._arrays import check_array
from ._base import arrays_to_state, state_to_arrays
from ._io import ArrayModel
from ._predictor import Predictor
from ._train import resolve_device, seed_everything, train


def _mlp_module(n_in: int, n_hidden: int, n_out: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(n_in, n_hidden), torch.nn.ReLU(), torch.nn.Linear(n_hidden, n_out))


class MLP(ArrayModel, Predictor):
    """One-hidden-layer perceptron trained with MSE and AdamW (EPS paper settings by default).

    Parameters
    ----------
    hidden
        Width of the hidden layer.
    epochs, batch_size, lr, weight_decay
        Optimisation (AdamW; PyTorch's default weight decay 0.01).
    val_fraction
        Hold out this seeded random fraction of the training spots for a validation loss after
        each epoch (``None``: no validation, train all ``epochs``).
    patience
        With ``val_fraction``: stop after this many epochs without a better validation loss and
        keep the best weights (early stopping).
    **kwargs
        ``random_state``, ``device``, ``progress`` (see :class:`~stmorph.models.Predictor`).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 4)).astype("float32"); Y = X[:, :2] * 2
    >>> mlp = MLP(epochs=30, progress=False, device="cpu").fit(X, Y)
    >>> float(np.mean((mlp.predict(X) - Y) ** 2)) < 0.1
    True
    """

    name = "mlp"
    resumable = True

    def __init__(
        self,
        *,
        hidden: int = 256,
        epochs: int = 100,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        val_fraction: float | None = None,
        patience: int = 10,
        **kwargs: Any,
    ):
        check_int(hidden, "hidden", low=1)
        check_int(epochs, "epochs", low=1)
        check_int(batch_size, "batch_size", low=1)
        check_range(lr, "lr", low=0.0)
        check_range(weight_decay, "weight_decay", low=0.0, inclusive=True)
        check_int(patience, "patience", low=1)
        params = {"hidden": int(hidden), "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr)}
        params.update(weight_decay=float(weight_decay), patience=int(patience))
        if val_fraction is not None:
            check_range(val_fraction, "val_fraction", low=0.0, high=1.0)
            params["val_fraction"] = float(val_fraction)
        super().__init__(**params, **kwargs)

    def _split(self, n: int) -> tuple[np.ndarray, int]:
        """Sample order that puts training spots first, and the number of training spots."""
        fraction = self.params.get("val_fraction")
        if fraction is None:
            return np.arange(n), n
        n_val = min(max(1, round(fraction * n)), n - 1)
        return np.random.default_rng(self.random_state).permutation(n), n - n_val

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> MLP:
        import torch

        device = resolve_device(self.device)
        seed_everything(self.random_state)
        order, n_train = self._split(len(X))
        x = torch.as_tensor(np.asarray(X, dtype=np.float32)[order], device=device)
        y = torch.as_tensor(np.asarray(Y, dtype=np.float32)[order], device=device)
        self.module_ = _mlp_module(x.shape[1], self.params["hidden"], y.shape[1]).to(device)
        p = self.params
        self.history = train(
            self.module_,
            lambda module, batch: torch.nn.functional.mse_loss(module(batch[0]), batch[1]),
            lambda idx, _train: (x[idx], y[idx]),
            n_train,
            epochs=p["epochs"],
            batch_size=p["batch_size"],
            lr=p["lr"],
            weight_decay=p["weight_decay"],
            random_state=self.random_state,
            val_indices=np.arange(n_train, len(order)) if n_train < len(order) else None,
            patience=p["patience"] if n_train < len(order) else None,
            progress=self.progress,
            desc="mlp epochs",
            **self._train_options(X, Y),
        )
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        device = next(self.module_.parameters()).device
        out = []
        with torch.no_grad():
            for start in range(0, len(X), 4096):
                batch = torch.as_tensor(np.asarray(X[start : start + 4096], dtype=np.float32), device=device)
                out.append(self.module_(batch).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.empty((0, self.module_[-1].out_features))

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return state_to_arrays(self.module_)

    def _restore_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any], where: Path) -> None:
        hidden = check_array(arrays, "net.0.weight", (self.params["hidden"], None), where)
        check_array(arrays, "net.2.weight", (len(self.genes), self.params["hidden"]), where)
        self.module_ = _mlp_module(hidden.shape[1], self.params["hidden"], len(self.genes))
        self.module_.load_state_dict(arrays_to_state(arrays))
        self.module_.to(resolve_device(self.device)).eval()
