"""The expression pipeline of the EPS paper (Xia, Yao & Gao 2025), as one scverse-style step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import commit_outputs
from .._keys import Key
from .._logging import logger
from .._validation import (
    InputTypeError,
    TooFewObservationsError,
    check_bool,
    check_in_memory,
    check_int,
    check_n_obs,
    check_range,
    check_unique_names,
    checks_keys,
    get_matrix,
)

if TYPE_CHECKING:
    from anndata import AnnData


def _check_counts(counts: np.ndarray | sparse.spmatrix, name: str) -> None:
    values = counts.data if sparse.issparse(counts) else counts
    if values.size and values.min() < 0:
        raise InputTypeError(f"{name} must hold raw (non-negative) counts; found minimum {values.min()}.")


def _as_supported(counts: np.ndarray | sparse.spmatrix) -> np.ndarray | sparse.spmatrix:
    """A copy of ``counts`` in a dtype scanpy's steps handle: float16 (dense only in scipy) becomes float32.

    float32 holds every float16 value exactly, so the result is that of the same counts given as float32.
    """
    return counts.astype(np.float32) if counts.dtype == np.float16 else counts.copy()


def _check_genes_left(work: AnnData, n_genes: int, min_cells: int, min_counts: int) -> None:
    if work.n_vars == 0:
        raise TooFewObservationsError(
            f"st.pp.prepare_expression: none of the {n_genes} genes is detected in at least min_cells={min_cells} "
            f"spots with at least min_counts={min_counts} counts in total, so every gene was filtered out. Lower "
            "min_cells / min_counts, or check that the matrix holds raw counts (layer=)."
        )


def _run_pipeline(
    counts: np.ndarray | sparse.spmatrix,
    var_names: pd.Index,
    *,
    min_cells: int,
    min_counts: int,
    n_top_genes: int,
    target_sum: float,
    max_value: float | None,
):
    """Scanpy steps of the paper on a private AnnData; returns it with ``layers['log1p']``."""
    import anndata as ad
    import scanpy as sc

    work = ad.AnnData(X=_as_supported(counts), var=pd.DataFrame(index=var_names.copy()))
    sc.pp.filter_genes(work, min_cells=min_cells)
    sc.pp.filter_genes(work, min_counts=min_counts)
    _check_genes_left(work, len(var_names), min_cells, min_counts)
    if work.n_obs > n_top_genes:
        sc.pp.highly_variable_genes(work, n_top_genes=n_top_genes, flavor="seurat_v3", subset=True)
    work.layers[Key.layers.counts] = work.X.copy()
    sc.pp.normalize_total(work, target_sum=target_sum)
    sc.pp.log1p(work)
    work.layers[Key.layers.log1p] = work.X.copy()
    if sparse.issparse(work.X):  # z-scores are dense; densify here rather than inside scanpy (which warns)
        work.X = work.X.toarray()
    sc.pp.scale(work, max_value=max_value)
    return work


@checks_keys("layer")
def prepare_expression(
    adata: AnnData,
    *,
    min_cells: int = 3,
    min_counts: int = 3,
    n_top_genes: int = 2000,
    target_sum: float = 1e4,
    max_value: float | None = 10,
    layer: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """The expression pipeline of the EPS paper: filter, HVG, normalise, log1p, scale with clip.

    Exactly the steps of the published implementation (``expression_copilot.pp.process_omics``):
    ``sc.pp.filter_genes(min_cells)``, ``sc.pp.filter_genes(min_counts)``, then — only when
    ``n_obs > n_top_genes`` — ``sc.pp.highly_variable_genes(flavor="seurat_v3", subset=True)`` on
    the counts, ``sc.pp.normalize_total(target_sum)``, ``sc.pp.log1p`` and
    ``sc.pp.scale(max_value)`` (z-score per gene, ``ddof=1``, clipped at ``±max_value``).

    Parameters
    ----------
    adata
        Annotated data matrix with raw counts (sparse or dense) in ``X`` or ``layers[layer]``.
        float16 counts are processed as float32 (which holds them exactly). A backed AnnData
        (``read_h5ad(..., backed="r")``) is read into memory with ``copy=True``; it cannot be edited in place.
    min_cells
        Keep genes detected in at least this many spots.
    min_counts
        Keep genes with at least this many counts in total.
    n_top_genes
        Highly variable genes to keep (seurat_v3 on counts) when there are more spots than this.
    target_sum
        Counts per spot after normalisation.
    max_value
        Clip z-scores at ``±max_value``; ``None`` does not clip.
    layer
        Take the counts from ``adata.layers[layer]`` instead of ``X``.
    copy
        Return a modified copy instead of editing ``adata``.

    Returns
    -------
    ``None`` if ``copy=False``, else a new :class:`~anndata.AnnData`, subset to the kept genes, with:

    ``adata.X`` : dense scaled (z-scored, clipped) expression, the input of :func:`stmorph.tl.eps`.
    ``adata.layers['counts']`` : the raw counts (sparse stays sparse; float16 becomes float32).
    ``adata.layers['log1p']`` : normalised log1p expression (sparse stays sparse).
    ``adata.var`` : ``n_cells``, ``n_counts`` and, with the HVG step, scanpy's HVG columns.
    ``adata.uns['stmorph']['prepare_expression']`` : the parameters.

    Raises
    ------
    InputTypeError
        Negative or non-numeric counts; a backed AnnData with ``copy=False``.
    NonFiniteError
        NaN or inf in the counts.
    TooFewObservationsError
        A single spot (z-scores need two), or no gene passes ``min_cells`` and ``min_counts``.

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 30).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> sorted(adata.layers)
    ['counts', 'log1p']
    """
    check_int(min_cells, "min_cells", low=0)
    check_int(min_counts, "min_counts", low=0)
    check_int(n_top_genes, "n_top_genes", low=1)
    check_range(target_sum, "target_sum", low=0)
    if max_value is not None:
        check_range(max_value, "max_value", low=0)
    check_bool(copy, "copy")
    if not copy:
        check_in_memory(adata, "st.pp.prepare_expression")
    check_unique_names(adata, "var")
    counts = get_matrix(adata, layer)
    _check_counts(counts, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    check_n_obs(adata.n_obs, 2, "prepare_expression (z-scoring)")
    work = _run_pipeline(
        counts,
        adata.var_names,
        min_cells=min_cells,
        min_counts=min_counts,
        n_top_genes=n_top_genes,
        target_sum=target_sum,
        max_value=max_value,
    )
    logger.info("prepare_expression kept %d of %d genes", work.n_vars, adata.n_vars)
    params = {
        "min_cells": int(min_cells),
        "min_counts": int(min_counts),
        "n_top_genes": int(n_top_genes),
        "hvg": bool(adata.n_obs > n_top_genes),
        "target_sum": float(target_sum),
        "layer": layer if layer is not None else "X",
    }
    if max_value is not None:
        params["max_value"] = float(max_value)

    if copy:
        adata = adata.to_memory() if adata.isbacked else adata.copy()
    adata._inplace_subset_var(adata.var_names.get_indexer(work.var_names))
    adata.X = work.X
    commit_outputs(
        adata,
        var={col: work.var[col].to_numpy() for col in work.var.columns},
        layers={name: work.layers[name] for name in (Key.layers.counts, Key.layers.log1p)},
        uns={Key.uns.tool("prepare_expression"): params},
    )
    return adata if copy else None
