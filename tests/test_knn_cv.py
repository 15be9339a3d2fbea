"""The untrained knn baseline, BLEEP's weighted retrieval, grouped-CV settings, use_rep lists and method="auto"."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from sklearn.linear_model import Ridge as SkRidge

import stmorph as st
from stmorph._validation import InvalidParameterError, ShapeMismatchError, StmorphKeyError, TooFewObservationsError
from stmorph.models import member_label
from stmorph.models._baselines import KNN, Ridge, ridge_solution
from stmorph.models._cv import ALPHA_GRID, K_GRID, spatial_blocks
from stmorph.models._retrieval import retrieve, retrieve_grid
from stmorph.tl._auto import _members, affordable, parse_candidates


def _pearson_cols(truth, pred):
    return np.array([np.corrcoef(truth[:, g], pred[:, g])[0, 1] for g in range(truth.shape[1])])


def _section(x: np.ndarray, y: np.ndarray, keys=("X_emb",), seed: int = 0) -> ad.AnnData:
    adata = ad.AnnData(y.astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(y.shape[1])]
    adata.obs_names = [f"s{seed}_{i}" for i in range(len(y))]
    side = int(np.ceil(np.sqrt(len(y))))
    adata.obsm["spatial"] = np.c_[np.arange(len(y)) % side, np.arange(len(y)) // side].astype(float)
    for key in keys:
        adata.obsm[key] = x.astype(np.float32)
    return adata


def _linear_sections(n_sections=4, n=60, d=40, noise=3.0, seed=0):
    """Y = X W + heavy noise with d close to n: ridge needs a real penalty."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, 12))
    out = []
    for s in range(n_sections):
        x = rng.normal(size=(n, d))
        out.append(_section(x, x @ w + noise * rng.normal(size=(n, 12)), seed=s))
    return out


def _cluster_sections(n_sections=4, n=80, seed=0):
    """Expression set by the quadrant of a 2-d embedding (XOR of the signs): local, not linear."""
    rng = np.random.default_rng(seed)
    levels = rng.normal(size=(2, 10)) * 3
    out = []
    for s in range(n_sections):
        x = rng.normal(size=(n, 2))
        label = (np.sign(x[:, 0]) == np.sign(x[:, 1])).astype(int)
        out.append(_section(x, levels[label] + 0.3 * rng.normal(size=(n, 10)), seed=s))
    return out


def test_knn_is_the_mean_of_the_top_k_cosine_neighbours():
    rng = np.random.default_rng(0)
    ref, query, expr = rng.normal(size=(40, 6)), rng.normal(size=(5, 6)), rng.normal(size=(40, 3))
    cos = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (ref / np.linalg.norm(ref, axis=1, keepdims=True)).T
    expected = np.stack([expr[np.argsort(-row)[:7]].mean(axis=0) for row in cos])
    np.testing.assert_allclose(KNN(k=7, progress=False).fit(ref, expr).predict(query), expected, rtol=1e-5)


def test_weighted_retrieval_is_bleeps_formula_on_unnormalised_embeddings():
    # neighbours chosen by cosine, weighted by exp(-(|s-q|^2 - min|s-q|^2 + 1)) of the raw vectors (BLEEP's notebook)
    query = np.array([[1.0, 0.0]])
    ref = np.array([[2.0, 0.1], [1.0, 0.3], [0.5, 0.0], [-1.0, 1.0]])  # norms differ: raw != normalised distances
    expr = np.array([[1.0], [2.0], [4.0], [100.0]])
    top3 = [2, 0, 1]  # cosine: [1, 0] ~ [0.5, 0] > [2, 0.1] > [1, 0.3]
    d2 = np.array([np.sum((ref[j] - query[0]) ** 2) for j in top3])
    w = np.exp(-(d2 - d2.min() + 1))
    expected = (w / w.sum()) @ expr[top3, 0]
    got = retrieve(query, ref, expr, k=3, aggregation="weighted")
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-6)
    assert not np.isclose(got[0, 0], expr[top3, 0].mean())


@pytest.mark.parametrize("shape", [(30, 80), (80, 30)])  # fewer spots than dimensions (kernel basis), and more
@pytest.mark.parametrize("alpha", [0.5, 100.0])
def test_ridge_solution_equals_sklearn_on_both_sides_of_n_equals_d(shape, alpha):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=shape) + 3.0, rng.normal(size=(shape[0], 4))
    coef, intercept = ridge_solution(x, y, alpha)
    fit = SkRidge(alpha=alpha).fit(x, y)
    np.testing.assert_allclose(coef, fit.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(intercept, fit.intercept_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(Ridge(alpha=alpha).fit(x, y).predict(x), fit.predict(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("aggregation", ["mean", "weighted"])
def test_one_search_for_a_grid_of_k_equals_one_search_per_k(aggregation):
    rng = np.random.default_rng(4)
    ref, query, expr = rng.normal(size=(60, 5)), rng.normal(size=(17, 5)), rng.normal(size=(60, 7))
    ks = [1, 4, 25, 60, 200]  # 200 > 60 reference spots: clipped like retrieve
    grid = retrieve_grid(query, ref, expr, ks=ks, aggregation=aggregation, chunk_size=5)
    for k, got in zip(ks, grid):
        np.testing.assert_allclose(got, retrieve(query, ref, expr, k=k, aggregation=aggregation), rtol=1e-5)
    assert not np.allclose(grid[0], grid[2])


def test_cv_scores_of_the_grid_equal_full_refits_scored_on_the_held_out_top_50_genes():
    # 80 genes: the search predicts only the held-out fold's 50 most variable ones; the score must not change
    rng = np.random.default_rng(5)
    x = rng.normal(size=(330, 6))  # 220 training spots: every k of the grid (≤ 200) is a real neighbourhood
    y = x @ rng.normal(size=(6, 80)) * rng.uniform(0.1, 3, size=80) + rng.normal(size=(330, 80))
    groups = np.repeat([0, 1, 2], 110)
    for model, grid, make in [
        (Ridge(alpha="cv"), ALPHA_GRID, lambda a: SkRidge(alpha=a)),
        (KNN(k="cv", progress=False), K_GRID, lambda k: KNN(k=k, progress=False)),
    ]:
        model.fit(x, y, groups=groups)
        expected = np.zeros((3, len(grid)))
        for fold in range(3):
            train, test = groups != fold, groups == fold
            top = np.argsort(-y[test].var(axis=0))[:50]
            for j, value in enumerate(grid):
                pred = make(value).fit(x[train], y[train]).predict(x[test])
                expected[fold, j] = np.mean(_pearson_cols(y[test][:, top], pred[:, top]))
        np.testing.assert_allclose(model.cv_scores_, expected, rtol=1e-4, atol=1e-6)


def _brute_force_alpha(sections):
    """Leave one section out, sklearn Ridge per α, mean Pearson over the 50 most variable held-out genes."""
    x = [s.obsm["X_emb"] for s in sections]
    y = [s.X for s in sections]
    means = []
    for alpha in ALPHA_GRID:
        scores = []
        for i in range(len(sections)):
            fit = SkRidge(alpha=alpha).fit(np.concatenate(x[:i] + x[i + 1 :]), np.concatenate(y[:i] + y[i + 1 :]))
            scores.append(np.nanmean(_pearson_cols(y[i], fit.predict(x[i]))))
        means.append(np.mean(scores))
    return ALPHA_GRID[int(np.argmax(means))]


def test_ridge_cv_picks_the_best_alpha_of_the_grid_by_leaving_one_section_out():
    *sections, query = _linear_sections(5)
    expected = _brute_force_alpha(sections)
    assert expected not in (ALPHA_GRID[0], ALPHA_GRID[-1])  # the planted optimum is inside the grid
    st.tl.predict(query, sections, method="ridge", alpha="cv", use_rep="X_emb", progress=False)
    assert query.uns["stmorph"]["predict"]["predicted_ridge"]["params"]["alpha_cv"] == expected


def test_knn_cv_picks_a_neighbourhood_matching_the_planted_cluster_size():
    # 4 tight clusters of 25 spots per section whose members share one expression profile plus noise:
    # more neighbours average the noise away until they spill into the next cluster (k > 75 from 3 sections)
    rng = np.random.default_rng(3)
    centres, levels = rng.normal(size=(4, 8)) * 5, rng.normal(size=(4, 6)) * 3
    label = np.repeat(np.arange(4), 25)
    groups = np.repeat(np.arange(4), 100)
    x = np.concatenate([centres[label] + rng.normal(size=(100, 8)) for _ in range(4)])
    y = np.concatenate([levels[label] + rng.normal(size=(100, 6)) for _ in range(4)])
    model = KNN(k="cv", progress=False).fit(x, y, groups=groups)
    assert model.value_ == 50
    assert model.cv_scores_.shape == (4, len(K_GRID))


def test_one_reference_is_cross_validated_on_contiguous_spatial_blocks():
    xy = np.c_[np.repeat(np.arange(20), 20), np.tile(np.arange(20), 20)].astype(float)
    labels = spatial_blocks(xy, n_blocks=4)
    assert len(np.unique(labels)) == 4
    for b in np.unique(labels):  # each block is one connected region of the grid, not scattered spots
        members = xy[labels == b]
        near = np.abs(members[:, None] - members[None]).sum(axis=2) == 1
        assert near.any(axis=1).all()
    ref, query = _linear_sections(2)
    st.tl.predict(query, ref, method="ridge", alpha="cv", use_rep="X_emb", progress=False)
    assert query.uns["stmorph"]["predict"]["predicted_ridge"]["params"]["alpha_cv"] in ALPHA_GRID


def test_cv_without_two_folds_raises_and_leaves_the_query_unchanged():
    ref, query = _linear_sections(2)
    del ref.obsm["spatial"]
    before = query.copy()
    with pytest.raises(TooFewObservationsError, match="2 cross-validation folds"):
        st.tl.predict(query, ref, method="ridge", alpha="cv", use_rep="X_emb", progress=False)
    with pytest.raises(TooFewObservationsError, match="2 cross-validation folds"):
        Ridge(alpha="cv").fit(np.ones((20, 2)), np.ones((20, 1)))
    assert_adata_equal(query, before)


def test_a_use_rep_list_standardises_each_key_on_the_reference_then_concatenates():
    rng = np.random.default_rng(1)
    sections = []
    for s in range(3):
        a, b = rng.normal(size=(50, 3)) * 100, rng.normal(size=(50, 2)) * 0.01
        adata = _section(a, a[:, :2] / 100 + b * 100 + rng.normal(size=(50, 2)), keys=("a",), seed=s)
        adata.obsm["b"] = b
        sections.append(adata)
    query, refs = sections[0], sections[1:]
    st.tl.predict(query, refs, method="ridge", use_rep=["a", "b"], progress=False)
    train = np.concatenate([np.c_[r.obsm["a"], r.obsm["b"]] for r in refs])
    mean, std = train.mean(axis=0), train.std(axis=0)
    fit = SkRidge(alpha=1.0).fit((train - mean) / std, np.concatenate([r.X for r in refs]))
    expected = fit.predict((np.c_[query.obsm["a"], query.obsm["b"]] - mean) / std)
    np.testing.assert_allclose(query.layers["predicted_ridge"], expected, rtol=1e-4, atol=1e-4)
    model = st.tl.predict(query.copy(), refs, method="ridge", use_rep=["a", "b"], progress=False, return_model=True)
    other = query.copy()
    st.tl.predict(other, model=model, key_added="reused")
    np.testing.assert_allclose(other.layers["reused"], expected, rtol=1e-4, atol=1e-4)


def test_use_rep_list_errors_name_the_missing_key_and_the_width_mismatch():
    ref, query = _linear_sections(2)
    ref.obsm["extra"] = np.ones((ref.n_obs, 3))
    before = query.copy()
    with pytest.raises(StmorphKeyError, match="extra"):
        st.tl.predict(query, ref, method="knn", use_rep=["X_emb", "extra"], progress=False)
    query.obsm["extra"] = np.ones((query.n_obs, 4))
    before = query.copy()
    with pytest.raises(ShapeMismatchError):
        st.tl.predict(query, ref, method="knn", use_rep=["X_emb", "extra"], progress=False)
    assert_adata_equal(query, before)


@pytest.mark.parametrize(("make", "winner"), [(_linear_sections, "ridge"), (_cluster_sections, "knn")])
def test_auto_picks_the_planted_best_method_and_stores_the_cv_table(make, winner, tmp_path):
    *sections, query = make(5)
    candidates = [("knn", {"k": "cv"}), ("ridge", {"alpha": "cv"})]
    model = st.tl.predict(
        query, sections, method="auto", candidates=candidates, use_rep="X_emb", progress=False, return_model=True
    )
    record = query.uns["stmorph"]["predict"]["predicted_auto"]
    assert model.name == winner and record["selected"].startswith(winner)
    cv = record["cv"]
    assert list(cv["candidate"]) == ["knn(k=cv)"] * 4 + ["ridge(alpha=cv)"] * 4
    assert list(cv["fold"]) == ["0", "1", "2", "3"] * 2
    means = {c: cv["pearson_hvg50"][cv["candidate"] == c].mean() for c in np.unique(cv["candidate"])}
    assert max(means, key=means.get) == record["selected"]
    # the refitted winner predicts the query (better than chance) and the record survives h5ad
    r = _pearson_cols(query.X, query.layers["predicted_auto"])
    assert np.nanmean(r) > 0.5
    query.write_h5ad(tmp_path / "q.h5ad")
    back = ad.read_h5ad(tmp_path / "q.h5ad").uns["stmorph"]["predict"]["predicted_auto"]["cv"]
    np.testing.assert_allclose(back["pearson_hvg50"], cv["pearson_hvg50"])
    other = query.copy()
    st.tl.predict(other, model=model, key_added="again")
    np.testing.assert_allclose(other.layers["again"], query.layers["predicted_auto"], rtol=1e-5)


@pytest.mark.parametrize(
    ("candidates", "match"),
    [
        ([], "empty"),
        (["knn", "magic"], "magic"),
        ([("ridge", {"bogus": 1})], "bogus"),
        (["knn", "knn"], "duplicates"),
        (["bleep", ("ensemble", {"n_best": 1})], "train no network"),
    ],
)
def test_bad_candidates_raise_named_errors_and_leave_the_query_unchanged(candidates, match):
    sections = _linear_sections(3)
    query = sections[0].copy()
    before = query.copy()
    with pytest.raises(InvalidParameterError, match=match):
        st.tl.predict(query, sections, method="auto", candidates=candidates, use_rep="X_emb", progress=False)
    with pytest.raises(InvalidParameterError, match="auto"):
        st.tl.predict(query, sections, method="ridge", candidates=["knn"], use_rep="X_emb", progress=False)
    assert_adata_equal(query, before)


def test_auto_takes_bleep_with_context_only_while_its_fits_are_affordable(caplog):
    candidates = parse_candidates(None)
    bleep = member_label("bleep", {"context": True})
    labels = [label for label, _, _ in candidates]
    assert bleep in labels and "ensemble(n_best=2)" in labels
    assert [label for label, _, _ in affordable(candidates, 732, 4)] == labels  # HER2ST: 4 references
    with caplog.at_level("INFO", logger="stmorph"):
        kept = affordable(candidates, 4000, 4)  # one Visium slide per reference
    assert [label for label, _, _ in kept] == [label for label in labels if label != bleep]
    assert bleep in caplog.text and "candidates=" in caplog.text
    ours = [("knn", {"k": 5}), ("bleep", {"context": True, "epochs": 2})]  # the ensemble pools fast methods only
    assert _members([*parse_candidates(ours), ("ensemble", "ensemble", {"n_best": 1})], None) == [("knn", {"k": 5})]


def test_default_auto_skips_bleep_above_its_budget_and_compares_the_fast_candidates(monkeypatch, caplog):
    monkeypatch.setattr("stmorph.tl._auto.NETWORK_SPOT_FITS", 100)  # these 3 × 60 spots × 3 folds pass it
    *sections, query = _linear_sections(4)
    for section in [*sections, query]:  # a pixel size: the context candidates stay
        section.uns["stmorph"] = {"dataset": {"mpp": 2.0}}
    with caplog.at_level("INFO", logger="stmorph"):
        st.tl.predict(query, sections, method="auto", use_rep="X_emb", progress=False)
    cv = query.uns["stmorph"]["predict"]["predicted_auto"]["cv"]
    assert "bleep(context=True)" in caplog.text and "skipped" in caplog.text
    assert not any(c.startswith("bleep") for c in cv["candidate"])
    assert {"knn(k=cv)", "ridge(alpha=cv, standardize=True, context=True)"} <= set(cv["candidate"])


def test_reference_hvgs_is_the_union_of_each_references_top_genes():
    rng = np.random.default_rng(0)
    a = ad.AnnData(rng.normal(size=(30, 6)) * np.array([5, 1, 1, 1, 4, 1.0]))
    b = ad.AnnData(rng.normal(size=(30, 6)) * np.array([1, 6, 1, 1, 1, 5.0]))
    for x in (a, b):
        x.var_names = list("abcdef")
    assert st.tl.reference_hvgs([a, b], n_top=2) == ["a", "e", "b", "f"]


def test_cv_table_plot_draws_every_candidate_and_names_the_choice():
    *sections, query = _cluster_sections(4)
    st.tl.predict(query, sections, method="auto", candidates=["knn", "ridge"], use_rep="X_emb", progress=False)
    fig = st.pl.cv_table(query, show=False)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["knn", "ridge"]
    assert ax.get_title() == f"chosen: {query.uns['stmorph']['predict']['predicted_auto']['selected']}"
    with pytest.raises(StmorphKeyError, match='method="auto"'):
        st.pl.cv_table(sections[0], show=False)
