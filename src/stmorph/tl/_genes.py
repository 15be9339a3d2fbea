"""The genes a prediction learns: the shared default, the caller's list, and BLEEP's reference HVGs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from .._scores import top_n
from .._validation import InvalidParameterError, StmorphKeyError, check_range, checks_keys, get_matrix

if TYPE_CHECKING:
    from anndata import AnnData


def as_reference_list(reference: AnnData | Sequence[AnnData]) -> list[AnnData]:
    """``reference`` as a non-empty list of AnnData objects, else :class:`InvalidParameterError`."""
    from anndata import AnnData

    refs = [reference] if isinstance(reference, AnnData) else list(reference)
    if not refs or not all(isinstance(r, AnnData) for r in refs):
        raise InvalidParameterError("reference must be an AnnData or a non-empty list of AnnData objects.")
    return refs


def shared_genes(refs: Sequence[AnnData], query: AnnData) -> list[str]:
    """The first reference's genes that every other reference and the query also have, in its order."""
    shared = refs[0].var_names
    for other in [*refs[1:], query]:
        shared = shared[shared.isin(other.var_names)]
    if len(shared) == 0:
        raise StmorphKeyError(
            "the reference(s) and the query share no gene names; check that var_names use the same "
            f"identifiers (reference: e.g. {list(refs[0].var_names[:3])}, query: e.g. {list(query.var_names[:3])})."
        )
    return list(shared)


def gene_list(genes: Sequence[str] | str | None, default: Sequence[str]) -> list[str]:
    """The caller's ``genes`` (or ``default``) as a non-empty list of distinct names."""
    chosen = list(default) if genes is None else ([genes] if isinstance(genes, str) else list(genes))
    if not chosen:
        raise InvalidParameterError("genes is empty; pass at least one gene name.")
    if len(set(chosen)) != len(chosen):
        dup = pd.Index(chosen)[pd.Index(chosen).duplicated()].unique().tolist()
        raise InvalidParameterError(f"genes holds duplicated names, e.g. {dup[:5]}; pass each gene once.")
    return chosen


@checks_keys("layer")
def reference_hvgs(
    reference: AnnData | Sequence[AnnData],
    n_top: int = 1000,
    *,
    query: AnnData | None = None,
    layer: str | None = None,
) -> list[str]:
    """BLEEP's gene set: the union of each reference section's ``n_top`` most variable genes, never the query's.

    BLEEP trains on the union of the highly variable genes of its training sections; choosing the
    genes on the query would leak the held-out section into training. Only genes that every
    reference (and ``query``, if given) has are ranked, so every returned gene can be passed as
    ``genes=`` to :func:`predict`. Genes are ranked by the variance of ``X`` (or
    ``layers[layer]``, e.g. log1p values) within each section (a tie goes to the earlier gene,
    :func:`stmorph._scores.top_n`); the union keeps the first section's order, then each later
    section's new genes. BLEEP and HECLIP make this selection themselves (``train_genes="hvg"``)
    while still predicting every gene; this function is for the other methods, or to predict
    only these genes.

    Parameters
    ----------
    reference
        The reference section(s).
    n_top
        Genes taken from each section.
    query
        The section to predict: genes it lacks are left out too (its expression is never read).
    layer
        Expression to rank (``None``: ``X``).

    Returns
    -------
    Gene names, to pass as ``genes=`` to :func:`predict`.

    Examples
    --------
    >>> import stmorph as st
    >>> refs = [st.datasets.simulate(50, 20, random_state=s).tables["table"] for s in (1, 2)]
    >>> genes = st.tl.reference_hvgs(refs, n_top=5)
    >>> 5 <= len(genes) <= 10
    True
    """
    check_range(n_top, "n_top", low=1, inclusive=True)
    refs = as_reference_list(reference)
    shared = pd.Index(shared_genes(refs, refs[0] if query is None else query))
    chosen: dict[str, None] = {}
    for ref in refs:
        columns = np.sort(ref.var_names.get_indexer(shared))
        mat = get_matrix(ref, layer)[:, columns]
        if sparse.issparse(mat):
            variance = np.asarray(mat.power(2).mean(axis=0)).ravel() - np.asarray(mat.mean(axis=0)).ravel() ** 2
        else:
            variance = np.asarray(mat, dtype=np.float64).var(axis=0)
        chosen.update(dict.fromkeys(ref.var_names[columns[np.sort(top_n(variance, n_top))]]))
    return list(chosen)
