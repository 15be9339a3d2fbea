"""Assemble the SpatialData layout every stmorph loader returns.

Layout (shared by :func:`~stmorph.datasets.her2st` and :func:`~stmorph.datasets.simulate`):

- ``images["he"]``: RGB uint8, dims ``(c, y, x)``.
- ``shapes["spots"]``: circles at the spot centres (image pixels), radius in image pixels.
- ``tables["table"]``: AnnData annotating ``"spots"`` (``obs["region"]``, ``obs["spot_id"]``),
  with ``obsm["spatial"]`` = spot centre in image pixels, ``x`` = column, ``y`` = row.

Every element has two coordinate systems: ``"global"`` (identity, image pixels) and ``"um"``
(a scale by the pixel size), which is how the pixel size in µm is recorded; read it back with
:func:`stmorph._image.image_mpp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._image import MICRON_CS
from .._keys import Key

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

IMAGE_KEY = "he"
SHAPES_KEY = "spots"
TABLE_KEY = "table"


def _transformations(mpp: float) -> dict:
    from spatialdata.transformations import Identity, Scale

    return {"global": Identity(), MICRON_CS: Scale([mpp, mpp], axes=("y", "x"))}


def build_spatialdata(image: np.ndarray, table: AnnData, mpp: float, spot_radius_px: float) -> SpatialData:
    """Wrap an ``(H, W, 3)`` uint8 image and a table with ``obsm["spatial"]`` as SpatialData.

    Parameters
    ----------
    image
        RGB image, ``(H, W, 3)`` uint8.
    table
        Spots × genes AnnData with ``obsm["spatial"]`` (x = column, y = row, image pixels).
    mpp
        Pixel size of ``image`` in µm.
    spot_radius_px
        Spot radius in image pixels.

    Returns
    -------
    SpatialData with elements ``images["he"]``, ``shapes["spots"]`` and ``tables["table"]``.
    """
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel

    tf = _transformations(mpp)
    img = Image2DModel.parse(
        np.moveaxis(image, -1, 0), dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations=tf
    )
    coords = np.asarray(table.obsm[Key.obsm.spatial], dtype=np.float64)
    shapes = ShapesModel.parse(
        coords,
        geometry=0,
        radius=np.full(len(coords), float(spot_radius_px)),
        index=pd.Index(table.obs_names, name="spot_id"),
        transformations=_transformations(mpp),
    )
    table = table.copy()
    table.obs["region"] = pd.Categorical([SHAPES_KEY] * table.n_obs)
    table.obs["spot_id"] = table.obs_names.to_numpy()
    table = TableModel.parse(table, region=SHAPES_KEY, region_key="region", instance_key="spot_id")
    return SpatialData(images={IMAGE_KEY: img}, shapes={SHAPES_KEY: shapes}, tables={TABLE_KEY: table})
