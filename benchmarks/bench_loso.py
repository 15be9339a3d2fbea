"""Leave-one-section-out prediction on the shipped HER2ST sections C2–C5: knn, ridge (α=1), ridge-cv, auto.

Query = the left-out section; targets = every gene the four sections share, log1p-normalised
(normalize_total 1e4 → log1p); score = mean Pearson over the query's 50 most variable genes.
Features: the demo's ``X_default`` (``st.tl.embed``), cached in ``/tmp/stmorph_bench_loso`` so a
second run skips the embedding. Prints one row per method and section, and the means.

    PYTHONPATH=src python benchmarks/bench_loso.py [--seeds 0 1 2] [--methods knn ridge ridge-cv auto]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc

import stmorph as st
from stmorph.models._cv import fold_scores

SECTIONS = ("C2", "C3", "C4", "C5")
CACHE = Path("/tmp/stmorph_bench_loso")
METHODS = {
    "knn": ("knn", {}),
    "ridge": ("ridge", {}),
    "ridge-cv": ("ridge", {"alpha": "cv", "standardize": True}),
    "auto": ("auto", {}),
}
SEEDED = {"auto"}  # methods with randomness (the MLP candidate)


def section(name: str):
    """The section's table with log1p expression in X and the cached ``X_default`` embedding."""
    sdata = st.datasets.her2st(name)
    table = sdata.tables["table"].copy()
    path = CACHE / f"{name}_X_default.npy"
    if path.is_file():
        table.obsm["X_default"] = np.load(path)
    else:
        patches = st.pp.extract_patches(sdata, copy=True, progress=False)
        st.tl.embed(patches, progress=False)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, patches.obsm["X_default"])
        table = table[patches.obs_names].copy()
        table.obsm["X_default"] = patches.obsm["X_default"]
    sc.pp.normalize_total(table, target_sum=1e4)
    sc.pp.log1p(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    tables = {name: section(name) for name in SECTIONS}
    genes = list(tables["C2"].var_names.intersection(tables["C3"].var_names, sort=False))
    for name in SECTIONS[2:]:
        genes = [g for g in genes if g in set(tables[name].var_names)]
    rows = []
    for label in args.methods:
        method, options = METHODS[label]
        for seed in args.seeds if label in SEEDED else args.seeds[:1]:
            for query_name in SECTIONS:
                query = tables[query_name].copy()
                refs = [tables[n] for n in SECTIONS if n != query_name]
                start = time.perf_counter()
                st.tl.predict(
                    query,
                    refs,
                    method=method,
                    use_rep="X_default",
                    genes=genes,
                    random_state=seed,
                    progress=False,
                    device="cpu",
                    key_added="pred",
                    **options,
                )
                truth = query[:, genes].X
                truth = truth.toarray() if hasattr(truth, "toarray") else np.asarray(truth)
                hvg, _ = fold_scores(truth, query[:, genes].layers["pred"])
                record = query.uns["stmorph"]["predict"]["pred"]
                chosen = str(record.get("selected", ""))
                rows.append((label, seed, query_name, hvg, time.perf_counter() - start, chosen))
                print(f"{label:9s} seed {seed} {query_name}: {hvg:.3f} ({rows[-1][4]:.0f}s) {chosen}", flush=True)
    df = pd.DataFrame(rows, columns=["method", "seed", "query", "pearson_hvg50", "seconds", "chosen"])
    table = df.groupby(["method", "query"])["pearson_hvg50"].mean().unstack()
    table["mean"] = table.mean(axis=1)
    print(f"{len(genes)} genes")
    print(table.round(3).to_markdown())
    print(df.groupby("method")["seconds"].sum().round(0).to_string())


if __name__ == "__main__":
    main()
