"""The ``"hed"`` encoder: hand-crafted stain and texture features, no torch.

Each patch is separated into haematoxylin, eosin and DAB optical densities by colour
deconvolution (Ruifrok & Johnston 2001, :func:`skimage.color.rgb2hed`). At two scales (the patch
as given and a 4× mean-pooled copy) it records, for H, E, DAB and grey intensity, the mean,
standard deviation and 10th/50th/90th percentiles; the mean and standard deviation of the
gradient magnitude of H and grey; and four grey-level co-occurrence statistics of grey (contrast,
homogeneity, energy, correlation; 32 levels, distance 1, horizontal and vertical averaged). The
fraction of tissue pixels (grey < 0.85) completes the vector: :data:`HED_FEATURE_NAMES`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeMismatchError

_CHANNELS = ("H", "E", "DAB", "grey")
_STATS = ("mean", "std", "p10", "p50", "p90")
_GLCM = ("contrast", "homogeneity", "energy", "correlation")
COARSE_FACTOR = 4
"""Mean-pooling factor of the second scale."""
TISSUE_GREY = 0.85
"""Grey level (0–1) below which a pixel counts as tissue."""
GLCM_LEVELS = 32
MIN_PATCH_SIZE = 2 * COARSE_FACTOR
"""Smallest patch side: the coarse copy needs two pixels a side for its gradients."""


def _names() -> list[str]:
    names = []
    for scale in ("fine", "coarse"):
        names += [f"{scale}_{c}_{s}" for c in _CHANNELS for s in _STATS]
        names += [f"{scale}_{c}_grad_{s}" for c in ("H", "grey") for s in ("mean", "std")]
        names += [f"{scale}_glcm_{p}" for p in _GLCM]
    return [*names, "tissue_fraction"]


HED_FEATURE_NAMES: list[str] = _names()


def _pool(images: np.ndarray, factor: int) -> np.ndarray:
    """Mean-pool ``(n, H, W, C)`` by ``factor`` (cropping the remainder)."""
    n, h, w, c = images.shape
    h, w = h // factor * factor, w // factor * factor
    return images[:, :h, :w].reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def _intensity_stats(channels: np.ndarray) -> np.ndarray:
    """(n, H, W, C) → (n, C·5): mean, std, p10, p50, p90 per channel."""
    flat = channels.reshape(channels.shape[0], -1, channels.shape[-1])
    pct = np.percentile(flat, [10, 50, 90], axis=1)  # (3, n, C)
    stats = np.stack([flat.mean(axis=1), flat.std(axis=1), *pct], axis=-1)  # (n, C, 5)
    return stats.reshape(len(flat), -1)


def _gradient_stats(channels: np.ndarray) -> np.ndarray:
    """(n, H, W, C) → (n, C·2): mean and std of the gradient magnitude per channel."""
    gy, gx = np.gradient(channels, axis=(1, 2))
    mag = np.hypot(gx, gy).reshape(channels.shape[0], -1, channels.shape[-1])
    return np.stack([mag.mean(axis=1), mag.std(axis=1)], axis=-1).reshape(len(mag), -1)


def _glcm_stats(grey: np.ndarray) -> np.ndarray:
    """(n, H, W) grey in [0, 1] → (n, 4) co-occurrence statistics."""
    from skimage.feature import graycomatrix, graycoprops

    levels = np.clip((grey * GLCM_LEVELS).astype(np.uint8), 0, GLCM_LEVELS - 1)
    out = np.empty((len(grey), len(_GLCM)))
    for i, img in enumerate(levels):
        glcm = graycomatrix(img, [1], [0, np.pi / 2], levels=GLCM_LEVELS, symmetric=True, normed=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = [graycoprops(glcm, prop).mean() for prop in _GLCM]
    return np.nan_to_num(out, nan=1.0)  # a flat patch has undefined correlation; it is perfectly "correlated"


def _scale_features(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features of one scale from float RGB in [0, 1]; also returns the grey image."""
    from skimage.color import rgb2hed

    hed = rgb2hed(rgb, channel_axis=-1)
    grey = rgb @ np.array([0.2125, 0.7154, 0.0721], dtype=rgb.dtype)
    channels = np.concatenate([hed, grey[..., None]], axis=-1)
    feats = [_intensity_stats(channels), _gradient_stats(channels[..., [0, 3]]), _glcm_stats(grey)]
    return np.concatenate(feats, axis=1), grey


def hed_features(patches: np.ndarray) -> np.ndarray:
    """Stain and texture features of uint8 RGB patches (see the module description).

    Parameters
    ----------
    patches
        uint8 ``(n, P, P, 3)`` patches, ``P`` at least :data:`MIN_PATCH_SIZE` (8).

    Returns
    -------
    float32 array ``(n, len(HED_FEATURE_NAMES))``.

    Raises
    ------
    ShapeMismatchError
        Patches smaller than :data:`MIN_PATCH_SIZE` pixels a side.

    Examples
    --------
    >>> import numpy as np
    >>> from stmorph.models._hed import hed_features, HED_FEATURE_NAMES
    >>> hed_features(np.full((2, 32, 32, 3), 255, np.uint8)).shape == (2, len(HED_FEATURE_NAMES))
    True
    """
    if min(patches.shape[1:3]) < MIN_PATCH_SIZE:
        raise ShapeMismatchError(
            f"encoder 'hed' needs patches of at least {MIN_PATCH_SIZE} x {MIN_PATCH_SIZE} pixels (its coarse scale "
            f"pools {COARSE_FACTOR} x {COARSE_FACTOR}); found {patches.shape[1]} x {patches.shape[2]}. Extract larger "
            "patches (`st.pp.extract_patches(..., patch_size=...)`)."
        )
    rgb = patches.astype(np.float32) / np.float32(255.0)
    fine, grey = _scale_features(rgb)
    coarse, _ = _scale_features(_pool(rgb, COARSE_FACTOR))
    tissue = (grey < TISSUE_GREY).mean(axis=(1, 2))[:, None]
    return np.concatenate([fine, coarse, tissue], axis=1).astype(np.float32)
