"""Visium HD scale: dense embedding of a 1,000,000-bin grid on a 40,000 × 40,000 px SpatialData zarr image.

Two steps, each its own process (so the peak RSS of the embedding is its own)::

    PYTHONPATH=src python benchmarks/bench_hd.py write            # the synthetic image (once)
    PYTHONPATH=src python benchmarks/bench_hd.py run [--tile-rows N] [--spot-sample 128]

``write``: a 40,000 × 40,000 px RGB image at 0.5 µm/px (a HER2ST C3 crop tiled over the slide,
1024 px zarr chunks) as the image element ``"he"`` of a SpatialData zarr store.
``run``: a 1000 × 1000 grid of 8 µm bins (16 px pitch, the Visium HD grid, raster order) →
``st.pp.extract_patches(store="lazy")`` → ``st.tl.embed(strategy="dense", features_store="zarr")`` with the
default encoder (1792 px tiles, 128 px halo), and the per-spot rate of ``st.tl.embed`` on a random
subsample of the same bins. ``--tile-rows N`` embeds only the bins of the first N rows of tiles
(of 11) and extrapolates the full slide from the rate (the cost per tile does not depend on the
slide); ``--tile-rows 0`` embeds all 1,000,000 bins.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from compare_published import blas_kernels

ROOT = Path("/tmp/stmorph_bench_hd")
ZARR = ROOT / "slide.zarr"
SIDE, MPP, N_GRID, PITCH, START = 40_000, 0.5, 1000, 16.0, 2000.0


def write() -> None:
    import dask.array as da
    import spatialdata as sd
    from spatialdata.models import Image2DModel

    import stmorph as st

    he = st.datasets.her2st("C3").images["he"]
    crop = np.asarray(he.data[:, 2000:3024, 2000:3024])  # (3, 1024, 1024)
    reps = SIDE // 1024 + 1
    image = da.tile(da.from_array(crop, chunks=(3, 1024, 1024)), (1, reps, reps))[:, :SIDE, :SIDE]
    start = time.perf_counter()
    shutil.rmtree(ZARR, ignore_errors=True)
    ROOT.mkdir(parents=True, exist_ok=True)
    element = Image2DModel.parse(image.rechunk((3, 1024, 1024)), dims=("c", "y", "x"))
    sd.SpatialData(images={"he": element}).write(ZARR)
    print(f"wrote {SIDE} x {SIDE} px to {ZARR} in {time.perf_counter() - start:.0f}s")


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def bins() -> np.ndarray:
    """Centres ``(x, y)`` of the 1,000,000 bins in image pixels, row by row."""
    xs, ys = np.meshgrid(START + PITCH * np.arange(N_GRID), START + PITCH * np.arange(N_GRID))
    return np.column_stack([xs.ravel(), ys.ravel()]) + PITCH / 2


def run(tile_rows: int, spot_sample: int) -> None:
    import spatialdata as sd
    import torch

    import stmorph as st
    from stmorph.tl._dense import Tiling

    torch.set_num_threads(2)
    image = sd.read_zarr(ZARR).images["he"].data.transpose(1, 2, 0)  # dask (H, W, 3)
    centres = bins()
    tiling = Tiling(1792, 128, 32)
    t0 = time.perf_counter()
    table = st.pp.extract_patches((image, centres), mpp=MPP, store="lazy", progress=False)
    print(f"extract_patches(store='lazy'), {len(centres):,} bins: {time.perf_counter() - t0:.2f}s")
    sub = table[np.random.default_rng(0).choice(table.n_obs, spot_sample, replace=False)].copy()
    n_rows_total = (
        int(np.floor(centres[:, 1].max() / tiling.core)) - int(np.floor(centres[:, 1].min() / tiling.core)) + 1
    )
    part = table
    if tile_rows:
        row = np.floor(centres[:, 1] / tiling.core)
        part = table[row < row.min() + tile_rows].copy()
    store = ROOT / "features.zarr"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    st.tl.embed(part, strategy="dense", image=image, features_store="zarr", features_path=store, progress=False)
    dense_s = time.perf_counter() - t0
    record = part.uns["stmorph"]["embed"]["X_default"]
    dense_rate = part.n_obs / dense_s
    print(f"dense: {part.n_obs:,} bins, {record['n_tiles']} tiles in {dense_s:.1f}s = {dense_rate:,.0f} bins/s")
    if tile_rows:
        print(f"  all {len(centres):,} bins ({n_rows_total} tile rows) extrapolated: {len(centres) / dense_rate:.0f}s")
    feats = part.obsm["X_default"]
    print(f"  obsm['X_default']: {type(feats).__name__} {feats.shape} on disk: {store}")
    rss_dense = _peak_gb()
    t0 = time.perf_counter()
    st.tl.embed(sub, strategy="spot", image=image, progress=False, num_workers=1)
    spot_rate = spot_sample / (time.perf_counter() - t0)
    print(f"spot: {spot_sample} random bins at {spot_rate:.1f} bins/s; dense / spot = {dense_rate / spot_rate:.0f}x")
    print(f"peak RSS after the dense run {rss_dense:.2f} GB, after both {_peak_gb():.2f} GB")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    adjacency(part)


def adjacency(part) -> None:
    """Fraction of image-graph edges (exact 5-NN of the dense features) between adjacent bins, on a 60 x 100 block."""
    import stmorph as st
    from stmorph.tl._spatial import adjacent_edge_fraction

    grid = np.round((np.asarray(part.obsm["patches_centres_px"]) - START - PITCH / 2) / PITCH).astype(int)
    block = part[(grid[:, 0] < 100) & (grid[:, 1] < 60)].copy()
    block.obsm["X_default"] = np.asarray(block.obsm["X_default"])
    st.tl.image_graph(block, use_rep="X_default", method="exact")
    coords = np.asarray(block.obsm["patches_centres_px"])
    frac = adjacent_edge_fraction(block.obsp["image_connectivities"], coords)
    print(f"image-graph edges between adjacent bins (8-neighbourhood), {block.n_obs} bins: {frac:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["write", "run"])
    parser.add_argument("--tile-rows", type=int, default=1)
    parser.add_argument("--spot-sample", type=int, default=128)
    args = parser.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("BLAS kernels:", "; ".join(blas_kernels()))  # one process: the kernel affects times, not ratios
    write() if args.step == "write" else run(args.tile_rows, args.spot_sample)


if __name__ == "__main__":
    main()
