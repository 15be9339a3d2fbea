"""Atlas plots: EPS across the slices of a cohort, the markers' panel, and the enrichment of the gene lists."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._keys import Key
from .._scores import top_n
from .._validation import check_int, check_slices, checks_keys, format_keys
from ..errors import InvalidParameterError, StmorphKeyError
from ..tl import PAPER_MARKERS, eps_tables, score_table, slice_groups
from . import _utils

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

    Cohort = pd.DataFrame | Sequence[AnnData] | Mapping[str, AnnData] | SpatialData

MAX_LABELLED_COLUMNS = 60
"""Above this many slices (or groups) the heatmap's columns are not labelled one by one."""


def _leaf_order(matrix: np.ndarray) -> np.ndarray:
    """Rows in the order of an average-linkage clustering (NaN filled with the row mean for the distances)."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    if len(matrix) < 3:
        return np.arange(len(matrix))
    row_mean = np.nanmean(np.where(np.isfinite(matrix), matrix, np.nan), axis=1, keepdims=True)
    filled = np.where(np.isfinite(matrix), matrix, np.nan_to_num(row_mean))
    return leaves_list(linkage(filled, method="average", metric="euclidean", optimal_ordering=True))


def _heatmap_genes(eps: pd.DataFrame, genes: Sequence[str] | None, n_top: int) -> list[str]:
    """``genes`` (all scored, else an error naming the others), or the ``n_top`` with the highest mean EPS."""
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else list(genes)
        missing = [g for g in genes if g not in eps.index]
        if missing:
            raise StmorphKeyError(f"genes {format_keys(missing)} have no EPS in the table; scored e.g. "
                                  f"{format_keys(list(eps.index[:3]))}.")  # fmt: skip
        return genes
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(eps.to_numpy(), axis=1) if eps.notna().any().any() else np.full(len(eps), np.nan)
    return list(eps.index[top_n(mean, n_top)])


@_utils.shared_docs
@checks_keys("key", "groupby")
def eps_heatmap(
    data: Cohort,
    *,
    genes: Sequence[str] | None = None,
    n_top: int = 30,
    groupby: str | None = None,
    metadata: pd.DataFrame | None = None,
    cluster: bool = True,
    key: str = "eps",
    cmap: str = "viridis",
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """EPS of the most predictable genes across the slices (or groups) of a cohort (EPS paper, Fig. 2c).

    Rows are genes, columns slices — or, with ``groupby``, the mean EPS of each group of slices
    (e.g. tissues) — both ordered by average-linkage clustering. Unscored cells are grey.

    Parameters
    ----------
    data
        The EPS table of :func:`stmorph.tl.sps` (genes × slices), or slices after
        :func:`stmorph.tl.eps` (as for :func:`stmorph.tl.predictable_genes`).
    genes
        Genes to draw; default: the ``n_top`` genes with the highest mean EPS.
    n_top
        How many genes to draw when ``genes`` is not given.
    groupby, metadata
        Average the slices of each group, as in :func:`stmorph.tl.predictable_genes`.
    cluster
        Order rows and columns by hierarchical clustering; otherwise genes by mean EPS and slices as given.
    key
        The ``key_added`` of :func:`stmorph.tl.eps`, for slices.
    cmap
        Colour map of EPS.
    figsize
        Figure size in inches (default grows with the genes and columns).
    {show_save_returns}

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import stmorph as st
    >>> eps = pd.DataFrame(np.random.default_rng(0).normal(0.2, 0.1, (50, 5)),
    ...                    index=[f"g{{i}}" for i in range(50)], columns=list("ABCDE"))
    >>> fig = st.pl.eps_heatmap(eps, n_top=10, show=False)
    >>> len(fig.axes[0].get_yticklabels())
    10
    """
    import matplotlib.pyplot as plt

    _utils.check_plot_options(show=show, save=save, figsize=figsize)
    check_int(n_top, "n_top", low=1)
    eps, _ = eps_tables(data, None, key, "st.pl.eps_heatmap")
    if groupby is not None:
        groups = slice_groups(data, eps.columns, groupby, metadata, "st.pl.eps_heatmap")
        eps = eps.T.groupby(groups.to_numpy()).mean().T
    shown = eps.loc[_heatmap_genes(eps, genes, n_top)]
    if cluster:
        values = shown.to_numpy()
        shown = shown.iloc[_leaf_order(values), _leaf_order(values.T)]
    n_rows, n_cols = shown.shape
    size = figsize or (min(2.5 + 0.28 * n_cols, 16), min(1.5 + 0.22 * n_rows, 20))
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    colormap = plt.get_cmap(cmap).with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(shown.to_numpy()), aspect="auto", cmap=colormap, interpolation="nearest")
    ax.set_yticks(range(n_rows), shown.index, fontsize=8)
    if n_cols <= MAX_LABELLED_COLUMNS:
        ax.set_xticks(range(n_cols), shown.columns, rotation=90, fontsize=8)
    else:
        ax.set_xticks([])
    ax.set_xlabel(f"{groupby} (mean over its slices)" if groupby else f"slices ({n_cols})")
    ax.set_title(f"EPS of {n_rows} genes" + (" (clustered)" if cluster else ""))
    fig.colorbar(image, ax=ax, label="EPS", shrink=0.6)
    return _utils.savefig_or_show(fig, "eps_heatmap", show=show, save=save)


def _strip(ax: Axes, table: pd.DataFrame, genes: list[str], *, offset: float, color: str, label: str) -> None:
    """One dot per slice for each gene (jittered) and a bar at the gene's mean over slices."""
    rng = np.random.default_rng(0)  # the jitter only; fixed so a figure is reproducible
    for x, gene in enumerate(genes):
        values = table.loc[gene].to_numpy(dtype=float) if gene in table.index else np.array([])
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        jitter = rng.uniform(-0.08, 0.08, len(values))
        ax.scatter(x + offset + jitter, values, s=18, color=color, alpha=0.75, label=label)
        label = None  # one legend entry per method
        ax.hlines(values.mean(), x + offset - 0.15, x + offset + 0.15, color=color, linewidth=2)


def _prediction_scores(data: Cohort, score: str | Sequence[str] | None) -> dict[str, pd.DataFrame]:
    """``{var column: genes × slices}`` of the achieved scores: ``score``, or every ``pearson_*`` in all slices."""
    if isinstance(data, pd.DataFrame):
        if score is not None:
            raise InvalidParameterError("score reads var columns of slices; an EPS table holds no prediction score.")
        return {}
    slices = check_slices(data, "st.pl.marker_panel")
    if score is None:
        common = set.intersection(*(set(a.var.columns) for a in slices.values()))
        columns = sorted(c for c in common if c.startswith(Key.var.metric("pearson", "")))
    else:
        columns = [score] if isinstance(score, str) else list(score)
    call = 'st.tl.evaluate(adata, "predicted_<method>")'
    return {c: score_table(slices, c, name="st.pl.marker_panel", produced_by=call) for c in columns}


@_utils.shared_docs
@checks_keys("key", many=("score",))
def marker_panel(
    data: Cohort,
    genes: Sequence[str] = PAPER_MARKERS,
    *,
    score: str | Sequence[str] | None = None,
    key: str = "eps",
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """EPS and achieved prediction accuracy of named marker genes across slices (EPS paper, Fig. 2d).

    One dot per slice and gene (a bar at the mean): EPS on the left and, where the slices hold
    evaluated predictions, the achieved per-gene Pearson r of each method on the right. Genes no
    slice scored are named in the title. The default genes are the paper's markers: KLK3, ERBB2,
    ESR1 (predictable in its cohort), CD274, BRCA1, BRCA2 (not).

    Parameters
    ----------
    data
        Slices after :func:`stmorph.tl.eps` (and :func:`stmorph.tl.evaluate` for the right
        panel), or the EPS table of :func:`stmorph.tl.sps` (EPS only).
    genes
        The marker genes, in the order drawn.
    score
        ``var`` column(s) of achieved accuracy, e.g. ``"pearson_ridge"``; default every
        ``pearson_*`` column present in all slices (none: EPS only).
    key
        The ``key_added`` of :func:`stmorph.tl.eps`, for slices.
    figsize
        Figure size in inches (default grows with the genes).
    {show_save_returns}

    Examples
    --------
    >>> import stmorph as st
    >>> slices = [st.datasets.simulate(100, 20, n_planted=4, random_state=i).tables["table"] for i in range(3)]
    >>> for table in slices:
    ...     st.pp.prepare_expression(table)
    ...     st.tl.eps(table, use_rep="latent")
    ...     st.tl.predict(table, method="ridge", use_rep="latent", split=0.2)
    ...     st.tl.evaluate(table, "predicted_ridge")
    >>> genes = list(slices[0].var_names[:4])
    >>> fig = st.pl.marker_panel(slices, genes, show=False)
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['EPS', 'Pearson r (achieved)']
    """
    import matplotlib.pyplot as plt

    _utils.check_plot_options(show=show, save=save, figsize=figsize)
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise InvalidParameterError("marker_panel needs at least one gene.")
    eps, _ = eps_tables(data, None, key, "st.pl.marker_panel")
    scored = [g for g in genes if g in eps.index and eps.loc[g].notna().any()]
    if not scored:
        raise StmorphKeyError(
            f"none of the genes {format_keys(genes)} has an EPS in any slice; scored e.g. "
            f"{format_keys(list(eps.index[:5]))}."
        )
    scores = _prediction_scores(data, score)
    n_panels = 2 if scores else 1
    fig, axes = plt.subplots(1, n_panels, figsize=figsize or (min(1.2 + 0.9 * len(genes) * n_panels, 18), 3.6),
                             layout="constrained", squeeze=False)  # fmt: skip
    axes = list(axes.ravel())
    _strip(axes[0], eps, genes, offset=0.0, color="C0", label=None)
    axes[0].set_ylabel("EPS")
    axes[0].axhline(0.0, color="0.6", linewidth=0.8)
    width = 0.6 / max(len(scores), 1)
    for i, (column, table) in enumerate(scores.items()):
        offset = (i - (len(scores) - 1) / 2) * width
        _strip(axes[1], table, genes, offset=offset, color=f"C{i + 1}", label=column.split("_", 1)[1])
    if scores:
        axes[1].set_ylabel("Pearson r (achieved)")
        axes[1].axhline(0.0, color="0.6", linewidth=0.8)
        axes[1].legend(title="method", fontsize=8)
    for ax in axes:
        ax.set_xticks(range(len(genes)), genes, rotation=45, ha="right")
        ax.set_xlim(-0.6, len(genes) - 0.4)
    absent = [g for g in genes if g not in scored]
    note = f"; not scored: {', '.join(absent)}" if absent else ""
    fig.suptitle(f"Marker genes across {eps.shape[1]} slices{note}", fontsize=10)
    return _utils.savefig_or_show(fig, "marker_panel", show=show, save=save)


ENRICHMENT_COLUMNS = ("list", "term", "overlap", "set_size", "qval")


@_utils.shared_docs
def enrichment(
    result: pd.DataFrame,
    *,
    n_top: int = 10,
    alpha: float = 0.05,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """The most enriched gene sets of the top and bottom gene lists (EPS paper, Fig. 2b).

    One panel per list: a bar of −log10(q) for each of its ``n_top`` most significant sets,
    labelled with overlap / set size; the dashed line is ``q = alpha``.

    Parameters
    ----------
    result
        The table of :func:`stmorph.tl.enrich_predictable`.
    n_top
        Sets drawn per list.
    alpha
        The q-value drawn as a dashed line.
    figsize
        Figure size in inches (default grows with ``n_top``).
    {show_save_returns}

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import stmorph as st
    >>> genes = [f"g{{i}}" for i in range(200)]
    >>> atlas = st.tl.predictable_genes(pd.DataFrame(np.linspace(1, 0, 200)[:, None] + np.zeros((1, 3)), index=genes))
    >>> result = st.tl.enrich_predictable(atlas, {{"matrix": genes[:8] + genes[90:100], "other": genes[-9:]}})
    >>> fig = st.pl.enrichment(result, show=False)
    >>> [ax.get_title() for ax in fig.axes]
    ['top genes', 'bottom genes']
    """
    import matplotlib.pyplot as plt

    _utils.check_plot_options(show=show, save=save, figsize=figsize)
    check_int(n_top, "n_top", low=1)
    missing = [c for c in ENRICHMENT_COLUMNS if c not in getattr(result, "columns", ())]
    if missing:
        raise StmorphKeyError(f"result lacks the columns {missing}; pass the table of st.tl.enrich_predictable.")
    lists = list(dict.fromkeys(result["list"]))
    if not lists:
        raise InvalidParameterError("the enrichment table has no row; nothing to draw.")
    fig, axes = plt.subplots(1, len(lists), figsize=figsize or (5.0 * len(lists), 1.2 + 0.32 * n_top),
                             layout="constrained", squeeze=False)  # fmt: skip
    threshold = -np.log10(alpha)
    for ax, which in zip(axes.ravel(), lists):
        rows = result[result["list"] == which].sort_values("qval", kind="stable").head(n_top).iloc[::-1]
        height = -np.log10(np.clip(rows["qval"].to_numpy(dtype=float), 1e-300, 1.0))
        ax.barh(range(len(rows)), height, color=np.where(height >= threshold, "C3", "0.7"))
        ax.set_yticks(range(len(rows)), rows["term"], fontsize=8)
        for y, (h, row) in enumerate(zip(height, rows.itertuples())):
            ax.annotate(f"{row.overlap}/{row.set_size}", (h, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)  # fmt: skip
        ax.axvline(threshold, color="0.3", linestyle="--", linewidth=0.8)
        ax.set_xlabel("−log10 q")
        ax.set_title(f"{which} genes")
    return _utils.savefig_or_show(fig, "enrichment", show=show, save=save)
