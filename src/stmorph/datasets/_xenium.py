"""A simulated Xenium slide in the layout ``spatialdata_io.xenium`` reads, with a post-run H&E.

For examples and benchmarks at any number of cells (the H&E is a lazy dask array, painted chunk by
chunk when read). The layout is the reader's (spatialdata-io 0.7, ``cells_as_circles=True,
aligned_images=True``): ``images["he_image"]`` (RGB, an ``Affine`` to ``"global"`` from H&E pixels
to Xenium pixels of 0.2125 µm), ``images["morphology_focus"]`` (DAPI, uint16, identity),
``shapes["cell_circles"]`` and ``tables["table"]`` (``obsm["spatial"]`` in µm, ``Scale(1/0.2125)`` to
``"global"``) and ``sdata.attrs["spatialdata_io_reader"] == "xenium"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._keys import Key
from .._validation import check_int, check_range, check_seed

if TYPE_CHECKING:
    from spatialdata import SpatialData

XENIUM_PIXEL_UM = 0.2125
"""µm per pixel of the Xenium morphology images (``"global"``)."""
_PINK = np.array([235.0, 170.0, 200.0])
_PURPLE = np.array([120.0, 70.0, 160.0])
_N_WAVES = 8
_STRIDE = 4


def _field(rng: np.random.Generator, wavelength_um: float):
    """A smooth random field over µm (a sum of plane waves), standard deviation 1."""
    angles = rng.uniform(0, 2 * np.pi, _N_WAVES)
    k = 2 * np.pi / wavelength_um * np.column_stack([np.cos(angles), np.sin(angles)])
    phase = rng.uniform(0, 2 * np.pi, _N_WAVES)

    def value(xy: np.ndarray) -> np.ndarray:
        return np.sqrt(2.0 / _N_WAVES) * np.cos(xy @ k.T + phase).sum(axis=-1)

    return value


def _he_to_um(mpp: float, angle_deg: float, offset_um: float) -> np.ndarray:
    """3 × 3 affine from H&E pixels to µm: the pixel size, a rotation and a shift."""
    a = np.deg2rad(angle_deg)
    rotation = mpp * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.vstack([np.column_stack([rotation, [offset_um, offset_um]]), [0.0, 0.0, 1.0]])


def _painted(shape: tuple[int, int], he_to_um: np.ndarray, morph, seed: int, chunk: int):
    """The H&E as a ``(3, H, W)`` uint8 dask array: colour from the ``morph`` field, pixel noise per chunk."""
    import dask.array as da

    def block(block_info=None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
        yy, xx = np.mgrid[y0:y1:_STRIDE, x0:x1:_STRIDE]  # the field is smooth: colour every few pixels
        xy = np.stack([xx + _STRIDE / 2, yy + _STRIDE / 2], axis=-1) @ he_to_um[:2, :2].T + he_to_um[:2, 2]
        mix = 1.0 / (1.0 + np.exp(-1.5 * morph(xy)))
        colour = (_PINK + (_PURPLE - _PINK) * mix[..., None]).astype(np.int16)
        colour = colour.repeat(_STRIDE, axis=0).repeat(_STRIDE, axis=1)[: y1 - y0, : x1 - x0]
        rng = np.random.default_rng([seed, y0, x0])
        rgb = colour + rng.integers(-10, 11, colour.shape, dtype=np.int16)  # pixel noise
        return np.moveaxis(np.clip(rgb, 0, 255).astype(np.uint8), -1, 0)

    chunks = ((3,), *(tuple(min(chunk, n - i) for i in range(0, n, chunk)) for n in shape))
    return da.map_blocks(block, chunks=chunks, dtype=np.uint8)


def simulate_xenium(
    n_cells: int = 400,
    n_genes: int = 12,
    *,
    cells_per_mm2: float = 4000.0,
    wavelength_um: float = 150.0,
    mpp: float = 0.5,
    angle_deg: float = 5.0,
    random_state: int = 0,
    chunk: int = 512,
) -> SpatialData:
    """Simulate a Xenium slide with its aligned post-run H&E, as ``spatialdata_io.xenium`` reads one.

    What is planted: cells uniform over a square at ``cells_per_mm2``; two independent smooth fields
    of ``wavelength_um`` over the slide, ``morph`` (which colours the H&E: eosin pink to haematoxylin
    purple) and ``space`` (not in the image). Of the genes, the first third follow ``morph``
    (``var["planted"] == "image"``), the second third ``space`` (``"spatial"``: spatially smooth but
    invisible in the H&E, what ``exclude_radius`` controls for), the rest are noise; counts are
    ``Poisson(2 · exp(field))``. The H&E (``mpp`` µm/px) is rotated by ``angle_deg`` against the
    Xenium frame; its alignment is the affine to ``"global"``.

    Parameters
    ----------
    n_cells, n_genes
        Cells and genes.
    cells_per_mm2
        Cell density (tissue: 2000–6000 cells per mm²).
    wavelength_um
        Scale of the two fields.
    mpp
        µm per pixel of the H&E.
    angle_deg
        Rotation of the H&E against the Xenium frame.
    random_state
        Random seed.
    chunk
        Chunk side of the lazy H&E.

    Returns
    -------
    SpatialData with ``images["he_image"]``, ``images["morphology_focus"]``, ``shapes["cell_circles"]``
    and ``tables["table"]`` (cells × genes counts, ``obsm["spatial"]`` in µm, ``var["planted"]``).

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate_xenium(200, random_state=0)
    >>> sdata.tables["table"].shape, sdata.attrs["spatialdata_io_reader"]
    ((200, 12), 'xenium')
    """
    import dask.array as da
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Affine, Identity, Scale

    check_int(n_cells, "n_cells", low=1)
    check_int(n_genes, "n_genes", low=3)
    for value, name in ((cells_per_mm2, "cells_per_mm2"), (wavelength_um, "wavelength_um"), (mpp, "mpp")):
        check_range(value, name, low=0)
    check_int(chunk, "chunk", low=64)
    rng = np.random.default_rng(check_seed(random_state))
    side_um = float(np.sqrt(n_cells / cells_per_mm2) * 1000.0)
    margin_um = 60.0
    cells = margin_um + rng.uniform(0, side_um, (n_cells, 2))
    morph, space = _field(rng, wavelength_um), _field(rng, wavelength_um)
    third = n_genes // 3
    drive = np.zeros((n_cells, n_genes))
    drive[:, :third] = morph(cells)[:, None]
    drive[:, third : 2 * third] = space(cells)[:, None]
    counts = sparse.csr_matrix(rng.poisson(2.0 * np.exp(drive)).astype(np.float32))
    planted = np.array(["image"] * third + ["spatial"] * third + ["none"] * (n_genes - 2 * third))
    extent_um = side_um + 2 * margin_um
    diagonal_px = int(np.ceil(extent_um * np.sqrt(2) / mpp))
    he_to_um = _he_to_um(mpp, angle_deg, 0.0)
    centre_shift = np.array([extent_um / 2, extent_um / 2]) - he_to_um[:2, :2] @ np.full(2, diagonal_px / 2)
    he_to_um[:2, 2] = centre_shift  # the H&E's centre on the slide's centre, the slide inside it
    he = _painted((diagonal_px, diagonal_px), he_to_um, morph, int(rng.integers(2**31)), chunk)
    um_to_global = np.diag([1 / XENIUM_PIXEL_UM, 1 / XENIUM_PIXEL_UM, 1.0])
    alignment = Affine(um_to_global @ he_to_um, input_axes=("x", "y"), output_axes=("x", "y"))
    dapi_px = int(np.ceil(extent_um / XENIUM_PIXEL_UM))
    images = {
        "he_image": Image2DModel.parse(he, dims=("c", "y", "x"), c_coords=["r", "g", "b"],
                                       transformations={"global": alignment}),
        "morphology_focus": Image2DModel.parse(
            da.zeros((1, dapi_px, dapi_px), dtype=np.uint16, chunks=(1, 4096, 4096)), dims=("c", "y", "x"),
            c_coords=["DAPI"], transformations={"global": Identity()},
        ),
    }  # fmt: skip
    ids = pd.Index([f"cell{i:07d}-1" for i in range(n_cells)], name="cell_id")
    area = rng.uniform(40.0, 140.0, n_cells)
    micron = {"global": Scale([1 / XENIUM_PIXEL_UM, 1 / XENIUM_PIXEL_UM], axes=("x", "y"))}
    circles = ShapesModel.parse(cells, geometry=0, radius=np.sqrt(area / np.pi), index=ids, transformations=micron)
    obs = pd.DataFrame({"cell_id": ids.to_numpy(), "cell_area": area, "region": "cell_circles"}, index=ids.rename(None))
    obs["region"] = obs["region"].astype("category")
    var = pd.DataFrame({"planted": planted}, index=pd.Index([f"gene{g}" for g in range(n_genes)]))
    table = AnnData(counts, obs=obs, var=var)
    table.obsm[Key.obsm.spatial] = cells
    table = TableModel.parse(table, region="cell_circles", region_key="region", instance_key="cell_id")
    sdata = SpatialData(images=images, shapes={"cell_circles": circles}, tables={"table": table})
    sdata.attrs["spatialdata_io_reader"] = "xenium"
    return sdata
