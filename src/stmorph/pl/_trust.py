"""How far to trust a prediction: expected vs achieved r, EPS vs expected r, trusted genes marked."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .. import get
from .._keys import Key
from .._validation import checks_keys
from . import _utils

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _scatter(ax: Axes, x: np.ndarray, y: np.ndarray, trusted: np.ndarray, xlabel: str, ylabel: str) -> None:
    """Genes as dots, the trusted ones in colour on top."""
    ax.scatter(x[~trusted], y[~trusted], s=4, color="lightgrey", label="not trusted", rasterized=True)
    ax.scatter(x[trusted], y[trusted], s=6, color="tab:red", label=f"trusted ({int(trusted.sum())})", rasterized=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize="small", frameon=False)


@_utils.shared_docs
@checks_keys("key")
def trust(
    adata: AnnData,
    key: str,
    *,
    evaluation: str | None = None,
    panel_size: tuple[float, float] = (4.0, 4.0),
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """Which genes of a prediction to believe: expected vs achieved r, and EPS vs expected r.

    One panel per view, each gene a dot, trusted genes in red: the expected held-out Pearson
    (``var[f'{{key}}_expected_r']``) against the Pearson the prediction reached (when
    :func:`~stmorph.tl.evaluate` has scored it, with the diagonal), and the references' EPS
    against the expected r (when ``st.tl.predict`` computed EPS).

    Parameters
    ----------
    adata
        A query with the trust columns of a prediction (see :func:`stmorph.get.trust_df`).
    key
        Which prediction: its layer name.
    evaluation
        Name of the :func:`~stmorph.tl.evaluate` run with the achieved r
        (``var[f'pearson_{{evaluation}}']``); default ``key`` without ``"predicted_"``.
    {panel_size}
    {show_save_returns}

    Examples
    --------
    >>> st.tl.predict(query, references, method="knn", use_rep="X_default")  # doctest: +SKIP
    >>> st.tl.evaluate(query, "predicted_knn")  # doctest: +SKIP
    >>> st.pl.trust(query, "predicted_knn")  # doctest: +SKIP
    """
    table = get.trust_df(adata, key)
    achieved = Key.var.metric("pearson", evaluation or key.removeprefix(Key.layers.predicted_prefix))
    expected = table["expected_r"].to_numpy()
    trusted = table["trusted"].to_numpy(bool) if "trusted" in table else np.zeros(len(table), dtype=bool)
    views = []
    if achieved in adata.var:
        views.append((expected, adata.var[achieved].to_numpy(), "expected r", "achieved r"))
    if "eps" in table:
        views.append((expected, table["eps"].to_numpy(), "expected r", "EPS (mean over references)"))
    if not views:
        views.append((expected, table["expected_r_sd"].to_numpy(), "expected r", "SD of r over folds"))
    fig, axes = _utils.subplots(len(views), ncols=len(views), panel_size=panel_size)
    for ax, (x, y, xlabel, ylabel) in zip(axes, views):
        keep = np.isfinite(x) & np.isfinite(y)
        _scatter(ax, x[keep], y[keep], trusted[keep], xlabel, ylabel)
    if achieved in adata.var:
        lo, hi = np.nanmin(expected), np.nanmax(expected)
        axes[0].plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    fig.suptitle(key)
    return _utils.savefig_or_show(fig, "trust", show=show, save=save)
