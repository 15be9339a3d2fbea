"""Stain normalisation in st.tl.embed (torchstain's Macenko and Reinhard), on the shipped HER2ST sections."""

from __future__ import annotations

import numpy as np
import pytest
import torchstain.numpy.normalizers as ts
from _adata_compare import assert_adata_equal

import stmorph as st
from stmorph.errors import InputTypeError, InvalidParameterError

SPOTS = slice(0, 24)


@pytest.fixture(scope="module")
def c2(her2st_sdata):
    """24 C2 spots with 64 px patches at 1 µm/px, and the first one replaced by blank glass."""
    table = st.pp.extract_patches(her2st_sdata("C2"), patch_size=64, target_mpp=1.0, copy=True, progress=False)
    table = table[SPOTS].copy()
    table.obsm["patches"][0] = 255
    return table


@pytest.fixture(scope="module")
def c3_reference(her2st_sdata):
    """Tissue patches of another section, the reference the normalisers are fitted on."""
    table = st.pp.extract_patches(her2st_sdata("C3"), patch_size=64, target_mpp=1.0, copy=True, progress=False)
    return table.obsm["patches"][np.argsort(-table.obs["tissue_fraction"].to_numpy())[:16]]


def _by_hand(patches: np.ndarray, normalizer, **kwargs) -> np.ndarray:
    """Each patch through torchstain itself; the blank patch (no stain to estimate) as it is."""
    out = patches.copy()
    for i in range(1, len(patches)):
        result = normalizer.normalize(patches[i], **kwargs)
        out[i] = result[0] if isinstance(result, tuple) else result
    return out


def test_macenko_embeds_the_patches_torchstain_normalises_and_records_the_reference(c2):
    table = c2.copy()
    st.tl.embed(table, model="hed", stain_norm="macenko", progress=False)
    expected = c2.copy()
    expected.obsm["patches"] = _by_hand(c2.obsm["patches"], ts.NumpyMacenkoNormalizer(), stains=False)
    st.tl.embed(expected, model="hed", progress=False)
    np.testing.assert_array_equal(table.obsm["X_hed"], expected.obsm["X_hed"])
    plain = st.tl.embed(c2, model="hed", progress=False, copy=True)
    assert np.abs(plain.obsm["X_hed"][1:] - table.obsm["X_hed"][1:]).max() > 1e-3  # it did change the tissue
    np.testing.assert_array_equal(plain.obsm["X_hed"][0], table.obsm["X_hed"][0])  # blank glass left as it is
    record = table.uns["stmorph"]["embed"]["X_hed"]["stain_norm"]
    assert record["method"] == "macenko" and record["reference"] == "torchstain default"
    assert record["library"].startswith("torchstain ") and record["n_unchanged"] == 1
    np.testing.assert_allclose(record["HERef"], ts.NumpyMacenkoNormalizer().HERef)
    assert "stain_norm" not in plain.uns["stmorph"]["embed"]["X_hed"]  # off by default


def test_reinhard_fitted_on_another_section_is_the_same_lazily_read(c2, c3_reference, her2st_sdata, tmp_path):
    fitted = ts.NumpyReinhardNormalizer()
    fitted.fit(c3_reference.reshape(-1, 64, 3))
    expected = c2.copy()
    expected.obsm["patches"] = _by_hand(c2.obsm["patches"], fitted)
    st.tl.embed(expected, model="hed", progress=False)
    sdata = her2st_sdata("C2")
    lazy = st.pp.extract_patches(sdata, patch_size=64, target_mpp=1.0, store="lazy", copy=True, progress=False)
    lazy = lazy[SPOTS].copy()
    st.tl.embed(lazy, model="hed", image=sdata, stain_norm="reinhard", stain_reference=c3_reference,
                checkpoint=tmp_path / "ckpt", batch_size=5, num_workers=2, progress=False)  # fmt: skip
    np.testing.assert_array_equal(lazy.obsm["X_hed"][1:], expected.obsm["X_hed"][1:])  # spot 0 is tissue here
    record = lazy.uns["stmorph"]["embed"]["X_hed"]["stain_norm"]
    np.testing.assert_allclose(record["target_means"], fitted.target_means)
    np.testing.assert_allclose(record["target_stds"], fitted.target_stds)
    with pytest.raises(st.errors.CheckpointMismatchError, match="stain_norm"):  # another normalisation
        st.tl.embed(lazy, model="hed", image=sdata, checkpoint=tmp_path / "ckpt", resume=True, batch_size=5,
                    key_added="other", progress=False)  # fmt: skip


def test_bad_stain_options_are_named_and_leave_the_table_unchanged(c2):
    table = c2.copy()
    before = table.copy()
    with pytest.raises(InvalidParameterError, match="stain_norm"):
        st.tl.embed(table, model="hed", stain_norm="vahadane", progress=False)
    with pytest.raises(InvalidParameterError, match="used only with stain_norm"):
        st.tl.embed(table, model="hed", stain_reference=c2.obsm["patches"], progress=False)
    with pytest.raises(InvalidParameterError, match="needs stain_reference"):
        st.tl.embed(table, model="hed", stain_norm="reinhard", progress=False)
    with pytest.raises(InvalidParameterError, match="stained pixels"):
        st.tl.embed(table, model="hed", stain_norm="macenko", stain_reference=c2.obsm["patches"][:1], progress=False)
    with pytest.raises(InputTypeError, match="stain_reference must be uint8"):
        st.tl.embed(table, model="hed", stain_norm="macenko", stain_reference=np.zeros((8, 8, 3)), progress=False)
    with pytest.raises(InvalidParameterError, match="stain_norm="):
        st.tl.embed(table, model="hed", stain_norm="macenko", strategy="dense", progress=False)
    assert_adata_equal(table, before)
