"""How predictable each HER2ST section is, whatever it is predicted from (issue 23: the expected r's error on HVG-50).

Every section C2–C5 is predicted by knn (``X_default``, log1p, the ``--genes scored`` set of
``bench_loso.py``) from every set of two and of three other sections, and scored by the mean
Pearson over its own 50 most variable genes (HVG-50). Prints one row per (section, training
sections) with the number of training sections adjacent to it in the series (C2–C3–C4–C5), then
the mean per section and per number of adjacent sections. If a section's score hardly depends on
which sections train the model, the section itself is easier or harder, and no per-gene estimate
built from the references alone can foresee it.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src:benchmarks python benchmarks/bench_section_difficulty.py
"""

from __future__ import annotations

import itertools

import pandas as pd
from bench_loso import SECTIONS, scored_genes, section, truth_of
from bench_trust import shared_genes

import stmorph as st
from stmorph.models._cv import fold_scores


def main() -> None:
    tables = {name: section(name) for name in SECTIONS}
    genes = scored_genes(tables, shared_genes(tables))
    rows = []
    for target in SECTIONS:
        others = [name for name in SECTIONS if name != target]
        for train in itertools.chain(itertools.combinations(others, 2), [tuple(others)]):
            query = tables[target].copy()
            refs = [tables[name] for name in train]
            st.tl.predict(query, refs, method="knn", use_rep="X_default", genes=genes, progress=False, trust=False)
            score = fold_scores(truth_of(query, genes), query[:, genes].layers["predicted_knn"])[0]
            adjacent = sum(abs(SECTIONS.index(name) - SECTIONS.index(target)) == 1 for name in train)
            rows.append((target, "+".join(train), len(train), adjacent, score))
            print(f"{target} from {'+'.join(train):9s} adjacent {adjacent}: HVG-50 r {score:.3f}", flush=True)
    df = pd.DataFrame(rows, columns=["section", "trained_on", "n_train", "adjacent", "pearson_hvg50"])
    print(df.groupby("section")["pearson_hvg50"].agg(["min", "max", "mean"]).round(3).to_string())
    print(df.groupby(["n_train", "adjacent"])["pearson_hvg50"].agg(["mean", "count"]).round(3).to_string())


if __name__ == "__main__":
    main()
