"""Lazy patch reading from a zarr-backed SpatialData image: throughput and peak memory.

Run from the repository root::

    .venv/bin/python benchmarks/bench_lazy_patches.py                       # 16k × 16k px, 20,000 spots
    .venv/bin/python benchmarks/bench_lazy_patches.py --side 40000 --spots 200000

A synthetic RGB image (random pixels, 1024 px chunks, 0.25 µm/px as a 40× scan) is written once
to a zarr store under ``--workdir``; a fresh process then opens it with
:func:`spatialdata.read_zarr`, runs ``st.pp.extract_patches(store="lazy")`` (224 px at 0.5 µm/px,
so 448 px windows are resampled) and reads every patch batch by batch with the
:class:`~stmorph.pp.PatchReader` that ``st.tl.embed`` uses. It prints patches/s and the
peak resident memory of that process, next to the size the patches would take in memory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _write(path: Path, side: int, spots: int, mpp: float, scale_factors: list[int] | None = None) -> None:
    """Random RGB image (1024 px chunks; a pyramid when ``scale_factors`` is given) and ``spots`` random spots."""
    import anndata as ad
    import dask.array as da
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, TableModel
    from spatialdata.transformations import Identity, Scale

    rng = da.random.default_rng(0)
    image = rng.integers(0, 256, size=(3, side, side), chunks=(3, 1024, 1024), dtype=np.uint8)
    tf = {"global": Identity(), "um": Scale([mpp, mpp], axes=("y", "x"))}
    img = Image2DModel.parse(image, dims=("c", "y", "x"), transformations=tf, scale_factors=scale_factors)
    centres = np.random.default_rng(1).uniform(0, side, size=(spots, 2))
    table = ad.AnnData(np.zeros((spots, 1), np.float32))
    table.obs_names = [f"s{i}" for i in range(spots)]
    table.obsm["spatial"] = centres
    table.uns["stmorph"] = {"mpp": mpp}
    SpatialData(images={"he": img}, tables={"table": TableModel.parse(table)}).write(path, overwrite=True)


def _read(path: Path, batch_size: int) -> None:
    from spatialdata import read_zarr

    import stmorph as st
    from stmorph.pp import patch_reader

    sdata = read_zarr(path)
    start = time.perf_counter()
    table = st.pp.extract_patches(sdata, store="lazy", copy=True, progress=False)
    t_extract = time.perf_counter() - start
    reader = patch_reader(table, image=sdata)
    n = len(reader)
    start = time.perf_counter()
    checksum = 0
    for s in range(0, n, batch_size):
        checksum += int(reader.read(np.arange(s, min(s + batch_size, n)))[:, 112, 112].sum())
    t_read = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    eager_gb = n * 224 * 224 * 3 / 1024**3
    print(f"spots {n}, image {sdata.images['he'].shape}, batch {batch_size}")
    print(f"extract_patches(store='lazy'): {t_extract:.2f} s")
    print(f"read all patches: {t_read:.1f} s = {n / t_read:.1f} patches/s (checksum {checksum})")
    print(f"peak RSS of the reading process: {peak_gb:.2f} GB (the patch array in memory would be {eager_gb:.1f} GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=16000, help="image side in pixels")
    parser.add_argument("--spots", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workdir", default="/tmp/stmorph_bench_lazy")
    parser.add_argument("--read-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = Path(args.workdir) / f"synthetic_{args.side}_{args.spots}.zarr"
    if args.read_only:
        _read(path, args.batch_size)
        return
    if not path.exists():
        start = time.perf_counter()
        _write(path, args.side, args.spots, mpp=0.25)
        print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--read-only"], check=True)


if __name__ == "__main__":
    main()
