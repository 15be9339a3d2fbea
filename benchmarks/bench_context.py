"""Context features: which neighbourhood to default to (chosen by CV over the references), and their cost.

``--stage choose`` (HER2ST C2–C5, log1p targets, ``X_default``, the sections of
``bench_loso.py``): for every left-out query section, each context variant × method is scored by
leave-one-reference-out CV over the three references only (the *inner* score, which chooses the
default) and, for reference, fitted on the three and scored on the query (the *outer* score, HVG-50
Pearson). The variant with the best mean inner score becomes ``context=True``. Also scores
ensembles of two methods (the z-scored average of ``models._ensemble.Ensemble``, and the plain
average for comparison), fixed or chosen by inner CV (``n_best=2``).

``--stage time``: wall and CPU time of ``method="auto"`` with its defaults (every shared gene, the
four sections as references, C2 as the query).

``--stage scale``: time and peak memory of the context features of a synthetic Visium HD slide
(``--n-bins`` bins of 8 µm on a square grid, ``--dim``-wide embeddings): the neighbour graph and
the features, k nearest and a µm radius.

    PYTHONPATH=src python benchmarks/bench_context.py --stage choose
    PYTHONPATH=src python benchmarks/bench_context.py --stage scale --n-bins 1000000 --dim 64
    PYTHONPATH=src python benchmarks/bench_context.py --stage time
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd
from bench_loso import SECTIONS, scored_genes, section, truth_of

from stmorph.models._cv import cross_validate, fold_scores
from stmorph.models._ensemble import Ensemble
from stmorph.models._predictor import get_method
from stmorph.tl._context import Context, parse_context
from stmorph.tl._spatial import median_spacing, spatial_um

VARIANTS = {
    "none": None,
    "k6": {"n_neighbors": 6},
    "k12": {"n_neighbors": 12},
    "k6-spread": {"n_neighbors": 6, "spread": True},
    "r1.5": "1.5",  # µm radius: 1.5 × the median spot spacing (the 8 spots of the first square ring)
}
METHODS = {
    "knn": ("knn", {"k": "cv"}),
    "knn-std": ("knn", {"k": "cv", "standardize": True}),
    "ridge": ("ridge", {"alpha": "cv", "standardize": True}),
    "ridge-pca": ("ridge", {"alpha": "cv", "standardize": True, "n_pcs": 256}),
}


def variant_context(value, spacing: float) -> Context | None:
    """The :class:`Context` of a variant (radii given in spot spacings become µm)."""
    if isinstance(value, str):
        return Context(n_neighbors=None, radius=float(value) * spacing)
    return parse_context(value)


def features(tables: dict, rep: str, spacing: float) -> dict[str, dict[str, np.ndarray]]:
    """Every variant's inputs of every section."""
    out = {}
    for label, value in VARIANTS.items():
        context = variant_context(value, spacing)
        out[label] = {
            name: t.obsm[rep] if context is None else context.features(t.obsm[rep], spatial_um(t))
            for name, t in tables.items()
        }
    return out


def maker(method: str, seed: int = 0):
    name, options = METHODS[method]
    return lambda: get_method(name)(random_state=seed, progress=False, device="cpu", **options)


def choose(args) -> None:
    tables = {name: section(name) for name in SECTIONS}
    spacing = float(np.median([median_spacing(spatial_um(t)) for t in tables.values()]))
    shared = list(tables[SECTIONS[0]].var_names)
    for table in tables.values():
        shared = [g for g in shared if g in set(table.var_names)]
    genes = scored_genes(tables, shared)
    print(f"median spot spacing {spacing:.1f} µm; {len(genes)} genes")
    inputs = features(tables, args.rep, spacing)
    rows, preds = [], {}
    for query in SECTIONS:
        refs = [n for n in SECTIONS if n != query]
        y = np.concatenate([truth_of(tables[n], genes) for n in refs])
        groups = np.repeat(np.arange(len(refs)), [tables[n].n_obs for n in refs])
        truth = truth_of(tables[query], genes)
        for variant in args.variants:
            x = np.concatenate([inputs[variant][n] for n in refs])
            for method in args.methods:
                start = time.perf_counter()
                inner = cross_validate([maker(method)], [method], x, y, groups)["pearson_hvg50"].mean()
                model = maker(method)().fit(x, y, groups=groups)
                pred = model.predict(inputs[variant][query])
                preds[query, variant, method] = pred
                outer = fold_scores(truth, pred)[0]
                rows.append((variant, method, query, inner, outer, time.perf_counter() - start))
                print(f"{variant:10s} {method:9s} {query}: inner {inner:.3f} outer {outer:.3f}", flush=True)
            for a, b in args.pairs:
                average = (preds[query, variant, a] + preds[query, variant, b]) / 2
                rows.append((variant, f"mean({a},{b})", query, np.nan, fold_scores(truth, average)[0], 0.0))
                members = [METHODS[a], METHODS[b]]
                ens = Ensemble(members=members, progress=False, device="cpu").fit(x, y, groups=groups)
                score = fold_scores(truth, ens.predict(inputs[variant][query]))[0]
                rows.append((variant, f"ens({a},{b})", query, np.nan, score, 0.0))
                print(f"{variant:10s} ens({a},{b}) {query}: outer {score:.3f}", flush=True)
    df = pd.DataFrame(rows, columns=["variant", "method", "query", "inner", "outer", "seconds"])
    if args.out:
        df.to_csv(args.out, index=False)
    for column in ("inner", "outer"):
        table = df.pivot_table(index="variant", columns="method", values=column, aggfunc="mean")
        print(f"\nmean {column} HVG-50 Pearson (inner: leave-one-reference-out on the 3 references of each query)")
        print(table.round(3).to_string())


def scale(args) -> None:
    side = int(np.ceil(np.sqrt(args.n_bins)))
    grid = np.stack(np.divmod(np.arange(args.n_bins), side), axis=1).astype(np.float64) * 8.0  # 8 µm bins
    x = np.random.default_rng(0).normal(size=(args.n_bins, args.dim)).astype(np.float32)
    print(f"{args.n_bins} bins of 8 µm, {args.dim}-d embeddings ({x.nbytes / 1e9:.2f} GB)")
    for context in (Context(n_neighbors=6), Context(n_neighbors=None, radius=12.0), Context(spread=True)):
        start = time.perf_counter()
        out = context.features(x, grid)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"{context.record()}: {seconds:.1f} s, output {out.nbytes / 1e9:.2f} GB, peak RSS so far {peak:.2f} GB")
        del out


def time_auto(args) -> None:
    """``method="auto"`` with its defaults on every shared gene, four references (C2–C5) and C2 as the query."""
    import os

    import stmorph as st

    tables = {name: section(name) for name in SECTIONS}
    refs = list(tables.values())
    query = tables[SECTIONS[0]].copy()
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    st.tl.predict(query, refs, method="auto", use_rep=args.rep, progress=False, device="cpu")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    record = query.uns["stmorph"]["predict"]["predicted_auto"]
    print(
        f"auto, {len(record['genes'])} genes, {len(refs)} references: {wall:.0f} s wall, {cpu:.0f} s CPU; "
        f"load {load:.1f} before, {os.getloadavg()[0]:.1f} after; chose {record['selected']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=["choose", "scale", "time"], default="choose")
    parser.add_argument("--rep", default="X_default")
    parser.add_argument("--methods", nargs="+", default=["knn", "ridge"], choices=list(METHODS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--pairs", nargs="*", default=["knn+ridge"], help="a+b: methods to average")
    parser.add_argument("--out", default=None, help="CSV of every score")
    parser.add_argument("--n-bins", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    args.pairs = [tuple(p.split("+")) for p in args.pairs]
    {"choose": choose, "scale": scale, "time": time_auto}[args.stage](args)


if __name__ == "__main__":
    main()
