"""BLEEP/HECLIP top-k retrieval over a Visium HD-sized reference: time and peak memory.

Run from the repository root::

    .venv/bin/python benchmarks/bench_retrieval.py                  # 1,000,000 reference spots
    .venv/bin/python benchmarks/bench_retrieval.py --reference 100000 --queries 500

A synthetic reference of ``--reference`` spots (``--dim``-d float32 embeddings and ``--genes``
float32 expression values, 8 latent factors drive both) is searched by
:func:`stmorph.models._retrieval.retrieve` (the step behind ``st.tl.predict(method="bleep"|"heclip")``)
for ``--queries`` query spots, k = 50, query rows in chunks bounded by ``max_elements`` similarity
values. It prints the time, queries/s and the peak resident memory of the process next to the
size of the inputs and of the full query × reference similarity matrix the chunking avoids.
The predictions are checked against an exact float64 NumPy search on the first 8 queries.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def _data(n_ref: int, n_query: int, dim: int, genes: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    z_ref = rng.standard_normal((n_ref, 8), dtype=np.float32)
    z_q = rng.standard_normal((n_query, 8), dtype=np.float32)
    to_emb = rng.standard_normal((8, dim), dtype=np.float32)
    to_expr = rng.standard_normal((8, genes), dtype=np.float32)
    reference = z_ref @ to_emb
    reference += rng.standard_normal(reference.shape, dtype=np.float32)
    query = z_q @ to_emb + rng.standard_normal((n_query, dim), dtype=np.float32)
    expression = z_ref @ to_expr
    expression += rng.standard_normal(expression.shape, dtype=np.float32)
    return query, reference, expression


def _exact(query: np.ndarray, reference: np.ndarray, expression: np.ndarray, k: int) -> np.ndarray:
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    r = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    sim = q.astype(np.float64) @ r.T.astype(np.float64)
    top = np.argsort(-sim, axis=1)[:, :k]
    return expression[top].astype(np.float64).mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=256, help="embedding size (BLEEP/HECLIP projection: 256)")
    parser.add_argument("--genes", type=int, default=250)
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args()

    import torch

    from stmorph.models._retrieval import MAX_ELEMENTS, retrieve

    start = time.perf_counter()
    query, reference, expression = _data(args.reference, args.queries, args.dim, args.genes)
    t_data = time.perf_counter() - start
    inputs_gb = (reference.nbytes + expression.nbytes + query.nbytes) / 1024**3
    rss_inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    start = time.perf_counter()
    pred = retrieve(query, reference, expression, k=args.k)
    t_search = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    check = _exact(query[:8], reference, expression, args.k)
    err = float(np.abs(pred[:8] - check).max())
    step = max(1, MAX_ELEMENTS // max(args.reference, args.k * args.genes))
    print(f"reference {args.reference} spots × {args.dim}-d embeddings × {args.genes} genes; {args.queries} queries")
    print(f"torch threads {torch.get_num_threads()}; query rows per chunk {step}; data generated in {t_data:.1f} s")
    print(f"retrieval (k={args.k}): {t_search:.1f} s = {args.queries / t_search:.1f} queries/s")
    full_gb = args.queries * args.reference * 4 / 1024**3
    print(f"inputs {inputs_gb:.2f} GB; the full similarity matrix would be {full_gb:.1f} GB")
    print(f"peak RSS: {peak_gb:.2f} GB (after building the inputs: {rss_inputs:.2f} GB)")
    print(f"max |difference| to an exact float64 search on 8 queries: {err:.2e}")


if __name__ == "__main__":
    main()
