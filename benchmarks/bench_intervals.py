"""Conformal intervals of ``st.tl.predict(..., interval=0.9)``, leave-one-section-out on HER2ST C2–C5.

For every method, seed and left-out section: the mean coverage of the 90 % intervals over the
genes detected in ≥ 10 % of the query's spots, the fraction of those genes covered below 0.8, and
the mean width relative to each gene's SD on the query; beside it the same for *unscaled*
conformal intervals (scale ``"none"``: one width per gene) calibrated on the same out-of-fold
predictions, and the scale the grouped CV over the references chose. Sections, features, gene
sets and method settings are those of ``bench_loso.py``. A second part (``--memory``) measures the
peak memory of the interval step for 20,000 genes × 50,000 spots against the prediction layer.

    PYTHONPATH=src python benchmarks/bench_intervals.py --methods knn ridge-cv auto --genes reference-hvg
    PYTHONPATH=src python benchmarks/bench_intervals.py --methods bleep --seeds 0 1 2 --genes reference-hvg
    PYTHONPATH=src python benchmarks/bench_intervals.py --memory 20000 50000
"""

from __future__ import annotations

import argparse
import functools
import time
import tracemalloc

import numpy as np
import pandas as pd
import torch
from bench_loso import METHODS, SECTIONS, UNSEEDED, fold_genes, section, truth_of

import stmorph as st
from stmorph.models import _conformal

LEVEL = 0.9
DETECTED = 0.1


def capture_calibration(store: dict) -> None:
    """Keep the arguments of the last calibration (out-of-fold predictions) to calibrate the unscaled baseline."""
    original = _conformal.calibrate

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        store["args"], store["kwargs"] = args, kwargs
        return original(*args, **kwargs)

    _conformal.calibrate = wrapper


def unscaled_bounds(store: dict, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the unscaled conformal intervals around ``pred``, from the captured calibration inputs."""
    x, y, oof, groups, level = store["args"][:5]
    cal = _conformal.fit_calibration(x, y, oof, groups, level, "none")
    return cal.intervals(pred, np.arange(pred.shape[1]), np.zeros((len(pred), 1), np.float32))


def summary(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[float, float, float]:
    """Mean coverage, fraction of genes below 0.8 and mean width / SD over the detected genes."""
    scores = _conformal.interval_scores(truth, lower, upper, LEVEL)
    return float(scores["coverage"].mean()), float((scores["coverage"] < 0.8).mean()), float(scores["width"].mean())


def run_method(label: str, seeds: list[int], tables: dict, shared: list[str], which: str, store: dict) -> list[tuple]:
    method, options = METHODS[label]
    rows = []
    for seed in seeds[:1] if label in UNSEEDED else seeds:
        for query_name in SECTIONS:
            query = tables[query_name].copy()
            refs = [tables[n] for n in SECTIONS if n != query_name]
            genes = fold_genes(refs, shared, which)
            start = time.perf_counter()
            st.tl.predict(
                query, refs, method=method, use_rep="X_default", genes=genes, random_state=seed,
                progress=False, device="cpu", key_added="pred", interval=LEVEL, **options,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            truth = truth_of(query, genes)
            keep = (truth > 0).mean(axis=0) >= DETECTED
            lower, upper = (query[:, genes].layers[k][:, keep] for k in ("pred_lower", "pred_upper"))
            flat_lower, flat_upper = unscaled_bounds(store, query[:, genes].layers["pred"])
            scale = str(query.uns["stmorph"]["predict"]["pred"]["interval"]["scale"])
            scaled = summary(truth[:, keep], lower, upper)
            flat = summary(truth[:, keep], flat_lower[:, keep], flat_upper[:, keep])
            rows.append((label, seed, query_name, int(keep.sum()), scale, *scaled, *flat, seconds))
            print(
                f"{label:8s} seed {seed} {query_name}: coverage {scaled[0]:.3f}, <0.8 {scaled[1]:.3f}, width/SD "
                f"{scaled[2]:.3f} ({scale}) | unscaled {flat[0]:.3f}, {flat[1]:.3f}, {flat[2]:.3f} ({seconds:.0f}s)",
                flush=True,
            )
    return rows


def memory(n_genes: int, n_spots: int, n_cal: int = 2000, dim: int = 512) -> None:
    """Peak memory of the interval step (knn scale) relative to the prediction layer."""
    rng = np.random.default_rng(0)
    one = np.ones(n_genes, np.float32)
    cal = _conformal.Calibration(LEVEL, "knn", one, 0 * one, 10 * one)
    cal.bank = rng.normal(size=(n_cal, dim)).astype(np.float32)
    cal.spread, cal.floor = rng.uniform(size=(n_cal, n_genes)).astype(np.float32), 0.1 * one
    layer = np.ones((n_spots, n_genes), np.float32)
    x = rng.normal(size=(n_spots, dim)).astype(np.float32)
    cal.intervals(layer[:10], np.arange(n_genes), x[:10])  # warm-up
    tracemalloc.start()
    start = time.perf_counter()
    cal.intervals(layer, np.arange(n_genes), x)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"{n_genes} genes × {n_spots} spots: prediction layer {layer.nbytes / 2**30:.2f} GiB, interval step peak "
        f"{peak / 2**30:.2f} GiB = {peak / layer.nbytes:.3f} × the layer, {seconds:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["knn", "ridge-cv", "auto"], choices=list(METHODS))
    parser.add_argument("--genes", choices=["all", "reference-hvg"], default="reference-hvg")
    parser.add_argument("--out", default=None, help="CSV of every run")
    parser.add_argument("--memory", type=int, nargs=2, metavar=("GENES", "SPOTS"), help="only the memory check")
    args = parser.parse_args()
    if args.memory:
        memory(*args.memory)
        return
    torch.set_num_threads(1)
    tables = {name: section(name) for name in SECTIONS}
    shared = [g for g in tables["C2"].var_names if all(g in set(tables[n].var_names) for n in SECTIONS[1:])]
    store: dict = {}
    capture_calibration(store)
    rows = []
    for label in args.methods:
        rows += run_method(label, args.seeds, tables, shared, args.genes, store)
    columns = ["method", "seed", "query", "n_genes", "scale", "coverage", "below_0.8", "width"]
    columns += ["coverage_unscaled", "below_0.8_unscaled", "width_unscaled", "seconds"]
    df = pd.DataFrame(rows, columns=columns)
    if args.out:
        df.to_csv(args.out, index=False)
    print(df.groupby(["method", "query"]).mean(numeric_only=True).drop(columns="seed").round(3).to_string())


if __name__ == "__main__":
    main()
