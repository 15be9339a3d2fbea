"""Tissue flags of patches: a saturation + Otsu tissue mask and the tissue fraction of each window.

H&E tissue is coloured and glass is white or grey, so the saturation channel separates them; like
HEST (``segment_tissue``), sopa (``tissue_segmentation``) and squidpy (``segment``), the mask is
saturation above its Otsu threshold, computed on a thumbnail of the slide after a median filter.
The fraction of each patch window covered by the mask comes from the mask's summed-area table
(one lookup per window), so it costs the same for in-memory and lazily read patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._windows import read_pixels

MASK_SIDE = 2048
"""Longest side (pixels) of the thumbnail the tissue mask is computed on."""
HOLE_FRACTION = 1e-3
"""Holes in the mask smaller than this share of the thumbnail are filled (pale nuclei-free areas inside tissue)."""
MIN_SATURATION = 20
"""Lowest saturation (0–255) counted as tissue, whatever Otsu finds (a blank slide has no tissue)."""


@dataclass
class TissueMask:
    """A boolean tissue mask of an image and its scale.

    Attributes
    ----------
    mask
        ``(h, w)`` bool, True on tissue.
    scale
        Mask pixels per image pixel.
    threshold
        Saturation (0–255) above which a mask pixel is tissue.
    """

    mask: np.ndarray
    scale: float
    threshold: float


def _thumbnail(image: Any, max_side: int) -> np.ndarray:
    """Every ``step``-th pixel of an ``(H, W, C)`` array-like (numpy or dask), at most ``max_side`` wide."""
    step = max(1, int(np.ceil(max(image.shape[:2]) / max_side)))
    thumb = read_pixels([image[::step, ::step]], "its thumbnail (for the tissue mask)")[0]
    if thumb.shape[-1] == 1:
        thumb = np.repeat(thumb, 3, axis=-1)
    return thumb[..., :3]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of uint8 RGB pixels, scaled to 0–255 (uint8).

    Examples
    --------
    >>> saturation(np.array([[[255, 255, 255], [200, 100, 100]]], dtype=np.uint8)).tolist()
    [[0, 127]]
    """
    rgb = rgb.astype(np.int32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(high > 0, (high - low) * 255 // np.maximum(high, 1), 0).astype(np.uint8)


def tissue_mask(image: Any, *, width: int | None = None, max_side: int = MASK_SIDE) -> TissueMask:
    """Tissue mask of an H&E image: median-filtered saturation above ``max(Otsu, MIN_SATURATION)``.

    The mask is then closed (disk of radius 2) and its holes smaller than :data:`HOLE_FRACTION` of
    the thumbnail filled, as HEST and sopa do.

    Parameters
    ----------
    image
        ``(H, W, C)`` uint8 array-like (numpy or dask), RGB(A) or grey: the image, or a coarser
        level of it.
    width
        Width in pixels of the image the mask is for (default: ``image``'s own), so that a coarser
        pyramid level gives a mask of the finer one.
    max_side
        Longest side of the thumbnail the mask is computed on.

    Examples
    --------
    >>> img = np.full((100, 100, 3), 245, np.uint8)
    >>> img[20:60, 30:90] = (180, 90, 150)  # a pink tissue block on white glass
    >>> found = tissue_mask(img)
    >>> round(float(found.mask.mean()), 2), found.scale
    (0.24, 1.0)
    """
    from scipy import ndimage
    from skimage.filters import median, threshold_otsu
    from skimage.morphology import disk

    thumb = _thumbnail(image, max_side)
    sat = median(saturation(thumb), disk(2))
    otsu = float(threshold_otsu(sat)) if sat.min() < sat.max() else 0.0
    threshold = max(otsu, float(MIN_SATURATION))
    pad = 2  # closing treats the outside as background; pad by repeating the edge so the border is not eroded
    padded = np.pad(sat > threshold, pad, mode="edge")
    mask = ndimage.binary_closing(padded, structure=disk(pad))[pad:-pad, pad:-pad]
    holes, n_holes = ndimage.label(~mask)
    sizes = np.bincount(holes.ravel(), minlength=n_holes + 1)
    small = sizes < HOLE_FRACTION * sat.size
    small[0] = False  # label 0 is the tissue itself
    mask |= small[holes]
    return TissueMask(mask, thumb.shape[1] / (width or image.shape[1]), threshold)


def window_fractions(found: TissueMask, origins: np.ndarray, size_px: float) -> np.ndarray:
    """Fraction of each square window covered by tissue (the part outside the image counts as background).

    Parameters
    ----------
    found
        The image's :class:`TissueMask`.
    origins
        ``(n, 2)`` top-left corners ``(x, y)`` of the windows in image pixels.
    size_px
        Window side in image pixels.

    Examples
    --------
    >>> mask = TissueMask(np.eye(4, dtype=bool).repeat(2, 0).repeat(2, 1), 0.5, 30.0)  # 8 × 8, diagonal blocks
    >>> window_fractions(mask, np.array([[0.0, 0.0], [8.0, 0.0]]), 8).tolist()
    [0.5, 0.0]
    """
    h, w = found.mask.shape
    integral = np.pad(found.mask.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    lo = np.round(np.asarray(origins, dtype=np.float64) * found.scale).astype(np.int64)
    side = max(1, round(size_px * found.scale))
    x0, y0 = np.clip(lo[:, 0], 0, w), np.clip(lo[:, 1], 0, h)
    x1, y1 = np.clip(lo[:, 0] + side, 0, w), np.clip(lo[:, 1] + side, 0, h)
    covered = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (covered / side**2).astype(np.float32)
