"""EPS/SPS plots: predictability against prediction performance, and the gene ranking."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._anndata import dataset_info
from .._keys import Key
from .._validation import check_int, check_range, check_slices, checks_keys, get_stored
from ..errors import InvalidParameterError, StmorphKeyError
from . import _utils

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_EPS_CALL = "st.tl.eps(adata, use_rep=...)"
_EVALUATE_CALL = 'st.tl.evaluate(adata, layer="predicted_<method>")'


def _score_columns(adata: AnnData, score: str | Sequence[str] | None) -> list[str]:
    """The ``var`` columns to plot: ``score`` as given, or every ``pearson_*`` column by default."""
    if score is None:
        columns = sorted(c for c in adata.var.columns if c.startswith("pearson_"))
        if not columns:
            get_stored(adata, "var", "pearson_<method>", _EVALUATE_CALL)
        return columns
    columns = [score] if isinstance(score, str) else list(score)
    for column in columns:
        get_stored(adata, "var", column, _EVALUATE_CALL)
    return columns


def _finite_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def point_density(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of each point of a 2-D scatter (ones when it cannot be estimated)."""
    from scipy.stats import gaussian_kde

    xy = np.vstack([x, y])
    if len(x) < 3 or np.linalg.matrix_rank(np.cov(xy)) < 2:
        return np.ones(len(x))
    return gaussian_kde(xy)(xy)


def _density_scatter(ax: Axes, x: np.ndarray, y: np.ndarray, *, size: float, cmap: str):
    density = point_density(x, y)
    order = np.argsort(density, kind="stable")  # densest points drawn last, on top
    return ax.scatter(x[order], y[order], c=density[order], s=size, cmap=cmap, linewidths=0, rasterized=True)


def _method_name(column: str) -> str:
    return column.split("_", 1)[1] if "_" in column else column


@_utils.shared_docs
@checks_keys("eps_key", many=("score",))
def eps_vs_score(
    adata: AnnData,
    score: str | Sequence[str] | None = None,
    *,
    eps_key: str = "eps",
    ncols: int = 3,
    size: float = 8.0,
    cmap: str = "viridis",
    panel_size: tuple[float, float] = (4.2, 3.6),
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """Per-gene EPS against prediction performance, coloured by local point density.

    The EPS paper's Fig. 1b: each point is a gene, x its EPS (how smoothly it varies on the image
    graph), y how well a method predicted it. The title gives the Spearman correlation ρ over the
    genes where both values are finite, and how many genes that is.

    Parameters
    ----------
    adata
        AnnData with ``var[eps_key]`` (:func:`stmorph.tl.eps`) and the score column(s)
        (:func:`stmorph.tl.evaluate`).
    score
        ``var`` column(s) with a per-gene score, e.g. ``"pearson_ridge"``; several → one panel
        each. Default: every ``pearson_*`` column.
    eps_key
        ``var`` column with the EPS.
    {ncols}
    size
        Marker size.
    cmap
        Colour map of the point density.
    {panel_size}
    {show_save_returns}

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 20).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> st.tl.eps(adata, use_rep="latent")
    >>> st.tl.predict(adata, method="ridge", use_rep="latent", split=0.2)  # the EPS paper's within-slice protocol
    >>> st.tl.evaluate(adata, "predicted_ridge")
    >>> fig = st.pl.eps_vs_score(adata, "pearson_ridge", show=False)
    >>> fig.axes[0].get_xlabel()
    'EPS (image predictability)'
    """
    _utils.check_plot_options(show=show, save=save, ncols=ncols, panel_size=panel_size)
    check_range(size, "size", low=0)
    from scipy.stats import spearmanr

    eps = get_stored(adata, "var", eps_key, _EPS_CALL).to_numpy(np.float64)
    columns = _score_columns(adata, score)
    fig, axes = _utils.subplots(len(columns), ncols=ncols, panel_size=panel_size)
    for ax, column in zip(axes, columns):
        x, y = _finite_pairs(eps, adata.var[column].to_numpy(np.float64))
        if len(x) < 3:
            raise InvalidParameterError(
                f"only {len(x)} genes have both a finite adata.var[{eps_key!r}] and adata.var[{column!r}]; "
                "need at least 3. Compute EPS and the evaluation on the same genes."
            )
        points = _density_scatter(ax, x, y, size=size, cmap=cmap)
        rho = spearmanr(x, y).statistic
        ax.set_title(f"{_method_name(column)}: Spearman ρ = {rho:.3f} (n = {len(x)} genes)")
        ax.set_xlabel("EPS (image predictability)")
        ax.set_ylabel(column.replace("_", " "))
        fig.colorbar(points, ax=ax, label="gene density")
    return _utils.savefig_or_show(fig, "eps_vs_score", show=show, save=save)


DEFAULT_MIN_DETECTED_FRACTION = 0.05
"""Default ``min_detected`` of :func:`eps_ranking`: genes detected in at least 5 % of the spots."""


def min_detected_spots(n_obs: int, min_detected: int | None) -> int:
    """``min_detected`` as given, or 5 % of the spots (rounded up) when ``None``."""
    if min_detected is None:
        return int(np.ceil(DEFAULT_MIN_DETECTED_FRACTION * n_obs))
    check_range(min_detected, "min_detected", low=0, inclusive=True)
    return int(min_detected)


def _ranked(
    adata: AnnData, eps_key: str, qval_key: str, n_top: int, min_detected: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n_top`` highest and lowest genes by EPS (finite, detected in ``min_detected`` spots), with q, detection."""
    frame = pd.DataFrame(
        {
            "eps": get_stored(adata, "var", eps_key, _EPS_CALL).to_numpy(np.float64),
            "qval": get_stored(adata, "var", qval_key, _EPS_CALL).to_numpy(np.float64),
            "detected": get_stored(adata, "var", Key.var.n_detected(eps_key), _EPS_CALL).to_numpy(np.int64),
        },
        index=adata.var_names,
    )
    frame = frame[np.isfinite(frame["eps"]) & (frame["detected"] >= min_detected)]
    frame = frame.sort_values("eps", ascending=False, kind="stable")
    if len(frame) == 0:
        raise InvalidParameterError(
            f"adata.var[{eps_key!r}] has no finite value for a gene detected in >= {min_detected} spots; "
            "nothing to rank. Lower `min_detected`."
        )
    n_top = min(n_top, len(frame) // 2) if len(frame) > 1 else 1
    return frame.iloc[:n_top], frame.iloc[::-1].iloc[:n_top]


def _significance(qval: np.ndarray, floor: float = 1e-300) -> np.ndarray:
    return -np.log10(np.clip(qval, floor, 1.0))


def _gene_label(gene: str, qval: float, detected: int, n_obs: int) -> str:
    """``GENE  (q = 1.2e-05, 149/180 spots)``."""
    q = f"q = {qval:.1e}, " if np.isfinite(qval) else ""
    return f"{gene}  ({q}{detected}/{n_obs} spots)"


def _ranking_panel(ax: Axes, genes: pd.DataFrame, title: str, norm, cmap, n_obs: int) -> None:
    y = np.arange(len(genes))[::-1]
    colours = cmap(norm(_significance(genes["qval"].to_numpy()))) if np.isfinite(genes["qval"]).any() else "C0"
    ax.barh(y, genes["eps"], color=colours)
    labels = [_gene_label(g, q, d, n_obs) for g, q, d in zip(genes.index, genes["qval"], genes["detected"])]
    ax.set_yticks(y, labels)
    ax.set_xlabel("EPS")
    ax.set_title(title)
    ax.axvline(0, color="black", linewidth=0.6)


@_utils.shared_docs
@checks_keys("eps_key", "qval_key")
def eps_ranking(
    adata: AnnData,
    n_top: int = 20,
    *,
    eps_key: str = "eps",
    qval_key: str | None = None,
    min_detected: int | None = None,
    cmap: str = "magma_r",
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """The ``n_top`` most and ``n_top`` least image-predictable genes, with their EPS and q-values.

    Two bar charts (most predictable on the left, least on the right); each bar is labelled with
    its gene, Benjamini–Hochberg q-value and the number of spots where it is detected, and coloured
    by −log10(q). Only genes detected in at least ``min_detected`` spots are ranked (stated in the
    title): a gene seen in a handful of spots can reach either extreme of EPS by chance.

    Parameters
    ----------
    adata
        AnnData with ``var[eps_key]`` and ``var[qval_key]`` from :func:`stmorph.tl.eps`.
    n_top
        Genes per panel (at most half of the genes with a finite EPS).
    eps_key, qval_key
        ``var`` columns with the EPS and its q-value (default ``f"{{eps_key}}_qval"``); the
        detection is read from ``var[f"{{eps_key}}_n_detected"]``.
    min_detected
        Rank only genes detected in at least this many spots; default 5 % of the spots (rounded
        up). ``0`` ranks every gene.
    cmap
        Colour map of −log10(q).
    figsize
        Figure size in inches (default grows with ``n_top``).
    {show_save_returns}

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(100, 20).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> st.tl.eps(adata, use_rep="latent")
    >>> fig = st.pl.eps_ranking(adata, n_top=5, show=False)
    >>> fig.axes[0].get_title()
    '5 most predictable genes'
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    check_int(n_top, "n_top", low=1)
    _utils.check_plot_options(show=show, save=save, figsize=figsize)
    min_detected = min_detected_spots(adata.n_obs, min_detected)
    top, bottom = _ranked(adata, eps_key, qval_key or f"{eps_key}_qval", int(n_top), min_detected)
    significance = _significance(pd.concat([top, bottom])["qval"].to_numpy())
    finite = significance[np.isfinite(significance)]
    norm = Normalize(0.0, max(float(finite.max()), 1.0) if len(finite) else 1.0)
    colormap = plt.get_cmap(cmap)
    figsize = figsize or (12.0, 1.4 + 0.28 * len(top))
    fig, axes = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    _ranking_panel(axes[0], top, f"{len(top)} most predictable genes", norm, colormap, adata.n_obs)
    _ranking_panel(axes[1], bottom, f"{len(bottom)} least predictable genes", norm, colormap, adata.n_obs)
    fig.suptitle(f"genes detected in ≥ {min_detected} of {adata.n_obs} spots")
    if len(finite):
        mappable = plt.cm.ScalarMappable(norm=norm, cmap=colormap)
        fig.colorbar(mappable, ax=list(axes), label="−log10(q-value)", shrink=0.8)
    return _utils.savefig_or_show(fig, "eps_ranking", show=show, save=save)


def _slice_table(data: pd.DataFrame | Mapping[str, AnnData] | Sequence[AnnData], score: Sequence[str]) -> pd.DataFrame:
    """One row per slice with ``sps`` and the mean of each ``score`` column over its genes."""
    if isinstance(data, pd.DataFrame):
        if len(data) == 0:
            raise InvalidParameterError("st.pl.sps_vs_score needs at least one slice; the table has no row.")
        missing = [c for c in ("sps", *score) if c not in data.columns]
        if missing:
            raise StmorphKeyError(
                f"table columns {missing} not found; available: {list(data.columns)}. Pass the summary of "
                "`st.tl.sps` joined with the mean performance of each slice (one column per score)."
            )
        index = data["slice"].astype(str) if "slice" in data.columns else data.index.astype(str)
        return pd.DataFrame({c: data[c].to_numpy(np.float64) for c in ("sps", *score)}, index=index)
    rows = {}
    for name, adata in check_slices(data, "st.pl.sps_vs_score").items():
        sps = get_stored(adata, "uns", "sps", _EPS_CALL)
        means = {c: float(np.nanmean(get_stored(adata, "var", c, _EVALUATE_CALL).to_numpy(np.float64))) for c in score}
        rows[str(dataset_info(adata).get("section", name))] = {"sps": float(sps["sps"]), **means}
    return pd.DataFrame.from_dict(rows, orient="index")


@_utils.shared_docs
@checks_keys(many=("score",))
def sps_vs_score(
    data: pd.DataFrame | Mapping[str, AnnData] | Sequence[AnnData],
    score: str | Sequence[str] = "pearson_ridge",
    *,
    figsize: tuple[float, float] = (5.5, 4.2),
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """Slice-level SPS against the mean prediction performance of each slice (EPS paper, Fig. 2e).

    Each point is a slice, labelled with its name; several scores (methods) are drawn in
    different colours, each with its Pearson correlation across slices in the legend.

    Parameters
    ----------
    data
        A table with one row per slice, columns ``sps`` and each ``score`` (and optionally
        ``slice`` with the names) — e.g. the summary of :func:`stmorph.tl.sps` joined with mean
        per-slice performances — or a list/dict of evaluated AnnData (``uns["sps"]`` from
        :func:`stmorph.tl.eps`, ``var[score]`` from :func:`stmorph.tl.evaluate`; a slice's mean
        performance is the mean over its genes with a finite score).
    score
        Performance column(s), e.g. ``"pearson_ridge"``.
    figsize
        Figure size in inches.
    {show_save_returns}

    Examples
    --------
    >>> import stmorph as st
    >>> slices = [st.datasets.simulate(100, 20, n_planted=n).tables["table"] for n in (2, 6, 10)]
    >>> for table in slices:  # more genes driven by the image: a higher SPS and better predictions
    ...     st.pp.prepare_expression(table)
    ...     st.tl.eps(table, use_rep="latent")
    ...     st.tl.predict(table, method="ridge", use_rep="latent", split=0.2)
    ...     st.tl.evaluate(table, "predicted_ridge")
    >>> fig = st.pl.sps_vs_score(slices, "pearson_ridge", show=False)
    >>> fig.axes[0].get_xlabel()
    'SPS (slice predictability)'
    """
    import matplotlib.pyplot as plt

    _utils.check_plot_options(show=show, save=save, figsize=figsize)
    score = [score] if isinstance(score, str) else list(score)
    table = _slice_table(data, score)
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    for i, column in enumerate(score):
        x, y = table["sps"].to_numpy(), table[column].to_numpy()
        r = np.corrcoef(x, y)[0, 1] if len(table) > 2 and np.std(x) > 0 and np.std(y) > 0 else np.nan
        label = f"{_method_name(column)} (r = {r:.2f})" if np.isfinite(r) else _method_name(column)
        ax.scatter(x, y, s=40, color=f"C{i}", label=label, zorder=3)
        for name, xi, yi in zip(table.index, x, y):
            ax.annotate(name, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=9)
    ax.set_xlabel("SPS (slice predictability)")
    ax.set_ylabel("mean per-gene score" if len(score) > 1 else f"mean {score[0].replace('_', ' ')}")
    ax.set_title(f"SPS vs prediction performance ({len(table)} slices)")
    ax.margins(0.15)
    ax.legend(title="method", fontsize=9)
    return _utils.savefig_or_show(fig, "sps_vs_score", show=show, save=save)
