"""BLEEP's epoch selection on the demo's protocol: the new frozen defaults against the settings before issue 15 §3.

The demo (``stmorph demo --out DIR``) predicts each HER2ST section from the other three on its
2,000 genes (highly variable across all four sections) with *scaled* expression (z-scored per
section, clipped at 10). This reads the demo's ``DIR/<section>/results.h5ad`` and refits
``method="bleep"`` leave one section out with each variant; score = mean Pearson (scaled
expression) over the query's 50 most variable genes of its log1p layer, as the demo's report.
One torch thread, as the demo::

    PYTHONPATH=src python benchmarks/bench_demo_bleep.py /tmp/demo --seeds 0 1 2 --variants new old
"""

from __future__ import annotations

import argparse
import time

import anndata as ad
import numpy as np
import torch
from compare_published import blas_kernels

import stmorph as st

SECTIONS = ("C2", "C3", "C4", "C5")
VARIANTS = {
    "new": {},
    "old": {"select": "loss", "grouped_validation": False, "refit": False, "epochs": 150},
    "new-loss": {"select": "loss"},
    "new-norefit": {"refit": False},
    "new-random": {"grouped_validation": False},
    "new-e150": {"epochs": 150},
    "old-refit": {"select": "loss", "grouped_validation": False, "epochs": 150},
    "old-score": {"grouped_validation": False, "refit": False, "epochs": 150},
    "new-log1p": {"layer": "log1p"},  # trained on (and predicting) log1p expression; Pearson ignores the scale
    "old-log1p": {"layer": "log1p", "select": "loss", "grouped_validation": False, "refit": False, "epochs": 150},
}


def _dense(x) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def hvg50_pearson(query, genes: list[str], layer: str) -> float:
    """Mean Pearson r of ``layer`` against ``X`` over the 50 genes of largest log1p variance."""
    view = query[:, genes]
    top = np.argsort(_dense(view.layers["log1p"]).var(axis=0))[-50:]
    truth, pred = _dense(view.X), _dense(view.layers[layer])
    return float(np.nanmean([np.corrcoef(truth[:, j], pred[:, j])[0, 1] for j in top]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("demo_out", help="folder written by `stmorph demo --out`")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["new", "old"], choices=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("BLAS kernels:", "; ".join(blas_kernels()))
    tables = {s: ad.read_h5ad(f"{args.demo_out}/{s}/results.h5ad") for s in SECTIONS}
    genes = list(tables["C2"].uns["stmorph"]["predict"]["predicted_bleep"]["genes"])
    for name in args.variants:
        for seed in args.seeds:
            start, scores = time.perf_counter(), []
            for q in SECTIONS:
                query = tables[q].copy()
                refs = [t for n, t in tables.items() if n != q]
                st.tl.predict(
                    query, refs, method="bleep", use_rep="X_default", genes=genes, progress=False, device="cpu",
                    key_added="bench", random_state=seed, **VARIANTS[name],
                )  # fmt: skip
                scores.append(hvg50_pearson(query, genes, "bench"))
            print(f"{name:12s} seed {seed}: {np.round(scores, 3)} mean {np.mean(scores):.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
