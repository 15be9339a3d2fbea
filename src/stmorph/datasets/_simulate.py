"""A planted-signal simulator: an H&E-like image whose local colour and texture drive known genes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import commit_outputs
from .._keys import Key
from .._validation import check_int, check_range, check_seed
from ._spatialdata import build_spatialdata

if TYPE_CHECKING:
    from spatialdata import SpatialData

MAX_SPOT_PX = 1024
"""Largest ``spot_px`` of the simulated image."""

_PINK = np.array([235.0, 170.0, 200.0])  # eosin-rich stroma
_PURPLE = np.array([120.0, 70.0, 160.0])  # haematoxylin-rich tissue
_NUCLEUS = np.array([60.0, 30.0, 100.0])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _paint_tile(tile: np.ndarray, z: np.ndarray, rng: np.random.Generator, max_nuclei: int) -> None:
    """Paint one spot's tile in place from its latent factors ``z`` (see :func:`simulate`)."""
    size = tile.shape[0]
    base = _PINK + (_PURPLE - _PINK) * _sigmoid(1.5 * z[0])
    tile[:] = base * (0.85 + 0.3 * _sigmoid(1.5 * z[2]))
    n_nuclei = round(max_nuclei * _sigmoid(1.5 * z[1]))
    yy, xx = np.mgrid[0:size, 0:size]
    radius = max(2.0, size / 28)
    for cy, cx in rng.uniform(0, size, size=(n_nuclei, 2)):
        tile[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = _NUCLEUS
    tile += rng.normal(0, 6, size=tile.shape)


def _image(z: np.ndarray, grid: np.ndarray, side: int, spot_px: int, rng: np.random.Generator) -> np.ndarray:
    image = np.full((side * spot_px, side * spot_px, 3), 245.0)
    tile = np.empty((spot_px, spot_px, 3))
    for (row, col), zi in zip(grid, z):
        _paint_tile(tile, zi, rng, max_nuclei=max(4, spot_px // 4))
        image[row * spot_px : (row + 1) * spot_px, col * spot_px : (col + 1) * spot_px] = tile
    return np.clip(image, 0, 255).astype(np.uint8)


_N_SHARED = 16
"""Dimensions of the shared-pixel part of ``obsm["latent_tile"]``."""


def _smooth_fields(
    grid: np.ndarray, side: int, n_fields: int, sigma_spots: float, rng: np.random.Generator
) -> np.ndarray:
    """``n_spots × n_fields`` Gaussian fields: white noise on the grid smoothed with ``sigma_spots``, z-scored."""
    from scipy.ndimage import gaussian_filter

    noise = rng.standard_normal((side, side, n_fields))
    fields = gaussian_filter(noise, (sigma_spots, sigma_spots, 0), mode="reflect")[grid[:, 0], grid[:, 1]]
    fields -= fields.mean(axis=0)
    sd = fields.std(axis=0)
    return np.divide(fields, sd, out=np.zeros_like(fields), where=sd > 0)


def _counts(
    z: np.ndarray, n_genes: int, n_planted: int, effect: float, rng: np.random.Generator, smooth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n_spots, n_factors = z.shape
    factor = np.full(n_genes, -1)
    factor[:n_planted] = np.arange(n_planted) % n_factors
    log_mu = np.log(rng.uniform(0.5, 8.0, size=n_genes))[None, :].repeat(n_spots, 0)
    sign = rng.choice([-1.0, 1.0], size=n_planted)
    log_mu[:, :n_planted] += effect * sign * z[:, factor[:n_planted]]
    log_mu[:, n_planted : n_planted + smooth.shape[1]] += effect * smooth
    library = rng.lognormal(0.0, 0.2, size=(n_spots, 1))
    return rng.poisson(library * np.exp(log_mu)).astype(np.int32), factor


def _check_options(
    n_spots: int,
    n_genes: int,
    n_planted: int,
    n_smooth: int,
    n_factors: int,
    effect: float,
    spot_px: int,
    mpp: float,
    smooth_um: float,
    random_state: int,
) -> None:
    for value, name in ((n_spots, "n_spots"), (n_genes, "n_genes"), (n_factors, "n_factors")):
        check_int(value, name, low=1)
    check_int(spot_px, "spot_px", low=1, high=MAX_SPOT_PX)
    check_int(n_planted, "n_planted", low=0, high=int(n_genes))
    check_int(n_smooth, "n_smooth", low=0, high=int(n_genes) - int(n_planted))
    check_range(effect, "effect")
    check_range(mpp, "mpp", low=0)
    check_range(smooth_um, "smooth_um", low=0)
    check_seed(random_state)


def simulate(
    n_spots: int = 400,
    n_genes: int = 100,
    *,
    n_planted: int = 10,
    n_smooth: int = 0,
    smooth_um: float = 150.0,
    n_factors: int = 3,
    effect: float = 1.0,
    spot_px: int = 112,
    mpp: float = 1.0,
    random_state: int = 0,
) -> SpatialData:
    """Simulate a slice where the image drives a known subset of genes.

    What is planted, exactly:

    - Each spot ``i`` has ``n_factors`` latent factors ``z_i ~ N(0, 1)``, independent across
      spots (so no *spatial* smoothing can explain the genes; only the image can).
    - Spots sit on a square grid, one ``spot_px × spot_px`` tile each. Tile colour blends eosin
      pink into haematoxylin purple with ``sigmoid(1.5 z_0)``; the number of dark round "nuclei"
      grows with ``sigmoid(1.5 z_1)``; overall brightness scales with ``sigmoid(1.5 z_2)``
      (factors beyond the third are not drawn). Pixel noise N(0, 6) is added.
    - Genes ``0 .. n_planted-1`` are planted: gene ``g`` follows factor ``g mod n_factors`` with
      ``log μ = log b_g ± effect · z_{i, g mod n_factors}``. The other genes are noise:
      ``log μ = log b_g``. Baselines ``b_g ~ U(0.5, 8)``, library sizes ``LogNormal(0, 0.2)``,
      counts ``Poisson(library · μ)``.
    - Genes ``n_planted .. n_planted+n_smooth-1`` are spatially smooth and independent of the
      image: ``log μ = log b_g + effect · f_g(x)``, ``f_g`` white noise on the spot grid smoothed
      with a Gaussian of ``smooth_um`` µm (standard deviation), z-scored.
    - ``obsm["latent_tile"]`` is what an encoder whose tile is wider than the spot pitch sees: the
      spot's factors ``z_i`` plus 16 features of the pixels it shares with its neighbours (white
      noise on the grid smoothed with a Gaussian of one pitch). Its kNN graph links spatial
      neighbours, so spatially smooth genes get a high EPS on it without being visible in the
      image; ``exclude_radius`` removes that (see ``docs/methods/eps.md``, "Spatial control").
      The smooth genes and these features come from their own random stream, so every other
      output is the same as without them.

    Parameters
    ----------
    n_spots
        Number of spots.
    n_genes
        Number of genes (planted + noise).
    n_planted
        Number of planted genes (the first ones).
    n_smooth
        Number of spatially smooth genes independent of the image (after the planted ones).
    smooth_um
        Smoothing length (Gaussian standard deviation) of the smooth genes, in µm.
    n_factors
        Number of latent factors (at least 1; three are visible in the image).
    effect
        Log-fold effect of a factor on a planted gene.
    spot_px
        Tile width in pixels; the default with ``mpp=1`` makes a tile 112 µm wide, the footprint
        of a default ``st.pp.extract_patches`` patch (224 px at 0.5 µm/px).
    mpp
        Pixel size in µm recorded in the ``"um"`` coordinate system.
    random_state
        Seed of the random numbers.

    Returns
    -------
    SpatialData laid out like :func:`~stmorph.datasets.her2st`; the table additionally has
    ``var["planted"]`` (bool), ``var["factor"]`` (factor index, -1 for noise) and
    ``obsm["latent"]`` (the true factors, n_spots × n_factors); ``uns["stmorph"]["dataset"]`` is
    ``{"name": "simulate", "mpp": mpp, "params": {"n_planted", "n_factors", "effect", "random_state"}}``
    (plus ``"n_smooth"`` and ``"smooth_um"`` when ``n_smooth > 0``); ``var["smooth"]`` (bool) marks
    the smooth genes.

    Raises
    ------
    InvalidParameterError
        ``n_spots``, ``n_factors`` or ``spot_px`` is below 1, ``n_planted`` lies outside
        ``[0, n_genes]``, ``n_smooth`` outside ``[0, n_genes - n_planted]``, or ``mpp`` or
        ``smooth_um`` is not positive.

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate(100, 20, n_planted=4)
    >>> int(sdata.tables["table"].var["planted"].sum())
    4
    """
    import anndata as ad

    _check_options(n_spots, n_genes, n_planted, n_smooth, n_factors, effect, spot_px, mpp, smooth_um, random_state)
    rng = np.random.default_rng(random_state)
    spatial_rng = np.random.default_rng([random_state, 1])  # smooth genes and shared pixels: their own stream
    z = rng.standard_normal((n_spots, n_factors))
    side = int(np.ceil(np.sqrt(n_spots)))
    grid = np.stack(np.divmod(np.arange(n_spots), side), axis=1)  # (row, col)
    padded = np.zeros((n_spots, max(3, n_factors)))
    padded[:, :n_factors] = z
    image = _image(padded, grid, side, spot_px, rng)
    pitch_um = spot_px * mpp
    smooth = _smooth_fields(grid, side, n_smooth, smooth_um / pitch_um, spatial_rng)
    shared = _smooth_fields(grid, side, _N_SHARED, 1.0, spatial_rng)
    counts, factor = _counts(z, n_genes, n_planted, effect, rng, smooth)
    is_smooth = np.zeros(n_genes, dtype=bool)
    is_smooth[n_planted : n_planted + n_smooth] = True
    obs_names = pd.Index([f"spot{i}" for i in range(n_spots)])
    names = np.where(factor >= 0, "planted", np.where(is_smooth, "smooth", "noise"))
    var = pd.DataFrame(
        {"planted": factor >= 0, "factor": factor, "smooth": is_smooth},
        index=pd.Index([f"{name}{g}" for g, name in enumerate(names)]),
    )
    table = ad.AnnData(X=sparse.csr_matrix(counts), obs=pd.DataFrame(index=obs_names), var=var)
    table.obsm[Key.obsm.spatial] = (grid[:, ::-1] + 0.5) * spot_px  # x = column, y = row
    table.obsm["latent"] = z
    table.obsm["latent_tile"] = np.hstack([z, shared])
    params = {"n_planted": n_planted, "n_factors": n_factors, "effect": effect, "random_state": random_state}
    if n_smooth:
        params.update(n_smooth=n_smooth, smooth_um=float(smooth_um))
    commit_outputs(table, uns={Key.uns.dataset: {"name": "simulate", "mpp": float(mpp), "params": params}})
    return build_spatialdata(image, table, mpp, spot_radius_px=spot_px / 2)
