"""Generic image I/O shared by the dataset loaders and ``st.pp``: reading RGB files, pixel sizes.

The pixel size of a SpatialData image element is recorded as its ``"um"`` coordinate system, a
uniform scale from image pixels to µm (the layout every stmorph loader writes, see
:mod:`stmorph.datasets._spatialdata`); :func:`image_mpp` reads it back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DamagedFileError, MissingPathError

if TYPE_CHECKING:
    import os

    from spatialdata import SpatialData

MICRON_CS = "um"
"""Name of the coordinate system whose scale records the pixel size in µm."""


@contextmanager
def no_pixel_limit() -> Iterator[None]:
    """Lift PIL's decompression-bomb guard for the duration of the block (whole-slide images exceed it)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 array.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "grey.png")
    >>> Image.fromarray(np.full((4, 6), 7, np.uint8)).save(path)
    >>> read_rgb(path).shape
    (4, 6, 3)
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with no_pixel_limit(), Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, EOFError, SyntaxError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise MissingPathError(f"image file {str(path)!r} does not exist.") from None
        raise DamagedFileError(
            f"image file {str(path)!r} could not be read ({type(err).__name__}: {err}); it is truncated or not "
            "an image. Restore the file (delete it to download a cached dataset again)."
        ) from None


def image_mpp(sdata: SpatialData, image_key: str) -> float | None:
    """Pixel size in µm of ``sdata.images[image_key]`` from its ``"um"`` coordinate system.

    Returns ``None`` when the element has no ``"um"`` coordinate system or it is not a uniform
    scale.

    Examples
    --------
    >>> import stmorph as st
    >>> round(image_mpp(st.datasets.simulate(10, 5, n_planted=2, mpp=0.5), "he"), 2)
    0.5
    """
    from spatialdata.transformations import Scale, get_transformation

    tfs = get_transformation(sdata.images[image_key], get_all=True)
    tf = tfs.get(MICRON_CS)
    if not isinstance(tf, Scale):
        return None
    scale = dict(zip(tf.axes, tf.scale))
    if not np.isclose(scale.get("x", np.nan), scale.get("y", np.nan)):
        return None
    return float(scale["x"])


def _zarr_arrays(data: Any) -> list[Any]:
    """The zarr arrays a dask array reads from directly (``dask.array.from_zarr``), else an empty list."""
    graph = getattr(data, "__dask_graph__", None)
    if graph is None:
        return []
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr comes with spatialdata
        return []
    return [v for v in dict(graph()).values() if isinstance(v, zarr.Array) and v.shape == data.shape]


def _stored_keys(array: Any) -> set[str]:
    """Keys of the chunk (or shard) objects present in the store of a zarr array, relative to the array."""
    from zarr.core.sync import sync

    prefix = array.store_path.path

    async def listing() -> list[str]:
        return [key async for key in array.store.list_prefix(prefix)]

    cut = len(prefix) + 1 if prefix else 0
    return {key[cut:] for key in sync(listing())}


def missing_chunk_boxes(image: Any) -> tuple[np.ndarray, str]:
    """Pixel boxes of the zarr chunks missing from the store an image is read from.

    zarr returns its fill value for a chunk (or shard) whose object is absent from the store, so a
    deleted chunk of an image reads as a black square without any error. This lists the absent
    storage units of the zarr array behind a dask-backed image (``dask.array.from_zarr``, as
    :func:`spatialdata.read_zarr` gives); images held in memory have none.

    Parameters
    ----------
    image
        An xarray DataArray with ``y`` and ``x`` dims (a SpatialData image level), or an array
        whose first two axes are ``y, x``.

    Returns
    -------
    ``boxes``: int ``(m, 4)`` array of ``(y0, y1, x0, x1)`` pixel ranges of the missing units;
    ``where``: the zarr array's store and path ("" when nothing is missing).

    Examples
    --------
    >>> import numpy as np
    >>> missing_chunk_boxes(np.zeros((4, 4, 3), np.uint8))[0].shape
    (0, 4)
    """
    dims = tuple(image.dims) if hasattr(image, "dims") else ("y", "x")
    data = image.data if hasattr(image, "dims") else image
    none = np.zeros((0, 4), dtype=np.int64), ""
    arrays = _zarr_arrays(data)
    if len(arrays) != 1 or arrays[0].nchunks_initialized == arrays[0].nchunks:
        return none
    array = arrays[0]
    unit = array.shards or array.chunks
    grid = [range(-(-size // step)) for size, step in zip(array.shape, unit)]
    present = _stored_keys(array)
    yi, xi = dims.index("y"), dims.index("x")
    boxes = {
        (c[yi] * unit[yi], min((c[yi] + 1) * unit[yi], array.shape[yi]),
         c[xi] * unit[xi], min((c[xi] + 1) * unit[xi], array.shape[xi]))
        for c in itertools.product(*grid)
        if array.metadata.encode_chunk_key(c) not in present
    }  # fmt: skip
    return np.array(sorted(boxes), dtype=np.int64).reshape(-1, 4), f"{array.store} ({array.path or 'root'})"
