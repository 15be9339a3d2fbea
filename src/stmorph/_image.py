"""Generic image I/O shared by the dataset loaders and ``st.pp``: reading RGB files, pixel sizes.

The pixel size of a SpatialData image element is recorded as its ``"um"`` coordinate system, a
uniform scale from image pixels to µm (the layout every stmorph loader writes, see
:mod:`stmorph.datasets._spatialdata`); :func:`image_mpp` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

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
