"""Speed and memory of st.tl.eps at Visium and Visium HD scale.

Command (all scenarios, each in its own process so that peak memory is its own)::

    .venv/bin/python benchmarks/bench_eps.py

or one of them: ``--what exact`` (N = 50,000 × 1024-d × 2000 genes, exact graph), ``--what hd``
(N = 1,000,000 × 256-d × 2000 sparse genes, approximate graph), ``--what hd-check`` (Spearman of
approximate- vs exact-graph EPS on a 100,000-spot subsample of the HD slice), ``--what
sparse-memory`` (peak memory of the EPS step on sparse log1p input for growing N), ``--what
kernels`` (throughput of the matrix-product kernels reachable from Python on one block of the exact
search, 2048 × 2048 × 1024 by default: numpy float32, torch float32/bfloat16/float16, torch int8
``_int_mm``, numpy integer, fbgemm's dynamic int8 linear, oneDNN's int8 linear with uint8 input
as ``precision="int8"`` uses it; each the best of interleaved repeats, same process). Sizes can be
lowered with ``--n``/``--dim``/``--genes`` for a quick run. Data are synthetic
(``benchmarks/_eps_data.py``). Prints the figures; asserts nothing.

Each scenario's process runs with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from
its environment (numpy's OpenBLAS then picks its best kernel, AVX-512 "SkylakeX" on this CPU) and
prints the kernels ``threadpoolctl`` reports, beside the load average after it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import sparse, stats

sys.path.insert(0, str(Path(__file__).parent))
import _eps_data
from compare_published import blas_env, blas_kernels

from stmorph.tl._eps import compute_eps
from stmorph.tl._graph import knn_graph

SCENARIOS = ("exact", "hd", "hd-check", "sparse-memory", "kernels")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _genes(n: int):
    import pandas as pd

    return pd.Index([f"g{i}" for i in range(n)])


def run_exact(n: int, dim: int, n_genes: int) -> dict:
    """Exact graph + EPS on dense scaled expression (the paper's default input)."""
    z = _eps_data.latent(n)
    emb = _eps_data.embedding(z, dim)
    x = _eps_data.scaled_expression(z, n_genes)
    knn_graph(emb[:200], 5, method="exact")  # compile the numba kernels outside the timing
    t0 = time.perf_counter()
    graph, _, _ = knn_graph(emb, 5, method="exact")
    t1 = time.perf_counter()
    result = compute_eps(graph, x, _genes(n_genes))
    t2 = time.perf_counter()
    return {
        "scenario": f"exact N={n} d={dim} genes={n_genes} dense",
        "knn_s": t1 - t0,
        "eps_s": t2 - t1,
        "total_s": t2 - t0,
        "peak_rss_gb": _peak_rss_gb(),
        "sps": result.sps,
    }


def run_hd(n: int, dim: int, n_genes: int) -> dict:
    """Approximate (pynndescent) graph + EPS on sparse log1p expression, never densified."""
    z = _eps_data.latent(n)
    emb = _eps_data.embedding(z, dim)
    x = _eps_data.sparse_log1p(z, n_genes)
    del z
    t0 = time.perf_counter()
    graph, _, method = knn_graph(emb, 5, method="pynndescent")
    t1 = time.perf_counter()
    result = compute_eps(graph, x, _genes(n_genes))
    t2 = time.perf_counter()
    return {
        "scenario": f"approximate ({method}) N={n} d={dim} genes={n_genes} sparse",
        "density": x.nnz / (n * n_genes),
        "knn_s": t1 - t0,
        "eps_s": t2 - t1,
        "total_s": t2 - t0,
        "peak_rss_gb": _peak_rss_gb(),
        "sps": result.sps,
    }


def run_hd_check(n: int, dim: int, n_genes: int, n_sub: int) -> dict:
    """Spearman across genes of approximate- vs exact-graph EPS on a random subsample of the HD slice."""
    z = _eps_data.latent(n)
    keep = np.sort(np.random.default_rng(5).choice(n, size=min(n_sub, n), replace=False))
    emb = _eps_data.embedding(z, dim)[keep]
    x = _eps_data.sparse_log1p(z, n_genes)[keep]
    t0 = time.perf_counter()
    exact, _, _ = knn_graph(emb, 5, method="exact")
    t1 = time.perf_counter()
    approx, _, _ = knn_graph(emb, 5, method="pynndescent")
    t2 = time.perf_counter()
    eps_exact = compute_eps(exact, x, _genes(n_genes)).eps
    eps_approx = compute_eps(approx, x, _genes(n_genes)).eps
    finite = np.isfinite(eps_exact) & np.isfinite(eps_approx)
    same_edges = exact.multiply(approx).nnz / exact.nnz
    return {
        "scenario": f"subsample N={len(keep)} of {n}, d={dim}, genes={n_genes}",
        "exact_knn_s": t1 - t0,
        "approx_knn_s": t2 - t1,
        "edge_recall": same_edges,
        "spearman": float(stats.spearmanr(eps_exact[finite], eps_approx[finite]).statistic),
        "max_abs_eps_diff": float(np.abs(eps_exact[finite] - eps_approx[finite]).max()),
    }


def run_sparse_memory(sizes: list[int], n_genes: int) -> list[dict]:
    """Peak memory (tracemalloc) of the EPS step on sparse input, against nnz and the dense size."""
    rows = []
    for n in sizes:
        z = _eps_data.latent(n)
        x = _eps_data.sparse_log1p(z, n_genes)
        rng = np.random.default_rng(0)
        cols = rng.integers(0, n, size=n * 5)
        graph = sparse.csr_matrix((np.ones(n * 5, np.float32), cols, np.arange(0, n * 5 + 1, 5)), shape=(n, n))
        tracemalloc.start()
        t0 = time.perf_counter()
        compute_eps(graph, x, _genes(n_genes))
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        nnz_bytes = x.data.nbytes + x.indices.nbytes
        rows.append(
            {
                "n": n,
                "nnz": int(x.nnz),
                "input_nnz_gb": nnz_bytes / 1024**3,
                "dense_float64_gb": n * n_genes * 8 / 1024**3,
                "eps_peak_gb": peak / 1024**3,
                "peak_over_input": peak / nnz_bytes,
                "eps_s": elapsed,
            }
        )
    return rows


FLOAT32 = "numpy float32 (BLAS sgemm, the float32 search)"


def _int8_kernels(a: np.ndarray) -> dict:
    """The int8 candidates of :func:`run_kernels`: callables on codes of the block's shape."""
    import warnings

    import torch

    from stmorph.models._lowp import _int8_matmul, _pack

    b = a.shape[0]
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 128, a.shape).astype(np.uint8)
    weights = rng.integers(-127, 128, a.shape).astype(np.int8)
    packed, scales = _pack(weights), np.ones(b)
    q_a, q_w = torch.from_numpy(codes.view(np.int8) & 127), torch.from_numpy(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qw = torch._make_per_channel_quantized_tensor(
            q_w, torch.ones(b, dtype=torch.double), torch.zeros(b, dtype=torch.long), 0
        )
        before = torch.backends.quantized.engine
        torch.backends.quantized.engine = "fbgemm"
        fbgemm = torch.ops.quantized.linear_prepack(qw, None)
        torch.backends.quantized.engine = before
    feed = torch.from_numpy(codes.astype(np.float32) - 64)
    return {
        "oneDNN int8 (uint8 codes, precision='int8')": lambda: _int8_matmul(codes, 1.0, 64, packed, scales),
        "fbgemm dynamic int8 linear (float input)": lambda: torch.ops.quantized.linear_dynamic(feed, fbgemm, True),
        "torch._int_mm int8": lambda: torch._int_mm(q_a, q_w.T),
    }


def run_kernels(block: int, dim: int) -> list[dict]:
    """GOP/s of each matrix-product kernel on one ``block × dim`` by ``dim × block`` product, best of 5."""
    import torch

    a = np.random.default_rng(0).standard_normal((block, dim)).astype(np.float32)
    t32 = torch.from_numpy(a)
    kernels = {
        FLOAT32: lambda: a @ a.T,
        "torch float32": lambda: t32 @ t32.T,
        "torch bfloat16": lambda: t32.bfloat16() @ t32.bfloat16().T,
        "torch float16": lambda: t32.half() @ t32.half().T,
        **_int8_kernels(a),
        "numpy int32 (no BLAS)": lambda: a[:256].astype(np.int32) @ a.T.astype(np.int32),
    }
    ops = {name: 2 * block * block * dim for name in kernels}
    ops["numpy int32 (no BLAS)"] = 2 * 256 * block * dim
    best = dict.fromkeys(kernels, np.inf)
    slow = ("numpy int32 (no BLAS)", "torch._int_mm int8", "torch float16", "torch bfloat16")
    for repeat in range(5):
        for name, kernel in kernels.items():
            if repeat > 1 and name in slow:
                continue  # two repeats of the slow ones
            t0 = time.perf_counter()
            kernel()
            best[name] = min(best[name], time.perf_counter() - t0)
    base = best[FLOAT32] / ops[FLOAT32]
    return [
        {
            "kernel": name,
            "ms": best[name] * 1e3,
            "GOP_per_s": ops[name] / best[name] / 1e9,
            "vs_numpy_float32": base / (best[name] / ops[name]),
            "torch_threads": torch.get_num_threads(),
            "cpu": torch.backends.cpu.get_cpu_capability(),
        }
        for name in kernels
    ]


def _worker(args: argparse.Namespace) -> None:
    if args.what == "exact":
        out = run_exact(args.n or 50_000, args.dim or 1024, args.genes)
    elif args.what == "hd":
        out = run_hd(args.n or 1_000_000, args.dim or 256, args.genes)
    elif args.what == "hd-check":
        out = run_hd_check(args.n or 1_000_000, args.dim or 256, args.genes, args.n_sub)
    elif args.what == "kernels":
        out = run_kernels(args.n or 2048, args.dim or 1024)
    else:
        out = run_sparse_memory(args.sizes, args.genes)
    for row in out if isinstance(out, list) else [out]:
        row["blas"] = blas_kernels()
    print("RESULT " + json.dumps(out))


def _print(result) -> None:
    for row in result if isinstance(result, list) else [result]:
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--n", type=int, default=None, help="spots (default: 50k exact, 1M hd; kernels: block rows)")
    parser.add_argument("--dim", type=int, default=None, help="embedding size (default: 1024 exact, 256 hd)")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--n-sub", type=int, default=100_000, help="subsample of the hd check")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    print(f"stmorph EPS benchmark; {Path('/proc/loadavg').read_text().split()[:3]} load average at start")
    for what in SCENARIOS[:-1] if args.what == "all" else (args.what,):
        cmd = [sys.executable, __file__, "--worker", "--what", what, "--genes", str(args.genes)]
        cmd += ["--n-sub", str(args.n_sub), "--sizes", *map(str, args.sizes)]
        cmd += [f"--n={args.n}"] if args.n else []
        cmd += [f"--dim={args.dim}"] if args.dim else []
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=blas_env(None))
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"[{what}] failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            continue
        load = Path("/proc/loadavg").read_text().split()[0]
        print(f"[{what}] (process wall time {time.perf_counter() - t0:.0f} s incl. data generation; load after {load})")
        _print(json.loads(line[0][len("RESULT ") :]))


if __name__ == "__main__":
    main()
