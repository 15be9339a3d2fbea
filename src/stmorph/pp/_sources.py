"""Where patches are read from: the three inputs of ``st.pp.extract_patches`` as a :class:`PatchSource`.

Three inputs are accepted: a SpatialData object (image element + the shapes the table annotates,
mapped through their coordinate transformations), a Visium-style AnnData (``obsm["spatial"]`` +
``uns["spatial"][library_id]`` as :func:`scanpy.read_visium` writes it), or a plain
``(image, coordinates)`` pair. Each is turned into a :class:`PatchSource` (an image array-like in
``(y, x, c)`` layout, spot centres in its pixels and its µm/px) by :func:`patch_source`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import dataset_info
from .._image import image_mpp, read_rgb
from .._keys import Key
from .._logging import logger
from .._tables import is_spatialdata
from .._validation import (
    InputTypeError,
    InvalidParameterError,
    ShapeMismatchError,
    StmorphKeyError,
    check_agree,
    check_mapping,
    check_range,
    format_keys,
    numeric_array,
)
from ..errors import NonFiniteError

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

VISIUM_SPOT_UM = 55.0
"""Diameter of a Visium spot in µm, used to derive µm/px from ``spot_diameter_fullres`` or the spot circles."""
DEFAULT_BIN_UM = 16
"""Visium HD bin size (µm) read when a SpatialData holds several bin tables and no ``bin_size=`` is given."""
_BIN_TABLE = re.compile(r"square_(\d{3})um")
"""Name of a Visium HD bin table (``spatialdata_io.visium_hd``): ``square_<bin size in µm, 3 digits>um``."""


@dataclass
class PatchSource:
    """Where patches are read from.

    Attributes
    ----------
    image
        ``(H, W, C)`` uint8 array-like (numpy, dask) supporting slicing; ``C`` is 3 or 4 (the
        first three channels are used).
    centres
        ``(n, 2)`` spot centres in pixels of ``image``, ``x`` = column, ``y`` = row.
    mpp
        µm per pixel of ``image``.
    info
        h5ad-serialisable description recorded in ``uns`` (source kind, key, pyramid level).
    overview
        A coarser array of the same image (a pyramid's coarsest level) for the tissue mask;
        ``None``: ``image`` itself.
    """

    image: Any
    centres: np.ndarray
    mpp: float
    info: dict[str, Any] = field(default_factory=dict)
    overview: Any = None


DEFAULT_TARGET_MPP = 0.5
"""µm per pixel of the patches when neither ``target_mpp`` nor ``patch_um`` is given (224 px = 112 µm)."""


def tile_mpp(target_mpp: float | None, patch_um: float | None, patch_size: int, default_um: float | None) -> float:
    """µm per patch pixel: ``target_mpp``; else ``patch_um`` (or ``default_um``) over ``patch_size``; else 0.5.

    Examples
    --------
    >>> tile_mpp(None, 48.0, 224, None), tile_mpp(None, None, 224, None)
    (0.21428571428571427, 0.5)
    """
    if target_mpp is not None and patch_um is not None:
        raise InvalidParameterError(
            f"target_mpp={target_mpp:g} and patch_um={patch_um:g} both set the tile's size "
            "(patch_um = target_mpp × patch_size); pass one of them."
        )
    if target_mpp is not None:
        return float(target_mpp)
    tile_um = patch_um if patch_um is not None else default_um
    return DEFAULT_TARGET_MPP if tile_um is None else float(tile_um) / patch_size


def one_key(keys: Sequence[str], given: str | None, what: str, arg: str) -> str:
    keys = list(keys)
    if given is not None:
        if given not in keys:
            raise StmorphKeyError(f"{what} {given!r} not found; available: {format_keys(keys)}.")
        return given
    if len(keys) != 1:
        raise StmorphKeyError(f"found {len(keys)} {what}s {format_keys(keys)}; choose one with `{arg}=`.")
    return keys[0]


def pyramid_levels(element: Any) -> list[Any]:
    """Image arrays of a SpatialData image element, finest first (one for a single-scale image)."""
    if hasattr(element, "children"):  # xarray DataTree (multiscale)
        names = sorted(element.children, key=lambda k: int("".join(ch for ch in k if ch.isdigit()) or 0))
        return [next(iter(element[name].ds.data_vars.values())) for name in names]
    return [element]


def _choose_level(levels: list[Any], mpp: float, target_mpp: float) -> int:
    """Coarsest level still at least as fine as ``target_mpp`` (level 0 when even it is coarser)."""
    width0 = levels[0].sizes["x"]
    level_mpp = [mpp * width0 / lv.sizes["x"] for lv in levels]
    ok = [i for i, m in enumerate(level_mpp) if m <= target_mpp * (1 + 1e-6)]
    return max(ok) if ok else 0


def _affine(element: Any, cs: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    tf = get_transformation(element, to_coordinate_system=cs)
    return np.asarray(tf.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=np.float64)


def _shared_cs(a: Any, b: Any) -> str | None:
    """A coordinate system both elements map to (``"global"`` preferred), or ``None``."""
    from spatialdata.transformations import get_transformation

    common = set(get_transformation(a, get_all=True)) & set(get_transformation(b, get_all=True))
    if not common:
        return None
    return "global" if "global" in common else sorted(common)[0]


def _common_cs(a: Any, b: Any) -> str:
    cs = _shared_cs(a, b)
    if cs is None:
        raise InvalidParameterError(
            "the image and the spot shapes share no coordinate system, so spots cannot be placed on the image; "
            "add a common one (e.g. 'global') with `spatialdata.transformations.set_transformation`."
        )
    return cs


def _scale(matrix: np.ndarray) -> float:
    """Mean linear scale of a 2-D affine matrix (square root of its determinant)."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))


def _spot_shapes(sdata: SpatialData, table: AnnData, shapes_key: str | None) -> tuple[str | None, np.ndarray | None]:
    """Shapes element annotated by the table and the spot centres in its own coordinates, in table order."""
    attrs = table.uns.get("spatialdata_attrs", {})
    if shapes_key is None:
        region = attrs.get("region")
        regions = [region] if isinstance(region, str) else list(region or [])
        regions = [r for r in regions if r in sdata.shapes]
        if len(regions) != 1:
            return None, None
        shapes_key = regions[0]
    shapes = sdata.shapes[one_key(sdata.shapes.keys(), shapes_key, "shapes element", "shapes_key")]
    instance_key = attrs.get("instance_key")
    ids = table.obs[instance_key].to_numpy() if instance_key in table.obs else table.obs_names.to_numpy()
    pos = shapes.index.get_indexer(ids)
    if (pos < 0).any():
        raise ShapeMismatchError(
            f"{int((pos < 0).sum())} of {table.n_obs} table rows have no shape in shapes[{shapes_key!r}] "
            f"(matched on {instance_key or 'obs_names'!r})."
        )
    centroids = shapes.geometry.centroid
    return shapes_key, np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()])[pos]


def bin_tables(keys: Sequence[str]) -> dict[int, str]:
    """Visium HD bin tables among ``keys`` (``spatialdata_io.visium_hd`` names): ``{bin size in µm: key}``.

    Examples
    --------
    >>> bin_tables(["square_016um", "square_008um", "cell_segmentations"])
    {8: 'square_008um', 16: 'square_016um'}
    """
    found = {int(m.group(1)): key for key in keys if (m := _BIN_TABLE.fullmatch(key))}
    return dict(sorted(found.items()))


def _bin_list(bins: dict[int, str]) -> str:
    return ", ".join(f"{b} µm" for b in bins) or "none"


def choose_table(keys: Sequence[str], table_key: str | None, bin_size: int | None) -> str:
    """The table to cut patches for: ``table_key``; the Visium HD table of ``bin_size``; the only one.

    Without either, several tables resolve only when they include Visium HD bins of
    :data:`DEFAULT_BIN_UM` µm.
    """
    keys = list(keys)
    if table_key is not None:
        return one_key(keys, table_key, "table", "table_key")
    bins = bin_tables(keys)
    if bin_size is not None:
        if bin_size not in bins:
            raise StmorphKeyError(
                f"no Visium HD table of {bin_size} µm bins; bins present: {_bin_list(bins)} "
                f"(tables {format_keys(keys)}). Pass `bin_size=` one of them, or `table_key=`."
            )
        return bins[bin_size]
    if len(keys) == 1:
        return keys[0]
    if DEFAULT_BIN_UM in bins:
        logger.info("extract_patches: Visium HD bins of %s; using %d µm", _bin_list(bins), DEFAULT_BIN_UM)
        return bins[DEFAULT_BIN_UM]
    if bins:
        raise StmorphKeyError(
            f"found Visium HD tables of {_bin_list(bins)} bins but not the default {DEFAULT_BIN_UM} µm; "
            "choose one with `bin_size=`."
        )
    raise StmorphKeyError(f"found {len(keys)} tables {format_keys(keys)}; choose one with `table_key=`.")


def choose_image(sdata: SpatialData, image_key: str | None, shapes: Any) -> str:
    """``image_key``; else the finest image sharing a coordinate system with the spot shapes (logged)."""
    keys = list(sdata.images.keys())
    if image_key is not None or len(keys) <= 1 or shapes is None:
        return one_key(keys, image_key, "image element", "image_key")
    pixel_size = {}  # one image pixel in units of the shapes' own coordinates
    for key in keys:
        cs = _shared_cs(sdata.images[key], shapes)
        if cs is not None:
            pixel_size[key] = _scale(_affine(sdata.images[key], cs)) / _scale(_affine(shapes, cs))
    if not pixel_size:
        raise InvalidParameterError(
            f"none of the image elements {format_keys(keys)} shares a coordinate system with the spot shapes; "
            "pass `image_key=` after adding one with `spatialdata.transformations.set_transformation`."
        )
    best = min(pixel_size, key=pixel_size.get)
    logger.info("extract_patches: using images[%r], the finest of %s placed with the spots", best, sorted(pixel_size))
    return best


def _table_microns_per_pixel(table: AnnData) -> float | None:
    """``uns["spatial"][library]["scalefactors"]["microns_per_pixel"]`` of a table with one library."""
    libraries = table.uns.get(Key.uns.spatial)
    if not isinstance(libraries, Mapping) or len(libraries) != 1:
        return None
    scalefactors = next(iter(libraries.values())).get("scalefactors", {})
    value = scalefactors.get("microns_per_pixel")
    return None if value is None else float(value)


def _circle_diameter(shapes: Any) -> float | None:
    """Diameter of Visium spot circles (points sharing one ``radius``), in their own units.

    Circles of several radii (e.g. Xenium cells, ``radius`` from each cell's area) are not Visium
    spots: ``None``.
    """
    if "radius" not in shapes.columns or not (shapes.geometry.geom_type == "Point").all():
        return None
    radius = shapes["radius"].to_numpy(np.float64)
    if len(radius) == 0 or not np.allclose(radius, radius[0], rtol=1e-6):
        return None
    return 2 * float(radius[0])


def _square_side(shapes: Any) -> float | None:
    """Median side of axis-aligned square shapes (Visium HD bins), in their own units."""
    sample = shapes.geometry.iloc[:256]
    if len(sample) == 0 or not (sample.geom_type == "Polygon").all():
        return None
    bounds = sample.bounds
    width, height = (bounds["maxx"] - bounds["minx"]).to_numpy(), (bounds["maxy"] - bounds["miny"]).to_numpy()
    if not (np.allclose(width, height, rtol=1e-3) and np.allclose(sample.area.to_numpy(), width * height, rtol=1e-3)):
        return None
    return float(np.median(width))


def _named_bin_um(*names: str | None) -> int | None:
    """Bin size in µm from the first name holding ``square_<NNN>um`` (Visium HD tables and shapes)."""
    for name in names:
        match = _BIN_TABLE.search(name or "")
        if match:
            return int(match.group(1))
    return None


def _shape_unit_um(table: AnnData, table_key: str, shapes_key: str | None, shapes: Any) -> tuple[float, str] | None:
    """µm per unit of the spots' own coordinates and where it came from, or ``None`` when unknown."""
    found = _table_microns_per_pixel(table)
    if found is not None:
        return found, "scalefactors"
    if shapes is None:
        return None
    diameter = _circle_diameter(shapes)
    if diameter is not None:
        return VISIUM_SPOT_UM / diameter, "visium_spot_circles"
    side, bin_um = _square_side(shapes), _named_bin_um(table_key, shapes_key)
    if side is not None and bin_um is not None:
        return bin_um / side, "visium_hd_bin_squares"
    return None


MPP_SOURCES = {
    "mpp": "mpp=",
    "um_coordinate_system": "the image's 'um' coordinate system",
    "dataset_metadata": "table.uns['stmorph']['dataset']['mpp']",
    "scalefactors": "the table's scalefactors['microns_per_pixel']",
    "visium_spot_circles": f"the Visium spot circles ({VISIUM_SPOT_UM:g} µm diameter)",
    "visium_hd_bin_squares": "the Visium HD bin squares (side = bin size)",
    "xenium_alignment": "the Xenium alignment of the H&E (cells' µm → H&E pixels)",
}
"""What each recorded ``mpp_from`` value means."""


def _spatialdata_mpp(
    sdata: SpatialData, image_key: str, table: AnnData, table_key: str, spots: tuple[str | None, Any],
    to_image: np.ndarray, mpp: float | None,
) -> tuple[float, str]:  # fmt: skip
    """µm per pixel of ``images[image_key]`` (level 0) and its source, in the documented order."""
    if mpp is not None:
        return float(mpp), "mpp"
    found = image_mpp(sdata, image_key)
    table_mpp = dataset_info(table).get("mpp")
    if found is not None and table_mpp is not None:
        check_agree(
            found,
            float(table_mpp),
            f"the pixel size of images[{image_key!r}] ('um' system)",
            "table.uns['stmorph']['dataset']['mpp']",
        )
    if found is not None:
        return float(found), "um_coordinate_system"
    if table_mpp is not None:
        return float(table_mpp), "dataset_metadata"
    unit = _shape_unit_um(table, table_key, *spots)
    if unit is None:
        shapes_key, shapes = spots
        kind = "no shapes" if shapes is None else f"shapes[{shapes_key!r}] of neither circles nor named bin squares"
        raise InvalidParameterError(
            f"the pixel size of images[{image_key!r}] is unknown: it has no 'um' coordinate system, the table has "
            f"no uns['stmorph']['dataset']['mpp'] nor scalefactors['microns_per_pixel'], and the spots are {kind}. "
            "Pass `mpp=<µm per pixel of that image>`."
        )
    return unit[0] / _scale(to_image), unit[1]


def _from_spatialdata(
    sdata: SpatialData,
    image_key: str | None,
    table_key: str | None,
    bin_size: int | None,
    shapes_key: str | None,
    mpp: float | None,
    target_mpp: float,
    spatial_key: str = Key.obsm.spatial,
) -> tuple[AnnData, PatchSource]:
    table_key = choose_table(sdata.tables.keys(), table_key, bin_size)
    table = sdata.tables[table_key]
    shapes_key, own = _spot_shapes(sdata, table, shapes_key)
    shapes = None if shapes_key is None else sdata.shapes[shapes_key]
    image_key = choose_image(sdata, image_key, shapes)
    element = sdata.images[image_key]
    if own is None:  # no annotated shapes: obsm[spatial_key] holds full-resolution image pixels
        if spatial_key not in table.obsm:
            raise StmorphKeyError(
                f"the table annotates no shapes element and has no obsm[{spatial_key!r}]; pass `shapes_key=` "
                "(or `spatial_key=` the obsm key of the spot centres)."
            )
        centres0 = np.asarray(table.obsm[spatial_key], dtype=np.float64)[:, :2]
        to_image = np.eye(3)
    else:
        cs = _common_cs(element, shapes)
        to_image = np.linalg.inv(_affine(element, cs)) @ _affine(shapes, cs)
        centres0 = own @ to_image[:2, :2].T + to_image[:2, 2]
    mpp0, mpp_from = _spatialdata_mpp(sdata, image_key, table, table_key, (shapes_key, shapes), to_image, mpp)
    logger.info("extract_patches: images[%r] at %.4f µm/px, from %s", image_key, mpp0, MPP_SOURCES[mpp_from])
    info = {"table_key": table_key, "mpp_from": mpp_from}
    bin_um = _named_bin_um(table_key) if mpp_from == "visium_hd_bin_squares" else None
    if bin_um is not None:
        info["bin_size_um"] = bin_um
    if shapes_key is not None:
        info["shapes_key"] = shapes_key
    return table, image_source(sdata, image_key, centres0, mpp0, target_mpp, info)


def image_source(
    sdata: SpatialData, image_key: str, centres0: np.ndarray, mpp0: float, target_mpp: float, info: dict[str, Any]
) -> PatchSource:
    """The :class:`PatchSource` of ``images[image_key]`` read at the level :func:`_choose_level` picks.

    ``centres0`` are in pixels of level 0, whose pixel size is ``mpp0``; ``info`` is recorded as well.
    """
    element = sdata.images[image_key]
    levels = pyramid_levels(element)
    level = _choose_level(levels, mpp0, target_mpp)
    factor = np.array(
        [levels[0].sizes["x"] / levels[level].sizes["x"], levels[0].sizes["y"] / levels[level].sizes["y"]]
    )
    info = {"source": "spatialdata", "image_key": image_key, "level": level, "source_mpp": mpp0, **info}
    if sdata.path is not None:  # zarr-backed: the image can be opened again from there
        info["zarr_path"] = str(sdata.path)
    return PatchSource(levels[level], centres0 / factor, mpp0 * float(factor[0]), info, levels[-1])


def _scalefactor(scalefactors: Mapping, name: str, library_id: str) -> float:
    """``scalefactors[name]`` after checking it is a positive finite number (the message names the field)."""
    return check_range(scalefactors[name], f"uns['spatial'][{library_id!r}]['scalefactors'][{name!r}]", low=0)


def _visium_mpp(scalefactors: Mapping, mpp: float | None, library_id: str) -> float:
    if mpp is not None:
        return float(mpp)
    if "microns_per_pixel" in scalefactors:
        return _scalefactor(scalefactors, "microns_per_pixel", library_id)
    if "spot_diameter_fullres" in scalefactors:
        return VISIUM_SPOT_UM / _scalefactor(scalefactors, "spot_diameter_fullres", library_id)
    raise InvalidParameterError(
        f"uns['spatial'][{library_id!r}]['scalefactors'] has neither 'microns_per_pixel' nor "
        "'spot_diameter_fullres'; pass `mpp=<µm per full-resolution pixel>`."
    )


def visium_source(
    adata: AnnData, library_id: str | None, mpp: float | None, spatial_key: str = Key.obsm.spatial
) -> tuple[AnnData, PatchSource]:
    libraries = check_mapping(adata.uns[Key.uns.spatial], "uns['spatial']")
    library_id = one_key(libraries.keys(), library_id, "library_id in uns['spatial']", "library_id")
    lib = check_mapping(libraries[library_id], f"uns['spatial'][{library_id!r}]")
    scalefactors = check_mapping(lib.get("scalefactors", {}), f"uns['spatial'][{library_id!r}]['scalefactors']")
    mpp_full = _visium_mpp(scalefactors, mpp, library_id)
    if spatial_key not in adata.obsm:
        raise StmorphKeyError(
            f"adata.obsm[{spatial_key!r}] (spot centres in full-resolution pixels) not found; `spatial_key=` names "
            f"another key. Available: {sorted(adata.obsm.keys())}."
        )
    centres = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
    info = {"source": "visium", "library_id": library_id, "source_mpp": mpp_full, "spatial_key": spatial_key}
    path = lib.get("metadata", {}).get("source_image_path")
    if path and Path(path).is_file():
        return adata, PatchSource(read_rgb(Path(path)), centres, mpp_full, {**info, "image": "fullres"})
    images = lib.get("images", {})
    for name in ("hires", "lowres"):
        if name in images and f"tissue_{name}_scalef" in scalefactors:
            scalef = _scalefactor(scalefactors, f"tissue_{name}_scalef", library_id)
            logger.info("extract_patches: full-resolution image not found; using the %s image", name)
            image = np.asarray(images[name])
            if image.dtype.kind == "f":  # scanpy may store float images in [0, 1]
                bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
                if bad:  # NaN would be cast to black pixels
                    raise NonFiniteError(
                        f"uns['spatial'][{library_id!r}]['images'][{name!r}] holds {bad} NaN or infinite pixel "
                        "values; fix or replace the image before extracting patches."
                    )
                image = np.clip(image * 255 if image.max() <= 1 else image, 0, 255).round().astype(np.uint8)
            return adata, PatchSource(image, centres * scalef, mpp_full / scalef, {**info, "image": name})
    raise StmorphKeyError(
        f"uns['spatial'][{library_id!r}] has no usable image: no existing metadata['source_image_path'] and no "
        "images['hires'/'lowres'] with a matching tissue_<name>_scalef."
    )


def _from_pair(data: tuple, mpp: float | None, spatial_key: str) -> tuple[AnnData, PatchSource]:
    import anndata as ad
    import pandas as pd

    if len(data) != 2:
        raise InputTypeError(f"a plain input must be an (image, coordinates) pair; found {len(data)} items.")
    image, coords = data
    coords = numeric_array(coords, "coordinates")
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ShapeMismatchError(f"coordinates must be (n_spots, 2) with x = column, y = row; found {coords.shape}.")
    if mpp is None:
        raise InvalidParameterError(
            "the pixel size of a plain image is unknown; pass `mpp=<µm per pixel>` (e.g. 0.5 for a 20× scan)."
        )
    adata = ad.AnnData(obs=pd.DataFrame(index=pd.Index([str(i) for i in range(len(coords))])))
    adata.obsm[spatial_key] = coords[:, :2]
    return adata, PatchSource(image, coords[:, :2], float(mpp), {"source": "array", "source_mpp": float(mpp)})


def patch_source(
    data: Any, image_key: str | None, table_key: str | None, bin_size: int | None, shapes_key: str | None,
    library_id: str | None, mpp: float | None, target_mpp: float, spatial_key: str = Key.obsm.spatial,
) -> tuple[AnnData, PatchSource]:  # fmt: skip
    from anndata import AnnData

    if is_spatialdata(data):
        return _from_spatialdata(data, image_key, table_key, bin_size, shapes_key, mpp, target_mpp, spatial_key)
    if isinstance(data, AnnData):
        if Key.uns.spatial not in data.uns:
            raise StmorphKeyError(
                "the AnnData has no uns['spatial'] (Visium layout); pass a SpatialData object or an "
                "(image, coordinates) pair instead."
            )
        return visium_source(data, library_id, mpp, spatial_key)
    if isinstance(data, tuple | list):
        return _from_pair(tuple(data), mpp, spatial_key)
    raise InputTypeError(
        f"extract_patches takes a SpatialData, a Visium-style AnnData or an (image, coordinates) pair; "
        f"found {type(data).__name__}."
    )
