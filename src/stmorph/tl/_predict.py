"""``st.tl.predict``: fit a registered prediction method on reference spots and predict a query slice.

:func:`predict` checks the call, then hands it to one function per way of getting a model
(:func:`_fit_across`, :func:`_fit_within`, :func:`_apply_model`); each returns a :class:`Fitted`
(the model and the query's inputs) that :func:`predict` applies and writes. The inputs of a fit
(genes, features, cross-validation groups, standardisation) are prepared once, in a
:class:`TrainingData`; how a slice's spots become inputs is an :class:`InputSpec` that the fitted
model keeps in its ``training`` record, so ``model=`` prepares a new slice the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from ..models import (
    N_BLOCKS,
    Calibration,
    Predictor,
    calibrate_model,
    check_level,
    cross_predict,
    make_method,
    spatial_blocks,
    stored_calibration,
)
from ._auto import AUTO, Candidate, affordable, parse_candidates, select, uses_context, without_context
from ._context import DEFAULT as DEFAULT_CONTEXT
from ._context import Context, check_spacings, has_context, parse_context, slice_context, slice_spacing
from ._context import from_record as context_from_record
from ._genes import as_reference_list, gene_list, shared_genes
from ._trust import MIN_EXPECTED_R, Trust, check_min_expected_r, column_pearson, expected_r, reference_eps

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

SPLIT_KEY = Key.obs.split
"""``obs`` column that marks the within-slice ``"train"``/``"test"`` spots."""
MIN_TRAIN = 10
"""Fewest training spots a model is fitted on."""


@dataclass(frozen=True)
class InputSpec:
    """How a slice's spots become model inputs; kept in the fitted model's ``training`` record.

    Attributes
    ----------
    use_rep
        ``obsm`` keys, side by side (embeddings) or one key of ``(n, P, P, 3)`` patches.
    kind
        ``"embedding"`` or ``"patches"`` (the method's ``input``).
    scaling
        Per-column ``mean`` and ``std`` of the training inputs when several keys are combined
        (each key on its own scale); ``None`` otherwise.
    context
        The neighbourhood whose mean (and spread) embedding is appended to each spot's own
        (:mod:`stmorph.tl._context`); ``None``: the spot's own embedding only.
    spacing_um
        Median spot spacing of the training slices in µm (with ``context``), to warn about a query
        whose spots lie much closer or farther apart.
    spatial_key
        ``obsm`` key of the spot centres (context features, spatial CV blocks); a property of the
        slices, not of the model, so it is not recorded.
    """

    use_rep: tuple[str, ...]
    kind: str = "embedding"
    scaling: Mapping[str, Sequence[float]] | None = None
    context: Context | None = None
    spacing_um: float | None = None
    spatial_key: str = Key.obsm.spatial

    def __post_init__(self) -> None:
        if self.kind == "patches" and len(self.use_rep) > 1:
            raise InvalidParameterError(f"methods trained on patches take one use_rep key; found {list(self.use_rep)}.")
        if self.kind == "patches" and self.context is not None:
            raise InvalidParameterError(
                "context= appends the neighbours' embeddings to a spot's own; methods trained on patches take none."
            )

    @property
    def where(self) -> str:
        """Where the inputs are read, for messages: ``obsm['X_a']`` or ``obsm[['X_a', 'X_b']]``."""
        return f"obsm[{self.use_rep[0] if len(self.use_rep) == 1 else list(self.use_rep)!r}]"

    @classmethod
    def of_model(cls, model: Predictor, use_rep: str | Sequence[str] | None, spatial_key: str) -> InputSpec:
        """The spec ``model`` was trained with (``use_rep`` may rename the keys in the new slice)."""
        keys = _rep_keys(use_rep or model.training.get("use_rep"))
        record = model.training.get("context")
        spacing = record.get("spacing_um") if record else None
        context = context_from_record(record)
        return cls(keys, model.input, model.training.get("scaling"), context, spacing, spatial_key)

    def read(self, adata: AnnData, what: str) -> np.ndarray:
        """The raw inputs of every spot of ``adata``: ``(n, d)`` float32 embeddings or uint8 patches."""
        try:
            if self.kind == "patches":
                return get_patches(adata, self.use_rep[0])
            x = np.concatenate([get_rep(adata, key).astype(np.float32, copy=False) for key in self.use_rep], axis=1)
        except (KeyError, ValueError) as err:  # name which object failed (query or which reference)
            raise type(err)(f"{what}: {err}") from None
        return x if self.context is None else slice_context(adata, x, self.context, what, self.spatial_key)

    def scale(self, x: np.ndarray) -> np.ndarray:
        """``x`` standardised with the training statistics (unchanged without them)."""
        if not self.scaling:
            return x
        return ((x - np.asarray(self.scaling["mean"])) / np.asarray(self.scaling["std"])).astype(np.float32)

    def fitted_to(self, x_train: np.ndarray) -> InputSpec:
        """This spec with the standardisation of ``x_train`` when several keys are combined."""
        if len(self.use_rep) < 2:
            return self
        std = x_train.std(axis=0, dtype=np.float64)
        scaling = {"mean": x_train.mean(axis=0, dtype=np.float64).tolist(), "std": np.where(std > 0, std, 1.0).tolist()}
        return replace(self, scaling=scaling)

    def spaced(self, slices: Sequence[AnnData], what: Sequence[str]) -> InputSpec:
        """This spec with the median spot spacing of the training ``slices`` (with context; warns when they differ)."""
        if self.context is None:
            return self
        spacings = [slice_spacing(adata, name, self.spatial_key) for adata, name in zip(slices, what)]
        check_spacings(spacings, what)
        return replace(self, spacing_um=float(np.median(spacings)))

    def check_query(self, query: AnnData) -> None:
        """Warn when the query's spots are spaced much unlike the training slices' (with context)."""
        if self.context is not None and self.spacing_um is not None:
            spacing = slice_spacing(query, "query", self.spatial_key)
            check_spacings([self.spacing_um, spacing], ["the references", "the query"])

    def own_only(self, width: int) -> InputSpec:
        """The spec of the first ``width`` input columns: the spots' own embeddings, without context."""
        scaling = None if not self.scaling else {k: list(v)[:width] for k, v in self.scaling.items()}
        return replace(self, scaling=scaling, context=None, spacing_um=None)

    def record(self) -> dict[str, Any]:
        """The entries of the model's ``training`` record."""
        use_rep = self.use_rep[0] if len(self.use_rep) == 1 else list(self.use_rep)
        record = {"use_rep": use_rep, **({"scaling": dict(self.scaling)} if self.scaling else {})}
        if self.context is not None:
            record["context"] = {**self.context.record(), "spacing_um": self.spacing_um}
        return record


@dataclass
class TrainingData:
    """Everything a fit reads, prepared once: genes, inputs, expression and cross-validation groups.

    Attributes
    ----------
    genes
        The predicted genes (``y``'s columns).
    x, y
        Training inputs (standardised as ``spec`` says) and float32 expression.
    spec
        How the inputs were made (fitted standardisation included).
    layer
        Expression source: ``"X"`` or the layer name.
    groups
        Fold labels: the reference sections when there are several, else spatial blocks of the
        one training section; ``None`` when no method option asks for them.
    blocks
        Spatial blocks of the training spots, unique across sections (inner folds of nested CV).
    sections
        The reference section of each training spot (``None``: one section, within a slice): the
        references' EPS are computed per section, and BLEEP and HECLIP take each section's most
        variable genes.
    oof
        Out-of-fold predictions of the training spots over ``groups`` (``trust=True``), from
        ``method="auto"``'s CV or :func:`~stmorph.models._cv.cross_predict`.
    """

    genes: list[str]
    x: np.ndarray
    y: np.ndarray
    spec: InputSpec
    layer: str
    groups: np.ndarray | None = None
    blocks: np.ndarray | None = None
    sections: np.ndarray | None = None
    oof: np.ndarray | None = None


@dataclass
class Request:
    """The caller's choices of a fit, checked once: what to fit and on which inputs."""

    method: str
    spec: InputSpec
    layer: str | None
    genes: Sequence[str] | str | None
    model: Predictor | None
    """The unfitted model; ``None`` for ``method="auto"`` (chosen by CV)."""
    candidates: list[Candidate] | None
    common: dict[str, Any]
    """``random_state``, ``device``, ``progress``."""
    interval: float | None = None
    """Nominal coverage of the intervals to calibrate, or ``None``."""
    trust: bool = False
    """Also predict the training spots out of fold (expected accuracy per gene)."""
    optional_context: bool = False
    """``auto`` with ``context=None``: drop the context candidates when a slice lacks coordinates or pixel size."""
    default_candidates: bool = False
    """``auto`` with ``candidates=None``: drop the network candidates when their fits are not affordable."""

    @property
    def needs_groups(self) -> bool:
        """Whether the fit reads CV groups: ``auto``, ``"cv"`` options, group-validated methods, trust, intervals."""
        if self.model is None or self.trust or self.interval is not None:
            return True
        tuned = any(isinstance(v, str) and v == "cv" for v in self.model.params.values())
        return tuned or getattr(self.model, "validates_on_groups", False)


@dataclass
class Fitted:
    """A fitted model, the query's inputs, and what the mode adds to the record and to ``obs``."""

    model: Predictor
    x_query: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)
    obs: dict[str, Any] = field(default_factory=dict)
    data: TrainingData | None = None
    """What the model was fitted on (``None`` with ``model=``)."""
    test: tuple[np.ndarray, np.ndarray] | None = None
    """Within a slice: the test spots' mask and their expression."""


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


def _rep_keys(use_rep: str | Sequence[str] | None) -> tuple[str, ...]:
    """``use_rep`` as a non-empty tuple of unique ``obsm`` keys."""
    if use_rep is None:
        raise InvalidParameterError("use_rep is required: the obsm key with the image embeddings (or patches).")
    keys = [use_rep] if isinstance(use_rep, str) else list(use_rep)
    if not keys or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise InvalidParameterError(
            f"use_rep must be an obsm key or a non-empty list of distinct keys; found {use_rep!r}."
        )
    return tuple(keys)


def _expression(adata: AnnData, layer: str | None, genes: Sequence[str], what: str) -> np.ndarray:
    """Dense float32 expression of ``genes`` (only those columns are densified)."""
    sub = get_matrix(adata, layer, finite=False)[:, get_genes(adata, genes, what=what)]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    name = f"{what}.{'X' if layer is None else f'layers[{layer!r}]'}"
    check_numeric(sub, name)
    check_finite(sub, name)
    return sub.astype(np.float32, copy=False)


def _blocks(adata: AnnData, seed: int, spatial_key: str) -> np.ndarray | None:
    """Spatial CV blocks of ``adata``'s spots, or ``None`` without ``obsm[spatial_key]``."""
    if spatial_key not in adata.obsm:
        return None
    return spatial_blocks(np.asarray(adata.obsm[spatial_key])[:, :2], random_state=seed)


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


def _request(
    method: str | None,
    use_rep: str | Sequence[str] | None,
    layer: str | None,
    genes: Sequence[str] | str | None,
    candidates: Sequence | None,
    options: Mapping[str, Any],
    common: dict[str, Any],
    checkpoint: str | os.PathLike | None,
    resume: bool,
    context: bool | Mapping[str, Any] | None = None,
    spatial_key: str = Key.obsm.spatial,
) -> Request:
    """Check what to fit before any data is read: the method and its options, or ``auto``'s candidates."""
    if method is None:
        raise InvalidParameterError('method is required; choose one of st.tl.list_methods() or "auto".')
    if method != AUTO and candidates is not None:
        raise InvalidParameterError(f'candidates= applies to method="auto" only; found method={method!r}.')
    if method == AUTO:
        given = sorted(options) + ["checkpoint"] * (checkpoint is not None) + ["resume"] * bool(resume)
        if given:
            raise InvalidParameterError(
                'method="auto" takes its options per candidate: candidates=[("ridge", {"alpha": 10.0}), "knn"]; '
                f"found {given}."
            )
        parsed = parse_candidates(candidates)
        parsed_context = parse_context(DEFAULT_CONTEXT if context is None else context)
        spec = InputSpec(_rep_keys(use_rep), context=parsed_context, spatial_key=spatial_key)
        if spec.context is None or not uses_context(parsed):
            parsed, spec = without_context(parsed), replace(spec, context=None)
        if not parsed:
            raise InvalidParameterError('context=False leaves method="auto" no candidate without context.')
        return Request(
            method,
            spec,
            layer,
            genes,
            None,
            parsed,
            common,
            optional_context=context is None,
            default_candidates=candidates is None,
        )
    model = make_method(method, options, **common)
    if checkpoint is not None or resume:
        model.set_checkpoint(checkpoint, resume)
    spec = InputSpec(_rep_keys(use_rep), model.input, context=parse_context(context), spatial_key=spatial_key)
    return Request(method, spec, layer, genes, model, None, common)


def _settle_context(request: Request, slices: Sequence[AnnData]) -> Request:
    """``auto``'s request without its context candidates when it may drop them and a slice has no coordinates."""
    if (
        not request.optional_context
        or request.spec.context is None
        or all(has_context(s, request.spec.spatial_key) for s in slices)
    ):
        return request
    logger.info("auto: context candidates skipped: a slice lacks obsm[%r] or its pixel size", request.spec.spatial_key)
    spec = replace(request.spec, context=None)
    return replace(request, spec=spec, candidates=without_context(request.candidates), optional_context=False)


def _fit(request: Request, data: TrainingData) -> tuple[Predictor, dict[str, Any]]:
    """Train the requested model (``auto``: choose it first by nested grouped CV); returns it and the record extras."""
    check_n_obs(len(data.x), MIN_TRAIN, f"fitting {request.method!r} (training spots)")
    extra: dict[str, Any] = {}
    start = time.perf_counter()
    model = request.model
    needs_oof = request.trust or request.interval is not None  # expected r and intervals share them
    if model is None:
        width = None if data.spec.context is None else data.x.shape[1] // data.spec.context.multiplier
        candidates = request.candidates
        if request.default_candidates:
            candidates = affordable(candidates, len(data.x), len(np.unique(data.groups)))
        model, context, cv_table, oof = select(
            candidates, data.x, data.y, data.groups, data.blocks, width, **request.common
        )
        if width is not None and not context:  # the winner reads the spots' own embeddings only
            data.x, data.spec = data.x[:, :width], data.spec.own_only(width)
        extra = {"selected": cv_table["selected"], "cv": cv_table}
        data.oof = oof if needs_oof else None
    elif needs_oof:
        quiet = {**request.common, "progress": False}
        data.oof = cross_predict(
            lambda: make_method(model.name, model.params, **quiet), data.x, data.y, data.groups, data.blocks
        )[0]
    layer = {"layer": data.layer}
    inputs = {**data.spec.record(), **layer}
    model.train(data.x, data.y, genes=data.genes, groups=data.groups, sections=data.sections, inputs=inputs)
    if request.interval is not None:
        calibrate_model(model, data.x, data.y, data.groups, data.blocks, request.interval, oof=data.oof)
    extra["train_time_s"] = time.perf_counter() - start  # the CV of auto included
    logger.info(
        "predict: fitted %r on %d spots × %d genes in %.1fs",
        request.method,
        len(data.x),
        len(data.genes),
        extra["train_time_s"],
    )
    return model, extra


def _fit_across(query: AnnData, refs: list[AnnData], request: Request) -> Fitted:
    """Across slices: train on every reference spot; the query's inputs are prepared the same way."""
    request = _settle_context(request, [*refs, query])
    genes = gene_list(request.genes, shared_genes(refs, query))
    get_genes(query, genes, what="query")  # a gene the query lacks fails before training
    names = ["reference"] if len(refs) == 1 else [f"reference[{i}]" for i in range(len(refs))]
    xs, ys = [], []
    for ref, what in zip(refs, names):
        check_unique_names(ref, "var")
        xs.append(request.spec.read(ref, what))
        if xs[0].shape[1:] != xs[-1].shape[1:]:
            check_same_shape(xs[-1].shape[1:], xs[0].shape[1:], f"{what}.{request.spec.where}", names[0])
        ys.append(_expression(ref, request.layer, genes, what))
    x_train = np.concatenate(xs)
    x_query = request.spec.read(query, "query")
    check_same_shape(x_query.shape[1:], x_train.shape[1:], f"query.{request.spec.where}", "the reference")
    spec = request.spec.fitted_to(x_train).spaced(refs, names)
    spec.check_query(query)
    data = TrainingData(genes, spec.scale(x_train), np.concatenate(ys), spec, _layer_name(request.layer))
    data.sections = np.repeat(np.arange(len(refs)), [len(x) for x in xs])
    if request.needs_groups:
        data.groups, data.blocks = _reference_groups(refs, request.common["random_state"], spec.spatial_key)
    model, extra = _fit(request, data)
    return Fitted(model, _as_trained(spec.scale(x_query), data), extra, data=data)


def _fit_within(query: AnnData, split: float, request: Request) -> Fitted:
    """Within a slice: hold out a seeded fraction of the query's spots and train on the rest."""
    request = _settle_context(request, [query])
    genes = gene_list(request.genes, query.var_names)
    test = _split(query.n_obs, split, request.common["random_state"])
    x = request.spec.read(query, "query")
    spec = request.spec.fitted_to(x[~test]).spaced([query], ["query"])
    y = _expression(query, request.layer, genes, "query")
    data = TrainingData(genes, spec.scale(x[~test]), y[~test], spec, _layer_name(request.layer))
    if request.needs_groups:
        data.groups = data.blocks = _blocks(query[~test], request.common["random_state"], spec.spatial_key)
    model, extra = _fit(request, data)
    labels = pd.Categorical(np.where(test, "test", "train"), categories=["train", "test"])
    same = SPLIT_KEY in query.obs and np.array_equal(query.obs[SPLIT_KEY].astype(str), np.asarray(labels))
    obs = {} if same else {SPLIT_KEY: labels}  # the same split again is not a replacement worth a warning
    record = {**extra, "split": float(split), "n_test": int(test.sum())}
    return Fitted(model, _as_trained(spec.scale(x), data), record, obs, data=data, test=(test, y[test]))


def _as_trained(x_query: np.ndarray, data: TrainingData) -> np.ndarray:
    """The query's inputs cut to the columns the model was trained on (``auto`` may drop the context)."""
    return x_query[:, : data.x.shape[1]] if x_query.ndim == 2 else x_query


def _apply_model(
    query: AnnData,
    model: Predictor,
    method: str | None,
    use_rep: str | Sequence[str] | None,
    given: list[str],
    spatial_key: str,
) -> Fitted:
    """A fitted model: check it matches the call, then prepare the query as it was trained."""
    if not isinstance(model, Predictor) or not model.is_trained:
        raise InvalidParameterError(
            "model= must be a model fitted by st.tl.predict(..., return_model=True); this one was never fitted."
        )
    if method is not None and method != model.name:
        raise InvalidParameterError(f"method={method!r} does not match the fitted model's method {model.name!r}.")
    if given:
        raise InvalidParameterError(f"model= is already fitted; options {given} cannot change it. Refit instead.")
    spec = InputSpec.of_model(model, use_rep, spatial_key)
    get_genes(query, model.genes, what="query")
    spec.check_query(query)
    x_query = spec.read(query, "query")
    check_same_shape(x_query.shape[1:], model.training["input_shape"], f"query.{spec.where}", "the model")
    return Fitted(model, spec.scale(x_query))


def _layer_name(layer: str | None) -> str:
    return "X" if layer is None else layer


def _reference_groups(refs: list[AnnData], seed: int, spatial_key: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Fold labels of the reference spots (their sections; one section: its spatial blocks) and the blocks."""
    per_ref = [_blocks(ref, seed, spatial_key) for ref in refs]
    blocks = None
    if all(b is not None for b in per_ref):
        blocks = np.concatenate([b + N_BLOCKS * i for i, b in enumerate(per_ref)])
    if len(refs) == 1:
        return blocks, blocks
    return np.repeat(np.arange(len(refs)), [ref.n_obs for ref in refs]), blocks


def _predictions(model: Predictor, x_query: np.ndarray, query: AnnData) -> tuple[np.ndarray, float]:
    """The ``n_obs × n_vars`` float32 layer (NaN for genes not predicted) and the predict time."""
    start = time.perf_counter()
    predicted = np.asarray(model.predict(x_query), dtype=np.float32)
    seconds = time.perf_counter() - start
    if predicted.shape != (query.n_obs, len(model.genes)):
        raise RuntimeError(
            f"method {model.name!r} returned predictions of shape {predicted.shape}; "
            f"expected {(query.n_obs, len(model.genes))}."
        )
    out = np.full(query.shape, np.nan, dtype=np.float32)
    out[:, get_genes(query, model.genes, what="query")] = predicted
    return out, seconds


def _interval_record(calibration: Calibration) -> dict[str, Any]:
    """The ``interval`` entry of the record: level, scale and the CV that chose the scale."""
    cv = {"cv": calibration.table} if calibration.table else {}  # no table: fewer than three folds
    return {"level": calibration.level, "scale": calibration.scale, **cv}


def _trust_of(fitted: Fitted, predicted: np.ndarray, eps: bool, random_state: int) -> Trust | None:
    """Per-gene trust of the prediction ``predicted`` (query spots × the model's genes); ``None`` without one.

    Within a slice the expected r is the test spots' r; across slices it comes from the out-of-fold
    predictions of the references (:func:`~stmorph.tl._trust.expected_r`). With ``eps``, the EPS
    of every training section on its own image graph of the spots' own embeddings (embeddings only;
    never the context features: EPS measures what a spot's own image carries).
    """
    data = fitted.data
    if fitted.test is not None:
        test, y_test = fitted.test
        trust = Trust(column_pearson(y_test, predicted[test]), np.full(y_test.shape[1], np.nan))
    elif data is not None and data.oof is not None:
        trust = Trust(*expected_r(data.oof, data.y, data.groups, predicted))
    else:
        return None
    if eps and data.spec.kind == "embedding":
        sections = np.zeros(len(data.x), dtype=int) if data.sections is None else data.sections
        own = data.x[:, : data.x.shape[1] // data.spec.context.multiplier] if data.spec.context else data.x
        xs = [own[sections == s] for s in np.unique(sections)]  # EPS never reads the context
        ys = [data.y[sections == s] for s in np.unique(sections)]
        trust.eps, trust.eps_qval = reference_eps(xs, ys, len(data.genes), random_state)
    return trust


def _wants_trust(trust: bool | None, request: Request) -> bool:
    """``trust=``, or by default: on unless the method trains a network (one more training per reference)."""
    if trust is not None:
        return trust
    trains_network = request.model is not None and request.model.resumable
    if trains_network:
        logger.info(
            "predict: no expected accuracy for %r by default (one more training per fold); trust=True", request.method
        )
    return not trains_network


def _trust_columns(trust: Trust | None, query: AnnData, genes: Sequence[str], key: str, min_r: float) -> dict:
    """The trust ``var`` columns over all of ``query``'s genes (NaN, or ``False``, for genes not predicted)."""
    if trust is None:
        return {}
    idx = get_genes(query, genes, what="query")
    out = {}
    for name, values in trust.columns(key, min_r).items():
        full = np.zeros(query.n_vars, dtype=bool) if values.dtype == bool else np.full(query.n_vars, np.nan)
        full[idx] = values
        out[name] = full
    return out


def _record(method: str, mode: str, fitted: Fitted, predict_time: float, random_state: int) -> dict[str, Any]:
    """The ``uns`` record of a prediction (see :func:`predict`)."""
    model, use_rep = fitted.model, fitted.model.training["use_rep"]
    record = {
        "method": method,
        "params": _plain(model.get_params()),
        "mode": mode,
        "genes": np.asarray(model.genes, dtype=object),
        "layer": model.training["layer"],
        "use_rep": use_rep if isinstance(use_rep, str) else np.asarray(use_rep, dtype=object),
        "n_train": int(model.training["n_train"]),
        "train_time_s": float(model.training["train_time_s"]),
        "predict_time_s": float(predict_time),
        "random_state": int(random_state),
        **fitted.record,
    }
    if "context" in model.training:
        record["context"] = _plain(model.training["context"])
    if model.history:
        record["history"] = _plain(model.history)
    return record


def _interval_layers(fitted: Fitted, predicted: np.ndarray, query: AnnData, key: str) -> dict[str, np.ndarray]:
    """``{key}_lower`` and ``{key}_upper`` from the model's calibration (empty without intervals)."""
    calibration = fitted.model.calibration
    columns = get_genes(query, fitted.model.genes, what="query")
    lower, upper = calibration.intervals(predicted, columns, fitted.x_query)
    fitted.record["interval"] = _interval_record(calibration)
    return dict(zip(Key.layers.interval(key), (lower, upper)))


@doc_params("spatial_key", "copy")
@checks_keys("layer", "key_added", "spatial_key", "table_key", many=("use_rep",))
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
    interval: float | None = None,
    context: bool | Mapping[str, Any] | None = None,
    spatial_key: str = Key.obsm.spatial,
    key_added: str | None = None,
    model: Predictor | None = None,
    return_model: bool = False,
    random_state: int = 0,
    device: str = "auto",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    trust: bool | None = None,
    eps: bool = True,
    min_expected_r: float = MIN_EXPECTED_R,
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
        in the (first) reference's order; all of the query's genes with ``split=``. A ``model=``
        predicts the genes it was fitted on (passing ``genes=`` with it raises an error). Genes
        missing from a reference or the query raise an error.
    split
        Fraction of the query's spots held out as test (in ``(0, 1)``); within-slice mode.
    candidates
        ``method="auto"`` only: method names or ``(name, options)`` pairs; an option
        ``context=True`` makes the candidate read the context features, and an ``"ensemble"``
        without ``members`` is the z-scored average of the ``n_best`` other candidates whose average
        is best by a CV inside each fold among the candidates that train no network (so its score is
        honest). Default: ``knn(k="cv")`` and ``ridge(alpha="cv", standardize=True)``, each without
        and with context, ``ensemble(n_best=2)``, and frozen ``bleep`` with context when the training
        spots × CV folds are at most :data:`~stmorph.tl._auto.NETWORK_SPOT_FITS` (4,000: about two
        minutes of fits on 2 CPU cores; above it ``auto`` logs that it skipped BLEEP). ``"mlp"``,
        ``"heclip"`` (frozen) can be added; they did not beat these on the HER2ST sections
        (docs/benchmarks.md) and each trains a network per fold.
    interval
        Nominal coverage in ``(0, 1)`` of prediction intervals per spot × gene (e.g. ``0.9``), or
        ``None`` for none. Split conformal: the training spots are predicted out of fold (leave one
        reference section out; spatial blocks of a single section, which needs
        ``obsm["spatial"]``), and each gene's interval is the prediction ± the conformal quantile
        of the out-of-fold residuals times a per-spot × gene scale chosen by the same grouped CV
        (see docs/methods/trust.md). Valid when the query and the reference sections are
        exchangeable. With ``model=``, the model's stored calibration is used (it must have been
        fitted with the same ``interval``).
    context
        Append to each spot's embedding the mean embedding of its spatial neighbours in the same
        slice (the tissue around it): ``True`` for the default (the 6 nearest spots, mean only;
        chosen by grouped CV on the HER2ST references), or a dict with ``n_neighbors`` (nearest
        spots) or ``radius`` (µm; from ``obsm[spatial_key]`` times the slice's pixel size), and
        optionally ``spread=True`` (also the neighbours' standard deviation) and
        ``isolated="self"`` (a spot with no neighbour within ``radius`` gets its own embedding
        as context; else such spots raise an error that counts them). Embedding methods only.
        ``None`` (default): no context, except for ``method="auto"``, whose context candidates use
        the default when every slice has coordinates and a pixel size (``False``: none). The fitted
        model keeps its context, so ``model=`` and a saved model prepare a new slice the same way;
        a query whose spot spacing differs from the references' by more than 1.5× is warned
        about. EPS never uses context (``exclude_radius`` is its spatial control).
    {spatial_key}
        Read for ``context`` and for the spatial blocks of cross-validation within one section;
        every slice (query and references) keeps its centres under this key.
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
    trust
        Write how far to trust each gene (``docs/methods/trust.md``): across slices, the expected
        held-out Pearson from leave-one-reference-out predictions of the same method (one
        reference: its spatial blocks; ``method="auto"`` reuses its CV, other methods fit once
        more per fold); within a slice, the test spots' Pearson. Nothing with ``model=``.
        ``None`` (default): on, except for methods that train a network (``mlp``, ``bleep``,
        ``heclip``, ``stnet``), where it would train one more network per reference section
        (pass ``trust=True`` for them).
    eps
        With ``trust``: also the EPS of every training section on its own image graph of
        ``use_rep`` (embeddings only), their Stouffer-combined BH q-value and the trusted flag.
    min_expected_r
        Expected r a trusted gene reaches, in [−1, 1] (default 0.15, chosen by cross-validation
        over the HER2ST references).
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
        ``fold``, ``pearson_hvg50``, ``pearson_all``: one row per candidate × fold); with context,
        ``context`` (``n_neighbors`` or ``radius``, ``spread``, ``isolated``, ``spacing_um``).
    ``layers[key + '_lower']``, ``layers[key + '_upper']`` : float32 interval bounds, with
        ``interval=`` (NaN for genes not predicted); the record then holds ``interval``
        (``level``, ``scale``, and ``cv``: the scale selection's table).
    ``obs['stmorph_split']`` : ``"train"``/``"test"`` (categorical), within-slice mode only.
    ``var[f'{key}_expected_r']``, ``var[f'{key}_expected_r_sd']`` : expected Pearson per gene and
        its SD over folds (NaN for genes not predicted; SD NaN within a slice), with ``trust``.
    ``var[f'{key}_eps']``, ``var[f'{key}_eps_qval']``, ``var[f'{key}_trusted']`` : mean EPS over
        the training sections, its q-value, and ``expected_r ≥ min_expected_r`` and q < 0.05
        (``min_expected_r`` in the record), with ``trust`` and ``eps``.

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
    >>> other = st.datasets.simulate(100, 20, n_planted=4, random_state=1).tables["table"]
    >>> other.obsm["X_latent"] = other.obsm["latent"]
    >>> st.tl.predict(other, model=model)  # no refit
    """
    _check_options(split, random_state, device, checkpoint, resume=resume, progress=progress, copy=copy, eps=eps)
    if trust is not None:
        check_bool(trust, "trust")
    check_min_expected_r(min_expected_r)
    check_bool(return_model, "return_model")
    if copy and return_model:
        raise InvalidParameterError(
            "copy=True returns the new AnnData and return_model=True the fitted model; ask for one. "
            "To keep query unchanged and get the model, pass query.copy() with return_model=True."
        )
    if interval is not None:
        interval = check_level(interval)
    query = table_of(query, table_key, name="st.tl.predict")
    reference = _reference_tables(reference, table_key)
    mode = _mode(reference, split, model)
    check_unique_names(query, "var")
    wants_trust = False
    if mode == "model":
        given = sorted(method_kwargs) + ["checkpoint"] * (checkpoint is not None) + ["resume"] * bool(resume)
        given += ["candidates"] * (candidates is not None) + ["genes"] * (genes is not None)
        given += ["context"] * (context is not None)
        fitted = _apply_model(query, model, method, use_rep, given, spatial_key)
        if interval is not None:
            stored_calibration(model.calibration, interval)
    else:
        common = {"random_state": random_state, "device": device, "progress": progress}
        request = _request(
            method, use_rep, layer, genes, candidates, method_kwargs, common, checkpoint, resume, context, spatial_key
        )
        request.interval = interval
        wants_trust = _wants_trust(trust, request)
        request.trust = wants_trust and mode == "across"
        if mode == "across":
            fitted = _fit_across(query, as_reference_list(reference), request)
        else:
            fitted = _fit_within(query, split, request)
    method = fitted.model.name if mode == "model" else method
    predicted, predict_time = _predictions(fitted.model, fitted.x_query, query)
    key = key_added or Key.layers.predicted(method)
    layers = {key: predicted, **(_interval_layers(fitted, predicted, query, key) if interval is not None else {})}
    record = _record(method, mode, fitted, predict_time, random_state)
    var = {}
    if wants_trust:
        mine = predicted[:, get_genes(query, fitted.model.genes, what="query")]
        var = _trust_columns(_trust_of(fitted, mine, eps, random_state), query, fitted.model.genes, key, min_expected_r)
    if var:
        record["min_expected_r"] = float(min_expected_r)
    target = query.copy() if copy else query
    commit_outputs(target, layers=layers, obs=fitted.obs, var=var, uns={Key.uns.tool("predict", key): record})
    if copy:
        return target
    return fitted.model if return_model else None
