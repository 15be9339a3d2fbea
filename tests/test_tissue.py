"""obs["tissue_fraction"] of st.pp.extract_patches: a saturation + Otsu tissue mask, per patch window."""

from __future__ import annotations

import numpy as np
import pytest

import stmorph as st
from stmorph._anndata import tool_record
from stmorph.pp._tissue import saturation

PINK, GLASS = (190, 110, 160), (242, 242, 240)


def _block_slide(shape=(400, 600), block=(100, 300, 200, 500)):
    """Glass with one pink tissue block ``[y0:y1, x0:x1]``, with mild noise."""
    rng = np.random.default_rng(0)
    image = np.broadcast_to(np.array(GLASS, np.uint8), (*shape, 3)).copy()
    y0, y1, x0, x1 = block
    image[y0:y1, x0:x1] = PINK
    noise = rng.integers(-4, 5, size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def _fractions(image, centres, **options):
    table = st.pp.extract_patches((image, np.asarray(centres, float)), mpp=1.0, patch_size=40, target_mpp=1.0,
                                  progress=False, **options)  # fmt: skip
    return table.obs["tissue_fraction"].to_numpy(), table


def test_windows_on_tissue_glass_and_its_border_get_their_covered_share():
    image = _block_slide()
    # inside the block; on glass; straddling the block's left edge (x = 200) by half; a quarter at its corner
    centres = [(350, 200), (80, 50), (200, 200), (200, 100)]
    fraction, _ = _fractions(image, centres)
    np.testing.assert_allclose(fraction, [1.0, 0.0, 0.5, 0.25], atol=0.03)


def test_the_part_of_a_window_outside_the_image_counts_as_glass():
    image = _block_slide(block=(0, 400, 0, 600))  # all tissue but a glass strip is needed for Otsu
    image[:, 560:] = GLASS
    fraction, table = _fractions(image, [(0, 200), (300, 200)])
    np.testing.assert_allclose(fraction, [0.5, 1.0], atol=0.03)
    assert not table.obs["patch_complete"].iloc[0]


def test_a_blank_slide_has_no_tissue():
    fraction, table = _fractions(np.full((200, 200, 3), 240, np.uint8), [(100, 100)])
    assert fraction[0] == 0.0
    assert tool_record(table, "patches", "patches")["tissue_threshold"] >= 20


def test_memory_and_lazy_extraction_give_the_same_tissue_fraction(her2st_sdata):
    sdata = her2st_sdata("C2")
    memory = st.pp.extract_patches(sdata, copy=True, progress=False, patch_size=32)
    lazy = st.pp.extract_patches(sdata, copy=True, progress=False, patch_size=32, store="lazy")
    np.testing.assert_array_equal(memory.obs["tissue_fraction"], lazy.obs["tissue_fraction"])


def test_her2st_spots_lie_on_tissue_and_glass_windows_do_not(her2st_sdata):
    sdata = her2st_sdata("C2")
    image = np.moveaxis(np.asarray(sdata.images["he"].data), 0, -1)
    table = sdata.tables["table"]
    corners = np.array([[200.0, 200.0], [image.shape[1] - 200.0, 200.0]])  # the slide's top corners: glass
    centres = np.vstack([table.obsm["spatial"], corners])
    mpp = st._anndata.dataset_info(table)["mpp"]
    out = st.pp.extract_patches((image, centres), mpp=mpp, progress=False)
    fraction = out.obs["tissue_fraction"].to_numpy()
    assert np.median(fraction[: table.n_obs]) > 0.8
    assert (fraction[-2:] < 0.05).all()
    # an independent check: the share of each patch's own pixels above the recorded saturation threshold
    # (no hole filling) follows the fraction, and windows without tissue hold almost no coloured pixels
    threshold = tool_record(out, "patches", "patches")["tissue_threshold"]
    own = (saturation(out.obsm["patches"]) > threshold).mean(axis=(1, 2))
    assert np.corrcoef(own, fraction)[0, 1] > 0.7
    assert own[fraction == 0].max() < 0.1


@pytest.mark.parametrize("store", ["memory", "lazy"])
def test_tissue_fraction_survives_h5ad_round_trip(store, tmp_path):
    import anndata as ad

    _, table = _fractions(_block_slide(), [(350, 200)], store=store)
    table.write_h5ad(tmp_path / "t.h5ad")
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    np.testing.assert_array_equal(back.obs["tissue_fraction"], table.obs["tissue_fraction"])
