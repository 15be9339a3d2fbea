"""Do the default image embeddings carry expression information on HER2ST? EPS/SPS vs shuffled spots.

Run from the repository root::

    .venv/bin/python benchmarks/her2st_embedding_evidence.py          # sections C2 C3
    .venv/bin/python benchmarks/her2st_embedding_evidence.py C2 C3 C4 C5

For each section: default patches (112 µm at 0.5 µm/px) → ``"default"`` embeddings →
``st.pp.prepare_expression`` → ``st.tl.eps`` (k = 5). The control shuffles the embeddings across
spots (seed 0), which breaks any image–expression link while keeping the embeddings' distribution.
Prints SPS, the shuffled SPS, their ratio, and the EPS percentile of ERBB2 and the ECM genes
FN1, SPARC, MGP (100 = most predictable gene).
"""

from __future__ import annotations

import sys

import numpy as np

GENES = ("ERBB2", "FN1", "SPARC", "MGP")


def evaluate(section: str, model: str = "default") -> dict[str, float]:
    import stmorph as st

    table = st.pp.extract_patches(st.datasets.her2st(section), copy=True, progress=False)
    st.tl.embed(table, model=model, progress=False)
    rng = np.random.default_rng(0)
    table.obsm["X_shuffled"] = table.obsm[f"X_{model}"][rng.permutation(table.n_obs)]
    st.pp.prepare_expression(table)
    st.tl.eps(table, use_rep=f"X_{model}", progress=False)
    st.tl.eps(table, use_rep="X_shuffled", graph_key="shuffled", key_added="eps_shuffled", progress=False)
    eps = table.var["eps"].dropna()
    out = {"sps": table.uns["sps"]["sps"], "sps_shuffled": table.uns["sps_eps_shuffled"]["sps"]}
    for gene in GENES:
        out[gene] = 100.0 * float((eps < eps[gene]).mean())
    return out


def main() -> None:
    sections = sys.argv[1:] or ["C2", "C3"]
    print("| section | SPS | SPS shuffled | ratio | " + " | ".join(f"{g} pct" for g in GENES) + " |")
    print("|---|---|---|---|" + "---|" * len(GENES))
    for section in sections:
        r = evaluate(section)
        pct = " | ".join(f"{r[g]:.1f}" for g in GENES)
        ratio = f"{r['sps'] / r['sps_shuffled']:.1f}" if r["sps_shuffled"] > 0 else "— (shuffled ≤ 0)"
        print(f"| {section} | {r['sps']:.4f} | {r['sps_shuffled']:.4f} | {ratio} | {pct} |")


if __name__ == "__main__":
    main()
