"""ST-Net (He et al., Nat Biomed Eng 2020): DenseNet-121 fine-tuned end-to-end to regress expression.

The EPS paper's deep baseline: timm ``densenet121`` (1024-d pooled features) with a linear layer
over the genes, trained on image patches with the mean squared error and the same random flips
and 90° rotations as the patches' augmentation in ST-Net.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._validation import InvalidParameterError, check_int, check_range
from ._augment import dihedral_views, flip_rotate
from ._base import TorchPredictor, arrays_to_state, check_expression, check_inputs, state_to_arrays, train_val_split
from ._encoders import IMAGENET_MEAN, IMAGENET_STD, Encoder, build_encoder, patches_to_tensor
from ._train import train
from ._weights import load_into

ARCH = "densenet121"


class STNetModule(nn.Module):
    """DenseNet-121 trunk (pooled features) followed by a linear layer over the genes."""

    def __init__(self, trunk: nn.Module, n_features: int, n_genes: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(n_features, n_genes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def densenet121_trunk(weights: str | None) -> nn.Module:
    """timm DenseNet-121 without classifier: random init, or the local ``weights`` file (never downloaded)."""
    import timm

    if weights is None:
        return timm.create_model(ARCH, pretrained=False, num_classes=0)
    return build_encoder(ARCH, weights).module  # a fresh module on every call


class STNet(TorchPredictor):
    """ST-Net: DenseNet-121 + linear head, fine-tuned end-to-end on patches with the MSE loss.

    Use it through ``st.tl.predict(query, reference, method="stnet", use_rep="patches")``, or
    directly with ``fit(patches, Y)`` / ``predict(patches)``.

    Parameters
    ----------
    weights
        Local DenseNet-121 weights file (e.g. ImageNet, safetensors or a torch state dict) to start
        from; ``None`` starts from random weights (nothing is ever downloaded).
    input_size
        Side length the patches are resized to (``None``: the patches' own size; ST-Net used 224).
    epochs, batch_size
        50 epochs of 32 patches (ST-Net).
    lr, weight_decay
        AdamW settings (1e-4, 1e-3); ST-Net itself used SGD — here the shared AdamW loop is used.
    augment
        Random flips and 90° rotations of the training patches.
    val_fraction
        Fraction of spots held out to keep the epoch with the lowest validation MSE (0.2, as the
        BLEEP and HECLIP code; 0: last epoch).
    tta
        Average the predictions of the 8 flips/rotations of each patch (ST-Net's ``--average``).

    Notes
    -----
    As in the reference code, the output layer starts with zero weights and the training spots'
    mean expression as bias, so training starts from the mean prediction. Patches are normalised
    with the ImageNet mean/std that the DenseNet-121 weights were trained with (ST-Net normalises
    with the training patches' own mean/std; with pretrained weights stmorph keeps their input
    statistics).
    inference_batch_size
        Batch size for prediction.
    random_state, device, progress
        Seed, torch device (``"auto"``: CUDA when available) and progress bars.

    Examples
    --------
    >>> import numpy as np
    >>> from stmorph.models._stnet import STNet
    >>> rng = np.random.default_rng(0)
    >>> patches = rng.integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> model = STNet(epochs=1, batch_size=4, progress=False).fit(patches, rng.normal(size=(8, 3)))
    >>> model.predict(patches).shape
    (8, 3)
    """

    name: ClassVar[str] = "stnet"
    input: str = "patches"

    def __init__(
        self,
        *,
        weights: str | None = None,
        input_size: int | None = None,
        epochs: int = 50,
        batch_size: int = 32,
        lr: float = 1e-4,
        weight_decay: float = 1e-3,
        augment: bool = True,
        val_fraction: float = 0.2,
        tta: bool = False,
        inference_batch_size: int = 64,
        random_state: int = 0,
        device: str = "auto",
        progress: bool = True,
    ):
        for key, value in {
            "epochs": epochs,
            "batch_size": batch_size,
            "inference_batch_size": inference_batch_size,
        }.items():
            check_int(value, key, low=1)
        check_range(val_fraction, "val_fraction", 0, 0.9, inclusive=True)
        if input_size is not None:
            check_int(input_size, "input_size", low=16)
        params: dict[str, Any] = {
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "augment": bool(augment),
            "val_fraction": float(val_fraction),
            "tta": bool(tta),
            "inference_batch_size": int(inference_batch_size),
        }
        if weights is not None:
            params["weights"] = str(weights)
        if input_size is not None:
            params["input_size"] = int(input_size)
        super().__init__(random_state=random_state, device=device, progress=progress, **params)
        self.encoder_: Encoder | None = None

    def _build(self, patch_size: int, n_genes: int, weights: str | None) -> None:
        trunk = densenet121_trunk(weights)
        size = self.params.get("input_size", patch_size)
        self.encoder_ = Encoder(
            trunk, dim=int(trunk.num_features), mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=size
        )
        self.net_ = STNetModule(trunk, self.encoder_.dim, n_genes).to(self._device())

    def _to_tensor(self, patches: np.ndarray) -> torch.Tensor:
        return patches_to_tensor(patches, self.encoder_, device=self._device())

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> STNet:
        """Fine-tune on uint8 patches ``X`` ``(n, P, P, 3)`` and expression ``Y`` ``(n, n_genes)``; returns ``self``.

        ``groups`` is accepted for the common contract and not used: ST-Net validates on random spots.
        """
        X = check_inputs(X, self.input, self.name)
        Y = check_expression(Y, len(X))
        rng = self._seed()
        self._build(X.shape[1], Y.shape[1], self.params.get("weights"))
        p = self.params
        train_idx, val_idx = train_val_split(len(X), p["val_fraction"], rng, min_train=1)
        if not len(train_idx):
            raise InvalidParameterError(f"{self.name} needs at least 1 training spot; found none.")
        self._start_from_mean(Y[train_idx])
        Y_t = torch.from_numpy(Y).to(self._device())
        order = np.concatenate([train_idx, val_idx])

        def batch_fn(indices: np.ndarray, training: bool):
            spots = order[indices]
            patches = flip_rotate(X[spots], rng) if training and p["augment"] else X[spots]
            return self._to_tensor(patches), Y_t[spots]

        def loss_fn(net: STNetModule, batch) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(net(x), y)

        self.history = train(
            self.net_,
            loss_fn,
            batch_fn,
            len(train_idx),
            epochs=p["epochs"],
            batch_size=p["batch_size"],
            lr=p["lr"],
            weight_decay=p["weight_decay"],
            random_state=self.random_state,
            val_indices=len(train_idx) + np.arange(len(val_idx)) if len(val_idx) else None,
            patience=p["epochs"] if len(val_idx) else None,  # keep the best epoch
            progress=self.progress,
            desc=self.name,
            **self._train_options(X, Y),
        )
        self.input_shape_ = tuple(X.shape[1:])
        return self

    def _start_from_mean(self, Y_train: np.ndarray) -> None:
        """Zero output weights and the training mean as bias (the reference code's initialisation)."""
        with torch.no_grad():
            self.net_.head.weight.zero_()
            self.net_.head.bias.copy_(torch.from_numpy(Y_train.mean(axis=0)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict ``(n, n_genes)`` expression of uint8 patches ``X`` (averaged over 8 views with ``tta``)."""
        X = self._check_predict_inputs(X)
        views = dihedral_views(X) if self.params.get("tta") else [X]
        size = self.params["inference_batch_size"]
        return np.mean([self._inference(self.net_, v, self._to_tensor, size) for v in views], axis=0)

    def _arrays(self, folder: Path) -> dict[str, np.ndarray]:
        return state_to_arrays(self.net_)

    def _restore(self, folder: Path, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._build(self.input_shape_[0], len(self.genes), None)
        load_into(self.net_, arrays_to_state(arrays), what=f"{self.name} model in {folder}")
        self.net_.eval()
