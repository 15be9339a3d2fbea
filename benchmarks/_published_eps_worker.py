"""Runs the published EPS (expression_copilot 0.3.0) on saved inputs; executed by compare_published.py.

Runs in the benchmark's own environment (``.benchmarks_env/``, which has ``expression_copilot``
and not stmorph). Usage: ``python _published_eps_worker.py FOLDER K``; reads ``FOLDER/embedding.npy``
and ``FOLDER/expression.npy`` (spots × genes), writes ``FOLDER/published_eps.npy`` and
``published_knn.npy`` and prints one ``RESULT {json}`` line. The steps are those of
``expression_copilot.mi.calc_eps``, timed one by one.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from expression_copilot.mi import _check_vals, _graph_laplacian_nd, calc_eps
from expression_copilot.utils import knn, knn_to_csr


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    folder, k = Path(sys.argv[1]), int(sys.argv[2])
    embedding = np.load(folder / "embedding.npy")
    expression = np.load(folder / "expression.npy")
    warm = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    calc_eps(warm, warm.T, k=k)  # numba compilation is not timed
    before = _rss_gb()
    signal = expression.T  # as ExpressionCopilotModel.calc_metrics_per_gene passes it
    c0, t0 = time.process_time(), time.perf_counter()  # CPU time of all threads: robust to a loaded machine
    knn_index, _ = knn(embedding, k=k, metric="euclidean")
    graph = knn_to_csr(knn_index)
    t1 = time.perf_counter()
    g_data = graph.data.astype(np.float64, copy=False)
    values, keep, full = _check_vals(signal)
    full[keep] = _graph_laplacian_nd(g_data, graph.indices, graph.indptr, values)
    eps = -np.log(full)
    t2, c2 = time.perf_counter(), time.process_time()
    np.save(folder / "published_eps.npy", eps)
    np.save(folder / "published_knn.npy", knn_index)
    from threadpoolctl import threadpool_info

    blas = [
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} ({Path(i['filepath']).name})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    out = {
        "blas": blas,
        "knn_s": t1 - t0,
        "laplacian_s": t2 - t1,
        "total_s": t2 - t0,
        "total_cpu_s": c2 - c0,
        "peak_rss_gb": _rss_gb(),
        "rss_before_gb": before,
    }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
