"""The spatial-proximity control of EPS: spot coordinates in µm, the exclusion radius, the spatial graph.

Neighbouring spots share tissue context (and pixels, when a tile is wider than the spot pitch),
so part of an image-graph EPS can be plain spatial autocorrelation. Two controls live here:
an image graph whose neighbours are taken only among spots farther than ``exclude_radius`` µm
(:class:`Exclusion`, used by :func:`~stmorph.tl._graph.knn_graph`), and Geary's C of each gene on
the spatial kNN graph (:func:`~stmorph.tl._graph.spatial_knn_graph`, next to the image graph), to
read side by side with EPS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from .._anndata import dataset_info, read_uns
from .._keys import Key
from .._validation import get_coordinates
from ..errors import InconsistentUnitsError, InvalidParameterError, TooFewObservationsError

if TYPE_CHECKING:
    from anndata import AnnData


@dataclass(frozen=True)
class Exclusion:
    """Spots closer than ``radius`` µm to a spot may not be its image neighbours.

    Attributes
    ----------
    xy
        ``n × 2`` spot centres in µm (float64).
    radius
        Exclusion radius in µm: a spot's neighbours lie strictly farther than this.
    """

    xy: np.ndarray
    radius: float

    def within_counts(self) -> np.ndarray:
        """Spots within ``radius`` of each spot, the spot itself included."""
        from scipy.spatial import cKDTree

        tree = cKDTree(self.xy)
        return np.asarray(tree.query_ball_point(self.xy, self.radius, return_length=True), dtype=np.int64)

    def check_candidates(self, n_neighbors: int) -> None:
        """Raise unless every spot keeps at least ``n_neighbors`` candidates farther than ``radius``."""
        candidates = self.xy.shape[0] - self.within_counts()
        worst = int(np.argmin(candidates))
        if candidates[worst] < n_neighbors:
            raise TooFewObservationsError(
                f"exclude_radius={self.radius:g} µm leaves spot {worst} only {int(candidates[worst])} candidate "
                f"neighbours (it needs n_neighbors={n_neighbors}); use a smaller radius or fewer neighbours."
            )


def check_exclude_radius(exclude_radius: float | None) -> float | None:
    """``exclude_radius`` as a float after checking it is ``None`` or finite and positive."""
    if exclude_radius is None:
        return None
    try:
        radius = float(exclude_radius)
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(f"exclude_radius must be a number of µm; found {exclude_radius!r}.") from err
    if not (math.isfinite(radius) and radius > 0):
        raise InvalidParameterError(f"exclude_radius must be a finite number of µm > 0; found {exclude_radius!r}.")
    return radius


def _patches_mpp(adata: AnnData) -> set[float]:
    """The full-resolution pixel sizes recorded by :func:`~stmorph.pp.extract_patches` runs."""
    node = read_uns(adata, Key.uns.tool("patches"))
    records = node.values() if isinstance(node, Mapping) else ()
    found = (r.get("spatial_mpp", r.get("source_mpp")) for r in records if isinstance(r, Mapping))  # Xenium: µm
    return {float(mpp) for mpp in found if mpp is not None}


def pixel_size(adata: AnnData, need: str = "exclude_radius") -> float:
    """µm per pixel of the spot centres: the dataset record, else the patches record of ``extract_patches``.

    ``need`` names the option that needs it, for the error message.

    Raises
    ------
    InvalidParameterError
        Neither record gives the pixel size.
    InconsistentUnitsError
        The records give different pixel sizes.
    """
    found = set(_patches_mpp(adata))
    dataset_mpp = dataset_info(adata).get("mpp")
    if dataset_mpp is not None:
        found.add(float(dataset_mpp))
    if not found:
        raise InvalidParameterError(
            f"{need} needs the pixel size of the spot coordinates, found neither in "
            "uns['stmorph']['dataset']['mpp'] nor in a record of st.pp.extract_patches; run "
            "st.pp.extract_patches first or set adata.uns['stmorph']['dataset'] = {'mpp': <µm per pixel>}."
        )
    if not np.allclose(min(found), max(found), rtol=1e-6):
        raise InconsistentUnitsError(
            f"the recorded pixel sizes of the spot coordinates disagree: {sorted(found)} µm/px "
            "(uns['stmorph']['dataset']['mpp'] and the extract_patches records)."
        )
    return min(found)


def spot_positions(adata: AnnData, need: str = "exclude_radius", spatial_key: str = Key.obsm.spatial) -> np.ndarray:
    """Spot centres ``obsm[spatial_key][:, :2]`` in pixels (float64), after checking they are usable (``need``: see
    :func:`pixel_size`)."""
    return get_coordinates(adata, spatial_key, need)


def spatial_um(adata: AnnData, need: str = "exclude_radius", spatial_key: str = Key.obsm.spatial) -> np.ndarray:
    """Spot centres in µm: :func:`spot_positions` times :func:`pixel_size` (``need``: see :func:`pixel_size`)."""
    return spot_positions(adata, need, spatial_key) * pixel_size(adata, need)


def exclusion_for(
    adata: AnnData, exclude_radius: float | None, n_neighbors: int, spatial_key: str = Key.obsm.spatial
) -> Exclusion | None:
    """The checked :class:`Exclusion` of ``exclude_radius`` µm on ``adata`` (``None`` for none)."""
    radius = check_exclude_radius(exclude_radius)
    if radius is None:
        return None
    exclusion = Exclusion(spatial_um(adata, spatial_key=spatial_key), radius)
    exclusion.check_candidates(n_neighbors)
    return exclusion


def median_spacing(centres: np.ndarray) -> float:
    """Median distance from each centre to its nearest other centre (``inf`` for fewer than two)."""
    from scipy.spatial import cKDTree

    if len(centres) < 2:
        return float("inf")
    dist, _ = cKDTree(centres).query(centres, k=2)
    return float(np.median(dist[:, 1]))


def adjacent_edge_fraction(connectivities: sparse.spmatrix, coords: np.ndarray, radius: float | None = None) -> float:
    """Fraction of a graph's edges that join spatially adjacent spots or bins.

    Parameters
    ----------
    connectivities
        ``(n, n)`` sparse image graph (one stored entry per edge), e.g.
        ``adata.obsp["image_connectivities"]``.
    coords
        ``(n, 2)`` spot or bin centres (``obsm["spatial"]``).
    radius
        Centres at most this far apart are adjacent; default 1.5 × the median nearest-neighbour
        spacing (the 8 grid neighbours of a bin, not the next ring).

    Returns
    -------
    The fraction in ``[0, 1]``; NaN for a graph without edges.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> coords = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> graph = sparse.csr_matrix(([1.0, 1.0], ([0, 0], [1, 2])), shape=(3, 3))
    >>> adjacent_edge_fraction(graph, coords)
    0.5
    """
    from scipy import sparse

    coo = sparse.coo_matrix(connectivities)
    if coo.nnz == 0:
        return float("nan")
    coords = np.asarray(coords, dtype=np.float64)[:, :2]
    radius = 1.5 * median_spacing(coords) if radius is None else float(radius)
    dist = np.linalg.norm(coords[coo.row] - coords[coo.col], axis=1)
    return float(np.mean(dist <= radius))
