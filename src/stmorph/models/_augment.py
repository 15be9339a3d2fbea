"""The papers' paired flip/rotation augmentation of image patches (BLEEP, HECLIP, ST-Net)."""

from __future__ import annotations

import numpy as np


def flip_rotate(patches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomly flip and rotate each patch, as in BLEEP's and HECLIP's ``transform``.

    Each patch is flipped horizontally with probability 1/2, vertically with probability 1/2, then
    rotated by a multiple of 90° drawn uniformly from {0°, 90°, 180°, 270°}. The expression paired
    with the patch is unchanged (the augmentation is label-preserving).

    Parameters
    ----------
    patches
        ``(n, P, P, C)`` square patches, channels last.
    rng
        Source of randomness (seed it for reproducible training).

    Returns
    -------
    A new array of the same shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)
    >>> out = flip_rotate(p, np.random.default_rng(0))
    >>> out.shape, sorted(out[0].ravel()) == sorted(p[0].ravel())
    ((2, 2, 2, 1), True)
    """
    out = np.empty_like(patches)
    hflip = rng.random(len(patches)) < 0.5
    vflip = rng.random(len(patches)) < 0.5
    turns = rng.integers(0, 4, size=len(patches))
    for i, patch in enumerate(patches):
        if hflip[i]:
            patch = patch[:, ::-1]
        if vflip[i]:
            patch = patch[::-1]
        out[i] = np.rot90(patch, k=int(turns[i]), axes=(0, 1))
    return out


def dihedral_views(patches: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of every patch (ST-Net's ``--average`` test-time augmentation).

    Examples
    --------
    >>> import numpy as np
    >>> views = dihedral_views(np.arange(4, dtype=np.uint8).reshape(1, 2, 2, 1))
    >>> len(views), len({v.tobytes() for v in views})
    (8, 8)
    """
    flipped = patches[:, :, ::-1]
    return [np.ascontiguousarray(np.rot90(p, k=k, axes=(1, 2))) for p in (patches, flipped) for k in range(4)]
