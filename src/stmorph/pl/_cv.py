"""The cross-validation table of ``st.tl.predict(method="auto")``: held-out Pearson per candidate and fold."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .. import get
from .._validation import checks_keys
from ..errors import InvalidParameterError
from . import _utils

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure

SCORES = ("pearson_hvg50", "pearson_all")


@_utils.shared_docs
@checks_keys("key", "score")
def cv_table(
    adata: AnnData,
    key: str = "predicted_auto",
    *,
    score: str = "pearson_hvg50",
    panel_size: tuple[float, float] = (5.0, 3.2),
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """Held-out mean Pearson of every ``method="auto"`` candidate: one dot per CV fold, a bar for the mean.

    The candidate chosen (highest mean HVG-50 Pearson) is drawn in a darker colour and named in
    the title.

    Parameters
    ----------
    adata
        The query of :func:`stmorph.tl.predict` with ``method="auto"``.
    key
        Its ``key_added`` (entry of ``uns["stmorph"]["predict"]``).
    score
        ``"pearson_hvg50"`` (mean over the held-out fold's 50 most variable genes, the selection
        criterion) or ``"pearson_all"`` (all genes).
    {panel_size}
    {show_save_returns}

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(300, 20).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> query, *references = (adata[i : i + 100].copy() for i in (0, 100, 200))  # three sections of one tissue
    >>> st.tl.predict(query, references, method="auto", use_rep="latent")
    >>> fig = st.pl.cv_table(query, show=False)
    >>> fig.axes[0].get_title().startswith("chosen: ")
    True
    """
    if score not in SCORES:
        raise InvalidParameterError(f"score must be one of {list(SCORES)}; found {score!r}.")
    cv = get.cv_df(adata, key)
    candidates = list(dict.fromkeys(cv["candidate"]))
    selected = cv.loc[cv["selected"], "candidate"].iloc[0]
    values, names = cv[score].to_numpy(), cv["candidate"].to_numpy()
    fig, (ax,) = _utils.subplots(1, ncols=1, panel_size=panel_size)
    for i, name in enumerate(candidates):
        mine = values[names == name]
        ax.barh(i, mine.mean(), color="tab:blue" if name == selected else "lightsteelblue")
        ax.plot(mine, np.full(len(mine), i), "o", color="black", markersize=3)
    ax.set_yticks(range(len(candidates)), candidates)
    ax.invert_yaxis()
    ax.set_xlabel(f"held-out mean Pearson ({'HVG-50' if score == 'pearson_hvg50' else 'all genes'})")
    ax.set_title(f"chosen: {selected}")
    return _utils.savefig_or_show(fig, "cv_table", show=show, save=save)
