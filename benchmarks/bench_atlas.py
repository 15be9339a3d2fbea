"""Seconds of ``st.tl.predictable_genes`` on a HEST-1k-sized stored EPS table (2,000 genes × 500 slices).

Command::

    .venv/bin/python benchmarks/bench_atlas.py [--genes 2000] [--slices 500] [--groups 10]

A random EPS table (10 % of the cells unscored, a slice-level offset as SPS varies) with q-values
is summarised without groups and with ``--groups`` groups of slices (the per-group Welch tests);
the best of three runs is printed. Only stored values are read: no EPS is computed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

import stmorph as st


def _table(n_genes: int, n_slices: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 0.05, (n_genes, n_slices)) + rng.normal(0.0, 0.1, n_slices)
    values[rng.random(values.shape) < 0.1] = np.nan
    return pd.DataFrame(values, index=[f"g{i}" for i in range(n_genes)], columns=[f"s{j}" for j in range(n_slices)])


def _best_of(n: int, call) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--groups", type=int, default=10)
    args = parser.parse_args()
    eps = _table(args.genes, args.slices)
    qvals = eps.where(eps.isna(), 0.01)
    metadata = pd.DataFrame({"group": [f"t{j % args.groups}" for j in range(args.slices)]}, index=eps.columns)
    plain = _best_of(3, lambda: st.tl.predictable_genes(eps, qvals))
    grouped = _best_of(3, lambda: st.tl.predictable_genes(eps, qvals, groupby="group", metadata=metadata))
    print(f"{args.genes} genes × {args.slices} slices: {plain:.2f} s; with {args.groups} groups: {grouped:.2f} s")


if __name__ == "__main__":
    main()
