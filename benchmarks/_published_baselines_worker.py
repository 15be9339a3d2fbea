"""Runs the published baselines (expression_copilot 0.3.0) on saved inputs; executed by compare_published.py.

Runs in the benchmark's own environment (``.benchmarks_env/``, which has ``expression_copilot``
and not stmorph). Usage: ``python _published_baselines_worker.py FOLDER METHOD [METHOD ...]``;
reads ``FOLDER/embedding.npy`` and ``FOLDER/expression.npy`` (spots × genes), and for each method
(``linear``, ``ridge``, ``ensemble``, ``mlp``) fits ``expression_copilot.baseline.Baseline``
(its own 80/20 ``train_test_split``, seed 0) and writes ``FOLDER/published_<method>_pearson.npy``
(per-gene Pearson on the test spots, from its ``cal_metrics``) and ``FOLDER/test_idx.npy``;
prints one ``RESULT {json}`` line with the fit+predict times.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from expression_copilot.baseline import Baseline


def main() -> None:
    folder, methods = Path(sys.argv[1]), sys.argv[2:]
    embedding = np.load(folder / "embedding.npy")
    expression = np.load(folder / "expression.npy")
    genes = [f"g{i}" for i in range(expression.shape[1])]
    times = {}
    for method in methods:
        model = Baseline(embedding, expression, method=method, seed=0)
        t0 = time.perf_counter()
        model.fit()
        y_pred = model.transform()
        times[method] = time.perf_counter() - t0
        metrics = model.cal_metrics(model.y_test, y_pred, genes).reindex(genes)
        np.save(folder / f"published_{method}_pearson.npy", metrics["pearson_corr"].to_numpy())
        np.save(folder / "test_idx.npy", model.test_idx)
    print("RESULT " + json.dumps(times))


if __name__ == "__main__":
    main()
