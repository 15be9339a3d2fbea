"""One Pearson r and one top-gene ranking (``stmorph._scores``): cross-validation and ``st.tl.evaluate`` agree."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import stmorph as st
from stmorph._scores import pearson, top_n
from stmorph.models._baselines import Ridge
from stmorph.models._cv import N_HVG, cross_validate, fold_scores, hvg_columns


def _evaluated(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """``st.tl.evaluate``'s summary of ``pred`` against ``truth`` on all spots, HVG set of ``N_HVG`` genes."""
    adata = ad.AnnData(truth.astype(np.float64))
    adata.var_names = [f"g{i}" for i in range(truth.shape[1])]
    adata.layers["predicted_m"] = pred.astype(np.float64)
    table = st.tl.evaluate(adata, "predicted_m", n_top=N_HVG, inplace=False)
    return table.loc["m"].to_dict()


def _tied_and_constant(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """60 spots × 70 genes whose 50th and 51st most variable genes tie, plus constant genes of both kinds.

    Gene 60 is an exact copy of gene 10 (equal variance) scaled to sit at rank 50/51; gene 68 is
    0.3 everywhere with rounding residues (``0.1 * 3``), gene 69 is 0 everywhere; their
    predictions are noise, so any rule that scores them changes the means.
    """
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(60, 70)) * np.linspace(3.0, 0.5, 70)
    order = np.argsort(-truth.var(axis=0), kind="stable")
    boundary = order[N_HVG - 1]
    truth[:, 60] = truth[:, boundary]  # an exact tie at the boundary of the HVG set
    truth[:, 68] = np.where(np.arange(60) % 2, 0.3, 0.1 * 3)
    truth[:, 69] = 0.0
    pred = truth + rng.normal(scale=2.0, size=truth.shape)
    pred[:, 60] = -truth[:, 60] + rng.normal(scale=0.1, size=60)  # the tied genes score very differently
    pred[:, 67] = np.where(np.arange(60) % 3, 0.7, 0.1 * 7)  # a prediction constant up to rounding
    return truth, pred


def test_a_fold_score_is_evaluate_s_hvg_and_all_gene_pearson_on_the_same_predictions():
    truth, pred = _tied_and_constant()
    hvg, every = fold_scores(truth, pred)
    summary = _evaluated(truth, pred)
    assert hvg == pytest.approx(summary[f"pearson_HVG-{N_HVG}"], rel=1e-12)
    assert every == pytest.approx(summary["pearson_all"], rel=1e-12)
    # independent check of what the numbers are: the tie goes to the earlier gene, constants have no r
    r = np.array([np.corrcoef(truth[:, g], pred[:, g])[0, 1] for g in range(67)])
    variance = truth.var(axis=0)
    boundary = int(np.flatnonzero(variance[:60] == variance[60])[0])
    chosen = [g for g in range(60) if variance[g] >= variance[boundary]]
    assert len(chosen) == N_HVG and 60 not in chosen
    assert hvg == pytest.approx(r[chosen].mean(), rel=1e-12)
    assert every == pytest.approx(r.mean(), rel=1e-12)  # genes 67 (prediction), 68 and 69 (truth) are left out


def test_cross_validated_scores_are_evaluate_s_on_each_held_out_fold():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 6))
    y = x @ rng.normal(size=(6, 55)) + rng.normal(scale=3.0, size=(90, 55))
    y[:, 54] = np.where(np.arange(90) % 2, 0.3, 0.1 * 3)  # constant up to rounding
    groups = np.repeat(["a", "b", "c"], 30)
    table = cross_validate([lambda: Ridge(alpha=10.0)], ["ridge"], x, y, groups)
    for fold, hvg, every in zip(table["fold"], table["pearson_hvg50"], table["pearson_all"]):
        train, test = groups != fold, groups == fold
        summary = _evaluated(y[test], Ridge(alpha=10.0).fit(x[train], y[train]).predict(x[test]))
        assert hvg == pytest.approx(summary[f"pearson_HVG-{N_HVG}"], rel=1e-12)
        assert every == pytest.approx(summary["pearson_all"], rel=1e-12)


def test_top_n_takes_the_largest_first_and_breaks_ties_by_position():
    values = np.array([2.0, 5.0, np.nan, 5.0, 1.0, 2.0])
    assert top_n(values, 3).tolist() == [1, 3, 0]  # 5, 5 (positions 1 then 3), then the first 2.0
    assert top_n(values, 6).tolist() == [1, 3, 0, 5, 4, 2]  # NaN last
    assert top_n(values, 10).tolist() == [1, 3, 0, 5, 4, 2]
    assert top_n(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]), 1).tolist() == [[0], [1]]  # row by row
    assert hvg_columns(np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]]), n_hvg=2).tolist() == [0, 1]


def test_reference_hvgs_break_variance_ties_by_gene_order():
    # genes b and c have the same variance: n_top=2 keeps a (largest) and b (the earlier of the tie)
    section = ad.AnnData(np.array([[0.0, 0.0, 0.0, 5.0], [4.0, 1.0, 1.0, 5.0]]))
    section.var_names = ["a", "b", "c", "d"]
    assert st.tl.reference_hvgs(section, n_top=2) == ["a", "b"]


def test_pearson_has_no_value_for_genes_constant_up_to_rounding():
    truth = np.array([[1.0, 0.3, 1.0], [2.0, 0.1 * 3, 2.0], [3.0, 0.3, 3.0]])
    pred = np.array([[1.0, 1.0, 0.7], [3.0, 2.0, 0.1 * 7], [2.0, 3.0, 0.7]])
    r = pearson(truth, pred)
    assert r[0] == pytest.approx(0.5)  # deviations (-1, 0, 1) and (-1, 1, 0)
    assert np.isnan(r[1]) and np.isnan(r[2])  # 0.3 and 0.7, each with a rounding residue
    assert pearson(truth[:, :1], 1e-3 * pred[:, :1])[0] == pytest.approx(0.5)  # small, not constant
