"""ST-Net: DenseNet-121 + linear head, trained end-to-end on a tiny subset of patches."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import stmorph as st
from stmorph.errors import InputTypeError, ShapeMismatchError
from stmorph.models._stnet import STNet

TINY = {"epochs": 1, "batch_size": 8, "progress": False}


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # trains ST-Net


@pytest.fixture(scope="module")
def subset():
    """16 random 32 px patches with 3 genes (DenseNet-121 accepts 32 px inputs)."""
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    return patches, rng.normal(size=(16, 3)).astype(np.float32)


def test_stnet_trains_one_epoch_with_mse_and_is_deterministic(subset):
    patches, Y = subset
    model = STNet(random_state=1, **TINY).fit(patches, Y)
    assert model.input == "patches"
    assert len(model.history["loss"]) == 1 and np.isfinite(model.history["loss"][0])
    assert isinstance(model.net_.trunk, timm.models.DenseNet)
    assert model.net_.head.out_features == 3
    pred = model.predict(patches)
    assert pred.shape == (16, 3) and pred.dtype == np.float32
    np.testing.assert_array_equal(STNet(random_state=1, **TINY).fit(patches, Y).predict(patches), pred)


def test_stnet_save_load_round_trip(subset, tmp_path):
    patches, Y = subset
    model = STNet(val_fraction=0, **TINY).fit(patches, Y)
    model.genes = ["a", "b", "c"]
    model.save(tmp_path / "stnet")
    loaded = st.models.load(tmp_path / "stnet")
    assert isinstance(loaded, STNet) and loaded.genes == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.predict(patches), model.predict(patches))


def test_stnet_starts_from_a_local_weights_file(tmp_path):
    torch.manual_seed(5)
    reference = timm.create_model("densenet121", pretrained=False, num_classes=0)
    path = tmp_path / "densenet121.safetensors"
    save_file(reference.state_dict(), str(path))
    model = STNet(weights=str(path), **{**TINY, "epochs": 1})
    model._build(32, 3, model.params["weights"])  # the initial network, before any training step
    trunk = model.net_.trunk.state_dict()
    assert all(torch.equal(trunk[k], v) for k, v in reference.state_dict().items())


def test_stnet_refuses_embeddings_missing_weights_and_other_patch_sizes(subset, tmp_path):
    patches, Y = subset
    with pytest.raises(InputTypeError, match="patches"):
        STNet(**TINY).fit(np.zeros((16, 8), np.float32), Y)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        STNet(weights=str(tmp_path / "missing.pt"), **TINY).fit(patches, Y)
    model = STNet(**TINY).fit(patches, Y)
    with pytest.raises(ShapeMismatchError, match="per-spot shape"):
        model.predict(np.zeros((2, 48, 48, 3), np.uint8))


def test_stnet_through_predict_on_patches(subset):
    import anndata as ad

    patches, Y = subset
    adata = ad.AnnData(X=Y, obsm={"patches": patches})
    adata.var_names = ["a", "b", "c"]
    reference, query = adata[:12].copy(), adata[12:].copy()
    st.tl.predict(query, reference, method="stnet", use_rep="patches", **TINY)
    assert query.layers["predicted_stnet"].shape == (4, 3)
    assert query.uns["stmorph"]["predict"]["predicted_stnet"]["params"]["epochs"] == 1
    with pytest.raises(KeyError, match="extract_patches"):
        st.tl.predict(query, reference, method="stnet", use_rep="no_patches", **TINY)


def test_stnet_output_layer_starts_at_the_training_mean(subset):
    patches, Y = subset
    model = STNet(val_fraction=0, lr=0.0, **TINY).fit(patches, Y)  # lr=0: the initial network, untouched
    np.testing.assert_allclose(model.predict(patches[:5]), np.tile(Y.mean(axis=0), (5, 1)), rtol=1e-5, atol=1e-6)


def test_stnet_tta_averages_the_eight_flips_and_rotations(subset):
    patches, Y = subset
    model = STNet(val_fraction=0, **TINY).fit(patches, Y)
    views = [np.rot90(p, k, axes=(1, 2)) for p in (patches[:4], patches[:4, :, ::-1]) for k in range(4)]
    expected = np.mean([model.predict(np.ascontiguousarray(v)) for v in views], axis=0)
    plain = model.predict(patches[:4])
    model.params["tta"] = True
    np.testing.assert_allclose(model.predict(patches[:4]), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain, expected, rtol=1e-5, atol=1e-6)  # the views do change the prediction
