"""Xenium cells: the EPS exclusion radius on cells, and lazy embedding / approximate EPS at scale.

Run from the repository root::

    python benchmarks/bench_xenium.py radius                 # EPS vs exclude_radius on 4,000 simulated cells
    python benchmarks/bench_xenium.py embed --cells 100000   # lazy extract + embed a subset, in its own process
    python benchmarks/bench_xenium.py eps --cells 500000     # EPS with the approximate graph

``radius``: :func:`stmorph.datasets.simulate_xenium` plants genes that follow the H&E's colour
field (``"image"``), genes that follow an independent smooth field invisible in the H&E
(``"spatial"``: plain spatial autocorrelation) and noise genes. Cells get one 48 µm patch each
(the default), embedded with the built-in encoder; EPS is computed for a range of
``exclude_radius``. A radius that separates morphology from spatial autocorrelation leaves the
``"spatial"`` genes near the noise genes while the ``"image"`` genes keep their EPS.

``embed``: the slide's H&E is a lazy dask array painted chunk by chunk; ``extract_patches(store=
"lazy")`` on every cell, then ``tl.embed`` on ``--embed`` random cells (time per cell, peak RSS of
the process). ``eps``: EPS of 12 genes on ``--cells`` cells with random 64-d embeddings and the
pynndescent graph (time, peak RSS); the image plays no part in EPS's cost.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def radius(n_cells: int, radii: list[float], model: str) -> None:
    import stmorph as st

    sdata = st.datasets.simulate_xenium(n_cells, n_genes=12, random_state=0)
    st.pp.extract_patches(sdata, patch_size=96, progress=False)  # 48 µm at 0.5 µm/px: the H&E's own pixels
    table = sdata.tables["table"]
    st.tl.embed(table, model=model, progress=False)
    st.pp.prepare_expression(table, min_cells=1, min_counts=1)
    groups = table.var["planted"].to_numpy()
    print(f"{n_cells} cells, {table.n_vars} genes, 48 µm patches, encoder {model!r}")
    print("exclude_radius_um  eps_image  eps_spatial  eps_noise  adjacent_edges")
    for r in radii:
        st.tl.eps(table, use_rep=f"X_{model}", exclude_radius=r or None, progress=False)
        eps = table.var["eps"].to_numpy()
        means = [np.nanmean(eps[groups == g]) for g in ("image", "spatial", "none")]
        adjacent = table.uns["sps"].get("adjacent_edge_fraction", np.nan)
        print(f"{r:17g}  {means[0]:9.3f}  {means[1]:11.3f}  {means[2]:9.3f}  {adjacent:14.3f}")


def embed(n_cells: int, n_embed: int, model: str) -> None:
    import stmorph as st

    start = time.perf_counter()
    sdata = st.datasets.simulate_xenium(n_cells, n_genes=12, random_state=0)
    table = st.pp.extract_patches(sdata, store="lazy", copy=True, progress=False)
    t_extract = time.perf_counter() - start
    subset = np.sort(np.random.default_rng(2).choice(table.n_obs, size=min(n_embed, table.n_obs), replace=False))
    part = table[subset].copy()
    start = time.perf_counter()
    st.tl.embed(part, model=model, image=sdata, progress=False)
    t_embed = time.perf_counter() - start
    rate = len(subset) / t_embed
    print(f"{n_cells} cells: simulate + lazy extract_patches {t_extract:.1f} s; embed {len(subset)} cells "
          f"({model!r}) {t_embed:.1f} s = {rate:.0f} cells/s -> {n_cells / rate / 3600:.2f} h for all; "
          f"peak RSS {_peak_gb():.2f} GB")  # fmt: skip


def eps(n_cells: int) -> None:
    import anndata as ad

    import stmorph as st

    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.uniform(0.2, 5.0, 12), (n_cells, 12))
    table = ad.AnnData(np.log1p(counts).astype(np.float32))  # log1p: EPS is Geary's C, invariant to scaling
    table.obsm["X_rand"] = rng.normal(size=(n_cells, 64)).astype(np.float32)
    start = time.perf_counter()
    st.tl.eps(table, use_rep="X_rand", progress=False)
    method = table.uns["image"]["params"]["method"]
    print(f"{n_cells} cells, 12 genes, 64-d: eps {time.perf_counter() - start:.1f} s (graph {method!r}); "
          f"peak RSS {_peak_gb():.2f} GB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["radius", "embed", "eps"])
    parser.add_argument("--cells", type=int, default=None)
    parser.add_argument("--embed", type=int, default=2000)
    parser.add_argument("--model", default="default")
    parser.add_argument("--radii", type=float, nargs="+", default=[0, 12, 24, 48, 96, 192])
    args = parser.parse_args()
    if args.part == "radius":
        radius(args.cells or 4000, args.radii, args.model)
    elif args.part == "embed":
        embed(args.cells or 100_000, args.embed, args.model)
    else:
        eps(args.cells or 500_000)


if __name__ == "__main__":
    main()
