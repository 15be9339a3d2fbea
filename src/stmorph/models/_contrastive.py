"""BLEEP and HECLIP: contrastive image–expression embeddings with retrieval prediction.

Both train an image projection head (on frozen embeddings, or on top of a fine-tuned image
encoder) against the expression of the same spots, then predict a query spot's expression as the
average expression of the ``k`` reference spots whose stored embeddings are nearest (cosine) to
the query image's embedding:

- **BLEEP** (Xie et al., NeurIPS 2023): image and expression each get a 256-d
  :class:`~stmorph.models._heads.ProjectionHead`; loss :func:`~stmorph.models._losses.bleep_loss`;
  retrieval over the reference *expression* embeddings.
- **HECLIP** (Wang et al. 2025): the image is projected to the gene dimension and compared with
  the gene vector itself (no expression head); loss :func:`~stmorph.models._losses.heclip_loss`;
  two augmented views of every patch per epoch; retrieval over the reference *image* embeddings
  end-to-end, over the reference expression vectors in frozen mode (``retrieve_from``).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._logging import logger
from .._validation import (
    InvalidParameterError,
    ModelFileError,
    ShapeMismatchError,
    check_bool,
    check_choice,
    check_int,
    check_range,
    format_keys,
)
from ._arrays import check_array
from ._augment import flip_rotate
from ._base import (
    NET_PREFIX,
    TorchPredictor,
    arrays_to_state,
    check_expression,
    check_inputs,
    state_to_arrays,
    train_val_split,
)
from ._cv import fold_scores, hvg_columns
from ._heads import ProjectionHead
from ._io import ENCODER_FILE, write_safetensors
from ._losses import bleep_loss, heclip_loss
from ._retrieval import AGGREGATIONS, retrieve
from ._train import train
from ._weights import load_into, load_state_dict_safely

MODES = ("frozen", "end_to_end")
SELECTIONS = ("score", "loss")
RETRIEVAL_KEYS = ("image", "expression")
TRAIN_GENES = ("hvg", "all")
N_TOP = 1000
"""BLEEP's gene set: the union of each training section's 1000 most variable genes."""
SLOW_HEAD_GENES = 5000
"""HECLIP's image head ends in an ``n × n`` layer over the training genes: above this, warn before training."""
BLEEP_FROZEN_EPOCHS = 300
HECLIP_FROZEN_EPOCHS = 100
"""Frozen-mode epoch budgets; the best epoch by validation retrieval score is kept (docs/benchmarks.md, issue 15)."""
ENCODER_PREFIX = "image_encoder."


def best_epoch(history: dict[str, list[float]]) -> int:
    """The number of epochs of the kept (best) epoch: highest ``val_score`` if recorded, else lowest ``val_loss``.

    Examples
    --------
    >>> best_epoch({"loss": [3.0, 2.0, 1.0], "val_loss": [2.0, 1.0, 1.5]})
    2
    >>> best_epoch({"loss": [3.0, 2.0, 1.0], "val_loss": [2.0, 1.0, 0.5], "val_score": [0.1, 0.3, 0.2]})
    2
    """
    if "val_score" in history:
        return int(np.argmax(history["val_score"])) + 1
    return int(np.argmin(history["val_loss"])) + 1


class ContrastiveNet(nn.Module):
    """Image branch (optional encoder + projection head) and expression branch (head or identity).

    Parameters
    ----------
    in_dim
        Size of the image features entering the image head.
    n_genes
        Number of genes of the expression vector.
    out_dim
        Size of the joint space (``n_genes`` for HECLIP).
    expression_head
        Give the expression a projection head (BLEEP) or use the gene vector itself (HECLIP).
    encoder
        Image encoder trained end-to-end, or ``None`` for precomputed embeddings.
    dropout
        Dropout of the projection heads.
    """

    def __init__(
        self,
        in_dim: int,
        n_genes: int,
        out_dim: int,
        *,
        expression_head: bool,
        encoder: nn.Module | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.image_encoder = encoder if encoder is not None else nn.Identity()
        self.image_projection = ProjectionHead(in_dim, out_dim, dropout)
        self.spot_projection = ProjectionHead(n_genes, out_dim, dropout) if expression_head else nn.Identity()

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """Joint-space embedding of images (patch tensors or precomputed embeddings)."""
        return self.image_projection(self.image_encoder(x))

    def expression(self, y: torch.Tensor) -> torch.Tensor:
        """Joint-space embedding of expression vectors."""
        return self.spot_projection(y)


def training_columns(Y: np.ndarray, sections: np.ndarray | None, n_top: int) -> np.ndarray:
    """Columns of ``Y`` that the projections train on: the union of each section's ``n_top`` most variable.

    BLEEP's protocol: each training section ranks the genes by its own variance and the
    projections learn the union; the genes are those of ``Y``, which every reference and the
    query have. ``sections=None`` ranks all spots as one section.

    Examples
    --------
    >>> Y = np.array([[0.0, 0.0, 5.0], [0.0, 1.0, 5.0], [9.0, 0.0, 5.0], [0.0, 0.0, 5.0]])
    >>> training_columns(Y, np.array([0, 0, 1, 1]), n_top=1)
    array([0, 1])
    >>> training_columns(Y, None, n_top=1)
    array([0])
    """
    labels = np.zeros(len(Y), dtype=np.int64) if sections is None else np.asarray(sections)
    chosen = np.zeros(Y.shape[1], dtype=bool)
    for label in np.unique(labels):
        chosen[hvg_columns(Y[labels == label], n_top)] = True
    return np.flatnonzero(chosen)


def check_encoder_name(name: str) -> None:
    """Raise :class:`InvalidParameterError` if ``name`` is neither a registered encoder nor a timm architecture."""
    import timm

    from ._encoders import list_encoders

    if name not in list_encoders() and not timm.is_model(name):
        raise InvalidParameterError(
            f"unknown encoder {name!r}; registered: {format_keys(list_encoders(), 50)}, or any timm architecture name."
        )


def private_copy(encoder):
    """The encoder with a deep copy of its module, so fine-tuning never changes a registered object."""
    return dataclasses.replace(encoder, module=copy.deepcopy(encoder.module))


class ContrastivePredictor(TorchPredictor):
    """Shared implementation of :class:`BLEEP` and :class:`HECLIP` (see their docstrings)."""

    loss: ClassVar[Any]
    expression_head: ClassVar[bool]
    retrieve_from: ClassVar[str]
    """The paper's retrieval keys: the reference spots' ``"image"`` or ``"expression"`` embeddings."""
    defaults: ClassVar[dict[str, Any]]
    frozen_defaults: ClassVar[dict[str, Any]]
    """Defaults that differ in frozen mode (a small head on fixed embeddings trains longer, see ``select``)."""
    validates_on_groups: ClassVar[bool] = True
    """``st.tl.predict`` passes the reference sections (or spatial blocks) to :meth:`fit` as ``groups``."""
    uses_sections: ClassVar[bool] = True
    """... and the reference sections as ``sections`` (the per-section gene selection)."""

    def __init__(
        self,
        *,
        mode: str = "frozen",
        encoder: str = "default",
        weights: str | None = None,
        temperature: float = 1.0,
        projection_dim: int | None = None,
        dropout: float = 0.1,
        train_genes: str = "hvg",
        n_top: int = N_TOP,
        epochs: int | None = None,
        batch_size: int | None = None,
        n_views: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        val_fraction: float = 0.2,
        patience: int | None = None,
        select: str = "score",
        grouped_validation: bool = True,
        refit: bool = True,
        retrieve_from: str | None = None,
        k: int = 50,
        aggregation: str = "mean",
        chunk_size: int | None = None,
        inference_batch_size: int = 256,
        random_state: int = 0,
        device: str = "auto",
        progress: bool = True,
    ):
        check_choice(mode, MODES, "mode")
        check_choice(aggregation, AGGREGATIONS, "aggregation")
        check_choice(select, SELECTIONS, "select")
        check_choice(train_genes, TRAIN_GENES, "train_genes")
        check_int(n_top, "n_top", low=1)
        if retrieve_from is not None:
            check_choice(retrieve_from, RETRIEVAL_KEYS, "retrieve_from")
        check_encoder_name(encoder)
        if projection_dim is not None and not self.expression_head:
            raise InvalidParameterError(
                f"{self.name} has no projection_dim: its joint space is the gene space; found projection_dim="
                f"{projection_dim!r}."
            )
        given = {"projection_dim": projection_dim, "epochs": epochs, "batch_size": batch_size, "n_views": n_views}
        defaults = {**self.defaults, **(self.frozen_defaults if mode == "frozen" else {})}
        settings = {**defaults, **{key: value for key, value in given.items() if value is not None}}
        keys_from = retrieve_from or settings.pop("retrieve_from", self.retrieve_from)
        settings.pop("retrieve_from", None)
        check_range(temperature, "temperature", 0, None)
        check_range(dropout, "dropout", 0, 1, inclusive=True)
        check_range(val_fraction, "val_fraction", 0, 0.9, inclusive=True)
        check_int(settings["batch_size"], "batch_size", low=2)
        for key, value in {**settings, "k": k, "inference_batch_size": inference_batch_size}.items():
            check_int(value, key, low=1)
        params = {
            "mode": mode,
            "encoder": encoder,
            "temperature": float(temperature),
            "dropout": float(dropout),
            "train_genes": train_genes,
            "n_top": int(n_top),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "val_fraction": float(val_fraction),
            "select": select,
            "grouped_validation": check_bool(grouped_validation, "grouped_validation"),
            "refit": check_bool(refit, "refit"),
            "retrieve_from": keys_from,
            "k": int(k),
            "aggregation": aggregation,
            "inference_batch_size": int(inference_batch_size),
            **settings,
        }
        if weights is not None:
            params["weights"] = str(weights)
        if chunk_size is not None:
            params["chunk_size"] = int(chunk_size)
        if patience is not None:
            check_range(patience, "patience", 1, None, inclusive=True)
            params["patience"] = int(patience)
        super().__init__(random_state=random_state, device=device, progress=progress, **params)
        self.input = "patches" if mode == "end_to_end" else "embedding"
        self.encoder_ = None
        self.reference_embeddings_: np.ndarray | None = None
        self.reference_expression_: np.ndarray | None = None
        self.train_columns_: np.ndarray | None = None

    # ------------------------------------------------------------------------------------ building
    def _out_dim(self, n_genes: int) -> int:
        return self.params["projection_dim"] if self.expression_head else n_genes

    def _build(self, in_shape: tuple[int, ...], n_genes: int, encoder=None) -> None:
        """Create ``self.net_`` for inputs of per-spot shape ``in_shape`` (embedding dim or patch shape)."""
        if self.input == "patches":
            if encoder is None:
                from ._encoders import build_encoder

                encoder = private_copy(build_encoder(self.params["encoder"], self.params.get("weights")))
            self.encoder_ = encoder
            in_dim, module = encoder.dim, encoder.module
        else:
            in_dim, module = in_shape[0], None
        out_dim = self._out_dim(n_genes)
        self.net_ = ContrastiveNet(
            in_dim,
            n_genes,
            out_dim,
            expression_head=self.expression_head,
            encoder=module,
            dropout=self.params["dropout"],
        ).to(self._device())

    def _to_tensor(self, X: np.ndarray) -> torch.Tensor:
        if self.input == "patches":
            from ._encoders import patches_to_tensor

            return patches_to_tensor(X, self.encoder_, device=self._device())
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(self._device())

    # ------------------------------------------------------------------------------------- fitting
    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        groups: np.ndarray | None = None,
        *,
        sections: np.ndarray | None = None,
    ) -> ContrastivePredictor:
        """Train the heads (and the encoder in end-to-end mode) on reference images ``X`` and expression ``Y``.

        Parameters
        ----------
        X
            ``(n, d)`` embeddings (frozen mode) or ``(n, P, P, 3)`` uint8 patches (end-to-end mode).
        Y
            ``(n, n_genes)`` expression of the same spots; it is also the retrieval reference, so
            every gene is predicted whichever genes the projections train on (``train_genes``).
        groups
            ``(n,)`` labels of the reference sections (or of spatial blocks of one section):
            whole groups are held out for validation (see
            :func:`~stmorph.models._base.train_val_split`). ``None``: random spots.
        sections
            ``(n,)`` labels of the reference sections whose highly variable genes are united
            (``train_genes="hvg"``); ``None``: all spots are ranked as one section.
            ``st.tl.predict`` passes one label per reference.

        Returns
        -------
        ``self``, with ``history`` (loss, and validation score, per epoch), ``train_columns_`` and
        the reference bank set.
        """
        X = check_inputs(X, self.input, self.name)
        Y = check_expression(Y, len(X))
        for name, labels in {"group": groups, "section": sections}.items():
            if labels is not None and len(labels) != len(X):
                raise ShapeMismatchError(f"{self.name}: {len(labels)} {name} labels for {len(X)} training spots.")
        p = self.params
        self.train_columns_ = self._training_columns(Y, sections)
        groups = None if groups is None or not p["grouped_validation"] else np.asarray(groups)
        train_idx, val_idx = train_val_split(len(X), p["val_fraction"], self._seed(), min_train=2, groups=groups)
        if len(train_idx) < 2:
            raise InvalidParameterError(f"{self.name} needs at least 2 training spots; found {len(train_idx)}.")
        options = self._train_options(X, Y)
        refit = p["refit"] and len(val_idx) > 0
        self.history = self._train_phase(X, Y, train_idx, val_idx, p["epochs"], options, "selection" if refit else None)
        if refit:  # the chosen number of epochs, again from the same initialisation, on every reference spot
            chosen = best_epoch(self.history)
            logger.info("%s: refitting on all %d spots for the chosen %d epochs", self.name, len(X), chosen)
            refitted = self._train_phase(X, Y, np.arange(len(X)), val_idx[:0], chosen, options, None)
            self.history = {**self.history, "refit_loss": refitted["loss"]}
        self.input_shape_ = tuple(X.shape[1:])
        self.reference_expression_ = Y
        self.reference_embeddings_ = self._reference_keys(X, Y[:, self.train_columns_])
        return self

    def _training_columns(self, Y: np.ndarray, sections: np.ndarray | None) -> np.ndarray:
        """The columns of ``Y`` the projections learn (``train_genes``), announced before training starts."""
        p, n_genes = self.params, Y.shape[1]
        if p["train_genes"] == "all":
            columns = np.arange(n_genes)
            logger.info("%s: training the projections on all %d genes", self.name, n_genes)
        else:
            columns = training_columns(Y, sections, p["n_top"])
            n_sections = 1 if sections is None else len(np.unique(sections))
            logger.info(
                "%s: training the projections on %d of %d genes (the union of %d section(s)' %d most variable; "
                'train_genes="all" for every gene); retrieval predicts all %d',
                self.name,
                len(columns),
                n_genes,
                n_sections,
                p["n_top"],
                n_genes,
            )
        if not self.expression_head and len(columns) > SLOW_HEAD_GENES:
            logger.warning(
                "%s projects images to the %d training genes (a %d×%d layer): training takes minutes per epoch "
                'on a CPU; train_genes="hvg" (default) trains on the references\' %d most variable genes and still '
                "predicts every gene",
                self.name,
                len(columns),
                len(columns),
                len(columns),
                p["n_top"],
            )
        return columns

    def _train_phase(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        epochs: int,
        options: dict[str, Any],
        phase: str | None,
    ) -> dict[str, list[float]]:
        """Build a fresh (seeded) net and train it on ``train_idx``, keeping the best epoch on ``val_idx``.

        ``phase`` names the sub-folder of a training checkpoint (the selection run before a refit).
        """
        p = self.params
        rng = self._seed()
        self._build(X.shape[1:], len(self.train_columns_))
        n_views = p["n_views"] if self.input == "patches" else 1
        n_copies = n_views * len(train_idx)
        Y_t = torch.from_numpy(np.ascontiguousarray(Y[:, self.train_columns_])).to(self._device())
        X_t = self._to_tensor(X) if self.input == "embedding" else None

        def batch_fn(indices: np.ndarray, training: bool):
            is_val = indices >= n_copies
            spots = train_idx[indices % len(train_idx)]
            spots[is_val] = val_idx[indices[is_val] - n_copies]
            if X_t is not None:
                return X_t[spots], Y_t[spots]
            patches = flip_rotate(X[spots], rng) if training else X[spots]
            return self._to_tensor(patches), Y_t[spots]

        def loss_fn(net: ContrastiveNet, batch) -> torch.Tensor:
            x, y = batch
            return type(self).loss(net.image(x), net.expression(y), p["temperature"])

        if phase is not None and options["checkpoint"] is not None:
            options = {**options, "checkpoint": options["checkpoint"] / phase}
        return train(
            self.net_,
            loss_fn,
            batch_fn,
            n_copies,
            epochs=epochs,
            batch_size=p["batch_size"],
            lr=p["lr"],
            weight_decay=p["weight_decay"],
            random_state=self.random_state,
            val_indices=n_copies + np.arange(len(val_idx)) if len(val_idx) else None,
            # keep the best epoch, as both papers do; stop early after `patience` epochs without a better one
            patience=p.get("patience", epochs) if len(val_idx) else None,
            val_score=self._score_fn(X, Y, train_idx, val_idx) if p["select"] == "score" and len(val_idx) else None,
            drop_last=True,
            progress=self.progress,
            desc=self.name,
            **options,
        )

    def _score_fn(self, X: np.ndarray, Y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray):
        """The validation score of an epoch: HVG-50 Pearson r of the validation spots retrieved from the training spots.

        It is what prediction does to a new section (the validation spots are one held out when
        there are groups), so the kept epoch is the one that retrieves best, not the one with the
        lowest contrastive loss (the two disagree: the loss keeps falling after retrieval stops improving).
        The 50 genes are chosen among all of ``Y``'s, as prediction retrieves all of them; only
        those are retrieved.
        """
        scored = hvg_columns(Y[val_idx])
        truth, bank = Y[np.ix_(val_idx, scored)], Y[np.ix_(train_idx, scored)]
        trained = Y[np.ix_(train_idx, self.train_columns_)]

        def score(_net: ContrastiveNet) -> float:  # the net is self.net_
            keys = self._reference_keys(X[train_idx], trained)
            pred = retrieve(self._image_embeddings(X[val_idx]), keys, bank, k=self.params["k"])
            return fold_scores(truth, pred)[0]

        return score

    def _image_embeddings(self, X: np.ndarray) -> np.ndarray:
        return self._inference(self.net_.image, X, self._to_tensor, self.params["inference_batch_size"])

    def _reference_keys(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Retrieval keys of reference spots: image embeddings, or expression embeddings of ``Y`` (training genes)."""
        if self.params["retrieve_from"] == "image":
            return self._image_embeddings(X)
        to_tensor = lambda y: torch.from_numpy(y).to(self._device())  # noqa: E731
        return self._inference(self.net_.expression, Y, to_tensor, self.params["inference_batch_size"])

    # ---------------------------------------------------------------------------------- predicting
    def embed_images(self, X: np.ndarray) -> np.ndarray:
        """Joint-space embeddings ``(n, dim)`` of images ``X`` (embeddings or patches, as in :meth:`fit`)."""
        return self._image_embeddings(self._check_predict_inputs(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict ``(n, n_genes)`` expression of query images ``X`` by top-k retrieval from the reference.

        Examples
        --------
        >>> import numpy as np
        >>> from stmorph.models._contrastive import BLEEP
        >>> rng = np.random.default_rng(0)
        >>> X, Y = rng.normal(size=(64, 8)), rng.normal(size=(64, 5))
        >>> model = BLEEP(epochs=2, batch_size=16, k=5, progress=False).fit(X, Y)
        >>> model.predict(X[:3]).shape
        (3, 5)
        """
        query = self.embed_images(X)
        return retrieve(
            query,
            self.reference_embeddings_,
            self.reference_expression_,
            k=self.params["k"],
            aggregation=self.params["aggregation"],
            chunk_size=self.params.get("chunk_size"),
            progress=self.progress,
        )

    # ----------------------------------------------------------------------------------- save/load
    def _arrays(self, folder: Path) -> dict[str, np.ndarray]:
        encoder_keys = NET_PREFIX + ENCODER_PREFIX
        arrays = {k: v for k, v in state_to_arrays(self.net_).items() if not k.startswith(encoder_keys)}
        if self.input == "patches":  # the fine-tuned encoder, loadable on its own with build_encoder(name, weights=...)
            write_safetensors(folder / ENCODER_FILE, state_to_arrays(self.net_.image_encoder, prefix=""))
        arrays["reference_embeddings"] = self.reference_embeddings_
        arrays["reference_expression"] = self.reference_expression_
        arrays["train_columns"] = self.train_columns_.astype(np.int64)
        return arrays

    def _restore(self, folder: Path, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        n_genes = len(self.genes)
        expr = check_array(arrays, "reference_expression", (None, n_genes), folder)
        keys = check_array(arrays, "reference_embeddings", (len(expr), None), folder)
        self.train_columns_ = self._saved_columns(folder, arrays, n_genes)
        state = arrays_to_state(arrays)
        encoder = None
        if self.input == "patches":
            encoder = self._saved_encoder(folder)
            state.update({ENCODER_PREFIX + k: v for k, v in load_state_dict_safely(folder / ENCODER_FILE).items()})
        self._build(self.input_shape_, len(self.train_columns_), encoder)
        load_into(self.net_, state, what=f"{self.name} model in {folder}")
        self.net_.eval()
        self.reference_expression_ = np.asarray(expr, dtype=np.float32)
        self.reference_embeddings_ = np.asarray(keys, dtype=np.float32)

    def _saved_columns(self, folder: Path, arrays: dict[str, np.ndarray], n_genes: int) -> np.ndarray:
        """The saved training columns; models saved before ``train_genes`` existed trained on every gene."""
        if "train_columns" not in arrays:
            self.params["train_genes"] = "all"
            return np.arange(n_genes)
        columns = check_array(arrays, "train_columns", (None,), folder).astype(np.int64)
        if len(columns) == 0 or columns.min() < 0 or columns.max() >= n_genes or np.any(np.diff(columns) <= 0):
            raise ModelFileError(
                f"{folder}: the training columns are not increasing indices of the {n_genes} genes; the model files "
                "do not belong together."
            )
        return columns

    def _saved_encoder(self, folder: Path):
        """Rebuild the encoder architecture; the fine-tuned weights are loaded from ``encoder.safetensors``."""
        from ._encoders import build_encoder

        path = folder / ENCODER_FILE
        if not path.is_file():
            raise ModelFileError(f"{folder} holds an end-to-end {self.name} model but {ENCODER_FILE} is missing.")
        weights = self.params.get("weights")
        # encoders with built-in weights are built as shipped, the others straight from the fine-tuned file
        return private_copy(build_encoder(self.params["encoder"], None if weights is None else str(path)))


class BLEEP(ContrastivePredictor):
    """BLEEP (Xie et al., NeurIPS 2023): bi-modal contrastive embedding with expression retrieval.

    Use it through ``st.tl.predict(query, reference, method="bleep", use_rep=...)`` or directly
    with ``fit(X, Y)`` / ``predict(X)``.

    Parameters
    ----------
    mode
        ``"frozen"`` (default): train the projection heads on precomputed embeddings
        (``obsm[use_rep]``), fast on a CPU. ``"end_to_end"``: fine-tune the image encoder on
        ``obsm["patches"]`` with random flips and 90° rotations (on the GPU when available).
    encoder
        Image encoder (registry name or timm architecture); in frozen mode it documents which
        encoder produced the embeddings, in end-to-end mode it is built and fine-tuned.
    weights
        Local weights file of the encoder (end-to-end mode; ``None`` for built-in weights).
    temperature
        τ of the loss (BLEEP: 1.0).
    projection_dim
        Size of the joint space (BLEEP: 256).
    dropout
        Dropout of the projection heads (0.1).
    train_genes
        Genes the projections learn: ``"hvg"`` (default, BLEEP's protocol) the union of each
        reference section's ``n_top`` most variable genes among those predicted (which
        every reference and the query have; ``sections`` in :meth:`fit`, one per reference in
        ``st.tl.predict``); ``"all"`` every predicted gene. Either way every gene is predicted:
        retrieval averages the reference spots' whole expression.
    n_top
        Genes taken from each reference section with ``train_genes="hvg"`` (BLEEP: 1000).
    epochs, batch_size
        Batches of 256 spots (BLEEP); 150 epochs end-to-end (BLEEP), at most 300 in frozen mode,
        where the best epoch by ``select`` is usually between 150 and 250.
    n_views
        Augmented views of each patch per epoch in end-to-end mode (BLEEP: 1).
    lr, weight_decay
        AdamW settings (1e-3, 1e-3).
    val_fraction
        Fraction of the reference spots held out to choose the epoch (0 trains on all spots for
        ``epochs`` and keeps the last one); all spots stay in the retrieval reference.
    patience
        Stop after this many epochs without a better validation score (or loss); the best epoch
        is kept either way; ``None`` trains all ``epochs``.
    select
        ``"score"`` (default): keep the epoch whose retrieval predicts the held-out spots best
        (mean Pearson r of their 50 most variable genes, retrieved from the training spots);
        ``"loss"``: the lowest validation loss (BLEEP's and HECLIP's code). The score costs one
        embedding of the reference per epoch (a forward pass over the patches end-to-end).
    grouped_validation
        With ``groups`` in :meth:`fit` (``st.tl.predict`` passes the reference sections, or
        spatial blocks of a single reference), hold out whole groups; ``False``: random spots.
    refit
        After choosing the epoch, train again from the same initialisation on every reference
        spot for that many epochs (default); ``False`` keeps the selection run's best epoch.
    retrieve_from
        Reference keys searched at prediction: ``"expression"`` (the expression embeddings;
        BLEEP's, the default) or ``"image"`` (the image embeddings).
    k
        Number of retrieved reference spots (50).
    aggregation
        ``"mean"`` of their expression, or ``"weighted"`` (BLEEP's exponential distance weights).
    chunk_size
        Query rows per retrieval chunk (``None``: bounded automatically, see
        :func:`~stmorph.models._retrieval.retrieve`).
    inference_batch_size
        Batch size when embedding images for prediction.
    random_state, device, progress
        Seed, torch device (``"auto"``: CUDA when available) and progress bars.

    Attributes
    ----------
    history
        ``{"loss": [...], "val_loss": [...], "val_score": [...]}`` per epoch of the selection run,
        and ``"refit_loss"`` per epoch of the refit.
    train_columns_
        Indices of the genes (columns of ``Y``) the projections were trained on.
    reference_embeddings_, reference_expression_
        The retrieval bank: expression embeddings of the reference spots and their expression
        (every gene).

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 20).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> query, reference = adata[:100].copy(), adata[100:].copy()  # two sections of one tissue
    >>> model = st.tl.predict(query, reference, method="bleep", use_rep="latent", epochs=5, return_model=True)
    >>> query.uns["stmorph"]["predict"]["predicted_bleep"]["method"], len(model.history["loss"])
    ('bleep', 5)
    """

    name: ClassVar[str] = "bleep"
    loss = staticmethod(bleep_loss)
    expression_head = True
    retrieve_from = "expression"
    defaults: ClassVar[dict[str, Any]] = {"projection_dim": 256, "epochs": 150, "batch_size": 256, "n_views": 1}
    frozen_defaults: ClassVar[dict[str, Any]] = {"epochs": BLEEP_FROZEN_EPOCHS}


class HECLIP(ContrastivePredictor):
    """HECLIP (Wang et al. 2025): image-centric contrastive learning with image retrieval.

    The image (encoder features + projection head) is projected to the gene dimension and compared
    with the expression vector itself; the loss keeps only the image-side cross-entropy against an
    image-image similarity target. Prediction averages the expression of the ``k`` reference spots
    whose *image* embeddings are nearest to the query image's (end-to-end, as HECLIP); in frozen
    mode the default ``retrieve_from="expression"`` compares the query image's projection with
    the reference gene vectors instead (on fixed embeddings image–image retrieval stays at the
    level of untrained retrieval; docs/benchmarks.md).

    Parameters
    ----------
    mode, encoder, weights, temperature, dropout, lr, weight_decay, val_fraction, patience, select, \
grouped_validation, refit, k, aggregation, chunk_size, inference_batch_size, random_state, device, progress
        As for :class:`BLEEP`.
    train_genes, n_top
        As for :class:`BLEEP`. The image is projected to the training genes (an ``n × n``
        layer), so the default ``"hvg"`` also keeps HECLIP fast: on all ~14,500 genes of a
        HER2ST section one frozen epoch takes about half a minute on 2 CPU cores.
    retrieve_from
        ``None``: ``"image"`` end-to-end (HECLIP), ``"expression"`` in frozen mode.
    projection_dim
        Not accepted: HECLIP's joint space is the gene space.
    epochs, batch_size
        Default 15 epochs of batches of 128 (HECLIP).
    n_views
        Augmented views of every patch per epoch in end-to-end mode (HECLIP: 2). Frozen
        embeddings cannot be augmented, so frozen mode uses one view.

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 20).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> query, reference = adata[:100].copy(), adata[100:].copy()  # two sections of one tissue
    >>> st.tl.predict(query, reference, method="heclip", use_rep="latent", epochs=5)
    >>> query.layers["predicted_heclip"].shape
    (100, 20)
    """

    name: ClassVar[str] = "heclip"
    loss = staticmethod(heclip_loss)
    expression_head = False
    retrieve_from = "image"
    defaults: ClassVar[dict[str, Any]] = {"epochs": 15, "batch_size": 128, "n_views": 2}
    frozen_defaults: ClassVar[dict[str, Any]] = {"epochs": HECLIP_FROZEN_EPOCHS, "retrieve_from": "expression"}
