"""Context features for prediction: the mean (and spread) of each spot's spatial neighbours' embeddings.

The methods that lead image→expression benchmarks look at the tissue around a spot, not only its
own patch. Here the neighbourhood of a spot is its ``n_neighbors`` nearest spots, or every spot
within ``radius`` µm, of the same slice (``obsm["spatial"]`` times the slice's pixel size, as
``exclude_radius`` of EPS). Its features are the spot's own embedding followed by the mean of its
neighbours' embeddings and, optionally, their standard deviation (the spread). The neighbour graph
is sparse and the features are computed a chunk of rows at a time, so the cost is linear in the
number of spots (Visium HD bins included).

EPS never uses context: it measures what a spot's own image carries, and ``exclude_radius`` is its
spatial control. Context belongs to prediction only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from .._keys import Key
from .._logging import warn_user
from .._validation import (
    InvalidParameterError,
    TooFewObservationsError,
    check_bool,
    check_choice,
    check_int,
    check_range,
)
from ._spatial import median_spacing, spatial_um

if TYPE_CHECKING:
    from anndata import AnnData

ISOLATED = ("raise", "self")
"""What a spot without any neighbour gets: an error, or its own embedding as its context."""
SPACING_RATIO = 1.5
"""A query whose spot spacing differs from the references' by more than this factor is warned about."""
CHUNK_ROWS = 65_536
"""Rows whose context is computed at once (bounds the temporary memory)."""


@dataclass(frozen=True)
class Context:
    """Which neighbours make a spot's context, and which of their statistics are kept.

    Attributes
    ----------
    n_neighbors
        The spot's nearest spots in the same slice (self excluded); ``None`` with ``radius``.
    radius
        Every spot within this many µm (self excluded); ``None`` with ``n_neighbors``.
    spread
        Append the neighbours' standard deviation to their mean.
    isolated
        A spot without neighbours (none within ``radius``, or a one-spot slice): ``"raise"`` an
        error naming how many, or ``"self"``: its own embedding is its context (spread 0).

    Examples
    --------
    >>> import numpy as np
    >>> xy = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> x = np.array([[1.0], [3.0], [10.0]], dtype=np.float32)
    >>> Context(n_neighbors=1).features(x, xy).tolist()
    [[1.0, 3.0], [3.0, 1.0], [10.0, 3.0]]
    """

    n_neighbors: int | None = 6
    radius: float | None = None
    spread: bool = False
    isolated: str = "raise"

    def record(self) -> dict[str, Any]:
        """The settings as plain values (``None`` dropped), for a model's training record."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def multiplier(self) -> int:
        """Widths of the features per embedding column: own, mean and (with ``spread``) standard deviation."""
        return 3 if self.spread else 2

    def graph(self, xy: np.ndarray) -> sparse.csr_matrix:
        """``(n, n)`` float32 row-normalised neighbour weights of positions ``xy`` (µm); isolated rows handled."""
        from scipy.spatial import cKDTree

        n = len(xy)
        tree = cKDTree(xy)
        if self.radius is not None:
            pairs = tree.query_pairs(self.radius, output_type="ndarray")
            rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
            cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
        else:
            k = min(self.n_neighbors, n - 1)
            if k > 0:
                _, idx = tree.query(xy, k=k + 1)
                rows, cols = _drop_self(idx.reshape(n, k + 1), k)
            else:
                rows = cols = np.empty(0, dtype=np.int64)
        adjacency = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
        counts = np.diff(adjacency.indptr)
        lonely = np.flatnonzero(counts == 0)
        if len(lonely):
            self._check_isolated(len(lonely), n, xy)
            adjacency = adjacency + sparse.csr_matrix(
                (np.ones(len(lonely), dtype=np.float32), (lonely, lonely)), shape=(n, n)
            )
            counts = np.diff(adjacency.indptr)
        return sparse.diags((1.0 / counts).astype(np.float32)) @ adjacency

    def _check_isolated(self, n_lonely: int, n: int, xy: np.ndarray) -> None:
        if self.isolated == "self":
            return
        where = f"within radius={self.radius:g} µm" if self.radius is not None else "in a slice of one spot"
        spacing = median_spacing(xy)
        raise TooFewObservationsError(
            f"context: {n_lonely} of {n} spots have no neighbour {where} (median spot spacing "
            f"{spacing:.3g} µm); use a larger radius, n_neighbors=, or isolated='self' to give such spots their "
            "own embedding as context."
        )

    def features(self, x: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """``(n, multiplier · d)`` float32: each spot's embedding ``x``, its neighbours' mean (and spread).

        Parameters
        ----------
        x
            ``(n, d)`` embeddings of one slice.
        xy
            ``(n, 2)`` spot centres in µm.
        """
        weights = self.graph(np.asarray(xy, dtype=np.float64))
        n, d = x.shape
        out = np.empty((n, self.multiplier * d), dtype=np.float32)
        out[:, :d] = x
        for start in range(0, n, CHUNK_ROWS):
            stop = min(n, start + CHUNK_ROWS)
            block = weights[start:stop]
            columns, local = np.unique(block.indices, return_inverse=True)
            block = sparse.csr_matrix((block.data, local, block.indptr), shape=(stop - start, len(columns)))
            neighbours = np.asarray(x[columns], dtype=np.float32)
            mean = block @ neighbours
            out[start:stop, d : 2 * d] = mean
            if self.spread:
                variance = block @ (neighbours * neighbours) - mean * mean
                out[start:stop, 2 * d :] = np.sqrt(np.clip(variance, 0.0, None))
        return out


def _drop_self(idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the ``k`` nearest neighbours of each row of ``idx`` (``k + 1`` candidates), self excluded.

    A spot that shares its position with others may not come first in its own list: drop it wherever it is,
    else the farthest candidate.
    """
    n = len(idx)
    own = idx == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return np.repeat(np.arange(n), k), idx[keep]


DEFAULT = Context()
"""``context=True``: the mean embedding of the 6 nearest spots (chosen by grouped CV on the HER2ST references,
``benchmarks/bench_context.py``)."""


def parse_context(context: bool | Mapping[str, Any] | Context | None) -> Context | None:
    """``predict``'s ``context=`` as a checked :class:`Context`, or ``None`` for none.

    ``None``/``False``: no context; ``True``: :data:`DEFAULT`; a mapping with ``n_neighbors`` or
    ``radius`` (µm), and optionally ``spread`` and ``isolated``.
    """
    if context is None or context is False:
        return None
    if context is True:
        return DEFAULT
    if isinstance(context, Context):
        return context
    if not isinstance(context, Mapping):
        raise InvalidParameterError(
            "context must be True, False/None, or a dict such as {'n_neighbors': 6} or {'radius': 150.0, 'spread': "
            f"True}}; found {context!r}."
        )
    unknown = sorted(set(context) - {"n_neighbors", "radius", "spread", "isolated"})
    if unknown:
        raise InvalidParameterError(
            f"context takes the keys n_neighbors, radius (µm), spread and isolated; found unknown {unknown}."
        )
    n_neighbors, radius = context.get("n_neighbors"), context.get("radius")
    if (n_neighbors is None) == (radius is None):
        raise InvalidParameterError(
            "context needs exactly one of n_neighbors (nearest spots) or radius (µm); found "
            f"n_neighbors={n_neighbors!r}, radius={radius!r}."
        )
    if radius is not None:
        radius = check_range(radius, "context radius (µm)", low=0.0)
    else:
        n_neighbors = check_int(n_neighbors, "context n_neighbors", low=1)
    isolated = context.get("isolated", "raise")
    check_choice(isolated, ISOLATED, "context isolated")
    spread = check_bool(context.get("spread", False), "context spread")
    return Context(n_neighbors=n_neighbors, radius=radius, spread=spread, isolated=isolated)


def from_record(record: Mapping[str, Any] | None) -> Context | None:
    """The :class:`Context` of a model's training record (``None``: the model was fitted without context)."""
    if not record:
        return None
    return parse_context({k: record[k] for k in ("n_neighbors", "radius", "spread", "isolated") if k in record})


def slice_context(
    adata: AnnData, x: np.ndarray, context: Context, what: str, spatial_key: str = Key.obsm.spatial
) -> np.ndarray:
    """The context features of one slice: ``x`` with its spots' neighbours' mean (and spread) appended.

    Parameters
    ----------
    adata
        The slice: ``obsm[spatial_key]`` and its pixel size (see :func:`~stmorph.tl._spatial.pixel_size`).
    x
        ``(n_obs, d)`` embeddings of its spots.
    context
        The neighbourhood.
    what
        Name of the slice in error messages (``"query"``, ``"reference[1]"``).
    spatial_key
        ``obsm`` key of the spot centres.
    """
    try:
        return context.features(x, spatial_um(adata, "context", spatial_key))
    except (KeyError, ValueError) as err:  # name which object failed (query or which reference)
        raise type(err)(f"{what}: {err}") from None


def has_context(adata: AnnData, spatial_key: str = Key.obsm.spatial) -> bool:
    """Whether the slice has usable ``obsm[spatial_key]`` and a pixel size (what context features need)."""
    try:
        spatial_um(adata, "context", spatial_key)
    except (KeyError, ValueError):
        return False
    return True


def slice_spacing(adata: AnnData, what: str, spatial_key: str = Key.obsm.spatial) -> float:
    """Median distance in µm from each spot of a slice to its nearest other spot."""
    try:
        return median_spacing(spatial_um(adata, "context", spatial_key))
    except (KeyError, ValueError) as err:
        raise type(err)(f"{what}: {err}") from None


def check_spacings(spacings: list[float], names: list[str]) -> None:
    """One warning when the slices' spot spacings differ by more than :data:`SPACING_RATIO` (naming the extremes)."""
    finite = [(s, n) for s, n in zip(spacings, names) if math.isfinite(s) and s > 0]
    if len(finite) < 2:
        return
    (low, low_name), (high, high_name) = min(finite), max(finite)
    if high / low > SPACING_RATIO:
        warn_user(
            f"context: the spots of {low_name} are {low:.3g} µm apart (median nearest-neighbour distance) but those "
            f"of {high_name} {high:.3g} µm; the same neighbourhood covers different amounts of tissue, so the context "
            "features are not comparable. Check the pixel sizes (uns['stmorph']['dataset']['mpp'])."
        )
