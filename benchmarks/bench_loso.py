"""Leave-one-section-out prediction on the shipped HER2ST sections C2–C5: knn, ridge, ridge-cv, auto, bleep, heclip.

Query = the left-out section; targets = every gene the four sections share (``--genes all``) or
BLEEP's gene set, the union of the three reference sections' top-1000 HVGs among the shared genes
(``--genes reference-hvg``; ``reference-hvg-before``: each section's top 1000 among its own genes,
then the shared ones, as ``st.tl.reference_hvgs`` did before issue 24), log1p-normalised
(normalize_total 1e4 → log1p); score = mean Pearson over the query's 50 most variable of the
``--score-genes`` (default: the predicted genes; several sets: one row per set). The ``*-before``
labels predict the ``reference-hvg-before`` genes and train on all of them, as BLEEP and HECLIP
did before issue 24 (the published 0.408 / 0.398).
Features (``--rep``): the demo's ``X_default`` (``st.tl.embed``), the 57 stain/texture features
``X_hed``, or both (each standardised, then concatenated), cached in ``/tmp/stmorph_bench_loso``
so a second run skips the embedding. One torch thread. Prints one row per method, seed and
section, the means, and the means of two combinations of saved predictions: the average over
seeds of a seeded method (``<method>-ens``) and the average of two methods (``a+b``, ``--combine``).

    PYTHONPATH=src python benchmarks/bench_loso.py [--seeds 0 1 2] [--methods knn ridge ridge-cv auto]
    PYTHONPATH=src python benchmarks/bench_loso.py --genes reference-hvg --methods knn bleep heclip \
        --combine bleep+ridge-cv
    PYTHONPATH=src python benchmarks/bench_loso.py --genes all --score-genes reference-hvg-before all \
        --methods bleep heclip bleep-before heclip-before --seeds 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import torch
from compare_published import blas_kernels

import stmorph as st
from stmorph.models._cv import fold_scores

SECTIONS = ("C2", "C3", "C4", "C5")
CACHE = Path("/tmp/stmorph_bench_loso")
ENCODERS = {"X_default": "default", "X_hed": "hed"}
BEFORE_15 = {"select": "loss", "grouped_validation": False, "refit": False}  # epoch selection before issue 15 §3
OLD_BLEEP = {**BEFORE_15, "epochs": 150}
OLD_HECLIP = {**BEFORE_15, "epochs": 15, "retrieve_from": "image"}
METHODS = {
    "knn": ("knn", {}),
    "ridge": ("ridge", {}),
    "ridge-cv": ("ridge", {"alpha": "cv", "standardize": True}),
    "auto": ("auto", {}),
    "mlp-es": ("mlp", {"val_fraction": 0.2, "patience": 10}),
    "bleep": ("bleep", {}),
    "heclip": ("heclip", {}),  # frozen defaults; the *-old labels reproduce the defaults before issue 15 §3
    "bleep-before": ("bleep", {"train_genes": "all"}),  # with the reference-hvg-before genes (GENES_OF)
    "heclip-before": ("heclip", {"train_genes": "all"}),
    "bleep-t0.1": ("bleep", {**OLD_BLEEP, "temperature": 0.1}),
    "bleep-wd0.1": ("bleep", {**OLD_BLEEP, "weight_decay": 0.1}),
    "bleep-p64": ("bleep", {**OLD_BLEEP, "projection_dim": 64}),
    "bleep-drop0.5": ("bleep", {**OLD_BLEEP, "dropout": 0.5}),
    "heclip-e50": ("heclip", {**OLD_HECLIP, "epochs": 50}),
    "bleep-loss": ("bleep", {"select": "loss"}),
    "bleep-old": ("bleep", OLD_BLEEP),
    "bleep-random": ("bleep", {"grouped_validation": False}),
    "bleep-e150": ("bleep", {"epochs": 150}),
    "bleep-norefit": ("bleep", {"refit": False}),
    "heclip-loss": ("heclip", {"select": "loss"}),
    "heclip-image": ("heclip", {"retrieve_from": "image", "epochs": 15}),
    "heclip-old": ("heclip", OLD_HECLIP),
    "heclip-image-e100": ("heclip", {"retrieve_from": "image", "epochs": 100}),
    "heclip-image-t10": ("heclip", {"retrieve_from": "image", "epochs": 15, "temperature": 10.0}),
    "heclip-image-lr1e-4": ("heclip", {"retrieve_from": "image", "lr": 1e-4, "epochs": 100}),
    "knn-cv": ("knn", {"k": "cv"}),
    "knn-std": ("knn", {"standardize": True}),
    "knn-ctx": ("knn", {"k": "cv", "context": True}),  # + the mean embedding of the 6 nearest spots
    "ridge-ctx": ("ridge", {"alpha": "cv", "standardize": True, "context": True}),
    "ensemble-ctx": ("ensemble", {"context": True}),  # z-scored average of knn(k=cv) and ridge-cv, with context
    "auto-no-ctx": ("auto", {"context": False}),
    "bleep-ctx": ("bleep", {"context": True}),
    "heclip-ctx": ("heclip", {"context": True}),
}
UNSEEDED = {
    "knn",
    "ridge",
    "ridge-cv",
    "knn-cv",
    "knn-std",
    "knn-ctx",
    "ridge-ctx",
    "ensemble-ctx",
}
"""Deterministic methods, run once."""
GENES_OF = {"bleep-before": "reference-hvg-before", "heclip-before": "reference-hvg-before"}
"""Labels whose predicted genes are fixed, whatever ``--genes``: the setting before issue 24."""
GENE_SETS = ("all", "scored", "reference-hvg", "reference-hvg-before")


def section(name: str):
    """The section's table with log1p expression in X and the cached embeddings ``X_default`` and ``X_hed``."""
    sdata = st.datasets.her2st(name)
    table = sdata.tables["table"].copy()
    paths = {key: CACHE / f"{name}_{key}.npy" for key in ENCODERS}
    if not all(path.is_file() for path in paths.values()):
        patches = st.pp.extract_patches(sdata, copy=True, progress=False)
        CACHE.mkdir(parents=True, exist_ok=True)
        for key, encoder in ENCODERS.items():
            if not paths[key].is_file():
                st.tl.embed(patches, model=encoder, progress=False)
                np.save(paths[key], patches.obsm[key])
        table = table[patches.obs_names].copy()
    for key, path in paths.items():
        table.obsm[key] = np.load(path)
    sc.pp.normalize_total(table, target_sum=1e4)
    sc.pp.log1p(table)
    return table


def fold_genes(refs, shared: list[str], which: str) -> list[str]:
    """The genes of one fold: all shared (or scored) genes, or the union of the references' top-1000 HVGs."""
    if which in ("all", "scored"):
        return shared
    if which == "reference-hvg":
        return st.tl.reference_hvgs(refs, n_top=1000)
    keep, before = set(shared), {}
    for ref in refs:
        variance = np.asarray(ref.X.power(2).mean(axis=0)).ravel() - np.asarray(ref.X.mean(axis=0)).ravel() ** 2
        before.update(dict.fromkeys(ref.var_names[np.sort(np.argsort(-variance, kind="stable")[:1000])]))
    return [g for g in before if g in keep]


def scored_genes(tables: dict, shared: list[str], n_top: int = 1000) -> list[str]:
    """The shared genes among some section's ``n_top`` most variable ones (``--genes scored``).

    Every score reads only the 50 most variable genes of a held-out section, which lie among that
    section's top 1000, and knn, ridge, their ensemble and ``auto`` over them fit each gene on its
    own (their settings are chosen on the same HVG-50 scores), so their scores equal those on all
    shared genes, at a fraction of the cost. Not so for methods that share weights across genes
    (mlp, bleep, heclip).
    """
    top = set()
    for table in tables.values():
        variance = truth_of(table, shared).var(axis=0)
        top.update(np.asarray(shared)[np.argsort(-variance)[:n_top]])
    return [g for g in shared if g in top]


def truth_of(query, genes: list[str]) -> np.ndarray:
    truth = query[:, genes].X
    return truth.toarray() if hasattr(truth, "toarray") else np.asarray(truth)


def combined_rows(predictions: dict, tables: dict, shared: list[str], args) -> list[tuple]:
    """Scores of the seed ensemble of every seeded method and of the averaged pairs in ``--combine``, per scored set."""
    rows = []
    pairs = [tuple(pair.split("+")) for pair in args.combine]
    for which in args.score_genes:
        suffix = "" if len(args.score_genes) == 1 else f" [{which}]"
        seeded = {label for label, seed, _ in predictions if seed != args.seeds[0] and label.endswith(suffix)}
        for query_name in SECTIONS:
            refs = [tables[n] for n in SECTIONS if n != query_name]
            truth = truth_of(tables[query_name], fold_genes(refs, shared, which))

            def mean_over_seeds(label, query_name=query_name):
                runs = [p for (lab, _, q), p in predictions.items() if lab == label and q == query_name]
                return np.mean(runs, axis=0)

            for label in sorted(seeded):
                rows.append((f"{label}-ens", 0, query_name, fold_scores(truth, mean_over_seeds(label))[0], 0.0, ""))
            for a, b in pairs:
                pred = (mean_over_seeds(a + suffix) + mean_over_seeds(b + suffix)) / 2
                rows.append((f"{a}+{b}{suffix}", 0, query_name, fold_scores(truth, pred)[0], 0.0, ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["knn", "ridge", "ridge-cv", "auto"], choices=list(METHODS))
    parser.add_argument("--genes", choices=GENE_SETS, default="all", help="genes predicted")
    parser.add_argument("--score-genes", nargs="+", choices=GENE_SETS, default=None, help="genes scored")
    parser.add_argument("--rep", nargs="+", default=["X_default"], choices=list(ENCODERS), help="obsm key(s) used")
    parser.add_argument("--out", default=None, help="CSV of every run's score")
    parser.add_argument("--combine", nargs="*", default=[], help="pairs a+b of methods whose predictions to average")
    args = parser.parse_args()
    args.score_genes = args.score_genes or [args.genes]
    torch.set_num_threads(1)
    print("BLAS kernels:", "; ".join(blas_kernels()))  # one process: the kernel affects times, not ratios
    tables = {name: section(name) for name in SECTIONS}
    shared = list(tables["C2"].var_names.intersection(tables["C3"].var_names, sort=False))
    for name in SECTIONS[2:]:
        shared = [g for g in shared if g in set(tables[name].var_names)]
    if args.genes == "scored":
        shared = scored_genes(tables, shared)
    rows, predictions = [], {}
    for label in args.methods:
        method, options = METHODS[label]
        for seed in args.seeds[:1] if label in UNSEEDED else args.seeds:
            for query_name in SECTIONS:
                query = tables[query_name].copy()
                refs = [tables[n] for n in SECTIONS if n != query_name]
                genes = fold_genes(refs, shared, GENES_OF.get(label, args.genes))
                start = time.perf_counter()
                st.tl.predict(
                    query,
                    refs,
                    method=method,
                    use_rep=args.rep if len(args.rep) > 1 else args.rep[0],
                    genes=genes,
                    random_state=seed,
                    progress=False,
                    device="cpu",
                    key_added="pred",
                    trust=False,  # the scores read the prediction only; trust would fit once more per reference
                    **options,
                )
                seconds = time.perf_counter() - start
                record = query.uns["stmorph"]["predict"]["pred"]
                chosen = str(record.get("selected", ""))
                for which in args.score_genes:
                    scored = fold_genes(refs, shared, which)
                    pred = query[:, scored].layers["pred"]
                    if np.isnan(pred).any():  # a *-before label does not predict every shared gene
                        continue
                    name = label if len(args.score_genes) == 1 else f"{label} [{which}]"
                    predictions[name, seed, query_name] = pred
                    hvg, _ = fold_scores(truth_of(query, scored), pred)
                    rows.append((name, seed, query_name, hvg, seconds, chosen))
                    print(f"{name:9s} seed {seed} {query_name}: {hvg:.3f} ({seconds:.0f}s) {chosen}", flush=True)
    rows += combined_rows(predictions, tables, shared, args)
    df = pd.DataFrame(rows, columns=["method", "seed", "query", "pearson_hvg50", "seconds", "chosen"])
    if args.out:
        df.to_csv(args.out, index=False)
    table = df.groupby(["method", "query"])["pearson_hvg50"].mean().unstack()
    table["mean"] = table.mean(axis=1)
    print(f"{len(shared)} genes shared by the sections")
    print(table.round(3).to_string())
    print(df.groupby("method")["seconds"].sum().round(0).to_string())


if __name__ == "__main__":
    main()
