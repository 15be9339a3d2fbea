"""EPS (Expression Predictability Score) per gene and SPS (Slice Predictability Score) per slice.

Xia, Yao & Gao (bioRxiv 2025.11.04.686651): EPS of a gene is ``-log`` of its Geary's C on the
directed, unweighted kNN graph of the spots' image embeddings; SPS is the mean EPS of a slice.
The math is in :mod:`stmorph.tl._geary`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import commit_outputs, tool_record
from .._docs import doc_params
from .._keys import Key
from .._logging import logger, warn_user
from .._parallel import map_slides
from .._tables import table_of
from .._validation import (
    check_bool,
    check_graph_shape,
    check_int,
    check_range,
    check_seed,
    check_slices,
    check_unique_names,
    checks_keys,
    get_genes,
    get_matrix,
)
from ..errors import InputTypeError, InvalidParameterError, ShapeMismatchError, StmorphKeyError
from ._embed import latest_embedding
from ._geary import (
    PVALUE_NULLS,
    analytic_pvalues,
    clip_like_scale,
    constant_mask,
    geary_terms,
    gearys_c,
    graph_moments,
    kurtosis,
    nonzero_counts,
    normality_variance,
    permutation_pvalues,
    randomization_variance,
)
from ._graph import (
    build_graph,
    check_n_neighbors,
    check_stored_exclusion,
    matches_stored,
    spatial_knn_graph,
    stored_exclude_radius,
    stored_graph,
)
from ._spatial import adjacent_edge_fraction, check_exclude_radius, spot_positions

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

DEFAULT_N_PERMS = 999
"""Permutations of ``pvalues="permutation"`` when ``n_perms`` is not given."""


class _Default(Enum):
    """Sentinel of an argument whose default depends on the data (scanpy's ``Empty``)."""

    token = 0


HVG_MASK = _Default.token
"""Default ``mask_var``: ``var["highly_variable"]`` when that column exists, else every gene."""


@dataclass
class EPSResult:
    """Per-gene results of :func:`compute_eps` (arrays aligned with ``genes``)."""

    genes: pd.Index
    eps: np.ndarray
    pval: np.ndarray
    qval: np.ndarray
    n_constant: int
    pvalues: str = "randomization"
    n_perms: int = 0

    @property
    def sps(self) -> float:
        """Mean EPS over genes with a finite EPS (NaN when there is none)."""
        finite = np.isfinite(self.eps)
        return float(self.eps[finite].mean()) if finite.any() else float("nan")

    @property
    def n_genes(self) -> int:
        """Number of genes with a finite EPS (those averaged into SPS)."""
        return int(np.isfinite(self.eps).sum())


def bh_qvalues(pvals: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values over the finite p-values; NaN stays NaN."""
    from scipy.stats import false_discovery_control  # imported here to keep `import stmorph` fast

    q = np.full(pvals.shape, np.nan)
    finite = np.isfinite(pvals)
    if finite.any():
        q[finite] = false_discovery_control(pvals[finite], method="bh")
    return q


def compute_eps(
    graph: sparse.csr_matrix,
    X: np.ndarray | sparse.spmatrix,
    genes: pd.Index,
    *,
    max_value: float | None = None,
    pvalues: str = "randomization",
    n_perms: int = DEFAULT_N_PERMS,
    random_state: int = 0,
    progress: bool = False,
) -> EPSResult:
    """EPS, p-values and BH q-values of every column of ``X`` on ``graph`` (no AnnData involved).

    Parameters
    ----------
    graph
        ``n × n`` sparse weights (the image kNN graph).
    X
        ``n × g`` expression, dense or sparse (never densified).
    genes
        Column names.
    max_value
        Clip each gene at ``mean ± max_value · sd`` first (what ``sc.pp.scale(max_value=...)``
        does); ``None`` uses ``X`` as given.
    pvalues
        The null of the p-values: ``"randomization"`` (Cliff & Ord's randomization variance, with
        each gene's kurtosis), ``"normality"`` or ``"permutation"``.
    n_perms
        Row shuffles of ``pvalues="permutation"``.
    random_state
        Seed of the permutations.
    progress
        Progress bar over permutations.
    """
    n = X.shape[0]
    check_graph_shape(graph, n, "the graph")
    if max_value is not None:
        X = clip_like_scale(X, max_value)
    numer, ss, sumsq = geary_terms(graph, X)
    constant = constant_mask(ss, sumsq)
    ss = np.where(constant, 0.0, ss)
    moments = graph_moments(graph)
    c = gearys_c(numer, ss, n, moments[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = -np.log(c)
    if pvalues == "randomization":
        pval = analytic_pvalues(c, randomization_variance(n, moments, kurtosis(X)))
    elif pvalues == "normality":
        pval = analytic_pvalues(c, normality_variance(n, moments))
    else:
        rng = np.random.default_rng(random_state)
        pval = permutation_pvalues(graph, X, c, n_perms, rng, progress=progress)
    return EPSResult(
        genes=genes,
        eps=eps,
        pval=pval,
        qval=bh_qvalues(pval),
        n_constant=int(constant.sum()),
        pvalues=pvalues,
        n_perms=int(n_perms) if pvalues == "permutation" else 0,
    )


def _graph_for(
    adata: AnnData,
    use_rep: str | None,
    n_neighbors: int,
    graph_key: str,
    random_state: int,
    progress: bool,
    exclude_radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
) -> tuple[sparse.csr_matrix, dict | None]:
    """The graph to use and, when it had to be built, the ``obsp``/``uns`` entries to store."""
    if use_rep is None and Key.obsp.connectivities(graph_key) not in adata.obsp:
        use_rep = _recorded_embedding(adata, graph_key)
    if use_rep is None:
        check_stored_exclusion(adata, graph_key, exclude_radius)
    if use_rep is None:
        return stored_graph(adata, graph_key), None
    if matches_stored(adata, graph_key, use_rep, n_neighbors, exclude_radius=exclude_radius, spatial_key=spatial_key):
        if _has_all_edges(adata, graph_key, n_neighbors):
            return stored_graph(adata, graph_key), None
        logger.info("eps: the stored graph %r lost edges (a subset of the spots?); building it again", graph_key)
    return build_graph(
        adata,
        use_rep,
        n_neighbors=n_neighbors,
        exclude_radius=exclude_radius,
        spatial_key=spatial_key,
        key_added=graph_key,
        random_state=random_state,
        progress=progress,
    )


def _has_all_edges(adata: AnnData, graph_key: str, n_neighbors: int) -> bool:
    """Whether every spot still has its ``n_neighbors`` edges in the stored graph.

    Subsetting an AnnData keeps only the edges among the kept spots (and the graph's record): a
    spot that lost a neighbour would otherwise be scored on a graph that is no longer its kNN.
    """
    graph = sparse.csr_matrix(adata.obsp[Key.obsp.connectivities(graph_key)])
    return bool((graph.getnnz(axis=1) == n_neighbors).all())


def _recorded_embedding(adata: AnnData, graph_key: str) -> str:
    """The embedding :func:`stmorph.tl.embed` wrote last, for ``eps(adata)`` without ``use_rep`` or a stored graph."""
    use_rep = latest_embedding(adata)
    if use_rep is None:
        raise StmorphKeyError(
            f"st.tl.eps needs image embeddings or an image graph: no `use_rep` was given, there is no "
            f"adata.obsp[{Key.obsp.connectivities(graph_key)!r}] and no embedding recorded by st.tl.embed. "
            "Run `st.pp.extract_patches` and `st.tl.embed` first, pass `use_rep=<obsm key>`, or build a "
            "graph with `st.tl.image_graph`."
        )
    logger.info("eps: using the embedding obsm[%r], the latest written by st.tl.embed", use_rep)
    return use_rep


def eps_record(adata: AnnData, key_added: str = "eps") -> dict:
    """The parameters :func:`eps` stored for ``key_added``: ``uns["stmorph"]["eps"][key_added]``, or ``{}``.

    Examples
    --------
    >>> import stmorph as st
    >>> from stmorph.tl._eps import eps_record
    >>> adata = st.datasets.simulate(100, 10, n_planted=2).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> st.tl.eps(adata, use_rep="latent", progress=False)
    >>> eps_record(adata)["n_neighbors"]
    5
    """
    return tool_record(adata, "eps", key_added)


def _gene_positions(
    adata: AnnData, genes: Sequence[str] | None, mask_var: str | np.ndarray | _Default | None
) -> np.ndarray:
    """Positions of the genes to score: ``genes``, else the ``mask_var`` genes, else all of them."""
    if genes is not None:
        if mask_var is not HVG_MASK and mask_var is not None:
            raise InvalidParameterError("pass either `genes=` or `mask_var=`, not both.")
        idx = get_genes(adata, genes)
        if not len(idx):
            raise InvalidParameterError("genes selects no gene (an empty list); pass gene names, or None for all.")
        return idx
    if mask_var is HVG_MASK:
        mask_var = "highly_variable" if "highly_variable" in adata.var.columns else None
    if mask_var is None:
        return np.arange(adata.n_vars)
    return np.flatnonzero(_var_mask(adata, mask_var))


def _var_mask(adata: AnnData, mask_var: str | np.ndarray) -> np.ndarray:
    """The boolean gene mask named (a ``var`` column) or given (an array) by ``mask_var``."""
    if isinstance(mask_var, str):
        if mask_var not in adata.var.columns:
            raise StmorphKeyError(
                f"mask_var={mask_var!r} is not a column of adata.var; available: {list(adata.var.columns)}. "
                "Run `sc.pp.highly_variable_genes` or pass `mask_var=None` for all genes."
            )
        mask, name = adata.var[mask_var].to_numpy(), f"adata.var[{mask_var!r}]"
    else:
        mask, name = np.asarray(mask_var), "mask_var"
    if mask.dtype != np.bool_ or mask.shape != (adata.n_vars,):
        raise InputTypeError(
            f"{name} must be a boolean mask over the {adata.n_vars} genes; "
            f"found dtype {mask.dtype}, shape {mask.shape}."
        )
    if not mask.any():
        raise InvalidParameterError(f"{name} selects no gene.")
    return mask


def _expression(
    adata: AnnData, layer: str | None, genes: Sequence[str] | None, mask_var: str | np.ndarray | _Default | None
) -> tuple[object, pd.Index, np.ndarray]:
    idx = _gene_positions(adata, genes, mask_var)
    X = get_matrix(adata, layer)
    if X.shape != adata.shape:
        raise ShapeMismatchError(f"expression must be (n_obs, n_vars) = {adata.shape}; found {X.shape}.")
    if len(idx) < adata.n_vars:
        X = X[:, idx]
    return X, adata.var_names[idx], idx


def n_detected(adata: AnnData, layer: str | None) -> np.ndarray:
    """Spots where each gene is detected: non-zero in ``layers["counts"]``, else in the expression used."""
    return nonzero_counts(get_matrix(adata, Key.layers.counts if Key.layers.counts in adata.layers else layer))


def resolve_pvalues(pvalues: str | None, n_perms: int | None) -> tuple[str, int]:
    """The null to test (``pvalues``) and the number of permutations (0 for an analytic null)."""
    if pvalues is None:
        pvalues = "randomization" if n_perms is None else "permutation"
    if not isinstance(pvalues, str) or pvalues not in PVALUE_NULLS:
        raise InvalidParameterError(f"pvalues must be one of {list(PVALUE_NULLS)}; found {pvalues!r}.")
    if pvalues != "permutation":
        if n_perms is not None:
            raise InvalidParameterError(
                f"n_perms={n_perms!r} applies to pvalues='permutation' only; found pvalues={pvalues!r}."
            )
        return pvalues, 0
    n_perms = DEFAULT_N_PERMS if n_perms is None else n_perms
    check_int(n_perms, "n_perms", low=1)
    return pvalues, int(n_perms)


def _check_options(n_neighbors: int, n_perms: int | None, max_value: float | None, random_state: int) -> None:
    """Raise :class:`InvalidParameterError` naming the first bad option of :func:`eps` / :func:`sps`."""
    check_int(n_neighbors, "n_neighbors", low=1)
    if n_perms is not None:
        check_int(n_perms, "n_perms", low=1)
    if max_value is not None:
        check_range(max_value, "max_value", low=0)  # refuses NaN, which would clip every gene to NaN
    check_seed(random_state)


def _warn_constant(n_constant: int, n_genes: int) -> None:
    if n_constant:
        warn_user(
            f"{n_constant} of {n_genes} genes are constant across spots; their EPS is NaN and they are left out of SPS."
        )


def _eps_of(
    adata: AnnData,
    use_rep: str | None,
    n_neighbors: int,
    graph_key: str,
    layer: str | None,
    genes: Sequence[str] | None,
    max_value: float | None,
    mask_var: str | np.ndarray | _Default | None = HVG_MASK,
    pvalues: str | None = None,
    n_perms: int | None = None,
    random_state: int = 0,
    progress: bool = False,
    exclude_radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
) -> tuple[EPSResult, np.ndarray, sparse.csr_matrix, dict | None, Any]:
    """EPS of one slice without touching it: the step :func:`eps` and :func:`slice_eps` share.

    Checks the options, takes the expression and the graph (stored or built), computes EPS and
    warns about constant genes. The parameters are those of :func:`eps`, in its order.

    Returns
    -------
    ``(result, idx, graph, graph_outputs, X)``: the EPS of the genes, their positions in
    ``var_names``, the graph used, the ``obsp``/``uns`` entries to store when the graph was
    built here (else ``None``), and the expression of the genes (as given, before any clip).
    """
    _check_options(n_neighbors, n_perms, max_value, random_state)
    check_unique_names(adata, "obs")
    check_unique_names(adata, "var")
    check_n_neighbors(adata.n_obs, n_neighbors, "EPS")
    pvalues, n_perms = resolve_pvalues(pvalues, n_perms)
    X, names, idx = _expression(adata, layer, genes, mask_var)
    graph, graph_outputs = _graph_for(
        adata, use_rep, n_neighbors, graph_key, random_state, progress, exclude_radius, spatial_key
    )
    result = compute_eps(
        graph,
        X,
        names,
        max_value=max_value,
        pvalues=pvalues,
        n_perms=n_perms,
        random_state=random_state,
        progress=progress,
    )
    _warn_constant(result.n_constant, len(names))
    return result, idx, graph, graph_outputs, X


def _radius_used(
    adata: AnnData, graph_key: str, exclude_radius: float | None, graph_outputs: dict | None
) -> float | None:
    """The ``exclude_radius`` of the graph EPS used: the one asked for when built here, else the stored graph's."""
    radius = exclude_radius if graph_outputs is not None else stored_exclude_radius(adata, graph_key)
    return None if radius is None else float(radius)


ADJACENT_WARNING = 0.5
"""``st.tl.eps`` warns when more than this fraction of the image graph's edges join spatial neighbours."""


def _adjacent_fraction(
    adata: AnnData, graph: sparse.csr_matrix, exclude_radius: float | None, spatial_key: str
) -> float:
    """Fraction of the graph's edges between spatially adjacent spots; warns when it is most of them."""
    fraction = adjacent_edge_fraction(graph, spot_positions(adata, spatial_key=spatial_key))
    if fraction > ADJACENT_WARNING and exclude_radius is None:
        warn_user(
            f"{fraction:.0%} of the image graph's edges join spatially adjacent spots: EPS on this graph "
            "mostly measures spatial autocorrelation (neighbours share tissue and pixels), not what the "
            "morphology predicts. Pass `exclude_radius=` (µm, at least the tile width) to compare spots "
            "that look alike but lie apart; see the EPS method page, 'Spatial control'."
        )
    return fraction


def _spatial_columns(
    adata: AnnData,
    X: Any,
    names: pd.Index,
    n_neighbors: int,
    max_value: float | None,
    key_added: str,
    spatial_key: str,
) -> dict[str, np.ndarray]:
    """``var[f'{key_added}_spatial']``: ``-log C`` of ``X`` on the spatial kNN graph (``{}`` without coordinates)."""
    if spatial_key not in adata.obsm:
        return {}
    graph = spatial_knn_graph(spot_positions(adata, spatial_key=spatial_key), n_neighbors)
    return {Key.var.spatial_eps(key_added): compute_eps(graph, X, names, max_value=max_value).eps}


@doc_params("spatial_key", "table_key", "copy")
@checks_keys("use_rep", "graph_key", "layer", "key_added", "spatial_key", "table_key")
def eps(
    adata: AnnData | SpatialData,
    use_rep: str | None = None,
    *,
    n_neighbors: int = 5,
    graph_key: str = "image",
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    mask_var: str | np.ndarray | _Default | None = HVG_MASK,
    max_value: float | None = None,
    pvalues: str | None = None,
    n_perms: int | None = None,
    exclude_radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
    random_state: int = 0,
    key_added: str = "eps",
    table_key: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Expression Predictability Score of each gene on the image-embedding graph.

    ``EPS = -log C`` with ``C`` Geary's C of the gene on the directed unweighted kNN graph of
    the image embeddings (Xia, Yao & Gao 2025); ``SPS`` is the mean EPS over genes. A high EPS
    means spots with similar images have similar expression: the gene is predictable from the
    image. Constant genes get NaN (one warning says how many).

    Parameters
    ----------
    adata
        Annotated data matrix, or a SpatialData holding it (``table_key``). The default expression
        ``X`` is the paper's: normalised, log1p, z-scored and clipped at 10
        (:func:`stmorph.pp.prepare_expression`).
    use_rep
        Key in ``adata.obsm`` with the embeddings; the graph is built (like
        :func:`~stmorph.tl.image_graph`, L2-normalised Euclidean, exact up to 50,000 spots) and
        stored under ``graph_key`` unless the stored graph was built from the same ``use_rep``
        and ``n_neighbors`` and every spot still has its ``n_neighbors`` edges (a graph subset
        with the spots, ``adata[mask]``, is built again). ``None`` uses the stored graph
        ``obsp[f'{graph_key}_connectivities']`` (from :func:`~stmorph.tl.image_graph`, or any
        other graph such as squidpy's), and when there is none the embedding
        :func:`~stmorph.tl.embed` wrote last (logged), so ``st.tl.eps(adata)`` works right after
        ``st.pp.extract_patches`` and ``st.tl.embed``.
    n_neighbors
        Neighbours per spot of a graph built here.
    graph_key
        Prefix of the graph keys in ``obsp``/``uns``.
    layer
        Use ``adata.layers[layer]`` instead of ``X``, e.g. ``"log1p"`` (kept sparse). Geary's C is
        invariant to shifting and scaling each gene, so unclipped z-scores and log1p give the
        same EPS; only the clip at ``max_value`` SDs differs (see ``max_value``).
    genes
        Only these genes (the others get NaN).
    mask_var
        Score only the genes of this boolean ``var`` column (or boolean array over the genes), as
        scanpy's ``mask_var``; the others get NaN. Default: ``"highly_variable"`` when that column
        exists (so ``st.tl.eps`` after ``sc.pp.highly_variable_genes`` scores the HVGs) and no
        ``genes`` are given, else every gene. ``None``: every gene.
    max_value
        Clip each gene at ``mean ± max_value · sd`` before computing C, exactly what
        ``sc.pp.scale(max_value=max_value)`` clips (sparse input stays sparse). With
        ``layer="log1p", max_value=10`` the result equals the default on the scaled ``X``.
    pvalues
        The null hypothesis of ``var[f'{key_added}_pval']`` (no spatial structure on the graph):

        - ``"randomization"`` (the default unless ``n_perms`` is given): Geary's C is compared with
          its variance over all permutations of the gene's values (Cliff & Ord 1981; PySAL esda
          ``Geary.VC_rand``), which includes each gene's kurtosis — calibrated also for genes
          detected in few spots.
        - ``"normality"``: the variance under normally distributed values (esda ``VC_norm``,
          squidpy's ``pval_norm``); anti-conservative for sparse, heavy-tailed genes.
        - ``"permutation"``: ``n_perms`` shuffles of the spots (the default when ``n_perms`` is
          given).
    n_perms
        Permutations of ``pvalues="permutation"`` (vectorised over genes, seeded by
        ``random_state``; 999 when not given).
    exclude_radius
        Spatial-proximity control, in µm (see :func:`~stmorph.tl.image_graph`): each spot's image
        neighbours are taken only among spots farther than this, so neighbours that share
        tissue or pixels cannot raise EPS. ``None``: the paper's graph. A stored graph is reused
        only when it was built with the same radius.
    {spatial_key}
        Read for ``exclude_radius``, the spatial EPS column and the adjacent-edge fraction.
    random_state
        Seed of the permutations and of an approximate graph.
    key_added
        Names of the ``var`` columns; SPS goes to ``uns['sps']`` (``uns[f'sps_{key_added}']``
        when ``key_added != 'eps'``).
    {table_key}
    progress
        Show progress bars (graph search, permutations).
    {copy}

    Returns
    -------
    ``None`` if ``copy=False``, else a new :class:`~anndata.AnnData` (of the table, for a
    SpatialData). Sets:

    ``adata.var[key_added]`` : EPS per gene.
    ``adata.var[f'{key_added}_pval']`` : one-sided p-value (small C, i.e. predictable) under ``pvalues``.
    ``adata.var[f'{key_added}_qval']`` : Benjamini–Hochberg q-value over genes with an EPS.
    ``adata.var[f'{key_added}_n_detected']`` : spots where the gene is detected, for every gene: the
    non-zero entries of ``layers['counts']`` when present (:func:`stmorph.pp.prepare_expression`
    stores it), else of the expression used (``X`` or ``layers[layer]``; on centred data without a
    counts layer that is every spot).
    ``adata.uns['sps']`` : ``{'sps', 'n_genes', 'n_neighbors', 'graph_key', 'layer', 'pvalues', 'n_perms', ...}``,
    ``pvalues`` naming the null used.
    ``adata.var[f'{key_added}_spatial']`` : ``-log`` Geary's C of the gene on the spatial kNN
    graph of ``obsm[spatial_key]`` (same ``n_neighbors``), to read beside EPS; only when
    ``obsm[spatial_key]`` exists.
    ``adata.uns['stmorph']['eps'][key_added]`` : the parameters.
    ``adata.obsp`` / ``adata.uns[graph_key]`` : the graph, when it was built here.

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(300, 30, n_planted=6).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> st.tl.eps(adata, use_rep="latent", progress=False)
    >>> bool(adata.var["eps"].head(6).gt(0).all())
    True
    """
    _check_options(n_neighbors, n_perms, max_value, random_state)
    check_bool(progress, "progress")
    check_bool(copy, "copy")
    adata = table_of(adata, table_key, name="st.tl.eps")
    result, idx, graph, graph_outputs, X = _eps_of(
        adata,
        use_rep,
        n_neighbors,
        graph_key,
        layer,
        genes,
        max_value,
        mask_var,
        pvalues,
        n_perms,
        random_state,
        progress,
        exclude_radius,
        spatial_key,
    )
    detected = n_detected(adata, layer)
    logger.info("EPS of %d genes on %d spots: SPS = %.4f", result.n_genes, adata.n_obs, result.sps)
    per_gene = dict(zip(Key.var.eps(key_added), (result.eps, result.pval, result.qval)))
    per_gene.update(_spatial_columns(adata, X, result.genes, n_neighbors, max_value, key_added, spatial_key))

    adata = adata.copy() if copy else adata
    columns = {}
    for column, values in per_gene.items():
        full = np.full(adata.n_vars, np.nan)
        full[idx] = values
        columns[column] = full
    columns[Key.var.n_detected(key_added)] = detected
    params = {
        "n_neighbors": int(graph.getnnz(axis=1).max()) if use_rep is None else int(n_neighbors),
        "graph_key": graph_key,
        "layer": layer if layer is not None else "X",
        "pvalues": result.pvalues,
        "n_perms": result.n_perms,
        "random_state": int(random_state),
    }
    if max_value is not None:
        params["max_value"] = float(max_value)
    radius = _radius_used(adata, graph_key, exclude_radius, graph_outputs)
    if radius is not None:  # the radius of the graph used, also when it was stored before
        params["exclude_radius"] = radius
    if spatial_key in adata.obsm:
        params["adjacent_edge_fraction"] = _adjacent_fraction(adata, graph, radius, spatial_key)
    uns = {Key.uns.sps(key_added): {"sps": result.sps, "n_genes": result.n_genes, **params}}
    uns[Key.uns.tool("eps", key_added)] = params
    outputs = graph_outputs or {"obsp": {}, "uns": {}}
    commit_outputs(adata, var=columns, obsp=outputs["obsp"], uns={**outputs["uns"], **uns})
    return adata if copy else None


def slice_eps(
    adata: AnnData,
    *,
    use_rep: str | None = None,
    n_neighbors: int = 5,
    graph_key: str = "image",
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    mask_var: str | np.ndarray | _Default | None = HVG_MASK,
    max_value: float | None = None,
    exclude_radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
) -> tuple[float, int, int, pd.Series, float | None]:
    """SPS of one slice without touching it: ``(sps, n_spots, n_genes, eps per gene, exclude_radius)``.

    The pure per-slice step of :func:`sps` (safe to ship to a worker process); ``exclude_radius``
    is that of the graph used (``None``: the paper's graph), also when the graph was stored.
    """
    result, _, _, graph_outputs, _ = _eps_of(
        adata, use_rep, n_neighbors, graph_key, layer, genes, max_value, mask_var,
        exclude_radius=exclude_radius, spatial_key=spatial_key,
    )  # fmt: skip
    eps = pd.Series(result.eps, index=result.genes, name="eps")
    return result.sps, adata.n_obs, result.n_genes, eps, _radius_used(adata, graph_key, exclude_radius, graph_outputs)


@checks_keys("use_rep", "graph_key", "layer", "spatial_key")
def sps(
    data: Sequence[AnnData] | Mapping[str, AnnData] | SpatialData,
    use_rep: str | None = None,
    *,
    n_neighbors: int = 5,
    graph_key: str = "image",
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    mask_var: str | np.ndarray | _Default | None = HVG_MASK,
    max_value: float | None = None,
    exclude_radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
    client: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Slice Predictability Score of many slices: the cohort analysis of the EPS paper (Fig. 2).

    Each slice is processed like :func:`eps` (with the same options) but left unchanged; slices
    are processed in parallel with dask (see ``client``).

    Parameters
    ----------
    data
        A list of AnnData (slices named ``"0"``, ``"1"``, ...), a dict ``{name: AnnData}``, or a
        :class:`~spatialdata.SpatialData` whose tables are the slices (named by table key).
    use_rep, n_neighbors, graph_key, layer, genes, mask_var, max_value, exclude_radius, spatial_key
        As in :func:`eps`; expression should be prepared (:func:`stmorph.pp.prepare_expression`).
        With ``exclude_radius`` each slice needs ``obsm[spatial_key]`` and its pixel size.
    client
        A :class:`dask.distributed.Client` whose workers process the slides (``client.map`` of
        :func:`slice_eps`); ``None`` processes them in parallel on dask's local threaded scheduler.
        The results are the same as one slice after another.

    Returns
    -------
    ``(summary, eps_table)``: ``summary`` has one row per slice with columns ``slice``, ``sps``,
    ``n_spots``, ``n_genes`` and ``exclude_radius`` (µm, of the graph used; NaN for the paper's
    graph); ``eps_table`` is genes × slices (NaN where a slice lacks the gene).

    Raises
    ------
    InputTypeError
        ``data`` is not a list, dict or SpatialData, or a slice is not an AnnData (e.g. ``None``).
    InvalidParameterError
        No slice; and each option as in :func:`eps`.

    Examples
    --------
    >>> import stmorph as st
    >>> slices = {f"s{i}": st.datasets.simulate(200, 20, random_state=i).tables["table"] for i in range(2)}
    >>> for a in slices.values():
    ...     st.pp.prepare_expression(a)
    >>> summary, table = st.tl.sps(slices, use_rep="latent")
    >>> list(summary.columns)
    ['slice', 'sps', 'n_spots', 'n_genes', 'exclude_radius']
    """
    _check_options(n_neighbors, None, max_value, 0)
    check_exclude_radius(exclude_radius)
    slices = check_slices(data, "st.tl.sps")
    one_slice = partial(
        slice_eps,
        use_rep=use_rep,
        n_neighbors=n_neighbors,
        graph_key=graph_key,
        layer=layer,
        genes=genes,
        mask_var=mask_var,
        max_value=max_value,
        exclude_radius=exclude_radius,
        spatial_key=spatial_key,
    )
    results = map_slides(one_slice, slices.values(), client=client)
    rows, columns = [], {}
    for name, (value, n_spots, n_genes, per_gene, radius) in zip(slices, results):
        radius = np.nan if radius is None else radius
        rows.append({"slice": name, "sps": value, "n_spots": n_spots, "n_genes": n_genes, "exclude_radius": radius})
        columns[name] = per_gene
    summary = pd.DataFrame(rows, columns=["slice", "sps", "n_spots", "n_genes", "exclude_radius"])
    return summary, pd.concat(columns, axis=1, sort=False)  # genes in order of first appearance
