"""stmorph side by side with the published implementations, on the same inputs in one run.

Setup (once): the published packages live in the benchmark's own environment, never in
stmorph's dependencies::

    python3.11 -m venv .benchmarks_env
    .benchmarks_env/bin/pip install expression_copilot==0.3.0

Command::

    .venv/bin/python benchmarks/compare_published.py --what eps [--sizes 5000 20000 50000]
    .venv/bin/python benchmarks/compare_published.py --what baselines

``--what eps``: EPS of ``expression_copilot.mi.calc_eps`` (faiss exact kNN + numba Laplacian)
against ``st.tl`` (BLAS exact kNN + sparse-product Geary's C) for N spots × 1024-d embeddings ×
2000 genes, k = 5, ours once per ``--precision`` of the exact search (``float32`` and ``int8`` by
default; each run also reports the bare upper-half products and the rows the proof made it
recompute; without the benchmark environment the published side is left out and said so):
how many spots get other neighbours (float32 near-ties in faiss; ours re-ranks
in float64), the largest EPS difference, time and peak-memory ratios, and the Laplacian step
alone. Each side runs in its own process (peak RSS is its own); numba compilation is excluded on
both sides. Data are synthetic (``benchmarks/_eps_data.py``). Prints the figures.

BLAS kernels: each side runs at its best kernel, in its own process. stmorph runs with
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from its environment (numpy's OpenBLAS
0.3.31 then picks its AVX-512 "SkylakeX" kernel on this CPU); the published code runs with
``OPENBLAS_CORETYPE=Haswell`` (faiss-cpu bundles OpenBLAS 0.3.15, which without it falls back to
the slow generic kernel here), ``--published-coretype`` to change it. Both workers print the
kernels ``threadpoolctl`` reports. The variables are only set for these subprocesses, never in
tests or CI.

``--what baselines``: linear / ridge / LightGBM / MLP of ``expression_copilot.baseline.Baseline``
against ``st.tl.predict`` on the same synthetic data and the same 80/20 split (1,000 spots ×
256-d × 200 genes): per-gene test Pearson (largest difference, means) and fit+predict time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BENCH_PYTHON = HERE.parent / ".benchmarks_env" / "bin" / "python"


_BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_env(coretype: str | None) -> dict[str, str]:
    """This process's environment with the OpenBLAS kernel variables unset, or the core type forced."""
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARIABLES}
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    return env


def blas_kernels() -> list[str]:
    """The BLAS libraries loaded in this process, as ``threadpoolctl`` reports them."""
    from threadpoolctl import threadpool_info

    return [
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} ({Path(i['filepath']).name})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]


def _run_worker(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"{cmd[:2]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT ") :])


def int8_kernel() -> str:
    """The int8 kernel stmorph's ``precision="int8"`` search uses here, as torch reports it."""
    import torch

    from stmorph.models._lowp import int8_levels

    onednn = [ln.strip(" -") for ln in torch.__config__.show().splitlines() if "MKL-DNN" in ln or "oneDNN" in ln]
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{onednn[0] if onednn else 'oneDNN'} via torch {torch.__version__}, {capability}, codes 0-{int8_levels()}"


def bare_gemm_seconds(embedding: np.ndarray, precision: str, sample: int = 6) -> float:
    """Time of the upper-half products alone (no merging), from ``sample`` block pairs scaled to all of them.

    The blocks are those of the exact search (2048 × 2048); the int8 side adds packing each
    column block once, as the search does.
    """
    from stmorph.models import Int8Gram
    from stmorph.tl import _graph

    rep = _graph.prepare_embedding(embedding)
    size = int(np.sqrt(_graph._BLOCK_ELEMENTS))
    n_blocks = -(-rep.shape[0] // size)
    pairs = n_blocks * (n_blocks + 1) // 2
    rows, cols = slice(0, size), slice(size, 2 * size)
    if precision == "int8":
        gram = Int8Gram(rep[: 2 * size])
        t0 = time.perf_counter()
        packed = gram.pack(cols)
        pack_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(sample):
            gram.products(rows, packed)
        return pack_s * n_blocks + (time.perf_counter() - t0) / sample * pairs
    t0 = time.perf_counter()
    for _ in range(sample):
        _ = rep[rows] @ rep[cols].T
    return (time.perf_counter() - t0) / sample * pairs


class _ProofLog(logging.Handler):
    """Keeps the number of rows the exact search recomputed (from its log line)."""

    def __init__(self) -> None:
        super().__init__()
        self.recomputed: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("exact kNN ("):
            self.recomputed.append(int(record.args[-1]))


def _ours_eps_worker(folder: Path, k: int, precision: str = "float32") -> None:
    """Our side of the EPS comparison (run in a subprocess by :func:`compare_eps`)."""
    import pandas as pd

    from stmorph.tl._eps import compute_eps
    from stmorph.tl._geary import geary_terms, gearys_c
    from stmorph.tl._graph import knn_graph

    embedding = np.load(folder / "embedding.npy")
    expression = np.load(folder / "expression.npy")
    genes = pd.Index([f"g{i}" for i in range(expression.shape[1])])
    warm = np.random.default_rng(0).standard_normal((5000, 4))  # numba compilation, for the timed dtypes
    warm_graph, _, _ = knn_graph(warm.astype(embedding.dtype), k, method="exact", precision=precision)
    compute_eps(warm_graph, warm.astype(expression.dtype), genes[:4])  # and the imports of the p-values
    proofs = _ProofLog()
    logging.getLogger("stmorph").addHandler(proofs)
    logging.getLogger("stmorph").setLevel(logging.INFO)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    c0, t0 = time.process_time(), time.perf_counter()  # CPU time of all threads: robust to a loaded machine
    graph, _, _ = knn_graph(embedding, k, method="exact", precision=precision)
    t1 = time.perf_counter()
    result = compute_eps(graph, expression, genes)
    t2, c2 = time.perf_counter(), time.process_time()
    numer, ss, _ = geary_terms(graph, expression)  # the Laplacian step alone, timed again
    gearys_c(numer, ss, graph.shape[0], float(graph.sum()))
    t3 = time.perf_counter()
    np.save(folder / f"ours_{precision}_eps.npy", result.eps)
    np.save(folder / f"ours_{precision}_knn.npy", graph.indices.reshape(graph.shape[0], k))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    out = {"knn_s": t1 - t0, "eps_step_s": t2 - t1, "laplacian_s": t3 - t2, "total_s": t2 - t0, "total_cpu_s": c2 - c0}
    out["recomputed_rows"] = proofs.recomputed[-1] if proofs.recomputed else None
    out["bare_gemm_s"] = bare_gemm_seconds(embedding, precision)
    out["blas"] = blas_kernels()
    out["int8_kernel"] = int8_kernel() if precision == "int8" else None
    print("RESULT " + json.dumps({**out, "peak_rss_gb": peak, "rss_before_gb": before}))


def compare_eps(
    sizes: list[int],
    dim: int = 1024,
    n_genes: int = 2000,
    k: int = 5,
    published_coretype: str = "Haswell",
    precisions: tuple[str, ...] = ("float32", "int8"),
) -> list[dict]:
    """EPS of ``expression_copilot.mi.calc_eps`` and of ours in each precision, each in its own process.

    Without the benchmark environment the published side is left out (said in the output), and
    ours are compared with each other.
    """
    sys.path.insert(0, str(HERE))
    import _eps_data

    published = BENCH_PYTHON.exists()
    if not published:
        print(f"  {BENCH_PYTHON} not found: the published side is left out (see the docstring to create it)")
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            z = _eps_data.latent(n)
            np.save(folder / "embedding.npy", _eps_data.embedding(z, dim))
            # C order, as sc.pp.scale leaves adata.X; both sides read the same file
            np.save(folder / "expression.npy", np.ascontiguousarray(_eps_data.scaled_expression(z, n_genes)))
            sides = {}
            if published:
                worker = [str(BENCH_PYTHON), str(HERE / "_published_eps_worker.py"), str(folder), str(k)]
                sides["published"] = _run_worker(worker, env=blas_env(published_coretype))
            for precision in precisions:
                worker = [sys.executable, __file__, "--worker-eps", str(folder), "--k", str(k)]
                sides[precision] = _run_worker([*worker, "--precision", precision], env=blas_env(None))
                sides[precision]["load_after"] = Path("/proc/loadavg").read_text().split()[0]
            for side, out in sides.items():
                int8 = f"; int8 {out['int8_kernel']}" if out.get("int8_kernel") else ""
                print(f"  {side}: BLAS {out['blas']}{int8}")
            files = {side: "published" if side == "published" else f"ours_{side}" for side in sides}
            eps = {side: np.load(folder / f"{stem}_eps.npy") for side, stem in files.items()}
            knn = {side: np.sort(np.load(folder / f"{stem}_knn.npy"), axis=1) for side, stem in files.items()}
        first = precisions[0]
        row: dict = {"n": n}
        for side in sides:
            if side != first:
                row[f"rows_with_other_neighbours_{side}_vs_{first}"] = int((knn[side] != knn[first]).any(axis=1).sum())
                row[f"max_abs_eps_diff_{side}_vs_{first}"] = float(np.nanmax(np.abs(eps[side] - eps[first])))
        for side, out in sides.items():
            keys = ("knn_s", "laplacian_s", "total_s", "total_cpu_s", "bare_gemm_s", "recomputed_rows", "peak_rss_gb")
            for key in (*keys, "load_after"):
                if key in out:
                    row[f"{side}_{key}"] = out[key]
        for side in sides:
            if side != "published" and published:
                row[f"speedup_total_{side}_vs_published"] = sides["published"]["total_s"] / sides[side]["total_s"]
                row[f"speedup_cpu_{side}_vs_published"] = sides["published"]["total_cpu_s"] / sides[side]["total_cpu_s"]
            if side not in ("published", first):
                row[f"speedup_total_{side}_vs_{first}"] = sides[first]["total_s"] / sides[side]["total_s"]
                row[f"speedup_cpu_{side}_vs_{first}"] = sides[first]["total_cpu_s"] / sides[side]["total_cpu_s"]
        rows.append(row)
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return rows


_OUR_METHOD = {
    "linear": ("linear", {}),
    "ridge": ("ridge", {}),
    "ensemble": ("lightgbm", {"n_estimators": 50}),
    "mlp": ("mlp", {}),
}
"""Published ``Baseline`` method → our method and the options that match the published code."""


def compare_baselines(n_spots: int = 1000, dim: int = 256, n_genes: int = 200) -> list[dict]:
    """Regression baselines side by side with ``expression_copilot.baseline.Baseline`` on the same split.

    Both sides see the same synthetic embeddings and z-scored expression and the published
    ``train_test_split`` (80/20, seed 0); ours runs ``st.tl.predict(test, train, ...)``. The
    published "ensemble" is LightGBM with 50 trees, so ours runs with ``n_estimators=50`` here; the
    published MLP on a CPU machine is sklearn's ``MLPRegressor(hidden=(128,))`` (its torch MLP
    needs CUDA), a different model from ours (256 hidden, AdamW), so only mean Pearson is compared.
    """
    sys.path.insert(0, str(HERE))
    import _eps_data
    import anndata as ad

    import stmorph as st
    from stmorph.tl._metrics import pearson

    if not BENCH_PYTHON.exists():
        raise FileNotFoundError(f"{BENCH_PYTHON} not found; create the benchmark environment (see the docstring).")
    z = _eps_data.latent(n_spots)
    embedding, expression = _eps_data.embedding(z, dim), _eps_data.scaled_expression(z, n_genes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "embedding.npy", embedding)
        np.save(folder / "expression.npy", expression)
        worker = [str(BENCH_PYTHON), str(HERE / "_published_baselines_worker.py"), str(folder), *_OUR_METHOD]
        theirs = _run_worker(worker)
        test = np.zeros(n_spots, dtype=bool)
        test[np.load(folder / "test_idx.npy")] = True
        adata = ad.AnnData(expression)
        adata.obsm["X_emb"] = embedding
        for published, (method, options) in _OUR_METHOD.items():
            query, train = adata[test].copy(), adata[~test].copy()
            t0 = time.perf_counter()
            st.tl.predict(query, train, method=method, use_rep="X_emb", progress=False, **options)
            ours_s = time.perf_counter() - t0
            r_ours = pearson(query.X, query.layers[f"predicted_{method}"])
            r_pub = np.load(folder / f"published_{published}_pearson.npy")
            row = {
                "published": published,
                "ours": method,
                "published_mean_pearson": float(np.nanmean(r_pub)),
                "ours_mean_pearson": float(np.nanmean(r_ours)),
                "max_abs_pearson_diff": float(np.nanmax(np.abs(r_pub - r_ours))),
                "published_s": theirs[published],
                "ours_s": ours_s,
            }
            rows.append(row)
            print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return rows


COMPARISONS = {"eps": compare_eps, "baselines": compare_baselines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=sorted(COMPARISONS), default="eps", help="which comparison to run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000], help="N spots (eps)")
    parser.add_argument("--worker-eps", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dim", type=int, default=1024, help="embedding dimensions (eps)")
    parser.add_argument("--genes", type=int, default=2000, help="genes (eps)")
    parser.add_argument("--published-coretype", default="Haswell", help="OPENBLAS_CORETYPE of the published side")
    parser.add_argument(
        "--precision", nargs="+", default=["float32", "int8"], help="products of our exact search (eps), one run each"
    )
    args = parser.parse_args()
    if args.worker_eps is not None:
        _ours_eps_worker(args.worker_eps, args.k, args.precision[0])
        return
    print(f"compare_published --what {args.what}; load average {Path('/proc/loadavg').read_text().split()[:3]}")
    if args.what == "eps":
        compare_eps(args.sizes, args.dim, args.genes, args.k, args.published_coretype, tuple(args.precision))
    elif args.what == "baselines":
        compare_baselines()


if __name__ == "__main__":
    main()
