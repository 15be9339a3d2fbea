"""Plots render on the real HER2ST sections and show what the stored results say."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from _adata_compare import assert_adata_equal
from matplotlib.figure import Figure
from scipy import sparse
from scipy.stats import spearmanr

import stmorph as st
from stmorph.errors import InvalidParameterError, StmorphKeyError

GENES = ["ERBB2", "FN1", "SPARC", "MGP"]
N_GENES = 300


def colour_features(patches: np.ndarray, grid: int = 4) -> np.ndarray:
    """A cheap image embedding: mean and SD of each colour channel in a grid of windows."""
    n, size = patches.shape[0], patches.shape[1] // grid * grid
    cells = patches[:, :size, :size].reshape(n, grid, size // grid, grid, size // grid, 3).astype(np.float32)
    return np.concatenate([cells.mean(axis=(2, 4)).reshape(n, -1), cells.std(axis=(2, 4)).reshape(n, -1)], axis=1)


def prepared(sdata, genes):
    """The section's table with a colour embedding and the EPS paper's expression pipeline, on ``genes``."""
    table = st.pp.extract_patches(sdata, patch_size=64, target_mpp=1.75, progress=False, copy=True)
    table = table[:, genes].copy()
    table.obsm["X_colour"] = colour_features(table.obsm.pop("patches"))
    st.pp.prepare_expression(table, min_cells=0, min_counts=0)
    return table


@pytest.fixture(scope="module")
def slices(her2st_sdata, her2st_adata):
    """C2 (query) and C3 (reference): the few hundred most expressed shared genes, EPS and a ridge prediction."""
    sd2, sd3 = her2st_sdata("C2"), her2st_sdata("C3")
    t2, t3 = sd2.tables["table"], sd3.tables["table"]
    shared = t2.var_names.intersection(t3.var_names)
    totals = np.asarray(t2[:, shared].X.sum(0)).ravel()
    genes = list(dict.fromkeys(GENES + list(shared[np.argsort(-totals)[:N_GENES]])))
    query, reference = prepared(sd2, genes), prepared(sd3, genes)
    for table in (query, reference):
        st.tl.eps(table, use_rep="X_colour", progress=False)
    for table, other in ((query, reference), (reference, query)):
        st.tl.predict(table, other, method="ridge", use_rep="X_colour", progress=False)
        st.tl.evaluate(table, "predicted_ridge")
    return {"query": query, "reference": reference, "sdata": sd2, "visium_uns": her2st_adata("C2").uns["spatial"]}


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def colour_limits(ax) -> tuple[float, float]:
    return next(c.get_clim() for c in ax.collections if c.get_array() is not None)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def on_layout(slices, layout: str):
    """The query in the SpatialData layout, or as a Visium-style AnnData (a copy with the real uns['spatial'])."""
    from spatialdata import SpatialData

    query = slices["query"]
    if layout == "visium":
        visium = query.copy()
        visium.uns["spatial"] = slices["visium_uns"]
        return visium
    sdata = slices["sdata"]
    return SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": query})


@pytest.mark.parametrize("layout", ["spatialdata", "visium"])
def test_spatial_draws_one_panel_per_gene_and_layer_on_both_layouts(slices, layout):
    fig = st.pl.spatial(on_layout(slices, layout), GENES[:2], show=False)
    panels = image_axes(fig)
    assert len(panels) == 4
    assert [ax.get_title().split("\n")[0] for ax in panels] == [
        "ERBB2 · measured",
        "ERBB2 · predicted (ridge)",
        "FN1 · measured",
        "FN1 · predicted (ridge)",
    ]
    query = slices["query"]
    measured = np.sort(np.asarray(query[:, "ERBB2"].X).ravel())
    predicted = np.sort(query[:, "ERBB2"].layers["predicted_ridge"].ravel())
    drawn = [np.sort(np.asarray(next(c for c in ax.collections).get_array())) for ax in panels[:2]]
    np.testing.assert_allclose(drawn[0], measured, rtol=1e-5)
    np.testing.assert_allclose(drawn[1], predicted, rtol=1e-5)


def _percentiles(values: np.ndarray, qs=(1, 99)) -> tuple[float, float]:
    """Percentiles by linear interpolation between order statistics (numpy's default), computed by hand."""
    ordered = np.sort(values)
    return tuple(np.interp(q / 100 * (len(ordered) - 1), np.arange(len(ordered)), ordered) for q in qs)


def test_spatial_scales_each_panel_by_default_and_shares_a_genes_scale_when_asked(slices):
    query = slices["query"]
    own = image_axes(st.pl.spatial(on_layout(slices, "visium"), GENES[:2], show=False))
    shared = image_axes(st.pl.spatial(on_layout(slices, "visium"), GENES[:2], scale="shared", show=False))
    full = image_axes(
        st.pl.spatial(on_layout(slices, "visium"), GENES[:2], scale="shared", percentiles=(0, 100), show=False)
    )
    for row, gene in enumerate(GENES[:2]):
        measured = np.asarray(query[:, gene].X).ravel()
        predicted = query[:, gene].layers["predicted_ridge"].ravel()
        values = np.concatenate([measured, predicted])
        for ax in full[2 * row : 2 * row + 2]:
            np.testing.assert_allclose(colour_limits(ax), (values.min(), values.max()), rtol=1e-6)
        for ax in shared[2 * row : 2 * row + 2]:
            np.testing.assert_allclose(colour_limits(ax), _percentiles(values), rtol=1e-6)
            assert ax.get_title().split("\n")[1].startswith("shared scale")
        left, right = own[2 * row], own[2 * row + 1]
        np.testing.assert_allclose(colour_limits(left), _percentiles(measured), rtol=1e-6)
        np.testing.assert_allclose(colour_limits(right), _percentiles(predicted), rtol=1e-5)
        assert left.get_title().split("\n")[1] == "own scale"
        assert right.get_title().split("\n")[1].startswith("own scale, r = ")
    with pytest.raises(InvalidParameterError, match="scale"):
        st.pl.spatial(on_layout(slices, "visium"), GENES[:1], scale="measured", show=False)


def test_spatial_leaves_the_users_objects_unchanged_and_saves(slices, tmp_path):
    visium = on_layout(slices, "visium")
    del visium.uns["stmorph"]["evaluate"]  # its NaN summary entries (no marker genes) defeat the == comparison
    before = visium.copy()
    fig = st.pl.spatial(visium, "ERBB2", show=False, save=tmp_path / "spatial.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "spatial.png").stat().st_size > 10_000
    assert_adata_equal(visium, before)


def test_spatial_names_the_missing_step(slices, her2st_adata):
    raw = her2st_adata("C2")
    with pytest.raises(StmorphKeyError, match=r"st\.tl\.predict"):
        st.pl.spatial(raw, "ERBB2", show=False)
    with pytest.raises(StmorphKeyError, match="NOT_A_GENE"):
        st.pl.spatial(on_layout(slices, "visium"), ["NOT_A_GENE"], show=False)


def test_eps_vs_score_title_gives_the_spearman_correlation(slices):
    query = slices["query"]
    query_two = query.copy()
    query_two.var["pearson_shuffled"] = np.random.default_rng(0).permutation(query.var["pearson_ridge"].to_numpy())
    fig = st.pl.eps_vs_score(query_two, show=False)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2
    for ax, column in zip(panels, ["pearson_ridge", "pearson_shuffled"]):
        eps, score = query_two.var["eps"].to_numpy(), query_two.var[column].to_numpy()
        keep = np.isfinite(eps) & np.isfinite(score)
        expected = spearmanr(eps[keep], score[keep]).statistic
        rho = float(re.search(r"ρ = (-?[0-9.]+)", ax.get_title()).group(1))
        assert rho == pytest.approx(expected, abs=5e-4)
        assert f"n = {keep.sum()} genes" in ax.get_title()
        assert len(ax.collections[0].get_offsets()) == keep.sum()


def test_eps_vs_score_names_the_missing_step(slices):
    query = slices["query"].copy()
    with pytest.raises(StmorphKeyError, match=r"st\.tl\.evaluate"):
        st.pl.eps_vs_score(query, "pearson_bleep", show=False)
    del query.var["eps"]
    with pytest.raises(StmorphKeyError, match=r"st\.tl\.eps"):
        st.pl.eps_vs_score(query, show=False)


def test_eps_ranking_lists_the_most_and_least_predictable_genes(slices):
    query = slices["query"]
    fig = st.pl.eps_ranking(query, n_top=10, show=False)
    top_ax, bottom_ax = fig.axes[:2]
    ranked = query.var["eps"].dropna().sort_values(ascending=False)

    def labelled(ax):
        ticks = sorted(zip(ax.get_yticks(), ax.get_yticklabels()), key=lambda t: -t[0])
        return [label.get_text().split()[0] for _, label in ticks]

    assert labelled(top_ax) == list(ranked.index[:10])
    assert labelled(bottom_ax) == list(ranked.index[::-1][:10])
    widths = sorted((p.get_width() for p in top_ax.patches), reverse=True)
    np.testing.assert_allclose(widths, ranked.to_numpy()[:10], rtol=1e-6)
    assert any(ax.get_ylabel() == "−log10(q-value)" for ax in fig.axes)  # the colour bar


def test_eps_ranking_ranks_only_genes_detected_in_min_detected_spots_and_shows_detection(slices):
    query = slices["query"]
    detected = (sparse.csr_matrix(query.layers["counts"]) > 0).sum(axis=0).A1
    threshold = int(np.median(detected))
    fig = st.pl.eps_ranking(query, n_top=5, min_detected=threshold, show=False)
    eps = query.var["eps"].where(detected >= threshold).dropna().sort_values(ascending=False)
    top = sorted(zip(fig.axes[0].get_yticks(), fig.axes[0].get_yticklabels()), key=lambda t: -t[0])
    assert [label.get_text().split()[0] for _, label in top] == list(eps.index[:5])
    first = eps.index[0]
    assert f"{detected[query.var_names.get_loc(first)]}/{query.n_obs} spots" in top[0][1].get_text()
    assert f"≥ {threshold} of {query.n_obs} spots" in fig.get_suptitle()
    default = st.pl.eps_ranking(query, n_top=5, show=False)
    assert f"≥ {int(np.ceil(0.05 * query.n_obs))} of" in default.get_suptitle()
    with pytest.raises(InvalidParameterError, match="Lower `min_detected`"):
        st.pl.eps_ranking(query, min_detected=query.n_obs + 1, show=False)


def test_sps_vs_score_places_one_point_per_slice(slices):
    tables = {"C2": slices["query"], "C3": slices["reference"]}
    fig = st.pl.sps_vs_score(tables, "pearson_ridge", show=False)
    points = fig.axes[0].collections[0].get_offsets()
    expected = [(t.uns["sps"]["sps"], np.nanmean(t.var["pearson_ridge"])) for t in tables.values()]
    np.testing.assert_allclose(np.asarray(points), expected, rtol=1e-6)
    summary, _ = st.tl.sps(tables)
    summary["pearson_ridge"] = [np.nanmean(tables[s].var["pearson_ridge"]) for s in summary["slice"]]
    from_table = st.pl.sps_vs_score(summary, "pearson_ridge", show=False).axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(from_table), expected, rtol=1e-6)


def test_gene_correlation_heatmaps_follow_the_measured_clustering(slices):
    query = slices["query"]
    fig = st.pl.gene_correlation(query, n_top=30, show=False)
    measured_ax, predicted_ax = image_axes(fig)
    names = [t.get_text() for t in measured_ax.get_xticklabels()]
    assert len(names) == 30 and names == [t.get_text() for t in predicted_ax.get_xticklabels()]
    expected_genes = query.var_names[
        np.argsort(-np.asarray(query.layers["counts"].mean(0)).ravel(), kind="stable")[:30]
    ]
    assert set(names) == set(expected_genes)
    for ax, values in (
        (measured_ax, np.asarray(query[:, names].X)),
        (predicted_ax, query[:, names].layers["predicted_ridge"]),
    ):
        np.testing.assert_allclose(ax.images[0].get_array(), np.corrcoef(values.T), atol=1e-6)
        assert ax.images[0].get_clim() == (-1, 1)
    assert any(ax.get_ylabel() == "Pearson correlation between genes" for ax in fig.axes)


def test_training_draws_the_loss_curves_of_a_trained_model(slices):
    query = slices["query"].copy()
    model = st.tl.predict(
        query, slices["reference"], method="mlp", use_rep="X_colour", genes=GENES, epochs=6, val_fraction=0.2,
        return_model=True, progress=False,
    )  # fmt: skip
    for drawn_from in (model, query):  # the fitted model, or the history stored in uns by st.tl.predict
        (ax,) = st.pl.training(drawn_from, show=False).axes
        lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
        np.testing.assert_allclose(lines["training"], model.history["loss"])
        np.testing.assert_allclose(lines["validation"], model.history["val_loss"])
        assert len(lines["training"]) == len(model.history["loss"]) >= 1
        assert "mlp" in ax.get_title()


def test_training_names_the_missing_step(slices):
    with pytest.raises(InvalidParameterError, match=r"st\.tl\.predict"):
        st.pl.training(slices["query"], show=False)


def test_training_says_an_untrained_model_has_not_been_trained():
    from stmorph.models._mlp import MLP

    with pytest.raises(InvalidParameterError, match=r"'mlp' model has no training history: it has not been trained"):
        st.pl.training(MLP(), show=False)


@pytest.mark.parametrize(
    "data", [[], {}, pd.DataFrame({"sps": [], "pearson_ridge": []})], ids=["list", "dict", "table"]
)
def test_sps_vs_score_without_a_slice_says_so(data):
    with pytest.raises(InvalidParameterError, match=r"sps_vs_score needs at least one slice"):
        st.pl.sps_vs_score(data, show=False)


def test_spatial_draws_an_obs_column_such_as_tissue_fraction_beside_genes(slices, her2st_adata):
    query = slices["query"]
    fraction = query.obs["tissue_fraction"].to_numpy()
    assert fraction.min() < fraction.max()  # the real section has spots off tissue
    panels = image_axes(st.pl.spatial(on_layout(slices, "spatialdata"), ["ERBB2", "tissue_fraction"], show=False))
    assert [ax.get_title().split("\n")[0] for ax in panels] == [
        "ERBB2 · measured",
        "ERBB2 · predicted (ridge)",
        "tissue_fraction · obs",
    ]
    drawn = np.sort(np.asarray(next(c for c in panels[2].collections).get_array()))
    np.testing.assert_allclose(drawn, np.sort(fraction), rtol=1e-6)
    np.testing.assert_allclose(colour_limits(panels[2]), _percentiles(fraction), rtol=1e-6)
    raw = her2st_adata("C2").copy()  # no prediction needed for an obs column alone
    st.pp.extract_patches(raw, patch_size=32, target_mpp=4.0, progress=False)
    alone = image_axes(st.pl.spatial(raw, "tissue_fraction", show=False))
    assert len(alone) == 1 and alone[0].get_title().startswith("tissue_fraction · obs")
    raw.obs["region"] = np.where(raw.obs["tissue_fraction"] > 0.5, "tissue", "glass")
    raw.obs["region"] = raw.obs["region"].astype("category")
    with pytest.raises(InvalidParameterError, match=r"obs\['region'\] is category.*numeric obs columns"):
        st.pl.spatial(raw, "region", show=False)


def test_spatial_draws_the_interval_width_beside_the_prediction(slices):
    query = slices["query"].copy()
    query.uns["spatial"] = slices["visium_uns"]
    st.tl.predict(query, slices["reference"], method="ridge", use_rep="X_colour", interval=0.9, progress=False)
    fig = st.pl.spatial(query, GENES[:1], interval_width=True, scale="shared", show=False)
    panels = image_axes(fig)
    titles = [ax.get_title().split("\n") for ax in panels]
    assert [t[0] for t in titles] == [
        "ERBB2 · measured",
        "ERBB2 · predicted (ridge)",
        "ERBB2 · predicted (ridge) interval width",
    ]
    assert titles[2][1] == "own scale" and titles[1][1].startswith("shared scale")
    width = (
        query[:, "ERBB2"].layers["predicted_ridge_upper"] - query[:, "ERBB2"].layers["predicted_ridge_lower"]
    ).ravel()
    drawn = np.asarray(next(c for c in panels[2].collections).get_array())
    np.testing.assert_allclose(np.sort(drawn), np.sort(width), rtol=1e-5)
    with pytest.raises(StmorphKeyError, match=r"interval=0\.9"):
        st.pl.spatial(on_layout(slices, "visium"), GENES[:1], interval_width=True, show=False)
