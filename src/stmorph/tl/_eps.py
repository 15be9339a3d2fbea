"""EPS (Expression Predictability Score) per gene and SPS (Slice Predictability Score) per slice.

Xia, Yao & Gao (bioRxiv 2025.11.04.686651): EPS of a gene is ``-log`` of its Geary's C on the
directed, unweighted kNN graph of the spots' image embeddings; SPS is the mean EPS of a slice.
The math is in :mod:`stmorph.tl._geary`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import commit_outputs, read_uns
from .._keys import Key
from .._logging import logger
from .._parallel import map_slides
from .._validation import (
    check_graph_shape,
    check_range,
    check_unique_names,
    get_genes,
    get_matrix,
)
from ..errors import InvalidParameterError, ShapeMismatchError
from ._geary import (
    analytic_pvalues,
    clip_like_scale,
    constant_mask,
    geary_terms,
    gearys_c,
    graph_moments,
    permutation_pvalues,
)
from ._graph import (
    build_graph,
    check_n_neighbors,
    check_stored_exclusion,
    matches_stored,
    stored_exclude_radius,
    stored_graph,
)
from ._spatial import SPATIAL_KEY, spatial_knn_graph, spot_positions

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@dataclass
class EPSResult:
    """Per-gene results of :func:`compute_eps` (arrays aligned with ``genes``)."""

    genes: pd.Index
    eps: np.ndarray
    pval: np.ndarray
    qval: np.ndarray
    n_constant: int

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
    n_perms: int | None = None,
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
    n_perms
        Permutation p-values with this many row shuffles; ``None``: analytic (normality) p-values.
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
    if n_perms is None:
        pval = analytic_pvalues(c, n, moments)
    else:
        rng = np.random.default_rng(random_state)
        pval = permutation_pvalues(graph, X, c, n_perms, rng, progress=progress)
    return EPSResult(genes=genes, eps=eps, pval=pval, qval=bh_qvalues(pval), n_constant=int(constant.sum()))


def _graph_for(
    adata: AnnData,
    use_rep: str | None,
    n_neighbors: int,
    graph_key: str,
    random_state: int,
    progress: bool,
    exclude_radius: float | None = None,
) -> tuple[sparse.csr_matrix, dict | None]:
    """The graph to use and, when it had to be built, the ``obsp``/``uns`` entries to store."""
    if use_rep is None:
        check_stored_exclusion(adata, graph_key, exclude_radius)
    if use_rep is None or matches_stored(adata, graph_key, use_rep, n_neighbors, exclude_radius=exclude_radius):
        return stored_graph(adata, graph_key), None
    return build_graph(
        adata,
        use_rep,
        n_neighbors=n_neighbors,
        exclude_radius=exclude_radius,
        key_added=graph_key,
        random_state=random_state,
        progress=progress,
    )


def _is_eps_record(node: object) -> bool:
    """Whether ``node`` is the parameters of one :func:`eps` run (not a node holding several)."""
    return isinstance(node, Mapping) and isinstance(node.get("graph_key"), str)


def eps_record(adata: AnnData, key_added: str = "eps") -> dict:
    """The parameters :func:`eps` stored for ``key_added`` (``{}`` when there are none).

    Reads ``uns["stmorph"]["eps"][key_added]``, and for files written before that layout the
    record at ``uns["stmorph"][key_added]``.

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
    record = read_uns(adata, Key.uns.tool("eps", key_added))
    if not _is_eps_record(record):
        record = read_uns(adata, Key.uns.legacy_eps(key_added))
    return dict(record) if _is_eps_record(record) else {}


def _record_outputs(adata: AnnData, key_added: str, params: dict) -> dict[tuple[str, ...], dict]:
    """The ``uns`` entry of :func:`eps`'s parameters, ``uns["stmorph"]["eps"][key_added]``.

    In an object written before that layout, ``uns["stmorph"]["eps"]`` is itself the record of
    ``key_added="eps"``: it becomes the node of all records, keeping that one under ``"eps"``.
    """
    node = read_uns(adata, Key.uns.tool("eps"))
    if _is_eps_record(node):
        return {Key.uns.tool("eps"): {"eps": dict(node), key_added: params}}
    return {Key.uns.tool("eps", key_added): params}


def _expression(adata: AnnData, layer: str | None, genes: Sequence[str] | None) -> tuple[object, pd.Index, np.ndarray]:
    idx = get_genes(adata, genes)
    X = get_matrix(adata, layer)
    if X.shape != adata.shape:
        raise ShapeMismatchError(f"expression must be (n_obs, n_vars) = {adata.shape}; found {X.shape}.")
    if genes is not None:
        X = X[:, idx]
    return X, adata.var_names[idx], idx


def _check_options(adata: AnnData, n_neighbors: int, n_perms: int | None, max_value: float | None) -> None:
    check_unique_names(adata, "obs")
    check_unique_names(adata, "var")
    check_n_neighbors(adata.n_obs, n_neighbors, "EPS")
    if n_perms is not None:
        check_range(n_perms, "n_perms", low=1, inclusive=True)
    if max_value is not None:
        check_range(max_value, "max_value", low=0)


def _warn_constant(n_constant: int, n_genes: int) -> None:
    if n_constant:
        warnings.warn(
            f"{n_constant} of {n_genes} genes are constant across spots; their EPS is NaN and they are "
            "left out of SPS.",
            UserWarning,
            stacklevel=4,  # the caller of eps / slice_eps
        )


def _eps_of(
    adata: AnnData,
    use_rep: str | None,
    n_neighbors: int,
    graph_key: str,
    layer: str | None,
    genes: Sequence[str] | None,
    max_value: float | None,
    n_perms: int | None = None,
    random_state: int = 0,
    progress: bool = False,
    exclude_radius: float | None = None,
) -> tuple[EPSResult, np.ndarray, sparse.csr_matrix, dict | None]:
    """EPS of one slice without touching it: the step :func:`eps` and :func:`slice_eps` share.

    Checks the options, takes the expression and the graph (stored or built), computes EPS and
    warns about constant genes. The parameters are those of :func:`eps`, in its order.

    Returns
    -------
    ``(result, idx, graph, graph_outputs)``: the EPS of the genes, their positions in
    ``var_names``, the graph used, and the ``obsp``/``uns`` entries to store when the graph was
    built here (else ``None``).
    """
    _check_options(adata, n_neighbors, n_perms, max_value)
    X, names, idx = _expression(adata, layer, genes)
    graph, graph_outputs = _graph_for(adata, use_rep, n_neighbors, graph_key, random_state, progress, exclude_radius)
    result = compute_eps(
        graph, X, names, max_value=max_value, n_perms=n_perms, random_state=random_state, progress=progress
    )
    _warn_constant(result.n_constant, len(names))
    return result, idx, graph, graph_outputs


def _spatial_columns(
    adata: AnnData,
    n_neighbors: int,
    layer: str | None,
    genes: Sequence[str] | None,
    max_value: float | None,
    key_added: str,
) -> dict[str, np.ndarray]:
    """``var[f'{key_added}_spatial']``: the genes' ``-log C`` on the spatial kNN graph (``{}`` without coordinates)."""
    if SPATIAL_KEY not in adata.obsm:
        return {}
    X, names, _ = _expression(adata, layer, genes)
    graph = spatial_knn_graph(spot_positions(adata), n_neighbors)
    return {Key.var.spatial_eps(key_added): compute_eps(graph, X, names, max_value=max_value).eps}


def eps(
    adata: AnnData,
    use_rep: str | None = None,
    *,
    n_neighbors: int = 5,
    graph_key: str = "image",
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    max_value: float | None = None,
    n_perms: int | None = None,
    exclude_radius: float | None = None,
    random_state: int = 0,
    key_added: str = "eps",
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
        Annotated data matrix. The default expression ``X`` is the paper's: normalised, log1p,
        z-scored and clipped at 10 (:func:`stmorph.pp.prepare_expression`).
    use_rep
        Key in ``adata.obsm`` with the embeddings; the graph is built (like
        :func:`~stmorph.tl.image_graph`, L2-normalised Euclidean, exact up to 50,000 spots) and
        stored under ``graph_key`` unless the stored graph was built from the same ``use_rep``
        and ``n_neighbors``. ``None`` uses the stored graph ``obsp[f'{graph_key}_connectivities']``
        (from :func:`~stmorph.tl.image_graph`, or any other graph such as squidpy's).
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
    max_value
        Clip each gene at ``mean ± max_value · sd`` before computing C, exactly what
        ``sc.pp.scale(max_value=max_value)`` clips (sparse input stays sparse). With
        ``layer="log1p", max_value=10`` the result equals the default on the scaled ``X``.
    n_perms
        Permutation p-values from this many shuffles of the spots (vectorised over genes, seeded
        by ``random_state``); ``None``: analytic p-values under the normality assumption.
    exclude_radius
        Spatial-proximity control, in µm (see :func:`~stmorph.tl.image_graph`): each spot's image
        neighbours are taken only among spots farther than this, so neighbours that share
        tissue or pixels cannot raise EPS. ``None``: the paper's graph. A stored graph is reused
        only when it was built with the same radius.
    random_state
        Seed of the permutations and of an approximate graph.
    key_added
        Names of the ``var`` columns; SPS goes to ``uns['sps']`` (``uns[f'sps_{key_added}']``
        when ``key_added != 'eps'``).
    progress
        Show progress bars (graph search, permutations).
    copy
        Return a modified copy instead of editing ``adata``.

    Returns
    -------
    ``None`` if ``copy=False``, else a new :class:`~anndata.AnnData`. Sets:

    ``adata.var[key_added]`` : EPS per gene.
    ``adata.var[f'{key_added}_pval']`` : one-sided p-value (small C, i.e. predictable).
    ``adata.var[f'{key_added}_qval']`` : Benjamini–Hochberg q-value over genes with an EPS.
    ``adata.var[f'{key_added}_spatial']`` : ``-log`` Geary's C of the gene on the spatial kNN
    graph of ``obsm['spatial']`` (same ``n_neighbors``), to read beside EPS; only when
    ``obsm['spatial']`` exists.
    ``adata.uns['sps']`` : ``{'sps', 'n_genes', 'n_neighbors', 'graph_key', 'layer', 'pvalues'}``.
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
    result, idx, graph, graph_outputs = _eps_of(
        adata, use_rep, n_neighbors, graph_key, layer, genes, max_value, n_perms, random_state, progress, exclude_radius
    )
    logger.info("EPS of %d genes on %d spots: SPS = %.4f", result.n_genes, adata.n_obs, result.sps)
    per_gene = dict(zip(Key.var.eps(key_added), (result.eps, result.pval, result.qval)))
    per_gene.update(_spatial_columns(adata, n_neighbors, layer, genes, max_value, key_added))

    adata = adata.copy() if copy else adata
    columns = {}
    for column, values in per_gene.items():
        full = np.full(adata.n_vars, np.nan)
        full[idx] = values
        columns[column] = full
    params = {
        "n_neighbors": int(graph.getnnz(axis=1).max()) if use_rep is None else int(n_neighbors),
        "graph_key": graph_key,
        "layer": layer if layer is not None else "X",
        "pvalues": "analytic" if n_perms is None else "permutation",
        "n_perms": int(n_perms or 0),
        "random_state": int(random_state),
    }
    if max_value is not None:
        params["max_value"] = float(max_value)
    radius = exclude_radius if graph_outputs is not None else stored_exclude_radius(adata, graph_key)
    if radius is not None:  # the radius of the graph used, also when it was stored before
        params["exclude_radius"] = float(radius)
    uns = {Key.uns.sps(key_added): {"sps": result.sps, "n_genes": result.n_genes, **params}}
    uns.update(_record_outputs(adata, key_added, params))
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
    max_value: float | None = None,
) -> tuple[float, int, int, pd.Series]:
    """SPS of one slice without touching it: ``(sps, n_spots, n_genes, eps per gene)``.

    The pure per-slice step of :func:`sps` (safe to ship to a worker process).
    """
    result, *_ = _eps_of(adata, use_rep, n_neighbors, graph_key, layer, genes, max_value)
    return result.sps, adata.n_obs, result.n_genes, pd.Series(result.eps, index=result.genes, name="eps")


def _slices(data: Sequence[AnnData] | Mapping[str, AnnData] | SpatialData) -> dict[str, AnnData]:
    tables = getattr(data, "tables", None)
    if tables is not None:
        return dict(tables.items())
    if isinstance(data, Mapping):
        return {str(k): v for k, v in data.items()}
    return {str(i): a for i, a in enumerate(data)}


def sps(
    data: Sequence[AnnData] | Mapping[str, AnnData] | SpatialData,
    use_rep: str | None = None,
    *,
    n_neighbors: int = 5,
    graph_key: str = "image",
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    max_value: float | None = None,
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
    use_rep, n_neighbors, graph_key, layer, genes, max_value
        As in :func:`eps`; expression should be prepared (:func:`stmorph.pp.prepare_expression`).
    client
        A :class:`dask.distributed.Client` whose workers process the slides (``client.map`` of
        :func:`slice_eps`); ``None`` processes them in parallel on dask's local threaded scheduler.
        The results are the same as one slice after another.

    Returns
    -------
    ``(summary, eps_table)``: ``summary`` has one row per slice with columns ``slice``, ``sps``,
    ``n_spots``, ``n_genes``; ``eps_table`` is genes × slices (NaN where a slice lacks the gene).

    Examples
    --------
    >>> import stmorph as st
    >>> slices = {f"s{i}": st.datasets.simulate(200, 20, seed=i).tables["table"] for i in range(2)}
    >>> for a in slices.values():
    ...     st.pp.prepare_expression(a)
    >>> summary, table = st.tl.sps(slices, use_rep="latent")
    >>> list(summary.columns)
    ['slice', 'sps', 'n_spots', 'n_genes']
    """
    slices = _slices(data)
    if not slices:
        raise InvalidParameterError("sps needs at least one slice; found none.")
    one_slice = partial(
        slice_eps,
        use_rep=use_rep,
        n_neighbors=n_neighbors,
        graph_key=graph_key,
        layer=layer,
        genes=genes,
        max_value=max_value,
    )
    results = map_slides(one_slice, slices.values(), client=client)
    rows, columns = [], {}
    for name, (value, n_spots, n_genes, per_gene) in zip(slices, results):
        rows.append({"slice": name, "sps": value, "n_spots": n_spots, "n_genes": n_genes})
        columns[name] = per_gene
    summary = pd.DataFrame(rows, columns=["slice", "sps", "n_spots", "n_genes"])
    return summary, pd.concat(columns, axis=1, sort=False)  # genes in order of first appearance
