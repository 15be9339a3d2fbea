"""Stain normalisation of H&E patches (Macenko 2009; Reinhard et al. 2001) through torchstain's numpy backend.

:func:`stain_normalizer` fits a normaliser on reference patches; :class:`StainNormalizer` applies it to
each patch of a batch as the patches are read (``st.tl.embed(stain_norm=...)``), so the lazy path
keeps memory bounded by a batch and the work runs in the reader threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._optional import import_optional
from .._validation import InputTypeError, InvalidParameterError, check_choice

STAIN_METHODS = ("macenko", "reinhard")
MIN_STAINED = 0.01
"""Least share of stained pixels (optical density ≥ 0.15 in every channel, Macenko's threshold) to normalise a patch."""


def stained_fraction(image: np.ndarray) -> float:
    """Share of the pixels whose optical density (light intensity 240, as torchstain) is ≥ 0.15 in every channel.

    Examples
    --------
    >>> import numpy as np
    >>> stained_fraction(np.full((4, 4, 3), 255, np.uint8)), stained_fraction(np.full((4, 4, 3), 90, np.uint8))
    (0.0, 1.0)
    """
    density = -np.log((image.reshape(-1, 3).astype(np.float64) + 1) / 240)
    return float((density >= 0.15).all(axis=1).mean())


def _torchstain() -> Any:
    """torchstain's numpy normalisers (no torch or tensorflow needed), an optional dependency."""
    return import_optional("torchstain.numpy.normalizers", package="torchstain", extra="stain", needed_for="stain_norm")


def _as_image(reference: Any) -> np.ndarray:
    """uint8 ``(H, W, 3)`` image of the reference: an image, or patches ``(n, P, P, 3)`` stacked vertically."""
    reference = np.asarray(reference)
    if reference.dtype != np.uint8 or reference.ndim not in (3, 4) or reference.shape[-1] != 3:
        raise InputTypeError(
            "stain_reference must be uint8 RGB: an (H, W, 3) image or (n, P, P, 3) patches; "
            f"found {reference.dtype} {reference.shape}."
        )
    return reference.reshape(-1, *reference.shape[-2:]) if reference.ndim == 4 else reference


def _reference_params(method: str, fitted: Any) -> dict[str, Any]:
    if method == "macenko":
        return {
            "HERef": np.asarray(fitted.HERef, float).tolist(),
            "maxCRef": np.asarray(fitted.maxCRef, float).tolist(),
        }
    return {"target_means": np.asarray(fitted.target_means, float).tolist(),
            "target_stds": np.asarray(fitted.target_stds, float).tolist()}  # fmt: skip


@dataclass
class StainNormalizer:
    """A fitted torchstain normaliser applied to every patch of a batch.

    A patch whose stains cannot be estimated (fewer than :data:`MIN_STAINED` stained pixels, e.g.
    blank glass) is passed through unchanged and counted in :attr:`unchanged`.
    """

    method: str
    fitted: Any
    record: dict[str, Any]
    unchanged: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _one(self, patch: np.ndarray) -> np.ndarray | None:
        if stained_fraction(patch) < MIN_STAINED:
            return None
        try:
            with np.errstate(all="ignore"):
                if self.method == "macenko":
                    return self.fitted.normalize(patch, stains=False)[0]
                return self.fitted.normalize(patch)
        except np.linalg.LinAlgError:  # degenerate stain vectors
            return None

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """uint8 ``(n, P, P, 3)`` normalised copies of ``patches``."""
        out = np.empty_like(patches)
        kept = 0
        for i, patch in enumerate(patches):
            normalised = self._one(patch)
            out[i] = patch if normalised is None else normalised
            kept += normalised is None
        with self._lock:
            self.unchanged += kept
        return out


def stain_normalizer(method: str, reference: Any = None) -> StainNormalizer:
    """A :class:`StainNormalizer` for ``method`` fitted on ``reference``.

    Parameters
    ----------
    method
        ``"macenko"`` (stain vectors and concentrations in optical density; Macenko et al., ISBI 2009)
        or ``"reinhard"`` (mean and SD of each L*a*b* channel; Reinhard et al. 2001).
    reference
        uint8 RGB reference: an ``(H, W, 3)`` image or ``(n, P, P, 3)`` patches (fitted together). Default,
        Macenko only: torchstain's published reference stain matrix (``HERef``, ``maxCRef``); Reinhard
        needs a reference.

    Raises
    ------
    InvalidParameterError
        Unknown ``method``, Reinhard without a reference, or a reference with too few stained pixels
        (or non-finite fitted parameters).
    InputTypeError
        ``reference`` is not uint8 RGB.

    Examples
    --------
    >>> import numpy as np
    >>> from stmorph.pp._stain import stain_normalizer
    >>> rng = np.random.default_rng(0)
    >>> pink = np.clip(rng.normal((200, 120, 170), 25, (2, 32, 32, 3)), 0, 255).astype(np.uint8)
    >>> norm = stain_normalizer("reinhard", pink)
    >>> norm(pink).shape, norm.record["method"]
    ((2, 32, 32, 3), 'reinhard')
    """
    from importlib.metadata import version

    check_choice(method, STAIN_METHODS, "stain_norm")
    normalizers = _torchstain()
    fitted = normalizers.NumpyMacenkoNormalizer() if method == "macenko" else normalizers.NumpyReinhardNormalizer()
    if reference is None and method == "reinhard":
        raise InvalidParameterError("stain_norm='reinhard' needs stain_reference= (uint8 RGB patches or an image).")
    if reference is not None:
        image = _as_image(reference)
        if stained_fraction(image) < MIN_STAINED:
            raise InvalidParameterError(
                f"stain_reference has {stained_fraction(image):.1%} stained pixels (less than {MIN_STAINED:.0%}); "
                "its stains cannot be estimated: use patches on tissue."
            )
        with np.errstate(all="ignore"):
            fitted.fit(image)
    record = {"method": method, "library": f"torchstain {version('torchstain')}", "backend": "numpy",
              "reference": "torchstain default" if reference is None else "stain_reference",
              **_reference_params(method, fitted)}  # fmt: skip
    if not all(np.isfinite(v).all() for v in record.values() if isinstance(v, list)):
        raise InvalidParameterError(
            "the stains of stain_reference cannot be estimated (non-finite); use tissue patches."
        )
    return StainNormalizer(method, fitted, record)
