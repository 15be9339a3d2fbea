"""The predictable-gene atlas of a cohort (EPS paper, Fig. 2): per-gene summaries of a stored EPS table.

Everything here reads EPS values that :func:`~stmorph.tl.sps` or :func:`~stmorph.tl.eps` already
computed (a genes × slices table, or the ``var`` columns of each slice) and never computes EPS
again: a HEST-1k-sized table (500 slices × 2,000 genes) is summarised in well under a second.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._keys import Key
from .._logging import logger
from .._optional import import_optional
from .._scores import top_n
from .._validation import (
    InputTypeError,
    InvalidParameterError,
    ShapeMismatchError,
    StmorphKeyError,
    check_int,
    check_path,
    check_range,
    check_slices,
    checks_keys,
    format_keys,
)
from ..errors import DamagedFileError
from ._eps import bh_qvalues

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    Cohort = pd.DataFrame | Sequence[AnnData] | Mapping[str, AnnData] | SpatialData
    """What the atlas reads: the genes × slices EPS table of :func:`~stmorph.tl.sps`, or the slices themselves."""

PAPER_MARKERS = ("KLK3", "ERBB2", "ESR1", "CD274", "BRCA1", "BRCA2")
"""The markers of the EPS paper's panel: KLK3, ERBB2, ESR1 predictable; CD274, BRCA1, BRCA2 not."""

GENE_SET_COLUMNS = ("source", "target")
"""Columns of a decoupler network: the gene set (``source``) and one of its genes (``target``)."""


def score_table(slices: Mapping[str, AnnData], column: str, *, name: str, produced_by: str) -> pd.DataFrame:
    """Genes × slices table of the ``var[column]`` of every slice (NaN where a slice lacks a gene).

    Parameters
    ----------
    slices
        ``{name: AnnData}``, as :func:`~stmorph._validation.check_slices` returns.
    column
        The ``var`` column, e.g. ``"eps"`` or ``"pearson_ridge"``.
    name
        The calling function, for the error message.
    produced_by
        The call that writes ``column``, for the error message.

    Raises
    ------
    StmorphKeyError
        Some slices lack the column; the message names them.
    """
    missing = [s for s, adata in slices.items() if column not in adata.var.columns]
    if missing:
        raise StmorphKeyError(
            f"{name}: slice(s) {format_keys(missing)} have no var[{column!r}]; run `{produced_by}` on them first."
        )
    columns = {s: adata.var[column].astype(np.float64) for s, adata in slices.items()}
    return pd.concat(columns, axis=1, sort=False)


def _check_table(table: object, name: str) -> pd.DataFrame:
    """``table`` as a float genes × slices DataFrame with unique labels, else a clear error."""
    if not isinstance(table, pd.DataFrame):
        raise InputTypeError(f"{name} must be a genes × slices DataFrame; found {type(table).__name__}.")
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise InvalidParameterError(f"{name} needs at least one gene and one slice; found shape {table.shape}.")
    for axis, labels in (("genes (index)", table.index), ("slices (columns)", table.columns)):
        if labels.has_duplicates:
            repeated = labels[labels.duplicated()].unique()
            raise InvalidParameterError(f"{name} has repeated {axis}: {format_keys([str(x) for x in repeated])}.")
    not_numeric = [str(c) for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if not_numeric:
        raise InputTypeError(f"{name}: the columns (slices) {format_keys(not_numeric)} are not numeric.")
    table = table.astype(np.float64)
    table.columns = table.columns.astype(str)
    return table


def eps_tables(
    data: Cohort, qvals: pd.DataFrame | None, key: str, name: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The EPS table and the q-value table (or ``None``) of ``data``: a table, or slices with stored EPS.

    From slices, both are read from ``var`` (``var[key]``, ``var[f"{key}_qval"]`` of
    :func:`~stmorph.tl.eps`); from a table, the q-values are ``qvals`` (same genes and slices).
    Genes without an EPS in any slice (in ``var`` but not scored) are left out.
    """
    eps, q = _all_tables(data, qvals, key, name)
    scored = eps.notna().any(axis=1).to_numpy()
    return eps[scored], None if q is None else q[scored]


def _all_tables(
    data: Cohort, qvals: pd.DataFrame | None, key: str, name: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if isinstance(data, pd.DataFrame):
        eps = _check_table(data, "the EPS table")
        if qvals is None:
            return eps, None
        q = _check_table(qvals, "qvals")
        if not (q.index.equals(eps.index) and q.columns.equals(eps.columns)):
            raise ShapeMismatchError(
                f"qvals must have the genes and slices of the EPS table, in the same order; found {q.shape} with "
                f"{'other' if not q.columns.equals(eps.columns) else 'the same'} slices, EPS table {eps.shape}."
            )
        return eps, q
    if qvals is not None:
        raise InvalidParameterError(
            f"{name}: qvals is for an EPS table; slices carry their own q-values (var[{key + '_qval'!r}])."
        )
    slices = check_slices(data, name)
    eps_col, _, q_col = Key.var.eps(key)
    produced_by = f"st.tl.eps(adata, key_added={key!r})"
    return score_table(slices, eps_col, name=name, produced_by=produced_by), score_table(
        slices, q_col, name=name, produced_by=produced_by
    )


def slice_groups(data: Cohort, slices: pd.Index, groupby: str, metadata: pd.DataFrame | None, name: str) -> pd.Series:
    """The group of every slice: ``metadata[groupby]`` (indexed by slice) or each slice's ``obs[groupby]``.

    Raises
    ------
    StmorphKeyError
        The column is missing from ``metadata`` or from some slices' ``obs`` (the message names them),
        or ``metadata`` has no row for some slices.
    InvalidParameterError
        A slice has no group value or several (``obs`` not constant), or a table is given without
        ``metadata``.
    """
    if metadata is not None:
        if not isinstance(metadata, pd.DataFrame):
            found = type(metadata).__name__
            raise InputTypeError(f"{name}: metadata must be a DataFrame indexed by slice; found {found}.")
        if groupby not in metadata.columns:
            raise StmorphKeyError(f"{name}: metadata has no column {groupby!r}; it has {list(metadata.columns)}.")
        index = metadata.index.astype(str)
        missing = [s for s in slices if s not in index]
        if missing:
            raise StmorphKeyError(f"{name}: metadata has no row for slice(s) {format_keys(missing)} (index: slices).")
        values = pd.Series(metadata[groupby].to_numpy(), index=index)
        return _one_group_each(values[~index.duplicated()].reindex(slices), groupby, name)
    if isinstance(data, pd.DataFrame):
        raise InvalidParameterError(
            f"{name}: an EPS table has no obs; pass metadata=<DataFrame indexed by slice with column {groupby!r}>."
        )
    tables = check_slices(data, name)
    missing = [s for s, adata in tables.items() if groupby not in adata.obs.columns]
    if missing:
        raise StmorphKeyError(
            f"{name}: slice(s) {format_keys(missing)} have no obs[{groupby!r}] (the group column); add it to every "
            "slice or pass metadata=<DataFrame indexed by slice>."
        )
    several = [s for s, adata in tables.items() if adata.obs[groupby].nunique(dropna=False) > 1]
    if several:
        raise InvalidParameterError(
            f"{name}: obs[{groupby!r}] takes several values within slice(s) {format_keys(several)}; a group is one "
            "value per slice (e.g. its tissue)."
        )
    values = pd.Series({s: adata.obs[groupby].iloc[0] if adata.n_obs else None for s, adata in tables.items()})
    return _one_group_each(values.reindex(slices), groupby, name)


def _one_group_each(values: pd.Series, groupby: str, name: str) -> pd.Series:
    empty = values.index[values.isna()].tolist()
    if empty:
        raise InvalidParameterError(f"{name}: slice(s) {format_keys(empty)} have no value of {groupby!r}.")
    return values.astype(str)


def _summary(eps: np.ndarray, qvals: np.ndarray | None, alpha: float) -> dict[str, np.ndarray]:
    """Per-gene mean, SD, number of slices, fraction significant and consistency of a genes × slices array."""
    finite = np.isfinite(eps)
    n = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(eps, axis=1) / n, np.nan)
        sd = np.sqrt(np.nansum((eps - mean[:, None]) ** 2, axis=1) / (n - 1))
        sd[n < 2] = np.nan
        medians = _column_medians(np.where(finite, eps, np.nan))
        consistency = np.where(n > 0, (eps > medians[None, :]).sum(axis=1) / n, np.nan)
        if qvals is None:
            significant = np.full(len(eps), np.nan)
        else:
            tested = np.isfinite(qvals) & finite
            significant = np.where(n > 0, (tested & (qvals < alpha)).sum(axis=1) / n, np.nan)
    return {"mean_eps": mean, "sd_eps": sd, "n_slices": n, "frac_significant": significant, "consistency": consistency}


def _column_medians(values: np.ndarray) -> np.ndarray:
    """Median of each column over its finite values; NaN (without numpy's warning) for a column with none."""
    medians = np.full(values.shape[1], np.nan)
    scored = np.isfinite(values).any(axis=0)
    medians[scored] = np.nanmedian(values[:, scored], axis=0)
    return medians


def _extremes(mean: np.ndarray, eligible: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The top and bottom ``fraction`` of the eligible genes by mean EPS (ties: the earlier gene)."""
    values = np.where(eligible, mean, np.nan)
    n = math.ceil(fraction * int(eligible.sum())) if eligible.any() else 0
    top, bottom = np.zeros(len(mean), bool), np.zeros(len(mean), bool)
    top[top_n(values, n)] = True
    bottom[top_n(np.where(eligible, -mean, np.nan), n)] = True
    return top & eligible, bottom & eligible, n


def welch_greater(x: np.ndarray, in_group: np.ndarray) -> np.ndarray:
    """One-sided Welch t-test per row: are the ``in_group`` columns larger than the others? NaN ignored.

    NaN where either side has fewer than two finite values or no variance.

    Examples
    --------
    >>> from scipy.stats import ttest_ind
    >>> x = np.array([[5.0, 6.0, 5.5, 1.0, 1.2, 0.9]])
    >>> p = welch_greater(x, np.array([True, True, True, False, False, False]))
    >>> bool(np.isclose(p[0], ttest_ind(x[0, :3], x[0, 3:], equal_var=False, alternative="greater").pvalue))
    True
    """
    from scipy.stats import t as student_t

    def moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = np.isfinite(values).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(values, axis=1) / n
            var = np.nansum((values - mean[:, None]) ** 2, axis=1) / (n - 1)
        return n, mean, var

    n1, m1, v1 = moments(x[:, in_group])
    n2, m2, v2 = moments(x[:, ~in_group])
    with np.errstate(invalid="ignore", divide="ignore"):
        se1, se2 = v1 / n1, v2 / n2
        t = (m1 - m2) / np.sqrt(se1 + se2)
        df = (se1 + se2) ** 2 / (se1**2 / (n1 - 1) + se2**2 / (n2 - 1))
        p = student_t.sf(t, df)
    p[(n1 < 2) | (n2 < 2) | ~(se1 + se2 > 0)] = np.nan
    return p


def _group_columns(
    eps: pd.DataFrame, groups: pd.Series, fraction: float, min_slices: int, alpha: float
) -> dict[str, np.ndarray]:
    """Per group: mean EPS, slices, top flag, and the group-specific test (group's slices > the others')."""
    if groups.nunique() < 2:
        raise InvalidParameterError(
            f"group-specific genes compare a group with the others; groupby found one group only "
            f"({groups.iloc[0]!r}). Pass a column that takes at least two values over the slices."
        )
    columns: dict[str, np.ndarray] = {}
    values = eps.to_numpy()
    for group in sorted(groups.unique()):
        member = (groups == group).to_numpy()
        stats = _summary(values[:, member], None, alpha)
        top, _, _ = _extremes(stats["mean_eps"], stats["n_slices"] >= min(min_slices, member.sum()), fraction)
        pval = welch_greater(values, member)
        qval = bh_qvalues(pval)
        columns[f"mean_eps_{group}"] = stats["mean_eps"]
        columns[f"n_slices_{group}"] = stats["n_slices"]
        columns[f"top_{group}"] = top
        columns[f"specific_pval_{group}"] = pval
        columns[f"specific_qval_{group}"] = qval
        columns[f"specific_{group}"] = top & (qval < alpha)
    return columns


@checks_keys("key", "groupby")
def predictable_genes(
    data: Cohort,
    qvals: pd.DataFrame | None = None,
    *,
    fraction: float = 0.05,
    alpha: float = 0.05,
    min_slices: int = 1,
    groupby: str | None = None,
    metadata: pd.DataFrame | None = None,
    key: str = "eps",
) -> pd.DataFrame:
    """The predictable-gene atlas of a cohort: which genes the image predicts across slices (EPS paper, Fig. 2).

    Reads EPS already computed — the genes × slices table of :func:`sps`, or each slice's
    ``var`` from :func:`eps` — and never computes EPS again, so a table of hundreds of slices
    (HEST-1k) is summarised in well under a second.

    Parameters
    ----------
    data
        The EPS table of :func:`sps` (genes × slices, NaN where a slice lacks a gene), or the
        slices (a list/dict of AnnData or a SpatialData, as for :func:`sps`) after
        :func:`eps`: their ``var[key]`` and ``var[f"{key}_qval"]`` are read.
    qvals
        With a table: the BH q-values of the same genes × slices (``var["eps_qval"]`` of each
        slice), for ``frac_significant``. :func:`sps` returns EPS only; without ``qvals``
        ``frac_significant`` is NaN.
    fraction
        The share of genes flagged ``top`` (highest mean EPS) and ``bottom`` (lowest); 5 % as in
        the paper, rounded up, among the genes scored in at least ``min_slices`` slices.
    alpha
        q-value threshold of "significant" (``frac_significant`` and ``specific_*``).
    min_slices
        Genes scored in fewer slices get no ``top``/``bottom`` flag (their mean rests on few
        slices); they keep their summaries.
    groupby
        A group per slice (e.g. tissue or cancer type): a column of ``metadata``, else of each
        slice's ``obs`` (one value per slice). Adds the group columns below.
    metadata
        One row per slice (index: the slice names, the table's columns) holding ``groupby``.
    key
        The ``key_added`` of :func:`eps`, for slices.

    Returns
    -------
    One row per gene with an EPS in at least one slice (most predictable first), with columns:

    ``mean_eps``, ``sd_eps`` : mean and SD of the gene's EPS over the slices scoring it.
    ``n_slices`` : slices with a finite EPS for the gene.
    ``frac_significant`` : share of those slices where its q-value is below ``alpha``.
    ``consistency`` : share of those slices where its EPS is above the slice's median EPS (1: always
    among the more predictable half of its slice, 0: always among the less predictable; ~0.5: no
    consistent place). Being relative to each slice, it is not swayed by slices whose EPS is high
    overall (a high SPS).
    ``top``, ``bottom`` : in the top/bottom ``fraction`` by ``mean_eps``.

    With ``groupby``, for each group ``g``: ``mean_eps_g``, ``n_slices_g``, ``top_g`` (top
    ``fraction`` of the group's mean EPS), ``specific_pval_g`` (one-sided Welch t-test: EPS in the
    group's slices above EPS in the other slices; NaN with fewer than two slices on a side),
    ``specific_qval_g`` (BH over genes), and ``specific_g`` (``top_g`` and ``specific_qval_g <
    alpha``): the group-specific predictable genes.

    Raises
    ------
    InputTypeError
        ``data`` is neither a DataFrame nor slices; a table column is not numeric.
    StmorphKeyError
        A slice lacks ``var[key]`` (run :func:`eps`) or the ``groupby`` column; the message names
        the slices.
    InvalidParameterError
        Bad ``fraction``/``alpha``/``min_slices``; a slice without a group value or with several;
        ``groupby`` with one group only; ``groupby`` on a table without ``metadata``.
    ShapeMismatchError
        ``qvals`` does not match the EPS table.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import stmorph as st
    >>> rng = np.random.default_rng(0)
    >>> eps = pd.DataFrame(rng.normal(0.0, 0.05, (40, 6)), index=[f"g{i}" for i in range(40)],
    ...                    columns=[f"s{j}" for j in range(6)])
    >>> eps.loc["g0"] += 0.5  # predictable in every slice
    >>> atlas = st.tl.predictable_genes(eps)
    >>> atlas.index[0], int(atlas["top"].sum()), float(atlas.loc["g0", "consistency"])
    ('g0', 2, 1.0)
    """
    check_range(fraction, "fraction", low=0, high=0.5, inclusive=False)
    check_range(alpha, "alpha", low=0, high=1)
    check_int(min_slices, "min_slices", low=1)
    name = "st.tl.predictable_genes"
    eps, q = eps_tables(data, qvals, key, name)
    groups = slice_groups(data, eps.columns, groupby, metadata, name) if groupby is not None else None
    stats = _summary(eps.to_numpy(), None if q is None else q.to_numpy(), alpha)
    top, bottom, n = _extremes(stats["mean_eps"], stats["n_slices"] >= min_slices, fraction)
    table = pd.DataFrame({**stats, "top": top, "bottom": bottom}, index=eps.index)
    table.index.name = "gene"
    if groups is not None:
        group_columns = _group_columns(eps, groups, fraction, min_slices, alpha)
        table = pd.concat([table, pd.DataFrame(group_columns, index=eps.index)], axis=1)
    logger.info("predictable_genes: %d genes over %d slices; top/bottom %d genes each", len(table), eps.shape[1], n)
    return table.sort_values("mean_eps", ascending=False, na_position="last", kind="stable")


def read_gmt(path: str | os.PathLike) -> pd.DataFrame:
    """The gene sets of a GMT file as a decoupler network (columns ``source``, ``target``).

    GMT: one set per line, tab-separated: name, description, genes (MSigDB's format).

    Raises
    ------
    DamagedFileError
        A line has no gene; the message names the line.

    Examples
    --------
    >>> from pathlib import Path
    >>> _ = Path("sets.gmt").write_text("ECM\\tmatrix\\tCOL1A1\\tFN1\\nMEMBRANE\\tna\\tCD274\\n")
    >>> read_gmt("sets.gmt").values.tolist()
    [['ECM', 'COL1A1'], ['ECM', 'FN1'], ['MEMBRANE', 'CD274']]
    """
    path = check_path(path, "gene_sets", "file")
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        genes = [g for g in fields[2:] if g]
        if not genes:
            raise DamagedFileError(
                f"{str(path)!r} line {number} has no gene: a GMT line is <name>\\t<description>\\t<gene>\\t<gene>…"
            )
        rows += [(fields[0], gene) for gene in genes]
    return pd.DataFrame(rows, columns=list(GENE_SET_COLUMNS))


def gene_set_network(gene_sets: Any) -> pd.DataFrame:
    """``gene_sets`` (a dict, a GMT path or a decoupler network) as a network without repeated rows."""
    if isinstance(gene_sets, str | os.PathLike):
        net = read_gmt(gene_sets)
    elif isinstance(gene_sets, pd.DataFrame):
        missing = [c for c in GENE_SET_COLUMNS if c not in gene_sets.columns]
        if missing:
            raise StmorphKeyError(
                f"a gene-set DataFrame is a decoupler network with columns {list(GENE_SET_COLUMNS)}; it lacks "
                f"{missing} (found {list(gene_sets.columns)}). Rename its columns, e.g. df.rename(columns=...)."
            )
        net = gene_sets[list(GENE_SET_COLUMNS)]
    elif isinstance(gene_sets, Mapping):
        bad = [str(k) for k, v in gene_sets.items() if isinstance(v, str) or not isinstance(v, Sequence | set)]
        if bad:
            raise InputTypeError(f"gene_sets: each set is a list of gene names; not so for {format_keys(bad)}.")
        rows = [(str(k), str(g)) for k, genes in gene_sets.items() for g in genes]
        net = pd.DataFrame(rows, columns=list(GENE_SET_COLUMNS))
    else:
        raise InputTypeError(
            "gene_sets must be a dict {name: genes}, the path of a GMT file or a decoupler network DataFrame; "
            f"found {type(gene_sets).__name__}."
        )
    return net.astype(str).drop_duplicates(ignore_index=True)


def _scored_genes(atlas: pd.DataFrame, background: Sequence[str] | None) -> pd.Index:
    """The background: ``background`` if given, else every gene of the atlas with a mean EPS."""
    if background is not None:
        universe = pd.Index([str(g) for g in background]).unique()
        tested = atlas.index[atlas["top"] | atlas["bottom"]]
        outside = tested.difference(universe)
        if len(outside):
            raise InvalidParameterError(
                f"background must hold every top/bottom gene; {len(outside)} are not in it, e.g. "
                f"{format_keys(list(outside), 5)}."
            )
        return universe
    return atlas.index[np.isfinite(atlas["mean_eps"].to_numpy())]


def enrich_predictable(
    atlas: pd.DataFrame,
    gene_sets: Mapping[str, Sequence[str]] | str | os.PathLike | pd.DataFrame,
    *,
    background: Sequence[str] | None = None,
    min_size: int = 5,
) -> pd.DataFrame:
    """Gene sets over-represented among the most and the least predictable genes (EPS paper, Fig. 2b).

    For each of the ``top`` and ``bottom`` genes of :func:`predictable_genes`, a one-sided
    Fisher's exact test (hypergeometric over-representation) of every gene set, by decoupler's
    ``decoupler.mt.query_set`` (install with ``pip install "stmorph[enrichment]"``), with
    Benjamini–Hochberg q-values over the sets. Nothing is downloaded: pass your own sets (see
    the atlas page of the docs for fetching GO or MSigDB through decoupler when online).

    **The background is the scored genes by default.** A gene can only land in the top or bottom
    set if it was measured and scored; against the whole genome (~20,000 genes, as the paper's
    clusterProfiler run) every set rich in well-measured genes looks enriched among *any*
    subset of the scored genes, whatever its EPS. Gene sets are therefore cut to the
    background before testing, and the test asks whether a set is over-represented among the top
    genes *relative to the other scored genes*.

    Parameters
    ----------
    atlas
        The table of :func:`predictable_genes` (columns ``mean_eps``, ``top``, ``bottom``).
    gene_sets
        ``{name: [genes]}``, the path of a GMT file (MSigDB's format), or a decoupler network
        (a DataFrame with columns ``source`` = set, ``target`` = gene, e.g. from
        ``decoupler.op.resource``).
    background
        The gene universe; default: the genes of ``atlas`` with a mean EPS. It must contain every
        top and bottom gene.
    min_size
        Sets with fewer genes in the background are not tested.

    Returns
    -------
    One row per gene list and set, most significant first within each list: ``list`` (``"top"``
    or ``"bottom"``), ``term`` (the set), ``set_size`` (genes of the set in the background),
    ``overlap`` (of those, in the list), ``expected`` (the overlap expected by chance),
    ``log_odds`` (decoupler's log odds ratio, Haldane–Anscombe corrected), ``pval``, ``qval``
    (BH within the list), ``genes`` (the overlapping genes, ``;``-separated).

    Raises
    ------
    MissingDependencyError
        decoupler is not installed.
    InvalidParameterError
        No gene set has ``min_size`` genes among the background (e.g. gene symbols against
        Ensembl IDs: the message shows genes of both); the atlas has no top genes; the background
        misses top/bottom genes.
    StmorphKeyError
        ``atlas`` lacks a column of :func:`predictable_genes`, or a network lacks ``source``/``target``.
    InputTypeError
        ``gene_sets`` is of another type.
    DamagedFileError
        A GMT line has no gene.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import stmorph as st
    >>> genes = [f"g{i}" for i in range(200)]
    >>> eps = pd.DataFrame(np.linspace(1, 0, 200)[:, None] + np.zeros((1, 3)), index=genes)
    >>> atlas = st.tl.predictable_genes(eps, fraction=0.05)  # top: g0…g9
    >>> sets = {"matrix": genes[:8] + genes[100:104], "random": genes[50:62]}
    >>> result = st.tl.enrich_predictable(atlas, sets)
    >>> result.loc[result["list"] == "top", ["term", "overlap"]].values.tolist()
    [['matrix', 8], ['random', 0]]
    """
    check_int(min_size, "min_size", low=1)
    missing = [c for c in ("mean_eps", "top", "bottom") if c not in getattr(atlas, "columns", ())]
    if missing:
        raise StmorphKeyError(f"atlas lacks the columns {missing}; pass the table of st.tl.predictable_genes.")
    if not atlas["top"].any():
        raise InvalidParameterError("the atlas flags no top gene (no gene with a mean EPS); nothing to test.")
    dc = import_optional("decoupler", package="decoupler", extra="enrichment", needed_for="st.tl.enrich_predictable")
    universe = _scored_genes(atlas, background)
    net = gene_set_network(gene_sets)
    net = net[net["target"].isin(universe)]
    sizes = net["source"].value_counts()
    kept = sizes.index[sizes >= min_size]
    if kept.empty:
        raise InvalidParameterError(
            f"no gene set shares at least min_size={min_size} genes with the {len(universe)} scored genes "
            f"(largest overlap: {int(sizes.max()) if len(sizes) else 0}). Are both in the same identifiers? "
            f"Scored genes: {format_keys(list(universe[:3]))}; set genes: "
            f"{format_keys(list(gene_set_network(gene_sets)['target'].unique()[:3]))}."
        )
    net = net[net["source"].isin(kept)]
    frames = [_one_list(dc, atlas.index[atlas[which]], which, net, len(universe)) for which in ("top", "bottom")]
    return pd.concat(frames, ignore_index=True)


def _one_list(dc: Any, genes: pd.Index, which: str, net: pd.DataFrame, n_background: int) -> pd.DataFrame:
    """decoupler's one-sided ORA of one gene list against the (already cut) sets, with overlap details."""
    result = dc.mt.query_set(features=list(genes), net=net, alternative="greater", n_bg=n_background, tmin=1)
    members = net.groupby("source")["target"].agg(list)
    chosen = set(genes)
    overlap = members.map(lambda targets: sorted(set(targets) & chosen))
    terms = result["source"]
    table = pd.DataFrame(
        {
            "list": which,
            "term": terms.to_numpy(),
            "set_size": members.loc[terms].map(len).to_numpy(),
            "overlap": overlap.loc[terms].map(len).to_numpy(),
            "log_odds": result["stat"].to_numpy(),
            "pval": result["pval"].to_numpy(),
            "qval": result["padj"].to_numpy(),
            "genes": overlap.loc[terms].map(";".join).to_numpy(),
        }
    )
    table.insert(4, "expected", table["set_size"] * len(genes) / n_background)
    return table.sort_values(["pval", "term"], kind="stable", ignore_index=True)
