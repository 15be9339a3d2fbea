"""st.tl.predict: the two modes, gene alignment, fitted-model reuse, the planted signal, real sections, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _adata_compare import assert_adata_equal
from sklearn.linear_model import Ridge

import stmorph as st
from stmorph.errors import (
    InvalidParameterError,
    NonFiniteError,
    ShapeMismatchError,
    StmorphKeyError,
    TooFewObservationsError,
)
from stmorph.models import _predictor
from stmorph.tl._metrics import pearson

SECTIONS = ("C2", "C3", "C4", "C5")


def _prepared(table: ad.AnnData, noise: float = 0.3, seed: int = 1) -> ad.AnnData:
    """log1p-normalised expression and a cheap embedding: the true latent factors plus noise."""
    adata = table.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    rng = np.random.default_rng(seed)
    adata.obsm["X_emb"] = adata.obsm["latent"] + noise * rng.standard_normal(adata.obsm["latent"].shape)
    return adata


@pytest.fixture
def sim(sim_table):
    return _prepared(sim_table)


@pytest.fixture(scope="module")
def sim_pair():
    """Two independently simulated slices with the same genes (reference, query)."""
    ref = _prepared(st.datasets.simulate(300, 30, n_planted=6, random_state=10).tables["table"], seed=2)
    query = _prepared(st.datasets.simulate(200, 30, n_planted=6, random_state=11).tables["table"], seed=3)
    return ref, query


def _test_pearson(adata: ad.AnnData, key: str) -> np.ndarray:
    test = (adata.obs["stmorph_split"] == "test").to_numpy()
    return pearson(adata.X[test].toarray(), adata.layers[key][test])


@pytest.mark.parametrize(
    ("method", "options"),
    [("linear", {}), ("ridge", {}), ("mlp", {"epochs": 60}), ("lightgbm", {"n_estimators": 50})],
)
def test_every_baseline_predicts_planted_genes_better_than_noise_genes(sim, method, options):
    st.tl.predict(sim, method=method, use_rep="X_emb", split=0.25, progress=False, device="cpu", **options)
    r = _test_pearson(sim, f"predicted_{method}")
    planted = sim.var["planted"].to_numpy()
    assert np.nanmean(r[planted]) > 0.6
    assert np.nanmean(r[planted]) > np.nanmean(r[~planted]) + 0.4


def test_ridge_on_pure_noise_embedding_has_mean_pearson_near_zero(sim):
    sim.obsm["X_noise"] = np.random.default_rng(5).standard_normal((sim.n_obs, 16))
    st.tl.predict(sim, method="ridge", use_rep="X_noise", split=0.3)
    assert abs(np.nanmean(_test_pearson(sim, "predicted_ridge"))) < 0.06


def test_within_slice_split_is_seeded_and_recorded(sim):
    st.tl.predict(sim, method="ridge", use_rep="X_emb", split=0.2, random_state=4)
    split = sim.obs["stmorph_split"]
    assert list(split.cat.categories) == ["train", "test"]
    assert (split == "test").sum() == 80
    first = split.copy()
    st.tl.predict(sim, method="ridge", use_rep="X_emb", split=0.2, random_state=4, key_added="again")
    pd.testing.assert_series_equal(sim.obs["stmorph_split"], first)
    np.testing.assert_array_equal(sim.layers["again"], sim.layers["predicted_ridge"])
    with pytest.warns(UserWarning, match="replaced"):  # the copy holds the earlier results
        other = st.tl.predict(sim, method="ridge", use_rep="X_emb", split=0.2, random_state=5, copy=True)
    assert not other.obs["stmorph_split"].equals(first)
    # the model is fitted on the train spots only: refit by hand and compare every spot's prediction
    train = (first == "train").to_numpy()
    expected = Ridge(alpha=1.0).fit(sim.obsm["X_emb"][train], sim.X[train].toarray()).predict(sim.obsm["X_emb"])
    np.testing.assert_allclose(sim.layers["predicted_ridge"], expected, rtol=1e-4, atol=1e-5)
    record = sim.uns["stmorph"]["predict"]["predicted_ridge"]
    assert record["mode"] == "within" and record["n_train"] == 320 and record["n_test"] == 80
    assert record["split"] == 0.2 and record["layer"] == "X" and record["use_rep"] == "X_emb"
    assert record["params"]["alpha"] == 1.0 and record["train_time_s"] >= 0


def test_across_slices_aligns_genes_by_name_and_leaves_others_nan(sim_pair):
    ref, base = sim_pair
    # the query's genes: the reference's in reversed order, plus one the reference lacks
    counts = np.hstack([base.X.toarray()[:, ::-1], np.ones((base.n_obs, 1))])
    query = ad.AnnData(counts, obs=base.obs.copy(), var=pd.DataFrame(index=[*base.var_names[::-1], "query_only"]))
    query.obsm["X_emb"] = base.obsm["X_emb"]
    genes = ["planted3", "noise20", "planted0"]
    st.tl.predict(query, ref, method="ridge", use_rep="X_emb", genes=genes)
    pred = query.layers["predicted_ridge"]
    assert pred.dtype == np.float32 and pred.shape == query.shape
    expected = Ridge(alpha=1.0).fit(ref.obsm["X_emb"], ref[:, genes].X.toarray()).predict(query.obsm["X_emb"])
    np.testing.assert_allclose(pred[:, query.var_names.get_indexer(genes)], expected, rtol=1e-4, atol=1e-5)
    others = ~query.var_names.isin(genes)
    assert np.isnan(pred[:, others]).all()
    assert "stmorph_split" not in query.obs
    # default genes: the reference's genes that the query has, in the reference's order
    st.tl.predict(query, ref, method="linear", use_rep="X_emb")
    record = query.uns["stmorph"]["predict"]["predicted_linear"]
    assert list(record["genes"]) == list(ref.var_names)
    assert np.isnan(query.layers["predicted_linear"][:, query.var_names.get_loc("query_only")]).all()


def test_several_references_are_concatenated(sim_pair):
    ref, query = sim_pair
    ref_a, ref_b = ref[:150].copy(), ref[150:].copy()
    ref_b = ref_b[:, ref_b.var_names[::-1]].copy()  # gene order differs between references
    model = st.tl.predict(query.copy(), [ref_a, ref_b], method="ridge", use_rep="X_emb", return_model=True)
    expected = Ridge(alpha=1.0).fit(ref.obsm["X_emb"], ref.X.toarray()).predict(query.obsm["X_emb"])
    np.testing.assert_allclose(model.predict(query.obsm["X_emb"]), expected, rtol=1e-4, atol=1e-5)
    assert model.training["n_train"] == ref.n_obs


def test_fitted_model_predicts_a_new_slice_without_reference(sim_pair):
    ref, query = sim_pair
    fresh = query.copy()
    model = st.tl.predict(query, ref, method="ridge", use_rep="X_emb", return_model=True)
    assert model.genes == list(ref.var_names)
    st.tl.predict(fresh, model=model)
    np.testing.assert_array_equal(fresh.layers["predicted_ridge"], query.layers["predicted_ridge"])
    record = fresh.uns["stmorph"]["predict"]["predicted_ridge"]
    assert record["mode"] == "model" and record["use_rep"] == "X_emb"
    missing = fresh[:, 1:].copy()
    with pytest.raises(StmorphKeyError, match=str(ref.var_names[0])):
        st.tl.predict(missing, model=model)
    narrow = fresh.copy()
    narrow.obsm["X_emb"] = narrow.obsm["X_emb"][:, :2]
    with pytest.raises(ShapeMismatchError, match="model"):
        st.tl.predict(narrow, model=model)
    with pytest.raises(InvalidParameterError, match="never fitted"):
        st.tl.predict(fresh, model=_predictor.get_method("ridge")())
    before = fresh.copy()
    with pytest.raises(InvalidParameterError, match=r"\['genes'\] cannot change it"):
        st.tl.predict(fresh, model=model, genes=list(ref.var_names[:2]), key_added="subset")
    assert "subset" not in fresh.layers and fresh.uns.keys() == before.uns.keys()


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("linear", {}),
        ("ridge", {"alpha": "cv", "standardize": True, "n_pcs": 4}),
        ("knn", {"k": "cv", "aggregation": "weighted"}),
        ("lightgbm", {"n_estimators": 5}),
        ("mlp", {"epochs": 5}),
        ("auto", {"candidates": [("knn", {"k": 5}), ("ridge", {"alpha": "cv"})]}),
    ],
)
def test_every_fitted_baseline_saves_and_loads_to_the_same_predictions(sim_pair, method, options, tmp_path):
    ref, query = sim_pair
    refs = [ref[:150].copy(), ref[150:].copy()]  # two sections: the "cv" settings leave one out
    fitted = query.copy()
    model = st.tl.predict(fitted, refs, method=method, use_rep=["X_emb"], return_model=True, device="cpu", **options)
    model.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    loaded = st.models.load(tmp_path / "model")
    assert type(loaded) is type(model) and loaded.genes == model.genes and loaded.params == model.params
    again = query.copy()
    st.tl.predict(again, model=loaded, key_added="loaded")
    np.testing.assert_allclose(again.layers["loaded"], fitted.layers[f"predicted_{method}"], rtol=1e-5, atol=1e-6)


def test_a_saved_baseline_whose_files_disagree_is_refused(sim_pair, tmp_path):
    from safetensors.numpy import load_file, save_file

    ref, query = sim_pair
    model = st.tl.predict(query.copy(), ref, method="ridge", use_rep="X_emb", return_model=True)
    model.save(tmp_path / "m")
    arrays = load_file(str(tmp_path / "m" / "model.safetensors"))
    save_file({**arrays, "coef": arrays["coef"][:, :-1].copy()}, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(st.errors.ModelFileError, match="coef"):
        st.models.load(tmp_path / "m")
    with pytest.raises(RuntimeError, match="not fitted"):
        _predictor.get_method("knn")().save(tmp_path / "unfitted")


def test_return_values_follow_scanpys_rule(sim_pair):
    ref, query = sim_pair
    query = query.copy()
    before = query.copy()
    copied = st.tl.predict(query, ref, method="ridge", use_rep="X_emb", copy=True)
    assert isinstance(copied, ad.AnnData) and "predicted_ridge" in copied.layers
    assert_adata_equal(query, before)
    assert st.tl.predict(query, ref, method="ridge", use_rep="X_emb") is None
    np.testing.assert_array_equal(query.layers["predicted_ridge"], copied.layers["predicted_ridge"])
    model = st.tl.predict(query, ref, method="ridge", use_rep="X_emb", key_added="again", return_model=True)
    assert isinstance(model, st.models.Predictor) and model.name == "ridge"
    np.testing.assert_array_equal(query.layers["again"], copied.layers["predicted_ridge"])  # still in place
    edited = query.copy()
    with pytest.raises(InvalidParameterError, match="ask for one"):
        st.tl.predict(query, ref, method="ridge", use_rep="X_emb", key_added="third", copy=True, return_model=True)
    assert_adata_equal(query, edited)


def test_outputs_survive_h5ad_roundtrip(sim, tmp_path):
    st.tl.predict(sim, method="mlp", use_rep="X_emb", split=0.2, epochs=3, val_fraction=0.2, progress=False)
    sim.write_h5ad(tmp_path / "pred.h5ad")
    back = ad.read_h5ad(tmp_path / "pred.h5ad")
    np.testing.assert_array_equal(back.layers["predicted_mlp"], sim.layers["predicted_mlp"])
    record = back.uns["stmorph"]["predict"]["predicted_mlp"]
    assert record["params"]["val_fraction"] == 0.2 and len(record["history"]["val_loss"]) >= 1
    assert list(back.obs["stmorph_split"]) == list(sim.obs["stmorph_split"])


def test_patch_methods_receive_patches(sim, monkeypatch):
    class MeanColour(st.models.Predictor):
        name = "meancolour"
        input = "patches"

        def fit(self, X, Y, groups=None):
            assert X.dtype == np.uint8 and X.ndim == 4
            self.fitted_ = Ridge().fit(X.mean(axis=(1, 2)), Y)
            return self

        def predict(self, X):
            return self.fitted_.predict(X.mean(axis=(1, 2)))

    monkeypatch.setitem(_predictor._REGISTRY, "meancolour", MeanColour)
    rng = np.random.default_rng(0)
    sim.obsm["patches"] = rng.integers(0, 255, size=(sim.n_obs, 8, 8, 3), dtype=np.uint8)
    st.tl.predict(sim, method="meancolour", use_rep="patches", split=0.2)
    assert np.isfinite(sim.layers["predicted_meancolour"]).all()
    sim.obsm["patches"] = sim.obsm["patches"].astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        st.tl.predict(sim, method="meancolour", use_rep="patches", split=0.2)


def test_user_method_registered_with_st_tl_register_method_runs_through_predict(sim, monkeypatch):
    monkeypatch.setattr(_predictor, "_REGISTRY", dict(_predictor._REGISTRY))  # forgotten after the test

    class ShiftedMean(st.models.Predictor):
        name = "shiftedmean"

        def __init__(self, *, shift: float = 0.0, **kwargs):
            super().__init__(shift=shift, **kwargs)
            self.shift = shift

        def fit(self, X, Y, groups=None):
            self.mean_ = Y.mean(axis=0) + self.shift
            return self

        def predict(self, X):
            return np.tile(self.mean_, (len(X), 1))

    st.tl.register_method("shiftedmean", ShiftedMean)
    st.tl.register_method("ridge_by_path", "stmorph.models._baselines:Ridge")
    assert {"shiftedmean", "ridge_by_path"} <= set(st.tl.list_methods())
    st.tl.predict(sim, method="shiftedmean", use_rep="X_emb", split=0.2, shift=1.5)
    train = (sim.obs["stmorph_split"] == "train").to_numpy()
    expected = sim.X[train].toarray().mean(axis=0) + 1.5
    np.testing.assert_allclose(sim.layers["predicted_shiftedmean"], np.tile(expected, (sim.n_obs, 1)), rtol=1e-5)
    assert sim.uns["stmorph"]["predict"]["predicted_shiftedmean"]["params"]["shift"] == 1.5
    st.tl.predict(sim, method="ridge_by_path", use_rep="X_emb", split=0.2)
    st.tl.predict(sim, method="ridge", use_rep="X_emb", split=0.2)
    np.testing.assert_array_equal(sim.layers["predicted_ridge_by_path"], sim.layers["predicted_ridge"])
    with pytest.raises(InvalidParameterError, match="shift"):
        st.tl.predict(sim, method="shiftedmean", use_rep="X_emb", split=0.2, shfit=1.0)
    for target in ("stmorph.models._baselines.Ridge", dict, Ridge):
        with pytest.raises(InvalidParameterError, match="Predictor subclass"):
            st.tl.register_method("broken", target)

    class NoGroups(ShiftedMean):
        def fit(self, X, Y):  # the old two-argument contract
            return super().fit(X, Y)

    with pytest.raises(InvalidParameterError, match=r"fit must take \(X, Y, groups=None\)"):
        st.tl.register_method("broken", NoGroups)
    assert "broken" not in st.tl.list_methods()


def _bad_calls(adata: ad.AnnData, ref: ad.AnnData):
    narrow = ref.copy()
    narrow.obsm["X_emb"] = narrow.obsm["X_emb"][:, :2]
    nan_ref = ref.copy()
    nan_ref.X = nan_ref.X.toarray()
    nan_ref.X[3, 0] = np.nan
    few = ref[:8].copy()
    return {
        "different widths": (dict(reference=narrow), ShapeMismatchError, "per-spot shape"),
        "NaN in reference expression": (dict(reference=nan_ref), NonFiniteError, "reference.X"),
        "fewer than 10 training spots": (dict(reference=few), TooFewObservationsError, "at least 10"),
        "unknown method": (dict(reference=ref, method="forest"), InvalidParameterError, "'ridge'"),
        "split zero": (dict(split=0.0), InvalidParameterError, "split"),
        "split one": (dict(split=1.0), InvalidParameterError, "split"),
        "split above one": (dict(split=1.5), InvalidParameterError, "split"),
        "reference and split": (dict(reference=ref, split=0.2), InvalidParameterError, "not both"),
        "nothing to fit on": (dict(), InvalidParameterError, "reference="),
        "unknown option": (dict(reference=ref, alpah=2.0), InvalidParameterError, "alpha"),
        "gene missing from reference": (dict(reference=ref, genes=["planted0", "GENE_X"]), StmorphKeyError, "GENE_X"),
        "missing use_rep": (dict(reference=ref, use_rep="X_uni"), StmorphKeyError, "X_uni"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "different widths",
        "NaN in reference expression",
        "fewer than 10 training spots",
        "unknown method",
        "split zero",
        "split one",
        "split above one",
        "reference and split",
        "nothing to fit on",
        "unknown option",
        "gene missing from reference",
        "missing use_rep",
        "NaN in query embedding",
    ],
)
def test_bad_input_raises_clear_error_and_leaves_query_unchanged(sim_pair, case):
    ref, query = sim_pair
    query = query.copy()
    if case == "NaN in query embedding":
        query.obsm["X_emb"][0, 0] = np.nan
        kwargs, error, match = dict(reference=ref), NonFiniteError, "query"
    else:
        kwargs, error, match = _bad_calls(query, ref)[case]
    kwargs = {"method": "ridge", "use_rep": "X_emb", **kwargs}
    before = query.copy()
    with pytest.raises(error, match=match):
        st.tl.predict(query, **kwargs)
    assert_adata_equal(query, before)


def _pixel_features(sdata) -> np.ndarray:
    """A cheap image embedding: mean and SD of each RGB channel in three windows around each spot."""
    image = sdata.images["he"].data  # (c, y, x), lazy
    xy = np.round(sdata.tables["table"].obsm["spatial"]).astype(int)
    half = 96
    crops = np.stack([np.asarray(image[:, y - half : y + half, x - half : x + half]) for x, y in xy]).astype(float)
    feats = []
    for h in (24, 48, 96):
        win = crops[:, :, half - h : half + h, half - h : half + h]
        feats += [win.mean(axis=(2, 3)), win.std(axis=(2, 3))]
    return np.concatenate(feats, axis=1)


@pytest.fixture(scope="module")
def her2st_prepared(her2st_sdata):
    """C2–C5 with log1p expression of the 500 most variable genes they share, and pixel-feature embeddings."""
    slices = {}
    for section in SECTIONS:
        sdata = her2st_sdata(section)
        adata = sdata.tables["table"].copy()
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        adata.obsm["X_pix"] = _pixel_features(sdata)
        slices[section] = adata
    shared = slices[SECTIONS[0]].var_names
    for adata in slices.values():
        shared = shared[shared.isin(adata.var_names)]
    pooled = np.concatenate([slices[s][:, shared].X.toarray() for s in SECTIONS])
    top = shared[np.argsort(pooled.var(axis=0))[::-1][:500]]
    return {s: a[:, top].copy() for s, a in slices.items()}


def test_within_slice_ridge_on_real_sections_gives_finite_metrics(her2st_prepared):
    for section, adata in her2st_prepared.items():
        adata = adata.copy()
        st.tl.predict(adata, method="ridge", use_rep="X_pix", split=0.2)
        st.tl.evaluate(adata, "predicted_ridge")
        finite = np.isfinite(adata.var[["pearson_ridge", "spearman_ridge", "rmse_ridge", "ssim_ridge"]]).all(axis=1)
        assert finite.mean() >= 0.95, section
        assert np.isfinite(adata.uns["stmorph"]["evaluate"]["ridge"]["summary"]["pearson_HEG-50"]), section


def test_leave_one_section_out_ridge_on_real_sections_gives_finite_metrics(her2st_prepared):
    for section, query in her2st_prepared.items():
        query = query.copy()
        references = [a for s, a in her2st_prepared.items() if s != section]
        st.tl.predict(query, references, method="ridge", use_rep="X_pix")
        assert query.uns["stmorph"]["predict"]["predicted_ridge"]["n_train"] == sum(a.n_obs for a in references)
        st.tl.evaluate(query, "predicted_ridge")
        finite = np.isfinite(query.var[["pearson_ridge", "spearman_ridge", "rmse_ridge", "ssim_ridge"]]).all(axis=1)
        assert finite.mean() >= 0.95, section


def test_lightgbm_max_bin_limits_the_split_points():
    from stmorph.models._baselines import LightGBM

    x = np.linspace(0, 1, 400)[:, None]
    y = np.sin(6 * x)
    coarse = LightGBM(n_estimators=20, max_bin=3, n_jobs=1, progress=False).fit(x, y).predict(x)
    fine = LightGBM(n_estimators=20, n_jobs=1, progress=False).fit(x, y).predict(x)
    assert len(np.unique(coarse)) <= 3  # one feature in 3 bins: every tree is constant on each bin
    assert len(np.unique(fine)) > 20
    assert np.abs(fine - y).mean() < np.abs(coarse - y).mean()


@pytest.mark.parametrize("shape", [(80, 10), (30, 60)])  # more spots than dimensions, and fewer (minimum norm)
def test_linear_equals_sklearns_least_squares(shape):
    from sklearn.linear_model import LinearRegression

    from stmorph.models._baselines import Linear

    rng = np.random.default_rng(0)
    X, Y, X_new = rng.normal(size=shape), rng.normal(size=(shape[0], 7)), rng.normal(size=(5, shape[1]))
    expected = LinearRegression().fit(X, Y)
    model = Linear().fit(X, Y)
    np.testing.assert_allclose(model.coef_, expected.coef_.T, atol=1e-8)
    np.testing.assert_allclose(model.predict(X_new), expected.predict(X_new), rtol=1e-5, atol=1e-5)


def test_lightgbm_refuses_more_genes_than_max_genes_and_states_the_expected_time():
    from stmorph.models._baselines import LightGBM

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(60, 3)), rng.normal(size=(60, 6))
    with pytest.raises(InvalidParameterError, match=r"6 genes would take about \d+ s here .*max_genes=None"):
        LightGBM(n_estimators=2, max_genes=5, progress=False).fit(X, Y)
    assert LightGBM(n_estimators=2, max_genes=None, progress=False).fit(X, Y).predict(X).shape == (60, 6)
    with pytest.raises(InvalidParameterError, match="max_genes"):
        LightGBM(max_genes=0)
