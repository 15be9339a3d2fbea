"""Calibration of the EPS p-values on the shipped HER2ST sections: normality vs randomization vs permutation.

Command::

    .venv/bin/python benchmarks/bench_eps_calibration.py [--seeds 3] [--n-perms 999]

For every section (default encoder embedding, the EPS paper's expression pipeline) the expression
rows are shuffled against the embeddings (a true null: the image says nothing about expression),
``--seeds`` times, and every gene detected in at least 3 spots gets a p-value under each null. The
script prints, per null, the fraction of genes with p < 0.01, p < 0.001 and q < 0.05 (overall and
by number of spots detected), the smallest p-value of the sparse genes (detected in <= 5 spots) on
the unshuffled sections, and writes the QQ plot ``docs/methods/eps_calibration.png``. Asserts
nothing (``tests/test_eps_calibration.py`` holds the acceptance checks).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from compare_published import blas_kernels

import stmorph as st
from stmorph.tl._eps import compute_eps
from stmorph.tl._geary import nonzero_counts
from stmorph.tl._graph import knn_graph

SECTIONS = ("C2", "C3", "C4", "C5")
NULLS = ("normality", "randomization", "permutation")
BINS = {"3-5 spots": (3, 5), "6-20 spots": (6, 20), "> 20 spots": (21, 10**9)}
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "methods" / "eps_calibration.png"


def _section(name: str):
    """The section's table with the default embedding and the prepared expression."""
    table = st.pp.extract_patches(st.datasets.her2st(name), copy=True, progress=False)
    st.tl.embed(table, progress=False)
    del table.obsm["patches"]
    st.pp.prepare_expression(table)
    return table


def _pvalues(table, embedding: np.ndarray, genes: np.ndarray, n_perms: int) -> pd.DataFrame:
    """p- and q-values of ``genes`` under every null on the image graph of ``embedding``."""
    graph, _, _ = knn_graph(embedding, 5, method="exact")
    X = np.asarray(table.X)[:, genes]
    frame = {}
    for null in NULLS:
        result = compute_eps(graph, X, table.var_names[genes], pvalues=null, n_perms=n_perms)
        frame[f"p_{null}"], frame[f"q_{null}"] = result.pval, result.qval
    return pd.DataFrame(frame, index=table.var_names[genes])


def _rates(frame: pd.DataFrame) -> pd.DataFrame:
    rows = {}
    for label, (lo, hi) in {"all genes": (3, 10**9), **BINS}.items():
        part = frame[(frame["n_detected"] >= lo) & (frame["n_detected"] <= hi)]
        for null in NULLS:
            p, q = part[f"p_{null}"], part[f"q_{null}"]
            rows[(label, null)] = {
                "genes": len(part),
                "p<0.01": (p < 0.01).mean(),
                "p<0.001": (p < 0.001).mean(),
                "q<0.05": (q < 0.05).mean(),
            }
    return pd.DataFrame.from_dict(rows, orient="index")


def _qq_plot(null_frame: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    for ax, (title, keep) in zip(
        axes,
        [
            ("detected in ≥ 3 spots", null_frame["n_detected"] >= 3),
            ("detected in 3–5 spots", null_frame["n_detected"] <= 5),
        ],
    ):
        n = int(keep.sum())
        expected = -np.log10((np.arange(1, n + 1) - 0.5) / n)
        for i, null in enumerate(NULLS):
            observed = -np.log10(np.sort(null_frame.loc[keep, f"p_{null}"].to_numpy()))
            ax.plot(expected, observed, ".", ms=2, color=f"C{i}", label=null, rasterized=True)
        ax.plot([0, expected.max()], [0, expected.max()], "k--", lw=0.8, label="uniform")
        ax.set_xlabel("expected −log10 p (uniform)")
        ax.set_ylabel("observed −log10 p")
        ax.set_title(f"{title} ({n:,} gene × shuffle)")
        ax.legend(markerscale=5)
    fig.suptitle("EPS p-values with expression shuffled against the image embeddings (HER2ST C2–C5)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-perms", type=int, default=999)
    args = parser.parse_args()
    start = time.perf_counter()
    print("BLAS kernels:", "; ".join(blas_kernels()))  # one process: the kernel affects times, not ratios
    null_frames, real_frames = [], []
    for name in SECTIONS:
        table = _section(name)
        detected = nonzero_counts(table.layers["counts"])
        genes = np.flatnonzero(detected >= 3)
        embedding = np.asarray(table.obsm["X_default"])
        real = _pvalues(table, embedding, genes, args.n_perms).assign(n_detected=detected[genes], section=name)
        real_frames.append(real)
        for seed in range(args.seeds):
            shuffled = embedding[np.random.default_rng(seed).permutation(table.n_obs)]
            frame = _pvalues(table, shuffled, genes, args.n_perms)
            null_frames.append(frame.assign(n_detected=detected[genes], section=name, seed=seed))
        print(f"{name}: {table.n_obs} spots, {len(genes)} genes detected in >= 3 spots", flush=True)
    nulls = pd.concat(null_frames)
    real = pd.concat(real_frames)
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(f"\nShuffled expression ({args.seeds} seeds x {len(SECTIONS)} sections, {args.n_perms} permutations):")
        print(_rates(nulls))
        sparse_real = real[real["n_detected"] <= 5]
        print(f"\nUnshuffled sections, {len(sparse_real)} genes detected in 3-5 spots: smallest p per null")
        print(sparse_real[[f"p_{null}" for null in NULLS]].min().to_string())
        for null in NULLS:
            top = real.sort_values(f"p_{null}").groupby("section").head(5)
            print(f"\nTop genes per section under {null}:")
            print(top.groupby("section")["n_detected"].apply(lambda d: ", ".join(f"{g} ({n})" for g, n in d.items())))
    _qq_plot(nulls, FIGURE)
    print(f"\nwrote {FIGURE} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
