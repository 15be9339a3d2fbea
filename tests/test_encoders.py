"""Foundation-model presets, hub loading (stubbed, offline), Dinov2 key conversion and channels-last CNNs."""

from __future__ import annotations

import dataclasses
import json

import anndata as ad
import numpy as np
import pytest
import timm
import torch

import stmorph as st
from stmorph.errors import InvalidParameterError, ShapeMismatchError
from stmorph.models import _encoders, _presets
from stmorph.models._encoders import build_encoder, patches_to_tensor, timm_arguments
from stmorph.models._pooling import PooledViT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Parameter counts published on the model cards / papers (millions), and the tokens before the patch tokens
CARD = {
    "uni": (1024, 303, 1),
    "uni2-h": (1536, 681, 9),
    "virchow2": (2560, 632, 5),
    "h-optimus-0": (1536, 1134, 5),
    "h-optimus-1": (1536, 1134, 5),
    "phikon-v2": (1024, 303, 1),
    "prov-gigapath": (1536, 1134, 1),
}


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)


def _meta_network(preset):
    args = timm_arguments(preset.arch)
    with torch.device("meta"):
        return timm.create_model(args.pop("model_name"), pretrained=False, **args)


@pytest.mark.parametrize("name", sorted(_presets.PRESETS))
def test_every_preset_has_the_model_card_architecture_and_output(name):
    preset = _presets.PRESETS[name]
    net = _meta_network(preset)  # no weights are materialised
    with torch.device("meta"):
        out = PooledViT(net, preset.pooling).eval()(torch.zeros(2, 3, preset.input_size, preset.input_size))
    assert tuple(out.shape) == (2, preset.dim)
    assert name in st.tl.list_encoders()
    if name == "h0-mini":  # ViT-B/14 with 4 registers, SwiGLU MLP
        assert (net.embed_dim, len(net.blocks), net.num_prefix_tokens) == (768, 12, 5)
        assert type(net.blocks[0].mlp).__name__ == "GluMlp" and isinstance(net.blocks[0].mlp.act, torch.nn.SiLU)
        return
    dim, millions, prefix = CARD[name]
    assert preset.dim == dim and net.num_prefix_tokens == prefix
    assert abs(sum(p.numel() for p in net.parameters()) / 1e6 - millions) / millions < 0.01


def test_pooling_and_normalisation_follow_the_model_cards():
    bioptimus = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))  # H-optimus-0 card
    for name, preset in _presets.PRESETS.items():
        expected = (
            bioptimus if name.startswith(("h-optimus", "h0")) else (_presets.IMAGENET_MEAN, _presets.IMAGENET_STD)
        )
        assert (preset.mean, preset.std) == expected, name
        assert preset.pooling == ("cls+mean" if name in ("virchow2", "h0-mini") else "cls"), name
        assert preset.precision in _presets.PRECISIONS
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, reg_tokens=4, no_embed_class=True).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        tokens = vit.forward_features(x)  # (2, 1 + 4 + 196, 192)
        pooled = PooledViT(vit, "cls+mean").eval()(x)
        cls = PooledViT(vit, "cls").eval()(x)
    torch.testing.assert_close(pooled, torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=1))
    torch.testing.assert_close(cls, vit(x))  # timm's own class-token head


def _small(monkeypatch, name: str, **arch) -> _presets.Preset:
    """Shrink preset ``name`` to a ViT-Ti of the same family (the test stays fast); returns the shrunk preset."""
    preset = _presets.PRESETS[name]
    dim = arch.pop("dim", 192)
    small = dataclasses.replace(preset, arch={**preset.arch, **arch}, dim=dim)
    monkeypatch.setitem(_presets.PRESETS, name, small)
    return small


def test_virchow2_local_checkpoint_end_to_end(patches, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    small = _small(monkeypatch, "virchow2", model_name="vit_tiny_patch16_224", mlp_ratio=4.0, dim=384)
    args = timm_arguments(small.arch)
    torch.manual_seed(0)
    reference = timm.create_model(args.pop("model_name"), **args).eval()
    save_file(reference.state_dict(), str(tmp_path / "virchow2.safetensors"))
    adata = ad.AnnData(obs={"i": range(len(patches))})
    adata.obsm["patches"] = patches
    st.tl.embed(adata, model="virchow2", weights=tmp_path / "virchow2.safetensors", progress=False)
    enc = _encoders.Encoder(reference, 384, small.mean, small.std, 224)
    with torch.inference_mode():
        tokens = reference(patches_to_tensor(patches, enc))  # global_pool="" returns every token, as on the card
    expected = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1).numpy()
    np.testing.assert_allclose(adata.obsm["X_virchow2"], expected, rtol=1e-4, atol=1e-5)
    assert adata.uns["stmorph"]["embed"]["X_virchow2"]["dim"] == 384


def _hf_dinov2_naming(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ViT state dict written the way transformers' Dinov2Model names it (the inverse mapping, by hand)."""
    out = {"embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1])}
    top = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}  # fmt: skip
    block = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.output.dense",
             "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}  # fmt: skip
    for key, tensor in state.items():
        if key in top:
            out[top[key]] = tensor
            continue
        _, i, rest = key.split(".", 2)
        if rest.startswith("attn.qkv."):
            for part, name in zip(tensor.chunk(3, dim=0), ("query", "key", "value")):
                out[f"encoder.layer.{i}.attention.attention.{name}.{rest.rsplit('.', 1)[1]}"] = part
            continue
        layer = next(k for k in block if rest.startswith(k))
        out[f"encoder.layer.{i}.{block[layer]}{rest[len(layer) :]}"] = tensor
    return out


def test_phikon_v2_reads_a_transformers_checkpoint(patches, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    small = _small(monkeypatch, "phikon-v2", model_name="vit_tiny_patch16_224")
    args = timm_arguments(small.arch)
    torch.manual_seed(1)
    reference = timm.create_model(args.pop("model_name"), **args).eval()
    save_file(_hf_dinov2_naming(reference.state_dict()), str(tmp_path / "model.safetensors"))
    enc = build_encoder("phikon-v2", weights=str(tmp_path / "model.safetensors"))
    x = patches_to_tensor(patches, enc)
    with torch.inference_mode():
        torch.testing.assert_close(enc.module(x), reference(x))
    broken = _hf_dinov2_naming(reference.state_dict())
    del broken["encoder.layer.0.attention.attention.key.weight"]
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ShapeMismatchError, match="block 0 has attention"):
        build_encoder("phikon-v2", weights=str(tmp_path / "broken.safetensors"))


@pytest.mark.slow  # builds a full-size ViT
def test_a_wrong_weights_file_names_the_first_bad_tensor(tmp_path):
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ShapeMismatchError, match=r"uni \(.*tiny\.pt\).*first bad tensor: cls_token: checkpoint"):
        build_encoder("uni", weights=str(tmp_path / "tiny.pt"))
    with pytest.raises(InvalidParameterError, match=r"huggingface\.co/paige-ai/Virchow2.*weights='hub'"):
        build_encoder("virchow2")


TINY_REG4 = {"model_name": "vit_tiny_patch16_224", "num_classes": 0, "reg_tokens": 4, "no_embed_class": True}


@pytest.fixture
def stub_hub(tmp_path, monkeypatch):
    """timm's hub download stubbed: config.json of a ViT-Ti with 4 registers, random weights; records the requests."""
    requests = []
    torch.manual_seed(2)
    served = {"state": timm.create_model(**TINY_REG4).state_dict()}
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 0, "num_features": 192,
              "model_args": {"reg_tokens": 4, "no_embed_class": True},
              "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.1, 0.2, 0.3],
                                 "std": [0.5, 0.5, 0.5]}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))

    def config_file(model_id, filename, **_):
        requests.append((model_id, filename))
        return str(tmp_path / "config.json")

    def weights(model_id, *args, **_):
        requests.append((model_id, "weights"))
        return dict(served["state"])

    monkeypatch.setattr(timm.models._hub, "download_from_hf", config_file)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", weights)
    return requests, served


def test_hub_path_passes_the_card_arguments_to_timm(stub_hub, patches):
    requests, served = stub_hub
    swiglu = {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU}
    served["state"] = timm.create_model(**TINY_REG4, **swiglu).state_dict()  # what the card's arguments build
    enc = build_encoder("h0-mini", weights="hub")  # card: hf-hub name + mlp_layer/act_layer
    assert {r[0] for r in requests} == {"bioptimus/H0-mini"}
    mlp = enc.module.backbone.blocks[0].mlp
    assert type(mlp).__name__ == "GluMlp" and isinstance(mlp.act, torch.nn.SiLU)
    assert enc.mean == _presets.BIOPTIMUS_MEAN and enc.precision == "fp16"


def test_hf_hub_names_are_tried_on_the_hub(stub_hub, patches):
    requests, _ = stub_hub
    adata = ad.AnnData(obs={"i": range(len(patches))})
    adata.obsm["patches"] = patches
    st.tl.embed(adata, model="hf-hub:someone/tiny-reg4", progress=False)  # the name implies weights="hub"
    assert requests[0] == ("someone/tiny-reg4", "config.json")
    params = adata.uns["stmorph"]["embed"]["X_someone_tiny-reg4"]
    assert params["mean"] == [0.1, 0.2, 0.3] and params["dim"] == 192  # the hub config's, not ImageNet's


def test_an_offline_hub_request_is_a_clear_error_without_network(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match=r"Hugging Face hub \(hf-hub:bioptimus/H-optimus-0\).*weights=<its path>"):
        build_encoder("h-optimus-0", weights="hub")
    with pytest.raises(ConnectionError, match=r"hub \(owkin/phikon-v2\)"):
        build_encoder("phikon-v2", weights="hub")


def test_cnn_encoders_run_channels_last_with_the_same_features(patches):
    enc = build_encoder("default")
    assert enc.channels_last and enc.module.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    x = patches_to_tensor(patches, enc)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = enc.module(x)
        plain = enc.module.to(memory_format=torch.contiguous_format)(x.contiguous())
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    vit = _encoders.Encoder(None, 0, (0.5,) * 3, (0.5,) * 3, 224)
    assert patches_to_tensor(patches, vit).is_contiguous()


def test_folded_batch_norms_give_the_same_features_and_leave_the_encoder_alone(patches):
    enc = build_encoder("default")
    before = {k: v.clone() for k, v in enc.module.state_dict().items()}
    fast = _encoders.fold_batchnorm(enc)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.module.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in enc.module.modules()) == 49  # the original is intact
    assert all(torch.equal(v, before[k]) for k, v in enc.module.state_dict().items())
    x = patches_to_tensor(patches, enc)
    with torch.inference_mode():
        torch.testing.assert_close(fast.module(x), enc.module(x), rtol=1e-4, atol=1e-4)
    enc.module.train()
    assert _encoders.fold_batchnorm(enc) is enc  # a module being trained keeps its batch norms


class _NormBeforeConv(torch.nn.Module):
    """Children listed conv → norm, but the norm runs first: folding them in that order would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(3)
        self.norm.running_mean.fill_(0.4)
        self.norm.running_var.fill_(2.0)

    def forward(self, x):
        return self.conv(self.norm(x)).mean(dim=(2, 3))


def test_a_module_whose_children_are_not_in_forward_order_is_not_folded():
    enc = _encoders.Encoder(_NormBeforeConv().eval(), 3, (0.5,) * 3, (0.5,) * 3, 16)
    assert _encoders.fold_batchnorm(enc) is enc


def test_embed_uses_the_folded_encoder_with_the_same_embeddings(patches):
    adata = ad.AnnData(np.zeros((len(patches), 1), np.float32), obsm={"patches": patches})
    st.tl.embed(adata, progress=False)
    enc = build_encoder("default")
    with torch.inference_mode():
        plain = enc.module(patches_to_tensor(patches, enc)).numpy()
    np.testing.assert_allclose(adata.obsm["X_default"], plain, rtol=1e-4, atol=1e-4)
