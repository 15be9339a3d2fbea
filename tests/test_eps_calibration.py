"""EPS p-values are calibrated on real sections: uniform when the image cannot know the expression.

The null is exact by construction: the spots' expression rows are shuffled against their image
embeddings, so no gene can be predictable from the image graph. Sections C2 and C3 with the
embedding of the reference fixtures (``benchmarks/bench_eps_calibration.py`` measures all four
sections with the default encoder and all three nulls, and draws the QQ plot of the docs).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import stmorph as st

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", params=["C2", "C3"])
def section(request, data_dir) -> ad.AnnData:
    """A real section: raw counts, the fixture's image embedding, the EPS paper's expression pipeline."""
    ref = np.load(data_dir.parent / "fixtures" / f"eps_reference_{request.param}.npz")
    adata = ad.AnnData(
        X=ref["counts"], obs=pd.DataFrame(index=ref["obs_names"]), var=pd.DataFrame(index=ref["raw_var_names"])
    )
    adata.obsm["X_pixel"] = ref["embedding"]
    st.pp.prepare_expression(adata)
    return adata


def _null_pvalues(section: ad.AnnData, seed: int, pvalues: str) -> pd.DataFrame:
    """p, q and detection of the genes detected in >= 3 spots, expression shuffled against the embedding."""
    adata = section.copy()
    adata.obsm["X_pixel"] = adata.obsm["X_pixel"][np.random.default_rng(seed).permutation(adata.n_obs)]
    st.tl.eps(adata, use_rep="X_pixel", pvalues=pvalues, progress=False)
    detected = adata.var["eps_n_detected"] >= 3
    return adata.var.loc[detected, ["eps_pval", "eps_qval", "eps_n_detected"]]


@pytest.mark.parametrize("seed", SEEDS)
def test_randomization_pvalues_are_calibrated_with_expression_shuffled_against_the_image(section, seed):
    frame = _null_pvalues(section, seed, "randomization")
    assert len(frame) > 10_000
    assert (frame["eps_pval"] < 0.01).mean() <= 0.02
    assert (frame["eps_qval"] < 0.05).mean() <= 0.005
    # not degenerate (p = 1 everywhere would pass the bounds above); the normal approximation is
    # conservative at p ~ 0.05 (1-3 % of genes instead of 5 %, docs/methods/eps.md)
    assert (frame["eps_pval"] < 0.05).mean() >= 0.005


def test_normality_pvalues_of_sparse_genes_are_anticalibrated_under_the_same_null(section):
    # the reason the default changed: a gene seen in a few spots has a huge kurtosis
    frame = _null_pvalues(section, SEEDS[0], "normality")
    sparse_genes = frame[frame["eps_n_detected"] <= 5]
    assert (sparse_genes["eps_pval"] < 0.01).mean() > 0.03


def test_no_gene_detected_in_five_spots_or_fewer_is_extremely_significant(section):
    adata = section.copy()
    st.tl.eps(adata, use_rep="X_pixel", progress=False)
    sparse_genes = adata.var[adata.var["eps_n_detected"] <= 5]
    assert len(sparse_genes) > 500
    assert sparse_genes["eps_pval"].min() >= 1e-6
