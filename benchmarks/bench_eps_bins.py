"""EPS at Visium HD bin scale, with and without ``exclude_radius``.

Run from the repository root, each part its own process, at numpy's best BLAS kernel::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src:benchmarks \\
        .venv/bin/python benchmarks/bench_eps_bins.py simulation [--side 200] [--radii 16 32 64 112]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src:benchmarks \\
        .venv/bin/python benchmarks/bench_eps_bins.py hd [--cols 250 --rows 200] [--radii 112]

``simulation``: :func:`simulate_bins`, a ``side × side`` grid of 8 µm bins whose image features
are smooth spatial fields — a few "morphology" fields that some genes follow, and many shorter
"texture" fields (the pixels neighbouring windows share) that no gene follows — so neighbours in
image space are neighbours in space. Genes: ``image`` (follow a morphology field), ``smooth``
(spatially smooth fields independent of the image, the same smoothing length) and ``noise``.
``st.tl.eps`` (k = 5, exact graph, randomization p-values) on the paper's graph and with each
radius: per gene class the median EPS, the smallest / largest p-value and how many genes have
p < 0.001 (about 0.05 / 24 genes: Bonferroni over the genes), and the fraction of the image
graph's edges that join adjacent bins.

``hd``: a crop (``--cols × --rows`` bins, the first of the 1000 × 1000 grid) of the synthetic
Visium HD slide of ``bench_hd.py`` (its zarr image is written first when missing), embedded with
``st.tl.embed(strategy="dense")`` (default encoder, 1792 px tiles, 128 px halo). The slide has no
expression, so genes are planted on the dense features: ``image`` genes follow one of the first
principal components of the features, ``smooth`` genes spatially smooth fields independent of the
image (Gaussian, 24 µm), ``noise`` genes nothing. Then EPS / SPS on the paper's graph and with each
radius, the adjacent-edge fraction and the time of each step. The crop stays at 50,000 bins or
fewer, so the exact graph is used (pynndescent above that). The slide repeats one 1024 px image
crop (512 µm, 64 bins), so every bin has look-alike copies a period away; the same runs on a
60 × 60-bin block inside one period show the graph of an image without repeats.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import warnings

import numpy as np
import pandas as pd

PITCH_UM = 8.0
"""Visium HD bin pitch."""
MPP = 0.5
"""µm per pixel of ``obsm["spatial"]`` (the 0.5 µm/px of the HD slide)."""
CLASSES = ("image", "smooth", "noise")
PERIOD_BINS = 64
"""The HD slide's image repeats a 1024 px crop: bins 64 apart (512 µm) have the same window."""


def _bin_table(counts: np.ndarray, grid: np.ndarray, classes: np.ndarray, features: np.ndarray):
    """AnnData of bin ``counts`` on ``grid`` (row, col): ``X`` = log1p counts, ``layers["counts"]``,
    features in ``obsm["X_image"]``, gene class in ``var["kind"]``.

    No library-size normalisation: with a few dozen genes it would couple them (EPS does not
    depend on a gene's shift and scale, so log1p is the expression the paper's z-scores rank).
    """
    import anndata as ad

    names = [f"{c}{i}" for i, c in enumerate(classes)]
    var = pd.DataFrame({"kind": classes}, index=names)
    table = ad.AnnData(np.log1p(counts).astype(np.float32), var=var, layers={"counts": counts.astype(np.float32)})
    table.obs_names = [f"bin{i}" for i in range(table.n_obs)]
    table.obsm["spatial"] = (grid[:, ::-1] + 0.5) * PITCH_UM / MPP  # x = column, y = row, in pixels
    table.obsm["X_image"] = np.asarray(features, dtype=np.float32)
    table.uns["stmorph"] = {"dataset": {"name": "bins", "mpp": MPP}}
    return table


def _poisson(log_effect: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts ``Poisson(μ_g · exp(log_effect))``, baselines ``μ_g ~ U(0.5, 4)`` (a few counts per bin)."""
    base = np.log(rng.uniform(0.5, 4.0, size=log_effect.shape[1]))
    return rng.poisson(np.exp(base + log_effect))


def _classes(n_image: int, n_smooth: int, n_noise: int) -> np.ndarray:
    return np.repeat(np.array(CLASSES), [n_image, n_smooth, n_noise])


def simulate_bins(
    side: int,
    *,
    n_image: int = 6,
    n_smooth: int = 6,
    n_noise: int = 12,
    smooth_um: float = 24.0,
    n_texture: int = 16,
    texture_um: float = 8.0,
    effect: float = 1.0,
    seed: int = 0,
):
    """A ``side × side`` grid of 8 µm bins where the image features are smooth spatial fields.

    Features ``obsm["X_image"]``: 3 "morphology" fields (Gaussian-smoothed white noise on the grid,
    standard deviation ``smooth_um``) and ``n_texture`` "texture" fields (``texture_um``), all
    z-scored. Genes (``var["kind"]``): ``image`` genes follow a morphology field
    (``log μ = log b ± effect · m``), ``smooth`` genes an independent field of the same length,
    ``noise`` genes nothing; counts are Poisson. Pixel size 0.5 µm (``uns["stmorph"]["dataset"]``).
    """
    from stmorph.datasets._simulate import _smooth_fields

    rng = np.random.default_rng(seed)
    grid = np.stack(np.divmod(np.arange(side * side), side), axis=1)
    morph = _smooth_fields(grid, side, 3, smooth_um / PITCH_UM, rng)
    texture = _smooth_fields(grid, side, n_texture, texture_um / PITCH_UM, rng)
    smooth = _smooth_fields(grid, side, n_smooth, smooth_um / PITCH_UM, rng)
    sign = rng.choice([-1.0, 1.0], size=n_image)
    log_effect = np.hstack(
        [effect * sign * morph[:, np.arange(n_image) % 3], effect * smooth, np.zeros((side * side, n_noise))]
    )
    return _bin_table(
        _poisson(log_effect, rng), grid, _classes(n_image, n_smooth, n_noise), np.hstack([morph, texture])
    )


def eps_runs(table, radii: list[float], use_rep: str = "X_image") -> pd.DataFrame:
    """``st.tl.eps`` on the paper's graph and with each radius: one row per (radius, gene class)."""
    import stmorph as st
    from stmorph._keys import Key

    rows = []
    for radius in [None, *radii]:
        key = "eps" if radius is None else f"eps_r{radius:g}"
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the adjacent-edge warning: reported below
            st.tl.eps(table, use_rep=use_rep, exclude_radius=radius, graph_key=key, key_added=key, progress=False)
        seconds = time.perf_counter() - start
        record = table.uns[Key.uns.sps(key)]
        for kind, var in table.var.groupby("kind", sort=False):
            rows.append(
                {
                    "exclude_radius": "none" if radius is None else f"{radius:g}",
                    "kind": kind,
                    "n": len(var),
                    "median_eps": var[key].median(),
                    "max_p": var[f"{key}_pval"].max(),
                    "min_p": var[f"{key}_pval"].min(),
                    "n_p001": int((var[f"{key}_pval"] < 1e-3).sum()),
                    "sps": record["sps"],
                    "adjacent": record["adjacent_edge_fraction"],
                    "seconds": seconds,
                }
            )
    return pd.DataFrame(rows)


def _p(value: float) -> str:
    """A p-value to print: ``0`` is an underflow below ~1e-300."""
    return "0" if value == 0 else f"{value:.1e}"


def print_table(runs: pd.DataFrame) -> None:
    """The runs as a markdown table (SPS, adjacency and time once per radius)."""
    print("| exclude_radius µm | adjacent-edge fraction | SPS | genes | median EPS | p range | p < 0.001 | time s |")
    print("|---|---|---|---|---|---|---|---|")
    for _, r in runs.iterrows():
        print(
            f"| {r.exclude_radius} | {r.adjacent:.3f} | {r.sps:.4f} | {r.kind} ({r.n}) | {r.median_eps:.4f} | "
            f"{_p(r.min_p)} – {_p(r.max_p)} | {r.n_p001}/{r.n} | {r.seconds:.1f} |"
        )


def warm_up() -> None:
    """Compile the numba kernels of the exact graph and of EPS (so the times below exclude it)."""
    eps_runs(simulate_bins(20), [16.0])


def simulation(side: int, radii: list[float], smooth_um: float) -> None:
    warm_up()
    table = simulate_bins(side, smooth_um=smooth_um)
    print(
        f"bin simulation: {table.n_obs:,} bins of {PITCH_UM:g} µm ({side} × {side}), {table.n_vars} genes, "
        f"morphology and smooth genes at {smooth_um:g} µm"
    )
    print_table(eps_runs(table, radii))


def _hd_crop(cols: int, rows: int):
    """The bins of the first ``rows × cols`` of the HD grid with dense features, and the time to embed them."""
    import spatialdata as sd
    import torch
    from bench_hd import MPP as HD_MPP
    from bench_hd import PITCH, START, ZARR, bins, write

    import stmorph as st

    if not ZARR.exists():
        write()
    torch.set_num_threads(2)
    image = sd.read_zarr(ZARR).images["he"].data.transpose(1, 2, 0)  # dask (H, W, 3)
    centres = bins()
    grid = np.round((centres - START - PITCH / 2) / PITCH).astype(int)  # (col, row)
    keep = (grid[:, 0] < cols) & (grid[:, 1] < rows)
    table = st.pp.extract_patches((image, centres[keep]), mpp=HD_MPP, store="lazy", progress=False)
    start = time.perf_counter()
    st.tl.embed(table, strategy="dense", image=image, progress=False)
    return table, grid[keep][:, ::-1], time.perf_counter() - start


def _plant_genes(features: np.ndarray, grid: np.ndarray, rng: np.random.Generator, n: int = 6) -> np.ndarray:
    """Log effects of ``n`` image genes (the first principal components), ``n`` smooth and ``2n`` noise genes."""
    from stmorph.datasets._simulate import _smooth_fields

    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 5000)], full_matrices=False)
    pcs = centred @ vt[:3].T
    pcs /= pcs.std(axis=0)
    side = int(grid.max()) + 1
    smooth = _smooth_fields(grid, side, n, 24.0 / PITCH_UM, rng)
    image = pcs[:, np.arange(n) % 3] * rng.choice([-1.0, 1.0], size=n)
    return np.hstack([image, smooth, np.zeros((len(grid), 2 * n))])


def hd(cols: int, rows: int, radii: list[float]) -> None:
    warm_up()
    bins_table, grid, embed_s = _hd_crop(cols, rows)
    features = np.asarray(bins_table.obsm["X_default"])
    print(f"HD slide crop: {len(grid):,} bins ({cols} × {rows}), dense features {features.shape}, {embed_s:.1f}s")
    rng = np.random.default_rng(0)
    counts = _poisson(_plant_genes(features.astype(np.float64), grid, rng), rng)
    classes = _classes(6, 6, 12)
    print_table(eps_runs(_bin_table(counts, grid, classes, features), radii))
    inside = (grid < PERIOD_BINS - 4).all(axis=1)  # a new table: a subset would keep the graphs built above
    block = _bin_table(counts[inside], grid[inside], classes, features[inside])
    print(f"\nthe first {PERIOD_BINS - 4} × {PERIOD_BINS - 4} bins, inside one period of the tiled image:")
    print_table(eps_runs(block, radii))


def main() -> None:
    from compare_published import blas_kernels

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["simulation", "hd"])
    parser.add_argument("--side", type=int, default=200, help="simulation: bins per side")
    parser.add_argument("--smooth-um", type=float, default=24.0, help="simulation: smoothing length of the fields")
    parser.add_argument("--cols", type=int, default=250, help="hd: bins per row of the crop")
    parser.add_argument("--rows", type=int, default=200, help="hd: rows of the crop")
    parser.add_argument("--radii", type=float, nargs="+", default=None, help="µm (default 16 32 64 112 / 112)")
    args = parser.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("BLAS kernels:", "; ".join(blas_kernels()))
    if args.part == "simulation":
        simulation(args.side, args.radii or [16.0, 32.0, 64.0, 112.0], args.smooth_um)
    else:
        hd(args.cols, args.rows, args.radii or [112.0])
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
