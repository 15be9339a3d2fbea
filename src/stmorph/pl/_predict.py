"""Plots of predictions: gene–gene correlation structure, measured vs predicted (BLEEP, Fig. 4)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._keys import Key
from .._scores import top_n
from .._validation import check_int, check_range, checks_keys, get_genes, get_matrix
from ..errors import InvalidParameterError, StmorphKeyError
from . import _utils

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure


def _layer_matrix(adata: AnnData, layer: str, predicted: Sequence[str]):
    source = _utils.measured_layer(adata, predicted) if layer == _utils.MEASURED else layer
    if source is not None and source not in adata.layers:
        raise StmorphKeyError(
            f"adata.layers[{layer!r}] not found; available: {list(adata.layers.keys())}. Run `st.tl.predict`."
        )
    return get_matrix(adata, source, finite=False)


def _expression_level(adata: AnnData, fallback) -> np.ndarray:
    """Mean expression per gene, from raw counts or log1p when stored (scaled ``X`` has no level)."""
    for layer in (Key.layers.counts, Key.layers.log1p):
        if layer in adata.layers:
            return np.asarray(adata.layers[layer].mean(axis=0)).ravel()
    return np.asarray(np.nanmean(_utils.dense_columns(fallback, np.arange(adata.n_vars)), axis=0)).ravel()


def _choose_genes(adata: AnnData, matrices: dict, genes: Sequence[str] | None, n_top: int) -> np.ndarray:
    """Positions of ``genes``, or of the ``n_top`` most expressed genes predicted in every layer."""
    if genes is not None:
        return get_genes(adata, genes)
    predicted_everywhere = np.ones(adata.n_vars, dtype=bool)
    for matrix in matrices.values():
        col_min = np.asarray(matrix.min(axis=0).toarray() if hasattr(matrix, "toarray") else np.min(matrix, axis=0))
        predicted_everywhere &= np.isfinite(col_min.ravel())
    candidates = np.flatnonzero(predicted_everywhere)
    if len(candidates) < 2:
        raise InvalidParameterError(
            f"only {len(candidates)} gene(s) have values in every layer {list(matrices)}; need at least 2."
        )
    level = _expression_level(adata, next(iter(matrices.values())))[candidates]
    return candidates[top_n(level, n_top)]


def _correlation(values: np.ndarray) -> np.ndarray:
    """Gene × gene Pearson correlation across spots (NaN for constant genes)."""
    centred = values - values.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / np.outer(norms, norms)
    return np.clip(corr, -1.0, 1.0)


def cluster_order(corr: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering of genes on the distance ``1 - corr``."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = 1.0 - np.nan_to_num(corr, nan=0.0)
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, None)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def _upper_similarity(a: np.ndarray, b: np.ndarray) -> float:
    iu = np.triu_indices_from(a, k=1)
    x, y = a[iu], b[iu]
    keep = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[keep], y[keep])[0, 1]) if keep.sum() > 2 else float("nan")


@_utils.shared_docs
@checks_keys(many=("layers",))
def gene_correlation(
    adata: AnnData,
    layers: Sequence[str] | None = None,
    n_top: int = 50,
    *,
    genes: Sequence[str] | None = None,
    cmap: str = "RdBu_r",
    panel_size: float = 5.0,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """Gene–gene correlation heatmaps, measured vs predicted (BLEEP, Fig. 4).

    One heatmap per layer of the Pearson correlation between genes across spots, all with the
    genes in the order of the average-linkage clustering of the first layer (the measured one by
    default), on one colour scale from −1 to 1. A prediction that keeps the co-expression
    structure shows the same blocks; each predicted panel's title gives the Pearson correlation
    between its off-diagonal entries and the first panel's.

    Parameters
    ----------
    adata
        AnnData with the predicted layers (:func:`stmorph.tl.predict`).
    layers
        ``"measured"`` (the expression the predictions were trained on) and/or layer names.
        Default: ``"measured"`` and every ``layers["predicted_*"]``.
    n_top
        Number of genes when ``genes`` is not given: the most highly expressed genes (mean of
        ``layers["counts"]`` or ``layers["log1p"]`` when stored, else of the measured values)
        among those with values in every layer.
    genes
        Genes to show instead.
    cmap
        Diverging colour map.
    panel_size
        Side of one heatmap in inches.
    {show_save_returns}

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 20).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> st.tl.predict(adata, method="ridge", use_rep="latent", split=0.2)
    >>> fig = st.pl.gene_correlation(adata, ["measured", "predicted_ridge"], n_top=10, show=False)
    >>> fig.axes[0].get_title()
    'measured'
    """
    check_int(n_top, "n_top", low=2)
    check_range(panel_size, "panel_size", low=0, high=_utils.MAX_INCHES)
    _utils.check_plot_options(show=show, save=save)
    layers = list(layers) if layers is not None else [_utils.MEASURED, *_utils.require_predicted_layers(adata)]
    predicted = [layer for layer in layers if layer != _utils.MEASURED]
    matrices = {layer: _layer_matrix(adata, layer, predicted) for layer in layers}
    idx = _choose_genes(adata, matrices, genes, int(n_top))
    corrs = {layer: _correlation(_utils.dense_columns(m, idx)) for layer, m in matrices.items()}
    order = cluster_order(corrs[layers[0]])
    names = adata.var_names[idx][order]
    fig, axes = _utils.subplots(len(layers), ncols=len(layers), panel_size=(panel_size, panel_size))
    fontsize = float(np.clip(260 / len(idx), 3, 9))
    first = corrs[layers[0]][np.ix_(order, order)]
    for ax, layer in zip(axes, layers):
        corr = corrs[layer][np.ix_(order, order)]
        image = ax.imshow(corr, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        title = _utils.label(layer)
        if layer != layers[0]:
            title += f"\nsimilarity to {_utils.label(layers[0])}: r = {_upper_similarity(corr, first):.2f}"
        ax.set_title(title)
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, names, fontsize=fontsize)
    fig.colorbar(image, ax=axes, label="Pearson correlation between genes", shrink=0.7)
    return _utils.savefig_or_show(fig, "gene_correlation", show=show, save=save)
