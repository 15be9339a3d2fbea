"""Xenium with its post-run H&E: cells and pseudo-spots of a ``spatialdata_io.xenium`` SpatialData.

What the reader (spatialdata-io 0.7) gives, and how it is read here:

- the H&E is an RGB image (``images["he_image"]``) whose transformation to ``"global"`` is the
  alignment CSV: an affine from H&E pixels to Xenium morphology pixels (0.2125 µm). Without the CSV
  the reader sets the identity, which would place the cells wrongly: refused
  (:class:`~stmorph.errors.AlignmentError`). The DAPI morphology images (``morphology_focus``,
  ``morphology_mip``) are single- or four-channel fluorescence, never taken for the H&E;
- the cell table's ``obsm["spatial"]`` holds the cell centroids in µm, as do the cells' shapes
  and transcripts, which map to ``"global"`` by ``Scale(1 / pixel_size)``;
- the pixel size is stored nowhere else: µm → Xenium pixels → H&E pixels is the product of that
  scale and the inverse alignment, and the H&E's µm per pixel is that product's scale.

:func:`pseudo_spots` pools the cells on a square grid as HEST-1k pools Xenium transcripts
(``hest.readers.pool_transcripts_xenium``): squares of ``size_um`` on the H&E's pixel axes,
starting at the smallest H&E coordinate of the data, empty squares dropped, names ``"RRRxCCC"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import commit_outputs, read_uns
from .._keys import Key
from .._logging import logger, warn_user
from .._tables import is_spatialdata
from .._validation import (
    InputTypeError,
    InvalidParameterError,
    StmorphKeyError,
    check_agree,
    check_bool,
    check_range,
    checks_keys,
    format_keys,
)
from ..errors import AlignmentError, OutOfImageError, ShapeMismatchError
from ._sources import PatchSource, _affine, _scale, choose_table, image_source, one_key, pyramid_levels
from ._windows import check_inside

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

XENIUM_READER = "xenium"
"""``sdata.attrs["spatialdata_io_reader"]`` of a SpatialData read by ``spatialdata_io.xenium``."""
CELL_REGIONS = ("cell_circles", "cell_labels")
"""What ``spatialdata_io.xenium`` makes the cell table annotate (``cells_as_circles=True`` / ``False``)."""
CELL_PATCH_UM = 48.0
"""Default tile side (µm) for one patch per cell: about four cell diameters (Xenium cells are
8–13 µm across, areas 50–130 µm²), so each patch holds the cell and its immediate neighbours; cut
in 224 px that is 0.21 µm/px, the pixel size of a 40× H&E scan, so the cell is not upsampled beyond
the scan's own resolution."""
PSEUDO_SPOT_UM = 100.0
"""Default pseudo-spot side (µm), HEST-1k's ``spot_size_um`` (not 55 µm)."""
_TOOL = "pseudo_spots"
CELL_DRAW_UM = 10.0
"""Diameter a cell is drawn with by ``st.pl.spatial`` (a typical cell's)."""


def is_xenium(data: Any) -> bool:
    """Whether ``data`` is a SpatialData of ``spatialdata_io.xenium`` (its reader mark, else a cell table's region).

    Examples
    --------
    >>> import stmorph as st
    >>> is_xenium(st.datasets.simulate(20, 5, n_planted=1))
    False
    """
    if not is_spatialdata(data):
        return False
    if data.attrs.get("spatialdata_io_reader") == XENIUM_READER:
        return True
    return any(set(_regions(table)) & set(CELL_REGIONS) for table in data.tables.values())


def _regions(table: AnnData) -> list[str]:
    region = table.uns.get("spatialdata_attrs", {}).get("region")
    return [region] if isinstance(region, str) else [str(r) for r in region or []]


def _is_pseudo_spots(table: AnnData) -> bool:
    return bool(read_uns(table, Key.uns.tool(_TOOL)))


def _table_key(sdata: SpatialData, table_key: str | None) -> str:
    if not sdata.tables:
        raise StmorphKeyError(
            "the Xenium SpatialData has no table of cells: read the folder with `spatialdata_io.xenium(..., "
            "cells_table=True)` (the default), which reads cell_feature_matrix.h5 and cells.parquet."
        )
    return choose_table(sdata.tables.keys(), table_key, None)


def cell_patch_um(sdata: SpatialData, table_key: str | None) -> float | None:
    """Default tile side in µm for the chosen table: :data:`CELL_PATCH_UM` for cells, ``None`` for pseudo-spots."""
    table = sdata.tables[_table_key(sdata, table_key)]
    return None if _is_pseudo_spots(table) else CELL_PATCH_UM


def _level0(element: Any) -> Any:
    return pyramid_levels(element)[0]


def _is_rgb(element: Any) -> bool:
    level = _level0(element)
    return level.sizes.get("c", 1) in (3, 4) and level.dtype == np.uint8


def he_image(sdata: SpatialData, image_key: str | None) -> str:
    """``image_key`` after checking it is an RGB image; else the H&E among the images (logged).

    Raises
    ------
    InputTypeError
        ``image_key`` names a fluorescence image (DAPI morphology: not RGB uint8).
    StmorphKeyError
        No RGB image, or several and none named ``*he_image``.
    """
    keys = list(sdata.images.keys())
    if image_key is not None:
        key = one_key(keys, image_key, "image element", "image_key")
        if not _is_rgb(sdata.images[key]):
            level = _level0(sdata.images[key])
            raise InputTypeError(
                f"images[{key!r}] is not an RGB H&E ({level.sizes.get('c', 1)} channel(s) "
                f"{format_keys([str(c) for c in level.coords['c'].values]) if 'c' in level.coords else ''}, "
                f"{level.dtype}): Xenium's morphology images are DAPI fluorescence. Pass the post-run H&E "
                "(spatialdata-io names it 'he_image')."
            )
        return key
    rgb = [key for key in keys if _is_rgb(sdata.images[key])]
    if not rgb:
        raise StmorphKeyError(
            f"the Xenium SpatialData holds no H&E image: images {format_keys(keys)} are fluorescence (DAPI "
            "morphology), which is not an H&E. Put the post-run H&E '<name>_he_image.ome.tif' and its "
            "'<name>_he_imagealignment.csv' in the Xenium folder and read it with `aligned_images=True`, or add "
            "it with `spatialdata_io.xenium_aligned_image`."
        )
    named = [key for key in rgb if key.endswith("he_image")] or rgb
    key = one_key(named, None, "H&E image", "image_key")
    logger.info("Xenium: the H&E is images[%r] (not the DAPI morphology images)", key)
    return key


def _alignment(sdata: SpatialData, image_key: str) -> np.ndarray:
    """The H&E's affine to ``"global"`` (H&E pixels → Xenium pixels); refused when it is missing or the identity."""
    from spatialdata.transformations import get_transformation

    transformations = get_transformation(sdata.images[image_key], get_all=True)
    matrix = _affine(sdata.images[image_key], "global") if "global" in transformations else None
    if matrix is None or np.allclose(matrix, np.eye(3)):
        found = "no transformation" if matrix is None else "the identity"
        raise AlignmentError(
            f"images[{image_key!r}] has no alignment to the cells: its transformation to 'global' (the Xenium "
            f"morphology pixels) is {found}, as the reader sets it when the alignment file is missing, which "
            f"would place every cell wrongly. Put '{image_key}alignment.csv' (the H&E's alignment, e.g. exported "
            "by Xenium Explorer) beside the image and read the folder again, or set the affine with "
            "`spatialdata.transformations.set_transformation(sdata.images[...], Affine(...), 'global')`."
        )
    return matrix


def _micron_to_global(sdata: SpatialData, table: AnnData) -> np.ndarray:
    """µm → Xenium pixels: the ``Scale`` to ``"global"`` of the shapes the table annotates, else of another
    shapes or points element of the reader (cell or nucleus boundaries, transcripts)."""
    from spatialdata.transformations import Scale, get_transformation

    regions = [r for r in _regions(table) if r in sdata.shapes]
    elements = [sdata.shapes[r] for r in regions]
    elements += [sdata.shapes[k] for k in sdata.shapes if k not in regions] + list(sdata.points.values())
    for element in elements:
        if isinstance(get_transformation(element, get_all=True).get("global"), Scale):
            return _affine(element, "global")
    raise StmorphKeyError(
        "no element of the Xenium SpatialData maps the cells' µm to the Xenium pixels (a shapes or points element "
        "with a Scale to 'global'): read the folder with `cells_as_circles=True` (or keep the cell boundaries "
        "or the transcripts)."
    )


def _centres_um(table: AnnData, table_key: str) -> np.ndarray:
    if Key.obsm.spatial not in table.obsm:
        raise StmorphKeyError(f"tables[{table_key!r}] has no obsm['spatial'] (the cell centroids in µm).")
    xy = np.asarray(table.obsm[Key.obsm.spatial], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[0] != table.n_obs or xy.shape[1] < 2 or not np.isfinite(xy[:, :2]).all():
        raise ShapeMismatchError(
            f"tables[{table_key!r}].obsm['spatial'] must be a finite n_obs × 2 array of µm; found shape {xy.shape}."
        )
    return xy[:, :2]


def _apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def _placement(sdata: SpatialData, table: AnnData, image_key: str) -> np.ndarray:
    """µm of the table → pixels of the H&E's level 0 (3 × 3 affine)."""
    return np.linalg.inv(_alignment(sdata, image_key)) @ _micron_to_global(sdata, table)


def _check_cells_inside(centres: np.ndarray, image_key: str, element: Any, names: Any) -> None:
    level = _level0(element)
    try:
        check_inside(centres, (level.sizes["y"], level.sizes["x"]), names)
    except OutOfImageError as err:
        raise OutOfImageError(
            f"after the alignment of images[{image_key!r}]: {err} Is the alignment file the one of this H&E "
            "(not another section's, nor its inverse), and does the H&E cover these cells?"
        ) from None


def _on_he(
    sdata: SpatialData, table_key: str | None, image_key: str | None
) -> tuple[str, AnnData, str, np.ndarray, float]:
    """The table's key and table, the H&E's key, the centres in the H&E's level-0 pixels and its µm per pixel."""
    table_key = _table_key(sdata, table_key)
    table = sdata.tables[table_key]
    image_key = he_image(sdata, image_key)
    to_image = _placement(sdata, table, image_key)
    return table_key, table, image_key, _apply(to_image, _centres_um(table, table_key)), 1.0 / _scale(to_image)


def he_placement(
    sdata: SpatialData, table_key: str | None = None, image_key: str | None = None
) -> tuple[AnnData, str, np.ndarray, float]:
    """Where a Xenium table's cells (or pseudo-spots) sit on the H&E, for drawing them there.

    Returns the table, the H&E's image key, the centres in the H&E's level-0 pixels (x = column,
    y = row) and the diameter to draw each in those pixels: a pseudo-spot's side, or
    :data:`CELL_DRAW_UM` for a cell.

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate_xenium(50, random_state=0)
    >>> table, image_key, centres, diameter = he_placement(sdata)
    >>> image_key, centres.shape, round(diameter, 1)
    ('he_image', (50, 2), 20.0)
    """
    _, table, image_key, centres, mpp = _on_he(sdata, table_key, image_key)
    size_um = float(np.sqrt(np.median(table.obs["area_um2"]))) if _is_pseudo_spots(table) else CELL_DRAW_UM
    return table, image_key, centres, size_um / mpp


def xenium_source(
    sdata: SpatialData, image_key: str | None, table_key: str | None, mpp: float | None, target_mpp: float
) -> tuple[AnnData, PatchSource]:
    """The table and :class:`PatchSource` of a Xenium SpatialData: cells (or pseudo-spots) on the aligned H&E."""
    table_key, table, image_key, centres0, mpp0 = _on_he(sdata, table_key, image_key)
    if mpp is not None:
        check_agree(float(mpp), mpp0, "mpp=", f"the alignment of images[{image_key!r}]")
    _check_cells_inside(centres0, image_key, sdata.images[image_key], table.obs_names)
    unit = "pseudo_spots" if _is_pseudo_spots(table) else "cells"
    logger.info(
        "extract_patches: Xenium %s of tables[%r] on images[%r] at %.4f µm/px (from its alignment)",
        unit, table_key, image_key, mpp0,
    )  # fmt: skip
    info = {"table_key": table_key, "mpp_from": "xenium_alignment", "unit": unit, "spatial_mpp": 1.0}
    return table, image_source(sdata, image_key, centres0, mpp0, target_mpp, info)


def _grid(centres: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HEST's square grid over ``centres`` (H&E pixels): each centre's ``(row, col)``, the occupied cells and origin."""
    origin = centres.min(axis=0)
    col_row = np.floor((centres - origin) / side).astype(np.int64)
    occupied, member = np.unique(col_row[:, ::-1], axis=0, return_inverse=True)  # sorted by row, then column
    return occupied, member.ravel(), origin


def _squares(corners_he: np.ndarray, to_um: np.ndarray) -> list:
    from shapely import Polygon

    return [Polygon(_apply(to_um, square)) for square in corners_he]


def _pseudo_spot_table(
    table: AnnData, member: np.ndarray, occupied: np.ndarray, centres_um: np.ndarray, size_um: float, region: str
) -> AnnData:
    import anndata as ad
    import pandas as pd
    from scipy import sparse
    from spatialdata.models import TableModel

    pool = sparse.csr_matrix(
        (np.ones(len(member)), (member, np.arange(len(member)))), shape=(len(occupied), len(member))
    )
    counts = pool @ sparse.csr_matrix(table.X)
    names = pd.Index([f"{r:03d}x{c:03d}" for r, c in occupied], name=None)
    obs = pd.DataFrame(
        {
            "array_row": occupied[:, 0], "array_col": occupied[:, 1],
            "n_cells": np.bincount(member, minlength=len(occupied)),
            "area_um2": np.full(len(occupied), float(size_um) ** 2),
            "region": pd.Categorical([region] * len(occupied)), "spot_id": names.to_numpy(),
        },
        index=names,
    )  # fmt: skip
    spots = ad.AnnData(X=counts.astype(table.X.dtype), obs=obs, var=table.var.copy())
    spots.obsm[Key.obsm.spatial] = centres_um
    return TableModel.parse(spots, region=region, region_key="region", instance_key="spot_id")


def _element_name(size_um: float) -> str:
    return f"pseudo_spots_{size_um:g}um".replace(".", "p")


@checks_keys("table_key", "image_key", "key_added")
def pseudo_spots(
    sdata: SpatialData,
    size_um: float = PSEUDO_SPOT_UM,
    *,
    table_key: str | None = None,
    image_key: str | None = None,
    key_added: str | None = None,
    inplace: bool = True,
) -> AnnData | None:
    """Pool the cells of a Xenium SpatialData into square pseudo-spots, as HEST-1k does.

    The squares are ``size_um`` wide on the H&E's pixel axes (so the patch
    :func:`~stmorph.pp.extract_patches` cuts around a pseudo-spot is aligned with it), starting at the
    smallest H&E coordinate of the cells; each pseudo-spot sums the counts of the cells whose
    centroid falls in it, and squares without a cell are dropped — HEST-1k's
    ``pool_transcripts_xenium`` (which pools transcripts; it uses 100 µm, not 55 µm). Compare
    pseudo-spots with Visium and HEST-1k sections; keep cells for questions about single cells.

    Parameters
    ----------
    sdata
        A SpatialData of ``spatialdata_io.xenium(..., cells_as_circles=True, aligned_images=True)``
        with the post-run H&E and its alignment.
    size_um
        Side of a pseudo-spot in µm (at least one H&E pixel).
    table_key
        The cell table (default: the only table).
    image_key
        The H&E image (default: the RGB image, ``he_image``; never the DAPI morphology images).
    key_added
        Name of the new table; default ``f"pseudo_spots_{size_um:g}um"``. Its squares are the shapes
        element ``f"{key_added}_squares"``.
    inplace
        Write the table and its squares into ``sdata``; ``False``: return the table, write nothing.

    Returns
    -------
    ``None`` if ``inplace``, else the new table. Sets ``sdata.tables[key_added]``, a pseudo-spots ×
    genes :class:`~anndata.AnnData` (summed counts) with ``obsm["spatial"]`` (centres in µm, as the
    cells), ``obs["n_cells"]``, ``obs["area_um2"]``, ``obs["array_row"]``, ``obs["array_col"]`` and
    ``uns["stmorph"]["pseudo_spots"][key_added]`` (``size_um``, ``image_key``, ``cells_table``,
    ``origin_px`` and ``side_px`` in H&E pixels, ``n_cells``); and ``sdata.shapes[f"{key_added}_squares"]``.

    Raises
    ------
    InvalidParameterError
        ``size_um`` is smaller than one pixel of the H&E.
    AlignmentError
        The H&E has no alignment to the cells.
    StmorphKeyError
        No cell table, or no H&E image.

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate_xenium(n_cells=300, random_state=0)
    >>> st.pp.pseudo_spots(sdata, size_um=100)
    >>> table = sdata.tables["pseudo_spots_100um"]
    >>> int(table.obs["n_cells"].sum()), float(table.obs["area_um2"].iloc[0])
    (300, 10000.0)
    """
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Scale

    if not is_xenium(sdata):
        raise InputTypeError(
            "st.pp.pseudo_spots takes a SpatialData of spatialdata_io.xenium (cells with their aligned H&E); "
            f"found {type(sdata).__name__}" + (" without Xenium cells." if is_spatialdata(sdata) else ".")
        )
    check_range(size_um, "size_um", low=0)
    check_bool(inplace, "inplace")
    table_key = _table_key(sdata, table_key)
    table = sdata.tables[table_key]
    if _is_pseudo_spots(table):
        raise InvalidParameterError(f"tables[{table_key!r}] holds pseudo-spots already; pass the cells' `table_key=`.")
    image_key = he_image(sdata, image_key)
    to_image = _placement(sdata, table, image_key)
    mpp0 = 1.0 / _scale(to_image)
    if size_um < mpp0:
        raise InvalidParameterError(
            f"size_um={size_um:g} µm is smaller than one pixel of images[{image_key!r}] ({mpp0:.4g} µm): a "
            "pseudo-spot must span at least a pixel of the H&E (HEST-1k uses 100 µm)."
        )
    side = size_um / mpp0
    occupied, member, origin = _grid(_apply(to_image, _centres_um(table, table_key)), side)
    to_um = np.linalg.inv(to_image)
    centres_he = origin + (occupied[:, ::-1] + 0.5) * side
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    squares_he = origin + (occupied[:, None, ::-1] + corners[None]) * side
    key_added = _element_name(size_um) if key_added is None else key_added
    shapes_key = f"{key_added}_squares"
    spots = _pseudo_spot_table(table, member, occupied, _apply(to_um, centres_he), size_um, shapes_key)
    record = {
        "size_um": float(size_um), "image_key": image_key, "cells_table": table_key, "side_px": float(side),
        "origin_px": origin.astype(np.float64), "n_cells": int(table.n_obs), "pooled": "cells",
    }  # fmt: skip
    commit_outputs(spots, uns={Key.uns.tool(_TOOL, key_added): record})
    logger.info(
        "pseudo_spots: %d cells of tables[%r] pooled into %d squares of %g µm (%.1f px of images[%r])",
        table.n_obs, table_key, spots.n_obs, size_um, side, image_key,
    )  # fmt: skip
    if not inplace:
        return spots
    import geopandas as gpd

    scale = _scale(_micron_to_global(sdata, table))  # the cells' µm → Xenium pixels
    squares = ShapesModel.parse(
        gpd.GeoDataFrame({"geometry": _squares(squares_he, to_um)}, index=spots.obs_names.rename("spot_id")),
        transformations={"global": Scale([scale, scale], axes=("x", "y"))},
    )
    replaced = [name for name in (key_added, shapes_key) if name in sdata.tables or name in sdata.shapes]
    if replaced:
        warn_user(f"st.pp.pseudo_spots replaces the existing element(s) {replaced} of the SpatialData.")
    sdata.shapes[shapes_key] = squares
    sdata.tables[key_added] = spots
    return None
