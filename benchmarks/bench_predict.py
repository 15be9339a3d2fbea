"""Fit + predict time of each prediction baseline through ``st.tl.predict``.

Workload (issue 4): a reference of 5,000 spots × 1,024-d embeddings × 2,000 genes, predicting a
query of 5,000 spots. Synthetic data: expression is a noisy non-linear function of a rank-16
projection of the embeddings, so every method has signal to fit.

LightGBM fits one model per gene and its cost is exactly linear in the number of genes, so by
default it is timed on ``--lightgbm-genes`` genes and the figure is scaled to all genes (both
numbers are printed); pass ``--lightgbm-genes 2000`` to time every gene.

Run::

    .venv/bin/python benchmarks/bench_predict.py
    .venv/bin/python benchmarks/bench_predict.py --methods ridge mlp --spots 2000   # smaller/partial
    .venv/bin/python benchmarks/bench_predict.py --methods lightgbm --max-bin 63    # coarser histograms
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import anndata as ad
import numpy as np
import pandas as pd

import stmorph as st

METHODS = ("linear", "ridge", "mlp", "lightgbm")


def make_slice(n_spots: int, n_dims: int, n_genes: int, rng: np.random.Generator, loadings: np.ndarray) -> ad.AnnData:
    """One synthetic slice: embeddings in ``obsm["X_emb"]``, expression in ``X`` (dense float32)."""
    emb = rng.standard_normal((n_spots, n_dims)).astype(np.float32)
    factors = emb @ loadings[0] / np.sqrt(n_dims)
    expr = np.tanh(factors) @ loadings[1] + 0.5 * rng.standard_normal((n_spots, n_genes))
    adata = ad.AnnData(
        expr.astype(np.float32),
        obs=pd.DataFrame(index=[f"spot{i}" for i in range(n_spots)]),
        var=pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)]),
    )
    adata.obsm["X_emb"] = emb
    return adata


def time_method(
    method: str, ref: ad.AnnData, query: ad.AnnData, genes: list[str] | None, **options
) -> dict[str, float]:
    start = time.perf_counter()
    st.tl.predict(query, ref, method=method, use_rep="X_emb", genes=genes, progress=False, **options)
    wall = time.perf_counter() - start
    record = query.uns["stmorph"]["predict"][f"predicted_{method}"]
    return {"fit_s": record["train_time_s"], "predict_s": record["predict_time_s"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spots", type=int, default=5000)
    parser.add_argument("--dims", type=int, default=1024)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--lightgbm-genes", type=int, default=40, help="genes timed for LightGBM (then scaled)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--max-bin", type=int, default=255, help="LightGBM histogram bins (its default: 255)")
    args = parser.parse_args()

    import torch

    rng = np.random.default_rng(0)
    loadings = (rng.standard_normal((args.dims, 16)), rng.standard_normal((16, args.genes)))
    ref = make_slice(args.spots, args.dims, args.genes, rng, loadings)
    query = make_slice(args.spots, args.dims, args.genes, rng, loadings)
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}), "
        f"load average before {os.getloadavg()[0]:.1f}"
    )
    print(f"workload: reference {args.spots} spots × {args.dims}-d × {args.genes} genes → query {args.spots} spots")
    print(
        f"{'method':<10} {'genes timed':>11} {'fit s':>9} {'predict s':>10} {'total s':>9} {'total for all genes':>20}"
    )
    for method in args.methods:
        n_timed = min(args.lightgbm_genes, args.genes) if method == "lightgbm" else args.genes
        genes = list(ref.var_names[:n_timed]) if n_timed < args.genes else None
        options = {"max_bin": args.max_bin} if method == "lightgbm" else {}
        result = time_method(method, ref, query, genes, **options)
        total = result["fit_s"] + result["predict_s"]
        scaled = total * args.genes / n_timed
        note = "" if n_timed == args.genes else " (scaled)"
        print(
            f"{method:<10} {n_timed:>11} {result['fit_s']:>9.1f} {result['predict_s']:>10.2f} {total:>9.1f} "
            f"{scaled:>19.1f}s{note}"
        )
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
