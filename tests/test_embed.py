"""st.tl.embed, the encoder registry, safe weights loading, and real-data evidence on HER2ST."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from skimage import data as skdata
from skimage.transform import resize

import stmorph as st
from stmorph.errors import (
    InvalidParameterError,
    ShapeMismatchError,
    StmorphKeyError,
    UnsafeCheckpointError,
)
from stmorph.models import _encoders
from stmorph.models._encoders import (
    Encoder,
    build_encoder,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
    map_efficientnet_lite0_keys,
    patches_to_tensor,
)
from stmorph.models._hed import HED_FEATURE_NAMES, hed_features
from stmorph.models._weights import load_state_dict_safely


def _table(patches: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(len(patches))]))
    adata.obsm["patches"] = patches
    return adata


@pytest.fixture(scope="module")
def small_patches() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 224, 224, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- #
# The default encoder: EfficientNet-Lite0 with the shipped ImageNet weights
# ------------------------------------------------------------------------------------------- #
def test_default_weights_classify_photos_as_imagenet_does():
    # ImageNet classes: 285 "Egyptian cat" (scikit-image's chelsea), 967 "espresso" (coffee)
    photos = [
        (resize(getattr(skdata, p)(), (224, 224), anti_aliasing=True) * 255).astype(np.uint8)
        for p in ("chelsea", "coffee")
    ]
    model = efficientnet_lite0(classifier=True)
    enc = Encoder(model, dim=1000, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=224)
    with torch.inference_mode():
        probs = model(patches_to_tensor(np.stack(photos), enc)).softmax(dim=1)
    assert probs.argmax(dim=1).tolist() == [285, 967]
    assert (probs.max(dim=1).values > 0.5).all()


def test_efficientnet_key_mapping_checks_every_key_and_shape():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    state = load_state_dict_safely(efficientnet_lite0_weights_path())
    assert len(state) == 296
    mapped = map_efficientnet_lite0_keys(state, model)
    own = model.state_dict()
    assert set(mapped) - set(own) == {"classifier.weight", "classifier.bias"}
    assert all(tuple(mapped[k].shape) == tuple(v.shape) for k, v in own.items())
    with pytest.raises(InvalidParameterError, match=r"_blocks\.99"):
        map_efficientnet_lite0_keys({**state, "_blocks.99._bn0.weight": torch.ones(1)}, model)
    bad = dict(state)
    bad["_blocks.3._expand_conv.weight"] = bad["_blocks.3._expand_conv.weight"][:10]
    with pytest.raises(ShapeMismatchError, match="1 shape mismatch"):
        from stmorph.models._weights import load_into

        load_into(model, map_efficientnet_lite0_keys(bad, model), what="lite0", ignore_unexpected=("classifier.",))


def test_default_embedding_is_float32_1280d_and_deterministic(small_patches):
    adata = _table(small_patches[:4])
    st.tl.embed(adata, batch_size=2, progress=False)
    again = st.tl.embed(adata, batch_size=3, key_added="again", progress=False, copy=True)
    emb = adata.obsm["X_default"]
    assert emb.dtype == np.float32 and emb.shape == (4, 1280)
    np.testing.assert_allclose(again.obsm["again"], emb, rtol=0, atol=1e-5)
    params = adata.uns["stmorph"]["embed"]["X_default"]
    assert params["dim"] == 1280 and params["mean"] == [0.5, 0.5, 0.5] and params["device"] == "cpu"
    assert "again" not in adata.obsm  # copy=True leaves the input alone


def test_automatic_batch_size_is_64_on_the_cpu_and_fits_the_free_gpu_memory(small_patches, monkeypatch):
    from types import SimpleNamespace

    from stmorph.tl import _embed_engine as engine

    adata = _table(small_patches[:3])
    st.tl.embed(adata, model="hed", progress=False)  # batch_size="auto" by default
    assert adata.uns["stmorph"]["embed"]["X_hed"]["batch_size"] == 64
    assert engine.batch_for_memory(16e9, 30e6) == 256  # half of 16 GB holds 266 patches of 30 MB
    assert engine.batch_for_memory(1e9, 1e9) == 8 and engine.batch_for_memory(1e12, 1e3) == 1024  # clipped
    encoder = _encoders.resolve_encoder("default", None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (16e9, 80e9))
    monkeypatch.setattr(engine, "_cuda_bytes_per_patch", lambda enc, device: 30e6)
    assert engine.resolve_batch_size("auto", encoder, SimpleNamespace(type="cuda")) == 256
    assert engine.resolve_batch_size("auto", encoder, torch.device("cpu")) == 64
    assert engine.resolve_batch_size(5, encoder, SimpleNamespace(type="cuda")) == 5


def test_device_is_recorded_even_when_a_resumed_checkpoint_runs_no_batch(small_patches, tmp_path):
    adata = _table(small_patches[:3])
    st.tl.embed(adata, batch_size=2, device="cpu", checkpoint=tmp_path / "ckpt", progress=False)
    st.tl.embed(adata, batch_size=2, device="cpu", checkpoint=tmp_path / "ckpt", resume=True, key_added="again",
                progress=False)  # fmt: skip
    np.testing.assert_array_equal(adata.obsm["again"], adata.obsm["X_default"])
    for key in ("X_default", "again"):
        assert adata.uns["stmorph"]["embed"][key]["device"] == "cpu"


def test_patches_to_tensor_scales_resizes_and_normalises():
    enc = Encoder(module=None, dim=0, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0), input_size=8)
    x = patches_to_tensor(np.full((2, 16, 16, 3), 255, np.uint8), enc)
    assert x.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(x[:, 0].numpy(), 1.0)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(x[:, 1].numpy(), 3.0)  # (1 - 0.25) / 0.25
    np.testing.assert_allclose(x[:, 2].numpy(), 1.0)


# ------------------------------------------------------------------------------------------- #
# "hed": hand-crafted features without torch
# ------------------------------------------------------------------------------------------- #
def test_hed_features_separate_haematoxylin_from_eosin():
    pink = np.tile(np.array([235, 170, 200], np.uint8), (1, 32, 32, 1))  # eosin-rich stroma
    purple = np.tile(np.array([110, 60, 160], np.uint8), (1, 32, 32, 1))  # haematoxylin-rich nuclei
    feats = hed_features(np.concatenate([pink, purple]))
    h, e = HED_FEATURE_NAMES.index("fine_H_mean"), HED_FEATURE_NAMES.index("fine_E_mean")
    assert feats[1, h] > feats[0, h]
    assert feats[0, e] - feats[0, h] > feats[1, e] - feats[1, h]
    tissue = HED_FEATURE_NAMES.index("tissue_fraction")
    white = hed_features(np.full((1, 32, 32, 3), 255, np.uint8))
    assert white[0, tissue] == 0 and feats[1, tissue] == 1


def test_hed_embedding_does_not_import_torch():
    code = (
        "import sys, numpy as np, anndata as ad, stmorph as st\n"
        "a = ad.AnnData(obs={'i': [0, 1]}); a.obs_names = ['a', 'b']\n"
        "a.obsm['patches'] = np.full((2, 16, 16, 3), 200, np.uint8)\n"
        "st.tl.embed(a, model='hed', progress=False)\n"
        "assert a.obsm['X_hed'].shape == (2, 57), a.obsm['X_hed'].shape\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------- #
# Registry
# ------------------------------------------------------------------------------------------- #
def test_unknown_encoder_lists_the_registered_ones(small_patches):
    assert {"default", "hed", "uni", "resnet50", "densenet121"} <= set(st.tl.list_encoders())
    with pytest.raises(InvalidParameterError, match="'default'"):
        st.tl.embed(_table(small_patches), model="no_such_encoder", progress=False)


def test_registered_callable_and_torch_module_are_used(small_patches, monkeypatch):
    monkeypatch.setattr(_encoders, "_REGISTRY", dict(_encoders._REGISTRY))
    st.tl.register_encoder("mean_rgb", lambda p: p.mean(axis=(1, 2)))
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    st.tl.register_encoder("pool", net, mean=(0.0,) * 3, std=(1.0,) * 3, input_size=32)
    adata = _table(small_patches)
    st.tl.embed(adata, model="mean_rgb", batch_size=4, progress=False)
    st.tl.embed(adata, model="pool", progress=False)
    np.testing.assert_allclose(adata.obsm["X_mean_rgb"], small_patches.mean(axis=(1, 2)), rtol=1e-6)
    # average pooling commutes with the antialiased resize up to interpolation error
    np.testing.assert_allclose(adata.obsm["X_pool"], small_patches.mean(axis=(1, 2)) / 255, atol=0.02)
    assert build_encoder("pool").dim == 3
    with pytest.raises(InvalidParameterError, match="built-in"):
        st.tl.register_encoder("default", net)
    with pytest.raises(InvalidParameterError, match="overwrite=True"):
        st.tl.register_encoder("pool", net)
    with pytest.raises(InvalidParameterError, match="no torch module"):
        build_encoder("mean_rgb")
    with pytest.raises(InvalidParameterError, match="weights"):
        build_encoder("pool", weights="x.pt")


def test_failing_encoder_leaves_the_anndata_unchanged(small_patches, monkeypatch):
    monkeypatch.setattr(_encoders, "_REGISTRY", dict(_encoders._REGISTRY))
    st.tl.register_encoder("bad_shape", lambda p: np.zeros(len(p) + 1))
    adata = _table(small_patches)
    with pytest.raises(ShapeMismatchError, match="bad_shape"):
        st.tl.embed(adata, model="bad_shape", progress=False)
    assert list(adata.obsm) == ["patches"] and "stmorph" not in adata.uns
    with pytest.raises(StmorphKeyError, match="extract_patches"):
        st.tl.embed(adata, patches_key="nope", progress=False)


# ------------------------------------------------------------------------------------------- #
# timm architectures from local weights, and safe loading
# ------------------------------------------------------------------------------------------- #
def _random_state(name: str, **kwargs) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).state_dict()


def test_timm_architecture_loads_local_weights(small_patches, tmp_path):
    from safetensors.torch import save_file

    state = _random_state("resnet18")  # with the 1000-class head, which the feature extractor drops
    path = tmp_path / "resnet18.safetensors"
    save_file(state, str(path))
    adata = _table(small_patches[:2])
    st.tl.embed(adata, model="resnet18", weights=path, progress=False)
    enc = build_encoder("resnet18", weights=str(path))
    with torch.inference_mode():
        expected = enc.module(patches_to_tensor(small_patches[:2], enc)).numpy()
    assert adata.obsm["X_resnet18"].shape == (2, 512)
    np.testing.assert_allclose(adata.obsm["X_resnet18"], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(enc.module.state_dict()["conv1.weight"], state["conv1.weight"])


def test_weights_that_do_not_fit_or_do_not_exist_are_clear_errors(tmp_path):
    path = tmp_path / "resnet34.pt"
    torch.save(_random_state("resnet34"), path)
    with pytest.raises(ShapeMismatchError, match=r"\d+ missing key\(s\).*\d+ unexpected key\(s\)"):
        build_encoder("resnet18", weights=str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_encoder("resnet18", weights=str(tmp_path / "missing.pt"))
    with pytest.raises(InvalidParameterError, match="weights="):
        build_encoder("resnet50")


def test_pickled_objects_are_refused_and_wrapped_state_dicts_unwrapped(tmp_path):
    net = torch.nn.Linear(3, 2)
    torch.save(net, tmp_path / "model.pt")  # a whole pickled module, not a state dict
    with pytest.raises(UnsafeCheckpointError, match="refuses"):
        load_state_dict_safely(tmp_path / "model.pt")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    state = load_state_dict_safely(tmp_path / "wrapped.pt")
    assert set(state) == {"module.weight", "module.bias"}
    fresh = torch.nn.Linear(3, 2)
    from stmorph.models._weights import load_into

    load_into(fresh, state, what="wrapped")  # the DataParallel prefix is removed
    assert torch.equal(fresh.weight, net.weight)


# ------------------------------------------------------------------------------------------- #
# UNI offline
# ------------------------------------------------------------------------------------------- #
def test_uni_architecture_is_the_model_card_vit_large():
    import timm

    assert _encoders.UNI_ARCH["init_values"] == 1e-5 and _encoders.UNI_ARCH["dynamic_img_size"]
    with torch.device("meta"):
        model = timm.create_model(**_encoders.UNI_ARCH)
    assert model.num_features == 1024
    assert 300e6 < sum(p.numel() for p in model.parameters()) < 310e6  # ViT-L/16: 303M parameters
    assert "blocks.0.ls1.gamma" in model.state_dict()  # layer scale, what init_values adds


def test_uni_loads_a_local_checkpoint_offline(small_patches, tmp_path, monkeypatch):
    import timm

    # the same timm ViT family with layer scale, shrunk to ViT-Ti so the test stays fast
    monkeypatch.setitem(_encoders.UNI_ARCH, "model_name", "vit_tiny_patch16_224")
    arch = {k: v for k, v in _encoders.UNI_ARCH.items() if k != "model_name"}
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", **arch).eval()
    path = tmp_path / "pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    adata = _table(small_patches[:2])
    st.tl.embed(adata, model="uni", weights=path, progress=False)
    enc = Encoder(reference, dim=192, mean=_encoders.IMAGENET_MEAN, std=_encoders.IMAGENET_STD, input_size=224)
    with torch.inference_mode():
        expected = reference(patches_to_tensor(small_patches[:2], enc)).numpy()
    np.testing.assert_allclose(adata.obsm["X_uni"], expected, rtol=1e-4, atol=1e-5)
    assert adata.uns["stmorph"]["embed"]["X_uni"]["mean"] == list(_encoders.IMAGENET_MEAN)
    # a checkpoint of a ViT without layer scale misses the ls1/ls2 gammas the UNI arguments create
    without_ls = {k: v for k, v in reference.state_dict().items() if ".ls" not in k}
    torch.save(without_ls, tmp_path / "no_ls.bin")
    n_gammas = 2 * len(reference.blocks)
    with pytest.raises(ShapeMismatchError, match=rf"{n_gammas} missing key\(s\)"):
        build_encoder("uni", weights=str(tmp_path / "no_ls.bin"))
    with pytest.raises(InvalidParameterError, match="MahmoodLab/UNI"):
        build_encoder("uni")


# ------------------------------------------------------------------------------------------- #
# Real-data evidence (HER2ST): the default embeddings carry expression information
# ------------------------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def her2st_eps(her2st_sdata):
    """EPS on the default embeddings and on the same embeddings with spots shuffled, per section."""
    out = {}
    for section in ("C2", "C3"):
        table = st.pp.extract_patches(her2st_sdata(section), copy=True, progress=False)
        st.tl.embed(table, progress=False)
        del table.obsm["patches"]
        rng = np.random.default_rng(0)
        table.obsm["X_shuffled"] = table.obsm["X_default"][rng.permutation(table.n_obs)]
        st.pp.prepare_expression(table)
        st.tl.eps(table, use_rep="X_default", progress=False)
        st.tl.eps(table, use_rep="X_shuffled", graph_key="shuffled", key_added="eps_shuffled", progress=False)
        out[section] = table
    return out


@pytest.mark.parametrize("section", ["C2", "C3"])
def test_default_embeddings_predict_expression_better_than_shuffled(her2st_eps, section):
    table = her2st_eps[section]
    sps, shuffled = table.uns["sps"]["sps"], table.uns["sps_eps_shuffled"]["sps"]
    assert sps >= 2 * shuffled, (sps, shuffled)


@pytest.mark.parametrize("section", ["C2", "C3"])
def test_ecm_genes_rank_in_the_top_quartile_of_eps(her2st_eps, section):
    eps = her2st_eps[section].var["eps"].dropna()
    top_quartile = eps.quantile(0.75)
    for gene in ("FN1", "SPARC", "MGP"):
        assert eps[gene] >= top_quartile, (gene, eps[gene], top_quartile)


def test_erbb2_is_image_predictable(her2st_eps):
    # measured here: top quartile on C3 (99.8th percentile), above the median on C2 (71st percentile)
    c2, c3 = (her2st_eps[s].var["eps"].dropna() for s in ("C2", "C3"))
    assert c3["ERBB2"] >= c3.quantile(0.75)
    assert c2["ERBB2"] >= c2.quantile(0.5)
