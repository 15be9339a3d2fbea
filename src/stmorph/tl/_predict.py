"""``st.tl.predict``: fit a registered prediction method on reference spots and predict a query slice."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import commit_outputs
from .._docs import doc_params
from .._keys import Key
from .._logging import logger
from .._tables import is_spatialdata, table_of
from .._validation import (
    InvalidParameterError,
    StmorphKeyError,
    TooFewObservationsError,
    check_bool,
    check_device,
    check_finite,
    check_n_obs,
    check_numeric,
    check_path,
    check_range,
    check_same_shape,
    check_seed,
    check_unique_names,
    checks_keys,
    get_genes,
    get_matrix,
    get_patches,
    get_rep,
)
from ..models._cv import N_BLOCKS, best_candidate, check_groups, cross_validate, fit_model, spatial_blocks
from ..models._predictor import Predictor, get_method

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

SPLIT_KEY = Key.obs.split
"""``obs`` column that marks the within-slice ``"train"``/``"test"`` spots."""
MIN_TRAIN = 10
"""Fewest training spots a model is fitted on."""
_OWN_OPTIONS = ("random_state", "device", "progress")


def _mode(reference: object, split: float | None, model: Predictor | None) -> str:
    if model is not None:
        if reference is not None or split is not None:
            raise InvalidParameterError(
                "model= applies an already fitted model; do not pass reference= or split= with it."
            )
        return "model"
    if reference is not None:
        if split is not None:
            raise InvalidParameterError(
                "pass either reference= (fit on other slices) or split= (hold out spots of the query), not both."
            )
        return "across"
    if split is None:
        raise InvalidParameterError(
            "nothing to fit on: pass reference= (one AnnData or a list of them), split= (e.g. 0.2 to hold out "
            "20 % of the query's spots) or model= (a model fitted earlier with return_model=True)."
        )
    check_range(split, "split", low=0.0, high=1.0)
    return "within"


def _check_options(
    split: float | None,
    random_state: int,
    device: str,
    checkpoint: str | os.PathLike | None,
    **flags: bool,
) -> None:
    """Raise :class:`InvalidParameterError` naming the first bad option of :func:`predict`."""
    if split is not None:
        check_range(split, "split", low=0.0, high=1.0)
    check_seed(random_state)
    check_device(device)
    if checkpoint is not None:
        check_path(checkpoint, "checkpoint", "folder_to_write")
    for name, value in flags.items():
        check_bool(value, name)


def _check_method_kwargs(cls: type[Predictor], kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidParameterError` for options the method does not take."""
    sig = inspect.signature(cls.__init__)
    valid = [
        n
        for n, p in sig.parameters.items()
        if n != "self" and n not in _OWN_OPTIONS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise InvalidParameterError(
            f"method {cls.name!r} takes no option(s) {unknown}; its options are {valid or 'none'}."
        )


def _rep_keys(use_rep: str | Sequence[str]) -> list[str]:
    """``use_rep`` as a non-empty list of unique ``obsm`` keys."""
    keys = [use_rep] if isinstance(use_rep, str) else list(use_rep)
    if not keys or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise InvalidParameterError(
            f"use_rep must be an obsm key or a non-empty list of distinct keys; found {use_rep!r}."
        )
    return keys


def _inputs(adata: AnnData, use_rep: str | Sequence[str], kind: str, what: str) -> np.ndarray:
    """The model inputs of every spot: ``(n, d)`` float32 embeddings (several keys side by side) or uint8 patches."""
    keys = _rep_keys(use_rep)
    try:
        if kind == "patches":
            if len(keys) > 1:
                raise InvalidParameterError(f"methods trained on patches take one use_rep key; found {keys}.")
            return get_patches(adata, keys[0])
        return np.concatenate([get_rep(adata, key).astype(np.float32, copy=False) for key in keys], axis=1)
    except (KeyError, ValueError) as err:  # name which object failed (query or which reference)
        raise type(err)(f"{what}: {err}") from None


def _key_scaling(x_train: np.ndarray) -> dict[str, list[float]]:
    """Column means and standard deviations of the training inputs (constant columns keep scale 1)."""
    std = x_train.std(axis=0, dtype=np.float64)
    return {"mean": x_train.mean(axis=0, dtype=np.float64).tolist(), "std": np.where(std > 0, std, 1.0).tolist()}


def _scale(x: np.ndarray, scaling: Mapping[str, Sequence[float]] | None) -> np.ndarray:
    """Standardise ``x`` with the training statistics (each key of a ``use_rep`` list on its own scale)."""
    if not scaling:
        return x
    return ((x - np.asarray(scaling["mean"])) / np.asarray(scaling["std"])).astype(np.float32)


def _blocks(adata: AnnData, seed: int) -> np.ndarray | None:
    """Spatial CV blocks of ``adata``'s spots, or ``None`` without ``obsm["spatial"]``."""
    if "spatial" not in adata.obsm:
        return None
    return spatial_blocks(np.asarray(adata.obsm["spatial"])[:, :2], random_state=seed)


def _cv_groups(query, refs, test_mask, seed) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Grouped-CV labels of the training spots: (folds, spatial blocks made unique across sections).

    Folds are the reference sections when there are several, else the spatial blocks of the one
    training section (the reference, or the query's train spots within a slice).
    """
    if test_mask is not None:
        blocks = _blocks(query[~test_mask], seed)
        return blocks, blocks
    per_ref = [_blocks(ref, seed) for ref in refs]
    blocks = None
    if all(b is not None for b in per_ref):
        blocks = np.concatenate([b + N_BLOCKS * i for i, b in enumerate(per_ref)])
    if len(refs) == 1:
        return blocks, blocks
    return np.repeat(np.arange(len(refs)), [ref.n_obs for ref in refs]), blocks


def _layer_name(layer: str | None) -> str:
    return "X" if layer is None else f"layers[{layer!r}]"


def _expression(adata: AnnData, layer: str | None, idx: np.ndarray, what: str) -> np.ndarray:
    """Dense float32 expression of the genes at ``idx`` (only those columns are densified)."""
    mat = get_matrix(adata, layer, finite=False)
    sub = mat[:, idx]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    name = f"{what}.{_layer_name(layer)}"
    check_numeric(sub, name)
    check_finite(sub, name)
    return sub.astype(np.float32, copy=False)


def _as_list(reference: AnnData | Sequence[AnnData]) -> list[AnnData]:
    from anndata import AnnData

    refs = [reference] if isinstance(reference, AnnData) else list(reference)
    if not refs or not all(isinstance(r, AnnData) for r in refs):
        raise InvalidParameterError("reference must be an AnnData or a non-empty list of AnnData objects.")
    return refs


def _default_genes(refs: list[AnnData], query: AnnData) -> list[str]:
    """The first reference's genes that every other reference and the query also have, in its order."""
    shared = refs[0].var_names
    for other in [*refs[1:], query]:
        shared = shared[shared.isin(other.var_names)]
    if len(shared) == 0:
        raise StmorphKeyError(
            "the reference(s) and the query share no gene names; check that var_names use the same "
            f"identifiers (reference: e.g. {list(refs[0].var_names[:3])}, query: e.g. {list(query.var_names[:3])})."
        )
    return list(shared)


@checks_keys("layer")
def reference_hvgs(reference: AnnData | Sequence[AnnData], n_top: int = 1000, *, layer: str | None = None) -> list[str]:
    """BLEEP's gene set: the union of each reference section's ``n_top`` most variable genes, never the query's.

    BLEEP trains on the union of the highly variable genes of its training sections; choosing the
    genes on the query would leak the held-out section into training. Genes are ranked by the
    variance of ``X`` (or ``layers[layer]``, e.g. log1p values) within each section; the union
    keeps the first section's order, then each later section's new genes.

    Parameters
    ----------
    reference
        The reference section(s).
    n_top
        Genes taken from each section.
    layer
        Expression to rank (``None``: ``X``).

    Returns
    -------
    Gene names, to pass as ``genes=`` to :func:`predict` (the query must have them).

    Examples
    --------
    >>> import stmorph as st
    >>> refs = [st.datasets.simulate(50, 20, seed=s).tables["table"] for s in (1, 2)]
    >>> genes = st.tl.reference_hvgs(refs, n_top=5)
    >>> 5 <= len(genes) <= 10
    True
    """
    check_range(n_top, "n_top", low=1, inclusive=True)
    chosen: dict[str, None] = {}
    for ref in _as_list(reference):
        mat = get_matrix(ref, layer)
        if sparse.issparse(mat):
            variance = np.asarray(mat.power(2).mean(axis=0)).ravel() - np.asarray(mat.mean(axis=0)).ravel() ** 2
        else:
            variance = np.asarray(mat, dtype=np.float64).var(axis=0)
        top = np.argsort(-variance, kind="stable")[:n_top]
        chosen.update(dict.fromkeys(ref.var_names[np.sort(top)]))
    return list(chosen)


def _gene_list(genes: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    chosen = list(default) if genes is None else ([genes] if isinstance(genes, str) else list(genes))
    if not chosen:
        raise InvalidParameterError("genes is empty; pass at least one gene name.")
    if len(set(chosen)) != len(chosen):
        dup = pd.Index(chosen)[pd.Index(chosen).duplicated()].unique().tolist()
        raise InvalidParameterError(f"genes holds duplicated names, e.g. {dup[:5]}; pass each gene once.")
    return chosen


def _split(n_obs: int, fraction: float, random_state: int) -> np.ndarray:
    """Seeded boolean mask of the held-out test spots."""
    n_test = round(fraction * n_obs)
    if n_test < 1:
        raise TooFewObservationsError(
            f"split={fraction} of {n_obs} spots holds out no spot; use a larger split or more spots."
        )
    test = np.zeros(n_obs, dtype=bool)
    test[np.random.default_rng(random_state).choice(n_obs, n_test, replace=False)] = True
    return test


def _plain(value: Any) -> Any:
    """An h5ad-serialisable copy of ``value`` (``None`` entries dropped, sequences as arrays)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


def _training_data(query, x_query, refs, use_rep, layer, genes, kind, test_mask):
    """Training inputs and expression: the query's train spots (within a slice) or all reference spots."""
    if test_mask is not None:
        y = _expression(query, layer, get_genes(query, genes, what="query"), "query")
        return x_query[~test_mask], y[~test_mask]
    xs, ys = [], []
    for i, ref in enumerate(refs):
        what = "reference" if len(refs) == 1 else f"reference[{i}]"
        check_unique_names(ref, "var")
        xs.append(_inputs(ref, use_rep, kind, what))
        if xs[0].shape[1:] != xs[-1].shape[1:]:
            check_same_shape(xs[-1].shape[1:], xs[0].shape[1:], f"{what}.obsm{_rep_keys(use_rep)}", "reference[0]")
        ys.append(_expression(ref, layer, get_genes(ref, genes, what=what), what))
    return np.concatenate(xs), np.concatenate(ys)


def _new_model(method: str, random_state: int, device: str, progress: bool, kwargs: Mapping[str, Any]) -> Predictor:
    cls = get_method(method)
    _check_method_kwargs(cls, kwargs)
    return cls(random_state=random_state, device=device, progress=progress, **kwargs)


AUTO = "auto"
DEFAULT_CANDIDATES: tuple = (("knn", {"k": "cv"}), ("ridge", {"alpha": "cv", "standardize": True}))
"""The candidates of ``method="auto"``: the fast ones. ``mlp`` and frozen ``bleep``/``heclip`` on request: on
the HER2ST leave-one-section-out grid none of them beat knn (docs/benchmarks.md), and each costs a network
fit per fold."""


def _label(name: str, options: Mapping[str, Any]) -> str:
    return name + ("(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else "")


def _candidates(candidates: Sequence | None) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, method, options)`` of each candidate (a method name or a ``(name, options)`` pair), checked."""
    items = list(DEFAULT_CANDIDATES if candidates is None else candidates)
    if not items:
        raise InvalidParameterError('candidates is empty; name at least one method for method="auto".')
    parsed = []
    for item in items:
        name, options = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        if name == AUTO:
            raise InvalidParameterError('"auto" cannot be its own candidate.')
        cls = get_method(name)  # unknown names raise, listing the registered methods
        _check_method_kwargs(cls, options)
        if cls(**options).input != "embedding":
            raise InvalidParameterError(
                f'candidate {name!r} trains on patches; method="auto" compares embedding methods.'
            )
        parsed.append((_label(name, options), name, options))
    if len({label for label, _, _ in parsed}) != len(parsed):
        raise InvalidParameterError(f"candidates holds duplicates: {[label for label, _, _ in parsed]}.")
    return parsed


def _select(candidates, x_train, y_train, groups, blocks, random_state, device):
    """Nested grouped CV of the candidates; returns the winner's ``(method, options)`` and the CV table."""
    groups = check_groups(groups, len(x_train), 'method="auto"')
    labels = [label for label, _, _ in candidates]
    makers = [
        (lambda name=name, options=options: _new_model(name, random_state, device, False, options))
        for _, name, options in candidates
    ]
    table = cross_validate(makers, labels, x_train, y_train, groups, blocks)
    best = best_candidate(table, labels)
    for label in labels:
        logger.info(
            "auto: %s mean HVG-50 Pearson %.3f", label, table["pearson_hvg50"][table["candidate"] == label].mean()
        )
    logger.info("auto: chose %s by %d-fold grouped CV", best, len(np.unique(groups)))
    _, name, options = candidates[labels.index(best)]
    return name, options, {**table, "selected": best}


def _reference_tables(reference: Any, table_key: str | None) -> Any:
    """``reference`` with each SpatialData replaced by its table (AnnData kept as they are)."""
    if reference is None:
        return None
    one = is_spatialdata(reference) or not isinstance(reference, Sequence)
    tables = [
        table_of(item, table_key if is_spatialdata(item) else None, name="st.tl.predict (reference)")
        for item in ([reference] if one else reference)
    ]
    return tables[0] if one else tables


@doc_params("copy")
@checks_keys("layer", "key_added", "table_key", many=("use_rep",))
def predict(
    query: AnnData | SpatialData,
    reference: AnnData | SpatialData | Sequence[AnnData | SpatialData] | None = None,
    *,
    method: str | None = None,
    use_rep: str | Sequence[str] | None = None,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    split: float | None = None,
    candidates: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
    key_added: str | None = None,
    model: Predictor | None = None,
    return_model: bool = False,
    random_state: int = 0,
    device: str = "auto",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    table_key: str | None = None,
    progress: bool = True,
    copy: bool = False,
    **method_kwargs: Any,
) -> AnnData | Predictor | None:
    """Predict expression from image embeddings (or patches) with a registered method.

    Three ways to get a model:

    - **Across slices** (``reference=``): fit on every spot of the reference slice(s) and predict
      every spot of ``query``. Several references are concatenated after aligning their genes.
    - **Within a slice** (``split=``, the EPS paper's protocol): hold out a seeded random fraction
      of ``query``'s spots as test, fit on the rest, and predict every spot (train spots get
      in-sample predictions; :func:`~stmorph.tl.evaluate` scores the test spots only).
    - **A fitted model** (``model=``, from an earlier call with ``return_model=True`` or from
      :func:`stmorph.models.load`): predict a new slice without refitting.

    Parameters
    ----------
    query
        Slice to predict; its spots need ``obsm[use_rep]``. A SpatialData stands for its table
        (``table_key``; the predictions are written into that table).
    reference
        Training slice(s), each with ``obsm[use_rep]`` and the expression in ``X`` or ``layers[layer]``
        (SpatialData: their table ``table_key``, or their only table).
    method
        One of :func:`~stmorph.tl.list_methods`: ``"linear"``, ``"ridge"`` (α=1), ``"mlp"`` (one
        hidden layer of 256), ``"lightgbm"`` (100 trees per gene), and the end-to-end methods
        registered by other modules; ``"knn"`` (untrained top-k retrieval); or ``"auto"``: choose
        among ``candidates`` by nested grouped cross-validation (leave one reference section out,
        or spatial blocks within one section) and refit the winner on all training spots.
        Optional with ``model=``.
    use_rep
        Key in ``obsm`` with ``(n, d)`` image embeddings, or ``(n, P, P, 3)`` uint8 patches for
        methods whose ``input`` is ``"patches"``; or a list of embedding keys, each standardised
        on the training spots and then concatenated. Defaults to the fitted model's with ``model=``.
    layer
        Expression to learn: ``layers[layer]`` or ``X`` when ``None`` (normalised/log1p or scaled
        values, e.g. from ``st.pp.prepare_expression``). Only the chosen genes are densified.
    genes
        Genes to predict. Default: the reference's genes that every reference and the query have,
        in the (first) reference's order; all of the query's genes with ``split=``; the model's
        genes with ``model=``. Genes missing from a reference or the query raise an error.
    split
        Fraction of the query's spots held out as test (in ``(0, 1)``); within-slice mode.
    candidates
        ``method="auto"`` only: method names or ``(name, options)`` pairs; default
        ``knn(k="cv")`` and ``ridge(alpha="cv", standardize=True)``. ``"mlp"``, ``"bleep"``,
        ``"heclip"`` (frozen) can be added; they did not beat knn on the HER2ST sections
        (docs/benchmarks.md) and each trains a network per fold.
    key_added
        Layer name for the prediction; default ``f"predicted_{method}"``.
    model
        A fitted model returned by an earlier call; its genes must exist in ``query``.
    return_model
        Return the fitted model (a :class:`~stmorph.models.Predictor`) instead of ``None``;
        ``query`` is still edited in place. Cannot be combined with ``copy=True``.
    random_state
        Seed of the split and of everything random in fitting.
    device
        Torch device for torch-based methods (``"auto"``: CUDA when available).
    checkpoint
        Torch methods (``mlp``, ``bleep``, ``heclip``, ``stnet``): a folder where the training state
        is saved after every epoch.
    resume
        Continue an interrupted training from ``checkpoint`` (same data and settings): finished
        epochs are not repeated and the predictions equal those of an uninterrupted run. A
        checkpoint made from other inputs, expression or genes, or with other options (e.g.
        ``epochs``), or a damaged one, raises :class:`~stmorph.errors.CheckpointMismatchError`.
    table_key
        The table of SpatialData inputs (``None``: each one's only table).
    progress
        Show progress bars (MLP epochs, LightGBM genes).
    {copy}
    **method_kwargs
        Options of the method, e.g. ``alpha=`` for ridge, ``epochs=``/``val_fraction=`` for the MLP,
        ``n_jobs=`` for LightGBM; unknown options raise an error listing the valid ones.

    Returns
    -------
    ``None`` (scanpy's rule), or the new :class:`~anndata.AnnData` with ``copy=True``, or the
    fitted :class:`~stmorph.models.Predictor` with ``return_model=True`` (to apply with
    ``model=`` to other slices, or ``save`` for the torch methods). Sets on ``query`` (on the
    copy with ``copy=True``):

    ``layers[key]`` : float32 ``n_obs × n_vars`` predictions; **genes not predicted are NaN**.
    ``uns['stmorph']['predict'][key]`` : ``method``, ``params``, ``mode`` (``"across"``,
        ``"within"`` or ``"model"``), ``genes``, ``layer`` (``"X"`` for ``X``), ``use_rep``,
        ``n_train``, ``train_time_s``, ``predict_time_s``, ``random_state``; ``split`` and
        ``n_test`` within a slice; ``history`` (loss curves) for torch methods; with
        ``method="auto"``, ``selected`` (the winning candidate) and ``cv`` (arrays ``candidate``,
        ``fold``, ``pearson_hvg50``, ``pearson_all``: one row per candidate × fold).
    ``obs['stmorph_split']`` : ``"train"``/``"test"`` (categorical), within-slice mode only.

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 20, n_planted=4).tables["table"]
    >>> adata.obsm["X_latent"] = adata.obsm["latent"]
    >>> import scanpy as sc; sc.pp.normalize_total(adata); sc.pp.log1p(adata)
    >>> st.tl.predict(adata, method="ridge", use_rep="X_latent", split=0.2)
    >>> adata.layers["predicted_ridge"].shape
    (200, 20)
    >>> model = st.tl.predict(adata, method="linear", use_rep="X_latent", split=0.2, return_model=True)
    >>> other = st.datasets.simulate(100, 20, n_planted=4, seed=1).tables["table"]
    >>> other.obsm["X_latent"] = other.obsm["latent"]
    >>> st.tl.predict(other, model=model)  # no refit
    """
    _check_options(split, random_state, device, checkpoint, resume=resume, progress=progress, copy=copy)
    check_bool(return_model, "return_model")
    if copy and return_model:
        raise InvalidParameterError(
            "copy=True returns the new AnnData and return_model=True the fitted model; ask for one. "
            "To keep query unchanged and get the model, pass query.copy() with return_model=True."
        )
    query = table_of(query, table_key, name="st.tl.predict")
    reference = _reference_tables(reference, table_key)
    mode = _mode(reference, split, model)
    given = sorted(method_kwargs) + ["checkpoint"] * (checkpoint is not None) + ["resume"] * bool(resume)
    if model is not None:
        if not model.genes or "input_shape" not in model.training:
            raise InvalidParameterError(
                "model= must be a model fitted by st.tl.predict(..., return_model=True); this one was never fitted."
            )
        if method is not None and method != model.name:
            raise InvalidParameterError(f"method={method!r} does not match the fitted model's method {model.name!r}.")
        if given:
            raise InvalidParameterError(f"model= is already fitted; options {given} cannot change it. Refit instead.")
        method, use_rep = model.name, use_rep or model.training.get("use_rep")
    elif method is None:
        raise InvalidParameterError('method is required; choose one of st.tl.list_methods() or "auto".')
    if method == AUTO:
        if given:
            raise InvalidParameterError(
                'method="auto" takes its options per candidate: candidates=[("ridge", {"alpha": 10.0}), "knn"]; '
                f"found {given}."
            )
        parsed = _candidates(candidates)
    elif candidates is not None:
        raise InvalidParameterError(f'candidates= applies to method="auto" only; found method={method!r}.')
    if use_rep is None:
        raise InvalidParameterError("use_rep is required: the obsm key with the image embeddings (or patches).")
    key = key_added or Key.layers.predicted(method)
    check_unique_names(query, "var")

    if mode != "model" and method != AUTO:
        model = _new_model(method, random_state, device, progress, method_kwargs)
        if checkpoint is not None or resume:
            model.set_checkpoint(checkpoint, resume)
    kind = "embedding" if model is None else model.input
    refs = _as_list(reference) if mode == "across" else []
    if mode == "model":
        genes = _gene_list(None, model.genes)
    else:
        genes = _gene_list(genes, _default_genes(refs, query) if refs else query.var_names)
    query_idx = get_genes(query, genes, what="query")
    x_query = _inputs(query, use_rep, kind, "query")
    test_mask = _split(query.n_obs, split, random_state) if mode == "within" else None

    cv_table = None
    if mode == "model":
        check_same_shape(x_query.shape[1:], model.training["input_shape"], f"query.obsm[{use_rep!r}]", "the model")
        x_query = _scale(x_query, model.training.get("scaling"))
    else:
        x_train, y_train = _training_data(query, x_query, refs, use_rep, layer, genes, kind, test_mask)
        check_same_shape(x_query.shape[1:], x_train.shape[1:], f"query.obsm[{use_rep!r}]", "the reference")
        check_n_obs(len(x_train), MIN_TRAIN, f"fitting {method!r} (training spots)")
        scaling = _key_scaling(x_train) if len(_rep_keys(use_rep)) > 1 else None
        x_train, x_query = _scale(x_train, scaling), _scale(x_query, scaling)
        wants_cv = method == AUTO or any(isinstance(v, str) and v == "cv" for v in method_kwargs.values())
        wants_groups = wants_cv or getattr(model, "validates_on_groups", False)  # bleep, heclip
        groups, blocks = _cv_groups(query, refs, test_mask, random_state) if wants_groups else (None, None)
        start = time.perf_counter()
        if method == AUTO:
            name, chosen, cv_table = _select(parsed, x_train, y_train, groups, blocks, random_state, device)
            model = _new_model(name, random_state, device, progress, chosen)
        model.genes = list(genes)  # before fit: a training checkpoint records them
        fit_model(model, x_train, y_train, groups)
        model.training = {
            "use_rep": use_rep if isinstance(use_rep, str) else list(use_rep),
            "layer": "X" if layer is None else layer,
            "input_shape": tuple(x_train.shape[1:]),
            "n_train": len(x_train),
            "train_time_s": time.perf_counter() - start,
            **({"scaling": scaling} if scaling else {}),
        }
        logger.info(
            "predict: fitted %r on %d spots × %d genes in %.1fs",
            method,
            len(x_train),
            len(genes),
            model.training["train_time_s"],
        )

    start = time.perf_counter()
    predicted = np.asarray(model.predict(x_query), dtype=np.float32)
    predict_time = time.perf_counter() - start
    if predicted.shape != (query.n_obs, len(genes)):
        raise RuntimeError(
            f"method {method!r} returned predictions of shape {predicted.shape}; expected {(query.n_obs, len(genes))}."
        )
    out = np.full(query.shape, np.nan, dtype=np.float32)
    out[:, query_idx] = predicted

    record = {
        "method": method,
        "params": _plain(model.get_params()),
        "mode": mode,
        "genes": np.asarray(genes, dtype=object),
        "layer": model.training["layer"],
        "use_rep": use_rep if isinstance(use_rep, str) else np.asarray(use_rep, dtype=object),
        "n_train": int(model.training["n_train"]),
        "train_time_s": float(model.training["train_time_s"]),
        "predict_time_s": float(predict_time),
        "random_state": int(random_state),
    }
    if model.history:
        record["history"] = _plain(model.history)
    if method == AUTO:
        record.update(selected=cv_table["selected"], cv=cv_table)
    obs = {}
    if test_mask is not None:
        record.update(split=float(split), n_test=int(test_mask.sum()))
        labels = pd.Categorical(np.where(test_mask, "test", "train"), categories=["train", "test"])
        if SPLIT_KEY not in query.obs or not np.array_equal(query.obs[SPLIT_KEY].astype(str), np.asarray(labels)):
            obs[SPLIT_KEY] = labels  # the same split again is not a replacement worth a warning

    target = query.copy() if copy else query
    commit_outputs(target, layers={key: out}, obs=obs, uns={Key.uns.tool("predict", key): record})
    if copy:
        return target
    return model if return_model else None
