"""The predictable-gene atlas: st.tl.predictable_genes, st.tl.enrich_predictable and their plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import stmorph as st
from stmorph.errors import InvalidParameterError, StmorphKeyError


def _table(n_genes=60, n_slices=8, seed=0, nan_share=0.1):
    """A genes × slices EPS table with a slice-level offset (as SPS varies) and some genes unscored."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 0.05, (n_genes, n_slices)) + rng.normal(0.0, 0.1, n_slices)
    values[rng.random(values.shape) < nan_share] = np.nan
    genes = [f"g{i}" for i in range(n_genes)]
    return pd.DataFrame(values, index=genes, columns=[f"s{j}" for j in range(n_slices)])


def test_atlas_summaries_match_an_independent_computation():
    eps = _table()
    qvals = pd.DataFrame(np.random.default_rng(1).random(eps.shape), index=eps.index, columns=eps.columns)
    atlas = st.tl.predictable_genes(eps, qvals, alpha=0.3).loc[eps.index]
    medians = eps.median(axis=0)  # pandas skips NaN
    for gene, row in eps.iterrows():
        scored = row.dropna()
        expected_consistency = np.mean([scored[s] > medians[s] for s in scored.index])
        expected_significant = np.mean([qvals.loc[gene, s] < 0.3 for s in scored.index])
        assert atlas.loc[gene, "mean_eps"] == pytest.approx(scored.mean())
        assert atlas.loc[gene, "sd_eps"] == pytest.approx(scored.std(ddof=1))
        assert atlas.loc[gene, "n_slices"] == len(scored)
        assert atlas.loc[gene, "consistency"] == pytest.approx(expected_consistency)
        assert atlas.loc[gene, "frac_significant"] == pytest.approx(expected_significant)


def test_top_and_bottom_are_the_paper_five_percent_by_mean_eps():
    eps = _table(n_genes=200, nan_share=0.0)
    atlas = st.tl.predictable_genes(eps)
    ranked = eps.mean(axis=1).sort_values(ascending=False)
    assert set(atlas.index[atlas["top"]]) == set(ranked.index[:10])  # 5 % of 200
    assert set(atlas.index[atlas["bottom"]]) == set(ranked.index[-10:])
    assert list(atlas.index) == list(ranked.index)  # most predictable first
    assert atlas["frac_significant"].isna().all()  # no q-values given: said, not invented


def test_genes_scored_in_too_few_slices_are_never_flagged():
    eps = _table(n_genes=40, nan_share=0.0)
    eps.loc["g0"] = np.nan
    eps.loc["g0", "s0"] = 5.0  # the highest EPS of the table, in one slice only
    atlas = st.tl.predictable_genes(eps, min_slices=2)
    assert not atlas.loc["g0", "top"] and atlas.loc["g0", "n_slices"] == 1
    assert st.tl.predictable_genes(eps).loc["g0", "top"]  # min_slices=1: it is


def test_consistency_is_not_swayed_by_a_slice_with_a_high_sps():
    eps = _table(n_genes=50, n_slices=6, nan_share=0.0)
    eps["s0"] += 3.0  # one slice predicts everything better
    eps.loc["g1"] += 0.3  # g1 is above each slice's median everywhere
    atlas = st.tl.predictable_genes(eps)
    assert atlas.loc["g1", "consistency"] == 1.0
    assert atlas["consistency"].drop("g1").between(0, 1).all()


def _grouped_table(n_genes=300, per_group=6, seed=0, planted=("g0", "g1", "g2")):
    rng = np.random.default_rng(seed)
    slices = [f"s{j}" for j in range(3 * per_group)]
    metadata = pd.DataFrame({"tissue": np.repeat(["breast", "prostate", "lung"], per_group)}, index=slices)
    eps = pd.DataFrame(rng.normal(0.1, 0.05, (n_genes, len(slices))), index=[f"g{i}" for i in range(n_genes)])
    eps.columns = slices
    eps.loc[list(planted), metadata.index[metadata["tissue"] == "prostate"]] += 0.4
    return eps, metadata


def test_group_specific_genes_are_found_and_shuffled_groups_find_none():
    eps, metadata = _grouped_table()
    atlas = st.tl.predictable_genes(eps, groupby="tissue", metadata=metadata)
    found = set(atlas.index[atlas["specific_prostate"]])
    assert {"g0", "g1", "g2"} <= found and len(found) <= 4  # BH at 5 %: at most a stray null gene
    assert not atlas["specific_breast"].any() and not atlas["specific_lung"].any()
    assert atlas.loc["g0", "mean_eps_prostate"] > atlas.loc["g0", "mean_eps_breast"] + 0.3
    # null: no group effect at all (the planted rows removed), labels shuffled → q-values say nothing
    null = eps.drop(index=["g0", "g1", "g2"])
    rng = np.random.default_rng(3)
    pvals, n_specific = [], 0
    for _ in range(5):
        shuffled = metadata.assign(tissue=rng.permutation(metadata["tissue"].to_numpy()))
        atlas = st.tl.predictable_genes(null, groupby="tissue", metadata=shuffled)
        for group in ("breast", "prostate", "lung"):
            n_specific += int(atlas[f"specific_{group}"].sum())
            pvals.append(atlas[f"specific_pval_{group}"].to_numpy())
    assert n_specific <= 2  # of 15 × 297 null tests; BH at 5 % allows a rejection in ~5 % of the runs
    assert stats.kstest(np.concatenate(pvals), "uniform").pvalue > 1e-3  # p-values uniform under the null


def test_group_test_is_welchs_t_test():
    eps, metadata = _grouped_table(n_genes=20)
    atlas = st.tl.predictable_genes(eps, groupby="tissue", metadata=metadata).loc[eps.index]
    member = (metadata["tissue"] == "lung").to_numpy()
    expected = stats.ttest_ind(
        eps.loc[:, member], eps.loc[:, ~member], axis=1, equal_var=False, alternative="greater"
    ).pvalue
    np.testing.assert_allclose(atlas["specific_pval_lung"], expected, rtol=1e-10)


def test_a_hest_sized_table_is_summarised_without_touching_eps(monkeypatch):
    """500 slices × 2,000 genes (HEST-1k): only the stored values are read, no EPS is computed."""
    import stmorph.tl._eps as eps_module
    import stmorph.tl._geary as geary_module

    def forbidden(*args, **kwargs):
        raise AssertionError("the atlas must not compute EPS")

    for module, name in [
        (eps_module, "compute_eps"),
        (eps_module, "slice_eps"),
        (eps_module, "_eps_of"),
        (geary_module, "geary_terms"),
        (geary_module, "gearys_c"),
    ]:
        monkeypatch.setattr(module, name, forbidden)
    eps = _table(n_genes=2000, n_slices=500, seed=2)
    qvals = eps.where(eps.isna(), 0.01)
    metadata = pd.DataFrame({"organ": [f"o{j % 10}" for j in range(500)]}, index=eps.columns)
    atlas = st.tl.predictable_genes(eps, qvals, groupby="organ", metadata=metadata)
    assert atlas.shape[0] == 2000 and atlas["top"].sum() == 100 and atlas["bottom"].sum() == 100
    assert (atlas["frac_significant"] == 1.0).all()


def _evaluated_slices(n=3):
    slices = {}
    for i in range(n):
        table = st.datasets.simulate(120, 15, n_planted=4, random_state=i).tables["table"]
        st.pp.prepare_expression(table)
        st.tl.eps(table, use_rep="latent", progress=False)
        table.obs["tissue"] = "breast" if i < 2 else "skin"
        slices[f"sim{i}"] = table
    return slices


def test_slices_and_the_sps_table_give_the_same_atlas():
    slices = _evaluated_slices()
    _, table = st.tl.sps(slices, use_rep="latent")
    qvals = pd.DataFrame({s: a.var["eps_qval"] for s, a in slices.items()}).loc[table.index, table.columns]
    from_table = st.tl.predictable_genes(table, qvals)
    from_slices = st.tl.predictable_genes(slices)
    pd.testing.assert_frame_equal(from_table, from_slices, check_names=False)
    planted = [g for g in from_slices.index if slices["sim0"].var.loc[g, "planted"]]
    assert from_slices.loc[planted, "frac_significant"].min() == 1.0  # planted genes: significant everywhere
    grouped = st.tl.predictable_genes(slices, groupby="tissue")  # the group read from each slice's obs
    assert grouped["n_slices_breast"].max() == 2 and grouped["n_slices_skin"].max() == 1


def test_group_column_missing_from_one_slice_names_it():
    slices = _evaluated_slices()
    del slices["sim1"].obs["tissue"]
    with pytest.raises(StmorphKeyError, match="sim1"):
        st.tl.predictable_genes(slices, groupby="tissue")
    eps = pd.DataFrame(np.ones((3, 2)), index=list("abc"), columns=["x", "y"])
    with pytest.raises(StmorphKeyError, match="'y'"):
        st.tl.predictable_genes(eps, groupby="tissue", metadata=pd.DataFrame({"tissue": ["t"]}, index=["x"]))


# ------------------------------------------------------------------------------------------ enrichment
def _ranked_atlas(n_genes=400, seed=0):
    """An atlas whose mean EPS falls with the gene number (g0 most predictable)."""
    genes = [f"g{i}" for i in range(n_genes)]
    rng = np.random.default_rng(seed)
    eps = pd.DataFrame(np.linspace(1, 0, n_genes)[:, None] + rng.normal(0, 1e-3, (n_genes, 4)), index=genes)
    return st.tl.predictable_genes(eps), genes


def test_enrichment_p_values_are_the_hypergeometric_tail():
    atlas, genes = _ranked_atlas()
    sets = {"matrix": genes[:12] + genes[200:218], "membrane": genes[-15:] + genes[100:105], "mixed": genes[5:40]}
    result = st.tl.enrich_predictable(atlas, sets).set_index(["list", "term"])
    n_background, n_top = len(genes), int(atlas["top"].sum())
    for (which, term), row in result.iterrows():
        chosen = set(atlas.index[atlas[which]])
        size, overlap = len(sets[term]), len(chosen & set(sets[term]))
        assert (row["set_size"], row["overlap"]) == (size, overlap)
        expected = stats.hypergeom.sf(overlap - 1, n_background, size, n_top)  # P(X ≥ overlap)
        assert row["pval"] == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert result.loc[("top", "matrix"), "qval"] < 1e-6 and result.loc[("bottom", "membrane"), "qval"] < 1e-6
    assert result.loc[("top", "membrane"), "overlap"] == 0


def test_enrichment_of_shuffled_gene_labels_finds_nothing():
    atlas, genes = _ranked_atlas()
    rng = np.random.default_rng(0)
    sets = {f"set{k}": list(rng.choice(genes, 25, replace=False)) for k in range(30)}
    sets["matrix"] = genes[:15] + genes[300:310]  # enriched among the true top genes
    assert st.tl.enrich_predictable(atlas, sets).query("list == 'top' and term == 'matrix'")["qval"].iloc[0] < 1e-6
    pvals, runs_with_a_hit = [], 0
    for seed in range(5):
        shuffled = atlas.copy()
        shuffled.index = np.random.default_rng(seed).permutation(atlas.index.to_numpy())  # gene labels shuffled
        result = st.tl.enrich_predictable(shuffled, sets)
        runs_with_a_hit += int(result.groupby("list")["qval"].min().lt(0.05).sum())
        pvals.append(result["pval"].to_numpy())
    assert runs_with_a_hit <= 2  # of 10 (5 shuffles × top/bottom); BH at 5 %: a hit in ≤ 5 % of null runs
    assert np.mean(np.concatenate(pvals) < 0.05) <= 0.08


def test_enrichment_background_is_the_scored_genes_by_default():
    atlas, genes = _ranked_atlas()  # 400 scored genes, 20 of them top
    # 100 scored genes holding exactly the chance share of the top genes (5 = 100 × 20 / 400)
    sets = {"measured": genes[:5] + genes[100:195], "half_unmeasured": genes[:10] + [f"x{i}" for i in range(100)]}
    result = st.tl.enrich_predictable(atlas, sets, min_size=5).set_index(["list", "term"])
    assert result.loc[("top", "half_unmeasured"), "set_size"] == 10  # cut to the scored genes
    assert result.loc[("top", "measured"), "expected"] == pytest.approx(5.0)
    genome = genes + [f"x{i}" for i in range(20000)]
    inflated = st.tl.enrich_predictable(atlas, sets, background=genome).set_index(["list", "term"])
    # a whole-genome universe makes a chance overlap among measured genes look enriched; the scored genes do not
    assert inflated.loc[("top", "measured"), "pval"] < 1e-6 and result.loc[("top", "measured"), "pval"] > 0.3


def test_gene_sets_from_a_gmt_file_and_a_decoupler_network_agree(tmp_path):
    atlas, genes = _ranked_atlas()
    sets = {"matrix": genes[:12] + genes[200:218], "other": genes[100:130]}
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("".join(f"{name}\tsome description\t" + "\t".join(g) + "\n" for name, g in sets.items()))
    network = pd.DataFrame([(name, gene) for name, g in sets.items() for gene in g], columns=["source", "target"])
    from_dict = st.tl.enrich_predictable(atlas, sets)
    pd.testing.assert_frame_equal(st.tl.enrich_predictable(atlas, str(gmt)), from_dict)
    pd.testing.assert_frame_equal(st.tl.enrich_predictable(atlas, network), from_dict)


def test_gene_sets_sharing_no_gene_with_the_scored_genes_are_an_error():
    atlas, _ = _ranked_atlas()
    with pytest.raises(InvalidParameterError, match="ENSG0001"):
        st.tl.enrich_predictable(atlas, {"ids": [f"ENSG000{i}" for i in range(20)]})


# --------------------------------------------------------------------------------- the shipped sections
SECTIONS = ("C2", "C3", "C4", "C5")


@pytest.fixture(scope="module")
def shipped(her2st_sdata):
    """C2–C5 embedded (hed), prepared, scored (tl.eps per slice and tl.sps) and ridge-predicted leave-one-out."""
    slices = {}
    for section in SECTIONS:
        table = st.pp.extract_patches(her2st_sdata(section), copy=True, progress=False)
        st.tl.embed(table, model="hed", progress=False)
        del table.obsm["patches"]
        st.pp.prepare_expression(table)
        slices[section] = table
    detected = [
        set(t.var_names[np.asarray((t.layers["counts"] > 0).mean(axis=0)).ravel() >= 0.1]) for t in slices.values()
    ]
    genes = sorted(set.intersection(*detected))  # detected in ≥ 10 % of the spots of every section
    for name, table in slices.items():
        st.tl.eps(table, use_rep="X_hed", genes=genes, progress=False)
        others = [t for other, t in slices.items() if other != name]
        st.tl.predict(table, others, method="ridge", use_rep="X_hed", genes=genes, trust=False, progress=False)
        st.tl.evaluate(table, "predicted_ridge")
    _, eps = st.tl.sps(slices, use_rep="X_hed", genes=genes)
    return slices, eps


def test_atlas_of_the_shipped_sections(shipped):
    slices, eps = shipped
    assert list(eps.columns) == list(SECTIONS)
    atlas = st.tl.predictable_genes(slices)
    qvals = pd.DataFrame({s: t.var["eps_qval"] for s, t in slices.items()}).loc[eps.index]
    pd.testing.assert_frame_equal(st.tl.predictable_genes(eps, qvals), atlas, check_names=False)
    # the image predicts the top genes in most sections, the bottom genes (almost) nowhere
    assert atlas.loc[atlas["top"], "frac_significant"].mean() > 0.5
    assert atlas.loc[atlas["bottom"], "frac_significant"].mean() < 0.05
    assert (
        atlas.loc[atlas["top"], "consistency"].mean() > 0.75 > 0.25 > atlas.loc[atlas["bottom"], "consistency"].mean()
    )


def test_heatmap_of_the_shipped_sections_draws_the_stored_eps(shipped):
    _, eps = shipped
    fig = st.pl.eps_heatmap(eps, n_top=10, show=False)
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert set(rows) == set(eps.mean(axis=1).nlargest(10).index) and set(columns) == set(SECTIONS)
    np.testing.assert_allclose(ax.images[0].get_array().filled(np.nan), eps.loc[rows, columns].to_numpy())


def _dots_at(ax, x: int) -> np.ndarray:
    """The y values of the scatter dots drawn around position ``x`` (the bars at the means are not dots)."""
    from matplotlib.collections import PathCollection

    dots = np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
    return np.sort(dots[np.abs(dots[:, 0] - x) < 0.3, 1])


def test_marker_panel_of_the_shipped_sections_shows_eps_and_achieved_pearson(shipped):
    slices, _ = shipped
    fig = st.pl.marker_panel(slices, show=False)  # the paper's markers
    eps_ax, pearson_ax = fig.axes
    position = list(st.tl.PAPER_MARKERS).index("ERBB2")
    np.testing.assert_allclose(_dots_at(eps_ax, position), sorted(t.var.loc["ERBB2", "eps"] for t in slices.values()))
    pearson = sorted(t.var.loc["ERBB2", "pearson_ridge"] for t in slices.values())
    np.testing.assert_allclose(_dots_at(pearson_ax, position), pearson)
    unscored = [
        g for g in st.tl.PAPER_MARKERS if all(not np.isfinite(t.var["eps"].get(g, np.nan)) for t in slices.values())
    ]
    assert unscored and fig._suptitle.get_text().endswith("not scored: " + ", ".join(unscored))
