"""Seconds of ``st.tl.predict`` per method with its defaults on all shared genes of the HER2ST sections (issue 24).

Workload: the four shipped sections C2–C5 as references (``--references``) and a query section
(``--query``; by default C2 again — the time does not depend on which spots are predicted), each
normalize_total 1e4 → log1p, features ``X_default`` (cached by ``bench_loso.py`` in
``/tmp/stmorph_bench_loso``), genes = ``st.tl.predict``'s default (every gene the references and
the query share, ≈ 14,500). Every method runs with its defaults (``method="..."`` and nothing
else but ``use_rep``), on the CPU, with ``--threads`` torch threads (the target machine has 2
cores). Prints the load average, the BLAS kernels (``threadpoolctl``), and one line per method:
wall and CPU seconds of the call (the CPU time bounds the wall time on two idle cores from above
for these CPU-bound calls, so it is the figure to read on a busy machine), the fit and predict
seconds it records, and the genes a trained projection used; a method whose default refuses the
slow path up front (LightGBM above ``max_genes``) prints its message, which states the expected time.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src python benchmarks/bench_predict_defaults.py
    ... bench_predict_defaults.py --methods bleep heclip --references C3 C4 C5 --query C2
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from bench_loso import SECTIONS, section
from compare_published import blas_kernels

import stmorph as st
from stmorph.errors import InvalidParameterError

METHODS = {
    "linear": ("linear", {}),
    "ridge": ("ridge", {}),
    "ridge-cv": ("ridge", {"alpha": "cv", "standardize": True}),
    "knn": ("knn", {}),
    "knn-cv": ("knn", {"k": "cv"}),
    "mlp": ("mlp", {}),
    "bleep": ("bleep", {}),
    "heclip": ("heclip", {}),
    "lightgbm": ("lightgbm", {}),
    "auto": ("auto", {}),
}
TARGET_S = 180.0
"""Issue 24: every method's ``predict`` with its defaults in at most 3 minutes on 2 cores."""


def run(label: str, query, refs) -> tuple[float, float, dict]:
    """Wall and CPU seconds (all threads of this process) of one default ``st.tl.predict`` call, and its record.

    On a busy machine the wall time stretches with the load; the CPU time does not (much), and for a
    CPU-bound call it bounds the wall time of the same call on two idle cores from above.
    """
    method, options = METHODS[label]
    query = query.copy()
    start, start_cpu = time.perf_counter(), time.process_time()
    st.tl.predict(query, refs, method=method, use_rep="X_default", device="cpu", progress=False, **options)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return wall, cpu, query.uns["stmorph"]["predict"][f"predicted_{method}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--references", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--query", default="C2", choices=SECTIONS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tables = {name: section(name) for name in {*args.references, args.query}}
    refs = [tables[name] for name in args.references]
    query = tables[args.query]
    n_shared = len(set.intersection(*(set(t.var_names) for t in [*refs, query])))
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print("BLAS kernels:", "; ".join(blas_kernels()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(
        f"references {'+'.join(args.references)} ({sum(r.n_obs for r in refs)} spots), query {args.query} "
        f"({query.n_obs} spots), {n_shared} shared genes, X_default {query.obsm['X_default'].shape[1]}-d"
    )
    print(f"{'method':<9} {'seconds':>8} {'cpu s':>7} {'fit s':>7} {'predict s':>9}  {'≤ 3 min':<7} notes")
    for label in args.methods:
        try:
            wall, cpu, record = run(label, query, refs)
        except InvalidParameterError as err:  # a slow default refused up front (lightgbm's max_genes)
            print(f"{label:<9} refused before fitting: {err}", flush=True)
            continue
        params = record["params"]
        notes = []
        if "train_genes" in params:
            notes.append(f"train_genes={params['train_genes']}")
        if "selected" in record:
            notes.append(f"selected {record['selected']}")
        print(
            f"{label:<9} {wall:>8.1f} {cpu:>7.1f} {record['train_time_s']:>7.1f} {record['predict_time_s']:>9.2f}  "
            f"{'yes' if min(wall, cpu) <= TARGET_S else 'NO':<7} {', '.join(notes)}",
            flush=True,
        )
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
