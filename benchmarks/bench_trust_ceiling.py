"""How high Spearman(expected r, achieved r) can go on HER2ST leave-one-section-out, given the folds' noise (issue 23).

A gene's expected r comes from its Pearson r on the references' held-out folds; the achieved r is
its Pearson r on the query. Both are noisy estimates of the gene's accuracy on a new section. If a
fold's r and the query's r share a gene-level accuracy ``T`` with independent noise, the Spearman
of the mean of ``k`` fold r's with the query's r is at most ``ρ_q · sqrt(k / (1 + (k − 1) ρ))``,
where ``ρ`` is the rank correlation of two folds' r and ``ρ_q`` that of one fold's r with the
query's r; with infinitely many references it tends to ``ρ_q / sqrt(ρ)``. Per left-out section,
knn (the method with the most stable fold r's), genes detected in ≥ 10 % of the query's spots
(as ``bench_trust.py``), this prints ``ρ``, ``ρ_q``, the mean-of-three-folds Spearman, and both bounds.

    PYTHONPATH=src python benchmarks/bench_trust_ceiling.py
"""

from __future__ import annotations

import numpy as np
from bench_loso import SECTIONS, section
from bench_trust import shared_genes
from scipy.stats import spearmanr

from stmorph.models import make_method
from stmorph.models._cv import cross_predict
from stmorph.tl._trust import column_pearson


def dense(table, genes: list[str]) -> np.ndarray:
    return np.asarray(table[:, genes].X.toarray(), dtype=np.float32)


def main() -> None:
    tables = {name: section(name) for name in SECTIONS}
    genes = shared_genes(tables)
    print("section genes  rho(fold,fold) rho_q(fold,query) mean-of-3 vs query  bound k=3  bound k=inf")
    for query_name in SECTIONS:
        refs = [tables[n] for n in SECTIONS if n != query_name]
        x = np.vstack([r.obsm["X_default"] for r in refs]).astype(np.float32)
        y = np.vstack([dense(r, genes) for r in refs])
        folds = np.concatenate([[i] * r.n_obs for i, r in enumerate(refs)])
        oof = cross_predict(lambda: make_method("knn"), x, y, folds)[0]
        fold_r = np.column_stack([column_pearson(y[folds == f], oof[folds == f]) for f in range(len(refs))])
        truth = dense(tables[query_name], genes)
        query_x = tables[query_name].obsm["X_default"].astype(np.float32)
        achieved = column_pearson(truth, make_method("knn").fit(x, y).predict(query_x))
        ok = ((truth > 0).mean(axis=0) >= 0.1) & np.isfinite(achieved) & np.isfinite(fold_r).all(axis=1)
        pairs = [(a, b) for a in range(len(refs)) for b in range(a + 1, len(refs))]
        rho = np.mean([spearmanr(fold_r[ok, a], fold_r[ok, b])[0] for a, b in pairs])
        rho_q = np.mean([spearmanr(fold_r[ok, a], achieved[ok])[0] for a in range(len(refs))])
        mean_k = spearmanr(fold_r[ok].mean(axis=1), achieved[ok])[0]
        k = len(refs)
        print(
            f"{query_name:<7} {ok.sum():>6} {rho:>14.3f} {rho_q:>17.3f} {mean_k:>18.3f} "
            f"{rho_q * np.sqrt(k / (1 + (k - 1) * rho)):>10.3f} {rho_q / np.sqrt(rho):>11.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
