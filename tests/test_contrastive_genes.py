"""Which genes BLEEP and HECLIP train on (BLEEP's per-section HVG union), that they still predict every gene, and
``st.tl.reference_hvgs``."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from safetensors.numpy import load_file, save_file

import stmorph as st
from stmorph.errors import InvalidParameterError, ModelFileError
from stmorph.models._contrastive import BLEEP, HECLIP

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = {"epochs": 4, "batch_size": 32, "progress": False}


def _sections(n_per=50, n_genes=40, seed=0):
    """Three sections; section s varies most on genes 5s..5s+4 (scaled copies of one latent factor)."""
    rng = np.random.default_rng(seed)
    sections = np.repeat(np.arange(3), n_per)
    latent = rng.normal(size=(len(sections), 2))
    X = np.concatenate([latent, rng.normal(size=(len(sections), 4))], axis=1).astype(np.float32)
    Y = 0.1 * rng.normal(size=(len(sections), n_genes))
    for s in range(3):
        rows = sections == s
        Y[np.ix_(rows, range(5 * s, 5 * s + 5))] += 3.0 * latent[rows, :1]
    return X, Y.astype(np.float32), sections


def _union_of_top(Y, sections, n_top):
    """Independent computation: per-section population variance (pandas), top n_top, union, sorted."""
    variances = pd.DataFrame(Y).groupby(sections).var(ddof=0)
    return sorted({int(g) for _, row in variances.iterrows() for g in row.nlargest(n_top).index})


@pytest.mark.parametrize("cls", [BLEEP, HECLIP])
def test_training_genes_are_the_union_of_each_sections_most_variable_genes(cls):
    X, Y, sections = _sections()
    model = cls(n_top=5, **FAST).fit(X, Y, sections=sections)
    expected = _union_of_top(Y, sections, 5)
    assert expected == list(range(15))  # the planted construction, as a check of the helper above
    np.testing.assert_array_equal(model.train_columns_, expected)
    # the projections see only those genes: BLEEP's expression head takes them, HECLIP's image head outputs them
    head = model.net_.spot_projection.projection if cls is BLEEP else model.net_.image_projection.fc
    assert (head.in_features if cls is BLEEP else head.out_features) == len(expected)
    pooled = cls(n_top=5, **FAST).fit(X, Y)  # no sections: all spots ranked as one
    np.testing.assert_array_equal(pooled.train_columns_, _union_of_top(Y, np.zeros(len(Y)), 5))
    every = cls(train_genes="all", n_top=5, **FAST).fit(X, Y, sections=sections)
    np.testing.assert_array_equal(every.train_columns_, np.arange(Y.shape[1]))


@pytest.mark.parametrize("cls", [BLEEP, HECLIP])
def test_genes_outside_the_training_set_are_predicted_from_the_retrieved_spots(cls):
    X, Y, sections = _sections()
    quiet = 0.01 * Y[:, :15]  # low-variance copies of the signal genes: never among the top 15 of a section
    Y_all = np.concatenate([Y, quiet], axis=1)
    model = cls(n_top=5, k=10, **FAST).fit(X, Y_all, sections=sections)
    assert model.train_columns_.max() < Y.shape[1]
    pred = model.predict(X)
    assert pred.shape == Y_all.shape and np.isfinite(pred).all()
    # retrieval averages whole reference profiles: a copy is predicted as exactly the scaled original
    np.testing.assert_allclose(pred[:, Y.shape[1] :], 0.01 * pred[:, :15], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("cls", [BLEEP, HECLIP])
def test_save_load_keeps_the_training_genes(cls, tmp_path):
    X, Y, sections = _sections()
    model = cls(n_top=5, **FAST).fit(X, Y, sections=sections)
    model.genes = [f"g{i}" for i in range(Y.shape[1])]
    model.save(tmp_path / "m")
    loaded = st.models.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.train_columns_, model.train_columns_)
    assert loaded.params["train_genes"] == "hvg" and loaded.params["n_top"] == 5
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))

    arrays = load_file(tmp_path / "m" / "model.safetensors")
    arrays["train_columns"] = np.array([3, 1, 99], dtype=np.int64)  # not increasing indices of the 40 genes
    save_file(arrays, tmp_path / "m" / "model.safetensors")
    with pytest.raises(ModelFileError, match="training columns"):
        st.models.load(tmp_path / "m")


def test_a_model_saved_before_train_genes_existed_loads_as_trained_on_every_gene(tmp_path):
    X, Y, sections = _sections()
    model = BLEEP(train_genes="all", **FAST).fit(X, Y, sections=sections)
    model.genes = [f"g{i}" for i in range(Y.shape[1])]
    model.save(tmp_path / "m")
    arrays = load_file(tmp_path / "m" / "model.safetensors")
    del arrays["train_columns"]
    save_file(arrays, tmp_path / "m" / "model.safetensors")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    for key in ("train_genes", "n_top"):
        del config["params"][key]
    config_path.write_text(json.dumps(config))
    loaded = st.models.load(tmp_path / "m")
    assert loaded.params["train_genes"] == "all"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_bad_training_gene_settings_raise_clear_errors():
    X, Y, sections = _sections()
    with pytest.raises(InvalidParameterError, match="train_genes"):
        BLEEP(train_genes="variable")
    with pytest.raises(InvalidParameterError, match="n_top"):
        HECLIP(n_top=0)
    with pytest.raises(st.errors.ShapeMismatchError, match="section labels"):
        BLEEP(**FAST).fit(X, Y, sections=sections[:-1])


# ------------------------------------------------------------------------------- through st.tl.predict
def _slices(X, Y, sections):
    """One AnnData per section (embeddings in obsm['X_emb'], genes g0..), and an extra gene only section 0 has."""
    refs = []
    for s in np.unique(sections):
        rows = sections == s
        adata = ad.AnnData(Y[rows], var=pd.DataFrame(index=[f"g{i}" for i in range(Y.shape[1])]))
        adata.obs_names = [f"s{s}_{i}" for i in range(adata.n_obs)]
        adata.obsm["X_emb"] = X[rows]
        refs.append(adata)
    wider = ad.AnnData(np.c_[refs[0].X, 50.0 * np.arange(refs[0].n_obs)], obs=refs[0].obs)  # most variable, unshared
    wider.var_names = [*refs[0].var_names, "only_here"]
    wider.obsm["X_emb"] = refs[0].obsm["X_emb"]
    return [wider, *refs[1:]]


@pytest.mark.parametrize("method", ["bleep", "heclip"])
def test_predict_trains_on_each_references_top_genes_and_predicts_every_shared_gene(method):
    X, Y, sections = _sections()
    refs = _slices(X, Y, sections)
    query = refs[1].copy()
    model = st.tl.predict(query, refs, method=method, use_rep="X_emb", n_top=5, return_model=True, **FAST)
    assert model.genes == [f"g{i}" for i in range(Y.shape[1])]  # "only_here" is not shared
    np.testing.assert_array_equal(model.train_columns_, _union_of_top(Y, sections, 5))
    assert np.isfinite(query.layers[f"predicted_{method}"]).all()  # all 40 genes, not only the 15 trained
    assert query.uns["stmorph"]["predict"][f"predicted_{method}"]["params"]["train_genes"] == "hvg"

    kwargs = {"use_rep": "X_emb", "n_top": 5, "return_model": True, "key_added": "one", **FAST}
    one = st.tl.predict(query.copy(), refs[1], method=method, **kwargs)
    rows = sections == 1  # one reference is one section, whatever its validation blocks
    np.testing.assert_array_equal(one.train_columns_, _union_of_top(Y[rows], np.zeros(rows.sum()), 5))


def test_reference_hvgs_returns_only_genes_every_reference_has(her2st_sdata):
    tables = {s: her2st_sdata(s).tables["table"].copy() for s in ("C2", "C3", "C4", "C5")}
    for table in tables.values():
        sc.pp.normalize_total(table, target_sum=1e4)
        sc.pp.log1p(table)
    query, refs = tables["C2"], [tables[s] for s in ("C3", "C4", "C5")]
    shared = sorted(set.intersection(*(set(r.var_names) for r in refs)))

    def top(table, genes, n=1000):
        variance = pd.Series(np.asarray(table[:, genes].X.toarray()).var(axis=0), index=genes)
        return set(variance.nlargest(n).index)

    own_tops = set().union(*(top(r, list(r.var_names)) for r in refs))
    assert own_tops - set(shared)  # e.g. ACTC1 (C3 lacks it): what the old union returned and predict refused

    genes = st.tl.reference_hvgs(refs, n_top=1000)
    assert set(genes) == set().union(*(top(r, shared) for r in refs))
    with_query = st.tl.reference_hvgs(refs, n_top=1000, query=query)
    assert set(with_query) <= set(query.var_names) and set(with_query) <= set(shared)
    rng = np.random.default_rng(0)
    for table in [query, *refs]:
        table.obsm["X_emb"] = rng.normal(size=(table.n_obs, 4)).astype(np.float32)
    st.tl.predict(query, refs, method="knn", use_rep="X_emb", genes=genes)  # each gene is in every reference
    assert np.isfinite(query[:, genes].layers["predicted_knn"]).all()
