"""Issue-size lazy embedding: a 40,000 × 40,000 px SpatialData zarr with a pyramid and 200,000 spots.

Run from the repository root::

    .venv/bin/python benchmarks/bench_lazy.py                       # embeds a random subset of 1,000 spots
    .venv/bin/python benchmarks/bench_lazy.py --embed 5000          # a larger subset
    .venv/bin/python benchmarks/bench_lazy.py --embed 200000        # every spot (hours on 2 CPU cores)

A synthetic RGB image (random pixels, 0.25 µm/px as a 40× scan, 1024 px chunks, pyramid levels
at 1/2, 1/4 and 1/8) with ``--spots`` random spots is written once to a zarr store under
``--workdir`` (the writer of ``bench_lazy_patches.py``). A fresh process opens it with
:func:`spatialdata.read_zarr`, runs ``st.pp.extract_patches(store="lazy")`` on all spots (224 px
at 0.5 µm/px: pyramid level 1 is read, no resampling) and then ``st.tl.embed`` with the built-in
encoder (EfficientNet-Lite0) on ``--embed`` randomly chosen spots, which reads their patches
batch by batch from the zarr. It prints spots/s, the time extrapolated to all spots at that rate
(embedding cost is per patch: reading a window touches at most four chunks of the level read,
whatever the slide size) and the peak resident memory of that process.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_lazy_patches import _write


def store_path(workdir: str, side: int, spots: int) -> Path:
    """The synthetic pyramid zarr store under ``workdir``, written first when it is missing."""
    path = Path(workdir) / f"pyramid_{side}_{spots}.zarr"
    if not path.exists():
        start = time.perf_counter()
        _write(path, side, spots, mpp=0.25, scale_factors=[2, 2, 2])
        print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return path


def lazy_subset(path: Path, n_embed: int) -> tuple[object, object, object, float]:
    """Open the store; ``extract_patches(store="lazy")`` on all spots; a random subset of ``n_embed`` of them.

    Returns the SpatialData, the whole table, the subset table and the extraction time in seconds.
    """
    from spatialdata import read_zarr

    import stmorph as st

    sdata = read_zarr(path)
    start = time.perf_counter()
    table = st.pp.extract_patches(sdata, store="lazy", copy=True, progress=False)
    t_extract = time.perf_counter() - start
    subset = np.sort(np.random.default_rng(2).choice(table.n_obs, size=min(n_embed, table.n_obs), replace=False))
    return sdata, table, table[subset].copy(), t_extract


def _embed(path: Path, n_embed: int, batch_size: int, num_workers: int) -> None:
    import torch

    import stmorph as st

    sdata, table, sub, t_extract = lazy_subset(path, n_embed)
    levels = [sdata.images["he"][name].ds["image"].shape for name in sorted(sdata.images["he"].children)]
    params = table.uns["stmorph"]["patches"]["patches"]
    start = time.perf_counter()
    st.tl.embed(sub, image=sdata, batch_size=batch_size, num_workers=num_workers, progress=False)
    t_embed = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    rate = sub.n_obs / t_embed
    print(f"image levels (c, y, x): {levels}; spots {table.n_obs}; torch threads {torch.get_num_threads()}")
    print(f"extract_patches(store='lazy') on all spots: {t_extract:.2f} s; level read {params['level']}, "
          f"window {params['window_px']:.0f} px → {params['patch_size']} px")  # fmt: skip
    print(f"embed (default encoder, batch {batch_size}, {num_workers} reader threads) of {sub.n_obs} random spots: "
          f"{t_embed:.1f} s = {rate:.2f} spots/s")  # fmt: skip
    print(f"extrapolated to all {table.n_obs} spots at this rate: {table.n_obs / rate / 3600:.1f} h")
    print(f"peak RSS of the embedding process: {peak_gb:.2f} GB "
          f"(the eager patch array of all spots would be {table.n_obs * 224 * 224 * 3 / 1024**3:.1f} GB)")  # fmt: skip
    print(f"embeddings {sub.obsm['X_default'].shape}, finite: {bool(np.isfinite(sub.obsm['X_default']).all())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=40000, help="image side in pixels")
    parser.add_argument("--spots", type=int, default=200000)
    parser.add_argument("--embed", type=int, default=1000, help="random spots embedded (the rest is extrapolated)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=1, help="background threads reading patches")
    parser.add_argument("--workdir", default="/tmp/stmorph_bench_lazy")
    parser.add_argument("--embed-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = store_path(args.workdir, args.side, args.spots)
    if args.embed_only:
        _embed(path, args.embed, args.batch_size, args.num_workers)
        return
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--embed-only"], check=True)


if __name__ == "__main__":
    main()
