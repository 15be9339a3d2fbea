"""Cut one image patch per spot: ``st.pp.extract_patches``.

Three inputs are accepted: a SpatialData object (image element + the shapes the table annotates,
mapped through their coordinate transformations), a Visium-style AnnData (``obsm["spatial"]`` +
``uns["spatial"][library_id]`` as :func:`scanpy.read_visium` writes it), or a plain
``(image, coordinates)`` pair. Each is turned into a :class:`PatchSource` (an image array-like in
``(y, x, c)`` layout, spot centres in its pixels and its µm/px); :func:`read_patches` then cuts
and resamples the windows in batches. :func:`read_patches` works on numpy and dask arrays alike,
which is what a lazy reader needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import commit_outputs
from .._logging import logger
from .._validation import (
    InputTypeError,
    InvalidParameterError,
    OutOfImageError,
    ShapeMismatchError,
    StmorphKeyError,
    _available,
    check_agree,
    check_choice,
    check_range,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

VISIUM_SPOT_UM = 55.0
"""Diameter of a Visium spot in µm, used to derive µm/px from ``spot_diameter_fullres``."""
PAD_VALUE = 255
"""Fill value (white) for the part of a patch that lies outside the image."""
_STORES = ("memory", "lazy")


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
    """

    image: Any
    centres: np.ndarray
    mpp: float
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- #
# Reading windows
# --------------------------------------------------------------------------------------------- #
def _as_yxc(image: Any) -> Any:
    """Channels-last, 3-channel view of an image array-like (xarray → its numpy/dask data)."""
    if hasattr(image, "dims") and hasattr(image, "transpose"):  # xarray DataArray with named dims
        image = image.transpose("y", "x", "c").data
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ShapeMismatchError(f"the image must be (H, W, 3), (H, W, 4) or (H, W); found shape {image.shape}.")
    if image.dtype != np.uint8:
        raise InputTypeError(
            f"the image must be uint8 RGB; found dtype {image.dtype}. Convert it first, e.g. "
            "`(img / img.max() * 255).astype(np.uint8)`."
        )
    return image


def _resample_margin(scale: float) -> int:
    """Extra source pixels read around a window so the Lanczos filter (support 3 output px) has data."""
    return int(np.ceil(3 * max(1.0, scale))) + 1


def _region(image: Any, x0: int, y0: int, x1: int, y1: int) -> tuple[Any, tuple[int, int, int, int]]:
    """Slice ``[y0:y1, x0:x1]`` clipped to the image; return it and where it goes in the full region."""
    h, w = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return image[cy0:cy1, cx0:cx1], (cy0 - y0, cy1 - y0, cx0 - x0, cx1 - x0)


def _materialise(regions: list[Any]) -> list[np.ndarray]:
    """Turn sliced regions into numpy arrays, computing dask slices of a batch together."""
    if regions and hasattr(regions[0], "dask"):
        import dask

        return [np.asarray(r) for r in dask.compute(*regions)]
    return [np.asarray(r) for r in regions]


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]


def _resample(canvas: np.ndarray, box: tuple[float, float, float, float], out_size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(canvas).resize((out_size, out_size), Image.Resampling.LANCZOS, box=box))


def _window_origins(centres_px: np.ndarray, size_px: float, out_size: int) -> tuple[np.ndarray, bool]:
    """Top-left corners ``(n, 2)`` of the windows, snapped to whole pixels when no resizing is needed."""
    exact = abs(size_px - out_size) < 1e-6
    origins = np.asarray(centres_px, dtype=np.float64).reshape(-1, 2) - size_px / 2
    return (np.round(origins) if exact else origins), exact


def _complete(origins: np.ndarray, size_px: float, shape: tuple[int, ...]) -> np.ndarray:
    """True where the whole window lies inside an image of ``shape`` ``(H, W, ...)``."""
    h, w = shape[:2]
    return (origins >= 0).all(axis=1) & (origins[:, 0] + size_px <= w) & (origins[:, 1] + size_px <= h)


def read_patches(
    image: Any,
    centres_px: np.ndarray,
    size_px: float,
    out_size: int,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a square window of ``size_px`` source pixels around each centre and resize it to ``out_size``.

    The window of a centre ``(x, y)`` covers ``[x - size_px/2, x + size_px/2)`` (pixel ``i``
    spans ``[i, i + 1)``). When ``size_px`` equals ``out_size`` (within 1e-6) the window is
    snapped to whole pixels and copied unchanged; otherwise it is resampled with a Lanczos filter
    over the exact (sub-pixel) window. Parts outside the image are white.

    Parameters
    ----------
    image
        ``(H, W, C)`` uint8 array-like (numpy or dask; an xarray DataArray with dims ``y, x, c``).
    centres_px
        ``(n, 2)`` centres, ``x`` = column, ``y`` = row, in pixels of ``image``.
    size_px
        Window side in source pixels.
    out_size
        Patch side in output pixels.
    batch_size
        Windows read together (one dask computation per batch).
    progress
        Show a progress bar over batches.

    Returns
    -------
    ``patches``: uint8 ``(n, out_size, out_size, 3)``; ``complete``: bool ``(n,)``, True where the
    whole window lies inside the image.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    >>> patches, complete = read_patches(img, np.array([[50.0, 40.0]]), 10, 10)
    >>> bool((patches[0] == img[35:45, 45:55]).all()), bool(complete[0])
    (True, True)
    """
    from tqdm.auto import tqdm

    image = _as_yxc(image)
    origins, exact = _window_origins(centres_px, size_px, out_size)
    complete = _complete(origins, size_px, image.shape)
    margin = 0 if exact else _resample_margin(size_px / out_size)
    span = int(np.ceil(size_px)) + 2 * margin + (0 if exact else 1)
    patches = np.empty((len(origins), out_size, out_size, 3), dtype=np.uint8)
    starts = range(0, len(origins), batch_size)
    for start in tqdm(starts, desc="reading patches", disable=not progress, leave=False):
        idx = np.arange(start, min(start + batch_size, len(origins)))
        corners = np.floor(origins[idx]).astype(np.int64) - margin
        sliced = [_region(image, x0, y0, x0 + span, y0 + span) for x0, y0 in corners]
        pixels = _materialise([s[0] for s in sliced])
        for i, (x0, y0), (py0, py1, px0, px1), pix in zip(idx, corners, (s[1] for s in sliced), pixels):
            canvas = np.full((span, span, 3), PAD_VALUE, dtype=np.uint8)
            canvas[py0:py1, px0:px1] = _to_rgb(pix)
            if exact:
                patches[i] = canvas[:out_size, :out_size]
            else:
                bx, by = origins[i, 0] - x0, origins[i, 1] - y0
                patches[i] = _resample(canvas, (bx, by, bx + size_px, by + size_px), out_size)
    return patches, complete


def _check_inside(centres: np.ndarray, shape: tuple[int, ...], names: Sequence[str]) -> None:
    h, w = shape[:2]
    outside = ~((centres[:, 0] >= 0) & (centres[:, 0] < w) & (centres[:, 1] >= 0) & (centres[:, 1] < h))
    if outside.any():
        bad = np.flatnonzero(outside)
        raise OutOfImageError(
            f"{len(bad)} of {len(centres)} spot centres lie outside the image ({w} × {h} px), e.g. "
            f"{_available([str(names[i]) for i in bad], 5)} at (x, y) = {centres[bad[0]].round(1).tolist()}. "
            "Check that the coordinates are pixels of this image (x = column, y = row) at its resolution, "
            "or drop those spots."
        )


# --------------------------------------------------------------------------------------------- #
# Sources
# --------------------------------------------------------------------------------------------- #
def _one_key(keys: Sequence[str], given: str | None, what: str, arg: str) -> str:
    keys = list(keys)
    if given is not None:
        if given not in keys:
            raise StmorphKeyError(f"{what} {given!r} not found; available: {_available(keys)}.")
        return given
    if len(keys) != 1:
        raise StmorphKeyError(f"found {len(keys)} {what}s {_available(keys)}; choose one with `{arg}=`.")
    return keys[0]


def _pyramid_levels(element: Any) -> list[Any]:
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


def _common_cs(a: Any, b: Any) -> str:
    from spatialdata.transformations import get_transformation

    common = set(get_transformation(a, get_all=True)) & set(get_transformation(b, get_all=True))
    if not common:
        raise InvalidParameterError(
            "the image and the spot shapes share no coordinate system, so spots cannot be placed on the image; "
            "add a common one (e.g. 'global') with `spatialdata.transformations.set_transformation`."
        )
    return "global" if "global" in common else sorted(common)[0]


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
    shapes = sdata.shapes[_one_key(sdata.shapes.keys(), shapes_key, "shapes element", "shapes_key")]
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


def _spatialdata_mpp(sdata: SpatialData, image_key: str, table: AnnData, mpp: float | None) -> float:
    from ..datasets._spatialdata import image_mpp

    if mpp is not None:
        return float(mpp)
    found = image_mpp(sdata, image_key)
    table_mpp = table.uns.get("stmorph", {}).get("mpp")
    if found is not None and table_mpp is not None:
        check_agree(
            found,
            float(table_mpp),
            f"the pixel size of images[{image_key!r}] ('um' system)",
            "table.uns['stmorph']['mpp']",
        )
    if found is None:
        found = table_mpp
    if found is None:
        raise InvalidParameterError(
            f"the pixel size of images[{image_key!r}] is unknown: it has no 'um' coordinate system and the table "
            "has no uns['stmorph']['mpp']. Pass `mpp=<µm per pixel of the full-resolution image>`."
        )
    return float(found)


def _from_spatialdata(
    sdata: SpatialData,
    image_key: str | None,
    table_key: str,
    shapes_key: str | None,
    mpp: float | None,
    target_mpp: float,
) -> tuple[AnnData, PatchSource]:
    table = sdata.tables[_one_key(sdata.tables.keys(), table_key, "table", "table_key")]
    image_key = _one_key(sdata.images.keys(), image_key, "image element", "image_key")
    element = sdata.images[image_key]
    mpp0 = _spatialdata_mpp(sdata, image_key, table, mpp)
    shapes_key, own = _spot_shapes(sdata, table, shapes_key)
    if own is None:  # no annotated shapes: obsm["spatial"] holds full-resolution image pixels
        if "spatial" not in table.obsm:
            raise StmorphKeyError(
                "the table annotates no shapes element and has no obsm['spatial']; pass `shapes_key=`."
            )
        centres0 = np.asarray(table.obsm["spatial"], dtype=np.float64)[:, :2]
    else:
        cs = _common_cs(element, sdata.shapes[shapes_key])
        to_image = np.linalg.inv(_affine(element, cs)) @ _affine(sdata.shapes[shapes_key], cs)
        centres0 = own @ to_image[:2, :2].T + to_image[:2, 2]
    levels = _pyramid_levels(element)
    level = _choose_level(levels, mpp0, target_mpp)
    factor = np.array(
        [levels[0].sizes["x"] / levels[level].sizes["x"], levels[0].sizes["y"] / levels[level].sizes["y"]]
    )
    info = {"source": "spatialdata", "image_key": image_key, "table_key": table_key, "level": level, "source_mpp": mpp0}
    if shapes_key is not None:
        info["shapes_key"] = shapes_key
    if sdata.path is not None:  # zarr-backed: the image can be opened again from there
        info["zarr_path"] = str(sdata.path)
    return table, PatchSource(levels[level], centres0 / factor, mpp0 * float(factor[0]), info)


def _visium_mpp(scalefactors: dict, mpp: float | None, library_id: str) -> float:
    if mpp is not None:
        return float(mpp)
    if "microns_per_pixel" in scalefactors:
        return float(scalefactors["microns_per_pixel"])
    if "spot_diameter_fullres" in scalefactors:
        return VISIUM_SPOT_UM / float(scalefactors["spot_diameter_fullres"])
    raise InvalidParameterError(
        f"uns['spatial'][{library_id!r}]['scalefactors'] has neither 'microns_per_pixel' nor "
        "'spot_diameter_fullres'; pass `mpp=<µm per full-resolution pixel>`."
    )


def _from_visium(adata: AnnData, library_id: str | None, mpp: float | None) -> tuple[AnnData, PatchSource]:
    from pathlib import Path

    from ..datasets._her2st import read_rgb

    library_id = _one_key(adata.uns["spatial"].keys(), library_id, "library_id in uns['spatial']", "library_id")
    lib = adata.uns["spatial"][library_id]
    scalefactors = dict(lib.get("scalefactors", {}))
    mpp_full = _visium_mpp(scalefactors, mpp, library_id)
    if "spatial" not in adata.obsm:
        raise StmorphKeyError("adata.obsm['spatial'] (spot centres in full-resolution pixels) not found.")
    centres = np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2]
    info = {"source": "visium", "library_id": library_id, "source_mpp": mpp_full}
    path = lib.get("metadata", {}).get("source_image_path")
    if path and Path(path).is_file():
        return adata, PatchSource(read_rgb(Path(path)), centres, mpp_full, {**info, "image": "fullres"})
    images = lib.get("images", {})
    for name in ("hires", "lowres"):
        scalef = scalefactors.get(f"tissue_{name}_scalef")
        if name in images and scalef:
            logger.info("extract_patches: full-resolution image not found; using the %s image", name)
            image = np.asarray(images[name])
            if image.dtype.kind == "f":  # scanpy may store float images in [0, 1]
                image = np.clip(image * 255 if image.max() <= 1 else image, 0, 255).round().astype(np.uint8)
            return adata, PatchSource(image, centres * scalef, mpp_full / scalef, {**info, "image": name})
    raise StmorphKeyError(
        f"uns['spatial'][{library_id!r}] has no usable image: no existing metadata['source_image_path'] and no "
        "images['hires'/'lowres'] with a matching tissue_<name>_scalef."
    )


def _from_pair(data: tuple, mpp: float | None) -> tuple[AnnData, PatchSource]:
    import anndata as ad
    import pandas as pd

    if len(data) != 2:
        raise InputTypeError(f"a plain input must be an (image, coordinates) pair; found {len(data)} items.")
    image, coords = data
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ShapeMismatchError(f"coordinates must be (n_spots, 2) with x = column, y = row; found {coords.shape}.")
    if mpp is None:
        raise InvalidParameterError(
            "the pixel size of a plain image is unknown; pass `mpp=<µm per pixel>` (e.g. 0.5 for a 20× scan)."
        )
    adata = ad.AnnData(obs=pd.DataFrame(index=pd.Index([str(i) for i in range(len(coords))])))
    adata.obsm["spatial"] = coords[:, :2]
    return adata, PatchSource(image, coords[:, :2], float(mpp), {"source": "array", "source_mpp": float(mpp)})


def _source(
    data: Any, image_key: str | None, table_key: str, shapes_key: str | None, library_id: str | None,
    mpp: float | None, target_mpp: float,
) -> tuple[AnnData, PatchSource]:  # fmt: skip
    from anndata import AnnData
    from spatialdata import SpatialData

    if isinstance(data, SpatialData):
        return _from_spatialdata(data, image_key, table_key, shapes_key, mpp, target_mpp)
    if isinstance(data, AnnData):
        if "spatial" not in data.uns:
            raise StmorphKeyError(
                "the AnnData has no uns['spatial'] (Visium layout); pass a SpatialData object or an "
                "(image, coordinates) pair instead."
            )
        return _from_visium(data, library_id, mpp)
    if isinstance(data, tuple | list):
        return _from_pair(tuple(data), mpp)
    raise InputTypeError(
        f"extract_patches takes a SpatialData, a Visium-style AnnData or an (image, coordinates) pair; "
        f"found {type(data).__name__}."
    )


# --------------------------------------------------------------------------------------------- #
# Public function
# --------------------------------------------------------------------------------------------- #
def extract_patches(
    data: SpatialData | AnnData | tuple[Any, np.ndarray],
    *,
    image_key: str | None = None,
    table_key: str = "table",
    shapes_key: str | None = None,
    library_id: str | None = None,
    mpp: float | None = None,
    target_mpp: float = 0.5,
    patch_size: int = 224,
    store: str = "memory",
    key_added: str = "patches",
    batch_size: int = 256,
    progress: bool = True,
    copy: bool = False,
) -> AnnData:
    """Cut one square H&E patch centred on each spot, at a fixed physical resolution.

    Each patch covers ``patch_size * target_mpp`` µm (default 224 px × 0.5 µm/px = 112 µm, the
    EPS paper's tiles): a window of ``patch_size * target_mpp / mpp`` source pixels is cut around
    the spot centre and resized to ``patch_size`` pixels (Lanczos; copied unchanged when no
    resizing is needed). Parts of a window outside the image are white.

    Parameters
    ----------
    data
        - :class:`~spatialdata.SpatialData`: the image element ``image_key`` and the spots of
          ``tables[table_key]``, placed on the image through the shapes' and image's
          transformations to a common coordinate system (``"global"`` preferred). A multiscale
          image is read at the coarsest level still at least as fine as ``target_mpp``. Without
          annotated shapes, ``obsm["spatial"]`` is taken as full-resolution image pixels.
        - Visium-style :class:`~anndata.AnnData` (``obsm["spatial"]``, ``uns["spatial"][library_id]``):
          the full-resolution image ``metadata["source_image_path"]`` when that file exists, else
          the hires (then lowres) image with its scale factor.
        - ``(image, coordinates)``: an ``(H, W, 3)`` uint8 array and ``(n, 2)`` centres in its
          pixels (x = column, y = row); ``mpp`` is required. A new AnnData is returned.
    image_key, table_key, shapes_key
        SpatialData elements (defaults: the only image; ``"table"``; the shapes the table annotates).
    library_id
        Key in ``uns["spatial"]`` of a Visium AnnData (default: the only one).
    mpp
        µm per pixel of the full-resolution image. Default: SpatialData ``"um"`` coordinate system,
        else ``table.uns["stmorph"]["mpp"]``; Visium ``scalefactors["microns_per_pixel"]``, else
        55 µm / ``spot_diameter_fullres``.
    target_mpp
        µm per pixel of the patches.
    patch_size
        Patch side in pixels.
    store
        ``"memory"`` stores the pixels in ``obsm[key_added]``. ``"lazy"`` stores only the window
        centres (``obsm[f"{key_added}_centres_px"]``) and parameters (for a SpatialData read from a zarr
        store, its path: ``zarr_path``); :func:`stmorph.tl.embed` then reads each batch of patches
        from the image on demand (from that store, or pass it ``image=`` the same SpatialData), so
        memory stays bounded by a batch whatever the slide size — with a zarr/dask-backed (e.g.
        :func:`spatialdata.read_zarr`) image. See :func:`patch_reader`.
    key_added
        ``obsm`` key of the patches and ``uns["stmorph"]["patches"]`` key of the parameters.
    batch_size
        Patches read per batch.
    progress
        Show a progress bar.
    copy
        Write into a copy of the table instead of the table inside ``data``.

    Returns
    -------
    The table :class:`~anndata.AnnData` it wrote into (the one inside ``data`` unless ``copy``;
    a new one for an ``(image, coordinates)`` pair). Sets:

    ``obsm[key_added]`` : uint8 ``(n_spots, patch_size, patch_size, 3)`` (``store="memory"``).
    ``obsm[f"{key_added}_centres_px"]`` : window centres in pixels of the level read (``store="lazy"``).
    ``obs["patch_complete"]`` : False where the window crosses the image edge (white padding).
    ``uns["stmorph"]["patches"][key_added]`` : parameters (``target_mpp``, ``patch_size``,
    ``source_mpp``, ``image_mpp`` and ``level`` read, ``window_px``, ``tile_um``, source).

    Raises
    ------
    OutOfImageError
        Spot centres lie outside the image (the message gives how many).
    InvalidParameterError
        The pixel size is unknown (pass ``mpp=``) or a parameter is out of range.
    StmorphKeyError
        A named element, table or library is missing.
    InconsistentUnitsError
        The image's ``'um'`` coordinate system and ``table.uns['stmorph']['mpp']`` give different pixel sizes.

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.her2st("C2")
    >>> table = st.pp.extract_patches(sdata)
    >>> table.obsm["patches"].shape
    (187, 224, 224, 3)
    """
    check_choice(store, _STORES, "store")
    check_range(target_mpp, "target_mpp", low=0)
    check_range(patch_size, "patch_size", low=1, inclusive=True)
    check_range(batch_size, "batch_size", low=1, inclusive=True)
    if mpp is not None:
        check_range(mpp, "mpp", low=0)
    table, source = _source(data, image_key, table_key, shapes_key, library_id, mpp, target_mpp)
    image = _as_yxc(source.image)
    _check_inside(source.centres, image.shape, table.obs_names)
    window_px = patch_size * target_mpp / source.mpp
    logger.info(
        "extract_patches: %d spots, %.1f µm tiles (%.1f source px at %.3f µm/px → %d px), store=%s",
        len(source.centres), patch_size * target_mpp, window_px, source.mpp, patch_size, store,
    )  # fmt: skip
    params = {**source.info, "store": store}
    if store == "memory":
        patches, complete = read_patches(
            image, source.centres, window_px, patch_size, batch_size=batch_size, progress=progress
        )
        obsm = {key_added: patches}
    else:
        complete = _complete(_window_origins(source.centres, window_px, patch_size)[0], window_px, image.shape)
        params["centres_key"] = f"{key_added}_centres_px"
        obsm = {params["centres_key"]: source.centres}
    if not complete.all():
        logger.info("extract_patches: %d patches cross the image edge (white padding)", int((~complete).sum()))
    params.update(
        target_mpp=float(target_mpp),
        patch_size=int(patch_size),
        image_mpp=float(source.mpp),
        window_px=float(window_px),
        tile_um=float(patch_size * target_mpp),
        n_incomplete=int((~complete).sum()),
    )
    table = table.copy() if copy else table
    commit_outputs(table, obsm=obsm, obs={"patch_complete": complete}, uns={("stmorph", "patches", key_added): params})
    return table


# --------------------------------------------------------------------------------------------- #
# Lazy reading
# --------------------------------------------------------------------------------------------- #
@dataclass
class PatchReader:
    """Reads the patches of a table extracted with ``store="lazy"``, a batch at a time.

    Attributes
    ----------
    image
        ``(H, W, C)`` uint8 array-like (numpy or dask) of the level the windows refer to.
    centres
        ``(n, 2)`` window centres in pixels of ``image``.
    window_px
        Window side in source pixels.
    patch_size
        Patch side in output pixels.
    """

    image: Any
    centres: np.ndarray
    window_px: float
    patch_size: int

    def __len__(self) -> int:
        return len(self.centres)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 ``(len(indices), patch_size, patch_size, 3)`` patches of the spots ``indices``."""
        indices = np.asarray(indices)
        batch = max(len(indices), 1)
        return read_patches(self.image, self.centres[indices], self.window_px, self.patch_size, batch_size=batch)[0]


def lazy_patch_params(adata: AnnData, key: str = "patches") -> dict[str, Any] | None:
    """Parameters of a ``store="lazy"`` extraction under ``key``, or ``None`` when there is none."""
    params = adata.uns.get("stmorph", {}).get("patches", {}).get(key)
    return dict(params) if params is not None and params.get("store") == "lazy" else None


def _lazy_image(adata: AnnData, params: dict[str, Any], image: Any) -> Any:
    from anndata import AnnData
    from spatialdata import SpatialData

    source = params["source"]
    if source == "spatialdata":
        if image is None and "zarr_path" in params:
            from spatialdata import read_zarr

            image = read_zarr(params["zarr_path"], selection=("images",))
        if not isinstance(image, SpatialData):
            raise InputTypeError(
                "these patches were extracted lazily from a SpatialData object that is not stored in a zarr store; "
                "pass it again as `image=`."
            )
        key = _one_key(image.images.keys(), params["image_key"], "image element", "image_key")
        return _pyramid_levels(image.images[key])[int(params["level"])]
    if source == "visium":
        visium = adata if image is None else image
        if not isinstance(visium, AnnData):
            raise InputTypeError("for patches from a Visium AnnData pass `image=` that AnnData (or nothing).")
        _, src = _from_visium(visium, params["library_id"], params["source_mpp"])
        if src.info.get("image") != params.get("image"):
            raise InvalidParameterError(
                f"the patches were extracted from the {params.get('image')!r} image but now the "
                f"{src.info.get('image')!r} image is found; extract them again."
            )
        return src.image
    if image is None or isinstance(image, SpatialData | AnnData):
        raise InputTypeError("these patches were extracted lazily from an image array; pass that array as `image=`.")
    return image


def patch_reader(adata: AnnData, key: str = "patches", image: Any = None) -> PatchReader:
    """A :class:`PatchReader` for the patches extracted from ``adata`` with ``store="lazy"``.

    Parameters
    ----------
    adata
        Table written by :func:`extract_patches` with ``store="lazy"`` and ``key_added=key``.
    key
        ``key_added`` of that extraction.
    image
        The source: the same SpatialData object (e.g. re-opened with :func:`spatialdata.read_zarr`),
        the image array of an ``(image, coordinates)`` extraction, or nothing for a Visium AnnData
        (its images are found again in ``uns["spatial"]``) or for a SpatialData read from a zarr
        store (the store recorded at extraction, ``zarr_path``, is opened again).

    Raises
    ------
    StmorphKeyError
        No lazy extraction under ``key``.
    OutOfImageError
        The image given does not hold the recorded windows (another image or resolution).

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate(50, 10)
    >>> table = st.pp.extract_patches(sdata, store="lazy", progress=False)
    >>> patch_reader(table, image=sdata).read([0, 1]).shape
    (2, 224, 224, 3)
    """
    params = lazy_patch_params(adata, key)
    if params is None:
        raise StmorphKeyError(
            f"adata.uns['stmorph']['patches'][{key!r}] from a store='lazy' extraction not found; run "
            f"`st.pp.extract_patches(..., store='lazy', key_added={key!r})` first."
        )
    centres = np.asarray(adata.obsm[params["centres_key"]], dtype=np.float64)
    array = _as_yxc(_lazy_image(adata, params, image))
    _check_inside(centres, array.shape, adata.obs_names)
    return PatchReader(array, centres, float(params["window_px"]), int(params["patch_size"]))
