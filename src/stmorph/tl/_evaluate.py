"""``st.tl.evaluate``: score predicted expression against the measured one, the way the papers report it."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import commit_outputs, tool_record
from .._docs import doc_params
from .._keys import Key
from .._logging import logger
from .._scores import top_n
from .._tables import table_of
from .._validation import (
    InvalidParameterError,
    NonFiniteError,
    ShapeMismatchError,
    StmorphKeyError,
    check_bool,
    check_finite,
    check_int,
    check_ints,
    check_n_obs,
    check_unique_names,
    checks_keys,
    get_genes,
    get_matrix,
)
from ..models import interval_scores
from ._metrics import hit_at, pearson, rmse, spearman, ssim
from ._predict import SPLIT_KEY

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

_GENE_METRICS = {"pearson": pearson, "spearman": spearman, "rmse": rmse, "ssim": ssim}


def _record(adata: AnnData, layer: str) -> Mapping[str, Any]:
    """What ``st.tl.predict`` stored about ``layer`` (empty for predictions made elsewhere)."""
    return tool_record(adata, "predict", layer)


def _matrix(adata: AnnData, name: str, idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Dense float64 ``X`` (``name == "X"``) or ``layers[name]`` for the given spots and genes."""
    mat = get_matrix(adata, None if name == "X" else name, finite=False)
    sub = mat[rows][:, idx]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    return sub.astype(np.float64)


def _spots(adata: AnnData, subset: object, record: Mapping[str, Any]) -> tuple[np.ndarray, str]:
    """Boolean mask of the spots to score, and how it was chosen."""
    if subset is None:
        within = record.get("mode") == "within" if record else SPLIT_KEY in adata.obs
        if not within:
            return np.ones(adata.n_obs, dtype=bool), "all"
        if SPLIT_KEY not in adata.obs:
            raise StmorphKeyError(
                f"the prediction was made within the slice, but adata.obs[{SPLIT_KEY!r}] is missing; "
                "pass subset= with the test spots."
            )
        mask = (adata.obs[SPLIT_KEY] == "test").to_numpy()
        if record and int(record.get("n_test", mask.sum())) != int(mask.sum()):
            raise ShapeMismatchError(
                f"adata.obs[{SPLIT_KEY!r}] marks {int(mask.sum())} test spots but the prediction held out "
                f"{int(record['n_test'])}: a later st.tl.predict call replaced the split. Re-run the prediction "
                "or pass subset=."
            )
        return mask, "test"
    if isinstance(subset, str):
        if subset != "all":
            raise InvalidParameterError(f"subset={subset!r} is not valid; use 'all', a boolean mask or obs names.")
        return np.ones(adata.n_obs, dtype=bool), "all"
    values = np.asarray(subset)
    if values.dtype == bool:
        if values.shape != (adata.n_obs,):
            raise ShapeMismatchError(f"a boolean subset must have length n_obs={adata.n_obs}; found {values.shape}.")
        return values, "custom"
    pos = adata.obs_names.get_indexer(values)
    if (pos < 0).any():
        missing = values[pos < 0][:5].tolist()
        raise StmorphKeyError(f"{int((pos < 0).sum())} subset spots are not in adata.obs_names, e.g. {missing}.")
    mask = np.zeros(adata.n_obs, dtype=bool)
    mask[pos] = True
    return mask, "custom"


def _evaluated_genes(adata: AnnData, genes: Sequence[str] | None, pred_all: np.ndarray, layer: str) -> np.ndarray:
    """Positions of the genes to score: the requested ones, else every gene the layer predicts."""
    predicted = ~np.isnan(pred_all).all(axis=0)
    if genes is None:
        idx = np.flatnonzero(predicted)
        if len(idx) == 0:
            raise NonFiniteError(f"adata.layers[{layer!r}] predicts no gene on the evaluated spots (all NaN).")
        return idx
    idx = get_genes(adata, genes)
    if not predicted[idx].all():
        missing = adata.var_names[idx[~predicted[idx]]][:5].tolist()
        raise StmorphKeyError(
            f"{int((~predicted[idx]).sum())} requested genes have no prediction in adata.layers[{layer!r}], "
            f"e.g. {missing}."
        )
    return idx


def _interval_metrics(
    adata: AnnData, layer: str, idx: np.ndarray, rows: np.ndarray, truth: np.ndarray
) -> dict[str, np.ndarray]:
    """Per gene ``coverage`` and ``interval_width`` (mean width / the gene's SD) when the interval layers exist."""
    names = Key.layers.interval(layer)
    if not all(name in adata.layers for name in names):
        return {}
    lower, upper = (_matrix(adata, name, idx, rows) for name in names)
    level = float(_record(adata, layer).get("interval", {}).get("level", np.nan))
    scores = interval_scores(truth, lower, upper, level)
    return {"coverage": scores["coverage"], "interval_width": scores["width"]}


def _mean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN group gives NaN, not a warning
        return float(np.nanmean(values)) if len(values) else float("nan")


@doc_params("table_key")
@checks_keys("layer", "truth_layer", "key_added", "rank_layer", "table_key")
def evaluate(
    adata: AnnData | SpatialData,
    layer: str,
    *,
    truth_layer: str | None = None,
    genes: Sequence[str] | None = None,
    subset: str | Sequence[str] | np.ndarray | None = None,
    key_added: str | None = None,
    marker_genes: Sequence[str] | None = None,
    rank_layer: str | None = None,
    n_top: int = 50,
    hit_at_t: Sequence[int] = (1, 2, 3),
    table_key: str | None = None,
    inplace: bool = True,
) -> pd.DataFrame | None:
    """Score a prediction against the measured expression: per gene, per spot, and the BLEEP summary table.

    Per gene (on the evaluated spots): Pearson, Spearman, RMSE (in the units of the truth), and
    SSIM as HECLIP defines it (per-gene max-scaled vectors, ``C1 = (0.01 M)^2``, ``C2 = (0.03 M)^2``;
    see :func:`stmorph.tl._metrics.ssim`). A constant gene (equal values up to rounding) gets NaN
    correlation and SSIM. Per spot: Hit@T (HECLIP) — whether the top-``T`` predicted genes of a spot share at least one
    gene with its top-``T`` measured genes; the fraction of spots with a hit is reported.
    Summary (BLEEP Table 1 layout): mean Pearson over the marker genes (MG), the ``n_top`` highest
    expressed genes (HEG, by mean) and the ``n_top`` most variable genes (HVG, by variance), plus
    means over all evaluated genes. Means skip NaN genes. Tied genes enter a top set in gene order.
    ``pearson_HVG-50`` and ``pearson_all`` are the cross-validation scores of
    :func:`~stmorph.tl.predict` (:func:`stmorph.get.cv_df`) when computed on the same spots and
    predictions. When the prediction has intervals
    (``layers[layer + "_lower"]`` and ``layers[layer + "_upper"]``, from ``interval=`` of
    :func:`~stmorph.tl.predict`), per gene their coverage (fraction of spots whose truth lies
    inside) and mean width divided by the gene's SD on the evaluated spots.

    Parameters
    ----------
    adata
        Slice holding the prediction in ``layers[layer]`` (from :func:`~stmorph.tl.predict`), or a
        SpatialData holding it (``table_key``).
    layer
        Layer with the predicted expression.
    truth_layer
        Measured expression: a layer name, or ``"X"`` for ``adata.X``. Default: the representation
        the prediction was trained on (``uns['stmorph']['predict'][layer]['layer']``), else ``X``.
    genes
        Genes to score; default every gene the layer predicts (non-NaN).
    subset
        Spots to score: ``"all"``, a boolean mask, or obs names. Default: the test spots
        (``obs['stmorph_split'] == "test"``) when the prediction was made within the slice,
        else all spots.
    key_added
        Name of the results; default ``layer`` without its ``"predicted_"`` prefix (the method).
    marker_genes
        Marker genes for the MG summary (must be among the evaluated genes); NaN when not given.
    rank_layer
        Expression that ranks HEG/HVG (``"X"`` or a layer name). Default: the truth, as in BLEEP
        and HECLIP. Pass e.g. a log1p layer when the truth is z-scored (all means ~0).
    n_top
        Size of the HEG and HVG sets.
    hit_at_t
        The ``T`` of Hit@T.
    {table_key}
    inplace
        Write the results into ``adata`` and return ``None`` (default), or return the summary
        table and write nothing (scanpy's rule for functions that compute a table).

    Returns
    -------
    With ``inplace=False``, the summary table: one row (``key_added``) and columns
    ``pearson_MG``, ``pearson_HEG-{n}``, ``pearson_HVG-{n}``, ``pearson_all``, ``spearman_all``,
    ``rmse_all``, ``ssim_all``, ``hit@T``; with intervals also ``coverage_all`` and
    ``interval_width_all``. With ``inplace=True``, ``None``; sets on ``adata``:

    ``var['pearson_{name}']``, ``var['spearman_{name}']``, ``var['rmse_{name}']``, ``var['ssim_{name}']`` :
        per-gene metrics (NaN for genes not evaluated); with intervals also
        ``var['coverage_{name}']`` and ``var['interval_width_{name}']``.
    ``uns['stmorph']['evaluate'][name]`` : ``summary`` (the table's row as a dict), ``hit_at``
        (``{"T": fraction}``), ``layer``, ``truth``, ``subset``, ``n_spots``, ``n_genes``, ``heg``,
        ``hvg``, ``marker_genes``.

    Examples
    --------
    >>> import stmorph as st, scanpy as sc
    >>> adata = st.datasets.simulate(200, 20, n_planted=4).tables["table"]
    >>> sc.pp.normalize_total(adata); sc.pp.log1p(adata)
    >>> st.tl.predict(adata, method="ridge", use_rep="latent", split=0.2)
    >>> st.tl.evaluate(adata, "predicted_ridge", n_top=5)
    >>> "pearson_ridge" in adata.var, sorted(adata.uns["stmorph"]["evaluate"])
    (True, ['ridge'])
    >>> table = st.tl.evaluate(adata, "predicted_ridge", n_top=5, inplace=False)  # writes nothing
    >>> list(table.index)
    ['ridge']
    """
    adata = table_of(adata, table_key, name="st.tl.evaluate")
    check_int(n_top, "n_top", low=1)
    hit_at_t = check_ints(hit_at_t, "hit_at_t", low=1)
    check_bool(inplace, "inplace")
    if not isinstance(layer, str) or layer not in adata.layers:
        raise StmorphKeyError(f"adata.layers[{layer!r}] not found; available: {list(adata.layers.keys())}.")
    check_unique_names(adata, "var")
    name = key_added or layer.removeprefix(Key.layers.predicted_prefix)
    record = _record(adata, layer)
    truth_name = truth_layer or str(record.get("layer", "X"))
    rows, subset_kind = _spots(adata, subset, record)
    check_n_obs(int(rows.sum()), 3, "evaluating a prediction")

    pred_all = _matrix(adata, layer, np.arange(adata.n_vars), rows)
    idx = _evaluated_genes(adata, genes, pred_all, layer)
    pred = pred_all[:, idx]
    check_finite(pred, f"adata.layers[{layer!r}] (evaluated genes and spots)")
    truth = _matrix(adata, truth_name, idx, rows)
    check_finite(truth, f"adata.{'X' if truth_name == 'X' else f'layers[{truth_name!r}]'}")
    for t in hit_at_t:
        check_int(t, "hit_at_t", low=1, high=len(idx))

    per_gene = {metric: fn(truth, pred) for metric, fn in _GENE_METRICS.items()}
    per_gene.update(_interval_metrics(adata, layer, idx, rows, truth))
    ranked = truth if rank_layer is None else _matrix(adata, rank_layer, idx, rows)
    heg, hvg = top_n(ranked.mean(0), n_top), top_n(ranked.var(0), n_top)
    if marker_genes is not None:
        marker_genes = [marker_genes] if isinstance(marker_genes, str) else list(marker_genes)
        mg = pd.Index(adata.var_names[idx]).get_indexer(marker_genes)
        if (mg < 0).any():
            missing = [g for g, i in zip(marker_genes, mg) if i < 0]
            raise StmorphKeyError(f"{len(missing)} marker genes are not among the evaluated genes, e.g. {missing[:5]}.")
    else:
        mg = np.array([], dtype=int)

    r = per_gene["pearson"]
    summary = {
        "pearson_MG": _mean(r[mg]) if marker_genes is not None else float("nan"),
        f"pearson_HEG-{n_top}": _mean(r[heg]),
        f"pearson_HVG-{n_top}": _mean(r[hvg]),
        **{f"{metric}_all": _mean(values) for metric, values in per_gene.items()},
    }
    hits = {str(t): float(hit_at(truth, pred, t).mean()) for t in hit_at_t}
    summary.update({f"hit@{t}": v for t, v in hits.items()})

    var = {}
    for metric, values in per_gene.items():
        column = np.full(adata.n_vars, np.nan)
        column[idx] = values
        var[Key.var.metric(metric, name)] = column
    gene_names = adata.var_names[idx]
    result = {
        "summary": summary,
        "hit_at": hits,
        "layer": layer,
        "truth": truth_name,
        "subset": subset_kind,
        "n_spots": int(rows.sum()),
        "n_genes": len(idx),
        "heg": np.asarray(gene_names[heg], dtype=object),
        "hvg": np.asarray(gene_names[hvg], dtype=object),
        "marker_genes": np.asarray(marker_genes or [], dtype=object),
    }
    logger.info(
        "evaluate %r: %d spots (%s) × %d genes, mean Pearson %.3f",
        name,
        result["n_spots"],
        subset_kind,
        len(idx),
        summary["pearson_all"],
    )
    if not inplace:
        return _summary_table(summary, name)
    commit_outputs(adata, var=var, uns={Key.uns.tool("evaluate", name): result})
    return None


def _summary_table(summary: Mapping[str, float], name: str) -> pd.DataFrame:
    """The one-row summary table of the evaluation ``name``."""
    return pd.DataFrame({k: [float(v)] for k, v in summary.items()}, index=pd.Index([name], name="prediction"))
