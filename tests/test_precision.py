"""``precision=`` of ``st.tl.embed``: int8 / bf16 features near float32; bad values refused."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from _adata_compare import assert_adata_equal

import stmorph as st
from stmorph.errors import CheckpointMismatchError, InvalidParameterError
from stmorph.models._encoders import Encoder, with_precision
from stmorph.models._pooling import PooledViT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENCODER = "precision_test_vit"


def _tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)  # no layer scale: every block changes the tokens, so quantisation errors add up
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=64).eval()


@pytest.fixture(scope="module", autouse=True)
def _registered():
    st.tl.register_encoder(ENCODER, _tiny_vit(), input_size=64, overwrite=True)


@pytest.fixture(scope="module")
def table():
    sim = st.datasets.simulate(60, 12, n_planted=3, random_state=0, spot_px=32)
    return st.pp.extract_patches(sim, patch_size=64, progress=False, copy=True)


def _features(table, precision: str) -> np.ndarray:
    out = st.tl.embed(table, model=ENCODER, precision=precision, device="cpu", progress=False, copy=True)
    assert out.uns["stmorph"]["embed"][f"X_{ENCODER}"]["precision"] == ("fp32" if precision == "auto" else precision)
    return out.obsm[f"X_{ENCODER}"]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_low_precision_features_keep_cosine_099_to_float32_features(table, precision):
    exact = _features(table, "fp32")
    low = _features(table, precision)
    assert low.dtype == np.float32 and low.shape == exact.shape
    assert not np.array_equal(low, exact)  # the arithmetic did change
    cos = _cosine(low, exact)
    assert cos.mean() >= 0.99 and cos.min() >= 0.95
    # what a cosine of 0.99 is worth here: the features of *other* patches are much further apart,
    # measured on centred features (a random ViT gives every patch a large shared component)
    centre = exact.mean(0)
    own = _cosine(low - centre, exact - centre).mean()
    other = _cosine(np.roll(low, 1, axis=0) - centre, exact - centre).mean()
    assert own >= 0.9 and other <= own - 0.5


def test_auto_is_float32_on_the_cpu(table):
    np.testing.assert_array_equal(_features(table, "auto"), _features(table, "fp32"))


def test_int8_quantises_the_linear_layers_of_a_copy():
    vit = _tiny_vit()
    enc = Encoder(vit, dim=192, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=64, name="vit")
    fast = with_precision(enc, "int8", torch.device("cpu"))
    kinds = {type(m).__module__ for m in fast.module.modules() if type(m).__name__ == "Linear"}
    assert kinds == {"torch.ao.nn.quantized.dynamic.modules.linear"}
    assert all(type(m) is torch.nn.Linear for m in vit.modules() if type(m).__name__ == "Linear")  # untouched


def test_fp32_turns_off_a_presets_cuda_autocast_without_changing_it():
    pooled = PooledViT(_tiny_vit(), "cls", precision="fp16")
    enc = Encoder(pooled, dim=192, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=64, precision="fp16")
    plain = with_precision(enc, "fp32", torch.device("cuda"))  # nothing runs: the device only decides
    assert plain.precision == "fp32" and plain.module.autocast_dtype is None
    assert pooled.autocast_dtype == torch.float16 and enc.precision == "fp16"
    assert with_precision(enc, "auto", torch.device("cuda")) is enc  # the model card's autocast


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": ENCODER, "precision": "fp16"}, "precision='fp16' is not valid"),
        ({"model": ENCODER, "precision": None}, "precision=None is not valid"),
        ({"model": "default", "precision": "int8"}, "has none"),
        ({"model": "hed", "precision": "bf16"}, "only precision='auto'"),
    ],
)
def test_bad_precision_is_refused_by_name_and_changes_nothing(table, options, message):
    before = table.copy()
    with pytest.raises(InvalidParameterError, match=message):
        st.tl.embed(table, device="cpu", progress=False, **options)
    assert_adata_equal(table, before)


def test_int8_off_the_cpu_is_refused():
    enc = Encoder(_tiny_vit(), dim=192, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=64, name="vit")
    with pytest.raises(InvalidParameterError, match="CPU only"):
        with_precision(enc, "int8", torch.device("cuda"))


def test_a_checkpoint_resumes_only_at_its_precision(table, tmp_path):
    run = dict(model=ENCODER, device="cpu", progress=False, copy=True, checkpoint=tmp_path / "ckpt", batch_size=16)
    st.tl.embed(table, precision="int8", **run)
    with pytest.raises(CheckpointMismatchError, match="precision"):
        st.tl.embed(table, precision="fp32", resume=True, **run)


def test_embed_cohort_passes_precision_through():
    slides = [st.datasets.simulate(20, 5, n_planted=2, random_state=i, spot_px=32) for i in range(2)]
    out = st.tl.embed_cohort(slides, model=ENCODER, precision="int8", device="cpu", copy=True)
    assert [t.uns["stmorph"]["embed"][f"X_{ENCODER}"]["precision"] for t in out] == ["int8", "int8"]
