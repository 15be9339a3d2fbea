"""Trust of predictions, leave-one-section-out on HER2ST C2–C5: expected r vs achieved r, trusted genes, EPS null.

For each method and left-out section, ``st.tl.predict`` (trust on: out-of-fold predictions of the
three references, their EPS) on log1p targets (the sections of ``bench_loso.py``) and the query's
achieved Pearson per gene. Prints per section: Spearman(expected r, achieved r) over the genes
detected in ≥ 10 % of the query's spots, the mean absolute error on the query's 50 most variable
genes (HVG-50), the trusted genes' precision (share reaching r ≥ 0.1) and recall (share of the
genes reaching r ≥ 0.3 that are trusted), and the seconds of the whole call; with ``--null``, the
same with the references' expression shuffled against their images (``n_trusted`` should be ~0).

    PYTHONPATH=src python benchmarks/bench_trust.py --methods knn ridge-cv auto [--seeds 0 1 2] [--null]
    PYTHONPATH=src python benchmarks/bench_trust.py --methods bleep --genes reference-hvg --seeds 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from bench_loso import METHODS, SECTIONS, UNSEEDED, fold_genes, section, truth_of
from scipy.stats import spearmanr

import stmorph as st
from stmorph.models._cv import hvg_columns
from stmorph.tl._trust import column_pearson


def shared_genes(tables: dict) -> list[str]:
    genes = list(tables[SECTIONS[0]].var_names)
    for name in SECTIONS[1:]:
        keep = set(tables[name].var_names)
        genes = [g for g in genes if g in keep]
    return genes


def shuffled(ref, seed: int):
    """``ref`` with its spots' expression permuted against their images."""
    out = ref.copy()
    out.X = out.X[np.random.default_rng(seed).permutation(out.n_obs)]
    return out


def scores(query, genes: list[str], key: str) -> dict:
    """Spearman/MAE/bias (expected − achieved) of expected vs achieved r, trusted precision/recall."""
    truth = truth_of(query, genes)
    achieved = column_pearson(truth, query[:, genes].layers[key])
    var = query.var.loc[genes]
    expected, trusted = var[f"{key}_expected_r"].to_numpy(), var[f"{key}_trusted"].to_numpy(bool)
    detected = (truth > 0).mean(axis=0) >= 0.1
    ok = detected & np.isfinite(achieved) & np.isfinite(expected)
    hvg = hvg_columns(truth)
    return {
        "spearman": spearmanr(expected[ok], achieved[ok])[0],
        "mae_hvg50": float(np.nanmean(np.abs(expected - achieved)[hvg])),
        "bias_hvg50": float(np.nanmean((expected - achieved)[hvg])),  # < 0: the query does better than foretold
        "n_trusted": int(trusted.sum()),
        "precision": float(np.mean(achieved[trusted] >= 0.1)) if trusted.any() else np.nan,
        "recall": float(np.mean(trusted[np.isfinite(achieved) & (achieved >= 0.3)])),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["knn", "ridge-cv", "auto"], choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--genes", choices=["all", "reference-hvg"], default="all", help="as bench_loso.py")
    parser.add_argument("--null", action="store_true", help="also run with the references' expression shuffled")
    parser.add_argument("--out", default=None, help="CSV of the rows")
    args = parser.parse_args()
    tables = {name: section(name) for name in SECTIONS}
    shared = shared_genes(tables)
    rows = []
    for label in args.methods:
        method, options = METHODS[label]
        for seed in args.seeds[:1] if label in UNSEEDED else args.seeds:
            for query_name in SECTIONS:
                for null in (False, True) if args.null else (False,):
                    refs = [tables[n] for n in SECTIONS if n != query_name]
                    genes = fold_genes(refs, shared, args.genes)
                    refs = [shuffled(r, seed + i) for i, r in enumerate(refs)] if null else refs
                    query = tables[query_name].copy()
                    start = time.perf_counter()
                    # trust on for the trained methods too (off by default for them)
                    st.tl.predict(query, refs, method=method, use_rep="X_default", genes=genes, random_state=seed,
                                  progress=False, device="cpu", key_added="pred", trust=True, **options)  # fmt: skip
                    row = {"method": label, "seed": seed, "query": query_name, "null": null}
                    row.update(scores(query, genes, "pred"), seconds=time.perf_counter() - start)
                    rows.append(row)
                    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                          flush=True)  # fmt: skip
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, index=False)
    columns = ["spearman", "mae_hvg50", "bias_hvg50", "precision", "recall", "n_trusted"]
    print(df.groupby(["method", "null", "query"])[columns].mean().round(3).to_string())


if __name__ == "__main__":
    main()
