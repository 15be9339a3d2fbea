"""Context features (the spot's neighbours' mean/spread embedding) and the ensemble predictor."""

from __future__ import annotations

import numpy as np
import pytest

from stmorph.errors import InvalidParameterError, TooFewObservationsError
from stmorph.models._baselines import KNN, Ridge
from stmorph.models._cv import fold_scores
from stmorph.models._ensemble import Ensemble
from stmorph.tl._context import Context, parse_context


def _grid(side: int, pitch: float = 100.0) -> np.ndarray:
    rows, cols = np.divmod(np.arange(side * side), side)
    return np.stack([cols, rows], axis=1).astype(np.float64) * pitch


def _direct(x: np.ndarray, xy: np.ndarray, neighbours_of) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each spot's neighbours, one spot at a time."""
    dist = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=-1))
    means, spreads = [], []
    for i in range(len(xy)):
        chosen = neighbours_of(i, dist[i])
        means.append(x[chosen].mean(axis=0))
        spreads.append(x[chosen].std(axis=0))
    return np.array(means), np.array(spreads)


def test_context_features_equal_a_direct_computation_on_a_grid():
    rng = np.random.default_rng(0)
    xy = _grid(6) + rng.uniform(-5, 5, size=(36, 2))  # jitter: no ties among the nearest spots
    x = rng.normal(size=(36, 3)).astype(np.float32)

    def nearest(i, d):
        order = np.argsort(d)
        return order[order != i][:5]

    mean, spread = _direct(x, xy, nearest)
    out = Context(n_neighbors=5, spread=True).features(x, xy)
    np.testing.assert_allclose(out[:, :3], x)
    np.testing.assert_allclose(out[:, 3:6], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 6:], spread, rtol=1e-4, atol=1e-5)

    mean, _ = _direct(x, xy, lambda i, d: np.flatnonzero((d <= 150.0) & (np.arange(len(d)) != i)))
    out = Context(n_neighbors=None, radius=150.0).features(x, xy)
    assert out.shape == (36, 6)
    np.testing.assert_allclose(out[:, 3:], mean, rtol=1e-5, atol=1e-6)


def test_a_radius_below_the_spacing_names_the_isolated_spots_and_falls_back_only_when_asked():
    xy = _grid(4)
    x = np.arange(16, dtype=np.float32)[:, None]
    with pytest.raises(TooFewObservationsError, match=r"16 of 16 spots have no neighbour within radius=50 µm"):
        Context(n_neighbors=None, radius=50.0).features(x, xy)
    alone = Context(n_neighbors=None, radius=50.0, isolated="self", spread=True).features(x, xy)
    np.testing.assert_array_equal(alone, np.c_[x, x, np.zeros_like(x)])
    xy[0] = (-1000.0, -1000.0)  # one spot far from the rest
    with pytest.raises(TooFewObservationsError, match=r"^context: 1 of 16 spots"):
        Context(n_neighbors=None, radius=150.0).features(x, xy)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"radius": 0.0}, "radius"),
        ({"radius": -5}, "radius"),
        ({"n_neighbors": 0}, "n_neighbors"),
        ({"n_neighbors": 6, "radius": 100.0}, "exactly one"),
        ({}, "exactly one"),
        ({"k": 6}, "unknown"),
        ({"n_neighbors": 6, "isolated": "drop"}, "isolated"),
        ("six", "must be True"),
    ],
)
def test_bad_context_settings_raise_naming_the_setting(value, message):
    with pytest.raises(InvalidParameterError, match=message):
        parse_context(value)


def test_context_settings_round_trip_through_their_record():
    from stmorph.tl._context import from_record

    for value in (True, {"radius": 120.0, "spread": True}, {"n_neighbors": 3, "isolated": "self"}):
        context = parse_context(value)
        assert from_record(context.record()) == context
    assert parse_context(None) is None and parse_context(False) is None and from_record({}) is None


def _neighbour_signal(seed: int, side: int = 24):
    """A planted slice whose expression is the mean of the 4 grid neighbours' first feature, not the spot's own."""
    rng = np.random.default_rng(seed)
    xy = _grid(side)
    x = rng.normal(size=(side * side, 8)).astype(np.float32)
    neighbour_mean = Context(n_neighbors=4).features(x, xy)[:, 8]
    y = np.c_[neighbour_mean, -neighbour_mean, rng.normal(size=side * side)] + 0.2 * rng.normal(size=(side * side, 3))
    return x, xy, y.astype(np.float32)


def test_a_signal_that_lives_in_the_neighbours_is_recovered_with_context_and_not_without():
    x, xy, y = _neighbour_signal(0)
    x_test, xy_test, y_test = _neighbour_signal(1)
    context = Context(n_neighbors=4)
    own = Ridge(alpha=1.0).fit(x, y).predict(x_test)
    with_context = Ridge(alpha=1.0).fit(context.features(x, xy), y).predict(context.features(x_test, xy_test))
    r_own = [np.corrcoef(own[:, g], y_test[:, g])[0, 1] for g in range(2)]
    r_context = [np.corrcoef(with_context[:, g], y_test[:, g])[0, 1] for g in range(2)]
    assert max(np.abs(r_own)) < 0.15  # the spot's own features say nothing
    assert min(r_context) > 0.8
    # null: the noise gene is not predicted with context either
    assert abs(np.corrcoef(with_context[:, 2], y_test[:, 2])[0, 1]) < 0.15


def test_context_of_a_million_bins_stays_linear_in_memory():
    # the neighbour graph of a one-spot-wide strip of bins has 2 neighbours per bin inside a 1-bin radius
    xy = np.c_[np.arange(2000, dtype=np.float64) * 8.0, np.zeros(2000)]
    x = np.ones((2000, 2), dtype=np.float32)
    graph = Context(n_neighbors=None, radius=8.5).graph(xy)
    assert graph.nnz == 2 * 2000 - 2
    np.testing.assert_allclose(np.asarray(graph.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    assert Context(n_neighbors=None, radius=8.5).features(x, xy).shape == (2000, 4)


def _two_signals(seed: int, n: int = 300):
    """Gene 0 is the angle of features 0-1 (cosine kNN sees it, ridge cannot), gene 1 is linear in feature 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    angle = 2 * x[:, 0] * x[:, 1] / (x[:, 0] ** 2 + x[:, 1] ** 2)
    y = np.c_[angle, x[:, 2]] + 0.3 * rng.normal(size=(n, 2))
    return x, y.astype(np.float32)


def test_the_ensemble_is_the_z_scored_average_of_its_members():
    x, y = _two_signals(0)
    x_test, _ = _two_signals(1)
    ensemble = Ensemble(members=[("ridge", {"alpha": 1.0}), ("knn", {"k": 10})], progress=False).fit(x, y)
    members = [Ridge(alpha=1.0).fit(x, y), KNN(k=10, progress=False).fit(x, y)]
    fitted = [m.predict(x).astype(np.float64) for m in members]
    z = sum((m.predict(x_test) - f.mean(axis=0)) / f.std(axis=0) for m, f in zip(members, fitted)) / 2
    expected = z * np.mean([f.std(axis=0) for f in fitted], axis=0) + np.mean([f.mean(axis=0) for f in fitted], axis=0)
    np.testing.assert_allclose(ensemble.predict(x_test), expected, rtol=1e-4, atol=1e-5)


def test_the_ensemble_beats_each_member_when_they_capture_different_genes():
    x, y = _two_signals(0)
    x_test, y_test = _two_signals(1)
    members = [("ridge", {"alpha": 1.0}), ("knn", {"k": 10, "columns": 2})]  # knn sees features 0-1 only
    scores = {
        "ensemble": fold_scores(y_test, Ensemble(members=members, progress=False).fit(x, y).predict(x_test), 2)[0],
        "ridge": fold_scores(y_test, Ridge(alpha=1.0).fit(x, y).predict(x_test), 2)[0],
        "knn": fold_scores(y_test, KNN(k=10, progress=False).fit(x[:, :2], y).predict(x_test[:, :2]), 2)[0],
    }
    assert scores["ensemble"] > max(scores["ridge"], scores["knn"]), scores
    null = Ensemble(members=members, progress=False).fit(x, np.random.default_rng(2).permutation(y)).predict(x_test)
    assert fold_scores(y_test, null, 2)[0] < 0.15  # shuffled pairs: nothing to predict


def test_the_ensemble_chooses_its_members_by_grouped_cv_and_reads_its_columns():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype(np.float32)
    y = (x[:, 4:5] + 0.1 * rng.normal(size=(240, 1))).astype(np.float32)  # only the last columns carry the signal
    members = [("ridge", {"columns": 2}), ("ridge", {"alpha": 10.0}), ("knn", {"k": 10})]
    model = Ensemble(members=members, n_best=2, progress=False).fit(x, y, np.repeat([0, 1, 2, 3], 60))
    assert model.chosen_ == [1, 2]  # the member blind to columns 2-5 is dropped
    assert model.get_params()["chosen"] == ["ridge(alpha=10.0)", "knn(k=10)"]
    with pytest.raises(InvalidParameterError, match="first 2 input columns"):
        Ensemble(members=[("ridge", {"columns": 2})]).fit(x[:, :1], y)


def test_a_saved_ensemble_predicts_the_same(tmp_path):
    import stmorph as st

    x, y = _two_signals(0)
    model = Ensemble(members=[("ridge", {"alpha": "cv", "columns": 1}), ("knn", {"k": 10})], progress=False)
    model.genes = ["a", "b"]
    model.fit(x, y, np.repeat([0, 1, 2], 100))
    model.save(tmp_path / "ens")
    loaded = st.models.load(tmp_path / "ens")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.members_[0].value_ == model.members_[0].value_


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([], "non-empty"),
        (["ensemble"], "cannot be a member"),
        ([("ridge", {"beta": 1})], "no option"),
        (["magic"], "magic"),
    ],
)
def test_bad_ensemble_members_raise(members, message):
    with pytest.raises(InvalidParameterError, match=message):
        Ensemble(members=members)


def _planted_slice(seed: int, side: int = 14):
    """A slice whose genes follow the mean first feature of each spot's 4 grid neighbours (pixel size 2 µm)."""
    import anndata as ad

    x, xy, y = _neighbour_signal(seed, side)
    adata = ad.AnnData(y + 5.0, obsm={"X_emb": x, "spatial": xy / 2.0})
    adata.var_names = ["north", "south", "noise"]
    adata.uns["stmorph"] = {"dataset": {"mpp": 2.0}}
    return adata


@pytest.mark.usefixtures("fast_auto")
def test_predict_recovers_a_neighbour_signal_with_context_and_auto_chooses_it():
    import stmorph as st

    refs = [_planted_slice(s) for s in (1, 2, 3)]
    query = _planted_slice(4)
    truth = np.asarray(query.X)
    scores = {}
    for context in (None, {"n_neighbors": 4}):
        st.tl.predict(
            query, refs, method="ridge", use_rep="X_emb", context=context, key_added=f"p{bool(context)}", progress=False
        )
        scores[bool(context)] = np.corrcoef(query.layers[f"p{bool(context)}"][:, 0], truth[:, 0])[0, 1]
    assert scores[False] < 0.3 < 0.8 < scores[True], scores
    st.tl.predict(query, refs, method="auto", use_rep="X_emb", context={"n_neighbors": 4}, progress=False)
    record = query.uns["stmorph"]["predict"]["predicted_auto"]
    assert "context=True" in record["selected"] or record["selected"].startswith("ensemble")
    assert record["context"]["n_neighbors"] == 4 and record["context"]["spacing_um"] == pytest.approx(100.0)


def test_model_and_a_saved_model_reproduce_the_context(tmp_path):
    import stmorph as st

    refs = [_planted_slice(s) for s in (1, 2)]
    query = _planted_slice(4)
    context = {"radius": 150.0, "spread": True}
    model = st.tl.predict(
        query, refs, method="ridge", use_rep="X_emb", context=context, return_model=True, progress=False
    )
    assert model.training["input_shape"] == (24,)  # own, mean and spread of 8 features
    other = _planted_slice(5)
    st.tl.predict(other, refs, method="ridge", use_rep="X_emb", context=context, key_added="refit", progress=False)
    st.tl.predict(other, model=model, key_added="applied")
    model.save(tmp_path / "ridge")
    st.tl.predict(other, model=st.models.load(tmp_path / "ridge"), key_added="loaded")
    np.testing.assert_allclose(other.layers["applied"], other.layers["refit"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(other.layers["loaded"], other.layers["applied"])
    assert other.uns["stmorph"]["predict"]["loaded"]["context"]["radius"] == 150.0
    with pytest.raises(InvalidParameterError, match="context"):
        st.tl.predict(other, model=model, context=True)


def test_a_query_spaced_unlike_the_references_is_warned_about_with_both_spacings():
    import stmorph as st

    refs = [_planted_slice(s) for s in (1, 2)]
    query = _planted_slice(4)
    query.uns["stmorph"]["dataset"]["mpp"] = 0.5  # spots 25 µm apart instead of 100
    with pytest.warns(UserWarning, match=r"25 µm apart .* 100 µm"):
        st.tl.predict(query, refs, method="ridge", use_rep="X_emb", context=True, progress=False)


def test_auto_without_coordinates_drops_its_context_candidates():
    import stmorph as st

    refs = [_planted_slice(s) for s in (1, 2, 3)]
    query = _planted_slice(4)
    for adata in (*refs, query):
        del adata.uns["stmorph"]
    st.tl.predict(query, refs, method="auto", use_rep="X_emb", progress=False)
    record = query.uns["stmorph"]["predict"]["predicted_auto"]
    assert "context" not in record and not any("context" in c for c in record["cv"]["candidate"])
    with pytest.raises(InvalidParameterError, match="context needs the pixel size"):
        st.tl.predict(query, refs, method="auto", use_rep="X_emb", context=True, progress=False)


def test_context_of_lazy_dask_embeddings_equals_that_of_numpy_ones():
    import dask.array as da

    import stmorph as st

    refs = [_planted_slice(s) for s in (1, 2)]
    query = _planted_slice(4)
    st.tl.predict(query, refs, method="knn", use_rep="X_emb", context=True, key_added="numpy", progress=False)
    for adata in (*refs, query):
        adata.obsm["X_emb"] = da.from_array(adata.obsm["X_emb"], chunks=(50, 8))
    st.tl.predict(query, refs, method="knn", use_rep="X_emb", context=True, key_added="dask", progress=False)
    np.testing.assert_array_equal(query.layers["dask"], query.layers["numpy"])
