"""Cut one image patch per spot: ``st.pp.extract_patches``.

The input is turned into a :class:`~stmorph.pp._sources.PatchSource` (:mod:`._sources`); the
windows are read by :func:`~stmorph.pp._windows.read_patches` (:mod:`._windows`), now
(``store="memory"``) or batch by batch later (``store="lazy"``, :mod:`._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import commit_outputs
from .._keys import Key
from .._logging import logger
from .._validation import InvalidParameterError, check_bool, check_choice, check_int, check_range, checks_keys
from ._lazy import PatchReader, sample_record
from ._sources import patch_source, tile_mpp
from ._tissue import tissue_mask, window_fractions
from ._windows import as_yxc, check_inside, check_stored, read_patches, window_origins, windows_inside
from ._xenium import cell_patch_um, is_xenium, xenium_source

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ._sources import PatchSource

MAX_PATCH_SIZE = 4096
"""Largest ``patch_size`` in pixels (one 4096-px RGB patch is 48 MiB)."""
MAX_MPP = 1e4
"""Largest pixel size in µm accepted for ``mpp`` / ``target_mpp`` (1 cm per pixel)."""

_STORES = ("memory", "lazy")


MAX_WINDOW_BYTES = 2**30
"""Largest source window one patch may read (1 GiB of RGB: a side of ~18,900 px)."""


def check_window(window_px: float, tile_um: float, image_shape: tuple[int, ...]) -> None:
    """Raise a named error when one patch's source window could not be held in memory.

    Examples
    --------
    >>> check_window(224.0, 112.0, (1000, 1000, 3))
    >>> check_window(2e5, 1e5, (200, 200, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stmorph.errors.InvalidParameterError: a 1e+05 µm patch is a 200000 × 200000 px window ..., 112 GiB per patch; ...
    """
    if 3 * window_px**2 > MAX_WINDOW_BYTES:
        raise InvalidParameterError(
            f"a {tile_um:.3g} µm patch is a {window_px:.0f} × {window_px:.0f} px window of the image "
            f"({image_shape[0]} × {image_shape[1]} px), {3 * window_px**2 / 2**30:.0f} GiB per patch; choose a "
            "smaller patch_um or target_mpp."
        )


def _tissue_fraction(source: PatchSource, image: Any, window_px: float, patch_size: int) -> tuple[np.ndarray, float]:
    """Tissue fraction of each spot's window and the saturation threshold of the mask."""
    overview = image if source.overview is None else as_yxc(source.overview)
    found = tissue_mask(overview, width=image.shape[1])
    origins = window_origins(source.centres, window_px, patch_size)[0]
    return window_fractions(found, origins, window_px), found.threshold


@checks_keys("image_key", "table_key", "shapes_key", "library_id", "spatial_key", "key_added")
def extract_patches(
    data: SpatialData | AnnData | tuple[Any, np.ndarray],
    *,
    image_key: str | None = None,
    table_key: str | None = None,
    bin_size: int | None = None,
    shapes_key: str | None = None,
    library_id: str | None = None,
    spatial_key: str = Key.obsm.spatial,
    mpp: float | None = None,
    target_mpp: float | None = None,
    patch_size: int = 224,
    patch_um: float | None = None,
    store: str = "memory",
    key_added: str = "patches",
    batch_size: int = 256,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Cut one square H&E patch centred on each spot, at a fixed physical resolution.

    Each patch covers ``patch_um = patch_size * target_mpp`` µm (default 224 px × 0.5 µm/px = 112 µm,
    the EPS paper's tiles; 48 µm for Xenium cells): a window of ``patch_um / mpp`` source pixels is
    cut around the spot centre and resized to ``patch_size`` pixels (Lanczos; copied unchanged when no
    resizing is needed). Parts of a window outside the image are white.

    Parameters
    ----------
    data
        - :class:`~spatialdata.SpatialData`: the image element ``image_key`` and the spots of
          ``tables[table_key]``, placed on the image through the shapes' and image's
          transformations to a common coordinate system (``"global"`` preferred). A multiscale
          image is read at the coarsest level still at least as fine as ``target_mpp``. Without
          annotated shapes, ``obsm[spatial_key]`` is taken as full-resolution image pixels.
        - Visium-style :class:`~anndata.AnnData` (``obsm[spatial_key]``, ``uns["spatial"][library_id]``):
          the full-resolution image ``metadata["source_image_path"]`` when that file exists, else
          the hires (then lowres) image with its scale factor.
        - Xenium :class:`~spatialdata.SpatialData` (``spatialdata_io.xenium(..., cells_as_circles=True,
          aligned_images=True)``, recognised by ``sdata.attrs["spatialdata_io_reader"]`` or a table
          annotating ``cell_circles``/``cell_labels``): the cells of its table (or the pseudo-spots
          of :func:`~stmorph.pp.pseudo_spots`, ``table_key=``) on the post-run H&E, placed by the
          H&E's alignment (its affine to ``"global"``) and the cells' µm scale; the H&E's pixel size
          is read from that product (``mpp_from="xenium_alignment"``). The DAPI morphology images are
          never used. ``bin_size``, ``shapes_key`` and ``library_id`` do not apply.
        - ``(image, coordinates)``: an ``(H, W, 3)`` uint8 array and ``(n, 2)`` centres in its
          pixels (x = column, y = row); ``mpp`` is required. A new AnnData is returned (the centres in
          ``obsm[spatial_key]``).
    image_key
        SpatialData image element. Default: the only one, else the finest image that shares a
        coordinate system with the spot shapes (a ``spatialdata_io.visium`` full-resolution image
        before its hires and lowres images); the choice is logged and recorded (``image_key``).
    table_key
        SpatialData table. Default: the only one; for a ``spatialdata_io.visium_hd`` object (tables
        ``square_<NNN>um``), the table of ``bin_size``.
    bin_size
        Visium HD bin size in µm (e.g. 8 or 16), selecting the table ``square_<NNN>um``. Default: 16 µm
        when several bin tables are present (an error lists the bins when 16 µm is not among them).
    shapes_key
        SpatialData shapes of the spots. Default: the shapes the table annotates.
    library_id
        Key in ``uns["spatial"]`` of a Visium AnnData (default: the only one).
    spatial_key
        Key in ``obsm`` of the spot centres in full-resolution pixels (as squidpy's ``spatial_key``):
        read from a Visium AnnData or a SpatialData table without annotated shapes.
    mpp
        µm per pixel of the full-resolution image. Default, for a SpatialData, in this order: the
        image's ``"um"`` coordinate system; ``table.uns["stmorph"]["dataset"]["mpp"]``; the table's
        ``uns["spatial"][library]["scalefactors"]["microns_per_pixel"]``; Visium spot circles (55 µm
        diameter); Visium HD bin squares (side = the bin size of the table's ``square_<NNN>um``
        name). For a Visium AnnData: ``scalefactors["microns_per_pixel"]``, else 55 µm /
        ``spot_diameter_fullres``. The source used is logged and recorded (``mpp_from``).
    target_mpp
        µm per pixel of the patches. Default 0.5, or ``patch_um / patch_size`` when ``patch_um`` is given
        or the table holds Xenium cells.
    patch_size
        Patch side in pixels.
    patch_um
        Tile side in µm (instead of ``target_mpp``). Default for Xenium cells: 48 µm (about four cell
        diameters, so a patch holds the cell and its neighbours; 224 px of it are 0.21 µm/px, the
        pixel size of a 40× scan); otherwise ``patch_size × target_mpp`` (112 µm), also for Xenium
        pseudo-spots, as HEST-1k cuts them.
    store
        ``"memory"`` stores the pixels in ``obsm[key_added]``. ``"lazy"`` stores only the window
        centres (``obsm[f"{key_added}_centres_px"]``) and parameters (for a SpatialData read from a zarr
        store, its path: ``zarr_path``); :func:`stmorph.tl.embed` then reads each batch of patches
        from the image on demand (from that store, or pass it ``image=`` the same SpatialData), so
        memory stays bounded by a batch whatever the slide size — with a zarr/dask-backed (e.g.
        :func:`spatialdata.read_zarr`) image. See :func:`stmorph.pp.patch_reader`.
    key_added
        ``obsm`` key of the patches and ``uns["stmorph"]["patches"]`` key of the parameters.
    batch_size
        Patches read per batch.
    progress
        Show a progress bar.
    copy
        Write into a copy of the table (``tables[table_key]`` of a SpatialData, or the Visium
        AnnData) and return it, leaving ``data`` unchanged.

    Returns
    -------
    ``None`` if ``copy=False``: the outputs are written into ``sdata.tables[table_key]`` or the
    Visium AnnData. With ``copy=True``, the new table :class:`~anndata.AnnData` (SpatialData in,
    AnnData out: the image is not copied). An ``(image, coordinates)`` pair has no table to write
    into, so the new AnnData is always returned. Sets:

    ``obsm[key_added]`` : uint8 ``(n_spots, patch_size, patch_size, 3)`` (``store="memory"``).
    ``obsm[f"{key_added}_centres_px"]`` : window centres in pixels of the level read (``store="lazy"``).
    ``obs["patch_complete"]`` : False where the window crosses the image edge (white padding).
    ``obs["tissue_fraction"]`` : share of each window on tissue (0–1; the part outside the image
    counts as glass), from a saturation + Otsu tissue mask of the slide (as HEST, sopa and squidpy
    segment tissue; :mod:`stmorph.pp._tissue`), the same with either ``store``. Drop background
    and edge patches with e.g. ``adata[adata.obs["tissue_fraction"] > 0.5]``.
    ``uns["stmorph"]["patches"][key_added]`` : parameters (``target_mpp``, ``patch_size``,
    ``source_mpp``, ``image_mpp`` and ``level`` read, for Xenium ``unit`` (``"cells"`` or ``"pseudo_spots"``)
    and ``spatial_mpp`` (1: ``obsm["spatial"]`` is in µm), ``window_px``, ``tile_um``, source,
    ``tissue_threshold`` (the mask's saturation threshold, 0–255); for a
    SpatialData the ``image_key``, ``table_key``, ``mpp_from`` and, for Visium HD, ``bin_size_um``;
    ``store="lazy"``: ``centres_key``, and ``sample_obs``, ``sample_centres`` and ``sample_hashes``
    (8 sample spots, their window centres and a hash of each one's pixels) by which :func:`patch_reader`
    refuses another image of the same size or moved window centres, also for a subset of the table).

    Raises
    ------
    OutOfImageError
        Spot centres lie outside the image (the message gives how many; for Xenium, after the alignment).
    AlignmentError
        A Xenium H&E has no alignment to the cells (read without its alignment file).
    InvalidParameterError
        The pixel size is unknown (pass ``mpp=``; e.g. shapes of neither circles nor bin squares) or
        a parameter is out of range.
    StmorphKeyError
        A named element, table or library is missing; several tables and no ``table_key``/``bin_size``
        to choose; no table of ``bin_size`` (the message lists the bins present).
    InconsistentUnitsError
        The image's ``'um'`` coordinate system and ``table.uns['stmorph']['dataset']['mpp']`` give
        different pixel sizes.

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate(50, 10)  # 112 µm tiles at 1 µm/px, 50 spots
    >>> st.pp.extract_patches(sdata)
    >>> sdata.tables["table"].obsm["patches"].shape  # 112 µm windows at 0.5 µm/px
    (50, 224, 224, 3)
    >>> st.pp.extract_patches(sdata, patch_size=64, key_added="small", copy=True).obsm["small"].shape
    (50, 64, 64, 3)
    """
    check_choice(store, _STORES, "store")
    check_int(patch_size, "patch_size", low=1, high=MAX_PATCH_SIZE)
    for value, name in ((target_mpp, "target_mpp"), (patch_um, "patch_um")):
        if value is not None:
            check_range(value, name, low=0, high=MAX_MPP * patch_size if name == "patch_um" else MAX_MPP)
    check_int(batch_size, "batch_size", low=1)
    if mpp is not None:
        check_range(mpp, "mpp", low=0, high=MAX_MPP)
    check_bool(progress, "progress")
    check_bool(copy, "copy")
    xenium = is_xenium(data)
    target_mpp = tile_mpp(target_mpp, patch_um, patch_size, cell_patch_um(data, table_key) if xenium else None)
    if xenium:
        table, source = xenium_source(data, image_key, table_key, mpp, target_mpp)
    else:
        table, source = patch_source(
            data, image_key, table_key, bin_size, shapes_key, library_id, mpp, target_mpp, spatial_key
        )
    image = as_yxc(source.image)
    check_inside(source.centres, image.shape, table.obs_names)
    window_px = patch_size * target_mpp / source.mpp
    check_window(window_px, patch_size * target_mpp, image.shape)
    check_stored(source.image, source.centres, window_px, patch_size, table.obs_names)
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
        complete = windows_inside(source.centres, window_px, patch_size, image.shape)
        params["centres_key"] = Key.obsm.patch_centres(key_added)
        params.update(sample_record(PatchReader(image, source.centres, window_px, patch_size), table.obs_names))
        obsm = {params["centres_key"]: source.centres}
    tissue = _tissue_fraction(source, image, window_px, patch_size)
    if not complete.all():
        logger.info("extract_patches: %d patches cross the image edge (white padding)", int((~complete).sum()))
    params.update(
        target_mpp=float(target_mpp),
        patch_size=int(patch_size),
        image_mpp=float(source.mpp),
        window_px=float(window_px),
        tile_um=float(patch_size * target_mpp),
        n_incomplete=int((~complete).sum()),
        tissue_threshold=tissue[1],
    )
    table = table.copy() if copy else table
    commit_outputs(
        table,
        obsm=obsm,
        obs={Key.obs.patch_complete: complete, Key.obs.tissue_fraction: tissue[0]},
        uns={Key.uns.tool("patches", key_added): params},
    )
    return table if copy or isinstance(data, tuple | list) else None  # a pair has no table to write into
