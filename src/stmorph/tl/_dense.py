"""The dense strategy of ``st.tl.embed`` for bin grids (Visium HD): one encoder pass per image tile.

The image is cut, at ``target_mpp``, into overlapping square tiles of ``tile_size`` pixels: a
core of ``tile_size - 2 * halo`` pixels plus a ``halo`` on each side. Each tile's spatial feature
map (:class:`~stmorph.models._encoders.FeatureMap`, stride ``s``) is computed once, and every bin
whose centre lies in the tile's core gets the **mean of the map over its window** (the
``patch_size`` pixels the per-spot strategy would cut): the map is piecewise constant over its
cells, so a window covering cells partly weighs each cell by its overlap. A window aligned with
the cells (e.g. 224 px at stride 32) is the plain mean of the 7 × 7 cells under it — the global
average pooling that gives the encoder's per-patch embedding, applied to the map of the larger tile.

Features are held in memory or written to a zarr array (``features_store="zarr"``) a chunk of rows at a
time; a zarr run records the finished chunks and resumes after them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._fingerprint import check_same, replace_atomically
from .._logging import logger
from .._tables import is_spatialdata
from .._validation import (
    InvalidParameterError,
    StmorphKeyError,
    check_bool,
    check_choice,
    check_int,
    check_path,
    read_json,
)
from ..errors import DamagedCheckpointError
from ..pp import PatchReader, lazy_patch_params, patch_reader, read_patches
from ._embed_engine import EncoderOptions, StrategyOptions
from ._embed_resume import fingerprint
from ._spatial import median_spacing

if TYPE_CHECKING:
    from anndata import AnnData

    from ..models import FeatureMap

STRATEGIES = ("spot", "dense", "auto")
DENSE_STORES = ("memory", "zarr")
PROGRESS_FILE = "stmorph_progress.json"
CHUNK_ROWS = 4096
_SIZE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DenseOptions(StrategyOptions):
    """The options of :func:`~stmorph.tl.embed` that only the dense strategy reads (checked when built)."""

    strategy = "dense"
    advice = "Per spot, embeddings are held in memory and the encoder sees one patch at a time."

    tile_size: int = 1792
    halo: int = 128
    features_store: str = "memory"
    features_path: str | os.PathLike | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        check_int(self.tile_size, "tile_size", low=1)
        check_int(self.halo, "halo", low=0)
        check_choice(self.features_store, DENSE_STORES, "features_store")
        if self.features_path is not None:
            check_path(self.features_path, "features_path", "folder_to_write")
        check_bool(self.resume, "resume")


# --------------------------------------------------------------------------------------------- #
# Choosing the strategy and checking the input
# --------------------------------------------------------------------------------------------- #
def choose_strategy(adata: AnnData, patches_key: str, strategy: str) -> str:
    """``strategy``, with ``"auto"`` resolved: dense when lazily extracted spots are closer than half their window.

    Below half a window apart, per-spot windows cover each pixel more than four times and one pass
    per tile costs a fraction of one pass per spot; Visium spots (100 µm apart, 112 µm windows) cost
    about the same either way, so they stay per spot. Patches already held in ``obsm``
    (``store="memory"``) are embedded per spot.
    """
    check_choice(strategy, STRATEGIES, "strategy")
    if strategy != "auto":
        return strategy
    params = lazy_patch_params(adata, patches_key)
    if params is None or "centres_key" not in params:  # in obsm, or rows of a patch file (HEST)
        return "spot"
    spacing = median_spacing(np.asarray(adata.obsm[params["centres_key"]], dtype=np.float64))
    chosen = "dense" if spacing < float(params["window_px"]) / 2 else "spot"
    logger.info(
        "embed: strategy='auto' → %r (spot spacing %.1f px, window %.1f px)", chosen, spacing, params["window_px"]
    )
    return chosen


def check_tiling(tile_size: int, halo: int, patch_size: int, stride: int) -> None:
    """Raise :class:`InvalidParameterError` unless the tiles hold every window and align with the map cells."""
    if tile_size < patch_size:
        raise InvalidParameterError(
            f"tile_size={tile_size} px is smaller than the window ({patch_size} px at target_mpp); "
            f"use tile_size ≥ {patch_size + 2 * stride} (default 1792)."
        )
    if 2 * halo < patch_size:
        raise InvalidParameterError(
            f"halo={halo} px is less than half the window ({patch_size} px): a bin at the edge of a tile's core "
            f"would have part of its window outside the tile; use halo ≥ {-(-patch_size // 2)}."
        )
    if tile_size % stride or halo % stride or tile_size - 2 * halo < stride:
        raise InvalidParameterError(
            f"tile_size={tile_size} and halo={halo} must be multiples of the encoder's stride ({stride} px) with "
            f"a core (tile_size - 2 * halo = {tile_size - 2 * halo}) of at least one stride."
        )


def _shape_sizes(shapes: Any) -> np.ndarray:
    """Side (squares) or diameter (circles) of each shape of a GeoDataFrame."""
    if "radius" in shapes.columns:
        return 2 * np.asarray(shapes["radius"], dtype=np.float64)
    return np.sqrt(np.asarray(shapes.geometry.area, dtype=np.float64))


def check_bin_sizes(image: Any, params: dict[str, Any], obs_names: Any) -> None:
    """Raise :class:`InvalidParameterError` when the table's bins (SpatialData shapes) have mixed sizes."""
    key = params.get("shapes_key")
    if not is_spatialdata(image) or key not in image.shapes:
        return
    shapes = image.shapes[key]
    sizes = _shape_sizes(shapes.loc[shapes.index.intersection(obs_names)] if len(shapes) != len(obs_names) else shapes)
    if len(sizes) and np.ptp(sizes) > _SIZE_TOLERANCE * np.median(sizes):
        found = np.unique(np.round(sizes, 3))
        raise InvalidParameterError(
            f"the bins of shapes {key!r} have mixed sizes ({found[:5].tolist()}{' …' if len(found) > 5 else ''}, "
            "in the shapes' units): the dense strategy pools one window size per table. Embed each bin size "
            "(e.g. Visium HD's 2, 8 and 16 µm tables) as its own table."
        )


# --------------------------------------------------------------------------------------------- #
# Tiles and window pooling
# --------------------------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Tiling:
    """Square tiles at the target resolution: ``core`` pixels owned by each tile plus ``halo`` on each side."""

    tile_size: int
    halo: int
    stride: int

    @property
    def core(self) -> int:
        return self.tile_size - 2 * self.halo

    def origin(self, tile: np.ndarray) -> np.ndarray:
        """Top-left corner ``(x, y)``, in target pixels, of tile ``(tx, ty)``."""
        return np.asarray(tile) * self.core - self.halo


def read_tile(reader: PatchReader, origin: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(size, size, 3)`` pixels at the target resolution from ``origin`` (target px); white outside."""
    scale = reader.window_px / reader.patch_size  # source px per target px
    centre = (np.asarray(origin, dtype=np.float64) + size / 2) * scale
    return read_patches(reader.image, centre[None], size * scale, size, batch_size=1)[0][0]


def overlap_weights(starts: np.ndarray, length: float, n_cells: int) -> np.ndarray:
    """``(len(starts), n_cells)`` share of each unit cell in the interval ``[start, start + length)``."""
    edges = np.arange(n_cells + 1, dtype=np.float64)
    lo = np.clip(starts[:, None], edges[:-1], edges[1:])
    hi = np.clip(starts[:, None] + length, edges[:-1], edges[1:])
    return ((hi - lo) / length).astype(np.float32)


def window_means(fmap: np.ndarray, starts_xy: np.ndarray, length: float) -> np.ndarray:
    """Mean of the piecewise-constant map ``fmap`` ``(h, w, C)`` over square windows, in cell units.

    ``starts_xy`` are the windows' top-left corners ``(x, y)`` and ``length`` their side. Windows
    sharing rows or columns (a bin grid) share the work: the map is reduced over the distinct row
    windows first, then over the distinct column windows.
    """
    h, w = fmap.shape[:2]
    xs, xi = np.unique(starts_xy[:, 0], return_inverse=True)
    ys, yi = np.unique(starts_xy[:, 1], return_inverse=True)
    rows = np.tensordot(overlap_weights(ys, length, h), fmap, axes=(1, 0))  # (n_y, w, C)
    wx = overlap_weights(xs, length, w)
    if len(xs) * len(ys) <= 4 * len(starts_xy):  # a grid: every (row, column) pair
        return np.einsum("bj,ajc->abc", wx, rows, optimize=True)[yi, xi]
    return np.einsum("nj,njc->nc", wx[xi], rows[yi], optimize=True)


def _tile_features(
    fmap_fn: FeatureMap, reader: PatchReader, tiling: Tiling, tile: np.ndarray, u: np.ndarray, device: Any
):
    """Features of the bins (target-pixel centres ``u``) owned by ``tile``."""
    origin = tiling.origin(tile)
    fmap = fmap_fn(read_tile(reader, origin, tiling.tile_size)[None], device)[0]
    starts = (u - reader.patch_size / 2 - origin) / tiling.stride
    return window_means(fmap, starts, reader.patch_size / tiling.stride)


# --------------------------------------------------------------------------------------------- #
# Where the features go: memory, or a zarr array written a chunk of rows at a time
# --------------------------------------------------------------------------------------------- #
def default_features_path(params: dict[str, Any], key: str) -> Path:
    """``<store>.<key>.zarr`` beside the SpatialData zarr store the patches were extracted from."""
    if "zarr_path" not in params:
        raise InvalidParameterError(
            "features_store='zarr' needs features_path=<folder>: the image is not read from a SpatialData zarr store "
            "to write the features beside."
        )
    zarr_path = Path(params["zarr_path"])
    return zarr_path.with_name(f"{zarr_path.name.removesuffix('.zarr')}.{key}.zarr")


def check_writable(path: Path, nbytes: int) -> None:
    """Raise :class:`InvalidParameterError` when ``path`` cannot be written or its disk lacks ``nbytes``."""
    parent = path if path.exists() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InvalidParameterError(f"features_path {str(path)!r} is read-only; pass a writable features_path.")
    free = shutil.disk_usage(parent).free
    if free < nbytes:
        raise InvalidParameterError(
            f"features_path {str(path)!r}: the disk is (nearly) full: the features need up to {nbytes / 1e6:.1f} MB "
            f"and {free / 1e6:.1f} MB are free; pass a features_path on a larger disk."
        )


class Rows:
    """The ``(n, dim)`` float32 features, filled tile by tile: in memory, or a zarr array on disk.

    On disk, rows are buffered per chunk of :data:`CHUNK_ROWS` and a chunk is written once all its
    rows are known; the written chunks are recorded (``stmorph_progress.json``) so a resumed run
    computes only the tiles of the others.
    """

    def __init__(self, n: int, dim: int, path: Path | None, print_: dict[str, Any], resume: bool):
        self.n, self.dim, self.path, self.print = n, dim, path, print_
        self.pending: dict[int, np.ndarray] = {}
        self.missing: dict[int, int] = {}
        self.done: set[int] = set()
        if path is None:
            self.array = np.full((n, dim), np.nan, np.float32)
            return
        import zarr

        progress = path / PROGRESS_FILE
        if resume and progress.is_file():
            fields = {"fingerprint": dict, "done": list}
            state = read_json(progress, "dense features progress", fields, error=DamagedCheckpointError)
            advice = "Use another features_path, or resume=False to start over."
            check_same(state["fingerprint"], print_, f"features_path {str(path)!r}", advice)
            self.array, self.done = zarr.open_array(path, mode="r+"), set(state["done"])
            logger.info("embed: resuming %s with %d of %d chunks written", path, len(self.done), self.n_chunks)
        else:
            self.array = zarr.open_array(path, mode="w", shape=(n, dim), chunks=(CHUNK_ROWS, dim), dtype="float32")
            self._save()

    @property
    def n_chunks(self) -> int:
        return -(-self.n // CHUNK_ROWS)

    def todo(self) -> np.ndarray:
        """Indices of the rows still to compute."""
        if self.path is None:
            return np.arange(self.n)
        chunk = np.arange(self.n) // CHUNK_ROWS
        return np.flatnonzero(~np.isin(chunk, list(self.done)))

    def write(self, idx: np.ndarray, feats: np.ndarray) -> None:
        if self.path is None:
            self.array[idx] = feats
            return
        chunks = idx // CHUNK_ROWS
        for c in np.unique(chunks):
            start = c * CHUNK_ROWS
            size = min(CHUNK_ROWS, self.n - start)
            if c not in self.pending:
                self.pending[c], self.missing[c] = np.full((size, self.dim), np.nan, np.float32), size
            sel = chunks == c
            self.pending[c][idx[sel] - start] = feats[sel]
            self.missing[c] -= int(sel.sum())
            if self.missing[c] == 0:
                self.array[start : start + size] = self.pending.pop(c)
                del self.missing[c]
                self.done.add(int(c))
                self._save()

    def _save(self) -> None:
        state = {"fingerprint": self.print, "done": sorted(self.done)}
        replace_atomically(self.path / PROGRESS_FILE, lambda tmp: tmp.write_text(json.dumps(state)))

    def result(self) -> Any:
        """The features: a numpy array, or a dask array reading the zarr array."""
        if self.path is None:
            return self.array
        import dask.array as da

        return da.from_zarr(self.array)


# --------------------------------------------------------------------------------------------- #
# The engine
# --------------------------------------------------------------------------------------------- #
def _lazy_reader(adata: AnnData, patches_key: str, image: Any) -> tuple[PatchReader, dict[str, Any]]:
    params = lazy_patch_params(adata, patches_key)
    if params is None or "centres_key" not in params:
        raise StmorphKeyError(
            f"strategy='dense' reads the image itself: no store='lazy' extraction under {patches_key!r}. Run "
            f"`st.pp.extract_patches(..., store='lazy', key_added={patches_key!r})` first (no pixels are read)."
        )
    return patch_reader(adata, patches_key, image), params


def dense_embedding_outputs(
    adata: AnnData,
    engine: EncoderOptions,
    dense: DenseOptions,
    *,
    key: str,
    patches_key: str,
    image: Any,
) -> tuple[Any, dict[str, Any]]:
    """Dense features of every bin of ``adata`` and their ``uns`` parameters; ``adata`` is not changed.

    The computing step of :func:`~stmorph.tl.embed` with ``strategy="dense"``.
    """
    from tqdm.auto import tqdm

    from ..models import feature_map, inference_encoder, resolve_device

    model, weights, progress = engine.model, engine.weights_name, engine.progress
    reader, params = _lazy_reader(adata, patches_key, image)
    check_bin_sizes(image, params, adata.obs_names)
    fmap_fn = feature_map(inference_encoder(model, weights))
    tiling = Tiling(int(dense.tile_size), int(dense.halo), fmap_fn.stride)
    check_tiling(tiling.tile_size, tiling.halo, reader.patch_size, tiling.stride)
    dim = fmap_fn.encoder.dim
    path = None
    if dense.features_store == "zarr":
        path = Path(dense.features_path) if dense.features_path is not None else default_features_path(params, key)
        check_writable(path, adata.n_obs * dim * 4)
    settings = {
        "model": model,
        "weights": weights or "",
        "patches_key": patches_key,
        "tile_size": tiling.tile_size,
        "halo": tiling.halo,
    }
    rows = Rows(adata.n_obs, dim, path, fingerprint(adata.obs_names, **settings), dense.resume)
    todo = rows.todo()
    u = reader.centres[todo] * (reader.patch_size / reader.window_px)  # bin centres in target pixels
    tiles, owner = np.unique(np.floor(u / tiling.core).astype(np.int64), axis=0, return_inverse=True)
    owner = owner.ravel()
    order = np.lexsort((tiles[:, 0], tiles[:, 1]))  # row by row: a raster-ordered table fills its chunks in turn
    dev = resolve_device(engine.device)
    for t in tqdm(order, desc=f"dense embedding ({model})", disable=not progress, leave=False):
        mine = np.flatnonzero(owner == t)
        rows.write(todo[mine], _tile_features(fmap_fn, reader, tiling, tiles[t], u[mine], dev))
    logger.info(
        "embed: %d bins from %d tiles of %d px (halo %d px)", len(todo), len(tiles), tiling.tile_size, tiling.halo
    )
    params_out = {
        **settings, "strategy": "dense", "kind": "torch", "mean": list(fmap_fn.encoder.mean),
        "std": list(fmap_fn.encoder.std),
        "stride": tiling.stride, "n_tiles": len(tiles), "device": str(dev), "features_store": dense.features_store,
        "dim": int(dim), "n_patches": int(adata.n_obs), "pooling": "mean",
    }  # fmt: skip
    if path is not None:
        params_out["features_path"] = str(path)
    return rows.result(), params_out
