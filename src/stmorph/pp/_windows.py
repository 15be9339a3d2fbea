"""Reading square windows around spot centres from an image array: :func:`read_patches`.

:func:`read_patches` cuts and resamples the windows in batches; it works on numpy and dask arrays
alike (a batch's dask slices are computed together), which is what a lazy reader needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._image import missing_chunk_boxes
from .._validation import InputTypeError, OutOfImageError, ShapeMismatchError, format_keys
from ..errors import DamagedFileError

PAD_VALUE = 255
"""Fill value (white) for the part of a patch that lies outside the image."""


def as_yxc(image: Any) -> Any:
    """Channels-last, 3-channel view of an image array-like (xarray → its numpy/dask data)."""
    if hasattr(image, "dims") and hasattr(image, "transpose"):  # xarray DataArray with named dims
        image = image.transpose("y", "x", "c").data
    if not all(hasattr(image, a) for a in ("ndim", "shape", "dtype", "__getitem__")):
        raise InputTypeError(
            f"the image must be an array (numpy, dask, zarr or an xarray DataArray); found {type(image).__name__}. "
            "Convert it first, e.g. `np.asarray(image, dtype=np.uint8)`."
        )
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


def read_pixels(regions: Sequence[Any], what: str) -> list[np.ndarray]:
    """Turn image regions (numpy or dask) into numpy arrays, computing dask ones together.

    Raises
    ------
    DamagedFileError
        The image's data (``what``, e.g. "a batch of 8 patch windows") could not be read: a damaged
        chunk or tile of its file or store. The message gives the reader's error, which is chained.

    Examples
    --------
    >>> read_pixels([np.zeros((2, 2, 3), np.uint8)], "a window")[0].shape
    (2, 2, 3)
    """
    if not (regions and hasattr(regions[0], "dask")):
        return [np.asarray(r) for r in regions]
    import dask

    try:
        # the local threaded scheduler: inside a dask.distributed task (st.tl.embed_cohort with a client) the
        # default scheduler is the cluster, whose threads are busy with the slides' tasks: a deadlock
        return [np.asarray(r) for r in dask.compute(*regions, scheduler="threads")]
    except MemoryError:
        raise
    except Exception as err:  # whatever the storage layer raises (OSError, a codec's RuntimeError, ...)
        raise DamagedFileError(
            f"the image data of {what} could not be read ({type(err).__name__}: {err}): a chunk or tile of its "
            "file or store is damaged or unreadable. Restore the image (to embed lazily read patches anyway, "
            "`st.tl.embed(..., on_error='skip')` embeds the spots whose patches can be read)."
        ) from err


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]


def _resample(canvas: np.ndarray, box: tuple[float, float, float, float], out_size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(canvas).resize((out_size, out_size), Image.Resampling.LANCZOS, box=box))


def window_origins(centres_px: np.ndarray, size_px: float, out_size: int) -> tuple[np.ndarray, bool]:
    """Top-left corners ``(n, 2)`` of the windows, snapped to whole pixels when no resizing is needed."""
    exact = abs(size_px - out_size) < 1e-6
    origins = np.asarray(centres_px, dtype=np.float64).reshape(-1, 2) - size_px / 2
    return (np.round(origins) if exact else origins), exact


def _complete(origins: np.ndarray, size_px: float, shape: tuple[int, ...]) -> np.ndarray:
    """True where the whole window lies inside an image of ``shape`` ``(H, W, ...)``."""
    h, w = shape[:2]
    return (origins >= 0).all(axis=1) & (origins[:, 0] + size_px <= w) & (origins[:, 1] + size_px <= h)


def windows_inside(centres_px: np.ndarray, size_px: float, out_size: int, shape: tuple[int, ...]) -> np.ndarray:
    """True where the window :func:`read_patches` cuts around a centre lies wholly inside an image of ``shape``."""
    return _complete(window_origins(centres_px, size_px, out_size)[0], size_px, shape)


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

    Raises
    ------
    DamagedFileError
        The image data of a batch cannot be read (see :func:`read_pixels`).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    >>> patches, complete = read_patches(img, np.array([[50.0, 40.0]]), 10, 10)
    >>> bool((patches[0] == img[35:45, 45:55]).all()), bool(complete[0])
    (True, True)
    """
    from tqdm.auto import tqdm

    image = as_yxc(image)
    origins, exact = window_origins(centres_px, size_px, out_size)
    complete = _complete(origins, size_px, image.shape)
    margin = 0 if exact else _resample_margin(size_px / out_size)
    span = int(np.ceil(size_px)) + 2 * margin + (0 if exact else 1)
    patches = np.empty((len(origins), out_size, out_size, 3), dtype=np.uint8)
    starts = range(0, len(origins), batch_size)
    for start in tqdm(starts, desc="reading patches", disable=not progress, leave=False):
        idx = np.arange(start, min(start + batch_size, len(origins)))
        corners = np.floor(origins[idx]).astype(np.int64) - margin
        sliced = [_region(image, x0, y0, x0 + span, y0 + span) for x0, y0 in corners]
        pixels = read_pixels([s[0] for s in sliced], f"a batch of {len(idx)} patch window(s)")
        for i, (x0, y0), (py0, py1, px0, px1), pix in zip(idx, corners, (s[1] for s in sliced), pixels):
            canvas = np.full((span, span, 3), PAD_VALUE, dtype=np.uint8)
            canvas[py0:py1, px0:px1] = _to_rgb(pix)
            if exact:
                patches[i] = canvas[:out_size, :out_size]
            else:
                bx, by = origins[i, 0] - x0, origins[i, 1] - y0
                patches[i] = _resample(canvas, (bx, by, bx + size_px, by + size_px), out_size)
    return patches, complete


def check_inside(centres: np.ndarray, shape: tuple[int, ...], names: Sequence[str]) -> None:
    h, w = shape[:2]
    outside = ~((centres[:, 0] >= 0) & (centres[:, 0] < w) & (centres[:, 1] >= 0) & (centres[:, 1] < h))
    if outside.any():
        bad = np.flatnonzero(outside)
        raise OutOfImageError(
            f"{len(bad)} of {len(centres)} spot centres lie outside the image ({w} × {h} px), e.g. "
            f"{format_keys([str(names[i]) for i in bad], 5)} at (x, y) = {centres[bad[0]].round(1).tolist()}. "
            "Check that the coordinates are pixels of this image (x = column, y = row) at its resolution, "
            "or drop those spots."
        )


@dataclass(frozen=True)
class MissingChunks:
    """Pixel boxes ``(y0, y1, x0, x1)`` of the chunks missing from an image's zarr store, and where the store is.

    zarr fills an absent chunk with its fill value, so a window over a deleted chunk would come back
    as a black patch (see :func:`stmorph._image.missing_chunk_boxes`); :meth:`check` refuses it.

    Examples
    --------
    >>> hole = MissingChunks(np.array([[0, 128, 0, 128]]), "slide.zarr")
    >>> hole.check(np.array([[200.0, 200.0]]), 16, 16, ["far"])  # a window away from the hole reads
    >>> try:
    ...     hole.check(np.array([[60.0, 60.0]]), 16, 16, ["near"])
    ... except DamagedFileError as err:
    ...     print(str(err)[:40])
    1 of 1 patch windows (e.g. ['near']) rea
    """

    boxes: np.ndarray
    where: str = ""

    @classmethod
    def of(cls, image: Any) -> MissingChunks:
        """The missing chunks of ``image`` (none for an image held in memory)."""
        return cls(*missing_chunk_boxes(image))

    def check(self, centres_px: np.ndarray, size_px: float, out_size: int, names: Sequence[str]) -> None:
        """Raise :class:`~stmorph.errors.DamagedFileError` if a window (spot ``names``) reads a missing chunk.

        The boxes compared are the pixels :func:`read_patches` reads, resampling margin included.
        """
        if not len(self.boxes):
            return
        hits = _overlaps(self.boxes, centres_px, size_px, out_size)
        bad = np.flatnonzero(hits.any(axis=1))
        if len(bad):
            raise self._error(hits, bad, names)

    def _error(self, hits: np.ndarray, bad: np.ndarray, names: Sequence[str]) -> DamagedFileError:
        y0, y1, x0, x1 = self.boxes[np.flatnonzero(hits.any(axis=0))[0]]
        return DamagedFileError(
            f"{len(bad)} of {len(hits)} patch windows (e.g. {format_keys([str(names[i]) for i in bad], 5)}) "
            f"read {int(hits.any(axis=0).sum())} of the {len(self.boxes)} image chunks missing from the zarr store "
            f"{self.where}, e.g. pixels y {y0}:{y1}, x {x0}:{x1}; zarr would return its fill value there "
            "(black patches). Restore the store from a copy; if those regions really are blank (a writer that "
            "skips chunks equal to the fill value), write the image again with "
            "`zarr.config.set({'array.write_empty_chunks': True})`."
        )


def _overlaps(boxes: np.ndarray, centres_px: np.ndarray, size_px: float, out_size: int) -> np.ndarray:
    """(windows × boxes) bool: the pixels :func:`read_patches` reads for a window overlap a ``(y0, y1, x0, x1)`` box."""
    origins, exact = window_origins(centres_px, size_px, out_size)
    margin = 0 if exact else _resample_margin(size_px / out_size)
    lo = np.floor(origins) - margin
    hi = lo + np.ceil(size_px) + 2 * margin + (0 if exact else 1)
    # overlap of [lo, hi) with [y0, y1) and [x0, x1); origins are (x, y)
    over_x = (lo[:, None, 0] < boxes[None, :, 3]) & (hi[:, None, 0] > boxes[None, :, 2])
    over_y = (lo[:, None, 1] < boxes[None, :, 1]) & (hi[:, None, 1] > boxes[None, :, 0])
    return over_x & over_y


def check_stored(image: Any, centres_px: np.ndarray, size_px: float, out_size: int, names: Sequence[str]) -> None:
    """Raise :class:`~stmorph.errors.DamagedFileError` if a window reads a chunk missing from the image's zarr store.

    See :class:`MissingChunks`.
    """
    MissingChunks.of(image).check(centres_px, size_px, out_size, names)
