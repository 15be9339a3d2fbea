"""``st.pl.benchmark_encoders``: the encoder benchmark of ``st.tl.benchmark_encoders``, SPS against the probe."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._validation import InputTypeError, StmorphKeyError, checks_keys
from ..tl import stored_benchmark
from . import _utils

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure

COLUMNS = ("sps", "probe_pearson_mean", "probe_pearson_sd")


def _table(data: pd.DataFrame | AnnData, key: str) -> pd.DataFrame:
    """The benchmark table: given, or stored in ``data`` by ``st.tl.benchmark_encoders(inplace=True)``."""
    from anndata import AnnData

    if isinstance(data, AnnData):
        return stored_benchmark(data, key)
    if not isinstance(data, pd.DataFrame):
        raise InputTypeError(
            "st.pl.benchmark_encoders draws the table of `st.tl.benchmark_encoders` or a slice it was stored in "
            f"(inplace=True); found {type(data).__name__}."
        )
    missing = [c for c in COLUMNS if c not in data.columns]
    if missing:
        raise StmorphKeyError(
            f"table columns {missing} not found; available: {list(data.columns)}. Pass the table of "
            "`st.tl.benchmark_encoders`."
        )
    return data


def rank_agreement(table: pd.DataFrame) -> float:
    """Spearman correlation of the encoders' SPS and probe means (NaN with fewer than three encoders).

    Examples
    --------
    >>> import pandas as pd
    >>> rank_agreement(pd.DataFrame({"sps": [0.1, 0.3, 0.2], "probe_pearson_mean": [0.2, 0.5, 0.1]}))
    0.5
    """
    from scipy.stats import spearmanr

    if len(table) < 3:
        return float("nan")
    return float(spearmanr(table["sps"], table["probe_pearson_mean"]).statistic)


@_utils.shared_docs
@checks_keys("key")
def benchmark_encoders(
    data: pd.DataFrame | AnnData,
    *,
    key: str = "benchmark",
    figsize: tuple[float, float] = (5.5, 4.2),
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """Each encoder's mean SPS against its HEST-Benchmark probe score (mean ± sd over folds).

    An encoder to the upper right is better by both measures; the title gives the Spearman
    correlation of the two rankings (with at least three encoders).

    Parameters
    ----------
    data
        The table of :func:`stmorph.tl.benchmark_encoders`, or a slice it was stored in
        (``inplace=True``).
    key
        With a slice: the ``key_added`` of the stored benchmark.
    figsize
        Figure size in inches.
    {show_save_returns}

    Examples
    --------
    >>> import numpy as np
    >>> import stmorph as st
    >>> spots = st.datasets.simulate(180, 30, n_planted=10).tables["table"]
    >>> st.pp.prepare_expression(spots)
    >>> spots.obsm["noise"] = np.random.default_rng(1).normal(size=(180, 4))
    >>> patients = [spots[i::3].copy() for i in range(3)]  # every third spot: three patients
    >>> st.tl.benchmark_encoders(patients, use_rep=["latent", "noise"], n_top=10, n_perms=0, inplace=True)
    >>> fig = st.pl.benchmark_encoders(patients[0], show=False)  # the table stored in a slice
    >>> fig.axes[0].get_xlabel()
    'SPS (mean over slices)'
    """
    import matplotlib.pyplot as plt

    _utils.check_plot_options(show=show, save=save, figsize=figsize)
    table = _table(data, key)
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    x, y = table["sps"].to_numpy(np.float64), table["probe_pearson_mean"].to_numpy(np.float64)
    for i, (name, xi, yi, sd) in enumerate(zip(table.index, x, y, table["probe_pearson_sd"].to_numpy(np.float64))):
        ax.errorbar(xi, yi, yerr=sd, fmt="o", color=f"C{i % 10}", capsize=3, zorder=3)
        ax.annotate(str(name), (xi, yi), xytext=(5, 4), textcoords="offset points", fontsize=9)
    rho = rank_agreement(table)
    ax.set_xlabel("SPS (mean over slices)")
    ax.set_ylabel("HEST probe: mean Pearson r (± sd over folds)")
    agreement = f" (Spearman ρ = {rho:.2f})" if np.isfinite(rho) else ""
    ax.set_title(f"{len(table)} encoders: SPS vs linear probe{agreement}")
    ax.margins(0.15)
    return _utils.savefig_or_show(fig, "benchmark_encoders", show=show, save=save)
