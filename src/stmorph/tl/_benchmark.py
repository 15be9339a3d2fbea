"""``st.tl.benchmark_encoders``: which image embedding suits a cohort — SPS and the HEST-Benchmark linear probe.

Two answers for each embedding of the same spots:

- **SPS** (training-free; Xia, Yao & Gao 2025): the mean EPS of a slice on the embedding's image
  graph (:func:`stmorph.tl.eps`), averaged over the slices, with a permutation p-value.
- **The HEST-Benchmark probe** (Jaume et al., NeurIPS 2024), step by step as
  ``mahmoodlab/HEST`` ``src/hest`` runs it (commit ``afd42c3``; the line numbers below are of
  that commit):

  1. *Genes* (``utils.py`` ``get_k_genes``, lines 472–528, called with ``k=50``,
     ``criteria="var"`` by ``HESTData.py`` ``create_benchmark_data``, line 1049): in every slide
     keep the genes detected (count > 0) in at least ``ceil(0.10 · n_spots)`` spots
     (``sc.pp.filter_genes(min_cells=...)``, lines 498–500); intersect the slides' genes
     (``np.intersect1d``, so in alphabetical order, line 505); drop names containing ``BLANK``
     or ``Control`` (line 508); stack the slides' counts of those genes, ``log1p`` them and take
     scanpy's ``highly_variable_genes(n_top_genes=50)`` (default ``flavor="seurat"``), in that
     alphabetical order (lines 523–528).
  2. *Targets* (``bench/benchmark.py`` line 297 calls ``bench/st_dataset.py`` ``load_adata``,
     lines 37–45, with ``normalize=True``, the default of line 104; ``normalize_adata``, lines
     11–35): the counts of the 50 genes as float64, ``sc.pp.log1p``, no library-size normalisation.
  3. *Folds* (``HESTData.py`` ``create_splits``, lines 1075–1118, with one fold per patient):
     each fold tests on the slides of one patient group and trains on all the others.
  4. *Features* (``bench/benchmark.py`` ``predict_single_split``, lines 310–315):
     ``Pipeline([StandardScaler(), PCA(n_components=256, random_state=seed)])`` fit on the
     training fold, applied to both, then cast to float32 (``torch.Tensor``, line 315);
     ``latent_dim=256`` and ``seed=1`` are the defaults of lines 106 and 76.
  5. *Ridge* (``bench/trainer.py`` ``train_test_reg``, lines 11–21):
     ``Ridge(solver="lsqr", alpha=100 / (n_features · n_genes), fit_intercept=False,
     max_iter=1000, random_state=seed)``, ``n_features`` the columns after PCA (line 12).
  6. *Score* (``trainer.py`` lines 65–90 and ``benchmark.py`` ``merge_fold_results``, lines
     331–352): per gene the ``scipy.stats.pearsonr`` of target and prediction on the test fold
     (line 72), the mean over genes per fold (line 90), then the mean and the (population,
     ``np.std``) standard deviation over folds (line 352).

  Where stmorph departs from that code, and why: PCA keeps ``min(256, n_train_spots, dim)``
  components (HEST's pipeline raises when an embedding has fewer than 256 dimensions or a fold
  fewer than 256 spots); a gene whose prediction or target is constant on a fold has no r and is
  left out of that fold's mean (``scipy.stats.pearsonr`` gives NaN there and HEST's mean becomes
  NaN; the gene filter of step 1 makes it rare).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import commit_outputs
from .._keys import Key
from .._logging import logger
from .._parallel import map_slides
from .._scores import pearson
from .._validation import (
    check_bool,
    check_int,
    check_seed,
    check_slices,
    check_unique_names,
    checks_keys,
    format_keys,
    get_matrix,
    get_rep,
)
from ..errors import InputTypeError, InvalidParameterError, StmorphKeyError, TooFewObservationsError
from ._eps import HVG_MASK, _eps_of
from ._geary import constant_mask, geary_terms, gearys_c

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

TOOL = "benchmark_encoders"
"""``uns["stmorph"][TOOL][key_added]`` holds a stored benchmark (``inplace=True``)."""

MIN_DETECTED = 0.10
"""HEST's ``min_cells_pct``: a probe gene is detected in at least this fraction of the spots of every slide."""

EXCLUDED = ("BLANK", "Control")
"""HEST leaves out genes whose name contains one of these (the control probes of Xenium/CosMx panels)."""

N_COMPONENTS = 256
"""HEST's ``latent_dim``: principal components kept before the ridge."""

PROBE_MAX_ITER = 1000
"""HEST's ``max_iter`` of the lsqr ridge."""

SPS_GENES = ("all", "probe")


# --------------------------------------------------------------------------------------------- #
# the HEST-Benchmark probe
# --------------------------------------------------------------------------------------------- #
def detected_genes(
    counts: np.ndarray | sparse.spmatrix, names: pd.Index, min_fraction: float = MIN_DETECTED
) -> pd.Index:
    """Genes with a count above zero in at least ``ceil(min_fraction · n_spots)`` spots (HEST's per-slide filter).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> counts = np.array([[0, 1, 2], [0, 0, 3], [1, 0, 4]] * 4)  # 12 spots: a in 4, b in 4, c in 12
    >>> list(detected_genes(counts, pd.Index(["a", "b", "c"]), min_fraction=0.5))
    ['c']
    """
    n_detected = np.asarray((counts > 0).sum(axis=0)).ravel()
    return names[n_detected >= math.ceil(min_fraction * counts.shape[0])]


def probe_genes(
    counts: Sequence[tuple[np.ndarray | sparse.spmatrix, pd.Index]],
    n_top: int = 50,
    min_fraction: float = MIN_DETECTED,
) -> list[str]:
    """HEST-Benchmark's genes of a cohort: the ``n_top`` HVGs of the stacked log1p counts among well-detected genes.

    Parameters
    ----------
    counts
        One ``(counts, gene names)`` pair per slide: raw counts, spots × genes.
    n_top
        Genes to return (HEST: 50).
    min_fraction
        A gene must be detected in at least this fraction of the spots of every slide (HEST: 0.10).

    Returns
    -------
    The genes in alphabetical order (HEST's order; fewer than ``n_top`` when fewer pass the filter).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> names = pd.Index(["g1", "g2", "BLANK_1", "g3"])
    >>> slides = [(rng.poisson([1, 5, 5, 0.01], size=(50, 4)), names) for _ in range(2)]
    >>> probe_genes(slides, n_top=2)  # BLANK_1 is a control probe, g3 is rarely detected
    ['g1', 'g2']
    """
    import anndata as ad
    import scanpy as sc

    common = None
    for X, names in counts:
        kept = detected_genes(X, names, min_fraction).to_numpy(dtype=str)
        common = kept if common is None else np.intersect1d(common, kept)
    common = np.intersect1d(common, common)  # sorted, as HEST's np.intersect1d, also for one slide
    common = [str(g) for g in common if not any(word in g for word in EXCLUDED)]
    if len(common) <= n_top:
        return list(common)
    stacked = np.vstack([_dense(X[:, names.get_indexer(common)]) for X, names in counts]).astype(np.float32)
    stacked = ad.AnnData(np.log1p(stacked), var=pd.DataFrame(index=pd.Index(common)))
    sc.pp.highly_variable_genes(stacked, n_top_genes=n_top)
    return stacked.var_names[stacked.var["highly_variable"].to_numpy()][:n_top].tolist()


def _dense(X: np.ndarray | sparse.spmatrix) -> np.ndarray:
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


def probe_alpha(n_features: int, n_genes: int) -> float:
    """HEST's ridge penalty ``100 / (n_features · n_genes)`` (``trainer.py``, line 12).

    Examples
    --------
    >>> probe_alpha(256, 50)
    0.0078125
    """
    return 100.0 / (n_features * n_genes)


def probe_fold(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_test: np.ndarray,
    Y_test: np.ndarray,
    *,
    n_components: int = N_COMPONENTS,
    random_state: int = 1,
) -> np.ndarray:
    """One fold of the HEST-Benchmark probe: per-gene Pearson r on the test spots.

    StandardScaler and PCA fit on ``X_train``; ridge by lsqr without intercept, α from
    :func:`probe_alpha`; the steps of the module docstring (4–6).

    Parameters
    ----------
    X_train, X_test
        Embeddings, spots × features.
    Y_train, Y_test
        log1p targets, spots × genes.
    n_components
        Principal components (at most the training spots and the features).
    random_state
        Seed of the PCA and the ridge (HEST's default ``seed`` is 1).

    Returns
    -------
    ``(n_genes,)`` Pearson r (NaN where prediction or target is constant).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 8))
    >>> Y = np.log1p(np.exp(X[:, :2]))  # two genes driven by the first two features
    >>> r = probe_fold(X[:150], Y[:150], X[150:], Y[150:])
    >>> bool((r > 0.9).all())
    True
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    n_components = min(n_components, X_train.shape[0], X_train.shape[1])
    pipe = Pipeline([("scaler", StandardScaler()), ("PCA", PCA(n_components=n_components, random_state=random_state))])
    Z_train = pipe.fit_transform(X_train).astype(np.float32)
    Z_test = pipe.transform(X_test).astype(np.float32)
    reg = Ridge(
        solver="lsqr",
        alpha=probe_alpha(Z_train.shape[1], Y_train.shape[1]),
        random_state=random_state,
        fit_intercept=False,
        max_iter=PROBE_MAX_ITER,
    )
    reg.fit(Z_train, Y_train)
    return pearson(Y_test, reg.predict(Z_test))


def probe_folds(
    X: Sequence[np.ndarray], Y: Sequence[np.ndarray], groups: np.ndarray, *, random_state: int = 1
) -> dict[str, float]:
    """Mean per-gene Pearson r of each leave-one-group-out fold: ``{group: mean r}``, groups in order of appearance."""
    folds = {}
    for group in dict.fromkeys(groups):
        test = groups == group
        r = probe_fold(
            np.vstack([x for x, t in zip(X, test) if not t]),
            np.vstack([y for y, t in zip(Y, test) if not t]),
            np.vstack([x for x, t in zip(X, test) if t]),
            np.vstack([y for y, t in zip(Y, test) if t]),
            random_state=random_state,
        )
        folds[str(group)] = float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")
    return folds


# --------------------------------------------------------------------------------------------- #
# SPS with a permutation p-value
# --------------------------------------------------------------------------------------------- #
def _mean_eps(numer: np.ndarray, ss: np.ndarray, n: int, s0: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = -np.log(gearys_c(numer, ss, n, s0))
    finite = np.isfinite(eps)
    return float(eps[finite].mean()) if finite.any() else float("nan")


def permuted_sps(
    graph: sparse.csr_matrix, X: np.ndarray | sparse.spmatrix, n_perms: int, rng: np.random.Generator
) -> np.ndarray:
    """SPS of ``n_perms`` shuffles of the spots against the graph (all genes shuffled together).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> ring = sparse.csr_matrix(np.roll(np.eye(50), 1, axis=1))
    >>> X = np.random.default_rng(0).normal(size=(50, 10))
    >>> permuted_sps(ring, X, 3, np.random.default_rng(0)).shape
    (3,)
    """
    graph = sparse.csr_matrix(graph, dtype=np.float64)
    n, s0 = X.shape[0], float(graph.sum())
    X = sparse.csr_matrix(X) if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    _, ss, sumsq = geary_terms(graph, X)
    ss = np.where(constant_mask(ss, sumsq), 0.0, ss)
    return np.array([_mean_eps(geary_terms(graph, X[rng.permutation(n)])[0], ss, n, s0) for _ in range(n_perms)])


def slice_sps_null(
    adata: AnnData,
    *,
    use_rep: str,
    n_neighbors: int,
    layer: str | None,
    genes: Sequence[str] | None,
    n_perms: int,
    random_state: int,
) -> tuple[float, np.ndarray]:
    """SPS of one slice on ``use_rep`` and the SPS of ``n_perms`` shuffles; the slice is not changed.

    The pure per-slice step of :func:`benchmark_encoders` (safe to ship to a worker process).
    """
    result, _, graph, _, X = _eps_of(adata, use_rep, n_neighbors, "image", layer, genes, None, HVG_MASK)
    null = permuted_sps(graph, X, n_perms, np.random.default_rng(random_state)) if n_perms else np.empty(0)
    return result.sps, null


# --------------------------------------------------------------------------------------------- #
# checks
# --------------------------------------------------------------------------------------------- #
def _check_use_rep(use_rep: object) -> list[str]:
    reps = [use_rep] if isinstance(use_rep, str) else list(use_rep)
    if len(set(reps)) < len(reps):
        raise InvalidParameterError(f"use_rep names an embedding twice: {reps}; give each obsm key once.")
    return reps


def _embeddings(slices: Mapping[str, AnnData], use_rep: str) -> list[np.ndarray]:
    """``obsm[use_rep]`` of every slice; an error names the slices that lack it."""
    missing = [name for name, adata in slices.items() if use_rep not in adata.obsm]
    if missing:
        raise StmorphKeyError(
            f"st.tl.benchmark_encoders: the embedding obsm[{use_rep!r}] is missing from slice(s) "
            f"{format_keys(missing)} (of {len(slices)}). Embed every slice with the same encoder "
            "(`st.tl.embed_cohort`), or leave that embedding out of `use_rep`."
        )
    reps = [get_rep(adata, use_rep) for adata in slices.values()]
    dims = {name: rep.shape[1] for name, rep in zip(slices, reps)}
    if len(set(dims.values())) > 1:
        raise InvalidParameterError(
            f"st.tl.benchmark_encoders: obsm[{use_rep!r}] has a different width in different slices "
            f"({dims}); every slice must be embedded by the same encoder."
        )
    return reps


def _patient_groups(slices: Mapping[str, AnnData], groups: Sequence | Mapping | None) -> np.ndarray:
    """One patient-group label per slice (as strings); at least two distinct groups."""
    names = list(slices)
    if groups is None:
        labels = names
    elif isinstance(groups, Mapping):
        missing = [name for name in names if name not in groups]
        if missing:
            raise StmorphKeyError(
                f"st.tl.benchmark_encoders: groups has no patient group for slice(s) {format_keys(missing)}; "
                "give one group per slice."
            )
        labels = [groups[name] for name in names]
    elif isinstance(groups, str | bytes) or not isinstance(groups, Sequence | np.ndarray | pd.Series | pd.Index):
        raise InputTypeError(
            "groups must be a list with one patient group per slice or a dict {slice: group}; "
            f"found {type(groups).__name__}."
        )
    else:
        labels = list(groups)
        if len(labels) != len(names):
            raise InvalidParameterError(
                f"groups has {len(labels)} entries for {len(names)} slices; give one patient group per slice."
            )
    labels = np.array([str(label) for label in labels], dtype=object)
    if len(set(labels)) < 2:
        raise TooFewObservationsError(
            f"st.tl.benchmark_encoders needs slices of at least two patient groups: the HEST-Benchmark probe "
            f"trains on all groups but one and tests on the group left out, one fold per group; found one "
            f"group ({labels[0]!r}) for the slice(s) {format_keys(names)}. Add slices of another patient, or pass "
            "each slice as its own group (groups=None) if they come from different patients or you accept "
            "folds within a patient."
        )
    return labels


def _counts(slices: Mapping[str, AnnData], counts_layer: str | None) -> list[tuple[Any, pd.Index]]:
    """The raw counts of every slice (``layers[counts_layer]`` or ``X``); an error names the slice at fault."""
    out = []
    where = "adata.X" if counts_layer is None else f"adata.layers[{counts_layer!r}]"
    for name, adata in slices.items():
        check_unique_names(adata, "var")
        if counts_layer is not None and counts_layer not in adata.layers:
            raise StmorphKeyError(
                f"st.tl.benchmark_encoders: slice {name!r} has no {where} with raw counts (the probe's "
                "targets are log1p counts). `st.pp.prepare_expression` keeps them there; pass "
                "counts_layer=None when X holds the counts."
            )
        X = get_matrix(adata, counts_layer)
        low = X.min() if X.size else 0
        if low < 0:
            raise InputTypeError(
                f"st.tl.benchmark_encoders: {where} of slice {name!r} has negative values ({float(low):.3g}); the "
                "probe needs raw counts. Pass counts_layer= with the counts (`st.pp.prepare_expression` "
                "stores them in layers['counts'])."
            )
        out.append((X, adata.var_names))
    return out


def _sps_genes(sps_genes: str | Sequence[str], genes: list[str]) -> list[str] | None:
    if not isinstance(sps_genes, str):
        return list(sps_genes)
    if sps_genes not in SPS_GENES:
        raise InvalidParameterError(
            f"sps_genes must be one of {list(SPS_GENES)} or a list of genes; found {sps_genes!r}."
        )
    return genes if sps_genes == "probe" else None


def _check_timings(timings: Mapping[str, float] | None, reps: list[str]) -> dict[str, float]:
    if timings is None:
        return {}
    if not isinstance(timings, Mapping):
        raise InputTypeError(
            f"timings must be a dict {{use_rep: seconds per 1,000 patches}}; found {type(timings).__name__}."
        )
    unknown = [k for k in timings if k not in reps]
    if unknown:
        raise InvalidParameterError(f"timings names embeddings not in use_rep: {format_keys(unknown)}.")
    return {k: float(v) for k, v in timings.items()}


# --------------------------------------------------------------------------------------------- #
# the public function
# --------------------------------------------------------------------------------------------- #
def _sps_row(
    slices: Mapping[str, AnnData],
    use_rep: str,
    genes: list[str] | None,
    options: dict,
    n_perms: int,
    random_state: int,
    client: Any,
) -> dict[str, float]:
    """Mean and sd over slices of the SPS on ``use_rep``, and the permutation p-value of the mean."""
    one_slice = partial(
        slice_sps_null, use_rep=use_rep, genes=genes, n_perms=n_perms, random_state=random_state, **options
    )
    results = map_slides(one_slice, slices.values(), client=client)
    values = np.array([value for value, _ in results])
    row = {"sps": float(np.mean(values)), "sps_sd": float(np.std(values))}
    if n_perms:
        null = np.mean([perm for _, perm in results], axis=0)
        row["sps_pval"] = float((1 + np.sum(null >= row["sps"])) / (n_perms + 1))
    else:
        row["sps_pval"] = float("nan")
    return row


def _stored(table: pd.DataFrame, params: dict) -> dict:
    """The table as plain arrays for ``uns`` (survives h5ad and zarr)."""
    return {
        "encoders": table.index.to_numpy(dtype=str),
        "column_order": table.columns.to_numpy(dtype=str),  # h5ad stores a dict's keys sorted
        "columns": {c: table[c].to_numpy(np.float64) for c in table.columns},
        **params,
    }


@checks_keys("layer", "counts_layer", "key_added", many=("use_rep",))
def benchmark_encoders(
    slices: Sequence[AnnData] | Mapping[str, AnnData] | SpatialData,
    use_rep: Sequence[str] | str,
    *,
    groups: Sequence | Mapping[str, Any] | None = None,
    counts_layer: str | None = "counts",
    layer: str | None = None,
    n_top: int = 50,
    sps_genes: str | Sequence[str] = "all",
    n_neighbors: int = 5,
    n_perms: int = 99,
    timings: Mapping[str, float] | None = None,
    random_state: int = 1,
    key_added: str = "benchmark",
    inplace: bool = False,
    client: Any = None,
) -> pd.DataFrame | None:
    """Compare image embeddings of a cohort: mean SPS over slices and the HEST-Benchmark linear probe.

    For each embedding (``obsm`` key): the **SPS** of every slice, as :func:`stmorph.tl.sps`
    computes it (training-free; a better embedding gives a higher SPS), with a permutation
    p-value; and the **HEST-Benchmark probe** (Jaume et al. 2024), step by step as HEST's code
    runs it: the 50 most variable genes of the stacked log1p counts among the genes detected
    in ≥ 10 % of the spots of every slice and not named ``BLANK``/``Control``; log1p counts as
    targets (no library-size normalisation); one fold per patient group left out;
    StandardScaler and PCA-256 fit on the training fold; ridge by lsqr without intercept,
    ``α = 100 / (n_components · n_genes)``; per-gene Pearson r on the left-out group, mean over
    genes, mean ± sd over folds. The HEST lines each step follows, and the two places where
    stmorph departs (PCA of fewer than 256 components for narrow embeddings or small folds; a
    constant gene left out of a fold's mean) are listed in :mod:`stmorph.tl._benchmark`.

    Parameters
    ----------
    slices
        A list of AnnData (named ``"0"``, ``"1"``, ...), a dict ``{name: AnnData}``, or a
        SpatialData whose tables are the slices. Each holds the embeddings in ``obsm``, the
        expression for EPS in ``X`` (``layer``; prepared by :func:`stmorph.pp.prepare_expression`)
        and the raw counts in ``layers[counts_layer]``.
    use_rep
        The ``obsm`` keys of the embeddings to compare (each present in every slice).
    groups
        The patient of each slice: a list aligned with ``slices`` or a dict ``{slice: group}``.
        Slices of one group are always in the same fold (HEST's folds are patients). ``None``:
        every slice is its own group — right only when the slices come from different patients.
    counts_layer
        Layer with the raw counts of the probe's targets; ``None``: ``X``.
    layer
        Expression for EPS (``None``: ``X``), as in :func:`stmorph.tl.eps`.
    n_top
        Probe genes (HEST: 50).
    sps_genes
        Genes averaged into SPS: ``"all"`` (as :func:`stmorph.tl.sps`: the highly variable genes
        when ``var["highly_variable"]`` exists, else every gene), ``"probe"`` (the probe's genes,
        so both scores rate the same genes) or a list of genes.
    n_neighbors
        Neighbours per spot of the image graph of EPS.
    n_perms
        Shuffles of the spots against each slice's image graph for the p-value of the mean SPS
        (``sps_pval``: the fraction of shuffles whose mean SPS over slices reaches the observed
        one, ``(1 + #) / (n_perms + 1)``); 0 skips it (NaN).
    timings
        Seconds to embed 1,000 patches with each encoder, ``{use_rep: seconds}``, when known
        (measured with :func:`stmorph.tl.embed`); the others get NaN.
    random_state
        Seed of the probe's PCA and ridge (HEST's default seed is 1) and of the shuffles.
    key_added
        With ``inplace=True``: the entry of ``uns["stmorph"]["benchmark_encoders"]``.
    inplace
        Write the table into every slice and return ``None``, or (default) return it and write nothing.
    client
        A :class:`dask.distributed.Client` for the EPS of the slices, as in :func:`stmorph.tl.sps`.

    Returns
    -------
    With ``inplace=False``, a table with one row per embedding (index ``encoder``, the
    ``use_rep`` keys) and columns ``sps`` (mean over slices), ``sps_sd`` (sd over slices),
    ``sps_pval``, ``probe_pearson_mean`` and ``probe_pearson_sd`` (mean and population sd over
    folds of the mean per-gene Pearson r), ``dim``, ``seconds_per_1k`` (NaN when not known) and
    ``probe_fold_<group>`` (each fold's mean r); ``table.attrs["genes"]`` are the probe's genes.
    With ``inplace=True``, ``None``; sets in every slice:

    ``uns["stmorph"]["benchmark_encoders"][key_added]`` : ``encoders``, ``columns`` (the table's
    columns as arrays) and ``column_order``, ``genes``, ``groups`` (one per slice), ``slices``, ``n_top``,
    ``sps_genes``, ``n_neighbors``, ``n_perms``, ``random_state``.

    Raises
    ------
    StmorphKeyError
        An embedding or the counts layer is missing from a slice (the message names the slices).
    TooFewObservationsError
        Fewer than two patient groups (the probe leaves one out and trains on the rest), or no gene
        is detected in ≥ 10 % of the spots of every slice.
    InputTypeError
        Negative counts; ``groups`` of the wrong type.
    InvalidParameterError
        ``groups`` of the wrong length; an embedding of different widths in different slices.

    Examples
    --------
    >>> import numpy as np
    >>> import stmorph as st
    >>> table = st.datasets.simulate(240, 30, n_planted=10).tables["table"]
    >>> st.pp.prepare_expression(table)
    >>> table.obsm["random"] = np.random.default_rng(1).normal(size=(240, 3))
    >>> slices = {f"s{i}": table[i * 80 : (i + 1) * 80].copy() for i in range(3)}  # three patients
    >>> result = st.tl.benchmark_encoders(slices, use_rep=["latent", "random"], n_top=10, n_perms=19)
    >>> result[["sps", "probe_pearson_mean"]].idxmax().tolist()  # the true factors win both
    ['latent', 'latent']
    """
    reps = _check_use_rep(use_rep)
    check_int(n_top, "n_top", low=1)
    check_int(n_neighbors, "n_neighbors", low=1)
    check_int(n_perms, "n_perms", low=0)
    check_seed(random_state)
    check_bool(inplace, "inplace")
    slices = check_slices(slices, "st.tl.benchmark_encoders")
    labels = _patient_groups(slices, groups)
    seconds = _check_timings(timings, reps)
    embeddings = {rep: _embeddings(slices, rep) for rep in reps}  # checks every embedding before any work
    counts = _counts(slices, counts_layer)
    genes = probe_genes(counts, n_top)
    if not genes:
        raise TooFewObservationsError(
            f"st.tl.benchmark_encoders: no gene is detected in at least {MIN_DETECTED:.0%} of the spots of every "
            f"slice (and not a BLANK/Control probe), so the probe has no target; slices: {format_keys(list(slices))}."
        )
    if len(genes) < n_top:
        logger.info("benchmark_encoders: only %d genes pass HEST's filter (n_top=%d)", len(genes), n_top)
    targets = [np.log1p(_dense(X[:, names.get_indexer(genes)]).astype(np.float64)) for X, names in counts]
    eps_genes = _sps_genes(sps_genes, genes)
    options = {"n_neighbors": n_neighbors, "layer": layer}
    rows = {}
    for rep in reps:
        start = time.perf_counter()
        row = _sps_row(slices, rep, eps_genes, options, n_perms, random_state, client)
        folds = probe_folds(embeddings[rep], targets, labels, random_state=random_state)
        values = np.array(list(folds.values()))
        row.update(probe_pearson_mean=float(np.mean(values)), probe_pearson_sd=float(np.std(values)))
        row.update(dim=float(embeddings[rep][0].shape[1]), seconds_per_1k=seconds.get(rep, float("nan")))
        row.update({f"probe_fold_{group}": value for group, value in folds.items()})
        rows[rep] = row
        logger.info(
            "benchmark_encoders: %s SPS %.4f, probe r %.4f ± %.4f (%.1f s)",
            rep,
            row["sps"],
            row["probe_pearson_mean"],
            row["probe_pearson_sd"],
            time.perf_counter() - start,
        )
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "encoder"
    table.attrs["genes"] = list(genes)
    if not inplace:
        return table
    params = {
        "genes": np.array(genes, dtype=str),
        "groups": labels.astype(str),
        "slices": np.array(list(slices), dtype=str),
        "n_top": int(n_top),
        "sps_genes": sps_genes if isinstance(sps_genes, str) else "list",
        "n_neighbors": int(n_neighbors),
        "n_perms": int(n_perms),
        "random_state": int(random_state),
    }
    for adata in slices.values():
        commit_outputs(adata, uns={Key.uns.tool(TOOL, key_added): _stored(table, params)})
    return None


def stored_benchmark(adata: AnnData, key_added: str = "benchmark") -> pd.DataFrame:
    """The table :func:`benchmark_encoders` stored with ``inplace=True`` (``table.attrs["genes"]``: the probe's genes).

    Examples
    --------
    >>> import stmorph as st
    >>> table = st.datasets.simulate(150, 20, n_planted=8).tables["table"]
    >>> st.pp.prepare_expression(table)
    >>> slices = [table[i * 50 : (i + 1) * 50].copy() for i in range(3)]
    >>> st.tl.benchmark_encoders(slices, use_rep="latent", n_top=5, n_perms=0, inplace=True)
    >>> stored_benchmark(slices[0]).index.tolist()
    ['latent']
    """
    from .._anndata import read_uns

    record = read_uns(adata, Key.uns.tool(TOOL, key_added))
    if not isinstance(record, Mapping) or "columns" not in record:
        raise StmorphKeyError(
            f"no stored encoder benchmark uns['stmorph'][{TOOL!r}][{key_added!r}]; run "
            "`st.tl.benchmark_encoders(slices, use_rep=[...], inplace=True)` first."
        )
    columns = record["columns"]
    table = pd.DataFrame(
        {str(c): np.asarray(columns[c], dtype=np.float64) for c in record["column_order"]},
        index=pd.Index(np.asarray(record["encoders"]).astype(str), name="encoder"),
    )
    table.attrs["genes"] = list(np.asarray(record["genes"]).astype(str))
    return table
