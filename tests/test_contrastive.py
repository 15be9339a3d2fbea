"""BLEEP and HECLIP predictors: planted-signal recovery, retrieval, determinism, save/load, end-to-end mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scanpy as sc
import torch

import stmorph as st
from stmorph.errors import InputTypeError, InvalidParameterError, ModelFileError, ShapeMismatchError
from stmorph.models._contrastive import BLEEP, HECLIP
from stmorph.models._encoders import build_encoder, register_encoder
from stmorph.models._retrieval import retrieve

FAST = {"epochs": 20, "batch_size": 64, "progress": False}
TINY_ENCODER = "tiny_test_encoder"


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # trains BLEEP/HECLIP


@pytest.fixture(scope="module")
def planted(sim_sdata):
    """Embeddings = true latent factors + noise dimensions; log-normalised expression; 300/100 split."""
    table = sim_sdata.tables["table"].copy()
    sc.pp.normalize_total(table, target_sum=1e4)
    sc.pp.log1p(table)
    Y = table.X.toarray().astype(np.float32)
    rng = np.random.default_rng(1)
    latent = table.obsm["latent"]
    X = np.concatenate([latent, rng.normal(size=(len(latent), 5))], axis=1) + 0.2 * rng.normal(size=(len(latent), 8))
    planted_genes = table.var["planted"].to_numpy()
    return X.astype(np.float32), Y, planted_genes, np.arange(300), np.arange(300, 400)


def _gene_pearson(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    p, t = pred - pred.mean(0), true - true.mean(0)
    return (p * t).sum(0) / np.sqrt((p**2).sum(0) * (t**2).sum(0))


@pytest.mark.parametrize("cls", [BLEEP, HECLIP])
def test_frozen_mode_recovers_planted_genes_on_held_out_spots(cls, planted):
    X, Y, is_planted, train, test = planted
    model = cls(**FAST).fit(X[train], Y[train])
    r = _gene_pearson(model.predict(X[test]), Y[test])
    assert r[is_planted].mean() > 0.5
    assert r[~is_planted].mean() < 0.2
    assert len(model.history["loss"]) == FAST["epochs"]
    assert model.history["loss"][-1] < model.history["loss"][0]


@pytest.mark.parametrize("cls", [BLEEP, HECLIP])
def test_same_seed_gives_identical_predictions(cls, planted):
    X, Y, _, train, test = planted
    settings = {**FAST, "epochs": 3}
    first = cls(random_state=3, **settings).fit(X[train], Y[train]).predict(X[test])
    second = cls(random_state=3, **settings).fit(X[train], Y[train]).predict(X[test])
    other = cls(random_state=4, **settings).fit(X[train], Y[train]).predict(X[test])
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_patience_stops_after_epochs_without_a_better_validation_loss_and_keeps_the_best(planted):
    X, Y, _, train, _ = planted
    settings = {**FAST, "epochs": 60, "patience": 2, "lr": 0.05, "select": "loss"}  # a high lr: val loss stalls
    model = BLEEP(**settings).fit(X[train], Y[train])
    val = np.asarray(model.history["val_loss"])
    best = int(np.argmin(val))
    assert len(val) < 60 and len(val) == best + 1 + 2  # stopped two epochs after the best one
    with pytest.raises(InvalidParameterError, match="patience"):
        BLEEP(patience=0)


@pytest.mark.parametrize("aggregation", ["mean", "weighted"])
def test_retrieval_predictions_are_convex_combinations_of_the_reference(aggregation, planted):
    X, Y, _, train, test = planted
    model = BLEEP(aggregation=aggregation, k=10, **{**FAST, "epochs": 2}).fit(X[train], Y[train])
    pred = model.predict(X[test])
    low, high = Y[train].min(0), Y[train].max(0)
    assert np.all(pred >= low - 1e-5) and np.all(pred <= high + 1e-5)


def _brute_force_retrieval(query, reference, expression, k, weighted):
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    r = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    out = []
    for row in q:
        sim = r @ row
        nearest = np.argsort(-sim, kind="stable")[:k]
        # BLEEP's public code: neighbours by cosine, weights exp(-(d² - d²_min + 1)) on the raw vectors
        d2 = ((reference[nearest] - query[len(out)]) ** 2).sum(axis=1)
        w = np.exp(-(d2 - d2.min() + 1)) if weighted else np.ones(k)
        out.append((w[:, None] * expression[nearest]).sum(0) / w.sum())
    return np.array(out)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 1000])
@pytest.mark.parametrize("aggregation", ["mean", "weighted"])
def test_chunked_retrieval_equals_brute_force(chunk_size, aggregation):
    rng = np.random.default_rng(0)
    query, reference = rng.normal(size=(23, 6)), rng.normal(size=(97, 6))
    expression = rng.gamma(2.0, size=(97, 4))
    got = retrieve(query, reference, expression, k=9, aggregation=aggregation, chunk_size=chunk_size)
    expected = _brute_force_retrieval(query, reference, expression, 9, aggregation == "weighted")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_retrieval_memory_bound_splits_queries_into_small_chunks():
    rng = np.random.default_rng(0)
    query, reference = rng.normal(size=(50, 4)), rng.normal(size=(400, 4))
    expression = rng.normal(size=(400, 3))
    small = retrieve(query, reference, expression, k=5, max_elements=400)  # one query row per chunk
    np.testing.assert_allclose(small, retrieve(query, reference, expression, k=5), rtol=1e-6)


@pytest.mark.parametrize("cls", [BLEEP, HECLIP])
def test_save_load_round_trip_gives_identical_predictions(cls, planted, tmp_path):
    X, Y, _, train, test = planted
    model = cls(**{**FAST, "epochs": 2}).fit(X[train], Y[train])
    model.genes = [f"g{i}" for i in range(Y.shape[1])]
    model.save(tmp_path / "model")
    loaded = st.models.load(tmp_path / "model")
    assert type(loaded) is cls
    assert loaded.genes == model.genes
    assert loaded.history == model.history
    np.testing.assert_array_equal(loaded.predict(X[test]), model.predict(X[test]))
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["params"]["temperature"] == 1.0 and config["params"]["encoder"] == "default"


def test_load_reports_missing_files_and_inconsistent_genes(planted, tmp_path):
    X, Y, _, train, _ = planted
    model = BLEEP(**{**FAST, "epochs": 1}).fit(X[train], Y[train])
    model.genes = [f"g{i}" for i in range(Y.shape[1])]
    folder = tmp_path / "model"
    model.save(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["genes"] = config["genes"][:-1]  # one gene fewer than the stored reference expression
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="reference_expression"):
        st.models.load(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match=r"model\.safetensors is missing"):
        st.models.load(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        st.models.load(tmp_path / "nowhere")


def test_bad_settings_and_inputs_raise_clear_errors(planted):
    X, Y, _, train, test = planted
    with pytest.raises(InvalidParameterError, match="unknown encoder"):
        BLEEP(encoder="no_such_encoder")
    with pytest.raises(InvalidParameterError, match="mode"):
        BLEEP(mode="finetune")
    with pytest.raises(InvalidParameterError, match="k must"):
        BLEEP(k=0)
    with pytest.raises(InvalidParameterError, match="projection_dim"):
        HECLIP(projection_dim=64)
    with pytest.raises(InputTypeError, match="end-to-end on image patches"):
        BLEEP(mode="end_to_end", **FAST).fit(X[train], Y[train])
    model = BLEEP(**{**FAST, "epochs": 1}).fit(X[train], Y[train])
    with pytest.raises(ShapeMismatchError, match="per-spot shape"):
        model.predict(X[test][:, :5])
    with pytest.raises(ShapeMismatchError, match="n_obs"):
        BLEEP(**FAST).fit(X[train], Y[:10])


@pytest.fixture(scope="module")
def tiny_encoder():
    """A two-layer conv encoder on 16 px inputs, registered for end-to-end tests."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    register_encoder(TINY_ENCODER, module, input_size=16, overwrite=True)
    return module


@pytest.fixture(scope="module")
def tiny_patches():
    """64 simulated 16 px patches (one per spot tile) and their log-normalised expression."""
    sdata = st.datasets.simulate(64, 12, n_planted=4, spot_px=16, random_state=2)
    image = np.asarray(sdata.images["he"]).transpose(1, 2, 0)
    table = sdata.tables["table"]
    centres = np.asarray(table.obsm["spatial"]).astype(int)
    patches = np.stack([image[y - 8 : y + 8, x - 8 : x + 8] for x, y in centres]).astype(np.uint8)
    Y = np.log1p(table.X.toarray()).astype(np.float32)
    return patches, Y


@pytest.mark.parametrize("cls", [BLEEP, HECLIP])
def test_end_to_end_mode_trains_one_epoch_on_patches_and_round_trips(cls, tiny_encoder, tiny_patches, tmp_path):
    patches, Y = tiny_patches
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    model = cls(mode="end_to_end", encoder=TINY_ENCODER, epochs=1, batch_size=16, k=5, progress=False)
    model.fit(patches, Y)
    assert model.input == "patches" and len(model.history["loss"]) == 1
    tuned = model.net_.image_encoder.state_dict()
    assert any(not torch.equal(tuned[k], before[k]) for k in before)  # the encoder was fine-tuned ...
    assert all(torch.equal(tiny_encoder.state_dict()[k], before[k]) for k in before)  # ... on a copy
    assert build_encoder(TINY_ENCODER).module is tiny_encoder  # the registry still holds the original
    pred = model.predict(patches[:10])
    assert pred.shape == (10, Y.shape[1]) and np.isfinite(pred).all()
    model.genes = [f"g{i}" for i in range(Y.shape[1])]
    model.save(tmp_path / "e2e")
    assert (tmp_path / "e2e" / "encoder.safetensors").is_file()
    np.testing.assert_array_equal(st.models.load(tmp_path / "e2e").predict(patches[:10]), pred)


def test_end_to_end_mode_without_patches_is_refused(tiny_encoder, planted):
    X, Y, _, train, _ = planted
    with pytest.raises(InputTypeError, match=r"obsm\['patches'\]"):
        HECLIP(mode="end_to_end", encoder=TINY_ENCODER, **FAST).fit(X[train], Y[train])


# ------------------------------------------------------------------------------- through st.tl.predict
@pytest.fixture(scope="module")
def slices(planted, sim_sdata):
    """Reference (300 spots) and query (100 spots) AnnData with embeddings in obsm['X_emb']."""
    X, Y, _, train, test = planted
    table = sim_sdata.tables["table"]
    adata = table.copy()
    adata.X = Y
    adata.obsm["X_emb"] = X
    return adata[train].copy(), adata[test].copy()


@pytest.mark.parametrize("method", ["bleep", "heclip"])
def test_predict_fits_on_a_reference_and_reuses_a_loaded_model(method, slices, tmp_path):
    reference, query = slices[0], slices[1].copy()
    model = st.tl.predict(
        query, reference, method=method, use_rep="X_emb", epochs=5, batch_size=64, progress=False, return_model=True
    )
    layer = query.layers[f"predicted_{method}"]
    assert layer.shape == query.shape and np.isfinite(layer).all()
    record = query.uns["stmorph"]["predict"][f"predicted_{method}"]
    assert record["params"]["mode"] == "frozen" and len(record["history"]["loss"]) == 5
    query.write_h5ad(tmp_path / "query.h5ad")  # every stored setting is h5ad-serialisable

    model.save(tmp_path / method)
    other = query.copy()
    del other.layers[f"predicted_{method}"]
    st.tl.predict(other, model=st.models.load(tmp_path / method), key_added="again")
    np.testing.assert_array_equal(other.layers["again"], layer)


def _snapshot(adata):
    return set(adata.layers), set(adata.obs.columns), repr(dict(adata.uns))


def test_predict_bad_inputs_leave_the_query_unchanged(slices, tmp_path):
    reference, query = slices
    query = query.copy()
    before = _snapshot(query)
    renamed = reference.copy()
    renamed.var_names = [f"other{i}" for i in range(renamed.n_vars)]
    with pytest.raises(KeyError, match="share no gene"):
        st.tl.predict(query, renamed, method="bleep", use_rep="X_emb", progress=False)
    with pytest.raises(InvalidParameterError, match="unknown encoder"):
        st.tl.predict(query, reference, method="bleep", use_rep="X_emb", encoder="nope", progress=False)
    with pytest.raises(KeyError, match="extract_patches"):
        st.tl.predict(query, reference, method="heclip", use_rep="patches", mode="end_to_end", progress=False)
    model = st.tl.predict(
        query.copy(), reference, method="bleep", use_rep="X_emb", epochs=1, progress=False, return_model=True
    )
    model.save(tmp_path / "m")
    fewer = query[:, 5:].copy()  # lacks genes the saved model predicts
    with pytest.raises(KeyError, match=r"not in query\.var_names"):
        st.tl.predict(fewer, model=st.models.load(tmp_path / "m"))
    assert _snapshot(query) == before
