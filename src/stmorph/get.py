"""``st.get``: stored results as tables, as :mod:`scanpy.get` does for scanpy's.

Every stmorph tool writes into the AnnData it was given; these functions read those results back
as :class:`pandas.DataFrame` objects, so scripts, the CLI and the demo never reach into ``uns``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._anndata import tool_record
from ._keys import Key
from ._validation import StmorphKeyError, checks_keys

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["cv_df", "eps_df", "evaluation_df", "trust_df"]


def _var_columns(adata: AnnData, columns: dict[str, str], call: str) -> pd.DataFrame:
    """The ``var`` columns ``columns`` (name in the table → column) that exist, else a clear error."""
    present = {name: col for name, col in columns.items() if col in adata.var.columns}
    if not present:
        raise StmorphKeyError(f"adata.var has none of the columns {list(columns.values())}; run `{call}` first.")
    return pd.DataFrame({name: adata.var[col].to_numpy() for name, col in present.items()}, index=adata.var_names)


@checks_keys("key_added")
def eps_df(adata: AnnData, key_added: str = "eps", *, sort: bool = True) -> pd.DataFrame:
    """The EPS table of ``st.tl.eps(key_added=...)``: one row per gene.

    Parameters
    ----------
    adata
        The AnnData :func:`stmorph.tl.eps` wrote into.
    key_added
        Its ``key_added``.
    sort
        Most predictable first (genes without an EPS last); otherwise ``var`` order.

    Returns
    -------
    Columns ``eps``, ``pval``, ``qval``, and where stored ``n_detected`` (spots where the gene is
    detected) and ``eps_spatial`` (the spatial-graph control); indexed by gene.

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(100, 10, n_planted=2).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> st.tl.eps(adata, use_rep="latent", progress=False)
    >>> table = st.get.eps_df(adata)
    >>> list(table.columns[:3]), len(table)
    (['eps', 'pval', 'qval'], 10)
    """
    eps, pval, qval = Key.var.eps(key_added)
    columns = {"eps": eps, "pval": pval, "qval": qval, "n_detected": Key.var.n_detected(key_added)}
    columns["eps_spatial"] = Key.var.spatial_eps(key_added)
    table = _var_columns(adata, columns, f"st.tl.eps(adata, key_added={key_added!r})")
    return table.sort_values("eps", ascending=False, na_position="last", kind="stable") if sort else table


@checks_keys("key")
def evaluation_df(adata: AnnData, key: str) -> pd.DataFrame:
    """The summary table of ``st.tl.evaluate(adata, key)``: one row, BLEEP's columns.

    Parameters
    ----------
    adata
        The AnnData :func:`stmorph.tl.evaluate` wrote into.
    key
        The evaluation's ``key_added`` (by default the method, e.g. ``"ridge"``) or the evaluated
        layer (``"predicted_ridge"``).

    Returns
    -------
    One row named after the evaluation: ``pearson_HEG``, ``pearson_HVG``, ``pearson_MG``,
    ``pearson_all``, … (see :func:`stmorph.tl.evaluate`).

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 20, n_planted=4).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> st.tl.predict(adata, method="ridge", use_rep="latent", split=0.3)
    >>> st.tl.evaluate(adata, "predicted_ridge")
    >>> st.get.evaluation_df(adata, "predicted_ridge").index.tolist()
    ['ridge']
    """
    for name in dict.fromkeys([key, key.removeprefix(Key.layers.predicted_prefix)]):
        summary = tool_record(adata, "evaluate", name).get("summary")
        if summary is not None:
            return pd.DataFrame({k: [float(v)] for k, v in summary.items()}, index=pd.Index([name], name="prediction"))
    raise StmorphKeyError(f"no evaluation {key!r} in adata.uns['stmorph']['evaluate']; run `st.tl.evaluate` first.")


@checks_keys("key")
def cv_df(adata: AnnData, key: str = "predicted_auto") -> pd.DataFrame:
    """The cross-validation table of ``st.tl.predict(method="auto")``: one row per candidate × fold.

    Parameters
    ----------
    adata
        The query of :func:`stmorph.tl.predict` with ``method="auto"``.
    key
        Its ``key_added``.

    Returns
    -------
    Columns ``candidate``, ``fold``, ``pearson_hvg50`` (the selection score), ``pearson_all`` and
    ``selected`` (whether the row's candidate was chosen).

    Examples
    --------
    >>> import stmorph as st
    >>> sections = [st.datasets.simulate(80, 12, n_planted=3, random_state=s).tables["table"] for s in range(3)]
    >>> for t in sections:
    ...     st.pp.prepare_expression(t)
    >>> query, *refs = sections
    >>> st.tl.predict(query, refs, method="auto", use_rep="latent", progress=False)
    >>> table = st.get.cv_df(query)
    >>> sorted(set(table["fold"])), int(table["selected"].sum())
    (['0', '1'], 2)
    """
    record = tool_record(adata, "predict", key)
    if "cv" not in record:
        raise StmorphKeyError(
            f"adata.uns['stmorph']['predict'][{key!r}] holds no CV table; it is written by "
            'st.tl.predict(query, references, method="auto", ...).'
        )
    cv = record["cv"]
    table = pd.DataFrame(
        {
            "candidate": np.asarray(cv["candidate"]).astype(str),
            "fold": np.asarray(cv["fold"]).astype(str),
            "pearson_hvg50": np.asarray(cv["pearson_hvg50"], dtype=float),
            "pearson_all": np.asarray(cv["pearson_all"], dtype=float),
        }
    )
    table["selected"] = table["candidate"] == str(cv["selected"])
    return table


@checks_keys("key")
def trust_df(adata: AnnData, key: str) -> pd.DataFrame:
    """How far to trust each gene of the prediction ``key``: the trust columns ``st.tl.predict`` wrote.

    Parameters
    ----------
    adata
        The query of :func:`stmorph.tl.predict`.
    key
        The prediction's ``key_added``.

    Returns
    -------
    One row per gene, the columns present of ``expected_r`` (held-out Pearson expected from
    cross-validation over the references), ``expected_r_sd`` (its spread over folds), ``eps``,
    ``eps_qval`` and ``trusted``; indexed by gene.

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(100, 10).tables["table"]
    >>> try:
    ...     st.get.trust_df(adata, "predicted_knn")
    ... except st.errors.StmorphKeyError as err:
    ...     print(str(err).split(";")[1].strip())
    run `st.tl.predict(query, references, ..., key_added='predicted_knn')` first.
    """
    names = ("expected_r", "expected_r_sd", "eps", "eps_qval", "trusted")
    call = f"st.tl.predict(query, references, ..., key_added={key!r})"
    return _var_columns(adata, {name: Key.var.trust(key, name) for name in names}, call)
